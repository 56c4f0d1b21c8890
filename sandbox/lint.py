"""`pysandbox profile lint`: dangerous settings and combinations in a resolved profile.

Each rule is a small function returning findings (severity, id, reason). Seccomp facts
are read off the compiled filter itself (seccomp.describe emulates the BPF program), not
off the profile's text, so an imported OCI profile is judged by what it really does.

Besides dangers, lint warns when a profile loses what programs need (no /usr, a seccomp
allowlist without the basic syscalls, no PATH), which a derived profile can do by an
explicit `replace`; it names every replace it sees. What the profile package refuses was
refused when the profile loaded; what only this machine refuses (a bind source that does
not exist, an rlimit above the hard limit) lint reports as ERROR and exits with the
profile-error code, as `run` would.
"""
import sys

from pysandbox_common.containers import SEVERITIES, RUNTIME_SOCKET_PATHS as RUNTIME_SOCKETS
RANK = {s: i for i, s in enumerate(SEVERITIES)}


# capability -> (severity inside a user namespace, severity without one, why)
DANGEROUS_CAPS = {
    "SYS_ADMIN": ("high", "critical", "mount, namespaces, BPF and dozens of kernel interfaces; the root of most escapes"),
    "SYS_MODULE": ("high", "critical", "loading kernel modules is kernel code execution (only from the initial namespace)"),
    "SYS_RAWIO": ("high", "critical", "raw port and memory I/O (iopl, /dev/mem) from the initial namespace"),
    "SYS_PTRACE": ("high", "critical", "ptrace and process_vm_writev into other processes: code injection"),
    "DAC_READ_SEARCH": ("high", "critical", "open_by_handle_at walks the host's filesystem (the 'Shocker' escape)"),
    "NET_ADMIN": ("medium", "high", "reconfigures interfaces, routes and netfilter; a large kernel attack surface"),
    "BPF": ("medium", "high", "loads BPF programs: verifier bugs are kernel exploits"),
    "PERFMON": ("medium", "high", "perf_event_open: kernel pointers and a history of exploitable bugs"),
    "SYS_BOOT": ("medium", "critical", "reboot and kexec_load"),
    "SYS_TIME": ("low", "high", "sets the host's clock"),
    "SYSLOG": ("low", "high", "reads the kernel log: kernel addresses that defeat KASLR"),
    "MAC_ADMIN": ("medium", "critical", "reconfigures the LSM"),
    "MAC_OVERRIDE": ("medium", "critical", "bypasses the LSM"),
    "NET_RAW": ("low", "medium", "raw sockets: packet spoofing and a history of kernel bugs"),
}


class Finding:
    __slots__ = ("severity", "id", "reason")

    def __init__(self, severity, id_, reason):
        self.severity, self.id, self.reason = severity, id_, reason


def _caps(profile):
    from pysandbox_common.capnames import normalize, CAPABILITIES
    names = [normalize(c) for c in profile.capabilities.keep]
    if "ALL" in names:
        return list(CAPABILITIES)
    return names


def rule_namespaces(profile, facts):
    ns = profile.namespaces
    if not ns.user:
        yield Finding("critical", "userns-off", "no user namespace: root inside is root on the host")
    for name in ("pid", "ipc", "uts", "cgroup"):
        if not getattr(ns, name):
            yield Finding("medium" if name != "pid" else "high", "ns-%s-shared" % name,
                          "the host's %s namespace is shared" % name)
    if profile.network.mode == "host":
        yield Finding("high", "net-host", "host network: the sandbox reaches every host interface and "
                      "abstract unix socket (e.g. of container runtimes)")


def rule_capabilities(profile, facts):
    in_userns = profile.namespaces.user
    for cap in _caps(profile):
        if cap in DANGEROUS_CAPS:
            inside, outside, why = DANGEROUS_CAPS[cap]
            yield Finding(inside if in_userns else outside, "cap-" + cap.lower().replace("_", "-"),
                          "CAP_%s kept%s: %s" % (cap, " (inside the user namespace only)" if in_userns else "", why))
    if profile.capabilities.ambient:
        yield Finding("medium", "caps-ambient", "ambient capabilities survive exec of any program")


