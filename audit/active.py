"""--active: harmless proofs run with the target's view and credentials.

A forked helper copies the target's seccomp filters (PTRACE_SECCOMP_GET_FILTER while the
target is held in a ptrace stop for microseconds, then detached), setns()es into the
target's user, cgroup, ipc, uts, net and mount namespaces, chroots into its root, takes
its uids, gids, groups and capability sets, sets no_new_privs (needed to install a filter
without CAP_SYS_ADMIN) and installs the copied filters. Then it proves, never writes:

* open(path, O_WRONLY) and close() of kernel control files (core_pattern, modprobe,
  uevent_helper, sysrq-trigger, binfmt_misc register, cgroup v1 release_agent): the
  kernel checks write permission at open, so success proves writability; no byte is written.
* unshare(CLONE_NEWUSER) in a throwaway grandchild (the namespace dies with it).
* system calls with invalid arguments, each in a throwaway grandchild so a filter that
  kills cannot take the helper down: the kernel answers EINVAL/EBADF/EFAULT when the call
  is reachable, a seccomp filter answers EPERM (or ENOSYS, or SIGSYS).

The helper never touches the host's own procfs paths: it is chrooted into the target
before the first open. LSM labels are not copied (no LSM on the hosts we run on; with
AppArmor the proofs are an upper bound).
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import select
import signal

from pysandbox_common.procfs import ProcError, ProcFS, cap_mask, parse_id_map, parse_mountinfo

PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2
PTRACE_DETACH = 17
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_SECCOMP_GET_FILTER = 0x420C
WALL = 0x40000000
CLONE_NEWUSER = 0x10000000
SETNS_ORDER = ("user", "cgroup", "ipc", "uts", "net", "mnt")
LINUX_CAPABILITY_VERSION_3 = 0x20080522

# x86_64 numbers of the probed calls (the project targets x86_64; see docs/audit.md)
SYSCALLS = {"keyctl": 250, "open_by_handle_at": 304, "unshare": 272, "userfaultfd": 323, "bpf": 321,
            "perf_event_open": 298, "init_module": 175, "kexec_load": 246, "mount": 165, "ptrace": 101}
# Arguments the kernel rejects before doing anything: the answer tells who refused.
PROBE_ARGS = {
    "keyctl": (0x7FFF, 0, 0, 0, 0),             # unknown operation -> EOPNOTSUPP
    "open_by_handle_at": (-1, 0, 0, 0, 0),      # bad fd / NULL handle -> EBADF/EFAULT (EPERM without CAP_DAC_READ_SEARCH)
    "unshare": (0x1, 0, 0, 0, 0),               # unknown flag bit -> EINVAL
    "userfaultfd": (0x7FFFFFFF, 0, 0, 0, 0),    # unknown flags -> EINVAL
    "bpf": (0x7FFF, 0, 0, 0, 0),                # unknown command -> EINVAL (EPERM when unprivileged bpf is off)
    "perf_event_open": (0, 0, 0, 0, 0),         # NULL attr -> EFAULT
    "init_module": (0, 0, 0, 0, 0),             # NULL image -> EFAULT (EPERM without CAP_SYS_MODULE)
    "kexec_load": (0, 0x7FFFFFFF, 0, 0x7FFFFFFF, 0),  # too many segments -> EINVAL (EPERM without CAP_SYS_BOOT)
    "mount": (0, 0, 0, 0, 0),                   # NULL target: the path lookup fails first -> EFAULT
    "ptrace": (0x7FFF, 0, 0, 0, 0),             # unknown request on PID 0 -> ESRCH
}


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.ptrace.restype = ctypes.c_long
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return libc


def _check(ret, what):
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, "%s: %s" % (what, os.strerror(err)))
    return ret


def fetch_seccomp_filters(libc, pid, count):
    """The target's classic-BPF filters, most recent first (the kernel's index order)."""
    _check(libc.ptrace(PTRACE_SEIZE, pid, None, None), "PTRACE_SEIZE")
    try:
        _check(libc.ptrace(PTRACE_INTERRUPT, pid, None, None), "PTRACE_INTERRUPT")
        os.waitpid(pid, WALL)
        filters = []
        for index in range(count):
            n = _check(libc.ptrace(PTRACE_SECCOMP_GET_FILTER, pid, ctypes.c_void_p(index), None),
                       "PTRACE_SECCOMP_GET_FILTER")
            buf = ctypes.create_string_buffer(n * 8)
            _check(libc.ptrace(PTRACE_SECCOMP_GET_FILTER, pid, ctypes.c_void_p(index), buf), "PTRACE_SECCOMP_GET_FILTER")
            filters.append(buf.raw)
        return filters
    finally:
        libc.ptrace(PTRACE_DETACH, pid, None, None)


def _translate(ids, id_map):
    """Host ids -> ids inside the target's user namespace."""
    out = []
    for value in ids:
        for inside, outside, count in id_map:
            if outside <= value < outside + count:
                out.append(inside + value - outside)
                break
        else:
            out.append(65534)
    return out


