"""The OCI runtime under test driven directly, as containerd's shim and conmon drive it:
runc's command line on bundles made from a busybox-static root, checked from outside
(state, /proc, cgroups, the subreaper's waitpid) and from inside (what the container
prints). Runs against runc as the reference (PYSANDBOX_OCI_RUNTIME=/usr/sbin/runc) and
against pysandbox-oci."""
import array
import json
import os
import re
import socket
import stat
import subprocess
import threading

import pytest

from ocitools import cgroup_dirs, is_pysandbox, unique_id
from util import wait_until

pytestmark = pytest.mark.root_only

WITH_OUTPUT = ["/bin/sh", "-c"]


def ns_inode(pid, kind):
    return os.stat("/proc/%d/ns/%s" % (pid, kind)).st_ino


def proc_status(pid):
    with open("/proc/%d/status" % pid) as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


# ------------------------------------------------------------------ spec

def test_spec_writes_a_config(runtime, tmp_path):
    runtime("spec", "--bundle", tmp_path, root=False)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["ociVersion"].startswith("1.")
    assert config["process"]["args"] and config["root"]["path"] == "rootfs"
    kinds = {n["type"] for n in config["linux"]["namespaces"]}
    assert {"pid", "mount", "ipc", "uts", "network"} <= kinds


# ------------------------------------------------------------------ lifecycle

def test_create_blocks_before_exec_and_start_releases(runtime, make_container, tmp_path):
    marker_dir = tmp_path / "marker"
    marker_dir.mkdir()

    def edit(config):
        config["mounts"].append({"destination": "/marker", "type": "bind", "source": str(marker_dir),
                                 "options": ["rbind", "rw"]})

    c = make_container("lifecycle", edit=edit, args=["/bin/sh", "-c", "echo ran > /marker/ran; exec sleep 3600"],
                       start=False)
    state = runtime.state(c.cid)
    assert state["status"] == "created" and state["pid"] == c.pid
    assert os.path.exists("/proc/%d" % c.pid)
    # set up but not exec'd: in its own namespaces, the command has not run
    assert ns_inode(c.pid, "pid") != ns_inode(os.getpid(), "pid")
    assert ns_inode(c.pid, "mnt") != ns_inode(os.getpid(), "mnt")
    assert not (marker_dir / "ran").exists()
    assert os.path.basename(os.readlink("/proc/%d/exe" % c.pid)) != "busybox"
    c.start()
    wait_until(lambda: (marker_dir / "ran").exists(), what="the container's command to run after start")
    assert runtime.state(c.cid)["status"] == "running"
    assert os.path.basename(os.readlink("/proc/%d/exe" % c.pid)) == "busybox"


def test_exit_code_reaches_the_subreaper(runtime, make_container):
    c = make_container("exit", args=["/bin/sh", "-c", "exit 7"])
    assert c.wait() == {"exit": 7}
    assert runtime.state(c.cid)["status"] == "stopped"


def test_state_fields(runtime, make_container):
    c = make_container("state", start=False)
    state = runtime.state(c.cid)
    assert state["ociVersion"].startswith("1.")
    assert (state["id"], state["status"], state["pid"]) == (c.cid, "created", c.pid)
    assert os.path.realpath(state["bundle"]) == os.path.realpath(c.bundle)


def test_kill_term_by_name_reaches_a_handler(runtime, make_container):
    # PID 1 of a pid namespace gets only the signals it has a handler for: the trap shows TERM arrived
    c = make_container("term", args=["/bin/sh", "-c", "trap 'exit 42' TERM; echo ready; sleep 3600 & wait"])
    c.wait_output("ready")
    runtime("kill", c.cid, "TERM")
    assert c.wait() == {"exit": 42}


def test_kill_by_number_is_a_signal_death(runtime, make_container):
    c = make_container("kill9")
    runtime("kill", c.cid, "9")
    assert c.wait() == {"signal": 9}
    assert runtime.state(c.cid)["status"] == "stopped"


