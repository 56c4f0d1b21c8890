"""Landlock: an unprivileged allowlist of file-system (and TCP port) access for the command.

Profile section (validated at load time by `validate_section`):

    [landlock]
    enabled = true          # default true when the section has any key
    best_effort = false     # true: a kernel without Landlock (or without a right asked
                            # for) downgrades with a warning instead of failing
    read_only = []          # absolute paths inside the sandbox: read files, list dirs
    execute = []            # read + execute
    read_write = []         # everything except creating device nodes
    tcp_bind = []           # ports (ABI >= 4); giving the key restricts bind() to them
    tcp_connect = []        # ports (ABI >= 4); giving the key restricts connect() to them
    scope = []              # "abstract_unix_socket", "signal" (ABI >= 6)

With no path listed the policy matches the composed root (`for_root`): read+execute on
/usr, /bin, /sbin, /lib*, read on /etc, /proc, /sys, read-write-ioctl on the device
nodes under /dev, read-write on /tmp and /dev/shm, read+execute on what the runtime
bound read-only and read-write on what it bound read-write (`apply(extra_ro=,
extra_rw=)`). With paths listed, exactly those paths are allowed.

Kernel rules this module follows:
  * The ruleset handles every file-system right the running ABI knows (REFER needs
    ABI 2, TRUNCATE ABI 3, IOCTL_DEV ABI 5); a right that is handled and not granted
    beneath a path is denied there. Rights for directories only (READ_DIR, MAKE_*,
    REMOVE_*, REFER) are refused by the kernel on a rule for a file, so they are
    masked off by the type of the opened path.
  * landlock_restrict_self() needs no_new_privs or CAP_SYS_ADMIN in the current user
    namespace; the runtime sets no_new_privs before calling `apply`.
  * Rules are added through O_PATH descriptors opened inside the final root, so they
    bind to the objects the command sees, and the descriptors are closed before exec.
"""
import os

from . import native
from .errors import ProfileError, SetupError

LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
LANDLOCK_RULE_NET_PORT = 2

EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13        # ABI 2
TRUNCATE = 1 << 14     # ABI 3
IOCTL_DEV = 1 << 15    # ABI 5

NET_BIND_TCP = 1 << 0      # ABI 4
NET_CONNECT_TCP = 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0   # ABI 6
SCOPE_SIGNAL = 1 << 1
SCOPES = {"abstract_unix_socket": SCOPE_ABSTRACT_UNIX_SOCKET, "signal": SCOPE_SIGNAL}

FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV

ACCESS = {
    "ro": READ_FILE | READ_DIR,
    "rx": EXECUTE | READ_FILE | READ_DIR,
    # device nodes stay impossible to create even where everything else is allowed
    "rw": (1 << 16) - 1 & ~(MAKE_CHAR | MAKE_BLOCK),
    "dev": READ_FILE | READ_DIR | WRITE_FILE | TRUNCATE | IOCTL_DEV,
}

# (path, access, essential): a missing essential default path gets a warning, a missing
# optional one (absent on many roots: /lib32, /sys, ...) is skipped silently.
DEFAULT_RULES = (
    ("/usr", "rx", True), ("/bin", "rx", False), ("/sbin", "rx", False), ("/lib", "rx", False),
    ("/lib32", "rx", False), ("/lib64", "rx", False), ("/libx32", "rx", False),
    ("/etc", "ro", True), ("/proc", "ro", True), ("/sys", "ro", False),
    ("/dev", "dev", True), ("/dev/shm", "rw", False), ("/tmp", "rw", True),
)


def fs_rights(abi_version):
    if abi_version < 1:
        return 0
    rights = (1 << 13) - 1
    if abi_version >= 2:
        rights |= REFER
    if abi_version >= 3:
        rights |= TRUNCATE
    if abi_version >= 5:
        rights |= IOCTL_DEV
    return rights


def abi():
    """Landlock ABI version of the running kernel; 0 when it has none (or it is disabled)."""
    import ctypes
    rc = native.syscall("landlock_create_ruleset", ctypes.c_void_p(None), ctypes.c_size_t(0),
                        ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION))
    return rc if rc > 0 else 0


