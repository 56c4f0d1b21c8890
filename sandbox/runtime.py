"""The supervisor: builds the plan of a sandbox once (sandbox/plan.py), then for each
run creates its cgroup, clones PID 1, runs the parent halves of the layers, lets it
go, watches it and tears it down.

The supervisor's own steps are a stage table too (SUPERVISOR_STAGES below, youki and
nsjail order): create the cgroup; open the bind sources; make the channel; clone the
child into its new user and pid namespaces; write its id maps; move it into its
cgroup; only then let it go (one byte on a pipe); record it for `audit NAME`. Each step
pushes its undo; a failure at any step runs the undos in reverse, so nothing (cgroup,
descriptor, process, state file) is left behind. From then on the supervisor only
waits: for channel messages, the death of PID 1 (a pidfd) or the deadline.
"""
import _thread
import _weakref
import os
import select
# _signal, not signal: the public module imports enum, milliseconds on every start.
import _signal as signal
import time

from . import channel, native
from .errors import SetupError, SandboxError, EXIT_SETUP, EXIT_TIMEOUT, EXIT_NOEXEC, EXIT_NOTFOUND

# Output captured per stream by Sandbox.run unless max_output says otherwise: enough for
# any grader's expected output, small enough that the supervisor (outside every cgroup)
# never grows with what the command writes.
DEFAULT_MAX_OUTPUT = 16 << 20
# A run ended by its CPU-time budget exits like a process killed by SIGXCPU.
EXIT_CPU_TIME = 128 + 24

_counter = [0]
# Names of the sandboxes this process runs now: a name is one running sandbox. Threads
# may start sandboxes concurrently: the counter and the names change under one lock
# (_thread's: `threading` costs an import on the run path).
# name -> a weak reference to its SandboxProcess (for the refusal's PID), until that one's
# cleanup: a name stays taken while its key is here, and the entry never keeps a dropped
# SandboxProcess (and with it its Sandbox) alive.
_running_names = {}
_names_lock = _thread.allocate_lock()
# The cgroup pools of the Sandboxes alive in this process: whatever they still hold goes
# at exit (Sandbox.close removes its own earlier).
_pools = set()


def _generated_name(kind="sbx"):
    with _names_lock:
        _counter[0] += 1
        return "%s-%d-%d" % (kind, os.getpid(), _counter[0])


def _close_pools():
    for pool in list(_pools):
        pool.close()


# atexit is built into the interpreter: no import cost on the run path.
__import__("atexit").register(_close_pools)


class ArgumentError(SandboxError, ValueError):
    """A bad argument to Sandbox.run/start, found before anything starts."""

    exit_code = 2


class RunFailed(SandboxError):
    """Raised by run(check=True) when the command failed or the sandbox did; `.result`."""

    def __init__(self, argv, result):
        self.argv, self.result = argv, result
        if result.reason == "exit":
            what = "exited with %d" % result.exit_code
        elif result.reason == "setup-error":
            what = "could not start: %s" % (result.message or result.stage)
        else:
            what = "ended by %s (exit %s)" % (result.reason, result.exit_code)
        super().__init__("command %r %s" % (list(argv), what), result.exit_code)


def command_argv(argv):
    """argv as a list of arguments; a single string is refused (it would run as a list of
    characters, or need a shell the caller did not ask for)."""
    if isinstance(argv, (str, bytes, bytearray)):
        raise TypeError("argv must be a sequence of arguments, not %s: pass a list, e.g. ['sh', '-c', CMD]"
                        % type(argv).__name__)
    try:
        args = [os.fspath(arg) for arg in argv]
    except TypeError:
        raise TypeError("argv must be a sequence of str, bytes or path arguments, e.g. ['sh', '-c', CMD]") from None
    if not args:
        raise SandboxError("no command given", 2)
    return args


