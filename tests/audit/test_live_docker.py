"""Real Docker containers from a private dockerd, audited by name, id prefix and PID.

`docker run --privileged` cannot start here: this host's root lacks CAP_SYS_RESOURCE, and
runc's capset of the full set fails ("unable to apply caps"); --cap-drop is ignored with
--privileged. The privileged-equivalent used instead: --cap-add ALL --cap-drop SYS_RESOURCE,
seccomp and AppArmor unconfined, systempaths unconfined, every device allowed in the device
cgroup and the host's disk passed in. Docker 20.10 does not know CAP_BPF, CAP_PERFMON or
CAP_CHECKPOINT_RESTORE; the kernel accepts CAP_SYS_ADMIN for each, so `privileged` counts
them as held (see docs/audit.md).
"""
import json
import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from livetargets import audit_json, escape_ids, failing, finding, run_audit

BASE = {"ns-user-host", "uid0-host", "cap-dac-override", "cap-net-raw", "lsm-off", "limits-memory-missing",
        "limits-pids-missing", "limits-cpu-missing", "ns-cgroup-host", "nnp-off", "rootfs-rw"}
LIMITS = {"limits-memory-missing", "limits-pids-missing", "limits-cpu-missing"}


def _root_disk():
    dev = os.stat("/").st_dev
    for name in sorted(os.listdir("/sys/block")):
        if os.path.exists("/dev/" + name) and not name.startswith(("loop", "ram", "zram")):
            return "/dev/" + name
    return None


def containers(sock):
    disk = _root_disk()
    privileged = ["--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE", "--security-opt", "seccomp=unconfined",
                  "--security-opt", "apparmor=unconfined", "--security-opt", "systempaths=unconfined",
                  "--device-cgroup-rule", "a *:* rwm"] + (["--device", disk] if disk else [])
    return {
        "default": [],
        "privileged": privileged,
        "sysadmin": ["--cap-add", "SYS_ADMIN"],
        "ptrace-hostpid": ["--cap-add", "SYS_PTRACE", "--pid=host"],
        "hostnet": ["--net=host"],
        "hostroot": ["-v", "/:/host"],
        "socket": ["-v", "%s:/var/run/docker.sock" % sock],
        "unconfined": ["--security-opt", "seccomp=unconfined"],
        "nnp": ["--security-opt", "no-new-privileges"],
        "limits": ["--memory", "256m", "--pids-limit", "100", "--cpus", "1"],
    }


@pytest.fixture(scope="module")
def fleet(docker_daemon):
    specs = containers(docker_daemon.sock)
    names = {}
    with ThreadPoolExecutor(max_workers=4) as pool:
        pids = dict(zip(specs, pool.map(lambda kv: docker_daemon.run("audit-" + kv[0], *kv[1]), specs.items())))
    for key in specs:
        names[key] = "audit-" + key
    yield docker_daemon, names, pids
    docker_daemon.cli("rm", "-f", *names.values(), check=False, timeout=120)


def _runc_is_old():
    out = subprocess.run(["runc", "--version"], capture_output=True, text=True).stdout
    m = re.search(r"runc version (\d+)\.(\d+)\.(\d+)", out)
    version = tuple(int(x) for x in m.groups())
    fixed = {(1, 1): (1, 1, 12), (1, 2): (1, 2, 8), (1, 3): (1, 3, 3)}
    return version < fixed.get(version[:2], (1, 3, 3))


@pytest.fixture(scope="module")
def base():
    return BASE | ({"runtime-version"} if _runc_is_old() else set())


@pytest.fixture(scope="module")
def reports(fleet):
    docker, names, _pids = fleet
    with ThreadPoolExecutor(max_workers=4) as pool:
        out = dict(zip(names, pool.map(lambda n: audit_json(n, env=docker.env), names.values())))
    return out


def test_default(reports, base, fleet):
    r = reports["default"]
    assert failing(r) == base
    assert r["escape_paths"] == []
    assert r["target"]["runtime"] == "docker" and r["target"]["name"] == "audit-default"
    assert r["target"]["os"] == "audit test root"
    assert {f["id"] for f in r["findings"] if f["status"] == "unknown"} == {"userns-create", "keyring"}


