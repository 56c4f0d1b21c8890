"""Child halves: the sandbox's PID 1 and the command process.

PID 1 is born by clone() inside the new user, pid, mount, net, uts and ipc namespaces.
It waits for the supervisor to write its id maps and place it in its cgroup, then runs
the namespace stages in a fixed order, forks the command, and stays as a minimal init
(reaps zombies, forwards signals, reports the command's wait status).

The command process runs the privilege stages and execs. Stage order and why:
  setsid          no controlling terminal: TIOCSTI keystroke injection (CVE-2017-5226)
  ids             setresgid/setresuid to the inside ids
  rlimits         before the program can allocate anything
  cwd, fds        nothing inherited above fd 2 survives exec
  capabilities    after every privileged operation (mounts are done in PID 1)
  no_new_privs    required before an unprivileged seccomp filter and Landlock
  landlock        needs its path fds opened in the final mount view
  verify          fail closed: every requested layer holds, seen from inside
  seccomp         last: after it only execve runs (nsjail, crun)

Messages to the supervisor are tab-separated lines on a close-on-exec pipe:
  E stage errno detail   a stage failed (the process then exits 125)
  W text                 a warning
  X pid syscall          the seccomp listener caught a kill rule
  S status               PID 1: the command's wait status, just before PID 1 exits
"""
import os
# _signal, not signal: the public module imports enum, milliseconds on every start.
import _signal as signal

from . import sys as k
from .errors import SetupError, EXIT_NOEXEC, EXIT_NOTFOUND

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                     signal.SIGUSR2, signal.SIGWINCH, signal.SIGCONT, signal.SIGALRM)


def send(fd, *fields):
    line = "\t".join(str(f).replace("\t", " ").replace("\n", " ") for f in fields) + "\n"
    try:
        os.write(fd, line.encode())
    except OSError:
        pass


def report_failure(fd, stage, error):
    if isinstance(error, SetupError):
        send(fd, "E", error.stage, error.errno, str(error))
    elif isinstance(error, OSError):
        send(fd, "E", stage, error.errno or 0, "%s: %s" % (stage, error.strerror or error))
    else:
        send(fd, "E", stage, 0, "%s: %s: %s" % (stage, type(error).__name__, error))


def pid1_main(spec, go_r, msg_w):
    """Entry of the cloned child. Never returns."""
    stage = "start"
    try:
        # The supervisor's death kills us (and with PID 1 the whole pid namespace).
        k.prctl(k.PR_SET_PDEATHSIG, signal.SIGKILL, stage="pdeathsig")
        for sig in FORWARDED_SIGNALS + (signal.SIGPIPE,):
            signal.signal(sig, signal.SIG_DFL)
        if spec.cgroup_tasks:
            # Join our v1 cgroups before anything else (and before the cgroup namespace):
            # still with the caller's host credentials, which the kernel checks here.
            stage = "cgroup"
            for path in spec.cgroup_tasks:
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.write(fd, b"0")
                finally:
                    os.close(fd)
        stage = "sync"
        # EOF here means the supervisor gave up (or died) before the maps were written.
        if os.read(go_r, 1) != b"G":
            os._exit(125)
        os.close(go_r)
        if spec.idmap is not None:
            stage = "ids"
            from .user import enter
            enter(spec.idmap)
            # Changing credentials clears the parent-death signal: set it again, then make
            # sure the supervisor did not die in between (its end of our pipe would be gone).
            k.prctl(k.PR_SET_PDEATHSIG, signal.SIGKILL, stage="pdeathsig")
            import select
            watch = select.poll()
            watch.register(msg_w, 0)
            if watch.poll(0):
                os._exit(125)
        if spec.unshare_after_attach:
            # Mount, net, uts and ipc namespaces are made here rather than by clone (see
            # Sandbox._prepare). A cgroup namespace's root is the cgroup its creator is in
            # at unshare time, so it comes only now that we are in our cgroups. A time
            # namespace, like a pid namespace, applies to the children only.
            stage = "unshare"
            k.unshare(spec.unshare_after_attach)
        if spec.hostname:
            stage = "sethostname"
            k.sethostname(spec.hostname)
        if spec.net_mode == "loopback":
            stage = "loopback"
            from .net import bring_up_loopback
            bring_up_loopback()
        stage = "mount"
        if spec.mounts is not None:
            from . import mnt
            mnt.build(spec.mounts, spec.source_fds)
        if spec.stdio:
            for target, fd in enumerate(spec.stdio):
                if fd is not None and fd != target:
                    os.dup2(fd, target)
        # Whatever the supervisor held (bind sources, the cgroup lock, a caller's files) is
        # a handle on the host's file tree; none of it may live on inside the sandbox.
        _close_all_but(msg_w, spec.init_fd)
        stage = "fork"
        pid1_end = None
        if spec.seccomp_listener_wanted:
            import socket
            pid1_end, command_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            spec.handoff = command_end.detach()
        command = os.fork()
        if command == 0:
            command_main(spec, msg_w)
        if spec.init_fd is not None:
            stage = "init"
            _exec_init(spec, command, msg_w, pid1_end)
        # Nothing inside may read or ptrace PID 1's memory.
        k.prctl(k.PR_SET_DUMPABLE, 0, stage="dumpable")
        listener = None
        if pid1_end is not None:
            os.close(spec.handoff)
            stage = "seccomp-listener"
            from . import seccomp
            try:
                listener = seccomp.recv_listener(pid1_end.fileno())
            except SetupError:
                listener = None  # the command failed before installing its filter
            pid1_end.close()
        status = init_loop(command, listener, msg_w)
        send(msg_w, "S", status)
        os._exit(0)
    except BaseException as error:  # noqa: B036 - every failure must reach the supervisor
        report_failure(msg_w, stage, error)
        os._exit(125)


