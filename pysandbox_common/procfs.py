"""Readers and parsers for the /proc files an audit needs.

One function per /proc file, a configurable procfs root (so recorded trees under
tests/audit/data can stand in for /proc), and errors translated once: a vanished
process is NoSuchProcess, a denied read AccessDenied. Parsers are pure functions
over text so they can be unit-tested against recorded files.
"""
from __future__ import annotations

import errno
import os
from collections import namedtuple

# The kernel gives each initial namespace a fixed inode number (include/linux/proc_ns.h);
# a process whose namespace inode equals one of these shares that namespace with the host.
# Network and mount namespaces have no fixed number and must be compared with a host process.
INITIAL_NS_INODES = {
    "ipc": 0xEFFFFFFF,
    "uts": 0xEFFFFFFE,
    "user": 0xEFFFFFFD,
    "pid": 0xEFFFFFFC,
    "cgroup": 0xEFFFFFFB,
    "time": 0xEFFFFFFA,
}
NAMESPACES = ("pid", "net", "ipc", "uts", "mnt", "cgroup", "user", "time")

# Reads of /proc files are bounded: a status or mountinfo larger than this is not a real one.
READ_LIMIT = 4 << 20


class ProcError(Exception):
    pass


class NoSuchProcess(ProcError):
    def __init__(self, pid, detail=""):
        super().__init__("process %s does not exist%s" % (pid, (": " + detail) if detail else ""))
        self.pid = pid


class AccessDenied(ProcError):
    def __init__(self, pid, path):
        super().__init__("access denied reading %s" % path)
        self.pid = pid
        self.path = path


# ---------------------------------------------------------------- pure parsers