def _errno_name(num):
    return errno.errorcode.get(num, str(num))


def _in_grandchild(fn):
    """Run fn() in a throwaway child; returns ('exit', code) or ('signal', signo)."""
    child = os.fork()
    if child == 0:
        try:
            code = fn()
        except BaseException:
            code = 255
        os._exit(code & 0xFF)
    _, status = os.waitpid(child, 0)
    if os.WIFSIGNALED(status):
        return "signal", os.WTERMSIG(status)
    return "exit", os.WEXITSTATUS(status)


def _helper(libc, pid, plan):
    results = {"seccomp-copied": False}
    if plan["filters_count"] and pid != os.getpid():
        filters = fetch_seccomp_filters(libc, pid, plan["filters_count"])
    else:
        filters = []
    ns_fds = []
    for name in SETNS_ORDER:
        if plan["ns"].get(name) != plan["own_ns"].get(name):
            ns_fds.append((name, os.open("/proc/%d/ns/%s" % (pid, name), os.O_RDONLY | os.O_CLOEXEC)))
    rootfd = os.open("/proc/%d/root" % pid, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    for name, fd in ns_fds:
        _check(libc.setns(fd, 0), "setns(%s)" % name)
        os.close(fd)
    os.fchdir(rootfd)
    os.chroot(".")
    os.close(rootfd)

    joined_userns = any(name == "user" for name, _ in ns_fds)
    uids, gids, groups = plan["uids"], plan["gids"], plan["groups"]
    if joined_userns:
        uids, gids, groups = (_translate(uids, plan["uid_map"]), _translate(gids, plan["gid_map"]),
                              _translate(groups, plan["gid_map"]))
    for cap in range(plan["cap_last_cap"] + 1):
        if not plan["caps"]["bounding"] >> cap & 1:
            libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    _check(libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0), "PR_SET_KEEPCAPS")
    if plan.get("setgroups") == "deny" and joined_userns:
        # A user namespace made with setgroups=deny (unprivileged unshare -r does so) refuses
        # setgroups(2) to everyone: the helper keeps its groups, which only matter for
        # group-writable files; kernel control files are root-owned 0644/0200.
        results["groups"] = "kept: setgroups is denied in the target's user namespace"
    else:
        os.setgroups(groups)
    os.setresgid(gids[0], gids[1], gids[2])
    os.setresuid(uids[0], uids[1], uids[2])
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        data[i].effective = plan["caps"]["effective"] >> (32 * i) & 0xFFFFFFFF
        data[i].permitted = plan["caps"]["permitted"] >> (32 * i) & 0xFFFFFFFF
        data[i].inheritable = plan["caps"]["inheritable"] >> (32 * i) & 0xFFFFFFFF
    _check(libc.capset(ctypes.byref(header), data), "capset")
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")
    for raw in reversed(filters):           # oldest first, as the target installed them
        buf = ctypes.create_string_buffer(raw, len(raw))
        prog = _SockFprog(len(raw) // 8, ctypes.cast(buf, ctypes.c_void_p))
        _check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0), "seccomp")
    results["seccomp-copied"] = bool(filters) or plan["filters_count"] == 0 or pid == os.getpid()

    for path in plan["write_paths"]:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError as exc:
            outcome = "absent" if exc.errno == errno.ENOENT else _errno_name(exc.errno)
        else:
            os.close(fd)
            outcome = "writable"
        results["write:" + path] = {"result": outcome}

    def try_unshare():
        return 0 if libc.unshare(CLONE_NEWUSER) == 0 else ctypes.get_errno()
    kind, value = _in_grandchild(try_unshare)
    results["unshare-user"] = {"result": "created" if (kind, value) == ("exit", 0) else
                               ("killed by signal %d" % value if kind == "signal" else _errno_name(value))}

    for name, nr in SYSCALLS.items():
        args = PROBE_ARGS[name]

        def call(nr=nr, args=args):
            ret = libc.syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args))
            return 0 if ret >= 0 else ctypes.get_errno()
        kind, value = _in_grandchild(call)
        if kind == "signal":
            results["syscall:" + name] = {"result": "killed by signal %d" % value, "verdict": "blocked"}
        else:
            answer = "success" if value == 0 else _errno_name(value)
            blocked = value in (errno.EPERM, errno.ENOSYS, errno.EACCES)
            results["syscall:" + name] = {"result": answer, "verdict": "blocked" if blocked else "allowed"}
    return results


