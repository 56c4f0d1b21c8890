"""Hand-built snapshots for the pure-logic tests of checks (no /proc read): a recorded
status file and mountinfo text become a Snapshot with every other fact neutral."""
import os
from types import MappingProxyType

from audit import snapshot as S
from pysandbox_common import procfs

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
HOST_NS = dict(procfs.INITIAL_NS_INODES, net=4026531840, mnt=4026531841)


def status_file(name):
    with open(os.path.join(DATA, "status", name)) as f:
        return procfs.parse_status(f.read())


def mountinfo_file(name):
    with open(os.path.join(DATA, "mountinfo", name)) as f:
        return procfs.parse_mountinfo(f.read())


def host(**overrides):
    facts = dict(
        namespaces=MappingProxyType(HOST_NS), reference_pid=1, cap_last_cap=40, caps=(1 << 41) - 1,
        mounts=(), auditor_mounts=(), sysctls=MappingProxyType({}), kernel="6.18.0", cgroup_v1_controllers=("memory",),
        auditor_pid=1234, auditor_namespaces=MappingProxyType(HOST_NS), auditor_euid=0, auditor_caps=(1 << 41) - 1,
        block_devices=frozenset({(254, 0), (7, 0)}),
        mem_devices=MappingProxyType({(1, 1): "/dev/mem", (1, 2): "/dev/kmem", (1, 4): "/dev/port"}),
        modules=(True, "/proc/modules present, kernel.modules_disabled = 0"),
        kernel_files=frozenset(S.KERNEL_CONTROL_FILES + S.DEFAULT_MASKED_PATHS + S.DEFAULT_READONLY_PATHS))
    facts.update(overrides)
    return S.HostFacts(**facts)


def snapshot(status=None, mounts=(), errors=(), visible=None, **overrides):
    status = status or status_file("root-nnp-full")
    ns = dict(HOST_NS, pid=4026532100, mnt=4026532101, net=4026532102, ipc=4026532103, uts=4026532104,
              cgroup=4026532105)
    reachable = S.visible_mounts(mounts)
    if visible is None:
        visible = set()
        for path in S.KERNEL_CONTROL_FILES + S.DEFAULT_MASKED_PATHS + S.DEFAULT_READONLY_PATHS:
            visible.update(S.kernel_locations(reachable, path))
    fields = dict(
        target=S.TargetInfo(4242, "process"), host=host(), status=MappingProxyType(status),
        uids=S._ids(status.get("Uid")), gids=S._ids(status.get("Gid")), caps=S._caps(status),
        no_new_privs=status.get("NoNewPrivs") == "1", seccomp_mode=int(status.get("Seccomp", "0")),
        seccomp_filters=0, namespaces=MappingProxyType(ns), mounts=tuple(mounts), cgroups=(),
        uid_map=((0, 0, 4294967295),), gid_map=((0, 0, 4294967295),), lsm=None, cwd="/", root_link="/",
        fds=(), os_release=MappingProxyType({}), dev_nodes=(), visible_paths=frozenset(visible),
        host_procfs_mounts=(), runtime_sockets=(), cgroup_limits=MappingProxyType({}), devices_list=None,
        probes=None, errors=tuple(errors), reachable_mounts=reachable, path_errors=MappingProxyType({}),
        dev_scan_incomplete=None, access_hint="run the audit as root")
    fields.update(overrides)
    return S.Snapshot(**fields)


def outcome(check_id, snap):
    from audit.checks import get
    return get(check_id).func(snap)
