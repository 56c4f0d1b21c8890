"""The order of setup, as data: the child's stages, PID 1's and the command's, in one table.

Read CHILD_STAGES at the end of this file (and runtime.SUPERVISOR_STAGES for the
supervisor's side) to know what happens, in which process and in which order. Each
stage is (process, name, function(plan, launch)); a function returns when its layer is done
(or does not apply to this plan) and raises on failure: SetupError from the native
layer's check(), or OSError. The runner reports a failure on the channel as
`E <stage> <errno> <message>` and the process exits 125; the supervisor turns that into
the run's verdict (exit 125, `stage` and `message` naming it).

The compiled child (sandbox/stager.py) runs this same table, stage by stage, with one
deviation it documents (`stager._net_helper`): its network namespace and lo are made by a
helper beside PID 1 while PID 1 builds the root, and PID 1 joins that namespace at the start
of its user-limits stage, under the same ordering rules.

Adding a kernel layer: one module sandbox/<module>.py with the layer interface
(`plan(profile, context) -> part or None`, `child(part, launch)`, optionally
`expect(part) -> {verify key: value}`), one `(process, "<stage>", layer("<module>"))`
line in CHILD_STAGES where the kernel's rules put it, and its tests. plan.build finds the
layer through the table, asks it for its part, and the stage runs its child half.

Why this order (the kernel's rules; see docs/architecture.md):
  supervisor  cgroup before clone (its limits apply from the first instruction), maps
              written from outside the new user namespace, then one byte "go".
  PID 1       join v1 cgroups with host credentials, wait for the maps, take on inside
              ids, unshare the rest (cgroup namespace only once in the cgroup), build the
              root (keeping /proc/sys/user of the fresh /proc open before the masks make
              /proc/sys read-only), bound the namespace's user.* sysctls below it (after
              the last namespace is made), close every host descriptor, fork the command,
              become init.
  command     setsid (no controlling terminal: TIOCSTI), ids, rlimits, cwd, fds; then
              capabilities after every privileged step; no_new_privs before Landlock
              and an unprivileged filter; verify while any syscall is still allowed;
              seccomp last: after it only execve runs (nsjail, crun).
"""
import os
# _signal, not signal: the public module imports enum, milliseconds on every start.
import _signal as signal

from . import channel, native
from .errors import SetupError, EXIT_NOEXEC, EXIT_NOTFOUND, EXIT_SETUP

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                     signal.SIGUSR2, signal.SIGWINCH, signal.SIGCONT, signal.SIGALRM)


class Launch:
    """What one run adds to the plan: the command, its stdio and the descriptors the
    supervisor prepared. Made per run; the plan itself never changes."""

    __slots__ = ("argv", "env", "cwd", "stdio", "source_fds", "cgroup_tasks", "init_fd", "go_r", "msg_w",
                 "handoff", "pid1_end", "command", "listener", "warnings", "cpu_time", "tty", "sysctl_dir",
                 "net_inline")

    def __init__(self, argv, env, cwd, stdio=None, init_fd=None):
        self.argv, self.env, self.cwd, self.stdio, self.init_fd = argv, env, cwd, stdio, init_fd
        self.source_fds = self.cgroup_tasks = self.go_r = self.msg_w = None
        self.handoff = self.pid1_end = self.command = self.listener = None
        # per run: the CPU-time budget (seconds) and the terminal relay (terminal.Relay)
        self.cpu_time = self.tty = None
        # the mount stage's O_PATH descriptor of the sandbox's /proc/sys/user (user_limits.py)
        self.sysctl_dir = None
        # PID 1 makes the network namespace itself, without the stager's helper (stager.net_inline)
        self.net_inline = False
        self.warnings = []


class layer:
    """A stage that is a kernel layer's child half: sandbox/<module>.py's child(part,
    launch), run when the layer planned a part for this sandbox (plan.layers[module])."""

    __slots__ = ("module",)

    def __init__(self, module):
        self.module = module

    def __call__(self, plan, launch):
        part = plan.layers.get(self.module)
        if part is not None:
            import sys
            sys.modules["sandbox." + self.module].child(part, launch)


