"""The Python init: what PID 1 does when there is no C init (sandbox/init.c) to exec.

Its own module, imported by stages' "wait" stage, so that the stage table (stages.py) and the
entry of the cloned child (child.py, which runs the table) depend one way only: child ->
stages -> pyinit.
"""
import os
# _signal, not signal: the public module imports enum, milliseconds on every start.
import _signal as signal

from . import channel


def init_loop(command, listener, msg_w, forwarded):
    """Reap every child; forward signals to the command; return the command's status.

    With a seccomp listener, PID 1 also waits for kill-rule notifications: the offending
    thread stays blocked in the syscall (which never runs) while PID 1 names it to the
    supervisor and kills the command."""
    def forward(sig, _frame):
        try:
            os.kill(command, sig)
        except ProcessLookupError:
            pass
    for sig in forwarded:
        signal.signal(sig, forward)
    if listener is None:
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                return 0
            if pid == command:
                return status
    import select
    from . import seccomp
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    poller = select.poll()
    poller.register(wake_r, select.POLLIN)
    poller.register(listener, select.POLLIN)
    while True:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return 0
            if pid == 0:
                break
            if pid == command:
                return status
        for fd, event in poller.poll():
            if fd == wake_r:
                try:
                    os.read(wake_r, 512)
                except BlockingIOError:
                    pass
            elif event & select.POLLIN:
                caught = seccomp.receive_notification(listener, 0)
                if caught is not None:
                    # the same message the C init sends: pid, syscall number, audit arch
                    channel.send(msg_w, channel.SECCOMP_KILL, caught["pid"], caught["nr"], caught["arch"])
                    os.kill(command, signal.SIGKILL)
                    if caught["pid"] != command:
                        os.kill(caught["pid"], signal.SIGKILL)
            else:
                poller.unregister(listener)