class LandlockPlan:
    """The layer's plan: the policy plus the paths the runtime itself bound, and the probe
    verify uses to prove the ruleset is in force."""

    __slots__ = ("policy", "extra_ro", "extra_rw", "probe")

    def __init__(self, policy, extra_ro, extra_rw, probe):
        for key, value in (("policy", policy), ("extra_ro", extra_ro), ("extra_rw", extra_rw), ("probe", probe)):
            object.__setattr__(self, key, value)

    def __setattr__(self, name, value):
        raise AttributeError("LandlockPlan is frozen")


def plan(profile, context):
    """The profile's policy and the mount plan -> LandlockPlan (supervisor, before fork)."""
    policy = profile.landlock
    if policy is None:
        return None
    mounts = context.mounts
    # rw binds and every --tmpfs (owned by the sandbox user) are writable
    extra_rw = tuple(dst for _, dst, writable, _ in mounts.binds if writable) + tuple(mounts.tmpfs)
    # Read-only binds get read and execute, like /usr.
    extra_ro = tuple(dst for _, dst, writable, _ in mounts.binds if not writable and dst != "/usr")
    if mounts.rootfs:
        import stat
        # An image root brings its own layout: allow reading and executing each of its
        # top-level directories (it is mounted read-only anyway); writes stay limited to
        # /tmp and rw binds. "/" itself stays unlisted, as in the composed root, so the
        # verify stage can prove the ruleset is in force. lstat: an image's top-level
        # symlink (x -> /) resolves inside the sandbox, not on the host.
        extra_ro += tuple("/" + e for e in sorted(os.listdir(mounts.rootfs))
                          if e not in ("tmp", "dev", "proc", "sys")
                          and stat.S_ISDIR(os.lstat(os.path.join(mounts.rootfs, e)).st_mode))
    return LandlockPlan(policy, extra_ro, extra_rw, probe_for(policy, extra_rw))


def _covers(paths, target):
    return any(target == p or target.startswith(p.rstrip("/") + "/") for p in paths)


def probe_for(policy, extra_rw=()):
    """What verify probes to see that the ruleset holds, following the policy:
    ("list", "/") when no rule grants listing "/" (the composed root's policy);
    ("write", "/dev/null") when "/" is granted but no rule grants writing /dev/null
    (e.g. read_only = ["/"]); None when the policy grants both (nothing to probe
    without side effects: the runtime warns that the ruleset is not verified)."""
    if not policy.explicit:
        return ("list", "/")
    if not _covers(policy.read_only + policy.read_write + policy.execute, "/"):
        return ("list", "/")
    if not _covers(policy.read_write + tuple(extra_rw), "/dev/null"):
        return ("write", "/dev/null")
    return None


def child(part, launch):
    """The command's half (stage "landlock"); warnings go to the supervisor."""
    from . import channel
    for warning in apply(part.policy, extra_ro=part.extra_ro, extra_rw=part.extra_rw) or ():
        channel.send(launch.msg_w, channel.WARNING, warning)
    if part.probe is None:
        channel.send(launch.msg_w, channel.WARNING, "landlock: the policy grants listing / and writing "
                     "/dev/null, so verify has nothing to probe: the ruleset is applied but not verified")


def expect(part):
    return {"landlock": part.probe} if part.probe is not None else {}


