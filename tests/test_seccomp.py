"""Seccomp layer: real filters installed in forked children, judged by errno; validation; cache;
the kill notification that names the syscall (as root and as an unprivileged user)."""
import ctypes
import errno
import os
import signal
import socket
import tomllib

import pytest

from sandbox import seccomp
from sandbox.errors import ProfileError, SetupError
from util import require

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
NR = seccomp.SYSCALLS_X86_64
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
PR_SET_NO_NEW_PRIVS = 38

pyseccomp_missing = False
try:
    import pyseccomp  # noqa: F401
except (ImportError, RuntimeError):
    pyseccomp_missing = True


@pytest.fixture(autouse=True)
def _need_pyseccomp():
    require(not pyseccomp_missing, "pyseccomp/libseccomp not installed")


def profile_policy(name):
    with open(os.path.join(REPO, "profiles", name + ".toml"), "rb") as f:
        return seccomp.validate_section(tomllib.load(f).get("seccomp", {}))


@pytest.fixture
def cache_dir(tmp_path):
    return str(tmp_path / "cache")


def raw_syscall(nr, *args):
    result = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a if a < 2**63 else a - 2**64) for a in args])
    return ("ok" if result >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno())))


def in_filtered_child(bpf, calls, uid=None, listener=False):
    """Fork; in the child set no_new_privs, install `bpf`, run `calls` [(label, nr, args)], report
    'label=ok|EPERM|...' per call. Returns (results dict, wait status)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            if uid is not None:
                os.setgroups([])
                os.setresgid(uid, uid, uid)
                os.setresuid(uid, uid, uid)
            libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            seccomp.install(bpf, listener=listener)
            out = []
            for label, nr, args in calls:
                out.append("%s=%s" % (label, raw_syscall(nr, *args)))
            os.write(write_end, " ".join(out).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    data = b""
    while True:
        chunk = os.read(read_end, 65536)
        if not chunk:
            break
        data += chunk
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    return dict(item.split("=") for item in data.decode().split()), status


TIOCSTI, TIOCLINUX = 0x5412, 0x541C
FAMILY_CALLS = [
    ("getpid", NR["getpid"], ()),
    ("unshare_user", NR["unshare"], (0x10000000,)),
    ("setns", NR["setns"], (-1 & 0xFFFFFFFF, 0)),
    ("clone_newuser", NR["clone"], (0x10000000 | signal.SIGCHLD, 0, 0, 0, 0)),
    ("clone3", NR["clone3"], (0, 0)),
    ("mount", NR["mount"], (0, 0, 0, 0, 0)),
    ("fsopen", NR["fsopen"], (0, 0)),
    ("open_tree", NR["open_tree"], (0, 0, 0)),
    ("mount_setattr", NR["mount_setattr"], (0, 0, 0, 0, 0)),
    ("keyctl", NR["keyctl"], (0,)),
    ("bpf", NR["bpf"], (0, 0, 0)),
    ("perf_event_open", NR["perf_event_open"], (0, 0, 0, 0, 0)),
    ("userfaultfd", NR["userfaultfd"], (0,)),
    ("io_uring_setup", NR["io_uring_setup"], (0, 0)),
    ("open_by_handle_at", NR["open_by_handle_at"], (0, 0, 0)),
    ("init_module", NR["init_module"], (0, 0, 0)),
    ("kexec_load", NR["kexec_load"], (0, 0, 0, 0)),
    ("reboot", NR["reboot"], (0, 0, 0, 0)),
    ("swapon", NR["swapon"], (0, 0)),
    ("settimeofday", NR["settimeofday"], (0, 0)),
    ("iopl", NR["iopl"], (0,)),
    ("acct", NR["acct"], (0,)),
    ("syslog", NR["syslog"], (0, 0, 0)),
    ("socket_alg", NR["socket"], (38, 5, 0)),
    ("socket_alg_hi", NR["socket"], ((1 << 32) | 38, 5, 0)),
    ("socket_vsock", NR["socket"], (40, 1, 0)),
    ("socket_packet", NR["socket"], (17, 3, 0)),
    ("socket_raw", NR["socket"], (2, 3, 1)),
    ("socket_inet", NR["socket"], (2, socket.SOCK_STREAM | socket.SOCK_CLOEXEC, 0)),
    ("socket_unix", NR["socket"], (1, 1, 0)),
    ("tiocsti", NR["ioctl"], (0, TIOCSTI, 0)),
    ("tiocsti_hi", NR["ioctl"], (0, (1 << 32) | TIOCSTI, 0)),
    ("tioclinux", NR["ioctl"], (0, TIOCLINUX, 0)),
    ("ioctl_fionread", NR["ioctl"], (0, 0x541B, 0)),
    ("personality_query", NR["personality"], (0xFFFFFFFF,)),
    ("personality_rie", NR["personality"], (0x0400000,)),
    ("beyond_max", seccomp.MAX_NR + 1, ()),
    ("far_beyond", 1000, ()),
    ("hole", 400, ()),
    ("x32_getpid", 0x40000000 | NR["getpid"], ()),
]


def check_strict_results(results):
    refused = ["unshare_user", "setns", "clone_newuser", "mount", "fsopen", "open_tree", "mount_setattr",
               "keyctl", "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "open_by_handle_at",
               "init_module", "kexec_load", "reboot", "swapon", "settimeofday", "iopl", "acct", "syslog",
               "socket_alg", "socket_alg_hi", "socket_vsock", "socket_packet", "socket_raw", "tiocsti",
               "tiocsti_hi", "tioclinux", "personality_rie", "x32_getpid"]
    for label in refused:
        assert results[label] == "EPERM", (label, results[label])
    for label in ("clone3", "beyond_max", "far_beyond", "hole"):
        assert results[label] == "ENOSYS", (label, results[label])
    for label in ("getpid", "socket_inet", "socket_unix", "personality_query"):
        assert results[label] == "ok", (label, results[label])
    # fd 0 may not be a tty: allowed means "not refused by seccomp"
    assert results["ioctl_fionread"] != "EPERM"


def test_strict_refuses_each_family(cache_dir):
    bpf = seccomp.compile_policy(profile_policy("strict"), cache_dir=cache_dir)
    results, status = in_filtered_child(bpf, FAMILY_CALLS)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    check_strict_results(results)


def test_strict_rootless(cache_dir):
    """The same filter works for an unprivileged user (no_new_privs instead of CAP_SYS_ADMIN)."""
    # as root: drop to nobody in the child; in the rootless run the suite is unprivileged already
    bpf = seccomp.compile_policy(profile_policy("strict"), cache_dir=cache_dir)
    results, status = in_filtered_child(bpf, FAMILY_CALLS, uid=65534 if os.geteuid() == 0 else None)
    check_strict_results(results)


def test_default_profile(cache_dir):
    bpf = seccomp.compile_policy(profile_policy("default"), cache_dir=cache_dir)
    results, _ = in_filtered_child(bpf, FAMILY_CALLS)
    for label in ("unshare_user", "clone_newuser", "mount", "keyctl", "bpf", "io_uring_setup",
                  "socket_alg", "socket_alg_hi", "socket_vsock", "tiocsti", "personality_rie", "x32_getpid"):
        assert results[label] == "EPERM", (label, results[label])
    assert results["clone3"] == "ENOSYS"
    assert results["beyond_max"] == "ENOSYS"
    assert results["socket_inet"] == "ok"
    assert results["personality_query"] == "ok"


def test_permissive_is_off():
    assert profile_policy("permissive") is None


def test_real_program_runs_under_strict(cache_dir):
    """An ordinary dynamically linked program (python itself, with threads) runs under strict."""
    bpf = seccomp.compile_policy(profile_policy("strict"), cache_dir=cache_dir)
    pid = os.fork()
    if pid == 0:
        try:
            libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            seccomp.install(bpf)
            os.execv("/usr/bin/python3", ["python3", "-I", "-c",
                     "import threading,socket,subprocess; t=threading.Thread(target=print); t.start(); t.join();"
                     "socket.socket().close(); raise SystemExit(subprocess.call(['/bin/true']))"])
        finally:
            os._exit(99)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


# ----------------------------------------------------------------------------------------------
# validation


@pytest.mark.parametrize("raw, key", [
    ({"allow": ["getpid", "no_such_call"]}, "allow"),
    ({"allow": ["@no-such-group"]}, "allow"),
    ({"default_action": "explode"}, "default_action"),
    ({"default_errno": "EWHATEVER"}, "default_errno"),
    ({"surprise": 1}, "surprise"),
    ({"allow": "getpid", "deny": ["getpid"]}, "deny"),
    ({"rules": [{"syscall": "socket", "action": "kill", "args": [{"index": 0, "op": "gt", "value": 3}]}]},
     "rules[0].args"),
    ({"rules": [{"syscall": "socket", "args": [{"index": 7, "op": "eq", "value": 3}]}]}, "rules[0].args"),
    ({"rules": [{"syscall": "socket", "args": [{"index": 0, "op": "eq", "value": "AF_NOPE"}]}]},
     "rules[0].args"),
    ({"rules": [{"syscall": "socket", "action": "maybe"}]}, "rules[0].action"),
    ({"errno": {"clone3": "ENOPE"}}, "errno"),
    ({"abis": ["x86_64", "sparc"]}, "abis"),
    ({"enabled": "yes"}, "enabled"),
    ({"import": "/nonexistent/seccomp.json"}, "import"),
])
def test_validation_errors_name_the_key(raw, key):
    with pytest.raises(ProfileError) as info:
        seccomp.validate_section(raw)
    assert info.value.key == key, str(info.value)


def test_disabled_gives_none_and_policies_are_frozen_and_hashable():
    assert seccomp.validate_section({"enabled": False, "allow": ["getpid"]}) is None
    a = profile_policy("strict")
    b = profile_policy("strict")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    with pytest.raises(AttributeError):
        a.rules = ()


# ----------------------------------------------------------------------------------------------
# cache


def test_second_compile_is_a_cache_hit_and_corruption_is_recompiled(cache_dir):
    policy = profile_policy("strict")
    before = dict(seccomp.stats)
    first = seccomp.compile_policy(policy, cache_dir=cache_dir)
    assert seccomp.stats["compiles"] == before["compiles"] + 1
    second = seccomp.compile_policy(policy, cache_dir=cache_dir)
    assert second == first
    assert seccomp.stats["cache_hits"] == before["cache_hits"] + 1
    assert seccomp.stats["compiles"] == before["compiles"] + 1
    [entry] = [os.path.join(cache_dir, f) for f in os.listdir(cache_dir)]
    assert os.stat(entry).st_mode & 0o777 == 0o600
    assert os.stat(cache_dir).st_mode & 0o777 == 0o700
    # flip one byte inside the program: the stored hash no longer matches
    with open(entry, "r+b") as f:
        f.seek(-3, os.SEEK_END)
        byte = f.read(1)
        f.seek(-3, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0xFF]))
    third = seccomp.compile_policy(policy, cache_dir=cache_dir)
    assert third == first
    assert seccomp.stats["cache_rejected"] == before["cache_rejected"] + 1
    assert seccomp.stats["compiles"] == before["compiles"] + 2
    # truncated to a length that is not a whole number of instructions
    with open(entry, "r+b") as f:
        f.truncate(os.path.getsize(entry) - 3)
    assert seccomp.compile_policy(policy, cache_dir=cache_dir) == first
    assert seccomp.stats["compiles"] == before["compiles"] + 3


def test_warm_start_does_not_import_pyseccomp(cache_dir):
    import subprocess
    import sys
    policy_code = ("import tomllib,sys; from sandbox import seccomp;"
                   "p=seccomp.validate_section(tomllib.load(open(%r,'rb'))['seccomp']);"
                   "seccomp.compile_policy(p, cache_dir=%r);"
                   "print(seccomp.stats['cache_hits'], 'pyseccomp' in sys.modules)"
                   % (os.path.join(REPO, "profiles", "strict.toml"), cache_dir))
    env = dict(os.environ, PYTHONPATH=REPO)
    subprocess.run([sys.executable, "-c", policy_code], check=True, env=env, capture_output=True)
    out = subprocess.run([sys.executable, "-c", policy_code], check=True, env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["1", "False"]


# ----------------------------------------------------------------------------------------------
# kill verdict: notify + listener handed to the supervisor


def _kill_verdict_roundtrip(cache_dir, uid=None):
    policy = seccomp.validate_section({"allow": ["@basic"], "kill": ["ptrace"],
                                       "rules": [{"syscall": "ioctl"}]})
    assert policy.has_kill_rules
    bpf = seccomp.compile_policy(policy, cache_dir=cache_dir, notify_kills=True)
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:
        try:
            parent_sock.close()
            if uid is not None:
                os.setgroups([])
                os.setresgid(uid, uid, uid)
                os.setresuid(uid, uid, uid)
            libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            seccomp.install(bpf, listener=True, handoff=child_sock.fileno())
            raw_syscall(NR["ptrace"], 0, 0, 0, 0)  # blocks until the supervisor kills us
        finally:
            os._exit(42)
    child_sock.close()
    listener = seccomp.recv_listener(parent_sock.fileno())
    parent_sock.close()
    try:
        got = seccomp.receive_kill(listener, timeout=20)
        assert got is not None, "no notification"
        notified_pid, name = got
        assert notified_pid == pid
        assert name == "ptrace"
        assert seccomp.verdict(got) == {"reason": "seccomp", "syscall": "ptrace"}
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        # no task uses the filter any more: receive_kill reports that instead of blocking
        assert seccomp.receive_kill(listener, timeout=5) is None
    finally:
        os.close(listener)


def test_kill_rule_names_the_syscall(cache_dir):
    _kill_verdict_roundtrip(cache_dir)


def test_kill_rule_names_the_syscall_rootless(cache_dir):
    _kill_verdict_roundtrip(cache_dir, uid=65534 if os.geteuid() == 0 else None)


def test_kill_without_listener_kills_with_sigsys(cache_dir):
    policy = seccomp.validate_section({"allow": ["@basic"], "kill": ["ptrace"]})
    bpf = seccomp.compile_policy(policy, cache_dir=cache_dir)
    _, status = in_filtered_child(bpf, [("ptrace", NR["ptrace"], (0, 0, 0, 0))])
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def test_install_errors_are_setup_errors():
    with pytest.raises(SetupError) as info:
        seccomp.install(b"\0" * 7)
    assert info.value.stage == "seccomp"


def test_guard_rule_and_log_flag(cache_dir):
    """A user rule: errno on an int argument compared on its low 32 bits; log mode installs."""
    policy = seccomp.validate_section({
        "default_action": "allow", "log": True,
        "rules": [{"syscall": "personality", "action": "errno", "errno": "EACCES",
                   "args": [{"index": 0, "op": "masked_eq", "mask": "INT_MASK", "value": "READ_IMPLIES_EXEC"}]}]})
    bpf = seccomp.compile_policy(policy, cache_dir=cache_dir)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            seccomp.install(bpf, log=policy.log)
            os.write(write_end, ("%s %s" % (raw_syscall(NR["personality"], (1 << 40) | 0x400000),
                                            raw_syscall(NR["personality"], 0xFFFFFFFF))).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    assert os.read(read_end, 100).decode() == "EACCES ok"
    os.close(read_end)
    os.waitpid(pid, 0)


def test_syscall_name():
    assert seccomp.syscall_name(39) == "getpid"
    assert seccomp.syscall_name(469) == "file_setattr"
    assert seccomp.syscall_name(0x40000000 | 39) == "x32:getpid"
    assert seccomp.syscall_name(102, seccomp.AUDIT_ARCH_I386) == "socketcall"
    assert seccomp.syscall_name(9999) == "syscall_9999"


def test_describe_strict(cache_dir):
    facts = seccomp.describe(profile_policy("strict"), cache_dir=cache_dir)
    assert facts["unknown_syscalls_enosys"] is True
    for key in ("allows_io_uring", "allows_userns_creation", "allows_x32", "allows_i386", "allows_tiocsti",
                "allows_socketcall", "allows_open_by_handle_at", "allows_setid_modes"):
        assert facts[key] is False, key
    assert "TIOCSPGRP" in facts["own_terminal_ioctls"] and "TIOCSTI" not in facts["own_terminal_ioctls"]
    default = seccomp.describe(profile_policy("default"), cache_dir=cache_dir)
    assert default["allows_setid_modes"] is True and default["own_terminal_ioctls"] == []
    assert facts["default_action"] == "errno(1)"
    assert "read" in facts["allowed"] and "mount" in facts["denied"]
    assert "socket" in facts["conditional"]


# ----------------------------------------------------------------------------------------------
# argument allowlists compiled by the prefix (strict's ioctl, socket protocols)

TCGETS, TCSETS, TIOCSWINSZ, TIOCSETD, TIOCEXCL, FIONBIO = 0x5401, 0x5402, 0x5414, 0x5423, 0x540C, 0x5421


def test_strict_ioctl_allowlist_in_the_emulator(cache_dir):
    policy = profile_policy("strict")
    bpf = seccomp.compile_policy(policy, cache_dir=cache_dir)
    allowed = sorted({args[0][2] for name, action, args in policy.rules if name == "ioctl" and action == ("allow",)})
    assert TCGETS in allowed and FIONBIO in allowed and len(allowed) >= 20
    for cmd in allowed:
        for high in (0, 1 << 32, 0xFFFFFFFF << 32):  # the kernel truncates cmd to 32 bits
            assert seccomp.action_of(seccomp.emulate(bpf, NR["ioctl"], args=(0, high | cmd))[0]) == ("allow",), cmd
    for cmd in (TCSETS, TIOCSWINSZ, TIOCSETD, TIOCEXCL, 0, 1, 0xFFFFFFFF, TCGETS + 0x10000, max(allowed) + 1):
        assert seccomp.action_of(seccomp.emulate(bpf, NR["ioctl"], args=(0, cmd))[0]) == ("errno", errno.ENOTTY), cmd
    for cmd in (TIOCSTI, TIOCLINUX, (1 << 32) | TIOCSTI):
        assert seccomp.action_of(seccomp.emulate(bpf, NR["ioctl"], args=(0, cmd))[0]) == ("errno", errno.EPERM)


def test_strict_ioctl_allowlist_for_real_on_a_pty(cache_dir):
    """Installed in a child holding a pty: queries pass, changes get ENOTTY from the filter."""
    bpf = seccomp.compile_policy(profile_policy("strict"), cache_dir=cache_dir)
    master, slave = os.openpty()
    buffer = ctypes.create_string_buffer(64)
    address = ctypes.addressof(buffer)
    try:
        results, status = in_filtered_child(bpf, [
            ("tcgets", NR["ioctl"], (slave, TCGETS, address)),
            ("tiocgwinsz", NR["ioctl"], (slave, 0x5413, address)),
            ("tcsets", NR["ioctl"], (slave, TCSETS, address)),
            ("tiocswinsz", NR["ioctl"], (slave, TIOCSWINSZ, address)),
            ("tiocexcl", NR["ioctl"], (slave, TIOCEXCL, 0)),
        ])
    finally:
        os.close(master)
        os.close(slave)
    assert os.WIFEXITED(status)
    assert results == {"tcgets": "ok", "tiocgwinsz": "ok", "tcsets": "ENOTTY", "tiocswinsz": "ENOTTY",
                       "tiocexcl": "ENOTTY"}


def test_strict_socket_protocols_in_the_emulator(cache_dir):
    bpf = seccomp.compile_policy(profile_policy("strict"), cache_dir=cache_dir)

    def verdict(*args):
        return seccomp.action_of(seccomp.emulate(bpf, NR["socket"], args=args)[0])
    for family in (2, 10):
        for kind, protocols in ((1, (0, 6)), (2, (0, 17))):
            for protocol in protocols:
                for flags in (0, socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK):
                    assert verdict(family, kind | flags, protocol) == ("allow",), (family, kind, protocol)
        for kind, protocol in ((1, 262), (2, 136), (1, 132), (5, 132), (1, 17), (2, 6), (3, 1), (2, 1), (1, 1 << 8)):
            assert verdict(family, kind, protocol) == ("errno", errno.EPERM), (family, kind, protocol)
    assert verdict(1, 5, 0) == ("allow",) and verdict(1, 1, 1) == ("errno", errno.EPERM)
    assert verdict(16, 3, 0) == ("allow",) and verdict(16, 3, 9) == ("errno", errno.EPERM)
    assert seccomp.action_of(seccomp.emulate(bpf, NR["memfd_secret"])[0]) == ("errno", errno.EPERM)


@pytest.mark.parametrize("count", [1, 2, 3, 5, 17, 64, 150])
def test_value_switch_agrees_with_a_plain_comparison(count, cache_dir):
    """A generated allowlist of `count` values with a fallback: every listed value passes (also
    with garbage in the high word), every other value sampled gets the fallback."""
    import random
    rng = random.Random(count)
    values = sorted(rng.sample(range(1, 1 << 31), count))
    policy = seccomp.validate_section({
        "allow": ["@basic"],
        "rules": [{"syscall": "ioctl", "args": [{"index": 1, "op": "masked_eq", "mask": "INT_MASK", "value": values}]},
                  {"syscall": "ioctl", "action": "errno", "errno": "ENOTTY"},
                  {"syscall": "ioctl", "action": "errno", "errno": "EPERM",
                   "args": [{"index": 1, "op": "masked_eq", "mask": "INT_MASK", "value": values[0]}]}]})
    bpf = seccomp.compile_uncached(policy)
    want = {v: ("allow",) for v in values}
    want[values[0]] = ("errno", errno.EPERM)  # a refusal wins over an allow of the same value
    probes = set(values) | {v + 1 for v in values} | {v - 1 for v in values} | {0, 0xFFFFFFFF}
    probes |= {rng.randrange(1 << 32) for _ in range(200)}
    for value in sorted(probes):
        expected = want.get(value, ("errno", errno.ENOTTY))
        assert seccomp.action_of(seccomp.emulate(bpf, NR["ioctl"], args=(3, (7 << 32) | value))[0]) == expected
    # the syscalls without argument rules still go to libseccomp's part and are allowed
    assert seccomp.action_of(seccomp.emulate(bpf, NR["getpid"])[0]) == ("allow",)
    assert seccomp.action_of(seccomp.emulate(bpf, NR["mount"])[0]) == ("errno", errno.EPERM)


@pytest.mark.parametrize("raw, message", [
    ({"rules": [{"syscall": "socket", "args": [{"index": 0, "op": "lt", "value": [1, 2]}]}]}, "list of values"),
    ({"rules": [{"syscall": "socket", "args": [{"index": 0, "op": "eq", "value": []}]}]}, "empty list"),
    ({"rules": [{"syscall": "ioctl", "args": [{"index": 1, "op": "masked_eq", "mask": 0xFF, "value": 0x100}]}]},
     "outside the mask"),
    ({"abis": ["x86_64", "i386"], "allow": ["@basic"],
      "rules": [{"syscall": "ioctl", "args": [{"index": 1, "op": "eq", "value": 1}]},
                {"syscall": "ioctl", "action": "errno", "errno": "ENOTTY"}]}, "abis"),
    ({"allow": ["@basic"], "rules": [{"syscall": "ioctl", "args": [{"index": 1, "op": "gt", "value": 1}]},
                                     {"syscall": "ioctl", "action": "errno", "errno": "ENOTTY"}]}, "eq"),
    ({"allow": ["@basic", "ioctl"], "rules": [{"syscall": "ioctl", "args": [{"index": 1, "op": "eq", "value": 1}]}]},
     "unconditional allow"),
])
def test_argument_allowlist_validation(raw, message):
    with pytest.raises(ProfileError) as info:
        seccomp.validate_section(raw)
    assert message in str(info.value)


def test_ioctl_is_judged_before_the_dispatch_of_other_blocks(cache_dir):
    """The hot path: ioctl's block comes right after the number is loaded (few instructions run)."""
    bpf = seccomp.compile_policy(profile_policy("strict"), cache_dir=cache_dir)
    insns = [bpf[i:i + 8] for i in range(0, len(bpf), 8)]
    import struct
    # ld arch; jeq x86_64; ld nr; jeq ioctl
    assert [struct.unpack("<HBBI", insn)[0] for insn in insns[:4]] == [0x20, 0x15, 0x20, 0x15]
    assert struct.unpack("<HBBI", insns[3])[3] == NR["ioctl"]


