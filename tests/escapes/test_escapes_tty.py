"""Escape suite, terminals: a strict sandbox whose stdio is a terminal it does not own cannot
change that terminal. The test makes the pty (os.openpty: no host terminal needed), hands its
slave to `pysandbox run --profile strict` as stdin, stdout and stderr, tries each attack for
real from inside, and reads the terminal's state from outside before and after: line
discipline, exclusive mode, termios flags, window size and the input queue.

The same attacks under the default profile (Docker's rules: every ioctl but TIOCSTI/TIOCLINUX)
do change the pty, which shows that the probe reaches the terminal and the check sees it.
Root and rootless alike (the file is not root-only).
"""
import fcntl
import os
import select
import struct
import subprocess
import termios
import time

import pytest

from util import ROOT, pysandbox_cmd

N_NULL = 27
TIOCGEXCL = 0x80045440

# Runs inside the sandbox: each attack on fd 0 (the pty slave), one line "name=result" each.
ATTACKS = r"""
import errno, fcntl, struct, termios
def attempt(name, call):
    try:
        call()
        result = "ok"
    except (OSError, termios.error) as e:
        result = errno.errorcode.get(e.args[0], str(e.args[0]))
    print("%s=%s" % (name, result), flush=True)
def no_echo():
    attrs = termios.tcgetattr(0)
    attrs[3] &= ~termios.ECHO
    termios.tcsetattr(0, termios.TCSANOW, attrs)
attempt("tiocexcl", lambda: fcntl.ioctl(0, termios.TIOCEXCL))
attempt("tcsets_echo", no_echo)
attempt("tiocswinsz", lambda: fcntl.ioctl(1, termios.TIOCSWINSZ, struct.pack("HHHH", 7, 9, 0, 0)))
attempt("tiocsti", lambda: fcntl.ioctl(2, termios.TIOCSTI, b"x"))
attempt("tcflsh", lambda: termios.tcflush(0, termios.TCIFLUSH))
attempt("tcgets", lambda: termios.tcgetattr(0))
attempt("tiocgwinsz", lambda: fcntl.ioctl(1, termios.TIOCGWINSZ, b"\0" * 8))
# last: where it works, the terminal is dead afterwards (N_NULL swallows output)
attempt("tiocsetd", lambda: fcntl.ioctl(0, termios.TIOCSETD, struct.pack("i", 27)))
"""

STRICT_ATTACKS = ("tiocsetd", "tiocexcl", "tcsets_echo", "tiocswinsz", "tiocsti", "tcflsh")


def terminal_state(fd):
    """What an attack would change, read from outside through the slave."""
    state = {"ldisc": struct.unpack("i", fcntl.ioctl(fd, termios.TIOCGETD, b"\0" * 4))[0],
             "excl": struct.unpack("i", fcntl.ioctl(fd, TIOCGEXCL, b"\0" * 4))[0],
             "winsize": struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))}
    try:  # a terminal switched to N_NULL answers termios and queue queries with EINVAL
        attrs = termios.tcgetattr(fd)
        state.update(lflag=attrs[3], iflag=attrs[0],
                     input_queued=struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0])
    except termios.error as e:
        state["termios"] = "errno %d" % e.args[0]
    except OSError as e:
        state["termios"] = "errno %d" % e.errno
    return state


