"""Filesystem checks: procfs/sysfs exposure, kernel control files, cgroupfs, devices,
runtime sockets and host mounts, all judged from the target's own mount table."""
import os

from ..snapshot import DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS, KERNEL_FSTYPES
from . import check, fail, fixes, ok, ref, unknown


def _write_probe(snapshot, path):
    p = snapshot.probe("write:" + path)
    if p is None:
        return None
    text = "active probe: open(%s, O_WRONLY) -> %s" % (path, p.get("result"))
    return p.get("result") == "writable", text


def _mounts_unknown(snapshot):
    return snapshot.unreadable("mountinfo")


def _where(view):
    m = view.mount
    return "%s (%s mount %s, root %s, %s)" % (view.location, m.fstype, m.mountpoint, m.root, ",".join(m.options))


def _kernel_file_check(snapshot, path, fstype, sysctl=True):
    """A kernel control file is writable when it shows somewhere in the target (its standard
    path or any proc/sysfs mount whose root contains it, bind mounts at odd paths included),
    unmasked, on a rw mount, and the writer passes the kernel's permission test: sysctl
    files compare euid with the global root uid (no capability overrides it); other
    root-only files accept CAP_DAC_OVERRIDE held in the host's user namespace."""
    missing = _mounts_unknown(snapshot)
    if missing:
        return unknown(missing)
    writer_ok = snapshot.is_host_root or (not sysctl and snapshot.has_host_cap("dac_override"))
    evidence, unknown_views = [], []
    for view in snapshot.kernel_views(path):
        proved = _write_probe(snapshot, view.location)
        if proved is not None:
            if proved[0]:
                return fail(proved[1])
            evidence.append(proved[1])
            continue
        if view.state == "absent":
            continue
        if view.state == "masked":
            evidence.append("%s: masked by %s mount %s" % (view.location, view.mount.fstype, view.mount.mountpoint))
            continue
        if view.exists is False:
            evidence.append("%s does not exist %s" % (
                view.location, "on this kernel" if path not in snapshot.host.kernel_files else "in the target"))
            continue
        if view.state == "ro":
            evidence.append(_where(view) + ": read-only")
            continue
        if not writer_ok:
            evidence.append(_where(view) + ": rw mount, but the target's euid is host uid %s, which the kernel "
                            "refuses here" % snapshot.host_euid)
            continue
        if view.exists is None:
            unknown_views.append(view)
            continue
        inferred = "" if view.location in snapshot.visible_paths else \
            " (the target's root is unreadable: inferred from its mount table and this kernel's files)"
        return fail(_where(view) + inferred, "writer is host uid %s" % snapshot.host_euid)
    if unknown_views:
        return unknown("%s: %s" % (", ".join(v.location for v in unknown_views),
                                   snapshot.path_errors.get(unknown_views[0].location) or snapshot.unreadable("root")
                                   or "could not be examined"), *evidence)
    if not evidence:
        if path not in snapshot.host.kernel_files:
            return ok("%s does not exist on this kernel" % path)
        return ok("%s is not mounted anywhere in the target" % path)
    return ok(*evidence)


def _kernel_file(cid, title, path, fstype, escape, cves=(), sysctl=True, severity="critical"):
    @check(cid, title, severity,
           "%s is writable from the target. It is a host-global kernel setting, not namespaced." % path,
           escape,
           "Mount /proc/sys and /sys read-only (runtimes' defaults) and do not run as host root.",
           ref(cve=cves, cis="5.4 / 5.12", pss="spec.containers[*].securityContext.procMount"),
           fixes("remove --privileged and --security-opt systempaths=unconfined", "procMount: Default; privileged: false",
                 "profiles mount /proc/sys read-only and map root to an unprivileged uid"))
    def kernel_file_check(snapshot):
        return _kernel_file_check(snapshot, path, fstype, sysctl)
    return kernel_file_check


_kernel_file("core-pattern-writable", "core_pattern writable", "/proc/sys/kernel/core_pattern", "proc",
             "Write `|/path/in/container/overlay/x` to core_pattern and crash a process: the kernel runs the helper "
             "as root in the host's namespaces (host code execution).")
