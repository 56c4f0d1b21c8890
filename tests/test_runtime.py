"""The runtime core on the real kernel: isolation seen from inside and from outside,
exit statuses, cleanup. Runs as root and again as an unprivileged user."""
import json
import os
import signal
import subprocess
import time

import pytest

from util import processes_with, ROOT, command_running, py, require, run_cli, run_in, pysandbox_cmd, wait_until

NS_NAMES = ("user", "pid", "mnt", "net", "uts", "ipc", "cgroup", "time")


def inside(profile, code, *extra, timeout=60):
    proc, _ = run_in(profile, *py(code), extra=extra, timeout=timeout)
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


PROBE = r"""
import json, os, errno
out = {}
out["ns"] = {n: os.readlink("/proc/self/ns/" + n) for n in %r}
out["uid_map"] = open("/proc/self/uid_map").read().split()
out["gid_map"] = open("/proc/self/gid_map").read().split()
out["hostname"] = os.uname().nodename
out["netdevs"] = sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").read().splitlines()[2:])
out["dev"] = sorted(os.listdir("/dev"))
out["fds"] = sorted(int(f) for f in os.listdir("/proc/self/fd"))
out["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
try:
    out["root"] = sorted(os.listdir("/"))
except PermissionError:  # strict's Landlock policy does not grant listing "/"
    out["root"] = sorted(n for n in ("bin", "sbin", "lib", "lib64", "lib32", "libx32", "usr", "etc", "tmp",
                                     "proc", "dev", "sys", "home", "root", "var") if os.path.lexists("/" + n))
out["uid"] = os.getuid()
stat = open("/proc/self/stat").read()
fields = stat[stat.rfind(")") + 2:].split()
out["sid_is_self"] = int(fields[3]) == os.getpid()
out["tty_nr"] = int(fields[4])
masked = {}
for path in ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/interrupts"]:
    try:
        masked[path] = len(open(path, "rb").read(64))
    except OSError as e:
        masked[path] = errno.errorcode[e.errno]
for path in ["/proc/acpi", "/proc/scsi", "/proc/asound"]:
    masked[path] = os.listdir(path) if os.path.isdir(path) else "absent"
out["masked"] = masked
ro = {}
for path in ["/proc/sys/kernel/hostname", "/proc/sysrq-trigger", "/proc/sys/kernel/core_pattern"]:
    try:
        os.close(os.open(path, os.O_WRONLY))
        ro[path] = "writable"
    except OSError as e:
        ro[path] = errno.errorcode[e.errno]
out["readonly"] = ro
try:
    os.close(os.open("/usr/pysandbox-probe", os.O_WRONLY | os.O_CREAT, 0o644))
    out["usr"] = "writable"
except OSError as e:
    out["usr"] = errno.errorcode[e.errno]
out["sys"] = os.path.exists("/sys/kernel")
out["tmp"] = [l.split()[3] for l in open("/proc/self/mounts") if l.split()[1] == "/tmp"]
print(json.dumps(out))
""" % (NS_NAMES,)


@pytest.fixture(scope="module")
def strict_view(strict):
    return inside(strict, PROBE)


def start_named(strict, name, *cmd, extra=()):
    """Start `pysandbox run --name NAME` in the background; returns (Popen, state record)."""
    from pysandbox_common import registry as state
    sup = subprocess.Popen(pysandbox_cmd() + ["run", "--profile", strict, "--name", name, *extra, "--", *cmd])
    try:
        record = wait_until(lambda: state.find(name), what="sandbox %s in the registry" % name)
        # past setup: the command itself runs under PID 1
        wait_until(lambda: command_running(record["pid"], os.path.basename(cmd[0])), what="the command to run")
    except BaseException:
        sup.terminate()  # the supervisor forwards it and tears the sandbox down
        sup.wait()
        raise
    return sup, record


def test_every_namespace_is_new(strict_view):
    for name in NS_NAMES:
        host = os.readlink("/proc/self/ns/" + name)
        assert strict_view["ns"][name] != host, name


