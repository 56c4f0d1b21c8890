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
import time
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

# Kernel filesystems: every mount of one of these in the target is judged wherever it is
# mounted (a host /proc/sys bound at /mnt/x is the same sysctl tree as /proc/sys).
KERNEL_FSTYPES = ("proc", "sysfs", "cgroup", "cgroup2", "debugfs", "securityfs", "tracefs", "bpf")

# How long the scan of the target's /dev tree may take: bounded by time, never by a count of
# entries (a node sorted after N others must still be seen). Past it the scan is incomplete
# and a check that found nothing says unknown.
DEV_SCAN_BUDGET = 0.25
DEV_SCAN_DEPTH = 8
# Stat calls for kernel-file locations: a hostile target with thousands of proc mounts
# must not make the audit slow; past this many the remaining locations are unknown.
MAX_KERNEL_LOCATIONS = 512


def fs_relative(path):
    """'/proc/sys/kernel/core_pattern' -> ('proc', '/sys/kernel/core_pattern')."""
    for prefix, fstype in (("/proc", "proc"), ("/sys", "sysfs")):
        if path == prefix or path.startswith(prefix + "/"):
            return fstype, path[len(prefix):] or "/"
    return None, path


def visible_mounts(mounts):
    """The mounts a path walk can reach. mountinfo lists hidden mounts too, so judging "the
    mount that serves /proc/sys" needs this. A mount is hidden when another is stacked on
    it (same mountpoint, its parent is this one), when a mount on a directory above it is
    not one of its ancestors (mounted later over the place it lives in), or when its parent
    is hidden by something other than itself. Linear in the table for stacks and deep
    trees: a hostile target with thousands of mounts must not make the audit slow."""
    by_id = {m.mount_id: m for m in mounts}
    at = {}
    stacked_on = {}            # mount id -> id of the mount stacked on it at the same point
    for m in mounts:
        at.setdefault(m.mountpoint, []).append(m)
        parent = by_id.get(m.parent_id)
        if parent is not None and parent is not m and parent.mountpoint == m.mountpoint:
            stacked_on[parent.mount_id] = m.mount_id
    limit = len(by_id)

    def is_ancestor(candidate, m):
        cur, steps = by_id.get(m.parent_id), 0
        while cur is not None and steps <= limit:
            if cur is candidate:
                return True
            if len(cur.mountpoint) < len(candidate.mountpoint):
                return False     # ancestors' mountpoints only get shorter
            nxt = by_id.get(cur.parent_id)
            if nxt is cur:
                return False
            cur, steps = nxt, steps + 1
        return False

    hidden = {}                # mount id -> id of the mount that hides it
    for m in sorted(mounts, key=lambda m: 0 if m.mountpoint == "/" else m.mountpoint.count("/")):
        if m.parent_id in hidden and hidden[m.parent_id] != m.mount_id:
            hidden[m.mount_id] = hidden[m.parent_id]
            continue
        if m.mount_id in stacked_on:
            hidden[m.mount_id] = stacked_on[m.mount_id]
            continue
        point = m.mountpoint
        while point != "/":
            point = point.rsplit("/", 1)[0] or "/"
            for other in at.get(point, ()):
                if other.mount_id != m.mount_id and other.mount_id not in hidden and not is_ancestor(other, m):
                    hidden[m.mount_id] = other.mount_id
                    break
            if m.mount_id in hidden:
                break
    return tuple(m for m in mounts if m.mount_id not in hidden)


def mount_serving(mounts, path):
    """The mount that serves `path` (deepest mountpoint, topmost of a stack) among `mounts`."""
    best, best_len = None, -1
    for m in mounts:
        mp = m.mountpoint.rstrip("/") or "/"
        if mp == "/" or path == mp or path.startswith(mp + "/"):
            n = 0 if mp == "/" else len(mp)
            if n >= best_len:
                best, best_len = m, n
    return best


def _fs_path_in(m, location):
    """The path inside m's filesystem that `location` (under m's mountpoint) shows."""
    mp = m.mountpoint.rstrip("/")
    rest = location[len(mp):] if mp else location
    return os.path.normpath((m.root.rstrip("/") + "/" + rest.lstrip("/")))


