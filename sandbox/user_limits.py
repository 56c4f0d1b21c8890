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
  them. So this stage runs in PID 1 after every namespace exists (its own unshares, and the
  stager's network helper's), while PID 1 still holds its namespace's full capability set.
- Through which procfs: the sandbox's own. Every /proc/sys entry looked up through one
  procfs superblock by processes of different user (or network) namespaces gets a dentry
  per namespace, all under one parent with one name, so all on one hash chain each lookup
  walks (proc_sys_compare): through the host's /proc, a thousand live sandboxes made each
  start walk a thousand. The mount stage therefore keeps /proc/sys/user of the fresh /proc
  open (`keep_dir`, an O_PATH descriptor taken before the masks make /proc/sys read-only:
  a file opened below it is on the fresh procfs mount itself, which stays writable), and
  this stage, after `mount`, writes below that descriptor. A sandbox without a fresh /proc
  keeps the inherited one the same way.
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
    """PID 1, inside its own user namespace (stage "user-limits"), below the directory the
    mount stage kept (launch.sysctl_dir), or by path when there was no mount stage."""
    kept, launch.sysctl_dir = launch.sysctl_dir, None
    try:
        for name, value in part:
            try:
                fd = os.open(name if kept is not None else SYSCTL_DIR + name, os.O_WRONLY | os.O_CLOEXEC,
                             dir_fd=kept)
                try:
                    os.write(fd, b"%d" % value)
                finally:
                    os.close(fd)
            except OSError as e:
                raise SetupError("user-limits", e.errno, "write %d to %s: %s" % (value, SYSCTL_DIR + name,
                                                                                e.strerror)) from None
    finally:
        if kept is not None:
            os.close(kept)
