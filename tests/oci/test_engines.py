"""The OCI runtime under test registered with real engines, each private to the test:
a dockerd (`--add-runtime`, and a daemon.json entry with runtimeArgs), Podman
(`--runtime PATH`, private storage and configuration) and containerd's runc shim with
BinaryName (`ctr run --runtime io.containerd.runc.v2 --runc-binary PATH`, the path a
Kubernetes RuntimeClass handler takes). Images are imported from a busybox-static root;
no registry is reachable here."""
import contextlib
import json
import os
import pty
import select
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from livetargets import busybox_root, private_dockerd, require, stage_dir  # noqa: F401  (stage_dir: fixture)
from ocitools import is_pysandbox
from test_live_containerd import containerd  # noqa: F401  (fixture: a private containerd)
from util import wait_until

pytestmark = [pytest.mark.root_only, pytest.mark.slow]

STRICT_ARGS = ["--profile", "strict"]
IMAGE_APPLETS = ("sh", "sleep", "cat", "echo", "id", "pwd", "true", "touch", "tty")


def strict_runtime_args(runtime):
    """daemon.json runtimeArgs of the strict entry: pysandbox-oci's --profile strict; the
    reference runtime has no profiles, so it gets a global flag it accepts (--debug) and
    the plumbing is exercised all the same."""
    return STRICT_ARGS if is_pysandbox(runtime) else ["--debug"]