_kernel_file("modprobe-writable", "modprobe path writable", "/proc/sys/kernel/modprobe", "proc",
             "Point kernel.modprobe at a script and trigger a module request (unknown binary format or socket "
             "family): the kernel runs it as host root.")
_kernel_file("uevent-helper-writable", "uevent_helper writable", "/sys/kernel/uevent_helper", "sysfs",
             "Write a helper path to /sys/kernel/uevent_helper and trigger a uevent (echo change > .../uevent): "
             "the kernel executes it as host root.", sysctl=False)
_kernel_file("sysrq-writable", "/proc/sysrq-trigger writable", "/proc/sysrq-trigger", "proc",
             "Writing `c` crashes the host, `b` reboots it: denial of service for every tenant.", sysctl=False,
             severity="high")


@check("binfmt-misc-writable", "binfmt_misc register writable", "critical",
       "A binfmt_misc register file the target can write registers interpreters for every exec on the host "
       "(before Linux 6.7 binfmt_misc is global; since 6.7 each user namespace has its own).",
       "Register an interpreter with the `C` (credentials) flag for a magic that matches a setuid host binary: "
       "the next exec of it runs the attacker's interpreter as root.",
       "Do not mount binfmt_misc into containers; keep /proc/sys read-only.",
       ref(cis="5.4", pss="spec.containers[*].securityContext.privileged"),
       fixes("remove --privileged / -v /proc/sys/fs/binfmt_misc", "privileged: false",
             "profiles never mount binfmt_misc"))
def binfmt_misc_writable(snapshot):
    missing = _mounts_unknown(snapshot)
    if missing:
        return unknown(missing)
    paths = ["/proc/sys/fs/binfmt_misc/register"] + [
        m.mountpoint.rstrip("/") + "/register" for m in snapshot.reachable_mounts if m.fstype == "binfmt_misc"]
    evidence = []
    for path in dict.fromkeys(paths):
        proved = _write_probe(snapshot, path)
        if proved is not None:
            if proved[0]:
                return fail(proved[1])
            evidence.append(proved[1])
            continue
        mount = snapshot.mount_for(path)
        if mount is None or mount.fstype != "binfmt_misc":
            evidence.append("%s: no binfmt_misc mounted there" % path)
            continue
        if mount.read_only:
            evidence.append("%s: read-only binfmt_misc mount" % path)
            continue
        if not snapshot.in_host_userns and _kernel_at_least(snapshot.host.kernel, (6, 7)):
            evidence.append("%s: rw, but Linux %s gives each user namespace its own binfmt_misc"
                            % (path, snapshot.host.kernel))
            continue
        if snapshot.is_host_root:
            return fail("%s: rw binfmt_misc mount %s, writer is host root" % (path, mount.mountpoint))
        evidence.append("%s: rw but writer is not host root" % path)
    return ok(*evidence)


def _kernel_at_least(release, want):
    parts = []
    for piece in release.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts) >= want


@check("proc-masks-missing", "procfs/sysfs paths that runtimes mask are exposed", "medium",
       "Docker masks /proc/kcore, /proc/keys, /proc/timer_list, /sys/firmware ... and makes /proc/bus, /proc/fs, "
       "/proc/irq read-only; here some are visible or writable.",
       "Information leaks about the host kernel and hardware (kcore, sched_debug, timer_list) and writable "
       "host-global settings under /proc/irq and /proc/bus.",
       "Keep the runtime's default masked and read-only paths.",
       ref(cis="5.12", pss="spec.containers[*].securityContext.procMount"),
       fixes("remove --security-opt systempaths=unconfined", "procMount: Default",
             "profiles keep their default `filesystem.masked_paths`"))