def rule_process(profile, facts):
    if not profile.process.no_new_privs:
        yield Finding("medium", "nnp-off", "no_new_privs off: setuid binaries and file capabilities can raise privileges")
    if not profile.process.close_fds:
        yield Finding("medium", "fds-inherited", "descriptors above 2 are inherited into the sandbox")


def rule_filesystem(profile, facts):
    fs = profile.filesystem
    if "/proc/sys" not in fs.readonly_paths:
        yield Finding("high", "proc-sys-rw", "/proc/sys is not read-only: sysctls of the sandbox's namespaces are "
                      "writable, and with host namespaces, the host's")
    missing = [p for p in ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug") if p not in fs.masked_paths]
    if missing:
        yield Finding("medium", "proc-masks-missing", "not masked: " + ", ".join(missing))
    if fs.sys == "ro" and "/sys/firmware" not in fs.masked_paths:
        yield Finding("low", "sys-firmware", "/sys is mounted and /sys/firmware is not masked")
    for entry in fs.mounts:
        src = entry.source
        if src is None:
            continue
        if src in RUNTIME_SOCKETS or src.endswith((".sock", "docker.sock")) and "docker" in src:
            yield Finding("critical", "runtime-socket", "%s is bound into the sandbox: whoever talks to a container "
                          "runtime's socket controls the host" % src)
        if src in ("/", "/proc", "/sys", "/dev", "/etc", "/root", "/var/run", "/run", "/boot"):
            yield Finding("high", "sensitive-mount", "host %s is bound into the sandbox" % src)


def rule_limits(profile, facts):
    lim = profile.limits
    if lim.memory and lim.memory_swap == -1:
        yield Finding("medium", "memory-swap-unlimited", "a memory limit with unlimited swap: the limit can be "
                      "exceeded into swap")
    if not lim.pids > 0:
        yield Finding("medium", "pids-missing", "no pids limit: a fork bomb exhausts the host's process table")
    if not lim.memory > 0:
        yield Finding("low", "memory-missing", "no memory limit")


def rule_seccomp(profile, facts):
    sc = facts.get("seccomp") or {}
    if not sc.get("enabled"):
        yield Finding("high", "seccomp-off", "no seccomp filter: the kernel's whole syscall surface is reachable")
        return
    if sc.get("allows_io_uring"):
        yield Finding("high", "io-uring", "io_uring is allowed: it bypasses seccomp for the operations it performs "
                      "and has been a rich source of kernel exploits")
    if sc.get("allows_userns_creation"):
        yield Finding("high", "userns-create", "creating user namespaces is allowed: it opens namespaced root's "
                      "kernel surface (most unprivileged kernel exploits start here)")
    if sc.get("allows_x32"):
        yield Finding("high", "x32-abi", "the x32 ABI is allowed: syscall numbers with bit 30 set bypass "
                      "rules written for x86_64 numbers")
    if sc.get("allows_i386"):
        yield Finding("high", "i386-abi", "the i386 ABI is allowed: int 0x80 reaches a second syscall table")
    if sc.get("allows_tiocsti") and not profile.process.new_session:
        yield Finding("high", "tiocsti", "TIOCSTI is allowed and no new session is made: keystrokes can be "
                      "injected into the caller's terminal (CVE-2017-5226)")
    if sc.get("allows_socketcall"):
        yield Finding("medium", "socketcall", "socketcall is allowed: it hides socket families from argument rules")
    if sc.get("allows_open_by_handle_at"):
        yield Finding("high", "open-by-handle", "open_by_handle_at is allowed (with CAP_DAC_READ_SEARCH: 'Shocker')")
    if str(sc.get("default_action", "")).startswith("errno") and not sc.get("unknown_syscalls_enosys"):
        yield Finding("low", "enosys-unknown", "unknown (newer) syscalls get EPERM, not ENOSYS: libc cannot fall "
                      "back (e.g. clone3 -> clone)")


def rule_landlock(profile, facts):
    if profile.landlock is None:
        yield Finding("info", "landlock-off", "no Landlock ruleset (file access is limited by the mount layout only)")


# What nearly every dynamically linked program calls before main(): without these it dies at
# start (python: SIGSEGV, no message).
ESSENTIAL_SYSCALLS = ("execve", "exit_group", "exit", "brk", "mmap", "munmap", "mprotect", "read", "write",
                      "close", "openat", "newfstatat", "rt_sigreturn", "rt_sigaction", "rt_sigprocmask",
                      "futex", "arch_prctl", "set_tid_address")


def _covered(path, mounts):
    return any(path == e.target or path.startswith(e.target.rstrip("/") + "/") for e in mounts)


# What the runtime builds in a composed root: whose content comes from the host (anything below
# may exist) and what starts empty (only the directory itself exists).
_HOST_TREES = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32", "/etc", "/proc", "/dev", "/sys")
_EMPTY_DIRS = ("/", "/tmp")


def _cwd_exists(cwd, mounts):
    if cwd in _EMPTY_DIRS or any(cwd == t or cwd.startswith(t + "/") for t in _HOST_TREES):
        return True
    for entry in mounts:
        if cwd == entry.target or entry.target.startswith(cwd.rstrip("/") + "/"):
            return True   # the mount point, or a directory made on the way to one
        if entry.kind != "tmpfs" and cwd.startswith(entry.target + "/"):
            return True   # inside a bind: up to the host's directory
    return False


def rule_needs(profile, facts):
    """What programs need, lost (typically by a derived profile's `replace`)."""
    fs = profile.filesystem
    if not fs.rootfs and not _covered("/usr", [e for e in fs.mounts if e.kind != "tmpfs"]):
        yield Finding("medium", "no-usr", "nothing is bound at /usr and there is no rootfs: programs and their "
                      "libraries are missing (keep default's ro_bind = [\"/usr\"])")
    cwd = fs.cwd
    if not fs.rootfs and not _cwd_exists(cwd, fs.mounts):
        yield Finding("medium", "cwd-missing", "filesystem.cwd %s is nowhere in the composed root (a fresh /tmp "
                      "is empty): the command cannot start there; bind a directory at it" % cwd)
    env = profile.environment
    if env.clear and "PATH" not in env.set and "PATH" not in env.get("pass"):
        yield Finding("low", "no-path", "the environment is cleared and sets no PATH: commands given by "
                      "name are not found")
    sc = facts.get("seccomp") or {}
    if sc.get("enabled"):
        denied = set(sc.get("denied") or ())
        missing = [n for n in ESSENTIAL_SYSCALLS if n in denied]
        if missing:
            yield Finding("medium", "seccomp-basic-missing", "the seccomp filter refuses %s: most programs die "
                          "at start (allow \"@basic\")" % ", ".join(missing))


RULES = (rule_needs, rule_namespaces, rule_capabilities, rule_process, rule_filesystem, rule_limits, rule_seccomp, rule_landlock)


def lint(profile):
    facts = {}
    if profile.seccomp is not None:
        from . import seccomp
        keep = tuple(_caps(profile))
        facts["seccomp"] = seccomp.describe(profile.seccomp, caps=keep)
    else:
        facts["seccomp"] = {"enabled": False}
    findings = [f for rule in RULES for f in rule(profile, facts)]
    findings.sort(key=lambda f: (RANK[f.severity], f.id))
    from .profile import host_problems
    facts["host_problems"] = host_problems(profile)
    return findings, facts


def main(profile, fail_on="high", out=None):
    out = out or sys.stdout
    findings, facts = lint(profile)
    out.write("profile %s (%s)\n" % (profile.name, ", ".join(profile.sources)))
    for source, key in profile.replaced:
        out.write("note: %s replaces the inherited %s\n" % (source, key))
    problems = facts["host_problems"]
    for message, section, key, source in problems:
        out.write("ERROR    %-22s %s%s\n" % ("%s.%s" % (section, key), (source + ": ") if source else "", message))
    if not findings and not problems:
        out.write("clean: no dangerous settings found\n")
    for f in findings:
        out.write("%-8s %-22s %s\n" % (f.severity.upper(), f.id, f.reason))
    if problems:
        from .errors import ProfileError
        return ProfileError.exit_code
    worst = min((RANK[f.severity] for f in findings), default=len(SEVERITIES))
    return 1 if worst <= RANK[fail_on] else 0
