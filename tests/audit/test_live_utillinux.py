"""Real targets built with util-linux (unshare, chroot, setpriv), one gap each, audited by
the real CLI; each asserts exactly which checks fail."""
import json
import os
import socket
import stat

import pytest

from livetargets import (audit_json, escape_ids, failing, finding, own_cgroups, passing, run_audit,
                       util_target)


def unknown(report):
    return {f["id"] for f in report["findings"] if f["status"] == "unknown"}

# What every util-linux target fails by construction: root in the host user namespace (as
# Docker's default), no seccomp (setpriv cannot install one, so user namespaces and keyctl
# are reachable), no LSM on this kernel, the root devices cgroup, and no limits.
BASELINE = {
    "ns-user-host", "uid0-host", "seccomp-off", "lsm-off", "keyring",
    "device-cgroup-open", "limits-memory-missing", "limits-pids-missing", "limits-cpu-missing",
}


def test_baseline_fails_only_its_construction(stage_dir, tmp_path):
    with util_target(stage_dir, tmp_path) as t:
        report = audit_json(t.pid)
    assert failing(report) == BASELINE
    # root reads every fact of a util-linux target: nothing is left unknown, and what is
    # neither failing nor unknown passes (runtime-version is skipped: no runtime binary)
    assert unknown(report) == set()
    assert {f["id"] for f in report["findings"]} - BASELINE - passing(report) == {"runtime-version"}
    assert report["escape_paths"] == []
    assert report["target"]["os"] == "audit test root"
    for cid in ("ns-pid-host", "ns-net-host", "ns-mnt-host", "cap-sys-admin", "privileged", "nnp-off",
                "rootfs-rw", "proc-sys-rw", "core-pattern-writable", "proc-masks-missing", "leaked-fd"):
        assert cid in passing(report), cid


def test_host_pid_namespace(stage_dir, tmp_path):
    with util_target(stage_dir, tmp_path, pid_ns=False) as t:
        report = audit_json(t.pid)
    assert failing(report) == BASELINE | {"ns-pid-host"}
    assert "pid:[%d]" % 0xEFFFFFFC in " ".join(finding(report, "ns-pid-host")["evidence"])


def test_single_dangerous_capability(stage_dir, tmp_path):
    with util_target(stage_dir, tmp_path, bounding="-all,+sys_ptrace") as t:
        report = audit_json(t.pid)
    assert failing(report) == BASELINE | {"cap-sys-ptrace", "caps-nondefault"}
    assert finding(report, "cap-sys-ptrace")["severity"] == "high"
    assert escape_ids(report) == set()      # private PID namespace: nothing to inject into


def test_ptrace_with_host_pids_is_process_injection(stage_dir, tmp_path):
    with util_target(stage_dir, tmp_path, pid_ns=False, bounding="-all,+sys_ptrace") as t:
        report = audit_json(t.pid)
    assert failing(report) == BASELINE | {"cap-sys-ptrace", "caps-nondefault", "ns-pid-host"}
    assert escape_ids(report) == {"process-injection"}


