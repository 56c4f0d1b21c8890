"""The container's file tree, in the container's mount namespace (before and after pivot_root).

Order, and the kernel's reasons:
  1. `/` made slave (or what linux.rootfsPropagation says) recursively, so nothing mounted here
     propagates back to the host; the rootfs bound onto itself, because pivot_root needs the new
     root to be a mount point.
  2. config.json's mounts in their order, each destination resolved inside the rootfs with every
     symlink followed *within* it (a symlink in an image must not send a mount onto the host).
  3. devices: mknod where the kernel lets us (host root, no user namespace), else a bind of the
     host's node (mknod is refused in a user namespace); the /dev symlinks the spec requires.
  4. pivot_root(".", ".") then a lazy unmount of the old root (crun, runc), or MS_MOVE + chroot with
     --no-pivot.
  5. masked paths (/dev/null bound over files, an empty read-only tmpfs over directories; the /dev/null
     is checked to really be 1:3 before it is bound: CVE-2025-31133), read-only paths, then the root
     itself read-only: remounts come last, after every mount point was created.
"""
import os
import stat

from .. import native
from .errors import SpecError
from .spec import MS_BIND, MS_REC, MS_REMOUNT, MS_RDONLY, MS_SLAVE

MS_MOVE = 8192
MNT_DETACH = 2
O_PATH = 0o10000000


def secure_join(root, path):
    """`path` inside `root` with every symlink resolved against `root` (like chroot would)."""
    parts = [p for p in path.split("/") if p and p != "."]
    resolved = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            resolved.append(part)
            resolved.extend(p for p in parts if p not in ("", "."))
            # what does not exist yet is created below root: no symlink can intervene
            return os.path.join(root, *_normal(resolved))
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > 255:
                raise SpecError("%s: too many levels of symbolic links inside the rootfs" % path)
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved) if resolved else root


def _normal(parts):
    out = []
    for p in parts:
        if p == "..":
            if out:
                out.pop()
        elif p and p != ".":
            out.append(p)
    return out


def _mkdirs(path):
    try:
        os.makedirs(path, 0o755, exist_ok=True)
    except FileExistsError:
        pass
    except OSError as e:
        raise SpecError("mount point %s: %s" % (path, e.strerror)) from None


def _mount_point(path, is_dir):
    if is_dir:
        _mkdirs(path)
        return
    _mkdirs(os.path.dirname(path))
    if not os.path.lexists(path):
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
        except OSError as e:
            raise SpecError("mount point %s: %s" % (path, e.strerror)) from None


def prepare(plan, rootfs_fd=None):
    native.mount(None, "/", None, MS_REC | MS_SLAVE, stage="rootfs: make / slave")
    if rootfs_fd is not None:
        attach(rootfs_fd, plan.rootfs, "rootfs")
    else:
        native.mount(plan.rootfs, plan.rootfs, None, MS_BIND | MS_REC, stage="rootfs: bind")


def attach(fd, target, what):
    """move_mount(2) of a detached tree (made by the runtime) onto `target`."""
    MOVE_MOUNT_F_EMPTY_PATH = 4
    rc = native.syscall("move_mount", fd, b"", -100, target.encode(), MOVE_MOUNT_F_EMPTY_PATH)
    native.check(rc, "mount", "attaching %s at %s" % (what, target))
    os.close(fd)


def _flags_kept(path):
    # In a user namespace the kernel locks the flags a mount came with (ro, nosuid, nodev,
    # noexec, atime): a remount must repeat them or fail with EPERM.
    try:
        return native.mount_flags_of(path)
    except OSError:
        return 0


def mount_all(plan, cgroup_dirs, bind_fds=None):
    for index, m in enumerate(plan.mounts):
        target = secure_join(plan.rootfs, m.destination)
        if m.type in ("cgroup", "cgroup2"):
            _cgroup(m, target, cgroup_dirs)
            continue
        if m.bind:
            fd = (bind_fds or {}).get(index)
            if fd is not None:
                _mount_point(target, stat.S_ISDIR(os.fstat(fd).st_mode))
                attach(fd, target, m.source)
            else:
                _mount_point(target, os.path.isdir(m.source))
                native.mount(m.source, target, None, m.flags & (MS_BIND | MS_REC), stage="mount: " + m.label)
            extra = m.flags & ~(MS_BIND | MS_REC | MS_REMOUNT)
            if extra:
                native.mount(None, target, None, MS_BIND | MS_REMOUNT | extra | _flags_kept(target) & ~m.clear,
                             stage="mount: remount " + m.label)
        else:
            _mount_point(target, True)
            native.mount(m.source or m.type, target, m.type, m.flags, m.data or None, stage="mount: " + m.label)
        if m.propagation:
            native.mount(None, target, None, m.propagation, stage="mount: propagation " + m.label)