def unescape_mount_field(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo (fs/proc_namespace.c)."""
    from .mountinfo import unescape
    return unescape(field)


class Mount(namedtuple("Mount", "mount_id parent_id major minor root mountpoint options optional fstype source super_options")):
    __slots__ = ()
    # mount_id: int
    # parent_id: int
    # major: int
    # minor: int
    # root: str          # path inside the mounted filesystem that is shown here
    # mountpoint: str    # relative to the reading process's root
    # options: tuple     # per-mount options (ro/rw, nosuid, ...)
    # optional: tuple    # shared:N, master:N, propagate_from:N, unbindable
    # fstype: str
    # source: str
    # super_options: tuple

    @property
    def read_only(self) -> bool:
        return "ro" in self.options or "ro" in self.super_options

    @property
    def device(self) -> str:
        return "%d:%d" % (self.major, self.minor)

    def peer_group(self, tag="shared"):
        for item in self.optional:
            if item.startswith(tag + ":"):
                return item.split(":", 1)[1]
        return None

    def line(self) -> str:
        return "%d %d %s %s %s %s %s - %s %s %s" % (
            self.mount_id, self.parent_id, self.device, self.root, self.mountpoint,
            ",".join(self.options), " ".join(self.optional) or "", self.fstype,
            self.source, ",".join(self.super_options))


def parse_mountinfo(text: str) -> tuple:
    from .mountinfo import parse
    return tuple(Mount(*fields) for fields in parse(text))


class CgroupEntry(namedtuple("CgroupEntry", "hierarchy controllers path")):
    __slots__ = ()
    # hierarchy: int
    # controllers: tuple   # empty for the cgroup2 unified entry "0::"
    # path: str

    @property
    def is_v2(self) -> bool:
        return self.hierarchy == 0 and not self.controllers


def parse_cgroup(text: str) -> tuple:
    entries = []
    for raw in text.splitlines():
        # hierarchy-ID:controller-list:path; the path itself may contain ':'
        parts = raw.split(":", 2)
        if len(parts) != 3:
            continue
        try:
            hierarchy = int(parts[0])
        except ValueError:
            continue
        controllers = tuple(c for c in parts[1].split(",") if c)
        entries.append(CgroupEntry(hierarchy, controllers, parts[2]))
    return tuple(entries)


def parse_id_map(text: str) -> tuple:
    """uid_map/gid_map: (inside, outside, count) triples."""
    out = []
    for raw in text.splitlines():
        parts = raw.split()
        if len(parts) == 3:
            try:
                out.append(tuple(int(p) for p in parts))
            except ValueError:
                continue
    return tuple(out)


def parse_status(text: str) -> dict:
    fields = {}
    for raw in text.splitlines():
        key, sep, value = raw.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def parse_ns_link(target: str):
    """'pid:[4026531836]' -> 4026531836."""
    # By hand, not with re: the audit's plain path imports no re (its import is ~5 ms).
    kind, sep, number = target.partition(":[")
    if not sep or not kind or kind.strip("abcdefghijklmnopqrstuvwxyz_") or not number.endswith("]"):
        return None
    number = number[:-1]
    return int(number) if number.isdecimal() else None


def parse_os_release(text: str) -> dict:
    out = {}
    for raw in text.splitlines():
        key, sep, value = raw.strip().partition("=")
        if not sep or not key or key.startswith("#"):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key] = value
    return out


def parse_proc_cgroups(text: str) -> dict:
    """/proc/cgroups: controller -> hierarchy id (0 = bound to cgroup v2 or unmounted)."""
    out = {}
    for raw in text.splitlines():
        if raw.startswith("#"):
            continue
        parts = raw.split()
        if len(parts) >= 4:
            try:
                out[parts[0]] = (int(parts[1]), parts[3] == "1")
            except ValueError:
                continue
    return out


def cap_mask(value: str) -> int:
    return int(value, 16) if value else 0


# ---------------------------------------------------------------- reader

class ProcFS:
    """Reads /proc/<pid>/... under a configurable root (psutil style)."""

    def __init__(self, root="/proc"):
        self.root = root

    def path(self, pid, *parts):
        return os.path.join(self.root, str(pid), *parts)

    def _translate(self, pid, path, exc):
        if isinstance(exc, FileNotFoundError) or getattr(exc, "errno", None) == errno.ESRCH:
            if not os.path.exists(os.path.join(self.root, str(pid))):
                raise NoSuchProcess(pid) from None
            raise exc
        if isinstance(exc, PermissionError):
            raise AccessDenied(pid, path) from None
        raise exc

    def read(self, pid, *parts, limit=READ_LIMIT) -> str:
        path = self.path(pid, *parts)
        try:
            with open(path, "rb") as f:
                data = f.read(limit)
        except OSError as exc:
            self._translate(pid, path, exc)
        return data.decode("utf-8", "replace")

    def readlink(self, pid, *parts) -> str:
        path = self.path(pid, *parts)
        try:
            return os.readlink(path)
        except OSError as exc:
            self._translate(pid, path, exc)

    def exists(self, pid) -> bool:
        return os.path.isdir(os.path.join(self.root, str(pid)))

    def status(self, pid) -> dict:
        return parse_status(self.read(pid, "status"))

    def mountinfo(self, pid) -> tuple:
        return parse_mountinfo(self.read(pid, "mountinfo"))

    def cgroup(self, pid) -> tuple:
        return parse_cgroup(self.read(pid, "cgroup"))

    def id_map(self, pid, name) -> tuple:
        return parse_id_map(self.read(pid, name))

    def namespaces(self, pid, denied=None) -> dict:
        """name -> inode; None when the kernel has no such namespace (ENOENT) or refuses the
        link (ptrace access check): the names refused are appended to `denied`, because a
        refused link says nothing about sharing and must not be read as "absent"."""
        out = {}
        for name in NAMESPACES:
            try:
                out[name] = parse_ns_link(self.readlink(pid, "ns", name))
            except FileNotFoundError:
                out[name] = None
            except AccessDenied:
                out[name] = None
                if denied is not None:
                    denied.append(name)
        return out

    def lsm_label(self, pid):
        """Label of the LSM that confines the process, or None when no LSM answers."""
        for parts in (("attr", "apparmor", "current"), ("attr", "current")):
            try:
                label = self.read(pid, *parts, limit=4096).strip("\x00\n ")
            except NoSuchProcess:
                raise
            except OSError:
                # EINVAL: no LSM provides this attribute on this kernel.
                continue
            if label:
                return label
        return None

    def pids(self):
        try:
            names = os.listdir(self.root)
        except OSError:
            return []
        return sorted(int(n) for n in names if n.isdigit())

    def fds(self, pid) -> tuple:
        """(fd, link target, mnt_id, st_mode) for each open file descriptor."""
        base = self.path(pid, "fd")
        try:
            names = os.listdir(base)
        except OSError as exc:
            self._translate(pid, base, exc)
        out = []
        for name in sorted(names, key=lambda n: int(n) if n.isdigit() else -1):
            if not name.isdigit():
                continue
            try:
                target = os.readlink(os.path.join(base, name))
                st = os.stat(os.path.join(base, name))
                info = parse_status(self.read(pid, "fdinfo", name, limit=65536))
            except (PermissionError, AccessDenied):
                # The fd directory listed but its links are refused (ptrace access check):
                # a partial list would read as "no leaked fd".
                raise AccessDenied(pid, os.path.join(base, name)) from None
            except (OSError, ProcError):
                continue   # closed between listdir and readlink
            mnt_id = int(info.get("mnt_id", "-1") or -1)
            out.append((int(name), target, mnt_id, st.st_mode, st.st_rdev))
        return tuple(out)


def read_sysctl(name: str, root="/proc"):
    try:
        with open(os.path.join(root, "sys", *name.split(".")), "rb") as f:
            return f.read(4096).decode("utf-8", "replace").strip()
    except OSError:
        return None