def test_kill_sigterm_prefixed_name(runtime, make_container):
    c = make_container("sigterm", args=["/bin/sh", "-c", "trap 'exit 43' TERM; echo ready; sleep 3600 & wait"])
    c.wait_output("ready")
    runtime("kill", c.cid, "SIGTERM")
    assert c.wait() == {"exit": 43}


def test_delete_stopped_removes_state_and_cgroups(runtime, make_container):
    c = make_container("delete", args=["/bin/true"])
    assert c.wait() == {"exit": 0}
    cgroups_path = c.config["linux"]["cgroupsPath"]
    runtime("delete", c.cid)
    gone = runtime("state", c.cid, check=False)
    assert gone.returncode != 0 and "does not exist" in gone.stderr
    assert not os.path.exists(os.path.join(runtime.root, c.cid))
    assert cgroup_dirs(cgroups_path) == []


def test_delete_force_kills_a_running_one(runtime, make_container):
    c = make_container("force")
    refused = runtime("delete", c.cid, check=False)
    assert refused.returncode != 0
    runtime("delete", "--force", c.cid)
    assert c.wait() == {"signal": 9}
    assert runtime("state", c.cid, check=False).returncode != 0
    assert cgroup_dirs(c.config["linux"]["cgroupsPath"]) == []


def test_list_shows_the_container(runtime, make_container):
    c = make_container("list")
    rows = [line.split() for line in runtime("list").stdout.splitlines()]
    assert rows[0][:2] == ["ID", "PID"]
    row = next(r for r in rows[1:] if r[0] == c.cid)
    assert row[1:3] == [str(c.pid), "running"]


def test_ps_json_gives_host_pids(runtime, make_container):
    c = make_container("ps", args=["/bin/sh", "-c", "sleep 3600 & echo ready; wait"])
    c.wait_output("ready")
    pids = json.loads(runtime("ps", "--format", "json", c.cid).stdout)
    assert c.pid in pids and len(pids) == 2
    child = next(p for p in pids if p != c.pid)
    with open("/proc/%d/stat" % child) as f:
        assert int(f.read().rsplit(")", 1)[1].split()[1]) == c.pid   # a host PID whose parent is the init


def test_pause_and_resume_freeze_the_cgroup(runtime, make_container):
    c = make_container("pause")
    freezer = [d for d in cgroup_dirs(c.config["linux"]["cgroupsPath"]) if "/freezer/" in d]
    assert freezer, "no freezer cgroup for %s" % c.cid
    runtime("pause", c.cid)
    assert runtime.state(c.cid)["status"] == "paused"
    with open(os.path.join(freezer[0], "freezer.state")) as f:
        assert f.read().strip() == "FROZEN"
    runtime("resume", c.cid)
    assert runtime.state(c.cid)["status"] == "running"
    with open(os.path.join(freezer[0], "freezer.state")) as f:
        assert f.read().strip() == "THAWED"


# ------------------------------------------------------------------ exec

def test_exec_process_file(runtime, make_container, tmp_path):
    c = make_container("execp")
    process = dict(c.config["process"], args=["/bin/sh", "-c", "echo exec-out; hostname; exit 3"], terminal=False)
    path = tmp_path / "process.json"
    path.write_text(json.dumps(process))
    done = runtime("exec", "--process", path, c.cid, check=False)
    assert done.returncode == 3, done.stderr
    assert done.stdout.split() == ["exec-out", c.config["hostname"]]


def test_exec_args(runtime, make_container):
    c = make_container("execa")
    done = runtime("exec", c.cid, "/bin/sh", "-c", "echo $$; exit 4", check=False)
    assert done.returncode == 4, done.stderr
    assert int(done.stdout) > 1           # a PID of the container's namespace, not 1


