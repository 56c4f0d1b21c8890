"""Escape suite, kernel surface: under strict, socket protocols outside the per-family allowlist
(MPTCP, UDP-Lite, SCTP, raw, netlink other than route) and memfd_secret are refused by the
filter (EPERM, where the kernel itself would answer EPROTONOSUPPORT or succeed), while the
sockets ordinary programs open (TCP, UDP, AF_UNIX, netlink route) still work.

Each probe runs for real inside `pysandbox run`; the same probes under the permissive profile
(no filter) show what the kernel alone answers, so a refusal under strict is the filter's.
Root and rootless alike.
"""
import json

import pytest

from util import ROOT, run_cli

PROBES = r"""
import ctypes, errno, json, os, socket
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def sock(family, kind, proto):
    try:
        socket.socket(family, kind, proto).close()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
def memfd_secret():
    fd = libc.syscall(ctypes.c_long(447), ctypes.c_long(0))
    if fd < 0:
        return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
    os.close(fd)
    return "ok"
def socketpair(proto):
    try:
        for s in socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM, proto):
            s.close()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
I, I6, U, N = socket.AF_INET, socket.AF_INET6, socket.AF_UNIX, socket.AF_NETLINK
S, D, Q, R = socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_SEQPACKET, socket.SOCK_RAW
print(json.dumps({
    "mptcp": sock(I, S, 262), "mptcp6": sock(I6, S, 262),
    "udplite": sock(I, D, 136), "udplite6": sock(I6, D, 136),
    "sctp_stream": sock(I, S, 132), "sctp_seqpacket": sock(I, Q, 132), "sctp6": sock(I6, Q, 132),
    "udp_as_stream": sock(I, S, 17), "tcp_as_dgram": sock(I, D, 6),
    "icmp_dgram": sock(I, D, 1), "raw": sock(I, R, 1),
    "unix_proto1": sock(U, S, 1), "netlink_audit": sock(N, R, 9),
    "memfd_secret": memfd_secret(),
    "tcp": sock(I, S, 0), "tcp_explicit": sock(I, S, 6), "udp": sock(I, D, 0), "udp_explicit": sock(I, D, 17),
    "tcp6": sock(I6, S, 6), "udp6": sock(I6, D, 17), "tcp_nonblock": sock(I, S | socket.SOCK_NONBLOCK, 0),
    "unix_stream": sock(U, S, 0), "unix_dgram": sock(U, D, 0), "unix_seqpacket": sock(U, Q, 0),
    "netlink_route": sock(N, R, 0), "socketpair": socketpair(0), "socketpair_proto1": socketpair(1),
}))
"""

REFUSED = ("mptcp", "mptcp6", "udplite", "udplite6", "sctp_stream", "sctp_seqpacket", "sctp6", "udp_as_stream",
           "tcp_as_dgram", "icmp_dgram", "raw", "unix_proto1", "netlink_audit", "memfd_secret",
           "socketpair_proto1")
ALLOWED = ("tcp", "tcp_explicit", "udp", "udp_explicit", "tcp6", "udp6", "tcp_nonblock", "unix_stream",
           "unix_dgram", "unix_seqpacket", "netlink_route", "socketpair")

_cache = {}


def probe(profile, tmp_path_factory):
    if profile not in _cache:
        proc = run_cli("run", "--profile", profile, "--", "/usr/bin/python3", "-I", "-S", "-c", PROBES)
        if proc.returncode == 125 and profile == "strict" and not ROOT and "cgroup" in proc.stderr:
            # rootless without delegated cgroups: strict's seccomp layer through strict minus limits
            path = tmp_path_factory.mktemp("surface") / "strict-without-limits.toml"
            path.write_text('extends = "strict"\n[limits]\nrequired = false\n')
            proc = run_cli("run", "--profile", str(path), "--", "/usr/bin/python3", "-I", "-S", "-c", PROBES)
        assert proc.returncode == 0, proc.stderr
        _cache[profile] = json.loads(proc.stdout)
    return _cache[profile]


@pytest.mark.parametrize("name", REFUSED)
def test_strict_refuses(name, tmp_path_factory):
    assert probe("strict", tmp_path_factory)[name] == "EPERM"


@pytest.mark.parametrize("name", ALLOWED)
def test_strict_keeps_what_programs_use(name, tmp_path_factory):
    assert probe("strict", tmp_path_factory)[name] == "ok"


def test_the_kernel_alone_would_answer_otherwise(tmp_path_factory):
    """Without a filter (permissive) none of the refused probes gets EPERM from the kernel here
    except where it needs a capability, so strict's EPERM is the filter's verdict; and at least
    MPTCP, UDP-Lite or memfd_secret actually work on this kernel, so the refusal closes a route."""
    kernel = probe("permissive", tmp_path_factory)
    strict = probe("strict", tmp_path_factory)
    for name in ("mptcp", "udplite", "udplite6", "unix_proto1", "socketpair_proto1", "udp_as_stream",
                 "tcp_as_dgram"):
        assert kernel[name] != "EPERM", (name, kernel[name])
        assert strict[name] == "EPERM"
    assert kernel["unix_proto1"] == "ok" and kernel["udp_as_stream"] == "EPROTONOSUPPORT"
    assert "ok" in (kernel["mptcp"], kernel["udplite"], kernel["memfd_secret"]), kernel
    for name in ALLOWED:
        assert kernel[name] == "ok", (name, kernel[name])