def _plan(pid, proc):
    status = proc.status(pid)
    mounts = parse_mountinfo(proc.read(pid, "mountinfo"))
    # Every place a kernel control file shows: its standard path and any proc/sysfs mount
    # whose root contains it (a host /proc/sys bound at an odd path).
    from .snapshot import KERNEL_CONTROL_FILES, kernel_locations, visible_mounts
    reachable = visible_mounts(mounts)
    write_paths = [loc for path in KERNEL_CONTROL_FILES for loc in kernel_locations(reachable, path)]
    write_paths += [m.mountpoint.rstrip("/") + "/release_agent" for m in mounts if m.fstype == "cgroup"]
    write_paths += [m.mountpoint.rstrip("/") + "/register" for m in mounts if m.fstype == "binfmt_misc"]
    try:
        cap_last = int(open("/proc/sys/kernel/cap_last_cap").read().strip())
    except (OSError, ValueError):
        cap_last = 40
    return {
        "ns": proc.namespaces(pid), "own_ns": proc.namespaces(os.getpid()),
        "uids": [int(x) for x in status["Uid"].split()[:3]],
        "gids": [int(x) for x in status["Gid"].split()[:3]],
        "groups": [int(x) for x in status.get("Groups", "").split()],
        "uid_map": parse_id_map(proc.read(pid, "uid_map")), "gid_map": parse_id_map(proc.read(pid, "gid_map")),
        "caps": {k: cap_mask(status.get(f, "0")) for k, f in (("effective", "CapEff"), ("permitted", "CapPrm"),
                                                              ("inheritable", "CapInh"), ("bounding", "CapBnd"))},
        "filters_count": int(status.get("Seccomp_filters", "0") or 0) if status.get("Seccomp") == "2" else 0,
        "cap_last_cap": cap_last,
        "write_paths": list(dict.fromkeys(write_paths)),
        "setgroups": _setgroups_state(proc, pid),
    }


def _setgroups_state(proc, pid):
    try:
        return proc.read(pid, "setgroups", limit=64).strip()
    except (OSError, ProcError):
        return None


def run_probes(pid, timeout=20.0, proc=None):
    """Run the proofs; returns {probe: result}. Failures become {"helper": {"error": ...}}."""
    proc = proc or ProcFS()
    plan = _plan(pid, proc)
    libc = _libc()
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_end)
        try:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            payload = _helper(libc, pid, plan)
            code = 0
        except BaseException as exc:  # the helper reports, it never raises into the caller's copy
            payload = {"helper": {"error": "%s: %s" % (type(exc).__name__, exc)}}
            code = 1
        data = json.dumps(payload).encode()
        view = memoryview(data)
        while view:
            n = os.write(write_end, view)
            view = view[n:]
        os._exit(code)
    os.close(write_end)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([read_end], [], [], timeout)
            if not ready:
                os.kill(child, signal.SIGKILL)
                chunks = [json.dumps({"helper": {"error": "timed out"}}).encode()]
                break
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
        os.waitpid(child, 0)
    try:
        return json.loads(b"".join(chunks) or b'{"helper": {"error": "no answer"}}')
    except ValueError:
        return {"helper": {"error": "unreadable answer"}}
