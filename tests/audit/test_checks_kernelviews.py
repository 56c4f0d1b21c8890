"""Kernel interfaces judged wherever they are mounted, over recorded mount tables: a host
/proc/sys bound read-write at an odd path, a bind of /proc/sys/kernel alone, masks, mounts
hidden under later mounts; and what cannot be read is unknown, never pass."""
from targets_checks import host, mountinfo_file, outcome, snapshot, status_file
from audit import snapshot as S
from audit.escapes import find_escape_paths
from audit.checks import run_checks


def test_locations_cover_odd_binds():
    mounts = S.visible_mounts(mountinfo_file("odd-procsys"))
    assert S.kernel_locations(mounts, "/proc/sys/kernel/core_pattern") == [
        "/proc/sys/kernel/core_pattern", "/tmp/odd/kernel/core_pattern", "/srv/kernel-only/core_pattern"]


def test_core_pattern_at_odd_path_fails_for_host_root():
    snap = snapshot(status_file("root-nnp-full"), mountinfo_file("odd-procsys"))
    views = {v.location: v.state for v in snap.kernel_views("/proc/sys/kernel/core_pattern")}
    assert views == {"/proc/sys/kernel/core_pattern": "ro", "/tmp/odd/kernel/core_pattern": "rw",
                     "/srv/kernel-only/core_pattern": "rw"}
    o = outcome("core-pattern-writable", snap)
    assert o.status == "fail" and "/tmp/odd/kernel/core_pattern" in o.evidence[0]
    o = outcome("proc-sys-rw", snap)
    assert o.status == "fail"
    assert any("/tmp/odd" in e for e in o.evidence) and any("/srv/kernel-only" in e for e in o.evidence)
    assert outcome("proc-masks-missing", snap).status == "fail"    # /proc/sys (read-only path) rw at /tmp/odd
    assert {"core-pattern-writable"} <= {p.id for p in find_escape_paths(snap, run_checks(snap))}


def test_masks_are_seen_as_masks():
    snap = snapshot(status_file("root-nnp-full"), mountinfo_file("odd-procsys"))
    views = {v.location: v.state for v in snap.kernel_views("/proc/kcore")}
    assert views["/proc/kcore"] == "masked"


def test_not_host_root_is_refused_by_sysctl():
    snap = snapshot(status_file("root-nnp-full"), mountinfo_file("odd-procsys"),
                    uid_map=((0, 100000, 65536),), uids=(100000,) * 4,
                    namespaces=dict(snapshot().namespaces, user=4026532200))
    assert outcome("core-pattern-writable", snap).status == "pass"
    o = outcome("proc-sys-rw", snap)
    assert o.status == "fail" and o.severity == "low"


def test_hidden_mounts_do_not_count():
    mounts = mountinfo_file("hidden-procsys")
    reachable = {m.mount_id for m in S.visible_mounts(mounts)}
    assert 105 not in reachable            # /opt/odd lies under the later tmpfs on /opt
    assert 103 not in reachable            # covered by the tmpfs stacked on /proc/sys
    assert {100, 101, 106, 107} <= reachable
    snap = snapshot(status_file("root-nnp-full"), mounts)
    assert outcome("core-pattern-writable", snap).status == "pass"
    assert outcome("proc-sys-rw", snap).status == "pass"


def test_unreadable_root_is_unknown_not_pass():
    err = (("root", "access denied reading /proc/4242/root"), ("fd", "access denied reading /proc/4242/fd"),
           ("dev", "the target's root could not be opened"))
    snap = snapshot(status_file("root-nnp-full"), mountinfo_file("hidden-procsys"), errors=err, visible=set(),
                    dev_scan_incomplete="the target's root could not be opened", root_link=None)
    for cid in ("block-devices", "mem-devices", "runtime-socket", "leaked-fd", "userns-create"):
        o = outcome(cid, snap)
        assert o.status == "unknown", cid
        assert "run the audit as root" in o.note
    # judged from the mount table alone: read-only and hidden views are a pass
    assert outcome("core-pattern-writable", snap).status == "pass"


def test_unreadable_root_with_rw_proc_fails_from_mount_table():
    err = (("root", "access denied"),)
    snap = snapshot(status_file("root-nnp-full"), mountinfo_file("odd-procsys"), errors=err, visible=set())
    o = outcome("core-pattern-writable", snap)
    assert o.status == "fail" and "inferred" in o.evidence[0]


def test_unreadable_mountinfo_is_unknown():
    err = (("mountinfo", "access denied reading /proc/4242/mountinfo"),)
    snap = snapshot(status_file("root-nnp-full"), (), errors=err)
    for cid in ("core-pattern-writable", "proc-sys-rw", "proc-masks-missing", "sysfs-rw", "cgroupfs-rw",
                "sensitive-mount", "rootfs-rw", "kernelfs-rw", "binfmt-misc-writable", "mount-propagation-shared"):
        assert outcome(cid, snap).status == "unknown", cid


def test_unreadable_namespaces_are_unknown_and_userns_is_judged_by_uid_map():
    snap = snapshot(status_file("root-nnp-full"), mountinfo_file("odd-procsys"),
                    errors=(("ns", "ns/pid,net,ipc,uts,mnt,cgroup,user,time: permission denied"),),
                    namespaces={k: None for k in S.INITIAL_NS_INODES.keys() | {"net", "mnt"}})
    for cid in ("ns-pid-host", "ns-net-host", "ns-mnt-host", "ns-ipc-host", "ns-uts-host", "ns-cgroup-host"):
        assert outcome(cid, snap).status == "unknown", cid
    assert outcome("ns-user-host", snap).status == "fail"
    remapped = snap._replace(uid_map=((0, 100000, 65536),))
    assert outcome("ns-user-host", remapped).status == "pass"


