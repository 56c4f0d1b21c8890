"""`pysandbox explain LAYER [--profile NAME]`: what a layer does, what the profile sets,
and what it stops. Written for students as much as for operators."""
import sys

LAYERS = {
    "namespaces": (
        "Namespaces give the sandbox its own view of a kernel resource: user (ids and capabilities), "
        "pid (process list; the sandbox has its own PID 1), mount (file tree), net (interfaces), uts "
        "(hostname), ipc (System V IPC, POSIX queues), cgroup (its cgroup appears as /) and time "
        "(monotonic/boot clocks).",
        "Seeing or signalling host processes, reading host mounts, reaching host network services and "
        "abstract unix sockets (a container runtime's among them), changing the host's hostname, "
        "attaching to host shared memory.",
        lambda p: ", ".join("%s=%s" % (n, "new" if getattr(p.namespaces, n) else "HOST")
                            for n in ("user", "pid", "mount", "net", "uts", "ipc", "cgroup", "time"))),
    "user": (
        "The user namespace maps ids inside onto ids on the host. Root inside holds capabilities only over "
        "objects owned by the namespace; the host sees the sandbox's files and processes as an unprivileged "
        "id. pysandbox never maps onto host uid 0: as root an unused high range, rootless the caller's own "
        "id (setgroups denied) or its /etc/subuid range through newuidmap.",
        "A process that breaks out of every other layer still being host root; writing host files owned by "
        "root; privileged kernel interfaces that check capabilities in the initial namespace (module "
        "loading, raw I/O, most sysctls).",
        lambda p: "inside uid %d gid %d; host root maps to %d.. (%d ids)" % (
            p.idmap.uid, p.idmap.gid, p.idmap.root_host_base, p.idmap.size)),
    "capabilities": (
        "Capabilities split root's power into ~41 bits. pysandbox sets all five sets (bounding, permitted, "
        "effective, inheritable, ambient) exactly, after every mount is done, through libcap-ng; ambient "
        "first, then the bounding set while CAP_SETPCAP is still held, then capset.",
        "CAP_SYS_ADMIN (mount, namespaces, BPF), CAP_SYS_PTRACE (code injection), CAP_DAC_READ_SEARCH "
        "(open_by_handle_at, 'Shocker'), CAP_NET_ADMIN, CAP_SYS_MODULE and the rest that turn root into "
        "a kernel attacker.",
        lambda p: "keep: %s; ambient: %s" % (", ".join(p.capabilities.keep) or "nothing",
                                             ", ".join(p.capabilities.ambient) or "nothing")),
    "no_new_privs": (
        "PR_SET_NO_NEW_PRIVS makes execve unable to grant privileges: setuid/setgid bits and file "
        "capabilities are ignored, and it is inherited by every descendant. Unprivileged seccomp and "
        "Landlock require it.",
        "Gaining privileges through a setuid binary (sudo, su, mount) or file capabilities inside the "
        "sandbox; LSM transitions on exec.",
        lambda p: "on" if p.process.no_new_privs else "OFF"),
    "seccomp": (
        "A BPF program that the kernel runs on every system call: allow it, fail it with an errno, or kill. "
        "pysandbox compiles the profile's policy with libseccomp (binary-tree optimised) in the supervisor, "
        "caches the bytes by hash, and installs it as the very last step before exec. A small prefix refuses "
        "x32, answers unknown (newer) syscalls with ENOSYS and checks argument rules on the bits the kernel "
        "really uses.",
        "The kernel surface behind namespace creation, the mount API, keyrings, BPF, perf, userfaultfd, "
        "io_uring, open_by_handle_at, module/kexec/reboot, clock setting, raw/packet/AF_ALG/vsock sockets, "
        "TIOCSTI/TIOCLINUX and the i386/x32 ABIs (strict).",
        lambda p: "off" if p.seccomp is None else "default action %s; %s" % (
            __import__("sandbox.seccomp").seccomp._action_text(p.seccomp.default_action),
            "imported from %s" % p.seccomp.source
            if getattr(p.seccomp, "source", None) else "profile rules")),
    "landlock": (
        "Landlock is an unprivileged allowlist of file access (and, from ABI 4, TCP ports) that a process "
        "places on itself and its descendants. pysandbox detects the kernel's ABI at run time and handles "
        "every right it knows; strict grants read+execute on /usr, /etc, the /bin and /lib links and "
        "read-only binds, read-write on /tmp, /dev/shm, --tmpfs mounts and read-write binds, and nothing "
        "on / itself: so under strict `ls /` is refused (Permission denied) by design, while every path "
        "below the granted ones works. Bind a directory (--ro-bind/--bind) to make it reachable.",
        "Writes anywhere but the allowed paths even where the mount layout or a capability would permit "
        "them; reading outside the allowed set.",
        lambda p: "off" if p.landlock is None else "on%s" % (" (best effort)" if p.landlock.best_effort else "")),
    "user_limits": (
        "Per-user kernel counts (inotify instances and watches, fanotify groups and marks, user, mount and "
        "other namespaces) are charged up the user-namespace chain to whoever created the sandbox. PID 1 "
        "writes /proc/sys/user/max_* inside the sandbox's own user namespace, after the runtime made its "
        "namespaces, through the sandbox's own /proc (kept open before /proc/sys turns read-only), so each "
        "sandbox has a budget of its own.",
        "A sandbox that takes every inotify instance or namespace of its creator (host root or the rootless "
        "caller), leaving the creator and other sandboxes with EMFILE or ENOSPC; nested namespaces (the "
        "second wall behind seccomp under strict).",
        lambda p: ", ".join("%s=%s" % (k, v) for k, v in sorted(p.user_limits.as_dict().items()) if v is not None)
        or "none"),
    "limits": (
        "cgroups limit what the sandbox may consume: memory (and swap), processes, CPU time, CPU and IO "
        "weight. pysandbox creates a cgroup per sandbox under its own parent (v2 leaf, or one directory per "
        "v1 controller), moves the child in before it execs, reads the verdicts (oom, pids) and removes "
        "everything afterwards.",
        "Fork bombs, memory exhaustion of the host, CPU starvation; and it lets a grader tell 'out of memory' "
        "from 'crashed'.",
        lambda p: "memory %s, swap %s, pids %s, cpus %s, required=%s" % (
            p.limits.memory or "none", p.limits.memory_swap, p.limits.pids or "none", p.limits.cpus or "none",
            p.limits.required)),
    "rlimits": (
        "Per-process resource limits (setrlimit): open files, processes per user, core dumps, file size, "
        "stack, address space, CPU seconds. A hard limit can only be lowered from inside.",
        "Core dumps leaking memory, runaway file growth, descriptor exhaustion.",
        lambda p: ", ".join("%s=%s" % (k, v) for k, v in p.rlimits.as_dict().items() if v is not None) or "none"),
    "filesystem": (
        "The sandbox's root is composed on a tmpfs: read-only binds of /usr, the /bin and /lib* links and a "
        "minimal /etc; a fresh /proc with the OCI masked paths (/dev/null or an empty read-only tmpfs over "
        "them) and read-only paths (/proc/sys, /proc/sysrq-trigger, ...); a minimal /dev; a size-capped /tmp. "
        "pivot_root moves into it and the host's root is detached.",
        "Reading host files, writing the host's /proc/sys, core_pattern or sysrq-trigger, reaching block "
        "devices, /dev/mem or /dev/kmsg, kernel address leaks through /proc/kcore, /proc/keys, timer_list.",
        lambda p: "ro_bind %s; sys=%s; masked %d paths; read-only %d paths; /tmp %d bytes" % (
            list(p.filesystem.ro_bind), p.filesystem.sys, len(p.filesystem.masked_paths),
            len(p.filesystem.readonly_paths), p.filesystem.tmp_size)),
    "network": (
        "A new network namespace holds only a downed loopback interface. 'loopback' brings lo up; 'host' "
        "shares the host's network (refused by strict).",
        "Reaching any host or remote service, the host's abstract unix sockets, and the network stack's "
        "configuration.",
        lambda p: p.network.mode),
}
ALIASES = {"caps": "capabilities", "nnp": "no_new_privs", "cgroups": "limits", "cgroup": "limits",
           "mounts": "filesystem", "mount": "filesystem", "idmap": "user", "userns": "user", "net": "network"}