def proc_masks_missing(snapshot):
    missing = _mounts_unknown(snapshot)
    if missing:
        return unknown(missing)
    exposed, unseen = [], []
    for path, writable_only in [(p, False) for p in DEFAULT_MASKED_PATHS] + [(p, True) for p in DEFAULT_READONLY_PATHS]:
        for view in snapshot.kernel_views(path):
            if view.state in ("absent", "masked") or view.exists is False:
                continue
            if writable_only and view.state != "rw":
                continue
            if view.exists is None:
                unseen.append(view.location)
                continue
            exposed.append("%s %s (served by %s at %s, %s)" % (
                view.location, "writable mount" if writable_only else "visible", view.mount.fstype,
                view.mount.mountpoint, ",".join(view.mount.options)))
    oci = snapshot.target.oci
    if oci is not None and "masked_paths" in oci:
        extra = "OCI maskedPaths: %d entries, readonlyPaths: %d entries" % (len(oci["masked_paths"]), len(oci.get("readonly_paths", ())))
    else:
        extra = None
    if exposed:
        return fail(*(exposed + ([extra] if extra else [])))
    if unseen:
        return unknown("%s could not be examined: %s" % (", ".join(unseen[:6]), snapshot.unreadable("root", "kernel-files")
                                                         or "stat refused"))
    if not any(m.fstype == "proc" for m in snapshot.reachable_mounts):
        return ok("no procfs mounted in the target")
    return ok("every default masked path is masked or absent", *([extra] if extra else []))


@check("proc-sys-rw", "/proc/sys is writable", "high",
       "/proc/sys is mounted read-write: host-global sysctls (kernel.*, vm.*, fs.*) are one write away for host root.",
       "Write kernel.core_pattern or kernel.modprobe for code execution as host root, vm.* for denial of service.",
       "Keep /proc/sys read-only.",
       ref(cis="5.12", pss="spec.containers[*].securityContext.procMount"),
       fixes("remove --privileged / systempaths=unconfined", "procMount: Default",
             "profiles mount /proc/sys read-only"))
def proc_sys_rw(snapshot):
    """Every proc mount that shows /proc/sys or a part of it (a host /proc/sys or
    /proc/sys/kernel bound at an odd path is the same host-global tree) is judged."""
    missing = _mounts_unknown(snapshot)
    if missing:
        return unknown(missing)
    rw, seen = [], []
    for view in snapshot.kernel_views("/proc/sys"):
        if view.state in ("absent", "masked") or view.exists is False:
            continue
        seen.append(_where(view))
        if view.state == "rw":
            rw.append(_where(view))
    for m in snapshot.reachable_mounts:
        if m.fstype == "proc" and m.root.startswith("/sys/"):
            text = "%s shows %s of procfs (%s)" % (m.mountpoint, "/proc" + m.root, ",".join(m.options))
            seen.append(text)
            if not m.read_only:
                rw.append(text)
    if not seen:
        return ok("/proc/sys not visible in the target")
    if not rw:
        return ok(*("%s: read-only" % s for s in dict.fromkeys(seen)))
    rw = list(dict.fromkeys(rw))
    if snapshot.is_host_root:
        return fail(*rw, "writer is host uid 0")
    return fail(*rw, severity="low",
                note="the target's root is not host root: only sysctls of namespaces it owns (net.*, ipc) accept its writes")


@check("sysfs-rw", "sysfs mounted read-write", "high",
       "A read-write /sys lets host root change device, kernel and power settings (uevent_helper, "
       "/sys/kernel/*, /sys/class/*).",
       "Write /sys/kernel/uevent_helper for code execution, unbind drivers, change firmware settings.",
       "Mount /sys read-only (every runtime's default for unprivileged containers).",
       ref(cis="5.4", pss="spec.containers[*].securityContext.privileged"),
       fixes("remove --privileged", "privileged: false", "profiles mount /sys read-only or not at all"))
def sysfs_rw(snapshot):
    missing = _mounts_unknown(snapshot)
    if missing:
        return unknown(missing)
    rw = [m for m in snapshot.reachable_mounts if m.fstype == "sysfs" and not m.read_only]
    if not rw:
        return ok("sysfs mounts: %s" % (", ".join("%s (ro)" % m.mountpoint for m in snapshot.reachable_mounts
                                                 if m.fstype == "sysfs") or "none"))
    evidence = ["sysfs at %s (root %s) mounted %s" % (m.mountpoint, m.root, ",".join(m.options)) for m in rw]
    if snapshot.is_host_root:
        return fail(*evidence)
    return fail(*evidence, severity="low", note="the target is not host root: sysfs files owned by host root stay read-only to it")


