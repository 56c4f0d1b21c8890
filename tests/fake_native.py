"""A recording fake of the native-call layer (sandbox/native.py) for unit tests without
root: no namespace, cgroup, mount or process is made.

FakeNative.install(monkeypatch) replaces the native layer's process and descriptor
operations, its stage runner, and the three outside resources a start creates (the
cgroup, the bind-source descriptors, the state file). Then `Sandbox.run` goes through
the real supervisor code: the supervisor's stages run for real against the fake; the
cloned child is simulated in-process: PID 1's and the command's stage tables are run by
the real runner (sandbox/stages.run), each stage recorded instead of executed, and the
messages they send go through a real pipe to the real verdict code.

`fail_at=(table, stage)` makes that stage raise SetupError(stage, errno). Afterwards
`leaks()` lists whatever was opened, created or registered and not given back.
"""
import errno
import os
import threading


class FakeExit(BaseException):
    def __init__(self, code):
        super().__init__(code)
        self.code = code


class FakeUsage:
    ru_utime = 0.001
    ru_stime = 0.001


class FakeCgroup:
    def __init__(self, fake, name):
        self.fake, self.name, self.paths = fake, name, ["/fake/cgroup/" + name]
        self.warning = None
        fake.record.append(("cgroup-create", name))
        fake.cgroups.add(name)

    def attach(self, pid):
        self.fake.record.append(("cgroup-attach", pid))

    def verdict(self):
        return {}

    def kill(self):
        self.fake.record.append(("cgroup-kill", self.name))

    def destroy(self):
        self.fake.record.append(("cgroup-destroy", self.name))
        self.fake.cgroups.discard(self.name)


