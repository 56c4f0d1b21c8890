"""The cgroup layer against the real kernel: real processes in real cgroups.

Every cgroup made here is named `t<pid>-...` under our `pysandbox` parent, and a
finalizer kills and removes whatever such cgroup is left even when a test fails.
On a hybrid host (v1 controllers + a controller-less cgroup2 mount) the v1 path runs
live for limits, the v2 path runs live on the unified mount for leaves, cgroup.kill and
freezing, and against tests/data/cgroup2 (recorded files) for the controller files.
"""
import os
import signal
import subprocess
import sys
import time

import pytest

from sandbox import cgroup
from sandbox.errors import SetupError
from util import require

ROOT = os.geteuid() == 0
PREFIX = "t%d-" % os.getpid()
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "cgroup2")
PY = "/usr/bin/python3"


class Limits:
    """Stand-in for profile.limits (same attributes)."""

    def __init__(self, memory=0, memory_swap=0, pids=0, cpus=0.0, cpu_weight=0, io_weight=0,
                 required=True):
        self.memory, self.memory_swap, self.pids, self.cpus = memory, memory_swap, pids, cpus
        self.cpu_weight, self.io_weight, self.required = cpu_weight, io_weight, required


def _our_parents():
    parents = []
    for fstype, point, _root, _opts in cgroup.mounts():
        parents.append(os.path.join(point, cgroup.PARENT))
    return sorted(set(parents))


def _leftovers():
    out = []
    for parent in _our_parents():
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        out += [os.path.join(parent, n) for n in names if n.startswith(PREFIX)]
    return out


def _force_remove(paths):
    for path in paths:
        for _ in range(100):
            pids = cgroup.procs(path)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.01)
        cgroup.rmdir_quiet(path)


@pytest.fixture
def groups():
    """Factory for cgroups that are destroyed (and their leftovers removed) at teardown."""
    made = []

    def make(suffix, limits, **kw):
        group = cgroup.create(PREFIX + suffix, limits, **kw)
        made.append(group)
        return group

    yield make
    for group in made:
        try:
            group.destroy()
        except Exception:
            pass
    _force_remove(_leftovers())


@pytest.fixture
def children():
    """Children forked by a test: each waits for `go` before it execs; all reaped at teardown."""
    started = []

    def spawn(code):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(write_end)
                os.read(read_end, 1)
                os.execv(PY, [PY, "-I", "-S", "-c", code])
            finally:
                os._exit(127)
        os.close(read_end)
        started.append(pid)

        def go():
            os.write(write_end, b"x")
            os.close(write_end)
        return pid, go

    yield spawn
    for pid in started:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def _wait(pid, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.01)
    raise AssertionError("child %d did not exit" % pid)