# ----------------------------------------------------------------------------------------------
# the sandbox's own terminal: own_terminal_ioctls (issue 9 item 4, issue 10 item 1)

TIOCSPGRP, TIOCNOTTY, TCSETS2 = 0x5410, 0x5422, 0x402C542B


def _ioctl(bpf, cmd):
    return seccomp.action_of(seccomp.emulate(bpf, NR["ioctl"], args=(0, cmd))[0])


def test_own_terminal_program_adds_the_own_terminal_requests_only(cache_dir):
    policy = profile_policy("strict")
    base = seccomp.compile_policy(policy, cache_dir=cache_dir)
    own = seccomp.compile_policy(policy.for_own_terminal(), cache_dir=cache_dir)
    assert own != base
    for cmd in (TCSETS, TCSETS2, TIOCSPGRP, TIOCSWINSZ, TIOCNOTTY, 0x540B):  # ... TCFLSH
        assert _ioctl(base, cmd) == ("errno", errno.ENOTTY), cmd
        assert _ioctl(own, cmd) == ("allow",) and _ioctl(own, (1 << 32) | cmd) == ("allow",), cmd
    for cmd in (TIOCSTI, TIOCLINUX):
        assert _ioctl(own, cmd) == ("errno", errno.EPERM)
    for cmd in (TIOCSETD, TIOCEXCL, 0x540D, 0x541D, 0, 0xFFFFFFFF):  # TIOCNXCL, TIOCCONS, unknown
        assert _ioctl(own, cmd) == ("errno", errno.ENOTTY), cmd
    # everything else is judged as before
    for name in ("read", "getpid", "mount", "ptrace"):
        assert seccomp.emulate(own, NR[name])[0] == seccomp.emulate(base, NR[name])[0], name


