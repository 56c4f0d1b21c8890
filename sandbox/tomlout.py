"""Write a resolved profile back as TOML (for `pysandbox profile show`).

The output is the profile after `extends` and every default: one file without `extends`
that loads back as the same profile. Mounts are written with the legacy keys (ro_bind,
bind, tmpfs) when that keeps their order and meaning, else as one ordered `mounts` list.
"""
from _collections_abc import Mapping

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _string(text):
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append("\\u%04x" % ord(ch))
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{ " + ", ".join("%s = %s" % (_key(k), _value(x)) for k, x in v.items() if x is not None) + " }"
    if v is None:
        return '""'
    return _value(str(v))


def _key(k):
    return k if k and k.replace("_", "").replace("-", "").isalnum() and k.isascii() else _string(k)


def _mount_lines(mounts):
    """ro_bind/bind/tmpfs lines when each kind is one run in the order and every entry is a
    plain string's worth; else one `mounts` list of tables."""
    from .profile import LEGACY_MOUNT_KEYS
    key_of = {kind: key for key, kind in LEGACY_MOUNT_KEYS.items()}
    runs = []
    plain = True
    for entry in mounts:
        if entry.options or ":" in (entry.source or "") or (entry.source is not None and ":" in entry.target):
            plain = False
        if not runs or runs[-1][0] != entry.kind:
            runs.append((entry.kind, []))
        runs[-1][1].append(entry.spec())
    if plain and len({kind for kind, _ in runs}) == len(runs):
        return ["%s = %s" % (key_of[kind], _value(specs)) for kind, specs in runs]
    return ["mounts = [", *("  %s," % _value(e.as_table()) for e in mounts), "]"]


def dumps(profile):
    from .profile import thaw
    lines = ["# profile %s, resolved from: %s" % (profile.name, ", ".join(profile.sources))]
    for source, key in profile.replaced:
        lines.append("# %s replaces the inherited %s" % (source, key))
    lines.append("description = %s" % _value(profile.description))
    # A list adds to its default (masked_paths to the OCI set): sections with such lists are
    # given whole, so what is printed is exactly what loads.
    from .profile import SCHEMA, Key
    whole = [s for s, spec in SCHEMA.items() if s and not isinstance(spec, Key)
             and any(k.combine != "replace" and k.default for k in spec.values())]
    if whole:
        lines.append("replace = %s" % _value(whole))
    lines.append("")
    for section in profile.sections():
        value = getattr(profile, section)
        lines.append("[%s]" % section)
        if section in ("seccomp", "landlock"):
            # these layers keep their own compiled form; show the combined tables they came
            # from, so the output loads back as the same profile
            values = thaw(profile.raw.get(section, {})) or {"enabled": False}
            if value is None:
                values["enabled"] = False
            rules = values.pop("rules", None)
            lines.extend("%s = %s" % (_key(k), _value(v)) for k, v in values.items() if v is not None)
            for rule in rules or ():
                lines += ["", "[[%s.rules]]" % section]
                lines.extend("%s = %s" % (_key(k), _value(v)) for k, v in rule.items() if v is not None)
            lines.append("")
            continue
        for key, item in value.as_dict().items():
            if item is None or (section == "filesystem" and key in ("ro_bind", "bind", "tmpfs", "mounts")):
                continue
            lines.append("%s = %s" % (_key(key), _value(item)))
        if section == "filesystem":
            lines.extend(_mount_lines(value.mounts))
        lines.append("")
    return "\n".join(lines)


def dumps_value(value):
    """One value as TOML (for `explain SECTION.KEY`)."""
    return _value(value)
