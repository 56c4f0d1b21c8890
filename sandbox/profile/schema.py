"""The profile's schema: every section, every key, its kind, default, range and one-line
description; and the frozen objects a validated profile is made of.

Frozen all the way down: sections are slotted objects whose __setattr__ refuses, lists
are tuples, tables are FrozenMap (a Mapping without any mutating method, so `|=` and item
assignment raise), mounts are MountEntry. (dataclasses would pull in `inspect` and `re`,
which the run path must not pay for; these classes do the same job in a few lines.)
"""
from _collections_abc import Mapping

from pysandbox_common.containers import RUNTIME_MASKED_PATHS, OCI_READONLY_PATHS

NAMESPACES = ("user", "pid", "mount", "net", "uts", "ipc", "cgroup", "time")
MOUNT_KINDS = ("ro-bind", "bind", "tmpfs")
# legacy filesystem list key -> the mount kind its strings make
LEGACY_MOUNT_KEYS = {"ro_bind": "ro-bind", "bind": "bind", "tmpfs": "tmpfs"}
HOST_NAME_MAX = 64   # sethostname(2): EINVAL above this many bytes
PID_MAX_LIMIT = 4194304  # pids.max refuses more (the kernel's PID_MAX_LIMIT on 64-bit)
ID_MAX = 4294967294  # (uid_t)-1 is "no id"
INT_MAX = 2147483647  # the user.* sysctls are ints (proc_dointvec_minmax, 0..INT_MAX)


class Key:
    """One key of a section: kind (how a value is checked and how `extends` combines it),
    default, inclusive range for numbers, and a one-line description."""

    __slots__ = ("kind", "default", "doc", "lo", "hi")

    def __init__(self, kind, default, doc, lo=None, hi=None):
        self.kind, self.default, self.doc, self.lo, self.hi = kind, default, doc, lo, hi

    @property
    def combine(self):
        """How a derived profile's value meets the inherited one: lists append, tables merge,
        everything else replaces."""
        if self.kind in ("strlist", "mounts"):
            return "append"
        if self.kind == "strmap":
            return "merge"
        return "replace"


