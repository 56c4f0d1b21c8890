"""config.json -> ContainerPlan: the OCI front-end, validated once before any fork.

Everything the container's stages and the lifecycle commands need is decided here and frozen:
namespaces (new, or joined by path), id mappings, mounts in order with their flags, devices,
capabilities (five sets), rlimits, the seccomp filter compiled to BPF, sysctls, hooks, the
process and the cgroup resources. What this host cannot give is refused here with the reason,
so `create` never starts a container that would miss something its spec asked for.
"""
import os

from ..plan import Frozen
from .errors import SpecError

OCI_VERSION = "1.0.2"


NAMESPACE_FLAGS = {
    "user": 0x10000000, "pid": 0x20000000, "network": 0x40000000, "mount": 0x00020000,
    "uts": 0x04000000, "ipc": 0x08000000, "cgroup": 0x02000000, "time": 0x00000080,
}
# The order namespaces are joined in (nsenter's): the user namespace first, because joining it
# gives the capabilities the others need; mount late (it changes the paths the others name).
JOIN_ORDER = ("user", "cgroup", "ipc", "uts", "network", "pid", "time", "mount")

# mount(8) options -> (flags to set, flags to clear); the propagation ones are separate calls.
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_SYNCHRONOUS, MS_REMOUNT = 1, 2, 4, 8, 16, 32
MS_MANDLOCK, MS_DIRSYNC, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 64, 128, 1024, 2048, 4096, 16384
MS_UNBINDABLE, MS_PRIVATE, MS_SLAVE, MS_SHARED = 1 << 17, 1 << 18, 1 << 19, 1 << 20
MS_RELATIME, MS_STRICTATIME = 1 << 21, 1 << 24
MOUNT_FLAGS = {
    "ro": (MS_RDONLY, 0), "rw": (0, MS_RDONLY), "nosuid": (MS_NOSUID, 0), "suid": (0, MS_NOSUID),
    "nodev": (MS_NODEV, 0), "dev": (0, MS_NODEV), "noexec": (MS_NOEXEC, 0), "exec": (0, MS_NOEXEC),
    "sync": (MS_SYNCHRONOUS, 0), "async": (0, MS_SYNCHRONOUS), "dirsync": (MS_DIRSYNC, 0),
    "remount": (MS_REMOUNT, 0), "mand": (MS_MANDLOCK, 0), "nomand": (0, MS_MANDLOCK),
    "atime": (0, MS_NOATIME), "noatime": (MS_NOATIME, 0), "diratime": (0, MS_NODIRATIME),
    "nodiratime": (MS_NODIRATIME, 0), "relatime": (MS_RELATIME, 0), "norelatime": (0, MS_RELATIME),
    "strictatime": (MS_STRICTATIME, 0), "nostrictatime": (0, MS_STRICTATIME),
    "bind": (MS_BIND, 0), "rbind": (MS_BIND | MS_REC, 0), "defaults": (0, 0),
}
PROPAGATION = {
    "private": MS_PRIVATE, "rprivate": MS_PRIVATE | MS_REC, "shared": MS_SHARED, "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE, "rslave": MS_SLAVE | MS_REC, "unbindable": MS_UNBINDABLE,
    "runbindable": MS_UNBINDABLE | MS_REC,
}
# Options runc knows that need kernel features this runtime does not drive: refused, never ignored.
UNSUPPORTED_MOUNT_OPTIONS = ("idmap", "ridmap", "tmpcopyup", "rro", "rrw", "rnosuid", "rsuid", "rnodev",
                             "rdev", "rnoexec", "rexec", "rnoatime", "ratime", "rnodiratime", "rdiratime",
                             "rrelatime", "rnorelatime", "rstrictatime", "rnostrictatime", "rnosymfollow",
                             "nosymfollow", "symfollow", "rsymfollow")
