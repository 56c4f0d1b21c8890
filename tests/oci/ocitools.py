"""Helpers and fixtures of the OCI runtime tests: the runtime binary under test, bundles made from a
busybox-static root, and containers driven as a shim drives them (create under a child
subreaper, start, reap the init, delete).

The runtime under test is `PYSANDBOX_OCI_RUNTIME` when set (e.g. /usr/sbin/runc, to check
the tests themselves against the reference), else the `pysandbox-oci` console script of
the venv that runs pytest."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "audit"))

from livetargets import busybox_root, oci_bundle, require  # noqa: E402,F401

SHIM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim.py")
APPLETS = ("cat", "echo", "grep", "hostname", "id", "kill", "ls", "mkdir", "pwd", "stat", "touch",
           "true", "tty", "wc", "head")


def runtime_path():
    """The runtime binary under test (env PYSANDBOX_OCI_RUNTIME, else the venv's pysandbox-oci)."""
    return os.environ.get("PYSANDBOX_OCI_RUNTIME") or os.path.join(sys.prefix, "bin", "pysandbox-oci")


def is_pysandbox(runtime):
    """True when the runtime under test is ours (assertions only pysandbox-oci meets)."""
    return os.path.basename(str(runtime)).startswith("pysandbox-oci")


@pytest.fixture(scope="session")
def oci_runtime():
    path = runtime_path()
    require(os.path.isfile(path) and os.access(path, os.X_OK),
            "OCI runtime %s not installed (setup.sh installs pysandbox-oci; PYSANDBOX_OCI_RUNTIME picks another)" % path)
    return path


@pytest.fixture(scope="session")
def oci_root_only():
    require(os.geteuid() == 0, "the OCI runtime tests drive a rootful runtime")


@pytest.fixture(scope="session")
def oci_workdir():
    """One directory for every bundle and state root of the session, searchable by any uid
    (a user namespace's remapped root must reach its rootfs), removed at the end."""
    work = tempfile.mkdtemp(prefix="pysbx-ocitest-", dir="/tmp")
    os.chmod(work, 0o755)
    yield work
    shutil.rmtree(work, ignore_errors=True)


class Runtime:
    """The runtime binary with a private `--root` state directory."""

    def __init__(self, path, root):
        self.path = path
        self.root = root

    def argv(self, *args, root=True):
        return [self.path] + (["--root", self.root] if root else []) + [str(a) for a in args]

    def __call__(self, *args, check=True, input=None, timeout=60, root=True):
        done = subprocess.run(self.argv(*args, root=root), capture_output=True, text=True, input=input,
                              timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise AssertionError("%s %s: rc %d: %s" % (os.path.basename(self.path), " ".join(map(str, args)),
                                                       done.returncode, done.stderr.strip()[-2000:]))
        return done

    def state(self, cid):
        return json.loads(self("state", cid).stdout)


@pytest.fixture(scope="session")
def runtime(oci_runtime, oci_root_only, oci_workdir):
    root = os.path.join(oci_workdir, "state")
    os.makedirs(root)
    return Runtime(oci_runtime, root)


def cgroup_dirs(cgroups_path):
    """Where a cgroupsPath lands in each mounted hierarchy of this host that has it."""
    base = "/sys/fs/cgroup"
    return [os.path.join(base, h, cgroups_path.lstrip("/")) for h in sorted(os.listdir(base))
            if os.path.isdir(os.path.join(base, h, cgroups_path.lstrip("/")))]


_counter = [0]


def unique_id(tag):
    _counter[0] += 1
    return "ocit-%s-%d-%d" % (tag, os.getpid(), _counter[0])


def make_bundle(workdir, cid, edit=None, args=("/bin/sleep", "3600"), rootless=False):
    """A bundle (runc's default spec, as tests/audit/livetargets.py builds it, plus the
    applets these tests use) with a unique absolute cgroupsPath; `edit(config)` changes it.
    rootless: runc's rootless spec (a user namespace mapping root to the caller, no cgroups)."""
    require(shutil.which("runc"), "runc (the reference spec generator) not installed (Debian package runc)")
    path = os.path.join(workdir, cid)
    oci_bundle(path, rootless=rootless)
    rootfs = os.path.join(path, "rootfs")
    for applet in APPLETS:
        link = os.path.join(rootfs, "bin", applet)
        if not os.path.lexists(link):
            os.symlink("busybox", link)
    os.chmod(path, 0o755)
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    config["process"]["args"] = list(args)
    if not rootless:
        config["linux"]["cgroupsPath"] = "/" + cid
    if edit:
        edit(config)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    return path


class Container:
    """A container created by the runtime under the shim (tests/oci/shim.py): `pid` is its
    init, blocked before exec until start(); wait() returns how the init ended as seen by
    the subreaper ({"exit": N} or {"signal": N})."""

    def __init__(self, runtime, bundle, cid, create_args=()):
        self.runtime, self.bundle, self.cid = runtime, bundle, cid
        self.pid_file = os.path.join(bundle, "init.pid")
        self.stdout_path = os.path.join(bundle, "stdout")
        self.stderr_path = os.path.join(bundle, "stderr")
        with open(os.path.join(bundle, "config.json")) as f:
            self.config = json.load(f)
        self.shim = subprocess.Popen(
            [sys.executable, SHIM, self.pid_file, self.stdout_path, self.stderr_path,
             *runtime.argv("create", "--bundle", bundle, "--pid-file", self.pid_file, *create_args, cid)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        created = self._message()
        if created.get("create") != 0:
            self.shim.wait(timeout=30)
            raise AssertionError("create %s: rc %s: %s" % (cid, created.get("create"), created.get("stderr", "")))
        self.pid = self._message()["pid"]
        self.ended = None

    def _message(self):
        line = self.shim.stdout.readline()
        if not line:
            self.shim.wait(timeout=30)
            raise AssertionError("the shim of %s ended without a report (rc %s)" % (self.cid, self.shim.returncode))
        return json.loads(line)

    def start(self):
        self.runtime("start", self.cid)
        return self

    def wait(self, timeout=30):
        """How the init ended (the shim's waitpid); blocks until it has."""
        if self.ended is None:
            import selectors
            sel = selectors.DefaultSelector()
            sel.register(self.shim.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise AssertionError("container %s still running after %gs" % (self.cid, timeout))
            self.ended = self._message()
            self.shim.wait(timeout=10)
        return self.ended

    def stdout(self):
        with open(self.stdout_path, errors="replace") as f:
            return f.read()

    def stderr(self):
        with open(self.stderr_path, errors="replace") as f:
            return f.read()

    def wait_output(self, marker, timeout=30):
        """The container's stdout once it holds `marker` (the event the test waits for)."""
        deadline = time.monotonic() + timeout
        while marker not in self.stdout():
            if time.monotonic() > deadline:
                raise AssertionError("container %s never printed %r; stdout %r stderr %r state %s"
                                     % (self.cid, marker, self.stdout()[-1000:], self.stderr()[-1000:],
                                        self.runtime("state", self.cid, check=False).stdout))
            if self.shim.poll() is not None and marker not in self.stdout():
                raise AssertionError("container %s ended without printing %r: stdout %r stderr %r"
                                     % (self.cid, marker, self.stdout()[-1000:], self.stderr()[-1000:]))
            time.sleep(0.01)
        return self.stdout()

    def destroy(self):
        """delete --force (kills a running one), then reap the shim; the container's
        cgroups must be gone afterwards (checked by the fixture)."""
        self.runtime("delete", "--force", self.cid, check=False)
        if self.shim.poll() is None:
            try:
                self.shim.wait(timeout=20)
            except subprocess.TimeoutExpired:
                # the init was not killed by delete --force: end it by its PID, then the shim
                for pid in (self.pid, self.shim.pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                self.shim.wait(timeout=10)
        self.shim.stdout.close()


@pytest.fixture
def make_container(runtime, oci_workdir):
    """Factory: make_container(tag, edit=None, args=..., start=True) -> Container. Every
    container is deleted with --force at the end, and its cgroups checked gone."""
    made = []

    def factory(tag, edit=None, args=("/bin/sleep", "3600"), start=True, create_args=()):
        cid = unique_id(tag)
        bundle = make_bundle(oci_workdir, cid, edit=edit, args=args)
        container = Container(runtime, bundle, cid, create_args=create_args)
        made.append(container)
        if start:
            container.start()
        return container

    yield factory
    leftovers = []
    for container in made:
        container.destroy()
        cgroups_path = container.config["linux"].get("cgroupsPath", "")
        left = cgroup_dirs(cgroups_path) if cgroups_path else []
        for d in left:     # remove what the runtime left, then fail the test for it
            try:
                os.rmdir(d)
            except OSError:
                pass
        leftovers += left
        shutil.rmtree(container.bundle, ignore_errors=True)
    assert not leftovers, "cgroups left after delete: %s" % leftovers