def layer_modules():
    """The layer modules of the tables, in table order (the order plan.build plans them)."""
    return [step.module for _, step in PID1_STAGES + COMMAND_STAGES if isinstance(step, layer)]


def run(table, plan, launch):
    """Run a stage table in order; on failure report it and exit 125 (never returns then)."""
    name = None
    try:
        for name, step in table:
            native.run_stage(name, step, plan, launch)
    except BaseException as error:  # noqa: B036 - every failure must reach the supervisor
        report_failure(launch.msg_w, name, error)
        native.exit(EXIT_SETUP)


def report_failure(fd, stage, error):
    """One message naming the stage: SetupError's own stage when it is this stage or a
    part of it ("verify: capabilities"), else "<stage>: <what failed>"."""
    if isinstance(error, SetupError):
        if error.stage == stage or error.stage.startswith(stage + ":"):
            channel.send(fd, channel.ERROR, error.stage, error.errno, str(error))
        else:
            channel.send(fd, channel.ERROR, stage, error.errno, "%s: %s" % (stage, error))
    elif isinstance(error, OSError):
        where = " %s" % error.filename if error.filename else ""
        channel.send(fd, channel.ERROR, stage, error.errno or 0, "%s:%s %s" % (stage, where, error.strerror or error))
    else:
        channel.send(fd, channel.ERROR, stage, 0, "%s: %s: %s" % (stage, type(error).__name__, error))


# ---- PID 1 ------------------------------------------------------------------------

def pdeathsig(plan, launch):
    # The supervisor's death kills us (and with PID 1 the whole pid namespace).
    native.prctl(native.PR_SET_PDEATHSIG, signal.SIGKILL, stage="pdeathsig")
    for sig in FORWARDED_SIGNALS + (signal.SIGPIPE,):
        signal.signal(sig, signal.SIG_DFL)


def join_cgroups(plan, launch):
    # Join our v1 cgroups before anything else (and before the cgroup namespace): still
    # with the caller's host credentials, which the kernel checks here.
    for path in launch.cgroup_tasks or ():
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)


def wait_for_supervisor(plan, launch):
    # EOF here means the supervisor gave up (or died) before the maps were written.
    if native.read(launch.go_r, 1) != b"G":
        native.exit(EXIT_SETUP)
    native.close(launch.go_r)


def enter_ids(plan, launch):
    if plan.idmap is None:
        return
    from . import user
    user.enter(plan.idmap)
    # Changing credentials clears the parent-death signal: set it again, then make sure
    # the supervisor did not die in between (its end of our pipe would be gone).
    native.prctl(native.PR_SET_PDEATHSIG, signal.SIGKILL, stage="pdeathsig")
    import select
    watch = select.poll()
    watch.register(launch.msg_w, 0)
    if watch.poll(0):
        native.exit(EXIT_SETUP)


def unshare_rest(plan, launch):
    # Mount, net, uts and ipc namespaces are made here rather than by clone (see
    # plan.build). A cgroup namespace's root is the cgroup its creator is in at unshare
    # time, so it comes only now that we are in our cgroups. A time namespace, like a
    # pid namespace, applies to the children only.
    if plan.unshare_flags:
        native.unshare(plan.unshare_flags)


def set_hostname(plan, launch):
    if plan.hostname:
        native.sethostname(plan.hostname)




def build_root(plan, launch):
    if plan.mounts is not None:
        from . import mnt
        launch.sysctl_dir = mnt.build(plan.mounts, launch.source_fds, "user_limits" in plan.layers)


def connect_stdio(plan, launch):
    if launch.stdio:
        for target, fd in enumerate(launch.stdio):
            if fd is not None and fd != target:
                os.dup2(fd, target)