MOUNT_TYPES = ("bind", "none", "proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2", "overlay",
               "ramfs", "securityfs", "debugfs", "tracefs", "fusectl", "binfmt_misc", "hugetlbfs", "pstore")

# The devices every container gets (runtime-spec config-linux.md "Default Devices").
DEFAULT_DEVICES = (
    ("/dev/null", "c", 1, 3), ("/dev/zero", "c", 1, 5), ("/dev/full", "c", 1, 7),
    ("/dev/random", "c", 1, 8), ("/dev/urandom", "c", 1, 9), ("/dev/tty", "c", 5, 0),
)
HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")
RLIMITS = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9,
    "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
    "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}
CAP_SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")


class Mount(Frozen):
    __slots__ = ("destination", "type", "source", "flags", "clear", "propagation", "data", "bind", "label")


class Device(Frozen):
    __slots__ = ("path", "type", "major", "minor", "mode", "uid", "gid")


class Process(Frozen):
    __slots__ = ("args", "env", "cwd", "uid", "gid", "additional_gids", "umask", "terminal", "console_size",
                 "capabilities", "rlimits", "no_new_privileges", "oom_score_adj", "apparmor", "selinux")


class ContainerPlan(Frozen):
    __slots__ = (
        "bundle", "rootfs", "root_readonly", "config",   # config: the parsed JSON (read, never changed)
        "namespaces",        # ((kind, path or ""), ...) in JOIN_ORDER
        "uid_mappings", "gid_mappings",                  # ((inside, host, size), ...)
        "hostname", "domainname",
        "mounts", "devices", "masked_paths", "readonly_paths", "rootfs_propagation",
        "sysctl", "process", "seccomp_bpf", "seccomp_log",
        "hooks",             # {kind: ((path, args, env, timeout), ...)}
        "cgroups_path", "resources", "annotations",
        "profile",           # "" or the pysandbox profile that tightened it ("strict")
        "extra_bpf",         # the profile's own filter, stacked on the spec's (or None)
        "landlock",          # landlock.LandlockPlan or None
        "idmap_rootfs",      # strict's remap: the rootfs is idmapped onto the container's ids
    )

    def ns(self, kind):
        """(present, path) of a namespace kind."""
        for name, path in self.namespaces:
            if name == kind:
                return True, path
        return False, ""

    def _at_clone(self, name, path):
        # clone() makes the new user and pid namespaces; but a namespace is owned by the user
        # namespace of its creator, so when the user namespace is joined (a pod's) the new pid
        # namespace is made after the join, by unshare, or the container's /proc mount is refused
        return not path and (name == "user" or name == "pid" and not self.ns("user")[1])

    @property
    def clone_flags(self):
        flags = 0
        for name, path in self.namespaces:
            if self._at_clone(name, path):
                flags |= NAMESPACE_FLAGS[name]
        return flags

    @property
    def unshare_flags(self):
        flags = 0
        for name, path in self.namespaces:
            if not path and not self._at_clone(name, path):
                flags |= NAMESPACE_FLAGS[name]
        return flags


def _type(value, kind, where):
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = {str: "a string", int: "an integer", list: "a list", dict: "an object", bool: "true or false"}
        raise SpecError("%s: expected %s" % (where, names.get(kind, kind.__name__)))
    return value


def _get(obj, key, kind, where, default=None):
    value = obj.get(key)
    if value is None:
        return default
    return _type(value, kind, "%s.%s" % (where, key) if where else key)


def read_json(path, what):
    from . import fastjson as json
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except FileNotFoundError:
        raise SpecError("%s %s: no such file" % (what, path)) from None
    except OSError as e:
        raise SpecError("%s %s: %s" % (what, path, e.strerror or e)) from None
    except ValueError as e:
        raise SpecError("%s %s: not valid JSON: %s" % (what, path, e)) from None
    if not isinstance(data, dict):
        raise SpecError("%s %s: expected a JSON object" % (what, path))
    return data


