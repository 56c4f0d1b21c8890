"""The sandbox's own terminal: a pty from the sandbox's devpts, relayed by the supervisor.

Why: a terminal descriptor is a handle on the caller's session. Given to the sandbox, it
lets the command change the caller's line discipline, modes, window size, exclusive
flag or the file description's O_NONBLOCK, with ioctls that setsid() does not stop (the
kernel checks the controlling terminal only for a few of them). So the caller's terminal
never enters: every stdio slot that would have inherited it gets /dev/null in PID 1, and
the command's "tty" stage (sandbox/stages.py) replaces those slots with the slave of a
pty it opens from the sandbox's own devpts instance (`/dev/ptmx -> pts/ptmx`, mounted
with newinstance by sandbox/mnt.py):

  command   open /dev/ptmx (the sandbox's), unlock, TIOCGPTPEER for the slave (no path
            lookup), set the caller's window size, setsid + TIOCSCTTY (the pty becomes
            the session's controlling terminal: job control, ^C/^Z as signals inside),
            dup the slave onto the slots, send the master to the supervisor with
            SCM_RIGHTS on a socketpair made for this run, close everything else.
  supervisor (Relay, driven by the wait loop of sandbox/runtime.py) receives the master,
            puts the caller's terminal in raw mode (the pty inside does the line editing
            and signal keys), copies caller -> master and master -> caller, forwards
            SIGWINCH as TIOCSWINSZ on the master (the kernel then signals the foreground
            process group inside), and restores the caller's terminal on every way out of
            wait (exit, signal, timeout, an exception, SIGTERM/SIGHUP to the supervisor).

This module is imported only when a pty is used: the non-terminal path pays nothing.
"""
import fcntl
import os
import select
import socket
import struct
import termios
import tty as _tty
# _signal, not signal: the public module imports enum.
import _signal as signal

# include/uapi/asm-generic/ioctls.h
TIOCSPTLCK = 0x40045431   # _IOW('T', 0x31, int): lock/unlock the slave
TIOCGPTPEER = 0x5441      # _IO('T', 0x41): open the slave from the master (Linux 4.13)
_WINSIZE = struct.pack("HHHH", 0, 0, 0, 0)
_PENDING_MAX = 1 << 16    # caller input queued for the master before we stop reading it


def caller_winsize(fds=(0, 1, 2)):
    """The window size of the caller's terminal (the first of `fds` that is one), or None."""
    for fd in fds:
        try:
            return fcntl.ioctl(fd, termios.TIOCGWINSZ, _WINSIZE)
        except OSError:
            continue
    return None


