"""Limits end to end through the runtime: the verdict a user sees, and nothing left behind
after an OOM kill, a fork bomb, a timeout or a SIGKILLed supervisor."""
import os
import signal
import subprocess
import sys
import time

import pytest

from sandbox import cgroup
from util import comm as _comm, py, require

ROOT = os.geteuid() == 0
HOG = "b = []\nwhile True: b.append(bytearray(8 << 20))"
BOMB = ("import os, time\n"
        "while True:\n"
        "    try:\n"
        "        os.fork()\n"
        "    except OSError:\n"
        "        time.sleep(0.05); os._exit(3)\n")


def _need_limits():
    require(ROOT, "cgroup limits need root on this host (v1 has no delegation)")
    require(cgroup.detect() is not None, "no cgroup filesystem")


def _remove_leaves(prefix):
    """Kill what is left in our leaves of this test process, then remove them."""
    for path in _our_leaves(prefix):
        for pid in cgroup.procs(path):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        cgroup.wait_empty(path, 2)
        cgroup.rmdir_quiet(path)


def _our_leaves(prefix):
    out = []
    for _fstype, point, _root, _opts in cgroup.mounts():
        parent = os.path.join(point, cgroup.PARENT)
        try:
            out += [os.path.join(parent, n) for n in os.listdir(parent) if n.startswith(prefix)]
        except OSError:
            pass
    return out


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    directory = tmp_path / "state"
    monkeypatch.setenv("PYSANDBOX_STATE_DIR", str(directory))
    return directory


@pytest.fixture
def strict():
    from sandbox import Sandbox, load_profile

    def make(**limits):
        profile = load_profile("strict")
        if limits:
            profile = profile.with_overrides({"limits": limits})
        return Sandbox(profile)
    yield make
    prefix = "sbx-%d-" % os.getpid()
    _remove_leaves(prefix)


def test_oom_verdict(strict, state_dir):
    _need_limits()
    result = strict(memory="64M").run(py(HOG), timeout=30)
    assert result.reason == "oom", result
    assert result.exit_code == 137
    assert 40 << 20 < result.memory_peak <= (64 << 20) + (1 << 20)
    assert result.limits["memory"] == 64 << 20 and result.limits["memory_swap"] == 0
    assert _our_leaves("sbx-%d-" % os.getpid()) == []


def test_fork_bomb_verdict_and_host_still_forks(strict, state_dir):
    _need_limits()
    result = strict(pids=24).run(py(BOMB), timeout=30)
    assert result.reason == "pids", result
    assert subprocess.run(["/bin/true"]).returncode == 0
    assert _our_leaves("sbx-%d-" % os.getpid()) == []


def test_cpu_quota_through_runtime(strict, state_dir):
    _need_limits()
    burn = "import time\nend = time.monotonic() + 1.5\nwhile time.monotonic() < end: pass"
    result = strict(cpus=0.5).run(py(burn), timeout=30)
    assert result.reason == "exit" and result.exit_code == 0, result
    # the quota caps the share (0.5 CPU); on a busy machine it may get less, never much more
    assert 0 < result.cpu / result.wall < 0.7, (result.cpu, result.wall)


def test_timeout_leaves_no_cgroup(strict, state_dir):
    _need_limits()
    tree = "import os, time\nfor _ in range(4): os.fork()\ntime.sleep(60)"
    result = strict().run(py(tree), timeout=0.5)
    assert result.reason == "timeout"
    assert _our_leaves("sbx-%d-" % os.getpid()) == []


