"""--profile strict (or the annotation org.pysandbox.profile=strict) for an engine's container.

The default of pysandbox-oci is exactly what config.json asks, like runc. strict first refuses
what it forbids, each with an error the user sees through `docker run`:
  * a namespace shared with the host (pid, network, ipc, uts, mount, cgroup missing, or joined by
    path onto the host's own);
  * capabilities that reach the host or the kernel (SYS_ADMIN, SYS_MODULE, SYS_PTRACE, NET_ADMIN,
    DAC_READ_SEARCH, BPF, ...: what `--privileged` or `--cap-add` ask for);
  * devices beyond the default set, a device cgroup rule allowing every device;
  * bind mounts of the host's root, /proc, /sys, /dev, /boot, /etc, /root, /run, /var/run, or of a
    container engine's socket (docker.sock, containerd.sock, ...: a socket that asks for a
    privileged container is root on the host).
Then it adds pysandbox's layers:
  * a user namespace with a range of host ids of its own (65536 ids from a pool under host root:
    per container, released at delete), the rootfs idmapped onto it so the image's files are
    still the container root's; in-container root is no host id at all;
  * no capabilities in any set; no_new_privs;
  * strict's own seccomp allowlist stacked on the spec's filter (the kernel answers with the
    stricter of the two);
  * Landlock: device nodes cannot be made anywhere and (ABI 6) abstract unix sockets outside the
    container cannot be reached (a shim's abstract socket on a shared network namespace);
  * every mask of pysandbox (RUNTIME_MASKED_PATHS) and the read-only /proc paths; /sys and the
    cgroup mount read-only;
  * strict's limits where the spec sets none (pids 256, memory 512M, one CPU of quota) and its
    rlimits (core 0, sigpending, msgqueue, memlock, nofile) where the spec sets none or a higher one.
"""
import os

from pysandbox_common.containers import (OCI_READONLY_PATHS, RUNTIME_MASKED_PATHS, RUNTIME_SOCKET_NAMES,
                                         RUNTIME_SOCKET_PATHS)
from .errors import SpecError
from .spec import DEFAULT_DEVICES, MS_RDONLY, RLIMITS

DANGEROUS_CAPABILITIES = frozenset((
    "SYS_ADMIN", "SYS_MODULE", "SYS_RAWIO", "SYS_PTRACE", "SYS_BOOT", "SYS_TIME", "NET_ADMIN",
    "DAC_READ_SEARCH", "MAC_ADMIN", "MAC_OVERRIDE", "BPF", "PERFMON", "SYSLOG", "SYS_RESOURCE",
    "LINUX_IMMUTABLE", "AUDIT_CONTROL", "SYS_PACCT", "SYS_TTY_CONFIG", "WAKE_ALARM", "BLOCK_SUSPEND",
    "CHECKPOINT_RESTORE", "AUDIT_READ", "IPC_LOCK", "SYS_NICE", "LEASE",
))
HOST_PATHS = ("/", "/proc", "/sys", "/dev", "/boot", "/etc", "/root", "/run", "/var/run", "/var/lib/docker",
              "/var/lib/containerd", "/var/lib/containers", "/lib/modules", "/usr", "/home")
REQUIRED_NAMESPACES = ("pid", "network", "ipc", "uts", "mount", "cgroup")
# Namespaces strict adds when the spec shares them by the engine's default rather than the user's
# choice (Docker 20.10 on cgroup v1 shares the cgroup namespace): nothing in the container needs
# the host's view.
ADDED_NAMESPACES = ("cgroup",)
ID_POOL_BASE, ID_RANGE, ID_POOL_SLOTS = 3_000_000_000, 65536, 1024
ID_POOL_DIR = "/run/pysandbox-oci-ids"
ATTACH_DIR = "/run/pysandbox-oci-rootfs"
PRIVATE_WORKDIR = "pysandbox-oci-work"  # beside a volatile overlay's upper directory
STRICT_RLIMITS = {"RLIMIT_CORE": 0, "RLIMIT_SIGPENDING": 256, "RLIMIT_MSGQUEUE": 128 * 1024,
                  "RLIMIT_MEMLOCK": 1024 * 1024, "RLIMIT_NOFILE": 1048576}


def _fail(message):
    raise SpecError("--profile strict refuses this container: %s" % message)


def refuse_capabilities(capabilities):
    asked = set()
    for values in capabilities.values():
        asked.update(values)
    bad = sorted(asked & DANGEROUS_CAPABILITIES)
    if bad:
        _fail("capabilities %s (--privileged or --cap-add) reach the host's kernel" % ", ".join(
            "CAP_" + b for b in bad))