def test_own_terminal_program_for_real_on_a_pty(cache_dir):
    """Installed in a child holding a pty: it may set its modes and size; TIOCEXCL, TIOCSETD and
    TIOCSTI stay refused."""
    bpf = seccomp.compile_policy(profile_policy("strict").for_own_terminal(), cache_dir=cache_dir)
    master, slave = os.openpty()
    buffer = ctypes.create_string_buffer(64)
    address = ctypes.addressof(buffer)
    ldisc = ctypes.c_int(27)
    try:
        results, status = in_filtered_child(bpf, [
            ("tcgets", NR["ioctl"], (slave, TCGETS, address)),
            ("tcsets", NR["ioctl"], (slave, TCSETS, address)),
            ("tiocswinsz", NR["ioctl"], (slave, TIOCSWINSZ, address)),
            ("tiocexcl", NR["ioctl"], (slave, TIOCEXCL, 0)),
            ("tiocsetd", NR["ioctl"], (slave, TIOCSETD, ctypes.addressof(ldisc))),
            ("tiocsti", NR["ioctl"], (slave, TIOCSTI, address)),
        ])
    finally:
        os.close(master)
        os.close(slave)
    assert os.WIFEXITED(status)
    assert results == {"tcgets": "ok", "tcsets": "ok", "tiocswinsz": "ok", "tiocexcl": "ENOTTY",
                       "tiocsetd": "ENOTTY", "tiocsti": "EPERM"}


