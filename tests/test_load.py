"""Load and ordering: many strict CLI runs at once, and `run`, `gc` and `delegate` in every order
and at the same time.

* 100 `pysandbox run --profile strict` started at once with a mix of exits, timeouts, OOM
  kills and fork bombs: every run gets the verdict its command earns, none fails in setup,
  no message says "internal error", and nothing is left behind (cgroups, host mounts,
  processes, state files). Root and rootless (a delegated user's cgroups).
* gc / delegate / run in every order from a fresh tree, then all at once (root: delegate
  and gc of host cgroups). These run the real CLI code with the cgroup parent renamed to a
  private one, so the test never removes the parents other sandboxes on this machine use.

No timing is asserted; the runs are bounded by their own timeouts.
"""
import itertools
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

from sandbox import cgroup
from util import ROOT, pysandbox_cmd, require

USER = "pysbx"
BOMB = ("import os, time\n"
        "while True:\n"
        "    try:\n"
        "        os.fork()\n"
        "    except OSError:\n"
        "        time.sleep(0.05); os._exit(3)\n")
PY = ["/usr/bin/python3", "-I", "-S", "-c"]

# (kind, extra options, argv, expected reason, expected exit code or None)
KINDS = [
    ("exit0", [], ["/bin/true"], "exit", 0),
    ("exit3", [], ["/bin/sh", "-c", "exit 3"], "exit", 3),
    ("timeout", ["--timeout", "0.5"], ["/bin/sleep", "30"], "timeout", 124),
    ("oom", ["--memory", "32M"], PY + ["b = bytearray(96 << 20)"], "oom", None),
    ("bomb", ["--pids", "16"], PY + [BOMB], "pids", None),
]


def _need_cgroups():
    require(cgroup.detect() is not None, "no cgroup filesystem")
    if cgroup.detect() == "v1" and not ROOT:
        hier = cgroup.v1_hierarchies()
        require("pids" in hier and os.access(cgroup.v1_parent(hier["pids"]), os.W_OK),
                "rootless strict needs delegated cgroups (pysandbox delegate %s)" % USER)


def _host_mount_points():
    with open("/proc/self/mountinfo") as f:
        return {line.split()[4] for line in f}


def _cgroup_dirs_named(prefix):
    out = []
    for _fstype, point, _root, _opts in cgroup.mounts():
        for parent in (os.path.join(point, cgroup.PARENT), cgroup.v1_parent(point)):
            try:
                out += [os.path.join(parent, n) for n in os.listdir(parent) if n.startswith(prefix)]
            except OSError:
                pass
    return sorted(set(out))


def _processes_in(prefix):
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cgroup" % entry) as f:
                if "/" + prefix in f.read():
                    found.append(int(entry))
        except OSError:
            pass
    return found


def test_100_strict_runs_at_once_leave_nothing(tmp_path):
    _need_cgroups()
    state = tmp_path / "state"
    work = tmp_path / "results"
    work.mkdir()
    os.chmod(tmp_path, 0o755)
    prefix = "load%d-" % os.getpid()
    env = dict(os.environ, PYSANDBOX_STATE_DIR=str(state))
    mounts_before = _host_mount_points()
    runs = []
    try:
        for number in range(100):
            kind, extra, argv, reason, code = KINDS[number % len(KINDS)]
            name = "%s%d" % (prefix, number)
            result = work / (name + ".json")
            out = open(work / (name + ".err"), "w+")
            proc = subprocess.Popen(pysandbox_cmd() + ["run", "--profile", "strict", "--name", name, "--result",
                                                       str(result)] + extra + ["--"] + argv,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=out, env=env)
            runs.append((proc, out, kind, reason, code, result))
        failures = []
        for proc, out, kind, reason, code, result in runs:
            proc.wait(timeout=300)
            out.seek(0)
            message = out.read()
            verdict = json.loads(result.read_text()) if result.exists() else {}
            if proc.returncode == 125 or "internal error" in message or verdict.get("reason") != reason \
                    or (code is not None and proc.returncode != code):
                failures.append((kind, proc.returncode, verdict.get("reason"), verdict.get("stage"), message))
        assert failures == [], failures
    finally:
        for proc, out, *_ in runs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # the supervisor tears its sandbox down
                proc.wait()
            out.close()
    assert _cgroup_dirs_named(prefix) == []
    assert _processes_in(prefix) == []
    assert not any(prefix in point for point in _host_mount_points() - mounts_before)
    assert not state.exists() or os.listdir(state) == []


# ------------------------------------------------------------------------------------------
# gc / delegate / run in every order (root)

