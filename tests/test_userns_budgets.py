"""The user.* sysctls of the sandbox's own user namespace (sandbox/user_limits.py, stage
"user-limits"): inotify instances and watches, fanotify groups and marks and namespaces of each
kind are charged up the user-namespace chain to the sandbox's creator; a new user namespace
starts every limit at INT_MAX, so the profile's [user_limits] are written inside, by PID 1,
after the runtime made its own namespaces, below the sandbox's /proc/sys/user that the mount
stage kept open before /proc/sys turned read-only.

The exhausting test runs rootless (the test user) only and takes a fraction of a second; the
others read values and try one unshare, as root and rootless."""
import json
import subprocess
import sys

import pytest

from util import ROOT, py, pysandbox_cmd, require

SYSCTLS = ["max_inotify_instances", "max_inotify_watches", "max_fanotify_groups", "max_fanotify_marks",
           "max_user_namespaces", "max_mnt_namespaces", "max_pid_namespaces", "max_net_namespaces",
           "max_uts_namespaces", "max_ipc_namespaces", "max_cgroup_namespaces", "max_time_namespaces"]

# inside: take inotify instances until the kernel refuses, report, hold them until stdin closes
HOG = r"""
import ctypes, errno, json, sys
libc = ctypes.CDLL(None, use_errno=True)
held = []
while len(held) < 10000:
    fd = libc.inotify_init1(0o2000000)
    if fd < 0:
        stopped = errno.errorcode[ctypes.get_errno()]
        break
    held.append(fd)
else:
    stopped = "never"
limit = open("/proc/sys/user/max_inotify_instances").read().strip()
print(json.dumps({"instances": len(held), "stopped": stopped, "sysctl": limit}), flush=True)
sys.stdin.read()
"""

# outside, as the creator, while the sandbox holds its share
CREATOR_INOTIFY = r"""
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(0o2000000)
print("ok" if fd >= 0 else errno.errorcode[ctypes.get_errno()])
"""

READ_ALL = "import os, json; d = '/proc/sys/user/'; print(json.dumps({n: int(open(d + n).read()) for n in os.listdir(d)}))"

UNSHARE_USER = ("import ctypes, errno; c = ctypes.CDLL(None, use_errno=True); "
                "print('ok' if c.unshare(0x10000000) == 0 else errno.errorcode[ctypes.get_errno()])")


def _run(profile, code, timeout=60):
    proc = subprocess.run(pysandbox_cmd() + ["run", "--profile", str(profile), "--"] + py(code),
                          capture_output=True, text=True, timeout=timeout)
    require(not (proc.returncode == 125 and "cgroup" in proc.stderr), "strict needs delegated cgroups rootless")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.mark.skipif(ROOT, reason="budget-exhausting: runs rootless, as the test user, so that a regression "
                                 "never spends host root's budget")
def test_a_sandbox_taking_every_inotify_instance_leaves_the_creator_one():
    hog = subprocess.Popen(pysandbox_cmd() + ["run", "--profile", "strict", "--"] + py(HOG),
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = hog.stdout.readline()
        if not line:
            hog.stdin.close()
            err = hog.stderr.read()
            hog.wait()
            require(not (hog.returncode == 125 and "cgroup" in err), "strict needs delegated cgroups rootless")
            pytest.fail("the sandbox did not report (%s): %s" % (hog.returncode, err))
        inside = json.loads(line)
        # strict's bound, counted at the sandbox's own level: 32 and EMFILE, not the creator's 128
        assert inside == {"instances": 32, "stopped": "EMFILE", "sysctl": "32"}, inside
        creator = subprocess.run([sys.executable, "-I", "-S", "-c", CREATOR_INOTIFY], capture_output=True,
                                 text=True, timeout=30)
        assert creator.stdout.strip() == "ok", creator
    finally:
        if hog.poll() is None:
            hog.stdin.close()
        hog.wait(timeout=30)
    assert hog.returncode == 0, hog.stderr.read()


def test_strict_sets_every_user_sysctl_inside_and_permissive_none():
    strict = json.loads(_run("strict", READ_ALL))
    want = {"max_inotify_instances": 32, "max_inotify_watches": 8192, "max_fanotify_groups": 0,
            "max_fanotify_marks": 0}
    want.update({name: 0 for name in SYSCTLS if name.endswith("_namespaces")})
    assert {k: v for k, v in strict.items() if k in want} == {k: v for k, v in want.items() if k in strict}
    assert "max_inotify_instances" in strict and "max_user_namespaces" in strict
    default = json.loads(_run("default", READ_ALL))
    assert default["max_inotify_instances"] == 64 and default["max_inotify_watches"] == 16384
    assert default["max_user_namespaces"] == 2147483647  # default leaves nested namespaces to seccomp
    permissive = json.loads(_run("permissive", READ_ALL))
    assert set(permissive.values()) == {2147483647}, permissive
    # the creator's own level is untouched (the write changed the sandbox's namespace only)
    with open("/proc/sys/user/max_inotify_instances") as f:
        assert int(f.read()) > 32


def test_a_nested_user_namespace_is_refused_by_seccomp_and_by_the_sysctl_alone(tmp_path):
    # strict: the filter answers first (EPERM)
    assert _run("strict", UNSHARE_USER) == "EPERM"
    # with the filter's rule lifted, the sysctl (max_user_namespaces = 0) is the wall: ENOSPC
    lifted = tmp_path / "strict-unshare.toml"
    lifted.write_text('extends = "strict"\n[seccomp]\nallow = ["unshare"]\n')
    assert _run(lifted, UNSHARE_USER) == "ENOSPC"
    # and it is the sysctl that stops it: without strict's [user_limits] the same unshare works
    unbounded = tmp_path / "strict-unshare-unbounded.toml"
    unbounded.write_text('extends = "strict"\nreplace = ["user_limits"]\n[seccomp]\nallow = ["unshare"]\n')
    assert _run(unbounded, UNSHARE_USER) == "ok"


def test_a_profile_sets_its_own_values_and_bad_ones_are_refused_at_load(tmp_path):
    mine = tmp_path / "mine.toml"
    mine.write_text('extends = "strict"\n[user_limits]\nmax_inotify_instances = 5\nmax_inotify_watches = 100\n')
    got = json.loads(_run(mine, READ_ALL))
    assert got["max_inotify_instances"] == 5 and got["max_inotify_watches"] == 100
    bad = tmp_path / "bad.toml"
    bad.write_text('extends = "strict"\n[user_limits]\nmax_inotify_instances = -1\n')
    proc = subprocess.run(pysandbox_cmd() + ["profile", "lint", str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "user_limits" in proc.stderr and "max_inotify_instances" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('[user_limits]\nmax_foo = 1\n')
    proc = subprocess.run(pysandbox_cmd() + ["profile", "show", str(unknown)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0 and "max_foo" in proc.stderr and "Traceback" not in proc.stderr
