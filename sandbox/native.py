"""The native-call layer: the one place the runtime reaches the kernel through ctypes.

* libc, libseccomp and libcap-ng are opened once, lazily (`libc()`, `libseccomp()`,
  `libcapng()`): `pysandbox run` pays only for what its profile uses.
* One error path: `check(rc, stage, detail)` turns a failed call (rc < 0, errno set by
  the C library) into SetupError(stage, errno, "detail: strerror"), which the stage
  runner reports and the supervisor turns into exit 125 naming the stage.
* Syscall numbers come from one table (native.NR); importing this module on
  a machine other than x86_64 raises SetupError("arch", ...) with a one-line message.
* Everything the supervisor and the child stages do to processes and descriptors goes
  through module attributes here (`native.clone_process`, `native.pipe2`, `native.close`,
  ...), so tests/fake_native.py can replace them with a recorder and check stage order,
  errors and cleanup without root.

Callers use `from . import native` and `native.NAME(...)`, never `from .native import
NAME`: a binding copied at import time would bypass the fake.
"""
import os

from .errors import SetupError

# ---- the one table of syscall numbers, and the architecture guard ------------------
# The runtime calls these by number (x86_64's arch/x86/entry/syscalls/syscall_64.tbl).
# The numbers differ per architecture (56 is clone on x86_64, openat on aarch64), so a
# runtime that calls them must refuse any other machine instead of calling the wrong
# syscall. seccomp_groups.SYSCALLS_X86_64 is the full table the filter compiler uses;
# tests/test_native.py keeps the two in step.

ARCH = "x86_64"

NR = {
    "setgroups": 116,
    "setresuid": 117,
    "setresgid": 119,
    "clone": 56,
    "pivot_root": 155,
    "seccomp": 317,
    "open_tree": 428,
    "move_mount": 429,
    "pidfd_open": 434,
    "ioprio_get": 252,
    "keyctl": 250,
    "sched_getattr": 315,
    "mount_setattr": 442,
    "landlock_create_ruleset": 444,
    "landlock_add_rule": 445,
    "landlock_restrict_self": 446,
}


class UnsupportedMachine(Exception):
    """Raised by guard(); the native layer turns it into a SetupError."""


def guard(machine=None):
    """Refuse a machine whose syscall numbers are not the ones above."""
    machine = machine or os.uname().machine
    if machine != ARCH:
        raise UnsupportedMachine("pysandbox supports %s only (this machine is %s): its syscall numbers "
                                 "and seccomp filters are x86_64's" % (ARCH, machine))
    return machine



try:
    MACHINE = guard()
except UnsupportedMachine as e:
    raise SetupError("arch", 0, str(e)) from None

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

# include/uapi/linux/prctl.h
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47

# statvfs f_flag bits (ST_*) that a bind remount inside a user namespace must keep:
# the kernel locks nosuid/nodev/noexec/atime flags of mounts inherited from a more
# privileged mount namespace, and a remount that would clear them fails with EPERM.
ST_FLAG_TO_MS = ((1, MS_RDONLY), (2, MS_NOSUID), (4, MS_NODEV), (8, MS_NOEXEC), (1024, MS_NOATIME),
                 (2048, MS_NODIRATIME), (4096, MS_RELATIME))

_libc = _libseccomp = _libcapng = None


def libc():
    """The C library (the process's own, already mapped: dlopen(NULL) costs nothing)."""
    global _libc
    if _libc is None:
        import ctypes
        lib = ctypes.CDLL(None, use_errno=True)
        lib.syscall.restype = ctypes.c_long
        lib.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
        lib.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
        lib.unshare.argtypes = (ctypes.c_int,)
        lib.sethostname.argtypes = (ctypes.c_char_p, ctypes.c_size_t)
        lib.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
        _libc = lib
    return _libc


def _load(name, package):
    import ctypes
    try:
        return ctypes.CDLL(name, use_errno=True)
    except OSError as e:
        raise SetupError("libraries", 0, "%s cannot be loaded (%s); install Debian's %s" % (name, e, package)) from None


def libseccomp():
    global _libseccomp
    if _libseccomp is None:
        _libseccomp = _load("libseccomp.so.2", "libseccomp2")
    return _libseccomp


def libcapng():
    global _libcapng
    if _libcapng is None:
        _libcapng = _load("libcap-ng.so.0", "libcap-ng0")
    return _libcapng


def errno():
    import ctypes
    return ctypes.get_errno()


def check(rc, stage, detail=""):
    """Return rc, or raise SetupError(stage, errno, "detail: strerror") when rc < 0."""
    if rc < 0:
        err = errno()
        raise SetupError(stage, err, "%s: %s" % (detail, os.strerror(err)) if detail else "")
    return rc


def fail(stage, err, detail=""):
    """Raise the same error check() raises, for an errno the caller already has."""
    raise SetupError(stage, err, "%s: %s" % (detail, os.strerror(err)) if detail and err else detail)


def syscall(name, *args):
    """The raw syscall by name (from the one table); returns rc, errno left for check()."""
    import ctypes
    return libc().syscall(ctypes.c_long(NR[name]), *[a if not isinstance(a, int) else ctypes.c_long(a)
                                                       for a in args])


def _enc(value):
    return value.encode() if isinstance(value, str) else value


def mount(source, target, fstype, flags=0, data=None, stage="mount"):
    check(libc().mount(_enc(source), _enc(target), _enc(fstype), flags, _enc(data)), stage,
          mount_detail(source, target, flags))


