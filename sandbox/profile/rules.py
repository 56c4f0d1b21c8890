"""Every rule a profile must satisfy, as pure functions, and how `extends` combines files.

Nothing here touches the host: no stat, no getrlimit, no kernel call. What depends on the
machine (a bind source that does not exist, an rlimit above the caller's hard limit) is
checked by `host_problems`, which `profile lint` reports and the runtime refuses at plan.

Combining (`extends` and command-line overrides): the schema's defaults first, then the
layers, base first. Lists append (exact duplicates dropped), tables merge (the derived
profile's entry wins), everything else replaces. A `replace = ["key", ...]` list inside a
section makes the named keys this file's value alone (a replaced list or table the file does
not set is empty; a scalar takes its default); a top-level `replace = ["section", ...]` makes
whole sections this file's alone, as if their `replace` listed every key. In [seccomp], a
syscall a derived profile names in allow/deny/kill/errno takes that action: the inherited
plain-name entries for it are dropped (and, for a refusal, its argument rules), so
`deny = ["ptrace"]` works on a profile that allows ptrace.
"""
import os

from .schema import (SCHEMA, RAW_KEYS, Key, LEGACY_MOUNT_KEYS, MOUNT_KINDS, HOST_NAME_MAX, MountEntry,
                     FrozenMap)

COMMAND_LINE = "command line"

# profile key -> the run option that sets it (errors in command-line overrides name the option)
OPTION_OF = {
    "filesystem.rootfs": "--rootfs", "filesystem.overlay": "--overlay", "filesystem.cwd": "--cwd",
    "process.hostname": "--hostname", "network.mode": "--net", "namespaces.net": "--net",
    "idmap.uid": "--uid", "idmap.gid": "--gid", "process.timeout": "--timeout",
    "limits.memory": "--memory", "limits.memory_swap": "--memory-swap", "limits.pids": "--pids",
    "limits.cpus": "--cpus", "limits.cpu_weight": "--cpu-weight", "limits.io_weight": "--io-weight",
    "seccomp.import": "--seccomp", "seccomp": "--seccomp",
    "filesystem.ro_bind": "--ro-bind", "filesystem.bind": "--bind", "filesystem.tmpfs": "--tmpfs",
}
OPTION_OF_KIND = {"ro-bind": "--ro-bind", "bind": "--bind", "tmpfs": "--tmpfs"}

_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE_RLIMITS = ("fsize", "stack", "as", "msgqueue", "memlock")
# runtime-built places no mount may cover (the runtime builds them itself)
_RUNTIME_OWNED = ("/", "/proc", "/dev")


class Invalid(ValueError):
    """A rule broken by one value: message, and optionally the key it belongs to."""


def parse_size(value):
    """'64M' / '1.5g' / 4096 -> bytes; -1 or 'unlimited' -> -1."""
    if isinstance(value, bool):
        raise ValueError("expected a size")
    if isinstance(value, int):
        if value < -1:
            raise ValueError("size must be >= 0")
        return value
    if not isinstance(value, str):
        raise ValueError("expected a size such as 64M")
    text = value.strip().lower()
    if text in ("unlimited", "max", "-1"):
        return -1
    if text.endswith("ib"):
        text = text[:-2]
    elif text.endswith("b") and len(text) > 1 and text[-2] in "kmgt":
        text = text[:-1]
    unit = text[-1:] if text[-1:] in _SIZE_UNITS and not text[-1:].isdigit() else ""
    number = text[: len(text) - len(unit)]
    try:
        amount = float(number)
    except ValueError:
        raise ValueError("expected a size such as 64M, got %r" % value) from None
    if amount != amount or amount in (float("inf"),):
        raise ValueError("expected a finite size, got %r" % value)
    if amount < 0:
        raise ValueError("size must be >= 0")
    return int(amount * _SIZE_UNITS[unit])


def _no_nul(text, what="value"):
    if "\0" in text:
        raise ValueError("%s contains a NUL byte" % what)
    return text