STRICT_IOCTLS = {"allow": ["@basic"], "rules": [
    {"syscall": "ioctl", "args": [{"index": 1, "op": "masked_eq", "mask": "INT_MASK", "value": "TCGETS"}]},
    {"syscall": "ioctl", "action": "errno", "errno": "ENOTTY"}]}


@pytest.mark.parametrize("value, message", [
    (["TIOCSTI"], "TIOCSTI stays refused"),
    (["TCSETS", "TIOCSETD"], "TIOCSETD stays refused"),
    ([0x540C], "TIOCEXCL stays refused"),
    (["TIOCNXCL"], "TIOCNXCL"),
    (["TIOCCONS"], "TIOCCONS"),
    ("TCSETS", "expected a list"),
    (["NO_SUCH"], "unknown constant"),
    ([1 << 32], "32-bit"),
])
def test_own_terminal_ioctls_validation(value, message):
    with pytest.raises(ProfileError) as info:
        seccomp.validate_section(dict(STRICT_IOCTLS, own_terminal_ioctls=value))
    assert message in str(info.value) and "own_terminal_ioctls" in str(info.value)


def test_own_terminal_ioctls_widen_an_allowlist_or_nothing():
    policy = seccomp.validate_section(dict(STRICT_IOCTLS, own_terminal_ioctls=["TCSETS", "TCGETS"]))
    assert policy.own_terminal == (TCSETS,)  # TCGETS is in the allowlist already
    # without an ioctl allowlist (ioctl allowed outright, as in default) there is nothing to add
    for raw in ({"allow": ["@basic"]}, {"default_action": "allow", "deny": ["mount"]}):
        policy = seccomp.validate_section(dict(raw, own_terminal_ioctls=["TCSETS"]))
        assert policy.own_terminal == () and policy.for_own_terminal() is None
    assert profile_policy("default").for_own_terminal() is None


