"""`exec`: a new process inside a running container.

The runtime forks a helper that joins the container's cgroups (with the host's credentials, before
any setns), then its namespaces (user first, mount last: after setns(CLONE_NEWNS) the root and
the working directory are the container's), and forks again: a pid namespace applies to children
only, so the grandchild is the one inside. It takes the process's ids, capabilities,
no_new_privs and the container's seccomp filter (and, for a strict container, its Landlock
ruleset and stacked filter), then execs. Its errors come back on a close-on-exec pipe: EOF
means the exec happened. With --detach the runtime writes the pid file and exits (the engine's
shim, a subreaper, inherits the process); otherwise the runtime is a subreaper itself, waits and
exits with the process's status.
"""
import os


from .. import native
from . import capsets, container
from .errors import SpecError
from .spec import NAMESPACE_FLAGS, JOIN_ORDER, read_json, process_from
from .state import status

NS_FILES = {"user": "user", "cgroup": "cgroup", "ipc": "ipc", "uts": "uts", "network": "net", "pid": "pid",
            "time": "time", "mount": "mnt"}


def _process(store, cid, state, options, positional):
    saved = state.get("process") or {}
    if options.get("--process"):
        raw = read_json(options["--process"], "process")
    else:
        args = positional[1:]
        if not args:
            raise SpecError("exec: give --process FILE or the command to run after the id")
        raw = {"args": args, "env": list(saved.get("env") or []), "cwd": saved.get("cwd", "/"),
               "user": {"uid": saved.get("uid", 0), "gid": saved.get("gid", 0)},
               "capabilities": saved.get("capabilities") or {},
               "noNewPrivileges": bool(saved.get("no_new_privileges"))}
    raw = dict(raw)
    # LSM labels: meaningless without the LSM on the host (as in config.json), refused with it
    if options.get("--apparmor"):
        raw["apparmorProfile"] = options["--apparmor"]
    if options.get("--process-label"):
        raw["selinuxLabel"] = options["--process-label"]
    if options.get("--cgroup"):
        raise SpecError("exec --cgroup: joining a sub-cgroup is not supported by pysandbox-oci")
    if options.get("--tty"):
        raw["terminal"] = True
    if options.get("--cwd"):
        raw["cwd"] = options["--cwd"]
    if options.get("--env"):
        raw["env"] = list(raw.get("env") or []) + options["--env"]
    if options.get("--user"):
        uid, _, gid = options["--user"].partition(":")
        if not uid.isdigit() or (gid and not gid.isdigit()):
            raise SpecError("--user %r: expected UID[:GID] as numbers" % options["--user"])
        raw["user"] = dict(raw.get("user") or {}, uid=int(uid), gid=int(gid or 0))
    if options.get("--additional-gids"):
        raw["user"] = dict(raw.get("user") or {}, additionalGids=[int(g) for g in options["--additional-gids"]])
    if options.get("--cap"):
        capabilities = dict(raw.get("capabilities") or {})
        for kind in ("bounding", "effective", "permitted"):
            capabilities[kind] = list(capabilities.get(kind) or []) + options["--cap"]
        raw["capabilities"] = capabilities
    if options.get("--no-new-privs"):
        raw["noNewPrivileges"] = True
    if state.get("profile"):
        raw["noNewPrivileges"] = True  # strict: never without it
    if state.get("profile"):
        # strict: what --cap or the process file ask for is refused if it reaches the host, and
        # nothing else is kept either (the container runs with no capabilities)
        from .strict import refuse_capabilities
        refuse_capabilities(process_from(raw).capabilities)
        raw["capabilities"] = {}
    return process_from(raw)


