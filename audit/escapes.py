"""Escape paths: combinations of findings that together give a way out of the target.

Each path lists its preconditions explicitly, each judged on this kernel and this target:
True (holds), False (does not: the path is not reported) or None (could not be read).
A path whose every precondition holds is "present"; one where some preconditions could
not be read and none is known false is "possible" (reported, with what is unknown, so an
audit that cannot see is never read as "no escape"). A finding whose severity was lowered
(a capability held only inside a user namespace) does not count: it cannot act on the host.
"""
from __future__ import annotations

from collections import namedtuple

# because: the finding ids the path rests on; status: "present" or "possible";
# unknown: the preconditions that could not be judged (empty when present).
EscapePath = namedtuple("EscapePath", "id name technique severity because cve status unknown",
                        defaults=((), "present", ()))


def _states(findings):
    """id -> True (fails at its check's full severity), False, or None (unknown/error)."""
    out = {}
    for f in findings:
        if f.status == "fail":
            out[f.id] = f.severity == f.check.severity
        elif f.status in ("unknown", "error"):
            out[f.id] = None
        else:
            out[f.id] = False
    return out


def _probe_allowed(snapshot, syscall):
    p = snapshot.probe("syscall:" + syscall)
    return None if p is None else p.get("verdict") == "allowed"


def _syscall_reachable(snapshot, *syscalls):
    """True without a filter; with one, only an --active probe can say (None otherwise)."""
    if snapshot.seccomp_mode == 0:
        return True
    answers = [_probe_allowed(snapshot, s) for s in syscalls]
    if any(a is True for a in answers):
        return True
    if answers and all(a is False for a in answers):
        return False
    return None


def find_escape_paths(snapshot, findings):
    st = _states(findings)
    paths = []

    def add(pid, name, technique, severity, because, preconditions, cve=()):
        """preconditions: (text, True/False/None) pairs; `because` finding ids count too."""
        conds = [(cid, st.get(cid, False)) for cid in because] + list(preconditions)
        if any(value is False for _text, value in conds):
            return
        unknown = tuple(text for text, value in conds if value is None)
        paths.append(EscapePath(pid, name, technique, severity, tuple(because), tuple(cve),
                                "possible" if unknown else "present", unknown))

    seccomp_note = "a seccomp filter is installed: whether it allows %s is proven with --active"

    # release_agent: CAP_SYS_ADMIN over the host, a v1 hierarchy with release_agent reachable
    # or mountable (release-agent judges both), no LSM to deny the mount, mount(2) reachable.
    mount_ok = _syscall_reachable(snapshot, "mount")
    add("release-agent", "release_agent",
        "mount a cgroup v1 hierarchy, set notify_on_release and release_agent, empty the cgroup: the kernel "
        "runs the agent as host root", "critical", ("release-agent", "cap-sys-admin", "lsm-off"),
        [(seccomp_note % "mount(2)", mount_ok)], ("CVE-2022-0492",))

    # process injection: CAP_SYS_PTRACE over the host, host PIDs visible, ptrace reachable,
    # and Yama not at 3 (scope 3 refuses every attach, capability or not).
    yama = snapshot.host.sysctls.get("kernel.yama.ptrace_scope")
    add("process-injection", "process injection",
        "ptrace a host process (shared PID namespace) and inject code into it", "critical",
        ("cap-sys-ptrace", "ns-pid-host"),
        [(seccomp_note % "ptrace(2)", _syscall_reachable(snapshot, "ptrace")),
         ("kernel.yama.ptrace_scope = %s" % yama, yama != "3")])

    allowed = _probe_allowed(snapshot, "open_by_handle_at")
    add("shocker", "Shocker (open_by_handle_at)",
        "brute-force file handles with open_by_handle_at from any fd on a host filesystem to read host files",
        "critical", ("cap-dac-read-search",),
        [(seccomp_note % "open_by_handle_at(2)", True if allowed else
          (False if allowed is False else _syscall_reachable(snapshot, "open_by_handle_at")))])

    if st.get("sensitive-mount") is not False:
        from .checks.filesystem import sensitive_mounts
        rw = any(not m.read_only for m, _host in sensitive_mounts(snapshot))
        add("host-file-write", "host file write",
            "write to a read-write host directory as real root (root not remapped): cron, ssh keys, setuid binaries",
            "critical", ("sensitive-mount", "uid0-host"),
            [("a sensitive host directory is mounted read-write", rw if snapshot.mounts else None)])

    add("runtime-socket", "runtime socket",
        "ask the runtime's API for a privileged container with the host's / mounted: full host control",
        "critical", ("runtime-socket",), [])
    for cid, name, what in (
            ("core-pattern-writable", "core_pattern", "set kernel.core_pattern to a pipe helper and crash a process"),
            ("modprobe-writable", "modprobe", "set kernel.modprobe and trigger a module request"),
            ("uevent-helper-writable", "uevent_helper", "set /sys/kernel/uevent_helper and trigger a uevent"),
            ("binfmt-misc-writable", "binfmt_misc", "register an interpreter with the credentials flag")):
        conds = []
        if cid == "modprobe-writable":
            # request_module() runs kernel.modprobe only on a kernel that loads modules.
            loadable, why = snapshot.host.modules
            conds.append((why, loadable))
        add(cid, name, what + ": the kernel runs attacker code as host root", "critical", (cid,), conds)
    add("host-procfs", "host procfs", "walk /proc/1/root of the host's procfs into the host's root", "critical",
        ("host-procfs",), [])
    add("host-mount-namespace", "host mount namespace", "the host's filesystem is the target's filesystem",
        "critical", ("ns-mnt-host",), [])

    # A host block device: mount it (CAP_SYS_ADMIN) or read/write it raw as root.
    raw = [st.get("cap-sys-admin", False), st.get("uid0-host", False)]
    power = True if True in raw else (None if None in raw else False)
    add("block-device", "host disk access", "mount or debugfs the host's block device", "critical",
        ("block-devices",) + tuple(sorted(c for c, v in (("cap-sys-admin", raw[0]), ("uid0-host", raw[1])) if v)),
        [("CAP_SYS_ADMIN over the host (mount) or host uid 0 (raw read/write)", power)])

    # /dev/mem and /dev/port: open_port() and /dev/mem demand CAP_SYS_RAWIO in the initial namespace.
    add("physical-memory", "physical memory", "read or patch kernel memory through /dev/mem or /dev/port",
        "critical", ("mem-devices", "cap-sys-rawio"), [])

    # A kernel module: CAP_SYS_MODULE over the host, a kernel that loads modules, and
    # init_module/finit_module reachable through seccomp.
    loadable, why = snapshot.host.modules
    add("kernel-module", "kernel module", "load a kernel module: code in the host kernel", "critical",
        ("cap-sys-module",),
        [(why, loadable), (seccomp_note % "init_module(2)/finit_module(2)",
                           _syscall_reachable(snapshot, "init_module", "finit_module"))])
    add("leaked-fd", "leaked host fd", "openat() relative to a host directory fd the target holds",
        "critical", ("leaked-fd",), [], ("CVE-2024-21626",))
    if not any(p.id in ("release-agent", "block-device") and p.status == "present" for p in paths):
        add("privileged", "privileged container", "every host capability without seccomp: mount the host disk, "
            "nsenter into PID 1's namespaces when PIDs are shared", "critical", ("privileged",), [])
    return paths
