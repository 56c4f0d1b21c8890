"""Mount namespace: the composed root.

Parent half (`plan`): turn the profile into a fixed list of mount operations and
check every host source exists, before anything is forked.
Child half (`build`): run in the sandbox's PID 1, inside its new user, mount and pid
namespaces. The order is the kernel's:
 1. make / recursively private, so nothing we mount propagates back to the host;
 2. mount a scratch tmpfs and pivot into it with the host's root at /oldroot, so bind
    sources resolve through /oldroot even where the new root covers their path
    (bubblewrap's trick);
 3. build /newroot: tmpfs (or the --rootfs dir, or an overlay), binds, /etc, /tmp, /dev,
    and a procfs mounted only now, from inside the new pid namespace;
 4. detach /oldroot, pivot_root(".", ".") into /newroot and detach the old root stacked
    under it (crun, nsjail);
 5. masks and read-only paths after the pivot, each bind verified (CVE-2025-31133 raced
    the bind of /dev/null over masked paths).
"""
import os

from . import sys as k
from .errors import SetupError, UsageError

BASE = "/tmp"
NEW = "/newroot"
OLD = "/oldroot"
ROOT_LINKS = ("bin", "sbin", "lib", "lib64", "lib32", "libx32")
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
             ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"))

SYS_mount_setattr = 442
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4


def _split_bind(spec):
    src, sep, dst = spec.partition(":")
    return src, (dst if sep else src)


class MountPlan:
    __slots__ = ("rootfs", "overlay", "binds", "tmpfs", "etc", "tmp_size", "proc", "sys", "masked",
                 "readonly", "readonly_root", "hostname", "passwd")

    def __init__(self, **kw):
        for key in self.__slots__:
            setattr(self, key, kw[key])


def _target(path, what, spec):
    """A mount destination inside the sandbox: absolute, normalized (a leading // would
    survive normpath), and never /, /proc or /dev, which the runtime itself builds."""
    if not path.startswith("/") or ".." in path.split("/"):
        raise UsageError("%s must be an absolute path without '..': %r" % (what, spec))
    path = os.path.normpath("/" + path.lstrip("/"))
    if path in ("/", "/proc", "/dev") or path.startswith(("/proc/", "/dev/")):
        raise UsageError("refusing to mount over %s (the runtime builds it)" % path)
    return path


def plan(fs, ro_binds=(), binds=(), tmpfs=(), hostname="sandbox", uid=0, gid=0):
    """Validate and freeze the mount operations for one sandbox (parent, before fork)."""
    rootfs = fs.rootfs
    overlay = fs.overlay
    entries = []
    seen_dst = set()
    # The profile's binds compose a root from the host; an image given as rootfs brings its
    # own /usr, so only the binds asked for with this run (ro_binds, binds) go into it.
    profile_ro, profile_rw = ((), ()) if rootfs else (fs.ro_bind, fs.bind)
    for spec, writable in [(s, False) for s in profile_ro + tuple(ro_binds)] + \
                          [(s, True) for s in profile_rw + tuple(binds)]:
        src, dst = _split_bind(spec)
        if not src:
            raise UsageError("empty bind source in %r" % spec)
        # The host path is resolved here, with the caller's view and rights; the sandbox
        # then binds what it named, not what a symlink might point at later.
        src = os.path.realpath(src)
        if not os.path.exists(src):
            raise SetupError("bind", 2, "bind source %s does not exist" % src)
        dst = _target(dst, "bind destination", spec)
        if dst in seen_dst:
            entries = [e for e in entries if e[1] != dst]
        seen_dst.add(dst)
        entries.append((src, dst, writable, os.path.isdir(src)))
    if rootfs:
        rootfs = os.path.realpath(rootfs)
        if not os.path.isdir(rootfs):
            raise SetupError("rootfs", 20, "%s is not a directory" % rootfs)
    etc = []
    if not rootfs:
        for name in fs.etc:
            path = os.path.join("/etc", name)
            if os.path.lexists(path):
                etc.append((name, os.path.islink(path), os.path.isdir(path)))
    tmpfs_dsts = tuple(_target(t, "tmpfs destination", t) for t in fs.tmpfs + tuple(tmpfs))
    passwd = "root:x:0:0:root:/root:/bin/sh\n" + (
        "sandbox:x:%d:%d:sandbox:/tmp:/bin/sh\n" % (uid, gid) if uid else "") + \
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    return MountPlan(rootfs=rootfs or "", overlay=overlay, binds=tuple(entries), tmpfs=tmpfs_dsts, etc=tuple(etc),
                     tmp_size=fs.tmp_size, proc=fs.proc, sys=fs.sys, masked=fs.masked_paths,
                     readonly=fs.readonly_paths, readonly_root=fs.readonly_root and not overlay,
                     hostname=hostname, passwd=passwd)