def test_exec_detach_pid_file_joins_the_namespaces(runtime, make_container, tmp_path):
    c = make_container("execd")
    pid_file = tmp_path / "exec.pid"
    # the detached process inherits the runtime's stdio: files, not pipes (a pipe would stay
    # open as long as the process lives)
    with open(tmp_path / "exec.err", "wb") as err:
        done = subprocess.run(runtime.argv("exec", "--detach", "--pid-file", pid_file, c.cid, "/bin/sleep", "3600"),
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, timeout=60)
    assert done.returncode == 0, (tmp_path / "exec.err").read_text()
    pid = int(pid_file.read_text())
    for kind in ("pid", "mnt", "net", "uts", "ipc"):
        assert ns_inode(pid, kind) == ns_inode(c.pid, kind), kind
    assert pid in json.loads(runtime("ps", "--format", "json", c.cid).stdout)


def test_exec_in_a_stopped_container_fails(runtime, make_container):
    c = make_container("execs", args=["/bin/true"])
    c.wait()
    done = runtime("exec", c.cid, "/bin/true", check=False)
    assert done.returncode != 0 and done.stderr.strip()


# ------------------------------------------------------------------ features, errors, --root

def test_features_json(runtime):
    features = json.loads(runtime("features", root=False).stdout)
    assert features["ociVersionMin"].startswith("1.")
    assert {"prestart", "createRuntime", "poststart", "poststop"} <= set(features["hooks"])
    assert {"bind", "ro", "nosuid"} <= set(features["mountOptions"])
    assert "pid" in features["linux"]["namespaces"]


@pytest.mark.parametrize("command", [("state",), ("start",), ("kill",), ("delete",), ("ps",), ("pause",)])
def test_unknown_id_does_not_exist(runtime, command):
    done = runtime(*command, "ocit-no-such-container", check=False)
    assert done.returncode != 0
    assert "does not exist" in done.stderr
    assert "Traceback" not in done.stderr


def test_error_as_json_log_line(runtime, tmp_path):
    log = tmp_path / "runtime.log"
    done = runtime("--log", log, "--log-format", "json", "state", "ocit-no-such-container", check=False)
    assert done.returncode != 0
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    errors = [line for line in lines if line.get("level") == "error"]
    assert errors and "does not exist" in errors[-1]["msg"]
    assert "time" in errors[-1]


def test_root_is_honoured(runtime, make_container, oci_workdir):
    c = make_container("root", start=False)
    assert os.path.isdir(os.path.join(runtime.root, c.cid))
    other = os.path.join(oci_workdir, "other-root")
    os.makedirs(other, exist_ok=True)
    elsewhere = subprocess.run([runtime.path, "--root", other, "state", c.cid], capture_output=True, text=True)
    assert elsewhere.returncode != 0 and "does not exist" in elsewhere.stderr


# ------------------------------------------------------------------ console socket

def _receive_fd(server, received):
    conn, _ = server.accept()
    with conn:
        fds = array.array("i")
        msg, ancdata, _flags, _addr = conn.recvmsg(4096, socket.CMSG_SPACE(fds.itemsize))
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[:len(data) - (len(data) % fds.itemsize)])
        received.extend(fds)


