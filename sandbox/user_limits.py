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
"""
import os

from .errors import SetupError

SYSCTL_DIR = "/proc/sys/user/"


def plan(profile, context):
    """The layer's part: ((sysctl name, value), ...) of the profile's [user_limits] that this
    kernel has, or None. A sysctl the kernel lacks (no fanotify, no time namespaces) has no
    count to bound. Without a user namespace of its own the sandbox's user.* sysctls are the
    host's: nothing is written then."""
    if context.idmap is None:
        return None
    wanted = [(name, value) for name, value in profile.user_limits.as_dict().items() if value is not None]
    part = tuple((name, value) for name, value in wanted if os.path.exists(SYSCTL_DIR + name))
    return part or None


def child(part, launch):
    """PID 1, inside its own user namespace (stage "user-limits")."""
    for name, value in part:
        path = SYSCTL_DIR + name
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, b"%d" % value)
            finally:
                os.close(fd)
        except OSError as e:
            raise SetupError("user-limits", e.errno, "write %d to %s: %s" % (value, path, e.strerror)) from None

