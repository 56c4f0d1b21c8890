"""Capabilities set for real in a forked child inside its own user namespace."""
import ctypes
import json
import os
import subprocess
import sys
import traceback

import pytest

from sandbox import caps
from pysandbox_common.capnames import last_cap
from sandbox.errors import SetupError
from util import require

CLONE_NEWUSER = 0x10000000
DOCKER = ("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
          "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE")


def in_userns(fn, uid_map=None, gid_map=None):
    """Run fn() in a forked child that unshared a user namespace (the parent writes the maps,
    default "0 <euid> 1", which works rootless too). Returns fn's JSON-able result, or
    {"error": SetupError stage/text} when fn raised SetupError."""
    libc = ctypes.CDLL(None, use_errno=True)
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_r), os.close(go_w), os.close(out_r)
            if libc.unshare(CLONE_NEWUSER) != 0:
                os.write(ready_w, b"E%d" % ctypes.get_errno())
                os._exit(1)
            os.write(ready_w, b"K")
            os.read(go_r, 1)
            # become the mapped inside root, as the runtime does after the maps exist
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
            try:
                result = {"value": fn()}
            except SetupError as e:
                result = {"error": e.stage, "text": str(e), "errno": e.errno}
            data = json.dumps(result).encode()
        except BaseException:
            data = json.dumps({"crash": traceback.format_exc()}).encode()
        os.write(out_w, data)
        os._exit(0)
    os.close(ready_w), os.close(go_r), os.close(out_w)
    status = os.read(ready_r, 64)
    if status.startswith(b"E"):
        os.waitpid(pid, 0)
        require(False, "unshare(CLONE_NEWUSER) failed: %s" % os.strerror(int(status[1:])))
    with open("/proc/%d/setgroups" % pid, "w") as f:
        f.write("deny")
    with open("/proc/%d/uid_map" % pid, "w") as f:
        f.write(uid_map or "0 %d 1" % os.geteuid())
    with open("/proc/%d/gid_map" % pid, "w") as f:
        f.write(gid_map or "0 %d 1" % os.getegid())
    os.write(go_w, b"g")
    os.close(go_w)
    chunks = []
    while True:
        chunk = os.read(out_r, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(out_r), os.close(ready_r)
    os.waitpid(pid, 0)
    result = json.loads(b"".join(chunks) or b'{"crash": "no output"}')
    assert "crash" not in result, result["crash"]
    return result


def exec_status():
    """The Cap* lines of a freshly exec'd program (what the command would get)."""
    out = subprocess.run(["/bin/cat", "/proc/self/status"], capture_output=True, text=True).stdout
    return {line.split(":")[0]: int(line.split()[1], 16) for line in out.splitlines() if line.startswith("Cap")}


ALL = (1 << (last_cap() + 1)) - 1


@pytest.mark.parametrize("binding", ["ctypes", "module"])
def test_strict_empties_every_set(binding):
    def body():
        caps.apply((), (), binding=caps.backend(binding))
        return {"self": caps.current(), "exec": exec_status()}
    r = in_userns(body)["value"]
    for view in ("self", "exec"):
        assert r[view] == {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapBnd": 0, "CapAmb": 0}, view


@pytest.mark.parametrize("binding", ["ctypes", "module"])
def test_docker_default_set_exactly(binding):
    want = caps.mask(DOCKER)
    def body():
        caps.apply(DOCKER, (), binding=caps.backend(binding))
        return {"self": caps.current(), "exec": exec_status()}
    r = in_userns(body)["value"]
    expected = {"CapInh": want, "CapPrm": want, "CapEff": want, "CapBnd": want, "CapAmb": 0}
    assert r["self"] == expected
    # uid 0 inside: execve gives permitted = inheritable | bounding = keep again
    assert r["exec"] == expected
    assert expected == caps.expected(DOCKER, (), uid=0)


def test_all_keeps_every_capability():
    r = in_userns(lambda: (caps.apply(("ALL",), ()), caps.current())[1])["value"]
    assert r == {"CapInh": ALL, "CapPrm": ALL, "CapEff": ALL, "CapBnd": ALL, "CapAmb": 0}


def test_ambient_raised_after_capset():
    def body():
        caps.apply(("NET_RAW", "CHOWN"), ("NET_RAW",))
        return {"self": caps.current(), "exec": exec_status()}
    r = in_userns(body)["value"]
    assert r["self"]["CapAmb"] == caps.mask(["NET_RAW"])
    assert r["self"]["CapBnd"] == caps.mask(["NET_RAW", "CHOWN"])
    assert r["exec"]["CapAmb"] == caps.mask(["NET_RAW"])


def test_ambient_outside_keep_is_refused():
    r = in_userns(lambda: caps.apply(("CHOWN",), ("NET_RAW",)))
    assert r["error"] == "capabilities" and "NET_RAW" in r["text"]


def test_unknown_name_is_a_setup_error():
    r = in_userns(lambda: caps.apply(("NOT_A_CAP",), ()))
    assert r["error"] == "capabilities"


def _setuid_body(prepare, keep):
    def body():
        if prepare:
            from sandbox import user
            user.keep_caps_across_setuid()
        os.setresgid(1000, 1000, 1000)
        os.setresuid(1000, 1000, 1000)
        caps.apply(keep, ())
        return {"self": caps.current(), "exec": exec_status(), "uid": os.getuid()}
    return body


def _need_root():
    require(os.geteuid() == 0, "a multi-id map needs host root (rootless maps only one id)")


@pytest.mark.root_only
def test_nonzero_uid_keeps_caps_as_ambient():
    _need_root()
    r = in_userns(_setuid_body(True, ("NET_BIND_SERVICE",)), "0 1000000000 65536", "0 1000000000 65536")
    want = caps.mask(["NET_BIND_SERVICE"])
    assert r["value"]["uid"] == 1000
    assert r["value"]["self"] == {"CapInh": want, "CapPrm": want, "CapEff": want, "CapBnd": want, "CapAmb": want}
    assert r["value"]["self"] == caps.expected(("NET_BIND_SERVICE",), (), uid=1000)
    # execve as non-root: permitted = ambient, so the kept capability survives
    assert r["value"]["exec"]["CapEff"] == want and r["value"]["exec"]["CapBnd"] == want


@pytest.mark.root_only
def test_nonzero_uid_strict_cuts_bounding():
    _need_root()
    r = in_userns(_setuid_body(True, ()), "0 1000000000 65536", "0 1000000000 65536")
    assert set(r["value"]["self"].values()) == {0}
    assert set(r["value"]["exec"].values()) == {0}


@pytest.mark.root_only
def test_nonzero_uid_without_keepcaps_fails_closed():
    _need_root()
    r = in_userns(_setuid_body(False, ()), "0 1000000000 65536", "0 1000000000 65536")
    assert r["error"] == "capabilities" and "CAP_SETPCAP" in r["text"]
    r = in_userns(_setuid_body(False, ("CHOWN",)), "0 1000000000 65536", "0 1000000000 65536")
    assert r["error"] == "capabilities" and "PR_SET_KEEPCAPS" in r["text"]


def test_current_matches_syscalls():
    assert caps.current() == caps._current_from_syscalls()


def test_mask_and_names():
    assert caps.mask(["CHOWN", "cap_net_raw"]) == 1 | 1 << 13
    assert caps.mask(["ALL"]) == ALL
    assert caps.names(caps.mask(DOCKER)) == sorted(DOCKER, key=lambda n: caps.mask([n]))
    assert caps.expected(("CHOWN",), (), uid=5)["CapAmb"] == 1
    with pytest.raises(ValueError):
        caps.mask(["BOGUS"])


def test_backends_load():
    # the ctypes binding is libcap-ng itself: it reads this process's sets
    binding = caps.backend("ctypes")
    assert isinstance(binding, caps._CtypesCapng) and binding.capng_get_caps_process() == 0
    try:
        import capng  # noqa: F401
    except ImportError:
        require(False, "python3-cap-ng (capng module) not installed")
    assert isinstance(caps.backend("module"), caps._ModuleCapng)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
