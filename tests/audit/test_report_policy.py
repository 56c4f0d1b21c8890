"""Choosing what a report says: --checks, --skip, --severity and the ignore file (reason,
target pattern, expiry), on built findings and through the real CLI; strict passes
--fail-on medium once lsm-off is accepted in .auditignore."""
import datetime
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from audit import report
from livetargets import REPO, require
from test_report_render import FINDINGS, PATHS, _finding, snap  # noqa: F401  (snap is a fixture)

KNOWN = {"lsm-off", "nnp-off", "cap-net-raw", "escape/runtime-socket", "runtime-socket", "ns-pid-host"}
TODAY = datetime.date(2026, 6, 1)


def _built(snap):
    return report.build(snap, [_finding(c, s, e, n) for c, s, e, n in FINDINGS], PATHS)


def test_ignore_file_format():
    text = """
# accepted gaps
lsm-off reason="no LSM on this kernel" expires=2026-12-31   # trailing comment
cap-net-raw target='docker/ping-*' reason="ping needs raw sockets"
escape/runtime-socket target=docker/ci reason=builds
nnp-off reason="was accepted" expires=2026-05-31
"""
    entries, warnings = report.parse_ignore_file(text, ".auditignore", KNOWN, today=TODAY)
    assert [(e.rule, e.target, e.reason, e.expires, e.source) for e in entries] == [
        ("lsm-off", None, "no LSM on this kernel", "2026-12-31", ".auditignore:3"),
        ("cap-net-raw", "docker/ping-*", "ping needs raw sockets", None, ".auditignore:4"),
        ("escape/runtime-socket", "docker/ci", "builds", None, ".auditignore:5"),
    ]
    assert warnings == [".auditignore:6: the entry for nnp-off expired on 2026-05-31: it no longer suppresses"]


@pytest.mark.parametrize("line, message", [
    ("lsm-off", "needs reason="),
    ("lsm-off reason=", "needs reason="),
    ("no-such-check reason=x", "unknown check id 'no-such-check'"),
    ("LSM-OFF reason=x", "is not a check id"),
    ("lsm-off reason=x expires=tomorrow", "is not a date"),
    ("lsm-off reason=x reason=y", "given twice"),
    ("lsm-off because=x", "expected target=, reason= or expires="),
    ("lsm-off reason=\"unterminated", "No closing quotation"),
])
def test_ignore_file_errors_name_the_line(line, message):
    with pytest.raises(report.IgnoreFileError) as err:
        report.parse_ignore_file("# ok\n" + line + "\n", "x.ignore", KNOWN, today=TODAY)
    assert str(err.value).startswith("x.ignore:2: ") and message in str(err.value), str(err.value)


def test_suppressed_findings_leave_the_verdict_and_counts(snap):
    r = _built(snap)
    entries, _ = report.parse_ignore_file('runtime-socket reason="socket proxy, read-only API"\n'
                                          'escape/runtime-socket reason="same"\n', "f", None, today=TODAY)
    out = report.Policy(ignore=entries).apply(r)
    s = out["summary"]
    assert s["failed"] == r["summary"]["failed"] - 1 and s["suppressed"] == 2 and s["escape_paths"] == 0
    assert s["worst"] == "high" and s["verdict"].startswith("no escape path found")
    f = next(f for f in out["findings"] if f["id"] == "runtime-socket")
    assert f["status"] == "fail" and f["suppressed"] == {"reason": "socket proxy, read-only API", "expires": None,
                                                         "source": "f:1"}
    assert report.worst_failing_rank(out) == report.SEVERITY_RANK["high"]
    text = report.render_text([out])
    assert "runtime-socket" not in text.split("verdict:")[1].split("\n")[0]
    assert "FAIL    runtime-socket" not in text
    verbose = report.render_text([out], verbose=True)
    assert "suppressed by f:1: socket proxy, read-only API" in verbose.split("SUPPRESSED:")[1]


def test_target_pattern_limits_an_entry(snap):
    r = _built(snap)
    identity = r["target"]["identity"]
    for pattern, applies in ((identity, True), (identity.split("/")[0] + "/*", True), ("docker/other", False)):
        entry = report.IgnoreEntry("nnp-off", pattern, "why", None, "f:1")
        out = report.Policy(ignore=[entry]).apply(r)
        assert bool(next(f for f in out["findings"] if f["id"] == "nnp-off")["suppressed"]) is applies, pattern


def test_skip_and_checks_select_what_is_reported(snap):
    r = _built(snap)
    out = report.Policy(skip=["cap-net-raw", "proc-sys-rw"]).apply(r)
    ids = {f["id"] for f in out["findings"]}
    assert "cap-net-raw" not in ids and "proc-sys-rw" not in ids and "nnp-off" in ids
    assert out["summary"]["unknown"] == 1 and out["summary"]["failed"] == 3
    # escape paths rest on all checks: skipping a check they rest on does not hide them
    assert report.Policy(skip=["runtime-socket"]).apply(r)["escape_paths"]
    assert not report.Policy(skip=["escape/runtime-socket"]).apply(r)["escape_paths"]
    only = report.Policy(checks=["nnp-off"]).apply(r)
    assert [f["id"] for f in only["findings"]] == ["nnp-off"] and only["escape_paths"] == []
    rest_on = report.Policy(checks=["runtime-socket"]).apply(r)
    assert [p["id"] for p in rest_on["escape_paths"]] == ["runtime-socket"]