def _seconds(name, value):
    """A positive, finite number of seconds, or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentError("%s must be a number of seconds, got %r" % (name, value))
    if not value > 0 or value == float("inf"):
        raise ArgumentError("%s must be a positive, finite number of seconds, got %r" % (name, value))
    return float(value)


def _input_bytes(data):
    if data is None or isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError("input must be bytes or str, not %s" % type(data).__name__)


class Result:
    """Why and how a sandboxed run ended; the same fields as `--result` JSON."""

    FIELDS = ("name", "exit_code", "signal", "reason", "stage", "message", "syscall", "wall", "cpu_user",
              "cpu_system", "memory_peak", "limits", "warnings", "profile", "cpu_time", "host_ids")

    def __init__(self, **values):
        for field in self.FIELDS:
            setattr(self, field, values.get(field))
        self.stdout = values.get("stdout")
        self.stderr = values.get("stderr")
        # True when the stream wrote more than max_output: the rest was read and dropped
        self.stdout_truncated = values.get("stdout_truncated", False)
        self.stderr_truncated = values.get("stderr_truncated", False)
        self.cpu_time = values.get("cpu_time")  # the CPU-time budget of the run, seconds

    @property
    def cpu(self):
        return (self.cpu_user or 0.0) + (self.cpu_system or 0.0)

    def to_dict(self):
        out = {f: getattr(self, f) for f in self.FIELDS}
        out["cpu"] = round(self.cpu, 6)
        return out

    def __repr__(self):
        return "Result(%s)" % ", ".join("%s=%r" % (f, getattr(self, f)) for f in ("reason", "exit_code", "signal"))


class Sandbox:
    """A reusable sandbox definition: `Sandbox(load_profile("strict")).run(["python3", "x.py"], timeout=2)`.

    The profile is prepared once (mount plan, id maps, compiled seccomp filter); every
    `run`/`start` then makes a fresh set of namespaces, cgroups and processes.
    """

    def __init__(self, profile, name=None, ro_binds=(), binds=(), tmpfs=(), register=None, extra_seccomp=None,
                 executor=None, environ=None):
        if name is not None:
            from pysandbox_common.registry import valid_name
            if not valid_name(name):
                raise SandboxError("invalid sandbox name %r (1-64 of A-Z a-z 0-9 . _ -)" % (name,), 2)
        self.profile = profile
        self.name = name
        # A state file lets `audit NAME` and `pysandbox gc` find the sandbox; by default
        # only named sandboxes (and every CLI run) get one.
        self.register = bool(name) if register is None else register
        self._init_fd = None
        self.extra_mounts = (tuple(ro_binds), tuple(binds), tuple(tmpfs))
        # a second seccomp policy installed before the profile's own (both apply)
        self.extra_seccomp = extra_seccomp
        # what the profile's [environment] inherits from (None: this process's environment,
        # read when the plan is made); `pysandbox serve` hands over its client's
        self.environ = None if environ is None else dict(environ)
        self._plan = None
        self._cgroups = None  # cgroup.Pool of this sandbox's runs (made with the plan)
        if executor not in (None, "python"):
            raise ArgumentError("executor must be None (the compiled child where it covers the plan) or "
                                "\"python\" (the Python stages), got %r" % (executor,))
        self.executor = executor
        self._program = None  # stager.Program: the compiled child, or None (Python stages)
        self.stager_reason = None  # why the Python stages run this sandbox (None: they do not)
        self._program_plan = None  # the plan _program (or stager_reason) is about
        import _thread
        self._zygotes = []         # [(weakref to its thread's marker, stager.Zygote)]
        self._zygote_lock = _thread.allocate_lock()
        self._thread_state = _thread._local()  # per thread: its marker, runs and zygote

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        """Release what preparation holds (the init binary's descriptor) and every cgroup
        made ahead or waiting for removal; runs still going remove their own."""
        # The zygotes first: they sit in the shared devices cgroup (_joined_by_zygote), which
        # the pool removes once it is empty.
        self._close_zygotes(everything=True)
        pool, self._cgroups = self._cgroups, None
        if pool is not None:
            _pools.discard(pool)
            pool.close()
        if self._init_fd is not None:
            os.close(self._init_fd)
            self._init_fd = None
        program, self._program = self._program, None
        if program is not None:
            program.close()
        self._plan = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # -- preparation (parent, before any fork) ----------------------------------------
    def plan(self):
        """The frozen Plan of this sandbox (built on first use, then reused by every run)."""
        if self._plan is None:
            from . import plan as planner
            self._prepare(planner.build(self.profile, self.extra_mounts, self.extra_seccomp, self.environ))
        return self._plan

    def _prepare(self, plan):
        """Take `plan` (built for this sandbox's profile and options) as this sandbox's
        own: `pysandbox serve` builds one per request to see whether a prepared Sandbox
        still has the plan the CLI would build now."""
        if self._plan is None:
            from . import plan as planner
            planner.preload(plan)
            # The small C init replaces the Python PID 1 once the command runs (built by
            # setup.sh next to the package); without it the Python init serves. The
            # environment may only turn the C init off (PYSANDBOX_INIT=""), never pick
            # another binary to run as the sandbox's PID 1.
            init_path = os.path.join(os.path.dirname(__file__), "pysandbox-init")
            if os.environ.get("PYSANDBOX_INIT", "x") and os.path.exists(init_path):
                self._init_fd = os.open(init_path, os.O_PATH | os.O_CLOEXEC)
            # The child's side compiled for the stager (sandbox/stager.py), when the plan is
            # one it covers; otherwise every run takes the Python stages.
            self._program_for(plan)
            if plan.cgroup_limits is not None:
                from . import cgroup
                self._cgroups = cgroup.Pool(plan.cgroup_limits, _generated_name,
                                            own_pid_namespace=bool(plan.clone_flags & native.CLONE_NEWPID))
                _pools.add(self._cgroups)
            self._plan = plan
        return self._plan

    def _zygote(self, program):
        """This thread's zygote for `program`, started on the thread's second run (a
        one-shot run, the CLI's, pays nothing for it); None: a one-shot stager serves."""
        state = self._thread_state
        zygote = getattr(state, "zygote", None)
        if zygote is not None:
            if zygote.owner == os.getpid() and zygote.program is program:
                return zygote
            if zygote.owner == os.getpid():
                self._drop_zygote(zygote)  # made for another plan
            state.zygote = None
        runs = getattr(state, "runs", 0) + 1
        state.runs = runs
        if runs < 2 or os.environ.get("PYSANDBOX_ZYGOTE", "x") == "":
            return None
        from . import stager
        import _weakref

        class Marker:  # lives in this thread's local storage: dead with the thread
            __slots__ = ("__weakref__",)
        self._close_zygotes()
        try:
            zygote = stager.Zygote(program)
        except OSError:
            return None
        state.marker = Marker()
        state.zygote = zygote
        with self._zygote_lock:
            self._zygotes.append((_weakref.ref(state.marker), zygote))
        return zygote

    def _drop_zygote(self, zygote):
        state = self._thread_state
        if state is not None and getattr(state, "zygote", None) is zygote:
            state.zygote = None
        with self._zygote_lock:
            self._zygotes = [(ref, z) for ref, z in self._zygotes if z is not zygote]
        zygote.close()

    def _close_zygotes(self, everything=False):
        """Close the zygotes of threads that ended (all of them at close), and reap them."""
        with self._zygote_lock:
            ended = [(ref, z) for ref, z in self._zygotes
                     if everything or ref() is None or z.owner != os.getpid()]
            self._zygotes = [item for item in self._zygotes if item not in ended]
        for _ref, zygote in ended:
            if zygote.owner == os.getpid():
                zygote.close()

    def _program_for(self, plan):
        """The compiled child of exactly this plan (None: the Python stages run it)."""
        program = self._program
        if program is not None and program.plan is plan and program.fd is not None:
            return program
        if program is None and self.stager_reason is not None and self._program_plan is plan:
            return None
        from . import stager
        if program is not None:
            program.close()
        if self.executor == "python":
            self._program, self.stager_reason = None, "the Python stages were asked for (executor=\"python\")"
        else:
            self._program, self.stager_reason = stager.prepare(plan)
        self._program_plan = plan
        return self._program

    # -- running ---------------------------------------------------------------------
    def start(self, argv, env=None, cwd=None, stdin=None, stdout=None, stderr=None, timeout=None,
              cpu_time=None, tty=None, interactive=False):
        """Start the sandbox; returns a SandboxProcess. `stdin`/`stdout`/`stderr` are fds or None (inherit).

        `timeout`: wall-clock seconds (verdict "timeout"); `cpu_time`: CPU seconds of the
        whole sandbox (verdict "cpu-time"). `tty`: None gives the command a terminal of the
        sandbox's own whenever a stdio it would inherit is a terminal (the caller's terminal
        never enters), True always (every inherited stdio becomes the pty), False never.
        `interactive` relays a stdin that is not a terminal into the pty."""
        argv = command_argv(argv)
        timeout = _seconds("timeout", timeout)
        cpu_time = _seconds("cpu_time", cpu_time)
        if tty not in (None, True, False):
            raise ArgumentError("tty must be None, True or False, got %r" % (tty,))
        plan = self.plan()
        name = self.name or _generated_name()
        environment = dict(plan.env)
        if env:
            environment.update(env)
        from .stages import Launch
        given = (stdin, stdout, stderr)
        relay = None
        if tty is not False:
            # A terminal among the command's stdio (inherited or given) is the caller's:
            # it is replaced by the sandbox's own pty; tty=True also gives the pty to
            # every inherited slot. Only on this path is anything about terminals imported.
            callers = [index if fd is None else fd for index, fd in enumerate(given)]
            slots = [os.isatty(fd) or (tty is True and inherited is None)
                     for fd, inherited in zip(callers, given)]
            if any(slots):
                from . import terminal
                relay = terminal.Relay(slots, interactive, callers)
                given = tuple(relay.null_fd if slot else fd for slot, fd in zip(slots, given))
        launch = Launch(argv, environment, cwd or plan.cwd,
                        stdio=given if given != (None, None, None) else None, init_fd=self._init_fd)
        if cpu_time is not None:
            import resource  # noqa: F401 - the command's cpu-time stage needs it after pivot_root
            launch.cpu_time = cpu_time
        if relay is not None:
            launch.tty = relay
        try:
            return SandboxProcess(self, name, plan, launch, timeout if timeout is not None else plan.timeout)
        finally:
            if relay is not None:
                relay.close_null()

    def run(self, argv, timeout=None, env=None, cwd=None, input=None, capture_output=False, text=False,
            check=False, max_output=DEFAULT_MAX_OUTPUT, cpu_time=None, tty=None):
        """Run to completion and return a Result (raises RunFailed for a failure only with check=True).

        `input` (bytes, or str encoded as UTF-8) is written to the command's stdin;
        `capture_output` collects stdout and stderr, at most `max_output` bytes each: the
        rest is read and dropped (`Result.stdout_truncated`), the command keeps running.
        `text=True` decodes them as UTF-8 (undecodable bytes replaced)."""
        argv = command_argv(argv)
        if isinstance(max_output, bool) or not isinstance(max_output, int) or max_output < 0:
            raise ArgumentError("max_output must be a number of bytes >= 0, got %r" % (max_output,))
        input = _input_bytes(input)
        if not capture_output and input is None:
            result = self.start(argv, env=env, cwd=cwd, timeout=timeout, cpu_time=cpu_time, tty=tty).wait()
        else:
            _seconds("timeout", timeout)
            _seconds("cpu_time", cpu_time)
            fds = [None, None, None]
            parent_ends = []
            try:
                if input is not None:
                    r, w = os.pipe()
                    fds[0] = r
                    parent_ends.append(("in", w))
                if capture_output:
                    for index in (1, 2):
                        r, w = os.pipe()
                        fds[index] = w
                        parent_ends.append((index, r))
                proc = self.start(argv, env=env, cwd=cwd, stdin=fds[0], stdout=fds[1], stderr=fds[2],
                                  timeout=timeout, cpu_time=cpu_time, tty=tty)
            except BaseException:
                for _, fd in parent_ends:
                    os.close(fd)
                raise
            finally:
                for fd in fds:
                    if fd is not None:
                        os.close(fd)
            result = proc.wait(io=dict(parent_ends), input=input, max_output=max_output)
        if text:
            for stream in ("stdout", "stderr"):
                data = getattr(result, stream)
                if data is not None:
                    setattr(result, stream, data.decode("utf-8", "replace"))
        if check and (result.reason != "exit" or result.exit_code != 0):
            raise RunFailed(argv, result)
        return result


def name_taken(name, pid, supervisor):
    """The refusal of a name a running sandbox holds: the CLI's check, the registry's claim and
    this process's own say it in these words."""
    return "a sandbox named %r is already running (PID %s, supervisor %s)" % (
        name, pid if pid else "not yet started", supervisor)


class SandboxProcess:
    """A started sandbox: `wait()` for its Result, `kill()` to end it."""

    def __init__(self, sandbox, name, plan, launch, timeout):
        self.sandbox, self.name, self.timeout = sandbox, name, timeout
        self.plan, self.launch = plan, launch
        self.pid = None
        self.result = None
        self.warnings = []
        self._cgroup = None
        self.idmap = plan.idmap   # the run's own id map (stage "id-range")
        self._msg_r = self._pidfd = None
        self._registered = False
        self._started = time.monotonic()
        self._undo = []
        self._pool = None        # the cgroup.Pool the run's cgroup came from
        self.executor = "python"  # who ran the child's stages: "python", "stager" or "zygote"
        self._released = False    # the stager wrote the maps, joined the cgroups and said go
        self._pid1_reaped = False
        # kill() may come from another thread (a signal handler, `pysandbox serve`'s
        # watcher) while wait() reaps PID 1: once reaped, its number may be anyone's and
        # its pidfd's number soon another file's, so the check and the signal are one step
        self._signal_lock = _thread.RLock()  # reentrant: the CLI's signal handler calls kill() in this thread
        self._stager_pid = None   # a one-shot stager to reap after the go stage
        self._ended = False      # the verdict is in: the cgroup goes back to the pool to be removed
        with _names_lock:
            if name in _running_names:
                # The same words as the registry's refusal (_stage_name) and the CLI's: one
                # condition, one message, whichever check saw it first (a served run's twin
                # runs in the same server process, so this one does).
                holder = _running_names[name]()
                raise SandboxError(name_taken(name, getattr(holder, "pid", None), os.getpid()), EXIT_SETUP)
            _running_names[name] = _weakref.ref(self)
        self._undo.append(lambda: _running_names.pop(name, None))
        stage = None
        try:
            for stage, step in SUPERVISOR_STAGES:
                native.run_stage(stage, step.__get__(self), plan, launch)
        except BaseException as error:
            self._unwind()
            # The error names the stage, as a child stage's does (stages.report_failure).
            if isinstance(error, OSError):
                where = "%s: " % error.filename if error.filename else ""
                raise SetupError(stage, error.errno or 0, where + (error.strerror or str(error))) from None
            if isinstance(error, SetupError) and not (error.stage == stage or error.stage.startswith(stage + ":")):
                raise SetupError(stage, error.errno, str(error)) from None
            raise
        # From here on the sandbox runs; cleanup happens when it has ended (wait).

    # -- the supervisor's stages (each pushes its undo) -----------------------------
    def _stage_name(self, plan, _):
        # Only a name the caller chose can collide (generated ones carry our PID). It is
        # claimed here, before anything starts, in one step with the check: two runs of
        # one name started together cannot both pass. The record names this supervisor
        # until the "register" stage writes the sandbox's own.
        if self.sandbox.register and self.sandbox.name:
            from pysandbox_common import registry
            provisional = {"name": self.name, "pid": os.getpid(), "supervisor": os.getpid(),
                           "profile": self.sandbox.profile.name, "started": time.time(), "uid": os.geteuid(),
                           "starting": True}
            try:
                running = registry.claim(provisional)
            except (OSError, ValueError) as e:
                self.warnings.append("the sandbox is not recorded for `audit %s`: %s" % (self.name, e))
                return
            if running is not None:
                # a record still "starting" holds its supervisor's PID, not yet the sandbox's
                pid = None if running.get("starting") else running.get("pid")
                raise SandboxError(name_taken(self.name, pid, running.get("supervisor")), EXIT_SETUP)
            self._registered = True
            self._undo.append(self._unregister)

    def _stage_cgroup(self, plan, launch):
        if plan.cgroup_limits is None:
            return
        pool = self.sandbox._cgroups
        if pool is not None and pool.limits is plan.cgroup_limits:
            self._cgroup, self._pool = pool.take(), pool
        else:
            from . import cgroup
            self._cgroup = cgroup.create(self.name, plan.cgroup_limits,
                                         own_pid_namespace=bool(plan.clone_flags & native.CLONE_NEWPID))
        self._undo.append(self._destroy_cgroup)
        if getattr(self._cgroup, "warning", None):
            self.warnings.append(self._cgroup.warning)
        if hasattr(self._cgroup, "task_files"):
            self.launch.cgroup_tasks = self._cgroup.task_files()

    def _stage_id_range(self, plan, _):
        # As host root each running sandbox holds a host id range of its own (user.lease).
        if plan.idmap is not None and plan.idmap.pool is not None:
            from . import user
            held = user.lease(plan.idmap)
            self._undo.append(held.release)
            self.idmap = held.idmap

    def _stage_sources(self, plan, _):
        from . import mnt
        # idmapped writable binds are made from the run's actual ids (mnt.open_sources)
        self.launch.source_fds = mnt.open_sources(plan.mounts, self.idmap)
        self._undo.append(self._close_child_ends)

    def _stage_channel(self, plan, _):
        self.launch.go_r, self._go_w = native.pipe2(os.O_CLOEXEC)
        self._msg_r, self.launch.msg_w = native.pipe2(os.O_CLOEXEC)
        self._undo.append(self._close_child_ends)
        self._undo.append(lambda: self._close_attr("_go_w"))
        self._undo.append(lambda: self._close_attr("_msg_r"))

    def _stage_tty(self, plan, launch):
        if launch.tty is not None:
            # The command's terminal is the sandbox's own pty: its seccomp program lets it use
            # it as its own (job control, modes, size; docs/seccomp.md), compiled once per Sandbox.
            filter_part = plan.layers.get("seccomp")
            if filter_part is not None:
                from . import seccomp
                seccomp.own_terminal_bpf(filter_part)
            launch.tty.open_socket()
            self._undo.append(launch.tty.close_sockets)

    def _stage_clone(self, plan, launch):
        program = self.sandbox._program_for(plan)
        if program is not None:
            from . import stager
            if stager.usable_for(launch):
                return self._spawn_stager(stager, program, launch)
        pid = native.clone_process(plan.clone_flags)
        if pid == 0:
            from .child import pid1_main
            pid1_main(plan, self.launch)
            native.exit(EXIT_SETUP)
        self.pid = pid
        self._undo.append(self._reap)
        # The child's ends and the bind sources live on in the child only.
        self._close_child_ends()

    def _joined_by_zygote(self, zygote, tasks):
        """The run's tasks files less the shared devices cgroup, which the zygote joins once
        (a thread move of its PID into `tasks`: no threadgroup rwsem) so that every PID 1 it
        clones is born there: one cgroup join, and one css_set made and freed, less per run.
        The cgroup is the same for every sandbox (one allowlist), and the zygote opens no
        device outside it; a zygote that cannot join leaves the join to PID 1."""
        if not tasks:
            return tasks
        shared = [os.path.join(path, "tasks") for label, path in getattr(self._cgroup, "dirs", ())
                  if label == "devices"]
        if len(shared) != 1 or shared[0] not in tasks:
            return tasks
        if zygote.joined != shared[0]:
            from . import cgroup_fs
            try:
                cgroup_fs.write_file(shared[0], str(zygote.pid))
            except OSError:
                return tasks
            zygote.joined = shared[0]
        return [path for path in tasks if path != shared[0]]

    def _spawn_stager(self, stager, program, launch):
        """clone through the compiled child: the stager (posix_spawn, no copy of this
        process) clones PID 1 as our child and reports its PID on the birth pipe."""
        # The maps are written from the stager when a plain write does it (not newuidmap)
        idmap = self.idmap
        release = None
        if idmap is None or idmap.method != "newuidmap":
            from . import user
            if idmap is not None:
                user.check_maps(idmap)
            procs = []
            if self._cgroup is not None and not launch.cgroup_tasks:
                procs = getattr(self._cgroup, "procs_files", lambda: None)()
            if procs is not None:
                release = stager.Release(self._go_w, idmap, procs)
        self.executor = "stager"
        if program.net_helper:
            launch.net_inline = stager.net_inline()
        pid = status = None
        zygote = self.sandbox._zygote(program)
        every_cgroup = launch.cgroup_tasks
        if zygote is not None:
            launch.cgroup_tasks = self._joined_by_zygote(zygote, every_cgroup)
            try:
                pid, status = zygote.start(launch, release)
            except stager.TooLarge:
                pass  # the zygote stays for the next run; this one takes a one-shot stager
            except stager.ZygoteLost as lost:
                # It died with this run's request in hand: whatever it started is ours to
                # reap, and this run fails (a second PID 1 on the same channel could be let go).
                self.sandbox._drop_zygote(zygote)
                if lost.pid > 0:
                    self.pid = lost.pid
                    self._undo.append(self._reap)
                raise SetupError("clone", lost.errno, lost.strerror) from None
            except OSError:
                self.sandbox._drop_zygote(zygote)  # it was gone before the request: start our own
            else:
                self.executor = "zygote"
        launch.cgroup_tasks = every_cgroup  # a one-shot stager's PID 1 joins them all
        if pid is None:
            # The birth pipe says "<pid>" the moment PID 1 exists, then "S<status>". The stager
            # is reaped after the go stage: its network helper may wait for PID 1's release.
            stager_pid, birth_r = stager.spawn(program, launch, release)
            self._undo.append(lambda: self._reap_stager())
            self._stager_pid = stager_pid
            try:
                self._close_child_ends()
                data = native.read_to_eof(birth_r, 64)
            finally:
                native.close(birth_r)
            pid, status = 0, None
            for line in data.split(b"\n"):
                if line.startswith(b"S"):
                    status = int(line[1:])
                elif line.isdigit():
                    pid = int(line)
            if status is None:  # the stager died before it said
                status = EXIT_SETUP
        self._close_child_ends()
        if pid > 0:
            self.pid = pid
            self._undo.append(self._reap)
        if status != 0 or not pid:
            # the stager failed (before PID 1 existed, or releasing it): its error is on the
            # channel. PID 1 is killed first, so the read ends (EOF) even if nothing was said.
            self._reap()
            from . import channel
            messages = channel.decode(native.read(self._msg_r, 65536))
            for kind, fields in messages:
                if kind == channel.ERROR:
                    stage, err, message = fields
                    prefix = stage + ": "
                    raise SetupError(stage, int(err), message[len(prefix):] if message.startswith(prefix) else message)
            raise SetupError("clone", 0, "the stager ended without starting the sandbox")
        if release is not None:
            self._released = True
            self._close_attr("_go_w")

    def _reap_stager(self):
        """The one-shot stager, once (its number may be anyone's afterwards)."""
        pid, self._stager_pid = self._stager_pid, None
        if pid:
            try:
                native.waitpid(pid, 0)
            except ChildProcessError:
                pass

    def _close_child_ends(self):
        """Close the descriptors meant for the child, once: each is forgotten as it is
        closed, so no undo can close a number the kernel has since given to another file."""
        launch = self.launch
        fds = [launch.go_r, launch.msg_w] + list(launch.source_fds or ())
        launch.go_r = launch.msg_w = None
        launch.source_fds = ()
        self._close_all(fds)
        if launch.tty is not None:
            launch.tty.close_child_end()

    def _stage_pidfd(self, plan, _):
        self._pidfd = native.pidfd_open(self.pid)
        self._undo.append(lambda: self._close_attr("_pidfd"))

    def _stage_idmap(self, plan, _):
        if self.idmap is not None and not self._released:
            from . import user
            user.parent(self.idmap, self.pid)

    def _stage_cgroup_attach(self, plan, launch):
        if self._cgroup is not None and not self.launch.cgroup_tasks and not self._released:
            self._cgroup.attach(self.pid)

    def _stage_go(self, plan, _):
        if not self._released:
            native.write(self._go_w, b"G")
        self._reap_stager()  # the one-shot stager ends once PID 1 is released (its helper with it)
        if self._released:
            return  # the stager did idmap, cgroup-attach and go
        self._close_attr("_go_w")

    def _stage_register(self, plan, _):
        if self.sandbox.register:
            claimed = self._registered  # the name stage's record: its undo is in place already
            self._register(self.sandbox.profile)
            if not claimed:
                self._undo.append(self._unregister)

    def _register(self, profile):
        from pysandbox_common import registry as state
        record = {"name": self.name, "pid": self.pid, "supervisor": os.getpid(), "profile": profile.name,
                  "started": time.time(), "cgroups": list(getattr(self._cgroup, "paths", []) or []),
                  "uid": os.geteuid()}
        if self.idmap is not None:
            record["host_ids"] = self.idmap.describe()
        try:
            state.register(record)
            self._registered = True
        except (OSError, ValueError) as e:
            # a claimed name keeps _registered: its provisional record still goes at the end
            self.warnings.append("the sandbox is not recorded for `audit %s`: %s" % (self.name, e))

    def _unregister(self):
        if self._registered:
            from pysandbox_common import registry as state
            state.unregister(self.name)
            self._registered = False

    # -- cleanup ----------------------------------------------------------------------
    def _close_all(self, fds):
        for fd in fds:
            if fd is not None:
                try:
                    native.close(fd)
                except OSError:
                    pass

    def _close_attr(self, attr):
        fd = getattr(self, attr, None)
        if fd is not None:
            setattr(self, attr, None)
            self._close_all([fd])

    def _reap(self):
        """Undo of clone: PID 1 killed (which ends its namespace) and reaped, once (its
        number may be anyone's afterwards)."""
        with self._signal_lock:
            if not self.pid or self.result is not None or self._pid1_reaped:
                return
            self._pid1_reaped = True  # from here kill() sends nothing: the number is about to go
            try:
                native.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:  # outside the lock: a PID 1 stuck in the kernel must not hold every kill()
            native.waitpid(self.pid, 0)
        except ChildProcessError:
            pass

    def _unwind(self):
        """Run every pending undo, newest first (a failed start, or the end of a run)."""
        while self._undo:
            undo = self._undo.pop()
            try:
                undo()
            except Exception:
                pass

    def _destroy_cgroup(self):
        if self._cgroup is not None:
            if self._pool is not None and self._ended:
                # after the verdict: removed while the supervisor next waits (Pool.tend)
                self._pool.retire(self._cgroup)
                return
            try:
                self._cgroup.destroy()
            except Exception:
                pass
            if self._pool is not None:
                self._pool.done()
            else:
                from . import cgroup
                cgroup.release_parents()

    def _cleanup(self):
        self._unwind()

    def kill(self, sig=signal.SIGKILL):
        with self._signal_lock:
            if self.result is not None or not self.pid or self._pid1_reaped:
                return
            try:
                # through the pidfd: once PID 1 is reaped its number may belong to anyone
                if getattr(self, "_pidfd", None) is not None:
                    native.pidfd_send_signal(self._pidfd, sig)
                else:
                    native.kill(self.pid, sig)  # not reaped yet: still our child's number
            except ProcessLookupError:
                pass

    def wait(self, io=None, input=None, max_output=DEFAULT_MAX_OUTPUT):
        """Wait for the end of the run and return its Result. `io` maps "in" to the write end
        of the command's stdin and 1/2 to the read ends of its stdout/stderr (run() makes
        them); at most `max_output` bytes of each are kept, the rest read and dropped."""
        if self.result is not None:
            return self.result
        relay = self.launch.tty
        try:
            return self._wait(io, input, max_output, relay)
        except BaseException:
            # interrupted (KeyboardInterrupt, an error in a signal handler): the sandbox
            # must not outlive the wait that owns it
            if self.result is None:
                self._kill_all()
                self._cleanup()
            raise
        finally:
            if relay is not None:
                relay.finish()  # the caller's terminal as it was, on every way out

    def _wait(self, io, input, max_output, relay):
        deadline = self._started + self.timeout if self.timeout else None
        cpu_budget = self.launch.cpu_time
        # The whole sandbox's CPU time is read from its cgroup (every process, not only the
        # one RLIMIT_CPU sees); no earlier than the budget could be spent on every CPU.
        cpu_watch = cpu_budget is not None and self._cgroup is not None and hasattr(self._cgroup, "verdict")
        cpus = (os.cpu_count() or 1) if cpu_watch else 1
        timed_out = False
        self._cpu_exceeded = False
        buffer = b""
        io = dict(io or {})
        write_fd = io.pop("in", None)
        pending_input = memoryview(input or b"")
        if write_fd is not None and not pending_input:
            os.close(write_fd)
            write_fd = None
        captures = {fd: Capture(max_output) for fd in io.values()}
        streams = {index: captures[fd] for index, fd in io.items()}
        poller = select.poll()
        poller.register(self._msg_r, select.POLLIN)
        for fd in captures:
            poller.register(fd, select.POLLIN)
        poller.register(self._pidfd, select.POLLIN)
        if write_fd is not None:
            os.set_blocking(write_fd, False)
            poller.register(write_fd, select.POLLOUT)
        if relay is not None:
            relay.attach(poller, self)
        pool = self.sandbox._cgroups
        if pool is not None:
            # The child is setting itself up: the time to remove the cgroups of finished
            # runs and make the next runs' ones (nothing here may fail the run).
            try:
                pool.tend()
            except Exception:
                pass
        msg_open = True
        exited = False
        while not exited:
            wake = deadline
            if cpu_watch:
                used = self._cpu_used()
                if used is not None and used >= cpu_budget:
                    self._cpu_exceeded = True
                    self._kill_all()
                    break
                soon = time.monotonic() + max(0.02, (cpu_budget - (used or 0.0)) / cpus)
                wake = soon if wake is None else min(wake, soon)
            wait_ms = None
            if wake is not None:
                # poll takes a C int of milliseconds: wake up at least every ~24 days
                wait_ms = min(max(0, int((wake - time.monotonic()) * 1000) + 1), 0x7FFFFFFF)
            events = poller.poll(wait_ms)
            if not events and deadline is not None and time.monotonic() >= deadline:
                timed_out = True
                self._kill_all()
                break
            for fd, event in events:
                if fd == self._pidfd:
                    exited = True
                elif fd == write_fd:
                    try:
                        n = os.write(write_fd, pending_input[:65536])
                        pending_input = pending_input[n:]
                    except BlockingIOError:
                        continue
                    except OSError:  # the command closed its stdin (EPIPE): the rest is dropped
                        pending_input = pending_input[:0]
                    if not pending_input:
                        poller.unregister(write_fd)
                        os.close(write_fd)
                        write_fd = None
                elif fd == self._msg_r and msg_open:
                    data = native.read(fd, 65536)
                    if data:
                        buffer += data
                    else:
                        poller.unregister(fd)
                        msg_open = False
                        # PID 1 closed its end: it is exiting (files go before namespaces
                        # in the kernel's exit), or it died. The cgroup's counts are read
                        # while it takes its namespaces down; wait4 then waits for the rest.
                        exited = True
                elif fd in captures:
                    if not captures[fd].read_from(fd):
                        poller.unregister(fd)
                elif relay is not None:
                    relay.handle(fd, event)
        cgroup_verdict = self._cgroup_verdict()
        _, status, usage = native.wait4(self.pid, 0)
        with self._signal_lock:
            self._pid1_reaped = True
        # Drain what is left (PID 1 is gone; every writer of these pipes died with its namespace).
        os.set_blocking(self._msg_r, False)
        while True:
            try:
                data = native.read(self._msg_r, 65536)
            except BlockingIOError:
                break
            if not data:
                break
            buffer += data
        for fd, capture in captures.items():
            os.set_blocking(fd, False)
            try:
                while capture.read_from(fd):
                    pass
            except BlockingIOError:
                pass
            native.close(fd)
        if write_fd is not None:
            os.close(write_fd)
        if relay is not None:
            relay.drain()
        if cpu_budget is not None and not self._cpu_exceeded and cpu_watch:
            used = self._cpu_used()
            self._cpu_exceeded = used is not None and used >= cpu_budget
        self.result = self._verdict(status, usage, buffer, timed_out, cgroup_verdict)
        if streams:
            self.result.stdout, self.result.stdout_truncated = streams[1].take()
            self.result.stderr, self.result.stderr_truncated = streams[2].take()
        self._ended = True
        self._cleanup()
        return self.result

    def _cpu_used(self):
        try:
            cg = self._cgroup.verdict()
        except Exception:
            return None
        if not cg or cg.get("cpu_user") is None:
            return None
        return (cg.get("cpu_user") or 0.0) + (cg.get("cpu_system") or 0.0)

    def _kill_all(self):
        # SIGKILL to PID 1 ends the whole pid namespace; the cgroup kill also catches a
        # process that escaped the namespace's teardown ordering.
        self.kill(signal.SIGKILL)
        if self._cgroup is not None:
            try:
                self._cgroup.kill()
            except Exception:
                pass

    def _cgroup_verdict(self):
        if self._cgroup is not None and hasattr(self._cgroup, "verdict"):
            try:
                return self._cgroup.verdict()
            except Exception:
                return None
        return None

    def _verdict(self, status, usage, buffer, timed_out, cg=None):
        wall = time.monotonic() - self._started
        error = None
        cmd_status = None
        syscall = None
        warnings = list(self.warnings)
        for kind, fields in channel.decode(buffer):
            if kind == channel.ERROR and error is None:
                error = (fields[0], int(fields[1] or 0), fields[2])
            elif kind == channel.STATUS:
                cmd_status = int(fields[0])
            elif kind == channel.WARNING:
                warnings.append(fields[0])
            elif kind == channel.SECCOMP_KILL:
                from .seccomp import syscall_name
                syscall = syscall_name(int(fields[1]), int(fields[2]))
        values = dict(name=self.name, wall=round(wall, 6), cpu_user=round(usage.ru_utime, 6),
                      cpu_system=round(usage.ru_stime, 6), warnings=warnings, profile=self.sandbox.profile.name,
                      signal=None, stage=None, message=None, syscall=None, memory_peak=None, limits=None,
                      host_ids=self.idmap.describe() if self.idmap is not None else None)
        if cg:
            values["memory_peak"] = cg.get("memory_peak")
            values["limits"] = cg.get("limits")
            if cg.get("cpu_user") is not None:
                values["cpu_user"] = round(max(values["cpu_user"], cg["cpu_user"]), 6)
                values["cpu_system"] = round(max(values["cpu_system"], cg.get("cpu_system") or 0.0), 6)
        budget = self.launch.cpu_time
        values["cpu_time"] = budget
        over_budget = budget is not None and (self._cpu_exceeded or (
            round(values["cpu_user"] + values["cpu_system"], 6) >= budget and not timed_out))
        if budget is not None and error is None and cmd_status is not None and os.WIFSIGNALED(cmd_status) \
                and os.WTERMSIG(cmd_status) == signal.SIGXCPU:
            over_budget = True  # RLIMIT_CPU's soft limit: the kernel's SIGXCPU
        if over_budget and error is None:
            # the budget was spent: RLIMIT_CPU's SIGXCPU/SIGKILL, or our kill on the cgroup's count
            sig = os.WTERMSIG(cmd_status) if cmd_status is not None and os.WIFSIGNALED(cmd_status) \
                else signal.SIGKILL
            values.update(reason="cpu-time", exit_code=EXIT_CPU_TIME, signal=sig)
        elif timed_out:
            values.update(reason="timeout", exit_code=EXIT_TIMEOUT, signal=signal.SIGKILL)
        elif error is not None:
            stage, err, message = error
            code = EXIT_SETUP
            if stage == "exec":
                code = EXIT_NOTFOUND if err in (2, 20) else EXIT_NOEXEC
            values.update(reason="setup-error", exit_code=code, stage=stage, message=message)
        else:
            wait_status = cmd_status if cmd_status is not None else status
            if os.WIFSIGNALED(wait_status):
                sig = os.WTERMSIG(wait_status)
                values.update(reason="signal", exit_code=128 + sig, signal=sig)
            else:
                values.update(reason="exit", exit_code=os.WEXITSTATUS(wait_status))
            if cmd_status is None and os.WIFSIGNALED(status):
                values["message"] = "the sandbox's PID 1 was killed by signal %d" % os.WTERMSIG(status)
            if syscall or values.get("signal") == signal.SIGSYS:
                values.update(reason="seccomp", syscall=syscall)
            elif cg and cg.get("oom") and (values["reason"] == "signal" or values["exit_code"] != 0):
                values["reason"] = "oom"
            elif cg and cg.get("pids_limited") and values["exit_code"] != 0:
                values["reason"] = "pids"
        return Result(**values)


class Capture:
    """One captured stream: at most `limit` bytes kept; beyond that, read and dropped into
    one reused scratch buffer, so the supervisor's memory never follows the command's
    output (the command is not stopped: it would otherwise block on a full pipe)."""

    __slots__ = ("limit", "data", "truncated", "scratch")

    def __init__(self, limit):
        self.limit, self.data, self.truncated, self.scratch = limit, bytearray(), False, None

    def read_from(self, fd):
        """One read; False at end of file."""
        room = self.limit - len(self.data)
        if room > 0:
            chunk = native.read(fd, min(65536, room))
            self.data += chunk
            return bool(chunk)
        if self.scratch is None:
            self.scratch = bytearray(65536)
        n = os.readv(fd, [self.scratch])
        if n:
            self.truncated = True
        return n > 0

    def take(self):
        data, self.data = bytes(self.data), bytearray()
        return data, self.truncated


# The supervisor's stages, in order (the child's tables are in sandbox/stages.py).
SUPERVISOR_STAGES = (
    ("name", SandboxProcess._stage_name),          # a running name is refused, not renamed
    ("cgroup", SandboxProcess._stage_cgroup),      # limits in force from the child's first instruction
    ("id-range", SandboxProcess._stage_id_range),  # as root: a host id range of its own, held until the end
    ("sources", SandboxProcess._stage_sources),    # bind sources opened with the caller's view and rights
    ("channel", SandboxProcess._stage_channel),
    ("tty", SandboxProcess._stage_tty),            # the socket the pty's master comes back on
    ("clone", SandboxProcess._stage_clone),        # PID 1 in new user + pid namespaces, waiting for "go"
    ("pidfd", SandboxProcess._stage_pidfd),
    ("idmap", SandboxProcess._stage_idmap),        # only a process outside the namespace may write its maps
    ("cgroup-attach", SandboxProcess._stage_cgroup_attach),
    ("go", SandboxProcess._stage_go),
    ("register", SandboxProcess._stage_register),  # the state file `audit NAME` and `gc` read
)
