"""create, start, exec: the supervisor's half and the container's stage table.

`create` (the runtime's process, started by the engine's shim, which is a subreaper):
  cgroups made and limited, exec.fifo made and opened for reading, a SOCK_SEQPACKET channel; one
  clone() into the new user and pid namespaces (the container process is PID 1 of its pid
  namespace, as with runc: no init of ours in between); from outside it writes the child into its
  cgroups and writes the id maps, then "G". The child runs CONTAINER_STAGES; when its namespaces
  and mounts exist it asks for the prestart/createRuntime hooks ("H", run here, in the runtime's
  namespaces, with the state on stdin), runs createContainer itself, pivots, finishes everything
  that does not depend on `start`, and reports "R". The runtime writes state.json and the pid
  file and exits: the child is re-parented to the shim, which reaps it, so its exit status is
  the container's.
`start` writes one byte into exec.fifo: the child was blocked in poll() on its read end; it
  runs the startContainer hooks, then no_new_privs, Landlock, seccomp, execve.

Messages on the channel (child -> runtime): H (run the hooks), P<pid> (the container process is
this one: after a fork for a joined pid namespace), R (ready), E<stage>\\0<errno>\\0<text>.
Runtime -> child: G (cgroups joined, maps written), h (hooks done).
"""
import os

from .. import native
from ..errors import SetupError
from . import capsets, fdpass, hooks, rootfs
from .errors import SpecError
from .spec import NAMESPACE_FLAGS

PR_SET_KEEPCAPS = 8
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
POLLIN, POLLHUP = 1, 16


class Launch:
    """What one create or exec adds to the plan: descriptors and the caller's options."""

    def __init__(self, **values):
        self.channel = self.fifo_fd = self.console_fd = None
        self.preserve_fds = 0
        self.no_pivot = False
        self.new_keyring = True
        self.cgroup_dirs = []
        self.container_id = ""
        self.in_userns = False
        self.executable = self.rootfs_fd = self.rootfs_dir = None
        self.bind_fds = {}
        self.__dict__.update(values)


def _send(sock, data):
    sock.send(data)


def _recv(sock):
    return sock.recv(65536)


# ---- the container's stages (in the cloned child) ------------------------------------------

def stage_sync(plan, launch):
    if plan.ns("user")[1]:
        # A joined user namespace first, and say so: the runtime idmaps the rootfs onto it and
        # reads its maps through /proc/<our pid>, which must show the joined namespace by then.
        _setns(plan.ns("user")[1], "user")
        _send(launch.channel, b"J")
    message, fds = fdpass.recv_fds(launch.channel, 16, 1 + len(plan.mounts))
    if message != b"G":
        os._exit(1)  # the runtime gave up before the maps were written
    if fds:
        # strict: the rootfs idmapped onto our ids and detached copies of the bind sources, made
        # by the runtime: in our user namespace the host's directories above them (mode 0700 or
        # 0710, owned by host root) cannot even be walked through. The rootfs is attached on a
        # directory of the state dir we can reach, and the plan follows it there.
        launch.rootfs_fd = fds[0]
        binds = [i for i, m in enumerate(plan.mounts) if m.bind]
        launch.bind_fds = dict(zip(binds, fds[1:]))
        return plan.replace(rootfs=launch.rootfs_dir)


def stage_setns(plan, launch):
    # Joined namespaces (the user namespace was joined first, in sync: it grants the
    # capabilities the others need).
    for kind, path in plan.namespaces:
        if path and kind != "user":
            _setns(path, kind)


def _setns(path, kind):
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        native.check(native.libc().setns(fd, NAMESPACE_FLAGS[kind]), "setns", "%s %s" % (kind, path))
    finally:
        os.close(fd)


def stage_root_in_userns(plan, launch):
    # In a new user namespace we hold every capability but no mapped id until we take one:
    # become the namespace's root so what the setup creates is owned by it.
    if launch.in_userns:
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)