def test_console_socket_receives_the_pty_master(runtime, make_container, oci_workdir):
    sock_path = os.path.join(oci_workdir, unique_id("console") + ".sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    server.listen(1)
    received = []
    thread = threading.Thread(target=_receive_fd, args=(server, received), daemon=True)
    thread.start()

    def edit(config):
        config["process"]["terminal"] = True
        config["process"]["args"] = ["/bin/sh", "-c", "tty; echo console-done; sleep 3600"]

    try:
        c = make_container("tty", edit=edit, start=False, create_args=("--console-socket", sock_path))
        thread.join(10)
        assert len(received) == 1, "no file descriptor received on the console socket"
        master = received[0]
        mode = os.fstat(master).st_mode
        assert stat.S_ISCHR(mode) and os.major(os.fstat(master).st_rdev) == 5   # /dev/ptmx's major
        c.start()
        output = b""
        while b"console-done" not in output:
            chunk = os.read(master, 4096)
            assert chunk, "the pty closed before the container printed"
            output += chunk
        assert re.search(rb"/dev/pts/\d+", output), output
        assert b"\r\n" in output          # a terminal's line discipline (ONLCR)
        os.close(master)
    finally:
        server.close()
        os.unlink(sock_path)


# ------------------------------------------------------------------ hooks

HOOK_KINDS_HOST = ("prestart", "createRuntime", "poststart", "poststop")


def test_hooks_run_with_the_state_on_stdin(runtime, make_container, tmp_path):
    hooks_dir = tmp_path / "hooks"
    hooks_dir.mkdir()

    def edit(config):
        config["hooks"] = {kind: [{"path": "/bin/sh", "args": ["sh", "-c", 'cat > "%s/%s.json"' % (hooks_dir, kind)]}]
                           for kind in HOOK_KINDS_HOST}
        # createContainer runs in the container's mount namespace before pivot_root (host
        # paths still resolve); startContainer after it, so its path and files are the container's
        config["hooks"]["createContainer"] = [{"path": "/bin/sh", "args": [
            "sh", "-c", 'cat > "%s/createContainer.json"' % hooks_dir]}]
        config["mounts"].append({"destination": "/hooks", "type": "bind", "source": str(hooks_dir),
                                 "options": ["rbind", "rw"]})
        config["hooks"]["startContainer"] = [{"path": "/bin/sh", "args": [
            "sh", "-c", "cat > /hooks/startContainer.json"]}]

    c = make_container("hooks", edit=edit, start=False)

    def ran(kind):
        path = hooks_dir / ("%s.json" % kind)
        return json.loads(path.read_text()) if path.exists() else None

    for kind in ("prestart", "createRuntime", "createContainer"):
        state = ran(kind)
        assert state and state["id"] == c.cid, kind
        assert os.path.realpath(state["bundle"]) == os.path.realpath(c.bundle)
    # the hooks of the runtime namespace see the init by its host PID
    assert ran("prestart")["pid"] == ran("createRuntime")["pid"] == c.pid
    assert ran("startContainer") is None
    if is_pysandbox(runtime.path):
        # the spec runs poststart after start; runc 1.1 runs it at the end of create
        assert ran("poststart") is None
    c.start()
    assert ran("startContainer")["id"] == c.cid
    assert ran("poststart")["id"] == c.cid
    assert ran("poststop") is None
    runtime("delete", "--force", c.cid)
    assert ran("poststop")["id"] == c.cid


def test_failing_prestart_hook_fails_create(runtime, oci_workdir):
    from ocitools import Container, make_bundle
    cid = unique_id("hookfail")

    def edit(config):
        config["hooks"] = {"prestart": [{"path": "/bin/false"}]}

    bundle = make_bundle(oci_workdir, cid, edit=edit)
    try:
        with pytest.raises(AssertionError, match="create"):
            Container(runtime, bundle, cid)
        assert runtime("state", cid, check=False).returncode != 0
    finally:
        runtime("delete", "--force", cid, check=False)
        assert cgroup_dirs("/" + cid) == []


# ------------------------------------------------------------------ config.json honoured

CAPS = ["CAP_CHOWN", "CAP_NET_BIND_SERVICE"]          # bits 0 and 10
PROBE = r"""
echo "hostname=$(hostname)"
echo "env=$OCIT_VAR"
echo "cwd=$(pwd)"
echo "uid=$(id -u) gid=$(id -g) groups=$(id -G)"
grep -E '^(NoNewPrivs|Cap(Inh|Prm|Eff|Bnd|Amb)):' /proc/self/status
grep -E '^Max open files' /proc/self/limits
touch /rootfile 2>/dev/null && echo root=rw || echo root=ro
echo "secret=[$(cat /etc/secret)]"
echo "maskeddir=[$(ls /etc/maskeddir)]"
echo "bound=$(cat /data/hello)"
touch /data-ro/x 2>/dev/null && echo bindro=rw || echo bindro=ro
touch /scratch/x && echo scratch=rw
touch /etc/ro/x 2>/dev/null && echo ropath=rw || echo ropath=ro
cat /proc/self/mountinfo
echo END
exec sleep 3600
"""


@pytest.fixture(scope="module")
def probe(runtime, oci_workdir, request):
    """One container carrying many settings of config.json; its report (stdout) and host
    view, while it still runs."""
    from ocitools import Container, make_bundle
    data = os.path.join(oci_workdir, "probe-data")
    os.makedirs(data, exist_ok=True)
    with open(os.path.join(data, "hello"), "w") as f:
        f.write("from-the-host\n")
    cid = unique_id("probe")

    def edit(config):
        process = config["process"]
        process["env"].append("OCIT_VAR=from-config")
        process["cwd"] = "/tmp"
        process["user"] = {"uid": 1000, "gid": 1001, "additionalGids": [10, 20]}
        process["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1024}]
        process["noNewPrivileges"] = True
        process["capabilities"] = {k: list(CAPS) for k in ("bounding", "effective", "permitted", "inheritable",
                                                           "ambient")}
        config["hostname"] = "ocit-probe"
        config["root"]["readonly"] = True
        linux = config["linux"]
        linux["maskedPaths"] = linux.get("maskedPaths", []) + ["/etc/secret", "/etc/maskeddir"]
        linux["readonlyPaths"] = linux.get("readonlyPaths", []) + ["/etc/ro"]
        linux["resources"] = {"memory": {"limit": 64 * 1024 * 1024}, "pids": {"limit": 50}}
        config["mounts"] += [
            {"destination": "/data", "type": "bind", "source": data, "options": ["rbind", "rw"]},
            {"destination": "/data-ro", "type": "bind", "source": data, "options": ["rbind", "ro"]},
            {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=1777", "size=1m"]},
            # a writable tmpfs under /etc so /etc/ro exists to be made read-only
            {"destination": "/etc/ro", "type": "tmpfs", "source": "tmpfs", "options": ["size=64k"]},
        ]

    bundle = make_bundle(oci_workdir, cid, edit=edit, args=["/bin/sh", "-c", PROBE])
    rootfs = os.path.join(bundle, "rootfs")
    with open(os.path.join(rootfs, "etc", "secret"), "w") as f:
        f.write("do-not-show")
    os.makedirs(os.path.join(rootfs, "etc", "maskeddir"))
    with open(os.path.join(rootfs, "etc", "maskeddir", "inside"), "w") as f:
        f.write("x")
    c = Container(runtime, bundle, cid)
    try:
        c.start()
        out = c.wait_output("END")
        lines = out.splitlines()
        values = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith(" "))
        status = dict(line.split(":\t", 1) for line in lines if ":\t" in line)
        mounts = {line.split()[4]: line for line in lines if len(line.split()) > 9 and line.split()[4].startswith("/")}
        host = {"cgroups": cgroup_dirs(c.config["linux"]["cgroupsPath"]), "pid": c.pid,
                "status": proc_status(c.pid)}
        yield {"values": values, "status": status, "mounts": mounts, "lines": lines, "host": host}
    finally:
        c.destroy()
        left = cgroup_dirs("/" + cid)
        assert not left, "cgroups left after delete: %s" % left


def test_config_hostname_env_cwd(probe):
    v = probe["values"]
    assert (v["hostname"], v["env"], v["cwd"]) == ("ocit-probe", "from-config", "/tmp")


def test_config_user_and_additional_gids(probe):
    assert probe["values"]["uid"] == "1000 gid=1001 groups=1001 10 20"
    host = probe["host"]["status"]
    assert host["Uid"].split()[0] == "1000" and host["Gid"].split()[0] == "1001"   # no user namespace
    assert sorted(host["Groups"].split()) == ["10", "20"]


def test_config_capabilities_all_five_sets(probe):
    expected = "%016x" % ((1 << 0) | (1 << 10))
    for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert probe["status"][name].strip() == expected, name


def test_config_no_new_privileges(probe):
    assert probe["status"]["NoNewPrivs"].strip() == "1"


def test_config_rlimit_soft_and_hard(probe):
    line = next(l for l in probe["lines"] if l.startswith("Max open files"))
    assert line.split()[3:5] == ["512", "1024"]


def test_config_readonly_root(probe):
    assert probe["values"]["root"] == "ro"
    assert "ro" in probe["mounts"]["/"].split()[5].split(",")


def test_config_masked_paths(probe):
    v = probe["values"]
    assert v["secret"] == "[]" and v["maskeddir"] == "[]"


def test_config_readonly_paths(probe):
    assert probe["values"]["ropath"] == "ro"
    assert "ro" in probe["mounts"]["/etc/ro"].split()[5].split(",")


def test_config_bind_mounts(probe):
    v = probe["values"]
    assert v["bound"] == "from-the-host" and v["bindro"] == "ro"


def test_config_tmpfs_with_size(probe):
    line = probe["mounts"]["/scratch"]
    fields = line.split(" - ", 1)[1].split()
    assert fields[0] == "tmpfs"
    assert "size=1024k" in fields[2].split(","), line
    assert {"nosuid", "nodev"} <= set(line.split()[5].split(","))
    assert probe["values"]["scratch"] == "rw"


def test_config_memory_and_pids_limits_in_the_cgroup(probe):
    cgroups = probe["host"]["cgroups"]
    memory = next(d for d in cgroups if "/memory/" in d)
    pids = next(d for d in cgroups if "/pids/" in d)
    with open(os.path.join(memory, "memory.limit_in_bytes")) as f:
        assert int(f.read()) == 64 * 1024 * 1024
    with open(os.path.join(pids, "pids.max")) as f:
        assert f.read().strip() == "50"
    with open(os.path.join(memory, "cgroup.procs")) as f:
        assert str(probe["host"]["pid"]) in f.read().split()


# ------------------------------------------------------------------ user namespace

def test_user_namespace_with_id_mappings(runtime, make_container):
    def edit(config):
        linux = config["linux"]
        linux["namespaces"].append({"type": "user"})
        linux["uidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 1000},
                                {"containerID": 1000, "hostID": 300000, "size": 10}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 1000}]
        # sysfs needs the network namespace owned by the user namespace (it is: both new)

    c = make_container("userns", edit=edit, args=["/bin/sh", "-c", "echo uid=$(id -u); cat /proc/self/uid_map; echo END; "
                                                         "exec sleep 3600"])
    out = c.wait_output("END")
    assert "uid=0" in out, out
    with open("/proc/%d/uid_map" % c.pid) as f:
        uid_map = [line.split() for line in f]
    assert uid_map == [["0", "200000", "1000"], ["1000", "300000", "10"]]
    with open("/proc/%d/gid_map" % c.pid) as f:
        assert [line.split() for line in f] == [["0", "200000", "1000"]]
    status = proc_status(c.pid)
    assert status["Uid"].split()[0] == "200000" and status["Gid"].split()[0] == "200000"
    assert ns_inode(c.pid, "user") != ns_inode(os.getpid(), "user")


# ------------------------------------------------------------------ more of the command line

def test_version(runtime):
    done = runtime("--version", root=False)
    assert done.stdout.strip() and "version" in done.stdout.lower()


def test_update_resources_from_stdin(runtime, make_container):
    def edit(config):
        config["linux"]["resources"] = {"memory": {"limit": 64 * 1024 * 1024}, "pids": {"limit": 50}}

    c = make_container("update", edit=edit)
    runtime("update", "--resources", "-", c.cid,
            input=json.dumps({"memory": {"limit": 32 * 1024 * 1024}, "pids": {"limit": 30}}))
    dirs = cgroup_dirs(c.config["linux"]["cgroupsPath"])
    with open(os.path.join(next(d for d in dirs if "/memory/" in d), "memory.limit_in_bytes")) as f:
        assert int(f.read()) == 32 * 1024 * 1024
    with open(os.path.join(next(d for d in dirs if "/pids/" in d), "pids.max")) as f:
        assert f.read().strip() == "30"


def test_run_in_the_foreground(runtime, oci_workdir):
    from ocitools import make_bundle
    cid = unique_id("run")
    bundle = make_bundle(oci_workdir, cid, args=["/bin/sh", "-c", "echo run-out; exit 5"])
    try:
        done = runtime("run", "--bundle", bundle, cid, check=False)
        assert (done.returncode, done.stdout) == (5, "run-out\n"), done.stderr
        # run is create + start + wait + delete: nothing is left of it
        assert runtime("state", cid, check=False).returncode != 0
        assert cgroup_dirs("/" + cid) == []
    finally:
        runtime("delete", "--force", cid, check=False)


def test_kill_all_reaches_every_process(runtime, make_container):
    c = make_container("killall", args=["/bin/sh", "-c", "sleep 3600 & sleep 3600 & echo ready; wait"])
    c.wait_output("ready")
    pids = json.loads(runtime("ps", "--format", "json", c.cid).stdout)
    assert len(pids) == 3
    runtime("kill", "--all", c.cid, "KILL")
    assert c.wait() == {"signal": 9}
    wait_until(lambda: not any(os.path.exists("/proc/%d/stat" % p) and _state_of(p) != "Z" for p in pids),
               what="every process of the container to end")


def _state_of(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def test_ps_table(runtime, make_container):
    c = make_container("pstable")
    lines = runtime("ps", c.cid).stdout.splitlines()
    header = lines[0].split()
    assert "PID" in header
    column = header.index("PID")
    assert str(c.pid) in [line.split()[column] for line in lines[1:]]


def test_create_flags_engines_send(runtime, make_container):
    # containerd's shim and conmon send these; they must be accepted
    c = make_container("flags", create_args=("--no-new-keyring",))
    assert runtime.state(c.cid)["status"] == "running"


def test_preserve_fds(runtime, oci_workdir):
    from ocitools import make_bundle
    cid = unique_id("fds")
    bundle = make_bundle(oci_workdir, cid, args=["/bin/sh", "-c", "echo via-fd3 >&3"])
    target = os.path.join(bundle, "fd3.out")
    script = 'exec 3>"$1"; shift; exec "$@"'
    try:
        done = subprocess.run(["/bin/sh", "-c", script, "sh", target,
                               *runtime.argv("run", "--preserve-fds", "1", "--bundle", bundle, cid)],
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr
        with open(target) as f:
            assert f.read() == "via-fd3\n"
    finally:
        runtime("delete", "--force", cid, check=False)


def test_concurrent_execs(runtime, make_container):
    from concurrent.futures import ThreadPoolExecutor
    c = make_container("concurrent")
    with ThreadPoolExecutor(max_workers=5) as pool:
        results = list(pool.map(lambda i: runtime("exec", c.cid, "/bin/sh", "-c", "echo $$", check=False),
                                range(5)))
    assert [r.returncode for r in results] == [0] * 5, [r.stderr for r in results]
    assert len({r.stdout for r in results}) == 5
    assert runtime.state(c.cid)["status"] == "running"


def test_exec_tty_through_the_console_socket(runtime, make_container, oci_workdir):
    c = make_container("exectty")
    sock_path = os.path.join(oci_workdir, unique_id("execconsole") + ".sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    server.listen(1)
    received = []
    thread = threading.Thread(target=_receive_fd, args=(server, received), daemon=True)
    thread.start()
    err_path = os.path.join(oci_workdir, unique_id("execerr"))
    try:
        with open(err_path, "wb") as err:
            # as containerd's shim does: a terminal exec is detached, its pty master sent to the socket
            proc = subprocess.Popen(runtime.argv("exec", "--detach", "--tty", "--console-socket", sock_path,
                                                 "--pid-file", err_path + ".pid", c.cid,
                                                 "/bin/sh", "-c", "tty; echo exec-tty-done; sleep 3600"),
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        thread.join(20)
        assert len(received) == 1, "no pty master received for exec --tty"
        master = received[0]
        output = b""
        while b"exec-tty-done" not in output:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        assert proc.wait(timeout=30) == 0, open(err_path).read()
        assert re.search(rb"/dev/pts/\d+", output) and b"exec-tty-done" in output, output
        with open(err_path + ".pid") as f:
            assert int(f.read()) in json.loads(runtime("ps", "--format", "json", c.cid).stdout)
        os.close(master)
    finally:
        server.close()
        os.unlink(sock_path)