def on_a_terminal(argv, env, timeout=60, input_text=None):
    """Run argv with a pty as its stdin/stdout/stderr (docker -t wants a terminal there);
    returns (exit code, everything it wrote)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True,
                            start_new_session=True)
    os.close(slave)
    output = b""
    if input_text:
        os.write(master, input_text.encode())
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            try:
                chunk = os.read(master, 4096)
            except OSError:           # EIO: every holder of the slave has closed it
                break
            if not chunk:
                break
            output += chunk
        return proc.wait(timeout=max(1.0, deadline - time.monotonic())), output.decode("utf-8", "replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


# ------------------------------------------------------------------ Docker

@pytest.fixture(scope="module")
def docker(oci_runtime, oci_root_only, stage_dir, tmp_path_factory):  # noqa: F811
    """One private dockerd for the module: the runtime registered as `pysbx` by
    --add-runtime and as `pysbx-strict` by daemon.json with runtimeArgs."""
    conf = tmp_path_factory.mktemp("dockerd-conf") / "daemon.json"
    conf.write_text(json.dumps({"runtimes": {"pysbx-strict": {"path": oci_runtime,
                                                              "runtimeArgs": strict_runtime_args(oci_runtime)}}}))
    with contextlib.contextmanager(private_dockerd)(
            stage_dir, extra_args=["--config-file", str(conf), "--add-runtime", "pysbx=" + oci_runtime]) as daemon:
        runtimes = json.loads(daemon.cli("info", "--format", "{{json .Runtimes}}"))
        assert {"pysbx", "pysbx-strict"} <= set(runtimes), runtimes
        # an image of our own with the applets these tests call by name (true, touch, tty)
        work = tmp_path_factory.mktemp("docker-image")
        root = busybox_root(str(work / "root"), applets=IMAGE_APPLETS)
        subprocess.run(["tar", "-C", root, "-cf", str(work / "root.tar"), "."], check=True)
        daemon.image = "pysbx-ocit:1"
        daemon.cli("import", str(work / "root.tar"), daemon.image)
        yield daemon


_names = [0]


def name(tag):
    _names[0] += 1
    return "ocit-%s-%d" % (tag, _names[0])


def drun(docker, *args, runtime="pysbx", check=False, input=None, timeout=60):
    """docker run --runtime R ARGS (ARGS end with the image and command)."""
    return subprocess.run(["docker", "run", "--runtime", runtime, *args], capture_output=True, text=True,
                          env=docker.env, input=input, timeout=timeout,
                          stdin=None if input is not None else subprocess.DEVNULL)


def detached(docker, tag, *opts, cmd=("sleep", "3600"), runtime="pysbx"):
    cname = name(tag)
    docker.cli("run", "-d", "--runtime", runtime, "--name", cname, *opts, docker.image, *cmd)
    return cname


def inspect(docker, cname, fmt):
    return docker.cli("inspect", "-f", fmt, cname)


def wait_exit(docker, cname):
    """`docker wait` (blocks until the container ends) -> its exit code."""
    return int(docker.cli("wait", cname, timeout=60))


@pytest.fixture
def cleanup(docker):
    names = []
    yield names
    if names:
        docker.cli("rm", "-f", *names, check=False, timeout=120)


def test_docker_run_rm_true(docker):
    cname = name("true")
    done = drun(docker, "--rm", "--name", cname, docker.image, "true")
    assert done.returncode == 0, done.stderr
    assert cname not in docker.cli("ps", "-a", "--format", "{{.Names}}").split()


def test_docker_uses_the_runtime(docker, cleanup):
    cname = detached(docker, "which")
    cleanup.append(cname)
    assert inspect(docker, cname, "{{.HostConfig.Runtime}}") == "pysbx"
    # the shim's runtime binary is ours: containerd-shim-runc-v2 records it in options.json
    cid = inspect(docker, cname, "{{.Id}}")
    bundle_options = []
    for dirpath, _dirs, files in os.walk(docker.root):
        if os.path.basename(dirpath) == cid and "options.json" in files:
            bundle_options.append(os.path.join(dirpath, "options.json"))
    require(bundle_options, "the runc shim's options.json was not found under the exec root")
    with open(bundle_options[0]) as f:
        assert json.load(f).get("binary_name") == os.path.realpath(docker_runtime_path(docker))


def docker_runtime_path(docker):
    return json.loads(docker.cli("info", "--format", "{{json .Runtimes}}"))["pysbx"]["path"]


def test_docker_exit_code(docker):
    done = drun(docker, "--rm", docker.image, "sh", "-c", "exit 7")
    assert done.returncode == 7, done.stderr


def test_docker_kill_is_a_signal_death(docker, cleanup):
    cname = detached(docker, "kill")
    cleanup.append(cname)
    docker.cli("kill", cname)
    assert wait_exit(docker, cname) == 128 + 9


def test_docker_kill_with_a_signal(docker, cleanup):
    cname = detached(docker, "killterm", cmd=("sh", "-c", "trap 'exit 42' TERM; echo ready; sleep 3600 & wait"))
    cleanup.append(cname)
    wait_until(lambda: "ready" in docker.cli("logs", cname), what="the trap to be set")
    docker.cli("kill", "-s", "TERM", cname)
    assert wait_exit(docker, cname) == 42


def test_docker_stdin(docker):
    done = drun(docker, "--rm", "-i", docker.image, "sh", "-c", "cat; echo done", input="from-stdin\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "from-stdin\ndone\n"


def test_docker_terminal(docker):
    rc, out = on_a_terminal(["docker", "run", "--rm", "-t", "--runtime", "pysbx", docker.image,
                             "sh", "-c", "/bin/busybox tty; echo tty-done"], docker.env)
    assert rc == 0, out
    assert "/dev/pts/" in out and "tty-done" in out


def test_docker_exec_with_and_without_terminal(docker, cleanup):
    cname = detached(docker, "exec")
    cleanup.append(cname)
    done = subprocess.run(["docker", "exec", cname, "sh", "-c", "echo $((20+1)); exit 3"], capture_output=True,
                          text=True, env=docker.env, timeout=60)
    assert (done.returncode, done.stdout) == (3, "21\n"), done.stderr
    rc, out = on_a_terminal(["docker", "exec", "-t", cname, "sh", "-c", "/bin/busybox tty"], docker.env)
    assert rc == 0 and "/dev/pts/" in out, out
    done = subprocess.run(["docker", "exec", "-i", cname, "cat"], capture_output=True, text=True, env=docker.env,
                          input="exec-stdin", timeout=60)
    assert done.stdout == "exec-stdin"


def test_docker_stop_sigterm_first(docker, cleanup):
    cname = detached(docker, "stopterm", cmd=("sh", "-c", "trap 'exit 3' TERM; echo ready; sleep 3600 & wait"))
    cleanup.append(cname)
    wait_until(lambda: "ready" in docker.cli("logs", cname), what="the trap to be set")
    docker.cli("stop", "-t", "30", cname)
    assert int(inspect(docker, cname, "{{.State.ExitCode}}")) == 3


def test_docker_stop_kills_after_the_timeout(docker, cleanup):
    # sleep as PID 1 has no handler: SIGTERM is ignored, the kill follows the timeout
    cname = detached(docker, "stopkill")
    cleanup.append(cname)
    docker.cli("stop", "-t", "1", cname)
    assert int(inspect(docker, cname, "{{.State.ExitCode}}")) == 137
    assert inspect(docker, cname, "{{.State.Status}}") == "exited"


def test_docker_pause_unpause(docker, cleanup):
    cname = detached(docker, "pause")
    cleanup.append(cname)
    docker.cli("pause", cname)
    assert inspect(docker, cname, "{{.State.Status}}") == "paused"
    pid = int(inspect(docker, cname, "{{.State.Pid}}"))
    cgroup = [line.split(":", 2)[2].strip() for line in open("/proc/%d/cgroup" % pid) if ":freezer:" in line][0]
    with open("/sys/fs/cgroup/freezer%s/freezer.state" % cgroup) as f:
        assert f.read().strip() == "FROZEN"
    docker.cli("unpause", cname)
    assert inspect(docker, cname, "{{.State.Status}}") == "running"
    assert docker.cli("exec", cname, "echo", "thawed") == "thawed"


def test_docker_top(docker, cleanup):
    cname = detached(docker, "top")
    cleanup.append(cname)
    pid = inspect(docker, cname, "{{.State.Pid}}")
    rows = docker.cli("top", cname, "-o", "pid,args").splitlines()[1:]
    assert [row.split(None, 1) for row in rows] == [[pid, "sleep 3600"]]


def test_docker_memory_limit_visible_inside(docker):
    done = drun(docker, "--rm", "--memory", "64m", docker.image, "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == 64 * 1024 * 1024


def test_docker_user_env_workdir(docker):
    done = drun(docker, "--rm", "--user", "1000:1001", "-e", "OCIT_VAR=from-docker", "-w", "/tmp", docker.image,
                "sh", "-c", 'echo "$(id -u):$(id -g) $OCIT_VAR $(pwd)"')
    assert done.returncode == 0, done.stderr
    assert done.stdout == "1000:1001 from-docker /tmp\n"


def test_docker_bind_mount(docker, tmp_path):
    (tmp_path / "hello").write_text("from-the-host\n")
    done = drun(docker, "--rm", "-v", "%s:/data" % tmp_path, docker.image,
                "sh", "-c", "cat /data/hello; echo written > /data/back")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "from-the-host\n"
    assert (tmp_path / "back").read_text() == "written\n"


def test_docker_read_only(docker):
    done = drun(docker, "--rm", "--read-only", docker.image, "sh", "-c", "/bin/busybox touch /x")
    assert done.returncode != 0
    assert "Read-only file system" in done.stderr + done.stdout


def test_docker_runtime_error_reaches_the_user(docker):
    done = drun(docker, "--rm", docker.image, "/no/such/binary")
    assert done.returncode == 127
    assert "no such file or directory" in done.stderr.lower() and "/no/such/binary" in done.stderr


def test_docker_strict_entry_runs(docker):
    done = drun(docker, "--rm", docker.image, "true", runtime="pysbx-strict")
    assert done.returncode == 0, done.stderr


def test_docker_strict_container_audited(docker, cleanup, oci_runtime):
    cname = detached(docker, "strict", runtime="pysbx-strict")
    cleanup.append(cname)
    audit = os.path.join(os.path.dirname(sys.executable), "audit")
    done = subprocess.run([audit, cname, "--format", "json"], capture_output=True, text=True, env=docker.env,
                          timeout=120)
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    assert report["target"]["runtime"] == "docker" and report["target"]["name"] == cname
    high = sorted(f["id"] for f in report["findings"]
                  if f["status"] == "fail" and f["severity"] in ("critical", "high"))
    if is_pysandbox(oci_runtime):
        assert "pysandbox" in json.dumps(report["target"]), report["target"]   # names our runtime
        assert high == [], high
    else:
        # runc's default Docker container: root in the host's user namespace is high or above
        assert high, "runc's container should fail checks of high severity"


def _host_view(pid):
    with open("/proc/%d/uid_map" % pid) as f:
        uid_map = [line.split() for line in f]
    with open("/proc/%d/status" % pid) as f:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    return uid_map, status


def test_docker_strict_container_seen_from_the_host(docker, cleanup, oci_runtime):
    if not is_pysandbox(oci_runtime):
        pytest.skip("profiles are pysandbox-oci's: the reference runtime runs the entry as the default")
    cname = detached(docker, "strict-host", runtime="pysbx-strict")
    cleanup.append(cname)
    uid_map, status = _host_view(int(inspect(docker, cname, "{{.State.Pid}}")))
    assert uid_map != [["0", "0", "4294967295"]], "strict gives the container a user namespace"
    assert int(uid_map[0][1]) != 0 and status["Uid"].split()[0] != "0"      # root inside is no host root
    assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == "2"


def test_docker_strict_refuses_what_it_forbids(docker, oci_runtime):
    if not is_pysandbox(oci_runtime):
        pytest.skip("profiles are pysandbox-oci's: the reference runtime has nothing to refuse")
    for opts in (["--cap-add", "SYS_ADMIN"], ["--pid", "host"], ["-v", "/:/host"]):
        done = drun(docker, "--rm", *opts, docker.image, "true", runtime="pysbx-strict")
        assert done.returncode != 0, opts
        assert "strict" in done.stderr and "Traceback" not in done.stderr, (opts, done.stderr)
    # the same through the default entry: exactly what the spec asks, like runc
    done = drun(docker, "--rm", "--cap-add", "SYS_ADMIN", docker.image, "true")
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------------ Podman

def _libpod_cgroups():
    """Podman's cgroups (cgroupfs manager): libpod_parent and what is under it, in every
    hierarchy; a test removes those that were not there before it."""
    found = set()
    base = "/sys/fs/cgroup"
    for h in os.listdir(base):
        top = os.path.join(base, h, "libpod_parent")
        for dirpath, _dirs, _files in os.walk(top):
            found.add(dirpath)
    return found


@pytest.fixture(scope="module")
def podman(oci_runtime, oci_root_only):
    """Podman with private storage and configuration (cgroupfs, file events, no network),
    the runtime under test given with --runtime; default_ulimits below this host's hard
    limits (Podman's own defaults need CAP_SYS_RESOURCE, which root lacks here)."""
    binary = shutil.which("podman")
    require(bool(binary), "podman is not installed (apt-get install podman)")
    before = _libpod_cgroups()
    work = tempfile.mkdtemp(prefix="pysbx-ocit-podman-", dir="/tmp")
    with open(os.path.join(work, "storage.conf"), "w") as f:
        f.write('[storage]\ndriver = "overlay"\ngraphroot = "%s/storage"\nrunroot = "%s/run"\n' % (work, work))
    with open(os.path.join(work, "containers.conf"), "w") as f:
        # No static_dir: conmon's exit command (`podman container cleanup`) gets --root,
        # --runroot and --tmpdir but not this file's static_dir, so it would look for the
        # container in another database and `podman run` would wait 20 s for its cleanup.
        # The default static_dir (GRAPHROOT/libpod) is the same for both.
        f.write('[containers]\nnetns = "none"\ndefault_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n'
                '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
                'tmp_dir = "{w}/tmp"\nevents_logfile_path = "{w}/events.log"\n'.format(w=work))
    env = dict(os.environ, CONTAINERS_STORAGE_CONF=os.path.join(work, "storage.conf"),
               CONTAINERS_CONF=os.path.join(work, "containers.conf"))

    def pm(*args, check=True, input=None):
        done = subprocess.run([binary, "--runtime", oci_runtime, *args], capture_output=True, text=True, timeout=120,
                              env=env, input=input, stdin=None if input is not None else subprocess.DEVNULL)
        assert not check or done.returncode == 0, "podman %s: %s" % (" ".join(args), done.stderr)
        return done

    image = "localhost/pysbx-ocit:1"
    try:
        root = busybox_root(os.path.join(work, "root"), applets=("sh", "sleep", "cat", "echo", "id"))
        subprocess.run(["tar", "-C", root, "-cf", os.path.join(work, "root.tar"), "."], check=True)
        pm("import", os.path.join(work, "root.tar"), image)
        yield pm, image
    finally:
        ids = pm("ps", "-aq", check=False).stdout.split()
        if ids:
            pm("rm", "-f", "-t", "0", *ids, check=False)
        pm("rmi", "-f", image, check=False)
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f if line.split()[4].startswith(work + "/")]
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
        for path in sorted(_libpod_cgroups() - before, key=len, reverse=True):
            try:
                os.rmdir(path)
            except OSError:
                pass