def _start_supervisor(state_dir):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=repo, PYSANDBOX_STATE_DIR=str(state_dir))
    supervisor = subprocess.Popen([sys.executable, "-m", "sandbox", "run", "--profile", "strict",
                                   "--memory", "64M", "--", "/bin/sleep", "60"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    prefix = "sbx-%d-" % supervisor.pid
    deadline = time.monotonic() + 20
    leaves = []
    while time.monotonic() < deadline:
        leaves = _our_leaves(prefix)
        # the command runs: every setup step (and credential change) of PID 1 is done
        if leaves and any(_comm(pid) == "sleep" for p in leaves for pid in cgroup.procs(p)):
            break
        time.sleep(0.02)
    return supervisor, prefix, leaves




def _wait_empty(leaves, timeout):
    deadline = time.monotonic() + timeout
    while any(cgroup.procs(p) for p in leaves) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not any(cgroup.procs(p) for p in leaves)


def _clean(supervisor, prefix):
    if supervisor.poll() is None:
        supervisor.kill()
        supervisor.wait()
    _remove_leaves(prefix)


def test_killed_supervisor_orphan_removed_by_next_gc(state_dir):
    """gc keeps the cgroup of a dead supervisor while a task lives in it, and removes it
    (with the stale state file) once none does."""
    _need_limits()
    supervisor, prefix, leaves = _start_supervisor(state_dir)
    try:
        assert leaves, "the sandbox never got its cgroup"
        supervisor.kill()
        supervisor.wait()
        if not _wait_empty(leaves, 2):
            # still alive (test_sandbox_dies_with_its_supervisor fails too): gc must keep it
            assert not any(p in cgroup.gc() for p in leaves)
            assert all(os.path.isdir(p) for p in leaves)
            for path in leaves:
                cgroup.kill_tasks(path)
            assert _wait_empty(leaves, 10)
        assert _our_leaves(prefix), "cgroup vanished before gc (test would prove nothing)"
        # the run path's gc skips a round while another run creates its cgroups (it holds the
        # parent for a millisecond): the next one collects
        removed = []
        for _round in range(50):
            removed += cgroup.gc()
            if not _our_leaves(prefix):
                break
        assert _our_leaves(prefix) == []
        assert set(leaves) <= set(removed)
        if state_dir.exists():
            assert not [f for f in os.listdir(state_dir) if f.startswith(prefix)]
    finally:
        _clean(supervisor, prefix)


def test_sandbox_dies_with_its_supervisor(state_dir):
    _need_limits()
    supervisor, prefix, leaves = _start_supervisor(state_dir)
    try:
        assert leaves
        supervisor.kill()
        supervisor.wait()
        assert _wait_empty(leaves, 5), "sandbox outlived its supervisor"
    finally:
        _clean(supervisor, prefix)


def test_200_runs_with_kills_leave_no_cgroup():
    """Back to back through the runtime: start, kill, wait; every sandbox's cgroups go."""
    _need_limits()
    from sandbox import Sandbox, load_profile
    box = Sandbox(load_profile("strict"))
    for _ in range(200):
        proc = box.start(["/bin/sleep", "30"])
        proc.kill()
        result = proc.wait()
        assert result.reason in ("signal", "setup-error"), result
    # back to back, the sandbox holds at most the last run's set and one made ahead (cgroup.Pool)
    fresh, retired = box._cgroups.held()
    assert len(fresh) <= 1 and len(retired) <= 1, (fresh, retired)
    box.close()
    leftovers = []
    for point in set(cgroup.v1_hierarchies().values()):
        parent = cgroup.v1_parent(point)
        if os.path.isdir(parent):
            leftovers += [n for n in os.listdir(parent) if os.path.isdir(os.path.join(parent, n))
                          and n.startswith("sbx-%d-" % os.getpid())]
    assert leftovers == []


def test_strict_sandbox_gets_a_device_allowlist():
    """As root, strict's sandbox sits in the shared devices cgroup that allows only the
    minimal /dev, which stays (for the other sandboxes) when this one's other cgroups go,
    and goes with the last sandbox."""
    _need_limits()
    from sandbox import Sandbox, load_profile, cgroup_v1
    require("devices" in cgroup.v1_hierarchies(), "no v1 devices controller")
    keeper = Sandbox(load_profile("strict"))
    other = keeper.start(["/bin/sleep", "60"])  # another sandbox, still running when this one goes
    try:
        box = Sandbox(load_profile("strict"))
        proc = box.start(["/bin/sleep", "5"])
        paths = list(proc._cgroup.paths)
        try:
            devices = [p for p in paths if "/devices/" in p]
            assert len(devices) == 1
            with open(os.path.join(devices[0], "devices.list")) as f:
                assert f.read().split("\n")[:-1] == list(cgroup_v1.DEVICE_ALLOW)
            # the sandbox joins its cgroups itself, first thing after it is born
            deadline = time.monotonic() + 5
            while True:
                with open("/proc/%d/cgroup" % proc.pid) as f:
                    joined = any(":devices:" in line and line.rstrip().endswith("/" + os.path.basename(devices[0]))
                                 for line in f)
                if joined or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            assert joined
        finally:
            proc.kill()
            proc.wait()
            box.close()
        assert os.path.isdir(devices[0])
        assert [p for p in paths if p != devices[0] and os.path.exists(p)] == []
        other.kill()
        other.wait()
    finally:
        if other.result is None:
            other.kill()
            other.wait()
        keeper.close()
    assert not os.path.isdir(devices[0])  # the last sandbox gone: the shared cgroup with it


# a daemon that leaves its session and parent behind, then the command exits at once
DAEMON = ("import os, time\n"
          "if os.fork() == 0:\n"
          "    os.setsid()\n"
          "    if os.fork() == 0:\n"
          "        os.execv('/bin/sleep', ['sleep', '61.25'])\n"
          "    os._exit(0)\n"
          "os.wait()\n"
          "time.sleep(0.2)\n")


def _daemons(cmdline):
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                if entry.isdigit() and f.read() == cmdline:
                    found.append(int(entry))
        except OSError:
            pass
    return found


def test_a_pid_namespace_sandbox_needs_no_freezer_and_leaves_no_daemon(strict, state_dir):
    """With a pid namespace of its own, killing PID 1 ends every process in the sandbox
    (the kernel's rule; cgroup_v1.hierarchies): strict's cgroup set has no freezer leaf,
    and a daemon that double-forked away is gone with the run, as is every cgroup."""
    _need_limits()
    require("freezer" in cgroup.v1_hierarchies(), "no v1 freezer on this host: nothing to leave out")
    box = strict()
    process = box.start(py(DAEMON))
    labels = [label for label, _path in process._cgroup.dirs]
    assert "freezer" not in labels and "memory" in labels and "pids" in labels, labels
    result = process.wait()
    assert result.exit_code == 0, (result.stage, result.message)
    box.close()
    assert _our_leaves("sbx-%d-" % os.getpid()) == []
    # nothing of the run is left: no process has the daemon's command line
    assert not _daemons(b"sleep\x0061.25\x00")
    # a timeout takes the same way: SIGKILL of PID 1, then the cgroup's verified kill
    tree = "import os, time\nfor _ in range(4): os.fork()\ntime.sleep(60)"
    box = strict()
    result = box.run(py(tree), timeout=0.5)
    box.close()
    assert result.reason == "timeout"
    assert _our_leaves("sbx-%d-" % os.getpid()) == []


def _our_parents():
    return [os.path.join(point, cgroup.PARENT) for _fstype, point, _root, _opts in cgroup.mounts()
            if os.path.isdir(os.path.join(point, cgroup.PARENT))]


def test_the_last_sandbox_out_removes_the_parents(state_dir):
    """Nothing of ours stays on the host once nothing runs: the `pysandbox` parents go with the
    last sandbox (a CLI run, a closed Sandbox), and stay while another sandbox still runs."""
    _need_limits()
    from sandbox import Sandbox, load_profile
    cgroup.gc(full=True)
    assert _our_parents() == [], "something of ours was left before this test"
    proc = subprocess.run([sys.executable, "-m", "sandbox", "run", "--profile", "strict", "--", "/bin/true"],
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert proc.returncode == 0, proc.stderr
    assert _our_parents() == []
    keeper, other = Sandbox(load_profile("strict")), Sandbox(load_profile("strict"))
    sleeper = keeper.start(["/bin/sleep", "60"])
    try:
        for _ in range(3):
            assert other.run(["/bin/true"]).exit_code == 0
        other.close()
        assert _our_parents(), "the parents went while a sandbox still ran in them"
    finally:
        sleeper.kill()
        sleeper.wait()
        keeper.close()
    assert _our_parents() == []


def _devices_of(pid):
    with open("/proc/%d/cgroup" % pid) as f:
        return [line.rstrip().split(":", 2)[2] for line in f if line.split(":")[1] == "devices"]


def test_a_zygotes_pid1_is_born_in_the_shared_devices_cgroup():
    """A thread's zygote joins the shared devices cgroup once, so the PID 1s it clones are
    born there and skip that join; a run that falls back to a one-shot stager (too large for
    a zygote request) still joins it itself. Every sandbox's command is under the allowlist."""
    _need_limits()
    from sandbox import Sandbox, load_profile
    require("devices" in cgroup.v1_hierarchies(), "no v1 devices controller")
    box = Sandbox(load_profile("strict"))
    try:
        for argv, executor in ((["/bin/sleep", "5"], "stager"), (["/bin/sleep", "5"], "zygote"),
                               (["/bin/sleep", "5"] + ["x" * 1000] * 140, "stager")):
            proc = box.start(argv)
            try:
                assert proc.executor == executor, (proc.executor, executor)
                devices = [p for label, p in proc._cgroup.dirs if label == "devices"]
                assert len(devices) == 1
                want = "/" + os.path.relpath(devices[0], cgroup.v1_hierarchies()["devices"])
                deadline = time.monotonic() + 5
                while _devices_of(proc.pid) != [want] and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert _devices_of(proc.pid) == [want], (executor, _devices_of(proc.pid), want)
                if executor == "zygote":
                    zygote = box._zygotes[0][1]
                    assert _devices_of(zygote.pid) == [want] and zygote.joined is not None
            finally:
                proc.kill()
                proc.wait()
    finally:
        box.close()
    # the zygote left it at close: the shared cgroup went with the last sandbox
    assert not os.path.isdir(devices[0])
