"""The channel from the sandbox's PID 1 and command process to the supervisor.

One close-on-exec pipe; each message is one line of tab-separated fields, the first
field its kind. The kinds and their fields are defined here once; sandbox/channel.h,
which the C init includes, is generated from this table (`python3 -m sandbox.channel
> sandbox/channel.h`) and tests/test_channel.py fails when the two differ. Both inits
write the same format.
"""

# kind letter, C name, field names (after the kind)
KINDS = (
    ("E", "ERROR", ("stage", "errno", "message")),     # a stage failed; the process exits 125
    ("W", "WARNING", ("text",)),                       # a warning for the caller
    ("X", "SECCOMP_KILL", ("pid", "nr", "arch")),      # a kill rule caught syscall nr (audit arch)
    ("S", "STATUS", ("wait_status",)),                 # PID 1: the command's wait status, then exit
)
FIELDS = {letter: fields for letter, _, fields in KINDS}
ERROR, WARNING, SECCOMP_KILL, STATUS = (letter for letter, _, _ in KINDS)


def encode(kind, *fields):
    if len(fields) != len(FIELDS[kind]):
        raise ValueError("channel message %s takes %d fields, got %d" % (kind, len(FIELDS[kind]), len(fields)))
    return ("\t".join([kind] + [str(f).replace("\t", " ").replace("\n", " ") for f in fields]) + "\n").encode()


def send(fd, kind, *fields):
    """Write one message; a supervisor that is gone is not an error here."""
    import os
    try:
        os.write(fd, encode(kind, *fields))
    except OSError:
        pass


def decode(data):
    """Bytes read from the channel -> [(kind, fields tuple)]; malformed lines are skipped."""
    out = []
    for line in data.decode("utf-8", "replace").split("\n"):
        if not line:
            continue
        kind, _, rest = line.partition("\t")
        wanted = FIELDS.get(kind)
        if wanted is None:
            continue
        fields = rest.split("\t", len(wanted) - 1)
        if len(fields) != len(wanted):
            continue
        out.append((kind, tuple(fields)))
    return out


def c_header():
    lines = ["/* Generated from sandbox/channel.py by `python3 -m sandbox.channel`: do not edit. */",
             "#ifndef PYSANDBOX_CHANNEL_H", "#define PYSANDBOX_CHANNEL_H"]
    for letter, name, fields in KINDS:
        lines.append("/* %s: %s */" % (letter, " ".join(fields)))
        lines.append("#define CHANNEL_%s \"%s\"" % (name, letter))
        lines.append("#define CHANNEL_%s_FIELDS %d" % (name, len(fields)))
    lines.append("#endif")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(c_header(), end="")
