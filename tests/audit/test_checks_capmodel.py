"""The capability model as execve sees it, over recorded status files: no_new_privs,
uid 0 versus non-root (and setuid root), ambient, inheritable and bounding."""
import pytest

from audit.snapshot import CAP, execve_attainable
from targets_checks import outcome, snapshot, status_file
from audit.snapshot import _caps, _ids

FULL = (1 << 41) - 1
DOCKER = 0x00000000A80425FB
SYS_ADMIN = 1 << CAP["sys_admin"]


@pytest.mark.parametrize("name, expected", [
    # no_new_privs: execve intersects the new permitted set with the old one, so an empty
    # permitted set stays empty whatever the uid and the bounding set.
    ("root-nnp-empty-permitted-full-bounding", 0),
    ("setuid-root-nnp-dropped", 0),
    ("root-nnp-full", FULL),
    # uid 0 without no_new_privs: every file counts as fully capable, permitted refills
    # from the bounding set (and the inheritable set, even bits outside bounding).
    ("root-no-nnp-empty-permitted-full-bounding", FULL),
    ("root-no-nnp-docker-default", DOCKER),
    ("root-no-nnp-inheritable-beyond-bounding", DOCKER | SYS_ADMIN),
    ("setuid-root-no-nnp", FULL),
    # not uid 0: permitted and ambient only (file capabilities are nnp-off's business)
    ("user-no-nnp-full-bounding", 0),
    ("user-nnp-ambient-net-bind", 1 << CAP["net_bind_service"]),
])
def test_attainable_sets(name, expected):
    status = status_file(name)
    mask, reason = execve_attainable(_ids(status["Uid"]), _caps(status), status["NoNewPrivs"] == "1")
    assert mask == expected, (name, hex(mask), reason)
    assert reason


def test_uid0_nnp_empty_permitted_is_neither_privileged_nor_sys_admin():
    snap = snapshot(status_file("root-nnp-empty-permitted-full-bounding"))
    assert snap.caps.bounding == FULL and snap.euid == 0 and snap.no_new_privs
    assert outcome("privileged", snap).status == "pass"
    assert outcome("cap-sys-admin", snap).status == "pass"
    assert outcome("caps-nondefault", snap).status == "pass"


def test_same_sets_without_nnp_are_privileged():
    snap = snapshot(status_file("root-no-nnp-empty-permitted-full-bounding"))
    assert outcome("privileged", snap).status == "fail"
    assert outcome("cap-sys-admin", snap).status == "fail"


def test_sys_module_on_a_kernel_without_modules_is_low():
    from targets_checks import host
    snap = snapshot(status_file("root-nnp-full"),
                    host=host(modules=(False, "/proc/modules absent: this kernel has no module support")))
    o = outcome("cap-sys-module", snap)
    assert o.status == "fail" and o.severity == "low"
    assert outcome("cap-sys-module", snapshot(status_file("root-nnp-full"))).severity is None
