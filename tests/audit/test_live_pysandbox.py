"""pysandbox's own profiles as targets: strict is clean (nothing failing at high or above),
permissive shows its gaps. The runtime is started as a subprocess and its supervisor
ended by PID."""
import os
import signal
import subprocess
import sys
import time

import pytest

from livetargets import REPO, audit_json, failing, require, root_only

SEVERE = {"critical", "high"}


@pytest.fixture
def sandbox(tmp_path):
    root_only()
    try:
        import pysandbox_common.registry as state  # noqa: F401
        import sandbox.cli  # noqa: F401
    except ImportError as exc:
        require(False, "pysandbox runtime not importable: %s" % exc)
    env = dict(os.environ, PYSANDBOX_STATE_DIR=str(tmp_path / "state"),
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    started = []

    def start(profile):
        name = "audit-%s-%d" % (profile, os.getpid())
        # the installed command, as a user runs it (with the C init setup.sh builds)
        from util import pysandbox_cmd
        proc = subprocess.Popen(pysandbox_cmd() + ["run", "--profile", profile, "--name", name,
                                 "--quiet", "--", "/bin/sleep", "60"], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
        started.append(proc)
        from pysandbox_common import registry as state
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            record = state.find(name, directory=env["PYSANDBOX_STATE_DIR"])
            if record:
                # the command is PID 1's child once it has forked
                try:
                    with open("/proc/%d/task/%d/children" % (record["pid"], record["pid"])) as f:
                        if f.read().split():
                            return name, env
                except OSError:
                    pass
            if proc.poll() is not None:
                raise AssertionError("pysandbox run exited %s: %s" % (proc.returncode, proc.stderr.read().decode()[-2000:]))
            time.sleep(0.05)
        raise AssertionError("sandbox %s did not register" % name)

    yield start
    for proc in started:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)     # the supervisor, by its PID; it tears the sandbox down
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        proc.stderr.close()


def _severe(report):
    return {f["id"] for f in report["findings"] if f["status"] == "fail" and f["severity"] in SEVERE}


def test_strict_is_clean(sandbox):
    name, env = sandbox("strict")
    for extra in ((), ("--active",)):
        report = audit_json(name, *extra, env=env)
        assert report["target"]["runtime"] == "pysandbox"
        assert _severe(report) == set(), report["summary"]
        assert report["escape_paths"] == []
        # the user namespace keeps root unmapped and no capability acts on the host
        assert {"ns-user-host", "uid0-host", "cap-sys-admin", "seccomp-off", "nnp-off"}.isdisjoint(failing(report))


def test_permissive_shows_gaps(sandbox):
    name, env = sandbox("permissive")
    report = audit_json(name, env=env)
    assert report["target"]["runtime"] == "pysandbox"
    gaps = failing(report)
    assert {"ns-net-host", "seccomp-off", "limits-memory-missing", "limits-pids-missing"} <= gaps
    assert "ns-net-host" in _severe(report)
    # capabilities it keeps are inside its user namespace: reported, at low severity
    cap = next(f for f in report["findings"] if f["id"] == "cap-sys-admin")
    assert cap["status"] == "fail" and cap["severity"] == "low"
    assert "only inside user namespace" in (cap["note"] or "")


def test_sandbox_target_fields_and_fleet(sandbox, monkeypatch):
    name, env = sandbox("strict")
    monkeypatch.setenv("PYSANDBOX_STATE_DIR", env["PYSANDBOX_STATE_DIR"])
    from audit.targets import Resolver
    from pysandbox_common import registry as state
    record = state.find(name)
    init = int(record["pid"])
    with open("/proc/%d/task/%d/children" % (init, init)) as f:
        command = int(f.read().split()[0])
    by_name = Resolver().resolve(name)
    assert (by_name.runtime, by_name.name, by_name.pid) == ("pysandbox", name, command)
    assert by_name.identity == "pysandbox/" + name
    # by PID: the init (the registry's PID) and the command itself
    for pid in (init, command):
        t = Resolver().describe_pid(pid)
        assert (t.runtime, t.name, t.pid) == ("pysandbox", name, command), pid
    fleet = [t for t in Resolver().all_targets() if t.runtime == "pysandbox" and t.name == name]
    assert [t.pid for t in fleet] == [command]
