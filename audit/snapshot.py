"""Every fact an audit uses, collected once into an immutable snapshot.

Checks are pure functions over a Snapshot: nothing is read from /proc after
collection, so a target cannot change between two checks and a check cannot
disagree with another about what it saw. The host's own facts (PID 1, or the
kernel's fixed constants when PID 1 is out of reach) are collected alongside so
that "host" is always judged by this machine, never by a literal.
"""
from __future__ import annotations

import os
import stat
from collections import namedtuple
from types import MappingProxyType

_EMPTY = MappingProxyType({})

from pysandbox_common import procfs
from . import saferead
from pysandbox_common.procfs import INITIAL_NS_INODES, AccessDenied, NoSuchProcess, ProcFS

# One table of capability names for the whole project (include/uapi/linux/capability.h).
from pysandbox_common.capnames import CAPABILITIES as _CAPABILITIES  # noqa: E402

CAP_NAMES = tuple(name.lower() for name in _CAPABILITIES)
CAP = {name: bit for bit, name in enumerate(CAP_NAMES)}


def cap_name(bit: int) -> str:
    return "CAP_" + (CAP_NAMES[bit] if bit < len(CAP_NAMES) else "cap_%d" % bit).upper()


def cap_list(mask: int) -> list:
    return [cap_name(b) for b in range(64) if mask >> b & 1]


# The kernel accepts CAP_SYS_ADMIN in place of these three (bpf_capable(), perfmon_capable(),
# checkpoint_restore_ns_capable()), kept for programs written before they were split off.
SUBSUMED_BY_SYS_ADMIN = (1 << CAP["bpf"]) | (1 << CAP["perfmon"]) | (1 << CAP["checkpoint_restore"])

# The yardstick for "masks missing": what Docker/runc mask by default (one list with the runtime).
from pysandbox_common.containers import OCI_MASKED_PATHS as DEFAULT_MASKED_PATHS  # noqa: E402
from pysandbox_common.containers import OCI_READONLY_PATHS as DEFAULT_READONLY_PATHS  # noqa: E402

# Files whose write gives the writer control over the host kernel or its helpers.
KERNEL_CONTROL_FILES = (
    "/proc/sys/kernel/core_pattern", "/proc/sys/kernel/modprobe", "/sys/kernel/uevent_helper",
    "/proc/sysrq-trigger", "/proc/sys/fs/binfmt_misc/register",
)


class Caps(namedtuple("Caps", "inheritable permitted effective bounding ambient")):
    __slots__ = ()
    # inheritable: int
    # permitted: int
    # effective: int
    # bounding: int
    # ambient: int


class HostFacts(namedtuple("HostFacts", "namespaces reference_pid cap_last_cap caps mounts auditor_mounts sysctls kernel cgroup_v1_controllers auditor_pid auditor_namespaces")):
    __slots__ = ()
    # namespaces: MappingProxyType      # name -> inode the host uses
    # reference_pid: int | None         # host process whose net/mnt namespaces were read
    # cap_last_cap: int
    # caps: int                         # the host's own full set: PID 1's bounding set
    # mounts: tuple                     # host mount table (for mapping a bind mount to its host path)
    # auditor_mounts: tuple             # the auditor's own view (where cgroup files are read)
    # sysctls: MappingProxyType
    # kernel: str
    cgroup_v1_controllers: tuple      # controllers bound to a v1 hierarchy (release_agent exists)
    auditor_pid: int
    auditor_namespaces: MappingProxyType

    @property
    def all_caps(self) -> int:
        return (1 << (self.cap_last_cap + 1)) - 1

    @property
    def auditor_in_host_userns(self) -> bool:
        return self.auditor_namespaces.get("user") == INITIAL_NS_INODES["user"]

    @property
    def auditor_in_host_pidns(self) -> bool:
        return self.auditor_namespaces.get("pid") == INITIAL_NS_INODES["pid"]


class DevNode(namedtuple("DevNode", "path kind major minor")):
    __slots__ = ()
    # path: str
    # kind: str        # "block" or "char"
    # major: int
    # minor: int


class OpenFile(namedtuple("OpenFile", "fd target mnt_id mode rdev")):
    __slots__ = ()
    # fd: int
    # target: str
    # mnt_id: int
    # mode: int
    # rdev: int


class TargetInfo(namedtuple("TargetInfo", "pid runtime container_id name runtime_version oci inspect notes", defaults=(None, None, _EMPTY, None, None, ()))):
    __slots__ = ()
    # pid: int
    # runtime: str                      # docker, podman, containerd, pysandbox, process, self
    # container_id: str | None = None
    # name: str | None = None
    # runtime_version: MappingProxyType (component -> version)
    # oci: MappingProxyType | None = None          # summary of the OCI config.json, when found
    # inspect: MappingProxyType | None = None      # the runtime's own view (docker inspect subset)
    # notes: tuple = ()


