"""What is and is not a target, on real processes (root and rootless): a kernel thread, a
zombie and an exited PID are refused with exit 2 and one line; a process in every host
namespace is audited and labelled "host"; `--all` gives one target per container, the
`unshare` launcher folded into its child's container."""
import json
import os
import subprocess
import sys

import pytest

from livetargets import require, resolver, run_audit, state_of, stop_process, wait_for
from util import children as _children

HOST_NOTE = "not isolated: a host process"


def _refused(target, *words):
    proc = run_audit(str(target), "--format", "json")
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-500:], proc.stderr)
    assert proc.stdout == "" and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr
    return proc.stderr


def test_kernel_thread_is_refused():
    with open("/proc/2/stat") as f:
        stat = f.read()
    flags = int(stat.rsplit(")", 1)[1].split()[6])
    require(flags & 0x00200000, "PID 2 is not kthreadd here (a PID namespace without the host's kernel threads)")
    _refused(2, "PID 2", "kernel thread")


def test_zombie_is_refused():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        # not reaped: it stays a zombie until wait()
        wait_for(lambda: state_of(child.pid) == "Z", "the child to exit")
        message = _refused(child.pid, "zombie", "not running")
        assert str(os.getpid()) in message          # who has not reaped it
        with pytest.raises(Exception) as err:
            resolver().describe_pid(child.pid)
        assert type(err.value).__name__ == "TargetError"
    finally:
        child.wait()


def test_exited_process_is_refused():
    child = subprocess.Popen(["true"])
    child.wait()
    _refused(child.pid, "no process")


@pytest.fixture
def host_sleeper():
    proc = subprocess.Popen(["sleep", "300"], stdin=subprocess.DEVNULL)
    wait_for(lambda: os.path.realpath("/proc/%d/exe" % proc.pid).endswith("sleep"), "sleep to exec")
    yield proc
    stop_process(proc)


def test_host_process_is_labelled_host(host_sleeper):
    t = resolver().describe_pid(host_sleeper.pid)
    assert t.runtime == "host" and HOST_NOTE in t.notes
    assert t.identity == "host/" + os.path.realpath("/proc/%d/exe" % host_sleeper.pid).lstrip("/")
    proc = run_audit(str(host_sleeper.pid), "--format", "json")
    assert proc.returncode in (0, 1), proc.stderr
    report = json.loads(proc.stdout)
    assert report["target"]["runtime"] == "host" and HOST_NOTE in report["target"]["notes"]
    # the verdict still lists its gaps: it shares every namespace (those with fixed initial
    # inodes are judged rootless too; net and mnt need the host's PID 1 or kthreadd)
    failing = {f["id"] for f in report["findings"] if f["status"] == "fail"}
    assert {"ns-pid-host", "ns-ipc-host", "ns-uts-host"} <= failing
    if os.geteuid() == 0:
        assert {"ns-net-host", "ns-mnt-host"} <= failing
    assert all(t.pid != host_sleeper.pid for t in resolver().all_targets())


def _unshare(extra=()):
    """An unshare'd sleeper: `unshare` itself enters the new namespaces except the PID one
    (that applies to its forked child, PID 1 inside)."""
    proc = subprocess.Popen(["unshare", *extra, "--mount", "--uts", "--ipc", "--net", "--pid", "--fork",
                             "--", "sleep", "300"], stdin=subprocess.DEVNULL)
    child = wait_for(lambda: _sleeping_child(proc.pid), "unshare's child to exec sleep")
    return proc, child


def _sleeping_child(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            kids = [int(k) for k in f.read().split()]
    except OSError:
        return None
    for kid in kids:
        try:
            if os.readlink("/proc/%d/exe" % kid).endswith("sleep"):
                return kid
        except OSError:
            pass
    return None


def test_unshare_parent_and_child_are_one_target():
    rootless = os.geteuid() != 0
    proc, child = _unshare(("--user", "--map-root-user") if rootless else ())
    try:
        mine = [t for t in resolver().all_targets() if t.pid in (proc.pid, child)]
        assert [(t.pid, t.runtime) for t in mine] == [(child, "process")]
        assert mine[0].identity == "process/" + os.path.realpath("/proc/%d/exe" % child).lstrip("/")
        # the launcher itself, by PID, is labelled as part of that container, not the host
        t = resolver().describe_pid(proc.pid)
        assert t.runtime == "process" and HOST_NOTE not in t.notes
    finally:
        stop_process(proc, [child])


def test_target_fields_of_a_bare_sandbox():
    rootless = os.geteuid() != 0
    proc, child = _unshare(("--user", "--map-root-user") if rootless else ())
    try:
        t = resolver().describe_pid(child)
        assert t.name is None and t.container_id is None and t.image is None
        assert dict(t.labels) == {}
        assert HOST_NOTE not in t.notes
    finally:
        stop_process(proc, [child])


def test_unprintable_target_name_is_escaped():
    proc = run_audit("no-such\x1b]0;title\x07target")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "\x1b" not in proc.stderr and "\x07" not in proc.stderr
    assert "\\x1b" in proc.stderr


def test_a_contained_process_cannot_pose_as_a_launcher(tmp_path):
    """A process inside a PID namespace named `conmon` (comm is the executable's file name)
    with conmon's arguments starts a child in further namespaces: that child is not
    labelled Podman, because real launchers run in the host's PID namespace."""
    import shutil
    fake = tmp_path / "conmon"
    shutil.copy("/bin/sh", fake)
    os.chmod(fake, 0o755)
    os.chmod(tmp_path, 0o755)
    userns = ("--user", "--map-root-user") if os.geteuid() != 0 else ()
    script = "unshare --net --uts --ipc -- sleep 300; : -n fake-name --cid deadbeef -b /nonexistent"
    proc = subprocess.Popen(["unshare", *userns, "--pid", "--fork", "--", str(fake), "-c", script],
                            stdin=subprocess.DEVNULL)
    try:
        def impostor_child():
            for kid in _children(proc.pid):
                for grandchild in _children(kid):
                    if _sleeping_child(grandchild) or os.readlink("/proc/%d/exe" % grandchild).endswith("sleep"):
                        return kid, grandchild
            return None
        impostor, child = wait_for(impostor_child, "the impostor's child")
        with open("/proc/%d/comm" % impostor) as f:
            assert f.read().strip() == "conmon"
        sleeper = _sleeping_child(child) or child
        t = resolver().describe_pid(sleeper)
        assert t.runtime == "process" and t.name is None, t
    finally:
        stop_process(proc, [p for p in _children(proc.pid)])