def test_a_syscall_refused_by_name_wins_over_a_group_of_allow(cache_dir):
    policy = seccomp.validate_section({"allow": ["@basic"], "errno": {"openat2": "ENOSYS"}})
    bpf = seccomp.compile_policy(policy, cache_dir=cache_dir)
    assert seccomp.action_of(seccomp.emulate(bpf, NR["openat2"])[0]) == ("errno", errno.ENOSYS)
    assert seccomp.allowed(seccomp.emulate(bpf, NR["openat"])[0])
    with pytest.raises(ProfileError) as info:  # named in both: still a conflict
        seccomp.validate_section({"allow": ["@basic", "openat2"], "errno": {"openat2": "ENOSYS"}})
    assert "two different unconditional actions" in str(info.value)


def test_the_own_terminal_program_is_compiled_once_per_sandbox(tmp_path, monkeypatch):
    """Lazily: a run without a pty never compiles it; the first run with one does, later ones reuse it."""
    from sandbox import Sandbox, load_profile
    from util import ROOT
    name = "strict"
    if not ROOT:
        path = tmp_path / "strict-nolimits.toml"
        path.write_text('extends = "strict"\n[limits]\nrequired = false\nmemory = 0\npids = 0\ncpus = 0.0\n')
        name = str(path)
    compiled = []
    real = seccomp.compile_policy

    def counting(policy, *args, **kwargs):
        compiled.append(policy)
        return real(policy, *args, **kwargs)

    monkeypatch.setattr(seccomp, "compile_policy", counting)
    box = Sandbox(load_profile(name))
    assert box.run(["/bin/true"], tty=False).exit_code == 0
    part = box.plan().layers["seccomp"]
    assert part.variants == {} and len(compiled) == 1
    for _ in range(2):
        result = box.run(["/bin/sh", "-c", "stty -echo && stty echo"], tty=True)
        assert (result.reason, result.exit_code) == ("exit", 0), result
    assert set(part.variants) == {"own_terminal"} and len(compiled) == 2
    assert compiled[1] == load_profile(name).seccomp.for_own_terminal()
    # the same sandbox without a pty: the profile's own program, where stty cannot set modes
    master, slave = os.openpty()
    try:
        result = box.start(["/bin/sh", "-c", "stty -echo"], tty=False, stdin=slave).wait()
    finally:
        os.close(master)
        os.close(slave)
    assert result.exit_code != 0 and len(compiled) == 2


