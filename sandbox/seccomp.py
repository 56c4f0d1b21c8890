"""The seccomp layer: profile section -> policy -> BPF (parent, cached) -> installed filter (child).

Three phases, each in the process where the kernel's rules want it:

* validate_section (profile load): pure Python over seccomp_groups' tables; no libseccomp.
* compile_policy (supervisor, before fork): libseccomp via pyseccomp builds the program with the
  binary-tree optimisation; the bytes are cached on disk keyed by everything that changes them, so a
  warm start never imports pyseccomp.
* install (child, last step before execve): one seccomp(2) call through ctypes. It needs
  no_new_privs (or CAP_SYS_ADMIN), which the runtime has already set.

libseccomp compares arguments as 64-bit values, but the kernel truncates `int` arguments (ioctl's
cmd, socket's family) to 32 bits, and libseccomp cannot express "allow ioctl except TIOCSTI" in an
allowlist (a conditional rule beside an unconditional allow is dropped; one whose action equals the
default is refused). So a short hand-written BPF prefix runs before libseccomp's program: it refuses
x32 calls, answers numbers the policy does not know with ENOSYS, and checks "guards" — non-allow
rules with argument conditions, compared on exactly the bits given by their mask. The prefix only
looks at arch and nr except inside a guarded syscall, so the kernel's per-syscall action cache
(5.11+) still skips the filter for constant-allow syscalls.
"""
import os

from .errors import ProfileError, SetupError
from .seccomp_groups import (AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, CONSTANTS, ERRNOS, GROUPS, HOLES, MAX_NR,
                             SYSCALLS_X86_64, X32_SYSCALL_BIT)

CACHE_FORMAT = b"PSBPF001"
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_LOG = 2
SECCOMP_FILTER_FLAG_NEW_LISTENER = 8
SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100
ENOSYS = 38

RET_KILL_PROCESS = 0x80000000
RET_KILL_THREAD = 0x00000000
RET_TRAP = 0x00030000
RET_ERRNO = 0x00050000
RET_USER_NOTIF = 0x7FC00000
RET_TRACE = 0x7FF00000
RET_LOG = 0x7FFC0000
RET_ALLOW = 0x7FFF0000

ACTION_NAMES = ("allow", "errno", "kill", "kill_thread", "trap", "log")
OP_NAMES = {"eq": "eq", "==": "eq", "ne": "ne", "!=": "ne", "lt": "lt", "<": "lt", "le": "le", "<=": "le",
            "gt": "gt", ">": "gt", "ge": "ge", ">=": "ge", "masked_eq": "masked_eq", "&=": "masked_eq"}
ABIS = ("x86_64", "x32", "i386")
SECTION_KEYS = ("enabled", "import", "default_action", "default_errno", "allow", "deny", "errno", "kill",
                "rules", "log", "unknown_syscalls", "abis", "locked", "own_terminal_ioctls")

# ioctl requests no profile may add to own_terminal_ioctls: no program needs them on its own
# terminal, and each is an attack tool on a terminal that is not (TIOCSTI/TIOCLINUX inject input,
# TIOCSETD switches the line discipline, TIOCEXCL/TIOCNXCL lock others out, TIOCCONS redirects
# the console).
NEVER_OWN_TERMINAL = ("TIOCSTI", "TIOCLINUX", "TIOCSETD", "TIOCEXCL", "TIOCNXCL", "TIOCCONS")

# Counters for tests and `--verbose`: a warm start shows cache_hits and no compiles.
stats = {"compiles": 0, "cache_hits": 0, "cache_rejected": 0, "cache_write_errors": 0}