def test_podman_run_and_exit_code(podman):
    pm, image = podman
    done = pm("run", "--rm", image, "sh", "-c", "echo podman-out; exit 7", check=False)
    assert (done.returncode, done.stdout) == (7, "podman-out\n"), done.stderr
    done = pm("run", "--rm", "-i", image, "cat", input="podman-stdin", check=False)
    assert (done.returncode, done.stdout) == (0, "podman-stdin"), done.stderr


def test_podman_exec_and_stop(podman, oci_runtime):
    pm, image = podman
    cname = "ocit-podman-%d" % os.getpid()
    try:
        pm("run", "-d", "--name", cname, image, "sleep", "3600")
        assert pm("inspect", "-f", "{{.OCIRuntime}}", cname).stdout.strip() in (oci_runtime,
                                                                                  os.path.basename(oci_runtime))
        done = pm("exec", cname, "sh", "-c", "echo $((40+2)); exit 5", check=False)
        assert (done.returncode, done.stdout) == (5, "42\n"), done.stderr
        pm("stop", "-t", "1", cname)            # sleep as PID 1 ignores SIGTERM: killed after 1 s
        assert pm("inspect", "-f", "{{.State.ExitCode}}", cname).stdout.strip() == "137"
    finally:
        pm("rm", "-f", "-t", "0", cname, check=False)


