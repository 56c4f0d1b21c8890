"""`pysandbox serve`: a warm per-user server for `pysandbox run`.

A CLI start spends most of its time before the sandbox: the interpreter, the imports, the
profile, the plan (mount operations, the compiled seccomp filter, the cgroup set). The
server does that once and keeps prepared `Sandbox`es (compiled child, cgroups made ahead,
a zygote per worker thread). Each run still gets fresh namespaces, cgroups and processes:
the server changes where the preparation happens, not what a run shares with the one
before (nothing).

The rule: a served run is the run the CLI would have made in the caller's own process.

- **Who.** The socket lives in a directory of the user's own, mode 0700. The server pins
  the connecting process (SO_PEERPIDFD) and compares, from /proc and two syscalls,
  everything a sandbox inherits from the thread that starts it. That is the whole of
  /proc/PID/status but its counters (ids, groups, capability sets, no_new_privs,
  seccomp, affinity, THP and speculation controls, ...), plus the namespaces, the root
  directory, cgroups, resource limits, oom_score_adj, personality, LSM label,
  coredump_filter, timer slack, loginuid and session id, the scheduling attributes
  (sched_getattr) and the I/O priority. It also compares the environment pysandbox reads
  for itself (PYSANDBOX_*, HOME, XDG_CACHE_HOME, XDG_RUNTIME_DIR). A caller with any
  seccomp filter is declined: the filters themselves cannot be compared.
- **Landlock.** A Landlock domain shows nowhere in /proc, and it outlives the
  no_new_privs or CAP_SYS_ADMIN it took to enter (setuid, capset, exec), so every
  caller proves it has none: Landlock refuses a confined process attach-mode ptrace
  access to a process outside its domain (here even to root; read-mode access it lets
  through), so the client opens /proc/SERVER/mem (an attach-mode open) and passes the
  descriptor, and the server checks that it is its own. Without it (a domain, Yama's
  ptrace_scope 3, or no CAP_SYS_PTRACE under scope 1 or 2) the caller is declined.
  The caller must have one thread: the peer credentials name the process, and seccomp,
  no_new_privs and Landlock are per thread.
- **Where.** Each worker thread has its own filesystem context (unshare(CLONE_FS)): per
  request it takes the caller's directory (through /proc/PID/cwd, then the pin checked)
  and umask. Every relative path (options, profile files, `import`s in them, relative
  PYSANDBOX_* values) then resolves as in the caller's process.
- **What.** The profile is loaded and the plan built for every request, cheaply when warm.
  A prepared Sandbox is reused only when its plan is the same: bind sources, their owners
  and types, /etc entries, id ranges, the compiled filters and the environment. A change
  on the host since the last run gives a new Sandbox, not a stale plan.
- **When not.** A terminal on stdin, stdout or stderr, `--tty`, `-i`, `--help`; a
  profile with `close_fds = false` (the caller's descriptors above 2 do not travel); a
  profile with `new_session = false` (its command would share the server's session and
  terminal) unless the caller's session is the server's.

Anything else is declined before anything starts, and the client runs the sandbox
itself. What the server cannot see: the task's NUMA memory policy and PR_SET_MDWE (no
view of another process's), and, when it is not root, the caller's timer slack (reading
another process's takes CAP_SYS_NICE: both sides then read as unreadable).

The wire format is in sandbox/serve_client.py.
"""
import fcntl
import itertools
import os
import queue
import select
import signal
import socket
import sys
import threading
import time

from . import serve_client as client
from .errors import SandboxError, UsageError

SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)  # Linux 6.5
CLONE_FS = 0x00000200
MAX_REQUEST = 1 << 20
REQUEST_TIMEOUT = 10.0    # a client sends its request right after connecting
MAX_EXTRA_THREADS = 64    # runs at once beyond the kept workers; more wait in the queue
CACHE_SIZE = 16           # prepared Sandboxes kept; the least recently used idle one goes
# The environment pysandbox reads for itself (profile search path, caches, state, the
# init and stager switches): a caller with other values would get another sandbox.
CONTEXT_KEYS = ("HOME", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR", "PATH")  # PATH: newuidmap is looked up
CLIENT_ONLY_KEYS = ("PYSANDBOX_SERVE", "PYSANDBOX_SERVE_SOCKET")
# /proc/PID/status lines that are counters or this process's own numbers, not state a
# child inherits; every other line is compared (a line a newer kernel adds is compared
# too: unknown means different). Umask is applied per request, not compared. The signal
# dispositions and mask: the command starts with every signal at its default and none
# blocked, whoever starts it (the "signals" stage).
STATUS_NOT_INHERITED = frozenset((
    "Name", "Umask", "State", "Tgid", "Ngid", "Pid", "PPid", "TracerPid", "FDSize", "Threads", "SigQ", "SigPnd",
    "ShdPnd", "SigBlk", "SigIgn", "SigCgt", "voluntary_ctxt_switches", "nonvoluntary_ctxt_switches", "NStgid",
    "NSpid", "NSpgid", "NSsid", "Kthread", "CoreDumping", "HugetlbPages", "Cpus_allowed_list",
    "Mems_allowed_list"))
PROC_FILES = ("limits", "cgroup", "oom_score_adj", "personality", "attr/current", "coredump_filter",
              "timerslack_ns", "loginuid", "sessionid")
NOT_COMPARED = ("umask", "session", "tty", "threads")  # applied or checked apart


class Declined(BaseException):
    """The caller runs this one itself; nothing was started. A BaseException: raised from
    inside the CLI's run path (ServedRun.sandbox), it must pass its `except Exception`."""


def _stat_key(path):
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _fstat_key(fd):
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def identity(pid, base=None):
    """{what: value} of everything a sandbox started by task `pid` would inherit (base:
    its /proc directory; the server's own thread is /proc/thread-self)."""
    from . import native
    base = base or "/proc/%d" % pid
    out = {}
    with open(base + "/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key not in STATUS_NOT_INHERITED and not key.startswith(("Vm", "Rss")):
                out["status " + key] = value.split()
            elif key == "Umask":
                out["umask"] = int(value, 8)
            elif key == "Threads":
                out["threads"] = int(value)
    # a few files exist only for the whole process (coredump_filter, timerslack_ns): the
    # server's own thread falls back to its process's
    places = (base, "/proc/%d" % os.getpid()) if base == "/proc/thread-self" else (base,)
    for name in PROC_FILES:
        for where in places:
            try:
                with open("%s/%s" % (where, name), "rb") as f:
                    out[name] = f.read()
                break
            except FileNotFoundError:
                continue
            except OSError as e:
                out[name] = "unreadable (%s)" % e.strerror
                break
    with open(base + "/stat", "rb") as f:
        fields = f.read().rpartition(b")")[2].split()
    # after the command name: state is field 3, so field N is fields[N - 3]
    out["nice"], out["rt_priority"], out["policy"] = fields[19 - 3], fields[40 - 3], fields[41 - 3]
    out["session"], out["tty"] = fields[6 - 3], fields[7 - 3]
    for name in sorted(os.listdir("/proc/self/ns")):
        try:
            out["ns/" + name] = _stat_key("%s/ns/%s" % (base, name))
        except OSError as e:
            out["ns/" + name] = "unreadable (%s)" % e.strerror
    out["root"] = _stat_key(base + "/root")
    import ctypes
    attr = ctypes.create_string_buffer(64)
    rc = native.syscall("sched_getattr", pid, attr, 56, 0)
    out["sched_getattr"] = attr.raw if rc == 0 else "unreadable (%d)" % native.errno()
    rc = native.syscall("ioprio_get", 1, pid)  # IOPRIO_WHO_PROCESS: this task
    out["ioprio"] = rc if rc >= 0 else "unreadable (%d)" % native.errno()
    return out


def difference(caller, server):
    """The first thing the caller differs in, or None."""
    for key in sorted(set(caller) | set(server)):
        if key not in NOT_COMPARED and caller.get(key) != server.get(key):
            return key.replace("status ", "")
    return None


_Mapping = type(type.__dict__)


def _value(obj):
    """A comparable value of a plan's part (frozen objects, mappings, sequences)."""
    if obj is None or isinstance(obj, (str, bytes)):
        return obj
    if isinstance(obj, (bool, int, float)):
        return type(obj).__name__, obj  # True == 1 == 1.0: typed, so they differ
    if isinstance(obj, (dict, _Mapping)):
        return tuple(sorted((repr(k), _value(v)) for k, v in obj.items()))
    if isinstance(obj, (list, tuple)):
        return type(obj).__name__, tuple(_value(v) for v in obj)
    if isinstance(obj, (set, frozenset)):
        return tuple(sorted((_value(v) for v in obj), key=repr))
    fields = {}
    for cls in type(obj).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if name != "__weakref__" and hasattr(obj, name):
                fields[name] = getattr(obj, name)
    fields.update(getattr(obj, "__dict__", {}))
    return type(obj).__qualname__, tuple((k, _value(v)) for k, v in sorted(fields.items()))


def plan_key(plan):
    """What makes two plans run the same sandbox. The seccomp part by its programs (the
    policy's whole table would cost 2.5 ms to walk; the programs are what the kernel gets)."""
    parts = []
    for name in type(plan).__slots__:
        value = getattr(plan, name)
        if name == "layers":
            value = dict(value)
            part = value.pop("seccomp", None)
            if part is not None:
                terminal = part.terminal_policy
                value["seccomp"] = (part.bpf, part.extra_bpf, part.log, bool(part.listener), part.mode_before,
                                    part.filters_before, part.caps,
                                    terminal.fingerprint() if terminal is not None else None)
        parts.append((name, _value(value)))
    return tuple(parts)


class Watcher:
    """One thread for the sockets of every run going on: a client's signal goes to its
    sandbox, and its end (EOF: the client exited or was killed) kills the sandbox, as the
    end of a CLI supervisor does. (A thread per run would cost its start, ~1 ms, on each.)"""

    def __init__(self, log):
        self.log = log
        self.lock = threading.Lock()
        self.runs = {}  # fd -> ServedRun
        self.epoll = select.epoll()
        self.wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.epoll.register(self.wake[0], select.EPOLLIN)
        self.closing = False
        self.thread = threading.Thread(target=self._loop, name="pysandbox-serve-watcher", daemon=True)
        self.thread.start()

    def add(self, run):
        fd = run.conn.fileno()
        with self.lock:
            self.runs[fd] = run
        self.epoll.register(fd, select.EPOLLIN | select.EPOLLRDHUP)  # epoll: safe while _loop waits

    def remove(self, run):
        fd = run.conn.fileno()
        with self.lock:
            if self.runs.get(fd) is not run:
                return
            del self.runs[fd]
        try:
            self.epoll.unregister(fd)
        except OSError:
            pass

    def _loop(self):
        while not self.closing:
            try:
                events = self.epoll.poll()
            except InterruptedError:
                continue
            except OSError:
                return
            for fd, _mask in events:
                if fd == self.wake[0]:
                    continue
                with self.lock:
                    run = self.runs.get(fd)
                if run is None:
                    continue
                try:
                    try:
                        data = run.conn.recv(64, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        self.remove(run)
                        if not run.done:
                            run.proc.kill(signal.SIGKILL)
                    elif data[:1] == b"S" and data[1:].isdigit() and int(data[1:]) in client.FORWARDED_SIGNALS:
                        run.proc.kill(int(data[1:]))
                except Exception as e:  # this thread serves every run: it must go on
                    self.log("forwarding to a run failed: %s" % e)

    def close(self):
        self.closing = True
        os.write(self.wake[1], b"x")
        self.thread.join()
        self.epoll.close()
        for fd in self.wake:
            os.close(fd)


class ServedRun:
    """The host (sandbox/cli.py LocalHost) of one run on behalf of a client."""

    def __init__(self, server, conn, stdio, environ, caller):
        self.server, self.conn, self.stdio, self.environ = server, conn, tuple(stdio), environ
        self.caller = caller      # the caller's identity(), for the session check
        self.box_key = None
        self.proc = None
        self.done = False
        self.watched = False
        self.killed_by_shutdown = False
        self.box = None
        self.result_token = "%d-%d" % (os.getpid(), next(server.serial))  # --result's temporary file

    def err(self, message):
        # as the CLI's stderr writes it (UTF-8, backslashreplace)
        data = ("pysandbox: %s\n" % message).encode("utf-8", "backslashreplace")
        poller = select.poll()
        poller.register(self.stdio[2], select.POLLOUT)
        poller.register(self.conn.fileno(), select.POLLRDHUP)
        try:
            while data:
                # a full pipe nobody reads would hold this thread; the client's end ends the wait
                events = dict(poller.poll())
                if events.get(self.conn.fileno(), 0) & (select.POLLRDHUP | select.POLLHUP):
                    return
                if self.stdio[2] in events:
                    # POLLOUT on a pipe means PIPE_BUF bytes fit: a write of at most that never blocks
                    data = data[os.write(self.stdio[2], data[:select.PIPE_BUF]):]
        except OSError:
            pass

    def sandbox(self, profile, name, legacy, extra_seccomp):
        if not profile.namespaces.user:
            raise Declined("profile %s has no user namespace: the command would keep its starter's securebits, "
                           "which /proc does not show" % profile.name)
        if not profile.process.close_fds:
            raise Declined("profile %s passes its starter's descriptors above 2 on (close_fds = false): only 0-2 "
                           "reach the server" % profile.name)
        if not profile.process.new_session:
            own = self.server.own_identity()
            if (self.caller["session"], self.caller["tty"]) != (own["session"], own["tty"]):
                raise Declined("profile %s keeps the command in its starter's session (new_session = false), and "
                               "the caller's session is not the server's" % profile.name)
        box, self.box_key = self.server.sandbox(profile, name, legacy, extra_seccomp, self.environ)
        return box

    def started(self, proc):
        self.proc = proc
        with self.server.lock:
            stopping = self.server.stopping
            self.server.running.add(self)
        self.server.watcher.add(self)
        self.watched = True
        if stopping:  # shutdown() took its list of runs before this one started
            self.killed_by_shutdown = True
            proc.kill(signal.SIGKILL)

    @property
    def abandoned(self):
        return self.killed_by_shutdown

    def finished(self, box):
        self.box = box
        self.end()

    def end(self):
        self.done = True
        if self.watched:
            self.server.watcher.remove(self)
            self.watched = False
        with self.server.lock:
            self.server.running.discard(self)
        if self.box_key is not None:
            self.server.release(self.box_key)
            self.box_key = None


_thread_fs = threading.local()


def _own_fs():
    """Give this thread a filesystem context of its own (cwd, root, umask), once: the
    caller's directory and umask are then set per request without touching the others.
    And a session keyring of its own, empty: the sandboxes it starts inherit it, and the
    server's (the user's) must not reach a command whose caller had another one."""
    if not getattr(_thread_fs, "unshared", False):
        from . import native
        native.unshare(CLONE_FS, stage="serve")
        # keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL): a new anonymous keyring, this thread's creds only
        if native.syscall("keyctl", 1, 0) < 0:
            native.fail("serve", native.errno(), "joining a session keyring of the worker's own")
        _thread_fs.unshared = True


class Server:
    def __init__(self, path, cli, threads=8, idle_exit=None, log=None):
        # cli: sandbox.cli, handed in by its `serve` command (this module imports nothing
        # of the CLI's: the run path is the CLI's own, parse_run and run_exit_code)
        self.cli = cli
        self.path = path
        self.threads = max(1, threads)
        self.idle_exit = idle_exit
        self.log = log or (lambda message: sys.stderr.write("pysandbox serve: %s\n" % message))
        self.lock = threading.Lock()
        self.boxes = {}        # key -> [Sandbox, users, last use]
        self.making = {}       # key -> lock held while that Sandbox is made
        self.running = set()   # ServedRun of the runs going on
        self.pending = set()   # connections whose request is not read and checked yet
        self.queue = queue.SimpleQueue()
        self.idle_workers = 0
        self.active = 0
        self.last_activity = time.monotonic()
        self.workers = []
        self.extra = []
        self.listener = None
        self.inode = None
        self.stopping = False
        self.wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)  # stop() wakes the accept loop
        self.watcher = Watcher(self.log)
        self.serial = itertools.count(1)
        # What a client's proof must be. Held open: a /proc/PID inode number is given out
        # when its dentry is made, and an open file keeps the dentry (and the number).
        self.proof_fd = os.open("/proc/self/mem", os.O_RDONLY | os.O_CLOEXEC)
        self.proof_key = _fstat_key(self.proof_fd)

    def own_identity(self):
        return identity(threading.get_native_id(), "/proc/thread-self")

    # -- the socket ------------------------------------------------------------------
    def listen(self):
        directory = os.path.dirname(self.path) or "."
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass
        except OSError as e:
            raise UsageError("serve: cannot make %s: %s" % (directory, e.strerror)) from None
        st = os.lstat(directory)
        if (st.st_mode & 0o170000) != 0o040000 or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise UsageError("serve: %s must be a directory of uid %d with mode 0700 (it is %o, uid %d)"
                             % (directory, os.geteuid(), st.st_mode & 0o7777, st.st_uid))
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            probe.connect(self.path)
            raise UsageError("serve: a server already listens at %s" % self.path)
        except OSError:
            pass
        finally:
            probe.close()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        # bound under a temporary name and renamed over the path: a stale socket of a
        # killed server is replaced in one step, and no client meets a half-made one
        temporary = "%s.%d" % (self.path, os.getpid())
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        old = os.umask(0o177)
        try:
            listener.bind(temporary)
        except OSError as e:
            listener.close()
            raise UsageError("serve: cannot listen at %s: %s" % (self.path, e.strerror)) from None
        finally:
            os.umask(old)
        listener.listen(64)
        os.rename(temporary, self.path)
        self.inode = os.lstat(self.path).st_ino
        self.listener = listener

    def unlink(self):
        try:
            if os.lstat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        except OSError:
            pass

    # -- prepared sandboxes ------------------------------------------------------------
    def sandbox(self, profile, name, legacy, extra_seccomp, environ):
        """A prepared Sandbox whose plan is the one these options give now (a new one when
        none is), and its key for release()."""
        from . import plan as planner
        extra_mounts = (tuple(legacy["ro_binds"]), tuple(legacy["binds"]), tuple(legacy["tmpfs"]))
        plan = planner.build(profile, extra_mounts, extra_seccomp, environ)
        key = (profile.name, profile.sources, name, plan_key(plan))
        while True:
            with self.lock:
                entry = self.boxes.get(key)
                if entry is not None:
                    entry[1] += 1
                    entry[2] = time.monotonic()
                    return entry[0], key
                making = self.making.get(key)
                if making is None:
                    making = self.making[key] = threading.Lock()
                    making.acquire()
                    break
            with making:  # another thread makes this one: wait for it, then take it
                pass
        try:
            from .runtime import Sandbox
            box = Sandbox(profile, name=name, register=True, extra_seccomp=extra_seccomp, environ=environ, **legacy)
            try:
                box._prepare(plan)
            except BaseException:
                box.close()
                raise
            with self.lock:
                self.boxes[key] = [box, 1, time.monotonic()]
                evicted = self._evict()
        finally:
            with self.lock:
                del self.making[key]
            making.release()
        for old in evicted:
            old.close()
        return box, key

    def _evict(self):
        idle = sorted(((entry[2], key) for key, entry in self.boxes.items() if entry[1] == 0), key=lambda e: e[0])
        out = []
        while len(self.boxes) > CACHE_SIZE and idle:
            _, key = idle.pop(0)
            out.append(self.boxes.pop(key)[0])
        return out

    def release(self, key):
        with self.lock:
            entry = self.boxes.get(key)
            if entry is not None:
                entry[1] -= 1

    def warm(self, names):
        from .profile import load_profile
        for name in names:
            try:
                key = self.sandbox(load_profile(name), None, {"ro_binds": [], "binds": [], "tmpfs": []}, None,
                                   dict(os.environ))[1]
                self.release(key)
            except SandboxError as e:
                self.log("warning: not prepared ahead: %s: %s" % (name, e))

    # -- one client ----------------------------------------------------------------------
    def receive(self, conn):
        """(pid, argv, environ, stdio fds, proof fd) of one request; Declined if it is not
        one this server takes."""
        import struct
        pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        fds = []
        try:
            # read before any answer: a socket closed with a message unread resets the peer,
            # which would then never see why it was declined
            conn.settimeout(REQUEST_TIMEOUT)
            try:
                data, ancillary, flags, _ = conn.recvmsg(MAX_REQUEST, socket.CMSG_SPACE(5 * 4),
                                                         socket.MSG_CMSG_CLOEXEC)
            except socket.timeout:
                raise Declined("no request within %gs of connecting" % REQUEST_TIMEOUT) from None
            conn.settimeout(None)
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    count = len(payload) // 4
                    fds.extend(struct.unpack("%di" % count, payload[:4 * count]))
            if uid != os.geteuid():
                raise Declined("uid %d is not the server's (%d)" % (uid, os.geteuid()))
            if self.stopping:
                raise Declined("the server is stopping")
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                raise Declined("the request is larger than %d bytes or brought more than 4 descriptors" % MAX_REQUEST)
            if len(fds) not in (3, 4):
                raise Declined("the request must bring stdin, stdout and stderr (3 descriptors, got %d)" % len(fds))
            fields = data.split(b"\0")
            if fields[0] != client.MAGIC or len(fields) < 3 or not fields[2].isdigit() or len(fields[2]) > 6:
                raise Declined("not a %s request" % client.MAGIC.decode())
            argc = int(fields[2])
            argv = [os.fsdecode(f) for f in fields[3:3 + argc]]
            if len(argv) != argc or not argv or argv[0] != "run":
                raise Declined("only `pysandbox run` is served")
            environ = {}
            for item in fields[3 + argc:]:
                key, eq, value = item.partition(b"=")
                if eq:  # the first of a repeated name, as getenv(3) and os.environ take it
                    environ.setdefault(os.fsdecode(key), os.fsdecode(value))
            proof = fds.pop() if len(fds) == 4 else None
            return pid, argv[1:], environ, fds, proof
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise

    def check_caller(self, conn, pid, environ, fds, proof):
        """The caller's identity() when it may be served here (this thread then stands in
        the caller's directory and umask); Declined otherwise."""
        try:
            # an O_PATH descriptor is had without the attach-mode check: only a real open proves
            proven = proof is not None and _fstat_key(proof) == self.proof_key and \
                not fcntl.fcntl(proof, fcntl.F_GETFL) & (os.O_PATH | os.O_WRONLY)
        finally:
            if proof is not None:
                os.close(proof)
        try:
            pidfd = conn.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
        except OSError as e:
            raise Declined("the kernel cannot pin the caller (SO_PEERPIDFD: %s)" % e.strerror) from None
        cwd = None
        try:
            try:
                caller = identity(pid)
                cwd = os.open("/proc/%d/cwd" % pid, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as e:
                raise Declined("reading the caller's state: %s" % e) from None
            # The pidfd names the process that connected: alive now means /proc/PID was it.
            try:
                signal.pidfd_send_signal(pidfd, 0)
            except ProcessLookupError:
                raise Declined("the caller is gone") from None
            if caller.get("threads") != 1:
                # the peer credentials name the process; its other threads' confinement
                # (seccomp, no_new_privs, Landlock are per thread) would go unseen
                raise Declined("the caller has %s threads (the clients have one)" % caller.get("threads"))
            differs = difference(caller, self.own_identity())
            if differs is not None:
                raise Declined("the caller's %s is not the server's" % differs)
            if caller.get("status Seccomp") != ["0"]:
                raise Declined("the caller runs under a seccomp filter (filters cannot be compared)")
            if not proven:
                raise Declined("the caller could not open /proc/%d/mem: it may be in a Landlock domain (or Yama's "
                               "ptrace_scope keeps it from the server)" % os.getpid())
            for key in sorted(set(environ) | set(os.environ)):
                if (key.startswith("PYSANDBOX_") and key not in CLIENT_ONLY_KEYS) or key in CONTEXT_KEYS:
                    if environ.get(key) != os.environ.get(key):
                        raise Declined("the caller's %s is not the server's" % key)
            for fd in fds:
                if os.isatty(fd):
                    raise Declined("a terminal among stdin, stdout and stderr")
            try:
                _own_fs()
                os.fchdir(cwd)
            except (OSError, SandboxError) as e:
                raise Declined("standing in the caller's directory: %s" % e) from None
            os.umask(caller["umask"])
            return caller
        finally:
            os.close(pidfd)
            if cwd is not None:
                os.close(cwd)

    def parse(self, args):
        parsed = self.cli.parse_run(args)
        for flag in ("--help", "--tty", "--interactive"):
            if parsed.opts.get(flag):
                raise Declined("%s is answered by the CLI itself" % flag)
        return parsed

    def handle(self, conn):
        with self.lock:
            self.active += 1
            self.pending.add(conn)
        run = None
        fds = []
        try:
            try:
                pid, args, environ, fds, proof = self.receive(conn)
                caller = self.check_caller(conn, pid, environ, fds, proof)
                parsed = self.parse(args)
                run = ServedRun(self, conn, fds, environ, caller)
                with self.lock:
                    self.pending.discard(conn)
                try:
                    code = self.cli.run_exit_code(args, run, parsed)
                finally:
                    run.end()
            except Declined as e:
                if run is None or run.proc is None:
                    conn.send(b"L" + str(e).encode("utf-8", "replace"))
                return
            conn.send(b"X%d" % code)  # the server's end killed it: 125, said and recorded
            pool = getattr(run.box, "_cgroups", None)
            if pool is not None:
                pool.sweep()  # the run's cgroups now, not at the next run of this Sandbox
        except OSError as e:  # the client went away; its sandbox (if any) was killed
            if run is None:
                self.log("a request failed: %s" % e)
        except Exception as e:  # a bug of ours: the server goes on
            self.log("unexpected %s: %s (a bug of pysandbox: please report it)" % (type(e).__name__, e))
            if run is None or run.proc is None:  # nothing started: the client runs it itself
                try:
                    conn.send(b"L" + ("the server failed: %s" % e).encode("utf-8", "replace"))
                except OSError:
                    pass
        finally:
            for fd in fds:
                os.close(fd)
            with self.lock:
                self.pending.discard(conn)
                self.active -= 1
                self.last_activity = time.monotonic()
            conn.close()
            if getattr(_thread_fs, "unshared", False):
                try:
                    os.chdir("/")  # the caller's directory is not held past its run
                except OSError:
                    pass

    def _worker(self):
        while True:
            with self.lock:
                self.idle_workers += 1
            conn = self.queue.get()
            with self.lock:
                self.idle_workers -= 1
            if conn is None:
                return
            self.handle(conn)

    def dispatch(self, conn):
        """A kept worker thread (its zygote stays warm) when one is idle, else a thread of its own."""
        with self.lock:
            idle = self.idle_workers > self.queue.qsize()
        self.extra = [t for t in self.extra if t.is_alive()]
        if idle or len(self.extra) >= MAX_EXTRA_THREADS:
            self.queue.put(conn)  # beyond the cap a request waits for a worker
            return
        thread = threading.Thread(target=self.handle, args=(conn,), name="pysandbox-serve-extra")
        thread.start()
        self.extra.append(thread)

    # -- the loop --------------------------------------------------------------------------
    def stop(self):
        """Ask serve_forever to end (from a signal handler or another thread)."""
        self.stopping = True
        try:
            os.write(self.wake[1], b"x")
        except OSError:
            pass

    def serve_forever(self):
        previous = {}
        if threading.current_thread() is threading.main_thread():
            def on_signal(_sig, _frame):
                self.stop()
            previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        for _ in range(self.threads):
            thread = threading.Thread(target=self._worker, name="pysandbox-serve-worker")
            thread.start()
            self.workers.append(thread)
        try:
            while not self.stopping:
                ready, _, _ = select.select([self.listener, self.wake[0]], [], [], 1.0)
                if self.listener in ready and not self.stopping:
                    try:
                        conn, _ = self.listener.accept()
                    except OSError:
                        continue
                    with self.lock:
                        self.last_activity = time.monotonic()
                    self.dispatch(conn)
                if self.idle_exit is not None:
                    with self.lock:
                        idle = self.active == 0 and time.monotonic() - self.last_activity >= self.idle_exit
                    if idle:
                        self.log("no run for %gs: stopping" % self.idle_exit)
                        break
        finally:
            self.shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    def shutdown(self):
        """Stop listening, end the runs going on (a request not started yet is declined),
        close every prepared Sandbox (their cgroups made ahead go with them)."""
        with self.lock:
            self.stopping = True
            running = list(self.running)
            pending = list(self.pending)
        self.unlink()
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        for run in running:
            proc = run.proc
            with proc._signal_lock:  # a run whose PID 1 is reaped has its own status
                if proc.result is None and not proc._pid1_reaped:
                    run.killed_by_shutdown = True
                    proc.kill(signal.SIGKILL)
        for conn in pending:  # a silent client's recvmsg returns; the rest see `stopping`
            try:
                conn.shutdown(socket.SHUT_RD)
            except OSError:
                pass
        for _ in self.workers:
            self.queue.put(None)
        for thread in self.workers + self.extra:
            thread.join()
        self.workers, self.extra = [], []
        with self.lock:
            boxes, self.boxes = [entry[0] for entry in self.boxes.values()], {}
        for box in boxes:
            box.close()
        for fd in self.wake:
            try:
                os.close(fd)
            except OSError:
                pass
        self.wake = (-1, -1)
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None
        if self.proof_fd is not None:
            os.close(self.proof_fd)
            self.proof_fd = None


def main(cli, path=None, threads=8, idle_exit=None, warm=None):
    if threads is not None and threads < 1:
        raise UsageError("serve: --threads must be at least 1, got %d" % threads)
    if idle_exit is not None and not idle_exit > 0:
        raise UsageError("serve: --idle-exit must be a positive number of seconds, got %g" % idle_exit)
    server = Server(path or client.socket_path(), cli, threads, idle_exit)
    from . import cgroup
    cgroup.gc()
    server.listen()
    try:
        server.warm(warm or ["strict"])
    except BaseException:
        server.shutdown()
        raise
    server.log("listening at %s (pid %d): `pysandbox run` of uid %d hands its runs here; SIGTERM or ^C stops it"
               % (server.path, os.getpid(), os.geteuid()))
    return server.serve_forever()
