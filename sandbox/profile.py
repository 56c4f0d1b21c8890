"""Profiles: TOML files validated once, completely, into one frozen object.

A profile is read, merged with the profiles it `extends`, checked key by key
against SCHEMA (unknown keys, wrong types and impossible combinations are errors
that name the file, the key and the line), and frozen. Nothing downstream
mutates it: command-line overrides make a new profile through `with_overrides`.
"""
import os

from .errors import ProfileError

NAMESPACES = ("user", "pid", "mount", "net", "uts", "ipc", "cgroup", "time")

from pysandbox_common.containers import RUNTIME_MASKED_PATHS, OCI_READONLY_PATHS  # noqa: E402,F401

_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


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
    if amount < 0:
        raise ValueError("size must be >= 0")
    return int(amount * _SIZE_UNITS[unit])


# kind names: bool, int, float, str, size, strlist, strmap, enum:<a|b>, raw (validated
# by the layer's own module), limit (int or "unlimited").
SCHEMA = {
    "": {"description": ("str", ""), "extends": ("str", "")},
    "namespaces": {ns: ("bool", True) for ns in NAMESPACES},
    "idmap": {
        "uid": ("int", 0),            # uid inside the sandbox
        "gid": ("int", 0),
        "root_host_base": ("int", 1_000_000_000),  # host root: first host id of the mapped range
        "size": ("int", 65536),       # ids mapped when a range can be mapped
        "subuid": ("bool", True),     # rootless: use /etc/subuid via newuidmap when available
    },
    "filesystem": {
        "rootfs": ("str", ""),
        "ro_bind": ("strlist", ()),
        "bind": ("strlist", ()),
        "tmpfs": ("strlist", ()),
        "etc": ("strlist", ()),
        "overlay": ("bool", False),
        "tmp_size": ("size", 64 << 20),
        "proc": ("bool", True),
        "sys": ("enum:none|ro", "none"),
        "dev": ("enum:minimal|host", "minimal"),
        "masked_paths": ("strlist", RUNTIME_MASKED_PATHS),
        "readonly_paths": ("strlist", OCI_READONLY_PATHS),
        "readonly_root": ("bool", True),
        "cwd": ("str", "/"),
    },
    "environment": {"clear": ("bool", True), "set": ("strmap", ()), "pass": ("strlist", ())},
    "network": {"mode": ("enum:none|loopback|host", "none"), "allow_host": ("bool", True)},
    "process": {
        "hostname": ("str", "sandbox"),
        "new_session": ("bool", True),
        "close_fds": ("bool", True),
        "no_new_privs": ("bool", True),
        "die_with_parent": ("bool", True),
        "timeout": ("float", 0.0),
    },
    "capabilities": {"keep": ("strlist", ()), "ambient": ("strlist", ())},
    "rlimits": {k: ("limit", None) for k in ("nofile", "nproc", "core", "fsize", "stack", "as", "cpu",
                                               "sigpending", "msgqueue", "memlock")},
    "limits": {
        "required": ("bool", False),
        "memory": ("size", 0),        # 0: no limit
        "memory_swap": ("size", 0),   # 0: swap off when memory is set; -1 unlimited swap
        "pids": ("int", 0),
        "cpus": ("float", 0.0),
        "cpu_weight": ("int", 0),
        "io_weight": ("int", 0),
    },
    "seccomp": ("raw", None),
    "landlock": ("raw", None),
}

_SIZE_RLIMITS = ("fsize", "stack", "as", "msgqueue", "memlock")


class Section:
    """A read-only view of one validated profile section."""

    __slots__ = ("_values",)

    def __init__(self, values):
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        raise AttributeError("profiles are frozen")

    def get(self, name, default=None):
        return self._values.get(name, default)

    def as_dict(self):
        return {k: thaw(v) for k, v in self._values.items()}

    def __eq__(self, other):
        return isinstance(other, Section) and self._values == other._values

    def __hash__(self):
        return hash(tuple(sorted(self._values)))

    def __repr__(self):
        return "Section(%r)" % (self._values,)


class FrozenMap(dict):
    """A dict that refuses mutation (for nested tables such as environment.set)."""

    def _refuse(self, *a, **k):
        raise TypeError("profiles are frozen")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse


def freeze(value):
    if isinstance(value, dict):
        return FrozenMap((k, freeze(v)) for k, v in value.items())
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value):
    if isinstance(value, dict):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


