"""Fixtures for the audit tests: real targets built with util-linux, a private dockerd,
pysandbox sandboxes. Under CI=true a missing tool or feature fails; elsewhere it skips
with the reason."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

import pytest

# one skip helper for the whole suite (skips locally, fails under CI=true); the process
# helpers too
from util import children as _children, comm as _comm, require  # noqa: E402,F401

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUSYBOX = shutil.which("busybox") or "/bin/busybox"


def run_audit(*args, env=None, check_rc=None):
    """Run the CLI as a real process, as a user would: python -m audit ARGS."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = REPO + os.pathsep + full_env.get("PYTHONPATH", "")
    if env:
        full_env.update(env)
    proc = subprocess.run([sys.executable, "-m", "audit", *args], capture_output=True, text=True,
                          env=full_env, timeout=120, cwd=REPO)
    if check_rc is not None:
        assert proc.returncode == check_rc, (proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:])
    return proc


def audit_json(target, *extra, env=None):
    proc = run_audit(str(target), "--format", "json", *extra, env=env)
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout)


def failing(report):
    return {f["id"] for f in report["findings"] if f["status"] == "fail"}


def passing(report):
    return {f["id"] for f in report["findings"] if f["status"] == "pass"}


def finding(report, cid):
    return next(f for f in report["findings"] if f["id"] == cid)


def escape_ids(report):
    return {p["id"] for p in report["escape_paths"]}


def root_only():
    require(os.geteuid() == 0, "live targets need root")


# ------------------------------------------------------------------ util-linux targets

def _ldd(binary):
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        for p in parts:
            if p.startswith("/"):
                libs.append(p)
    return libs


@pytest.fixture(scope="session")
def stage_dir(tmp_path_factory):
    """A minimal root: static busybox (sleep, sh) and util-linux setpriv with its libraries,
    so the target can drop capabilities after chroot without host binaries."""
    for tool in ("unshare", "setpriv", "chroot", "mount", "ldd"):
        require(shutil.which(tool), "util-linux tool %s not installed" % tool)
    require(os.path.exists(BUSYBOX), "busybox-static not installed")
    stage = tmp_path_factory.mktemp("audit-stage")
    for d in ("bin", "usr/bin", "etc", "proc", "dev", "sys", "tmp", "run", "var/run", "host", "usr/lib"):
        (stage / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, stage / "bin/busybox")
    for applet in ("sh", "sleep", "cat", "ls"):
        os.symlink("busybox", stage / "bin" / applet)
    setpriv = shutil.which("setpriv")
    shutil.copy2(setpriv, stage / "usr/bin/setpriv")
    for lib in _ldd(setpriv):
        dest = stage / lib.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(lib), dest)
    (stage / "usr/lib/os-release").write_text('ID=audittest\nPRETTY_NAME="audit test root"\n')
    os.symlink("../usr/lib/os-release", stage / "etc/os-release")
    return stage


# Masks and read-only binds of a runtime's default (runc's): the clean baseline.
MASKS = r"""
for p in kcore keys timer_list sched_debug latency_stats timer_stats; do
  [ -e "$R/proc/$p" ] && mount --bind /dev/null "$R/proc/$p"
done
for d in acpi scsi asound; do
  [ -d "$R/proc/$d" ] && mount -t tmpfs -o ro,size=0 tmpfs "$R/proc/$d"
done
for p in bus fs irq sys sysrq-trigger; do
  if [ -e "$R/proc/$p" ]; then mount --bind "$R/proc/$p" "$R/proc/$p"; mount -o remount,bind,ro "$R/proc/$p"; fi
done
"""


class Target:
    def __init__(self, proc, pid):
        self.proc = proc
        self.pid = pid




