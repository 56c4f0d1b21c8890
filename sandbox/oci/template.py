"""`pysandbox-oci spec`: the default config.json (runc's defaults: a shell in ./rootfs, the
default capabilities Docker keeps, masked and read-only /proc paths; --rootless adds a user
namespace mapping the caller)."""
import os

from pysandbox_common.containers import OCI_MASKED_PATHS, OCI_READONLY_PATHS

DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def default_spec(rootless=False):
    spec = {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": True, "user": {"uid": 0, "gid": 0}, "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {k: list(DEFAULT_CAPS) for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "pysandbox",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] +
                        ([] if rootless else ["gid=5"])},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")],
            "maskedPaths": list(OCI_MASKED_PATHS),
            "readonlyPaths": list(OCI_READONLY_PATHS),
        },
    }
    if rootless:
        spec["linux"]["namespaces"].append({"type": "user"})
        spec["linux"]["uidMappings"] = [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
        spec["linux"]["gidMappings"] = [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
        spec["linux"].pop("resources")
        spec["mounts"] = [m for m in spec["mounts"] if m["type"] not in ("cgroup", "sysfs")] + [
            {"destination": "/sys", "type": "none", "source": "/sys", "options": ["rbind", "nosuid", "noexec",
                                                                                   "nodev", "ro"]}]
    return spec