def test_uid_map_never_maps_host_root(strict_view):
    for key in ("uid_map", "gid_map"):
        numbers = [int(x) for x in strict_view[key]]
        for i in range(0, len(numbers), 3):
            _, host, count = numbers[i:i + 3]
            assert not (host <= 0 < host + count), strict_view[key]
    assert strict_view["uid"] == 0


def test_only_loopback_and_hostname(strict_view):
    assert strict_view["netdevs"] == ["lo"]
    assert strict_view["hostname"] == "sandbox"
    assert os.uname().nodename != "sandbox"


def test_masked_and_readonly_proc(strict_view):
    for path, value in strict_view["masked"].items():
        assert value in (0, [], "absent", "ENOENT"), (path, value)
    for path, value in strict_view["readonly"].items():
        if not os.path.exists(path):  # this kernel may lack the file altogether (no CONFIG_MAGIC_SYSRQ)
            assert value == "ENOENT"
            continue
        assert value in ("EROFS", "EACCES", "EPERM"), (path, value)


def test_minimal_dev_no_fds_only_sandbox_processes(strict_view):
    assert strict_view["dev"] == sorted(["null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm",
                                         "fd", "stdin", "stdout", "stderr"])
    # 0-2 plus the descriptor listdir itself holds open on /proc/self/fd
    assert strict_view["fds"] == [0, 1, 2, 3]
    assert strict_view["pids"] == [1, 2]


def test_root_is_composed_readonly_and_sys_absent(strict_view):
    assert set(strict_view["root"]) <= {"bin", "sbin", "lib", "lib64", "lib32", "libx32", "usr", "etc", "tmp",
                                        "proc", "dev"}
    assert strict_view["usr"] in ("EROFS", "EACCES")
    assert strict_view["sys"] is False
    assert strict_view["tmp"] and "size=" in strict_view["tmp"][0]


def test_new_session_without_terminal(strict_view):
    assert strict_view["sid_is_self"] and strict_view["tty_nr"] == 0


LOOPBACK_PROBE = r"""
import json, os, socket
inet6 = open("/proc/net/if_inet6").read()
server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
server.bind(("127.0.0.1", 0))
server.listen(1)
client = socket.create_connection(server.getsockname(), timeout=5)
peer, _ = server.accept()
client.sendall(b"ping")
print(json.dumps({"inet6": inet6, "echo": peer.recv(4).decode(),
                  "devices": sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").read().splitlines()[2:])}))
"""


@pytest.mark.parametrize("mode", ["none", "loopback"])
def test_network_namespace_has_only_lo_and_it_is_up(strict, mode):
    """--net none (strict's default) and --net loopback: a new namespace whose only
    interface is lo, up, as Docker, bubblewrap and nsjail give: a connection to a listener
    on 127.0.0.1 inside works (it fails with ENETUNREACH while lo is down)."""
    view = inside(strict, LOOPBACK_PROBE, "--net", mode)
    assert view["devices"] == ["lo"]
    # /proc/net/if_inet6 lists ::1 on lo only once lo is up
    assert "lo" in view["inet6"]
    assert view["echo"] == "ping"


def test_strict_refuses_host_network(strict):
    proc, _ = run_in(strict, "/bin/true", extra=("--net", "host"))
    assert proc.returncode == 125
    assert "refuses the host's network" in proc.stderr and proc.stderr.count("\n") == 1


def test_exit_statuses(strict, tmp_path):
    assert run_in(strict, "/bin/sh", "-c", "exit 7")[0].returncode == 7
    assert run_in(strict, "/bin/sh", "-c", "kill -TERM $$")[0].returncode == 128 + signal.SIGTERM
    proc, verdict = run_in(strict, "/bin/sh", "-c", "kill -SEGV $$", result_file=tmp_path / "r.json")
    assert proc.returncode == 128 + signal.SIGSEGV
    assert verdict["reason"] == "signal" and verdict["signal"] == signal.SIGSEGV
    proc = run_in(strict, "/no/such/program")[0]
    assert proc.returncode == 127 and proc.stderr.startswith("pysandbox: /no/such/program:")
    proc = run_in(strict, "/etc/hostname")[0]
    assert proc.returncode == 126


