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
import os
import select
# _signal, not signal: the public module imports enum, milliseconds on every start.
import _signal as signal
import time

from . import channel, native
from .errors import SetupError, SandboxError, EXIT_SETUP, EXIT_TIMEOUT, EXIT_NOEXEC, EXIT_NOTFOUND

_counter = [0]
# Names of the sandboxes this process runs now: a name is one running sandbox. Threads
# may start sandboxes concurrently: the counter and the set change under one lock
# (_thread's: `threading` costs an import on the run path).
_running_names = set()
_names_lock = _thread.allocate_lock()


class Result:
    """Why and how a sandboxed run ended; the same fields as `--result` JSON."""

    FIELDS = ("name", "exit_code", "signal", "reason", "stage", "message", "syscall", "wall", "cpu_user",
              "cpu_system", "memory_peak", "limits", "warnings", "profile")

    def __init__(self, **values):
        for field in self.FIELDS:
            setattr(self, field, values.get(field))
        self.stdout = values.get("stdout")
        self.stderr = values.get("stderr")

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

    def __init__(self, profile, name=None, ro_binds=(), binds=(), tmpfs=(), register=None, extra_seccomp=None):
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
        self._plan = None

    def close(self):
        """Release what preparation holds open (the init binary's descriptor)."""
        if self._init_fd is not None:
            os.close(self._init_fd)
            self._init_fd = None
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
            plan = planner.build(self.profile, self.extra_mounts, self.extra_seccomp)
            planner.preload(plan)
            # The small C init replaces the Python PID 1 once the command runs (built by
            # setup.sh next to the package); without it the Python init serves. The
            # environment may only turn the C init off (PYSANDBOX_INIT=""), never pick
            # another binary to run as the sandbox's PID 1.
            init_path = os.path.join(os.path.dirname(__file__), "pysandbox-init")
            if os.environ.get("PYSANDBOX_INIT", "x") and os.path.exists(init_path):
                self._init_fd = os.open(init_path, os.O_PATH | os.O_CLOEXEC)
            self._plan = plan
        return self._plan

    # -- running ---------------------------------------------------------------------
    def start(self, argv, env=None, cwd=None, stdin=None, stdout=None, stderr=None, timeout=None):
        """Start the sandbox; returns a SandboxProcess. `stdin`/`stdout`/`stderr` are fds or None (inherit)."""
        if not argv:
            raise SandboxError("no command given", 2)
        plan = self.plan()
        if self.name:
            name = self.name
        else:
            with _names_lock:
                _counter[0] += 1
                name = "sbx-%d-%d" % (os.getpid(), _counter[0])
        environment = dict(plan.env)
        if env:
            environment.update(env)
        from .stages import Launch
        launch = Launch(list(argv), environment, cwd or plan.cwd,
                        stdio=(stdin, stdout, stderr) if (stdin, stdout, stderr) != (None, None, None) else None,
                        init_fd=self._init_fd)
        return SandboxProcess(self, name, plan, launch, timeout if timeout is not None else plan.timeout)

    def run(self, argv, timeout=None, env=None, cwd=None, input=None, capture_output=False):
        """Run to completion and return a Result (never raises for the command's own failure)."""
        if not capture_output and input is None:
            return self.start(argv, env=env, cwd=cwd, timeout=timeout).wait()
        fds = [None, None, None]
        parent_ends = []
        if input is not None:
            r, w = os.pipe()
            fds[0] = r
            parent_ends.append(("in", w))
        if capture_output:
            for index in (1, 2):
                r, w = os.pipe()
                fds[index] = w
                parent_ends.append((index, r))
        try:
            proc = self.start(argv, env=env, cwd=cwd, stdin=fds[0], stdout=fds[1], stderr=fds[2], timeout=timeout)
        finally:
            for fd in fds:
                if fd is not None:
                    os.close(fd)
        return proc.wait(io=dict(parent_ends), input=input)