def kernel_locations(mounts, path):
    """Every place in the target where the kernel file `path` (/proc/... or /sys/...) shows:
    for each proc/sysfs mount whose root contains it, mountpoint + the rest of the path."""
    fstype, rel = fs_relative(path)
    out = []
    for m in mounts:
        if m.fstype != fstype:
            continue
        root = m.root.rstrip("/")
        if rel == m.root or rel.startswith(root + "/") or m.root == "/":
            rest = rel[len(root):] if m.root != "/" else rel
            loc = os.path.normpath(m.mountpoint.rstrip("/") + "/" + rest.lstrip("/"))
            if loc not in out:
                out.append(loc)
    if path not in out:
        out.insert(0, path)
    return out


class KernelView(namedtuple("KernelView", "location mount state exists")):
    """One place a kernel file shows in the target.
    state: "rw" (served by that kernel fs, read-write), "ro", "masked" (something else is
    mounted over it), "absent" (no mount of the kernel fs serves it).
    exists: True, False, or None (could not be stat'ed: why is in Snapshot.path_errors)."""
    __slots__ = ()


class Caps(namedtuple("Caps", "inheritable permitted effective bounding ambient")):
    __slots__ = ()
    # inheritable: int
    # permitted: int
    # effective: int
    # bounding: int
    # ambient: int


class HostFacts(namedtuple("HostFacts", "namespaces reference_pid cap_last_cap caps mounts auditor_mounts sysctls kernel cgroup_v1_controllers auditor_pid auditor_namespaces auditor_euid auditor_caps block_devices mem_devices modules kernel_files cgroup_v1_mountable")):
    __slots__ = ()
    # namespaces: MappingProxyType      # name -> inode the host uses
    # reference_pid: int | None         # host process whose net/mnt namespaces were read
    # cap_last_cap: int
    # caps: int                         # the host's own full set: PID 1's bounding set
    # mounts: tuple                     # host mount table (for mapping a bind mount to its host path)
    # auditor_mounts: tuple             # the auditor's own view (where cgroup files are read)
    # sysctls: MappingProxyType
    # kernel: str
    # cgroup_v1_controllers: tuple      # controllers bound to a v1 hierarchy (release_agent exists)
    # auditor_pid: int
    # auditor_namespaces: MappingProxyType
    # auditor_euid: int
    # auditor_caps: int                 # the auditor's permitted set (ptrace access compares it)
    # block_devices: frozenset | None   # (major, minor) of every block device of this kernel
    # mem_devices: MappingProxyType     # (major, minor) -> name of mem, kmem, port
    # modules: tuple                    # (True/False/None, evidence): can this kernel load modules?
    # kernel_files: frozenset           # kernel control, masked and read-only paths this kernel has
    # cgroup_v1_mountable: bool | None  # can a (named) v1 hierarchy be mounted: "cgroup" registered

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


class TargetInfo(namedtuple("TargetInfo", "pid runtime container_id name runtime_version oci inspect notes "
                                          "image labels identity",
                             defaults=(None, None, _EMPTY, None, None, (), None, _EMPTY, None))):
    """What the auditor knows about a target (made by audit.targets)."""
    __slots__ = ()
    # pid: int                          # the process audited
    # runtime: str                      # docker, podman, containerd, runc, crun, lxc, systemd-nspawn,
    #                                   # firejail, pysandbox, kubernetes, process, host, self
    # container_id: str | None
    # name: str | None
    # runtime_version: MappingProxyType (component -> version)
    # oci: MappingProxyType | None      # summary of the OCI config.json, when found
    # inspect: MappingProxyType | None  # the runtime's own view (docker inspect subset)
    # notes: tuple
    # image: str | None
    # labels: MappingProxyType          # container labels / Kubernetes labels
    # identity: str | None              # runtime/name-or-id: stable across runs (SARIF, fingerprints)


