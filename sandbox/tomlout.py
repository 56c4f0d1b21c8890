"""Write a resolved profile back as TOML (for `pysandbox profile show`)."""


def _value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join("%s = %s" % (_key(k), _value(x)) for k, x in v.items()) + " }"
    if v is None:
        return '""'
    return _value(str(v))


def _key(k):
    return k if k.replace("_", "").replace("-", "").isalnum() else _value(k)


def dumps(profile):
    data = profile.as_dict()
    lines = ["# profile %s (resolved from: %s)" % (profile.name, ", ".join(profile.sources)),
             "description = %s" % _value(data.pop("description")), ""]
    data.pop("name", None)
    from .profile import thaw
    for section, values in data.items():
        if section in ("seccomp", "landlock"):
            # these layers keep their own compiled form; show the resolved tables they came
            # from, so the output loads back as the same profile
            values = thaw(profile.raw.get(section, {})) or {"enabled": False}
            if data[section] is None:
                values["enabled"] = False
        lines.append("[%s]" % section)
        for key, value in values.items():
            if value is None:
                continue
            lines.append("%s = %s" % (_key(key), _value(value)))
        lines.append("")
    return "\n".join(lines)