class SandboxProcess:
    """A started sandbox: `wait()` for its Result, `kill()` to end it."""

    def __init__(self, sandbox, name, plan, launch, timeout):
        self.sandbox, self.name, self.timeout = sandbox, name, timeout
        self.plan, self.launch = plan, launch
        self.pid = None
        self.result = None
        self.warnings = []
        self._cgroup = None
        self._msg_r = self._pidfd = None
        self._registered = False
        self._started = time.monotonic()
        self._undo = []
        with _names_lock:
            if name in _running_names:
                raise SandboxError("a sandbox named %r is already running in this process; "
                                   "give each concurrent sandbox its own name" % name, EXIT_SETUP)
            _running_names.add(name)
        self._undo.append(lambda: _running_names.discard(name))
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
        # Only a name the caller chose can collide (generated ones carry our PID); the
        # cheap existence test first keeps json off the run path.
        if self.sandbox.register and self.sandbox.name:
            from pysandbox_common import registry
            running = registry.find(self.name) if registry.exists(self.name) else None
            if running is not None:
                raise SandboxError("a sandbox named %r is already running (PID %s, supervisor %s)" % (
                    self.name, running.get("pid"), running.get("supervisor")), EXIT_SETUP)

    def _stage_cgroup(self, plan, launch):
        if plan.cgroup_limits is None:
            return
        from . import cgroup
        self._cgroup = cgroup.create(self.name, plan.cgroup_limits)
        self._undo.append(self._destroy_cgroup)
        if getattr(self._cgroup, "warning", None):
            self.warnings.append(self._cgroup.warning)
        if hasattr(self._cgroup, "task_files"):
            self.launch.cgroup_tasks = self._cgroup.task_files()

    def _stage_sources(self, plan, _):
        from . import mnt
        # idmapped writable binds are made from the run's actual ids (mnt.open_sources)
        self.launch.source_fds = mnt.open_sources(plan.mounts, plan.idmap)
        self._undo.append(self._close_child_ends)

    def _stage_channel(self, plan, _):
        self.launch.go_r, self._go_w = native.pipe2(os.O_CLOEXEC)
        self._msg_r, self.launch.msg_w = native.pipe2(os.O_CLOEXEC)
        self._undo.append(self._close_child_ends)
        self._undo.append(lambda: self._close_attr("_go_w"))
        self._undo.append(lambda: self._close_attr("_msg_r"))

    def _stage_clone(self, plan, launch):
        pid = native.clone_process(plan.clone_flags)
        if pid == 0:
            from .child import pid1_main
            pid1_main(plan, self.launch)
            native.exit(EXIT_SETUP)
        self.pid = pid
        self._undo.append(self._reap)
        # The child's ends and the bind sources live on in the child only.
        self._close_child_ends()

    def _close_child_ends(self):
        """Close the descriptors meant for the child, once: each is forgotten as it is
        closed, so no undo can close a number the kernel has since given to another file."""
        launch = self.launch
        fds = [launch.go_r, launch.msg_w] + list(launch.source_fds or ())
        launch.go_r = launch.msg_w = None
        launch.source_fds = ()
        self._close_all(fds)

    def _stage_pidfd(self, plan, _):
        self._pidfd = native.pidfd_open(self.pid)
        self._undo.append(lambda: self._close_attr("_pidfd"))

    def _stage_idmap(self, plan, _):
        if plan.idmap is not None:
            from . import user
            user.parent(plan.idmap, self.pid)

    def _stage_cgroup_attach(self, plan, launch):
        if self._cgroup is not None and not self.launch.cgroup_tasks:
            self._cgroup.attach(self.pid)

    def _stage_go(self, plan, _):
        native.write(self._go_w, b"G")
        self._close_attr("_go_w")

    def _stage_register(self, plan, _):
        if self.sandbox.register:
            self._register(self.sandbox.profile)
            self._undo.append(self._unregister)

    def _register(self, profile):
        from pysandbox_common import registry as state
        record = {"name": self.name, "pid": self.pid, "supervisor": os.getpid(), "profile": profile.name,
                  "started": time.time(), "cgroups": list(getattr(self._cgroup, "paths", []) or []),
                  "uid": os.geteuid()}
        try:
            state.register(record)
            self._registered = True
        except (OSError, ValueError) as e:
            self._registered = False
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
        """Undo of clone: PID 1 killed (which ends its namespace) and reaped."""
        if self.pid and self.result is None:
            try:
                native.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
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
            try:
                self._cgroup.destroy()
            except Exception:
                pass

    def _cleanup(self):
        self._unwind()

    def kill(self, sig=signal.SIGKILL):
        if self.result is None and self.pid:
            try:
                # through the pidfd: once PID 1 is reaped its number may belong to anyone
                if getattr(self, "_pidfd", None) is not None:
                    native.pidfd_send_signal(self._pidfd, sig)
                else:
                    native.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def wait(self, io=None, input=None):
        if self.result is not None:
            return self.result
        deadline = self._started + self.timeout if self.timeout else None
        timed_out = False
        buffer = b""
        outputs = {1: [], 2: []}
        io = dict(io or {})
        write_fd = io.pop("in", None)
        pending_input = memoryview(input) if input is not None else None
        if write_fd is not None and not pending_input:
            os.close(write_fd)
            write_fd = None
        readers = {self._msg_r: "msg"}
        for index, fd in io.items():
            readers[fd] = index
        poller = select.poll()
        for fd in readers:
            poller.register(fd, select.POLLIN)
        poller.register(self._pidfd, select.POLLIN)
        if write_fd is not None:
            os.set_blocking(write_fd, False)
            poller.register(write_fd, select.POLLOUT)
        exited = False
        while not exited:
            wait_ms = None
            if deadline is not None:
                # poll takes a C int of milliseconds: wake up at least every ~24 days
                wait_ms = min(max(0, int((deadline - time.monotonic()) * 1000)), 0x7FFFFFFF)
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
                    except (BrokenPipeError, BlockingIOError):
                        pending_input = pending_input[:0] if not isinstance(pending_input, memoryview) else b""
                    if not pending_input:
                        poller.unregister(write_fd)
                        os.close(write_fd)
                        write_fd = None
                else:
                    data = native.read(fd, 65536)
                    if not data:
                        poller.unregister(fd)
                        continue
                    if readers[fd] == "msg":
                        buffer += data
                    else:
                        outputs[readers[fd]].append(data)
        _, status, usage = native.wait4(self.pid, 0)
        # Drain what is left (PID 1 is gone; every writer of these pipes died with its namespace).
        for fd, kind in readers.items():
            os.set_blocking(fd, False)
            while True:
                try:
                    data = native.read(fd, 65536)
                except BlockingIOError:
                    break
                if not data:
                    break
                if kind == "msg":
                    buffer += data
                else:
                    outputs[kind].append(data)
            if kind != "msg":
                native.close(fd)
        if write_fd is not None:
            os.close(write_fd)
        self.result = self._verdict(status, usage, buffer, timed_out)
        if io:
            self.result.stdout = b"".join(outputs[1])
            self.result.stderr = b"".join(outputs[2])
        self._cleanup()
        return self.result

    def _kill_all(self):
        # SIGKILL to PID 1 ends the whole pid namespace; the cgroup kill also catches a
        # process that escaped the namespace's teardown ordering.
        self.kill(signal.SIGKILL)
        if self._cgroup is not None:
            try:
                self._cgroup.kill()
            except Exception:
                pass

    def _verdict(self, status, usage, buffer, timed_out):
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
                      signal=None, stage=None, message=None, syscall=None, memory_peak=None, limits=None)
        cg = None
        if self._cgroup is not None and hasattr(self._cgroup, "verdict"):
            try:
                cg = self._cgroup.verdict()
            except Exception:
                cg = None
        if cg:
            values["memory_peak"] = cg.get("memory_peak")
            values["limits"] = cg.get("limits")
            if cg.get("cpu_user") is not None:
                values["cpu_user"] = round(max(values["cpu_user"], cg["cpu_user"]), 6)
                values["cpu_system"] = round(max(values["cpu_system"], cg.get("cpu_system") or 0.0), 6)
        if timed_out:
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


# The supervisor's stages, in order (the child's tables are in sandbox/stages.py).
SUPERVISOR_STAGES = (
    ("name", SandboxProcess._stage_name),          # a running name is refused, not renamed
    ("cgroup", SandboxProcess._stage_cgroup),      # limits in force from the child's first instruction
    ("sources", SandboxProcess._stage_sources),    # bind sources opened with the caller's view and rights
    ("channel", SandboxProcess._stage_channel),
    ("clone", SandboxProcess._stage_clone),        # PID 1 in new user + pid namespaces, waiting for "go"
    ("pidfd", SandboxProcess._stage_pidfd),
    ("idmap", SandboxProcess._stage_idmap),        # only a process outside the namespace may write its maps
    ("cgroup-attach", SandboxProcess._stage_cgroup_attach),
    ("go", SandboxProcess._stage_go),
    ("register", SandboxProcess._stage_register),  # the state file `audit NAME` and `gc` read
)