class Snapshot(namedtuple("Snapshot", "target host status uids gids caps no_new_privs seccomp_mode seccomp_filters namespaces mounts cgroups uid_map gid_map lsm cwd root_link fds os_release dev_nodes visible_paths host_procfs_mounts runtime_sockets cgroup_limits devices_list probes errors reachable_mounts path_errors dev_scan_incomplete access_hint")):
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
    # namespaces: MappingProxyType      # name -> inode; None when the link could not be read
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
    # visible_paths: frozenset          # kernel-file locations (and masked paths) that exist in the target
    # host_procfs_mounts: tuple         # procfs mounts inside the target that show the host's PIDs
    # runtime_sockets: tuple            # (path in target, host path or None) of runtime API sockets
    # cgroup_limits: MappingProxyType   # controller -> (value, file) or None
    # devices_list: str | None          # v1 devices.list of the target's cgroup
    # probes: MappingProxyType | None   # results of --active proofs, None when passive
    # errors: tuple                     # (fact, message) for facts that could not be read
    # reachable_mounts: tuple           # mounts a path walk reaches (hidden ones left out)
    # path_errors: MappingProxyType     # location -> why it could not be stat'ed (not ENOENT)
    # dev_scan_incomplete: str | None   # why the /dev scan did not see every entry
    # access_hint: str                  # what would let the auditor read what it could not

    # ---------------------------------------------------------- what could not be read
    def unreadable(self, *facts):
        """Why the first of `facts` that could not be read was not, with what would help; or None."""
        for fact in facts:
            for name, message in self.errors:
                if name == fact:
                    return "%s could not be read (%s): %s" % (fact, message, self.access_hint)
        return None

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
        """Caps the target holds or can get by execve (execve_attainable: the kernel's rules)."""
        return execve_attainable(self.uids, self.caps, self.no_new_privs)[0]

    @property
    def host_caps(self) -> int:
        """Capabilities that act on the host: only those held in the host's user namespace."""
        return self.attainable_caps if self.in_host_userns else 0

    def has_host_cap(self, name) -> bool:
        return bool(self.host_caps >> CAP[name] & 1)

    def mount_for(self, path):
        """The mount that serves `path` in the target (deepest reachable mountpoint, topmost of a stack)."""
        return mount_serving(self.reachable_mounts, path)

    def kernel_views(self, path):
        """Every place the kernel file `path` shows in the target (KernelView each): the standard
        path and wherever a proc/sysfs mount whose root contains it is mounted."""
        fstype, rel = fs_relative(path)
        views = []
        for loc in kernel_locations(self.reachable_mounts, path):
            m = self.mount_for(loc)
            if loc in self.path_errors:
                exists = None
            elif loc in self.visible_paths:
                exists = True
            elif self.unreadable("root"):
                # The root could not be opened: the file exists when the kernel has it and a
                # mount of its filesystem serves the location (mountinfo is readable by anyone).
                exists = path in self.host.kernel_files
            else:
                exists = False
            if m is None or m.fstype != fstype:
                # Something else serves the location: a mask when a mount of the kernel
                # filesystem lies under it (/dev/null bound over /proc/kcore), else absent.
                under_kernel_fs = any(k.fstype == fstype and (loc == k.mountpoint or loc.startswith(
                    k.mountpoint.rstrip("/") + "/")) for k in self.reachable_mounts)
                state = "masked" if m is not None and under_kernel_fs else "absent"
            elif _fs_path_in(m, loc) != os.path.normpath(rel):
                state = "masked"     # the location shows another file of the filesystem
            else:
                state = "ro" if m.read_only else "rw"
            views.append(KernelView(loc, m, state, exists))
        return views

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


def execve_attainable(uids, caps, no_new_privs):
    """(mask, reason): the capabilities a process holds or can reach through execve.

    The kernel's rules (security/commoncap.c, cap_bprm_creds_from_file; capabilities(7)):
      P'(permitted) = (P(inheritable) & F(inheritable)) | (F(permitted) & P(bounding)) | P'(ambient)
    where F is the executed file's capability set. For a uid 0 process (real or effective,
    securebits not set) every file counts as F = all, so root gets inheritable | bounding.
    A non-root process gains bounding bits only through a setuid-root or file-capability
    binary; which binaries exist is unknown to a passive audit, so they are not counted
    (nnp-off reports that gap). no_new_privs caps the result at the current permitted set
    (the kernel intersects new permitted with old: "execve cannot grant more than it
    permits"), so file capabilities and uid 0 no longer matter. Effective and ambient are
    always subsets of permitted, counted in case a reader sees them alone.
    """
    held = caps.permitted | caps.effective | caps.ambient
    root = uids[0] == 0 or uids[1] == 0
    if no_new_privs:
        return held, "no_new_privs: execve cannot add to the permitted set"
    if root:
        return held | caps.bounding | caps.inheritable, "uid 0 without no_new_privs: execve refills permitted from the bounding set"
    return held, "not uid 0: execve keeps permitted and ambient (file capabilities and setuid binaries: see nnp-off)"


