"""Pure parsers against a recorded /proc tree (tests/audit/data/proc) read through a
configurable procfs root, and the checks' logic over hand-built snapshots."""
import os

import pytest

from pysandbox_common import procfs
from pysandbox_common.procfs import NoSuchProcess, ProcFS

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "proc")


@pytest.fixture
def recorded():
    return ProcFS(DATA)


def test_mountinfo_unescapes_and_skips_garbage(recorded):
    mounts = recorded.mountinfo(4242)
    assert len(mounts) == 7
    by_point = {m.mountpoint: m for m in mounts}
    assert "/mnt/with space" in by_point
    assert by_point["/mnt/with space"].source == "my tmpfs"
    assert by_point["/mnt/new\nline"].root == "/sub\ndir"
    assert by_point["/mnt/new\nline"].read_only
    odd = by_point["/mnt/back\\slash"]
    assert odd.optional == ("shared:3", "master:1", "propagate_from:2")
    assert odd.peer_group() == "3" and odd.peer_group("master") == "1"
    assert odd.fstype == "fuse.sshfs" and odd.source == "user@host:/x"
    assert by_point["/"].peer_group() == "1" and by_point["/"].device == "254:0"
    assert by_point["/proc/sys"].root == "/sys" and by_point["/proc/sys"].read_only


def test_cgroup_lines_with_colons_and_v2(recorded):
    entries = recorded.cgroup(4242)
    assert entries[0].controllers == ("devices",) and entries[0].path == "/docker/abc:def"
    assert entries[1].controllers == ("cpu", "cpuacct")
    assert entries[2].controllers == ("name=systemd",)
    assert entries[-1].is_v2 and entries[-1].path == "/init.scope"
    assert len(entries) == 5


def test_status_and_caps(recorded):
    status = recorded.status(4242)
    assert status["Uid"].split() == ["1000", "0", "0", "0"]
    assert procfs.cap_mask(status["CapEff"]) == (1 << 41) - 1
    assert status["Seccomp_filters"] == "3"


def test_id_maps(recorded):
    assert recorded.id_map(4242, "uid_map") == ((0, 100000, 65536), (65536, 0, 1))


def test_namespace_links(recorded):
    ns = recorded.namespaces(4242)
    assert ns["pid"] == 4026532100 and ns["user"] == 0xEFFFFFFD
    assert ns["net"] is None


def test_missing_process_is_no_such_process(recorded):
    with pytest.raises(NoSuchProcess):
        recorded.status(999999)


def test_proc_cgroups_and_sysctl():
    with open(os.path.join(DATA, "cgroups")) as f:
        table = procfs.parse_proc_cgroups(f.read())
    assert table["memory"] == (4, True) and table["rdma"] == (0, False)
    assert procfs.read_sysctl("kernel.cap_last_cap", DATA) == "40"


def test_os_release_quotes():
    parsed = procfs.parse_os_release('NAME="Debian GNU/Linux"\nID=debian\n# comment\nVERSION_ID=\'12\'\nbroken\n')
    assert parsed == {"NAME": "Debian GNU/Linux", "ID": "debian", "VERSION_ID": "12"}


def test_ns_link_parser():
    assert procfs.parse_ns_link("mnt:[4026531832]") == 4026531832
    assert procfs.parse_ns_link("garbage") is None


def test_device_rules():
    from audit.checks.filesystem import _device_allowed
    rules = "c 1:3 rwm\nb 8:* r\nc 136:* rwm"
    assert _device_allowed(rules, "char", 1, 3)
    assert _device_allowed(rules, "block", 8, 1)
    assert not _device_allowed(rules, "block", 254, 0)
    assert _device_allowed("a *:* rwm", "block", 254, 0)
    assert _device_allowed(None, "block", 1, 1) is None


def test_runtime_version_compare():
    from audit.checks.confinement import _vulnerable
    assert _vulnerable("1.1.5+ds1", ("1.1.12",))
    assert not _vulnerable("1.1.12", ("1.1.12",))
    assert _vulnerable("1.2.7", ("1.2.8", "1.3.3")) and not _vulnerable("1.3.3", ("1.2.8", "1.3.3"))
    assert _vulnerable("1.0.0-rc93", ("1.1.12",))
    assert _vulnerable("garbage", ("1.1.12",)) is None
