"""Landlock applied for real in a forked child in its own user namespace."""
import ctypes
import errno
import os
import socket

import pytest

from sandbox import caps, landlock
from sandbox.errors import ProfileError, SetupError
from test_caps import in_userns
from util import require

PR_SET_NO_NEW_PRIVS = 38


def nnp():
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0


def try_open(path, flags=os.O_RDONLY):
    try:
        os.close(os.open(path, flags))
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]


@pytest.fixture
def tree():
    # outside /tmp, which the default policy opens read-write
    import pathlib
    import shutil
    import tempfile
    tmp_path = pathlib.Path(tempfile.mkdtemp(prefix="pysandbox-landlock-", dir="/var/tmp"))
    try:
        yield _fill(tmp_path)
    finally:
        shutil.rmtree(tmp_path)


def _fill(tmp_path):
    for name in ("allowed", "denied"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "file").write_text(name)
    tmp_path.chmod(0o755)
    for p in tmp_path.rglob("*"):
        p.chmod(0o777 if p.is_dir() else 0o666)
    return tmp_path


def need_landlock():
    require(landlock.abi() >= 1, "the kernel does not offer Landlock")


def test_abi_detected():
    need_landlock()
    assert landlock.abi() >= 1
    assert landlock.fs_rights(1) == (1 << 13) - 1
    assert landlock.fs_rights(7) == (1 << 16) - 1
    assert landlock.fs_rights(3) & landlock.IOCTL_DEV == 0


def test_explicit_paths(tree):
    need_landlock()
    policy = landlock.validate_section({"enabled": True, "read_only": [str(tree / "allowed")]})

    def body():
        nnp()
        warnings = landlock.apply(policy)
        return {"warnings": warnings,
                "inside": open(tree / "allowed" / "file").read(),
                "inside_write": try_open(str(tree / "allowed" / "file"), os.O_WRONLY),
                "outside": try_open(str(tree / "denied" / "file")),
                "root_dir": try_open("/", os.O_RDONLY | os.O_DIRECTORY),
                "usr": try_open("/usr/bin/env")}
    r = in_userns(body)["value"]
    assert r == {"warnings": [], "inside": "allowed", "inside_write": "EACCES", "outside": "EACCES",
                 "root_dir": "EACCES", "usr": "EACCES"}


def test_default_policy_matches_root(tree):
    need_landlock()
    policy = landlock.validate_section({"enabled": True})
    assert not policy.explicit and policy.probe_path() == "/"

    def body():
        nnp()
        warnings = landlock.apply(policy, extra_ro=[str(tree / "allowed")])
        scratch = "/tmp/landlock-test-%d" % os.getpid()
        with open(scratch, "w") as f:
            f.write("x")
        os.unlink(scratch)
        return {"warnings": warnings,
                "usr": try_open("/usr/bin/env"),
                "etc": try_open("/etc/hostname"),
                "etc_write": try_open("/etc/hostname", os.O_WRONLY),
                "proc": try_open("/proc/self/status"),
                "dev_null_write": try_open("/dev/null", os.O_WRONLY),
                "bound_ro": try_open(str(tree / "allowed" / "file")),
                "bound_ro_write": try_open(str(tree / "allowed" / "file"), os.O_WRONLY),
                "root_dir": try_open("/", os.O_RDONLY | os.O_DIRECTORY),
                "home": try_open("/root", os.O_RDONLY | os.O_DIRECTORY),
                "mknod_tmp": _mknod_fifo("/tmp/landlock-fifo-%d" % os.getpid())}
    r = in_userns(body)["value"]
    assert r["warnings"] == []
    assert r["usr"] == r["etc"] == r["proc"] == r["dev_null_write"] == r["bound_ro"] == "ok"
    assert r["etc_write"] == r["bound_ro_write"] == r["root_dir"] == r["home"] == "EACCES"
    assert r["mknod_tmp"] == "ok"


def _mknod_fifo(path):
    try:
        os.mkfifo(path)
        os.unlink(path)
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]


def test_missing_explicit_path_is_an_error(tree):
    need_landlock()
    policy = landlock.validate_section({"read_only": [str(tree / "nope")]})
    r = in_userns(lambda: (nnp(), landlock.apply(policy)))
    assert r["error"] == "landlock" and r["errno"] == errno.ENOENT and "nope" in r["text"]


def test_missing_default_path_is_a_warning(tree):
    need_landlock()
    policy = landlock.validate_section({"enabled": True})
    r = in_userns(lambda: (nnp(), landlock.apply(policy, extra_rw=[str(tree / "gone")]))[1])
    assert len(r["value"]) == 1 and "gone" in r["value"][0]


def test_needs_no_new_privs_without_sys_admin():
    need_landlock()
    policy = landlock.validate_section({"enabled": True})

    def body():
        caps.apply((), ())
        landlock.apply(policy)
    r = in_userns(body)
    assert r["error"] == "landlock" and "no_new_privs" in r["text"]


