"""Escape suite, terminals (issue 10 item 1, issue 9 item 4): the caller's terminal is safe from
a strict sandbox whether it is passed through or replaced by the sandbox's own pty.

The test makes the pty (os.openpty: no host terminal needed), hands its slave to the sandbox as
stdin, stdout and stderr, tries each attack for real from inside, and reads the terminal's
state from outside before and after: line discipline, exclusive mode, termios flags, window
size and the input queue. Two ways in:

- passed through (the API with tty=False: the slave itself is the command's stdio): this tests
  the seccomp filter, strict's ioctl allowlist. The same attacks under the default profile
  (Docker's rules: every ioctl but TIOCSTI/TIOCLINUX) do change the pty, which shows that the
  probe reaches the terminal and the check sees it.
- relayed (`pysandbox run` with a terminal as stdio: the command gets a pty of the sandbox's own
  devpts): the caller's terminal is untouched by every attack, under strict and default alike,
  while strict lets the command use its own pty as its own (TCSETS, TIOCSPGRP: job control)
  and still refuses TIOCSTI, TIOCSETD and TIOCEXCL there.
Root and rootless alike (the file is not root-only).
"""
import fcntl
import os
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

from util import ROOT, pysandbox_cmd

N_NULL = 27
TIOCGEXCL = 0x80045440

# Runs inside the sandbox: each attack on fd 0 (the pty slave), one line "name=result" each.
ATTACKS = r"""
import errno, fcntl, os, struct, termios
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
attempt("tiocspgrp", lambda: os.tcsetpgrp(0, os.getpgrp()))
attempt("tcgets", lambda: termios.tcgetattr(0))
attempt("tiocgwinsz", lambda: fcntl.ioctl(1, termios.TIOCGWINSZ, b"\0" * 8))
# last: where it works, the terminal is dead afterwards (N_NULL swallows output)
attempt("tiocsetd", lambda: fcntl.ioctl(0, termios.TIOCSETD, struct.pack("i", 27)))
"""

STRICT_ATTACKS = ("tiocsetd", "tiocexcl", "tcsets_echo", "tiocswinsz", "tiocsti", "tcflsh", "tiocspgrp")


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


# The API with tty=False: the terminal given as stdio goes into the sandbox as it is.
PASS_THROUGH = """
import sys
from sandbox import Sandbox, load_profile
result = Sandbox(load_profile(sys.argv[1])).run(sys.argv[2:], tty=False)
sys.exit(result.exit_code if result.reason == "exit" else 125)
"""


def run_on_pty(profile, argv, timeout=60, through=False):
    """Run argv in a sandbox with stdio on a fresh pty: relayed by `pysandbox run --profile P`,
    or passed through (`through`: the API with tty=False). Returns
    (exit status, output read from the master, state before, state after)."""
    master, slave = os.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        before = terminal_state(slave)
        if through:
            cmd = [sys.executable, "-c", PASS_THROUGH, profile] + argv
        else:
            cmd = pysandbox_cmd() + ["run", "--profile", profile, "--"] + argv
        proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, start_new_session=True, cwd="/")
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
    code, output, _, _ = run_on_pty("strict", ["/bin/true"], through=True)
    if code != 0 and not ROOT and "cgroup" in output:
        path = tmp_path / "strict-without-limits.toml"
        path.write_text('extends = "strict"\n[limits]\nrequired = false\n')
        return str(path)
    assert code == 0, output
    return "strict"


def test_strict_cannot_change_a_terminal_passed_through(tmp_path):
    """The filter alone: the caller's terminal itself is the command's stdio (tty=False)."""
    profile = strict_profile(tmp_path)
    code, output, before, after = run_on_pty(profile, ["/usr/bin/python3", "-I", "-S", "-c", ATTACKS], through=True)
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
    code, output, before, after = run_on_pty("default", ["/usr/bin/python3", "-I", "-S", "-c", ATTACKS],
                                             through=True)
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


@pytest.mark.parametrize("through", [True, False], ids=["passed-through", "relayed"])
def test_programs_still_run_with_a_pty_as_stdio(tmp_path, through):
    profile = strict_profile(tmp_path)
    code, output, before, after = run_on_pty(
        profile, ["/bin/sh", "-c", "ls -d /usr; python3 -c 'import os, shutil; print(\"tty\", os.isatty(0), "
                  "shutil.get_terminal_size().columns)'; python3 -c pass && echo done"], through=through)
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
        "except termios.error as e:\n    print('result=' + errno.errorcode[e.args[0]])\n" % (fd, fd)], through=True)
    assert code == 0, output
    assert results_of(output).get("result") == "ENOTTY", output
    assert after == before


@pytest.mark.parametrize("profile_name", ["strict", "default"])
def test_the_relay_keeps_every_attack_off_the_callers_terminal(tmp_path, profile_name):
    """Relayed: whatever the filter lets through lands on the sandbox's own pty; the caller's
    terminal (the slave the CLI was given) is as before, under strict and under default, whose
    ioctls are open (control: passed through, the same attacks change it)."""
    profile = strict_profile(tmp_path) if profile_name == "strict" else "default"
    code, output, before, after = run_on_pty(profile, ["/usr/bin/python3", "-I", "-S", "-c", ATTACKS])
    # 120: under default, N_NULL on its own pty made Python's last flush fail
    assert code in ((0,) if profile_name == "strict" else (0, 120)), output
    assert after == before, (before, after, output)
    assert before["ldisc"] == 0 and before["excl"] == 0 and before["winsize"][:2] == (24, 80)
    results = results_of(output)
    if profile_name == "strict":
        # on its own pty the command may change its modes, size, queues and foreground group...
        for attack in ("tcsets_echo", "tiocswinsz", "tcflsh", "tiocspgrp", "tcgets", "tiocgwinsz"):
            assert results.get(attack) == "ok", (attack, output)
        # ...never inject input, lock it or switch its line discipline
        assert results.get("tiocsti") == "EPERM", output
        assert results.get("tiocexcl") == "ENOTTY" and results.get("tiocsetd") == "ENOTTY", output


OWN_PTY = r"""
import os, signal, termios
# as a shell does: a process outside the foreground group may set it without being stopped
signal.signal(signal.SIGTTOU, signal.SIG_IGN)
attrs = termios.tcgetattr(0)
attrs[3] &= ~termios.ECHO
termios.tcsetattr(0, termios.TCSANOW, attrs)
print("echo_off=%s" % (not termios.tcgetattr(1)[3] & termios.ECHO))
pid = os.fork()
if pid == 0:
    os.setpgid(0, 0)
    os.tcsetpgrp(0, os.getpgrp())            # a job in the foreground, as a shell's fg does
    print("foreground=%s" % (os.tcgetpgrp(0) == os.getpgrp()), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
os.tcsetpgrp(0, os.getpgrp())
print("back=%s" % (os.tcgetpgrp(0) == os.getpgrp()))
print("ttyname=%s" % os.ttyname(0))
"""


def test_strict_lets_the_command_use_its_own_pty(tmp_path):
    """With the relay, TCSETS and TIOCSPGRP work on the command's own pty (job control, raw mode),
    and the caller's terminal keeps its modes (ECHO still on outside)."""
    profile = strict_profile(tmp_path)
    code, output, before, after = run_on_pty(profile, ["/usr/bin/python3", "-I", "-S", "-c", OWN_PTY])
    assert code == 0, output
    results = results_of(output)
    assert results.get("echo_off") == "True" and results.get("foreground") == "True", output
    assert results.get("back") == "True" and results.get("ttyname", "").startswith("/dev/pts/"), output
    assert after == before and after["lflag"] & termios.ECHO