def _cgroup(m, target, cgroup_dirs):
    """/sys/fs/cgroup: a tmpfs holding, per hierarchy, a bind of the container's own cgroup
    (what a cgroup namespace would show; a fresh cgroup v1 mount is refused in a user namespace).
    cgroup_dirs: [(version, mountpoint, controllers, directory)], found by the runtime before the
    clone (inside a cgroup namespace the host's mounts show roots outside it)."""
    _mount_point(target, True)
    readonly = m.flags & MS_RDONLY
    if m.type == "cgroup2" or all(entry[0] == "v2" for entry in cgroup_dirs):
        v2 = [entry[3] for entry in cgroup_dirs if entry[0] == "v2"]
        if not v2:
            raise SpecError("mount: cgroup2 %s: this host has no cgroup2 hierarchy" % m.destination)
        native.mount(v2[0], target, None, MS_BIND | MS_REC, stage="mount: " + m.label)
        if readonly:
            native.mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | _flags_kept(target),
                         stage="mount: remount " + m.label)
        return
    native.mount("tmpfs", target, "tmpfs", m.flags & ~MS_RDONLY, "mode=755", stage="mount: " + m.label)
    binds = []
    for version, point, controllers, directory in cgroup_dirs:
        name = "unified" if version == "v2" else os.path.basename(point)
        where = os.path.join(target, name)
        _mkdirs(where)
        native.mount(directory, where, None, MS_BIND | MS_REC, stage="mount: cgroup " + name)
        binds.append(where)
        for controller in controllers:
            if controller != name and "," in name and not controller.startswith("name="):
                link = os.path.join(target, controller)
                if not os.path.lexists(link):
                    os.symlink(name, link)
    for where in binds:
        native.mount(None, where, None, MS_BIND | MS_REMOUNT | MS_RDONLY * bool(readonly) | m.flags & 14 |
                     _flags_kept(where), stage="mount: remount cgroup")
    if readonly:
        native.mount(None, target, None, MS_REMOUNT | MS_RDONLY | (m.flags & 14), "mode=755",
                     stage="mount: remount " + m.label)


def devices(plan, in_userns):
    """Device nodes, then /dev's required symlinks (after the spec's /dev mounts exist)."""
    old = os.umask(0)
    try:
        for dev in plan.devices:
            target = secure_join(plan.rootfs, dev.path)
            _mkdirs(os.path.dirname(target))
            if os.path.lexists(target) and not os.path.isdir(target):
                if _is_mount_point(target):
                    continue
                os.unlink(target)
            kind = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}[dev.type]
            made = False
            if not in_userns:
                try:
                    os.mknod(target, kind | dev.mode, os.makedev(dev.major, dev.minor))
                    os.chown(target, dev.uid, dev.gid)
                    made = True
                except PermissionError:
                    made = False
            if not made:
                _bind_host_device(dev, target)
    finally:
        os.umask(old)
    dev_dir = secure_join(plan.rootfs, "/dev")
    links = [("/proc/self/fd", "fd"), ("/proc/self/fd/0", "stdin"), ("/proc/self/fd/1", "stdout"),
             ("/proc/self/fd/2", "stderr")]
    if any(m.destination == "/dev/pts" for m in plan.mounts):
        links.append(("pts/ptmx", "ptmx"))
    for source, name in links:
        link = os.path.join(dev_dir, name)
        if name == "ptmx" and os.path.lexists(link) and not os.path.islink(link):
            os.unlink(link)
        if not os.path.lexists(link):
            try:
                os.symlink(source, link)
            except OSError as e:
                raise SpecError("/dev/%s: %s" % (name, e.strerror)) from None


def _is_mount_point(path):
    try:
        return os.stat(path).st_dev != os.stat(os.path.dirname(path)).st_dev
    except OSError:
        return False


def _bind_host_device(dev, target):
    host = dev.path
    try:
        st = os.stat(host)
    except OSError:
        raise SpecError("device %s: cannot create it here (a user namespace cannot mknod) and the host "
                        "has no such node to bind" % dev.path) from None
    if os.major(st.st_rdev) != dev.major or os.minor(st.st_rdev) != dev.minor:
        raise SpecError("device %s: the host's node is %d:%d, not %d:%d" % (
            dev.path, os.major(st.st_rdev), os.minor(st.st_rdev), dev.major, dev.minor))
    _mount_point(target, False)
    native.mount(host, target, None, MS_BIND, stage="device: bind " + dev.path)


def pivot(plan, no_pivot=False):
    os.chdir(plan.rootfs)
    if no_pivot:
        native.mount(plan.rootfs, "/", None, MS_MOVE, stage="rootfs: move")
        os.chroot(".")
    else:
        native.pivot_root(".", ".")
        native.umount2(".", MNT_DETACH, stage="rootfs: detach the old root")
    os.chdir("/")
    if plan.rootfs_propagation:
        from .spec import PROPAGATION
        native.mount(None, "/", None, PROPAGATION[plan.rootfs_propagation], stage="rootfs: propagation")


def mask(paths):
    null = os.open("/dev/null", O_PATH | os.O_CLOEXEC)
    try:
        st = os.fstat(null)
        # bind what we checked, through its descriptor: a /dev/null swapped for a symlink or
        # another file between the check and the mount cannot be what gets bound (CVE-2025-31133)
        if not stat.S_ISCHR(st.st_mode) or os.major(st.st_rdev) != 1 or os.minor(st.st_rdev) != 3:
            raise SpecError("masked paths: /dev/null in the container is not the null device")
        null_path = "/proc/self/fd/%d" % null
        for path in paths:
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if stat.S_ISDIR(st.st_mode):
                native.mount("tmpfs", path, "tmpfs", MS_RDONLY, "size=0,mode=555", stage="masked path " + path)
            else:
                native.mount(null_path, path, None, MS_BIND, stage="masked path " + path)
    finally:
        os.close(null)


def readonly(paths):
    for path in paths:
        if not os.path.lexists(path):
            continue
        native.mount(path, path, None, MS_BIND | MS_REC, stage="readonly path " + path)
        native.mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | _flags_kept(path),
                     stage="readonly path " + path)


def root_readonly():
    native.mount(None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY | _flags_kept("/"), stage="rootfs: read-only")


def sysctls(values):
    for key, value in values:
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as e:
            raise SpecError("sysctl %s: %s: %s" % (key, path, e.strerror)) from None
        try:
            os.write(fd, value.encode())
        except OSError as e:
            raise SpecError("sysctl %s=%s: %s" % (key, value, e.strerror)) from None
        finally:
            os.close(fd)

