"""firejail, systemd-nspawn and LXC sandboxes built here (busybox roots), recognised by PID
from their launcher (the inner firejail, systemd-nspawn, LXC's monitor "[lxc monitor] PATH
NAME") and resolved by name; each appears once in `--all`."""
import glob
import json
import os
import shutil
import signal
import subprocess

import pytest

from util import children as _children

from livetargets import (busybox_root, require, resolver, root_only, run_audit, stop_process,
                         wait_for)



def _exe(pid):
    try:
        return os.readlink("/proc/%d/exe" % pid)
    except OSError:
        return ""


def _descendant_running(pid, program, depth=4):
    """The first descendant of pid (breadth first) whose comm is `program`."""
    level = [pid]
    for _ in range(depth):
        nxt = []
        for p in level:
            for c in _children(p):
                try:
                    with open("/proc/%d/comm" % c) as f:
                        if f.read().strip() == program:
                            return c
                except OSError:
                    pass
                nxt.append(c)
        level = nxt
    return None


def _check(t, runtime, name, pid):
    assert (t.runtime, t.name, t.pid) == (runtime, name, pid), t
    assert t.identity == "%s/%s" % (runtime, name)


# ------------------------------------------------------------------ firejail

@pytest.fixture
def firejail():
    require(shutil.which("firejail"), "firejail not installed (Debian package firejail)")
    name = "audit-fj-%d" % os.getpid()
    proc = subprocess.Popen(["firejail", "--quiet", "--noprofile", "--name=" + name, "--", "sleep", "300"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        sleeper = wait_for(lambda: _descendant_running(proc.pid, "sleep"), "firejail to start sleep")
        # the outer firejail starts the inner one (PID 1 of the sandbox), which starts the
        # program: sleep itself, or (for a non-root user) `sh -c sleep`
        inner = _children(proc.pid)[0]
        program = _children(inner)[0]
        yield name, proc.pid, program, sleeper
    finally:
        proc.terminate()       # the outer firejail, by PID: it ends the sandbox and its files
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            stop_process(proc)


def test_firejail_by_pid_and_name(firejail):
    name, outer, program, sleeper = firejail
    r = resolver()
    for spec, pid in ((str(sleeper), sleeper), (str(program), program), (name, program)):
        t = r.resolve(spec)
        _check(t, "firejail", name, pid)
        assert t.container_id == str(outer)
        assert "firejail" in t.runtime_version
    assert [t.pid for t in r.all_targets() if t.runtime == "firejail" and t.name == name] == [program]


def test_firejail_cli(firejail):
    name, outer, program, _ = firejail
    proc = run_audit(name, "--format", "json")
    assert proc.returncode in (0, 1), proc.stderr
    report = json.loads(proc.stdout)
    assert (report["target"]["runtime"], report["target"]["name"], report["target"]["pid"]) == \
        ("firejail", name, program)


# ------------------------------------------------------------------ systemd-nspawn

@pytest.fixture
def nspawn(tmp_path):
    root_only()
    require(shutil.which("systemd-nspawn"), "systemd-nspawn not installed (Debian package systemd-container)")
    root = busybox_root(str(tmp_path / "machine"))
    name = "audit-nspawn-%d" % os.getpid()
    # No systemd as PID 1 here: no machined to register with (--register=no) and no scope
    # unit to create over D-Bus (--keep-unit).
    log = open(tmp_path / "nspawn.log", "wb")
    proc = subprocess.Popen(["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--console=pipe",
                             "-M", name, "-D", root, "/bin/sleep", "300"],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        def started():
            if proc.poll() is not None:
                raise AssertionError("systemd-nspawn exited: %s" % (tmp_path / "nspawn.log").read_text()[-2000:])
            kid = _children(proc.pid)
            return kid[0] if kid and _exe(kid[0]).endswith("busybox") else None
        init = wait_for(started, "systemd-nspawn to start sleep")
        yield name, init, proc.pid, root
    finally:
        # the container's PID 1 first, by PID: nspawn then exits by itself and removes its
        # propagation directory (SIGKILLing nspawn would leave it in /run)
        for pid in _children(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            stop_process(proc)
        log.close()
        leftover = "/run/systemd/nspawn/propagate/" + name
        assert not os.path.exists(leftover), leftover


@pytest.mark.root_only
def test_nspawn_by_pid_and_name(nspawn):
    name, init, _, root = nspawn
    r = resolver()
    for spec in (str(init), name):
        t = r.resolve(spec)
        _check(t, "systemd-nspawn", name, init)
        assert t.image == root and "systemd" in t.runtime_version
    assert [t.pid for t in r.all_targets() if t.name == name] == [init]
    proc = run_audit(name, "--format", "json")
    assert proc.returncode in (0, 1), proc.stderr
    assert json.loads(proc.stdout)["target"]["runtime"] == "systemd-nspawn"


# ------------------------------------------------------------------ LXC

def _lxc_cgroups():
    return set(glob.glob("/sys/fs/cgroup/*/lxc*")) | set(glob.glob("/sys/fs/cgroup/*/*/lxc*"))


@pytest.fixture
def lxc(tmp_path):
    root_only()
    require(shutil.which("lxc-start"), "lxc not installed (Debian package lxc)")
    root = busybox_root(str(tmp_path / "rootfs"))
    lxcpath = tmp_path / "lxcpath"
    lxcpath.mkdir()
    name = "audit-lxc-%d" % os.getpid()
    config = tmp_path / "config"
    # No template, no network (lxc.net.0.type = empty: a private network namespace with
    # only lo), the busybox root, sleep as the container's init.
    config.write_text("lxc.uts.name = %s\nlxc.rootfs.path = dir:%s\nlxc.net.0.type = empty\n"
                      "lxc.mount.auto = proc:mixed sys:ro\nlxc.apparmor.profile = unconfined\n"
                      "lxc.init.cmd = /bin/sleep 300\n" % (name, root))
    before = _lxc_cgroups()
    base = ["-n", name, "-P", str(lxcpath)]
    started = subprocess.run(["lxc-start", *base, "-f", str(config), "-d", "-l", "ERROR",
                              "-o", str(tmp_path / "lxc.log")], capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL)
    try:
        assert started.returncode == 0, started.stderr + (tmp_path / "lxc.log").read_text()[-2000:]

        def monitor():
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    try:
                        with open("/proc/%s/cmdline" % entry, "rb") as f:
                            if f.read().split(b"\0")[0].decode() == "[lxc monitor] %s %s" % (lxcpath, name):
                                kids = _children(int(entry))
                                return (int(entry), kids[0]) if kids else None
                    except (OSError, UnicodeDecodeError):
                        pass
            return None
        monitor_pid, init = wait_for(monitor, "LXC's monitor and init")
        yield name, init
    finally:
        subprocess.run(["lxc-stop", *base, "-k"], capture_output=True, timeout=60)
        # LXC leaves its lxc.pivot cgroups behind: remove those this test made
        for path in sorted(_lxc_cgroups() - before, key=len, reverse=True):
            try:
                os.rmdir(path)
            except OSError:
                pass


@pytest.mark.root_only
def test_lxc_by_pid_and_name(lxc):
    name, init = lxc
    r = resolver()
    for spec in (str(init), name):
        t = r.resolve(spec)
        _check(t, "lxc", name, init)
        assert "lxc" in t.runtime_version
    assert [t.pid for t in r.all_targets() if t.name == name] == [init]
    proc = run_audit(name, "--format", "json")
    assert proc.returncode in (0, 1), proc.stderr
    report = json.loads(proc.stdout)
    assert (report["target"]["runtime"], report["target"]["name"]) == ("lxc", name)
    assert report["target"]["os"] == "audit test root"