def mount_detail(source, target, flags):
    """What a failed mount names: the target, and for a bind its source as the host sees it
    (the child reaches the host's tree through /oldroot; sandbox/stager.c says the same)."""
    if not isinstance(target, str):
        return ""
    if flags & MS_BIND and not flags & MS_REMOUNT and isinstance(source, str) and source:
        shown = source[len("/oldroot"):] if source.startswith("/oldroot/") else source
        return "%s on %s" % (shown, target)
    return target


def umount2(target, flags=0, stage="umount"):
    check(libc().umount2(_enc(target), flags), stage)


def pivot_root(new_root, put_old):
    check(syscall("pivot_root", _enc(new_root), _enc(put_old)), "pivot_root")


def unshare(flags, stage="unshare"):
    check(libc().unshare(flags), stage)


def sethostname(name):
    data = _enc(name)
    check(libc().sethostname(data, len(data)), "sethostname")


def prctl(option, arg2=0, arg3=0, arg4=0, arg5=0, stage="prctl"):
    return check(libc().prctl(option, arg2, arg3, arg4, arg5), stage)


def pidfd_open(pid):
    return check(syscall("pidfd_open", pid, 0), "pidfd_open")


def read_to_eof(fd, chunk=65536):
    """Everything a descriptor gives until EOF (a pipe whose writers all closed, a /proc file)."""
    chunks = []
    while True:
        data = os.read(fd, chunk)
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def read_whole(path, chunk=65536):
    """The bytes of a file read to its end (a /proc file has no size to ask for)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return read_to_eof(fd, chunk)
    finally:
        os.close(fd)


def proc_status(pid="self"):
    """/proc/PID/status as {field: text} (one read; raises OSError without /proc)."""
    fields = {}
    for line in read_whole("/proc/%s/status" % pid, 8192).decode("ascii", "replace").split("\n"):
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


# Process and descriptor operations of the supervisor and the stages: the real ones are
# the os module's; the recording fake replaces these attributes.
pipe2 = os.pipe2
close = os.close
write = os.write
read = os.read
kill = os.kill
waitpid = os.waitpid
wait4 = os.wait4
fork = os.fork
execve = os.execve
exit = os._exit


def pidfd_send_signal(pidfd, sig):
    import _signal
    _signal.pidfd_send_signal(pidfd, sig)


def run_stage(name, step, plan, launch):
    """Run one named stage of a stage table. The recording fake replaces this to record
    the order and to make a chosen stage fail; the real layer just runs it."""
    return step(plan, launch)


# The compiled child (sandbox/stager.py) is used only while this is the real run_stage:
# a test that drives single stages through the fake gets the Python stages.
REAL_RUN_STAGE = run_stage


_libc_holding_gil = None


def clone_process(flags):
    """fork(2) with namespace flags: the child starts inside the new namespaces.

    Python's os.fork cannot pass clone flags, and unshare(CLONE_NEWPID) would leave the
    caller outside its own pid namespace (only its children enter it), costing one more
    process. The raw clone syscall with no new stack behaves like fork; the interpreter's
    own fork hooks run around it so the child's runtime state (locks, thread ids) is reset
    exactly as os.fork would reset it. The syscall is made without releasing the GIL, as
    os.fork does, so it is safe while other threads run Python code:

    A ctypes.CDLL call releases the GIL around the foreign call; if another thread takes it
    during clone, the child is born with a copy of the GIL locked by a thread it does not
    have, and hangs for ever re-acquiring it on the way back from ctypes (holding a copy of
    every descriptor the supervisor had: the stdin of other runs never sees EOF). A
    ctypes.PyDLL function keeps the GIL for the whole call."""
    import ctypes
    import _signal
    global _libc_holding_gil
    if _libc_holding_gil is None:
        lib = ctypes.PyDLL(None, use_errno=True)
        lib.syscall.restype = ctypes.c_long
        _libc_holding_gil = lib
    api = ctypes.pythonapi
    api.PyOS_BeforeFork()
    pid = _libc_holding_gil.syscall(ctypes.c_long(NR["clone"]), ctypes.c_long(flags | int(_signal.SIGCHLD)),
                                    ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0))
    if pid == 0:
        api.PyOS_AfterFork_Child()
        return 0
    err = errno()
    api.PyOS_AfterFork_Parent()
    if pid < 0:
        fail("clone", err)
    return pid


# Credentials in the cloned child by the raw syscalls, not glibc's set*id: glibc makes every
# thread of the process take the change (a signal to each, then a wait), and a child cloned
# from a supervisor whose other threads were mid-creation can wait for ever on threads it
# never had. The child is single-threaded: the raw call changes the whole process.
def setresuid(uid):
    check(syscall("setresuid", uid, uid, uid), "setresuid", "uid %d" % uid)


def setresgid(gid):
    check(syscall("setresgid", gid, gid, gid), "setresgid", "gid %d" % gid)


def setgroups(groups):
    import ctypes
    array = (ctypes.c_uint * max(1, len(groups)))(*groups)
    check(syscall("setgroups", len(groups), array), "setgroups", " ".join(map(str, groups)))


def close_all_but(*keep):
    """Close every descriptor above 2 except those in `keep` (None entries ignored): what a
    process about to become a sandbox or a container must not carry in."""
    low = 3
    for fd in sorted(fd for fd in keep if fd is not None and fd >= 3):
        os.closerange(low, fd)
        low = fd + 1
    # close_range(2) underneath: no upper bound to guess (nofile may exceed 65536)
    os.closerange(low, 0x7FFFFFFF)