# kinds: bool, int, float, str, path (absolute), size, limit (int, size or "unlimited"),
# strlist, strmap, enum:a|b, mounts (ordered mount tables), raw (validated by the layer).
SCHEMA = {
    "": {
        "description": Key("str", "", "One line saying what the profile is for (shown by `profile list`)."),
        "extends": Key("str", "", "The profile this one is based on: a name from the search path, or a "
                       "file path relative to this file."),
        "replace": Key("strlist", (), "Sections this file gives whole, instead of combining them with the "
                       "inherited ones (e.g. [\"seccomp\"])."),
    },
    "namespaces": dict(
        user=Key("bool", True, "New user namespace: root inside maps to an unprivileged host id."),
        pid=Key("bool", True, "New pid namespace: the sandbox sees only its own processes."),
        mount=Key("bool", True, "New mount namespace with a composed root (cannot be false)."),
        net=Key("bool", True, "New network namespace (false only with network.mode = \"host\")."),
        uts=Key("bool", True, "New UTS namespace: a hostname of its own."),
        ipc=Key("bool", True, "New IPC namespace: System V IPC and POSIX queues of its own."),
        cgroup=Key("bool", True, "New cgroup namespace: /proc/self/cgroup shows the sandbox's cgroup as root."),
        time=Key("bool", True, "New time namespace (monotonic and boot clocks of its own)."),
    ),
    "idmap": dict(
        uid=Key("int", 0, "The uid the command runs as inside the sandbox.", 0, ID_MAX),
        gid=Key("int", 0, "The gid the command runs as inside the sandbox.", 0, ID_MAX),
        root_host_base=Key("int", 1_000_000_000, "As host root: the first host id of the range inside ids "
                           "map onto (never 0).", 0, ID_MAX),
        size=Key("int", 65536, "How many ids are mapped when a range can be mapped.", 1, ID_MAX + 1),
        pool_size=Key("int", 4096, "As host root: ranges in the pool running sandboxes take one each "
                      "(root_host_base + k x size, k below pool_size); 0 pins every sandbox to root_host_base.",
                      0, 65536),
        subuid=Key("bool", True, "Rootless: map a range from /etc/subuid and /etc/subgid through "
                   "newuidmap/newgidmap when available."),
    ),
    "filesystem": dict(
        rootfs=Key("path", "", "A directory to use as the sandbox's root instead of a composed one."),
        ro_bind=Key("strlist", (), "Read-only binds \"SRC\" or \"SRC:DST\" (one ':' at most), in order; "
                    "part of filesystem.mounts."),
        bind=Key("strlist", (), "Writable binds \"SRC\" or \"SRC:DST\", in order; part of filesystem.mounts."),
        tmpfs=Key("strlist", (), "Empty tmpfs mounts at these absolute paths, in order; part of "
                  "filesystem.mounts."),
        mounts=Key("mounts", (), "Mounts in the order given: tables { kind = \"ro-bind\"|\"bind\"|\"tmpfs\", "
                   "source, target, size, mode }."),
        etc=Key("strlist", (), "Files and directories of the host's /etc bound read-only into the "
                "sandbox's /etc (relative names)."),
        overlay=Key("bool", False, "A writable overlay on the rootfs whose changes are thrown away."),
        tmp_size=Key("size", 64 << 20, "Size cap of the sandbox's /tmp tmpfs (bytes or 64M, 1G...)."),
        proc=Key("bool", True, "Mount a fresh /proc of the sandbox's pid namespace."),
        sys=Key("enum:none|ro", "none", "/sys: \"none\" (absent) or \"ro\" (read-only)."),
        dev=Key("enum:minimal|host", "minimal", "/dev: \"minimal\" (null, zero, full, random, urandom, tty, "
                "pts) or \"host\"."),
        masked_paths=Key("strlist", RUNTIME_MASKED_PATHS, "Paths hidden behind /dev/null or an empty "
                         "read-only tmpfs (the OCI default set)."),
        readonly_paths=Key("strlist", OCI_READONLY_PATHS, "Paths remounted read-only (the OCI default set: "
                           "/proc/sys, /proc/sysrq-trigger, ...)."),
        readonly_root=Key("bool", True, "Make the composed root read-only after it is built."),
        cwd=Key("path", "/", "The working directory the command starts in."),
    ),
    "environment": dict(
        clear=Key("bool", True, "Start from an empty environment (else from the caller's)."),
        set=Key("strmap", (), "Variables set in the sandbox: a table NAME = \"value\"."),
        # `pass` is a Python keyword: reach it with section.get("pass")
        **{"pass": Key("strlist", (), "Names of the caller's variables passed through when set.")},
    ),
    "network": dict(
        mode=Key("enum:none|loopback|host", "none", "\"none\": a namespace with lo only; \"loopback\": lo up; "
                 "\"host\": the host's network."),
        allow_host=Key("bool", True, "Whether network.mode = \"host\" may be used (strict: false)."),
    ),
    "process": dict(
        hostname=Key("str", "sandbox", "The hostname inside (needs namespaces.uts; at most 64 bytes)."),
        new_session=Key("bool", True, "Run the command in a new session, detached from the caller's terminal."),
        close_fds=Key("bool", True, "Close every descriptor above 2 before the command starts."),
        no_new_privs=Key("bool", True, "Set no_new_privs: setuid bits and file capabilities do not raise "
                         "privileges."),
        die_with_parent=Key("bool", True, "Kill the sandbox when its supervisor dies."),
        timeout=Key("float", 0.0, "Wall-clock timeout in seconds (0: none); the sandbox is killed after it."),
    ),
    "capabilities": dict(
        keep=Key("strlist", (), "Capabilities kept inside the user namespace (names, CAP_ optional; \"ALL\")."),
        ambient=Key("strlist", (), "Capabilities raised in the ambient set (each must be in keep)."),
    ),
    "rlimits": {
        "nofile": Key("limit", None, "RLIMIT_NOFILE: open descriptors (integer or \"unlimited\")."),
        "nproc": Key("limit", None, "RLIMIT_NPROC: processes of the user (integer or \"unlimited\")."),
        "core": Key("limit", None, "RLIMIT_CORE: core dump size in bytes (0: no core dumps)."),
        "fsize": Key("limit", None, "RLIMIT_FSIZE: largest file the command may write (size such as 1G)."),
        "stack": Key("limit", None, "RLIMIT_STACK: stack size (size such as 8M)."),
        "as": Key("limit", None, "RLIMIT_AS: address space size (size such as 4G)."),
        "cpu": Key("limit", None, "RLIMIT_CPU: CPU seconds before SIGXCPU (integer)."),
        # Per-user kernel counts are charged to the host identity that created the sandbox's
        # user namespace: these bound one sandbox's share of them (docs/limits.md).
        "sigpending": Key("limit", None, "RLIMIT_SIGPENDING: queued signals of the user (integer)."),
        "msgqueue": Key("limit", None, "RLIMIT_MSGQUEUE: bytes in POSIX message queues (size such as 128K)."),
        "memlock": Key("limit", None, "RLIMIT_MEMLOCK: bytes of locked memory (size such as 1M)."),
    },
    # The user.* sysctls of the sandbox's own user namespace (/proc/sys/user): a new user
    # namespace starts every one at INT_MAX, so without these only the creator's level bounds
    # what the sandbox takes of its creator's per-user counts (docs/limits.md).
    "user_limits": {
        "max_inotify_instances": Key("int", None, "inotify instances the sandbox's users may hold "
                                     "(inotify_init1 gets EMFILE beyond).", 0, INT_MAX),
        "max_inotify_watches": Key("int", None, "inotify watches the sandbox's users may hold "
                                   "(inotify_add_watch gets ENOSPC beyond).", 0, INT_MAX),
        "max_fanotify_groups": Key("int", None, "fanotify groups (fanotify_init gets EMFILE beyond; "
                                   "skipped where the kernel has no fanotify).", 0, INT_MAX),
        "max_fanotify_marks": Key("int", None, "fanotify marks (fanotify_mark gets ENOSPC beyond; "
                                  "skipped where the kernel has no fanotify).", 0, INT_MAX),
        **{"max_%s_namespaces" % kind: Key("int", None, "%s namespaces the sandbox may create inside "
                                           "(ENOSPC beyond; 0: none)." % label, 0, INT_MAX)
           for kind, label in (("user", "User"), ("mnt", "Mount"), ("pid", "PID"), ("net", "Network"),
                               ("uts", "UTS"), ("ipc", "IPC"), ("cgroup", "Cgroup"), ("time", "Time"))},
    },
    "limits": dict(
        required=Key("bool", False, "Fail the run (exit 125) when a cgroup limit cannot be applied."),
        memory=Key("size", 0, "cgroup memory limit (0: none)."),
        memory_swap=Key("size", 0, "Memory plus swap (0: no swap when memory is set; -1: unlimited swap)."),
        pids=Key("int", 0, "cgroup limit on processes and threads (0: none).", 0, PID_MAX_LIMIT),
        cpus=Key("float", 0.0, "CPU bandwidth in CPUs, e.g. 0.5 or 2 (0: none; at least 0.01)."),
        cpu_weight=Key("int", None, "cgroup CPU weight 1..10000 (unset: the kernel's default 100).", 1, 10000),
        io_weight=Key("int", None, "cgroup IO weight 1..10000 (unset: the kernel's default 100).", 1, 10000),
    ),
    "seccomp": Key("raw", None, "The seccomp filter (validated by sandbox.seccomp); see docs/seccomp.md."),
    "landlock": Key("raw", None, "The Landlock ruleset (validated by sandbox.landlock)."),
}