# ---- child half -------------------------------------------------------------------

def _mkdirs(path, mode=0o755):
    try:
        os.makedirs(path, mode)
    except FileExistsError:
        pass
    except OSError as e:
        raise SetupError("mkdir", e.errno, "%s: %s" % (path, os.strerror(e.errno))) from None


def _touch(path):
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
    except OSError as e:
        raise SetupError("mknod", e.errno, "%s: %s" % (path, os.strerror(e.errno))) from None


def _write_file(path, text, mode=0o644):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def restrict(path, readonly, stage="remount"):
    """nosuid and nodev (and read-only when asked), recursively: nothing bound in from the
    host or an image (a device node, a setuid binary) may act as one inside.
    mount_setattr(AT_RECURSIVE) reaches submounts too and only sets these bits; the older
    bind remount must restate the flags the kernel locked on mounts inherited from the
    host (noexec, atime...), or EPERM."""
    import ctypes
    bits = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (MOUNT_ATTR_RDONLY if readonly else 0)
    attr = (ctypes.c_uint64 * 4)(bits, 0, 0, 0)
    if k._syscall(SYS_mount_setattr, AT_FDCWD, path.encode(), AT_RECURSIVE, ctypes.byref(attr), 32) == 0:
        return
    k.mount(None, path, None, k.MS_BIND | k.MS_REMOUNT | k.MS_NOSUID | k.MS_NODEV | k.mount_flags_of(path)
            | (k.MS_RDONLY if readonly else 0), None, stage)


def make_readonly(path, stage="remount-ro"):
    restrict(path, True, stage)