class Snapshot(namedtuple("Snapshot", "target host status uids gids caps no_new_privs seccomp_mode seccomp_filters namespaces mounts cgroups uid_map gid_map lsm cwd root_link fds os_release dev_nodes visible_paths host_procfs_mounts runtime_sockets cgroup_limits devices_list probes errors")):
    __slots__ = ()
    # target: TargetInfo
    # host: HostFacts
    # status: MappingProxyType
    # uids: tuple                       # real, effective, saved, fs, as the auditor reads them
    # gids: tuple
    # caps: Caps
    # no_new_privs: bool
    # seccomp_mode: int                 # 0 off, 1 strict, 2 filter
    # seccomp_filters: int
    # namespaces: MappingProxyType
    # mounts: tuple
    # cgroups: tuple
    # uid_map: tuple
    # gid_map: tuple
    # lsm: str | None
    # cwd: str | None
    # root_link: str | None
    # fds: tuple
    # os_release: MappingProxyType
    # dev_nodes: tuple
    # visible_paths: frozenset          # kernel-control and masked paths that exist in the target
    # host_procfs_mounts: tuple         # procfs mounts inside the target that show the host's PIDs
    # runtime_sockets: tuple            # (path in target, host path or None) of runtime API sockets
    # cgroup_limits: MappingProxyType   # controller -> (value, file) or None
    # devices_list: str | None          # v1 devices.list of the target's cgroup
    # probes: MappingProxyType | None   # results of --active proofs, None when passive
    # errors: tuple                     # (fact, message) for facts that could not be read

    # ---------------------------------------------------------- derived views
    def shares_host_ns(self, name):
        """True / False, or None when the host's namespace cannot be known from here."""
        mine, host = self.namespaces.get(name), self.host.namespaces.get(name)
        if mine is None or host is None:
            return None
        return mine == host

    @property
    def in_host_userns(self) -> bool:
        inode = self.namespaces.get("user")
        if inode is not None:
            return inode == INITIAL_NS_INODES["user"]
        # The ns link is unreadable (e.g. PID 1, without ptrace access): uid_map is readable
        # by anyone, and only the initial user namespace maps the whole id range onto itself.
        # Unknown must never count as "not the host": that would downgrade every capability.
        return not self.uid_map or list(self.uid_map) == [(0, 0, 4294967295)]

    @property
    def euid(self) -> int:
        return self.uids[1]

    @property
    def host_euid(self):
        """The effective uid as the host kernel sees it (kuid), via uid_map when needed."""
        if self.host.auditor_in_host_userns:
            return self.uids[1]
        for inside, outside, count in self.uid_map:
            if inside <= self.uids[1] < inside + count:
                return outside + self.uids[1] - inside
        return None

    @property
    def is_host_root(self) -> bool:
        return self.host_euid == 0

    @property
    def attainable_caps(self) -> int:
        """Caps the target holds or regains: root regains the bounding set on execve."""
        caps = self.caps.effective | self.caps.permitted | self.caps.ambient
        if self.euid == 0 or self.uids[0] == 0:
            caps |= self.caps.bounding
        return caps

    @property
    def host_caps(self) -> int:
        """Capabilities that act on the host: only those held in the host's user namespace."""
        return self.attainable_caps if self.in_host_userns else 0

    def has_host_cap(self, name) -> bool:
        return bool(self.host_caps >> CAP[name] & 1)

    def mount_for(self, path):
        """The mount that serves `path` in the target (deepest mountpoint, topmost of a stack)."""
        best = None
        for m in self.mounts:
            mp = m.mountpoint.rstrip("/") or "/"
            if path == mp or path.startswith(mp.rstrip("/") + "/") or mp == "/":
                if best is None or len(mp) >= len(best.mountpoint.rstrip("/") or "/"):
                    best = m
        return best

    def kernel_file(self, path, expected_fstype):
        """(visible, mount, masked, read_only) for a /proc or /sys file inside the target."""
        if path not in self.visible_paths:
            return False, None, False, True
        m = self.mount_for(path)
        if m is None:
            return False, None, False, True
        masked = m.fstype != expected_fstype
        return True, m, masked, m.read_only

    def host_path_of(self, mount):
        """The host path a target's mount shows (bind mounts), or None if not on a host mount."""
        if not self.host.mounts:
            # No view of the host's table (audit from inside): a disk-backed filesystem is the
            # host's (containers get no disks of their own), and its root field is the path
            # within it; virtual filesystems (device major 0) were made for the container.
            return mount.root if mount.major != 0 else None
        return _host_path(self.host.mounts, mount)

    def probe(self, name):
        return None if self.probes is None else self.probes.get(name)