def from_config(config, bundle):
    version = _get(config, "ociVersion", str, "", "")
    if not version.startswith("1."):
        raise SpecError("ociVersion %r: this runtime implements the runtime-spec 1.x" % version)
    root = _get(config, "root", dict, "", None)
    if root is None:
        raise SpecError("root: missing (the rootfs path)")
    rootfs = _get(root, "path", str, "root", "")
    if not rootfs:
        raise SpecError("root.path: missing")
    rootfs = os.path.normpath(os.path.join(bundle, rootfs))
    if not os.path.isdir(rootfs):
        raise SpecError("root.path %s: not a directory" % rootfs)
    linux = _get(config, "linux", dict, "", {})
    namespaces = _namespaces(_get(linux, "namespaces", list, "linux", []))
    have = {kind for kind, _ in namespaces}
    uid_maps = _mappings(_get(linux, "uidMappings", list, "linux", []), "linux.uidMappings")
    gid_maps = _mappings(_get(linux, "gidMappings", list, "linux", []), "linux.gidMappings")
    user_new = ("user", "") in namespaces
    if (uid_maps or gid_maps) and not user_new:
        raise SpecError("linux.uidMappings: mappings need a new user namespace in linux.namespaces")
    if user_new and (not uid_maps or not gid_maps):
        raise SpecError("linux.namespaces: a new user namespace needs linux.uidMappings and gidMappings")
    if user_new and os.geteuid() != 0 and (len(uid_maps) > 1 or len(gid_maps) > 1 or uid_maps[0][2] != 1):
        _rootless_maps_possible(uid_maps, gid_maps)
    hostname = _get(config, "hostname", str, "", "")
    domainname = _get(config, "domainname", str, "", "")
    if (hostname or domainname) and "uts" not in have:
        raise SpecError("hostname: setting it needs a uts namespace in linux.namespaces")
    for name, value in (("hostname", hostname), ("domainname", domainname)):
        if len(value.encode()) > 64:
            raise SpecError("%s: longer than 64 bytes" % name)
    mounts = tuple(_mount(m, i, bundle) for i, m in enumerate(_get(config, "mounts", list, "", [])))
    devices = _devices(_get(linux, "devices", list, "linux", []))
    propagation = _get(linux, "rootfsPropagation", str, "linux", "")
    if propagation and propagation not in PROPAGATION:
        raise SpecError("linux.rootfsPropagation %r: expected one of %s" % (propagation, ", ".join(PROPAGATION)))
    sysctl = _get(linux, "sysctl", dict, "linux", {})
    for key, value in sysctl.items():
        if not isinstance(value, str) or "/" in key or ".." in key:
            raise SpecError("linux.sysctl.%s: expected a string value and a dotted name" % key)
        _sysctl_namespaced(key, have)
    process = _process(_get(config, "process", dict, "", None))
    seccomp = _get(linux, "seccomp", dict, "linux", None)
    bpf = _seccomp(seccomp, process) if seccomp is not None else None
    hooks = _hooks(_get(config, "hooks", dict, "", {}))
    cgroups_path = _get(linux, "cgroupsPath", str, "linux", "")
    resources = _get(linux, "resources", dict, "linux", {})
    from . import cgroups
    cgroups.validate(resources)
    for unsupported in ("intelRdt", "personality"):
        if linux.get(unsupported):
            raise SpecError("linux.%s: not supported by pysandbox-oci" % unsupported)
    if linux.get("mountLabel"):
        _selinux_absent("linux.mountLabel")
    return ContainerPlan(
        bundle=bundle, rootfs=rootfs, root_readonly=bool(_get(root, "readonly", bool, "root", False)),
        config=config, namespaces=namespaces, uid_mappings=uid_maps, gid_mappings=gid_maps,
        hostname=hostname, domainname=domainname, mounts=mounts, devices=devices,
        masked_paths=tuple(_paths(linux, "maskedPaths")), readonly_paths=tuple(_paths(linux, "readonlyPaths")),
        rootfs_propagation=propagation, sysctl=tuple(sorted(sysctl.items())), process=process,
        seccomp_bpf=bpf, hooks=hooks,
        seccomp_log="SECCOMP_FILTER_FLAG_LOG" in ((seccomp or {}).get("flags") or ()),
        cgroups_path=cgroups_path, resources=resources, annotations=dict(_get(config, "annotations", dict, "", {})),
        profile="", extra_bpf=None, landlock=None, idmap_rootfs=False)