# The keys of the sections a layer validates itself: documented here (for `explain` and the
# docs), checked there. How `extends` combines them follows their TOML type: arrays append,
# tables merge, scalars replace.
RAW_KEYS = {
    "seccomp": {
        "enabled": "Install a seccomp filter (false: none).",
        "import": "An OCI/Docker seccomp JSON file to use as the whole policy (the section's own rules are "
                  "then ignored).",
        "default_action": "What syscalls no rule names get: \"errno\", \"allow\", \"kill\", \"log\", \"trap\".",
        "default_errno": "The errno of \"errno\" actions without their own (default EPERM).",
        "allow": "Syscall names and @groups allowed unconditionally.",
        "deny": "Syscall names and @groups refused with default_errno.",
        "kill": "Syscall names and @groups that kill the process (the verdict names the syscall).",
        "errno": "A table syscall = \"ERRNO\": refused with that errno.",
        "rules": "Argument rules: [[seccomp.rules]] with syscall, args [{index, op, value, mask}], action, errno.",
        "log": "Log denied syscalls to the kernel's audit log.",
        "unknown_syscalls": "\"enosys\": syscalls newer than the policy knows get ENOSYS so libc falls back.",
        "abis": "Allowed ABIs (x86_64 must be listed; x32 and i386 are refused unless listed).",
        "locked": "A filter given with --seccomp is stacked on this one instead of replacing it.",
        "own_terminal_ioctls": "ioctl requests added to the section's ioctl allowlist when the command's terminal "
                               "is the sandbox's own pty (relayed); never TIOCSTI, TIOCLINUX, TIOCSETD, "
                               "TIOCEXCL, TIOCNXCL, TIOCCONS.",
    },
    "landlock": {
        "enabled": "Apply a Landlock ruleset.",
        "best_effort": "Run without Landlock (with a warning) where the kernel lacks it, instead of failing.",
        "read_only": "Paths readable (and listable) under the ruleset; without any path list, the defaults.",
        "read_write": "Paths readable and writable under the ruleset.",
        "execute": "Paths whose files may be executed (and read).",
        "tcp_bind": "TCP ports the sandbox may bind (Landlock ABI 4).",
        "tcp_connect": "TCP ports the sandbox may connect to (Landlock ABI 4).",
        "scope": "Scopes the sandbox is cut off from: \"abstract_unix_socket\", \"signal\" (ABI 6).",
    },
}