@check("host-procfs", "The host's procfs is mounted inside", "critical",
       "A procfs mount inside the target shows the host's PID namespace: every host process's environ, fds, "
       "mem and root are reachable through it.",
       "/host/proc/1/root/ is the host's root directory; /host/proc/sys is the host's sysctls; "
       "/host/proc/<pid>/environ leaks secrets.",
       "Never bind-mount the host's /proc.",
       ref(cis="5.5", pss="spec.volumes[*].hostPath"),
       fixes("remove -v /proc:...", "no hostPath volume of /proc", "profiles mount a fresh procfs only"))
def host_procfs(snapshot):
    if snapshot.host_procfs_mounts:
        return fail(*("procfs at %s answers `self` with the auditor's host PID %d" % (mp, snapshot.host.auditor_pid)
                      for mp in snapshot.host_procfs_mounts))
    procs = [m.mountpoint for m in snapshot.reachable_mounts if m.fstype == "proc"]
    missing = _mounts_unknown(snapshot)
    if missing:
        return unknown(missing)
    if procs and snapshot.host.auditor_in_host_pidns and snapshot.namespaces.get("pid") != 0xEFFFFFFC:
        missing = snapshot.unreadable("root", "procfs-self")
        if missing:
            return unknown(missing, "procfs mounts: %s" % ", ".join(procs))
    # A target in the host PID namespace sees host PIDs in any procfs: ns-pid-host reports that.
    return ok("procfs mounts: %s" % (", ".join(procs) or "none"))


@check("kernel-leaks", "Kernel addresses or logs readable", "low",
       "Kernel pointers (/proc/kallsyms), the kernel log (dmesg), /proc/kcore or debugfs are readable from the target.",
       "Kernel addresses defeat KASLR, the first step of most kernel exploits; dmesg leaks other tenants' activity.",
       "Keep kernel.kptr_restrict>=1, kernel.dmesg_restrict=1, do not grant CAP_SYSLOG, do not mount debugfs.",
       ref(cis="5.3", pss="spec.containers[*].securityContext.capabilities.add"),
       fixes("do not --cap-add SYSLOG; sysctl kernel.kptr_restrict=1 on the host", "do not add SYSLOG",
             "profiles drop CAP_SYSLOG"))
def kernel_leaks(snapshot):
    sysctl = snapshot.host.sysctls
    leaks = []
    syslog = snapshot.has_host_cap("syslog")
    kptr = sysctl.get("kernel.kptr_restrict")
    paranoid = sysctl.get("kernel.perf_event_paranoid")
    # kallsyms_show_value(): kptr_restrict 0 shows addresses to perf-capable readers
    # (perf_event_paranoid <= 1) and to CAP_SYSLOG holders; 1 to CAP_SYSLOG only; 2 to nobody.
    if kptr is not None and kptr != "2":
        if syslog or (kptr == "0" and paranoid is not None and int(paranoid) <= 1):
            leaks.append("kernel.kptr_restrict=%s, perf_event_paranoid=%s, CAP_SYSLOG held=%s: /proc/kallsyms shows addresses"
                         % (kptr, paranoid, syslog))
    if sysctl.get("kernel.dmesg_restrict") == "0" or syslog:
        leaks.append("kernel log readable (dmesg_restrict=%s, CAP_SYSLOG held=%s)" % (sysctl.get("kernel.dmesg_restrict"), syslog))
    if snapshot.has_host_cap("sys_rawio"):
        for view in snapshot.kernel_views("/proc/kcore"):
            if view.state in ("rw", "ro") and view.exists is not False:
                leaks.append("%s unmasked and CAP_SYS_RAWIO held" % view.location)
    for m in snapshot.reachable_mounts:
        if m.fstype in ("debugfs", "tracefs"):
            leaks.append("%s mounted at %s" % (m.fstype, m.mountpoint))
    if leaks:
        return fail(*leaks)
    missing = _mounts_unknown(snapshot)
    if missing:
        return unknown(missing)
    return ok("kptr_restrict=%s, dmesg_restrict=%s, perf_event_paranoid=%s, no CAP_SYSLOG, no debugfs"
              % (kptr, sysctl.get("kernel.dmesg_restrict"), paranoid))