def test_podman_strict_by_annotation(podman, oci_runtime):
    pm, image = podman
    if not is_pysandbox(oci_runtime):
        pytest.skip("the annotation org.pysandbox.profile is pysandbox-oci's")
    cname = "ocit-podman-strict-%d" % os.getpid()
    try:
        pm("run", "-d", "--name", cname, "--annotation", "org.pysandbox.profile=strict", image, "sleep", "3600")
        uid_map, status = _host_view(int(pm("inspect", "-f", "{{.State.Pid}}", cname).stdout))
        assert uid_map != [["0", "0", "4294967295"]] and int(status["CapEff"], 16) == 0
        pm("stop", "-t", "1", cname)
    finally:
        pm("rm", "-f", "-t", "0", cname, check=False)


# ------------------------------------------------------------------ containerd (ctr, the runc shim's BinaryName)

def _task(ctr, cid):
    for line in ctr("task", "ls", check=False).splitlines()[1:]:  # TASK PID STATUS
        fields = line.split()
        if fields and fields[0] == cid:
            return fields
    return None


@pytest.fixture(scope="module")
def shim_ctr(containerd, oci_runtime):  # noqa: F811
    """ctr run/exec through io.containerd.runc.v2 with BinaryName = the runtime under test."""
    work, ctr = containerd
    rootfs = busybox_root(os.path.join(work, "ocit-rootfs"), applets=("sh", "sleep", "cat", "echo"))
    sock = os.path.join(work, "containerd.sock")
    ctr_argv = ["ctr", "-a", sock, "-n", "pysandbox-audit"]

    def run_argv(cid, *cmd):
        # no image: no PATH in the process env either, so commands are absolute paths
        return [*ctr_argv, "run", "--rm", "--runtime", "io.containerd.runc.v2", "--runc-binary", oci_runtime,
                "--rootfs", rootfs, cid, *cmd]

    run_argv.ctr_argv = ctr_argv
    return ctr, run_argv