def test_bind_mounted_runtime_socket(stage_dir, tmp_path):
    sock_path = str(tmp_path / "docker.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(sock_path)
    try:
        gap = 'touch "$R/var/run/docker.sock"; mount --bind "%s" "$R/var/run/docker.sock"' % sock_path
        with util_target(stage_dir, tmp_path, gap=gap) as t:
            report = audit_json(t.pid)
    finally:
        server.close()
    assert failing(report) == BASELINE | {"runtime-socket"}
    assert escape_ids(report) == {"runtime-socket"}
    assert any("/var/run/docker.sock" in e for e in finding(report, "runtime-socket")["evidence"])


def test_host_root_mounted_inside(stage_dir, tmp_path):
    gap = 'mount --bind / "$R/host"'
    with util_target(stage_dir, tmp_path, gap=gap) as t:
        report = audit_json(t.pid)
    assert failing(report) == BASELINE | {"sensitive-mount"}
    assert escape_ids(report) == {"host-file-write"}
    assert any("-> host / " in e for e in finding(report, "sensitive-mount")["evidence"])


def test_writable_procfs(stage_dir, tmp_path):
    with util_target(stage_dir, tmp_path, masks=False) as t:
        report = audit_json(t.pid)
        active = audit_json(t.pid, "--active")
    expected = BASELINE | {"proc-sys-rw", "core-pattern-writable", "proc-masks-missing"}
    if os.path.exists("/proc/sys/kernel/modprobe"):
        expected.add("modprobe-writable")
    if os.path.exists("/proc/sysrq-trigger"):
        expected.add("sysrq-writable")
    assert failing(report) == expected
    assert unknown(report) == set() and unknown(active) == set()
    assert "core-pattern-writable" in escape_ids(report)
    # --active proves it by open(O_WRONLY)+close inside the target, and agrees.
    assert failing(active) == expected
    assert any("open(/proc/sys/kernel/core_pattern, O_WRONLY) -> writable" in e
               for e in finding(active, "core-pattern-writable")["evidence"])


def test_block_device_node(stage_dir, tmp_path):
    st = os.stat("/dev/loop0") if os.path.exists("/dev/loop0") else None
    major, minor = (os.major(st.st_rdev), os.minor(st.st_rdev)) if st and stat.S_ISBLK(st.st_mode) else (7, 0)
    gap = 'mknod "$R/dev/loop0" b %d %d' % (major, minor)
    with util_target(stage_dir, tmp_path, gap=gap) as t:
        report = audit_json(t.pid)
    assert failing(report) == BASELINE | {"block-devices"}
    assert unknown(report) == set()
    assert escape_ids(report) == {"block-device"}


def test_leaked_host_directory_fd(stage_dir, tmp_path):
    fd = os.open(str(tmp_path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        with util_target(stage_dir, tmp_path, pass_fds=(fd,)) as t:
            report = audit_json(t.pid)
    finally:
        os.close(fd)
    assert failing(report) == BASELINE | {"leaked-fd"}
    assert escape_ids(report) == {"leaked-fd"}


def test_limits_set_in_own_cgroups(stage_dir, tmp_path):
    limits = {"memory": ("memory.limit_in_bytes", str(256 << 20)), "pids": ("pids.max", "64"),
              "cpu": ("cpu.cfs_quota_us", "50000")}
    with util_target(stage_dir, tmp_path) as t:
        with own_cgroups(t.pid, limits):
            report = audit_json(t.pid)
        with own_cgroups(t.pid, {k: (f, None) for k, (f, _) in limits.items()}):
            unlimited = audit_json(t.pid)
    assert failing(report) == BASELINE - {"limits-memory-missing", "limits-pids-missing", "limits-cpu-missing"}
    assert any("pids.max = 64" in e for e in finding(report, "limits-pids-missing")["evidence"])
    assert failing(unlimited) == BASELINE
    assert not [d for d in os.listdir("/sys/fs/cgroup/memory") if d.startswith("pysandbox-audit-test-")]


def test_planted_symlink_never_reads_host_file(stage_dir, tmp_path):
    marker = "AUDIT-HOST-MARKER-%d-%s" % (os.getpid(), os.urandom(6).hex())
    host_file = tmp_path / "host-secret"
    host_file.write_text('PRETTY_NAME="%s"\nID=%s\n' % (marker, marker))
    for link in (str(host_file), "../../../../../../../../.." + str(host_file)):
        with util_target(stage_dir, tmp_path / ("t%d" % len(link)), os_release_link=link) as t:
            for args in ((), ("--active",)):
                proc = run_audit(str(t.pid), "--format", "json", *args, check_rc=0)
                assert marker not in proc.stdout and marker not in proc.stderr
                # the link dangles inside the root, so the os-release fallback inside it is used
                assert json.loads(proc.stdout)["target"]["os"] == "audit test root"
                proc = run_audit(str(t.pid), "-v", *args, check_rc=0)
                assert marker not in proc.stdout


def test_symlink_inside_root_is_followed_inside(stage_dir, tmp_path):
    with util_target(stage_dir, tmp_path, os_release_link="/usr/lib/os-release") as t:
        report = audit_json(t.pid)
    assert report["target"]["os"] == "audit test root"


@pytest.mark.parametrize("fmt", ["sarif", "text"])
def test_formats_and_fail_on(stage_dir, tmp_path, fmt):
    with util_target(stage_dir, tmp_path) as t:
        proc = run_audit(str(t.pid), "--format", fmt, "--fail-on", "high")
        assert proc.returncode == 1          # seccomp-off is high
        proc_low = run_audit(str(t.pid), "--format", fmt, "--fail-on", "critical")
        assert proc_low.returncode == 0
    if fmt == "sarif":
        doc = json.loads(proc.stdout)
        assert doc["version"] == "2.1.0"
        assert {r["ruleId"] for r in doc["runs"][0]["results"]} == BASELINE
    else:
        assert proc.stdout.startswith("audit: ")
        assert "verdict: no escape path found" in proc.stdout
