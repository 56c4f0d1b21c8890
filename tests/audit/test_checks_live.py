"""What the audit concludes on real targets, asserting which ids fail, pass and are unknown:
a root target audited by an unprivileged user, a process even root cannot read, the host's
/proc/sys bound read-write at an odd path (root and rootless), a /dev of 5000 entries with a
host block device's node last under a name that is no disk's (root and rootless), and uid 0
with no_new_privs and an empty permitted set."""
import os
import stat

import pytest

from livetargets import audit_json, escape_ids, failing, finding, util_target
from targets_checks import (audit_as, root_without_caps, statuses, unprivileged_ids, userns_target)
from util import require

BASELINE = {
    "ns-user-host", "uid0-host", "seccomp-off", "lsm-off", "keyring",
    "device-cgroup-open", "limits-memory-missing", "limits-pids-missing", "limits-cpu-missing",
}
NAMESPACE_CHECKS = {"ns-pid-host", "ns-net-host", "ns-ipc-host", "ns-uts-host", "ns-mnt-host", "ns-cgroup-host"}
# What an auditor refused /proc/PID/root, ns/* and fd/ cannot judge (mountinfo, status,
# cgroup and uid_map stay readable to anyone, so the rest is judged from them).
NEED_ROOT_DIR = {"block-devices", "mem-devices", "runtime-socket", "leaked-fd", "userns-create"}


