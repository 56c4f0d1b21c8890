"""The one parser of /proc/PID/mountinfo (proc(5)), for the runtime's run path (cgroup
detection) and the auditor (procfs.parse_mountinfo) alike. Lean on purpose: no re, no
collections, so `pysandbox run` pays nothing to import it.

Line format: mount_id parent_id major:minor root mountpoint options [optional...] - fstype source super_options
"""


def unescape(field):
    """mountinfo escapes space, tab, newline and backslash as \\ooo (fs/proc_namespace.c)."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        octal = field[i + 1:i + 4]
        if field[i] == "\\" and len(octal) == 3 and all("0" <= c <= "7" for c in octal):
            out.append(chr(int(octal, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse(text, fstypes=None):
    """[(mount_id, parent_id, major, minor, root, mountpoint, options, optional, fstype,
    source, super_options)] with the tuples' fields as procfs.Mount names them; lines the
    kernel would never write are skipped. `fstypes`: keep only these filesystem types
    (a cheap pre-filter for the cgroup lookups on the run path)."""
    out = []
    for raw in text.split("\n"):
        if not raw.strip():
            continue
        fields = raw.split(" ")
        try:
            sep = fields.index("-", 6)
            fstype = fields[sep + 1]
            if fstypes is not None and fstype not in fstypes:
                continue
            major, minor = fields[2].split(":")
            out.append((int(fields[0]), int(fields[1]), int(major), int(minor), unescape(fields[3]),
                        unescape(fields[4]), tuple(fields[5].split(",")), tuple(f for f in fields[6:sep] if f),
                        fstype, unescape(fields[sep + 2]) if len(fields) > sep + 2 else "",
                        tuple(fields[sep + 3].split(",")) if len(fields) > sep + 3 else ()))
        except (ValueError, IndexError):
            continue
    return out
