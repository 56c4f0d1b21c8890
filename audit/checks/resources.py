"""cgroup checks: resource limits and the v1 device controller."""
from . import check, fail, fixes, ok, ref, skip, unknown


def _limit_check(snapshot, controller, what):
    missing = snapshot.unreadable("cgroup")
    if missing:
        return unknown(missing)
    if not snapshot.cgroups:
        return unknown("the target's /proc/PID/cgroup is empty")
    found = snapshot.cgroup_limits.get(controller)
    missing = snapshot.unreadable("cgroup:" + controller)
    if found is None and missing:
        return unknown(missing)
    if found is None:
        paths = ", ".join("%s:%s" % (",".join(e.controllers) or "(v2)", e.path) for e in snapshot.cgroups
                          if controller in e.controllers or e.is_v2)
        return fail("no %s limit on the target's cgroup or its ancestors (%s)" % (what, paths or "no cgroup"))
    value, path = found
    return ok("%s = %s" % (path, value))


def _register(controller, cid, title, severity, what, escape, cis, docker, k8s, pysandbox):
    @check(cid, title, severity,
           "The target's cgroup (and every ancestor below the hierarchy root) sets no %s limit." % what,
           escape, "Set a %s limit." % what,
           ref(cis=cis, pss="spec.containers[*].resources.limits", mitre=("T1611", "T1499")),
           fixes(docker, k8s, pysandbox))
    def limit_check(snapshot):
        return _limit_check(snapshot, controller, what)
    return limit_check


_register("memory", "limits-memory-missing", "No memory limit", "medium", "memory",
          "Exhaust host memory: the OOM killer picks other tenants' processes.", "5.10",
          "--memory 512m", "resources.limits.memory", "set `limits.memory` in the profile")
_register("pids", "limits-pids-missing", "No PID limit", "medium", "process count",
          "A fork bomb exhausts the host's PID space and stops every other service from forking.", "5.28",
          "--pids-limit 256", "(kubelet podPidsLimit)", "set `limits.pids` in the profile")
_register("cpu", "limits-cpu-missing", "No CPU limit", "low", "CPU quota",
          "Starve co-located workloads of CPU.", "5.11",
          "--cpus 1", "resources.limits.cpu", "set `limits.cpus` in the profile")


@check("device-cgroup-open", "Device cgroup allows every device", "high",
       "The v1 devices controller allows `a *:* rwm`: any device node the target can create or reach is usable.",
       "With CAP_MKNOD: mknod /dev/sda b 8 0 and read or write the host disk directly.",
       "Use the runtime's default device allow-list.",
       ref(cis="5.17", pss="spec.containers[*].securityContext.privileged"),
       fixes("remove --privileged and --device-cgroup-rule 'a *:* rwm'", "privileged: false",
             "profiles set a device allow-list"))
def device_cgroup_open(snapshot):
    text = snapshot.devices_list
    missing = snapshot.unreadable("cgroup", "cgroup:devices")
    if text is None and missing:
        return unknown(missing)
    if text is None:
        return skip("no v1 devices controller for the target (on cgroup v2 device access is a BPF program)")
    if any(line.split()[:2] == ["a", "*:*"] and ("r" in line.split()[2] or "w" in line.split()[2])
           for line in text.splitlines() if len(line.split()) == 3):
        evidence = "devices.list: %s" % text.replace("\n", "; ")
        if not snapshot.in_host_userns:
            # mknod needs CAP_MKNOD in the initial user namespace, so inside a user namespace
            # only nodes already bound in are reachable (block-devices, mem-devices judge those).
            return fail(evidence, severity="low", note="the target cannot create device nodes from a user namespace")
        return fail(evidence)
    return ok("devices.list: %d rules, no wildcard" % len(text.splitlines()))