# ----------------------------------------------------------------------------------------------
# set-id mode bits (issue 10 item 4): strict refuses them in every mode argument

S_ISUID, S_ISGID, S_ISVTX, O_CREAT, O_TMPFILE = 0o4000, 0o2000, 0o1000, 0o100, 0o20200000


def test_strict_refuses_setid_modes_in_the_emulator(cache_dir):
    bpf = seccomp.compile_policy(profile_policy("strict"), cache_dir=cache_dir)

    def judge(name, *args):
        return seccomp.action_of(seccomp.emulate(bpf, NR[name], args=args)[0])

    EPERM = ("errno", errno.EPERM)
    for mode in (S_ISUID | 0o755, S_ISGID | 0o755, S_ISUID | S_ISGID, (1 << 40) | S_ISUID, 0o104755):
        for name, args in (("chmod", (0, mode)), ("fchmod", (3, mode)), ("fchmodat", (-100, 0, mode)),
                           ("fchmodat2", (-100, 0, mode, 0)), ("mknod", (0, mode, 0)), ("mknodat", (-100, 0, mode, 0)),
                           ("creat", (0, mode)), ("open", (0, O_CREAT | 1, mode)), ("open", (0, O_TMPFILE | 2, mode)),
                           ("openat", (-100, 0, O_CREAT | 0o1000, mode)), ("openat", (-100, 0, O_TMPFILE | 2, mode))):
            assert judge(name, *args) == EPERM, (name, oct(mode))
    for mode in (0o755, 0o644, S_ISVTX | 0o777, 0):
        for name, args in (("chmod", (0, mode)), ("fchmod", (3, mode)), ("fchmodat", (-100, 0, mode)),
                           ("creat", (0, mode)), ("open", (0, O_CREAT | 1, mode)),
                           ("openat", (-100, 0, O_CREAT | 1, mode)), ("mknodat", (-100, 0, 0o10000 | mode, 0))):
            assert judge(name, *args) == ("allow",), (name, oct(mode))
    # without O_CREAT/O_TMPFILE the kernel ignores the mode: junk there is no reason to refuse
    assert judge("openat", -100, 0, 0, 0o7777) == ("allow",) and judge("open", 0, 2, 0o4755) == ("allow",)
    # openat2's mode is in memory: ENOSYS, and libc's open/openat never need it
    assert judge("openat2", -100, 0, 0, 24) == ("errno", errno.ENOSYS)


