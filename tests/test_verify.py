"""verify.check for real: every layer is judged from inside a forked user-namespace child,
first against a true expectation, then against a deliberately wrong one."""
import ctypes
import os
import struct

import pytest

from sandbox import caps, landlock, verify
from test_caps import in_userns
from util import require

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18
ROOT = os.geteuid() == 0
SAFE_MAP = "0 1000000000 65536" if ROOT else None   # never host root when we are root


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def nnp():
    assert _libc().prctl(38, 1, 0, 0, 0) == 0


def mount(src, dst, fstype, flags, data=None):
    libc = _libc()
    if libc.mount(src and src.encode(), dst.encode(), fstype and fstype.encode(), ctypes.c_ulong(flags),
                  data and data.encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), dst)


def outcome(expect):
    """Run verify.check(expect) in a fresh child after strict-like setup; 'ok' or the failing stage."""
    def body():
        try:
            verify.check(expect)
            return "ok"
        except Exception as e:  # SetupError is reported by in_userns; keep the stage only
            raise e
    r = in_userns(body, SAFE_MAP, SAFE_MAP)
    return r.get("value") or r["error"]


def close_inherited():
    """Close what pytest leaves inheritable above fd 2, as the runtime's close-fds stage does
    (the result pipe of in_userns is close-on-exec and stays)."""
    import fcntl
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            try:
                if not fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC:
                    os.close(fd)
            except OSError:
                pass


def strict_state_then(fn):
    def body():
        caps.apply((), ())
        nnp()
        return fn()
    return body


def run(fn):
    r = in_userns(fn, SAFE_MAP, SAFE_MAP)
    return r["value"] if "value" in r else {"error": r["error"], "text": r["text"]}


def test_true_expectations_pass():
    require(landlock.abi() >= 1, "the kernel does not offer Landlock")

    def body():
        caps.apply((), ())
        nnp()
        landlock.apply(landlock.LandlockPolicy())
        close_inherited()
        fields = verify.status()
        expect = {"no_new_privs": True, "caps": caps.expected((), ()), "seccomp_mode": 0,
                  "seccomp_filters_before": int(fields.get("Seccomp_filters", 0)),
                  "uid_map_no_host_root": True, "landlock": True, "no_fds_above_2": True,
                  "allow_cloexec_fds": True,
                  # paths that exist and hold: /dev/null is what a masked file is bound to;
                  # a root-owned binary cannot be opened for writing by the namespace's root
                  # (host root is not mapped), so it counts as read-only
                  "masked_paths": ["/dev/null"], "readonly_paths": ["/usr/bin/true"]}
        verify.check(expect)
        return "ok"
    assert run(body) == "ok"


@pytest.mark.parametrize("wrong, layer", [
    ({"no_new_privs": False}, "verify: no_new_privs"),
    ({"caps": {"CapEff": 1}}, "verify: capabilities"),
    ({"caps": {"CapBnd": caps.mask(["SYS_ADMIN"])}}, "verify: capabilities"),
    ({"seccomp_mode": 2}, "verify: seccomp"),
    ({"seccomp_filters_before": 7}, "verify: seccomp"),
    ({"landlock": True}, "verify: landlock"),
])
def test_wrong_expectation_names_the_layer(wrong, layer):
    r = run(strict_state_then(lambda: verify.check(wrong)))
    assert r["error"] == layer, r
    if layer == "verify: capabilities" and "SYS_ADMIN" in str(wrong):
        assert "missing SYS_ADMIN" in r["text"]


@pytest.mark.root_only
def test_host_root_mapping_is_caught():
    require(ROOT, "only host root can map host id 0")
    r = in_userns(lambda: verify.check({"uid_map_no_host_root": True}), "0 0 1", "0 0 1")
    assert r["error"] == "verify: id maps" and "host id 0" in r["text"]
    # a range that covers 0 somewhere in its middle, not only on its first line
    r = in_userns(lambda: verify.check({"uid_map_no_host_root": True}), "0 1000000000 10\n10 0 5", "0 1000000000 1")
    assert r["error"] == "verify: id maps"


def test_inherited_fd_is_caught():
    def body():
        close_inherited()
        fd = os.open("/dev/null", os.O_RDONLY)  # inheritable, like a leaked descriptor
        os.set_inheritable(fd, True)
        try:
            verify.check({"no_fds_above_2": True, "allowed_fds": [fd], "allow_cloexec_fds": True})
        except Exception:
            return "allowed fd refused"
        verify.check({"no_fds_above_2": True, "allow_cloexec_fds": True})
    r = run(body)
    assert r["error"] == "verify: descriptors" and "/dev/null" in r["text"]