_by_device = {}


def _host_path(host_mounts, mount):
    """Map (device, root in fs) of a mount onto the host mount of the same filesystem."""
    index = _by_device.get(id(host_mounts))
    if index is None or index[0] is not host_mounts:
        # one index per host table (the table lives as long as its cached HostFacts)
        table = {}
        for hm in host_mounts:
            table.setdefault((hm.major, hm.minor), []).append(hm)
        index = _by_device[id(host_mounts)] = (host_mounts, table)
    best = None
    for hm in index[1].get((mount.major, mount.minor), ()):
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


def _kernel_has(path, proc_root):
    """Does this kernel have the /proc or /sys file (as the auditor sees its own)?"""
    fstype, rel = fs_relative(path)
    base = proc_root if fstype == "proc" else "/sys"
    return os.path.lexists(base + rel)


def _host_block_devices(proc_root):
    """(major, minor) of every block device the kernel has: /sys/dev/block names them all
    (disks, partitions, loop, dm); /proc/partitions when sysfs is not mounted here."""
    try:
        names = os.listdir("/sys/dev/block")
    except OSError:
        names = None
    devices = set()
    if names is not None:
        for name in names:
            major, _, minor = name.partition(":")
            if major.isdigit() and minor.isdigit():
                devices.add((int(major), int(minor)))
        return frozenset(devices)
    try:
        with open(os.path.join(proc_root, "partitions")) as f:
            for line in f.read(1 << 20).splitlines()[1:]:
                parts = line.split()
                if len(parts) == 4 and parts[0].isdigit() and parts[1].isdigit():
                    devices.add((int(parts[0]), int(parts[1])))
    except OSError:
        return None
    return frozenset(devices)


# Minors of the mem driver that reach physical memory or I/O ports (drivers/char/mem.c).
_MEM_MINORS = {1: "/dev/mem", 2: "/dev/kmem", 4: "/dev/port"}


def _host_mem_devices(proc_root):
    """(major, minor) -> name of the memory devices, the mem major read from /proc/devices."""
    major = 1
    try:
        with open(os.path.join(proc_root, "devices")) as f:
            char = False
            for line in f.read(65536).splitlines():
                if line.startswith("Character devices"):
                    char = True
                elif line.startswith("Block devices"):
                    char = False
                elif char:
                    parts = line.split()
                    if len(parts) == 2 and parts[1] == "mem" and parts[0].isdigit():
                        major = int(parts[0])
    except OSError:
        pass
    return MappingProxyType({(major, minor): name for minor, name in _MEM_MINORS.items()})


def _cgroup_v1_mountable(proc_root):
    """A v1 hierarchy (a named one needs no free controller) can be mounted when the kernel
    registers the "cgroup" filesystem and the command line does not forbid named ones."""
    try:
        with open(os.path.join(proc_root, "filesystems")) as f:
            registered = any(line.split()[-1:] == ["cgroup"] for line in f.read(65536).splitlines())
    except OSError:
        return None
    if not registered:
        return False
    try:
        with open(os.path.join(proc_root, "cmdline")) as f:
            cmdline = f.read(65536).split()
    except OSError:
        return None
    for arg in cmdline:
        if arg.startswith("cgroup_no_v1=") and "named" in arg.split("=", 1)[1].split(","):
            return False
    return True


