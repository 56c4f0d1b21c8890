"""Profiles: TOML files combined through `extends`, checked completely when they load, and
frozen all the way down.

Loading (this module): find the file on the search path, read it and the chain of files it
`extends`, lay them over one another base first (rules.apply_layer: lists append, tables
merge, `replace` is explicit), check every key and every rule across keys (rules.py, pure),
and freeze the result into a Profile whose sections are attributes (`p.filesystem.mounts`,
`p.limits.memory`, `p.seccomp` is the seccomp layer's own policy object). Every error names
the file, the line and the key. Command-line overrides make a new profile through
`with_overrides`, under the same rules, and their errors name the option.

The search path for `--profile NAME` (first match wins): each directory of
$PYSANDBOX_PROFILE_PATH (':'-separated), ~/.config/pysandbox/profiles, /etc/pysandbox/profiles,
then the built-in profiles shipped with the package. A NAME containing '/' or ending in .toml
is a file path.
"""
import marshal
import os

from ..errors import ProfileError
from .schema import (SCHEMA, RAW_KEYS, NAMESPACES, Key, MountEntry, FrozenMap, Section, freeze, thaw,  # noqa: F401
                     describe_key, example_of, schema_keys, section_class, LEGACY_MOUNT_KEYS, RUNTIME_MASKED_PATHS,
                     OCI_READONLY_PATHS)
from .rules import (parse_size, MergeState, apply_layer, cross_checks, check_mount_order, Invalid,  # noqa: F401
                    host_problems, parse_bind, parse_tmpfs, parse_mount_table, mount_table, check_target, COMMAND_LINE,
                    OPTION_OF, OPTION_OF_KIND)
from .rules import _deep_copy as _plain  # plain, unshared dicts and lists

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # sandbox/


class Profile:
    """The validated, frozen profile. Sections are attributes; `name` and `sources` (the files
    it was resolved from, derived first, then "command line" entries) say where it came from;
    `replaced` lists (source, "section.key") for every explicit `replace`."""

    __slots__ = ("name", "sources", "description", "replaced", "_state") + tuple(
        s for s in SCHEMA if s)

    def __init__(self, name, sources, description, sections, state):
        set_ = object.__setattr__
        set_(self, "name", name)
        set_(self, "sources", tuple(sources))
        set_(self, "description", description)
        set_(self, "replaced", tuple((src, key) for src, key in state.replaced))
        # The combined tables, mounts and origins, kept as marshal bytes (immutable, and cheaper
        # than freezing a few thousand seccomp values on every load): with_overrides and `raw`
        # start from them.
        set_(self, "_state", marshal.dumps(state.dump()))
        for section, value in sections.items():
            set_(self, section, value)

    def __setattr__(self, name, value):
        raise AttributeError("profiles are frozen")

    __delattr__ = __setattr__

    def __repr__(self):
        return "Profile(%r, sources=%r)" % (self.name, self.sources)

    @property
    def raw(self):
        """The combined tables as written (frozen): what `profile show` prints for the layer sections."""
        dumped = marshal.loads(self._state)
        return freeze(dict(dumped[2], **dumped[1]))

    def sections(self):
        return tuple(s for s in SCHEMA if s)

    def as_dict(self):
        out = {"name": self.name, "description": self.description}
        for section in self.sections():
            value = getattr(self, section)
            out[section] = value.as_dict() if isinstance(value, Section) else value
        return out

    def with_overrides(self, overrides, source=COMMAND_LINE):
        """A new profile: `overrides` ({section: {key: value}}) laid over this one by the same
        rules as `extends` (lists append: filesystem.mounts entries come after the profile's own,
        in the order given; scalars replace). Errors name the option when source is the command line."""
        state = _state_from(marshal.loads(self._state))
        fail = _failer(state, {}, self.sources)
        apply_layer(state, source, _plain(overrides), fail)  # a copy: the caller's dicts stay theirs
        return _build(self.name, self.sources + (source,), state, {})


def _state_from(dumped):
    top, tables, raw, mounts, origin, replaced = dumped
    state = MergeState()
    state.top = dict(top)
    state.tables = {s: {k: (dict(v) if isinstance(v, (dict, FrozenMap)) else (tuple(v) if isinstance(v, list) else v))
                        for k, v in t.items()} for s, t in tables.items()}
    state.raw = raw
    state.mounts = [(parse_mount_table(table, True, src), key) for table, src, key in mounts]
    state.origin = {tuple(k): v for k, v in origin}
    state.replaced = [tuple(r) for r in replaced]
    return state


# ---- where profiles are --------------------------------------------------------------------

def profile_dirs():
    """The search path for profile names, first match wins."""
    dirs = []
    extra = os.environ.get("PYSANDBOX_PROFILE_PATH")
    if extra:
        dirs.extend(p for p in extra.split(":") if p)
    home = os.environ.get("HOME")
    if home:
        dirs.append(os.path.join(home, ".config", "pysandbox", "profiles"))
    dirs.append("/etc/pysandbox/profiles")
    # Installed wheel: profiles/ is shipped as sandbox/profiles; source tree: ../profiles.
    dirs.append(os.path.join(_PACKAGE_DIR, "profiles"))
    dirs.append(os.path.join(os.path.dirname(_PACKAGE_DIR), "profiles"))
    return dirs