def stage_unshare(plan, launch):
    # mount, net, uts, ipc, cgroup (after the runtime put us in our cgroups), time
    if plan.unshare_flags:
        native.unshare(plan.unshare_flags)


def stage_fork(plan, launch):
    # A joined pid namespace, or a new time namespace, applies to children only.
    joined_pid = plan.ns("pid")[1]
    new_time = plan.ns("time")[0] and not plan.ns("time")[1]
    unshared_pid = plan.unshare_flags & NAMESPACE_FLAGS["pid"]
    if not (joined_pid or new_time or unshared_pid):
        return
    child = os.fork()
    if child:
        _send(launch.channel, b"P%d" % child)
        os._exit(0)


KEYCTL_JOIN_SESSION_KEYRING = 1


def stage_keyring(plan, launch):
    # A session keyring of the container's own (runc's default; --no-new-keyring keeps the
    # caller's): without it the container reads and links into the keys of whoever started it.
    if launch.new_keyring:
        import ctypes
        name = ctypes.c_char_p(("_ses." + launch.container_id).encode())
        rc = native.libc().syscall(250, KEYCTL_JOIN_SESSION_KEYRING, name, 0, 0, 0)  # keyctl
        if rc < 0 and native.errno() != 38:  # ENOSYS: a kernel without keys has none to share
            native.fail("keyring", native.errno(), "joining a new session keyring")


def stage_hostname(plan, launch):
    if plan.hostname:
        native.sethostname(plan.hostname)
    if plan.domainname:
        data = plan.domainname.encode()
        native.check(native.libc().setdomainname(data, len(data)), "setdomainname")


def stage_rootfs(plan, launch):
    rootfs.prepare(plan, launch.rootfs_fd)
    launch.rootfs_fd = None
    rootfs.mount_all(plan, launch.cgroup_dirs, launch.bind_fds)
    rootfs.devices(plan, launch.in_userns)


def stage_hooks(plan, launch):
    if plan.hooks.get("prestart") or plan.hooks.get("createRuntime"):
        _send(launch.channel, b"H")
        if _recv(launch.channel) != b"h":
            os._exit(1)
    if plan.hooks.get("createContainer"):
        hooks.run("createContainer", plan.hooks["createContainer"],
                  hooks.state_json(launch.container_id, "created", os.getpid(), plan.bundle, plan.annotations))


def stage_pivot(plan, launch):
    rootfs.pivot(plan, launch.no_pivot)


def stage_masks(plan, launch):
    rootfs.mask(plan.masked_paths)
    rootfs.readonly(plan.readonly_paths)


def stage_sysctl(plan, launch):
    rootfs.sysctls(plan.sysctl)


def stage_console(plan, launch):
    # Every container process leads a session of its own (TIOCSTI, CVE-2017-5226).
    os.setsid()
    if plan.process.terminal:
        open_console(plan.process, launch.console_fd, bind_console=True)
        launch.console_fd = None