def test_default_active_proves_the_filter(fleet, base):
    docker, names, _ = fleet
    r = audit_json(names["default"], "--active", env=docker.env)
    assert failing(r) == base
    assert "EPERM" in " ".join(finding(r, "userns-create")["evidence"])
    assert finding(r, "keyring")["status"] == "pass"


def test_privileged_equivalent(reports, base):
    r = reports["privileged"]
    expected = base | {
        "privileged", "seccomp-off", "cap-sys-admin", "cap-sys-module", "cap-sys-ptrace", "cap-dac-read-search",
        "cap-sys-rawio", "cap-net-admin", "cap-sys-boot", "cap-sys-time", "cap-syslog", "caps-nondefault",
        "release-agent", "proc-sys-rw", "core-pattern-writable", "proc-masks-missing", "device-cgroup-open",
        "kernel-leaks", "keyring", "userns-create", "block-devices"}
    if os.path.exists("/proc/sys/kernel/modprobe"):
        expected.add("modprobe-writable")
    if os.path.exists("/proc/sysrq-trigger"):
        expected.add("sysrq-writable")
    assert failing(r) == expected
    assert {"release-agent", "shocker", "core-pattern-writable", "block-device"} <= escape_ids(r)
    # the kernel-module path needs a kernel that loads modules (/proc/modules, modules_disabled = 0)
    assert ("kernel-module" in escape_ids(r)) == (os.path.exists("/proc/modules")
                                                  and open("/proc/sys/kernel/modules_disabled").read().strip() == "0")
    assert r["summary"]["verdict"].startswith("%d escape paths: release_agent (critical)" % len(r["escape_paths"]))


def test_cap_add_sys_admin_is_release_agent(reports, base):
    r = reports["sysadmin"]
    assert failing(r) == base | {"cap-sys-admin", "caps-nondefault", "release-agent"}
    assert escape_ids(r) == {"release-agent"}


def test_ptrace_and_host_pid_is_process_injection(reports, base):
    r = reports["ptrace-hostpid"]
    assert failing(r) == base | {"cap-sys-ptrace", "caps-nondefault", "ns-pid-host"}
    assert escape_ids(r) == {"process-injection"}


def test_host_network(reports, base):
    assert failing(reports["hostnet"]) == base | {"ns-net-host"}


def test_host_root_volume(reports, base):
    r = reports["hostroot"]
    # -v is a recursive bind: the host's own /proc, /sys and cgroupfs come along under /host,
    # and the host's /proc/sys at /host/proc/sys is writable by the container's (host) root
    assert failing(r) == base | {"sensitive-mount", "host-procfs", "sysfs-rw", "cgroupfs-rw",
                                 "core-pattern-writable", "proc-sys-rw", "proc-masks-missing"}
    assert {"host-file-write", "host-procfs", "core-pattern-writable"} <= escape_ids(r)
    assert any("/host -> host / " in e for e in finding(r, "sensitive-mount")["evidence"])


def test_docker_socket(reports, base):
    r = reports["socket"]
    assert failing(r) == base | {"runtime-socket"}
    assert escape_ids(r) == {"runtime-socket"}


def test_seccomp_unconfined(reports, base):
    assert failing(reports["unconfined"]) == base | {"seccomp-off", "userns-create", "keyring"}


def test_no_new_privileges(reports, base):
    assert failing(reports["nnp"]) == base - {"nnp-off"}


def test_limits(reports, base):
    r = reports["limits"]
    assert failing(r) == base - LIMITS
    assert any("268435456" in e for e in finding(r, "limits-memory-missing")["evidence"])