def _modules_loadable(proc_root):
    """(True/False/None, evidence): can this kernel load a module at all?
    CONFIG_MODULES=n removes /proc/modules and kernel.modules_disabled; modules_disabled=1
    is a one-way switch that refuses every later load."""
    if not os.path.exists(os.path.join(proc_root, "modules")):
        return False, "/proc/modules absent: this kernel has no module support (CONFIG_MODULES=n)"
    disabled = procfs.read_sysctl("kernel.modules_disabled", proc_root)
    if disabled == "1":
        return False, "kernel.modules_disabled = 1: module loading is switched off until reboot"
    if disabled == "0":
        return True, "/proc/modules present, kernel.modules_disabled = 0"
    return None, "kernel.modules_disabled could not be read"


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
    try:
        auditor_mounts = proc.mountinfo(me)
    except procfs.ProcError:
        auditor_mounts = None
    if auditor_mounts is not None and reference is not None and auditor_ns.get("mnt") == namespaces.get("mnt"):
        # The auditor is in the host's mount namespace: its table is the host's (read once).
        candidates = ()
        host_mounts = auditor_mounts
    for pid in candidates:
        try:
            host_mounts = proc.mountinfo(pid)
            break
        except procfs.ProcError:
            continue
    if auditor_mounts is None:
        auditor_mounts = host_mounts
    sysctls = {}
    for name in ("kernel.kptr_restrict", "kernel.dmesg_restrict", "user.max_user_namespaces", "kernel.yama.ptrace_scope",
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
    try:
        auditor_caps = procfs.cap_mask(proc.status(me).get("CapPrm", "0"))
    except procfs.ProcError:
        auditor_caps = 0
    facts = HostFacts(
        namespaces=MappingProxyType(namespaces), reference_pid=reference, cap_last_cap=cap_last,
        caps=host_caps, mounts=host_mounts, auditor_mounts=auditor_mounts,
        sysctls=MappingProxyType(sysctls), kernel=kernel, cgroup_v1_controllers=v1,
        auditor_pid=os.getpid(), auditor_namespaces=MappingProxyType(auditor_ns),
        auditor_euid=os.geteuid(), auditor_caps=auditor_caps,
        block_devices=_host_block_devices(proc.root), mem_devices=_host_mem_devices(proc.root),
        modules=_modules_loadable(proc.root),
        cgroup_v1_mountable=_cgroup_v1_mountable(proc.root),
        kernel_files=frozenset(p for p in KERNEL_CONTROL_FILES + DEFAULT_MASKED_PATHS + DEFAULT_READONLY_PATHS
                               if _kernel_has(p, proc.root)))
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


def _read_small(path, denied=None):
    """Contents of a small file, or None. A refusal (EACCES/EPERM) is appended to `denied`:
    an unreadable limit file is not an absent limit."""
    try:
        with open(path, "rb") as f:
            return f.read(4096).decode("ascii", "replace").strip()
    except PermissionError as exc:
        if denied is not None:
            denied.append("%s: %s" % (path, exc.strerror))
        return None
    except OSError:
        return None


def _limits(cgroups, auditor_mounts, errors):
    """A limit on the target's cgroup or any ancestor below the mount root bounds it."""
    limits, devices_list = {}, None
    for controller in ("memory", "pids", "cpu", "devices"):
        entry = next((e for e in cgroups if controller in e.controllers), None)
        v2 = entry is None
        if v2:
            entry = next((e for e in cgroups if e.is_v2), None)
        located = _cgroup_dir(entry, auditor_mounts, controller) if entry else None
        denied = []
        if controller == "devices":
            if located and not v2:
                devices_list = _read_small(os.path.join(located[1], "devices.list"), denied)
                if devices_list is None and not denied and not os.path.isdir(located[1]):
                    denied.append("%s: not visible in the auditor's cgroup mounts" % located[1])
            if denied:
                errors.append(("cgroup:devices", "; ".join(denied)))
            continue
        found = None
        if located:
            top, directory = located
            if not os.path.isdir(directory):
                # The auditor's cgroup mount does not show the target's cgroup (another
                # cgroup namespace or a private mount): no limit can be read, not "no limit".
                denied.append("%s: not visible in the auditor's cgroup mounts" % directory)
            names = _LIMIT_FILES[controller][1 if v2 else 0]
            while not denied:
                for name in names:
                    value = _read_small(os.path.join(directory, name), denied)
                    if value is not None and not _unlimited(controller, value):
                        found = (value, os.path.join(directory, name))
                        break
                if found or os.path.normpath(directory) == os.path.normpath(top):
                    break
                directory = os.path.dirname(directory)
        elif entry is not None:
            denied.append("no cgroup mount of the auditor shows the target's %s hierarchy" % controller)
        if denied and found is None:
            errors.append(("cgroup:" + controller, "; ".join(denied)))
        limits[controller] = found
    return MappingProxyType(limits), devices_list


def _dev_nodes(rootfd, mounts, budget=DEV_SCAN_BUDGET):
    """Every block and character node under the target's /dev (and other devtmpfs mounts),
    walked with O_NOFOLLOW from directory fds inside the target's root. Bounded by time, not
    count: returns (nodes, None) or (nodes, why the scan is incomplete)."""
    deadline = time.monotonic() + budget
    dirs = ["/dev"] + [m.mountpoint for m in mounts if m.fstype == "devtmpfs" and m.mountpoint != "/dev"
                       and not m.mountpoint.startswith("/dev/")]
    nodes, incomplete, seen = [], [], 0
    mountpoints = {m.mountpoint for m in mounts}
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    for top in dict.fromkeys(dirs):
        if any(text.startswith("scan stopped") for text in incomplete):
            incomplete.append("%s: not scanned (out of time)" % top)
            continue
        try:
            fd = saferead.open_in_root(rootfd, top, os.O_RDONLY | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            continue     # no /dev, or a devtmpfs file (/dev/null bound over a masked path)
        except OSError as exc:
            incomplete.append("%s: %s" % (top, exc.strerror))
            continue
        stack = [(fd, top.rstrip("/"), 0)]
        while stack:
            dfd, dpath, depth = stack.pop()
            try:
                with os.scandir(dfd) as entries:
                    for entry in entries:
                        seen += 1
                        if not seen & 255 and time.monotonic() > deadline:
                            raise TimeoutError
                        # d_type answers dir/file/symlink without a syscall; only the rest
                        # (devices, fifos, sockets, unknown d_type) needs fstatat. A mount
                        # point's d_type is the covered entry's (a node bound over an empty
                        # file reads as a file), so mount points are always stat'ed.
                        try:
                            covered = (dpath + "/" + entry.name) in mountpoints
                            if not covered and (entry.is_symlink() or entry.is_file(follow_symlinks=False)):
                                continue
                            if covered:
                                st = entry.stat(follow_symlinks=False)
                                is_dir = stat.S_ISDIR(st.st_mode)
                            else:
                                is_dir = entry.is_dir(follow_symlinks=False)
                            if is_dir:
                                if depth + 1 >= DEV_SCAN_DEPTH:
                                    incomplete.append("%s/%s: deeper than %d levels" % (dpath, entry.name, DEV_SCAN_DEPTH))
                                    continue
                                sub = os.open(entry.name, flags, dir_fd=dfd)
                                stack.append((sub, dpath + "/" + entry.name, depth + 1))
                                continue
                            if not covered:
                                st = entry.stat(follow_symlinks=False)
                        except PermissionError as exc:
                            incomplete.append("%s/%s: %s" % (dpath, entry.name, exc.strerror))
                            continue
                        except OSError:
                            continue     # vanished meanwhile
                        if stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode):
                            nodes.append(DevNode(dpath + "/" + entry.name,
                                                 "block" if stat.S_ISBLK(st.st_mode) else "char",
                                                 os.major(st.st_rdev), os.minor(st.st_rdev)))
            except TimeoutError:
                incomplete.append("scan stopped after %d entries (%.0f ms budget)" % (seen, budget * 1000))
                for other, _p, _d in stack:
                    os.close(other)
                stack = []
            except PermissionError as exc:
                incomplete.append("%s: %s" % (dpath, exc.strerror))
            finally:
                os.close(dfd)
    return tuple(nodes), ("; ".join(incomplete[:4]) if incomplete else None)


def _host_procfs(rootfd, mounts, host, namespaces, denied):
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
        except PermissionError as exc:
            denied.append("%s/self: %s" % (m.mountpoint.rstrip("/"), exc.strerror))
            continue
        except OSError:
            continue
        if link == str(host.auditor_pid):
            found.append(m.mountpoint)
    return tuple(found)


from pysandbox_common.containers import RUNTIME_SOCKET_NAMES, RUNTIME_SOCKET_PATHS as WELL_KNOWN_SOCKETS  # noqa: E402


def _runtime_sockets(rootfd, mounts, host_path_of, denied):
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
    for path, result in saferead.lstat_many_in_root(rootfd, list(candidates)).items():
        if isinstance(result, PermissionError):
            denied.append("%s: %s" % (path, result.strerror))
            continue
        if isinstance(result, OSError):
            continue
        st, host = result, candidates[path]
        if stat.S_ISSOCK(st.st_mode):
            found.append((path, host))
    return tuple(found)


def _access_hint(host, status):
    """What would let the auditor read what the kernel refused it."""
    if host.auditor_euid != 0:
        return "run the audit as root"
    extra = procfs.cap_mask(status.get("CapPrm", "0")) & ~host.auditor_caps
    if extra:
        # ptrace_may_access(): a target whose permitted set is not a subset of the reader's
        # is refused even to root unless the reader holds CAP_SYS_PTRACE over it.
        return ("the target holds %s, which the auditor lacks (the kernel's ptrace access check refuses "
                "even root): audit from a process that holds them" % ", ".join(cap_list(extra)))
    return "run the audit as root from the host's namespaces"


def collect(target: TargetInfo, proc: ProcFS | None = None, probes=None) -> Snapshot:
    """Read everything about target.pid once. Raises NoSuchProcess if it is gone.

    Every read that the kernel refuses (EACCES/EPERM) or that cannot be made lands in
    `errors` under the name of its fact; checks turn those into `unknown`, never into pass.
    """
    proc = proc or ProcFS()
    host = collect_host(proc)
    pid = target.pid
    errors = []
    status = proc.status(pid)
    denied_ns = []
    namespaces = proc.namespaces(pid, denied=denied_ns)
    if denied_ns:
        errors.append(("ns", "ns/%s: permission denied" % ",".join(denied_ns)))

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
    limits, devices_list = _limits(cgroups, host.auditor_mounts, errors)
    reachable = visible_mounts(mounts)

    locations = []
    for path in KERNEL_CONTROL_FILES + DEFAULT_MASKED_PATHS + DEFAULT_READONLY_PATHS:
        for loc in kernel_locations(reachable, path):
            if loc not in locations:
                locations.append(loc)
    path_errors = {}
    os_release, dev_nodes, visible, host_procfs, sockets = {}, (), set(), (), ()
    dev_incomplete = None
    try:
        rootfd = saferead.open_root(pid, proc.root)
    except FileNotFoundError:
        if not proc.exists(pid):
            raise NoSuchProcess(pid) from None
        rootfd = None
        errors.append(("root", "root directory not reachable"))
    except OSError as exc:
        rootfd = None
        if not any(name == "root" for name, _m in errors):
            errors.append(("root", "%s: %s" % (proc.path(pid, "root"), exc.strerror)))
    if rootfd is not None:
        try:
            for path in ("/etc/os-release", "/usr/lib/os-release"):
                try:
                    os_release = procfs.parse_os_release(
                        saferead.read_in_root(rootfd, path, 16384).decode("utf-8", "replace"))
                    break
                except OSError:
                    continue
            dev_nodes, dev_incomplete = _dev_nodes(rootfd, mounts)
            for path in locations[MAX_KERNEL_LOCATIONS:]:
                path_errors[path] = "more than %d kernel-file locations: not examined" % MAX_KERNEL_LOCATIONS
            for path, result in saferead.lstat_many_in_root(rootfd, locations[:MAX_KERNEL_LOCATIONS]).items():
                if isinstance(result, (FileNotFoundError, NotADirectoryError)):
                    continue
                if isinstance(result, OSError):
                    # EACCES on a parent directory hides the file from us, not from the target.
                    path_errors[path] = result.strerror or str(result)
                else:
                    visible.add(path)
            denied = []
            host_procfs = _host_procfs(rootfd, reachable, host, namespaces, denied)
            if denied:
                errors.append(("procfs-self", "; ".join(denied[:4])))
            denied = []
            sockets = _runtime_sockets(rootfd, reachable, lambda m: _host_path(host.mounts, m), denied)
            if denied:
                errors.append(("sockets", "; ".join(denied[:4])))
        finally:
            os.close(rootfd)
    else:
        dev_incomplete = "the target's root could not be opened"
    if dev_incomplete:
        errors.append(("dev", dev_incomplete))
    if probes is not None and isinstance(probes.get("helper"), dict) and probes["helper"].get("error"):
        # --active was asked for but its helper could not run: the checks fall back to what
        # the passive reads show, and the report says the proofs are missing.
        errors.append(("active", "the --active helper failed: %s" % probes["helper"]["error"]))
    if path_errors:
        errors.append(("kernel-files", "; ".join("%s: %s" % kv for kv in list(path_errors.items())[:4])))
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
        errors=tuple(errors), reachable_mounts=reachable, path_errors=MappingProxyType(path_errors),
        dev_scan_incomplete=dev_incomplete, access_hint=_access_hint(host, status))