def run_on_pty(profile, argv, timeout=60):
    """Run `pysandbox run --profile P -- argv` with stdio on a fresh pty. Returns
    (exit status, output read from the master, state before, state after)."""
    master, slave = os.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        before = terminal_state(slave)
        proc = subprocess.Popen(pysandbox_cmd() + ["run", "--profile", profile, "--"] + argv,
                                stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
        output = b""
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                output += os.read(master, 65536)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        after = terminal_state(slave)
        # what is still buffered on the master after the exit
        while select.select([master], [], [], 0)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        return proc.returncode, output.decode(errors="replace"), before, after
    finally:
        os.close(slave)
        os.close(master)


def results_of(output):
    out = {}
    for line in output.replace("\r", "").splitlines():
        name, sep, value = line.partition("=")
        if sep and name.isidentifier():
            out[name] = value
    return out


def strict_profile(tmp_path):
    """strict itself; rootless on a host without delegated cgroups strict refuses to run (its
    limits are required), and the seccomp layer is then checked through strict minus that."""
    code, output, _, _ = run_on_pty("strict", ["/bin/true"])
    if code == 125 and not ROOT and "cgroup" in output:
        path = tmp_path / "strict-without-limits.toml"
        path.write_text('extends = "strict"\n[limits]\nrequired = false\n')
        return str(path)
    assert code == 0, output
    return "strict"


def test_strict_cannot_change_a_terminal_it_can_reach(tmp_path):
    profile = strict_profile(tmp_path)
    code, output, before, after = run_on_pty(profile, ["/usr/bin/python3", "-I", "-S", "-c", ATTACKS])
    assert code == 0, output
    results = results_of(output)
    for attack in STRICT_ATTACKS:
        # TIOCSTI/TIOCLINUX are refused outright (EPERM); every other change gets ENOTTY
        assert results.get(attack) == ("EPERM" if attack == "tiocsti" else "ENOTTY"), (attack, output)
    # read-only queries still work: isatty and the window size
    assert results["tcgets"] == "ok" and results["tiocgwinsz"] == "ok", output
    assert after == before, (before, after)
    assert before["ldisc"] == 0 and before["excl"] == 0 and before["winsize"][:2] == (24, 80)


def test_the_probe_changes_the_terminal_where_ioctls_are_open():
    """Control: under the default profile (Docker's ioctl rules) the same attacks succeed and the
    outside check sees every change, so the strict test above can fail."""
    code, output, before, after = run_on_pty("default", ["/usr/bin/python3", "-I", "-S", "-c", ATTACKS])
    # 120: Python could not flush stdout at exit, because N_NULL made the terminal a sink
    assert code in (0, 120), output
    results = results_of(output)
    for attack in ("tiocexcl", "tcsets_echo", "tiocswinsz"):
        assert results.get(attack) == "ok", (attack, output)
    assert after["excl"] == 1 and after["winsize"][:2] == (7, 9)
    if results.get("tiocsetd") in (None, "ok"):  # N_NULL may be absent from a kernel (CONFIG_N_NULL)
        assert after["ldisc"] == N_NULL and "termios" in after  # the terminal is dead
    else:
        assert not after["lflag"] & termios.ECHO and before["lflag"] & termios.ECHO


def test_programs_still_run_with_a_pty_as_stdio(tmp_path):
    profile = strict_profile(tmp_path)
    code, output, before, after = run_on_pty(
        profile, ["/bin/sh", "-c", "ls -d /usr; python3 -c 'import os, shutil; print(\"tty\", os.isatty(0), "
                  "shutil.get_terminal_size().columns)'; python3 -c pass && echo done"])
    assert code == 0, output
    assert "/usr" in output and "tty True 80" in output and "done" in output, output
    assert after == before


@pytest.mark.parametrize("fd", [0, 1, 2])
def test_every_stdio_descriptor_is_covered(tmp_path, fd):
    """The filter does not care which descriptor: each of 0, 1, 2 (the same pty) refuses TCSETS."""
    profile = strict_profile(tmp_path)
    code, output, before, after = run_on_pty(profile, [
        "/usr/bin/python3", "-I", "-S", "-c",
        "import termios, errno\nattrs = termios.tcgetattr(%d)\nattrs[3] &= ~termios.ECHO\n"
        "try:\n    termios.tcsetattr(%d, termios.TCSANOW, attrs); print('result=ok')\n"
        "except termios.error as e:\n    print('result=' + errno.errorcode[e.args[0]])\n" % (fd, fd)])
    assert code == 0, output
    assert results_of(output).get("result") == "ENOTTY", output
    assert after == before
