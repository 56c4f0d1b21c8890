"""The runtime under test run by an unprivileged user (runc's rootless mode): a bundle of
`runc spec --rootless` (a user namespace mapping root to the caller's uid, no cgroups),
state under the user's own --root, the lifecycle under the user's own subreaper shim."""
import os

import pytest

from ocitools import Container, Runtime, make_bundle, unique_id


@pytest.fixture(scope="module")
def rootless_runtime(oci_runtime, oci_workdir):
    if os.geteuid() == 0:
        # not a missing feature: the unprivileged run of the suite covers these
        pytest.skip("rootless mode is tested by the unprivileged run")
    root = os.path.join(oci_workdir, "rootless-state")
    os.makedirs(root, exist_ok=True)
    return Runtime(oci_runtime, root)


@pytest.fixture
def rootless_container(rootless_runtime, oci_workdir):
    made = []

    def factory(tag, args, start=True):
        cid = unique_id(tag)
        container = Container(rootless_runtime, make_bundle(oci_workdir, cid, args=args, rootless=True), cid)
        made.append(container)
        if start:
            container.start()
        return container

    yield factory
    for container in made:
        container.destroy()


def test_rootless_run_maps_root_to_the_caller(rootless_runtime, oci_workdir):
    cid = unique_id("rlrun")
    bundle = make_bundle(oci_workdir, cid, rootless=True,
                         args=["/bin/sh", "-c", "echo uid=$(id -u); cat /proc/self/uid_map; exit 3"])
    try:
        done = rootless_runtime("run", "--bundle", bundle, cid, check=False)
        assert done.returncode == 3, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0] == "uid=0"
        assert lines[1].split() == ["0", str(os.getuid()), "1"]
    finally:
        rootless_runtime("delete", "--force", cid, check=False)


def test_rootless_lifecycle(rootless_runtime, rootless_container):
    c = rootless_container("rllife", ["/bin/sh", "-c", "trap 'exit 42' TERM; echo ready; sleep 3600 & wait"],
                           start=False)
    state = rootless_runtime.state(c.cid)
    assert (state["status"], state["pid"]) == ("created", c.pid)
    assert os.path.isdir(os.path.join(rootless_runtime.root, c.cid))
    with open("/proc/%d/status" % c.pid) as f:
        uid = next(line.split()[1] for line in f if line.startswith("Uid:"))
    assert uid == str(os.getuid())                        # root inside is the caller outside
    c.start()
    c.wait_output("ready")
    assert rootless_runtime.state(c.cid)["status"] == "running"
    # no `ps` here: it reads the container's cgroup, which a rootless container without
    # delegated cgroups does not have (runc refuses it for that reason)
    rootless_runtime("kill", c.cid, "TERM")
    assert c.wait() == {"exit": 42}
    rootless_runtime("delete", c.cid)
    assert rootless_runtime("state", c.cid, check=False).returncode != 0


def test_rootless_exec(rootless_runtime, rootless_container):
    c = rootless_container("rlexec", ["/bin/sleep", "3600"])
    done = rootless_runtime("exec", c.cid, "/bin/sh", "-c", "echo $(id -u); exit 4", check=False)
    assert (done.returncode, done.stdout) == (4, "0\n"), done.stderr