WRAPPER = ("import sys\n"
           "import sandbox.cgroup as cgroup\n"
           "cgroup.PARENT = sys.argv[1]\n"
           "from sandbox.cli import main\n"
           "sys.exit(main(sys.argv[2:]))\n")


@pytest.fixture
def private_parent(tmp_path):
    """A cgroup parent of this test's own in every v1 hierarchy, removed at the end."""
    require(ROOT, "delegate and gc of host cgroups need root")
    require(cgroup.detect() == "v1", "cgroup v1 host (delegate is for v1)")
    try:
        entry = pwd.getpwnam(USER)
    except KeyError:
        pytest.skip("no test user %s" % USER)
    name = "pysandbox-order-%d" % os.getpid()
    state = tempfile.mkdtemp(prefix="pysandbox-order-")
    os.chmod(state, 0o1777)
    yield name, entry, state
    for point in sorted(set(cgroup.v1_hierarchies().values())):
        parent = os.path.join(point, name)
        if not os.path.isdir(parent):
            continue
        for child in os.listdir(parent):  # children left by a failed run: empty them, then remove
            path = os.path.join(parent, child)
            if os.path.isdir(path):
                cgroup.kill_tasks(path)
                cgroup.wait_empty(path, 5)
                cgroup.rmdir_quiet(path)
        cgroup.rmdir_quiet(parent)
    shutil.rmtree(state, ignore_errors=True)


def _command(parent, entry, state, step):
    """argv and env of one step: gc, delegate, run (root) or run_user (the delegated user)."""
    base = [sys.executable, "-I", "-c", WRAPPER, parent]
    env = dict(os.environ, PYSANDBOX_STATE_DIR=os.path.join(state, step.split("-")[0]))
    if step.startswith("gc"):
        return base + ["gc"], env
    if step.startswith("delegate"):
        return base + ["delegate", entry.pw_name], env
    run = ["run", "--profile", "strict", "--", "/bin/true"]
    if step.startswith("run_user"):
        env = {"PATH": "/usr/bin:/bin", "HOME": "/", "PYSANDBOX_STATE_DIR": os.path.join(state, "user")}
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        return [runuser, "-u", entry.pw_name, "--"] + base + run, env
    return base + run, env


def _start(parent, entry, state, step):
    argv, env = _command(parent, entry, state, step)
    return subprocess.Popen(argv, env=env, cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc):
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def _fresh(parent):
    """No private parent anywhere (as after a reboot); leaves of earlier steps are all gone."""
    for point in sorted(set(cgroup.v1_hierarchies().values())):
        path = os.path.join(point, parent)
        if os.path.isdir(path):
            for child in os.listdir(path):
                if os.path.isdir(os.path.join(path, child)):
                    assert cgroup.rmdir_quiet(os.path.join(path, child)), (path, child)
            assert cgroup.rmdir_quiet(path), path


@pytest.mark.root_only
def test_gc_delegate_run_in_every_order(private_parent):
    parent, entry, state = private_parent
    for order in itertools.permutations(("gc", "delegate", "run")):
        _fresh(parent)
        delegated = False
        for step in order + ("run_user", "run", "gc", "run"):
            code, out, err = _finish(_start(parent, entry, state, step))
            assert "internal error" not in err, (order, step, err)
            if step == "run_user" and not delegated:
                # before delegate, a rootless strict run is refused, naming the stage
                assert code == 125 and err.startswith("pysandbox: cgroup: "), (order, step, code, err)
                continue
            assert code == 0, (order, step, code, err)
            delegated |= step == "delegate"
        devices = cgroup.v1_hierarchies().get("devices")
        if devices:
            with open(os.path.join(devices, parent, "devices.list")) as f:
                from sandbox import cgroup_v1
                assert f.read().split("\n")[:-1] == list(cgroup_v1.DEVICE_ALLOW)


@pytest.mark.root_only
def test_gc_delegate_run_at_the_same_time(private_parent):
    parent, entry, state = private_parent
    for round_number in range(2):
        _fresh(parent)
        code, _out, err = _finish(_start(parent, entry, state, "delegate"))
        assert code == 0, err
        steps = ["gc-%d" % i for i in range(6)] + ["delegate-%d" % i for i in range(3)] + \
                ["run-%d" % i for i in range(12)] + ["run_user-%d" % i for i in range(6)]
        # interleave the kinds so that each starts while the others are at work
        steps.sort(key=lambda s: int(s.rsplit("-", 1)[1]))
        procs = [(step, _start(parent, entry, state, step)) for step in steps]
        results = [(step,) + _finish(proc) for step, proc in procs]
        bad = [(step, code, err) for step, code, _out, err in results if code != 0 or "internal error" in err]
        assert bad == [], (round_number, bad)