def open_console(process, console_fd, bind_console):
    """A pty from the container's devpts: the master goes to the console socket (SCM_RIGHTS),
    the slave becomes the controlling terminal and stdio (and /dev/console)."""
    import fcntl
    import termios
    import struct
    if console_fd is None:
        raise SpecError("process.terminal is true but no --console-socket was given")
    master, slave = os.openpty()
    name = os.ttyname(slave)
    height, width = process.console_size
    if height and width:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
    sock = fdpass.from_fd(console_fd)
    try:
        fdpass.send_fds(sock, name.encode(), [master])
    finally:
        sock.close()
        os.close(master)
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if bind_console:
        if not os.path.lexists("/dev/console"):
            os.close(os.open("/dev/console", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        native.mount(name, "/dev/console", None, 4096, stage="console: bind /dev/console")
    if slave > 2:
        os.close(slave)


def stage_root_readonly(plan, launch):
    if plan.root_readonly:
        rootfs.root_readonly()


def write_oom_score_adj(pid, value):
    """process.oomScoreAdj, written by the runtime from outside: inside, once the ids changed, the
    process is not dumpable and its /proc files belong to host root."""
    if value is None:
        return
    try:
        with open("/proc/%d/oom_score_adj" % pid, "w") as f:
            f.write(str(value))
    except OSError as e:
        raise SpecError("process.oomScoreAdj %d: %s (lowering it needs CAP_SYS_RESOURCE)" % (value, e.strerror)) \
            from None


def stage_rlimits(plan, launch):
    apply_rlimits(plan.process)


def apply_rlimits(process):
    import resource
    for number, name, soft, hard in process.rlimits:
        try:
            resource.setrlimit(number, (soft, hard))
        except (OSError, ValueError) as e:
            have = resource.getrlimit(number)
            raise SpecError("process.rlimits %s soft %d hard %d: %s (the hard limit here is %d; raising "
                            "it needs CAP_SYS_RESOURCE)" % (name, soft, hard, getattr(e, "strerror", None) or e,
                                                            have[1])) from None


def stage_close_fds(plan, launch):
    keep = {launch.channel.fileno(), launch.fifo_fd}
    keep.update(range(3, 3 + launch.preserve_fds))
    native.close_all_but(*keep)
    for fd in range(3, 3 + launch.preserve_fds):
        try:
            os.set_inheritable(fd, True)
        except OSError:
            pass


def stage_seccomp_early(plan, launch):
    # Without no_new_privs the filter needs CAP_SYS_ADMIN: installed while we still hold it,
    # before the ids and capabilities change (runc's order); the spec's filter must then allow
    # what follows (Docker's does).
    if plan.seccomp_bpf and not plan.process.no_new_privileges:
        from .. import seccomp
        seccomp.install(plan.seccomp_bpf, log=plan.seccomp_log)


def stage_user(plan, launch):
    become_user(plan.process)


def become_user(process):
    try:
        os.setgroups(list(process.additional_gids))
    except PermissionError:
        # a user namespace whose setgroups is "deny" (a rootless single-id map) keeps no groups anyway
        if process.additional_gids:
            raise SpecError("process.user.additionalGids: setgroups refused (setgroups is denied in "
                            "this user namespace)") from None
    native.prctl(PR_SET_KEEPCAPS, 1, stage="user: keep capabilities")
    try:
        os.setresgid(process.gid, process.gid, process.gid)
        os.setresuid(process.uid, process.uid, process.uid)
    except OSError as e:
        raise SpecError("process.user %d:%d: %s (is the id mapped in the container's user namespace?)"
                        % (process.uid, process.gid, e.strerror)) from None
    native.prctl(PR_SET_KEEPCAPS, 0, stage="user: keep capabilities")
    if process.umask is not None:
        os.umask(process.umask)


def stage_capabilities(plan, launch):
    for warning in capsets.apply(plan.process.capabilities):
        _send(launch.channel, b"W" + warning.encode())


def stage_cwd(plan, launch):
    try:
        os.chdir(plan.process.cwd)
    except OSError as e:
        raise SpecError("process.cwd %s: %s" % (plan.process.cwd, e.strerror)) from None


def stage_lookup(plan, launch):
    launch.executable = lookup(plan.process)


def lookup(process):
    """args[0] found on the process's PATH now, so a missing program fails `create` (as runc's)."""
    name = process.args[0]
    env = dict(e.split("=", 1) for e in process.env)
    if "/" in name:
        candidates = [name]
    else:
        candidates = [os.path.join(d or ".", name) for d in env.get("PATH", "/usr/local/sbin:/usr/local/bin:"
                                                                      "/usr/sbin:/usr/bin:/sbin:/bin").split(":")]
    found_unexecutable = None
    for path in candidates:
        if os.path.isfile(path):
            if os.access(path, os.X_OK):
                return path
            found_unexecutable = found_unexecutable or path
    # The texts runc gives: engines map them to 127 ("not found", "no such file or directory")
    # and 126 ("permission denied").
    if found_unexecutable:
        raise SpecError('exec: "%s": permission denied' % name)
    if "/" in name:
        raise SpecError('exec: "%s": stat %s: no such file or directory' % (name, name))
    raise SpecError('exec: "%s": executable file not found in $PATH' % name)


def stage_ready(plan, launch):
    _send(launch.channel, b"R")
    launch.channel.close()
    launch.channel = None


def stage_wait_start(plan, launch):
    import select
    watch = select.poll()
    watch.register(launch.fifo_fd, POLLIN)
    while True:
        watch.poll()
        data = os.read(launch.fifo_fd, 1)
        if data:
            break
        os._exit(1)  # a writer came and went without starting us: the container is being deleted
    os.close(launch.fifo_fd)


def stage_start_hooks(plan, launch):
    if plan.hooks.get("startContainer"):
        hooks.run("startContainer", plan.hooks["startContainer"],
                  hooks.state_json(launch.container_id, "created", os.getpid(), plan.bundle, plan.annotations))


def stage_no_new_privs(plan, launch):
    if plan.process.no_new_privileges:
        native.prctl(PR_SET_NO_NEW_PRIVS, 1, stage="no_new_privs")


def stage_landlock(plan, launch):
    if plan.landlock is not None:
        from .. import landlock
        landlock.apply(plan.landlock.policy, extra_ro=plan.landlock.extra_ro, extra_rw=plan.landlock.extra_rw)


def stage_seccomp(plan, launch):
    from .. import seccomp
    if plan.seccomp_bpf and plan.process.no_new_privileges:
        seccomp.install(plan.seccomp_bpf, log=plan.seccomp_log)
    if plan.extra_bpf:
        # the profile's filter stacked on the spec's: the kernel answers with the stricter verdict
        seccomp.install(plan.extra_bpf)


def stage_exec(plan, launch):
    env = dict(e.split("=", 1) for e in plan.process.env)
    try:
        os.execve(launch.executable, list(plan.process.args), env)
    except OSError as e:
        os.write(2, ("pysandbox-oci: exec %s: %s\n" % (plan.process.args[0], e.strerror)).encode())
        os._exit(126 if e.errno != 2 else 127)


# The container's setup, in the order the kernel's rules impose (see the module docstring of
# rootfs.py for the mounts): everything up to "ready" happens during `create`.
CONTAINER_STAGES = (
    ("sync", stage_sync),                  # the runtime wrote the maps and joined us to our cgroups
    ("setns", stage_setns),                # namespaces joined by path, user first
    ("userns-root", stage_root_in_userns),
    ("unshare", stage_unshare),            # the other new namespaces (cgroup: now that we are in it)
    ("fork", stage_fork),                  # only for a joined pid or a new time namespace
    ("keyring", stage_keyring),            # a session keyring of its own (--no-new-keyring: the caller's)
    ("hostname", stage_hostname),
    ("rootfs", stage_rootfs),              # /, the rootfs, the spec's mounts, devices
    ("hooks", stage_hooks),                # prestart + createRuntime (runtime), createContainer (here)
    ("pivot_root", stage_pivot),
    ("sysctl", stage_sysctl),              # before the read-only paths make /proc/sys read-only
    ("masks", stage_masks),                # masked and read-only paths
    ("console", stage_console),            # setsid; the pty to the console socket
    ("root-readonly", stage_root_readonly),
    ("rlimits", stage_rlimits),
    ("close-fds", stage_close_fds),
    ("seccomp-early", stage_seccomp_early),  # only without no_new_privs (needs CAP_SYS_ADMIN)
    ("user", stage_user),                  # groups, gid, uid (capabilities kept across)
    ("capabilities", stage_capabilities),  # the five sets, exactly
    ("cwd", stage_cwd),
    ("lookup", stage_lookup),              # args[0] on PATH: a missing program fails create
    ("ready", stage_ready),                # -> the runtime writes the state and exits
    ("wait-start", stage_wait_start),      # blocked on exec.fifo until `start`
    ("startContainer", stage_start_hooks),
    ("no_new_privs", stage_no_new_privs),
    ("landlock", stage_landlock),
    ("seccomp", stage_seccomp),            # last: after it only execve
    ("exec", stage_exec),
)


def run_stages(table, plan, launch):
    """Run a stage table in the child; on failure report it and exit 1. Never returns on failure
    and never lets an exception escape into the caller's code (this is a forked child)."""
    name = None
    try:
        for name, step in table:
            # a stage may hand on a changed plan (a copy: the frozen plan itself never changes)
            plan = step(plan, launch) or plan
    except BaseException as error:  # noqa: B036 - every failure must reach the runtime
        try:
            _report(name, error, launch)
        finally:
            os._exit(1)


def _report(name, error, launch):
    message = describe(name, error)
    if TRACE:
        TRACE.print_exc()
    if launch.channel is not None:
        err = getattr(error, "errno", 0) or 0
        try:
            _send(launch.channel, b"E" + ("%s\0%d\0%s" % (name, err, message)).encode(errors="replace"))
            return
        except OSError:
            pass
    os.write(2, ("pysandbox-oci: %s\n" % message).encode(errors="replace"))


# PYSANDBOX_OCI_TRACE=1: the child prints the traceback of a failing stage (imported before the
# clone: after pivot_root the host's modules are gone)
TRACE = __import__("traceback") if os.environ.get("PYSANDBOX_OCI_TRACE") else None


def describe(stage, error):
    if isinstance(error, SpecError):
        return str(error)
    if isinstance(error, SetupError):
        return str(error) if str(error).startswith(stage) else "%s: %s" % (stage, error)
    if isinstance(error, OSError):
        where = " %s" % error.filename if error.filename else ""
        return "%s:%s %s" % (stage, where, error.strerror or error)
    return "%s: %s: %s" % (stage, type(error).__name__, error)


def preload(plan):
    """Import and load what the child needs after pivot_root (the host's files are gone then);
    only what this plan uses: every import is time on each `create`."""
    import select, resource  # noqa: E401,F401
    from . import fastjson  # noqa: F401  (the hooks' state)
    if plan.process.terminal:
        import fcntl, termios, struct  # noqa: E401,F401
    from .. import caps, seccomp  # noqa: F401
    from pysandbox_common import capnames  # noqa: F401
    caps.preload()
    native.libc()
    if plan.landlock is not None:
        from .. import landlock  # noqa: F401
    if plan.profile:
        from . import strict  # noqa: F401


# ---- the runtime's half ---------------------------------------------------------------------

def write_maps(pid, plan):
    """uid_map and gid_map of the new user namespace, from outside it."""
    def lines(maps):
        return "".join("%d %d %d\n" % m for m in maps)
    if os.geteuid() == 0:
        for name, maps in (("gid_map", plan.gid_mappings), ("uid_map", plan.uid_mappings)):
            try:
                with open("/proc/%d/%s" % (pid, name), "w") as f:
                    f.write(lines(maps))
            except OSError as e:
                raise SpecError("linux.%s: writing %s: %s" % ("uidMappings" if name == "uid_map" else "gidMappings",
                                                               lines(maps).strip(), e.strerror)) from None
        return
    single = len(plan.uid_mappings) == 1 and plan.uid_mappings[0][2] == 1 and plan.uid_mappings[0][1] == os.geteuid() \
        and len(plan.gid_mappings) == 1 and plan.gid_mappings[0][2] == 1 and plan.gid_mappings[0][1] == os.getegid()
    if single:
        with open("/proc/%d/setgroups" % pid, "w") as f:
            f.write("deny")
        for name, maps in (("gid_map", plan.gid_mappings), ("uid_map", plan.uid_mappings)):
            with open("/proc/%d/%s" % (pid, name), "w") as f:
                f.write(lines(maps))
        return
    import subprocess
    for tool, maps in (("newgidmap", plan.gid_mappings), ("newuidmap", plan.uid_mappings)):
        argv = [tool, str(pid)] + [str(v) for m in maps for v in m]
        proc = subprocess.run(argv, stderr=subprocess.PIPE)
        if proc.returncode:
            raise SpecError("%s: %s" % (tool, proc.stderr.decode(errors="replace").strip()))


def create(store, container_id, plan, pid_file="", console_socket="", no_pivot=False, preserve_fds=0,
           systemd=False, warn=None, new_keyring=True):
    import pwd
    from . import cgroups
    lock = store.lock(container_id, create=True)
    child = 0
    groups = None
    try:
        if plan.idmap_rootfs and not plan.ns("user")[1]:
            from . import strict
            plan = strict.ids_for(plan, store.dir(container_id))
        fifo = store.fifo(container_id)
        os.mkfifo(fifo, 0o622)
        groups = cgroups.ContainerCgroups(cgroups.paths_for(plan.cgroups_path, container_id, systemd))
        # What a `delete --force` needs to clean up if this process dies half-way (SIGKILL, OOM):
        # recorded before each thing exists, the cgroups' own list once they do.
        creating = {"ociVersion": plan.config.get("ociVersion", "1.0.2"), "id": container_id, "pid": 0,
                    "bundle": plan.bundle, "rootfs": plan.rootfs, "creating": True,
                    "runtime_pid": os.getpid(), "runtime_start": _own_start_time(),
                    "cgroups": {"dirs": groups.dirs, "created": groups.created}, "profile": plan.profile,
                    "annotations": plan.annotations}
        store.save(container_id, creating, sync=False)
        try:
            groups.create()
        finally:
            store.save(container_id, creating, sync=False)
        groups.apply(plan.resources)
        ours, theirs = fdpass.pair()
        fifo_fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        console_fd = None
        if console_socket:
            try:
                console = fdpass.connect(console_socket)
            except OSError as e:
                raise SpecError("--console-socket %s: %s" % (console_socket, e.strerror)) from None
            console_fd = console.detach()
        elif plan.process.terminal:
            raise SpecError("process.terminal is true but no --console-socket was given")
        rootfs_dir = None
        if plan.idmap_rootfs:
            # Where the child attaches the idmapped rootfs in its own mount namespace: a directory
            # every user namespace can walk to (an engine's --root may be mode 0700). The host's
            # directory stays empty: the child's / is a slave, nothing propagates back.
            from .strict import ATTACH_DIR
            rootfs_dir = ATTACH_DIR
            os.makedirs(rootfs_dir, 0o755, exist_ok=True)
        launch = Launch(rootfs_dir=rootfs_dir, new_keyring=new_keyring,
                        channel=theirs, fifo_fd=fifo_fd, console_fd=console_fd, preserve_fds=preserve_fds,
                        no_pivot=no_pivot, cgroup_dirs=groups.layout(), container_id=container_id,
                        in_userns=bool(plan.ns("user")[0]))
        preload(plan)
        child = native.clone_process(plan.clone_flags)
        if child == 0:
            ours.close()
            os.close(lock)
            run_stages(CONTAINER_STAGES, plan, launch)
            os._exit(1)
        theirs.close()
        if console_fd is not None:
            os.close(console_fd)
        from .state import start_time
        creating.update(child_pid=child, child_start=start_time(child)[0])
        store.save(container_id, creating, sync=False)
        groups.attach(child)
        write_oom_score_adj(child, plan.process.oom_score_adj)
        if plan.ns("user")[1]:
            joined = _recv(ours)
            if joined != b"J":
                _raise_child_error(joined, "joining the user namespace %s" % plan.ns("user")[1])
        if plan.ns("user")[0] and not plan.ns("user")[1]:
            write_maps(child, plan)
        if plan.idmap_rootfs:
            from . import strict
            trees = strict.detached_trees(plan, child)
            try:
                fdpass.send_fds(ours, b"G", trees)
            finally:
                for fd in trees:
                    os.close(fd)
        else:
            _send(ours, b"G")
        pid = child
        while True:
            message = _recv(ours)
            if not message:
                raise SpecError("container init exited during setup")
            kind, body = message[:1], message[1:]
            if kind == b"E":
                _raise_child_error(message, "setup")
            if kind == b"P":
                pid = int(body)
                os.waitpid(child, 0)  # the intermediate exits once it has forked the container process
                child = pid
            elif kind == b"H":
                state = hooks.state_json(container_id, "creating", pid, plan.bundle, plan.annotations)
                hooks.run("prestart", plan.hooks.get("prestart", ()), state)
                hooks.run("createRuntime", plan.hooks.get("createRuntime", ()), state)
                _send(ours, b"h")
            elif kind == b"W":
                if warn is not None:
                    warn(body.decode(errors="replace"))
            elif kind == b"R":
                break
        os.close(fifo_fd)
        from .state import start_time
        started, _ = start_time(pid)
        try:
            owner = pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:
            owner = str(os.geteuid())
        store.save(container_id, {
            "ociVersion": plan.config.get("ociVersion", "1.0.2"), "id": container_id, "pid": pid,
            "pid_start": started, "bundle": plan.bundle, "rootfs": plan.rootfs,
            "created": _utc_now(),
            "annotations": plan.annotations, "owner": owner, "cgroups": groups.to_state(),
            "hooks": {k: [list(h[:3]) + [h[3]] for h in plan.hooks.get(k, ())] for k in ("poststart", "poststop")},
            "namespaces": [list(n) for n in plan.namespaces], "profile": plan.profile,
            "process": _process_state(plan),
        })
        if pid_file:
            write_pid_file(pid_file, pid)
        return pid
    except BaseException:
        if child:
            try:
                os.kill(child, 9)
                os.waitpid(child, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        if groups is not None:
            groups.remove()
        if plan.idmap_rootfs:
            from . import strict
            strict.release_id_range(store.dir(container_id))
        store.remove(container_id)
        raise
    finally:
        os.close(lock)


def _own_start_time():
    from .state import start_time
    return start_time(os.getpid())[0]


def _raise_child_error(message, what):
    """The child's E<stage>\\0<errno>\\0<text> as the error of this command."""
    if not message:
        raise SpecError("container init exited during %s" % what)
    if message[:1] != b"E":
        raise SpecError("container init: unexpected message during %s" % what)
    stage, _, rest = message[1:].decode(errors="replace").partition("\0")
    raise SpecError(rest.partition("\0")[2] or stage)


def _utc_now():
    """RFC 3339 with microseconds, as runc writes `created` (without importing datetime)."""
    import time
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + ".%06dZ" % int(now % 1 * 1e6)


def _process_state(plan):
    """What exec needs of the container's process (runc applies the container's filter and
    capabilities to processes exec'd into it)."""
    p = plan.process
    return {"env": list(p.env), "cwd": p.cwd, "uid": p.uid, "gid": p.gid, "capabilities": p.capabilities,
            "no_new_privileges": p.no_new_privileges, "apparmor": p.apparmor,
            "seccomp": plan.seccomp_bpf.hex() if plan.seccomp_bpf else "",
            "extra_seccomp": plan.extra_bpf.hex() if plan.extra_bpf else "",
            "landlock": bool(plan.landlock)}


def write_pid_file(path, pid):
    path = os.path.abspath(path)
    tmp = os.path.join(os.path.dirname(path), ".%s.tmp" % os.path.basename(path))
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.rename(tmp, path)


def preload_exec():
    import fcntl, termios, struct, resource  # noqa: E401,F401
    from .. import caps, seccomp  # noqa: F401
    caps.preload()
