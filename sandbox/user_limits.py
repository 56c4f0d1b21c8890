"""The user.* sysctls of the sandbox's own user namespace (/proc/sys/user/max_*).

The kernel's rules (user_namespaces(7), kernel/ucount.c):
- Per-user counts (inotify instances and watches, fanotify groups and marks, namespaces of
  each kind) are charged at every level of the user-namespace chain, up to the initial
  namespace: what a sandbox takes counts against its creator (host root, or the rootless
  caller). A new user namespace starts every limit of its own level at INT_MAX, so only the
  creator's level bounds the sandbox, and one sandbox can take the creator's whole budget.
- /proc/sys/user/ shows the limits of the user namespace of the process that opens it,
  whatever procfs mount it goes through, and is writable by a process with CAP_SYS_RESOURCE
  in that namespace. Writing it here changes only the sandbox's own level.
- Creating a namespace counts against max_<kind>_namespaces of the creator's user namespace
  at the moment it is created, and counts already taken stay when a limit is lowered below
  them. So this stage runs in PID 1 after `unshare` (every namespace the runtime makes
  itself exists), while PID 1 still holds its namespace's full capability set, and before
  `mount`, which makes /proc/sys read-only.
- Through which procfs: with a pid namespace of its own, PID 1 writes through a procfs
  instance it mounts detached for the purpose (native.private_procfs), not the host's /proc
  it still sees: every sysctl lookup through one procfs by processes of different user
  namespaces adds a dentry to one hash chain, and through the host's a thousand live
  sandboxes slowed each start by walking it.
"""
import os

from . import native
from .errors import SetupError

SYSCTL_DIR = "/proc/sys/user/"
SYSCTL_SUBDIR = "sys/user/"  # the same, below a procfs root


def plan(profile, context):
    """The layer's part: (private procfs?, ((sysctl name, value), ...)) of the profile's
    [user_limits] that this kernel has, or None. A sysctl the kernel lacks (no fanotify, no
    time namespaces) has no count to bound. Without a user namespace of its own the
    sandbox's user.* sysctls are the host's: nothing is written then. The writes go through
    a private procfs when the sandbox has a pid namespace of its own (to mount one for)."""
    if context.idmap is None:
        return None
    wanted = [(name, value) for name, value in profile.user_limits.as_dict().items() if value is not None]
    values = tuple((name, value) for name, value in wanted if os.path.exists(SYSCTL_DIR + name))
    return (bool(profile.namespaces.pid), values) if values else None


def child(part, launch):
    """PID 1, inside its own user namespace (stage "user-limits")."""
    private, values = part
    root = native.private_procfs("user-limits") if private else None
    try:
        for name, value in values:
            path = SYSCTL_SUBDIR + name if private else SYSCTL_DIR + name
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC, dir_fd=root)
                try:
                    os.write(fd, b"%d" % value)
                finally:
                    os.close(fd)
            except OSError as e:
                raise SetupError("user-limits", e.errno, "write %d to %s: %s" % (value, SYSCTL_DIR + name,
                                                                                e.strerror)) from None
    finally:
        if root is not None:
            os.close(root)

