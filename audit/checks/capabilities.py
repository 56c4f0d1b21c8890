"""Capability checks.

A capability acts on the host only when it is held in the host's user namespace: the
kernel checks ns_capable(owner of the resource's namespace), and host resources are
owned by the initial user namespace. A capability held inside a child user namespace
is reported at low severity with that explained.

"Held" means effective, permitted or ambient, plus the bounding set when the process
is root in its namespace (execve by uid 0 refills the permitted set from the bounding set).
"""
from ..snapshot import CAP, SUBSUMED_BY_SYS_ADMIN, cap_list, cap_name, execve_attainable
from . import check, fail, fixes, ok, ref

DOCKER_DEFAULT_CAPS = sum(1 << CAP[n] for n in (
    "chown", "dac_override", "fowner", "fsetid", "kill", "setgid", "setuid", "setpcap",
    "net_bind_service", "net_raw", "sys_chroot", "mknod", "audit_write", "setfcap"))


def _attainable_reason(snapshot):
    return "attainable set: %s" % execve_attainable(snapshot.uids, snapshot.caps, snapshot.no_new_privs)[1]


def _held_evidence(snapshot, bit):
    c = snapshot.caps
    sets = [name for name, mask in (("effective", c.effective), ("permitted", c.permitted),
                                     ("ambient", c.ambient), ("bounding", c.bounding)) if mask >> bit & 1]
    return "%s in %s (CapEff %016x, CapBnd %016x)" % (cap_name(bit), "/".join(sets) or "no set",
                                                       c.effective, c.bounding)


def _cap_check(snapshot, name):
    bit = CAP[name]
    if snapshot.host_caps >> bit & 1:
        if name == "sys_module":
            loadable, why = snapshot.host.modules
            if loadable is False:
                # CAP_SYS_MODULE gates only module loading and unloading: on a kernel that
                # cannot load modules it opens nothing.
                return fail(_held_evidence(snapshot, bit), why, severity="low",
                            note="this kernel cannot load modules: the capability opens nothing today")
        return fail(_held_evidence(snapshot, bit), "held in the host's user namespace",
                    _attainable_reason(snapshot))
    if snapshot.attainable_caps >> bit & 1:
        return fail(_held_evidence(snapshot, bit), severity="low",
                    note="held only inside user namespace user:[%s]: it governs resources that namespace owns "
                         "(its own mounts, network, processes), not the host's" % snapshot.namespaces.get("user"))
    return ok("%s not held (CapEff %016x, CapPrm %016x, CapBnd %016x)" % (
        cap_name(bit), snapshot.caps.effective, snapshot.caps.permitted, snapshot.caps.bounding),
        _attainable_reason(snapshot))


CAP_CHECKS = (
    ("sys_admin", "critical", "mount, namespaces, cgroup release_agent, bpf, keyctl and hundreds of other admin operations",
     "Mount a cgroup v1 hierarchy and set release_agent (CVE-2022-0492), mount the host's block device, or abuse "
     "any of the dozens of interfaces gated on CAP_SYS_ADMIN.", ("CVE-2022-0492",)),
    ("sys_module", "critical", "load and unload kernel modules",
     "insmod a module: arbitrary code in the host kernel.", ()),
    ("sys_ptrace", "high", "trace and inject into any process it can see",
     "With a shared PID namespace, ptrace a host process and inject shellcode (process injection).", ()),
    ("dac_read_search", "high", "bypass read permission and call open_by_handle_at",
     "open_by_handle_at brute-forces inode handles from any fd on a host filesystem: the 'Shocker' escape reads "
     "/etc/shadow of the host.", ()),
    ("dac_override", "medium", "bypass file permission checks",
     "With any host file in reach (a bind mount, a leaked fd) it writes files regardless of mode; with "
     "DAC_READ_SEARCH, Shocker can also write.", ()),
    ("sys_rawio", "critical", "raw I/O: iopl/ioperm, /dev/mem, /dev/port, SCSI passthrough",
     "Read and write physical memory or I/O ports when a device node is present.", ()),
    ("net_admin", "high", "configure interfaces, routes, iptables, raw traffic control",
     "In the host network namespace: reroute traffic, disable the firewall, sniff with tc mirroring.", ()),
    ("net_raw", "medium", "raw and packet sockets",
     "ARP/DNS spoofing of neighbours on the same bridge; raw sockets widen the kernel attack surface "
     "(CVE-2020-14386 was reachable through it).", ("CVE-2020-14386",)),
    ("bpf", "high", "load BPF programs and maps",
     "Load tracing BPF programs to read kernel memory of other tenants; a rich attack surface of the verifier.", ()),
    ("perfmon", "medium", "performance monitoring",
     "perf_event_open on the whole system leaks data of other processes and the kernel.", ()),
    ("syslog", "medium", "read the kernel log and see kernel pointers",
     "dmesg and /proc/kallsyms addresses defeat KASLR, the first step of kernel exploits.", ()),
    ("sys_boot", "high", "reboot and kexec",
     "reboot(2) the host (denial of service) or kexec_load a new kernel.", ()),
    ("sys_time", "medium", "set the system clock",
     "Change the host clock: break TLS validity, log ordering, token expiry.", ()),
)


