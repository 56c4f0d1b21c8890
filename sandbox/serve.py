"""`pysandbox serve`: a warm per-user server for `pysandbox run`.

A CLI start spends most of its time before the sandbox: the interpreter, the imports, the
profile, the plan (mount operations, the compiled seccomp filter, the cgroup set). The
server does that once and keeps, per set of options, a prepared `Sandbox` (its plan, its
pool of cgroups made ahead, its threads' zygotes). Each run still gets fresh namespaces,
cgroups and processes: the server changes where the preparation happens, not what a run
shares with the one before (nothing).

Who is served. The socket lives in a directory of the user's own, mode 0700, and the
server checks the connecting process itself (SO_PEERPIDFD pins it; /proc tells its
state): it must be this user and look exactly like the server in everything a sandbox
would inherit from the process that starts it — ids and groups, capability sets,
no_new_privs and seccomp (a confined caller must not shed its confinement by asking),
namespaces, cgroups, resource limits, umask, nice and scheduler, CPU and memory
affinity, personality, LSM label — and in the environment pysandbox
reads itself (PYSANDBOX_*, HOME, XDG_CACHE_HOME, XDG_RUNTIME_DIR). Anything else is
declined before anything starts, and the client runs the sandbox itself. What the
server does not compare: ioprio and the timer slack (no /proc view), and a Landlock
domain of the caller's (the kernel does not show one; a Landlock domain needs
no_new_privs or CAP_SYS_ADMIN, and a caller with no_new_privs is declined unless the
server has it too).

The wire format is in sandbox/serve_client.py.
"""
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
from .errors import SandboxError, UsageError, EXIT_SETUP

SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)  # Linux 6.5
MAX_REQUEST = 1 << 20
CACHE_SIZE = 16           # prepared Sandboxes kept; the least recently used idle one goes
# The environment pysandbox reads for itself (profile search path, caches, state, the
# init and stager switches): a caller with other values would get another sandbox.
CONTEXT_KEYS = ("HOME", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR")
CLIENT_ONLY_KEYS = ("PYSANDBOX_SERVE", "PYSANDBOX_SERVE_SOCKET")
# /proc/PID/status lines a sandbox inherits from the process that starts it. Not the
# signal dispositions and mask: the command starts with every signal at its default and
# none blocked, whoever starts it (the "signals" stage).
STATUS_FIELDS = ("Uid", "Gid", "Groups", "Umask", "NoNewPrivs", "Seccomp", "Seccomp_filters", "CapInh",
                 "CapPrm", "CapEff", "CapBnd", "CapAmb", "Cpus_allowed", "Mems_allowed")


class Declined(Exception):
    """The caller runs this one itself; nothing was started."""


def identity(pid, proc="/proc"):
    """{what: value} of everything a sandbox started by process `pid` would inherit."""
    base = "%s/%s" % (proc, pid)
    out = {}
    with open(base + "/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in STATUS_FIELDS:
                out[key] = value.split() if key == "Groups" else value.strip()
    for name in ("limits", "cgroup", "oom_score_adj", "personality", "attr/current"):
        try:
            with open("%s/%s" % (base, name), "rb") as f:
                out[name] = f.read()
        except OSError as e:
            out[name] = "unreadable (%s)" % e.strerror
    with open(base + "/stat", "rb") as f:
        fields = f.read().rpartition(b")")[2].split()
    # after the command name: state is field 3, so field N is fields[N - 3]
    out["nice"], out["rt_priority"], out["policy"] = fields[19 - 3], fields[40 - 3], fields[41 - 3]
    for name in sorted(os.listdir("/proc/self/ns")):
        try:
            st = os.stat("%s/ns/%s" % (base, name))
            out["ns/" + name] = (st.st_dev, st.st_ino)
        except OSError as e:
            out["ns/" + name] = "unreadable (%s)" % e.strerror
    return out


def difference(caller, server):
    """The first thing the caller differs in, or None."""
    for key in server:
        if caller.get(key) != server[key]:
            return key
    return None


class Watcher:
    """One thread for the sockets of every run going on: a client's signal goes to its
    sandbox, and its end (EOF: the client exited or was killed) kills the sandbox, as the
    end of a CLI supervisor does. (A thread per run would cost its start, ~1 ms, on each.)"""

    def __init__(self):
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
                    data = run.conn.recv(64, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                try:
                    if not data:
                        self.remove(run)
                        if not run.done:
                            run.proc.kill(signal.SIGKILL)
                    elif data[:1] == b"S" and data[1:].isdigit() and int(data[1:]) in client.FORWARDED_SIGNALS:
                        run.proc.kill(int(data[1:]))
                except Exception as e:  # this thread serves every run: it must go on
                    run.server.log("forwarding to a run failed: %s" % e)

    def close(self):
        self.closing = True
        os.write(self.wake[1], b"x")
        self.thread.join()
        self.epoll.close()
        for fd in self.wake:
            os.close(fd)


class ServedRun:
    """The host (sandbox/cli.py LocalHost) of one run on behalf of a client."""

    def __init__(self, server, conn, stdio, environ):
        self.server, self.conn, self.stdio, self.environ = server, conn, tuple(stdio), environ
        self.box_key = None
        self.proc = None
        self.done = False
        self.watched = False
        self.result_token = "%d-%d" % (os.getpid(), next(server.serial))  # --result's temporary file

    def err(self, message):
        data = ("pysandbox: %s\n" % message).encode("utf-8", "surrogateescape")
        try:
            while data:
                data = data[os.write(self.stdio[2], data):]
        except OSError:
            pass

    def sandbox(self, profile, name, legacy, extra_seccomp):
        box, self.box_key = self.server.sandbox(profile, name, legacy, extra_seccomp, self.environ)
        return box

    def started(self, proc):
        self.proc = proc
        self.server.running.add(proc)
        self.server.watcher.add(self)
        self.watched = True

    def finished(self, box):
        self.end()

    def end(self):
        self.done = True
        if self.watched:
            self.server.watcher.remove(self)
            self.watched = False
        if self.proc is not None:
            self.server.running.discard(self.proc)
        if self.box_key is not None:
            self.server.release(self.box_key)
            self.box_key = None


class Server:
    def __init__(self, path, threads=8, idle_exit=None, log=None):
        self.path = path
        self.threads = max(1, threads)
        self.idle_exit = idle_exit
        self.log = log or (lambda message: sys.stderr.write("pysandbox serve: %s\n" % message))
        self.lock = threading.Lock()
        self.boxes = {}        # key -> [Sandbox, users, last use]
        self.running = set()   # SandboxProcess of the runs going on
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
        self.watcher = Watcher()
        self.serial = itertools.count(1)

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
        """A prepared Sandbox for these options and this caller's environment (made, and
        its plan built, on first use), and its key for release()."""
        from .plan import environment_of
        env = environment_of(profile.environment, environ)
        key = (profile.name, profile.sources, profile._state, name,
               tuple((k, tuple(v)) for k, v in sorted(legacy.items())), repr(extra_seccomp),
               tuple(sorted(env.items())))
        with self.lock:
            entry = self.boxes.get(key)
            if entry is None:
                from .runtime import Sandbox
                box = Sandbox(profile, name=name, register=True, extra_seccomp=extra_seccomp, environ=environ,
                              **legacy)
                try:
                    box.plan()  # here, once: Sandbox.plan() is not made for racing first uses
                except BaseException:
                    box.close()
                    raise
                entry = self.boxes[key] = [box, 0, 0.0]
            entry[1] += 1
            entry[2] = time.monotonic()
            evicted = self._evict()
        for box in evicted:
            box.close()
        return entry[0], key

    def _evict(self):
        idle = sorted((entry[2], key) for key, entry in self.boxes.items() if entry[1] == 0)
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
        """(pidfd, cwd, argv, environ, stdio fds) of one request; Declined if it is not one
        this server takes."""
        import struct
        pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        fds = []
        try:
            # read before any answer: a socket closed with a message unread resets the peer,
            # which would then never see why it was declined
            data, ancillary, flags, _ = conn.recvmsg(MAX_REQUEST, socket.CMSG_SPACE(4 * 4), socket.MSG_CMSG_CLOEXEC)
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    count = len(payload) // 4
                    fds.extend(struct.unpack("%di" % count, payload[:4 * count]))
            if uid != os.geteuid():
                raise Declined("uid %d is not the server's (%d)" % (uid, os.geteuid()))
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                raise Declined("the request is larger than %d bytes or brought more than 3 descriptors" % MAX_REQUEST)
            if len(fds) != 3:
                raise Declined("the request must bring stdin, stdout and stderr (3 descriptors, got %d)" % len(fds))
            fields = data.split(b"\0")
            if fields[0] != client.MAGIC or len(fields) < 3 or not fields[2].isdigit():
                raise Declined("not a %s request" % client.MAGIC.decode())
            argc = int(fields[2])
            argv = [os.fsdecode(f) for f in fields[3:3 + argc]]
            if len(argv) != argc or not argv or argv[0] != "run":
                raise Declined("only `pysandbox run` is served")
            environ = {}
            for item in fields[3 + argc:]:
                key, eq, value = item.partition(b"=")
                if eq:
                    environ[os.fsdecode(key)] = os.fsdecode(value)
            return pid, os.fsdecode(fields[1]), argv[1:], environ, fds
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise

    def check_caller(self, conn, pid, cwd, environ, fds):
        try:
            pidfd = conn.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
        except OSError as e:
            raise Declined("the kernel cannot pin the caller (SO_PEERPIDFD: %s)" % e.strerror) from None
        try:
            try:
                caller = identity(pid)
                own = identity("self")
                caller_cwd, given_cwd = os.stat("/proc/%d/cwd" % pid), os.stat(cwd)
            except OSError as e:
                raise Declined("reading the caller's state: %s" % e) from None
            # The pidfd names the process that connected: alive now means /proc/PID was it.
            try:
                signal.pidfd_send_signal(pidfd, 0)
            except ProcessLookupError:
                raise Declined("the caller is gone") from None
        finally:
            os.close(pidfd)
        differs = difference(caller, own)
        if differs is not None:
            raise Declined("the caller's %s is not the server's" % differs)
        if (caller_cwd.st_dev, caller_cwd.st_ino) != (given_cwd.st_dev, given_cwd.st_ino):
            raise Declined("the caller's directory is not %s" % cwd)
        for key in sorted(set(environ) | set(os.environ)):
            if (key.startswith("PYSANDBOX_") and key not in CLIENT_ONLY_KEYS) or key in CONTEXT_KEYS:
                if environ.get(key) != os.environ.get(key):
                    raise Declined("the caller's %s is not the server's" % key)
        for fd in fds:
            if os.isatty(fd):
                raise Declined("a terminal among stdin, stdout and stderr")

    def parse(self, args, cwd):
        """`run`'s arguments with every relative path made absolute against the caller's
        directory (the CLI makes them absolute against its own)."""
        from . import cli
        parsed = cli.parse_run(args)
        opts = parsed.opts
        for flag in ("--help", "--tty", "--interactive"):
            if opts.get(flag):
                raise Declined("%s is answered by the CLI itself" % flag)

        def absolute(path):
            return path if path.startswith("/") else os.path.join(cwd, path)
        for flag in ("--rootfs", "--seccomp", "--result"):
            if flag in opts:
                opts[flag] = absolute(opts[flag])
        profile = opts.get("--profile")
        if profile is not None and ("/" in profile or profile.endswith(".toml")):
            opts["--profile"] = absolute(profile)
        mounts = []
        for kind, spec in parsed.mounts:
            if kind != "tmpfs" and spec and not spec.startswith("/"):
                if ":" in cwd:
                    raise Declined("a relative bind source under a directory with ':' in its name")
                spec = absolute(spec)
            mounts.append((kind, spec))
        parsed.mounts = mounts
        return parsed

    def handle(self, conn):
        with self.lock:
            self.active += 1
        run = None
        fds = []
        try:
            try:
                pid, cwd, args, environ, fds = self.receive(conn)
                self.check_caller(conn, pid, cwd, environ, fds)
                parsed = self.parse(args, cwd)
            except Declined as e:
                conn.send(b"L" + str(e).encode("utf-8", "replace"))
                return
            from . import cli
            run = ServedRun(self, conn, fds, environ)
            try:
                code = cli.run_exit_code(args, run, parsed)
            finally:
                run.end()
            if self.stopping:
                # killed by the server's end, not by anything of the command's: no status
                # (the client says the server ended and exits 125)
                return
            conn.send(b"X%d" % code)
        except OSError as e:  # the client went away; its sandbox (if any) was killed
            if run is None:
                self.log("a request failed: %s" % e)
        except Exception as e:  # a bug of ours: the server goes on
            self.log("unexpected %s: %s (a bug of pysandbox: please report it)" % (type(e).__name__, e))
        finally:
            for fd in fds:
                os.close(fd)
            conn.close()
            with self.lock:
                self.active -= 1
                self.last_activity = time.monotonic()

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
        if idle:
            self.queue.put(conn)
            return
        thread = threading.Thread(target=self.handle, args=(conn,), name="pysandbox-serve-extra")
        thread.start()
        self.extra = [t for t in self.extra if t.is_alive()] + [thread]

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
                if self.listener in ready:
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
        """Stop listening, end the runs going on, close every prepared Sandbox (their
        cgroups made ahead go with them)."""
        self.stopping = True
        self.unlink()
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        for proc in list(self.running):
            proc.kill(signal.SIGKILL)
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


def main(path=None, threads=8, idle_exit=None, warm=None):
    if threads is not None and threads < 1:
        raise UsageError("serve: --threads must be at least 1, got %d" % threads)
    if idle_exit is not None and not idle_exit > 0:
        raise UsageError("serve: --idle-exit must be a positive number of seconds, got %g" % idle_exit)
    server = Server(path or client.socket_path(), threads, idle_exit)
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