def _ctr_cleanup(ctr, cid):
    ctr("task", "kill", "-s", "SIGKILL", cid, check=False)
    wait_until(lambda: (_task(ctr, cid) or ["", "", "STOPPED"])[2] == "STOPPED", what="the task to stop")
    ctr("task", "delete", cid, check=False)
    ctr("container", "delete", cid, check=False)


def test_ctr_run_exit_code(shim_ctr):
    ctr, run_argv = shim_ctr
    cid = "ocit-ctr-exit-%d" % os.getpid()
    try:
        done = subprocess.run(run_argv(cid, "/bin/sh", "-c", "echo ctr-out; exit 7"), capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)
        assert (done.returncode, done.stdout) == (7, "ctr-out\n"), done.stderr
    finally:
        _ctr_cleanup(ctr, cid)


def test_ctr_exec_and_stop(shim_ctr):
    ctr, run_argv = shim_ctr
    cid = "ocit-ctr-stop-%d" % os.getpid()
    # foreground `ctr run` returns the task's exit status: the SIGTERM handler's code shows
    # the signal arrived
    proc = subprocess.Popen(run_argv(cid, "/bin/sh", "-c", "trap 'exit 9' TERM; sleep 3600 & wait"),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (_task(ctr, cid) or ["", "", ""])[2] == "RUNNING", what="the task to run")
        pid = int(_task(ctr, cid)[1])
        assert os.readlink("/proc/%d/ns/pid" % pid) != os.readlink("/proc/self/ns/pid")
        done = subprocess.run([*run_argv.ctr_argv, "task", "exec", "--exec-id", "e1", cid,
                               "/bin/sh", "-c", "echo $((1+2)); exit 4"],
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert (done.returncode, done.stdout) == (4, "3\n"), done.stderr
        ctr("task", "kill", "-s", "SIGTERM", cid)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 9, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        _ctr_cleanup(ctr, cid)


def test_ctr_kill(shim_ctr):
    ctr, run_argv = shim_ctr
    cid = "ocit-ctr-kill-%d" % os.getpid()
    proc = subprocess.Popen(run_argv(cid, "/bin/sleep", "3600"), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (_task(ctr, cid) or ["", "", ""])[2] == "RUNNING", what="the task to run")
        ctr("task", "kill", "-s", "SIGKILL", cid)
        proc.communicate(timeout=30)
        assert proc.returncode == 137
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        _ctr_cleanup(ctr, cid)