# One TOML line per key, for the docs and `explain`; keys not listed get one made from their kind.
EXAMPLES = {
    "description": 'description = "Course grader"',
    "extends": 'extends = "strict"',
    "replace": 'replace = ["seccomp"]',
    "idmap.uid": "uid = 1000",
    "idmap.gid": "gid = 1000",
    "idmap.root_host_base": "root_host_base = 2000000000",
    "idmap.size": "size = 65536",
    "idmap.pool_size": "pool_size = 4096",
    "filesystem.rootfs": 'rootfs = "/srv/images/alpine"',
    "filesystem.ro_bind": 'ro_bind = ["/srv/data:/data", "/opt/tool"]',
    "filesystem.bind": 'bind = ["/srv/out:/out"]',
    "filesystem.tmpfs": 'tmpfs = ["/scratch"]',
    "filesystem.mounts": 'mounts = [{ kind = "tmpfs", target = "/data", size = "16M", mode = 0o700 }]',
    "filesystem.etc": 'etc = ["ssl", "resolv.conf"]',
    "filesystem.tmp_size": 'tmp_size = "256M"',
    "filesystem.sys": 'sys = "ro"',
    "filesystem.dev": 'dev = "minimal"',
    "filesystem.masked_paths": 'masked_paths = ["/proc/cpuinfo"]',
    "filesystem.readonly_paths": 'readonly_paths = ["/proc/driver"]',
    "filesystem.cwd": 'cwd = "/work"',
    "environment.set": 'set = { PATH = "/usr/bin:/bin", LANG = "C.UTF-8" }',
    "environment.pass": 'pass = ["TERM", "TZ"]',
    "network.mode": 'mode = "loopback"',
    "process.hostname": 'hostname = "grader"',
    "process.timeout": "timeout = 10.0",
    "capabilities.keep": 'keep = ["NET_BIND_SERVICE"]',
    "capabilities.ambient": 'ambient = ["NET_BIND_SERVICE"]',
    "rlimits.nofile": "nofile = 1024",
    "rlimits.nproc": "nproc = 512",
    "rlimits.core": "core = 0",
    "rlimits.fsize": 'fsize = "1G"',
    "rlimits.stack": 'stack = "8M"',
    "rlimits.as": 'as = "4G"',
    "rlimits.cpu": "cpu = 60",
    "rlimits.sigpending": "sigpending = 256",
    "rlimits.msgqueue": 'msgqueue = "128K"',
    "rlimits.memlock": 'memlock = "1M"',
    "user_limits.max_inotify_instances": "max_inotify_instances = 32",
    "user_limits.max_inotify_watches": "max_inotify_watches = 8192",
    "user_limits.max_fanotify_groups": "max_fanotify_groups = 0",
    "user_limits.max_fanotify_marks": "max_fanotify_marks = 0",
    "user_limits.max_user_namespaces": "max_user_namespaces = 0",
    "user_limits.max_mnt_namespaces": "max_mnt_namespaces = 0",
    "user_limits.max_pid_namespaces": "max_pid_namespaces = 0",
    "user_limits.max_net_namespaces": "max_net_namespaces = 0",
    "user_limits.max_uts_namespaces": "max_uts_namespaces = 0",
    "user_limits.max_ipc_namespaces": "max_ipc_namespaces = 0",
    "user_limits.max_cgroup_namespaces": "max_cgroup_namespaces = 0",
    "user_limits.max_time_namespaces": "max_time_namespaces = 0",
    "limits.memory": 'memory = "512M"',
    "limits.memory_swap": 'memory_swap = "1G"',
    "limits.pids": "pids = 256",
    "limits.cpus": "cpus = 1.5",
    "limits.cpu_weight": "cpu_weight = 50",
    "limits.io_weight": "io_weight = 50",
    "seccomp.enabled": "enabled = true",
    "seccomp.import": 'import = "/usr/share/containers/seccomp.json"',
    "seccomp.default_action": 'default_action = "errno"',
    "seccomp.default_errno": 'default_errno = "EPERM"',
    "seccomp.allow": 'allow = ["@basic", "ptrace"]',
    "seccomp.deny": 'deny = ["socket"]',
    "seccomp.kill": 'kill = ["ptrace"]',
    "seccomp.errno": 'errno = { clone3 = "ENOSYS" }',
    "seccomp.rules": 'rules = [{ syscall = "socket", args = [{ index = 0, op = "eq", value = "AF_UNIX" }] }]',
    "seccomp.log": "log = true",
    "seccomp.unknown_syscalls": 'unknown_syscalls = "enosys"',
    "seccomp.abis": 'abis = ["x86_64"]',
    "seccomp.locked": "locked = true",
    "seccomp.own_terminal_ioctls": 'own_terminal_ioctls = ["TCSETS", "TIOCSPGRP"]',
    "landlock.enabled": "enabled = true",
    "landlock.best_effort": "best_effort = true",
    "landlock.read_only": 'read_only = ["/usr", "/etc"]',
    "landlock.read_write": 'read_write = ["/tmp"]',
    "landlock.execute": 'execute = ["/usr/bin"]',
    "landlock.tcp_bind": "tcp_bind = [8080]",
    "landlock.tcp_connect": "tcp_connect = [443]",
    "landlock.scope": 'scope = ["abstract_unix_socket", "signal"]',
}