def run(store, glob, options, positional, log):
    cid = positional[0]
    state = store.load(cid)
    current = status(store, cid, state)
    if current == "stopped":
        raise SpecError("cannot exec in a stopped container")
    if current == "paused" and not options.get("--ignore-paused"):
        raise SpecError("cannot exec in a paused container (resume it first)")
    process = _process(store, cid, state, options, positional)
    target = state["pid"]
    saved = state.get("process") or {}
    bpf = bytes.fromhex(saved.get("seccomp") or "")
    extra_bpf = bytes.fromhex(saved.get("extra_seccomp") or "")
    from .cgroups import ContainerCgroups
    groups = ContainerCgroups.from_state(state.get("cgroups"))
    # Namespaces to join: the container's that differ from ours (opened now, by the host's paths).
    joins = []
    for kind in JOIN_ORDER:
        theirs = "/proc/%d/ns/%s" % (target, NS_FILES[kind])
        try:
            if os.stat(theirs).st_ino == os.stat("/proc/self/ns/%s" % NS_FILES[kind]).st_ino:
                continue
        except FileNotFoundError:
            continue
        joins.append((kind, os.open(theirs, os.O_RDONLY | os.O_CLOEXEC)))
    console_fd = None
    if process.terminal:
        from . import fdpass
        path = options.get("--console-socket")
        if not path:
            raise SpecError("exec --tty needs --console-socket")
        try:
            sock = fdpass.connect(path)
        except OSError as e:
            raise SpecError("--console-socket %s: %s" % (path, e.strerror)) from None
        console_fd = sock.detach()
    preserve = int(options.get("--preserve-fds", "0") or 0)
    container.preload_exec()
    landlock_plan = None
    if saved.get("landlock"):
        from .strict import landlock_plan as make_landlock
        landlock_plan = make_landlock()
    detach = bool(options.get("--detach"))
    if not detach:
        native.prctl(36, 1, stage="exec: subreaper")  # PR_SET_CHILD_SUBREAPER: the process stays ours
    errors_r, errors_w = os.pipe2(os.O_CLOEXEC)
    pid_r, pid_w = os.pipe2(os.O_CLOEXEC)
    helper = os.fork()
    if helper == 0:
        try:
            os.close(errors_r)
            os.close(pid_r)
            groups.attach(os.getpid())
            for kind, fd in joins:
                native.check(native.libc().setns(fd, NAMESPACE_FLAGS[kind]), "setns", kind)
            inside = os.fork()
            if inside:
                os.write(pid_w, b"%d" % inside)
                os._exit(0)
            _inside(process, console_fd, preserve, bpf, extra_bpf, landlock_plan, errors_w)
        except BaseException as e:  # noqa: B036 - reported to the runtime
            os.write(errors_w, container.describe("exec", e).encode(errors="replace"))
        os._exit(1)
    os.close(errors_w)
    os.close(pid_w)
    for _, fd in joins:
        os.close(fd)
    if console_fd is not None:
        os.close(console_fd)
    os.waitpid(helper, 0)
    pid_text = os.read(pid_r, 32)
    os.close(pid_r)
    message = native.read_to_eof(errors_r, 4096)
    os.close(errors_r)
    if message or not pid_text:
        if pid_text:
            _reap(int(pid_text))
        raise SpecError(message.decode(errors="replace") or "exec: the process did not start")
    pid = int(pid_text)
    if options.get("--pid-file"):
        container.write_pid_file(options["--pid-file"], pid)
    if detach:
        return 0
    return _wait(pid)


def _reap(pid):
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _wait(pid):
    import signal
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
                signal.SIGWINCH):
        signal.signal(sig, lambda number, frame: _forward(pid, number))
    while True:
        try:
            got, word = os.waitpid(pid, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            return 255
        if got == pid:
            code = os.waitstatus_to_exitcode(word)
            return 128 - code if code < 0 else code


def _forward(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _inside(process, console_fd, preserve, bpf, extra_bpf, landlock_plan, errors_w):
    os.setsid()
    if process.terminal:
        container.open_console(process, console_fd, bind_console=False)
    native.close_all_but(errors_w, *range(3, 3 + preserve))
    for fd in range(3, 3 + preserve):
        try:
            os.set_inheritable(fd, True)
        except OSError:
            pass
    container.apply_rlimits(process)
    from .. import seccomp
    if bpf and not process.no_new_privileges:
        seccomp.install(bpf)
    container.become_user(process)
    capsets.apply(process.capabilities)  # its warnings: an exec'd process has no log to reach
    try:
        os.chdir(process.cwd)
    except OSError as e:
        raise SpecError("exec: cwd %s: %s" % (process.cwd, e.strerror)) from None
    executable = container.lookup(process)
    if process.no_new_privileges:
        native.prctl(container.PR_SET_NO_NEW_PRIVS, 1, stage="no_new_privs")
    if landlock_plan is not None:
        from .. import landlock
        landlock.apply(landlock_plan.policy, extra_ro=landlock_plan.extra_ro, extra_rw=landlock_plan.extra_rw)
    if bpf and process.no_new_privileges:
        seccomp.install(bpf)
    if extra_bpf:
        seccomp.install(extra_bpf)
    env = dict(e.split("=", 1) for e in process.env)
    try:
        os.execve(executable, list(process.args), env)
    except OSError as e:
        os.write(errors_w, ("exec %s: %s" % (process.args[0], e.strerror)).encode())
        os._exit(126)



