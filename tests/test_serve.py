"""`pysandbox serve`: a run handed over to the warm server is the run the CLI would have
made (status, stdio, relative paths, the caller's environment, signals, fresh namespaces),
a caller that differs from the server in anything a sandbox inherits is declined before
anything starts and runs locally, another user is never served, and nothing outlives the
server or its clients. Both clients: the C `pysandbox` and the Python one (sandbox.cli's
entry, what pip's console script runs)."""
import os
import pwd
import signal
import socket
import subprocess
import sys
import time

import pytest

from util import ROOT, processes_with, pysandbox_cmd, wait_until

PY_CLIENT = [sys.executable, "-I", "-c", "from sandbox.cli import entry; entry()"]


def c_client():
    """The installed `pysandbox`: the C client when setup.sh could build it."""
    cmd = pysandbox_cmd()
    with open(cmd[0], "rb") as f:
        if f.read(4) != b"\x7fELF":
            pytest.fail("%s is not the C client (setup.sh builds it from sandbox/client.c)" % cmd[0])
    return cmd


class Server:
    def __init__(self, directory, env=None, cwd=None, new_session=False):
        self.path = os.path.join(str(directory), "srv", "serve.sock")
        self.env = dict(os.environ, PYSANDBOX_SERVE_SOCKET=self.path, PYSANDBOX_SERVE="require")
        self.env.pop("PYSANDBOX_PROFILE_PATH", None)
        server_env = dict(self.env, **(env or {}))
        self.proc = subprocess.Popen(pysandbox_cmd() + ["serve", "--socket", self.path, "--threads", "2"],
                                     env=server_env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, cwd=cwd, start_new_session=new_session)
        lines = []
        for _ in range(8):  # warnings first (a profile it could not prepare ahead), then this
            lines.append(self.proc.stderr.readline())
            if "listening at %s" % self.path in lines[-1] or not lines[-1]:
                break
        assert "listening at %s" % self.path in lines[-1], "".join(lines) + self.proc.stderr.read()

    def run(self, *args, client=None, env=None, cwd=None, timeout=60, **kwargs):
        return subprocess.run((client or pysandbox_cmd()) + ["run"] + list(args), env=dict(self.env, **(env or {})),
                              cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                              **kwargs)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out = self.proc.communicate(timeout=60)[1]
        return self.proc.returncode, out


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path)
    yield srv
    code, err = srv.stop()
    assert code == 0, err
    assert not os.path.exists(srv.path), "the socket outlived its server"


def start_sleeper(env, strict, marker):
    """A served `sleep MARKER` in strict, once it runs (its first line read)."""
    client = subprocess.Popen(c_client() + ["run", "--profile", strict, "--", "/bin/sh", "-c",
                                            "echo ready; exec sleep %s" % marker],
                              env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    assert client.stdout.readline() == "ready\n"
    return client


@pytest.mark.parametrize("client", ["c", "python"])
def test_a_served_run_is_the_run_the_cli_makes(server, strict, tmp_path, client):
    cmd = c_client() if client == "c" else PY_CLIENT
    proc = server.run("--profile", strict, "--", "/bin/sh", "-c", "echo out; echo err >&2; exit 3", client=cmd)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "out\n", "err\n")
    # every run gets fresh namespaces
    seen = set()
    for _ in range(2):
        proc = server.run("--profile", strict, "--", "/bin/readlink", "/proc/self/ns/net", "/proc/self/ns/pid",
                          client=cmd)
        assert proc.returncode == 0, proc.stderr
        seen.add(proc.stdout)
    host = "%s\n%s\n" % (os.readlink("/proc/self/ns/net"), os.readlink("/proc/self/ns/pid"))
    assert len(seen) == 2 and host not in seen
    # relative paths are the caller's: --result, a bind source, a profile file
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x").write_text("bound\n")
    (tmp_path / "p.toml").write_text('extends = "%s"\n' % strict)
    proc = server.run("--profile", "p.toml", "--result", "r.json", "--ro-bind", "data:/data", "--",
                      "/bin/cat", "/data/x", client=cmd, cwd=str(tmp_path))
    assert (proc.returncode, proc.stdout) == (0, "bound\n"), proc.stderr
    import json
    verdict = json.loads((tmp_path / "r.json").read_text())
    assert verdict["exit_code"] == 0 and verdict["reason"] == "exit"
    assert [n for n in os.listdir(tmp_path) if n.endswith(".tmp")] == []
    # pysandbox's own errors are told apart from the command's, as from the CLI
    proc = server.run("--ro-bind", ":/x", "--", "true", client=cmd, cwd=str(tmp_path))
    assert proc.returncode == 125 and "empty bind source" in proc.stderr, proc.stderr
    proc = server.run("--memory", "lots", "--", "true", client=cmd)
    assert proc.returncode == 125 and proc.stderr.startswith("pysandbox: --memory: expected a size such as 64M")
    assert proc.stderr.count("\n") == 1
    proc = server.run("--profile", strict, "--", "/no/such/command", client=cmd)
    assert proc.returncode == 127, proc.stderr