def child(relay):
    """The command's "tty" stage: make the pty, keep the slave, send the master."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    if relay.winsize is not None:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, relay.winsize)
    # TIOCSCTTY needs a session leader without a controlling terminal.
    if os.getsid(0) != os.getpid():
        os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for target, use in enumerate(relay.slots):
        if use:
            os.dup2(slave, target)   # dup2's copy is inheritable: it survives exec
    sock = socket.socket(fileno=relay.child_sock)
    try:
        socket.send_fds(sock, [b"M"], [master])
    finally:
        sock.close()
        os.close(master)
        if slave > 2:
            os.close(slave)


class Relay:
    """One run's terminal: which stdio slots get the pty, the socket the master comes back
    on, and the copying between the caller's terminal and the master."""

    def __init__(self, slots, interactive=False, callers=(0, 1, 2)):
        """`slots`: which of the command's stdio get the pty; `callers`: the caller's
        descriptor behind each slot (the supervisor's own 0-2 when inherited)."""
        self.slots = tuple(bool(s) for s in slots)
        self.winsize = caller_winsize(tuple(fd for fd, slot in zip(callers, self.slots) if slot) + (0, 1, 2))
        self.null_fd = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        # The caller's stdin is copied in when it is a terminal, or with interactive (-i);
        # raw mode only for a terminal.
        stdin_tty = self.slots[0] and os.isatty(callers[0])
        self.in_fd = callers[0] if self.slots[0] and (stdin_tty or interactive) else None
        self.raw_fd = callers[0] if stdin_tty else None
        self.out_fd = callers[1] if self.slots[1] else (callers[2] if self.slots[2] else None)
        self.winsize_fds = tuple(fd for fd, slot in zip(callers, self.slots) if slot) + (0, 1, 2)
        self.sock = self.child_sock = self.master = None
        self.poller = self.proc = None
        self.saved_mode = None
        self.saved_handlers = {}
        self.pending = b""
        self.master_open = self.in_open = self.in_ended = False
        self.finished = False

    # -- supervisor: setup (SUPERVISOR_STAGES "tty", before clone) ------------------
    def close_null(self):
        if self.null_fd is not None:
            os.close(self.null_fd)
            self.null_fd = None

    def open_socket(self):
        self.sock, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.child_sock = child_end.detach()   # close-on-exec: the C init never holds it

    def close_child_end(self):
        if self.child_sock is not None:
            os.close(self.child_sock)
            self.child_sock = None

    def close_sockets(self):
        self.close_child_end()
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    # -- supervisor: the wait loop ---------------------------------------------------
    def attach(self, poller, proc):
        self.poller, self.proc = poller, proc
        poller.register(self.sock.fileno(), select.POLLIN)
        self.saved_handlers[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, self._resize)
        # A supervisor killed by SIGTERM/SIGHUP's default action could not restore the
        # caller's terminal: pass them to the sandbox instead (the CLI does the same).
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) == signal.SIG_DFL:
                self.saved_handlers[sig] = signal.signal(sig, self._forward)

    def _forward(self, sig, _frame):
        self.proc.kill(sig)

    def _resize(self, *_):
        size = caller_winsize(self.winsize_fds)
        if size is not None and self.master is not None:
            try:
                fcntl.ioctl(self.master, termios.TIOCSWINSZ, size)
            except OSError:
                pass

    def handle(self, fd, event):
        if self.sock is not None and fd == self.sock.fileno():
            self._receive()
        elif fd == self.master:
            if event & select.POLLOUT:
                self._write_master()
            if event & (select.POLLIN | select.POLLHUP | select.POLLERR):
                self._read_master(event)
        elif fd == self.in_fd:
            self._read_caller()

    def _receive(self):
        try:
            _, fds, _, _ = socket.recv_fds(self.sock, 16, 4)
        except OSError:
            fds = []
        self.poller.unregister(self.sock.fileno())
        self.close_sockets()
        for extra in fds[1:]:
            os.close(extra)
        if not fds:
            return  # the command ended before its tty stage: nothing to relay
        self.master = fds[0]
        os.set_blocking(self.master, False)
        self._resize()  # a resize between start and now
        if self.raw_fd is not None:
            try:
                self.saved_mode = termios.tcgetattr(self.raw_fd)
                _tty.setraw(self.raw_fd, termios.TCSANOW)
            except termios.error:
                self.saved_mode = None
        self.master_open = True
        self.poller.register(self.master, select.POLLIN)
        if self.in_fd is not None:
            self.in_open = True
            self.poller.register(self.in_fd, select.POLLIN)

    def _read_master(self, event):
        try:
            data = os.read(self.master, 65536)
        except BlockingIOError:
            return
        except OSError:   # EIO: no slave is open any more
            data = b""
        if data:
            self._to_caller(data)
        elif self.master_open:
            self.master_open = False
            self.poller.unregister(self.master)

    def _to_caller(self, data):
        if self.out_fd is None:
            return
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.out_fd, view):]
            except BlockingIOError:
                select.select([], [self.out_fd], [])
            except OSError:
                self.out_fd = None   # the caller's terminal is gone: drop the output
                return

    def _read_caller(self):
        try:
            data = os.read(self.in_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            # A non-terminal stdin ended: the line discipline's end-of-file key tells the
            # command inside (a terminal's own ^D arrives as data in raw mode).
            self.poller.unregister(self.in_fd)
            self.in_open = False
            self.in_ended = True
            if self.raw_fd is None:
                self.pending += b"\x04"
        else:
            self.pending += data
            if len(self.pending) >= _PENDING_MAX and self.in_open:
                self.poller.unregister(self.in_fd)
                self.in_open = False
        self._write_master()

    def _write_master(self):
        if self.pending and self.master_open:
            try:
                n = os.write(self.master, self.pending)
                self.pending = self.pending[n:]
            except BlockingIOError:
                pass
            except OSError:
                self.pending = b""
        if self.master_open:
            self.poller.modify(self.master, select.POLLIN | (select.POLLOUT if self.pending else 0))
        if (not self.in_open and not self.in_ended and self.in_fd is not None and self.master_open
                and len(self.pending) < _PENDING_MAX):
            # reading resumes once the master took the backlog
            self.in_open = True
            self.poller.register(self.in_fd, select.POLLIN)

    # -- supervisor: the end ---------------------------------------------------------
    def drain(self):
        """After the sandbox ended: what the command wrote last, then the master closed."""
        if self.master is None:
            return
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                break
            if not data:
                break
            self._to_caller(data)

    def finish(self):
        """Restore the caller's terminal and handlers; idempotent."""
        if self.finished:
            return
        self.finished = True
        if self.saved_mode is not None:
            try:
                termios.tcsetattr(self.raw_fd, termios.TCSADRAIN, self.saved_mode)
            except termios.error:
                pass
        for sig, handler in self.saved_handlers.items():
            signal.signal(sig, handler)
        self.saved_handlers = {}
        if self.master is not None:
            os.close(self.master)
            self.master = None
        self.close_sockets()
        self.close_null()