def _close_all_but(*keep):
    low = 3
    for fd in sorted(fd for fd in keep if fd is not None):
        os.closerange(low, fd)
        low = fd + 1
    # close_range(2) underneath: no upper bound to guess (nofile may exceed 65536)
    os.closerange(low, 0x7FFFFFFF)


def _exec_init(spec, command, msg_w, pid1_end):
    """Become the small C init (sandbox/init.c): the same duties as init_loop, without a
    Python interpreter's memory kept alive for the sandbox's whole life."""
    os.set_inheritable(msg_w, True)
    argv = ["pysandbox-init", str(command), str(msg_w)]
    if pid1_end is not None:
        os.close(spec.handoff)
        sock = pid1_end.detach()
        os.set_inheritable(sock, True)
        argv.append(str(sock))
    os.execve(spec.init_fd, argv, {})


def init_loop(command, listener, msg_w):
    """Reap every child; forward signals to the command; return the command's status.

    With a seccomp listener, PID 1 also waits for kill-rule notifications: the offending
    thread stays blocked in the syscall (which never runs) while PID 1 names it to the
    supervisor and kills the command."""
    def forward(sig, _frame):
        try:
            os.kill(command, sig)
        except ProcessLookupError:
            pass
    for sig in FORWARDED_SIGNALS:
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
                caught = seccomp.receive_kill(listener, 0)
                if caught is not None:
                    send(msg_w, "X", caught[0], caught[1])  # pid, syscall name
                    os.kill(command, signal.SIGKILL)
                    if caught[0] != command:
                        os.kill(caught[0], signal.SIGKILL)
            else:
                poller.unregister(listener)


def command_main(spec, msg_w):
    """The command's half. Never returns: exec, or exit 125/126/127."""
    stage = "setsid"
    try:
        for sig in FORWARDED_SIGNALS + (signal.SIGPIPE, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        if spec.new_session:
            os.setsid()
        if spec.idmap is not None:
            stage = "ids"
            from .user import become
            become(spec.idmap, keep_caps=spec.caps is not None)
        if spec.rlimits:
            stage = "rlimits"
            from .rlimits import apply as apply_rlimits
            apply_rlimits(spec.rlimits)
        stage = "chdir"
        try:
            os.chdir(spec.cwd)
        except OSError as e:
            raise SetupError("chdir", e.errno, "cwd %s: %s" % (spec.cwd, e.strerror)) from None
        if spec.close_fds:
            stage = "close-fds"
            _close_all_but(msg_w, spec.handoff)
        if spec.caps is not None:
            stage = "capabilities"
            from . import caps
            caps.apply(spec.caps_keep, spec.caps_ambient)
        if spec.no_new_privs:
            stage = "no_new_privs"
            k.prctl(k.PR_SET_NO_NEW_PRIVS, 1, stage="no_new_privs")
        if spec.landlock is not None:
            stage = "landlock"
            from . import landlock
            for warning in landlock.apply(spec.landlock, extra_ro=spec.landlock_ro, extra_rw=spec.landlock_rw) or ():
                send(msg_w, "W", warning)
        if spec.verify is not None:
            stage = "verify"
            from . import verify
            verify.check(dict(spec.verify, allowed_fds=[fd for fd in (msg_w, spec.handoff) if fd is not None]))
        if spec.bpf is not None:
            stage = "seccomp"
            from . import seccomp
            before = spec.verify.get("seccomp_filters_before", 0) if spec.verify is not None else 0
            if spec.extra_bpf is not None:
                # a filter stacked from the command line first; the profile's own stays last
                seccomp.install(spec.extra_bpf)
                before += 1
            seccomp.install(spec.bpf, log=spec.seccomp_log, listener=spec.handoff is not None,
                            handoff=spec.handoff)
            if spec.verify is not None and "seccomp_filters_before" in spec.verify:
                # open/read/close only: syscalls the command's own startup needs anyway
                verify.seccomp_installed(before)
        stage = "exec"
        argv = spec.argv
        try:
            os.execvpe(argv[0], argv, spec.env)
        except OSError as e:
            code = EXIT_NOTFOUND if e.errno in (2, 20) else EXIT_NOEXEC
            send(msg_w, "E", "exec", e.errno, "%s: %s" % (argv[0], e.strerror))
            os._exit(code)
    except BaseException as error:  # noqa: B036
        report_failure(msg_w, stage, error)
        os._exit(125)