def test_result_file(strict, tmp_path):
    proc, verdict = run_in(strict, *py("print('hello')"), result_file=tmp_path / "r.json")
    assert proc.returncode == 0 and proc.stdout == "hello\n"
    assert verdict["reason"] == "exit" and verdict["exit_code"] == 0 and verdict["signal"] is None
    assert verdict["wall"] > 0 and verdict["cpu_user"] >= 0 and verdict["cpu_system"] >= 0


_marker_processes = processes_with


def test_timeout_kills_every_descendant(strict, tmp_path):
    marker = "%d.%d" % (os.getpid(), time.monotonic_ns() % 100000)
    proc, verdict = run_in(strict, "/bin/sh", "-c", "sleep 1%s & sleep 2%s & sleep 3%s" % (marker, marker, marker),
                           extra=("--timeout", "1"), result_file=tmp_path / "r.json")
    assert proc.returncode == 124 and verdict["reason"] == "timeout"
    assert _marker_processes(marker) == []


def test_supervisor_sigkill_leaves_nothing(strict):
    marker = "9%d.%d" % (os.getpid(), time.monotonic_ns() % 100000)
    sup = subprocess.Popen(pysandbox_cmd() + ["run", "--profile", strict, "--name", "killme-%d" % os.getpid(), "--",
                                              "/bin/sh", "-c", "sleep 1%s & sleep 2%s" % (marker, marker)])
    try:
        wait_until(lambda: len(_marker_processes(marker)) >= 2, what="both sleeps to run")
    finally:
        sup.send_signal(signal.SIGKILL)
        sup.wait()
    wait_until(lambda: _marker_processes(marker) == [], timeout=5, what="the sandbox's processes to end")
    gc = run_cli("gc")
    assert gc.returncode == 0
    from pysandbox_common import registry as state
    assert state.find("killme-%d" % os.getpid()) is None


def test_host_mounts_and_hostname_unchanged(strict):
    before = open("/proc/self/mountinfo").read()
    host = os.uname().nodename
    inside(strict, "import json; print(json.dumps(1))")
    after = open("/proc/self/mountinfo").read()
    # Other suites (Docker's daemon) may mount meanwhile; none of our mounts may appear.
    added = set(after.splitlines()) - set(before.splitlines())
    ours = [l for l in added if any(p in l.split(" - ")[0] for p in (" /tmp ", "/newroot", "/oldroot", " /proc ",
                                                                     " /dev "))]
    assert ours == []
    assert not [l for l in after.splitlines() if l.split()[4] in ("/newroot", "/oldroot")]
    assert os.uname().nodename == host


def test_host_sees_unprivileged_owner(strict):
    sup, record = start_named(strict, "owner-%d" % os.getpid(), "/bin/sleep", "30")
    try:
        with open("/proc/%d/status" % record["pid"]) as f:
            uids = [l for l in f if l.startswith("Uid:")][0].split()[1:]
        assert "0" not in uids
        if ROOT:
            assert int(uids[0]) >= 1_000_000_000
        else:
            assert int(uids[0]) == os.getuid()
    finally:
        sup.terminate()  # the supervisor forwards it and tears the sandbox down
        sup.wait()


