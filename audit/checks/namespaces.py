"""Namespace checks: does the target share a namespace with the host?

Identity is the namespace inode (never the device number of /proc/1/ns). The host's
pid/user/ipc/uts/cgroup inodes are the kernel's fixed initial numbers; net and mnt are
read from PID 1 (or kthreadd) when the auditor can see them.
"""
from . import check, fail, fixes, ok, ref, skip, unknown


def _ns_check(snapshot, name, what):
    shared = snapshot.shares_host_ns(name)
    mine = snapshot.namespaces.get(name)
    if mine is None and snapshot.unreadable("ns"):
        if name == "user" and snapshot.uid_map:
            # uid_map is readable by anyone: the initial user namespace, and only it by
            # default, maps the whole id range onto itself; any other map is a child namespace.
            text = "ns/user unreadable; uid_map: %s" % "; ".join("%d %d %d" % m for m in snapshot.uid_map)
            if list(snapshot.uid_map) == [(0, 0, 4294967295)]:
                return fail(text, "the identity map over the whole range is the initial user namespace's")
            return ok(text, "a partial map is a child user namespace's")
        return unknown(snapshot.unreadable("ns"))
    if mine is None:
        return skip("this kernel has no %s namespace" % name)
    if shared is None:
        return unknown("the host's %s namespace cannot be seen from here: run the audit from the host's "
                       "PID namespace" % name, "target %s namespace inode: %s" % (name, mine))
    evidence = "ns/%s -> %s:[%s], host's %s:[%s]" % (name, name, mine, name, snapshot.host.namespaces[name])
    if shared:
        return fail(evidence)
    return ok(evidence)


NS_CHECKS = {
    "pid": ("ns-pid-host", "Shares the host's PID namespace", "high",
            "The target sees and can signal every host process; with CAP_SYS_PTRACE it can inject code into them.",
            "From a shared PID namespace, /proc/<host pid>/root, /proc/<pid>/environ and ptrace reach host processes; "
            "`nsenter -t 1 -a` with enough capabilities is a complete escape.",
            "Run the container in its own PID namespace.", ref(cis="5.15", pss="spec.hostPID"),
            fixes("remove --pid=host", "hostPID: false", "profiles keep `namespaces.pid` = true")),
    "net": ("ns-net-host", "Shares the host's network namespace", "high",
            "The target uses the host's interfaces, can bind host ports, reach services on 127.0.0.1 and abstract unix sockets.",
            "Host-local services (the Docker API on tcp://127.0.0.1, kubelet, metadata endpoints, abstract sockets such as "
            "containerd-shim's in CVE-2020-15257) become reachable.",
            "Give the container its own network namespace.",
            ref(cve=("CVE-2020-15257",), cis="5.9", pss="spec.hostNetwork"),
            fixes("remove --net=host", "hostNetwork: false", "profiles keep `namespaces.net` = true")),
    "ipc": ("ns-ipc-host", "Shares the host's IPC namespace", "medium",
            "The target can read and write host System V shared memory, semaphores and POSIX message queues.",
            "Shared memory segments of host processes can be attached and altered.",
            "Give the container its own IPC namespace.", ref(cis="5.16", pss="spec.hostIPC"),
            fixes("remove --ipc=host", "hostIPC: false", "profiles keep `namespaces.ipc` = true")),
    "uts": ("ns-uts-host", "Shares the host's UTS namespace", "low",
            "The target can change the host's hostname and NIS domain name (with CAP_SYS_ADMIN).",
            "Mostly confusion and log spoofing; no direct escape.",
            "Give the container its own UTS namespace.", ref(cis="5.20"),
            fixes("remove --uts=host", "(pods always get their own UTS namespace)", "profiles keep `namespaces.uts` = true")),
    "mnt": ("ns-mnt-host", "Shares the host's mount namespace", "critical",
            "The target's filesystem view is the host's: every host file is one path away.",
            "There is nothing to escape from: read /etc/shadow, write /root/.ssh/authorized_keys, drop a cron job.",
            "Run the target in its own mount namespace with its own root.", ref(cis="5.5"),
            fixes("(docker always creates a mount namespace; do not bind-mount /)", "do not use hostPath volumes of /",
                  "profiles keep `namespaces.mount` = true")),
    "cgroup": ("ns-cgroup-host", "Shares the host's cgroup namespace", "low",
               "/proc/self/cgroup shows host cgroup paths: information about the host's layout, and cgroupfs mounts show the whole tree.",
               "Reveals container ids and host slices; combined with a writable cgroupfs it exposes other containers' cgroups.",
               "Use a private cgroup namespace.", ref(cis="5.24"),
               fixes("--cgroupns=private", "(default on cgroup v2 nodes)", "profiles keep `namespaces.cgroup` = true")),
    "user": ("ns-user-host", "Runs in the host's user namespace", "medium",
             "Root in the target is root on the host: every capability it holds acts on host resources, and any file it "
             "reaches through a mount is owned by the real uid 0.",
             "Any other gap (a capability, a writable mount, a kernel bug) becomes a host compromise, because ids are not remapped.",
             "Run the container in a user namespace that maps its root to an unprivileged host uid.",
             ref(cis="5.30", pss="spec.hostUsers"),
             fixes("dockerd --userns-remap=default", "hostUsers: false", "profiles keep `namespaces.user` = true")),
}


def _register(ns, spec):
    cid, title, severity, description, escape, remediation, references, fix = spec

    @check(cid, title, severity, description, escape, remediation, references, fix)
    def namespace_check(snapshot):
        return _ns_check(snapshot, ns, description)
    return namespace_check


for _ns, _spec in NS_CHECKS.items():
    _register(_ns, _spec)


@check("uid0-host", "Runs as the host's uid 0", "medium",
       "The target's effective uid is 0 as the host kernel sees it (no user-namespace remapping).",
       "Files reached through any mount (bind mounts, /proc/<pid>/root, leaked fds) are accessed as real root; "
       "kernel checks of `uid == 0` (sysctl files, setuid helpers) pass.",
       "Run as a non-root user, or remap root with a user namespace.",
       ref(cis="4.1", pss="spec.containers[*].securityContext.runAsNonRoot"),
       fixes("--user 1000:1000 (or dockerd --userns-remap)", "runAsNonRoot: true, runAsUser: 1000",
             "profiles run as an unprivileged uid inside a user namespace"))
def uid0_host(snapshot):
    kuid = snapshot.host_euid
    evidence = "status Uid: %s; uid_map: %s" % (
        " ".join(str(u) for u in snapshot.uids),
        "; ".join("%d %d %d" % m for m in snapshot.uid_map) or "(unreadable)")
    if kuid is None:
        missing = snapshot.unreadable("uid_map")
        if missing:
            return unknown(missing, evidence)
        return unknown("the effective uid is outside the target's uid_map", evidence)
    if kuid == 0:
        return fail(evidence)
    return ok(evidence, "host uid %d" % kuid)