def builtin_names():
    names = set()
    for directory in profile_dirs():
        try:
            names.update(f[:-5] for f in os.listdir(directory) if f.endswith(".toml"))
        except OSError:
            pass
    return sorted(names)


def resolve_path(name_or_path, below=None):
    """The file a profile name or path means. `below`: a profile file that names itself in
    `extends` (~/.config/pysandbox/profiles/strict.toml with extends = "strict") means the
    next file of that name further down the search path, not itself."""
    if "/" in name_or_path or name_or_path.endswith(".toml"):
        if os.path.isdir(name_or_path):
            raise ProfileError("is a directory, not a profile file (a profile is one .toml file)",
                               source=name_or_path)
        if not os.path.isfile(name_or_path):
            raise ProfileError("no such profile file", source=name_or_path)
        return os.path.abspath(name_or_path)
    skipping = below is not None
    for directory in profile_dirs():
        candidate = os.path.join(directory, name_or_path + ".toml")
        if skipping:
            if os.path.abspath(candidate) == below:
                skipping = False
            continue
        if os.path.isfile(candidate):
            return candidate
    if below is not None and not skipping:
        raise ProfileError("no profile %r further down the search path than this one" % name_or_path)
    raise ProfileError("unknown profile %r (known: %s; searched %s)" % (
        name_or_path, ", ".join(builtin_names()) or "none", ", ".join(profile_dirs())))


def key_line(text, section, key):
    """Line number of `key` in `[section]` of a TOML text (best effort; TOML parsers drop positions)."""
    current = ""
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("[["):
            path = stripped.strip("[]").strip()
            parent, _, sub = path.rpartition(".")
            if section and parent == section and sub == key:
                return number
            current = path
            continue
        if stripped.startswith("["):
            current = stripped.strip("[]").strip()
            continue
        head = stripped.split("=", 1)[0].strip().strip('"')
        if section and (current == section or current.startswith(section + ".")) and head == key:
            return number
        if not section and current == "" and head == key:
            return number
        if section and current == "" and head == section + "." + key:
            return number
    return None


def _read_toml(path):
    import tomllib
    try:
        with open(path, "rb") as f:
            data = f.read()
    except IsADirectoryError:
        raise ProfileError("is a directory, not a profile file", source=path) from None
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


# ---- the parsed-profile cache --------------------------------------------------------------
# Parsing TOML costs more than the rest of the run path together (tomllib pulls in re), so
# each file's parsed tables are kept in marshal form. Combining and validation run on every
# load, so a profile is always checked and always a new frozen object; an entry counts only
# if every file of the chain is unchanged (inode, size, mtime, ctime) and every `extends`
# still resolves to the same file (a profile added earlier on the search path wins at once).

_CACHE_VERSION = 2


def _cache_path(path):
    from ..cache import cache_dir
    import zlib
    return os.path.join(cache_dir(), "profile-%08x.marshal" % zlib.crc32(path.encode()))


def _stamp(paths):
    out = []
    for p in paths:
        st = os.stat(p)
        out.append((p, st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino))
    return tuple(out)


def _resolve_extends(path, parent):
    if "/" in parent or parent.endswith(".toml"):
        # A file named by `extends` is relative to the profile that names it.
        parent = os.path.join(os.path.dirname(path), parent)
        return resolve_path(parent)
    found = resolve_path(parent)
    if os.path.abspath(found) == os.path.abspath(path):
        # a profile extending its own name builds on the next one of that name
        return resolve_path(parent, below=os.path.abspath(path))
    return found


def _load_cached(path):
    from ..cache import read_trusted
    data = read_trusted(_cache_path(path))
    if data is None:
        return None
    try:
        version, stamp, layers = marshal.loads(data)
        if version != _CACHE_VERSION or layers[0][0] != path or _stamp([p for p, _ in layers]) != stamp:
            return None
        for (child, table), (parent, _) in zip(layers, layers[1:]):
            if _resolve_extends(child, table.get("extends", "")) != parent:
                return None
    except (ValueError, TypeError, EOFError, OSError, IndexError, KeyError, AttributeError, ProfileError):
        return None
    return layers


def _cache_entry(layers):
    try:
        return marshal.dumps((_CACHE_VERSION, _stamp([p for p, _ in layers]), layers))
    except (ValueError, OSError):
        return None


def _store_cached(path, entry):
    if entry is not None:
        from ..cache import write_atomic
        write_atomic(_cache_path(path), entry)