@contextmanager
def util_target(stage, tmp_path, *, pid_ns=True, bounding="-all", masks=True, gap="", pass_fds=(),
                os_release_link=None):
    """A sandbox built from unshare + chroot + setpriv with exactly one gap (shell lines).

    Every namespace is private except those a test leaves out; root stays in the host's user
    namespace (like Docker's default); no_new_privs on; rootfs read-only; no seccomp (util-linux
    cannot install one), so seccomp-off and what follows from it belong to the baseline.
    """
    root_only()
    rootdir = tmp_path / "root"
    rootdir.mkdir(parents=True)
    ns_flags = ["--mount", "--propagation", "private", "--ipc", "--uts", "--net", "--cgroup"]
    if pid_ns:
        ns_flags += ["--pid", "--fork"]
    os_release = ""
    if os_release_link:
        os_release = 'rm -f "$R/etc/os-release"; ln -s %s "$R/etc/os-release"\n' % os_release_link
    script = "\n".join([
        "set -e",
        'R="%s"' % rootdir,
        'mount -t tmpfs -o mode=755,size=32m audit-root "$R"',
        'cp -a "%s/." "$R/"' % stage,
        os_release,
        'mount -t proc proc "$R/proc"',
        'mount -t tmpfs -o mode=755,size=1m dev "$R/dev"',
        'mknod -m 666 "$R/dev/null" c 1 3; mknod -m 666 "$R/dev/zero" c 1 5',
        MASKS if masks else "",
        gap,
        'mount -o remount,bind,ro "$R"',
        'exec chroot "$R" /usr/bin/setpriv --bounding-set=%s --inh-caps=-all --no-new-privs -- /bin/sleep 3600' % bounding,
    ])
    proc = subprocess.Popen(["unshare", *ns_flags, "--", "/bin/sh", "-c", script], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=pass_fds)
    target = None
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError("target setup failed: %s" % proc.stderr.read().decode()[-2000:])
            candidates = [proc.pid] + _children(proc.pid)
            ready = [p for p in candidates if _comm(p) == "sleep"]
            if ready:
                target = ready[0]
                break
            time.sleep(0.01)
        assert target, "target did not reach sleep"
        yield Target(proc, target)
    finally:
        # End only what we started, by PID: the target (PID 1 of its namespace takes the
        # rest with it) and the unshare parent.
        for pid in ([target] if target else []) + [proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=10)
        proc.stderr.close()


@contextmanager
def own_cgroups(pid, limits):
    """Own cgroups pysandbox-audit-test-<pid>/target in the v1 memory, pids and cpu hierarchies.

    Removed afterwards even on failure: the target is moved back to the test's own cgroup
    first, because a cgroup with a member cannot be removed."""
    created = []
    try:
        for controller, (filename, value) in limits.items():
            base = "/sys/fs/cgroup/%s" % controller
            require(os.path.isfile(os.path.join(base, "cgroup.procs")),
                    "cgroup v1 %s hierarchy not mounted at %s" % (controller, base))
            parent = os.path.join(base, "pysandbox-audit-test-%d" % os.getpid())
            leaf = os.path.join(parent, "target")
            for d in (parent, leaf):
                os.mkdir(d)
                created.append(d)
            if value is not None:
                with open(os.path.join(leaf, filename), "w") as f:
                    f.write(value)
            with open(os.path.join(leaf, "cgroup.procs"), "w") as f:
                f.write(str(pid))
        yield
    finally:
        own = {}
        with open("/proc/self/cgroup") as f:
            for line in f:
                hier, ctrls, path = line.rstrip("\n").split(":", 2)
                for c in ctrls.split(","):
                    own[c] = path
        for d in reversed(created):
            controller = d.split("/")[4]
            if d.endswith("/target"):
                try:
                    with open(os.path.join(d, "cgroup.procs")) as f:
                        members = f.read().split()
                except OSError:
                    members = []
                home = "/sys/fs/cgroup/%s%s/cgroup.procs" % (controller, own.get(controller, "/"))
                for member in members:
                    try:
                        with open(home, "w") as f:
                            f.write(member)
                    except OSError:
                        pass
            for _ in range(50):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)


# ------------------------------------------------------------------ Docker

