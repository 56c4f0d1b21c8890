"""Read files inside a target's root without ever leaving it.

Opening `/proc/PID/root/etc/os-release` with plain open() resolves an absolute
symlink planted in the container (`/etc/os-release -> /etc/shadow`) against the
*auditor's* root, i.e. on the host. Every path here is resolved relative to a
directory fd of the target's root: with openat2(RESOLVE_IN_ROOT) (Linux >= 5.6),
where the kernel treats that fd as "/" for absolute symlinks and "..", or else
with an O_NOFOLLOW walk that interprets each symlink itself, the same way.
Magic links (/proc/*/root, /proc/*/fd/*) are refused in both: through a host
procfs mounted in the container they would lead out of it.
"""
from __future__ import annotations

import errno
import os
import stat

SYS_openat2 = 437          # same number on every architecture (new syscall table)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
MAX_SYMLINK_HOPS = 40      # the kernel's own limit (MAXSYMLINKS)
DEFAULT_LIMIT = 64 * 1024

_libc = None
_openat2_works = None
_OpenHow = None

# The O_NOFOLLOW walk is the default: it resolves exactly as RESOLVE_IN_ROOT does (tested
# against the same hostile trees) and needs no ctypes, whose import alone costs the
# passive audit 3-4 ms; openat2 stays available (use_openat2=True), where the kernel
# enforces the root itself.
PREFER_OPENAT2 = False


def _lib():
    global _libc, _OpenHow
    if _libc is None:
        import ctypes

        class OpenHow(ctypes.Structure):
            _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]
        _OpenHow = OpenHow
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    return _libc


def _openat2(dirfd, path, flags):
    import ctypes
    libc = _lib()
    how = _OpenHow(flags | os.O_CLOEXEC, 0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    fd = libc.syscall(ctypes.c_long(SYS_openat2), ctypes.c_int(dirfd), ctypes.c_char_p(os.fsencode(path)),
                        ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return fd


def _walk_open(rootfd, path, flags):
    """RESOLVE_IN_ROOT done by hand: one component at a time with O_NOFOLLOW."""
    components = [c for c in path.split("/") if c and c != "."]
    stack = [os.dup(rootfd)]          # directory fds from root down to the current dir
    hops = 0
    try:
        while components:
            name = components.pop(0)
            if name == "..":
                if len(stack) > 1:     # ".." at the root stays at the root, like chroot
                    os.close(stack.pop())
                continue
            last = not components
            try:
                st = os.stat(name, dir_fd=stack[-1], follow_symlinks=False)
            except FileNotFoundError:
                if last and flags & os.O_CREAT:
                    raise OSError(errno.EPERM, "creation refused", path)
                raise
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                target = os.readlink(name, dir_fd=stack[-1])
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                components = [c for c in target.split("/") if c and c != "."] + components
                continue
            if last:
                return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=stack[-1])
            if not stat.S_ISDIR(st.st_mode):
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
            stack.append(os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                 dir_fd=stack[-1]))
        return os.open(".", flags | os.O_CLOEXEC, dir_fd=stack[-1])
    finally:
        for fd in stack:
            os.close(fd)


def open_in_root(rootfd: int, path: str, flags=os.O_RDONLY, use_openat2=None) -> int:
    """Open `path` as the target sees it, with `rootfd` standing for its "/"."""
    global _openat2_works
    if use_openat2 is None:
        use_openat2 = PREFER_OPENAT2 and _openat2_works is not False
    if use_openat2:
        try:
            fd = _openat2(rootfd, path.lstrip("/") or ".", flags)
            _openat2_works = True
            return fd
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.EPERM) or _openat2_works:
                raise
            # ENOSYS: kernel < 5.6; EPERM: a seccomp filter around the auditor refuses it.
            _openat2_works = False
    return _walk_open(rootfd, path, flags)


def read_in_root(rootfd: int, path: str, limit=DEFAULT_LIMIT, use_openat2=None) -> bytes:
    """Bounded read of a regular file. O_NONBLOCK so a planted FIFO cannot hang the audit."""
    fd = open_in_root(rootfd, path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY, use_openat2)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        chunks, left = [], limit
        while left > 0:
            chunk = os.read(fd, min(left, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def lstat_in_root(rootfd: int, path: str, use_openat2=None) -> os.stat_result:
    """stat of the final component itself (not followed), its parents resolved in root."""
    parent, _, name = path.rstrip("/").rpartition("/")
    if not name:
        return os.fstat(rootfd)
    fd = open_in_root(rootfd, parent or "/", os.O_PATH | os.O_DIRECTORY, use_openat2)
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    finally:
        os.close(fd)


def lstat_many_in_root(rootfd: int, paths, use_openat2=None) -> dict:
    """path -> os.stat_result or the OSError, opening each parent directory once."""
    by_parent = {}
    for path in paths:
        parent, _, name = path.rstrip("/").rpartition("/")
        by_parent.setdefault(parent or "/", []).append((path, name))
    out = {}
    for parent, entries in by_parent.items():
        try:
            fd = open_in_root(rootfd, parent, os.O_PATH | os.O_DIRECTORY, use_openat2)
        except OSError as exc:
            for path, _name in entries:
                out[path] = exc
            continue
        try:
            for path, name in entries:
                try:
                    out[path] = os.stat(name, dir_fd=fd, follow_symlinks=False) if name else os.fstat(fd)
                except OSError as exc:
                    out[path] = exc
        finally:
            os.close(fd)
    return out


def listdir_in_root(rootfd: int, path: str, use_openat2=None) -> list:
    fd = open_in_root(rootfd, path, os.O_RDONLY | os.O_DIRECTORY, use_openat2)
    try:
        return os.listdir(fd)
    finally:
        os.close(fd)


def readlink_in_root(rootfd: int, path: str, use_openat2=None) -> str:
    parent, _, name = path.rstrip("/").rpartition("/")
    fd = open_in_root(rootfd, parent or "/", os.O_PATH | os.O_DIRECTORY, use_openat2)
    try:
        return os.readlink(name, dir_fd=fd)
    finally:
        os.close(fd)


def open_root(pid, procfs_root="/proc") -> int:
    """A directory fd for the target's root (/proc/PID/root is the one magic link we follow)."""
    return os.open(os.path.join(procfs_root, str(pid), "root"), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