def check_value(key, value, section="", name=""):
    """Validate one value against its Key; return the normalized (frozen) form or raise ValueError."""
    kind = key.kind
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("expected an integer")
        lo = 0 if key.lo is None else key.lo
        if key.hi is not None and not lo <= value <= key.hi:
            raise ValueError("must be within %d..%d, got %d" % (lo, key.hi, value))
        if value < lo:
            raise ValueError("must be >= %d" % lo)
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("expected a number")
        if value != value or value in (float("inf"), float("-inf")) or abs(value) > 1e9:
            raise ValueError("expected a finite number (at most 1e9)")
        if value < 0:
            raise ValueError("must be >= 0")
        return float(value)
    if kind in ("str", "path"):
        if not isinstance(value, str):
            raise ValueError("expected a string")
        _no_nul(value)
        if kind == "path" and value and not value.startswith("/"):
            raise ValueError("must be an absolute path, got %r" % value)
        return value
    if kind == "size":
        return parse_size(value)
    if kind == "limit":
        if isinstance(value, str) and value.strip().lower() in ("unlimited", "infinity"):
            return -1
        if section == "rlimits" and name not in _SIZE_RLIMITS and isinstance(value, str):
            raise ValueError("expected an integer or \"unlimited\"")
        if isinstance(value, (int, str)) and not isinstance(value, bool):
            return parse_size(value)
        raise ValueError("expected an integer, a size or \"unlimited\"")
    if kind == "strlist":
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ValueError("expected a list of strings")
        for v in value:
            _no_nul(v, "%r" % v)
        return tuple(value)
    if kind == "strmap":
        if not isinstance(value, (dict, FrozenMap)) or not all(isinstance(v, str) for v in value.values()):
            raise ValueError("expected a table of strings")
        for k, v in value.items():
            _no_nul(v, "the value of %s" % k)
        return dict(value)
    if kind.startswith("enum:"):
        choices = kind[5:].split("|")
        if value not in choices:
            raise ValueError("expected one of %s, got %r" % (", ".join(choices), value))
        return value
    raise AssertionError(kind)


# ---- mounts --------------------------------------------------------------------------------

def check_target(path, what="mount destination"):
    """A destination inside the sandbox: absolute, no '..', normalized (a leading // survives
    normpath), and never /, /proc or /dev or below them, which the runtime builds itself."""
    if not isinstance(path, str) or not path:
        raise ValueError("%s: expected an absolute path" % what)
    _no_nul(path, what)
    if not path.startswith("/") or ".." in path.split("/"):
        raise ValueError("%s must be an absolute path without '..', got %r" % (what, path))
    path = os.path.normpath("/" + path.lstrip("/"))
    if path in _RUNTIME_OWNED or path.startswith(("/proc/", "/dev/")):
        raise ValueError("refusing to mount over %s (the runtime builds it)" % path)
    return path


def check_source(path, command_line, what="bind source"):
    """A host path to bind. In a profile file it must be absolute (a profile is used from any
    directory); on the command line a relative one means the current directory's."""
    if not isinstance(path, str) or not path:
        raise ValueError("empty %s" % what)
    _no_nul(path, what)
    if not path.startswith("/"):
        if not command_line:
            raise ValueError("%s must be an absolute path (a profile is used from any directory), got %r"
                             % (what, path))
        path = os.path.abspath(path)
    return path


def parse_bind(spec, kind, command_line=False, origin=None):
    """"SRC" or "SRC:DST" -> MountEntry. More than one ':' is refused: "/etc:/a:b" would be
    ambiguous; a path containing ':' is named with a mount table (source = ..., target = ...)."""
    if not isinstance(spec, str):
        raise ValueError("expected \"SRC\" or \"SRC:DST\", got %r" % (spec,))
    if spec.count(":") > 1:
        raise ValueError("%r has more than one ':' (a bind is SRC or SRC:DST; name a path that contains "
                         "':' with a filesystem.mounts table)" % spec)
    src, sep, dst = spec.partition(":")
    if not src:
        raise ValueError("empty bind source in %r" % spec)
    if sep and not dst:
        raise ValueError("empty bind destination in %r" % spec)
    source = check_source(src, command_line)
    target = check_target(dst if sep else source, "bind destination")
    return MountEntry(kind, source, target, (), origin)


def parse_tmpfs(path, command_line=False, origin=None):
    return MountEntry("tmpfs", None, check_target(path, "tmpfs destination"), (), origin)


def mount_table(kind, spec):
    """A run option's value as the mount table with_overrides takes: ("ro-bind", "/srv:/data")
    -> {"kind": "ro-bind", "source": "/srv", "target": "/data"}; relative sources are the
    current directory's; ValueError names what is wrong (more than one ':', /proc, ...)."""
    if kind == "tmpfs":
        entry = parse_tmpfs(spec, True)
    elif kind in ("ro-bind", "bind"):
        entry = parse_bind(spec, kind, True)
    else:
        raise ValueError("mount kind must be one of %s, got %r" % (", ".join(MOUNT_KINDS), kind))
    return entry.as_table()


