"""Escape paths: combinations of failing findings that together give a way out.

Each path names its technique and severity and lists the finding ids it rests on.
A finding whose severity was lowered (a capability held only inside a user
namespace) does not count: it cannot act on the host.
"""
from __future__ import annotations

from collections import namedtuple

# because: the finding ids the path rests on
EscapePath = namedtuple("EscapePath", "id name technique severity because cve", defaults=((),))


def _failing(findings):
    """ids of failing findings at their check's full severity."""
    return {f.id for f in findings if f.failed and f.severity == f.check.severity}


def _probe_allowed(snapshot, syscall):
    p = snapshot.probe("syscall:" + syscall)
    return None if p is None else p.get("verdict") == "allowed"


def find_escape_paths(snapshot, findings):
    bad = _failing(findings)
    paths = []

    def add(pid, name, technique, severity, because, cve=()):
        paths.append(EscapePath(pid, name, technique, severity, tuple(because), tuple(cve)))

    if {"release-agent", "lsm-off"} <= bad:
        add("release-agent", "release_agent",
            "mount a cgroup v1 hierarchy, set notify_on_release and release_agent, empty the cgroup: the kernel "
            "runs the agent as host root", "critical", ("release-agent", "cap-sys-admin", "lsm-off"), ("CVE-2022-0492",))
    if {"cap-sys-ptrace", "ns-pid-host"} <= bad:
        add("process-injection", "process injection",
            "ptrace a host process (shared PID namespace) and inject code into it", "critical",
            ("cap-sys-ptrace", "ns-pid-host"))
    if "cap-dac-read-search" in bad:
        allowed = _probe_allowed(snapshot, "open_by_handle_at")
        if allowed or (allowed is None and "seccomp-off" in bad):
            add("shocker", "Shocker (open_by_handle_at)",
                "brute-force file handles with open_by_handle_at from any fd on a host filesystem to read host files",
                "critical", ("cap-dac-read-search", "seccomp-off" if allowed is None else "cap-dac-read-search"))
    if "sensitive-mount" in bad and "uid0-host" in bad:
        from .checks.filesystem import sensitive_mounts
        if any(not m.read_only for m, _host in sensitive_mounts(snapshot)):
            add("host-file-write", "host file write",
                "write to a read-write host directory as real root (root not remapped): cron, ssh keys, setuid binaries",
                "critical", ("sensitive-mount", "uid0-host"))
    if "runtime-socket" in bad:
        add("runtime-socket", "runtime socket",
            "ask the runtime's API for a privileged container with the host's / mounted: full host control",
            "critical", ("runtime-socket",))
    for cid, name, what in (
            ("core-pattern-writable", "core_pattern", "set kernel.core_pattern to a pipe helper and crash a process"),
            ("modprobe-writable", "modprobe", "set kernel.modprobe and trigger a module request"),
            ("uevent-helper-writable", "uevent_helper", "set /sys/kernel/uevent_helper and trigger a uevent"),
            ("binfmt-misc-writable", "binfmt_misc", "register an interpreter with the credentials flag")):
        if cid in bad:
            add(cid, name, what + ": the kernel runs attacker code as host root", "critical", (cid,))
    if "host-procfs" in bad:
        add("host-procfs", "host procfs", "walk /proc/1/root of the host's procfs into the host's root", "critical",
            ("host-procfs",))
    if "ns-mnt-host" in bad:
        add("host-mount-namespace", "host mount namespace", "the host's filesystem is the target's filesystem",
            "critical", ("ns-mnt-host",))
    if "block-devices" in bad and ({"cap-sys-admin", "uid0-host"} & bad):
        add("block-device", "host disk access", "mount or debugfs the host's block device", "critical",
            ("block-devices",) + tuple(sorted({"cap-sys-admin", "uid0-host"} & bad)))
    if "mem-devices" in bad:
        add("physical-memory", "physical memory", "read or patch kernel memory through /dev/mem or /dev/port",
            "critical", ("mem-devices",))
    if "cap-sys-module" in bad:
        add("kernel-module", "kernel module", "load a kernel module: code in the host kernel", "critical",
            ("cap-sys-module",))
    if "leaked-fd" in bad:
        add("leaked-fd", "leaked host fd", "openat() relative to a host directory fd the target holds",
            "critical", ("leaked-fd",), ("CVE-2024-21626",))
    if "privileged" in bad and not any(p.id in ("release-agent", "block-device") for p in paths):
        add("privileged", "privileged container", "every host capability without seccomp: mount the host disk, "
            "load modules, nsenter into PID 1's namespaces when PIDs are shared", "critical", ("privileged",))
    return paths