def example_of(name):
    """One TOML line setting "section.key" (for the docs and `explain`), None if unknown."""
    if name in EXAMPLES:
        return EXAMPLES[name]
    section, _, key = name.partition(".")
    spec = SCHEMA.get(section)
    if not key or isinstance(spec, Key) or spec is None or key not in spec:
        return None
    k = spec[key]
    if k.kind == "bool":
        return "%s = %s" % (key, "false" if k.default else "true")
    return None


def schema_keys():
    """Every documented key as "section.key" ("key" for the top level), in schema order."""
    out = []
    for section, spec in SCHEMA.items():
        if isinstance(spec, Key):
            out.extend("%s.%s" % (section, k) for k in RAW_KEYS[section])
        else:
            out.extend(("%s.%s" % (section, k)) if section else k for k in spec)
    return out


def describe_key(name):
    """The one-line description of "section.key" (or a top-level key, or a section), None if unknown."""
    section, _, key = name.partition(".")
    if not key:
        if section in SCHEMA[""]:
            return SCHEMA[""][section].doc
        spec = SCHEMA.get(section)
        if isinstance(spec, Key):
            return spec.doc
        return ("The [%s] section." % section) if spec is not None and section else None
    spec = SCHEMA.get(section)
    if isinstance(spec, Key):
        return RAW_KEYS.get(section, {}).get(key)
    if spec is None or not section or key not in spec:
        return None
    return spec[key].doc


# ---- frozen values ---------------------------------------------------------------------

def _frozen(self, *args):
    raise AttributeError("profiles are frozen")


class FrozenMap(Mapping):
    """A read-only table (environment.set, a tmpfs's options, ...). Not a dict subclass:
    dict's C methods (|=, dict.update) would bypass any override."""

    __slots__ = ("_data",)

    def __init__(self, items=()):
        object.__setattr__(self, "_data", items if type(items) is dict else dict(items))

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)

    def __contains__(self, key):
        return key in self._data

    def __hash__(self):
        return hash(tuple(sorted(self._data.items(), key=repr)))

    def __repr__(self):
        return "FrozenMap(%r)" % (self._data,)

    def __reduce__(self):
        return (FrozenMap, (self._data,))

    __setattr__ = __delattr__ = _frozen