class Docker:
    def __init__(self, root, sock, pid):
        self.root = root
        self.sock = sock
        self.pid = pid
        self.env = dict(os.environ, DOCKER_HOST="unix://" + sock)
        self.image = "audit-busybox:test"

    def cli(self, *args, check=True, timeout=60):
        proc = subprocess.run(["docker", *args], capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError("docker %s: %s" % (" ".join(args), proc.stderr.strip()))
        return proc.stdout.strip()

    def run(self, name, *opts, cmd=("sleep", "3600")):
        self.cli("run", "-d", "--name", name, *opts, self.image, *cmd)
        return int(self.cli("inspect", "-f", "{{.State.Pid}}", name))


def _unmount_under(root):
    with open("/proc/self/mountinfo") as f:
        points = []
        for line in f:
            mp = line.split()[4].encode().decode("unicode_escape")
            if mp == root or mp.startswith(root.rstrip("/") + "/"):
                points.append(mp)
    for mp in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], capture_output=True)


@pytest.fixture(scope="session")
def docker_daemon(stage_dir):
    yield from private_dockerd(stage_dir)


def private_dockerd(stage_dir, extra_args=()):
    """A private dockerd (own socket, data and exec root, no bridge, no iptables) with an
    image imported from a busybox-static root; stopped by its PID at the end. `extra_args`
    go to dockerd (tests/oci registers runtimes with them)."""
    root_only()
    for tool in ("dockerd", "docker", "runc"):
        require(shutil.which(tool), "%s not installed (Debian package docker.io)" % tool)
    # dockerd creates a `docker` parent cgroup in each hierarchy; remove those it made here.
    cgroup_parents = [os.path.join("/sys/fs/cgroup", c, "docker") for c in
                      (os.listdir("/sys/fs/cgroup") if os.path.isdir("/sys/fs/cgroup") else [])]
    preexisting = {d for d in cgroup_parents if os.path.isdir(d)}
    root = tempfile.mkdtemp(prefix="audit-dockerd-", dir="/tmp")
    sock = os.path.join(root, "docker.sock")
    log = open(os.path.join(root, "dockerd.log"), "wb")
    proc = subprocess.Popen(
        ["dockerd", "-H", "unix://" + sock, "--data-root", os.path.join(root, "data"),
         "--exec-root", os.path.join(root, "exec"), "--pidfile", os.path.join(root, "docker.pid"),
         "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false", *extra_args],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    docker = Docker(root, sock, proc.pid)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError("dockerd exited: %s" % open(os.path.join(root, "dockerd.log")).read()[-2000:])
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(sock)
                s.close()
                if docker.cli("version", "--format", "{{.Server.Version}}", check=False):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("dockerd did not answer within 60 s")
            time.sleep(0.2)
        image_root = os.path.join(root, "image")
        shutil.copytree(stage_dir, image_root, symlinks=True)
        for applet in ("mkdir", "id", "mount", "echo"):
            os.symlink("busybox", os.path.join(image_root, "bin", applet))
        tarball = os.path.join(root, "image.tar")
        subprocess.run(["tar", "-C", image_root, "-cf", tarball, "."], check=True)
        docker.cli("import", tarball, docker.image)
        yield docker
    finally:
        ids = docker.cli("ps", "-aq", check=False).split()
        if ids:
            docker.cli("rm", "-f", *ids, check=False, timeout=120)
        # containerd dumps its goroutine stacks to /tmp when dockerd stops it: ours go too
        children = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open("/proc/%s/stat" % entry) as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == proc.pid:
                            children.append(int(entry))
                except (OSError, ValueError, IndexError):
                    pass
        try:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass
        log.close()
        for d in cgroup_parents:
            if d not in preexisting:
                try:
                    os.rmdir(d)
                except OSError:
                    pass
        _unmount_under(root)
        shutil.rmtree(root, ignore_errors=True)
        for child in children:
            try:
                os.unlink("/tmp/containerd.%d.stacks.log" % child)
            except OSError:
                pass


# ------------------------------------------------------------------ other runtimes

def wait_for(predicate, what, timeout=20):
    """Poll until predicate() returns something true (the event), or fail with `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


def busybox_root(path, applets=("sh", "sleep"), os_name="audit test root"):
    """A root directory holding only static busybox and an os-release."""
    require(os.path.exists(BUSYBOX), "busybox-static not installed")
    for d in ("bin", "etc", "usr/lib", "proc", "sys", "dev", "tmp"):
        os.makedirs(os.path.join(path, d), exist_ok=True)
    shutil.copy2(BUSYBOX, os.path.join(path, "bin", "busybox"))
    for applet in applets:
        os.symlink("busybox", os.path.join(path, "bin", applet))
    with open(os.path.join(path, "usr/lib/os-release"), "w") as f:
        f.write('ID=audittest\nPRETTY_NAME="%s"\n' % os_name)
    os.symlink("../usr/lib/os-release", os.path.join(path, "etc/os-release"))
    return path


def oci_bundle(path, runtime="runc", annotations=None, rootless=False):
    """An OCI bundle from `runc spec` (every namespace but user and cgroup, masked paths, no
    seccomp): busybox root, `sleep 3600`, no terminal, a private network namespace."""
    os.makedirs(path, exist_ok=True)
    busybox_root(os.path.join(path, "rootfs"))
    subprocess.run(["runc", "spec"] + (["--rootless"] if rootless else []), cwd=path, check=True,
                   capture_output=True)
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    config["process"]["terminal"] = False
    config["process"]["args"] = ["/bin/sleep", "3600"]
    config["root"]["readonly"] = True
    if annotations:
        config["annotations"] = dict(annotations)
    namespaces = config["linux"]["namespaces"]
    if not any(n["type"] == "network" for n in namespaces):
        namespaces.append({"type": "network"})
    # The hybrid cgroup layout here has no usable cgroup2: mount no cgroupfs inside.
    config["mounts"] = [m for m in config["mounts"] if m.get("type") != "cgroup"]
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    return path


def _crun_argv(*args):
    """crun refuses this host's hybrid cgroup layout (v1 controllers plus a cgroup2 mount with
    none): it runs in a private mount namespace where that cgroup2 mount is unmounted
    (nothing changes on the host; state in /run/crun is shared)."""
    if os.path.isdir("/sys/fs/cgroup/unified") and os.path.ismount("/sys/fs/cgroup/unified"):
        quoted = " ".join("'%s'" % a.replace("'", "'\\''") for a in args)
        return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                "umount /sys/fs/cgroup/unified && exec crun " + quoted]
    return ["crun", *args]


@contextmanager
def oci_container(runtime, bundle, cid):
    """`runc run -d` / `crun run -d` of a bundle; yields (id, pid); `delete -f` afterwards."""
    require(shutil.which(runtime), "%s not installed (Debian package %s)" % (runtime, runtime))
    argv = ["runc", "run", "-d", "--bundle", bundle, cid] if runtime == "runc" else \
        _crun_argv("run", "-d", "--bundle", bundle, cid)
    # The detached container inherits runc's stdio: a pipe would stay open until it exits,
    # so errors go to a file.
    with tempfile.TemporaryFile() as err:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, timeout=60)
        err.seek(0)
        message = err.read().decode("utf-8", "replace")
    try:
        assert done.returncode == 0, "%s run: %s" % (runtime, message[-2000:])
        state = subprocess.run([runtime, "state", cid], capture_output=True, text=True, check=True).stdout
        yield cid, int(json.loads(state)["pid"])
    finally:
        delete = ["runc", "delete", "-f", cid] if runtime == "runc" else _crun_argv("delete", "-f", cid)
        subprocess.run(delete, capture_output=True, timeout=60)


def state_of(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def stop_process(proc, pids=()):
    """End what a test started: the given PIDs (a namespace's init takes the rest with it),
    then the launcher, by PID; reap it."""
    for pid in list(pids) + [proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass


def resolver(**kwargs):
    """The installed package's Resolver (what `audit` runs)."""
    from audit.targets import Resolver
    return Resolver(**kwargs)