@check("release-agent", "cgroup v1 release_agent reachable", "critical",
       "With CAP_SYS_ADMIN in the host's user namespace and a cgroup v1 hierarchy it can mount or write, the "
       "target can set release_agent: a program the kernel runs as host root when a cgroup empties.",
       "mount -t cgroup -o rdma cgroup /x; echo 1 > /x/notify_on_release; echo /path/on/host/of/payload > "
       "/x/release_agent; empty the cgroup (CVE-2022-0492; the 2019 Felix Wilhelm escape).",
       "Drop CAP_SYS_ADMIN; keep AppArmor/SELinux on (they deny the mount); use cgroup v2.",
       ref(cve=("CVE-2022-0492",), cis="5.3 / 5.4", pss="spec.containers[*].securityContext.capabilities.add"),
       fixes("do not --cap-add SYS_ADMIN or --privileged", "do not add SYS_ADMIN",
             "profiles never keep CAP_SYS_ADMIN in the host user namespace"))
def release_agent(snapshot):
    rw_v1 = [m for m in snapshot.reachable_mounts if m.fstype == "cgroup" and not m.read_only]
    for m in snapshot.reachable_mounts:
        if m.fstype == "cgroup":
            proved = _write_probe(snapshot, m.mountpoint.rstrip("/") + "/release_agent")
            if proved and proved[0]:
                return fail(proved[1])
    if not snapshot.has_host_cap("sys_admin"):
        return ok("CAP_SYS_ADMIN not held in the host's user namespace (the kernel requires it to set release_agent)")
    # release_agent exists only in the root cgroup of a v1 hierarchy: reachable through a rw
    # v1 mount of a hierarchy's root, or by mounting one (CAP_SYS_ADMIN over the host allows
    # the mount; a hierarchy of a bound controller, or a named one, which needs none).
    v1 = snapshot.host.cgroup_v1_controllers
    mountable = snapshot.host.cgroup_v1_mountable
    roots = [m for m in rw_v1 if m.root == "/"]
    if not roots and not v1 and mountable is False:
        return ok("CAP_SYS_ADMIN held, but the host has no cgroup v1 hierarchy and this kernel cannot mount one "
                  "(no release_agent)")
    evidence = ["CAP_SYS_ADMIN held in the host's user namespace"]
    if v1:
        evidence.append("host cgroup v1 controllers: %s" % ", ".join(v1))
    elif mountable:
        evidence.append("no v1 controller bound, but this kernel mounts named v1 hierarchies (-o none,name=x)")
    evidence += ["rw cgroup v1 mount at %s (root %s, %s)" % (m.mountpoint, m.root, ",".join(m.super_options))
                 for m in rw_v1]
    if not roots and not v1 and mountable is None:
        return unknown("whether this kernel can mount a cgroup v1 hierarchy could not be read (/proc/filesystems)",
                       *evidence)
    if snapshot.seccomp_mode:
        evidence.append("a seccomp filter is installed; Docker's default allows mount(2) once CAP_SYS_ADMIN is added")
    return fail(*evidence)


@check("cgroupfs-rw", "cgroupfs mounted read-write", "high",
       "A writable cgroup filesystem lets the target change its own (and, without a cgroup namespace, other) "
       "cgroups' limits and, on v1, notify_on_release/release_agent.",
       "Raise its own limits, freeze or kill other containers' cgroups, and the release_agent escape.",
       "Mount cgroupfs read-only (the default for unprivileged containers).",
       ref(cve=("CVE-2022-0492",), cis="5.4", pss="spec.containers[*].securityContext.privileged"),
       fixes("remove --privileged; do not -v /sys/fs/cgroup", "privileged: false; no hostPath of /sys/fs/cgroup",
             "profiles do not mount cgroupfs, or mount it read-only"))
def cgroupfs_rw(snapshot):
    missing = _mounts_unknown(snapshot)
    if missing:
        return unknown(missing)
    rw = [m for m in snapshot.reachable_mounts if m.fstype in ("cgroup", "cgroup2") and not m.read_only]
    if not rw:
        return ok("cgroup mounts: %d, none writable" % sum(m.fstype in ("cgroup", "cgroup2") for m in snapshot.reachable_mounts))
    evidence = ["%s at %s (root %s) mounted %s" % (m.fstype, m.mountpoint, m.root, ",".join(m.options)) for m in rw]
    if snapshot.is_host_root:
        return fail(*evidence)
    return fail(*evidence, severity="low", note="the target is not host root: host-owned cgroup files stay read-only to it")