OWN_TAIL_POLICIES = {
    "strict": lambda: profile_policy("strict"),
    "default": lambda: profile_policy("default"),
    # allow by default with refusals of every kind: kill, errno, trap, log
    "denylist": lambda: seccomp.validate_section({
        "default_action": "allow", "kill": ["ptrace", "kexec_load"], "errno": {"mount": "EPERM", "umount2": "EBUSY"},
        "rules": [{"syscall": "reboot", "action": "trap"}, {"syscall": "acct", "action": "log"},
                  {"syscall": "personality", "action": "errno", "errno": "EINVAL",
                   "args": [{"index": 0, "op": "eq", "value": 8}]}]}),
    # unknown numbers get the default, not ENOSYS; errno rules next to the allowlist
    "allowlist-errno": lambda: seccomp.validate_section({
        "allow": ["read", "write", "exit_group", "getpid", "close"], "unknown_syscalls": "default",
        "errno": {"openat": "ENOENT"}, "default_errno": "EACCES"}),
    # a kill default: badarch calls get it too
    "kill-default": lambda: seccomp.validate_section({"default_action": "kill", "allow": ["@basic"]}),
    # every other number allowed: hundreds of ranges, so subtrees too long for an 8-bit jump
    "alternating": lambda: seccomp.validate_section({
        "allow": sorted(name for name, nr in seccomp.SYSCALLS_X86_64.items() if nr % 2 == 0)}),
}


