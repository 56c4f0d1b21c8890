"""The supervisor: prepares a sandbox from a frozen profile, starts it, watches it and
tears it down. The parent halves of every layer run here.

Parent order (youki/nsjail): validate everything and compile the seccomp policy before
any fork; create the cgroup; clone the child into its new namespaces; write its id maps;
move it into its cgroup; only then let it go (one byte on a pipe). From then on the
supervisor only waits: for the messages of the child, the death of PID 1 (a pidfd) or
the deadline.
"""
import os
import select
# _signal, not signal: the public module imports enum, milliseconds on every start.
import _signal as signal
import time

from . import sys as k
from .errors import SetupError, SandboxError, EXIT_SETUP, EXIT_TIMEOUT, EXIT_NOEXEC, EXIT_NOTFOUND

_counter = [0]


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


class Spec:
    """Everything the child needs, prepared in the parent (no lookups after fork)."""

    __slots__ = ("argv", "env", "cwd", "hostname", "net_mode", "mounts", "idmap", "rlimits", "new_session",
                 "close_fds", "caps", "caps_keep", "caps_ambient", "no_new_privs", "landlock", "landlock_ro",
                 "landlock_rw", "verify", "bpf", "seccomp_log", "seccomp_listener_wanted", "stdio",
                 "unshare_after_attach", "source_fds", "handoff", "init_fd", "cgroup_tasks", "extra_bpf")

    def __init__(self, **kw):
        for key in self.__slots__:
            setattr(self, key, kw.get(key))


