"""The CLI as a user meets it: exit codes, one-line errors, explain, self."""
import json
import os
import subprocess
import sys

from livetargets import REPO, run_audit


def _one_line_error(proc):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr.startswith("audit: error: ") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_usage_errors():
    for args in ([], ["--bogus"], ["1", "2"], ["--all", "1"], ["--format", "xml", "1"], ["--fail-on", "huge", "1"],
                 ["explain"], ["explain", "no-such-check"]):
        _one_line_error(run_audit(*args))


def test_missing_targets():
    for target in ("999999999", "no-such-container-xyz", "0"):
        _one_line_error(run_audit(target, env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"}))


def test_target_that_exits_mid_audit_is_exit_2():
    # A process that is gone by the time the snapshot is collected.
    proc = subprocess.Popen(["sleep", "0"])
    proc.wait()
    _one_line_error(run_audit(str(proc.pid)))


def test_explain_teaches_a_check():
    proc = run_audit("explain", "release-agent", check_rc=0)
    for text in ("CVE-2022-0492", "T1611", "Docker:", "Kubernetes:", "pysandbox:", "How the escape works"):
        assert text in proc.stdout


def test_self_from_the_host_shares_every_namespace():
    proc = run_audit("self", "--format", "json", check_rc=0)
    report = json.loads(proc.stdout)
    assert report["schema"] == "pysandbox.audit/1"
    assert report["target"]["runtime"] == "self"
    failing = {f["id"] for f in report["findings"] if f["status"] == "fail"}
    if os.geteuid() == 0:
        assert {"ns-pid-host", "ns-user-host", "ns-mnt-host", "ns-net-host"} <= failing
        assert "host-mount-namespace" in {p["id"] for p in report["escape_paths"]}


def test_plain_text_when_piped_and_module_entry():
    proc = subprocess.run([sys.executable, "-c", "import sys; from audit.cli import main; sys.exit(main(['explain', 'privileged']))"],
                          capture_output=True, text=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 0 and "\x1b[" not in proc.stdout


# ------------------------------------------------------------------ parser, help, version

def test_build_parser_lists_every_option():
    import argparse
    from audit.cli import build_explain_parser, build_parser
    parser = build_parser()
    assert isinstance(parser, argparse.ArgumentParser)
    options = {o for action in parser._actions for o in action.option_strings}
    assert {"--all", "--format", "-o", "--output", "--fail-on", "--severity", "--checks", "--skip", "--ignore-file",
            "--active", "--docker-socket", "--jobs", "-v", "--verbose", "--version", "--help"} <= options
    assert isinstance(build_explain_parser(), argparse.ArgumentParser)


def test_help_teaches_options_choices_exit_codes_and_an_example():
    proc = run_audit("--help", check_rc=0)
    out = " ".join(proc.stdout.split())     # argparse wraps lines
    for text in ("usage: audit", "--format {text,json,sarif}", "critical, high, medium, low, info", "exit codes:",
                 "141", "examples:", "audit --all", "audit explain", "ignore file", "unknown"):
        assert text in out, text
    explain = run_audit("explain", "--help", check_rc=0).stdout
    assert "usage: audit explain CHECK_ID" in explain and "exit codes:" in explain and "example" in explain


def test_version():
    import re
    proc = run_audit("--version", check_rc=0)
    assert re.fullmatch(r"audit \(pysandbox\) \d+\.\d+\.\d+\S*\n", proc.stdout), proc.stdout
    from audit.report import package_version
    assert proc.stdout == "audit (pysandbox) %s\n" % package_version()


def test_unusable_options_are_errors(tmp_path):
    bad_ignore = tmp_path / "bad.auditignore"
    bad_ignore.write_text("lsm-off because it is fine\n")
    for args in (["--docker-socket", "/nonexistent", "1"], ["--docker-socket", "/etc/hostname", "1"],
                 ["--docker-socket", "tcp://127.0.0.1:2375", "1"], ["--jobs", "0", "--all"],
                 ["--checks", "no-such-check", "self"], ["--skip", "no-such-check", "self"],
                 ["--severity", "huge", "self"], ["-o", "/nonexistent/dir/report.json", "self"],
                 ["--ignore-file", str(tmp_path / "missing"), "self"], ["--ignore-file", str(bad_ignore), "self"],
                 ["explain", "a", "b"]):
        _one_line_error(run_audit(*args))
    proc = run_audit("--docker-socket", "/nonexistent", "1")
    assert "/nonexistent" in proc.stderr


# ------------------------------------------------------------------ output

def test_output_file(tmp_path):
    out = tmp_path / "report.json"
    proc = run_audit("self", "--format", "json", "-o", str(out), check_rc=0)
    assert proc.stdout == ""
    assert json.loads(out.read_text())["schema"] == "pysandbox.audit/1"
    text = tmp_path / "report.txt"
    run_audit("self", "-o", str(text), check_rc=0)
    assert text.read_text().startswith("audit: ") and "\x1b" not in text.read_text()


def _audit_into_closed_pipe(*args):
    """The CLI writing into a pipe whose reader is already gone (as `audit ... | head -0`)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.run([sys.executable, "-m", "audit", *args], stdout=write_end, stderr=subprocess.PIPE,
                              env=env, cwd=REPO, timeout=120)
    finally:
        os.close(write_end)
    return proc


def test_closed_pipe_ends_quietly():
    from audit.cli import EXIT_BROKEN_PIPE
    for args in (["self", "-v"], ["self", "--format", "json"], ["--all"], ["explain", "lsm-off"]):
        proc = _audit_into_closed_pipe(*args)
        assert proc.returncode == EXIT_BROKEN_PIPE, (args, proc.returncode, proc.stderr)
        assert b"Traceback" not in proc.stderr and b"BrokenPipe" not in proc.stderr, proc.stderr


def test_all_into_head_prints_one_line_and_no_traceback():
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(["sh", "-c", '"$0" -m audit --all -v | head -1', sys.executable], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 0 and proc.stdout.count("\n") == 1, proc
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_error_messages_escape_what_the_user_or_target_gave():
    proc = run_audit("no-such\x1b]0;title\x07container", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    _one_line_error(proc)
    assert "\x1b" not in proc.stderr and "\x07" not in proc.stderr


def test_explain_links_to_the_lab_that_shows_the_gap():
    """Every check a lab lesson demonstrates names that lesson, and the lesson exists."""
    import subprocess
    import sys
    from pysandbox_common.teaching import LAB_OF_CHECK
    from audit.checks import get
    from sandbox.lab import LAYERS
    assert set(LAB_OF_CHECK.values()) <= set(LAYERS)
    for check_id, layer in LAB_OF_CHECK.items():
        assert get(check_id) is not None, check_id
    proc = subprocess.run([sys.executable, "-m", "audit", "explain", "ns-net-host"], capture_output=True, text=True)
    assert proc.returncode == 0 and "pysandbox lab net" in proc.stdout, proc.stdout
    proc = subprocess.run([sys.executable, "-m", "audit", "explain", "sysrq-writable"], capture_output=True, text=True)
    assert proc.returncode == 0 and "pysandbox lab" not in proc.stdout