def _device_allowed(devices_list, kind, major, minor):
    """devices.list grammar (v1): `type major:minor access`, `a *:* rwm` allows all."""
    if devices_list is None:
        return None
    for line in devices_list.splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        dtype, numbers, access = parts
        if dtype not in ("a", kind[0]):
            continue
        maj, _, mnr = numbers.partition(":")
        if maj not in ("*", str(major)) or mnr not in ("*", str(minor)):
            continue
        if "r" in access or "w" in access:
            return True
    return False


def _usable_nodes(snapshot, predicate):
    out = []
    for node in snapshot.dev_nodes:
        if not predicate(node):
            continue
        allowed = _device_allowed(snapshot.devices_list, node.kind, node.major, node.minor)
        if allowed is False:
            continue
        out.append("%s (%s %d:%d)%s" % (node.path, node.kind, node.major, node.minor,
                                        "" if allowed else ", device cgroup not readable"))
    return out


def _is_host_block_device(snapshot, node):
    """A block node is judged by its device number, never its name: it reaches a disk when
    the number is one of this kernel's block devices (every number, when that list is unknown)."""
    if node.kind != "block":
        return False
    known = snapshot.host.block_devices
    return known is None or (node.major, node.minor) in known


@check("block-devices", "Block device nodes reachable", "high",
       "A block device node (matched by device number against this kernel's block devices, whatever its name) "
       "that the device cgroup allows gives raw access to a disk: mount it, or read/write the host's filesystem "
       "underneath every permission check.",
       "mount /dev/vda1 /mnt (CAP_SYS_ADMIN) or debugfs -w /dev/vda1: read /etc/shadow, write host files.",
       "Do not pass host block devices (--device, privileged).",
       ref(cis="5.17", pss="spec.containers[*].securityContext.privileged"),
       fixes("remove --device /dev/sdX and --privileged", "no hostPath of /dev; privileged: false",
             "profiles keep `filesystem.dev` = minimal (null, zero, full, random, urandom, tty)"))
def block_devices(snapshot):
    nodes = _usable_nodes(snapshot, lambda n: _is_host_block_device(snapshot, n))
    if nodes:
        return fail(*nodes, severity=None if snapshot.is_host_root or snapshot.has_host_cap("dac_override") else "medium")
    if snapshot.dev_scan_incomplete:
        return unknown("the target's /dev could not be scanned completely (%s): %s"
                       % (snapshot.dev_scan_incomplete, snapshot.access_hint))
    others = [n for n in snapshot.dev_nodes if n.kind == "block"]
    return ok("no usable block device node in the target's /dev (%d device nodes scanned)" % len(snapshot.dev_nodes),
              *("%s (block %d:%d) names no block device of this kernel" % (n.path, n.major, n.minor) for n in others[:4]))


@check("mem-devices", "Physical memory devices reachable (/dev/mem, /dev/kmem, /dev/port)", "critical",
       "A node with the device number of /dev/mem, /dev/kmem or /dev/port (whatever its name) that the device "
       "cgroup allows gives raw access to physical memory or I/O ports (with CAP_SYS_RAWIO).",
       "Patch kernel memory or read secrets of every process on the host.",
       "Do not pass memory devices into containers.",
       ref(cis="5.17", pss="spec.containers[*].securityContext.privileged"),
       fixes("remove --device /dev/mem and --privileged", "privileged: false",
             "profiles keep `filesystem.dev` = minimal, which never creates memory devices"))