def _namespaces(raw):
    seen = {}
    for i, entry in enumerate(raw):
        where = "linux.namespaces[%d]" % i
        _type(entry, dict, where)
        kind = _get(entry, "type", str, where, "")
        if kind not in NAMESPACE_FLAGS:
            raise SpecError("%s.type %r: expected one of %s" % (where, kind, ", ".join(NAMESPACE_FLAGS)))
        if kind in seen:
            raise SpecError("%s: namespace %s given twice" % (where, kind))
        path = _get(entry, "path", str, where, "")
        if path and not os.path.exists(path):
            raise SpecError("%s.path %s: does not exist" % (where, path))
        if kind == "time" and not os.path.exists("/proc/self/ns/time"):
            raise SpecError("%s: this kernel has no time namespaces" % where)
        seen[kind] = path
    return tuple((kind, seen[kind]) for kind in JOIN_ORDER if kind in seen)


def _mappings(raw, where):
    out = []
    for i, entry in enumerate(raw):
        w = "%s[%d]" % (where, i)
        _type(entry, dict, w)
        values = [_get(entry, key, int, w, None) for key in ("containerID", "hostID", "size")]
        if None in values or values[2] <= 0 or min(values) < 0:
            raise SpecError("%s: expected containerID, hostID and a positive size" % w)
        out.append(tuple(values))
    return tuple(out)


def _rootless_maps_possible(uid_maps, gid_maps):
    import shutil
    if not shutil.which("newuidmap") or not shutil.which("newgidmap"):
        raise SpecError("linux.uidMappings: several ranges need root or the setuid newuidmap/newgidmap "
                        "(Debian package uidmap)")


def _mount(raw, index, bundle):
    where = "mounts[%d]" % index
    _type(raw, dict, where)
    destination = _get(raw, "destination", str, where, "")
    if not destination.startswith("/"):
        raise SpecError("%s.destination %r: expected an absolute path" % (where, destination))
    options = _get(raw, "options", list, where, [])
    mtype = _get(raw, "type", str, where, "") or "none"
    source = _get(raw, "source", str, where, "")
    flags = clear = propagation = 0
    data = []
    for option in options:
        if not isinstance(option, str):
            raise SpecError("%s.options: expected strings" % where)
        if option in MOUNT_FLAGS:
            add, remove = MOUNT_FLAGS[option]
            flags = (flags | add) & ~remove
            clear |= remove
        elif option in PROPAGATION:
            propagation = PROPAGATION[option]
        elif option in UNSUPPORTED_MOUNT_OPTIONS:
            raise SpecError("%s.options: %r is not supported by pysandbox-oci" % (where, option))
        else:
            data.append(option)  # filesystem-specific (size=, mode=, newinstance, ...): passed as data
    bind = bool(flags & MS_BIND) or mtype == "bind"
    if bind:
        if not source:
            raise SpecError("%s: a bind mount needs a source" % where)
        source = os.path.normpath(os.path.join(bundle, source))
        if not os.path.exists(source):
            raise SpecError("%s.source %s: does not exist" % (where, source))
        flags |= MS_BIND
    elif mtype not in MOUNT_TYPES:
        raise SpecError("%s.type %r: unknown filesystem type" % (where, mtype))
    return Mount(destination=os.path.normpath(destination), type=mtype, source=source, flags=flags,
                 clear=clear, propagation=propagation, data=",".join(data), bind=bind,
                 label="%s %s" % (mtype, destination))


