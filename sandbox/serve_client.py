"""The client half of `pysandbox serve`: hand one `pysandbox run` to the warm server.

The launcher calls `hand_over(args)` before it imports anything else of pysandbox: this
module reads only builtin modules (posix, sys, _socket, _signal; not `os`, whose import
costs ~2 ms of a 30 ms start), so a CLI start with no server pays one stat. With a server listening, the client sends its arguments, its
environment and its directory, and passes its stdin, stdout and stderr as descriptors
(SCM_RIGHTS); the server runs the sandbox with exactly those and replies with the exit
status. Signals the client gets (INT, TERM, HUP, QUIT) go to the sandbox as they would
from the CLI; the client's death closes the socket and the server kills the sandbox.

The server may answer "run it yourself" before it starts anything (a caller that does
not look exactly like it, a terminal, an option it does not take over): the CLI then
runs the sandbox in this process, as it does without a server. PYSANDBOX_SERVE=off
never asks; =require fails (125) instead of running locally.

Wire format, one SOCK_SEQPACKET message each way per step:
  client -> server  MAGIC NUL cwd NUL argc NUL argv... NUL env "K=V"...   + fds 0, 1, 2, proof
  client -> server  b"S" signal number            (any number of times during the run)
  server -> client  b"L" reason                   (nothing was started: run it yourself)
  server -> client  b"X" exit status              (the run is over)

`proof` is /proc/SERVER/mem opened by the client (the server's pid from SO_PEERCRED,
which also shows the listener is this user's): Landlock refuses a confined process that
attach-mode ptrace open of a process outside its domain, so a client in a Landlock domain
cannot send it, and the server declines a caller that could be in one without it. The cwd field is informative: the server takes the
directory from /proc/PID/cwd.
"""
import posix
import sys

MAGIC = b"pysandbox-serve/1"
MODES = ("auto", "off", "require")
FORWARDED_SIGNALS = (2, 15, 1, 3)  # SIGINT, SIGTERM, SIGHUP, SIGQUIT: what the CLI forwards
MAX_REPLY = 4096
EXIT_SETUP = 125  # = sandbox.errors.EXIT_SETUP (not imported: this module stays builtin-only)


def _getenv(name, default=None):
    """os.environ.get without importing os."""
    value = posix.environ.get(name.encode())
    return default if value is None else value.decode("utf-8", "surrogateescape")


def socket_path(environ=None):
    """Where the calling user's server listens: PYSANDBOX_SERVE_SOCKET, else root's
    /run/pysandbox/serve.sock, a user's $XDG_RUNTIME_DIR/pysandbox/serve.sock, or
    /tmp/pysandbox-serve-UID/serve.sock without XDG_RUNTIME_DIR."""
    get = _getenv if environ is None else environ.get
    explicit = get("PYSANDBOX_SERVE_SOCKET")
    if explicit:
        return explicit
    uid = posix.geteuid()
    if uid == 0:
        return "/run/pysandbox/serve.sock"
    runtime = get("XDG_RUNTIME_DIR")
    if runtime and runtime.startswith("/"):
        return runtime.rstrip("/") + "/pysandbox/serve.sock"
    return "/tmp/pysandbox-serve-%d/serve.sock" % uid


def private_socket(path):
    """None when `path` is a socket of this user's in a directory only this user can enter
    (another user could otherwise stand in for the server and get the command's stdio),
    else why not."""
    uid = posix.geteuid()
    try:
        st = posix.lstat(path)
    except OSError:
        return "no server listens at %s" % path
    if (st.st_mode & 0o170000) != 0o140000 or st.st_uid != uid:
        return "%s is not a socket of uid %d" % (path, uid)
    directory = path.rpartition("/")[0] or ("/" if path.startswith("/") else ".")
    try:
        st = posix.lstat(directory)
    except OSError as e:
        return "%s: %s" % (directory, e.strerror)
    if (st.st_mode & 0o170000) != 0o040000 or st.st_uid != uid or st.st_mode & 0o077:
        return "%s is not a directory of uid %d closed to everyone else (mode 0700)" % (directory, uid)
    return None