class FakeNative:
    PID = 4242

    def __init__(self, fail_at=None, err=errno.EPERM):
        self.fail_at, self.err = fail_at, err
        self.record = []
        self.open_fds = set()      # descriptors the supervisor got through the fake
        self.cgroups = set()
        self.registered = set()
        self.bad_closes = []
        self.child_alive = False
        self._where = threading.local()  # which table this thread runs (threads may start at once)
        self.command_status = None
        self.pid1_status = None

    @property
    def table(self):
        return getattr(self._where, "table", "supervisor")

    @table.setter
    def table(self, value):
        self._where.table = value

    # -- installation -------------------------------------------------------------------
    def install(self, monkeypatch):
        from sandbox import cgroup, mnt, native, user
        from pysandbox_common import registry
        for name in ("run_stage", "pipe2", "close", "clone_process", "pidfd_open", "write", "read", "kill",
                     "waitpid", "wait4", "pidfd_send_signal", "exit", "fork", "execve", "prctl", "unshare",
                     "sethostname"):
            monkeypatch.setattr(native, name, getattr(self, name))
        monkeypatch.setattr(cgroup, "create", lambda name, limits, **kw: FakeCgroup(self, name))
        monkeypatch.setattr(mnt, "open_sources", self.open_sources)
        monkeypatch.setattr(user, "write_maps", lambda pid, idmap: self.record.append(("idmap", pid)))
        monkeypatch.setattr(registry, "register", self.register)
        monkeypatch.setattr(registry, "claim", self.claim)
        monkeypatch.setattr(registry, "unregister", self.unregister)
        monkeypatch.setattr(registry, "exists", lambda name: name in self.registered)
        monkeypatch.setattr(registry, "find", lambda name, directory=None: (
            {"name": name, "pid": self.PID, "supervisor": os.getpid()} if name in self.registered else None))
        return self

    # -- the stage runner ---------------------------------------------------------------
    def run_stage(self, name, step, plan, launch):
        self.record.append(("stage", self.table, name))
        if self.fail_at == (self.table, name):
            from sandbox.errors import SetupError
            raise SetupError(name, self.err)
        if self.table == "supervisor":
            self._where.plan, self._where.launch = plan, launch  # what the simulated child starts with
            return step(plan, launch)  # the supervisor's steps run for real against this fake
        # the child's stages are recorded, not run; these three stand for what they do
        if (self.table, name) == ("pid1", "fork"):
            self._run_command(plan, launch)
        elif (self.table, name) == ("pid1", "wait"):
            from sandbox import channel
            channel.send(launch.msg_w, channel.STATUS, (self.command_status or 0) << 8)
        elif (self.table, name) == ("command", "exec"):
            self.command_status = 0  # the command ran and exited 0
        return None

    def _run_command(self, plan, launch):
        from sandbox import stages
        self.table = "command"
        try:
            stages.run(stages.COMMAND_STAGES, plan, launch)
        except FakeExit as e:
            self.command_status = e.code
        finally:
            self.table = "pid1"

    # -- processes ----------------------------------------------------------------------
    def clone_process(self, flags):
        """The child, simulated before the parent goes on: PID 1's table with the real runner."""
        from sandbox import child
        self.record.append(("clone", flags))
        self.child_alive = True
        self.table = "pid1"
        try:
            child.pid1_main(self._where.plan, self._where.launch)
        except FakeExit as e:
            self.pid1_status = e.code
        finally:
            self.table = "supervisor"
        return self.PID

    def exit(self, code):
        raise FakeExit(code)

    def fork(self):
        raise AssertionError("the fake never forks: the fork stage is simulated")

    def execve(self, *args):
        raise AssertionError("the fake never execs")

    def prctl(self, *args, **kw):
        self.record.append(("prctl",) + args)
        return 0

    def unshare(self, flags, stage="unshare"):
        self.record.append(("unshare", flags))

    def sethostname(self, name):
        self.record.append(("sethostname", name))

    def kill(self, pid, sig):
        self.record.append(("kill", pid, sig))

    def pidfd_send_signal(self, fd, sig):
        self.record.append(("pidfd_send_signal", sig))

    def waitpid(self, pid, options):
        self.record.append(("reap", pid))
        self.child_alive = False
        return pid, (self.pid1_status or 0) << 8

    def wait4(self, pid, options):
        self.record.append(("reap", pid))
        self.child_alive = False
        return pid, (self.pid1_status or 0) << 8, FakeUsage()

    # -- descriptors (real pipes, so the supervisor's poll loop runs unchanged) ---------
    def pipe2(self, flags):
        r, w = os.pipe2(flags)
        self.open_fds |= {r, w}
        self.record.append(("pipe", r, w))
        return r, w

    def pidfd_open(self, pid):
        # readable at once, as a pidfd is once its process has exited
        r, w = os.pipe2(os.O_CLOEXEC)
        os.write(w, b"x")
        os.close(w)
        self.open_fds.add(r)
        self.record.append(("pidfd", r))
        return r

    def open_sources(self, mounts, idmap=None):
        fds = [os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC) for _ in mounts.binds]
        self.open_fds |= set(fds)
        self.record.append(("sources", len(fds)))
        return fds

    def close(self, fd):
        if fd not in self.open_fds:
            # a second close of a number the kernel may have given to another file since
            self.bad_closes.append(fd)
            return
        self.open_fds.discard(fd)
        os.close(fd)

    def write(self, fd, data):
        try:
            return os.write(fd, data)
        except BrokenPipeError:
            return len(data)  # the "go" byte: the simulated child has no read end open

    def read(self, fd, n):
        return os.read(fd, n)

    # -- the state registry -------------------------------------------------------------
    def register(self, record):
        self.registered.add(record["name"])
        self.record.append(("register", record["name"]))

    def claim(self, record):
        if record["name"] in self.registered:
            return {"name": record["name"], "pid": self.PID, "supervisor": os.getpid()}
        self.registered.add(record["name"])
        self.record.append(("claim", record["name"]))
        return None

    def unregister(self, name):
        self.registered.discard(name)
        self.record.append(("unregister", name))

    # -- what a test asserts on ---------------------------------------------------------
    def stages(self, table):
        return [entry[2] for entry in self.record if entry[0] == "stage" and entry[1] == table]

    def leaks(self):
        out = []
        if self.open_fds:
            out.append("descriptors %s" % sorted(self.open_fds))
        if self.cgroups:
            out.append("cgroups %s" % sorted(self.cgroups))
        if self.registered:
            out.append("state files %s" % sorted(self.registered))
        if self.child_alive:
            out.append("PID 1 not reaped")
        if self.bad_closes:
            out.append("closed twice or never opened: %s" % self.bad_closes)
        return out