def _refuse(plan):
    for kind in REQUIRED_NAMESPACES:
        present, path = plan.ns(kind)
        if not present and kind not in ADDED_NAMESPACES:
            _fail("it shares the host's %s namespace (drop --%s=host)" % (kind, {"network": "net"}.get(kind, kind)))
        if path:
            name = {"network": "net", "mount": "mnt"}.get(kind, kind)
            same = False
            for host in ("/proc/1/ns/" + name, "/proc/self/ns/" + name):
                try:
                    same = same or os.stat(path).st_ino == os.stat(host).st_ino
                except OSError:
                    pass
            if same:
                _fail("its %s namespace %s is the host's" % (kind, path))
    refuse_capabilities(plan.process.capabilities)
    default_paths = {d[0] for d in DEFAULT_DEVICES}
    for dev in plan.devices:
        if dev.path not in default_paths:
            _fail("device %s (--device): strict gives only the default devices" % dev.path)
    for rule in plan.resources.get("devices") or ():
        if rule.get("allow") and (rule.get("type") in (None, "a")) and rule.get("major") in (None, -1) \
                and rule.get("minor") in (None, -1):
            _fail("its device cgroup allows every device (--privileged or --device-cgroup-rule 'a *:* rwm')")
    for m in plan.mounts:
        if not m.bind:
            continue
        source = os.path.realpath(m.source)
        if source in HOST_PATHS or any(source.startswith(p + "/") for p in ("/proc", "/sys", "/dev", "/boot")):
            _fail("bind mount of the host's %s onto %s" % (source, m.destination))
        if os.path.basename(source) in RUNTIME_SOCKET_NAMES or source in RUNTIME_SOCKET_PATHS:
            _fail("bind mount of the container engine socket %s: whoever holds it is root on the host" % source)
        if os.path.isdir(source):
            for name in RUNTIME_SOCKET_NAMES:
                if os.path.exists(os.path.join(source, name)):
                    _fail("bind mount of %s, which holds the engine socket %s" % (source, name))


def tighten(plan, profile_name):
    if profile_name != "strict":
        raise SpecError("--profile %r: pysandbox-oci knows strict (and default, the spec as given)" % profile_name)
    _refuse(plan)
    from .. import load_profile
    from .. import seccomp
    from ..errors import ProfileError, SetupError
    profile = load_profile("strict")
    namespaces = list(plan.namespaces)
    uid_maps, gid_maps = plan.uid_mappings, plan.gid_mappings
    idmap_rootfs = False
    for kind in ADDED_NAMESPACES:
        if not plan.ns(kind)[0]:
            namespaces.append((kind, ""))
    if not plan.ns("user")[0]:
        if os.geteuid() != 0:
            _fail("without a user namespace in the spec, a rootless runtime cannot add one with many ids")
        uid_maps = gid_maps = ()
        pod_userns = _joined_owner(plan)
        if pod_userns is None:
            namespaces.append(("user", ""))  # a range of the pool, taken by create (ids_for)
        else:
            # A pod: its containers join the sandbox container's namespaces, which (made under
            # strict) belong to the sandbox's user namespace; the container joins that one too, so
            # the pod shares one id range, and it can enter what it joins.
            namespaces.append(("user", pod_userns))
        idmap_rootfs = True
    bounds = {k: () for k in ("bounding", "effective", "permitted", "inheritable", "ambient")}
    rlimits = {name: (number, name, soft, hard) for number, name, soft, hard in plan.process.rlimits}
    for name, value in STRICT_RLIMITS.items():
        if name in rlimits:
            number, _, soft, hard = rlimits[name]
            rlimits[name] = (number, name, min(soft, value), min(hard, value))
        else:
            import resource
            hard = resource.getrlimit(RLIMITS[name])[1]
            cap = value if hard == resource.RLIM_INFINITY else min(value, hard)
            rlimits[name] = (RLIMITS[name], name, cap, cap)
    process = plan.process.replace(capabilities=bounds, no_new_privileges=True,
                                   rlimits=tuple(sorted(rlimits.values())))
    policy = profile.seccomp
    try:
        extra_bpf = seccomp.compile_policy(policy, caps=())
    except (ProfileError, SetupError) as e:
        raise SpecError("--profile strict: its seccomp filter: %s" % e) from None
    resources = dict(plan.resources)
    limits = profile.limits
    if not (resources.get("pids") or {}).get("limit"):
        resources["pids"] = dict(resources.get("pids") or {}, limit=limits.pids or 256)
    if not (resources.get("memory") or {}).get("limit") and limits.memory:
        resources["memory"] = dict(resources.get("memory") or {}, limit=int(limits.memory))
    if not (resources.get("cpu") or {}).get("quota") and limits.cpus:
        cpu = dict(resources.get("cpu") or {})
        period = cpu.get("period") or 100000
        cpu.update(period=period, quota=int(limits.cpus * period))
        resources["cpu"] = cpu
    mounts = tuple(m.replace(flags=m.flags | MS_RDONLY) if m.type in ("sysfs", "cgroup", "cgroup2") else m
                   for m in plan.mounts)
    masked = tuple(dict.fromkeys(plan.masked_paths + RUNTIME_MASKED_PATHS))
    readonly = tuple(dict.fromkeys(plan.readonly_paths + OCI_READONLY_PATHS))
    sysctl = plan.sysctl
    if idmap_rootfs:
        # Docker asks that every group may ping (0 2147483647); in the user namespace strict adds,
        # only its 65536 groups exist and the kernel refuses unmapped ones: the same meaning, clamped.
        sysctl = tuple((k, _clamp_groups(v) if k == "net.ipv4.ping_group_range" else v) for k, v in sysctl)
    from .spec import JOIN_ORDER
    namespaces = sorted(namespaces, key=lambda n: JOIN_ORDER.index(n[0]))
    return plan.replace(namespaces=tuple(namespaces), uid_mappings=uid_maps, gid_mappings=gid_maps,
                        process=process, extra_bpf=extra_bpf, resources=resources, mounts=mounts,
                        masked_paths=masked, readonly_paths=readonly, profile="strict", sysctl=sysctl,
                        landlock=landlock_plan(), idmap_rootfs=idmap_rootfs)