@pytest.mark.parametrize("name", sorted(OWN_TAIL_POLICIES))
@pytest.mark.parametrize("notify_kills", [False, True])
def test_own_tail_answers_as_libseccomps_program(name, notify_kills):
    """Where every rule left after the prefix has no argument condition and the policy is x86_64
    only, the program's second half is a range search of our own instead of libseccomp's tree.
    It must answer every call as libseccomp's program does: each number of every ABI (x86_64, x32,
    i386, another arch), below, inside and above the table, with the arguments the prefix checks.
    And it must be shorter, which is its reason to exist (the kernel converts, JITs and
    pre-evaluates every instruction at each install)."""
    policy = OWN_TAIL_POLICIES[name]()
    ours = seccomp.compile_uncached(policy, notify_kills=notify_kills, own_tail="only")
    theirs = seccomp.compile_uncached(policy, notify_kills=notify_kills, own_tail=False)
    chosen = seccomp.compile_uncached(policy, notify_kills=notify_kills)
    assert chosen == (ours if len(ours) < len(theirs) else theirs)  # a tie keeps libseccomp's

    if name in ("strict", "default"):
        assert len(ours) < len(theirs), (len(ours) // 8, len(theirs) // 8)
    numbers = list(range(-1, seccomp.MAX_NR + 70)) + [seccomp.X32_SYSCALL_BIT + n for n in (0, 1, 16, 39, 512, 600)]
    numbers += [0x3FFFFFFF, 0x7FFFFFFF]
    argument_sets = [(0,) * 6, (3, TIOCSTI, 0, 0, 0, 0), (3, 0x5401, 0, 0, 0, 0), (8, 0o4755, 0o4755, 0o6000)]
    differences = []
    for arch in (seccomp.AUDIT_ARCH_X86_64, seccomp.AUDIT_ARCH_I386, 0xC00000B7, 0):
        for nr in numbers:
            for args in argument_sets:
                mine, libs = seccomp.emulate(ours, nr, arch, args)[0], seccomp.emulate(theirs, nr, arch, args)[0]
                if mine != libs:
                    differences.append((hex(arch), nr, args, hex(mine), hex(libs)))
    assert differences == []


def test_own_tail_is_left_to_libseccomp_when_it_cannot_judge():
    """A rule with a condition the prefix leaves to libseccomp (`lt`), or a second ABI: the
    program is libseccomp's, byte for byte."""
    for raw in ({"allow": ["@basic"], "rules": [{"syscall": "socket", "args": [{"index": 0, "op": "lt", "value": 3}]}]},
                {"allow": ["@basic"], "abis": ["x86_64", "i386"]}):
        policy = seccomp.validate_section(raw)
        assert seccomp.compile_uncached(policy) == seccomp.compile_uncached(policy, own_tail=False)


def test_own_tail_filter_works_in_the_kernel():
    """The shorter strict program installed for real: allowed calls pass, refused ones get
    EPERM, numbers past the table ENOSYS, argument rules still hold."""
    bpf = seccomp.compile_uncached(profile_policy("strict"))
    results, status = in_filtered_child(bpf, [
        ("getpid", NR["getpid"], ()), ("mount", NR["mount"], (0, 0, 0, 0, 0)),
        ("unknown", seccomp.MAX_NR + 5, ()), ("tiocsti", NR["ioctl"], (0, TIOCSTI, 0)),
        ("bpf", NR["bpf"], (0, 0, 0))])
    assert status == 0
    assert results == {"getpid": "ok", "mount": "EPERM", "unknown": "ENOSYS", "tiocsti": "EPERM", "bpf": "EPERM"}


def test_range_search_jumps_over_long_subtrees():
    """300 ranges: the root's left subtree is longer than a conditional jump reaches (255), so
    it is jumped over with JA. Every number still gets its range's answer."""
    import bisect
    import struct
    ranges = [(3 * i, seccomp.RET_ERRNO | (i % 7)) for i in range(300)]
    code = [(0x20, 0, 0, 0)] + seccomp._range_tree(ranges)  # load nr, then the search
    assert any(op == 0x05 for op, _jt, _jf, _k in code)
    bpf = b"".join(struct.pack("<HBBI", *insn) for insn in code)
    starts = [start for start, _ in ranges]
    for nr in range(0, 3 * 300 + 10):
        assert seccomp.emulate(bpf, nr)[0] == ranges[bisect.bisect_right(starts, nr) - 1][1], nr


def test_x32_calls_are_a_foreign_abi_whatever_the_default():
    """x32 numbers are not x86_64's, so a deny list written for x86_64 does not cover them: a
    policy that allows by default kills x32 calls (as libseccomp does other ABIs); one that
    refuses by default refuses them; one that lists the ABI judges them by its rules."""
    deny_list = seccomp.validate_section({"default_action": "allow", "kill": ["ptrace"]})
    bpf = seccomp.compile_uncached(deny_list)
    for name in ("ptrace", "mount", "getpid"):
        assert seccomp.emulate(bpf, seccomp.X32_SYSCALL_BIT | NR[name])[0] == seccomp.RET_KILL_PROCESS, name
    assert seccomp.action_of(seccomp.emulate(bpf, NR["getpid"])[0]) == ("allow",)
    allow_list = seccomp.validate_section({"allow": ["@basic"]})
    assert seccomp.action_of(seccomp.emulate(seccomp.compile_uncached(allow_list),
                                             seccomp.X32_SYSCALL_BIT | NR["getpid"])[0]) == ("errno", errno.EPERM)


def test_errno_values_libseccomp_takes():
    """4094 is the highest errno libseccomp compiles; 4095 is refused when the profile loads,
    not when the filter is compiled."""
    assert seccomp.compile_uncached(seccomp.validate_section({"allow": ["read"], "default_errno": 4094}))
    with pytest.raises(ProfileError, match="0..4094"):
        seccomp.validate_section({"allow": ["read"], "default_errno": 4095})
