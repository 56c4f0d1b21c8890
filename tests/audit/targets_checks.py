"""Targets for the checks' tests: hand-built snapshots for the pure logic (a recorded
status file and mountinfo text become a Snapshot with every other fact neutral, no /proc
read), and live targets built here (a user + mount namespace of the unprivileged user,
uid 0 without permitted capabilities) next to livetargets.util_target."""
import json as _json
import os
import pwd as _pwd
import signal as _signal
import subprocess as _subprocess
import sys as _sys
import time as _time
from contextlib import contextmanager as _contextmanager
from types import MappingProxyType

from audit import snapshot as S
from pysandbox_common import procfs

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
HOST_NS = dict(procfs.INITIAL_NS_INODES, net=4026531840, mnt=4026531841)


def status_file(name):
    with open(os.path.join(DATA, "status", name)) as f:
        return procfs.parse_status(f.read())


def mountinfo_file(name):
    with open(os.path.join(DATA, "mountinfo", name)) as f:
        return procfs.parse_mountinfo(f.read())


def host(**overrides):
    facts = dict(
        namespaces=MappingProxyType(HOST_NS), reference_pid=1, cap_last_cap=40, caps=(1 << 41) - 1,
        mounts=(), auditor_mounts=(), sysctls=MappingProxyType({}), kernel="6.18.0", cgroup_v1_controllers=("memory",),
        auditor_pid=1234, auditor_namespaces=MappingProxyType(HOST_NS), auditor_euid=0, auditor_caps=(1 << 41) - 1,
        block_devices=frozenset({(254, 0), (7, 0)}),
        mem_devices=MappingProxyType({(1, 1): "/dev/mem", (1, 2): "/dev/kmem", (1, 4): "/dev/port"}),
        modules=(True, "/proc/modules present, kernel.modules_disabled = 0"), cgroup_v1_mountable=True,
        kernel_files=frozenset(S.KERNEL_CONTROL_FILES + S.DEFAULT_MASKED_PATHS + S.DEFAULT_READONLY_PATHS))
    facts.update(overrides)
    return S.HostFacts(**facts)


def snapshot(status=None, mounts=(), errors=(), visible=None, **overrides):
    status = status or status_file("root-nnp-full")
    ns = dict(HOST_NS, pid=4026532100, mnt=4026532101, net=4026532102, ipc=4026532103, uts=4026532104,
              cgroup=4026532105)
    reachable = S.visible_mounts(mounts)
    if visible is None:
        visible = set()
        for path in S.KERNEL_CONTROL_FILES + S.DEFAULT_MASKED_PATHS + S.DEFAULT_READONLY_PATHS:
            visible.update(S.kernel_locations(reachable, path))
    fields = dict(
        target=S.TargetInfo(4242, "process"), host=host(), status=MappingProxyType(status),
        uids=S._ids(status.get("Uid")), gids=S._ids(status.get("Gid")), caps=S._caps(status),
        no_new_privs=status.get("NoNewPrivs") == "1", seccomp_mode=int(status.get("Seccomp", "0")),
        seccomp_filters=0, namespaces=MappingProxyType(ns), mounts=tuple(mounts), cgroups=(),
        uid_map=((0, 0, 4294967295),), gid_map=((0, 0, 4294967295),), lsm=None, cwd="/", root_link="/",
        fds=(), os_release=MappingProxyType({}), dev_nodes=(), visible_paths=frozenset(visible),
        host_procfs_mounts=(), runtime_sockets=(), cgroup_limits=MappingProxyType({}), devices_list=None,
        probes=None, errors=tuple(errors), reachable_mounts=reachable, path_errors=MappingProxyType({}),
        dev_scan_incomplete=None, access_hint="run the audit as root")
    fields.update(overrides)
    return S.Snapshot(**fields)


def outcome(check_id, snap):
    from audit.checks import get
    return get(check_id).func(snap)


# ------------------------------------------------------------------ live target builders
# (the util-linux builder itself is livetargets.util_target, shared with the audit-targets
# helper; what is specific to the checks' tests lives here)

UNPRIVILEGED_USER = "pysbx"