def test_tcp_ports(tree):
    require(landlock.abi() >= 4, "Landlock ABI 4 (TCP rules) not offered")
    policy = landlock.validate_section({"enabled": True, "tcp_bind": [40001], "tcp_connect": []})

    def body():
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.unshare(0x40000000) == 0  # CLONE_NEWNET: ports of our own
        nnp()
        landlock.apply(policy)
        out = {}
        for port in (40001, 40002):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
                out[str(port)] = "ok"
            except OSError as e:
                out[str(port)] = errno.errorcode[e.errno]
            finally:
                s.close()
        return out
    r = in_userns(body)["value"]
    assert r == {"40001": "ok", "40002": "EACCES"}


def test_best_effort_without_landlock(monkeypatch):
    monkeypatch.setattr(landlock, "abi", lambda: 0)
    warnings = landlock.apply(landlock.LandlockPolicy(best_effort=True))
    assert warnings and "best_effort" in warnings[0]
    with pytest.raises(SetupError) as info:
        landlock.apply(landlock.LandlockPolicy())
    assert info.value.stage == "landlock" and "required by the profile" in str(info.value)


@pytest.mark.parametrize("raw, key", [
    ({"enabled": "yes"}, "enabled"),
    ({"enabled": True, "bogus": 1}, "bogus"),
    ({"read_only": "/usr"}, "read_only"),
    ({"read_write": ["tmp"]}, "read_write"),
    ({"execute": [3]}, "execute"),
    ({"tcp_bind": [70000]}, "tcp_bind"),
    ({"tcp_connect": [True]}, "tcp_connect"),
    ({"scope": ["everything"]}, "scope"),
    ({"best_effort": 1}, "best_effort"),
])
def test_validation_errors(raw, key):
    with pytest.raises(ProfileError) as info:
        landlock.validate_section(raw)
    assert info.value.key == key


def test_validation_values():
    assert landlock.validate_section({"enabled": False, "read_only": ["/x"]}) is None
    assert landlock.validate_section({}) is None
    policy = landlock.validate_section({"enabled": True, "best_effort": True, "execute": ["/opt//bin/"],
                                        "tcp_connect": [443]})
    assert policy.best_effort and policy.execute == ("/opt/bin",) and policy.tcp_connect == (443,)
    assert policy.tcp_bind is None
    assert policy == landlock.validate_section({"best_effort": True, "execute": ["/opt/bin"],
                                                "tcp_connect": [443]})
    with pytest.raises(AttributeError):
        policy.enabled = False
    rules = landlock.LandlockPolicy().for_root(rw_paths=("/work",), ro_paths=("/probes",))
    assert ("/work", "rw", True, False) in rules and ("/probes", "rx", True, False) in rules
    assert ("/usr", "rx", True, False) in rules and ("/tmp", "rw", True, False) in rules
    assert ("/etc", "ro", True, False) in rules


def _run_python(policy_overrides, code):
    from sandbox import Sandbox, load_profile
    profile = load_profile("strict").with_overrides({"landlock": policy_overrides})
    box = Sandbox(profile)
    try:
        return box.run(["/usr/bin/python3", "-I", "-S", "-c", code], capture_output=True, timeout=60)
    finally:
        box.close()


PROBE_WRITES = r"""
import errno, os
out = []
for path, flags in (("/", os.O_RDONLY | os.O_DIRECTORY), ("/dev/null", os.O_WRONLY), ("/tmp/x", os.O_WRONLY | os.O_CREAT)):
    try:
        os.close(os.open(path, flags))
        out.append("ok")
    except OSError as e:
        out.append(errno.errorcode[e.errno])
print(" ".join(out))
"""


def test_read_only_root_policy_runs_and_is_verified():
    """read_only = ["/"] grants listing "/": verify must probe what the policy denies
    (writing /dev/null) instead of refusing the run as "not Landlock-restricted"."""
    require(landlock.abi() >= 1, "the kernel does not offer Landlock")
    result = _run_python({"read_only": ["/"], "execute": ["/usr"], "read_write": ["/tmp"]}, PROBE_WRITES)
    assert result.exit_code == 0, (result, result.stderr)
    assert result.stdout.decode().split() == ["ok", "EACCES", "ok"]


def test_verify_follows_the_policy():
    default = landlock.LandlockPolicy()
    assert landlock.probe_for(default) == ("list", "/")
    assert landlock.probe_for(landlock.LandlockPolicy(read_only=["/usr"])) == ("list", "/")
    assert landlock.probe_for(landlock.LandlockPolicy(read_only=["/"])) == ("write", "/dev/null")
    assert landlock.probe_for(landlock.LandlockPolicy(read_only=["/"], read_write=["/dev"])) is None
    assert landlock.probe_for(landlock.LandlockPolicy(read_only=["/"]), extra_rw=("/dev/null",)) is None


def test_a_policy_verify_cannot_probe_runs_with_a_warning():
    require(landlock.abi() >= 1, "the kernel does not offer Landlock")
    result = _run_python({"read_write": ["/"]}, "print('ran')")
    assert result.exit_code == 0, (result, result.stderr)
    assert any("not verified" in w for w in result.warnings), result.warnings
