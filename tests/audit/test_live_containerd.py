"""containerd without Docker: a private containerd (own socket, root and state under a temp
dir, CRI plugin off) runs a busybox root with `ctr run --rootfs`, carrying the CRI
annotations a Kubernetes pod's container gets. Recognised by PID from its shim
(containerd-shim-runc-v2 -namespace NS -id ID) and the task's bundle config.json; the pod,
namespace and container names are shown as labels."""
import glob
import os
import shutil
import signal
import subprocess
import tempfile

import pytest

from livetargets import _unmount_under, busybox_root, require, resolver, root_only, run_audit, wait_for

pytestmark = pytest.mark.root_only

NAMESPACE = "pysandbox-audit"
CRI = {"io.kubernetes.cri.sandbox-name": "web-0", "io.kubernetes.cri.sandbox-namespace": "shop",
       "io.kubernetes.cri.container-name": "nginx", "io.kubernetes.cri.container-type": "container",
       "io.kubernetes.cri.image-name": "docker.io/library/nginx:1.25"}


@pytest.fixture(scope="module")
def containerd():
    root_only()
    for tool in ("containerd", "ctr", "containerd-shim-runc-v2", "runc"):
        require(shutil.which(tool), "%s not installed (Debian package containerd)" % tool)
    work = tempfile.mkdtemp(prefix="audit-containerd-", dir="/tmp")
    sock = os.path.join(work, "containerd.sock")
    with open(os.path.join(work, "config.toml"), "w") as f:
        f.write('version = 2\nroot = "%s/root"\nstate = "%s/state"\n'
                'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                '[grpc]\n  address = "%s"\n[ttrpc]\n  address = "%s.ttrpc"\n'
                '[plugins."io.containerd.internal.v1.opt"]\n  path = "%s/opt"\n' % (work, work, sock, sock, work))
    log = open(os.path.join(work, "containerd.log"), "wb")
    daemon = subprocess.Popen(["containerd", "--config", os.path.join(work, "config.toml")],
                              stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    cgroups_before = set(glob.glob("/sys/fs/cgroup/*/" + NAMESPACE))

    def ctr(*args, check=True):
        done = subprocess.run(["ctr", "-a", sock, "-n", NAMESPACE, *args], capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)
        assert not check or done.returncode == 0, "ctr %s: %s" % (" ".join(args), done.stderr)
        return done.stdout

    try:
        wait_for(lambda: daemon.poll() is None and os.path.exists(sock) and
                 subprocess.run(["ctr", "-a", sock, "version"], capture_output=True).returncode == 0,
                 "containerd to answer")
        yield work, ctr
    finally:
        try:
            daemon.send_signal(signal.SIGTERM)       # by its PID
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(timeout=10)
        log.close()
        for path in set(glob.glob("/sys/fs/cgroup/*/" + NAMESPACE)) - cgroups_before:
            try:
                os.rmdir(path)
            except OSError:
                pass
        _unmount_under(work)
        shutil.rmtree(work, ignore_errors=True)
        try:
            os.unlink("/tmp/containerd.%d.stacks.log" % daemon.pid)
        except OSError:
            pass


@pytest.fixture(scope="module")
def pod_container(containerd):
    work, ctr = containerd
    rootfs = busybox_root(os.path.join(work, "rootfs"))
    cid = "audit-ctr-%d" % os.getpid()
    args = ["run", "-d"]
    for key, value in CRI.items():
        args += ["--annotation", "%s=%s" % (key, value)]
    ctr(*args, "--rootfs", rootfs, cid, "/bin/sleep", "3600")
    try:
        pid = int(wait_for(lambda: _task_pid(ctr, cid), "the task to run"))
        yield cid, pid
    finally:
        ctr("task", "kill", "-s", "SIGKILL", cid, check=False)
        wait_for(lambda: "STOPPED" in ctr("task", "ls", check=False) or cid not in ctr("task", "ls", check=False),
                 "the task to stop")
        ctr("task", "delete", cid, check=False)
        ctr("container", "delete", cid, check=False)


def _task_pid(ctr, cid):
    for line in ctr("task", "ls").splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == cid and fields[2] == "RUNNING":
            return fields[1]
    return None


def test_recognised_by_pid_with_kubernetes_labels(pod_container):
    cid, pid = pod_container
    t = resolver().describe_pid(pid)
    assert (t.runtime, t.container_id, t.pid) == ("containerd", cid, pid)
    assert t.name == "shop/web-0/nginx" and t.identity == "containerd/shop/web-0/nginx"
    assert t.labels["io.kubernetes.pod.name"] == "web-0"
    assert t.labels["io.kubernetes.pod.namespace"] == "shop"
    assert t.labels["io.kubernetes.container.name"] == "nginx"
    assert t.image == "docker.io/library/nginx:1.25"
    assert "runc" in t.runtime_version
    assert t.oci is not None and t.oci["no_new_privileges"] is True


def test_resolved_by_id_prefix_and_in_all(pod_container):
    cid, pid = pod_container
    r = resolver()
    for spec in (cid, cid[:-2], "shop/web-0/nginx"):
        assert r.resolve(spec).pid == pid, spec
    assert [t.pid for t in r.all_targets() if t.container_id == cid] == [pid]
    proc = run_audit(cid, "--format", "json")
    assert proc.returncode in (0, 1), proc.stderr
    assert '"runtime": "containerd"' in proc.stdout


def test_pod_sandbox_container_is_named_after_its_pod(containerd, pod_container):
    """A pod's sandbox (pause) container carries the pod's names but no container name."""
    work, ctr = containerd
    cid = "audit-ctr-sandbox-%d" % os.getpid()
    annotations = {"io.kubernetes.cri.sandbox-name": "web-0", "io.kubernetes.cri.sandbox-namespace": "shop",
                   "io.kubernetes.cri.container-type": "sandbox"}
    args = ["run", "-d"]
    for key, value in annotations.items():
        args += ["--annotation", "%s=%s" % (key, value)]
    ctr(*args, "--rootfs", os.path.join(work, "rootfs"), cid, "/bin/sleep", "3600")
    try:
        pid = int(wait_for(lambda: _task_pid(ctr, cid), "the sandbox task to run"))
        t = resolver().describe_pid(pid)
        assert (t.runtime, t.container_id, t.name) == ("containerd", cid, "shop/web-0/(sandbox)")
        assert "io.kubernetes.container.name" not in t.labels and t.labels["io.kubernetes.pod.name"] == "web-0"
    finally:
        ctr("task", "kill", "-s", "SIGKILL", cid, check=False)
        wait_for(lambda: "STOPPED" in ctr("task", "ls", check=False) or cid not in ctr("task", "ls", check=False),
                 "the sandbox task to stop")
        ctr("task", "delete", cid, check=False)
        ctr("container", "delete", cid, check=False)