def test_bind_ro_bind_overlay_and_uid(strict, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "in.txt").write_text("from host")
    os.chmod(tmp_path, 0o755)
    os.chmod(shared, 0o777)
    code = ("import errno,os\n"
            "print(open('/data/in.txt').read())\n"
            "open('/rw/out.txt','w').write('from sandbox')\n"
            "try:\n open('/data/x','w')\nexcept OSError as e: print(errno.errorcode[e.errno])\n")
    proc, _ = run_in(strict, *py(code), extra=("--ro-bind", "%s:/data" % shared, "--bind", "%s:/rw" % shared))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["from", "host", "EROFS"]
    assert (shared / "out.txt").read_text() == "from sandbox"
    proc, _ = run_in(strict, "/bin/sh", "-c", "id -u; id -g", extra=("--uid", "1000", "--gid", "1000"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1000", "1000"]


def make_rootfs(path):
    """A tiny image root: busybox and the usual mount points, owned by the id the
    sandbox's root maps to (as an unpacked rootless image would be)."""
    busybox = "/bin/busybox"
    require(os.path.exists(busybox), "busybox-static is not installed")
    import shutil
    for name in ("bin", "etc", "tmp", "proc", "dev", "data"):
        (path / name).mkdir(parents=True)
    (path / "etc" / "os-release").write_text("ID=tiny\n")
    shutil.copy(busybox, path / "bin" / "busybox")
    for applet in ("sh", "cat", "ls", "echo", "id"):
        os.symlink("busybox", path / "bin" / applet)
    owner = 1_000_000_000 if ROOT else os.getuid()
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
            os.lchown(name, owner, owner)
    os.chmod(path.parent, 0o755)
    return path


def test_rootfs_directory(strict, tmp_path):
    root = make_rootfs(tmp_path / "rootfs")
    proc, _ = run_in(strict, "/bin/sh", "-c", "cat /etc/os-release; ls /bin /usr", extra=("--rootfs", str(root)))
    assert "ID=tiny" in proc.stdout and "busybox" in proc.stdout
    assert "/usr: No such file" in proc.stderr
    # read-only by default (shown under default: strict's Landlock refuses the write first)
    proc, _ = run_in("default", "/bin/sh", "-c", "echo x > /etc/new", extra=("--rootfs", str(root)))
    assert proc.returncode != 0 and "Read-only" in proc.stderr


def test_overlay_is_copy_on_write(tmp_path):
    # Landlock (strict) would refuse writes outside /tmp whatever the overlay does; default
    # shows the overlay itself.
    root = make_rootfs(tmp_path / "rootfs")
    proc, _ = run_in("default", "/bin/sh", "-c", "echo changed > /etc/os-release && echo new > /data/f && "
                     "cat /etc/os-release /data/f", extra=("--rootfs", str(root), "--overlay"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["changed", "new"]
    assert (root / "etc" / "os-release").read_text() == "ID=tiny\n"
    assert not (root / "data" / "f").exists()


def test_python_api(strict):
    from sandbox import Sandbox, load_profile
    result = Sandbox(load_profile(strict)).run(["python3", "-c", "print(6*7)"], timeout=10, capture_output=True)
    assert result.reason == "exit" and result.exit_code == 0 and result.stdout == b"42\n"
    data = result.to_dict()
    for key in ("exit_code", "signal", "reason", "wall", "cpu_user", "cpu_system"):
        assert key in data
    timed = Sandbox(load_profile(strict)).run(["sleep", "10"], timeout=0.5)
    assert timed.reason == "timeout" and timed.exit_code == 124


@pytest.mark.parametrize("args, code, text", [
    (["run", "--profile", "nope", "--", "true"], 125, "unknown profile 'nope'"),
    (["run", "--profile", "strict"], 125, "no command given"),
    (["run", "--bogus", "--", "true"], 125, "unknown option --bogus"),
    (["run", "--ro-bind", "/does/not/exist", "--", "true"], 125, "bind source /does/not/exist does not exist"),
    (["run", "--timeout", "soon", "--", "true"], 125, "--timeout expects a number"),
    (["frobnicate"], 125, "unknown command"),
])
def test_bad_input_is_one_line(args, code, text):
    proc = run_cli(*args)
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.startswith("pysandbox: ") and text in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_malformed_profile_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('extends = "strict"\n[process]\nhostname = [\n')
    proc = run_cli("run", "--profile", str(bad), "--", "true")
    assert proc.returncode == 125 and str(bad) in proc.stderr and proc.stderr.count("\n") == 1


def test_profile_list_and_show(tmp_path):
    listing = run_cli("profile", "list")
    assert listing.returncode == 0 and "strict" in listing.stdout and "DELIBERATELY WEAK" in listing.stdout
    shown = run_cli("profile", "show", "strict")
    assert shown.returncode == 0
    import tomllib
    data = tomllib.loads(shown.stdout)
    assert data["network"]["allow_host"] is False and data["namespaces"]["user"] is True
    assert data["filesystem"]["ro_bind"] == ["/usr"]  # inherited from default
    assert data["seccomp"]["locked"] is True and data["landlock"]["enabled"] is True
    # what `show` prints is the resolved profile: it loads back as the same one
    from sandbox import load_profile
    path = tmp_path / "shown.toml"
    path.write_text(shown.stdout)
    again, strict = load_profile(str(path)), load_profile("strict")
    for section in ("namespaces", "idmap", "filesystem", "environment", "network", "process", "capabilities",
                    "rlimits", "limits", "seccomp", "landlock"):
        assert getattr(again, section) == getattr(strict, section), section


def test_strict_limits_work_or_fail_closed():
    proc = run_in("strict", "/bin/true")[0]
    if ROOT or proc.returncode == 0:
        # the run happened: then its limits must really have applied
        assert proc.returncode == 0, proc.stderr
        from sandbox import Sandbox, load_profile
        result = Sandbox(load_profile("strict")).run(["/bin/true"])
        assert result.limits and result.limits.get("memory") == 512 << 20 and result.limits.get("pids") == 256
        assert result.memory_peak and result.memory_peak > 0
    else:
        # Rootless without cgroup delegation: strict's required limits cannot be had, and
        # the run fails closed with a message that says how to get them.
        assert proc.returncode == 125 and "delegat" in proc.stderr and proc.stderr.count("\n") == 1


def test_seccomp_kill_names_the_syscall(strict, tmp_path):
    profile = tmp_path / "killer.toml"
    profile.write_text('extends = %r\n[seccomp]\nkill = ["ptrace"]\n' % strict)
    proc, verdict = run_in(str(profile), *py("import ctypes; ctypes.CDLL(None).ptrace(0, 0, 0, 0); print('ran')"),
                           result_file=tmp_path / "r.json")
    assert "ran" not in proc.stdout
    assert verdict["reason"] == "seccomp" and verdict["syscall"] == "ptrace"
    assert proc.returncode == 128 + signal.SIGKILL
    assert "killed by seccomp (syscall ptrace)" in proc.stderr
    from sandbox import Sandbox, load_profile
    result = Sandbox(load_profile(str(profile))).run(["/bin/true"])
    assert result.reason == "exit" and result.exit_code == 0  # the listener does not disturb a clean run


def test_single_id_map_without_subuid(tmp_path):
    """Without /etc/subuid ranges (or as root) the maps still never touch host root; rootless
    with subuid disabled the caller is mapped alone, as inside uid 0."""
    profile = tmp_path / "single.toml"
    profile.write_text('extends = "default"\n[idmap]\nsubuid = false\n')
    proc, _ = run_in(str(profile), "/bin/cat", "/proc/self/uid_map", "/proc/self/gid_map")
    assert proc.returncode == 0, proc.stderr
    lines = [l.split() for l in proc.stdout.splitlines()]
    if ROOT:
        assert lines == [["0", "1000000000", "65536"]] * 2
    else:
        assert lines == [["0", str(os.getuid()), "1"], ["0", str(os.getgid()), "1"]]


@pytest.mark.root_only  # PID 1 is not dumpable: only host root may look at its descriptors
def test_pid1_holds_no_host_descriptors(strict):
    """PID 1 stays in the sandbox for its whole life: no descriptor of the supervisor's
    (bind sources, cgroup directories) may survive in it."""
    sup, record = start_named(strict, "fds-%d" % os.getpid(), "/bin/sleep", "30", extra=("--ro-bind", "/etc:/hostetc"))
    try:
        fds = sorted(int(fd) for fd in os.listdir("/proc/%d/fd" % record["pid"]))
        targets = [os.readlink("/proc/%d/fd/%d" % (record["pid"], fd)) for fd in fds if fd > 2]
        # the message pipe and the init's signalfd; nothing that names a file or directory
        assert len(targets) <= 2 and all(t.startswith(("pipe:", "anon_inode:")) for t in targets), targets
    finally:
        sup.terminate()  # the supervisor forwards it and tears the sandbox down
        sup.wait()


def test_python_init_fallback(strict, tmp_path):
    """Without the compiled C init (a plain `pip install`), the Python PID 1 does the same
    duties: exit status, signal forwarding and reaping, the seccomp kill verdict."""
    env = {"PYSANDBOX_INIT": ""}
    proc = run_cli("run", "--profile", strict, "--", "/bin/sh", "-c", "sleep 0.1 & exit 3", env=env)
    assert proc.returncode == 3, proc.stderr
    profile = tmp_path / "killer.toml"
    profile.write_text('extends = %r\n[seccomp]\nkill = ["ptrace"]\n' % strict)
    result_file = tmp_path / "r.json"
    proc = run_cli("run", "--profile", str(profile), "--result", str(result_file), "--",
                   *py("import ctypes; ctypes.CDLL(None).ptrace(0, 0, 0, 0)"), env=env)
    verdict = json.loads(result_file.read_text())
    assert verdict["reason"] == "seccomp" and verdict["syscall"] == "ptrace"


def test_signal_forwarding_to_the_command(strict):
    """SIGTERM to the supervisor reaches the command through PID 1."""
    sup = subprocess.Popen(pysandbox_cmd() + ["run", "--profile", strict, "--", "/bin/sh", "-c",
                                              "trap 'echo got-term; exit 42' TERM; echo ready; sleep 30 & wait"],
                           stdout=subprocess.PIPE, text=True)
    assert sup.stdout.readline() == "ready\n"  # the trap is set
    sup.send_signal(signal.SIGTERM)
    out, _ = sup.communicate(timeout=20)
    assert sup.returncode == 42 and "got-term" in out


def test_rlimits_applied_inside(strict):
    proc, _ = run_in(strict, "/bin/cat", "/proc/self/limits")
    assert proc.returncode == 0, proc.stderr
    limits = {}
    for line in proc.stdout.splitlines()[1:]:
        name = line[:26].strip()
        soft, hard = line[26:].split()[:2]
        limits[name] = (soft, hard)
    assert limits["Max core file size"] == ("0", "0")
    assert limits["Max open files"] == ("1024", "1024")
    assert limits["Max file size"] == (str(1 << 30), str(1 << 30))


def test_rlimit_above_host_hard_limit_is_a_clear_error(tmp_path):
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    require(hard != resource.RLIM_INFINITY, "the nofile hard limit is unlimited here")
    profile = tmp_path / "greedy.toml"
    profile.write_text('extends = "default"\n[rlimits]\nnofile = %d\n' % (hard + 1))
    proc, _ = run_in(str(profile), "/bin/true")
    assert proc.returncode == 125
    assert proc.stderr == ("pysandbox: rlimits: rlimits.nofile = %d is above the host's hard limit %d "
                           "(raising a hard limit needs CAP_SYS_RESOURCE)\n" % (hard + 1, hard))


def test_names_are_unique_among_running_sandboxes(strict):
    name = "dup-%d" % os.getpid()
    sup, record = start_named(strict, name, "/bin/sleep", "30")
    try:
        proc = run_cli("run", "--profile", strict, "--name", name, "--", "/bin/true")
        assert proc.returncode == 125 and proc.stderr == \
            "pysandbox: a sandbox named %r is already running (PID %d, supervisor %d)\n" % (name, record["pid"], record["supervisor"])
    finally:
        sup.terminate()  # the supervisor forwards it and tears the sandbox down
        sup.wait()


def test_a_named_api_sandbox_keeps_its_name_and_audit_finds_it(strict):
    """A name is not renamed by runs before it (`grader` stays `grader`, which is what
    `audit grader` looks up); a second start of a running name is refused clearly."""
    from pysandbox_common import registry as state
    from sandbox import Sandbox, load_profile
    from sandbox.errors import SandboxError
    Sandbox(load_profile(strict)).run(["/bin/true"])  # any run before it in this process
    name = "grader-%d" % os.getpid()
    box = Sandbox(load_profile(strict), name=name)
    assert box.run(["/bin/true"]).name == name
    running = box.start(["/bin/sleep", "30"])
    try:
        record = wait_until(lambda: state.find(name), what="the registry record")
        assert record["name"] == name and record["pid"] == running.pid
        with pytest.raises(SandboxError, match="named '%s' is already running" % name):
            Sandbox(load_profile(strict), name=name).start(["/bin/true"])
    finally:
        running.kill()
        result = running.wait()
    assert result.name == name and state.find(name) is None


def test_a_name_still_starting_elsewhere_is_refused_without_a_false_pid(strict):
    """A name another supervisor has claimed but not yet started holds a provisional record
    whose pid is that supervisor's: the refusal says the sandbox has not started yet rather
    than naming the supervisor as the sandbox."""
    import time as time_mod
    from pysandbox_common import registry
    from sandbox import Sandbox, load_profile
    from sandbox.errors import SandboxError
    name = "claimed-%d" % os.getpid()
    holder = subprocess.Popen(["sleep", "60"])
    try:
        assert registry.claim({"name": name, "pid": holder.pid, "supervisor": holder.pid, "profile": "strict",
                               "started": time_mod.time(), "uid": os.geteuid(), "starting": True}) is None
        with pytest.raises(SandboxError) as info:
            Sandbox(load_profile(strict), name=name).start(["/bin/true"])
        assert str(info.value) == "a sandbox named %r is already running (PID not yet started, supervisor %d)" % (
            name, holder.pid)
    finally:
        registry.unregister(name)
        holder.kill()
        holder.wait()


def test_gc_removes_the_temporary_record_of_a_killed_supervisor(tmp_path, monkeypatch):
    """register() writes NAME.json.PID.tmp and renames it: a supervisor killed between
    the two leaves the temporary file, which the next run's gc removes once PID is gone."""
    import subprocess
    from sandbox import cgroup
    directory = tmp_path / "state"
    directory.mkdir(mode=0o700)
    monkeypatch.setenv("PYSANDBOX_STATE_DIR", str(directory))
    gone = subprocess.Popen(["true"])
    gone.wait()
    names = {"dead": "killme.json.%d.tmp" % gone.pid, "live": "mine.json.%d.tmp" % os.getpid(),
             "other": "notes.tmp", "bad": "x.json.abc.tmp"}
    for name in names.values():
        (directory / name).write_text("{}")
    removed = cgroup.gc()
    assert str(directory / names["dead"]) in removed
    assert sorted(os.listdir(directory)) == sorted(v for k, v in names.items() if k != "dead")


def test_two_runs_of_one_name_started_together_cannot_both_run(strict):
    """The name is claimed in one step with the check (registry.claim, under the state
    directory's lock): of several CLIs started at once with one --name, one runs."""
    import subprocess
    name = "race-%d" % os.getpid()
    clients = [subprocess.Popen(pysandbox_cmd() + ["run", "--profile", strict, "--name", name, "--", "/bin/sleep",
                                                   "1"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYSANDBOX_SERVE="off"))
               for _ in range(4)]
    results = [(c.wait(timeout=60), c.stderr.read()) for c in clients]
    assert sorted(code for code, _ in results) == [0, 125, 125, 125], results
    assert all("already running" in err for code, err in results if code == 125), results
    from pysandbox_common import registry
    assert registry.find(name) is None and not registry.exists(name)
