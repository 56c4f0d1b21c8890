"""The fast paths of a reused Sandbox, on the real kernel: cgroups made ahead (cgroup.Pool)
are fresh for every run and never reused, the finished runs' ones go off the caller's
path and all of them at close(); runs from many threads at once each get their own
sandbox and their own result. No timing is asserted here (benchmarks/ measure it)."""
import os
import threading

from sandbox import Sandbox, cgroup, load_profile
from util import require


def _pooled_box(strict):
    box = Sandbox(load_profile(strict))
    plan = box.plan()
    require(plan.cgroup_limits is not None and cgroup.detect() is not None, "no cgroup limits for this sandbox")
    return box


def _cgroup_of(proc):
    return list(getattr(proc._cgroup, "paths", []) or [])


def test_every_run_gets_cgroups_no_earlier_run_touched(strict):
    box = _pooled_box(strict)
    try:
        seen = []
        for _ in range(5):
            proc = box.start(["/bin/true"])
            paths = _cgroup_of(proc)
            result = proc.wait()
            assert result.reason == "exit" and result.exit_code == 0, result
            if not paths:
                require(False, "the sandbox runs without cgroups (%s)" % result.warnings)
            own = [p for p in paths if "/devices/" not in p]  # the devices parent is shared by design
            assert own and not set(own) & set(seen), "a cgroup of an earlier run was reused"
            seen += own
        # runs 1..4's sets are gone (removed while a later run set itself up); the last one's
        # waits in the pool, and close() removes it with the one made ahead
        fresh, retired = box._cgroups.held()
        assert len(retired) == 1 and len(fresh) <= 1
        held = {p for g in fresh + retired for p in getattr(g, "paths", [])}
        assert [p for p in seen if os.path.exists(p) and p not in held] == []
        for group in fresh:
            for path in group.paths:
                if "/devices/" not in path:
                    assert cgroup.procs(path) == [], "a cgroup made ahead has a task before its run"
    finally:
        box.close()
    assert [p for p in seen if os.path.exists(p)] == []
    assert box._cgroups is None


def test_a_run_in_a_cgroup_made_ahead_starts_from_zero(strict):
    """The counters a verdict reads (memory peak, CPU time) are the run's own."""
    box = _pooled_box(strict)
    try:
        burn = ["/usr/bin/python3", "-I", "-S", "-c", "b = bytearray(48 << 20)\nsum(range(3000000))"]
        first = box.run(burn)
        box.run(["/bin/true"])  # the second run makes a set ahead for the third
        assert box._cgroups.held()[0], "no cgroup was made ahead"
        third = box.run(["/bin/true"])
        assert first.exit_code == third.exit_code == 0, (first, third)
        assert first.memory_peak and first.memory_peak > 40 << 20
        assert third.memory_peak < 40 << 20, third.memory_peak
        assert third.cpu < first.cpu
    finally:
        box.close()


def test_concurrent_runs_from_threads_get_their_own_sandbox_and_result(strict):
    """Eight threads run one Sandbox at once: every run succeeds, each sees its own pid
    namespace (it is PID 2 there, under its own PID 1) and gets back its own output."""
    box = Sandbox(load_profile(strict))
    box.plan()
    results, errors = {}, []
    script = "import os, sys\nsys.stdout.write('%s %d %s' % (sys.argv[1], os.getpid(), sys.stdin.read()))"

    # all eight start together, for the most overlap (threads still being created while runs
    # start are the next test's case)
    ready = threading.Barrier(8)

    def one(index):
        ready.wait()
        try:
            for round_ in range(3):
                tag = "t%d-r%d" % (index, round_)
                results[tag] = box.run(["/usr/bin/python3", "-I", "-S", "-c", script, tag],
                                       input=("in-" + tag).encode(), capture_output=True, timeout=60)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(results) == 24
        for tag, result in results.items():
            assert result.reason == "exit" and result.exit_code == 0, (tag, result)
            assert result.stdout.decode() == "%s 2 in-%s" % (tag, tag)
        assert len({r.name for r in results.values()}) == 24
    finally:
        box.close()


def test_runs_while_other_threads_are_being_created_never_hang(strict):
    """Threads start runs at once while more threads are still being created. A regression guard
    for a rare hang seen in gdb: glibc's set*id in a child cloned while another thread was being
    created waited for ever for a thread the child never had; the child now takes its ids by the
    raw syscalls (native.setresuid, setresgid, setgroups). The race itself is too narrow to force."""
    box = Sandbox(load_profile(strict))
    box.plan()
    codes, errors = [], []

    def one():
        try:
            for _ in range(3):
                codes.append(box.run(["/usr/bin/true"], timeout=60).exit_code)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = []
    try:
        for _ in range(8):
            t = threading.Thread(target=one, daemon=True)
            t.start()  # the earlier threads are already running sandboxes
            threads.append(t)
        for t in threads:
            t.join(timeout=120)
        assert [t for t in threads if t.is_alive()] == [], "a run hung"
        assert errors == [] and codes == [0] * 24
    finally:
        box.close()