def _ucred(data):
    """(pid, uid, gid) of a struct ucred."""
    return tuple(int.from_bytes(data[i:i + 4], sys.byteorder, signed=True) for i in (0, 4, 8))


def _fail(message):
    posix.write(2, ("pysandbox: serve: %s\n" % message).encode("utf-8", "replace"))
    posix._exit(EXIT_SETUP)


def hand_over(args):
    """Run `pysandbox run ARGS` through the server and exit with its status; return (to
    run it here) when there is no server or it declines."""
    mode = _getenv("PYSANDBOX_SERVE", "auto") or "off"
    if mode not in MODES:
        _fail("PYSANDBOX_SERVE must be auto, off or require, got %r" % mode)
    if mode == "off":
        return
    reason = _hand_over(args)
    if mode == "require":
        _fail("not served: %s" % reason)


def _hand_over(args):
    path = socket_path()
    reason = private_socket(path)
    if reason:
        return reason
    for fd in (0, 1, 2):
        try:
            posix.fstat(fd)  # isatty says False for a closed one; the socket would then take its number
        except OSError:
            return "fd %d is closed" % fd
        if posix.isatty(fd):
            # the server cannot be the terminal's foreground: the CLI relays it here
            return "fd %d is a terminal" % fd
    import _socket
    import _signal
    try:
        cwd = posix.getcwdb()
    except OSError as e:
        return "the current directory: %s" % e.strerror
    fields = [MAGIC, cwd, b"%d" % (len(args) + 1), b"run"]
    fields += [a.encode("utf-8", "surrogateescape") for a in args]  # os.fsencode in -I (UTF-8 mode)
    fields += [k + b"=" + v for k, v in posix.environ.items()]
    if any(b"\0" in f for f in fields):
        return "a NUL byte in the arguments"
    request = b"\0".join(fields)
    conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    try:
        conn.connect(path)
        server_pid, server_uid, _ = _ucred(conn.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12))
    except OSError as e:
        conn.close()
        return "%s: %s" % (path, e.strerror)
    if server_uid != posix.geteuid():  # the path was swapped after the check: not ours
        conn.close()
        return "%s is served by uid %d" % (path, server_uid)
    try:
        proof = posix.open("/proc/%d/mem" % server_pid, posix.O_RDONLY | posix.O_CLOEXEC)
    except OSError:
        proof = None  # the server says why it declines
    caught = []

    def forward(sig, _frame):
        caught.append(sig)
        try:
            conn.send(b"S%d" % sig)
        except OSError:
            pass
    # Before the request: a signal that comes before the sandbox starts waits in the
    # socket and reaches it as soon as it runs.
    previous = [(sig, _signal.signal(sig, forward)) for sig in FORWARDED_SIGNALS]
    fds = (0, 1, 2) if proof is None else (0, 1, 2, proof)
    try:
        conn.sendmsg([request], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                                  b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds))])
        reply = conn.recv(MAX_REPLY)
    except OSError as e:
        # EMSGSIZE: arguments and environment larger than one message; ECONNRESET: the
        # server closed without reading the request (it ended meanwhile): nothing ran
        reply = b"L" + ("sending the request: %s" % e.strerror).encode()
    finally:
        if proof is not None:
            posix.close(proof)
    if reply[:1] == b"X" and reply[1:].isdigit():
        posix._exit(int(reply[1:]))
    if not reply:
        _fail("the server ended during the run (its sandbox was killed with it)")
    if reply[:1] != b"L":
        _fail("the server sent %r, not an exit status" % reply[:40])
    for sig, handler in previous:
        _signal.signal(sig, handler)
    conn.close()
    if caught:
        posix._exit(128 + caught[0])  # interrupted before anything ran
    return reply[1:].decode("utf-8", "replace")