def _dead(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


def _need_v1_root():
    require(ROOT, "cgroup limits need root on this host (no delegation on cgroup v1)")
    require(cgroup.detect() == "v1", "these tests exercise the v1 controllers of this host")


def _unified():
    point = cgroup.v2_mount()
    require(point is not None, "no cgroup2 mount")
    require(os.access(point, os.W_OK), "cgroup2 mount not writable")
    return point


# ------------------------------------------------------------------ pure logic

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
UNIFIED = "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n"
SYSTEMD_ONLY_V1 = ("40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n"
                   "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n")


def test_detect_layouts_from_mountinfo():
    assert cgroup.detect(cgroup.parse_mountinfo(HYBRID)) == "v1"
    assert cgroup.detect(cgroup.parse_mountinfo(UNIFIED)) == "v2"
    # a name=systemd v1 tree carries no resource controller: that host is v2 for limits
    assert cgroup.detect(cgroup.parse_mountinfo(SYSTEMD_ONLY_V1)) == "v2"
    assert cgroup.detect(cgroup.parse_mountinfo("")) is None
    assert cgroup.v1_hierarchies(cgroup.parse_mountinfo(HYBRID)) == {
        "cpu": "/sys/fs/cgroup/cpu", "cpuacct": "/sys/fs/cgroup/cpuacct", "memory": "/sys/fs/cgroup/memory"}
    escaped = "50 1 0:9 / /mnt/a\\040b rw - cgroup2 none rw\n"
    assert cgroup.v2_mount(cgroup.parse_mountinfo(escaped)) == "/mnt/a b"


def test_the_views_of_the_cached_mount_list_follow_the_list(monkeypatch):
    """v1_hierarchies and v2_mount are derived once per cached mount list (the run path asks
    several times a run): a new list is derived afresh, and a caller's changes to the dict it
    got never reach the next caller."""
    from sandbox import cgroup_fs, cgroup_v1
    monkeypatch.setattr(cgroup_fs, "_mounts_cache", cgroup.parse_mountinfo(HYBRID))
    first = cgroup_fs.v1_hierarchies()
    assert first == {"cpu": "/sys/fs/cgroup/cpu", "cpuacct": "/sys/fs/cgroup/cpuacct",
                     "memory": "/sys/fs/cgroup/memory"}
    first["pids"] = "/elsewhere"
    assert "pids" not in cgroup_fs.v1_hierarchies()
    assert cgroup_fs.v2_mount() == "/sys/fs/cgroup/unified"
    with_pids = HYBRID + "36 31 0:33 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n"
    monkeypatch.setattr(cgroup_fs, "_mounts_cache", cgroup.parse_mountinfo(with_pids))
    assert cgroup_fs.v1_hierarchies()["pids"] == "/sys/fs/cgroup/pids"
    # cgroup_v1.hierarchies remembers its answers per question, the set of hierarchies included
    labels = [label for label, _ in cgroup_v1.hierarchies({"memory"}, own_pid_namespace=True)]
    assert labels[:2] == ["pids", "memory"]
    # without a freezer the unified leaf's cgroup.kill is probed: the remembered answer follows
    # the probe's (a test's own _kill_file, or a probe that says otherwise)
    unified = cgroup_fs.v2_mount()
    monkeypatch.setattr(cgroup_v1, "_kill_file", {unified: True})
    assert "unified" in [label for label, _ in cgroup_v1.hierarchies({"memory"})]
    monkeypatch.setattr(cgroup_v1, "_kill_file", {unified: False})
    assert "unified" not in [label for label, _ in cgroup_v1.hierarchies({"memory"})]
    monkeypatch.setattr(cgroup_v1, "_kill_file", {})
    monkeypatch.setattr(cgroup_v1, "_unified_kill", lambda point: True)
    assert "unified" in [label for label, _ in cgroup_v1.hierarchies({"memory"})]
    monkeypatch.setattr(cgroup_fs, "_mounts_cache", cgroup.parse_mountinfo(UNIFIED))
    assert cgroup_fs.v1_hierarchies() == {} and cgroup_fs.v2_mount() == "/sys/fs/cgroup"
    assert "pids" not in [label for label, _ in cgroup_v1.hierarchies({"memory"}, own_pid_namespace=True)]


def test_detect_live():
    layout = cgroup.detect()
    assert layout in ("v1", "v2", None)
    text = open("/proc/self/mountinfo").read()
    if " - cgroup cgroup " in text and ",memory" in text:
        assert layout == "v1"


def test_v1_limit_writes():
    from sandbox import cgroup_v1
    every = lambda c, f: c != "devices"  # noqa: E731
    writes, missing = cgroup_v1.limit_writes(Limits(memory=64 << 20, pids=10, cpus=0.5,
                                                    cpu_weight=200, io_weight=300), every)
    assert writes == [
        ("memory", "memory.limit_in_bytes", str(64 << 20)),
        ("memory", "memory.memsw.limit_in_bytes", str(64 << 20)),   # swap off: memsw = memory
        ("memory", "memory.swappiness", "0"),
        ("pids", "pids.max", "10"),
        ("cpu", "cpu.cfs_quota_us", "50000"),
        ("cpu", "cpu.shares", "2048"),
        ("blkio", "blkio.bfq.weight", "300"),
    ] and missing == []
    writes, _ = cgroup_v1.limit_writes(Limits(memory=100, memory_swap=300), every)
    assert ("memory", "memory.memsw.limit_in_bytes", "300") in writes
    assert all(f != "memory.swappiness" for _c, f, _v in writes)
    writes, _ = cgroup_v1.limit_writes(Limits(memory=100, memory_swap=-1), every)
    assert [f for _c, f, _v in writes] == ["memory.limit_in_bytes"]
    _, missing = cgroup_v1.limit_writes(Limits(io_weight=100), lambda c, f: False)
    assert missing and "io_weight" in missing[0]
    writes, _ = cgroup_v1.limit_writes(Limits(pids=10), lambda c, f: True)
    assert all(c != "devices" for c, _f, _v in writes)  # the shared devices cgroup holds that list


def test_v2_limit_writes():
    from sandbox import cgroup_v2
    assert cgroup_v2.limit_writes(Limits(memory=64 << 20, pids=5, cpus=1.5, cpu_weight=50, io_weight=10)) == [
        ("memory.max", str(64 << 20)), ("memory.swap.max", "0"), ("pids.max", "5"),
        ("cpu.max", "150000 100000"), ("cpu.weight", "50"), ("io.weight", "default 10")]
    assert ("memory.swap.max", "200") in cgroup_v2.limit_writes(Limits(memory=100, memory_swap=300))
    assert ("memory.swap.max", "max") in cgroup_v2.limit_writes(Limits(memory=100, memory_swap=-1))
    assert cgroup_v2.limit_writes(Limits()) == []


def test_v2_verdict_from_recorded_tree():
    from sandbox import cgroup_v2
    hog = cgroup_v2.read_verdict(os.path.join(DATA, "pysandbox", "hog"), {"memory": 64 << 20})
    assert hog["oom"] is True and hog["pids_limited"] is False
    assert hog["memory_peak"] == 67104768
    assert hog["cpu_user"] == pytest.approx(0.183436) and hog["cpu_system"] == pytest.approx(0.062011)
    assert hog["limits"] == {"memory": 64 << 20}
    bomb = cgroup_v2.read_verdict(os.path.join(DATA, "pysandbox", "forkbomb"))
    assert bomb["oom"] is False and bomb["pids_limited"] is True
    quiet = cgroup_v2.read_verdict(os.path.join(DATA, "pysandbox", "quiet"))
    assert quiet["oom"] is False and quiet["pids_limited"] is False and quiet["memory_peak"] == 2691072


def test_bad_names_rejected():
    for name in ("", "a/b", "..", "."):
        with pytest.raises(SetupError):
            cgroup.create(name, Limits())


# ------------------------------------------------------------------ v1, live

def test_memory_hog_is_oom_killed(groups, children):
    _need_v1_root()
    group = groups("hog", Limits(memory=64 << 20, memory_swap=0))
    pid, go = children("b = []\nwhile True: b.append(bytearray(8 << 20))")
    group.attach(pid)
    go()
    status = _wait(pid)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    verdict = group.verdict()
    assert verdict["oom"] is True
    assert 40 << 20 < verdict["memory_peak"] <= (64 << 20) + (1 << 20)
    assert verdict["limits"]["memory"] == 64 << 20
    assert cgroup.read_int(os.path.join(group._dir("memory"), "memory.memsw.limit_in_bytes")) == 64 << 20


def test_fork_bomb_stops_at_pids_limit(groups, children):
    _need_v1_root()
    group = groups("bomb", Limits(pids=32))
    bomb = ("import os, time\n"
            "while True:\n"
            "    try:\n"
            "        os.fork()\n"
            "    except OSError:\n"
            "        time.sleep(0.05)\n")
    pid, go = children(bomb)
    group.attach(pid)
    go()
    pids_dir = group._dir("pids")
    deadline = time.monotonic() + 20
    while cgroup.read_keyed(os.path.join(pids_dir, "pids.events")).get("max", 0) == 0:
        assert time.monotonic() < deadline, "fork bomb never hit pids.max"
        time.sleep(0.02)
    assert cgroup.read_int(os.path.join(pids_dir, "pids.current")) <= 32
    # the host still forks
    other = subprocess.run(["/bin/true"])
    assert other.returncode == 0
    members = cgroup.procs(group.paths[0])
    assert group.kill() is True
    assert cgroup.procs(group.paths[0]) == []
    _wait(pid)
    deadline = time.monotonic() + 10
    while not all(_dead(p) for p in members) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert all(_dead(p) for p in members)
    verdict = group.verdict()
    assert verdict["pids_limited"] is True and verdict["oom"] is False


def test_cpu_quota_gives_about_half_a_cpu(groups, children):
    _need_v1_root()
    group = groups("cpu", Limits(cpus=0.5))
    pid, go = children("import time\nend = time.monotonic() + 2.0\nwhile time.monotonic() < end: pass")
    group.attach(pid)
    start = time.monotonic()
    go()
    _wait(pid)
    wall = time.monotonic() - start
    verdict = group.verdict()
    used = verdict["cpu_user"] + verdict["cpu_system"]
    # the quota caps the share (0.5 CPU); a busy machine may give less, never much more
    assert 0 < used / wall < 0.7, (used, wall)


def _tree_code():
    # a shell-free tree: children, a grandchild that double-forked away (setsid), all sleeping
    return ("import os, sys, time\n"
            "for i in range(3):\n"
            "    if os.fork() == 0:\n"
            "        if i == 2:\n"
            "            os.setsid()\n"
            "            if os.fork(): os._exit(0)\n"
            "        os.fork()\n"
            "        time.sleep(60); os._exit(0)\n"
            "time.sleep(60)\n")


def _settle(path, count, timeout=10):
    deadline = time.monotonic() + timeout
    while len(cgroup.procs(path)) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return cgroup.procs(path)


@pytest.mark.parametrize("teardown", ["cgroup.kill", "freezer", "rounds"])
def test_kill_kills_every_descendant(groups, children, teardown, monkeypatch):
    _need_v1_root()
    from sandbox import cgroup_v1
    if teardown == "rounds":
        # neither: the pidfd-verified rounds of kill_tasks (no pid namespace here to help)
        monkeypatch.setattr(cgroup_v1, "_kill_file", {cgroup.v2_mount(): False})
        hierarchies = cgroup.v1_hierarchies()
        hierarchies.pop("freezer", None)
        from sandbox import cgroup_fs
        monkeypatch.setattr(cgroup_fs, "v1_hierarchies", lambda *a: dict(hierarchies))
    elif teardown == "freezer":
        # as on a kernel without cgroup.kill: the freezer hierarchy joins the set
        monkeypatch.setattr(cgroup_v1, "_kill_file", {cgroup.v2_mount(): False})
    else:
        # as on a host without a v1 freezer: the unified leaf's cgroup.kill tears down
        hierarchies = cgroup.v1_hierarchies()
        hierarchies.pop("freezer", None)
        # cgroup_fs: where cgroup.py and the layouts all look it up
        from sandbox import cgroup_fs
        monkeypatch.setattr(cgroup_fs, "v1_hierarchies", lambda *a: dict(hierarchies))
    group = groups("tree-" + teardown.replace(".", ""), Limits(pids=64))
    pid, go = children(_tree_code())
    group.attach(pid)
    go()
    members = _settle(group.paths[0], 7)
    assert len(members) >= 7
    if teardown == "freezer":
        assert group._dir("freezer")
        assert group.kill(use_unified=False) is True
    elif teardown == "rounds":
        assert not group._dir("freezer") and not group._dir("unified")
        assert group.kill() is True
    else:
        require(group._dir("unified"), "no unified leaf on this host")
        assert group.kill() is True
    _wait(pid)
    deadline = time.monotonic() + 10
    while not all(_dead(p) for p in members) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert all(_dead(p) for p in members)
    paths = [p for label, p in group.dirs if label != "devices"]  # the devices cgroup is shared
    group.destroy()
    assert not any(os.path.exists(p) for p in paths)
    group.destroy()          # idempotent


def test_destroy_kills_what_is_left_and_removes_every_directory(groups, children):
    """destroy() removes the directories first and kills only when the kernel refuses one
    (EBUSY: a task is still in it). A set that still holds a process tree: every process
    dies and no directory stays, without a kill() before it."""
    _need_v1_root()
    group = groups("left-behind", Limits(pids=64))
    pid, go = children(_tree_code())
    group.attach(pid)
    go()
    members = _settle(group.paths[0], 7)
    assert len(members) >= 7
    paths = [p for label, p in group.dirs if label != "devices"]  # the devices cgroup is shared
    group.destroy()
    _wait(pid)
    deadline = time.monotonic() + 10
    while not all(_dead(p) for p in members) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert all(_dead(p) for p in members)
    assert not any(os.path.exists(p) for p in paths)


def test_destroy_kills_a_task_only_the_primary_holds(groups, children):
    """A task that joined the primary hierarchy and no other (an attach that failed half way):
    the other directories go at once, the freezer's too, and the kill that follows must not
    take the removed freezer for a kill (it falls back to the pidfd-verified rounds)."""
    _need_v1_root()
    group = groups("primary-only", Limits(pids=64))
    require(group._dir("freezer") is not None, "no v1 freezer in this set (a pid namespace of its own)")
    pid, go = children("import time\ntime.sleep(60)\n")
    cgroup.write_file(os.path.join(group.paths[0], "cgroup.procs"), str(pid))
    go()
    paths = [p for label, p in group.dirs if label != "devices"]
    group.destroy()
    _wait(pid)
    assert _dead(pid)
    assert not any(os.path.exists(p) for p in paths)


def test_many_cycles_leave_nothing(groups):
    _need_v1_root()
    limits = Limits(memory=32 << 20, pids=16, cpus=0.5)
    for i in range(200):
        group = cgroup.create(PREFIX + "cycle%d" % i, limits)
        try:
            pid = os.fork()
            if pid == 0:
                time.sleep(30)
                os._exit(0)
            group.attach(pid)
            group.kill()
            os.waitpid(pid, 0)
        finally:
            group.destroy()
    assert _leftovers() == []


def _supervisor_that_dies(name, limits):
    """Fork a supervisor that makes a cgroup, puts a sleeper in it, and is SIGKILLed.
    Returns the sleeper's pid (now an orphan reparented away from the supervisor)."""
    read_end, write_end = os.pipe()
    supervisor = os.fork()
    if supervisor == 0:
        try:
            os.close(read_end)
            group = cgroup.create(name, limits)
            sleeper = os.fork()
            if sleeper == 0:
                os.closerange(3, 1024)
                os.execv("/bin/sleep", ["sleep", "60"])
            group.attach(sleeper)
            os.write(write_end, str(sleeper).encode())
            time.sleep(60)
        finally:
            os._exit(1)
    os.close(write_end)
    sleeper = int(os.read(read_end, 32))
    os.close(read_end)
    os.kill(supervisor, signal.SIGKILL)
    os.waitpid(supervisor, 0)
    return sleeper


def test_gc_removes_dead_orphans_and_keeps_live_ones(groups):
    _need_v1_root()
    limits = Limits(memory=32 << 20, pids=16)
    dead_name, live_name = PREFIX + "orphan-dead", PREFIX + "orphan-live"
    live_group = groups("held", limits)      # a live supervisor's cgroup (this process)
    sleepers = []
    try:
        sleepers.append(_supervisor_that_dies(dead_name, limits))
        sleepers.append(_supervisor_that_dies(live_name, limits))
        os.kill(sleepers[0], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not _dead(sleepers[0]) and time.monotonic() < deadline:
            time.sleep(0.01)
        # the run path's gc skips a round while some run holds the parent to create its
        # cgroups (a millisecond), and a killed task may take a moment to leave: a few rounds
        removed = []
        for _round in range(50):
            removed += cgroup.gc()
            if not [p for p in _leftovers() if p.endswith("/" + dead_name)]:
                break
            time.sleep(0.02)
        dead_dirs = [p for p in _leftovers() if p.endswith("/" + dead_name)]
        assert dead_dirs == [], dead_dirs
        assert any(p.endswith("/" + dead_name) for p in removed)
        assert any(p.endswith("/" + live_name) for p in _leftovers())      # its sleeper lives
        assert all(os.path.isdir(p) for p in live_group.paths)           # lock held: kept
        os.kill(sleepers[1], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not _dead(sleepers[1]) and time.monotonic() < deadline:
            time.sleep(0.01)
        cgroup.gc(full=True)
        assert [p for p in _leftovers() if live_name in p] == []
        assert all(os.path.isdir(p) for p in live_group.paths)
    finally:
        for pid in sleepers:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def test_create_over_orphan_of_same_name(groups):
    _need_v1_root()
    name = "reuse"
    sleeper = _supervisor_that_dies(PREFIX + name, Limits(pids=8))
    os.kill(sleeper, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not _dead(sleeper) and time.monotonic() < deadline:
        time.sleep(0.01)
    group = groups(name, Limits(pids=8))
    assert all(os.path.isdir(p) for p in group.paths)
    with pytest.raises(SetupError) as err:
        cgroup.create(PREFIX + name, Limits(pids=8))
    assert "in use" in str(err.value)


# ------------------------------------------------------------------ v2, live on the unified mount

def test_v2_leaf_live_kill_and_destroy(groups, children):
    point = _unified()
    group = groups("v2kill", Limits(required=False), root=point)
    assert group.layout == "v2" and group.paths == [os.path.join(point, cgroup.PARENT, PREFIX + "v2kill")]
    pid, go = children(_tree_code())
    group.attach(pid)
    go()
    members = _settle(group.leaf, 7)
    assert cgroup.read_keyed(os.path.join(group.leaf, "cgroup.events"))["populated"] == 1
    assert group.kill() is True
    _wait(pid)
    assert all(_dead(p) or p not in members for p in members)
    assert cgroup.read_keyed(os.path.join(group.leaf, "cgroup.events"))["populated"] == 0
    verdict = group.verdict()
    assert verdict["layout"] == "v2" and verdict["cpu_user"] >= 0
    path = group.leaf
    group.destroy()
    assert not os.path.exists(path)


def test_v2_freeze_path_live(groups, children):
    point = _unified()
    group = groups("v2freeze", Limits(required=False), root=point)
    pid, go = children(_tree_code())
    group.attach(pid)
    go()
    members = _settle(group.leaf, 7)
    assert group.kill(use_kill_file=False) is True
    _wait(pid)
    deadline = time.monotonic() + 10
    while not all(_dead(p) for p in members) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert all(_dead(p) for p in members)


def test_v2_missing_controller_required_fails_not_required_warns(groups):
    point = _unified()
    controllers = set((cgroup.read_file(os.path.join(point, "cgroup.controllers")) or "").split())
    require("memory" not in controllers, "this cgroup2 mount offers memory; nothing to refuse")
    with pytest.raises(SetupError) as err:
        groups("v2req", Limits(memory=64 << 20), root=point)
    assert "memory" in str(err.value) and err.value.stage == "cgroup"
    assert not os.path.exists(os.path.join(point, cgroup.PARENT, PREFIX + "v2req"))
    group = groups("v2warn", Limits(memory=64 << 20, required=False), root=point)
    assert group.warning and "memory" in group.warning and group.paths


# ------------------------------------------------------------------ rootless

def _unprivileged_user():
    require(ROOT, "needs root to switch to an unprivileged user")
    import pwd
    try:
        pwd.getpwnam("pysbx")
    except KeyError:
        subprocess.run(["useradd", "-m", "pysbx"], check=True, capture_output=True)
    return "pysbx"


ROOTLESS_SCRIPT = """
import sys
sys.path.insert(0, %(repo)r)
from sandbox import cgroup
from sandbox.errors import SetupError
class L:
    memory = 64 << 20; memory_swap = 0; pids = 16; cpus = 0.0; cpu_weight = 0; io_weight = 0
    required = %(required)s
try:
    group = cgroup.create("rootless-%(tag)s", L())
except SetupError as e:
    print("ERROR", e)
else:
    print("OK", type(group).__name__, group.warning)
    group.destroy()
"""


@pytest.mark.parametrize("required", [True, False])
def test_rootless_without_delegation(required):
    user = _unprivileged_user()
    import pwd
    uid = pwd.getpwnam(user).pw_uid
    require(not os.path.isdir(cgroup.v1_parent(cgroup.v1_hierarchies()["pids"], uid))
            if cgroup.detect() == "v1" else True, "the test user has delegated cgroups here")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = ROOTLESS_SCRIPT % {"repo": repo, "required": required, "tag": os.getpid()}
    out = subprocess.run(["runuser", "-u", user, "--", PY, "-I", "-S", "-c", script],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    if cgroup.detect() == "v1" or required:
        if required:
            assert out.stdout.startswith("ERROR cgroup: ")
            assert "limits.required = false" in out.stdout
        else:
            assert out.stdout.startswith("OK NoCgroup warning: running without resource limits")
            assert "limits.required = false" in out.stdout


DELEGATED_SCRIPT = """
import os, sys, time
sys.path.insert(0, %(repo)r)
sys.stdin.readline()                  # root has moved us into the delegated cgroup
from sandbox import cgroup
class L:
    memory = 0; memory_swap = 0; pids = 0; cpus = 0.0; cpu_weight = 0; io_weight = 0; required = False
group = cgroup.create("inner", L(), layout="v2")
print("PATH", group.paths[0], flush=True)
ready_r, ready_w = os.pipe()
pid = os.fork()
if pid == 0:
    # fork only once attached: descendants forked before the move would stay outside
    os.close(ready_w)
    os.read(ready_r, 1)
    for _ in range(3):
        os.fork()
    time.sleep(60)
    os._exit(0)
os.close(ready_r)
group.attach(pid)
os.write(ready_w, b"x")
time.sleep(0.2)
print("COUNT", len(cgroup.procs(group.paths[0])), flush=True)
print("KILLED", group.kill(), flush=True)
os.waitpid(pid, 0)
group.destroy()
print("GONE", not os.path.exists(group.paths[0] if group.paths else "/nonexistent"), flush=True)
"""


def test_v2_rootless_in_a_delegated_cgroup(groups):
    """Delegation as systemd does it (chown of the directory, cgroup.procs,
    cgroup.subtree_control, cgroup.threads), live on the unified mount: an unprivileged
    supervisor finds its own delegated cgroup and makes its sandbox leaf under it."""
    point = _unified()
    user = _unprivileged_user()
    import pwd
    uid = pwd.getpwnam(user).pw_uid
    parent = os.path.join(point, cgroup.PARENT)
    os.makedirs(parent, exist_ok=True)
    delegated = os.path.join(parent, PREFIX + "delegated")
    os.mkdir(delegated)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = None
    try:
        for entry in ("", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads"):
            os.chown(os.path.join(delegated, entry), uid, -1)
        proc = subprocess.Popen(["runuser", "-u", user, "--", PY, "-I", "-S", "-c",
                                 DELEGATED_SCRIPT % {"repo": repo}],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # runuser forks the python; move the python (runuser's only child) in
        deadline = time.monotonic() + 10
        target = None
        while target is None and time.monotonic() < deadline:
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    try:
                        with open("/proc/%s/stat" % entry) as f:
                            if int(f.read().rsplit(")", 1)[1].split()[1]) == proc.pid:
                                target = int(entry)
                    except (OSError, ValueError, IndexError):
                        pass
            time.sleep(0.01)
        assert target, "runuser's child not found"
        cgroup.write_file(os.path.join(delegated, "cgroup.procs"), str(target))
        out, err = proc.communicate("go\n", timeout=30)
        lines = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
        assert lines.get("PATH") == os.path.join(delegated, cgroup.PARENT, "inner"), (out, err)
        assert int(lines["COUNT"]) >= 8, (out, err)
        assert lines["KILLED"] == "True" and lines["GONE"] == "True", (out, err)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        _force_remove([os.path.join(delegated, cgroup.PARENT, "inner"), os.path.join(delegated, cgroup.PARENT),
                       delegated])


# ----------------------------------------------------------------------------------------------
# ordering: the parent lock, and the devices allowlist beside children (root, private parent)


@pytest.fixture
def private_parent(monkeypatch):
    """cgroup.PARENT renamed for this test: every directory made here is ours alone."""
    require(ROOT and cgroup.detect() == "v1", "root on a cgroup v1 host")
    name = "pysandbox-t%d" % os.getpid()
    from sandbox import cgroup_fs
    monkeypatch.setattr(cgroup_fs, "PARENT", name)
    yield name
    for point in sorted(set(cgroup.v1_hierarchies().values())):
        parent = os.path.join(point, name)
        if os.path.isdir(parent):
            for child in os.listdir(parent):
                if os.path.isdir(os.path.join(parent, child)):
                    cgroup.rmdir_quiet(os.path.join(parent, child))
            cgroup.rmdir_quiet(parent)


def test_gc_leaves_a_leaf_alone_while_its_creator_holds_the_parent(private_parent):
    """The race of 150 runs at once: a just-made leaf is empty and not yet locked. While its
    creator holds the parent, gc must not take it; once released, an orphan is collected."""
    from sandbox import cgroup_v1
    primary = cgroup.v1_parent(cgroup_v1.hierarchies()[0][1])
    held = cgroup.hold_parent(primary, create=True)
    leaf = os.path.join(primary, "sbx-just-made")
    os.mkdir(leaf)
    try:
        assert cgroup_v1.gc() == [] and os.path.isdir(leaf)
    finally:
        cgroup.release(held)
    assert leaf in cgroup_v1.gc() and not os.path.exists(leaf)


def test_devices_allowlist_is_written_beside_a_legacy_delegation(private_parent):
    """An older `delegate` made user-<uid> under the devices parent before the list existed; the
    kernel then refuses "a" in devices.deny (EINVAL). The empty, unused directory is removed and
    the list written; a child that is not such a directory is an error naming it."""
    from sandbox import cgroup_v1
    devices = cgroup.v1_hierarchies().get("devices")
    require(devices is not None, "no v1 devices controller")
    parent = os.path.join(devices, private_parent)
    os.mkdir(parent)
    os.mkdir(os.path.join(parent, "user-4242"))
    with pytest.raises(OSError):  # the kernel's rule the runtime must work around
        cgroup.write_file(os.path.join(parent, "devices.deny"), "a")
    assert cgroup_v1.devices_parent(parent) == parent
    with open(os.path.join(parent, "devices.list")) as f:
        assert f.read().split("\n")[:-1] == list(cgroup_v1.DEVICE_ALLOW)
    assert not os.path.exists(os.path.join(parent, "user-4242"))
    # a list that differs again, and a child that is not a delegation: refused, naming both
    cgroup.write_file(os.path.join(parent, "devices.allow"), "a")
    os.mkdir(os.path.join(parent, "other"))
    with pytest.raises(SetupError) as info:
        cgroup_v1.devices_parent(parent)
    assert info.value.stage == "cgroup" and "other" in str(info.value) and parent in str(info.value)


def test_delegate_makes_nothing_under_the_devices_parent(private_parent):
    """Rootless sandboxes never join the devices hierarchy; a directory there would block root's
    allowlist. delegate still makes every other hierarchy's user directory, owned by the user."""
    import pwd
    try:
        entry = pwd.getpwnam("pysbx")
    except KeyError:
        pytest.skip("no test user pysbx")
    touched = cgroup.delegate_v1("pysbx")
    hier = cgroup.v1_hierarchies()
    assert touched and all(os.stat(p).st_uid == entry.pw_uid for p in touched)
    if "devices" in hier and list(hier.values()).count(hier["devices"]) == 1:
        assert not os.path.exists(cgroup.v1_parent(hier["devices"], entry.pw_uid))
    assert os.path.isdir(cgroup.v1_parent(hier["pids"], entry.pw_uid))


def test_a_name_set_through_cgroup_reaches_the_layouts(monkeypatch):
    """cgroup.PARENT and cgroup.v1_hierarchies live in cgroup_fs (cgroup.py and the layouts
    import it; the layouts never import cgroup.py): setting them through `cgroup`, as older
    callers do, sets them where every layout looks them up."""
    from sandbox import cgroup_fs, cgroup_v1
    monkeypatch.setattr(cgroup, "PARENT", "pysandbox-renamed")
    assert cgroup_fs.PARENT == cgroup.PARENT == "pysandbox-renamed" and "PARENT" not in vars(cgroup)
    assert cgroup_v1.cg is cgroup_fs and cgroup.v1_parent("/x", uid=0) == "/x/pysandbox-renamed"
    monkeypatch.setattr(cgroup, "v1_hierarchies", lambda *a: {})
    assert cgroup_fs.v1_hierarchies() == {} and cgroup.detect(cgroup.parse_mountinfo("")) is None
    monkeypatch.undo()
    assert cgroup_fs.PARENT == "pysandbox" and cgroup_fs.v1_hierarchies is not None



def test_kill_tasks_signals_only_what_is_still_listed_once_pinned(monkeypatch):
    """A listed PID can exit and be reused elsewhere before the signal: kill_tasks pins each
    listed process, lists again and signals through the pidfd only what is still listed."""
    from sandbox import cgroup_fs
    bystander = subprocess.Popen(["/bin/sleep", "30"])
    try:
        listings = iter([[bystander.pid], []])  # listed, then gone from the cgroup (reused)
        monkeypatch.setattr(cgroup_fs, "procs", lambda directory: next(listings))
        assert cgroup_fs.kill_tasks("/nonexistent") == 1
        time.sleep(0.05)
        assert bystander.poll() is None  # not ours any more: not signalled
        listings = iter([[bystander.pid], [bystander.pid]])
        monkeypatch.setattr(cgroup_fs, "procs", lambda directory: next(listings))
        assert cgroup_fs.kill_tasks("/nonexistent") == 1
        assert bystander.wait(timeout=10) == -9
    finally:
        if bystander.poll() is None:
            bystander.kill()
            bystander.wait()


def test_kill_tasks_pins_before_it_lists_again_and_signals_through_the_pin(monkeypatch):
    """The order is what makes a reused PID safe: pidfd_open, then the second listing, then
    pidfd_send_signal on that pidfd (never kill(2) by number outside a frozen cgroup)."""
    import _signal
    from sandbox import cgroup_fs
    calls = []
    listings = iter([[101, 102], [102]])

    def procs(directory):
        calls.append("list")
        return next(listings)
    monkeypatch.setattr(cgroup_fs, "procs", procs)
    monkeypatch.setattr(cgroup_fs.os, "pidfd_open", lambda pid: calls.append("pin %d" % pid) or os.open("/dev/null", os.O_RDONLY))
    monkeypatch.setattr(_signal, "pidfd_send_signal", lambda fd, sig: calls.append("signal %d" % sig))
    monkeypatch.setattr(cgroup_fs.os, "kill", lambda pid, sig: calls.append("kill %d" % pid))
    assert cgroup_fs.kill_tasks("/nonexistent") == 2
    assert calls == ["list", "pin 101", "pin 102", "list", "signal 9"], calls


def test_kill_tasks_pins_in_batches_and_a_frozen_cgroup_by_number(monkeypatch):
    from sandbox import cgroup_fs
    sleepers = [subprocess.Popen(["/bin/sleep", "30"]) for _ in range(5)]
    try:
        monkeypatch.setattr(cgroup_fs, "PIN_BATCH", 2)
        monkeypatch.setattr(cgroup_fs, "procs", lambda directory: [p.pid for p in sleepers if p.poll() is None])
        assert cgroup_fs.kill_tasks("/nonexistent") == 5
        assert all(p.wait(timeout=10) == -9 for p in sleepers)
        # frozen: nothing listed can exit, so kill(2) by number is exact
        sleepers = [subprocess.Popen(["/bin/sleep", "30"])]
        monkeypatch.setattr(cgroup_fs.os, "pidfd_open", lambda pid: pytest.fail("no pin in a frozen cgroup"))
        assert cgroup_fs.kill_tasks("/nonexistent", frozen=True) == 1
        assert sleepers[0].wait(timeout=10) == -9
    finally:
        for p in sleepers:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_a_file_the_kernel_did_not_offer_is_asked_again(tmp_path):
    """Whether a hierarchy offers a file is kept once seen, never while missing: blkio's
    weight appears when its scheduler module loads, and a long-lived server must see it."""
    from sandbox import cgroup_v1
    leaf = tmp_path / "hierarchy" / "leaf"
    leaf.mkdir(parents=True)
    assert cgroup_v1._offers(str(leaf), "blkio.bfq.weight") is False
    (leaf / "blkio.bfq.weight").write_text("100\n")
    assert cgroup_v1._offers(str(leaf), "blkio.bfq.weight") is True
    (leaf / "blkio.bfq.weight").unlink()
    assert cgroup_v1._offers(str(leaf), "blkio.bfq.weight") is True  # a yes holds for the process