def close_host_fds(plan, launch):
    # Whatever the supervisor held (bind sources, the cgroup lock, a caller's files) is a
    # handle on the host's file tree; none of it may live on inside the sandbox.
    native.close_all_but(launch.msg_w, launch.init_fd, launch.tty.child_sock if launch.tty else None)


def fork_command(plan, launch):
    filter_part = plan.layers.get("seccomp")
    if filter_part is not None and filter_part.listener:
        import socket
        launch.pid1_end, command_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        launch.handoff = command_end.detach()
    command = native.fork()
    if command == 0:
        run(COMMAND_STAGES, plan, launch)
        native.exit(EXIT_SETUP)  # not reached: the exec stage execs or exits
    launch.command = command


def become_init(plan, launch):
    """Become the small C init (sandbox/init.c): the same duties as the Python init,
    without a Python interpreter's memory kept alive for the sandbox's whole life."""
    if launch.init_fd is None:
        return
    os.set_inheritable(launch.msg_w, True)
    argv = ["pysandbox-init", str(launch.command), str(launch.msg_w)]
    if launch.pid1_end is not None:
        native.close(launch.handoff)
        sock = launch.pid1_end.detach()
        os.set_inheritable(sock, True)
        argv.append(str(sock))
    native.execve(launch.init_fd, argv, {})


def not_dumpable(plan, launch):
    # Nothing inside may read or ptrace PID 1's memory.
    native.prctl(native.PR_SET_DUMPABLE, 0, stage="dumpable")


def receive_listener(plan, launch):
    if launch.pid1_end is None:
        return
    native.close(launch.handoff)
    from . import seccomp
    try:
        launch.listener = seccomp.recv_listener(launch.pid1_end.fileno())
    except SetupError:
        launch.listener = None  # the command failed before installing its filter
    launch.pid1_end.close()


def supervise(plan, launch):
    from .pyinit import init_loop
    status = init_loop(launch.command, launch.listener, launch.msg_w, FORWARDED_SIGNALS)
    channel.send(launch.msg_w, channel.STATUS, status)
    native.exit(0)


# ---- the command ------------------------------------------------------------------

def new_session(plan, launch):
    # The command starts with every signal at its default and none blocked: exec keeps
    # ignored signals and the mask, and this process ignores SIGPIPE and SIGXFSZ (Python
    # does at startup) besides what its caller set.
    for sig in range(1, signal.NSIG):
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):  # glibc's own real-time signals
                pass
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    if plan.new_session:
        os.setsid()


def become_ids(plan, launch):
    if plan.idmap is not None:
        from . import user
        user.become(plan.idmap, keep_caps=plan.layers.get("caps") is not None)




def cpu_time_limit(plan, launch):
    # RLIMIT_CPU counts whole seconds per process: SIGXCPU at the soft limit, SIGKILL at
    # the hard one. The supervisor watches the cgroup's total for the exact budget and for
    # processes the limit does not see; this is the kernel's own backstop. Never raised
    # above what the profile or the caller already set.
    if launch.cpu_time is None:
        return
    import sys
    resource = sys.modules["resource"]
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    seconds = int(launch.cpu_time) + (launch.cpu_time % 1 > 0)
    if hard != resource.RLIM_INFINITY:
        seconds = min(seconds, hard)
    new_soft = seconds if soft == resource.RLIM_INFINITY else min(seconds, soft)
    new_hard = seconds + 1 if hard == resource.RLIM_INFINITY else min(seconds + 1, hard)
    try:
        resource.setrlimit(resource.RLIMIT_CPU, (new_soft, new_hard))
    except (OSError, ValueError) as e:
        raise SetupError("cpu-time", getattr(e, "errno", 0) or 1, "RLIMIT_CPU %d: %s" % (seconds, e)) from None


def own_terminal(plan, launch):
    # The command's pty comes from the sandbox's own devpts, opened here (after the mounts,
    # with the command's ids, before Landlock and seccomp); the master goes to the
    # supervisor (sandbox/terminal.py).
    if launch.tty is not None:
        import sys
        sys.modules["sandbox.terminal"].child(launch.tty)


