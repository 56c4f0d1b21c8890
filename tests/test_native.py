"""The native-call layer and the channel: one table of syscall numbers, one error path,
one message format shared with the C init. Pure logic: no root, no namespaces."""
import ctypes
import errno
import os
import re

import pytest

from sandbox import channel, native
from sandbox.errors import SetupError
from sandbox.seccomp_groups import SYSCALLS_X86_64

SANDBOX = os.path.dirname(native.__file__)
# init.c and channel.h as in the source tree (the installed package carries no header)
SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sandbox")


def _sources():
    for name in sorted(os.listdir(SANDBOX)):
        if name.endswith(".py"):
            with open(os.path.join(SANDBOX, name)) as f:
                yield name, f.read()


def test_the_syscall_table_is_x86_64s():
    for name, number in native.NR.items():
        assert SYSCALLS_X86_64[name] == number, name


def test_other_machines_are_refused_with_one_line():
    with pytest.raises(native.UnsupportedMachine) as info:
        native.guard("aarch64")
    text = str(info.value)
    assert "\n" not in text and "x86_64 only" in text and "aarch64" in text
    assert native.guard("x86_64") == "x86_64"


def test_only_the_native_layer_opens_libraries():
    for name, text in _sources():
        if name == "native.py":
            continue
        assert "CDLL(" not in text, "%s opens a library itself; use sandbox.native" % name
        # mnt.py's internals belong to the mount layer's own rework (open_tree/move_mount)
        if name != "mnt.py":
            assert "get_errno" not in text, "%s reads errno itself; use native.check" % name


def test_syscall_numbers_named_outside_the_table_agree_with_it():
    """Module constants SYS_x (kept by modules edited elsewhere) must equal the table."""
    for name, text in _sources():
        for sysname, number in re.findall(r"^SYS_(\w+) = (\d+)", text, re.M):
            assert native.NR.get(sysname) == int(number), "%s: SYS_%s = %s" % (name, sysname, number)


def test_check_raises_the_stage_and_errno():
    assert native.check(3, "pidfd") == 3
    ctypes.set_errno(errno.EPERM)
    with pytest.raises(SetupError) as info:
        native.check(-1, "mount", "/newroot/usr")
    assert info.value.stage == "mount" and info.value.errno == errno.EPERM
    assert str(info.value) == "mount: /newroot/usr: Operation not permitted"
    assert info.value.exit_code == 125


def test_a_real_call_fails_through_check():
    # pivot_root from the host's root as an unrelated path: EINVAL/EPERM/ENOENT, never success
    with pytest.raises(SetupError) as info:
        native.pivot_root("/nonexistent-new-root", "/nonexistent-old-root")
    assert info.value.stage == "pivot_root" and info.value.errno in (errno.EINVAL, errno.EPERM, errno.ENOENT)


def test_channel_header_is_generated_from_the_table():
    with open(os.path.join(SOURCE, "channel.h")) as f:
        assert f.read() == channel.c_header(), "sandbox/channel.h is stale: python3 -m sandbox.channel > sandbox/channel.h"


def test_the_c_init_writes_only_channel_kinds():
    with open(os.path.join(SOURCE, "init.c")) as f:
        source = f.read()
    assert '#include "channel.h"' in source
    # every message the C init formats starts with a CHANNEL_ macro, never a literal kind
    formats = re.findall(r'(?:snprintf\(line, sizeof\(line\),|say\(msg,)\s*([^,;]+)', source)
    formats = [f for f in formats if f.strip() != "line)"]  # say(msg, line): the formatted line
    assert formats, "no message found in init.c"
    for fmt in formats:
        assert fmt.strip().startswith("CHANNEL_"), fmt
    for letter, name, fields in channel.KINDS:
        for fmt in formats:
            if fmt.strip().startswith("CHANNEL_%s " % name):
                assert fmt.count("\\t") == len(fields), (name, fmt)


def test_channel_round_trip_and_malformed_lines():
    data = (channel.encode("E", "mount", 1, "mount: a\tb\nc") + channel.encode("S", 256)
            + b"X\t12\n" + b"?\tjunk\n" + channel.encode("X", 7, 101, 0xC000003E))
    assert channel.decode(data) == [("E", ("mount", "1", "mount: a b c")), ("S", ("256",)),
                                    ("X", ("7", "101", str(0xC000003E)))]
    with pytest.raises(ValueError):
        channel.encode("S", 1, 2)


def test_a_non_x86_64_machine_gets_one_line_and_125():
    """The guard as a user meets it: `pysandbox run` on another architecture."""
    import subprocess
    import sys
    code = ("import os, sys; real = os.uname()\n"
            "os.uname = lambda: os.uname_result((real.sysname, real.nodename, real.release, real.version, 'aarch64'))\n"
            "sys.argv = ['pysandbox', 'run', '--profile', 'strict', '--', '/bin/true']\n"
            "from sandbox.cli import entry\nentry()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 125, (done.returncode, done.stderr)
    assert done.stderr.count("\n") == 1 and "x86_64 only" in done.stderr and "aarch64" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_one_mountinfo_parser_serves_both_halves():
    from pysandbox_common import mountinfo, procfs
    from sandbox import cgroup
    text = ("25 1 0:22 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids\n"
            "26 1 0:23 / /mnt/a\\040b rw shared:5 - cgroup2 cgroup2 rw,nsdelegate\n"
            "27 1 8:1 /x /srv rw - ext4 /dev/sda1 rw\n"
            "garbage line\n")
    audit_view = procfs.parse_mountinfo(text)
    assert [m.mountpoint for m in audit_view] == ["/sys/fs/cgroup/pids", "/mnt/a b", "/srv"]
    assert audit_view[1].optional == ("shared:5",) and audit_view[2].root == "/x"
    assert cgroup.parse_mountinfo(text) == [("cgroup", "/sys/fs/cgroup/pids", "/", frozenset({"rw", "pids"})),
                                            ("cgroup2", "/mnt/a b", "/", frozenset({"rw", "nsdelegate"}))]
    assert mountinfo.unescape("a\\134b\\011c\\0") == "a\\b\tc\\0"