def unprivileged_ids():
    try:
        entry = _pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def audit_as(user_ids, pid, *extra):
    """Run the installed audit CLI (this venv's python) as another user: what an unprivileged
    operator gets. Returns the JSON report."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": "/", "LC_ALL": "C.UTF-8"}
    cmd = [_sys.executable, "-I", "-m", "audit", str(pid), "--format", "json", *extra]
    if user_ids is not None and os.geteuid() != user_ids[0]:
        cmd = ["runuser", "-u", UNPRIVILEGED_USER, "--"] + cmd
    proc = _subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd="/")
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    return _json.loads(proc.stdout)


def statuses(report):
    """status -> set of check ids."""
    out = {}
    for f in report["findings"]:
        out.setdefault(f["status"], set()).add(f["id"])
    return out


def _wait_for_comm(proc, comm, timeout=30.0):
    deadline = _time.monotonic() + timeout
    while _time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError("target setup failed: %s" % (proc.stderr.read() or b"").decode()[-2000:])
        candidates = [proc.pid]
        try:
            with open("/proc/%d/task/%d/children" % (proc.pid, proc.pid)) as f:
                candidates += [int(x) for x in f.read().split()]
        except OSError:
            pass
        for pid in candidates:
            try:
                with open("/proc/%d/comm" % pid) as f:
                    if f.read().strip() == comm:
                        return pid
            except OSError:
                continue
        _time.sleep(0.01)
    raise AssertionError("target did not reach %s" % comm)


@_contextmanager
def _spawned(argv, comm="sleep", **kw):
    proc = _subprocess.Popen(argv, stdin=_subprocess.DEVNULL, stdout=_subprocess.DEVNULL,
                             stderr=_subprocess.PIPE, **kw)
    target = None
    try:
        target = _wait_for_comm(proc, comm)
        yield target
    finally:
        # End only what we started, by PID.
        for pid in ([target] if target else []) + [proc.pid]:
            try:
                os.kill(pid, _signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=10)
        proc.stderr.close()


# Inside a user and mount namespace the unprivileged user owns: mounts made there are the
# test's own and vanish with the namespace. Run by /usr/bin/python3 (readable by every user).
_USERNS_SCRIPT = r"""
import os, subprocess, sys
spec = dict(a.split("=", 1) for a in sys.argv[1:])
def sh(*cmd):
    subprocess.run(cmd, check=True)
if "odd" in spec:
    # the host's /proc/sys, read-write, at a path no fixed check looks at
    os.makedirs(spec["odd"], exist_ok=True)
    sh("mount", "--rbind", "/proc/sys", spec["odd"])
if "dev" in spec:
    keep = spec["dev"]
    os.makedirs(keep, exist_ok=True)
    open(os.path.join(keep, "blk"), "w").close()
    sh("mount", "--bind", spec["block"], os.path.join(keep, "blk"))
    sh("mount", "-t", "tmpfs", "-o", "mode=755", "testdev", "/dev")
    for i in range(int(spec["entries"])):
        open("/dev/e%05d" % i, "w").close()
    open("/dev/zzzz-last", "w").close()
    sh("mount", "--bind", os.path.join(keep, "blk"), "/dev/zzzz-last")
os.execv("/bin/sleep", ["sleep", "3600"])
"""


@_contextmanager
def userns_target(odd=False, dev_entries=0, block=None):
    """A sleeper in a user + mount namespace of the unprivileged user (rootless), with the
    gaps asked for: `odd` binds the host's /proc/sys read-write at <scratch>/odd;
    `dev_entries`/`block` replace /dev with that many files and then the host block device
    `block` bound last, under a name that is no disk's. Yields (pid, scratch dir)."""
    import shutil
    import tempfile
    scratch = tempfile.mkdtemp(prefix="audit-checks-", dir="/tmp")
    os.chmod(scratch, 0o1777)
    spec = {}
    if odd:
        spec["odd"] = os.path.join(scratch, "odd")
    if block:
        spec.update(dev=os.path.join(scratch, "keep"), block=block, entries=str(dev_entries))
    argv = ["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private",
            "/usr/bin/python3", "-I", "-c", _USERNS_SCRIPT] + ["%s=%s" % kv for kv in spec.items()]
    if os.geteuid() == 0:
        # as root, the target is still the unprivileged user's (what rootless means)
        argv = ["runuser", "-u", UNPRIVILEGED_USER, "--"] + argv
    try:
        with _spawned(argv, cwd="/") as pid:
            yield pid, scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


_NO_CAPS_ROOT = r"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_NO_NEW_PRIVS = 38
assert libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
class Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
class Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]
header = Header(0x20080522, 0)
data = (Data * 2)()
# empty effective, permitted and inheritable; the bounding set stays full
assert libc.capset(ctypes.byref(header), data) == 0, ctypes.get_errno()
os.execv("/bin/sleep", ["sleep", "3600"])
"""


@_contextmanager
def root_without_caps():
    """uid 0, no_new_privs, an empty permitted set and a full bounding set (root only)."""
    with _spawned(["/usr/bin/python3", "-I", "-c", _NO_CAPS_ROOT]) as pid:
        yield pid