def main(args, explain_check=None):
    """`explain LAYER|SECTION.KEY|CHECK-ID [--profile NAME]`: a layer, a profile key, or an
    audit check. `explain_check(name)` -> exit code, or None when `name` is no check: the
    audit's own explanation, handed in by the CLI (the one place sandbox calls into audit)."""
    from .errors import UsageError
    profile_name = "default"
    rest = []
    i = 0
    while i < len(args):
        if args[i] == "--profile" and i + 1 < len(args):
            profile_name = args[i + 1]
            i += 2
            continue
        rest.append(args[i])
        i += 1
    if len(rest) != 1:
        raise UsageError("usage: pysandbox explain LAYER|SECTION.KEY|CHECK-ID [--profile NAME] (layers: %s)"
                         % ", ".join(LAYERS))
    name = rest[0]
    layer = ALIASES.get(name, name)
    if layer in LAYERS:
        from .profile import load_profile
        profile = load_profile(profile_name)
        what, stops, current = LAYERS[layer]
        sys.stdout.write("%s\n\nWhat it does:\n  %s\n\nWhat profile %r sets:\n  %s\n\nWhat it stops:\n  %s\n" % (
            layer, what, profile.name, current(profile), stops))
        return 0
    from .profile.schema import describe_key, example_of
    if describe_key(name) is not None:
        return _explain_key(name, profile_name, describe_key(name), example_of(name))
    if explain_check is not None:
        code = explain_check(name)
        if code is not None:
            return code
    raise UsageError("unknown layer, profile key or audit check %r (layers: %s; keys: see docs/profiles.md; "
                     "checks: `audit explain --help`)" % (name, ", ".join(LAYERS)))


def _explain_key(name, profile_name, description, example):
    from .profile import load_profile
    from .tomlout import dumps_value
    profile = load_profile(profile_name)
    section, _, key = name.partition(".")
    out = ["%s" % name, "", "What it is:", "  " + description]
    if key:
        try:
            value = getattr(getattr(profile, section), key)
        except AttributeError:
            value = None
        if value is not None:
            out += ["", "What profile %r sets:" % profile.name, "  %s = %s" % (key, dumps_value(value))]
    if example:
        out += ["", "Example (TOML, in [%s]):" % section if key else "Example:", "  " + example]
    out += ["", "All keys, their defaults and how `extends` merges them: docs/profiles.md"]
    sys.stdout.write("\n".join(out) + "\n")
    return 0
