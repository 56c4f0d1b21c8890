"""Per-sandbox host ids (sandbox/user.py: the pool, stage "id-range"): as host root every
running sandbox maps its ids onto a range of its own, root_host_base + k x size, held by flock
on <state dir>/idpool/<k>.lock for its supervisor's life; rootless keeps the caller's ids.

The tests that allocate point PYSANDBOX_IDPOOL_DIR (and the registry's PYSANDBOX_STATE_DIR) at a
directory of their own: a private pool,
so that sandboxes other tests (or other users of this host) run meanwhile never take its
ranges and the exhaustion test sees exactly its own."""
import json
import os
import signal
import subprocess

import pytest

from util import ROOT, children, pysandbox_cmd, require, wait_until

root_only = pytest.mark.root_only

HOLD = ["sh", "-c", "cat /proc/self/uid_map; read x; exit 0"]


class Held:
    """One CLI run of `profile` that prints its uid_map and holds until stdin closes."""

    def __init__(self, profile, state_dir, argv=HOLD, extra=()):
        env = private_env(state_dir)
        self.proc = subprocess.Popen(pysandbox_cmd() + ["run", "--profile", str(profile), *extra, "--", *argv],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)

    def uid_map(self):
        line = self.proc.stdout.readline()
        if not line:
            self.proc.stdin.close()
            err = self.proc.stderr.read()
            self.proc.wait()
            require(not (self.proc.returncode == 125 and "cgroup" in err), "strict needs delegated cgroups")
            pytest.fail("the sandbox did not start (%s): %s" % (self.proc.returncode, err))
        return tuple(int(v) for v in line.split())

    def pid1(self):
        return wait_until(lambda: (children(self.proc.pid) or [None])[0], what="the sandbox's PID 1")

    def end(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        self.proc.wait(timeout=60)
        return self.proc.returncode


def private_env(directory):
    return dict(os.environ, PYSANDBOX_STATE_DIR=str(directory), PYSANDBOX_IDPOOL_DIR=str(directory / "idpool"))


def host_uid_map(pid):
    with open("/proc/%d/uid_map" % pid) as f:
        return [tuple(int(v) for v in line.split()) for line in f]


def pool_profile(tmp_path, size):
    path = tmp_path / ("pool%d.toml" % size)
    path.write_text('extends = "strict"\n[idmap]\npool_size = %d\n' % size)
    return path


@root_only
def test_two_running_sandboxes_have_disjoint_host_ranges_and_cannot_signal_each_other(tmp_path):
    first, second = Held("strict", tmp_path), Held("strict", tmp_path)
    try:
        first.uid_map(), second.uid_map()
        # read from outside, as the kernel has them
        (a,), (b,) = host_uid_map(first.pid1()), host_uid_map(second.pid1())
        assert a[0] == b[0] == 0 and a[2] == b[2] == 65536
        assert a[1] + a[2] <= b[1] or b[1] + b[2] <= a[1], (a, b)   # disjoint
        assert {a[1], b[1]} == {1_000_000_000, 1_000_065_536}       # the pool's first two ranges
        # a host process running as the first sandbox's root may signal the first sandbox's
        # processes (same uid), and not the second's
        probe = ("import os, sys\nfor pid in map(int, sys.argv[1:]):\n    try:\n        os.kill(pid, 0)\n"
                 "        print('ok')\n    except OSError as e:\n        print(e.errno)\n")
        done = subprocess.run(["/usr/bin/python3", "-I", "-S", "-c", probe, str(first.pid1()), str(second.pid1())],
                              user=a[1], group=a[1], extra_groups=[], capture_output=True, text=True, timeout=30)
        assert done.stdout.split() == ["ok", "1"], done   # 1 = EPERM
    finally:
        assert first.end() == 0 and second.end() == 0


@root_only
def test_the_result_and_the_state_record_show_the_range(tmp_path):
    held = Held("strict", tmp_path, extra=("--name", "idpool-shown"))
    result = tmp_path / "result.json"
    try:
        inside = held.uid_map()
        with open(tmp_path / "idpool-shown.json") as f:
            record = json.load(f)
        assert record["host_ids"]["uid_map"] == [list(inside)] and record["host_ids"]["slot"] == 0
        env = private_env(tmp_path)
        proc = subprocess.run(pysandbox_cmd() + ["run", "--profile", "strict", "--result", str(result), "--", "true"],
                              capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        with open(result) as f:
            verdict = json.load(f)
        assert verdict["host_ids"] == {"method": "write", "slot": 1, "uid_map": [[0, 1_000_065_536, 65536]],
                                       "gid_map": [[0, 1_000_065_536, 65536]]}
    finally:
        assert held.end() == 0
    assert not (tmp_path / "idpool-shown.json").exists()


@root_only
def test_fifty_concurrent_starts_get_fifty_distinct_ranges(tmp_path):
    held = [Held("strict", tmp_path) for _ in range(50)]
    try:
        bases = [h.uid_map()[1] for h in held]
        assert len(set(bases)) == 50, sorted(bases)
        assert set(bases) == {1_000_000_000 + k * 65536 for k in range(50)}  # the lowest free ones
    finally:
        codes = [h.end() for h in held]
    assert codes == [0] * 50


@root_only
def test_exhaustion_is_one_line_naming_the_pool_and_a_killed_supervisors_range_is_reused(tmp_path):
    profile = pool_profile(tmp_path, 2)
    first, second = Held(profile, tmp_path), Held(profile, tmp_path)
    try:
        taken = {first.uid_map()[1], second.uid_map()[1]}
        env = private_env(tmp_path)
        third = subprocess.run(pysandbox_cmd() + ["run", "--profile", str(profile), "--", "true"],
                               capture_output=True, text=True, env=env, timeout=60)
        assert third.returncode == 125
        assert third.stderr.count("\n") == 1 and "Traceback" not in third.stderr
        assert "id-range" in third.stderr and "idmap.pool_size = 2" in third.stderr, third.stderr
        # SIGKILL the first supervisor: its lock goes with its last descriptor, its sandbox with it
        pid1 = first.pid1()
        freed = host_uid_map(pid1)[0][1]
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(timeout=30)
        wait_until(lambda: not os.path.exists("/proc/%d" % pid1), what="the sandbox's PID 1 to die with it")
        again = Held(profile, tmp_path)
        try:
            assert again.uid_map()[1] == freed and freed in taken
        finally:
            assert again.end() == 0
    finally:
        first.end()
        assert second.end() == 0


@root_only
def test_a_pinned_base_maps_every_sandbox_onto_it(tmp_path):
    profile = tmp_path / "pinned.toml"
    profile.write_text('extends = "strict"\n[idmap]\npool_size = 0\nroot_host_base = 1500000000\n')
    first, second = Held(profile, tmp_path), Held(profile, tmp_path)
    try:
        assert first.uid_map() == second.uid_map() == (0, 1_500_000_000, 65536)
    finally:
        assert first.end() == 0 and second.end() == 0
    assert not (tmp_path / "idpool").exists()


@root_only
def test_an_idmapped_bind_writes_as_the_owner_whatever_range_the_run_holds(tmp_path):
    import pwd
    owner = pwd.getpwnam("pysbx")
    out = tmp_path / "out"
    out.mkdir()
    os.chown(out, owner.pw_uid, owner.pw_gid)
    holder = Held("strict", tmp_path)   # takes range 0: the bind's run gets range 1
    try:
        holder.uid_map()
        writer = Held("strict", tmp_path, argv=["sh", "-c", "cat /proc/self/uid_map; echo hi > /out/f; read x; exit 0"],
                      extra=("--bind", "%s:/out" % out))
        try:
            assert writer.uid_map()[1] == 1_000_065_536
        finally:
            assert writer.end() == 0, writer.proc.stderr.read()
    finally:
        assert holder.end() == 0
    st = os.stat(out / "f")
    assert (st.st_uid, st.st_gid) == (owner.pw_uid, owner.pw_gid)
    assert (out / "f").read_text() == "hi\n"


@pytest.mark.skipif(ROOT, reason="rootless: the caller's own ids")
def test_rootless_keeps_the_callers_ids(tmp_path):
    held = Held("strict", tmp_path)
    try:
        inside = held.uid_map()
        assert inside[:3] == (0, os.geteuid(), 1)
    finally:
        assert held.end() == 0
    assert not (tmp_path / "idpool").exists()


def test_a_pool_past_the_last_host_id_is_refused_at_load(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('extends = "strict"\n[idmap]\nroot_host_base = 4000000000\npool_size = 65536\n')
    proc = subprocess.run(pysandbox_cmd() + ["profile", "lint", str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "pool_size" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


@root_only
def test_threads_of_one_supervisor_starting_at_once_never_share_a_range(tmp_path, monkeypatch):
    import threading
    from sandbox import Sandbox, load_profile
    from sandbox import user
    monkeypatch.setenv("PYSANDBOX_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("PYSANDBOX_IDPOOL_DIR", str(tmp_path / "idpool"))
    monkeypatch.setattr(user, "_next_probe", [0])  # as in a fresh process
    profile = load_profile("strict")
    started, errors = [], []
    barrier = threading.Barrier(20)

    def start(k):
        try:
            barrier.wait()
            started.append(Sandbox(profile, name="idpool-thread-%d" % k).start(["sleep", "60"]))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=start, args=(k,)) for k in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        maps = [host_uid_map(p.pid)[0] for p in started]
        assert len({m[1] for m in maps}) == 20 and {p.idmap.slot for p in started} == set(range(20))
        assert all(m[1] == p.idmap.host_uid for m, p in zip(maps, started))
    finally:
        for p in started:
            p.kill()
            p.wait()
    # every range is free again; this process goes on round the pool from the last it took
    again = Sandbox(profile, name="idpool-thread-again").start(["true"])
    assert again.idmap.slot == 20 and again.wait().exit_code == 0


@root_only
def test_a_pool_directory_others_may_write_is_refused_and_a_hostile_state_dir_is_not_its_business(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    env = dict(os.environ, PYSANDBOX_IDPOOL_DIR=str(shared / "idpool"), PYSANDBOX_STATE_DIR=str(tmp_path / "st"))
    proc = subprocess.run(pysandbox_cmd() + ["run", "--profile", "strict", "--", "true"], capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 125 and "id-range" in proc.stderr and str(shared) in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and not (shared / "idpool").exists()
    # the registry's directory may be someone else's (it then only warns): the pool is elsewhere
    env = dict(os.environ, PYSANDBOX_IDPOOL_DIR=str(tmp_path / "idpool"), PYSANDBOX_STATE_DIR=str(shared))
    proc = subprocess.run(pysandbox_cmd() + ["run", "--profile", "strict", "--", "true"], capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 0 and (tmp_path / "idpool" / "0.lock").exists(), proc.stderr



@root_only
def test_a_start_failing_after_its_range_was_taken_gives_it_back(tmp_path):
    # a writable bind of a root-owned directory is refused in the "sources" stage, which runs
    # after "id-range": the range must be free again for the next start
    source = tmp_path / "root-owned"
    source.mkdir(mode=0o755)
    proc = subprocess.run(pysandbox_cmd() + ["run", "--profile", "strict", "--bind", "%s:/out" % source, "--", "true"],
                          capture_output=True, text=True, env=private_env(tmp_path), timeout=60)
    assert proc.returncode == 125 and "sources" in proc.stderr and "owned by host root" in proc.stderr, proc.stderr
    assert (tmp_path / "idpool" / "0.lock").exists()   # it was taken
    held = Held("strict", tmp_path)
    try:
        assert held.uid_map()[1] == 1_000_000_000       # and given back
    finally:
        assert held.end() == 0