def _register(name, severity, what, escape, cves):
    cid = "cap-" + name.replace("_", "-")
    title = "Holds %s (%s)" % (cap_name(CAP[name]), what.split(",")[0])

    @check(cid, title, severity,
           "%s allows: %s. It matters when held in the host's user namespace." % (cap_name(CAP[name]), what),
           escape,
           "Drop %s; grant only the capabilities the workload needs." % cap_name(CAP[name]),
           ref(cve=cves, cis="5.3", pss="spec.containers[*].securityContext.capabilities.add"),
           fixes("--cap-drop %s (and do not --cap-add it)" % name.upper(),
                 "securityContext.capabilities: {drop: [ALL]} without adding %s" % name.upper(),
                 "leave %s out of `capabilities.keep`" % name))
    def capability_check(snapshot):
        return _cap_check(snapshot, name)
    return capability_check


for _spec in CAP_CHECKS:
    _register(*_spec)


@check("privileged", "Runs privileged (every host capability, no seccomp)", "critical",
       "The target holds every capability the host's own root holds (judged against PID 1's bounding set and "
       "cap_last_cap, never a fixed hex value) in the host's user namespace, with no seccomp filter.",
       "A privileged container is root on the host with extra steps: mount the host disk, load a module, "
       "write release_agent or core_pattern.",
       "Do not run privileged; grant individual capabilities.",
       ref(cis="5.4", pss="spec.containers[*].securityContext.privileged"),
       fixes("remove --privileged", "privileged: false", "use the `strict` or `default` profile, never `permissive` for untrusted code"))
def privileged(snapshot):
    held = snapshot.host_caps
    # CAP_SYS_ADMIN stands in for BPF, PERFMON and CHECKPOINT_RESTORE in the kernel's checks,
    # so a runtime that predates them (Docker 20.10) grants the same power without the bits.
    if held >> CAP["sys_admin"] & 1:
        held |= SUBSUMED_BY_SYS_ADMIN
    missing = snapshot.host.caps & ~held
    evidence = ["host capability set (PID 1 CapBnd, cap_last_cap=%d): %016x" % (snapshot.host.cap_last_cap, snapshot.host.caps),
                "target held in host user namespace: %016x" % snapshot.host_caps, _attainable_reason(snapshot),
                "Seccomp: %d" % snapshot.seccomp_mode]
    if not missing and snapshot.seccomp_mode == 0:
        return fail(*evidence)
    if missing:
        evidence.append("missing: %s" % ", ".join(cap_list(missing)[:8]) + (" ..." if len(cap_list(missing)) > 8 else ""))
    return ok(*evidence)


@check("caps-ambient", "Has ambient capabilities", "low",
       "Ambient capabilities survive execve of unprivileged programs, so every child keeps them.",
       "Any program the workload runs (including one an attacker supplies) inherits the capabilities.",
       "Clear the ambient set; give capabilities to the one binary that needs them with file capabilities.",
       ref(cis="5.3", pss="spec.containers[*].securityContext.capabilities.add"),
       fixes("do not pass ambient capabilities (docker never sets them)", "do not add capabilities",
             "keep `capabilities.ambient` empty"))
def caps_ambient(snapshot):
    amb = snapshot.caps.ambient
    if amb:
        return fail("CapAmb %016x: %s" % (amb, ", ".join(cap_list(amb))),
                    severity=None if snapshot.in_host_userns else "info")
    return ok("CapAmb %016x" % amb)


@check("caps-nondefault", "Holds capabilities beyond Docker's default set", "medium",
       "Capabilities outside Docker's default 14 widen what root in the target can do.",
       "Each added capability is its own attack surface; see the cap-* checks for how each is used.",
       "Drop everything and add back only what the workload needs.",
       ref(cis="5.3", pss="spec.containers[*].securityContext.capabilities.add"),
       fixes("--cap-drop ALL --cap-add <needed>", "capabilities: {drop: [ALL], add: [<needed>]}",
             "list only the needed capabilities in `capabilities.keep`"))
def caps_nondefault(snapshot):
    extra = snapshot.attainable_caps & ~DOCKER_DEFAULT_CAPS
    if not extra:
        return ok("held capabilities are within Docker's default set (%016x)" % snapshot.attainable_caps)
    evidence = "beyond the default set: %s" % ", ".join(cap_list(extra))
    if snapshot.in_host_userns:
        return fail(evidence)
    return fail(evidence, severity="low", note="held only inside a user namespace, not over host resources")