def _devices(raw):
    out = {}
    for i, entry in enumerate(raw):
        where = "linux.devices[%d]" % i
        _type(entry, dict, where)
        path = _get(entry, "path", str, where, "")
        dtype = _get(entry, "type", str, where, "")
        if not path.startswith("/dev/") or dtype not in ("c", "b", "u", "p"):
            raise SpecError("%s: expected a path under /dev and type c, b, u or p" % where)
        major, minor = _get(entry, "major", int, where, 0), _get(entry, "minor", int, where, 0)
        mode = _get(entry, "fileMode", int, where, 0o666)
        out[path] = Device(path=os.path.normpath(path), type=dtype, major=major, minor=minor, mode=mode & 0o7777,
                           uid=_get(entry, "uid", int, where, 0), gid=_get(entry, "gid", int, where, 0))
    for path, dtype, major, minor in DEFAULT_DEVICES:
        out.setdefault(path, Device(path=path, type=dtype, major=major, minor=minor, mode=0o666, uid=0, gid=0))
    return tuple(out.values())


def _paths(linux, key):
    value = _get(linux, key, list, "linux", [])
    for p in value:
        if not isinstance(p, str) or not p.startswith("/"):
            raise SpecError("linux.%s: expected absolute paths" % key)
    return value


def _sysctl_namespaced(key, have):
    # The kernel's namespaced sysctls: what a container may set without touching the host.
    ipc = key in ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
                  "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced") or key.startswith("fs.mqueue.")
    if ipc and "ipc" in have:
        return
    if key.startswith("net.") and "network" in have:
        return
    if key in ("kernel.domainname", "kernel.hostname") and "uts" in have:
        return
    raise SpecError("linux.sysctl.%s: not namespaced by a namespace this container has; setting it would "
                    "change the host" % key)


def _process(raw):
    if raw is None:
        raise SpecError("process: missing")
    args = _get(raw, "args", list, "process", [])
    if not args or not all(isinstance(a, str) for a in args):
        raise SpecError("process.args: expected a non-empty list of strings")
    env = _get(raw, "env", list, "process", [])
    if not all(isinstance(e, str) and "=" in e for e in env):
        raise SpecError("process.env: expected NAME=value strings")
    cwd = _get(raw, "cwd", str, "process", "/")
    if not cwd.startswith("/"):
        raise SpecError("process.cwd %r: expected an absolute path" % cwd)
    user = _get(raw, "user", dict, "process", {})
    if user.get("username"):
        raise SpecError("process.user.username: not supported; give uid and gid")
    caps = _get(raw, "capabilities", dict, "process", {})
    cap_sets = []
    from pysandbox_common.capnames import CAP_NUMBER, normalize
    for name in CAP_SETS:
        values = _get(caps, name, list, "process.capabilities", [])
        for value in values:
            try:
                known = isinstance(value, str) and normalize(value) in CAP_NUMBER
            except ValueError:
                known = False
            if not known:
                raise SpecError("process.capabilities.%s: unknown capability %r" % (name, value))
        cap_sets.append(tuple(sorted({normalize(v) for v in values})))
    rlimits = []
    for i, entry in enumerate(_get(raw, "rlimits", list, "process", [])):
        where = "process.rlimits[%d]" % i
        _type(entry, dict, where)
        kind = _get(entry, "type", str, where, "")
        if kind not in RLIMITS:
            raise SpecError("%s.type %r: unknown rlimit" % (where, kind))
        soft, hard = _get(entry, "soft", int, where, 0), _get(entry, "hard", int, where, 0)
        if soft > hard:
            raise SpecError("%s: soft %d is above hard %d" % (where, soft, hard))
        rlimits.append((RLIMITS[kind], kind, soft, hard))
    size = _get(raw, "consoleSize", dict, "process", {})
    apparmor = _get(raw, "apparmorProfile", str, "process", "")
    if apparmor and _apparmor_enabled():
        raise SpecError("process.apparmorProfile %r: AppArmor is enabled on this host and pysandbox-oci "
                        "cannot apply profiles" % apparmor)
    selinux = _get(raw, "selinuxLabel", str, "process", "")
    if selinux:
        _selinux_absent("process.selinuxLabel")
    umask = _get(user, "umask", int, "process.user", None)
    return Process(args=tuple(args), env=tuple(env), cwd=cwd, uid=_get(user, "uid", int, "process.user", 0),
                   gid=_get(user, "gid", int, "process.user", 0),
                   additional_gids=tuple(_get(user, "additionalGids", list, "process.user", [])),
                   umask=umask, terminal=bool(_get(raw, "terminal", bool, "process", False)),
                   console_size=(size.get("height", 0), size.get("width", 0)),
                   capabilities=dict(zip(CAP_SETS, cap_sets)), rlimits=tuple(rlimits),
                   no_new_privileges=bool(_get(raw, "noNewPrivileges", bool, "process", False)),
                   oom_score_adj=_get(raw, "oomScoreAdj", int, "process", None), apparmor=apparmor,
                   selinux=selinux)