class SeccompPolicy:
    """A validated seccomp section. Frozen and hashable; `fingerprint` covers what shapes the BPF.

    rules: ((syscall name, action, args), ...), action = ("allow",) / ("errno", n) / ("kill",) ...,
    args = ((index, op, value, mask), ...). `oci` holds an imported profile (then `rules` is empty).
    """

    # locked: a filter given on the command line (--seccomp) is stacked on top of this one
    # instead of replacing it (the kernel then answers with the stricter of the two).
    # own_terminal: ioctl requests (sorted numbers) allowed on top of the ioctl allowlist when the
    # only terminal the sandbox can reach is its own pty (see for_own_terminal).
    __slots__ = ("default_action", "rules", "log", "unknown_enosys", "abis", "oci", "source", "locked",
                 "own_terminal", "_fingerprint")

    def __init__(self, default_action, rules, log=False, unknown_enosys=True, abis=("x86_64",), oci=None,
                 source="", locked=False, own_terminal=()):
        for name, value in (("default_action", default_action), ("rules", tuple(rules)), ("log", log),
                            ("unknown_enosys", unknown_enosys), ("abis", tuple(abis)), ("oci", oci),
                            ("source", source), ("locked", locked), ("own_terminal", tuple(own_terminal)),
                            ("_fingerprint", None)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError("seccomp policies are frozen")

    def _key(self):
        return (self.default_action, self.rules, self.unknown_enosys, self.abis, self.oci, self.own_terminal)

    def for_own_terminal(self):
        """The policy for a run whose stdio terminal is the sandbox's own pty (the supervisor
        relays it), or None when it would be this one.

        The ioctl allowlist keeps every program away from a terminal that is not its own: the
        caller's, passed through. With the relay the caller's terminal never enters and the only
        terminal the sandbox can reach is a pty of its own devpts, so the requests a program makes
        on its own terminal (job control, its modes, its size) are safe and are added; the
        section's refusals (TIOCSTI, TIOCLINUX) are checked first and still win.
        """
        if not self.own_terminal:
            return None
        mask = 0xFFFFFFFF
        extra = tuple(("ioctl", ("allow",), ((1, "masked_eq", value, mask),)) for value in self.own_terminal)
        return SeccompPolicy(self.default_action, self.rules + extra, log=self.log,
                             unknown_enosys=self.unknown_enosys, abis=self.abis, source=self.source,
                             locked=self.locked)

    def __eq__(self, other):
        return isinstance(other, SeccompPolicy) and self._key() == other._key() and self.log == other.log

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        what = "import %s" % self.source if self.oci else "%d rules" % len(self.rules)
        return "SeccompPolicy(default=%r, %s)" % (self.default_action, what)

    def fingerprint(self):
        # computed once: a frozen policy's key never changes, and strict's takes 0.4 ms
        if self._fingerprint is None:
            object.__setattr__(self, "_fingerprint", repr(self._key()))
        return self._fingerprint

    @property
    def has_kill_rules(self):
        """True when some syscall is answered by killing: the runtime should ask for a listener."""
        if self.default_action[0].startswith("kill"):
            return True
        if self.oci:
            return self.oci[0][0].startswith("kill") or any(r[1][0].startswith("kill") for r in self.oci[2])
        return any(action[0].startswith("kill") for _, action, _ in self.rules)


# --------------------------------------------------------------------------------------------------
# validation


def _errno(value, key):
    if isinstance(value, bool):
        raise ProfileError("expected an errno name such as EPERM", key=key)
    if isinstance(value, int):
        if not 0 <= value <= 4094:
            # the kernel's range of error returns ends at 4095, and libseccomp refuses it
            raise ProfileError("errno must be 0..4094", key=key)
        return value
    if isinstance(value, str) and value.upper() in ERRNOS:
        return ERRNOS[value.upper()]
    raise ProfileError("unknown errno %r (known: %s)" % (value, ", ".join(sorted(ERRNOS))), key=key)


def _action(value, errno_value, key):
    if value not in ACTION_NAMES:
        raise ProfileError("unknown action %r (known: %s)" % (value, ", ".join(ACTION_NAMES)), key=key)
    return ("errno", errno_value) if value == "errno" else (value,)


def _names(value, key):
    """Syscall names and @groups -> tuple of syscall names, in order, without duplicates."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ProfileError("expected a list of syscall names or @groups", key=key)
    out = []
    for item in value:
        if item.startswith("@"):
            if item[1:] not in GROUPS:
                raise ProfileError("unknown syscall group %r (known: %s)"
                                   % (item, ", ".join("@" + g for g in sorted(GROUPS))), key=key)
            members = GROUPS[item[1:]]
        elif item in SYSCALLS_X86_64:
            members = (item,)
        else:
            raise ProfileError("unknown syscall %r" % item, key=key)
        out.extend(m for m in members if m not in out)
    return tuple(out)


def _value(value, key):
    if isinstance(value, bool):
        raise ProfileError("expected an integer or a constant name", key=key)
    if isinstance(value, int):
        if not -(2**63) <= value < 2**64:
            raise ProfileError("value out of range", key=key)
        return value & (2**64 - 1)
    if isinstance(value, str):
        total = 0
        for part in value.split("|"):
            part = part.strip()
            if part in CONSTANTS:
                total |= CONSTANTS[part]
                continue
            try:
                total |= int(part, 0)
            except ValueError:
                raise ProfileError("unknown constant %r (known: %s)" % (part, ", ".join(sorted(CONSTANTS))),
                                   key=key) from None
        return total
    raise ProfileError("expected an integer or a constant name", key=key)


def _args(raw, key):
    if not isinstance(raw, list):
        raise ProfileError("expected a list of {index, op, value[, mask]}", key=key)
    out = []
    for cond in raw:
        if not isinstance(cond, dict):
            raise ProfileError("expected a table {index, op, value[, mask]}", key=key)
        unknown = set(cond) - {"index", "op", "value", "mask"}
        if unknown:
            raise ProfileError("unknown argument key %s" % ", ".join(sorted(unknown)), key=key)
        index = cond.get("index")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= 5:
            raise ProfileError("argument index must be 0..5", key=key)
        op = OP_NAMES.get(str(cond.get("op", "eq")).lower())
        if op is None:
            raise ProfileError("unknown operator %r (known: %s)" % (cond.get("op"), ", ".join(sorted(set(OP_NAMES)))),
                               key=key)
        if "value" not in cond:
            raise ProfileError("argument condition needs a value", key=key)
        # A list of values means "any of them" (only for eq and masked_eq): the rule is
        # expanded into one rule per value, and the compiler turns a set of them back into a
        # binary search (see _switch).
        if isinstance(cond["value"], list):
            if op not in ("eq", "masked_eq"):
                raise ProfileError("a list of values only goes with op = \"eq\" or \"masked_eq\"", key=key)
            if not cond["value"]:
                raise ProfileError("an empty list of values matches nothing", key=key)
            value = tuple(dict.fromkeys(_value(v, key) for v in cond["value"]))
        else:
            value = _value(cond["value"], key)
        if op == "masked_eq":
            if "mask" not in cond:
                raise ProfileError("masked_eq needs a mask", key=key)
            mask = _value(cond["mask"], key)
            for one in (value if isinstance(value, tuple) else (value,)):
                if one & ~mask:
                    raise ProfileError("value %#x has bits outside the mask %#x: it never matches" % (one, mask),
                                       key=key)
        elif "mask" in cond:
            raise ProfileError("mask only goes with op = \"masked_eq\"", key=key)
        else:
            mask = 2**64 - 1
        if any(c[0] == index for c in out):
            raise ProfileError("two conditions on argument %d in one rule (libseccomp cannot AND them; "
                               "write two rules)" % index, key=key)
        out.append((index, op, value, mask))
    return tuple(sorted(out, key=lambda c: c[0]))


def _expand(args):
    """Conditions with a list of values -> the tuple of plain condition tuples they stand for."""
    combos = [()]
    for index, op, value, mask in args:
        values = value if isinstance(value, tuple) else (value,)
        combos = [c + ((index, op, v, mask),) for c in combos for v in values]
    return tuple(combos)


_VALIDATED = {}       # marshal of a section without an import -> its SeccompPolicy
_VALIDATED_MAX = 64
_MISSING = object()


def validate_section(raw):
    """Check a [seccomp] table; return a SeccompPolicy, or None when `enabled = false`.

    A section that imports no file is a pure function of its table, and its policy is
    frozen: a process that loads the same profile again (an API caller, `pysandbox
    serve`) gets the policy it validated before (two thirds of a strict load's time)."""
    if isinstance(raw, dict) and "import" not in raw:
        import marshal
        try:
            key = marshal.dumps(raw)
        except ValueError:  # a value marshal cannot write: validated every time
            return _validate_section(raw)
        policy = _VALIDATED.get(key, _MISSING)
        if policy is _MISSING:
            policy = _validate_section(raw)
            if len(_VALIDATED) < _VALIDATED_MAX:
                _VALIDATED[key] = policy
        return policy
    return _validate_section(raw)


def _validate_section(raw):
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ProfileError("expected a table", key="seccomp")
    for key in raw:
        if key not in SECTION_KEYS:
            raise ProfileError("unknown key (known: %s)" % ", ".join(SECTION_KEYS), key=key)
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ProfileError("expected true or false", key="enabled")
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise ProfileError("expected true or false", key="log")
    locked = raw.get("locked", False)
    if not isinstance(locked, bool):
        raise ProfileError("expected true or false", key="locked")
    unknown = raw.get("unknown_syscalls", "enosys")
    if unknown not in ("enosys", "default"):
        raise ProfileError("expected \"enosys\" or \"default\"", key="unknown_syscalls")
    abis = raw.get("abis", ["x86_64"])
    if not isinstance(abis, list) or not abis or any(a not in ABIS for a in abis):
        raise ProfileError("expected a list from %s" % ", ".join(ABIS), key="abis")
    if "x86_64" not in abis:
        raise ProfileError("the native ABI x86_64 must be listed", key="abis")
    default_errno = _errno(raw.get("default_errno", "EPERM"), "default_errno")
    # Without an explicit default: a section with an allow list is an allowlist (refuse the
    # rest), one with only refusals is a denylist (allow the rest). Refusing everything by
    # default for `deny = [...]` alone would kill the program at its first syscall.
    implicit = "errno" if raw.get("allow") else "allow"
    default_action = _action(raw.get("default_action", implicit), default_errno, "default_action")

    # Every key is validated even when an import overrides the rules: a typo is an error either way.
    rules = []
    seen = {}  # syscall -> action of its unconditional rule

    def add(name, action, args, key):
        if not args:
            if name in seen and seen[name] != action:
                raise ProfileError("%s has two different unconditional actions (%s and %s)"
                                   % (name, _action_text(seen[name]), _action_text(action)), key=key)
            if name in seen:
                return
            seen[name] = action
        rules.append((name, action, args))

    # A syscall named by its own name in deny, kill or errno is refused even when a @group of
    # `allow` has it (strict: `allow = ["@basic"]` with `errno = { openat2 = "ENOSYS" }`); named
    # in both `allow` and a refusal, it stays a conflict.
    plain_allow = {n for n in _names_list(raw.get("allow", []))}
    named_refusals = set(_names_list(raw.get("deny", []))) | set(_names_list(raw.get("kill", [])))
    if isinstance(raw.get("errno"), dict):
        for names in raw["errno"]:
            named_refusals.update(_names_list(names))
    for name in _names(raw.get("allow", []), "allow"):
        if name in named_refusals and name not in plain_allow:
            continue
        add(name, ("allow",), (), "allow")
    for name in _names(raw.get("deny", []), "deny"):
        add(name, ("errno", default_errno), (), "deny")
    for name in _names(raw.get("kill", []), "kill"):
        add(name, ("kill",), (), "kill")
    per_errno = raw.get("errno", {})
    if not isinstance(per_errno, dict):
        raise ProfileError("expected a table syscall = \"ERRNO\"", key="errno")
    for names, value in per_errno.items():
        code = _errno(value, "errno")
        for name in _names(names, "errno"):
            add(name, ("errno", code), (), "errno")
    raw_rules = raw.get("rules", [])
    if not isinstance(raw_rules, list):
        raise ProfileError("expected an array of tables [[seccomp.rules]]", key="rules")
    for number, rule in enumerate(raw_rules):
        key = "rules[%d]" % number
        if not isinstance(rule, dict):
            raise ProfileError("expected a table", key=key)
        extra = set(rule) - {"syscall", "syscalls", "action", "errno", "args", "comment"}
        if extra:
            raise ProfileError("unknown key %s (known: syscall(s), action, errno, args, comment)"
                               % ", ".join(sorted(extra)), key=key)
        names = _names(rule.get("syscalls", rule.get("syscall", [])), key + ".syscall")
        if not names:
            raise ProfileError("a rule needs `syscall` or `syscalls`", key=key)
        code = _errno(rule.get("errno", default_errno), key + ".errno")
        action = _action(rule.get("action", "allow"), code, key + ".action")
        args = _args(rule.get("args", []), key + ".args")
        if args and action[0] != "allow" and any(op not in ("eq", "masked_eq") for _, op, _, _ in args):
            raise ProfileError("a %s rule with argument conditions may only use eq and masked_eq "
                               "(it is checked before the allow rules)" % action[0], key=key + ".args")
        for name in names:
            for one in _expand(args):
                add(name, action, one, key)
    # A conditional allow beside an unconditional refusal of the same syscall is an allowlist of
    # argument values with a fallback ("ioctl: these requests, the rest ENOTTY"); our own prefix
    # compiles it (libseccomp would drop the condition), so only eq/masked_eq and x86_64 alone.
    # Beside an unconditional allow the condition would mean nothing.
    for name, action, args in rules:
        if args and action[0] == "allow" and name in seen:
            if seen[name][0] == "allow":
                raise ProfileError("%s has an unconditional allow and a conditional allow; the condition "
                                   "would be ignored" % name, key="rules")
            if abis != ["x86_64"]:
                raise ProfileError("%s: a conditional allow with an unconditional fallback needs "
                                   "abis = [\"x86_64\"]" % name, key="rules")
            if any(op not in ("eq", "masked_eq") for _, op, _, _ in args):
                raise ProfileError("%s: a conditional allow with an unconditional fallback may only use eq "
                                   "and masked_eq" % name, key="rules")
    guards = [r for r in rules if r[2] and r[1][0] != "allow"]
    if guards and abis != ["x86_64"]:
        raise ProfileError("non-allow rules with argument conditions need abis = [\"x86_64\"]", key="rules")
    own_terminal = _own_terminal_ioctls(raw.get("own_terminal_ioctls", []), rules, seen.get("ioctl", default_action))

    imported = raw.get("import")
    if imported is not None:
        if not isinstance(imported, str) or not imported:
            raise ProfileError("expected a path to an OCI seccomp JSON file", key="import")
        if not enabled:
            return None
        from . import oci_seccomp
        path = os.path.abspath(imported)
        oci = oci_seccomp.load(path)
        # An import replaces the section's own rules (the section may be inherited from a base
        # profile, or the import may come from --seccomp): the imported file is the policy.
        # Imported profiles compile faithfully: no ENOSYS prefix, their own architectures.
        return SeccompPolicy(oci[0], (), log=log, unknown_enosys=False, abis=("x86_64",), oci=oci, source=path,
                             locked=locked)
    if not enabled:
        return None
    return SeccompPolicy(default_action, tuple(rules), log=log, unknown_enosys=unknown == "enosys",
                         abis=tuple(abis), locked=locked, own_terminal=own_terminal)


def _names_list(value):
    """The plain syscall names (not @groups) of an allow/deny/kill value or an errno key."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",")]
    if not isinstance(value, (list, tuple)):
        return []
    return [v for v in value if isinstance(v, str) and v and not v.startswith("@")]


def _own_terminal_ioctls(raw, rules, fallback):
    """Validate own_terminal_ioctls; return the requests (sorted numbers) it adds to the ioctl
    allowlist, or () when there is no allowlist to widen (ioctl allowed or refused outright: the
    own pty gets what every descriptor gets)."""
    key = "own_terminal_ioctls"
    if not isinstance(raw, list):
        raise ProfileError("expected a list of ioctl request names or numbers", key=key)
    never = {CONSTANTS[name]: name for name in NEVER_OWN_TERMINAL}
    values = []
    for item in raw:
        value = _value(item, key)
        if value > 0xFFFFFFFF:
            raise ProfileError("%r: an ioctl request is a 32-bit number" % (item,), key=key)
        if value in never:
            raise ProfileError("%s stays refused on every terminal (no program needs it on its own terminal; "
                               "it is an attack tool on another's)" % never[value], key=key)
        values.append(value)
    allowlist = [args for name, action, args in rules if name == "ioctl" and args and action[0] == "allow"]
    if not values or not allowlist or fallback[0] == "allow":
        return ()
    already = {args[0][2] for args in allowlist if len(args) == 1 and args[0][0] == 1
               and args[0][3] & 0xFFFFFFFF == 0xFFFFFFFF}
    return tuple(sorted(set(values) - already))


def _action_text(action):
    return action[0] + ("(%d)" % action[1] if len(action) > 1 else "")


# --------------------------------------------------------------------------------------------------
# compile and cache


def _sha256():
    # The builtin _sha256 loads in microseconds; hashlib pulls in OpenSSL (~5 ms), which
    # every sandbox start would pay for its cache lookup.
    try:
        from _sha256 import sha256
    except ImportError:
        from hashlib import sha256
    return sha256


def default_cache_dir():
    from .cache import cache_dir
    return cache_dir()


_libseccomp_version = None


def libseccomp_version():
    """'2.5.4', read through ctypes without pyseccomp (warm starts hash it into the cache key)."""
    global _libseccomp_version
    if _libseccomp_version is None:
        import ctypes

        class Version(ctypes.Structure):
            _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]
        try:
            from . import native
            lib = native.libseccomp()
            lib.seccomp_version.restype = ctypes.POINTER(Version)
            v = lib.seccomp_version().contents
            _libseccomp_version = "%d.%d.%d" % (v.major, v.minor, v.micro)
        except (OSError, AttributeError, SetupError):
            _libseccomp_version = "none"
    return _libseccomp_version


def _libseccomp_stamp():
    """Identifies the installed libseccomp for the cache key without loading it (a dlopen
    costs a warm start about a millisecond): its file's size and mtime; the version
    through ctypes only where the library is not in a standard directory."""
    for directory in ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/lib64", "/usr/lib",
                      "/lib"):
        try:
            st = os.stat(os.path.join(directory, "libseccomp.so.2"))
        except OSError:
            continue
        return "%s:%d:%d" % (directory, st.st_size, st.st_mtime_ns)
    return libseccomp_version()


def _compiler_stamp():
    """Size and mtime of the compiler's own sources: an edited compiler never reads old programs."""
    here = os.path.dirname(os.path.abspath(__file__))
    out = []
    for name in ("seccomp.py", "seccomp_groups.py", "oci_seccomp.py"):
        try:
            st = os.stat(os.path.join(here, name))
            out.append("%d:%d" % (st.st_size, st.st_mtime_ns))
        except OSError:
            out.append("-")
    return ",".join(out)


def cache_key(policy, caps=(), notify_kills=False):
    sha256 = _sha256()
    parts = [CACHE_FORMAT.decode(), policy.fingerprint(), _libseccomp_stamp(), os.uname().machine,
             "notify" if notify_kills else "kill", _compiler_stamp()]
    if policy.oci:
        from . import oci_seccomp
        have = oci_seccomp.normalize_caps(caps)
        parts.append("ALL" if have is None else ",".join(sorted(have)))
        if oci_seccomp.uses_kernel_version(policy.oci):
            parts.append("kernel=%d.%d" % oci_seccomp.kernel_version())
    return sha256("\0".join(parts).encode()).hexdigest()


def _cache_path(cache_dir, key):
    return os.path.join(cache_dir, key + ".bpf")


def _cache_load(cache_dir, key):
    """The cached program, or None. Never trusts a file it did not verify: owner, mode, header, hash."""
    sha256 = _sha256()
    try:
        fd = os.open(_cache_path(cache_dir, key), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022 or st.st_size > 65536:
            stats["cache_rejected"] += 1
            return None
        data = os.read(fd, st.st_size + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    header = len(CACHE_FORMAT) + 32
    bpf = data[header:]
    if (data[:len(CACHE_FORMAT)] != CACHE_FORMAT or not bpf or len(bpf) % 8
            or sha256(key.encode() + bpf).digest() != data[len(CACHE_FORMAT):header]):
        stats["cache_rejected"] += 1
        return None
    return bpf


def _cache_store(cache_dir, key, bpf):
    sha256 = _sha256()
    try:
        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
        tmp = _cache_path(cache_dir, "%s.%d.tmp" % (key, os.getpid()))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, CACHE_FORMAT + sha256(key.encode() + bpf).digest() + bpf)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, _cache_path(cache_dir, key))
    except OSError:
        # A read-only or foreign cache dir only costs the next start a compile.
        stats["cache_write_errors"] += 1
        try:
            os.unlink(tmp)
        except (OSError, NameError):
            pass


def compile_policy(policy, caps=(), cache_dir=None, notify_kills=False):
    """BPF for `policy` (raw struct sock_filter array), from the cache when it can be.

    caps: the capabilities the sandboxed process keeps (OCI `includes.caps`).
    notify_kills: compile kill actions as SECCOMP_RET_USER_NOTIF so the supervisor learns the syscall
    (see receive_kill); the filter must then be installed with listener=True.
    """
    key = cache_key(policy, caps, notify_kills)
    # this process's copy, for the default cache only (a cache_dir given is the one to use)
    bpf = _COMPILED.get(key) if cache_dir is None else None
    if bpf is not None:
        stats["cache_hits"] += 1
        return bpf
    directory = cache_dir or default_cache_dir()
    bpf = _cache_load(directory, key)
    if bpf is not None:
        stats["cache_hits"] += 1
        if cache_dir is None:
            _remember(key, bpf)
        return bpf
    try:
        bpf = compile_uncached(policy, caps, notify_kills)
    except OSError as e:  # memfd, libseccomp's export: still the seccomp stage, never a bare error
        raise SetupError("seccomp", e.errno or 5, "compiling the filter: %s" % (e.strerror or e)) from None
    stats["compiles"] += 1
    _cache_store(directory, key, bpf)
    if cache_dir is None:
        _remember(key, bpf)
    return bpf


_COMPILED = {}  # cache key (policy, caps, libseccomp, machine) -> BPF, this process's


def _remember(key, bpf):
    if len(_COMPILED) < 64:
        _COMPILED[key] = bpf


def _ret(action, notify_kills):
    kind = action[0]
    if kind == "allow":
        return RET_ALLOW
    if kind == "errno":
        return RET_ERRNO | (action[1] & 0xFFFF)
    if kind in ("kill", "kill_thread"):
        if notify_kills:
            return RET_USER_NOTIF
        return RET_KILL_PROCESS if kind == "kill" else RET_KILL_THREAD
    if kind == "trap":
        return RET_TRAP
    if kind == "log":
        return RET_LOG
    if kind == "trace":
        return RET_TRACE | (action[1] & 0xFFFF)
    raise AssertionError(action)


def compile_uncached(policy, caps=(), notify_kills=False, own_arguments=True, own_tail=True):
    """own_arguments=False leaves argument rules to libseccomp as before the prefix judged them
    itself (benchmarks/seccomp_overhead.py compares the two). own_tail: True takes the shorter
    of `_own_tail`'s second half and libseccomp's, False always libseccomp's, "only" ours
    wherever it can be written (the tests compare the two)."""
    tail = None
    if not policy.oci:
        owned = _prefix_syscalls(policy) if own_arguments else frozenset()
        # Syscalls the prefix judges completely never reach libseccomp's program; the other
        # guards are checked by the prefix, which then falls through to libseccomp for the rest.
        guards = [r for r in policy.rules if r[2] and r[1][0] != "allow" or r[0] in owned]
        rules = [r for r in policy.rules if not (r[2] and r[1][0] != "allow") and r[0] not in owned]
        if own_arguments and own_tail:
            tail = _own_tail(policy, rules, _ret(policy.default_action, notify_kills), notify_kills)
            if tail is not None and own_tail == "only":
                return _checked_length(_prefix(policy, guards, _ret(policy.default_action, notify_kills),
                                               notify_kills, owned) + tail)
    bpf = _libseccomp_program(policy, caps, notify_kills, rules if not policy.oci else None)
    if not policy.oci:
        if tail is not None and len(tail) < len(bpf):
            bpf = tail
        bpf = _prefix(policy, guards, _ret(policy.default_action, notify_kills), notify_kills, owned) + bpf
    return _checked_length(bpf)


def _libseccomp_program(policy, caps, notify_kills, rules):
    """libseccomp's program for `rules` (for an OCI policy: the file's own, resolved here)."""
    try:
        import pyseccomp
    except (ImportError, RuntimeError) as e:
        raise SetupError("seccomp", 0, "cannot compile the policy: pyseccomp/libseccomp missing (%s)" % e) from None
    if policy.oci:
        from . import oci_seccomp
        default, arches, rules = oci_seccomp.resolve(policy.oci, caps)
        arch_ids = {"SCMP_ARCH_X86": pyseccomp.Arch.X86, "SCMP_ARCH_X32": pyseccomp.Arch.X32}
        extra_arches = [arch_ids[a] for a in arches if a in arch_ids]
    else:
        default = policy.default_action
        arch_ids = {"x32": pyseccomp.Arch.X32, "i386": pyseccomp.Arch.X86}
        extra_arches = [arch_ids[a] for a in policy.abis if a in arch_ids]
    default_ret = _ret(default, notify_kills)
    # The native ABI and the others are built as two filters and merged: libseccomp cannot translate
    # a syscall newer than itself (by our number) to another ABI, and would refuse the whole rule.
    program = _new_filter(pyseccomp, default_ret)
    _add_rules(pyseccomp, program, rules, default_ret, notify_kills, policy, native=True)
    if extra_arches:
        foreign = _new_filter(pyseccomp, default_ret)
        for arch in extra_arches:
            foreign.add_arch(arch)
        foreign.remove_arch(pyseccomp.system_arch())
        _add_rules(pyseccomp, foreign, rules, default_ret, notify_kills, policy, native=False)
        program.merge(foreign)
    fd = os.memfd_create("pysandbox-bpf", os.MFD_CLOEXEC)
    try:
        program.export_bpf(open(fd, "rb", closefd=False))
        size = os.lseek(fd, 0, os.SEEK_END)
        bpf = os.pread(fd, size, 0)
    finally:
        os.close(fd)
    return bpf


def _checked_length(bpf):
    if len(bpf) // 8 > 4096:
        raise ProfileError("the compiled filter has %d instructions; the kernel takes 4096" % (len(bpf) // 8),
                           key="seccomp")
    return bpf


def _badarch_ret(default_ret):
    """What a call of an ABI the filter does not take gets (libseccomp's ACT_BADARCH, below)."""
    # A foreign ABI (one the policy does not list) gets the default answer when that is a
    # refusal; a plain kill when kills are notifications (the supervisor names syscalls by
    # the native table) or when the default allows: an allow-by-default policy's rules are
    # written for native numbers, and int 0x80 would walk around every one of them.
    if default_ret == RET_USER_NOTIF or (default_ret & 0xFFFF0000) in (RET_ALLOW, RET_LOG, RET_TRACE):
        return RET_KILL_PROCESS
    return default_ret


def _own_tail(policy, rules, default_ret, notify_kills):
    """The program after the prefix, written here instead of by libseccomp, when the policy is
    x86_64 only and every rule left for it has no argument condition (strict's and default's
    case). None when it is not, and libseccomp writes it as before.

    What it answers is what libseccomp's program answers (the tests compare the two on every
    number and ABI); what differs is the length. libseccomp's tree has a leaf per syscall with a
    rule (strict: 363 instructions after the prefix's 373); this one is a binary search over
    *ranges* of numbers with one answer each (strict: 89 ranges, 183 instructions). The kernel
    checks, converts, JITs and pre-evaluates (its per-syscall action cache) the whole program
    at every filter install, once per run, in time that grows with the length: measured here,
    strict's install went from 0.39-0.47 to 0.30-0.37 ms. A policy of a few scattered rules
    gets a longer range search than libseccomp's tree, so compile_uncached keeps the shorter.
    Walking either costs a few jumps, and the kernel's action cache still answers constant
    allows without running the program (every instruction here is one its emulator follows:
    loads of arch and nr, JGE/JEQ on constants, RET)."""
    if policy.oci or tuple(policy.abis) != ("x86_64",):
        return None
    answer = {}
    for name, action, args in rules:
        if args:
            return None
        nr = SYSCALLS_X86_64.get(name)
        if nr is None:
            return None  # a name only libseccomp knows (or nobody): its program, as before
        ret = _ret(action, notify_kills)
        if answer.setdefault(nr, ret) != ret:
            return None  # two answers for one number: libseccomp's own error, as before
    # Ranges [start, next start) over the unsigned number, each with one answer: a range
    # starts at 0, at every number with a rule and right after it.
    merged = []
    for start in sorted({0} | set(answer) | {nr + 1 for nr in answer}):
        ret = answer.get(start, default_ret)
        if not merged or merged[-1][1] != ret:
            merged.append((start, ret))
    badarch = _badarch_ret(default_ret)
    code = [(_LD_W_ABS, 0, 0, 4),
            # The prefix sends every other ABI here (libseccomp's program checked the arch first).
            (_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
            (_RET_K, 0, 0, badarch),
            (_LD_W_ABS, 0, 0, 0),
            # x32 numbers never get past the prefix; should one, it is a foreign ABI here too.
            (_JGE_K, 0, 1, X32_SYSCALL_BIT),
            (_RET_K, 0, 0, badarch)]
    code += _range_tree(merged)
    import struct
    return b"".join(struct.pack("<HBBI", op, jt, jf, k & 0xFFFFFFFF) for op, jt, jf, k in code)


def _range_tree(ranges):
    """A binary search with A = the number over sorted [(start, answer)], the first start 0:
    returns the answer of the range A falls in. Every jump is forward and relative; a left
    subtree too long for a conditional jump's 8 bits is jumped over with JA."""
    if len(ranges) == 1:
        return [(_RET_K, 0, 0, ranges[0][1])]
    middle = len(ranges) // 2
    left, right = _range_tree(ranges[:middle]), _range_tree(ranges[middle:])
    if len(left) <= 255:
        return [(_JGE_K, len(left), 0, ranges[middle][0])] + left + right
    return [(_JGE_K, 0, 1, ranges[middle][0]), (_JA, 0, 0, len(left))] + left + right


def _new_filter(pyseccomp, default_ret):
    program = pyseccomp.SyscallFilter(default_ret)
    program.set_attr(pyseccomp.Attr.ACT_BADARCH, _badarch_ret(default_ret))
    program.set_attr(pyseccomp.Attr.CTL_NNP, 0)
    program.set_attr(pyseccomp.Attr.CTL_OPTIMIZE, 2)
    return program


def _add_rules(pyseccomp, program, rules, default_ret, notify_kills, policy, native):
    ops = {"eq": pyseccomp.EQ, "ne": pyseccomp.NE, "lt": pyseccomp.LT, "le": pyseccomp.LE,
           "gt": pyseccomp.GT, "ge": pyseccomp.GE, "masked_eq": pyseccomp.MASKED_EQ}
    for name, action, args in rules:
        ret = _ret(action, notify_kills)
        if ret == default_ret and not args:
            continue  # libseccomp refuses rules that repeat the default (and they change nothing)
        if policy.oci:
            # OCI args are (index, op, value, valueTwo); MASKED_EQ's value is the mask.
            conds = [pyseccomp.Arg(i, ops[op], a, b) for i, op, a, b in args]
        else:
            conds = [pyseccomp.Arg(i, ops[op], mask, value) if op == "masked_eq"
                     else pyseccomp.Arg(i, ops[op], value) for i, op, value, mask in args]
        # runc's rule for repeated indexes: each condition becomes its own rule (OR).
        groups = [conds]
        if len({c._arg for c in conds}) != len(conds):
            groups = [[c] for c in conds]
        for group in groups:
            _add_rule(pyseccomp, program, ret, name, group, policy, native)


def _add_rule(pyseccomp, program, ret, name, conds, policy, native):
    import ctypes
    number = SYSCALLS_X86_64.get(name)
    # By name where libseccomp knows it (so it can translate for x32/i386 in the same filter), by
    # our own number for syscalls newer than the installed libseccomp.
    # libseccomp answers a syscall that exists only on another ABI (socketcall on i386) with a
    # negative pseudo-number that it translates per architecture; -1 is "unknown".
    resolve = pyseccomp._libseccomp.seccomp_syscall_resolve_name
    resolve.restype = ctypes.c_int
    target = resolve(name.encode())
    if target == -1:
        if number is None or not native:
            return  # unknown to libseccomp (and to us, or on this ABI): nothing to translate
        target = number
    try:
        program.add_rule(ret, target, *conds)
    except OSError as e:
        import errno as errno_mod
        if e.errno == errno_mod.EACCES:
            return  # same action as the default
        if e.errno == errno_mod.EEXIST and policy.oci:
            return  # OCI files repeat rules (containers-common lists socket `a2 != 9` twice)
        key = "import" if policy.oci else "rules"
        raise ProfileError("libseccomp refused the rule for %s: %s" % (name, os.strerror(e.errno)), key=key) from None


# BPF opcodes (linux/bpf_common.h)
_LD_W_ABS, _JEQ_K, _JGT_K, _JGE_K, _JA, _RET_K, _AND_K = 0x20, 0x15, 0x25, 0x35, 0x05, 0x06, 0x54


def _prefix_syscalls(policy):
    """Syscalls whose every rule the hand-written prefix compiles (so libseccomp never sees them).

    A syscall qualifies when it has argument conditions, all of them eq or masked_eq (what the
    prefix can compare word by word), and the policy is x86_64 only (the prefix judges native
    calls; libseccomp translates for the other ABIs). Then the whole decision for that syscall —
    refusals, allowed values, the fallback — is a few instructions reached by one comparison of
    the syscall number, instead of libseccomp's tree over every syscall followed by a linear
    chain of 64-bit comparisons (ioctl under strict went from 1.61x to about the cost of a
    constant rule; see docs/seccomp.md).
    """
    if policy.oci or tuple(policy.abis) != ("x86_64",):
        return frozenset()
    conditional, plain = set(), set()
    for name, action, args in policy.rules:
        if not args:
            continue
        if all(op in ("eq", "masked_eq") for _, op, _, _ in args):
            conditional.add(name)
        else:
            plain.add(name)
    return frozenset(n for n in conditional - plain if n in SYSCALLS_X86_64)


# The syscall whose block sits right after the number is loaded (no jump to reach it): the
# argument-checked call programs make most, every isatty() and terminal size query.
HOT_SYSCALL = "ioctl"


def _prefix(policy, guards, default_ret, notify_kills, owned=frozenset()):
    try:
        return _prefix_layout(policy, guards, default_ret, notify_kills, owned, inline_hot=True)
    except ProfileError:
        # the hot block is too large to jump over with a conditional jump (255): all blocks by JA
        return _prefix_layout(policy, guards, default_ret, notify_kills, owned, inline_hot=False)


def _prefix_layout(policy, guards, default_ret, notify_kills, owned, inline_hot):
    """The hand-written head of the program (see the module doc). Labels resolve to forward jumps.

    Layout (x86_64 callers; everything else goes straight to libseccomp's program):
      load nr; for each syscall with argument rules: `jeq nr -> its block` (the hot ioctl path is
      three loads and compares before its own block); then x32, unknown-number ENOSYS, and on to
      libseccomp. A block checks refusals first (a refusal wins over an allow), then allowed
      values, then returns the syscall's unconditional action (or the default) when it is
      `owned`, else falls through to libseccomp.
    """
    code = []  # entries: [op, jt_label_or_int, jf_label_or_int, k]  labels are strings
    labels = {}
    counter = [0]

    def emit(op, k=0, jt=0, jf=0):
        code.append([op, jt, jf, k])

    def label(name):
        labels[name] = len(code)

    def fresh(stem):
        counter[0] += 1
        return "%s%d" % (stem, counter[0])

    # Only x86_64 callers are handled here; libseccomp's program answers i386 and others itself.
    emit(_LD_W_ABS, 4)
    emit(_JEQ_K, AUDIT_ARCH_X86_64, 0, "orig_far")
    emit(_LD_W_ABS, 0)
    by_nr = {}
    unconditional = {}
    for name, action, args in guards:
        if args:
            by_nr.setdefault(SYSCALLS_X86_64[name], []).append((action, args))
        else:
            unconditional[SYSCALLS_X86_64[name]] = action
    for name in owned:
        by_nr.setdefault(SYSCALLS_X86_64[name], [])
    blocks = sorted(by_nr)
    owned_nrs = {SYSCALLS_X86_64[n] for n in owned}
    hot = SYSCALLS_X86_64[HOT_SYSCALL]
    if inline_hot and hot in blocks:
        blocks.remove(hot)
        emit(_JEQ_K, hot, 0, "after_hot")
        _emit_block(hot, by_nr[hot], unconditional, owned_nrs, default_ret, emit, label, fresh, notify_kills)
        label("after_hot")
    # Dispatch: `jeq nr, 0, +1; ja block` keeps every jump short whatever the blocks' sizes.
    for nr in blocks:
        emit(_JEQ_K, nr, 0, 1)
        emit(_JA, "block%d" % nr)
    # x32 (same arch, nr | 0x40000000): refused unless the policy lists the ABI.
    emit(_JGE_K, X32_SYSCALL_BIT, "x32", 0)
    if policy.unknown_enosys:
        emit(_JGT_K, MAX_NR, "enosys", 0)
        for low, high in HOLES:  # sorted and disjoint: below a hole is below every later one
            emit(_JGE_K, low, 0, "orig_near")
            emit(_JGT_K, high, 0, "enosys")
    label("orig_near")
    emit(_JA, "orig")
    label("enosys")
    emit(_RET_K, RET_ERRNO | ENOSYS)
    label("x32")
    x32_at = len(code)
    # An ABI the policy does not list gets what libseccomp gives a foreign arch: the default
    # when that refuses, a kill when the default allows (a deny list names x86_64 numbers;
    # x32's are others, so an allowed x32 call would walk around every rule).
    emit(_RET_K, RET_ALLOW if "x32" in policy.abis else _badarch_ret(default_ret))
    label("orig_far")
    emit(_JA, "orig")
    for nr in blocks:
        label("block%d" % nr)
        _emit_block(nr, by_nr[nr], unconditional, owned_nrs, default_ret, emit, label, fresh, notify_kills)
    label("orig")
    if "x32" in policy.abis:
        # Let libseccomp's program judge x32 calls by its own table.
        code[x32_at] = [_JA, 0, 0, "orig"]
    import struct
    out = []
    for position, (op, jt, jf, k) in enumerate(code):
        if op == _JA:
            k = labels[k] - position - 1 if isinstance(k, str) else k
        jt = labels[jt] - position - 1 if isinstance(jt, str) else jt
        jf = labels[jf] - position - 1 if isinstance(jf, str) else jf
        if not (0 <= jt <= 255 and 0 <= jf <= 255):
            raise ProfileError("too many argument conditions on one syscall for one BPF jump", key="rules")
        out.append(struct.pack("<HBBI", op, jt, jf, k & 0xFFFFFFFF))
    return b"".join(out)


def _emit_block(nr, entries, unconditional, owned_nrs, default_ret, emit, label, fresh, notify_kills):
    """One syscall's rules: refusals win over allows; then its fallback, or on to libseccomp."""
    single = {(args[0][0], args[0][3], args[0][2] >> 32 & args[0][3] >> 32) for _action, args in entries
              if len(args) == 1}
    if len(single) == 1 and all(len(args) == 1 for _action, args in entries):
        # one argument under one mask: refusals and allows share one switch (a refused value
        # is entered first, so it keeps its refusal)
        ordered = [e for e in entries if e[0][0] != "allow"] + [e for e in entries if e[0][0] == "allow"]
        _emit_rules(ordered, emit, label, fresh, notify_kills)
    else:
        for part in ([e for e in entries if e[0][0] != "allow"], [e for e in entries if e[0][0] == "allow"]):
            _emit_rules(part, emit, label, fresh, notify_kills)
    if nr in owned_nrs:
        emit(_RET_K, _ret(unconditional[nr], notify_kills) if nr in unconditional else default_ret)
    else:
        emit(_JA, "orig")


def _words(value, mask):
    """(offset, word mask, word value) for the words of a 64-bit comparison that matter (little endian)."""
    out = []
    for offset, shift in ((0, 0), (4, 32)):
        word_mask = (mask >> shift) & 0xFFFFFFFF
        if word_mask:
            out.append((offset, word_mask, (value >> shift) & word_mask))
    return out


def _emit_rules(entries, emit, label, fresh, notify_kills):
    """Rules of one syscall that return on a match and fall through otherwise (A may be clobbered).

    Single-condition rules on the same argument and mask whose high word is fixed become one
    switch: a binary search over the low words (log2 of the values instead of two compares
    each). Everything else is compared condition by condition.
    """
    groups = {}
    sequential = []
    for action, args in entries:
        if len(args) == 1:
            index, _op, value, mask = args[0]
            high = (mask >> 32) & 0xFFFFFFFF
            groups.setdefault((index, mask, value >> 32 & high), []).append((value & mask & 0xFFFFFFFF, action))
        else:
            sequential.append((action, args))
    for (index, mask, high_value), cases in groups.items():
        if len(cases) < 3:
            sequential.extend((action, ((index, "masked_eq", (high_value << 32) | low, mask),))
                              for low, action in cases)
            continue
        miss = fresh("switchmiss")
        low_mask = mask & 0xFFFFFFFF
        high_mask = (mask >> 32) & 0xFFFFFFFF
        if high_mask:
            emit(_LD_W_ABS, 16 + 8 * index + 4)
            if high_mask != 0xFFFFFFFF:
                emit(_AND_K, high_mask)
            emit(_JEQ_K, high_value, 0, miss)
        emit(_LD_W_ABS, 16 + 8 * index)
        if low_mask != 0xFFFFFFFF:
            emit(_AND_K, low_mask)
        table = {}
        for low, action in cases:
            table.setdefault(low, action)  # the first rule for a value wins, as in libseccomp
        _switch(sorted(table.items()), emit, label, fresh, miss, notify_kills)
        label(miss)
    for action, args in sequential:
        miss = fresh("miss")
        for index, _op, value, mask in args:
            for offset, word_mask, word_value in _words(value, mask):
                emit(_LD_W_ABS, 16 + 8 * index + offset)
                if word_mask != 0xFFFFFFFF:
                    emit(_AND_K, word_mask)
                emit(_JEQ_K, word_value, 0, miss)
        emit(_RET_K, _ret(action, notify_kills))
        label(miss)


def _switch(cases, emit, label, fresh, miss, notify_kills):
    """A binary search over sorted (value, action) with A = the value; no match jumps to `miss`.

    Leaves of up to two values compare in a row; a leaf's match returns right there, so no
    jump reaches further than one subtree.
    """
    if len(cases) <= 2:
        for value, action in cases:
            emit(_JEQ_K, value, 0, 1)
            emit(_RET_K, _ret(action, notify_kills))
        emit(_JA, miss)
        return
    middle = len(cases) // 2
    right = fresh("right")
    emit(_JGE_K, cases[middle][0], right, 0)
    _switch(cases[:middle], emit, label, fresh, miss, notify_kills)
    label(right)
    _switch(cases[middle:], emit, label, fresh, miss, notify_kills)


# --------------------------------------------------------------------------------------------------
# install (child) and the kill verdict (supervisor / PID 1)

def _c():
    from . import native
    return native.libc()


def install(bpf, log=False, listener=False, handoff=None):
    """Install `bpf` on the calling thread; the caller execs right after.

    listener=True adds SECCOMP_FILTER_FLAG_NEW_LISTENER and returns the listener fd (close-on-exec:
    the kernel creates it O_CLOEXEC). The sandboxed program must never hold it — it could answer its
    own notifications — so with `handoff` (a connected AF_UNIX socket fd) the listener is sent over
    it with SCM_RIGHTS and closed here, and the fd number it had is returned. Everything sendmsg
    needs is built before the filter exists; afterwards only sendmsg(2) and close(2) run.
    """
    import ctypes
    from . import native
    libc = native.libc()

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    if not bpf or len(bpf) % 8 or len(bpf) // 8 > 4096:
        raise SetupError("seccomp", 22, "invalid BPF program (%d bytes)" % len(bpf))
    buffer = ctypes.create_string_buffer(bytes(bpf), len(bpf))
    program = SockFprog(len(bpf) // 8, ctypes.addressof(buffer))
    flags = (SECCOMP_FILTER_FLAG_LOG if log else 0) | (SECCOMP_FILTER_FLAG_NEW_LISTENER if listener else 0)
    message = _FdMessage() if (listener and handoff is not None) else None
    result = native.check(native.syscall("seccomp", SECCOMP_SET_MODE_FILTER, flags, ctypes.byref(program)),
                          "seccomp")
    if not listener:
        return None
    if message is None:
        return int(result)
    message.set_fd(int(result))
    sent = libc.sendmsg(ctypes.c_int(handoff), ctypes.byref(message.header), ctypes.c_int(0x4000))  # MSG_NOSIGNAL
    err = native.errno()
    libc.close(ctypes.c_int(int(result)))
    if sent < 0:
        native.fail("seccomp", err, "cannot hand the seccomp listener to the supervisor")
    return int(result)


class _FdMessage:
    """A prebuilt msghdr carrying one fd with SCM_RIGHTS (or receiving one)."""

    def __init__(self):
        import ctypes

        class IoVec(ctypes.Structure):
            _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

        class MsgHdr(ctypes.Structure):
            _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.c_void_p),
                        ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p),
                        ("controllen", ctypes.c_size_t), ("flags", ctypes.c_int)]

        self.ctypes = ctypes
        self.byte = ctypes.create_string_buffer(b"L", 1)
        self.iov = IoVec(ctypes.addressof(self.byte), 1)
        # struct cmsghdr { size_t len; int level; int type; } + one int, padded: CMSG_SPACE(4) = 24
        self.control = ctypes.create_string_buffer(24)
        self.header = MsgHdr(None, 0, ctypes.addressof(self.iov), 1, ctypes.addressof(self.control), 24, 0)

    def set_fd(self, fd):
        import struct
        self.ctypes.memmove(self.control, struct.pack("=Qiii", 20, 1, 1, fd), 20)  # SOL_SOCKET, SCM_RIGHTS

    def get_fd(self):
        import struct
        length, level, kind, fd = struct.unpack("=Qiii", self.control.raw[:20])
        if length >= 20 and level == 1 and kind == 1:
            return fd
        return -1


def recv_listener(sock_fd):
    """Receive a listener fd sent by install(..., handoff=...); returns the new fd (close-on-exec)."""
    import ctypes
    libc = _c()
    message = _FdMessage()
    from . import native
    native.check(libc.recvmsg(ctypes.c_int(sock_fd), ctypes.byref(message.header), ctypes.c_int(0x40000000)),
                 "seccomp", "receiving the seccomp listener")  # MSG_CMSG_CLOEXEC
    fd = message.get_fd()
    if fd < 0:
        raise SetupError("seccomp", 0, "the sandbox sent no seccomp listener")
    return fd


def receive_kill(listener_fd, timeout=None):
    """Wait for a kill-rule notification; return (pid, syscall name) or None.

    None means the timeout passed, or no process uses the filter any more (POLLHUP). The notifying
    thread stays blocked inside the syscall — it never runs it — until the caller kills it.
    `pid` is in the PID namespace of the caller of this function.
    """
    notification = receive_notification(listener_fd, timeout)
    if notification is None:
        return None
    return notification["pid"], notification["syscall"]


def receive_notification(listener_fd, timeout=None):
    import ctypes
    import select
    import struct
    libc = _c()
    poller = select.poll()
    poller.register(listener_fd, select.POLLIN)
    while True:
        events = poller.poll(None if timeout is None else int(timeout * 1000))
        if not events:
            return None
        if not events[0][1] & select.POLLIN:
            return None  # POLLHUP: every task using the filter is gone
        buffer = ctypes.create_string_buffer(80)  # struct seccomp_notif; the kernel wants it zeroed
        if libc.ioctl(ctypes.c_int(listener_fd), ctypes.c_ulong(SECCOMP_IOCTL_NOTIF_RECV), buffer) < 0:
            from . import native
            err = native.errno()
            if err in (2, 4):  # ENOENT: the task died before we read it; EINTR
                continue
            raise SetupError("seccomp", err, "reading a seccomp notification")
        ident, pid, _flags, nr, arch, ip = struct.unpack_from("=QIIiIQ", buffer.raw)
        args = struct.unpack_from("=6Q", buffer.raw, 32)
        return {"id": ident, "pid": pid, "nr": nr, "arch": arch, "ip": ip, "args": args,
                "syscall": syscall_name(nr, arch)}


def verdict(notification):
    """The run verdict for a seccomp kill (what PID 1 reports to the supervisor)."""
    return {"reason": "seccomp", "syscall": notification[1] if isinstance(notification, tuple)
            else notification["syscall"]}


# --------------------------------------------------------------------------------------------------
# names, emulation, describe

_BY_NUMBER = None


def syscall_name(nr, arch=AUDIT_ARCH_X86_64):
    global _BY_NUMBER
    if _BY_NUMBER is None:
        _BY_NUMBER = {v: k for k, v in SYSCALLS_X86_64.items()}
    if arch == AUDIT_ARCH_X86_64:
        if nr & X32_SYSCALL_BIT:
            base = nr & ~X32_SYSCALL_BIT
            return "x32:" + _BY_NUMBER.get(base, "syscall_%d" % base) if base < 512 else "x32:syscall_%d" % base
        return _BY_NUMBER.get(nr, "syscall_%d" % nr)
    try:
        import ctypes
        from . import native
        lib = native.libseccomp()
        lib.seccomp_syscall_resolve_num_arch.restype = ctypes.c_void_p
        pointer = lib.seccomp_syscall_resolve_num_arch(ctypes.c_uint32(arch), ctypes.c_int(nr))
        if pointer:
            name = ctypes.string_at(pointer).decode()
            _c().free(ctypes.c_void_p(pointer))
            return name
    except (OSError, SetupError):
        pass
    return "syscall_%d" % nr


def emulate(bpf, nr, arch=AUDIT_ARCH_X86_64, args=(0, 0, 0, 0, 0, 0), ip=0):
    """Run a seccomp BPF program in Python: returns (SECCOMP_RET value, whether it read an argument)."""
    import struct
    args = tuple(args) + (0,) * (6 - len(args))
    data = struct.pack("<iIQ6Q", nr, arch, ip, *[a & (2**64 - 1) for a in args])
    insns = [struct.unpack_from("<HBBI", bpf, i) for i in range(0, len(bpf), 8)]
    a = x = 0
    mem = [0] * 16
    pc = 0
    touched_args = False
    while pc < len(insns):
        code, jt, jf, k = insns[pc]
        pc += 1
        cls = code & 7
        if cls == 0:  # LD
            mode = code & 0xE0
            if mode == 0x20:
                a = struct.unpack_from("<I", data, k)[0]
                touched_args |= k >= 16
            elif mode == 0x00:
                a = k
            elif mode == 0x60:
                a = mem[k]
            else:
                raise ValueError("unsupported load %#x" % code)
        elif cls == 1:  # LDX
            x = mem[k] if code & 0xE0 == 0x60 else k
        elif cls == 2:
            mem[k] = a
        elif cls == 3:
            mem[k] = x
        elif cls == 4:  # ALU
            operand = x if code & 8 else k
            op = code & 0xF0
            a = {0x00: lambda: a + operand, 0x10: lambda: a - operand, 0x20: lambda: a * operand,
                 0x30: lambda: a // operand, 0x40: lambda: a | operand, 0x50: lambda: a & operand,
                 0x60: lambda: a << operand, 0x70: lambda: a >> operand, 0x80: lambda: -a,
                 0x90: lambda: a % operand, 0xA0: lambda: a ^ operand}[op]() & 0xFFFFFFFF
        elif cls == 5:  # JMP
            op = code & 0xF0
            if op == 0x00:
                pc += k
                continue
            operand = x if code & 8 else k
            taken = {0x10: a == operand, 0x20: a > operand, 0x30: a >= operand, 0x40: bool(a & operand)}[op]
            pc += jt if taken else jf
        elif cls == 6:  # RET
            return (a if code & 0x18 == 0x10 else k), touched_args
        elif cls == 7:
            if code & 0xF8 == 0x00:
                x = a
            else:
                a = x
    raise ValueError("BPF program fell off its end")


def _constant_name(value):
    """An ioctl request's name from CONSTANTS (for describe), else its number in hex."""
    for name, known in CONSTANTS.items():
        if known == value and name.startswith(("TC", "TIOC", "FIO")):
            return name
    return hex(value)


def action_of(ret):
    """SECCOMP_RET value -> ('allow',) / ('errno', n) / ('kill',) / ..."""
    full = ret & 0xFFFF0000
    if ret & 0x80000000:
        return ("kill",)
    if full == RET_ERRNO:
        return ("errno", ret & 0xFFFF)
    return {RET_ALLOW: ("allow",), RET_LOG: ("log",), RET_TRAP: ("trap",), RET_USER_NOTIF: ("notify",),
            RET_KILL_THREAD: ("kill_thread",)}.get(full, ("trace", ret & 0xFFFF))


def allowed(ret):
    return (ret & 0xFFFF0000) in (RET_ALLOW, RET_LOG)


def describe(policy, caps=(), cache_dir=None):
    """Facts about a policy for `pysandbox profile lint`, read off the compiled program itself."""
    if policy is None:
        return {"enabled": False}
    bpf = compile_policy(policy, caps, cache_dir=cache_dir)
    X86 = AUDIT_ARCH_X86_64
    nr = SYSCALLS_X86_64

    def ok(name, *args, arch=X86):
        number = nr[name] if isinstance(name, str) else name
        return allowed(emulate(bpf, number, arch, args)[0])

    allow, deny, conditional = [], [], []
    for name, number in sorted(nr.items(), key=lambda kv: kv[1]):
        ret, touched = emulate(bpf, number, X86)
        if touched:
            conditional.append(name)
        (allow if allowed(ret) else deny).append(name)
    tiocsti = SYSCALLS_X86_64["ioctl"]
    default = policy.oci[0] if policy.oci else policy.default_action
    return {
        "enabled": True,
        "source": policy.source or "profile",
        "default_action": _action_text(default),
        "instructions": len(bpf) // 8,
        "allows_io_uring": ok("io_uring_setup"),
        "allows_userns_creation": (ok("unshare", 0x10000000) or ok("clone", 0x10000000 | 17)
                                   or ok("clone3")),
        "allows_x32": allowed(emulate(bpf, X32_SYSCALL_BIT | 39, X86)[0]),
        "allows_i386": allowed(emulate(bpf, 20, AUDIT_ARCH_I386)[0]),  # getpid on i386
        "allows_socketcall": allowed(emulate(bpf, 102, AUDIT_ARCH_I386)[0]),
        "allows_tiocsti": (allowed(emulate(bpf, tiocsti, X86, (0, 0x5412))[0])
                           or allowed(emulate(bpf, tiocsti, X86, (0, (1 << 32) | 0x5412))[0])),
        "allows_open_by_handle_at": ok("open_by_handle_at"),
        # a set-id bit through chmod or a creating openat would survive on a writable bind's host file
        "allows_setid_modes": ok("fchmodat", 0, 0, 0o4755) or ok("openat", 0, 0, 0o100, 0o2755),
        "own_terminal_ioctls": [_constant_name(v) for v in policy.own_terminal],
        "unknown_syscalls_enosys": action_of(emulate(bpf, MAX_NR + 1, X86)[0]) == ("errno", ENOSYS),
        "allowed": allow,
        "denied": deny,
        "conditional": conditional,
    }


# --------------------------------------------------------------------------------------------------
# the layer interface (sandbox/stages.py): plan in the supervisor, child half last before execve

class SeccompPlan:
    """The layer's part: the compiled programs, and the filters already in force (the command
    inherits the supervisor's own, e.g. when pysandbox runs in a container; ours go on top)."""

    # terminal_policy: the policy for runs that relay the sandbox's own pty (None: the same as the
    # profile's); its program is compiled on the first such run (own_terminal_bpf) and kept in
    # `variants`, so a Sandbox compiles it at most once and runs without a pty never do.
    __slots__ = ("bpf", "extra_bpf", "log", "listener", "mode_before", "filters_before", "terminal_policy", "caps",
                 "variants")

    def __init__(self, **values):
        for key in self.__slots__:
            object.__setattr__(self, key, values[key])

    def __setattr__(self, name, value):
        raise AttributeError("SeccompPlan is frozen")


def plan(profile, context):
    if profile.seccomp is None:
        return None
    from . import native
    caps_part = context.layers.get("caps")
    keep = caps_part.keep if caps_part is not None else ()
    notify_kills = bool(profile.seccomp.has_kill_rules)
    bpf = compile_policy(profile.seccomp, caps=keep, notify_kills=notify_kills)
    extra = context.extra_seccomp
    extra_bpf = compile_policy(extra, caps=keep) if extra is not None else None
    if notify_kills:
        # PID 1 receives the listener over a socketpair and reads notifications after
        # pivot_root, where the host's stdlib may not be visible.
        import select, socket, struct  # noqa: F401,E401
    fields = native.proc_status()
    return SeccompPlan(bpf=bpf, extra_bpf=extra_bpf, log=bool(getattr(profile.seccomp, "log", False)),
                       listener=notify_kills, mode_before=int(fields.get("Seccomp", "0")),
                       filters_before=int(fields.get("Seccomp_filters", "0")),
                       terminal_policy=profile.seccomp.for_own_terminal(), caps=tuple(keep), variants={})


def own_terminal_bpf(part):
    """Supervisor, before the clone of a run that relays a pty: the program the command gets
    (the profile's own when its policy adds nothing for its own terminal)."""
    bpf = part.variants.get("own_terminal")
    if bpf is None:
        if part.terminal_policy is None:
            bpf = part.bpf
        else:
            bpf = compile_policy(part.terminal_policy, caps=part.caps, notify_kills=part.listener)
        part.variants["own_terminal"] = bpf
    return bpf


def expect(part):
    return {"seccomp_mode": part.mode_before, "seccomp_filters_before": part.filters_before}


def child(part, launch):
    """The command's last stage: the filters, then a check that exactly they went on."""
    before = part.filters_before
    if part.extra_bpf is not None:
        # a filter stacked from the command line first; the profile's own stays last
        install(part.extra_bpf)
        before += 1
    # A run that relays a pty has its program ready (own_terminal_bpf, in the supervisor); one
    # that does not — or should the supervisor not have prepared it — gets the profile's own,
    # the stricter of the two.
    bpf = part.variants.get("own_terminal", part.bpf) if launch.tty is not None else part.bpf
    install(bpf, log=part.log, listener=launch.handoff is not None, handoff=launch.handoff)
    # open/read/close only: syscalls the command's own startup needs anyway
    from . import verify
    verify.seccomp_installed(before)