def test_device_nodes_are_matched_by_number_not_name():
    nodes = (S.DevNode("/dev/zz-not-a-disk", "block", 254, 0), S.DevNode("/dev/sda", "block", 250, 250),
             S.DevNode("/dev/whatever", "char", 1, 1))
    snap = snapshot(status_file("root-nnp-full"), mountinfo_file("odd-procsys"), dev_nodes=nodes,
                    devices_list="a *:* rwm")
    o = outcome("block-devices", snap)
    assert o.status == "fail" and o.evidence == ("/dev/zz-not-a-disk (block 254:0)",)
    o = outcome("mem-devices", snap)
    assert o.status == "fail" and "/dev/mem" in o.evidence[0]
    harmless = snap._replace(dev_nodes=nodes[1:2])
    assert outcome("block-devices", harmless).status == "pass"
    partial = harmless._replace(dev_scan_incomplete="scan stopped after 100000 entries (250 ms budget)")
    assert outcome("block-devices", partial).status == "unknown"


def test_kernel_module_path_needs_a_kernel_that_loads_modules():
    loadable = snapshot(status_file("root-nnp-full"), mountinfo_file("hidden-procsys"))
    assert "kernel-module" in {p.id for p in find_escape_paths(loadable, run_checks(loadable))}
    for modules in ((False, "/proc/modules absent"), (False, "kernel.modules_disabled = 1")):
        snap = loadable._replace(host=host(modules=modules))
        assert "kernel-module" not in {p.id for p in find_escape_paths(snap, run_checks(snap))}
    unknown = loadable._replace(host=host(modules=(None, "kernel.modules_disabled could not be read")))
    paths = {p.id: p for p in find_escape_paths(unknown, run_checks(unknown))}
    assert paths["kernel-module"].status == "possible"
    assert paths["kernel-module"].unknown == ("kernel.modules_disabled could not be read",)


def test_release_agent_path_needs_every_precondition():
    snap = snapshot(status_file("root-nnp-full"), mountinfo_file("hidden-procsys"))
    assert "release-agent" in {p.id for p in find_escape_paths(snap, run_checks(snap))}
    # an LSM label denies the mount
    confined = snap._replace(lsm="docker-default (enforce)")
    assert "release-agent" not in {p.id for p in find_escape_paths(confined, run_checks(confined))}
    # no v1 hierarchy on the host and none mounted: nothing to set release_agent in
    v2only = snap._replace(host=host(cgroup_v1_controllers=(), cgroup_v1_mountable=False))
    assert "release-agent" not in {p.id for p in find_escape_paths(v2only, run_checks(v2only))}
    # a pure v2 host whose kernel still mounts named v1 hierarchies: the path holds
    named = snap._replace(host=host(cgroup_v1_controllers=(), cgroup_v1_mountable=True))
    assert outcome("release-agent", named).status == "fail"
    # a seccomp filter: whether mount(2) is reachable is unknown without --active
    filtered = snap._replace(seccomp_mode=2)
    paths = {p.id: p for p in find_escape_paths(filtered, run_checks(filtered))}
    assert paths["release-agent"].status == "possible"
    blocked = filtered._replace(probes={"syscall:mount": {"verdict": "blocked"}})
    assert "release-agent" not in {p.id for p in find_escape_paths(blocked, run_checks(blocked))}


def test_dev_scan_is_bounded_by_time_not_count(tmp_path):
    """Every entry is seen when time allows (a node after thousands of others); out of
    time, the scan says so instead of pretending to be complete."""
    import os
    dev = tmp_path / "dev"
    dev.mkdir()
    for i in range(5000):
        (dev / ("e%05d" % i)).touch()
    sub = dev / "deep" / "er"
    sub.mkdir(parents=True)
    os.mkfifo(sub / "zzzz-fifo")
    fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        nodes, incomplete = S._dev_nodes(fd, ())
        assert incomplete is None and nodes == ()
        # a zero budget stops at the first time check (every 256 entries)
        nodes, incomplete = S._dev_nodes(fd, (), budget=0.0)
        assert incomplete and incomplete.startswith("scan stopped after 256 entries")
    finally:
        os.close(fd)


def test_visible_mounts_on_a_hostile_stack():
    """Thousands of mounts stacked on one point: only the top of the stack and its own
    children are reachable (a child of a covered mount is hidden with it)."""
    from pysandbox_common.procfs import Mount
    root = Mount(1, 0, 0, 1, "/", "/", ("rw",), (), "tmpfs", "root", ("rw",))
    mounts = [root]
    parent = 1
    for i in range(2, 6000):
        mounts.append(Mount(i, parent, 0, i, "/", "/x", ("rw",), (), "tmpfs", "t", ("rw",)))
        parent = i
    mounts.append(Mount(7000, parent, 0, 9, "/", "/x/top-child", ("rw",), (), "proc", "proc", ("rw",)))
    mounts.append(Mount(7001, 2, 0, 9, "/", "/x/old-child", ("rw",), (), "proc", "proc", ("rw",)))
    reachable = {m.mount_id for m in S.visible_mounts(mounts)}
    assert reachable == {1, 5999, 7000}