_TABLE_KEYS = ("kind", "source", "target", "size", "mode", "options")


def parse_mount_table(table, command_line=False, origin=None):
    """{kind, source, target, size, mode} -> MountEntry."""
    if isinstance(table, MountEntry):
        table = table.as_table()
    if not isinstance(table, (dict, FrozenMap)):
        raise ValueError("expected a table { kind = ..., source = ..., target = ... }, got %r" % (table,))
    for k in table:
        if k not in _TABLE_KEYS:
            raise ValueError("unknown mount key %r (known: %s)" % (k, ", ".join(_TABLE_KEYS)))
    options_table = table.get("options")
    if options_table is not None:
        # the MountEntry shape, as programs hand it over: { kind, source, target, options = { size, mode } }
        if not isinstance(options_table, (dict, FrozenMap)) or any(k not in ("size", "mode") for k in options_table):
            raise ValueError("mount options must be a table of size and mode, got %r" % (options_table,))
        table = dict(table)
        del table["options"]
        for k, v in options_table.items():
            if k in table:
                raise ValueError("%s given twice" % k)
            table[k] = v
    kind = table.get("kind")
    if kind not in MOUNT_KINDS:
        raise ValueError("mount kind must be one of %s, got %r" % (", ".join(MOUNT_KINDS), kind))
    options = {}
    if kind == "tmpfs":
        if table.get("source") is not None:
            raise ValueError("a tmpfs has no source")
        target = check_target(table.get("target"), "tmpfs destination")
        if "size" in table:
            size = parse_size(table["size"])
            if size <= 0:
                raise ValueError("tmpfs size must be a positive size")
            options["size"] = size
        if "mode" in table:
            mode = table["mode"]
            if isinstance(mode, str):
                try:
                    mode = int(mode, 8)
                except ValueError:
                    raise ValueError("tmpfs mode must be octal, e.g. \"1777\", got %r" % mode) from None
            if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
                raise ValueError("tmpfs mode must be within 0..0o7777, got %r" % (table["mode"],))
            options["mode"] = mode
        return MountEntry("tmpfs", None, target, options, origin)
    for k in ("size", "mode"):
        if k in table:
            raise ValueError("%s applies to a tmpfs, not a %s" % (k, kind))
    source = check_source(table.get("source"), command_line)
    target = table.get("target")
    target = check_target(source if target is None else target, "bind destination")
    return MountEntry(kind, source, target, (), origin)


def check_mount_order(entries):
    """The resolved mount list, in order: exact repeats dropped (an inherited /usr named again);
    two different mounts at one destination, or a later mount that would hide an earlier one
    (a tmpfs at /data over a bind at /data/in), refused naming both. Returns the kept
    (entry, key) pairs; raises Invalid(message, (entry, key)) naming the later one."""
    kept = []
    for entry, key in entries:
        duplicate = False
        for earlier, _ in kept:
            if earlier.target == entry.target:
                if earlier == entry:
                    duplicate = True
                    break
                raise Invalid("%s and %s (from %s) both mount %s; drop one, or `replace` the inherited list"
                              % (entry.describe(), earlier.describe(), earlier.origin, entry.target), (entry, key))
            if earlier.target.startswith(entry.target.rstrip("/") + "/"):
                raise Invalid("%s would hide %s (from %s), which comes before it; list %s first"
                              % (entry.describe(), earlier.describe(), earlier.origin, entry.target), (entry, key))
        if not duplicate:
            kept.append((entry, key))
    return kept


# ---- combining layers ----------------------------------------------------------------------

class MergeState:
    """What the layers applied so far add up to (plain values; frozen by the build)."""

    __slots__ = ("top", "tables", "raw", "mounts", "origin", "replaced")

    def __init__(self):
        self.top = {}
        self.tables = {s: {} for s, spec in SCHEMA.items() if s and not isinstance(spec, Key)}
        self.raw = {s: {} for s, spec in SCHEMA.items() if isinstance(spec, Key)}
        self.mounts = []      # [(MountEntry, key it came from)]
        self.origin = {}      # (section, key) -> source of the last layer that set it
        self.replaced = []    # [(source, "section.key")]

    def dump(self):
        """A marshal-able form (for the profile cache and with_overrides)."""
        return (self.top, self.tables, self.raw,
                [(e.as_table(), e.origin, k) for e, k in self.mounts],
                list(self.origin.items()), self.replaced)