def freeze(value):
    # exact type tests: isinstance against a Mapping subclass goes through ABCMeta, and a
    # profile's seccomp rules make this run a few thousand times per load
    kind = type(value)
    if kind is dict or kind is FrozenMap:
        return FrozenMap({k: freeze(v) for k, v in value.items()})
    if kind is list or kind is tuple:
        return tuple([freeze(v) for v in value])
    return value


def thaw(value):
    """Plain, mutable copies (dict, list) of frozen values, for TOML output and merging."""
    if isinstance(value, (dict, FrozenMap)):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [thaw(v) for v in value]
    if isinstance(value, MountEntry):
        return value.as_table()
    return value


class MountEntry:
    """One mount of filesystem.mounts: kind ("ro-bind", "bind", "tmpfs"), source (host path;
    None for tmpfs), target (absolute, normalized), options (read-only mapping: tmpfs "size"
    in bytes, "mode" as an int), origin (the file or "command line" it came from)."""

    __slots__ = ("kind", "source", "target", "options", "origin")

    def __init__(self, kind, source, target, options=(), origin=None):
        for name, value in (("kind", kind), ("source", source), ("target", target),
                            ("options", options if isinstance(options, FrozenMap) else FrozenMap(options)),
                            ("origin", origin)):
            object.__setattr__(self, name, value)

    __setattr__ = __delattr__ = _frozen

    def _key(self):
        return (self.kind, self.source, self.target, tuple(sorted(self.options.items())))

    def __eq__(self, other):
        return isinstance(other, MountEntry) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return "MountEntry(%r, %r, %r, %r)" % (self.kind, self.source, self.target, dict(self.options))

    def describe(self):
        """How a user would have written it: "ro-bind /srv:/data", "tmpfs /data"."""
        if self.source is None:
            return "%s %s" % (self.kind, self.target)
        if self.source == self.target:
            return "%s %s" % (self.kind, self.source)
        return "%s %s:%s" % (self.kind, self.source, self.target)

    def spec(self):
        """The legacy string form ("SRC", "SRC:DST", or the tmpfs path)."""
        if self.source is None or self.source == self.target:
            return self.target
        return self.source + ":" + self.target

    def __reduce__(self):  # copy and pickle build a new one instead of setting frozen slots
        return (MountEntry, (self.kind, self.source, self.target, dict(self.options), self.origin))

    def as_table(self):
        table = {"kind": self.kind}
        if self.source is not None:
            table["source"] = self.source
        table["target"] = self.target
        table.update(self.options)
        return table


class Section:
    """A validated, frozen section; each section has its own subclass whose __slots__ are its
    keys (see section_class). `get` and `as_dict` serve callers that go by key name."""

    __slots__ = ()
    _keys = ()

    def __init__(self, values):
        for key in self._keys:
            object.__setattr__(self, key, values[key])

    __setattr__ = __delattr__ = _frozen

    def get(self, name, default=None):
        return getattr(self, name, default) if name in self._keys else default

    def __reduce__(self):  # copy and pickle build a new one instead of setting frozen slots
        return (_make_section, (self._section, {k: getattr(self, k) for k in self._keys}))

    def as_dict(self):
        return {k: thaw(getattr(self, k)) for k in self._keys}

    def __eq__(self, other):
        return type(other) is type(self) and all(getattr(self, k) == getattr(other, k) for k in self._keys)

    def __hash__(self):
        return hash(tuple(getattr(self, k) for k in self._keys))

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, ", ".join("%s=%r" % (k, getattr(self, k)) for k in self._keys))


_SECTION_CLASSES = {}


def section_class(section):
    cls = _SECTION_CLASSES.get(section)
    if cls is None:
        keys = tuple(SCHEMA[section])
        # `pass` cannot be a slot name reached by attribute syntax, but a slot it can be
        cls = type(section.capitalize() + "Section", (Section,), {"__slots__": keys, "_keys": keys,
                                                                  "_section": section})
        _SECTION_CLASSES[section] = cls
    return cls


def _make_section(section, values):
    return section_class(section)(values)