def test_the_command_gets_the_callers_environment_not_the_servers(tmp_path, strict):
    srv = Server(tmp_path, env={"ONLY_THE_SERVER": "s"})
    try:
        (tmp_path / "env.toml").write_text('extends = "%s"\n[environment]\nclear = false\n' % strict)
        proc = srv.run("--profile", str(tmp_path / "env.toml"), "--env", "GIVEN=g", "--", "/bin/sh", "-c",
                       'echo "$ONLY_THE_CALLER,$ONLY_THE_SERVER,$GIVEN"', env={"ONLY_THE_CALLER": "c"})
        assert (proc.returncode, proc.stdout) == (0, "c,,g\n"), proc.stderr
    finally:
        assert srv.stop()[0] == 0


def test_a_changed_profile_is_seen_by_the_next_run(server, strict, tmp_path):
    profile = tmp_path / "p.toml"
    for value in ("one", "two"):
        profile.write_text('extends = "%s"\n[environment]\nset = { WHICH = "%s" }\n' % (strict, value))
        proc = server.run("--profile", str(profile), "--", "/bin/sh", "-c", "echo $WHICH")
        assert (proc.returncode, proc.stdout) == (0, value + "\n"), proc.stderr


def test_a_changed_host_is_seen_by_the_next_run(server, strict, tmp_path):
    """A prepared Sandbox captured its bind sources and filters when it was made: a run
    after a change gets the plan the CLI would build now, never the stale one."""
    for version in ("v1", "v2"):
        (tmp_path / version).mkdir()
        (tmp_path / version / "x").write_text(version + "\n")
    policy = tmp_path / "pol.json"
    for version, denied in (("v1", False), ("v2", True)):
        link = tmp_path / "cur"
        if link.is_symlink():
            link.unlink()
        link.symlink_to(version)
        policy.write_text('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["%s"], "action": '
                          '"SCMP_ACT_ERRNO"}]}' % ("uname" if denied else "reboot"))
        proc = server.run("--profile", strict, "--ro-bind", "cur:/d", "--seccomp", "pol.json", "--", "/bin/sh", "-c",
                          "cat /d/x; uname -n >/dev/null && echo uname", cwd=str(tmp_path))
        assert proc.stdout == version + "\n" + ("" if denied else "uname\n"), proc.stderr