def _deep_copy(value):
    """Plain dicts and lists (what TOML gives), copied so no layer's tables are shared."""
    kind = type(value)
    if kind is dict or kind is FrozenMap:
        return {k: _deep_copy(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [_deep_copy(v) for v in value]
    if kind is MountEntry:
        return value.as_table()
    return value


def _append(old, new):
    out = list(old)
    for item in new:
        if item not in out:
            out.append(item)
    return out


def apply_layer(state, source, data, fail):
    """Lay one file's tables (or the command line's overrides) over `state`.
    fail(message, section, key, source) raises the ProfileError. `data` becomes part of the
    state (its tables are combined in place): pass a copy of anything still in use."""
    command_line = source == COMMAND_LINE
    top_spec = SCHEMA[""]
    for name, value in data.items():
        if name == "extends":
            continue
        if name in top_spec:
            try:
                value = check_value(top_spec[name], value)
            except ValueError as e:
                fail(str(e), "", name, source)
            if name == "replace":
                for section in value:
                    if section not in state.tables and section not in state.raw:
                        fail("unknown section %r (known: %s)" % (section, ", ".join(s for s in SCHEMA if s)),
                             "", "replace", source)
                    _replace_section(state, section, source)
            else:
                state.top[name] = value
                state.origin[("", name)] = source
            continue
        if name not in SCHEMA:
            if isinstance(value, dict):
                fail("unknown section (known: %s)" % ", ".join(s for s in SCHEMA if s), name, "", source)
            fail("unknown key", "", name, source)
        if not isinstance(value, (dict, FrozenMap)):
            fail("expected a table [%s]" % name, "", name, source)
    for section, table in data.items():
        if section in top_spec or section == "extends":
            continue
        if section in state.raw:
            _apply_raw(state, section, table, source, fail)
        else:
            _apply_table(state, section, table, source, fail, command_line)


def _replace_section(state, section, source):
    """The whole section is this file's: as if its `replace` listed every key (lists and
    tables start empty, not from their defaults; scalars from their defaults)."""
    if section in state.raw:
        state.raw[section] = {}
    else:
        state.tables[section] = {name: (() if key.combine == "append" else {})
                                 for name, key in SCHEMA[section].items() if key.combine != "replace"}
        if section == "filesystem":
            state.mounts = []
    state.origin = {k: v for k, v in state.origin.items() if k[0] != section}
    state.replaced.append((source, section))


def _replace_names(table, known, section, source, fail):
    names = table.get("replace", ())
    if isinstance(names, str) or not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        fail("expected a list of key names", section, "replace", source)
    for n in names:
        if n not in known:
            fail("cannot replace unknown key %r (known: %s)" % (n, ", ".join(sorted(known))), section,
                 "replace", source)
    return tuple(names)


def _apply_table(state, section, table, source, fail, command_line):
    spec = SCHEMA[section]
    current = state.tables[section]
    known = set(spec)
    for name in table:
        if name != "replace" and name not in spec:
            fail("unknown key (known: %s)" % ", ".join(sorted(spec)), section, name, source)
    for name in _replace_names(table, known, section, source, fail):
        # replaced: lists and tables start empty (not from their defaults), scalars from the default
        if spec[name].combine == "append":
            current[name] = ()
        elif spec[name].combine == "merge":
            current[name] = {}
        else:
            current.pop(name, None)
        state.origin.pop((section, name), None)
        if section == "filesystem":
            if name == "mounts":
                state.mounts = []
            elif name in LEGACY_MOUNT_KEYS:
                kind = LEGACY_MOUNT_KEYS[name]
                state.mounts = [(e, k) for e, k in state.mounts if e.kind != kind]
        state.replaced.append((source, "%s.%s" % (section, name)))
    for name, value in table.items():
        if name == "replace":
            continue
        key = spec[name]
        if section == "filesystem" and (name in LEGACY_MOUNT_KEYS or name == "mounts"):
            # Mount keys add to one ordered list, in the order the keys come in the file.
            if not isinstance(value, (list, tuple)):
                fail("expected a list", section, name, source)
            for item in value:
                try:
                    if name == "mounts":
                        entry = parse_mount_table(item, command_line, source)
                    elif name == "tmpfs":
                        if not isinstance(item, str):
                            raise ValueError("expected a list of absolute paths")
                        entry = parse_tmpfs(item, command_line, source)
                    else:
                        entry = parse_bind(item, LEGACY_MOUNT_KEYS[name], command_line, source)
                except ValueError as e:
                    if command_line and name == "mounts" and isinstance(item, (dict, FrozenMap)) \
                            and item.get("kind") in OPTION_OF_KIND:
                        fail(str(e), section, OPTION_OF_KIND[item["kind"]], source)
                    fail(str(e), section, name, source)
                state.mounts.append((entry, name))
            state.origin[(section, name)] = source
            continue
        try:
            value = check_value(key, value, section, name)
        except ValueError as e:
            fail(str(e), section, name, source)
        # The schema's defaults are the first layer: a list adds to them (masked_paths adds to the
        # OCI set) unless replaced.
        if key.combine == "append":
            current[name] = tuple(_append(current.get(name, key.default), value))
        elif key.combine == "merge":
            merged = dict(current.get(name, key.default))
            merged.update(value)
            current[name] = merged
        else:
            current[name] = value
        state.origin[(section, name)] = source


_SECCOMP_ACTION_KEYS = ("allow", "deny", "kill")


def _apply_raw(state, section, table, source, fail):
    """A layer-validated section: arrays append, tables merge, scalars replace (type errors are
    the layer's to report, after the merge)."""
    current = state.raw[section]
    known = set(RAW_KEYS[section])
    for name in _replace_names(table, known, section, source, fail):
        current.pop(name, None)
        state.origin.pop((section, name), None)
        state.replaced.append((source, "%s.%s" % (section, name)))
    if section == "seccomp":
        _seccomp_overrides(current, table)
    for name, value in table.items():
        if name == "replace":
            continue
        old = current.get(name)
        if type(value) is list and type(old) is list:
            current[name] = _append(old, value)
        elif type(value) is dict and type(old) is dict:
            old.update(value)
        else:
            current[name] = value
        state.origin[(section, name)] = source


def _plain_names(value):
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        return set()
    return {v for v in value if isinstance(v, str) and not v.startswith("@")}


def _seccomp_overrides(inherited, table):
    """A syscall the new layer names by plain name in allow/deny/kill/errno loses its inherited
    plain-name entries: the derived profile's action is the one that counts. A refusal also
    drops the inherited argument rules for it (refusing outright is never looser); an allow
    does not, so `allow = ["clone"]` on strict is refused by the layer ("the condition would be
    ignored") instead of silently dropping strict's namespace-flag check: replacing `rules`
    is explicit."""
    allowed = _plain_names(table.get("allow"))
    refused = _plain_names(table.get("deny")) | _plain_names(table.get("kill"))
    errno = table.get("errno")
    if isinstance(errno, (dict, FrozenMap)):
        for names in errno:
            refused.update(n.strip() for n in str(names).split(",") if n.strip() and not n.strip().startswith("@"))
    named = allowed | refused
    if not named:
        return
    for key in _SECCOMP_ACTION_KEYS:
        value = inherited.get(key)
        if isinstance(value, list):
            inherited[key] = [v for v in value if v not in named]
    if isinstance(inherited.get("errno"), dict):
        inherited["errno"] = {k: v for k, v in inherited["errno"].items() if k not in named}
    if refused and isinstance(inherited.get("rules"), list):
        inherited["rules"] = [r for r in inherited["rules"]
                              if not (isinstance(r, dict) and r.get("syscall") in refused)]


# ---- rules across keys ---------------------------------------------------------------------

def cross_checks(s, fail, geteuid=os.geteuid):
    """Rules that involve more than one key. `s`: section name -> frozen section;
    fail(message, section, key) raises."""
    ns = s["namespaces"]
    net = s["network"]
    if net.mode == "host" and ns.net:
        fail("network.mode = \"host\" needs namespaces.net = false", "network", "mode")
    if net.mode != "host" and not ns.net:
        fail("namespaces.net = false shares the host's network; set network.mode = \"host\"", "namespaces", "net")
    if net.mode == "host" and not net.allow_host:
        fail("this profile refuses the host's network (network.allow_host = false)", "network", "mode")
    if not ns.mount:
        fail("pysandbox always composes a root; namespaces.mount cannot be false", "namespaces", "mount")
    if not ns.user and geteuid() != 0:
        fail("without a user namespace the sandbox needs host root", "namespaces", "user")
    fs = s["filesystem"]
    if not fs.cwd.startswith("/"):
        fail("must be an absolute path", "filesystem", "cwd")
    if fs.tmp_size <= 0:
        fail("must be a positive size (a tmpfs of size 0 has no limit at all)", "filesystem", "tmp_size")
    if fs.overlay and not fs.rootfs:
        fail("an overlay needs filesystem.rootfs (the directory it lies over)", "filesystem", "overlay")
    for key in ("masked_paths", "readonly_paths"):
        for path in fs.get(key):
            if not path.startswith("/") or ".." in path.split("/"):
                fail("expected an absolute path without '..', got %r" % path, "filesystem", key)
    for name in fs.etc:
        if not name or name.startswith("/") or ".." in name.split("/"):
            fail("expected a name relative to /etc without '..', got %r" % name, "filesystem", "etc")
    env = s["environment"]
    for key in env.set:
        if not key or "=" in key or "\0" in key:
            fail("invalid environment variable name %r" % key, "environment", "set")
    for key in env.get("pass"):
        if not key or "=" in key:
            fail("invalid environment variable name %r" % key, "environment", "pass")
    proc = s["process"]
    if proc.hostname and not ns.uts:
        fail("a hostname needs namespaces.uts = true", "process", "hostname")
    if len(proc.hostname.encode()) > HOST_NAME_MAX:
        fail("a hostname is at most %d bytes (sethostname), got %d" % (HOST_NAME_MAX, len(proc.hostname.encode())),
             "process", "hostname")
    idmap = s["idmap"]
    if idmap.root_host_base == 0:
        fail("mapping onto host uid 0 is refused", "idmap", "root_host_base")
    if idmap.uid >= idmap.size or idmap.gid >= idmap.size:
        fail("the inside id must be below idmap.size", "idmap", "uid" if idmap.uid >= idmap.size else "gid")
    if idmap.root_host_base + idmap.size > 0xFFFFFFFF:
        fail("root_host_base %d + size %d runs past the last host id" % (idmap.root_host_base, idmap.size),
             "idmap", "root_host_base")
    if idmap.pool_size and idmap.root_host_base + idmap.pool_size * idmap.size > 0xFFFFFFFF:
        fail("root_host_base %d + pool_size %d x size %d runs past the last host id"
             % (idmap.root_host_base, idmap.pool_size, idmap.size), "idmap", "pool_size")
    lim = s["limits"]
    if lim.memory_swap > 0 and lim.memory > 0 and lim.memory_swap < lim.memory:
        fail("memory_swap is memory plus swap and cannot be below memory", "limits", "memory_swap")
    if 0 < lim.cpus < 0.01:
        fail("must be 0 (no limit) or at least 0.01 (the kernel's smallest quota is 1 ms a period)",
             "limits", "cpus")
    if lim.cpus > 1_000_000:
        fail("at most 1000000 CPUs (the kernel refuses a larger quota)", "limits", "cpus")
    caps = s["capabilities"]
    from pysandbox_common.capnames import normalize
    for key in ("keep", "ambient"):
        for cap in caps.get(key):
            try:
                normalize(cap)
            except ValueError as e:
                fail(str(e), "capabilities", key)
    keep = {normalize(c) for c in caps.keep}
    for cap in caps.ambient:
        if normalize(cap) not in keep and "ALL" not in keep:
            fail("ambient capability %s must also be in capabilities.keep" % cap, "capabilities", "ambient")


def host_problems(profile):
    """What this machine would refuse at run time, as (message, section, key, source) tuples:
    bind sources that do not exist, rlimits above the caller's hard limits, a rootfs that is
    not a directory. `profile lint` reports them; the runtime refuses them before fork."""
    out = []
    fs = profile.filesystem
    for entry in fs.mounts:
        if entry.source is not None and not os.path.exists(entry.source):
            out.append(("bind source %s does not exist" % entry.source, "filesystem",
                        "mounts", entry.origin))
    if fs.rootfs and not os.path.isdir(fs.rootfs):
        out.append(("%s is not a directory" % fs.rootfs, "filesystem", "rootfs", None))
    import resource
    names = {"nofile": resource.RLIMIT_NOFILE, "nproc": resource.RLIMIT_NPROC, "core": resource.RLIMIT_CORE,
             "fsize": resource.RLIMIT_FSIZE, "stack": resource.RLIMIT_STACK, "as": resource.RLIMIT_AS,
             "cpu": resource.RLIMIT_CPU}
    for name, res in names.items():
        value = profile.rlimits.get(name)
        if value is None:
            continue
        _, hard = resource.getrlimit(res)
        if hard != resource.RLIM_INFINITY and (value == -1 or value > hard):
            out.append(("rlimits.%s = %s is above the host's hard limit %d (raising a hard limit needs "
                        "CAP_SYS_RESOURCE)" % (name, value, hard), "rlimits", name, None))
    return out
