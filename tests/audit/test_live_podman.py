"""Live Podman targets: a container from a private storage root, found by name, id prefix
and PID through Podman's own CLI (as `audit` resolves it), and audited for real.

Podman runs with configuration of its own (CONTAINERS_CONF / CONTAINERS_STORAGE_CONF in
a temp dir: cgroupfs manager, file events, runc, no network), so nothing of the host's
Podman setup is read or changed; what it leaves (its libpod_parent cgroups) is removed.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from util import require

pytestmark = pytest.mark.root_only


def _audit(*args, env):
    audit = os.path.join(os.path.dirname(sys.executable), "audit")
    return subprocess.run([audit, *args], capture_output=True, text=True, timeout=60, env=env)


def _cgroup_dirs():
    return {os.path.join(root, name) for root in (os.path.join("/sys/fs/cgroup", h) for h in os.listdir("/sys/fs/cgroup"))
            if os.path.isdir(root) for name in os.listdir(root) if name.startswith("libpod")}


@pytest.fixture(scope="module")
def podman_container():
    require(os.geteuid() == 0, "rootful Podman needs root")
    podman = shutil.which("podman")
    require(bool(podman), "podman is not installed (apt-get install podman)")
    require(os.path.exists("/bin/busybox"), "busybox-static is not installed")
    before = _cgroup_dirs()
    work = tempfile.mkdtemp(prefix="pysandbox-podman-")
    env = dict(os.environ)
    with open(os.path.join(work, "storage.conf"), "w") as f:
        f.write('[storage]\ndriver = "overlay"\ngraphroot = "%s/storage"\nrunroot = "%s/run"\n' % (work, work))
    with open(os.path.join(work, "containers.conf"), "w") as f:
        # every state directory inside the temp dir: nothing of Podman's stays in /run
        f.write('[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\nruntime = "runc"\n'
                'tmp_dir = "%s/tmp"\nstatic_dir = "%s/static"\nvolume_path = "%s/volumes"\n'
                'events_logfile_path = "%s/events.log"\n'
                '[containers]\nnetns = "none"\n' % (work, work, work, work))
    env["CONTAINERS_STORAGE_CONF"] = os.path.join(work, "storage.conf")
    env["CONTAINERS_CONF"] = os.path.join(work, "containers.conf")

    def pm(*args, check=True):
        return subprocess.run([podman, *args], capture_output=True, text=True, timeout=120, env=env, check=check)

    name = "pysandbox-audit-%d" % os.getpid()
    try:
        root = os.path.join(work, "root")
        os.makedirs(os.path.join(root, "bin"))
        os.makedirs(os.path.join(root, "etc"))
        shutil.copy("/bin/busybox", os.path.join(root, "bin", "busybox"))
        for applet in ("sh", "sleep"):
            os.symlink("busybox", os.path.join(root, "bin", applet))
        with open(os.path.join(root, "etc", "os-release"), "w") as f:
            f.write('NAME="Podman Busybox"\nID=busybox\n')
        subprocess.run(["tar", "-C", root, "-cf", os.path.join(work, "root.tar"), "."], check=True)
        pm("import", os.path.join(work, "root.tar"), "localhost/pysandbox-audit:1")
        # Podman's default nofile/nproc limits are above this host's hard limits, and root
        # lacks CAP_SYS_RESOURCE here to raise them: ask for lower ones.
        limits = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]
        started = pm("run", "-d", "--name", name, *limits, "localhost/pysandbox-audit:1", "/bin/sleep", "300",
                     check=False)
        assert started.returncode == 0, started.stderr
        cid = pm("inspect", "-f", "{{.Id}}", name).stdout.strip()
        pid = int(pm("inspect", "-f", "{{.State.Pid}}", name).stdout.strip())
        assert pid > 0
        yield {"name": name, "id": cid, "pid": pid, "env": env}
    finally:
        pm("rm", "-f", "-t", "0", name, check=False)
        pm("rmi", "-f", "localhost/pysandbox-audit:1", check=False)
        # Podman's overlay driver bind-mounts its storage directory onto itself and leaves it
        # mounted when the podman process ends: unmount what is under the temp dir, deepest first.
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f if line.split()[4].startswith(work + "/")]
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
        # Podman's cgroupfs manager leaves libpod_parent behind; remove what appeared
        # during this test (deepest first; rmdir only succeeds on empty cgroups).
        for path in sorted(_cgroup_dirs() - before, key=len, reverse=True):
            for dirpath, _dirs, _files in sorted(os.walk(path, topdown=False), key=lambda x: -len(x[0])):
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass


def test_podman_container_by_name_id_and_pid(podman_container):
    c, env = podman_container, podman_container["env"]
    for target in (c["name"], c["id"][:12], str(c["pid"])):
        proc = _audit(target, "--format", "json", env=env)
        assert proc.returncode in (0, 1), proc.stderr
        report = json.loads(proc.stdout)
        assert report["target"]["runtime"] == "podman", (target, report["target"])
        assert report["target"]["container_id"] == c["id"]
        assert report["target"]["pid"] == c["pid"]
        # by PID too: conmon's -n NAME / -c ID arguments name it
        assert report["target"]["name"] == c["name"]
        assert report["target"]["os"] == "Podman Busybox"
        findings = {f["id"]: f for f in report["findings"]}
        for ns in ("pid", "net", "ipc", "uts", "mnt"):
            assert findings["ns-%s-host" % ns]["status"] == "pass", ns
        assert findings["privileged"]["status"] == "pass"
        assert findings["runtime-socket"]["status"] == "pass"


def test_podman_target_fields(podman_container):
    c = podman_container
    from audit.targets import Resolver
    t = Resolver().describe_pid(c["pid"])
    assert (t.runtime, t.name, t.container_id) == ("podman", c["name"], c["id"])
    assert t.identity == "podman/" + c["name"]
    assert "runc" in t.runtime_version
    assert t.oci is not None


def test_podman_container_in_audit_all(podman_container):
    proc = _audit("--all", "--format", "json", env=podman_container["env"])
    assert proc.returncode in (0, 1), proc.stderr
    reports = json.loads(proc.stdout)["targets"]       # the fleet envelope pysandbox.audit-fleet/1
    assert any(r["target"]["container_id"] == podman_container["id"] and r["target"]["runtime"] == "podman"
               for r in reports)
