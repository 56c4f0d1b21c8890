"""Thin ctypes wrappers over the libc calls Python 3.11 lacks.

Every wrapper raises SetupError naming the operation and errno, so the first failing
stage of a sandbox's setup reports itself as `<stage>: <strerror>`.
"""
import ctypes
import os

from .errors import SetupError

libc = ctypes.CDLL(None, use_errno=True)
_syscall = libc.syscall
_syscall.restype = ctypes.c_long

# x86_64 syscall numbers.
SYS_pivot_root = 155
SYS_clone = 56
SYS_pidfd_open = 434

CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
NS_FLAGS = {
    "user": CLONE_NEWUSER, "pid": CLONE_NEWPID, "mount": CLONE_NEWNS, "net": CLONE_NEWNET,
    "uts": CLONE_NEWUTS, "ipc": CLONE_NEWIPC, "cgroup": CLONE_NEWCGROUP, "time": CLONE_NEWTIME,
}

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_SET_CHILD_SUBREAPER = 36

# statvfs f_flag bits (ST_*) that a bind remount inside a user namespace must keep:
# the kernel locks nosuid/nodev/noexec/atime flags of mounts inherited from a more
# privileged mount namespace, and a remount that would clear them fails with EPERM.
ST_FLAG_TO_MS = ((1, MS_RDONLY), (2, MS_NOSUID), (4, MS_NODEV), (8, MS_NOEXEC), (1024, MS_NOATIME),
                 (2048, MS_NODIRATIME), (4096, MS_RELATIME))

_mount = libc.mount
_mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
_umount2 = libc.umount2
_umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
_unshare = libc.unshare
_unshare.argtypes = (ctypes.c_int,)
_setns = libc.setns
_setns.argtypes = (ctypes.c_int, ctypes.c_int)
_sethostname = libc.sethostname
_sethostname.argtypes = (ctypes.c_char_p, ctypes.c_size_t)
_prctl = libc.prctl
_prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)


def _enc(value):
    return value.encode() if isinstance(value, str) else value


def _fail(stage, detail=""):
    raise SetupError(stage, ctypes.get_errno(), detail and "%s: %s" % (detail, os.strerror(ctypes.get_errno())))


def mount(source, target, fstype, flags=0, data=None, stage="mount"):
    if _mount(_enc(source), _enc(target), _enc(fstype), flags, _enc(data)) != 0:
        _fail(stage, target if isinstance(target, str) else "")


def umount2(target, flags=0, stage="umount"):
    if _umount2(_enc(target), flags) != 0:
        _fail(stage)


def pivot_root(new_root, put_old):
    if _syscall(SYS_pivot_root, _enc(new_root), _enc(put_old)) != 0:
        _fail("pivot_root")


def unshare(flags, stage="unshare"):
    if _unshare(flags) != 0:
        _fail(stage)


def setns(fd, nstype=0, stage="setns"):
    if _setns(fd, nstype) != 0:
        _fail(stage)


def sethostname(name):
    data = _enc(name)
    if _sethostname(data, len(data)) != 0:
        _fail("sethostname")


def prctl(option, arg2=0, arg3=0, arg4=0, arg5=0, stage="prctl"):
    result = _prctl(option, arg2, arg3, arg4, arg5)
    if result < 0:
        _fail(stage)
    return result


def pidfd_open(pid):
    fd = _syscall(SYS_pidfd_open, pid, 0)
    if fd < 0:
        _fail("pidfd_open")
    return fd


def clone_process(flags):
    """fork(2) with namespace flags: the child starts inside the new namespaces.

    Python's os.fork cannot pass clone flags, and unshare(CLONE_NEWPID) would leave the
    caller outside its own pid namespace (only its children enter it), costing one more
    process. The raw clone syscall with no new stack behaves like fork; the interpreter's
    own fork hooks run around it so the child's runtime state (locks, thread ids) is reset
    exactly as os.fork would reset it.
    """
    import _signal
    api = ctypes.pythonapi
    api.PyOS_BeforeFork()
    pid = _syscall(SYS_clone, flags | int(_signal.SIGCHLD), 0, 0, 0, 0)
    if pid == 0:
        api.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    api.PyOS_AfterFork_Parent()
    if pid < 0:
        raise SetupError("clone", err)
    return pid


def proc_status(pid="self"):
    """/proc/PID/status as {field: text} (one read; raises OSError without /proc)."""
    fd = os.open("/proc/%s/status" % pid, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 8192)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    fields = {}
    for line in b"".join(chunks).decode("ascii", "replace").split("\n"):
        key, sep, value = line.partition(":")
        if sep:
            fields[key] = value.strip()
    return fields


def mount_flags_of(path):
    """The MS_* flags a bind of `path` inherits and must keep on remount."""
    st = os.statvfs(path)
    flags = 0
    for st_bit, ms_bit in ST_FLAG_TO_MS:
        if st.f_flag & st_bit:
            flags |= ms_bit
    return flags