def _clamp_groups(value):
    try:
        low, high = (int(x) for x in value.split())
    except ValueError:
        return value
    return "%d %d" % (min(low, ID_RANGE - 1), min(high, ID_RANGE - 1))


class _ContainerLandlock:
    """A Landlock policy for a whole container: everything beneath / except making device nodes,
    and (ABI 6) no abstract unix socket outside the container's domain."""

    enabled, best_effort, tcp_bind, tcp_connect = True, False, None, None

    def __init__(self, scope):
        self.scope = scope

    def for_root(self, rw_paths=(), ro_paths=()):
        return [("/", "rw", True, True)]


class LandlockPart:
    def __init__(self, policy):
        self.policy, self.extra_ro, self.extra_rw = policy, (), ()


def landlock_plan():
    from .. import landlock
    version = landlock.abi()
    if version < 1:
        _fail("Landlock is not offered by this kernel")
    return LandlockPart(_ContainerLandlock(("abstract_unix_socket",) if version >= 6 else ()))


# ---- per-container host ids ------------------------------------------------------------------

NS_GET_USERNS = 0xB701
_KEEP_OPEN = []  # descriptors the child of this create joins through /proc/self/fd


def _joined_owner(plan):
    """None when no namespace is joined by path; else the path of the user namespace owning the
    joined ones (one for all, and not the host's: a container cannot be remapped into a
    namespace the host's root made)."""
    import fcntl
    joined = [(kind, path) for kind, path in plan.namespaces if path]
    if not joined:
        return None
    owners = {}
    for kind, path in joined:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            owner = fcntl.ioctl(fd, NS_GET_USERNS)
        except OSError as e:
            os.close(fd)
            _fail("cannot tell which user namespace owns %s namespace %s (%s)" % (kind, path, e.strerror))
        os.close(fd)
        owners.setdefault(os.fstat(owner).st_ino, []).append((kind, path, owner))
    host = {os.stat("/proc/self/ns/user").st_ino}
    try:
        host.add(os.stat("/proc/1/ns/user").st_ino)  # refused where root lacks CAP_SYS_PTRACE
    except OSError:
        pass
    for inode, entries in owners.items():
        if inode in host:
            for _, _, fd in sum(owners.values(), []):
                os.close(fd)
            kind, path, _ = entries[0]
            _fail("it joins the %s namespace %s, which the host's root made: strict cannot remap the "
                  "container into it (create the pod's sandbox with the same runtime and profile)" % (kind, path))
    if len(owners) > 1:
        _fail("the namespaces it joins belong to different user namespaces")
    keep = next(iter(owners.values()))[0][2]
    for _, _, fd in sum(owners.values(), [])[1:]:
        os.close(fd)
    os.set_inheritable(keep, True)
    _KEEP_OPEN.append(keep)
    return "/proc/self/fd/%d" % keep