def test_severity_shows_only_at_or_above_but_counts_everything(snap):
    r = _built(snap)
    policy = report.Policy(min_severity="high")
    text = report.render_text([r], policy=policy)
    assert "FAIL    runtime-socket" in text and "FAIL    seccomp-off" in text
    assert "cap-net-raw" not in text and "nnp-off" not in text
    assert "2 failing checks below --severity high not shown" in text
    doc = report.for_output(r, policy)
    assert {f["id"] for f in doc["findings"] if f["status"] == "fail"} == {"runtime-socket", "seccomp-off"}
    assert doc["summary"]["failed"] == 4


# ------------------------------------------------------------------ through the CLI

def _audit(*args, cwd=REPO, env=None):
    full = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "audit", *args], capture_output=True, text=True, env=full,
                          cwd=cwd, timeout=120)


def test_default_ignore_file_in_the_cwd(tmp_path):
    # self shares the host's PID namespace, as root and rootless
    base = _audit("self", "--format", "json", cwd=str(tmp_path))
    assert base.returncode == 0, base.stderr
    before = json.loads(base.stdout)
    assert next(f for f in before["findings"] if f["id"] == "ns-pid-host")["status"] == "fail"
    future = (datetime.date.today() + datetime.timedelta(days=30)).isoformat()
    past = (datetime.date.today() - datetime.timedelta(days=1)).isoformat()
    (tmp_path / ".auditignore").write_text(
        'ns-pid-host reason="the test shares it" expires=%s\nns-net-host reason="old" expires=%s\n' % (future, past))
    proc = _audit("self", "--format", "json", cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    after = json.loads(proc.stdout)
    pid_ns = next(f for f in after["findings"] if f["id"] == "ns-pid-host")
    assert pid_ns["suppressed"]["reason"] == "the test shares it"
    assert after["summary"]["failed"] == before["summary"]["failed"] - 1
    assert next(f for f in after["findings"] if f["id"] == "ns-net-host")["suppressed"] is None
    assert proc.stderr == ("audit: warning: .auditignore:2: the entry for ns-net-host expired on %s: "
                           "it no longer suppresses\n" % past)
    # --ignore-file points elsewhere: the cwd's file is not read
    other = tmp_path / "empty.ignore"
    other.write_text("# nothing accepted\n")
    again = json.loads(_audit("self", "--format", "json", "--ignore-file", str(other), cwd=str(tmp_path)).stdout)
    assert again["summary"]["failed"] == before["summary"]["failed"]


def test_cli_skip_checks_severity(tmp_path):
    proc = _audit("self", "--format", "json", "--checks", "ns-pid-host,ns-net-host", "--skip", "ns-net-host")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [f["id"] for f in doc["findings"]] == ["ns-pid-host"]
    full = json.loads(_audit("self", "--format", "json").stdout)
    high = json.loads(_audit("self", "--format", "json", "--severity", "high").stdout)
    rank = report.SEVERITY_RANK
    assert high["findings"] and all(rank[f["severity"]] >= rank["high"] for f in high["findings"])
    assert len(high["findings"]) < len(full["findings"])
    assert high["summary"]["failed"] == full["summary"]["failed"]      # counts still see everything


@pytest.fixture
def strict_sandbox(tmp_path):
    """pysandbox's strict profile running sleep, started with the installed command."""
    from util import pysandbox_cmd
    state = tmp_path / "state"
    env = dict(os.environ, PYSANDBOX_STATE_DIR=str(state),
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    name = "audit-policy-%d" % os.getpid()
    proc = subprocess.Popen(pysandbox_cmd() + ["run", "--profile", "strict", "--name", name, "--quiet", "--",
                                               "/bin/sleep", "60"], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
    try:
        from pysandbox_common import registry
        deadline = time.monotonic() + 15
        while True:
            record = registry.find(name, directory=str(state))
            if record:
                # the command once it runs sleep: seccomp goes on last, just before its execve
                try:
                    with open("/proc/%d/task/%d/children" % (record["pid"], record["pid"])) as f:
                        children = f.read().split()
                    if children:
                        with open("/proc/%s/comm" % children[0]) as f:
                            if f.read().strip() == "sleep":
                                break
                except OSError:
                    pass
            if proc.poll() is not None:
                require(False, "pysandbox run --profile strict cannot start here: %s"
                        % proc.stderr.read().decode(errors="replace").strip()[-300:])
            assert time.monotonic() < deadline, "strict sandbox did not register"
            time.sleep(0.05)
        yield name, env
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)    # the supervisor, by its PID: it tears the sandbox down
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        proc.stderr.close()


def test_strict_passes_fail_on_medium_once_lsm_off_is_accepted(strict_sandbox, tmp_path):
    name, env = strict_sandbox
    doc = json.loads(_audit(name, "--format", "json", env=env, cwd=str(tmp_path)).stdout)
    medium_or_worse = {f["id"] for f in doc["findings"] if f["status"] == "fail"
                       and report.SEVERITY_RANK[f["severity"]] >= report.SEVERITY_RANK["medium"]}
    # strict's only gap at medium or above on a kernel without AppArmor/SELinux is lsm-off
    assert medium_or_worse <= {"lsm-off"}, medium_or_worse
    require(medium_or_worse == {"lsm-off"}, "this kernel has an LSM: lsm-off passes, nothing to accept")
    assert _audit(name, "--fail-on", "medium", env=env, cwd=str(tmp_path)).returncode == 1
    (tmp_path / ".auditignore").write_text('lsm-off reason="no AppArmor or SELinux on this kernel"\n')
    proc = _audit(name, "--fail-on", "medium", env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "lsm-off" not in proc.stdout and "1 suppressed" in proc.stdout
    assert _audit(name, "--fail-on", "medium", "--skip", "lsm-off", env=env, cwd=REPO).returncode == 0