class Profile:
    """The validated, frozen profile. Sections are attributes; `name` and `sources` say where it came from."""

    __slots__ = ("name", "sources", "description", "_sections", "raw")

    def __init__(self, name, sources, description, sections, raw):
        for attr, value in (("name", name), ("sources", tuple(sources)), ("description", description),
                            ("_sections", sections), ("raw", freeze(raw))):
            object.__setattr__(self, attr, value)

    def __getattr__(self, name):
        sections = object.__getattribute__(self, "_sections")
        try:
            return sections[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        raise AttributeError("profiles are frozen")

    def as_dict(self):
        out = {"name": self.name, "description": self.description}
        for section, value in self._sections.items():
            out[section] = value.as_dict() if isinstance(value, Section) else thaw(value)
        return out

    def with_overrides(self, overrides, source="command line"):
        """A new profile: this one's raw tables with `overrides` ({section: {key: value}}) laid over."""
        merged = _merge(thaw(self.raw), overrides)
        return _build(self.name, self.sources + (source,), merged, {"*": source})


def _merge(base, top):
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def profile_dirs():
    here = os.path.dirname(os.path.abspath(__file__))
    dirs = []
    extra = os.environ.get("PYSANDBOX_PROFILE_PATH")
    if extra:
        dirs.extend(p for p in extra.split(":") if p)
    home = os.environ.get("HOME")
    if home:
        dirs.append(os.path.join(home, ".config", "pysandbox", "profiles"))
    dirs.append("/etc/pysandbox/profiles")
    # Installed wheel: profiles/ is shipped as sandbox/profiles; source tree: ../profiles.
    dirs.append(os.path.join(here, "profiles"))
    dirs.append(os.path.join(os.path.dirname(here), "profiles"))
    return dirs


def builtin_names():
    names = set()
    for directory in profile_dirs():
        try:
            names.update(f[:-5] for f in os.listdir(directory) if f.endswith(".toml"))
        except OSError:
            pass
    return sorted(names)


def resolve_path(name_or_path):
    if "/" in name_or_path or name_or_path.endswith(".toml"):
        if not os.path.isfile(name_or_path):
            raise ProfileError("no such profile file", source=name_or_path)
        return os.path.abspath(name_or_path)
    for directory in profile_dirs():
        candidate = os.path.join(directory, name_or_path + ".toml")
        if os.path.isfile(candidate):
            return candidate
    raise ProfileError("unknown profile %r (known: %s)" % (name_or_path, ", ".join(builtin_names()) or "none"))


def key_line(text, section, key):
    """Line number of `key` in `[section]` of a TOML text (best effort; TOML parsers drop positions)."""
    current = ""
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("[") and not stripped.startswith("[["):
            current = stripped.strip("[]").strip()
            continue
        if current == section or (section and current.startswith(section + ".")):
            head = stripped.split("=", 1)[0].strip().strip('"')
            if head == key:
                return number
        if not section and current == "" and stripped.split("=", 1)[0].strip() == key:
            return number
    return None


def _read_toml(path):
    import tomllib
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ProfileError(e.strerror or str(e), source=path) from None
    text = data.decode("utf-8", "replace")
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as e:
        line = None
        msg = str(e)
        if "(at line " in msg:
            try:
                line = int(msg.rsplit("(at line ", 1)[1].split(",")[0])
            except ValueError:
                pass
        raise ProfileError("malformed TOML: " + msg.split(" (at line")[0], source=path, line=line) from None


_CACHE_VERSION = 1


def _cache_path(path):
    from .cache import cache_dir
    import zlib
    return os.path.join(cache_dir(), "profile-%08x.marshal" % zlib.crc32(path.encode()))


def _stamp(paths):
    out = []
    for p in paths:
        st = os.stat(p)
        out.append((p, st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


def _load_cached(path):
    """The merged tables of a profile parsed before, if none of its files changed since.

    Parsing TOML costs more than everything else on the run path together (tomllib pulls
    in re and friends), so the merged, not yet validated, tables are kept in marshal form;
    validation still runs on every load, so the frozen profile is always checked."""
    import marshal
    from .cache import read_trusted
    data = read_trusted(_cache_path(path))
    if data is None:
        return None
    try:
        version, stamp, chain, merged, origin = marshal.loads(data)
        if version != _CACHE_VERSION or chain[0] != path or _stamp(chain) != stamp:
            return None
    except (ValueError, TypeError, EOFError, OSError):
        return None
    return chain, merged, origin


def load_profile(name_or_path="default"):
    """Load, merge (`extends`), validate and freeze a profile by built-in name or file path."""
    path = resolve_path(name_or_path)
    cached = _load_cached(path)
    if cached is not None:
        chain, merged, origin = cached
        try:
            return _build(_profile_name(chain[0]), tuple(chain), merged, origin)
        except ProfileError:
            pass  # report it with line numbers from a fresh parse
    chain, merged, origin, texts = _parse_chain(path)
    profile = _build(_profile_name(chain[0]), tuple(chain), merged, origin, texts)
    try:
        import marshal
        from .cache import write_atomic
        write_atomic(_cache_path(path), marshal.dumps((_CACHE_VERSION, _stamp(chain), tuple(chain), merged, origin)))
    except (ValueError, OSError):
        pass
    return profile


def _profile_name(path):
    return os.path.basename(path)[:-5] if path.endswith(".toml") else path


def _parse_chain(path):
    chain = []
    texts = {}
    layers = []
    while True:
        if path in chain:
            raise ProfileError("`extends` loops back to this file", source=path, key="extends")
        chain.append(path)
        data, text = _read_toml(path)
        texts[path] = text
        layers.append((path, data))
        parent = data.get("extends", "")
        if not parent:
            break
        if not isinstance(parent, str):
            raise ProfileError("expected a profile name", source=path, key="extends",
                               line=key_line(text, "", "extends"))
        try:
            if "/" in parent or parent.endswith(".toml"):
                # A file named by `extends` is relative to the profile that names it.
                parent = os.path.join(os.path.dirname(path), parent)
            path = resolve_path(parent)
        except ProfileError as e:
            raise ProfileError(str(e), source=chain[-1], key="extends", line=key_line(text, "", "extends")) from None
    merged = {}
    origin = {}  # (section, key) -> source path, for error messages
    for path, data in reversed(layers):
        for section, value in data.items():
            if isinstance(value, dict) and SCHEMA.get(section) != ("raw", None):
                for key in value:
                    origin[(section, key)] = path
            else:
                origin[(section, "")] = path
                origin[("", section)] = path
        merged = _merge(merged, data)
    merged.pop("extends", None)
    return chain, merged, origin, texts


def _check(kind, value):
    """Validate one value; return its normalized form or raise ValueError."""
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("expected an integer")
        if value < 0:
            raise ValueError("must be >= 0")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("expected a number")
        if value != value or value in (float("inf"), float("-inf")) or abs(value) > 1e9:
            raise ValueError("expected a finite number (at most 1e9)")
        if value < 0:
            raise ValueError("must be >= 0")
        return float(value)
    if kind == "str":
        if not isinstance(value, str):
            raise ValueError("expected a string")
        return value
    if kind == "size":
        return parse_size(value)
    if kind == "limit":
        if isinstance(value, str) and value.strip().lower() in ("unlimited", "infinity"):
            return -1
        if isinstance(value, (int, str)) and not isinstance(value, bool):
            return parse_size(value)
        raise ValueError("expected an integer, a size or \"unlimited\"")
    if kind == "strlist":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError("expected a list of strings")
        return tuple(value)
    if kind == "strmap":
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ValueError("expected a table of strings")
        return FrozenMap(value)
    if kind.startswith("enum:"):
        choices = kind[5:].split("|")
        if value not in choices:
            raise ValueError("expected one of %s" % ", ".join(choices))
        return value
    raise AssertionError(kind)


def _build(name, sources, merged, origin, texts=None):
    texts = texts or {}

    def fail(message, section, key):
        src = origin.get((section, key)) or origin.get((section, "")) or origin.get("*") or (sources[0] if sources else None)
        line = key_line(texts.get(src, ""), section, key) if src in texts else None
        raise ProfileError(message, source=src, key=(section + "." + key) if section and key else (section or key),
                           line=line)

    sections = {}
    for section, value in merged.items():
        if section not in SCHEMA and section not in SCHEMA[""]:
            if isinstance(value, dict):
                fail("unknown section (known: %s)" % ", ".join(s for s in SCHEMA if s), section, "")
            fail("unknown key", "", section)
    top = {}
    for key, (kind, default) in SCHEMA[""].items():
        top[key] = merged.get(key, default)
    if not isinstance(top["description"], str):
        fail("expected a string", "", "description")
    for section, spec in SCHEMA.items():
        if not section:
            continue
        raw = merged.get(section, {})
        if not isinstance(raw, dict):
            fail("expected a table [%s]" % section, "", section)
        if spec == ("raw", None):
            sections[section] = raw
            continue
        values = {}
        for key in raw:
            if key not in spec:
                fail("unknown key (known: %s)" % ", ".join(sorted(spec)), section, key)
        for key, (kind, default) in spec.items():
            if key in raw:
                try:
                    kind_here = kind
                    if section == "rlimits" and key not in _SIZE_RLIMITS and isinstance(raw[key], str) \
                            and raw[key].strip().lower() not in ("unlimited", "infinity"):
                        raise ValueError("expected an integer or \"unlimited\"")
                    values[key] = _check(kind_here, raw[key])
                except ValueError as e:
                    fail(str(e), section, key)
            else:
                values[key] = default
        sections[section] = Section(values)

    # Layers with their own module validate their own section (kept lazy: the modules are
    # imported only when the section asks for something).
    from . import layers
    for section in ("seccomp", "landlock"):
        try:
            sections[section] = layers.validate(section, sections[section])
        except ProfileError as e:
            if e.source:
                raise
            fail(str(e.args[0]) if not e.key else str(e).split(": ", 1)[-1], section, e.key or "")
        except ValueError as e:
            fail(str(e), section, "")

    _cross_checks(sections, fail)
    return Profile(name, sources, top["description"], sections, merged)


def _cross_checks(s, fail):
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
    if not ns.user and os.geteuid() != 0:
        fail("without a user namespace the sandbox needs host root", "namespaces", "user")
    fs = s["filesystem"]
    if not fs.cwd.startswith("/"):
        fail("must be an absolute path", "filesystem", "cwd")
    for key in ("ro_bind", "bind"):
        for spec in fs.get(key):
            src, _, dst = spec.partition(":")
            if not src or (dst and not dst.startswith("/")):
                fail("expected SRC[:DST] with an absolute DST, got %r" % spec, "filesystem", key)
    for key in ("tmpfs", "masked_paths", "readonly_paths"):
        for path in fs.get(key):
            if not path.startswith("/") or ".." in path.split("/"):
                fail("expected an absolute path without '..', got %r" % path, "filesystem", key)
    env = s["environment"]
    for key in list(env.set) + list(env.get("pass")):
        if not key or "=" in key or "\0" in key:
            fail("invalid environment variable name %r" % key, "environment", "set" if key in env.set else "pass")
    if fs.rootfs and not fs.rootfs.startswith("/"):
        fail("must be an absolute path", "filesystem", "rootfs")
    proc = s["process"]
    if proc.hostname and not ns.uts:
        fail("a hostname needs namespaces.uts = true", "process", "hostname")
    idmap = s["idmap"]
    if idmap.size < 1:
        fail("must be at least 1", "idmap", "size")
    if idmap.root_host_base == 0:
        fail("mapping onto host uid 0 is refused", "idmap", "root_host_base")
    if idmap.uid >= idmap.size or idmap.gid >= idmap.size:
        fail("the inside id must be below idmap.size", "idmap", "uid" if idmap.uid >= idmap.size else "gid")
    lim = s["limits"]
    if lim.memory_swap > 0 and lim.memory and lim.memory_swap < lim.memory:
        fail("memory_swap is memory plus swap and cannot be below memory", "limits", "memory_swap")
    if lim.cpu_weight and not (1 <= lim.cpu_weight <= 10000):
        fail("must be within 1..10000", "limits", "cpu_weight")
    if lim.io_weight and not (1 <= lim.io_weight <= 10000):
        fail("must be within 1..10000", "limits", "io_weight")
    caps = s["capabilities"]
    from pysandbox_common.capnames import normalize
    for key in ("keep", "ambient"):
        for cap in caps.get(key):
            try:
                normalize(cap)
            except ValueError as e:
                fail(str(e), "capabilities", key)
    for cap in caps.ambient:
        if cap not in caps.keep:
            fail("ambient capability %s must also be in capabilities.keep" % cap, "capabilities", "ambient")