def _host_path(host_mounts, mount):
    """Map (device, root in fs) of a mount onto the host mount of the same filesystem."""
    best = None
    for hm in host_mounts:
        if (hm.major, hm.minor) != (mount.major, mount.minor):
            continue
        if mount.root == hm.root or mount.root.startswith(hm.root.rstrip("/") + "/") or hm.root == "/":
            if best is None or len(hm.root) > len(best.root):
                best = hm
    if best is None:
        return None
    rest = mount.root[len(best.root.rstrip("/")):] if best.root != "/" else mount.root
    return os.path.normpath(best.mountpoint.rstrip("/") + "/" + rest.lstrip("/"))


# ------------------------------------------------------------------ collection

def _caps(status):
    return Caps(*(procfs.cap_mask(status.get(k, "0")) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")))


def _ids(value):
    try:
        return tuple(int(x) for x in value.split())
    except (AttributeError, ValueError):
        return (-1, -1, -1, -1)


_host_cache = {}


def collect_host(proc: ProcFS | None = None) -> HostFacts:
    proc = proc or ProcFS()
    key = proc.root
    if key in _host_cache:
        return _host_cache[key]
    me = os.getpid() if proc.root == "/proc" else "self"
    auditor_ns = proc.namespaces(me)
    namespaces = dict(INITIAL_NS_INODES)
    reference = None
    # net and mnt namespaces have no fixed inode: read them from PID 1, or from kthreadd
    # (PID 2), which the kernel starts in the initial namespaces; both only when we see the
    # host's PID namespace, because otherwise PID 1 and 2 are the container's.
    if auditor_ns.get("pid") == INITIAL_NS_INODES["pid"]:
        for pid in (1, 2):
            try:
                ns = proc.namespaces(pid)
            except procfs.ProcError:
                continue
            if ns.get("net") and ns.get("mnt"):
                namespaces["net"], namespaces["mnt"] = ns["net"], ns["mnt"]
                reference = pid
                break
    try:
        pid1 = proc.status(1)
        host_caps = procfs.cap_mask(pid1.get("CapBnd", "0"))
    except procfs.ProcError:
        host_caps = None
    try:
        cap_last = int(procfs.read_sysctl("kernel.cap_last_cap", proc.root) or 40)
    except ValueError:
        cap_last = 40
    if host_caps is None or auditor_ns.get("user") != INITIAL_NS_INODES["user"]:
        host_caps = (1 << (cap_last + 1)) - 1
    host_caps &= (1 << (cap_last + 1)) - 1
    host_mounts = ()
    # Only a process in the host's namespaces shows the host's mount table. From inside a
    # container (no reference), our own table would map every mount onto itself and call a
    # fresh tmpfs root "the host's /": the host's table is then unknown.
    candidates = (reference,) if reference is not None else \
        ((me,) if auditor_ns.get("pid") == INITIAL_NS_INODES["pid"] else ())
    for pid in candidates:
        try:
            host_mounts = proc.mountinfo(pid)
            break
        except procfs.ProcError:
            continue
    try:
        auditor_mounts = proc.mountinfo(me)
    except procfs.ProcError:
        auditor_mounts = host_mounts
    sysctls = {}
    for name in ("kernel.kptr_restrict", "kernel.dmesg_restrict", "user.max_user_namespaces",
                 "kernel.unprivileged_bpf_disabled", "kernel.perf_event_paranoid",
                 "kernel.unprivileged_userns_clone", "kernel.apparmor_restrict_unprivileged_userns"):
        value = procfs.read_sysctl(name, proc.root)
        if value is not None:
            sysctls[name] = value
    try:
        with open(os.path.join(proc.root, "sys/kernel/osrelease")) as f:
            kernel = f.read(256).strip()
    except OSError:
        kernel = os.uname().release
    try:
        with open(os.path.join(proc.root, "cgroups")) as f:
            controllers = procfs.parse_proc_cgroups(f.read(65536))
    except OSError:
        controllers = {}
    v1 = tuple(sorted(c for c, (hier, _enabled) in controllers.items() if hier != 0))
    facts = HostFacts(
        namespaces=MappingProxyType(namespaces), reference_pid=reference, cap_last_cap=cap_last,
        caps=host_caps, mounts=host_mounts, auditor_mounts=auditor_mounts,
        sysctls=MappingProxyType(sysctls), kernel=kernel, cgroup_v1_controllers=v1,
        auditor_pid=os.getpid(), auditor_namespaces=MappingProxyType(auditor_ns))
    _host_cache[key] = facts
    return facts


def _cgroup_dir(entry, auditor_mounts, controller):
    """Directory of `entry` in the auditor's cgroup mounts, or None."""
    for m in auditor_mounts:
        if entry.is_v2:
            if m.fstype != "cgroup2":
                continue
        elif m.fstype != "cgroup" or controller not in m.super_options:
            continue
        path = entry.path
        # A mount shows the hierarchy from its root; the cgroup path is relative to the
        # reader's cgroup namespace, which for a private mount is that same root.
        if m.root != "/" and path.startswith(m.root):
            path = path[len(m.root):]
        return m.mountpoint, os.path.join(m.mountpoint, path.lstrip("/"))
    return None


_LIMIT_FILES = {
    "memory": (("memory.limit_in_bytes",), ("memory.max",)),
    "pids": (("pids.max",), ("pids.max",)),
    "cpu": (("cpu.cfs_quota_us",), ("cpu.max",)),
}


def _unlimited(controller, value):
    if controller == "memory":
        if value == "max":
            return True
        try:
            # v1 reports "no limit" as PAGE_COUNTER_MAX rounded to pages, near 2**63.
            return int(value) >= 1 << 62
        except ValueError:
            return True
    if controller == "pids":
        return value == "max"
    if controller == "cpu":
        return value.split()[0] in ("-1", "max")
    return True


def _read_small(path):
    try:
        with open(path, "rb") as f:
            return f.read(4096).decode("ascii", "replace").strip()
    except OSError:
        return None


def _limits(cgroups, auditor_mounts):
    """A limit on the target's cgroup or any ancestor below the mount root bounds it."""
    limits, devices_list = {}, None
    for controller in ("memory", "pids", "cpu", "devices"):
        entry = next((e for e in cgroups if controller in e.controllers), None)
        v2 = entry is None
        if v2:
            entry = next((e for e in cgroups if e.is_v2), None)
        located = _cgroup_dir(entry, auditor_mounts, controller) if entry else None
        if controller == "devices":
            if located and not v2:
                devices_list = _read_small(os.path.join(located[1], "devices.list"))
            continue
        found = None
        if located:
            top, directory = located
            names = _LIMIT_FILES[controller][1 if v2 else 0]
            while True:
                for name in names:
                    value = _read_small(os.path.join(directory, name))
                    if value is not None and not _unlimited(controller, value):
                        found = (value, os.path.join(directory, name))
                        break
                if found or os.path.normpath(directory) == os.path.normpath(top):
                    break
                directory = os.path.dirname(directory)
        limits[controller] = found
    return MappingProxyType(limits), devices_list


def _dev_nodes(rootfd, mounts):
    dirs = ["/dev"] + [m.mountpoint for m in mounts if m.fstype == "devtmpfs" and m.mountpoint != "/dev"]
    nodes = []
    for d in dirs:
        try:
            names = saferead.listdir_in_root(rootfd, d)
        except OSError:
            continue
        for name in sorted(names)[:4096]:
            path = d.rstrip("/") + "/" + name
            try:
                st = saferead.lstat_in_root(rootfd, path)
            except OSError:
                continue
            if stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode):
                nodes.append(DevNode(path, "block" if stat.S_ISBLK(st.st_mode) else "char",
                                     os.major(st.st_rdev), os.minor(st.st_rdev)))
    return tuple(nodes)


def _host_procfs(rootfd, mounts, host, namespaces):
    """procfs mounts whose PID view is the host's: readlink of their `self` names our own PID.

    A procfs instance answers `self` only for a reader inside its PID namespace, so a
    target-owned /proc gives ENOENT to an auditor in the host PID namespace.
    """
    if not host.auditor_in_host_pidns or namespaces.get("pid") == INITIAL_NS_INODES["pid"]:
        return ()
    found = []
    for m in mounts:
        if m.fstype != "proc":
            continue
        try:
            link = saferead.readlink_in_root(rootfd, m.mountpoint.rstrip("/") + "/self")
        except OSError:
            continue
        if link == str(host.auditor_pid):
            found.append(m.mountpoint)
    return tuple(found)


from pysandbox_common.containers import RUNTIME_SOCKET_NAMES, RUNTIME_SOCKET_PATHS as WELL_KNOWN_SOCKETS  # noqa: E402


def _runtime_sockets(rootfd, mounts, host_path_of):
    """Runtime API sockets inside the target: at bind-mount points, at well-known paths, and
    inside bind mounts of the host's /run or /var/run."""
    candidates = {}
    for m in mounts:
        host = host_path_of(m)
        if os.path.basename(m.root) in RUNTIME_SOCKET_NAMES or os.path.basename(m.mountpoint) in RUNTIME_SOCKET_NAMES:
            candidates[m.mountpoint] = host
        if host in ("/run", "/var/run", "/run/containerd", "/run/podman", "/var/run/crio", "/run/crio"):
            for name in RUNTIME_SOCKET_NAMES:
                candidates.setdefault(m.mountpoint.rstrip("/") + "/" + name, os.path.join(host, name))
    for path in WELL_KNOWN_SOCKETS:
        candidates.setdefault(path, None)
    found = []
    for path, host in candidates.items():
        try:
            st = saferead.lstat_in_root(rootfd, path)
        except OSError:
            continue
        if stat.S_ISSOCK(st.st_mode):
            found.append((path, host))
    return tuple(found)


def collect(target: TargetInfo, proc: ProcFS | None = None, probes=None) -> Snapshot:
    """Read everything about target.pid once. Raises NoSuchProcess if it is gone."""
    proc = proc or ProcFS()
    host = collect_host(proc)
    pid = target.pid
    errors = []
    status = proc.status(pid)
    namespaces = proc.namespaces(pid)

    def optional(fact, fn, default):
        try:
            return fn()
        except NoSuchProcess:
            raise
        except (AccessDenied, OSError) as exc:
            errors.append((fact, str(exc)))
            return default

    mounts = optional("mountinfo", lambda: proc.mountinfo(pid), ())
    cgroups = optional("cgroup", lambda: proc.cgroup(pid), ())
    uid_map = optional("uid_map", lambda: proc.id_map(pid, "uid_map"), ())
    gid_map = optional("gid_map", lambda: proc.id_map(pid, "gid_map"), ())
    lsm = optional("attr/current", lambda: proc.lsm_label(pid), None)
    cwd = optional("cwd", lambda: proc.readlink(pid, "cwd"), None)
    root_link = optional("root", lambda: proc.readlink(pid, "root"), None)
    fds = tuple(OpenFile(*f) for f in optional("fd", lambda: proc.fds(pid), ()))
    limits, devices_list = _limits(cgroups, host.auditor_mounts)

    os_release, dev_nodes, visible, host_procfs, sockets = {}, (), set(), (), ()
    try:
        rootfd = saferead.open_root(pid, proc.root)
    except FileNotFoundError:
        if not proc.exists(pid):
            raise NoSuchProcess(pid) from None
        rootfd = None
        errors.append(("root", "root directory not reachable"))
    except OSError as exc:
        rootfd = None
        errors.append(("root", str(exc)))
    if rootfd is not None:
        try:
            for path in ("/etc/os-release", "/usr/lib/os-release"):
                try:
                    os_release = procfs.parse_os_release(
                        saferead.read_in_root(rootfd, path, 16384).decode("utf-8", "replace"))
                    break
                except OSError:
                    continue
            dev_nodes = _dev_nodes(rootfd, mounts)
            for path in KERNEL_CONTROL_FILES + DEFAULT_MASKED_PATHS + DEFAULT_READONLY_PATHS:
                try:
                    saferead.lstat_in_root(rootfd, path)
                    visible.add(path)
                except OSError:
                    pass
            host_procfs = _host_procfs(rootfd, mounts, host, namespaces)
            sockets = _runtime_sockets(rootfd, mounts, lambda m: _host_path(host.mounts, m))
        finally:
            os.close(rootfd)
    if not proc.exists(pid):
        raise NoSuchProcess(pid, "exited during the audit")

    return Snapshot(
        target=target, host=host, status=MappingProxyType(status),
        uids=_ids(status.get("Uid")), gids=_ids(status.get("Gid")), caps=_caps(status),
        no_new_privs=status.get("NoNewPrivs", "0") == "1",
        seccomp_mode=int(status.get("Seccomp", "0") or 0),
        seccomp_filters=int(status.get("Seccomp_filters", "0") or 0),
        namespaces=MappingProxyType(namespaces), mounts=mounts, cgroups=cgroups,
        uid_map=uid_map, gid_map=gid_map, lsm=lsm, cwd=cwd, root_link=root_link, fds=fds,
        os_release=MappingProxyType(os_release), dev_nodes=dev_nodes,
        visible_paths=frozenset(visible), host_procfs_mounts=host_procfs, runtime_sockets=sockets,
        cgroup_limits=limits, devices_list=devices_list,
        probes=MappingProxyType(probes) if probes is not None else None,
        errors=tuple(errors))
