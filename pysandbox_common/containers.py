"""Facts about containers that the runtime and the auditor must agree on.

One copy each: the runtime masks what the auditor checks is masked, and both know the
same runtime sockets and the same severity scale.
"""

# The paths Docker (20.10, Debian's docker.io) and runc mask by default (moby's
# oci/defaults.go): the audit's yardstick for "masks missing" (only those that exist on
# the running kernel count). The runtime masks these and more (RUNTIME_MASKED_PATHS).
OCI_MASKED_PATHS = (
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
)
# pysandbox's defaults add the per-IRQ counters and the power-capping interface (newer
# Docker releases mask both too).
RUNTIME_MASKED_PATHS = OCI_MASKED_PATHS + ("/proc/interrupts", "/sys/devices/virtual/powercap")
OCI_READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

# Sockets whose holder can ask a container engine for a privileged container.
RUNTIME_SOCKET_NAMES = frozenset((
    "docker.sock", "containerd.sock", "podman.sock", "crio.sock", "cri-dockerd.sock", "dockershim.sock",
    "buildkitd.sock", "containerd.sock.ttrpc", "frakti.sock", "rktlet.sock",
))
RUNTIME_SOCKET_PATHS = (
    "/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock",
    "/var/run/containerd/containerd.sock", "/run/podman/podman.sock", "/var/run/crio/crio.sock",
    "/run/crio/crio.sock", "/var/run/cri-dockerd.sock", "/run/buildkit/buildkitd.sock",
    "/run/k3s/containerd/containerd.sock",
)

# Severity scale of audit findings and profile lint messages, worst first.
SEVERITIES = ("critical", "high", "medium", "low", "info")

# Where pysandbox-oci keeps its containers' state (its default --root as host root; rootless
# $XDG_RUNTIME_DIR/pysandbox-oci or /tmp/pysandbox-oci-<uid>): the auditor finds them there.
OCI_RUNTIME_NAME = "pysandbox-oci"
OCI_STATE_ROOT = "/run/pysandbox-oci"