def ids_for(plan, state_dir):
    """The plan with the container's own host id range (strict added the user namespace)."""
    slot = reserve_id_range(state_dir)
    maps = ((0, ID_POOL_BASE + slot * ID_RANGE, ID_RANGE),)
    return plan.replace(uid_mappings=maps, gid_mappings=maps)


def reserve_id_range(state_dir):
    """A slot of the pool for this container: a file naming the bundle, made under an flock of the
    pool directory. A slot is free when its file is missing or its container's state is gone."""
    import fcntl
    os.makedirs(ID_POOL_DIR, mode=0o700, exist_ok=True)
    lock = os.open(os.path.join(ID_POOL_DIR, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for slot in range(ID_POOL_SLOTS):
            path = os.path.join(ID_POOL_DIR, str(slot))
            try:
                with open(path) as f:
                    owner = f.read().strip()
            except FileNotFoundError:
                owner = ""
            if owner and os.path.exists(owner):
                continue
            with open(path, "w") as f:
                f.write(state_dir)
            return slot
    finally:
        os.close(lock)
    _fail("all %d host id ranges of the pool are in use" % ID_POOL_SLOTS)


def release_id_range(state_dir):
    try:
        names = os.listdir(ID_POOL_DIR)
    except FileNotFoundError:
        return
    for name in names:
        if not name.isdigit():
            continue
        path = os.path.join(ID_POOL_DIR, name)
        try:
            with open(path) as f:
                if f.read().strip() == state_dir:
                    os.unlink(path)
        except FileNotFoundError:
            pass


OPEN_TREE_CLONE, AT_RECURSIVE, AT_EMPTY_PATH, AT_FDCWD = 1, 0x8000, 0x1000, -100
MOUNT_ATTR_IDMAP = 0x00100000
FSCONFIG_SET_FLAG, FSCONFIG_SET_STRING, FSCONFIG_SET_FD, FSCONFIG_CMD_CREATE = 0, 1, 5, 6
NR_FSOPEN, NR_FSCONFIG, NR_FSMOUNT = 430, 431, 432


def _rootfs_mount(path):
    """(fstype, super options) of the mount at `path`, or (None, "") when it is no mount point."""
    found = (None, "")
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if left.split()[4].replace("\\040", " ") == path:
                fields = right.split()
                found = (fields[0], fields[2] if len(fields) > 2 else "")
    return found


def _idmapped_tree(path, userns, recursive=True):
    """A detached copy of the mount at `path` whose ids are shifted by the user namespace `userns`."""
    import ctypes
    from .. import native

    class MountAttr(ctypes.Structure):
        _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                    ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]

    flags = OPEN_TREE_CLONE | os.O_CLOEXEC | (AT_RECURSIVE if recursive else 0)
    tree = native.check(native.syscall("open_tree", AT_FDCWD, path.encode(), flags), "rootfs", "open_tree " + path)
    attr = MountAttr(MOUNT_ATTR_IDMAP, 0, 0, userns)
    rc = native.syscall("mount_setattr", tree, b"", AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0),
                        ctypes.byref(attr), ctypes.sizeof(attr))
    if rc < 0:
        err = native.errno()
        os.close(tree)
        raise SpecError("--profile strict: %s cannot be idmapped onto the container's ids (%s); strict does "
                        "not run a container whose files its root could not own" % (path, os.strerror(err)))
    return int(tree)


def _fsconfig(fs, kind, key, value=None, aux=0):
    import ctypes
    from .. import native
    libc = native.libc()
    rc = libc.syscall(NR_FSCONFIG, ctypes.c_int(fs), ctypes.c_uint(kind),
                      ctypes.c_char_p(key.encode() if key else None),
                      ctypes.c_char_p(value.encode() if isinstance(value, str) else value), ctypes.c_int(aux))
    if rc < 0:
        err = native.errno()
        raise SpecError("--profile strict: rebuilding the overlay rootfs with idmapped layers: fsconfig %s: %s"
                        % (key or "create", os.strerror(err)))


def _outside_root(pid, name):
    """The host id of the container's root, from its user namespace's map (the pod's when joined)."""
    with open("/proc/%d/%s" % (pid, name)) as f:
        for line in f:
            inside, outside, _ = (int(x) for x in line.split())
            if inside == 0:
                return outside
    raise SpecError("--profile strict: the container's user namespace maps no root")