def change_dir(plan, launch):
    try:
        os.chdir(launch.cwd)
    except OSError as e:
        raise SetupError("chdir", e.errno, "cwd %s: %s" % (launch.cwd, e.strerror)) from None


def close_fds(plan, launch):
    if plan.close_fds:
        native.close_all_but(launch.msg_w, launch.handoff)




def no_new_privs(plan, launch):
    if plan.no_new_privs:
        native.prctl(native.PR_SET_NO_NEW_PRIVS, 1, stage="no_new_privs")




def verify(plan, launch):
    if plan.verify is not None:
        from . import verify as layer
        layer.check(dict(plan.verify, allowed_fds=[fd for fd in (launch.msg_w, launch.handoff) if fd is not None]))




def exec_command(plan, launch):
    argv = launch.argv
    try:
        os.execvpe(argv[0], argv, launch.env)
    except OSError as e:
        code = EXIT_NOTFOUND if e.errno in (2, 20) else EXIT_NOEXEC
        channel.send(launch.msg_w, channel.ERROR, "exec", e.errno, "%s: %s" % (argv[0], e.strerror))
        native.exit(code)


# ---- the table ----------------------------------------------------------------------
# The child's setup in the order it happens. PID 1 runs the "pid1" rows; its "fork" stage
# forks the command, which runs the "command" rows and execs; PID 1 goes on with the
# "pid1" rows after them. (The supervisor's own table is runtime.SUPERVISOR_STAGES: its
# steps need the supervisor's state and each has an undo.)

CHILD_STAGES = (
    ("pid1", "pdeathsig", pdeathsig),
    ("pid1", "cgroup", join_cgroups),            # v1 cgroups, with the caller's host credentials
    ("pid1", "sync", wait_for_supervisor),       # the id maps are written, the cgroup is joined
    ("pid1", "ids", enter_ids),
    ("pid1", "unshare", unshare_rest),           # mount, net, uts, ipc; cgroup and time last
    ("pid1", "sethostname", set_hostname),
    ("pid1", "loopback", layer("net")),
    ("pid1", "mount", build_root),               # the composed root, pivot_root, masks
    ("pid1", "user-limits", layer("user_limits")),  # the namespace's own user.* sysctls, after every unshare
    ("pid1", "stdio", connect_stdio),
    ("pid1", "close-host-fds", close_host_fds),
    ("pid1", "fork", fork_command),              # the "command" rows run in the forked child:
    ("command", "setsid", new_session),          # no controlling terminal (TIOCSTI)
    ("command", "ids", become_ids),
    ("command", "tty", own_terminal),            # the sandbox's own pty: stdio, controlling terminal
    ("command", "rlimits", layer("rlimits")),
    ("command", "cpu-time", cpu_time_limit),     # RLIMIT_CPU for a CPU-time budget
    ("command", "chdir", change_dir),
    ("command", "close-fds", close_fds),
    ("command", "capabilities", layer("caps")),  # after every privileged step
    ("command", "no_new_privs", no_new_privs),   # before Landlock and an unprivileged filter
    ("command", "landlock", layer("landlock")),
    ("command", "verify", verify),               # fail closed, while every syscall is allowed
    ("command", "seccomp", layer("seccomp")),    # last: after it only execve runs
    ("command", "exec", exec_command),
    ("pid1", "init", become_init),               # execs the C init when there is one
    ("pid1", "dumpable", not_dumpable),
    ("pid1", "seccomp-listener", receive_listener),
    ("pid1", "wait", supervise),                 # the Python init: never returns
)

# What each process runs, in that order (derived: edit CHILD_STAGES).
PID1_STAGES = tuple((name, step) for process, name, step in CHILD_STAGES if process == "pid1")
COMMAND_STAGES = tuple((name, step) for process, name, step in CHILD_STAGES if process == "command")