def test_resolve_by_id_prefix_and_pid(fleet):
    docker, names, pids = fleet
    cid = docker.cli("inspect", "-f", "{{.Id}}", names["default"])
    by_prefix = audit_json(cid[:12], env=docker.env)
    by_pid = audit_json(str(pids["default"]), env=docker.env)
    for r in (by_prefix, by_pid):
        assert r["target"]["container_id"] == cid
        assert r["target"]["name"] == names["default"]
    sock_opt = run_audit(names["default"], "--format", "json", "--docker-socket", docker.sock,
                         env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert sock_opt.returncode == 0 and json.loads(sock_opt.stdout)["target"]["container_id"] == cid


def test_all_audits_every_container(fleet):
    docker, names, pids = fleet
    proc = run_audit("--all", "--format", "json", env=docker.env, check_rc=0)
    envelope = json.loads(proc.stdout)
    assert envelope["schema"] == "pysandbox.audit-fleet/1"
    reports = envelope["targets"]
    seen = {r["target"]["pid"]: r for r in reports}
    for key, pid in pids.items():
        assert pid in seen, key
        assert seen[pid]["target"]["name"] == names[key]
    assert all(r["schema"] == "pysandbox.audit/1" for r in reports)


def test_stopped_container_is_a_usage_error(fleet):
    docker, _names, _ = fleet
    docker.cli("create", "--name", "audit-stopped", docker.image, "sleep", "1")
    try:
        proc = run_audit("audit-stopped", env=docker.env)
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1 and "not running" in proc.stderr
    finally:
        docker.cli("rm", "-f", "audit-stopped", check=False)


@pytest.fixture(scope="module")
def custom_parent(docker_daemon):
    """A container under a cgroup parent of its own (--cgroup-parent): its cgroup path no
    longer says "docker", so only the shim and the bundle tell who made it."""
    parent = "audit-custom-parent-%d" % os.getpid()
    name = "audit-cgparent"
    pid = docker_daemon.run(name, "--cgroup-parent", "/" + parent, "--label", "org.example.team=audit")
    cid = docker_daemon.cli("inspect", "-f", "{{.Id}}", name)
    try:
        with open("/proc/%d/cgroup" % pid) as f:
            assert "docker" not in f.read()
        yield docker_daemon, name, cid, pid
    finally:
        docker_daemon.cli("rm", "-f", name, check=False, timeout=120)
        for hierarchy in os.listdir("/sys/fs/cgroup"):
            path = os.path.join("/sys/fs/cgroup", hierarchy, parent)
            if os.path.isdir(path):
                try:
                    os.rmdir(path)
                except OSError:
                    pass


def test_custom_cgroup_parent_by_pid(custom_parent, monkeypatch, base):
    docker, name, cid, pid = custom_parent
    monkeypatch.setenv("DOCKER_HOST", docker.env["DOCKER_HOST"])
    from livetargets import resolver
    t = resolver().describe_pid(pid)
    assert (t.runtime, t.name, t.container_id, t.pid) == ("docker", name, cid, pid)
    assert t.image == docker.image
    assert t.labels["org.example.team"] == "audit"
    assert t.identity == "docker/" + name
    assert "runc" in t.runtime_version
    # what `audit PID` concludes from that: the runc version finding is judged
    r = audit_json(str(pid), env=docker.env)
    assert r["target"]["runtime"] == "docker" and r["target"]["name"] == name
    status = finding(r, "runtime-version")["status"]
    assert status == ("fail" if "runtime-version" in base else "pass")


def test_custom_cgroup_parent_without_the_api(custom_parent, monkeypatch, tmp_path):
    """No API to ask: the containerd shim (`-namespace moby -id ID`) and its bundle still say
    Docker, the id and the runc version."""
    docker, name, cid, pid = custom_parent
    monkeypatch.setenv("DOCKER_HOST", "unix://%s/none.sock" % tmp_path)
    from livetargets import resolver
    t = resolver().describe_pid(pid)
    assert (t.runtime, t.container_id, t.pid) == ("docker", cid, pid)
    assert t.identity == "docker/" + cid
    assert t.oci is not None
    out = subprocess.run(["runc", "--version"], capture_output=True, text=True).stdout
    assert t.runtime_version["runc"] == re.search(r"version (\d+\.\d+\.\d+)", out).group(1)


def test_all_has_one_target_per_container(fleet, custom_parent, monkeypatch):
    docker, names, pids = fleet
    monkeypatch.setenv("DOCKER_HOST", docker.env["DOCKER_HOST"])
    from livetargets import resolver
    targets = [t for t in resolver().all_targets() if t.runtime == "docker"]
    by_name = {}
    for t in targets:
        by_name.setdefault(t.name, []).append(t.pid)
    expected = dict(pids, cgparent=custom_parent[3])
    names = dict(names, cgparent=custom_parent[1])
    for key, pid in expected.items():
        assert by_name.get(names[key]) == [pid], (key, by_name)
    assert all(t.image == docker.image for t in targets if t.name in names.values())