def _build_env(environment, overrides):
    env = {} if environment.clear else dict(os.environ)
    for key in environment.get("pass"):
        if key in os.environ:
            env[key] = os.environ[key]
    env.update(environment.set)
    if overrides:
        env.update(overrides)
    return env


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
        self._prepared = None

    def close(self):
        """Release what preparation holds open (the init binary's descriptor)."""
        if self._init_fd is not None:
            os.close(self._init_fd)
            self._init_fd = None
        self._prepared = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # -- preparation (parent, before any fork) ----------------------------------------
    def _prepare(self):
        if self._prepared is not None:
            return self._prepared
        p = self.profile
        ns = p.namespaces
        # clone() creates only what must exist at birth: the user namespace (its maps are
        # written from outside) and the pid namespace (the child is its PID 1). The child
        # unshares the rest itself, so the costly ones (a network namespace takes ~1-2 ms
        # of kernel work) are made in parallel with the supervisor's next sandbox; they
        # are owned by the new user namespace either way. The cgroup namespace must wait
        # until the child is in its cgroup; a time namespace applies to children only.
        flags = after = 0
        for nsname in ("user", "pid"):
            if getattr(ns, nsname):
                flags |= k.NS_FLAGS[nsname]
        for nsname in ("mount", "net", "uts", "ipc", "cgroup", "time"):
            if getattr(ns, nsname):
                after |= k.NS_FLAGS[nsname]
        if not ns.user and os.geteuid() != 0:
            raise SetupError("userns", 1, "a sandbox without a user namespace needs host root")
        idmap = None
        if ns.user:
            from . import user
            idmap = user.plan(p.idmap, p.idmap.uid, p.idmap.gid)
        from . import mnt
        extra_ro, extra_rw, extra_tmpfs = self.extra_mounts
        mounts = mnt.plan(p.filesystem, ro_binds=extra_ro, binds=extra_rw, tmpfs=extra_tmpfs, hostname=p.process.hostname if ns.uts else "",
                          uid=p.idmap.uid, gid=p.idmap.gid)
        from . import rlimits
        limits = rlimits.plan(p.rlimits)
        caps_keep = caps_ambient = ()
        caps_module = None
        if ns.user or os.geteuid() == 0:
            from pysandbox_common import capnames
            keep = tuple(capnames.normalize(c) for c in p.capabilities.keep)
            if "ALL" in keep:
                keep = capnames.CAPABILITIES[: capnames.last_cap() + 1]
            caps_keep = keep
            caps_ambient = tuple(capnames.normalize(c) for c in p.capabilities.ambient)
            from . import caps as caps_module  # noqa: F811
            if hasattr(caps_module, "preload"):
                caps_module.preload()
        landlock_policy = p.landlock
        landlock_rw = landlock_ro = ()
        if landlock_policy is not None:
            from . import landlock  # noqa: F401 - loaded before the child pivots away from it
            landlock_rw = tuple(dst for _, dst, writable, _ in mounts.binds if writable) + tuple(mounts.tmpfs)
            # An image root brings its own layout: allow reading and executing each of its
            # top-level directories (it is mounted read-only anyway); writes stay limited
            # to /tmp and rw binds. "/" itself stays unlisted, as in the composed root, so
            # the verify stage can prove the ruleset is in force.
            # Read-only binds get read and execute, like /usr.
            landlock_ro = tuple(dst for _, dst, writable, _ in mounts.binds if not writable and dst != "/usr")
            if mounts.rootfs:
                import stat
                # lstat: an image's top-level symlink (x -> /) resolves inside the sandbox,
                # not on the host; the real directories it may point at are listed anyway.
                landlock_ro += tuple("/" + e for e in sorted(os.listdir(mounts.rootfs))
                                     if e not in ("tmp", "dev", "proc", "sys")
                                     and stat.S_ISDIR(os.lstat(os.path.join(mounts.rootfs, e)).st_mode))
        bpf = extra_bpf = None
        seccomp_log = notify_kills = False
        if p.seccomp is not None:
            from . import seccomp
            notify_kills = bool(p.seccomp.has_kill_rules)
            bpf = seccomp.compile_policy(p.seccomp, caps=caps_keep, notify_kills=notify_kills)
            seccomp_log = bool(getattr(p.seccomp, "log", False))
            if self.extra_seccomp is not None:
                extra_bpf = seccomp.compile_policy(self.extra_seccomp, caps=caps_keep)
            if notify_kills:
                # PID 1 receives the listener over a socketpair and reads notifications
                # after pivot_root, where the host's stdlib may not be visible.
                import socket, struct  # noqa: F401,E401
        verify_expect = None
        try:
            from . import verify  # noqa: F401
            verify_expect = self._expectations(caps_keep, caps_ambient, idmap, mounts, landlock_policy)
        except ImportError:
            pass
        from . import user, child, net  # noqa: F401 - the child cannot import after pivot_root
        # The small C init replaces the Python PID 1 once the command runs (built by
        # setup.sh next to the package); without it the Python init serves.
        # The environment may only turn the C init off (PYSANDBOX_INIT=""), never pick another
        # binary to run as the sandbox's PID 1.
        init_path = os.path.join(os.path.dirname(__file__), "pysandbox-init")
        if os.environ.get("PYSANDBOX_INIT", "x") and os.path.exists(init_path):
            self._init_fd = os.open(init_path, os.O_PATH | os.O_CLOEXEC)
        self._prepared = dict(flags=flags, after=after, idmap=idmap, mounts=mounts, rlimits=limits,
                              caps=caps_module, caps_keep=caps_keep, caps_ambient=caps_ambient,
                              landlock=landlock_policy, landlock_rw=landlock_rw, landlock_ro=landlock_ro, bpf=bpf, seccomp_log=seccomp_log,
                              notify_kills=notify_kills, verify=verify_expect, extra_bpf=extra_bpf)
        return self._prepared

    def _expectations(self, caps_keep, caps_ambient, idmap, mounts, landlock_policy):
        p = self.profile
        expect = {"no_new_privs": p.process.no_new_privs}
        if p.namespaces.user or os.geteuid() == 0:
            from . import caps
            # A non-zero inside uid gets the kept set as ambient too (caps.apply), or exec
            # would drop it.
            expect["caps"] = caps.expected(caps_keep, caps_ambient, uid=idmap.inside_uid if idmap else p.idmap.uid)
        if idmap is not None:
            expect["uid_map_no_host_root"] = True
        if mounts.proc:
            expect["masked_paths"] = [m for m in mounts.masked if m.startswith("/proc/")]
            expect["readonly_paths"] = list(mounts.readonly)
        if landlock_policy is not None:
            expect["landlock"] = True
        if p.seccomp is not None:
            # The command inherits the supervisor's own filters (e.g. when pysandbox itself
            # runs in a container); ours must come on top of exactly those.
            fields = k.proc_status()
            expect["seccomp_mode"] = int(fields.get("Seccomp", "0"))
            expect["seccomp_filters_before"] = int(fields.get("Seccomp_filters", "0"))
        if p.process.close_fds:
            expect["no_fds_above_2"] = True
        return expect

    # -- running ---------------------------------------------------------------------
    def start(self, argv, env=None, cwd=None, stdin=None, stdout=None, stderr=None, timeout=None):
        """Start the sandbox; returns a SandboxProcess. `stdin`/`stdout`/`stderr` are fds or None (inherit)."""
        if not argv:
            raise SandboxError("no command given", 2)
        prep = self._prepare()
        p = self.profile
        _counter[0] += 1
        name = self.name or "sbx-%d-%d" % (os.getpid(), _counter[0])
        if self.name and _counter[0] > 1:
            name = "%s-%d" % (self.name, _counter[0])
        spec = Spec(argv=list(argv), env=_build_env(p.environment, env), cwd=cwd or p.filesystem.cwd,
                    hostname=p.process.hostname if p.namespaces.uts else "", net_mode=p.network.mode,
                    mounts=prep["mounts"], idmap=prep["idmap"], rlimits=prep["rlimits"],
                    new_session=p.process.new_session, close_fds=p.process.close_fds,
                    caps=prep["caps"], caps_keep=prep["caps_keep"], caps_ambient=prep["caps_ambient"],
                    no_new_privs=p.process.no_new_privs, landlock=prep["landlock"], landlock_ro=prep["landlock_ro"],
                    landlock_rw=prep["landlock_rw"], verify=prep["verify"], bpf=prep["bpf"],
                    seccomp_log=prep["seccomp_log"], seccomp_listener_wanted=prep["notify_kills"],
                    extra_bpf=prep["extra_bpf"],
                    stdio=(stdin, stdout, stderr) if (stdin, stdout, stderr) != (None, None, None) else None,
                    unshare_after_attach=prep["after"], init_fd=self._init_fd)
        return SandboxProcess(self, name, spec, prep, timeout if timeout is not None else (p.process.timeout or None))

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

    def __init__(self, sandbox, name, spec, prep, timeout):
        self.sandbox, self.name, self.timeout = sandbox, name, timeout
        self.pid = None
        self.result = None
        self.warnings = []
        self._cgroup = None
        self._started = time.monotonic()
        self._messages = []
        p = sandbox.profile
        if p.limits.memory or p.limits.pids or p.limits.cpus or p.limits.cpu_weight or p.limits.io_weight \
                or p.limits.required:
            from . import cgroup
            self._cgroup = cgroup.create(name, p.limits)
            if getattr(self._cgroup, "warning", None):
                self.warnings.append(self._cgroup.warning)
        if self._cgroup is not None and hasattr(self._cgroup, "task_files"):
            spec.cgroup_tasks = self._cgroup.task_files()
        from .mnt import open_sources
        try:
            spec.source_fds = open_sources(spec.mounts, spec.idmap)
        except BaseException:
            self._destroy_cgroup()
            raise
        go_r, go_w = os.pipe2(os.O_CLOEXEC)
        msg_r, msg_w = os.pipe2(os.O_CLOEXEC)
        try:
            pid = k.clone_process(prep["flags"])
        except BaseException:
            for fd in [go_r, go_w, msg_r, msg_w] + (spec.source_fds or []):
                os.close(fd)
            self._destroy_cgroup()
            raise
        if pid == 0:
            os.close(go_w)
            os.close(msg_r)
            from .child import pid1_main
            pid1_main(spec, go_r, msg_w)
            os._exit(125)
        os.close(go_r)
        os.close(msg_w)
        for fd in spec.source_fds or ():
            os.close(fd)
        self.pid = pid
        self._msg_r = msg_r
        try:
            self._pidfd = k.pidfd_open(pid)
            if prep["idmap"] is not None:
                from .user import write_maps
                write_maps(pid, prep["idmap"])
            if self._cgroup is not None and not spec.cgroup_tasks:
                self._cgroup.attach(pid)
            os.write(go_w, b"G")
            if self.sandbox.register:
                self._register(p)
        except BaseException:
            os.close(go_w)
            self._abort()
            raise
        os.close(go_w)

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

    def _abort(self):
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        self._cleanup()

    def _destroy_cgroup(self):
        if self._cgroup is not None:
            try:
                self._cgroup.destroy()
            except Exception:
                pass

    def _cleanup(self):
        for attr in ("_msg_r", "_pidfd"):
            fd = getattr(self, attr, None)
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
                setattr(self, attr, None)
        self._destroy_cgroup()
        if getattr(self, "_registered", False):
            from pysandbox_common import registry as state
            state.unregister(self.name)
            self._registered = False

    def kill(self, sig=signal.SIGKILL):
        if self.result is None and self.pid:
            try:
                # through the pidfd: once PID 1 is reaped its number may belong to anyone
                if getattr(self, "_pidfd", None) is not None:
                    signal.pidfd_send_signal(self._pidfd, sig)
                else:
                    os.kill(self.pid, sig)
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
                    data = os.read(fd, 65536)
                    if not data:
                        poller.unregister(fd)
                        continue
                    if readers[fd] == "msg":
                        buffer += data
                    else:
                        outputs[readers[fd]].append(data)
        _, status, usage = os.wait4(self.pid, 0)
        # Drain what is left (PID 1 is gone; every writer of these pipes died with its namespace).
        for fd, kind in readers.items():
            os.set_blocking(fd, False)
            while True:
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    break
                if not data:
                    break
                if kind == "msg":
                    buffer += data
                else:
                    outputs[kind].append(data)
            if kind != "msg":
                os.close(fd)
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
        for line in buffer.decode("utf-8", "replace").splitlines():
            fields = line.split("\t")
            if fields[0] == "E" and error is None and len(fields) >= 4:
                error = (fields[1], int(fields[2] or 0), fields[3])
            elif fields[0] == "S" and len(fields) >= 2:
                cmd_status = int(fields[1])
            elif fields[0] == "W" and len(fields) >= 2:
                warnings.append(fields[1])
            elif fields[0] == "X" and len(fields) >= 4:  # from the C init: pid, nr, audit arch
                from .seccomp import syscall_name
                syscall = syscall_name(int(fields[2]), int(fields[3]))
            elif fields[0] == "X" and len(fields) >= 3:  # from the Python init: pid, name
                syscall = fields[2]
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