def _apparmor_enabled():
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            return f.read().strip() == "Y"
    except OSError:
        return False


def _selinux_absent(where):
    # Without SELinux on the host a label means nothing (runc ignores it the same way);
    # with SELinux enforcing it would be a layer silently dropped.
    if os.path.exists("/sys/fs/selinux/enforce"):
        raise SpecError("%s: SELinux is active on this host and pysandbox-oci cannot apply labels" % where)


def _seccomp(raw, process):
    """The spec's seccomp section compiled to BPF here, in the parent (the child only installs it)."""
    from .. import oci_seccomp, seccomp
    from ..errors import ProfileError, SetupError
    if raw.get("listenerPath"):
        raise SpecError("linux.seccomp.listenerPath: seccomp notify agents are not supported")
    for flag in raw.get("flags") or ():
        # TSYNC means nothing to a single-threaded process; LOG is honoured (seccomp_log);
        # SPEC_ALLOW would switch off the speculative store bypass mitigation: refused
        if flag not in ("SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG"):
            raise SpecError("linux.seccomp.flags: %r is not supported by pysandbox-oci" % flag)
    try:
        parsed = oci_seccomp.parse(raw, "linux.seccomp")
        policy = seccomp.SeccompPolicy(parsed[0], (), oci=parsed, source="config.json")
        return seccomp.compile_policy(policy, caps=process.capabilities["bounding"])
    except (ProfileError, SetupError) as e:
        raise SpecError("linux.seccomp: %s" % e) from None


def _hooks(raw):
    out = {}
    for kind, entries in raw.items():
        if kind not in HOOK_KINDS:
            raise SpecError("hooks.%s: unknown hook kind (expected %s)" % (kind, ", ".join(HOOK_KINDS)))
        hooks = []
        for i, entry in enumerate(_type(entries, list, "hooks." + kind)):
            where = "hooks.%s[%d]" % (kind, i)
            _type(entry, dict, where)
            path = _get(entry, "path", str, where, "")
            if not path.startswith("/"):
                raise SpecError("%s.path %r: expected an absolute path" % (where, path))
            args = _get(entry, "args", list, where, [path])
            env = _get(entry, "env", list, where, [])
            timeout = _get(entry, "timeout", int, where, None)
            if timeout is not None and timeout <= 0:
                raise SpecError("%s.timeout: expected a positive number of seconds" % where)
            hooks.append((path, tuple(args), tuple(env), timeout))
        out[kind] = tuple(hooks)
    return out


def process_from(raw):
    """A Process for `exec` from a process.json (validated like config.json's process)."""
    return _process(raw)