class LandlockPolicy:
    """Frozen result of validate_section."""

    __slots__ = ("enabled", "best_effort", "read_only", "read_write", "execute",
                 "tcp_bind", "tcp_connect", "scope")

    def __init__(self, enabled=True, best_effort=False, read_only=(), read_write=(), execute=(),
                 tcp_bind=None, tcp_connect=None, scope=()):
        values = dict(enabled=enabled, best_effort=best_effort, read_only=tuple(read_only),
                      read_write=tuple(read_write), execute=tuple(execute),
                      tcp_bind=None if tcp_bind is None else tuple(tcp_bind),
                      tcp_connect=None if tcp_connect is None else tuple(tcp_connect), scope=tuple(scope))
        for key, value in values.items():
            object.__setattr__(self, key, value)

    def __setattr__(self, name, value):
        raise AttributeError("LandlockPolicy is frozen")

    def __repr__(self):
        return "LandlockPolicy(%s)" % ", ".join("%s=%r" % (k, getattr(self, k)) for k in self.__slots__)

    def __eq__(self, other):
        return isinstance(other, LandlockPolicy) and all(
            getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __hash__(self):
        return hash(tuple(getattr(self, k) for k in self.__slots__))

    @property
    def explicit(self):
        return bool(self.read_only or self.read_write or self.execute)

    def for_root(self, rw_paths=(), ro_paths=()):
        """[(path, access kind, essential, explicit)] this policy allows. Without listed paths:
        the composed root's defaults plus the runtime's read-only binds (read+execute) and
        read-write binds; with listed paths exactly those."""
        if self.explicit:
            return ([(p, "ro", True, True) for p in self.read_only]
                    + [(p, "rx", True, True) for p in self.execute]
                    + [(p, "rw", True, True) for p in self.read_write])
        rules = [(p, kind, essential, False) for p, kind, essential in DEFAULT_RULES]
        rules += [(p, "rx", True, False) for p in ro_paths]
        rules += [(p, "rw", True, False) for p in rw_paths]
        return rules

    def probe_path(self):
        """A path whose directory listing this policy denies, for verify's Landlock probe
        ('/' unless a rule covers it)."""
        if "/" in self.read_only + self.read_write + self.execute:
            return None
        return "/"


_KEYS = ("enabled", "best_effort", "read_only", "read_write", "execute", "tcp_bind", "tcp_connect", "scope")


def validate_section(raw):
    """The [landlock] section as a LandlockPolicy, None when disabled; ProfileError(key=) when invalid."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ProfileError("expected a table", key="landlock")
    for key in raw:
        if key not in _KEYS:
            raise ProfileError("unknown key (known: %s)" % ", ".join(sorted(_KEYS)), key=key)
    values = {}
    for key in ("enabled", "best_effort"):
        if key in raw:
            if not isinstance(raw[key], bool):
                raise ProfileError("expected true or false", key=key)
            values[key] = raw[key]
    for key in ("read_only", "read_write", "execute"):
        paths = raw.get(key, [])
        if not isinstance(paths, (list, tuple)):
            raise ProfileError("expected a list of absolute paths", key=key)
        clean = []
        for path in paths:
            if not isinstance(path, str) or not path.startswith("/"):
                raise ProfileError("expected an absolute path, got %r" % (path,), key=key)
            if "\0" in path:
                raise ProfileError("path contains a NUL byte", key=key)
            clean.append(os.path.normpath(path) if path != "//" else "/")
        values[key] = clean
    for key in ("tcp_bind", "tcp_connect"):
        if key in raw:
            ports = raw[key]
            if not isinstance(ports, (list, tuple)) or any(
                    isinstance(p, bool) or not isinstance(p, int) or not 0 <= p <= 65535 for p in ports):
                raise ProfileError("expected a list of TCP ports (0-65535)", key=key)
            values[key] = list(ports)
    if "scope" in raw:
        scope = raw["scope"]
        if not isinstance(scope, (list, tuple)) or any(not isinstance(s, str) or s not in SCOPES for s in scope):
            raise ProfileError("expected a list of %s" % " / ".join(sorted(SCOPES)), key="scope")
        values["scope"] = list(scope)
    if not values.get("enabled", bool(raw)):
        return None  # checked all the same: a typo must not wait until the layer is turned on
    return LandlockPolicy(**values)


def _no_new_privs():
    return native.prctl(native.PR_GET_NO_NEW_PRIVS, stage="landlock") == 1


def _has_sys_admin():
    from . import caps
    return bool(caps.current()["CapEff"] >> 21 & 1)


def apply(policy, extra_ro=(), extra_rw=()):
    """Restrict this process (and everything it executes) to the policy. Returns warnings
    for the runtime to print; raises SetupError("landlock", errno, detail)."""
    import ctypes

    warnings = []
    if policy is None or not policy.enabled:
        return warnings
    version = abi()
    if version < 1:
        import errno
        err = native.errno() or errno.ENOSYS
        if policy.best_effort:
            return ["landlock: the kernel does not offer Landlock; running without it (best_effort)"]
        raise SetupError("landlock", err, "the kernel does not offer Landlock (required by the profile)")

    handled_fs = fs_rights(version)
    handled_net = 0
    net_rules = []
    for key, right in (("tcp_bind", NET_BIND_TCP), ("tcp_connect", NET_CONNECT_TCP)):
        ports = getattr(policy, key)
        if ports is None:
            continue
        if version < 4:
            message = "%s needs Landlock ABI 4, the kernel has ABI %d" % (key, version)
            if not policy.best_effort:
                raise SetupError("landlock", 95, message)  # EOPNOTSUPP
            warnings.append("landlock: " + message + "; not restricted (best_effort)")
            continue
        handled_net |= right
        net_rules += [(right, port) for port in ports]
    scoped = 0
    for name in policy.scope:
        if version < 6:
            message = "scope %s needs Landlock ABI 6, the kernel has ABI %d" % (name, version)
            if not policy.best_effort:
                raise SetupError("landlock", 95, message)
            warnings.append("landlock: " + message + "; not restricted (best_effort)")
            continue
        scoped |= SCOPES[name]

    if not _no_new_privs() and not _has_sys_admin():
        raise SetupError("landlock", 1, "Landlock needs no_new_privs (process.no_new_privs = true) "
                         "or CAP_SYS_ADMIN in the sandbox")

    class RulesetAttr(ctypes.Structure):
        _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                    ("scoped", ctypes.c_uint64)]

    class PathBeneathAttr(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    class NetPortAttr(ctypes.Structure):
        _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]

    # The attribute struct grew with the ABI; pass the size this kernel knows.
    attr_size = 8 if version < 4 else 16 if version < 6 else 24
    attr = RulesetAttr(handled_fs, handled_net, scoped)
    ruleset = native.check(native.syscall("landlock_create_ruleset", ctypes.byref(attr),
                                          ctypes.c_size_t(attr_size), ctypes.c_uint32(0)),
                           "landlock", "landlock_create_ruleset")
    try:
        for path, kind, essential, explicit in policy.for_root(tuple(extra_rw), tuple(extra_ro)):
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError as e:
                if explicit:
                    raise SetupError("landlock", e.errno, "%s: %s (listed in the profile)" % (
                        path, os.strerror(e.errno))) from None
                if essential:
                    warnings.append("landlock: %s: %s; no rule added" % (path, os.strerror(e.errno)))
                continue
            try:
                allowed = ACCESS[kind] & handled_fs
                if not _is_dir(fd):
                    allowed &= FILE_RIGHTS
                rule = PathBeneathAttr(allowed, fd)
                native.check(native.syscall("landlock_add_rule", ctypes.c_int(ruleset),
                                            ctypes.c_int(LANDLOCK_RULE_PATH_BENEATH), ctypes.byref(rule),
                                            ctypes.c_uint32(0)), "landlock", "landlock_add_rule " + path)
            finally:
                os.close(fd)
        for right, port in net_rules:
            rule = NetPortAttr(right, port)
            native.check(native.syscall("landlock_add_rule", ctypes.c_int(ruleset),
                                        ctypes.c_int(LANDLOCK_RULE_NET_PORT), ctypes.byref(rule),
                                        ctypes.c_uint32(0)), "landlock", "landlock_add_rule port %d" % port)
        native.check(native.syscall("landlock_restrict_self", ctypes.c_int(ruleset), ctypes.c_uint32(0)),
                     "landlock", "landlock_restrict_self")
    finally:
        os.close(ruleset)
    return warnings


def _is_dir(fd):
    import stat
    return stat.S_ISDIR(os.fstat(fd).st_mode)
