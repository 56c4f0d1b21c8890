"""Rootless limits on cgroup v1 through `pysandbox delegate USER` (root-only setup, then
the sandbox runs as the user, end to end through the CLI)."""
import json
import os
import pwd
import subprocess
import sys

import pytest

from util import ROOT, require, run_cli

pytestmark = pytest.mark.root_only
USER = "pysbx"


@pytest.fixture
def delegated_user():
    require(ROOT, "needs root to delegate cgroups and switch users")
    from sandbox import cgroup
    require(cgroup.detect() == "v1", "cgroup v1 host")
    try:
        entry = pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "-m", USER], check=True, capture_output=True)
        entry = pwd.getpwnam(USER)
    point = cgroup.v1_hierarchies()["memory"]
    existed = os.path.isdir(cgroup.v1_parent(point, entry.pw_uid))
    proc = run_cli("delegate", USER)
    assert proc.returncode == 0, proc.stderr
    yield entry
    if not existed:
        proc = run_cli("delegate", "--remove", USER)
        assert proc.returncode == 0, proc.stderr
        # the last delegation taken back and nothing running: no `pysandbox` parent is left
        left = [os.path.join(p, cgroup.PARENT) for _t, p, _r, _o in cgroup.mounts()
                if os.path.isdir(os.path.join(p, cgroup.PARENT))]
        from sandbox import cgroup_v1
        if not cgroup_v1._child_cgroups(cgroup.v1_parent(cgroup.v1_hierarchies()["pids"])):  # no sandbox left
            assert left == [], left


@pytest.fixture
def shared_dir():
    """A directory the test user can write its --result into (pytest's own tmp is root's)."""
    import shutil
    import tempfile
    path = tempfile.mkdtemp(prefix="pysandbox-delegation-")
    os.chmod(path, 0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_as(entry, *args):
    return subprocess.run(["runuser", "-u", entry.pw_name, "--", os.path.join(os.path.dirname(sys.executable),
                                                                            "pysandbox")] + list(args),
                          capture_output=True, text=True, timeout=60, cwd="/")


def test_rootless_strict_with_delegation_gets_its_limits(delegated_user, shared_dir):
    result = os.path.join(shared_dir, "r.json")
    proc = run_as(delegated_user, "run", "--profile", "strict", "--memory", "48M", "--result", result, "--",
                  "/usr/bin/python3", "-c", "x = bytearray(300 << 20)")
    assert os.path.exists(result), proc.stderr
    with open(result) as f:
        verdict = json.load(f)
    assert verdict["reason"] == "oom" and verdict["exit_code"] == 128 + 9, (verdict, proc.stderr)
    assert verdict["memory_peak"] and verdict["memory_peak"] <= 48 << 20
    # the user's sandbox cgroups are gone afterwards; the delegation root stays
    from sandbox import cgroup
    for point in set(cgroup.v1_hierarchies().values()):
        parent = cgroup.v1_parent(point, delegated_user.pw_uid)
        if os.path.isdir(parent):
            assert [n for n in os.listdir(parent) if os.path.isdir(os.path.join(parent, n))] == []


def test_delegate_refuses_bad_input():
    proc = run_cli("delegate", "no-such-user-xyz")
    assert proc.returncode == 125 and "no such user" in proc.stderr
    proc = run_cli("delegate")
    assert proc.returncode == 125 and proc.stderr.startswith("pysandbox: delegate: ") and "USER" in proc.stderr
