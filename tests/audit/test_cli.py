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