def _host_block_device():
    for name in ("loop0", "vda", "sda", "nvme0n1", "zram0"):
        path = "/dev/" + name
        try:
            st = os.stat(path)
        except OSError:
            continue
        if stat.S_ISBLK(st.st_mode) and os.path.isdir("/sys/dev/block/%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))):
            return path, os.major(st.st_rdev), os.minor(st.st_rdev)
    return None


def _writable_procfs_expected():
    expected = BASELINE | {"proc-sys-rw", "core-pattern-writable", "proc-masks-missing"}
    if os.path.exists("/proc/sys/kernel/modprobe"):
        expected.add("modprobe-writable")
    if os.path.exists("/proc/sysrq-trigger"):
        expected.add("sysrq-writable")
    return expected


@pytest.mark.root_only
def test_root_target_audited_by_unprivileged_user_is_unknown_never_pass(stage_dir, tmp_path):
    ids = unprivileged_ids()
    require(ids is not None, "the unprivileged test user pysbx exists")
    with util_target(stage_dir, tmp_path, masks=False) as t:
        as_root = audit_json(t.pid)
        as_user = audit_as(ids, t.pid)
    root_st, user_st = statuses(as_root), statuses(as_user)
    assert root_st.get("unknown", set()) == set()
    assert root_st["fail"] == _writable_procfs_expected()
    # The user cannot open the target's root, ns links or fds: those checks are unknown, with why.
    assert user_st["unknown"] == NAMESPACE_CHECKS | NEED_ROOT_DIR | {"host-procfs"}
    for cid in user_st["unknown"]:
        assert "run the audit as root" in finding(as_user, cid)["note"], cid
    # The kernel-file checks are judged from the mount table, which anyone can read: the
    # writable procfs fails for the user as for root.
    assert user_st["fail"] == _writable_procfs_expected()
    # Nothing root sees failing passes for the user.
    assert not (root_st["fail"] & user_st["pass"])
    # escape paths resting on unknowns are "possible", never silently absent
    possible = {p["id"] for p in as_user["escape_paths"]} - {p["id"] for p in as_root["escape_paths"]}
    assert possible == {"runtime-socket", "host-procfs", "leaked-fd", "block-device", "host-mount-namespace"}


def test_process_even_root_cannot_read_is_unknown_not_absent():
    """PID 1 here holds CAP_SYS_RESOURCE, which root lacks: the kernel's ptrace access
    check refuses its root, fds and ns links to every auditor."""
    try:
        os.close(os.open("/proc/1/root", os.O_PATH))
        readable = True
    except PermissionError:
        readable = False
    require(not readable, "PID 1's root is unreadable to this user (this machine's PID 1 holds caps root lacks)")
    report = audit_json(1)
    st = statuses(report)
    assert NAMESPACE_CHECKS | {"block-devices", "mem-devices", "runtime-socket", "host-procfs"} <= st["unknown"]
    assert st["unknown"] <= NAMESPACE_CHECKS | NEED_ROOT_DIR | {"host-procfs"}
    for f in report["findings"]:
        assert not any("does not exist in the target" in e for e in f["evidence"]), f["id"]
        if f["status"] == "unknown":
            assert f["note"], f["id"]


@pytest.mark.root_only
def test_host_proc_sys_bound_writable_at_an_odd_path(stage_dir, tmp_path):
    gap = 'mkdir -p "$R/srv/odd"; mount --bind /proc/sys "$R/srv/odd"'
    with util_target(stage_dir, tmp_path, gap=gap) as t:
        report = audit_json(t.pid)
        active = audit_json(t.pid, "--active")
    assert failing(report) == BASELINE | {"proc-sys-rw", "core-pattern-writable", "proc-masks-missing"}
    assert statuses(report).get("unknown", set()) == set()
    assert escape_ids(report) == {"core-pattern-writable"}
    assert "/srv/odd/kernel/core_pattern" in finding(report, "core-pattern-writable")["evidence"][0]
    assert any("/srv/odd" in e for e in finding(report, "proc-sys-rw")["evidence"])
    # --active proves it by open(O_WRONLY) and close inside the target: no byte written
    assert failing(active) == failing(report)
    assert any("open(/srv/odd/kernel/core_pattern, O_WRONLY) -> writable" in e
               for e in finding(active, "core-pattern-writable")["evidence"])


def test_host_proc_sys_at_odd_path_in_a_user_namespace():
    require(unprivileged_ids() is not None, "the unprivileged test user pysbx exists")
    with userns_target(odd=True) as (pid, scratch):
        report = audit_json(pid)
        active = audit_json(pid, "--active")
    odd = os.path.join(scratch, "odd")
    # --active opens it for writing (never writes) with the target's credentials: refused
    proved = finding(active, "core-pattern-writable")
    assert proved["status"] == "pass"
    assert "active probe: open(%s/kernel/core_pattern, O_WRONLY) -> EACCES" % odd in proved["evidence"]
    proc_sys = finding(report, "proc-sys-rw")
    assert proc_sys["status"] == "fail" and proc_sys["severity"] == "low"
    assert any(odd in e for e in proc_sys["evidence"])
    core = finding(report, "core-pattern-writable")
    # the sysctl compares the writer's euid with the global root: the unprivileged user's
    # namespace root is refused, and the audit says why for the odd location too
    assert core["status"] == "pass"
    assert any(e.startswith(odd + "/kernel/core_pattern") and "rw mount, but" in e for e in core["evidence"])
    assert "core-pattern-writable" not in escape_ids(report)


def _fill_dev(root_dev, entries):
    for i in range(entries):
        with open(os.path.join(root_dev, "e%05d" % i), "w"):
            pass


@pytest.mark.root_only
def test_block_device_behind_5000_entries_matched_by_number(stage_dir, tmp_path):
    block = _host_block_device()
    require(block is not None, "a host block device node exists")
    _path, major, minor = block
    with util_target(stage_dir, tmp_path) as t:
        dev = "/proc/%d/root/dev" % t.pid
        _fill_dev(dev, 5000)
        # created last, named to sort last, and named like no disk
        os.mknod(os.path.join(dev, "zzzz-last"), 0o600 | stat.S_IFBLK, os.makedev(major, minor))
        # a block node whose number is no device of this kernel reaches nothing
        os.mknod(os.path.join(dev, "zzzz-bogus"), 0o600 | stat.S_IFBLK, os.makedev(4000, 4000))
        report = audit_json(t.pid)
    assert failing(report) == BASELINE | {"block-devices"}
    assert statuses(report).get("unknown", set()) == set()
    assert finding(report, "block-devices")["evidence"] == ["/dev/zzzz-last (block %d:%d)" % (major, minor)]
    assert escape_ids(report) == {"block-device"}


def test_block_device_behind_5000_entries_in_a_user_namespace():
    require(unprivileged_ids() is not None, "the unprivileged test user pysbx exists")
    block = _host_block_device()
    require(block is not None, "a host block device node exists")
    path, major, minor = block
    with userns_target(dev_entries=5000, block=path) as (pid, _scratch):
        report = audit_json(pid)
    f = finding(report, "block-devices")
    assert f["status"] == "fail", f
    assert any(e.startswith("/dev/zzzz-last (block %d:%d)" % (major, minor)) for e in f["evidence"])
    assert f["severity"] == "medium"      # not host root, no CAP_DAC_OVERRIDE over the host


@pytest.mark.root_only
def test_uid0_no_new_privs_empty_permitted_is_not_privileged():
    require(os.geteuid() == 0, "a uid 0 target needs root")
    with root_without_caps() as pid:
        with open("/proc/%d/status" % pid) as fh:
            status = fh.read()
        report = audit_json(pid)
    assert "NoNewPrivs:\t1" in status and "CapPrm:\t0000000000000000" in status
    st = statuses(report)
    cap_checks = {f["id"] for f in report["findings"] if f["id"].startswith("cap-")}
    assert cap_checks <= st["pass"]
    assert {"privileged", "caps-nondefault", "caps-ambient", "nnp-off"} <= st["pass"]
    assert "no_new_privs" in " ".join(finding(report, "cap-sys-admin")["evidence"])
    assert not escape_ids(report) & {"privileged", "kernel-module", "release-agent", "shocker",
                                     "process-injection", "physical-memory"}


@pytest.mark.root_only
def test_securityfs_and_tracefs_at_odd_paths(stage_dir, tmp_path):
    with open("/proc/filesystems") as f:
        registered = {line.split()[-1] for line in f if line.strip()}
    require({"securityfs", "tracefs", "bpf"} <= registered, "securityfs, tracefs and bpf filesystems registered")
    gap = ('mkdir -p "$R/srv/sec" "$R/srv/trace" "$R/srv/bpf"; mount -t securityfs securityfs "$R/srv/sec"; '
           'mount -t tracefs tracefs "$R/srv/trace"; mount -t bpf bpf "$R/srv/bpf"')
    with util_target(stage_dir, tmp_path, gap=gap) as t:
        report = audit_json(t.pid)
    # tracefs is also a kernel leak; a fresh bpf instance is no host interface
    assert failing(report) == BASELINE | {"kernelfs-rw", "kernel-leaks"}
    assert statuses(report).get("unknown", set()) == set()
    evidence = " ".join(finding(report, "kernelfs-rw")["evidence"])
    assert "securityfs at /srv/sec" in evidence and "tracefs at /srv/trace" in evidence
    assert "/srv/bpf" not in evidence