def _idmapped_overlay(plan, options, userns, pid):
    """The image's overlay mounted again from the same layers, each layer idmapped (overlayfs
    itself cannot be idmapped, its layers can: kernel >= 5.19, descriptors as layers >= 6.x)."""
    from .. import native
    values, flags = {}, []
    for item in options.split(","):
        key, eq, value = item.partition("=")
        if eq:
            values[key] = value
        elif key not in ("rw", "ro"):
            flags.append(key)
    lower, upper, work = values.pop("lowerdir", ""), values.pop("upperdir", ""), values.pop("workdir", "")
    if not lower or not upper or not work or os.path.dirname(upper) != os.path.dirname(work):
        raise SpecError("--profile strict: the overlay rootfs %s has no upper and work directory side by side"
                        % plan.rootfs)
    opened = []
    try:
        fs = native.check(native.libc().syscall(NR_FSOPEN, b"overlay", 1), "rootfs", "fsopen overlay")
        opened.append(fs)
        for key, value in values.items():
            _fsconfig(fs, FSCONFIG_SET_STRING, key, value)
        for key in flags:
            _fsconfig(fs, FSCONFIG_SET_FLAG, key)
        for layer in lower.split(":"):
            tree = _idmapped_tree(layer, userns, recursive=False)
            opened.append(tree)
            _fsconfig(fs, FSCONFIG_SET_FD, "lowerdir+", None, tree)
        if os.path.exists(os.path.join(work, "work", "incompat", "volatile")):
            # The engine mounted it `volatile` (Podman does): overlayfs refuses a second mount on
            # that work directory. A work directory of our own beside it, on the same filesystem
            # as the upper one as overlayfs requires; it holds only overlayfs' scratch files.
            work = os.path.join(os.path.dirname(upper), PRIVATE_WORKDIR)
            os.makedirs(work, 0o700, exist_ok=True)
        top = _idmapped_tree(os.path.dirname(upper), userns, recursive=False)
        opened.append(top)
        for key, name in (("upperdir", upper), ("workdir", work)):
            fd = os.open(os.path.basename(name), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=top)
            opened.append(fd)
            _fsconfig(fs, FSCONFIG_SET_FD, key, None, fd)
        # overlayfs keeps its creator's credentials for the work it does on the upper layer (the
        # work directory, copy-up): through the idmapped layers only the container's ids exist,
        # so the superblock is created as the container's root (fsuid/fsgid; capabilities stay).
        libc = native.libc()
        base_uid, base_gid = _outside_root(pid, "uid_map"), _outside_root(pid, "gid_map")
        libc.setfsgid(base_gid)
        libc.setfsuid(base_uid)
        try:
            # a non-zero fsuid drops the file capabilities from the effective set; overlayfs needs
            # them to clean its work directory (left mode 000 by the engine's own mount)
            from .capsets import raise_effective
            raise_effective()
            _fsconfig(fs, FSCONFIG_CMD_CREATE, None)
        finally:
            libc.setfsuid(os.geteuid())
            libc.setfsgid(os.getegid())
        mounted = native.libc().syscall(NR_FSMOUNT, fs, 1, 0)  # FSMOUNT_CLOEXEC
        return int(native.check(mounted, "rootfs", "fsmount overlay"))
    finally:
        for fd in opened:
            os.close(fd)


def detached_trees(plan, pid):
    """[idmapped rootfs, then a detached copy of each bind source in mount order]."""
    from .. import native
    trees = [open_idmapped_rootfs(plan, pid)]
    try:
        for m in plan.mounts:
            if m.bind:
                flags = OPEN_TREE_CLONE | os.O_CLOEXEC | (AT_RECURSIVE if m.flags & 16384 else 0)
                trees.append(int(native.check(native.syscall("open_tree", AT_FDCWD, m.source.encode(), flags),
                                              "mount", "open_tree " + m.source)))
    except BaseException:
        for fd in trees:
            os.close(fd)
        raise
    return trees


def open_idmapped_rootfs(plan, pid):
    """Runtime side (host root, outside the container's user namespace, as the kernel requires):
    the rootfs as a detached mount whose on-disk uid k shows as the container's uid k, for the new
    user namespace of `pid` (its maps already written)."""
    userns = os.open("/proc/%d/ns/user" % pid, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fstype, options = _rootfs_mount(plan.rootfs)
        if fstype == "overlay":
            return _idmapped_overlay(plan, options, userns, pid)
        return _idmapped_tree(plan.rootfs, userns)
    finally:
        os.close(userns)