def test_relative_paths_are_the_callers_everywhere(tmp_path, strict):
    """The server's worker stands in the caller's directory: a relative PYSANDBOX_PROFILE_PATH
    (equal as text in both, other directories in fact) finds the caller's profile."""
    for who in ("server", "caller"):
        (tmp_path / who / "profs").mkdir(parents=True)
        (tmp_path / who / "profs" / "which.toml").write_text(
            'extends = "%s"\n[environment]\nset = { WHICH = "%s" }\n' % (strict, who))
    srv = Server(tmp_path, env={"PYSANDBOX_PROFILE_PATH": "profs"}, cwd=str(tmp_path / "server"))
    try:
        proc = srv.run("--profile", "which", "--", "/bin/sh", "-c", "echo $WHICH; umask",
                       env={"PYSANDBOX_PROFILE_PATH": "profs"}, cwd=str(tmp_path / "caller"))
        assert (proc.returncode, proc.stdout) == (0, "caller\n0022\n"), proc.stderr
        # the caller's umask, for the command and for what the server writes for it
        proc = subprocess.run(["/bin/sh", "-c", 'umask 077; exec "$@"', "sh"] + c_client() + [
            "run", "--profile", "which", "--result", "r.json", "--", "/bin/sh", "-c", "umask"],
            env=dict(srv.env, PYSANDBOX_PROFILE_PATH="profs"), cwd=str(tmp_path / "caller"),
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        assert (proc.returncode, proc.stdout) == (0, "0077\n"), proc.stderr
        assert os.stat(tmp_path / "caller" / "r.json").st_mode & 0o777 == 0o600
    finally:
        assert srv.stop()[0] == 0


def test_a_profile_that_keeps_the_session_needs_the_callers_session(tmp_path, strict):
    """permissive keeps its command in its starter's session (new_session = false): served,
    that would be the server's session and terminal."""
    srv = Server(tmp_path, new_session=True)
    try:
        (tmp_path / "keep.toml").write_text('extends = "%s"\n[process]\nnew_session = false\n' % strict)
        proc = srv.run("--profile", str(tmp_path / "keep.toml"), "--", "/bin/true")
        assert proc.returncode == 125 and "new_session = false" in proc.stderr, proc.stderr
        # and one without a user namespace keeps its starter's securebits, which /proc does not show
        (tmp_path / "nouser.toml").write_text('extends = "%s"\n[namespaces]\nuser = false\n' % strict)
        proc = srv.run("--profile", str(tmp_path / "nouser.toml"), "--", "/bin/true")
        why = "no user namespace" if ROOT else "without a user namespace the sandbox needs host root"
        assert proc.returncode == 125 and why in proc.stderr, proc.stderr
    finally:
        assert srv.stop()[0] == 0


def test_a_profile_that_keeps_descriptors_is_not_served(server, strict, tmp_path):
    (tmp_path / "keep.toml").write_text('extends = "%s"\n[process]\nclose_fds = false\n' % strict)
    proc = server.run("--profile", str(tmp_path / "keep.toml"), "--", "/bin/true")
    assert proc.returncode == 125 and "close_fds = false" in proc.stderr, proc.stderr


def test_a_caller_with_threads_is_not_served(server):
    """The peer credentials name the process: another thread's seccomp, no_new_privs or
    Landlock would go unseen, so only a single-threaded caller is served."""
    probe = ("import os, socket, sys, threading, time\n"
             "threading.Thread(target=time.sleep, args=(5,), daemon=True).start()\n"
             "s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.connect(sys.argv[1])\n"
             "pid = int.from_bytes(s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)[:4], sys.byteorder)\n"
             "proof = os.open('/proc/%d/mem' % pid, os.O_RDONLY)\n"
             "fds = b''.join(fd.to_bytes(4, sys.byteorder) for fd in (0, 1, 2, proof))\n"
             "s.sendmsg([b'pysandbox-serve/1\\0/\\x002\\0run\\0/bin/true'], "
             "[(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])\n"
             "print(s.recv(4096).decode())\n")
    proc = subprocess.run([sys.executable, "-I", "-c", probe, server.path], env=server.env, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.stdout.startswith("Lthe caller has 2 threads"), proc.stdout + proc.stderr


def test_a_zygote_does_not_hold_a_callers_directory(server, strict, tmp_path):
    """A worker thread's zygote (from its second run on) outlives the run that started it,
    in that caller's directory: it must hold none (the stager's zygote mode chdirs to /)."""
    (tmp_path / "here").mkdir()
    for _ in range(6):
        proc = server.run("--profile", strict, "--", "/bin/true", cwd=str(tmp_path / "here"))
        assert proc.returncode == 0, proc.stderr
    # every run is over: the server's children now are its workers' zygotes
    zygotes = []
    for pid in os.listdir("/proc"):
        try:
            with open("/proc/%s/stat" % pid) as f:
                ppid = int(f.read().rpartition(")")[2].split()[1])
            if ppid == server.proc.pid:
                zygotes.append(os.readlink("/proc/%s/cwd" % pid))
        except (OSError, ValueError):
            continue
    assert zygotes and set(zygotes) == {"/"}, zygotes


def test_a_closed_stdio_is_never_handed_over(server, strict):
    for client in (c_client(), PY_CLIENT):
        proc = subprocess.run(["/bin/sh", "-c", 'exec 0<&-; exec "$@"', "sh"] + client + [
            "run", "--profile", strict, "--", "/bin/true"], env=server.env, capture_output=True, text=True,
            timeout=60)
        assert proc.returncode == 125 and "closed" in proc.stderr, (client, proc.stderr)


def test_a_silent_client_does_not_hold_the_server(tmp_path):
    srv = Server(tmp_path)
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    silent.connect(srv.path)
    try:
        time.sleep(0.2)
        start = time.monotonic()
        assert srv.stop()[0] == 0
        assert time.monotonic() - start < 5
    finally:
        silent.close()


@pytest.mark.parametrize("how, why", [
    (["setpriv", "--no-new-privs"], "NoNewPrivs"),
    (["env", "PYSANDBOX_PROFILE_PATH=/nowhere"], "PYSANDBOX_PROFILE_PATH"),
    (["prlimit", "--core=0:0", "--"], "limits"),
    (["nice", "-n", "5"], "nice"),
    (["ionice", "-c", "3"], "ioprio"),
    (["/bin/sh", "-c", 'echo 0x1 > /proc/self/coredump_filter && exec "$@"', "sh"], "coredump_filter"),
])
def test_a_caller_unlike_the_server_is_declined_and_runs_locally(server, strict, how, why):
    args = ["--profile", strict, "--", "/bin/echo", "ran"]
    proc = subprocess.run(how + c_client() + ["run"] + args, env=server.env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 125 and proc.stdout == "", proc.stderr
    assert proc.stderr.startswith("pysandbox: serve: not served: the caller's %s" % why), proc.stderr
    if why == "NoNewPrivs" and not ROOT:
        return  # newuidmap (setuid) does not work under no_new_privs: nothing to run locally
    proc = subprocess.run(how + c_client() + ["run"] + args, env=dict(server.env, PYSANDBOX_SERVE="auto"),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (0, "ran\n"), proc.stderr


@pytest.mark.parametrize("args, why", [
    (["--tty", "--", "/bin/true"], "--tty is answered by the CLI itself"),
    (["--help"], "--help is answered by the CLI itself"),
])
def test_what_the_cli_answers_itself_is_declined(server, args, why):
    proc = server.run(*args)
    assert proc.returncode == 125 and why in proc.stderr, proc.stderr


def test_a_terminal_is_never_handed_over(server, strict):
    import pty
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(c_client()[0], c_client() + ["run", "--profile", strict, "--", "/bin/true"], server.env)
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 125 and b"a terminal" in out, out


def test_signals_reach_the_sandbox_and_the_clients_end_kills_it(server, strict):
    client = subprocess.Popen(c_client() + ["run", "--profile", strict, "--", "/bin/sh", "-c",
                                            'trap "echo got-term; exit 9" TERM; echo ready; '
                                            'while :; do sleep 0.05; done'],
                              env=server.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    assert client.stdout.readline() == "ready\n"
    client.send_signal(signal.SIGTERM)
    out, err = client.communicate(timeout=30)
    assert (client.returncode, out) == (9, "got-term\n"), err

    marker = "1000.%d" % os.getpid()
    client = start_sleeper(server.env, strict, marker)
    wait_until(lambda: processes_with("sleep\0" + marker), what="the sandbox's sleep")
    client.kill()
    client.wait()
    wait_until(lambda: not processes_with("sleep\0" + marker), timeout=10,
               what="the sandbox of a SIGKILLed client to end")


def test_the_servers_end_ends_its_runs_and_leaves_nothing(tmp_path, strict):
    before = set(_cgroups())
    srv = Server(tmp_path)
    marker = "1001.%d" % os.getpid()
    client = start_sleeper(srv.env, strict, marker)
    code, err = srv.stop()
    assert code == 0, err
    out, cerr = client.communicate(timeout=30)
    assert client.returncode == 125 and "the server ended during the run" in cerr, cerr
    assert not processes_with("sleep\0" + marker)
    assert not os.path.exists(srv.path)
    assert set(_cgroups()) <= before, "cgroups left by the server: %s" % (set(_cgroups()) - before)


def _cgroups():
    """The pysandbox cgroups of every mounted hierarchy (the delegated ones rootless)."""
    from sandbox import cgroup
    out = []
    for _fstype, point, _root, _opts in cgroup.mounts():
        for top, dirs, _files in os.walk(os.path.join(point, cgroup.PARENT)):
            out += [os.path.join(top, d) for d in dirs]
    return out


def test_a_stale_socket_is_run_locally_and_replaced(tmp_path, strict):
    srv = Server(tmp_path)
    srv.proc.kill()
    srv.proc.wait()
    assert os.path.exists(srv.path)  # what a SIGKILLed server leaves
    proc = srv.run("--profile", strict, "--", "/bin/echo", "local", env={"PYSANDBOX_SERVE": "auto"})
    assert (proc.returncode, proc.stdout) == (0, "local\n"), proc.stderr
    proc = srv.run("--profile", strict, "--", "/bin/true")
    assert proc.returncode == 125 and "the server does not answer" in proc.stderr, proc.stderr
    again = Server(tmp_path)  # binds beside the stale socket and renames over it
    try:
        proc = again.run("--profile", strict, "--", "/bin/echo", "served")
        assert (proc.returncode, proc.stdout) == (0, "served\n"), proc.stderr
        second = subprocess.run(pysandbox_cmd() + ["serve", "--socket", again.path], capture_output=True,
                                text=True, timeout=60)
        assert second.returncode == 125
        assert second.stderr == "pysandbox: serve: a server already listens at %s\n" % again.path
    finally:
        assert again.stop()[0] == 0


def test_the_socket_must_be_private(tmp_path):
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    proc = subprocess.run(pysandbox_cmd() + ["serve", "--socket", str(loose / "s.sock")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 125 and "must be a directory of uid %d with mode 0700" % os.geteuid() in proc.stderr


@pytest.fixture
def open_server():
    """A root server whose socket the test opens to everyone (the test user must reach it)."""
    import shutil
    import tempfile
    directory = tempfile.mkdtemp(prefix="pysandbox-serve-test-")
    os.chmod(directory, 0o711)
    srv = Server(directory)
    try:
        yield srv
    finally:
        assert srv.stop()[0] == 0
        shutil.rmtree(directory)


@pytest.mark.root_only
def test_another_user_is_never_served(open_server, strict):
    server = open_server
    user = pwd.getpwnam(os.environ.get("PYSANDBOX_TEST_USER", "pysbx"))
    # Even with the directory and the socket opened to everyone, the C client refuses a
    # socket that is not its user's, and the server refuses a peer of another uid.
    os.chmod(os.path.dirname(server.path), 0o755)
    os.chmod(server.path, 0o777)
    as_user = ["setpriv", "--reuid=%d" % user.pw_uid, "--regid=%d" % user.pw_gid, "--clear-groups"]
    proc = subprocess.run(as_user + c_client() + ["run", "--profile", strict, "--", "/bin/true"], env=server.env,
                          cwd="/", stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 125 and "not a socket of this user's" in proc.stderr, proc.stderr
    probe = ("import socket, sys\n"
             "s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.connect(sys.argv[1])\n"
             "s.sendmsg([b'pysandbox-serve/1\\0/\\x001\\0run'], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, "
             "bytes(12))])\n"
             "print(s.recv(4096).decode())\n")
    proc = subprocess.run(as_user + [sys.executable, "-I", "-c", probe, server.path], cwd="/",
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout == "Luid %d is not the server's (0)\n" % user.pw_uid, proc.stderr


_CONFINE = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if sys.argv[1] == "none":
    pass
elif sys.argv[1] == "landlock":
    # handled_access_fs = LANDLOCK_ACCESS_FS_WRITE_FILE; no rule: writing files is refused,
    # and so is any ptrace access out of the domain. Root may enter one without no_new_privs.
    attr = ctypes.c_uint64(1 << 1)
    fd = libc.syscall(444, ctypes.byref(attr), 8, 0)
    assert fd >= 0 and libc.syscall(446, fd, 0) == 0, ctypes.get_errno()
else:
    # an allow-all filter (one instruction): root may install it without no_new_privs
    class Filter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]
    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Filter))]
    allow = (Filter * 1)(Filter(0x06, 0, 0, 0x7fff0000))
    assert libc.prctl(22, 2, ctypes.byref(Prog(1, allow)), 0, 0) == 0, ctypes.get_errno()
os.execv(sys.argv[2], sys.argv[2:])
"""


@pytest.mark.root_only
@pytest.mark.parametrize("confinement, why", [
    ("landlock", "may be in a Landlock domain"),
    ("seccomp", "the caller's Seccomp is not the server's"),
    ("none", None),
])
def test_a_confined_caller_cannot_shed_its_confinement(server, strict, confinement, why):
    proc = subprocess.run([sys.executable, "-I", "-c", _CONFINE, confinement] + c_client() + [
        "run", "--profile", strict, "--", "/bin/true"], env=server.env, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=60)
    if why is None:  # root, with CAP_SYS_ADMIN, outside any domain: its proof is good
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode == 125 and why in proc.stderr, proc.stderr


@pytest.mark.root_only
def test_the_client_checks_who_listens(tmp_path, strict):
    """A socket file of the user's, in a directory of the user's, with another uid behind
    it (the path swapped after the client's check): the client sends nothing."""
    user = pwd.getpwnam(os.environ.get("PYSANDBOX_TEST_USER", "pysbx"))
    import tempfile
    directory = tempfile.mkdtemp(prefix="pysandbox-serve-test-")
    try:
        os.chmod(directory, 0o711)
        inner = os.path.join(directory, "srv")
        os.mkdir(inner, 0o700)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(os.path.join(inner, "s.sock"))
        listener.listen(1)
        os.chown(inner, user.pw_uid, user.pw_gid)
        os.chown(os.path.join(inner, "s.sock"), user.pw_uid, user.pw_gid)
        proc = subprocess.run(["setpriv", "--reuid=%d" % user.pw_uid, "--regid=%d" % user.pw_gid, "--clear-groups"]
                              + c_client() + ["run", "--profile", strict, "--", "/bin/true"], cwd="/",
                              env=dict(os.environ, PYSANDBOX_SERVE="require",
                                       PYSANDBOX_SERVE_SOCKET=os.path.join(inner, "s.sock")),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 125 and "the listener is not this user's" in proc.stderr, proc.stderr
        listener.close()
    finally:
        import shutil
        shutil.rmtree(directory)


def test_a_proof_must_be_a_real_open(server, strict):
    """An O_PATH descriptor of /proc/SERVER/mem is had without the attach-mode check (a
    Landlock domain lets it through): it proves nothing."""
    probe = ("import os, socket, sys\n"
             "s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.connect(sys.argv[1])\n"
             "pid = int.from_bytes(s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)[:4], sys.byteorder)\n"
             "proof = os.open('/proc/%d/mem' % pid, os.O_PATH)\n"
             "fds = b''.join(fd.to_bytes(4, sys.byteorder) for fd in (0, 1, 2, proof))\n"
             "s.sendmsg([b'pysandbox-serve/1\\0/\\x003\\0run\\0--profile\\0' + sys.argv[2].encode() + "
             "b'\\0/bin/true'], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])\n"
             "print(s.recv(4096).decode())\n")
    proc = subprocess.run([sys.executable, "-I", "-c", probe, server.path, strict], env=server.env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.stdout.startswith("Lthe caller could not open /proc/"), proc.stdout + proc.stderr


def test_a_repeated_variable_is_the_first_one(server, tmp_path, strict):
    """getenv(3) and os.environ take the first of a repeated name; so does the server."""
    (tmp_path / "env.toml").write_text('extends = "%s"\n[environment]\nclear = false\n' % strict)
    # execve(2) with a raw environment block: a mapping cannot repeat a name
    exec_raw = ("import ctypes, os, sys\n"
                "env = [b'%s=%s' % kv for kv in os.environb.items()] + [b'WHICH=first', b'WHICH=second']\n"
                "argv = [a.encode() for a in sys.argv[1:]]\n"
                "def block(items):\n"
                "    return (ctypes.c_char_p * (len(items) + 1))(*items, None)\n"
                "ctypes.CDLL(None).execve(argv[0], block(argv), block(env))\n")
    proc = subprocess.run([sys.executable, "-I", "-c", exec_raw] + c_client() + [
        "run", "--profile", str(tmp_path / "env.toml"), "--", "/bin/sh", "-c", "echo $WHICH"],
        env=server.env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert (proc.returncode, proc.stdout) == (0, "first\n"), proc.stderr


def test_a_malformed_request_is_declined(server, strict):
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    conn.connect(server.path)
    conn.send(b"GET / HTTP/1.0\r\n\r\n")
    assert conn.recv(4096).startswith(b"Lthe request must bring stdin, stdout and stderr")
    conn.close()
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for request, reply in ((b"nonsense\0/\x001\0run", b"Lnot a pysandbox-serve/1 request"),
                               (b"pysandbox-serve/1\0/\x001\0profile", b"Lonly `pysandbox run` is served")):
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            conn.connect(server.path)
            conn.sendmsg([request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                      b"".join(fd.to_bytes(4, sys.byteorder) for fd in (null, null, null)))])
            assert conn.recv(4096) == reply
            conn.close()
    finally:
        os.close(null)
    # the server goes on
    proc = server.run("--profile", strict, "--", "/bin/true")
    assert proc.returncode == 0, proc.stderr


def test_serve_options_are_checked():
    for args, text in ((["--threads", "0"], "--threads must be at least 1"),
                       (["--idle-exit", "-1"], "--idle-exit must be a positive number")):
        proc = subprocess.run(pysandbox_cmd() + ["serve"] + args, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 125 and text in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_idle_exit(tmp_path):
    path = str(tmp_path / "srv" / "s.sock")
    start = time.monotonic()
    proc = subprocess.run(pysandbox_cmd() + ["serve", "--socket", path, "--idle-exit", "0.5"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "no run for 0.5s: stopping" in proc.stderr, proc.stderr
    assert time.monotonic() - start < 30 and not os.path.exists(path)


def test_the_default_socket_paths():
    from sandbox.serve_client import socket_path
    assert socket_path({"PYSANDBOX_SERVE_SOCKET": "/x/s"}) == "/x/s"
    if ROOT:
        assert socket_path({"XDG_RUNTIME_DIR": "/run/user/0"}) == "/run/pysandbox/serve.sock"
    else:
        uid = os.geteuid()
        assert socket_path({"XDG_RUNTIME_DIR": "/run/user/%d/" % uid}) == "/run/user/%d/pysandbox/serve.sock" % uid
        assert socket_path({}) == "/tmp/pysandbox-serve-%d/serve.sock" % uid


def test_a_taken_name_is_refused_in_the_clis_words(server, strict):
    """A --name a running sandbox holds: the served refusal is the local CLI's, word for word,
    also when the twin runs in the same server (started at once, before either is recorded)."""
    name = "taken-%d" % os.getpid()
    holder = subprocess.Popen(c_client() + ["run", "--profile", strict, "--name", name, "--", "/bin/sh", "-c",
                                            "echo ready; exec sleep 1000.%d" % os.getpid()],
                              env=server.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "ready\n"
        served = server.run("--profile", strict, "--name", name, "--", "/bin/true")
        local = server.run("--profile", strict, "--name", name, "--", "/bin/true", env={"PYSANDBOX_SERVE": "off"})
        assert served.returncode == local.returncode == 125
        assert served.stderr == local.stderr and "a sandbox named '%s' is already running (PID " % name in served.stderr
    finally:
        holder.kill()
        holder.wait()
    wait_until(lambda: not processes_with("sleep\0" + "1000.%d" % os.getpid()), what="the holder's sandbox to end")
    clients = [subprocess.Popen(c_client() + ["run", "--profile", strict, "--name", name + "-2", "--",
                                              "/bin/sleep", "0.5"], env=server.env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [(c.wait(timeout=60), c.stderr.read()) for c in clients]
    assert sorted(code for code, _ in results) == [0, 125, 125], results
    assert all(err.startswith("pysandbox: a sandbox named '%s-2' is already running (PID " % name)
               for code, err in results if code == 125), results