def mem_devices(snapshot):
    mem = snapshot.host.mem_devices
    nodes = [n for n in snapshot.dev_nodes if n.kind == "char" and (n.major, n.minor) in mem
             and _device_allowed(snapshot.devices_list, n.kind, n.major, n.minor) is not False]
    if nodes:
        return fail(*("%s (char %d:%d = %s)%s" % (n.path, n.major, n.minor, mem[(n.major, n.minor)],
                                                  "" if snapshot.devices_list is not None else ", device cgroup not readable")
                      for n in nodes))
    if snapshot.dev_scan_incomplete:
        return unknown("the target's /dev could not be scanned completely (%s): %s"
                       % (snapshot.dev_scan_incomplete, snapshot.access_hint))
    return ok("no node with the number of /dev/mem, /dev/kmem or /dev/port usable (%d device nodes scanned)"
              % len(snapshot.dev_nodes))


@check("runtime-socket", "Container runtime socket reachable", "critical",
       "A container runtime's API socket (Docker, containerd, Podman, CRI-O) is inside the target.",
       "`docker -H unix:///var/run/docker.sock run --privileged -v /:/host ...`: whoever reaches the socket "
       "controls the host.",
       "Never mount runtime sockets into containers; use a narrowly scoped proxy if unavoidable.",
       ref(cis="5.31", pss="spec.volumes[*].hostPath"),
       fixes("remove -v /var/run/docker.sock:...", "no hostPath volume of the runtime socket",
             "profiles never bind runtime sockets"))
def runtime_socket(snapshot):
    if snapshot.runtime_sockets:
        return fail(*("socket %s in the target%s" % (path, " (host %s)" % host if host else "")
                      for path, host in snapshot.runtime_sockets))
    missing = snapshot.unreadable("root", "mountinfo", "sockets")
    if missing:
        return unknown(missing)
    return ok("no runtime socket found at mount points or well-known paths")


# Sensitive whichever way they are mounted: secrets, other containers' data, kernel interfaces.
SENSITIVE_HOST_PATHS = frozenset((
    "/", "/etc", "/root", "/home", "/var", "/var/lib", "/var/lib/docker", "/var/lib/containerd",
    "/var/lib/kubelet", "/var/log", "/run", "/var/run", "/proc", "/sys", "/dev", "/etc/kubernetes",
    "/run/containerd", "/var/lib/containers", "/sys/fs/cgroup",
))
# Programs and libraries: reading them is what a sandbox built from the host's /usr does;
# only writing them plants code the host will run.
SENSITIVE_IF_WRITABLE = frozenset(("/usr", "/lib", "/lib64", "/bin", "/sbin", "/boot", "/lib/modules", "/opt"))


def sensitive_mounts(snapshot):
    found = []
    for m in snapshot.reachable_mounts:
        if m.fstype in KERNEL_FSTYPES or m.fstype in ("devpts", "mqueue"):
            # Kernel filesystems are judged wherever they are mounted by their own checks
            # (proc-sys-rw, core-pattern-writable, sysfs-rw, cgroupfs-rw, kernelfs-rw).
            continue
        host = snapshot.host_path_of(m)
        if host in SENSITIVE_HOST_PATHS or (host in SENSITIVE_IF_WRITABLE and not m.read_only):
            found.append((m, host))
    return found


@check("sensitive-mount", "Sensitive host path mounted inside", "high",
       "A host directory such as /, /etc, /root, /var/lib/docker or /dev is bind-mounted into the target.",
       "With write access and root not remapped: add a cron job, an ssh key or a setuid binary on the host. "
       "Read-only still leaks secrets (/etc/shadow, kubelet credentials).",
       "Mount only the specific data directories the workload needs, read-only where possible.",
       ref(cis="5.5", pss="spec.volumes[*].hostPath"),
       fixes("remove -v /:/host (and similar)", "no hostPath volumes of system directories",
             "profiles bind only explicitly listed paths"))
def sensitive_mount(snapshot):
    missing = _mounts_unknown(snapshot)
    if missing:
        return unknown(missing)
    found = sensitive_mounts(snapshot)
    if found:
        return fail(*("%s -> host %s (%s %s, %s)" % (m.mountpoint, host, m.fstype, m.device,
                                                    "read-only" if m.read_only else "read-write") for m, host in found))
    return ok("no bind mount of a sensitive host path")