@pytest.fixture
def var_tmp():
    # not under pytest's 0700 /tmp/pytest-of-<user>: the mapped child must reach it
    import pathlib
    import shutil
    import tempfile
    path = pathlib.Path(tempfile.mkdtemp(prefix="pysandbox-verify-", dir="/var/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_masked_and_readonly_paths(var_tmp):
    tmp_path = var_tmp
    secret = tmp_path / "secret"
    secret.write_text("host data")
    secret_dir = tmp_path / "secretdir"
    secret_dir.mkdir()
    (secret_dir / "inside").write_text("x")
    writable = tmp_path / "writable"
    writable.write_text("")
    os.chmod(tmp_path, 0o777)
    os.chmod(secret_dir, 0o777)
    for p in (secret, writable, secret_dir / "inside"):
        os.chmod(p, 0o666)

    def body():
        assert _libc().unshare(CLONE_NEWNS) == 0
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        # before masking: both checks must fail, naming their layer
        results = {}
        for key, path in (("masked_paths", str(secret)), ("readonly_paths", str(writable)),
                          ("masked_paths", str(secret_dir))):
            try:
                verify.check({key: [path]})
                results[key + ":" + path] = "ok"
            except Exception as e:
                results[key + ":" + path] = e.stage
        # masks verify accepts: /dev/null over files, an empty read-only mount over dirs (a tmpfs
        # here; the runtime binds an empty directory of its scratch)
        mount("/dev/null", str(secret), None, MS_BIND)
        mount("tmpfs", str(secret_dir), "tmpfs", MS_RDONLY, "size=4k")
        mount(str(writable), str(writable), None, MS_BIND)
        mount(None, str(writable), None, MS_BIND | MS_REMOUNT | MS_RDONLY)
        verify.check({"masked_paths": [str(secret), str(secret_dir), str(tmp_path / "absent")],
                      "readonly_paths": [str(writable), str(secret_dir)]})
        results["after"] = "ok"
        return results
    r = run(body)
    assert r == {"masked_paths:" + str(secret): "verify: masked paths",
                 "readonly_paths:" + str(writable): "verify: readonly paths",
                 "masked_paths:" + str(secret_dir): "verify: masked paths",
                 "after": "ok"}


def _allow_all_filter():
    libc = _libc()
    insn = struct.pack("HBBI", 0x06, 0, 0, 0x7FFF0000)  # BPF_RET|BPF_K SECCOMP_RET_ALLOW
    buf = ctypes.create_string_buffer(insn)
    prog = struct.pack("HxxxxxxQ", 1, ctypes.addressof(buf))
    pbuf = ctypes.create_string_buffer(prog)
    assert libc.prctl(22, 2, pbuf, 0, 0) == 0, os.strerror(ctypes.get_errno())  # PR_SET_SECCOMP FILTER


def test_seccomp_installed_counts_filters():
    def body():
        nnp()
        before = int(verify.status()["Seccomp_filters"])
        _allow_all_filter()
        verify.seccomp_installed(before)
        try:
            verify.seccomp_installed(before + 1)
        except Exception as e:
            return e.stage
        return "not caught"
    assert run(body) == "verify: seccomp"


@pytest.mark.parametrize("profile, corrupt, layer", [
    ("default", lambda e: e["caps"].__setitem__("CapEff", 0), "verify: capabilities"),
    ("default", lambda e: e.__setitem__("no_new_privs", False), "verify: no_new_privs"),
    ("permissive", lambda e: e.__setitem__("landlock", True), "verify: landlock"),
])
def test_runtime_exits_125_naming_the_layer(profile, corrupt, layer):
    """Through the real runtime: a wrong expectation stops the command before exec."""
    from sandbox import Sandbox, load_profile
    box = Sandbox(load_profile(profile))
    plan = box.plan()
    assert plan.verify is not None and "no_new_privs" in plan.verify
    expect = {key: dict(value) if isinstance(value, dict) else value for key, value in plan.verify.items()}
    corrupt(expect)
    box._plan = plan.replace(verify=expect)
    result = box.run(["/bin/echo", "should not run"], capture_output=True)
    assert result.exit_code == 125
    assert result.stage == layer, (result.stage, result.message)
    out = result.stdout or ""
    assert "should not run" not in (out.decode() if isinstance(out, bytes) else out)