def _make_target_in_root(root, path, is_dir):
    """Create `path` under `root` if missing, never following a symlink on the way."""
    import stat
    parts = [p for p in path.split("/") if p]
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            try:
                st = os.stat(part, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                try:
                    if last and not is_dir:
                        os.close(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                                         0o644, dir_fd=fd))
                    else:
                        os.mkdir(part, 0o755, dir_fd=fd)
                except OSError as e:
                    raise SetupError("mount-target", e.errno, "%s: %s" % (path, e.strerror)) from None
                st = os.stat(part, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                raise SetupError("mount-target", 40, "%s: the image has a symlink at /%s; refusing to mount "
                                 "through it" % (path, "/".join(parts[:index + 1])))
            if not last:
                next_fd = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                os.close(fd)
                fd = next_fd
    finally:
        os.close(fd)


def _mount_point(path, is_dir):
    """A directory or an empty file to mount onto, made if missing."""
    if is_dir:
        _mkdirs(path)
    else:
        _mkdirs(os.path.dirname(path))
        if not os.path.lexists(path):
            _touch(path)


def _bind(src, dst, is_dir, readonly, stage="bind"):
    _mount_point(dst, is_dir)
    k.mount(src, dst, None, k.MS_BIND | k.MS_REC, None, stage)
    restrict(dst, readonly, stage)


SYS_open_tree = 428
SYS_move_mount = 429
OPEN_TREE_CLONE = 1
AT_EMPTY_PATH = 0x1000
MOVE_MOUNT_F_EMPTY_PATH = 0x4


def open_sources(mp):
    """Parent half, per run: detached copies (open_tree) of the rootfs and every bind source.

    A path bind in the child would resolve the source with the sandbox's remapped ids,
    which cannot traverse a directory private to the caller (and would follow a symlink
    swapped in after validation). As host root the supervisor clones the source trees
    itself, with its own rights, and sets nosuid, nodev (and read-only where asked) on the
    detached copy; the child attaches them with move_mount. Rootless, the sandbox's root is the caller,
    so the child binds by path (returns None)."""
    if os.geteuid() != 0:
        return None
    import ctypes
    fds = []
    try:
        # The rootfs stays writable here: the child creates missing mount points in it first
        # and turns it read-only itself.
        entries = ([(mp.rootfs, True)] if mp.rootfs else []) + \
            [(src, writable) for src, _, writable, _ in mp.binds]
        for path, writable in entries:
            fd = k._syscall(SYS_open_tree, AT_FDCWD, path.encode(), OPEN_TREE_CLONE | AT_RECURSIVE | os.O_CLOEXEC)
            if fd < 0:
                err = ctypes.get_errno()
                raise SetupError("bind", err, "bind source %s: %s" % (path, os.strerror(err)))
            fds.append(fd)
            bits = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (0 if writable or mp.overlay else MOUNT_ATTR_RDONLY)
            attr = (ctypes.c_uint64 * 4)(bits, 0, 0, 0)
            if k._syscall(SYS_mount_setattr, fd, b"", AT_EMPTY_PATH | AT_RECURSIVE, ctypes.byref(attr), 32):
                err = ctypes.get_errno()
                raise SetupError("bind", err, "nosuid/nodev on %s: %s" % (path, os.strerror(err)))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def _attach(fd, target, is_dir):
    _mount_point(target, is_dir)
    if k._syscall(SYS_move_mount, fd, b"", AT_FDCWD, target.encode(), MOVE_MOUNT_F_EMPTY_PATH) != 0:
        import ctypes
        err = ctypes.get_errno()
        raise SetupError("bind", err, "%s: %s" % (target, os.strerror(err)))


def build(mp, source_fds):
    """Child half: compose the root and pivot into it. Runs as the sandbox's PID 1."""
    k.mount(None, "/", None, k.MS_REC | k.MS_PRIVATE, None, "make-rprivate")
    k.mount("tmpfs", BASE, "tmpfs", k.MS_NOSUID | k.MS_NODEV, "mode=0755,size=1m", "mount-scratch")
    os.mkdir(BASE + NEW, 0o755)
    os.mkdir(BASE + OLD, 0o755)
    k.pivot_root(BASE, BASE + OLD)
    os.chdir("/")

    sources = list(source_fds) if source_fds is not None else None
    if mp.rootfs:
        src = sources.pop(0) if sources is not None else OLD + mp.rootfs
        if mp.overlay:
            if sources is not None:
                _attach(src, "/.lower-root", True)
                src = "/.lower-root"
            _overlay(src, NEW, "root")
        elif sources is not None:
            _attach(src, NEW, True)
        else:
            k.mount(src, NEW, None, k.MS_BIND | k.MS_REC, None, "rootfs")
            restrict(NEW, False, "rootfs")
        # Every mount target must exist, and an image's symlinks must not steer one: until
        # the pivot, an absolute link in the image (x -> /oldroot/tmp) resolves against the
        # scratch root, i.e. onto the host. Targets are made (and checked) component by
        # component without following links, before the rootfs turns read-only.
        targets = [("/tmp", True), ("/proc", True), ("/dev", True)] + ([("/sys", True)] if mp.sys == "ro" else []) \
            + [(dst, is_dir) for _, dst, _, is_dir in mp.binds] + [(dst, True) for dst in mp.tmpfs]
        for path, is_dir in targets:
            _make_target_in_root(NEW, path, is_dir)
        if mp.readonly_root and not mp.overlay:
            make_readonly(NEW, "rootfs-ro")
    else:
        k.mount("tmpfs", NEW, "tmpfs", k.MS_NOSUID | k.MS_NODEV, "mode=0755,size=16m", "mount-root")
        for name in ROOT_LINKS:
            host = OLD + "/" + name
            if os.path.islink(host):
                os.symlink(os.readlink(host), NEW + "/" + name)
            elif os.path.isdir(host):
                _bind(host, NEW + "/" + name, True, not mp.overlay)
        _compose_etc(mp)
    for index, (src, dst, writable, is_dir) in enumerate(mp.binds):
        target = NEW + dst
        fd = sources[index] if sources is not None else None
        if mp.overlay and not writable and is_dir and not mp.rootfs:
            _mkdirs(target)
            lower = OLD + src
            if fd is not None:
                lower = "/.lower-%d" % index
                _attach(fd, lower, True)
            _overlay(lower, target, str(index))
        elif fd is not None:
            _attach(fd, target, is_dir)
        else:
            _bind(OLD + src, target, is_dir, not writable)
    _mkdirs(NEW + "/tmp", 0o1777)
    k.mount("tmpfs", NEW + "/tmp", "tmpfs", k.MS_NOSUID | k.MS_NODEV,
            "mode=1777,size=%d" % max(mp.tmp_size, 4096), "mount-tmp")
    for dst in mp.tmpfs:
        _mkdirs(NEW + dst)
        k.mount("tmpfs", NEW + dst, "tmpfs", k.MS_NOSUID | k.MS_NODEV, "mode=0755", "tmpfs")
    if mp.proc:
        _mkdirs(NEW + "/proc")
        k.mount("proc", NEW + "/proc", "proc", k.MS_NOSUID | k.MS_NODEV | k.MS_NOEXEC, None, "mount-proc")
    _compose_dev()
    if mp.sys == "ro":
        _mkdirs(NEW + "/sys")
        try:
            k.mount("sysfs", NEW + "/sys", "sysfs", k.MS_RDONLY | k.MS_NOSUID | k.MS_NODEV | k.MS_NOEXEC, None,
                    "mount-sys")
        except SetupError:
            # A fresh sysfs needs a network namespace of our own; with the host's network
            # only a read-only bind of the host's /sys is possible.
            _bind(OLD + "/sys", NEW + "/sys", True, True, "mount-sys")

    k.umount2(OLD, k.MNT_DETACH, "umount-oldroot")
    os.chdir(NEW)
    k.pivot_root(".", ".")
    k.umount2(".", k.MNT_DETACH, "umount-scratch")
    os.chdir("/")
    _mask(mp.masked, mp.readonly)
    if mp.readonly_root and not mp.rootfs:
        k.mount(None, "/", None, k.MS_BIND | k.MS_REMOUNT | k.MS_RDONLY | k.MS_NOSUID | k.MS_NODEV, None,
                "remount-root-ro")


def _overlay(lower, target, tag):
    """Copy-on-write over `lower`: the upper layer is a tmpfs, so writes never reach the host."""
    upper = "/.overlay-" + tag
    os.mkdir(upper, 0o755)
    k.mount("tmpfs", upper, "tmpfs", k.MS_NOSUID | k.MS_NODEV, "mode=0755", "overlay-upper")
    os.mkdir(upper + "/u", 0o755)
    os.mkdir(upper + "/w", 0o755)
    k.mount("overlay", target, "overlay", 0,
            "lowerdir=%s,upperdir=%s/u,workdir=%s/w,userxattr" % (lower, upper, upper), "overlay")


def _compose_etc(mp):
    etc = NEW + "/etc"
    _mkdirs(etc)
    for name, is_link, is_dir in mp.etc:
        host = OLD + "/etc/" + name
        if is_link:
            os.symlink(os.readlink(host), etc + "/" + name)
        else:
            _bind(host, etc + "/" + name, is_dir, True, "bind-etc")
    _write_file(etc + "/passwd", mp.passwd)
    _write_file(etc + "/group", "root:x:0:\nnogroup:x:65534:\n")
    _write_file(etc + "/hostname", (mp.hostname or "sandbox") + "\n")
    _write_file(etc + "/hosts", "127.0.0.1\tlocalhost %s\n::1\tlocalhost\n" % (mp.hostname or "sandbox"))


def _compose_dev():
    dev = NEW + "/dev"
    _mkdirs(dev)
    k.mount("tmpfs", dev, "tmpfs", k.MS_NOSUID | k.MS_NOEXEC, "mode=0755,size=64k", "mount-dev")
    for name in DEV_NODES:
        # mknod is refused in a user namespace; a bind of the host's node works, and the
        # bind keeps the host devtmpfs mount's (absent) nodev flag.
        _touch(dev + "/" + name)
        k.mount(OLD + "/dev/" + name, dev + "/" + name, None, k.MS_BIND, None, "bind-dev")
    os.mkdir(dev + "/pts", 0o755)
    k.mount("devpts", dev + "/pts", "devpts", k.MS_NOSUID | k.MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620", "mount-devpts")
    os.mkdir(dev + "/shm", 0o1777)
    k.mount("tmpfs", dev + "/shm", "tmpfs", k.MS_NOSUID | k.MS_NODEV | k.MS_NOEXEC, "mode=1777,size=64m",
            "mount-shm")
    for name, target in DEV_LINKS:
        os.symlink(target, dev + "/" + name)
    k.mount(None, dev, None, k.MS_BIND | k.MS_REMOUNT | k.MS_RDONLY | k.MS_NOSUID | k.MS_NOEXEC, None,
            "remount-dev-ro")


def _mask(masked, readonly):
    import stat
    null_fd = os.open("/dev/null", os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(null_fd)
        if not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(1, 3):
            raise SetupError("mask", 0, "/dev/null is not the null device")
        null_src = "/proc/self/fd/%d" % null_fd
        for path in masked:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                k.mount("tmpfs", path, "tmpfs", k.MS_RDONLY | k.MS_NOSUID | k.MS_NODEV | k.MS_NOEXEC,
                        "size=0,mode=0555", "mask")
            elif stat.S_ISLNK(st.st_mode):
                continue
            else:
                k.mount(null_src, path, None, k.MS_BIND, None, "mask")
                # The bind must have landed the null device, not something swapped in meanwhile.
                check = os.stat(path)
                if not stat.S_ISCHR(check.st_mode) or check.st_rdev != os.makedev(1, 3):
                    raise SetupError("mask", 0, "%s is not masked by /dev/null after the bind" % path)
    finally:
        os.close(null_fd)
    for path in readonly:
        if not os.path.exists(path):
            continue
        k.mount(path, path, None, k.MS_BIND | k.MS_REC, None, "readonly-path")
        make_readonly(path, "readonly-path")
