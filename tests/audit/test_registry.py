"""Every check is complete and uniquely named; explain teaches each one; the JSON schema
file matches what reports contain."""
import json
import os

import pytest

from audit.checks import SEVERITIES, all_checks

REQUIRED_IDS = """ns-pid-host ns-net-host ns-ipc-host ns-uts-host ns-mnt-host ns-cgroup-host ns-user-host uid0-host
nnp-off privileged cap-sys-admin cap-sys-module cap-sys-ptrace cap-dac-read-search cap-dac-override cap-sys-rawio
cap-net-admin cap-net-raw cap-bpf cap-perfmon cap-syslog cap-sys-boot cap-sys-time caps-ambient caps-nondefault
seccomp-off lsm-off proc-masks-missing proc-sys-rw core-pattern-writable modprobe-writable uevent-helper-writable
binfmt-misc-writable sysrq-writable sysfs-rw host-procfs kernel-leaks release-agent cgroupfs-rw device-cgroup-open
limits-memory-missing limits-pids-missing limits-cpu-missing block-devices mem-devices runtime-socket sensitive-mount
mount-propagation-shared rootfs-rw leaked-fd userns-create keyring runtime-version""".split()


def test_ids_unique_and_required_present():
    ids = [c.id for c in all_checks()]
    assert len(ids) == len(set(ids))
    assert set(REQUIRED_IDS) <= set(ids)


@pytest.mark.parametrize("chk", all_checks(), ids=lambda c: c.id)
def test_check_is_complete(chk):
    assert chk.title and chk.description and chk.escape and chk.remediation
    assert chk.severity in SEVERITIES
    refs = chk.references
    assert set(refs) == {"cve", "mitre", "cis_docker", "k8s_pss"}
    assert "T1611" in refs["mitre"]
    assert refs["cis_docker"]
    assert all(c.startswith("CVE-") for c in refs["cve"])
    assert set(chk.fix) == {"docker", "kubernetes", "pysandbox"} and all(chk.fix.values())


def test_duplicate_registration_is_refused():
    from audit.checks import check
    with pytest.raises(ValueError):
        check("ns-pid-host", "t", "low", "d", "e", "r", {}, {})(lambda s: None)


def test_schema_file_lists_every_status_and_severity():
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(here, "audit", "schema.json")) as f:
        schema = json.load(f)
    finding = schema["$defs"]["finding"]["properties"]
    assert finding["status"]["enum"] == ["fail", "pass", "unknown", "skip", "error"]
    assert finding["severity"]["enum"] == list(SEVERITIES)
    assert schema["properties"]["schema"]["const"] == "pysandbox.audit/1"
