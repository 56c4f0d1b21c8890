"""The sandbox's own terminal (issue 9 item 4, issue 10 item 1).

Each test drives `pysandbox run` under a pty the test creates (the CLI's stdio and
controlling terminal, as in an interactive shell) and checks: the command's terminal is
a pty of the sandbox's own devpts, never the caller's; window size and resizes arrive;
^C is a signal inside; an interactive shell has job control; the caller's terminal
attributes are as before on every way out."""
import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time

import pytest

from util import ROOT, children, command_running, comm as _comm, pysandbox_cmd, wait_until


def _set_size(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _make_controlling_terminal():
    # runs in the CLI's child after setsid (start_new_session): the slave, its stdin,
    # becomes the session's controlling terminal, as a login shell's is
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """The CLI under a pty of the test's: the test holds the master (the 'keyboard and
    screen') and the slave (to read the caller's terminal attributes)."""

    def __init__(self, profile, argv, rows=24, cols=80, extra=()):
        self.master, self.slave = pty.openpty()
        _set_size(self.slave, rows, cols)
        self.before = termios.tcgetattr(self.slave)
        self.output = b""
        self.proc = subprocess.Popen(pysandbox_cmd() + ["run", "--profile", profile] + list(extra) + ["--"] + argv,
                                     stdin=self.slave, stdout=self.slave, stderr=self.slave, start_new_session=True,
                                     preexec_fn=_make_controlling_terminal)

    def read_until(self, pattern, timeout=30):
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while not regex.search(self.output):
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail("timed out waiting for %r; the terminal showed %r" % (pattern, self.output))
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    self.output += os.read(self.master, 4096)
                except OSError:
                    break
        return self.output

    def wait_raw(self):
        """Until the relay has put the caller's terminal in raw mode (the pty inside is
        live): from then on keys go to the sandbox's pty, not to the CLI's terminal."""
        wait_until(lambda: not termios.tcgetattr(self.slave)[3] & termios.ICANON, what="raw mode")

    def type(self, data):
        os.write(self.master, data)

    def finish(self, timeout=30):
        # keep reading so the CLI never blocks on a full terminal
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail("the CLI did not end; the terminal showed %r" % self.output)
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    self.output += os.read(self.master, 4096)
                except OSError:
                    pass
        self.after = termios.tcgetattr(self.slave)
        while select.select([self.master], [], [], 0)[0]:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                break
            if not chunk:
                break
            self.output += chunk
        os.close(self.master)
        os.close(self.slave)
        return self.proc.returncode

    def text(self):
        return self.output.decode("utf-8", "replace").replace("\r\n", "\n")


def test_the_command_gets_a_pty_of_the_sandboxs_own_devpts(strict):
    host_pts = os.stat("/dev/pts").st_dev
    t = Terminal(strict, ["sh", "-c", "tty; stat -L -c '%d %t:%T' /proc/self/fd/0 /proc/self/fd/1 "
                                      "/proc/self/fd/2; stat -c %d /dev/pts/"])
    code = t.finish()
    assert code == 0, t.text()
    lines = t.text().split("\n")
    assert re.fullmatch(r"/dev/pts/\d+", lines[0]), t.text()
    inside_pts = int(lines[4])
    assert inside_pts != host_pts
    for line in lines[1:4]:
        # every stdio is a slave of the sandbox's devpts (its pts/0 may share the caller's
        # numbers: another instance of devpts, another device)
        assert int(line.split()[0]) == inside_pts, t.text()
    assert t.after == t.before


def test_no_descriptor_of_the_sandbox_is_the_callers_terminal(strict):
    t = Terminal(strict, ["sleep", "30"])
    caller_st = os.stat(os.ttyname(t.slave))
    caller = (caller_st.st_dev, caller_st.st_ino)
    pid1 = wait_until(lambda: (children(t.proc.pid) or [None])[0], what="PID 1")
    wait_until(lambda: command_running(pid1, "sleep"), what="sleep to run")
    command = children(pid1)[0]
    seen = 0
    for pid in (pid1, command):
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                st = os.stat("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            seen += 1
            assert (st.st_dev, st.st_ino) != caller, "fd %s of %d is the caller's terminal" % (fd, pid)
            assert st.st_dev != os.stat("/dev/pts").st_dev, "fd %s of %d is on the host's devpts" % (fd, pid)
    assert seen >= 4
    t.wait_raw()
    t.type(b"\x03")
    assert t.finish() == 130


def test_window_size_and_resizes_reach_the_command(strict):
    t = Terminal(strict, ["sh", "-c", "stty size; read line; stty size"], rows=33, cols=101)
    t.read_until(rb"33 101")
    t.wait_raw()
    _set_size(t.slave, 40, 120)   # the kernel signals the CLI (SIGWINCH), which resizes the pty inside
    t.type(b"\r")
    t.read_until(rb"40 120")
    assert t.finish() == 0
    assert t.after[:6] == t.before[:6]


def test_ctrl_c_stops_the_command_inside_and_the_cli_exits_130(strict):
    t = Terminal(strict, ["sleep", "30"])
    t.wait_raw()
    t.type(b"\x03")   # a byte to the pty inside, whose line discipline sends SIGINT
    assert t.finish() == 130, t.text()
    assert t.after == t.before


def test_an_interactive_shell_has_job_control(strict):
    t = Terminal(strict, ["sh", "-i"])
    t.wait_raw()
    t.read_until(rb"[#$] $")
    t.type(b"echo ok$((40+2))\r")
    t.read_until(rb"ok42")
    t.type(b"sleep 30\r")
    wait_until(lambda: _sleep_state(t) == "S", what="sleep running in the shell")
    t.type(b"\x1a")   # ^Z: SIGTSTP to the foreground job, the shell takes the terminal back
    t.read_until(rb"Stopped")
    assert _sleep_state(t) == "T"
    t.type(b"fg\r")   # tcsetpgrp again: the job is the foreground and runs on
    wait_until(lambda: _sleep_state(t) == "S", what="sleep continued in the foreground")
    t.type(b"\x03")   # ^C reaches the foreground job, not the shell
    wait_until(lambda: _sleep_state(t) is None, what="sleep ended by ^C")
    t.type(b"echo back$((40+2))\r")
    t.read_until(rb"back42")
    t.type(b"exit\r")
    assert t.finish() == 0, t.text()
    assert "can't access tty" not in t.text() and "job control turned off" not in t.text()
    assert t.after == t.before


def _sleep_state(t):
    """The state letter of the shell's `sleep` (S running, T stopped), None when there is none."""
    for pid in _descendants(t.proc.pid):
        if _comm(pid) == "sleep":
            try:
                with open("/proc/%d/stat" % pid) as f:
                    return f.read().rpartition(")")[2].split()[0]
            except OSError:
                return None
    return None



def _descendants(pid):
    out = []
    for child in children(pid):
        out.append(child)
        out.extend(_descendants(child))
    return out


@pytest.mark.parametrize("argv, extra, how, code", [
    # the command SIGKILLed once the test has seen raw mode (it reads a line first: without it
    # the run can end, and the terminal be restored, before the test looks)
    (["sh", "-c", "stty raw -echo; read line; kill -9 $$"], (), "line", 137),
    (["sleep", "30"], ("--timeout", "1"), None, 124),                  # the wall timeout
    (["sleep", "30"], (), signal.SIGTERM, 143),                         # SIGTERM to the supervisor
    (["sleep", "30"], (), signal.SIGHUP, 129),                          # SIGHUP to the supervisor
])
def test_the_callers_terminal_is_restored_on_every_way_out(strict, argv, extra, how, code):
    t = Terminal(strict, argv, extra=extra)
    t.wait_raw()
    if how == "line":
        t.type(b"go\n")
    elif how is not None:
        wait_until(lambda: command_running((children(t.proc.pid) or [0])[0], "sleep"), what="sleep to run")
        t.proc.send_signal(how)   # reaches the command inside
    assert t.finish() == code, t.text()
    assert t.after == t.before


def test_pipes_behave_as_before(strict):
    proc = subprocess.run(pysandbox_cmd() + ["run", "--profile", strict, "--", "sh", "-c",
                                             "cat; test -t 0 || echo notty"],
                          input=b"piped\n", capture_output=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == b"piped\nnotty\n", proc.stderr


def test_tty_flag_with_a_pipe_and_interactive(strict):
    """-t gives a pty even without a terminal; -i relays a stdin that is not one (its end
    is the pty's end-of-file)."""
    proc = subprocess.run(pysandbox_cmd() + ["run", "--profile", strict, "-t", "-i", "--", "sh", "-c",
                                             "test -t 0 && echo tty; cat"],
                          input=b"line\n", capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.replace(b"\r\n", b"\n").split(b"\n")
    assert b"tty" in lines and b"line" in lines, proc.stdout   # (the pty echoes the input too)


def test_the_api_gives_a_pty_when_asked_and_keeps_pipes(strict):
    from sandbox import Sandbox, load_profile
    with Sandbox(load_profile(strict)) as box:
        r = box.run(["sh", "-c", "test -t 0 && echo tty0; test -t 1 || echo pipe1"], capture_output=True, tty=True,
                    timeout=20)
    # stdin was inherited (a pty of the sandbox's own), stdout and stderr the run's pipes
    assert r.exit_code == 0 and r.stdout == b"tty0\npipe1\n", (r, r.stdout, r.stderr)


def test_the_non_tty_path_imports_nothing_for_terminals(strict):
    code = ("import sys\nfrom sandbox import Sandbox, load_profile\n"
            "with Sandbox(load_profile(%r)) as box:\n    r = box.run(['true'], capture_output=True, timeout=20)\n"
            "print(r.exit_code, sorted(m for m in ('termios', 'tty', 'fcntl', 'sandbox.terminal', 'resource')"
            " if m in sys.modules))\n") % strict
    import sys
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split(None, 1)[0] == "0"
    assert "terminal" not in proc.stdout and "termios" not in proc.stdout, proc.stdout


def test_a_terminal_given_as_a_descriptor_is_replaced_too(strict):
    """start(stdout=<a terminal>) under the default tty=None: the command writes to a pty
    of its own, the relay copies it to the given terminal."""
    from sandbox import Sandbox, load_profile
    master, slave = pty.openpty()
    null = os.open("/dev/null", os.O_RDONLY)
    try:
        host_pts = os.stat("/dev/pts").st_dev
        with Sandbox(load_profile(strict)) as box:
            r = box.start(["sh", "-c", "stat -L -c %d /proc/self/fd/1"], stdin=null, stdout=slave, timeout=20).wait()
        assert r.exit_code == 0, r
        shown = b""
        while select.select([master], [], [], 0)[0]:
            chunk = os.read(master, 4096)
            if not chunk:
                break
            shown += chunk
        dev = int(shown.split()[0])
        assert dev != host_pts and dev != os.stat(os.ttyname(slave)).st_dev
    finally:
        for fd in (master, slave, null):
            os.close(fd)