@check("mount-propagation-shared", "Mount shared with the host's propagation group", "medium",
       "A mount in the target is in the same shared peer group as a host mount: mounts made inside propagate "
       "to the host (or the reverse).",
       "Mount over a host path through the shared peer group (e.g. shadow /etc on the host), or receive the "
       "host's new mounts (other volumes, secrets).",
       "Use private (the default) or rslave propagation.",
       ref(cis="5.19", pss="spec.containers[*].volumeMounts[*].mountPropagation"),
       fixes("do not use :shared/:rshared bind options", "mountPropagation: None", "profiles make / recursively private"))
def mount_propagation_shared(snapshot):
    missing = _mounts_unknown(snapshot)
    if missing:
        return unknown(missing)
    if not snapshot.host.mounts:
        return unknown("the host's mount table is not visible from here (the auditor is not in the host's "
                       "PID namespace, or PID 1's mountinfo is unreadable): run the audit on the host as root")
    host_groups = {m.peer_group(): m.mountpoint for m in snapshot.host.mounts if m.peer_group()}
    shared = []
    for m in snapshot.mounts:
        group = m.peer_group()
        if group and group in host_groups:
            shared.append("%s shared:%s with host mount %s" % (m.mountpoint, group, host_groups[group]))
    if shared:
        return fail(*shared)
    return ok("no mount in a host peer group")


@check("rootfs-rw", "Root filesystem writable", "low",
       "The target's / is writable: an attacker can persist tools and modify binaries the workload runs.",
       "Drop and run tools, overwrite the application; with CVE-2019-5736 a writable rootfs held the runc overwrite.",
       "Run with a read-only root filesystem and writable tmpfs/volumes only where needed.",
       ref(cve=("CVE-2019-5736",), cis="5.12", pss="spec.containers[*].securityContext.readOnlyRootFilesystem"),
       fixes("--read-only", "readOnlyRootFilesystem: true", "profiles keep `filesystem.readonly_root` = true"))
def rootfs_rw(snapshot):
    m = snapshot.mount_for("/")
    if m is None:
        return unknown(_mounts_unknown(snapshot) or "the root mount is not in the target's mount table")
    evidence = "/ is %s mounted %s" % (m.fstype, ",".join(m.options))
    return ok(evidence) if m.read_only else fail(evidence)


_OTHER_KERNEL_FS = ("debugfs", "tracefs", "securityfs", "bpf")


@check("kernelfs-rw", "debugfs, tracefs, securityfs or bpffs mounted read-write", "high",
       "A read-write debugfs, tracefs, securityfs or bpf filesystem is mounted in the target (at any path): "
       "they are host-global kernel interfaces with no namespace of their own.",
       "debugfs and tracefs expose kernel internals and tracing control; securityfs holds LSM policy "
       "(AppArmor profiles, IMA); a bpffs holds pinned BPF programs and maps of the host.",
       "Never mount these filesystems into containers.",
       ref(cis="5.4", pss="spec.containers[*].securityContext.privileged"),
       fixes("remove --privileged and -v /sys/kernel/...", "privileged: false; no hostPath of /sys",
             "profiles keep `filesystem.sys` = none or ro"))
def kernelfs_rw(snapshot):
    missing = _mounts_unknown(snapshot)
    if missing:
        return unknown(missing)
    # debugfs, tracefs and securityfs have one superblock for the whole kernel: any mount
    # of them is the host's. Each bpf mount is a new instance, empty and harmless, unless
    # its device is a host mount's (a bind of the host's /sys/fs/bpf and its pins).
    host_devices = {(m.major, m.minor) for m in snapshot.host.mounts if m.fstype == "bpf"}
    found = [m for m in snapshot.reachable_mounts if m.fstype in _OTHER_KERNEL_FS and
             (m.fstype != "bpf" or not snapshot.host.mounts or (m.major, m.minor) in host_devices)]
    rw = [m for m in found if not m.read_only]
    if not rw:
        return ok("%s" % (", ".join("%s at %s (ro)" % (m.fstype, m.mountpoint) for m in found)
                          or "no debugfs, tracefs, securityfs or bpf mount"))
    evidence = ["%s at %s (root %s) mounted %s" % (m.fstype, m.mountpoint, m.root, ",".join(m.options)) for m in rw]
    if snapshot.is_host_root:
        return fail(*evidence)
    return fail(*evidence, severity="low", note="the target is not host root: these files are owned by host root")