def _parse_chain(path):
    """[(path, tables)] from the named file down its `extends` chain; texts for line numbers."""
    layers, texts = [], {}
    while True:
        if path in texts:
            raise ProfileError("`extends` loops back to this file", source=path, key="extends")
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
            path = _resolve_extends(path, parent)
        except ProfileError as e:
            raise ProfileError(str(e), source=layers[-1][0], key="extends",
                               line=key_line(text, "", "extends")) from None
    return layers, texts


_LOADED = {}   # marshal of a cached chain that reads no other file -> its frozen Profile
_LOADED_MAX = 32


def _loaded_key(layers):
    """The memo key of a chain whose Profile depends on its tables alone (None: it imports
    a seccomp file, whose contents the stamps do not cover)."""
    for _path, tables in layers:
        section = tables.get("seccomp")
        if isinstance(section, dict) and "import" in section:
            return None
    try:
        return marshal.dumps(layers)
    except ValueError:
        return None


def load_profile(name_or_path="default"):
    """Load, combine (`extends`), validate and freeze a profile by name or file path.

    The chain is read again on every call (its files' stamps, `extends` resolved anew);
    a chain whose tables are the same as before gives the Profile made from them then:
    it is frozen, and validating it again would only repeat the same result."""
    path = resolve_path(name_or_path)
    layers = _load_cached(path)
    if layers is not None:
        key = _loaded_key(layers)
        profile = _LOADED.get(key) if key is not None else None
        if profile is not None:
            return profile
        try:
            profile = _from_layers(layers, {})
        except ProfileError:
            pass  # report it with line numbers from a fresh parse
        else:
            if key is not None and len(_LOADED) < _LOADED_MAX:
                _LOADED[key] = profile
            return profile
    layers, texts = _parse_chain(path)
    entry = _cache_entry(layers)  # before combining: the layers' tables are combined in place
    profile = _from_layers(layers, texts)
    _store_cached(path, entry)
    return profile


def _profile_name(path):
    return os.path.basename(path)[:-5] if path.endswith(".toml") else path


def _from_layers(layers, texts):
    sources = tuple(p for p, _ in layers)
    state = MergeState()
    fail = _failer(state, texts, sources)
    for source, data in reversed(layers):
        apply_layer(state, source, data, fail)
    return _build(_profile_name(sources[0]), sources, state, texts)


def _failer(state, texts, sources):
    def fail(message, section, key, source=None):
        src = source or state.origin.get((section, key)) or state.origin.get((section, "")) \
            or (sources[0] if sources else None)
        if src == COMMAND_LINE:
            name = (key if key.startswith("--") else None) or OPTION_OF.get("%s.%s" % (section, key)) \
                or OPTION_OF.get(section) \
                or ("%s.%s" % (section, key) if section and key else section or key)
            raise ProfileError(message, source=src, key=name)
        line = key_line(texts[src], section, key) if src in texts else None
        raise ProfileError(message, source=src, key=(section + "." + key) if section and key else (section or key),
                           line=line)
    return fail


def _build(name, sources, state, texts):
    fail = _failer(state, texts, sources)
    sections = {}
    for section, spec in SCHEMA.items():
        if not section or isinstance(spec, Key):
            continue
        given = state.tables[section]
        values = {}
        for key, k in spec.items():
            value = given.get(key, k.default)
            values[key] = freeze(value) if isinstance(value, (dict, list, tuple)) else value
        if section == "filesystem":
            try:
                kept = check_mount_order(state.mounts)
            except Invalid as e:
                entry, key = e.args[1]
                if entry.origin == COMMAND_LINE:
                    key = OPTION_OF_KIND[entry.kind]
                fail(e.args[0], "filesystem", key, entry.origin)
            mounts = tuple(entry for entry, _ in kept)
            values["mounts"] = mounts
            # the legacy per-kind views of the same list (SRC or SRC:DST strings)
            for key, kind in LEGACY_MOUNT_KEYS.items():
                values[key] = tuple(e.spec() for e in mounts if e.kind == kind)
        sections[section] = section_class(section)(values)

    # Layers with their own module validate their own section (kept lazy: the modules are
    # imported only when the section asks for something).
    from .. import layers
    for section in ("seccomp", "landlock"):
        raw = state.raw[section]  # the layer validators only read it
        try:
            sections[section] = layers.validate(section, raw)
        except ProfileError as e:
            if e.source:
                raise
            message = str(e.args[0]) if not e.key else str(e).split(": ", 1)[-1]
            # The section is combined from several files: an error between keys of different
            # files (an allow here, a rule inherited) names the key's file and says which others
            # the section came from.
            setters = []
            for (sec, _), src in state.origin.items():
                if sec == section and src not in setters:
                    setters.append(src)
            where = state.origin.get((section, e.key or ""))
            others = [src for src in setters if src != where]
            if others:
                message += " (this [%s] also takes keys from %s)" % (section, ", ".join(others))
            fail(message, section, e.key or "")
        except ValueError as e:
            fail(str(e), section, "")

    cross_checks(sections, lambda message, section, key: fail(message, section, key))
    return Profile(name, sources, state.top.get("description", ""), sections, state)
