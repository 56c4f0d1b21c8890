"""Mount namespace: the composed root.

Parent half (`plan`): turn the profile's ordered mount list into a fixed list of mount
operations and check every host source and every mount point exists, before anything is
forked; refuse a mount that would hide an earlier one. `open_sources`, per run and still
on the host side: detached copies (open_tree) of the rootfs and every bind source, the
writable ones idmapped onto the owner of their source (host root only).
Child half (`build`): run in the sandbox's PID 1, inside its new user, mount and pid
namespaces. The order is the kernel's:
 1. make / recursively private, so nothing we mount propagates back to the host;
 2. mount a scratch tmpfs and pivot into it with the host's root at /oldroot, so bind
    sources resolve through /oldroot even where the new root covers their path
    (bubblewrap's trick);
 3. build /newroot: first the runtime's base (the scratch's /newroot bound onto itself, or
    the --rootfs dir or an overlay,
    /usr's siblings, /etc, /tmp, /dev with its own devpts, a procfs mounted only now from
    inside the new pid namespace, /proc/stat sanitized), then the user's mounts in the order
    given, so a later mount may sit inside an earlier one (a bind under /tmp, a bind inside a
    --tmpfs) and none is hidden by what the runtime mounts;
 4. detach /oldroot, pivot_root(".", ".") into /newroot and detach the old root stacked
    under it (crun, nsjail);
 5. masks and read-only paths after the pivot, each bind verified (CVE-2025-31133 raced
    the bind of /dev/null over masked paths).
See docs/mounts.md.
"""
import os

from . import sys as k
from .errors import SetupError, UsageError

BASE = "/tmp"
NEW = "/newroot"
OLD = "/oldroot"
MASK_SOURCE = "/.mask"  # on the scratch, beside NEW and OLD
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
MOUNT_ATTR_NOEXEC = 0x8


PTY_MAX_DEFAULT = 64
IRQ_COUNTER_PATHS = ("/proc/softirqs", "/proc/irq")
MOUNT_KINDS = ("ro-bind", "bind", "tmpfs")


def _split_bind(spec):
    src, sep, dst = spec.partition(":")
    return src, (dst if sep else src)


# The profile's ordered mount entry (kind, source, target, options, origin).
from .profile.schema import MountEntry  # noqa: E402


class Mount:
    """One user mount, validated: `index` is its place in MountPlan.binds (bind kinds)."""

    __slots__ = ("kind", "source", "target", "writable", "is_dir", "options", "index", "parent", "label")

    def __init__(self, kind, source, target, writable, is_dir, options, label):
        self.kind, self.source, self.target, self.writable = kind, source, target, writable
        self.is_dir, self.options, self.label = is_dir, options, label
        self.index = self.parent = None


class MountPlan:
    __slots__ = ("rootfs", "overlay", "binds", "tmpfs", "mounts", "etc", "tmp_size", "proc", "sys", "masked",
                 "readonly", "readonly_root", "hostname", "passwd", "uid", "gid", "base_tmp", "base_etc",
                 "root_links", "pty_max", "proc_stat", "bind_host_root", "bind_idmap")

    def __init__(self, **kw):
        for key in self.__slots__:
            setattr(self, key, kw[key])


def _target(path, what, spec):
    """A mount destination inside the sandbox: absolute, normalized (a leading // would
    survive normpath), and never /, /proc or /dev, which the runtime itself builds."""
    if not isinstance(path, str) or not path.startswith("/") or ".." in path.split("/"):
        raise UsageError("%s must be an absolute path without '..': %r" % (what, spec))
    path = os.path.normpath("/" + path.lstrip("/"))
    if path in ("/", "/proc", "/dev") or path.startswith(("/proc/", "/dev/")):
        raise UsageError("refusing to mount over %s (the runtime builds it)" % path)
    return path


def _depth(entry):
    target = entry.target if isinstance(entry.target, str) else ""
    return target.rstrip("/").count("/")


def _legacy_entries(ro_binds, binds, tmpfs):
    """Separate lists say nothing about the order between them: outer targets go first,
    so --tmpfs /data with --ro-bind X:/data/in works whatever order the lists came in."""
    entries = [MountEntry("ro-bind", *_split_bind(s), origin="API") for s in ro_binds] + \
              [MountEntry("bind", *_split_bind(s), origin="API") for s in binds] + \
              [MountEntry("tmpfs", None, t, origin="API") for t in tmpfs]
    return sorted(entries, key=_depth)


def _profile_entries(fs, rootfs):
    """The profile's ordered mounts (`fs.mounts`: the profile files' in the order given, then
    the command line's). An image given as rootfs brings its own /usr, so the profile's host
    binds stay out of it; only mounts asked for with this run go in."""
    entries = list(fs.mounts)
    if rootfs:
        # Each entry knows where it came from: a profile file's binds compose a host root and
        # stay out of an image; the command line's (and the API's) go in.
        entries = [e for e in entries if e.kind == "tmpfs" or not _from_profile_file(e)]
    return entries


def _from_profile_file(entry):
    origin = getattr(entry, "origin", None)
    if origin is None:
        return True
    return origin.endswith(".toml") or os.path.isabs(origin)


def _label(entry):
    if entry.kind == "tmpfs":
        return "--tmpfs %s" % entry.target
    return "--%s %s:%s" % (entry.kind, entry.source, entry.target)


def _validate(entries, rootfs):
    """Validate each entry, then the order: a later mount may sit inside an earlier one, never
    on or above it (that would hide it silently)."""
    mounts = []
    seen = set()
    for entry in entries:
        kind = entry.kind
        if kind not in MOUNT_KINDS:
            raise UsageError("unknown mount kind %r (one of %s)" % (kind, ", ".join(MOUNT_KINDS)))
        options = dict(getattr(entry, "options", None) or {})
        label = _label(entry)
        if kind == "tmpfs":
            target = _target(entry.target, "tmpfs destination", entry.target)
            key = (kind, None, target, tuple(sorted(options.items())))
            mount = Mount(kind, None, target, True, True, options, label)
        else:
            src = entry.source
            if not src:
                raise UsageError("empty bind source in %r" % ("%s:%s" % (src or "", entry.target)))
            target = _target(entry.target, "bind destination", "%s:%s" % (src, entry.target))
            # The host path is resolved here, with the caller's view and rights; the sandbox
            # then binds what it named, not what a symlink might point at later.
            src = os.path.realpath(src)
            if not os.path.exists(src):
                raise SetupError("bind", 2, "bind source %s does not exist" % src)
            key = (kind, src, target, tuple(sorted(options.items())))
            mount = Mount(kind, src, target, kind == "bind", os.path.isdir(src), options, label)
        if key in seen:
            continue  # the same mount twice (a profile and its caller both ask): one is enough
        seen.add(key)
        for earlier in mounts:
            if earlier.target == target or earlier.target.startswith(target + "/"):
                raise UsageError("%s would hide the earlier mount %s (a later mount may sit inside an earlier "
                                 "one, never on or above it): put the outer mount first or drop one"
                                 % (label, earlier.label))
            if target.startswith(earlier.target + "/"):
                mount.parent = earlier  # the latest container is the innermost
        if mount.parent is not None and mount.parent.kind != "tmpfs":
            _check_mount_point_in_bind(mount)
        elif mount.parent is None and not rootfs:
            first = "/" + target.split("/")[1]
            if first != target and first[1:] in ROOT_LINKS and os.path.islink(first):
                raise UsageError("%s: %s is a symlink to %s in the sandbox (as on the host); mount at the path "
                                 "it points to" % (label, first, os.readlink(first)))
        mounts.append(mount)
    return mounts


def _check_mount_point_in_bind(mount):
    """A mount inside a bind needs its mount point to exist in the bind's source: the runtime
    never creates directories on the host (and a read-only bind could not take one)."""
    parent = mount.parent
    inner = os.path.join(parent.source, os.path.relpath(mount.target, parent.target))
    if not os.path.lexists(inner):
        raise UsageError("%s: its mount point %s does not exist in %s (the earlier mount %s); create it on "
                         "the host or mount a --tmpfs there first" % (mount.label, mount.target, inner, parent.label))
    if os.path.realpath(inner) != os.path.normpath(inner):
        raise UsageError("%s: %s passes through a symlink on the host; refusing to mount through it"
                         % (mount.label, inner))
    if os.path.isdir(inner) != mount.is_dir:
        raise UsageError("%s: %s is %s but the source is %s" % (
            mount.label, inner, "a directory" if os.path.isdir(inner) else "a file",
            "a directory" if mount.is_dir else "a file"))


def plan(fs, ro_binds=(), binds=(), tmpfs=(), rootfs=None, overlay=None, hostname="sandbox", uid=0, gid=0):
    """Validate and freeze the mount operations for one sandbox (parent, before fork).

    Mounts come in the order given: the profile's (`fs.mounts`, or its legacy lists), then
    the `Sandbox(ro_binds=, binds=, tmpfs=)` ones."""
    rootfs = fs.rootfs if rootfs is None else rootfs
    overlay = fs.overlay if overlay is None else overlay
    entries = _profile_entries(fs, rootfs) + _legacy_entries(ro_binds, binds, tmpfs)
    mounts = _validate(entries, rootfs)
    bind_list = []
    for mount in mounts:
        if mount.kind != "tmpfs":
            mount.index = len(bind_list)
            bind_list.append((mount.source, mount.target, mount.writable, mount.is_dir))
    if rootfs:
        rootfs = os.path.realpath(rootfs)
        if not os.path.isdir(rootfs):
            raise SetupError("rootfs", 20, "%s is not a directory" % rootfs)
    targets = {m.target for m in mounts}
    etc = []
    if not rootfs and "/etc" not in targets:
        for name in fs.etc:
            path = os.path.join("/etc", name)
            if os.path.lexists(path) and os.path.join("/etc", name) not in targets:
                etc.append((name, os.path.islink(path), os.path.isdir(path)))
    passwd = "root:x:0:0:root:/root:/bin/sh\n" + (
        "sandbox:x:%d:%d:sandbox:/tmp:/bin/sh\n" % (uid, gid) if uid else "") + \
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    masked = tuple(fs.masked_paths)
    # The intr line of /proc/stat carries the per-IRQ counters /proc/interrupts has: where
    # that file is masked, the line is zeroed too (profile key filesystem.proc_stat).
    proc_stat = getattr(fs, "proc_stat", None) or ("sanitized" if "/proc/interrupts" in masked else "live")
    if proc_stat == "sanitized":
        # The same class of counters elsewhere in procfs: per-CPU softirq counts, and each
        # IRQ's /proc/irq/N/spurious count.
        masked += tuple(path for path in IRQ_COUNTER_PATHS if path not in masked)
    pty_max = getattr(fs, "pty_max", None) or PTY_MAX_DEFAULT
    return MountPlan(rootfs=rootfs or "", overlay=overlay, binds=tuple(bind_list),
                     tmpfs=tuple(m.target for m in mounts if m.kind == "tmpfs"), mounts=tuple(mounts),
                     etc=tuple(etc), tmp_size=fs.tmp_size, proc=fs.proc, sys=fs.sys, masked=masked,
                     readonly=fs.readonly_paths, readonly_root=fs.readonly_root and not overlay,
                     hostname=hostname, passwd=passwd, uid=uid, gid=gid,
                     base_tmp="/tmp" not in targets, base_etc="/etc" not in targets,
                     root_links=tuple(n for n in ROOT_LINKS if "/" + n not in targets),
                     pty_max=int(pty_max), proc_stat=proc_stat,
                     bind_host_root=bool(getattr(fs, "bind_host_root", False)),
                     bind_idmap=bool(getattr(fs, "bind_idmap", True)))


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


def _write_file(path, text, mode=0o644, flags=os.O_CREAT | os.O_TRUNC):
    fd = os.open(path, os.O_WRONLY | flags | os.O_CLOEXEC, mode)
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
                raise SetupError("mount-target", 40, "%s: there is a symlink at /%s; refusing to mount "
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
MOUNT_ATTR_IDMAP = 0x100000
SETID_BITS = 0o6000


def _host_id(lines, inside):
    for first, host, count in lines:
        if first <= inside < first + count:
            return host + inside - first
    return None


def _fstype(path):
    """The filesystem type under `path` (for messages): the longest mount point in mountinfo."""
    best, fstype = "", "?"
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                point = fields[4].replace("\\040", " ")
                kind = fields[fields.index("-") + 1]
                if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
                    best, fstype = point, kind
    except (OSError, ValueError, IndexError):
        pass
    return fstype


def _bind_owner(mount, mp):
    """Whom a writable bind's files belong to on the host: (uid, gid) of its source's owner,
    or None to bind it without an idmap. Host root only when asked (bind_host_root)."""
    st = os.stat(mount.source)
    uid, gid = st.st_uid, st.st_gid
    host_root = mp.bind_host_root or bool(mount.options.get("host_root"))
    if uid == 0 and not host_root:
        if st.st_mode & 0o002:
            # World-writable (a 1777 drop directory): bound as is, the sandbox writes there as
            # its own unprivileged host id, as any host user could.
            return None
        raise SetupError("bind", 13, "%s: the bind source %s is owned by host root, and an idmapped bind would "
                         "write root-owned files on the host; chown it to the user who should own what the "
                         "sandbox writes, or set filesystem.bind_host_root = true" % (mount.label, mount.source))
    if gid == 0 and not host_root:
        # Never a root group (a set-gid file of gid 0 would be a host-root group grant):
        # the owner's own group instead.
        import pwd
        try:
            gid = pwd.getpwuid(uid).pw_gid
        except KeyError:
            gid = 0
        gid = gid or 65534
    return uid, gid


def _idmap_userns(uid_lines, gid_lines):
    """A user namespace that exists only to carry an idmapping (mount_setattr(2) takes the
    mapping from a user namespace fd): a child unshares it, we write its maps as host root,
    keep a descriptor of it and let the child go. The namespace lives as long as the fd and
    the idmapped mounts that reference it."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = k.clone_process(k.CLONE_NEWUSER)
    if pid == 0:
        try:
            os.close(w)
            os.read(r, 1)
        finally:
            os._exit(0)
    os.close(r)
    try:
        for name, lines in (("gid_map", gid_lines), ("uid_map", uid_lines)):
            fd = os.open("/proc/%d/%s" % (pid, name), os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, "".join("%d %d %d\n" % line for line in lines).encode())
            finally:
                os.close(fd)
        return os.open("/proc/%d/ns/user" % pid, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise SetupError("bind-idmap", e.errno, "user namespace for an idmapped bind: %s" % e.strerror) from None
    finally:
        os.close(w)
        os.waitpid(pid, 0)


def _check_rootless_writable(mp, idmap):
    """Rootless, a bind cannot be idmapped (the kernel wants CAP_SYS_ADMIN over the source's
    filesystem, i.e. host root): the sandbox writes as the host id its inside uid maps to.
    That is the caller for inside root; a --uid mapped onto a subordinate id can write only
    where the directory's mode lets others write: say so before start."""
    host = _host_id(idmap.uid_lines, mp.uid) if idmap is not None else os.geteuid()
    if host is None or host == os.geteuid():
        return
    for mount in mp.mounts:
        if mount.kind != "bind" or not mount.is_dir:
            continue
        st = os.stat(mount.source)
        if not st.st_mode & 0o002:
            raise SetupError("bind", 13, "%s: the sandbox's uid %d is host uid %d here (a subordinate id), which "
                             "cannot write %s (owner %d, mode %o); rootless binds write as the caller only: use "
                             "--uid 0, or idmap.subuid = false to map the caller onto uid %d"
                             % (mount.label, mp.uid, host, mount.source, st.st_uid, st.st_mode & 0o7777, mp.uid))


def open_sources(mp, idmap=None):
    """Parent half, per run: detached copies (open_tree) of the rootfs and every bind source.

    A path bind in the child would resolve the source with the sandbox's remapped ids,
    which cannot traverse a directory private to the caller (and would follow a symlink
    swapped in after validation). As host root the supervisor clones the source trees
    itself, with its own rights, and sets nosuid, nodev (and read-only where asked) on the
    detached copy; the child attaches them with move_mount. Rootless, the sandbox's root is the caller,
    so the child binds by path (returns None).

    Writable binds (host root, with `idmap` the sandbox's IdMap) are idmapped: the kernel's
    rule (mount_setattr(2)) is that only a detached mount not yet attached anywhere can take
    an idmapping, set by a process with CAP_SYS_ADMIN over the source's filesystem; so it is
    done here, on the host side, before the child's mount namespace exists. The idmapping
    maps the source's owner onto the host id the sandbox's uid runs as: what the sandbox
    writes lands on disk owned by that owner, and it can write where the owner can."""
    if os.geteuid() != 0:
        _check_rootless_writable(mp, idmap)
        return None
    import ctypes
    fds = []
    namespaces = {}
    try:
        # The rootfs stays writable here: the child creates missing mount points in it first
        # and turns it read-only itself.
        entries = ([(mp.rootfs, True, None)] if mp.rootfs else []) + \
            [(m.source, m.writable, m) for m in mp.mounts if m.kind != "tmpfs"]
        for path, writable, mount in entries:
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
            if mount is None or not mount.writable or idmap is None or not mp.bind_idmap \
                    or not mount.options.get("idmap", True):
                continue
            owner = _bind_owner(mount, mp)
            inside = (_host_id(idmap.uid_lines, mp.uid), _host_id(idmap.gid_lines, mp.gid))
            if owner is None or None in inside or owner == inside:
                continue
            key = (owner, inside)
            if key not in namespaces:
                namespaces[key] = _idmap_userns(((owner[0], inside[0], 1),), ((owner[1], inside[1], 1),))
            attr = (ctypes.c_uint64 * 4)(MOUNT_ATTR_IDMAP, 0, 0, namespaces[key])
            if k._syscall(SYS_mount_setattr, fd, b"", AT_EMPTY_PATH | AT_RECURSIVE, ctypes.byref(attr), 32):
                err = ctypes.get_errno()
                raise SetupError("bind-idmap", err, "%s: %s (%s) cannot be idmapped: %s. Idmapped mounts need "
                                 "kernel 5.12+ and a filesystem that supports them (ext4, xfs, btrfs, tmpfs 6.3+, "
                                 "overlayfs 5.19+; not nfs, and not a tree with such a submount): bind a directory "
                                 "from such a filesystem, or set filesystem.bind_idmap = false to bind it as is "
                                 "(the sandbox then writes as host uid %d where the mode lets it)"
                                 % (mount.label, path, _fstype(path), os.strerror(err), inside[0]))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    finally:
        for fd in namespaces.values():
            os.close(fd)
    return fds


def _attach(fd, target, is_dir):
    _mount_point(target, is_dir)
    if k._syscall(SYS_move_mount, fd, b"", AT_FDCWD, target.encode(), MOVE_MOUNT_F_EMPTY_PATH) != 0:
        import ctypes
        err = ctypes.get_errno()
        raise SetupError("bind", err, "%s: %s" % (target, os.strerror(err)))


def build(mp, source_fds, keep_user_sysctls=False):
    """Child half: compose the root and pivot into it. Runs as the sandbox's PID 1.

    The sequence is `operations(...)`, the one description of it; this runs it here, and
    the compiled child (sandbox/stager.c) runs the same list. Returns the descriptor its
    `keep_dir` opened (keep_user_sysctls), else None."""
    return execute(operations(mp, source_fds is not None, keep_user_sysctls), source_fds)


def operations(mp, have_sources, keep_user_sysctls=False):
    """The mount stage as a list of operations (tuples, see `execute`), in the kernel's
    order (module docstring). The host's layout (which of /usr's siblings are links, the
    links in /etc) is read while the list is made: in the child before its first pivot, or
    in the supervisor compiling the program ahead (sandbox/stager.py); both see the host's /.

    keep_user_sysctls: keep /proc/sys/user of the sandbox's fresh /proc open for the
    user-limits stage (sandbox/user_limits.py), before any mask makes /proc/sys read-only;
    without a fresh /proc, the inherited one's, right after the first pivot."""
    host = ""
    # Without an image the new root is a directory of the scratch tmpfs made a mount point
    # by binding it onto itself (pivot_root wants a mount point), as bubblewrap's is: one
    # superblock fewer per run than a tmpfs of its own, whose creation and teardown (with
    # the memory cgroup's shrinker reparenting) every run paid. Hence the scratch's size is
    # the root's; what else the scratch holds (/oldroot's mount point, the /proc/stat copy)
    # is outside the new root, and the scratch's own mount is detached after the pivot.
    scratch_size = "1m" if mp.rootfs else "16m"
    ops = [("mount", None, "/", None, k.MS_REC | k.MS_PRIVATE, None, "make-rprivate"),
           ("mount", "tmpfs", BASE, "tmpfs", k.MS_NOSUID | k.MS_NODEV, "mode=0755,size=" + scratch_size,
            "mount-scratch"),
           ("mkdir", BASE + NEW, 0o755, False), ("mkdir", BASE + OLD, 0o755, False),
           ("pivot", BASE, BASE + OLD), ("chdir", "/")]
    if mp.masked:
        # What every masked directory will show: an empty directory of the scratch, outside
        # the new root, taken as a detached read-only copy now (after the pivot the scratch is
        # out of reach) -- no tmpfs of its own, whose superblock each run made and tore down.
        ops.extend([("mkdir", MASK_SOURCE, 0o555, False), ("keep_mask_source", MASK_SOURCE)])
    if keep_user_sysctls and not mp.proc:
        ops.append(("keep_dir", OLD + "/proc/sys/user"))
    # With sources the rootfs is the first detached tree, the user's binds follow it.
    shift = 1 if (mp.rootfs and have_sources) else 0

    def bind(src, dst, is_dir, readonly, stage="bind"):
        ops.extend([("mount_point", dst, is_dir), ("mount", src, dst, None, k.MS_BIND | k.MS_REC, None, stage),
                    ("restrict", dst, readonly, stage)])

    # 1. the runtime's base
    if mp.rootfs:
        src = OLD + mp.rootfs
        if mp.overlay:
            if have_sources:
                ops.append(("attach", 0, "/.lower-root", True))
                src = "/.lower-root"
            ops.extend(_overlay_ops(src, NEW, "root"))
        elif have_sources:
            ops.append(("attach", 0, NEW, True))
        else:
            ops.extend([("mount", src, NEW, None, k.MS_BIND | k.MS_REC, None, "rootfs"), ("restrict", NEW, False, "rootfs")])
        # Every mount target must exist, and an image's symlinks must not steer one: until
        # the pivot, an absolute link in the image (x -> /oldroot/tmp) resolves against the
        # scratch root, i.e. onto the host. Targets are made (and checked) component by
        # component without following links, before the rootfs turns read-only; a mount
        # inside an earlier user mount gets its mount point when that mount is in place.
        targets = [("/tmp", True), ("/proc", True), ("/dev", True)] + ([("/sys", True)] if mp.sys == "ro" else []) \
            + [(m.target, m.is_dir) for m in mp.mounts if m.parent is None]
        ops.extend(("target_in_root", NEW, path, is_dir) for path, is_dir in targets)
        if mp.readonly_root and not mp.overlay:
            ops.append(("restrict", NEW, True, "rootfs-ro"))
    else:
        ops.append(("mount", NEW, NEW, None, k.MS_BIND, None, "mount-root"))
        for name in mp.root_links:
            seen = host + "/" + name
            if os.path.islink(seen):
                ops.append(("symlink", os.readlink(seen), NEW + "/" + name))
            elif os.path.isdir(seen):
                bind(OLD + "/" + name, NEW + "/" + name, True, not mp.overlay)
        if mp.base_etc:
            etc = NEW + "/etc"
            ops.append(("mkdirs", etc, 0o755))
            for name, is_link, is_dir in mp.etc:
                if is_link:
                    ops.append(("symlink", os.readlink(host + "/etc/" + name), etc + "/" + name))
                else:
                    bind(OLD + "/etc/" + name, etc + "/" + name, is_dir, True, "bind-etc")
            hostname = mp.hostname or "sandbox"
            for name, text in (("passwd", mp.passwd), ("group", "root:x:0:\nnogroup:x:65534:\n"),
                               ("hostname", hostname + "\n"),
                               ("hosts", "127.0.0.1\tlocalhost %s\n::1\tlocalhost\n" % hostname)):
                ops.append(("write", etc + "/" + name, text, os.O_CREAT | os.O_TRUNC, 0o644, "mount"))
    if mp.base_tmp:
        ops.extend([("mkdirs", NEW + "/tmp", 0o1777),
                    ("mount", "tmpfs", NEW + "/tmp", "tmpfs", k.MS_NOSUID | k.MS_NODEV,
                     "mode=1777,size=%d" % max(mp.tmp_size, 4096), "mount-tmp")])
    if mp.proc:
        ops.extend([("mkdirs", NEW + "/proc", 0o755),
                    ("mount", "proc", NEW + "/proc", "proc", k.MS_NOSUID | k.MS_NODEV | k.MS_NOEXEC, None, "mount-proc")])
        if keep_user_sysctls:
            ops.append(("keep_dir", NEW + "/proc/sys/user"))
        if mp.proc_stat == "sanitized":
            ops.append(("proc_stat", NEW + "/proc/stat", "/.proc-stat"))
    ops.extend(_dev_ops(mp.pty_max))
    if mp.sys == "ro":
        ops.extend([("mkdirs", NEW + "/sys", 0o755), ("mount_sysfs", NEW + "/sys", OLD + "/sys")])
    # 2. the user's mounts, in the order given (plan refused any that would hide an earlier one)
    for mount in mp.mounts:
        target = NEW + mount.target
        # The mount point is made (or found) component by component without following a
        # symlink: inside an earlier bind a link could otherwise steer the mount elsewhere.
        ops.append(("target_in_root", NEW, mount.target, mount.is_dir))
        if mount.kind == "tmpfs":
            options = mount.options
            data = "mode=%o,uid=%d,gid=%d" % (int(options.get("mode", 0o755)), mp.uid, mp.gid)
            if options.get("size"):
                data += ",size=%d" % int(options["size"])
            ops.append(("mount", "tmpfs", target, "tmpfs", k.MS_NOSUID | k.MS_NODEV, data, "tmpfs"))
        elif mp.overlay and not mount.writable and mount.is_dir and not mp.rootfs:
            lower = OLD + mount.source
            if have_sources:
                lower = "/.lower-%d" % mount.index
                ops.append(("attach", mount.index + shift, lower, True))
            ops.extend(_overlay_ops(lower, target, str(mount.index)))
        elif have_sources:
            ops.append(("attach", mount.index + shift, target, mount.is_dir))
        else:
            bind(OLD + mount.source, target, mount.is_dir, not mount.writable)

    ops.extend([("umount", OLD, k.MNT_DETACH, "umount-oldroot"), ("chdir", NEW), ("pivot", ".", "."),
                ("umount", ".", k.MNT_DETACH, "umount-scratch"), ("chdir", "/"),
                ("mask", tuple(mp.masked), tuple(mp.readonly))])
    if mp.readonly_root and not mp.rootfs:
        ops.append(("mount", None, "/", None, k.MS_BIND | k.MS_REMOUNT | k.MS_RDONLY | k.MS_NOSUID | k.MS_NODEV, None,
                    "remount-root-ro"))
    return ops


def _overlay_ops(lower, target, tag):
    """Copy-on-write over `lower`: the upper layer is a tmpfs, so writes never reach the host."""
    upper = "/.overlay-" + tag
    return [("mkdir", upper, 0o755, False),
            ("mount", "tmpfs", upper, "tmpfs", k.MS_NOSUID | k.MS_NODEV, "mode=0755", "overlay-upper"),
            ("mkdir", upper + "/u", 0o755, False), ("mkdir", upper + "/w", 0o755, False),
            ("mount", "overlay", target, "overlay", 0,
             "lowerdir=%s,upperdir=%s/u,workdir=%s/w,userxattr" % (lower, upper, upper), "overlay")]


def _dev_ops(pty_max=PTY_MAX_DEFAULT):
    dev = NEW + "/dev"
    ops = [("mkdirs", dev, 0o755),
           ("mount", "tmpfs", dev, "tmpfs", k.MS_NOSUID | k.MS_NOEXEC, "mode=0755,size=64k", "mount-dev")]
    for name in DEV_NODES:
        # mknod is refused in a user namespace; a bind of the host's node works, and the
        # bind keeps the host devtmpfs mount's (absent) nodev flag.
        ops.extend([("write", dev + "/" + name, "", os.O_CREAT, 0o644, "mknod"),
                    ("mount", OLD + "/dev/" + name, dev + "/" + name, None, k.MS_BIND, None, "bind-dev")])
    ops.extend([("mkdir", dev + "/pts", 0o755, False),
                ("mount", "devpts", dev + "/pts", "devpts", k.MS_NOSUID | k.MS_NOEXEC,
                 # max=: the instance's own bound. The kernel's pool (kernel.pty.max) is shared by
                 # every devpts instance but the host's (which keeps kernel.pty.reserve), so without
                 # it one sandbox could take every pty and leave the others ENOSPC.
                 "newinstance,ptmxmode=0666,mode=0620,max=%d" % pty_max, "mount-devpts"),
                ("mkdir", dev + "/shm", 0o1777, False),
                ("mount", "tmpfs", dev + "/shm", "tmpfs", k.MS_NOSUID | k.MS_NODEV | k.MS_NOEXEC, "mode=1777,size=64m",
                 "mount-shm")])
    ops.extend(("symlink", target, dev + "/" + name) for name, target in DEV_LINKS)
    ops.append(("mount", None, dev, None, k.MS_BIND | k.MS_REMOUNT | k.MS_RDONLY | k.MS_NOSUID | k.MS_NOEXEC, None,
                "remount-dev-ro"))
    return ops


def _op_mount(source_fds, src, target, fstype, flags, data, label):
    k.mount(src, target, fstype, flags, data, label)


def _op_mkdir(source_fds, path, mode, exist_ok):
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        if not exist_ok:
            raise


def _op_write(source_fds, path, text, flags, mode, label):
    try:
        _write_file(path, text, mode, flags)
    except OSError as e:
        raise SetupError(label, e.errno, "%s: %s" % (path, e.strerror)) from None


def _op_mount_sysfs(source_fds, target, host_sys):
    try:
        k.mount("sysfs", target, "sysfs", k.MS_RDONLY | k.MS_NOSUID | k.MS_NODEV | k.MS_NOEXEC, None, "mount-sys")
    except SetupError:
        # A fresh sysfs needs a network namespace of our own; with the host's network
        # only a read-only bind of the host's /sys is possible.
        _bind(host_sys, target, True, True, "mount-sys")


def _op_keep_dir(source_fds, path):
    try:
        return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise SetupError("mount", e.errno, "keep %s: %s" % (path, e.strerror)) from None


def _op_keep_mask_source(source_fds, path):
    """A detached copy of the empty directory `path`, read-only, nosuid, nodev, noexec: the
    mount every masked directory will show (open_tree clones a mount of our own namespace;
    mount_setattr may change a detached one)."""
    import ctypes
    fd = k._syscall(SYS_open_tree, AT_FDCWD, path.encode(), OPEN_TREE_CLONE | os.O_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        raise SetupError("mask", err, "open_tree %s: %s" % (path, os.strerror(err)))
    attr = (ctypes.c_uint64 * 4)(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, 0, 0, 0)
    if k._syscall(SYS_mount_setattr, fd, b"", AT_EMPTY_PATH, ctypes.byref(attr), 32):
        err = ctypes.get_errno()
        os.close(fd)
        raise SetupError("mask", err, "mount_setattr %s: %s" % (path, os.strerror(err)))
    return fd


# What each operation of `operations` means here (sandbox/stager.c has the same meanings)
_EXECUTORS = {
    "mount": _op_mount,
    "mkdir": _op_mkdir,
    "mkdirs": lambda fds, path, mode: _mkdirs(path, mode),
    "mount_point": lambda fds, path, is_dir: _mount_point(path, is_dir),
    "restrict": lambda fds, path, readonly, label: restrict(path, readonly, label),
    "symlink": lambda fds, target, path: os.symlink(target, path),
    "pivot": lambda fds, new, old: k.pivot_root(new, old),
    "chdir": lambda fds, path: os.chdir(path),
    "umount": lambda fds, path, flags, label: k.umount2(path, flags, label),
    "attach": lambda fds, index, target, is_dir: _attach(fds[index], target, is_dir),
    "target_in_root": lambda fds, root, path, is_dir: _make_target_in_root(root, path, is_dir),
    "proc_stat": lambda fds, path, copy: _sanitize_proc_stat(path, copy),
    "mask": lambda fds, masked, readonly: _mask(masked, readonly),
    "write": _op_write,
    "mount_sysfs": _op_mount_sysfs,
    "keep_dir": _op_keep_dir,
    "keep_mask_source": _op_keep_mask_source,
}


def execute(ops, source_fds):
    """Run mount operations here (the Python child); returns what `keep_dir` opened, or None."""
    kept = mask_source = None
    for op in ops:
        if op[0] == "mask":
            mask_source, source = None, mask_source
            _mask(op[1], op[2], source)
            continue
        run = _EXECUTORS.get(op[0])
        if run is None:
            raise SetupError("mount", 22, "unknown mount operation %r" % op[0])
        result = run(source_fds, *op[1:])
        if op[0] == "keep_dir":
            kept = result
        elif op[0] == "keep_mask_source":
            mask_source = result
    return kept


def _sanitize_proc_stat(path, copy="/.proc-stat"):
    """Bind a copy of /proc/stat with the per-IRQ (intr) and softirq counters zeroed over it.

    The copy is written to the scratch tmpfs, which is detached after the pivot: the bind
    keeps its file alive and nothing else can reach it. It is a snapshot taken at start
    (cpu lines included: programs such as top see no CPU time pass); the number of fields is
    kept so parsers do not break."""
    from .native import read_whole
    lines = []
    for line in read_whole(path).decode("ascii", "replace").split("\n"):
        name, _, rest = line.partition(" ")
        if name in ("intr", "softirq"):
            line = name + " " + " ".join("0" for _ in rest.split())
        lines.append(line)
    _write_file(copy, "\n".join(lines), 0o444)
    k.mount(copy, path, None, k.MS_BIND, None, "proc-stat")
    k.mount(None, path, None, k.MS_BIND | k.MS_REMOUNT | k.MS_RDONLY | k.MS_NOSUID | k.MS_NODEV | k.MS_NOEXEC,
            None, "proc-stat")


def _mask(masked, readonly, mask_source=None):
    import stat
    # Every masked directory shows one empty read-only directory: the scratch's, kept by
    # keep_mask_source (a tmpfs only where none was kept), moved over the first and bound
    # over the others. A superblock per mask cost its creation and, at the sandbox's end, a
    # teardown with the memory cgroup's shrinker reparenting; a bind is as empty and as
    # unwritable.
    empty_fd = None
    masked_dirs = set()  # their read-only bind would be a mount more and nothing else
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
            if stat.S_ISDIR(st.st_mode) and empty_fd is not None:
                k.mount("/proc/self/fd/%d" % empty_fd, path, None, k.MS_BIND, None, "mask")
                check, empty = os.stat(path), os.fstat(empty_fd)
                if (check.st_dev, check.st_ino) != (empty.st_dev, empty.st_ino) \
                        or not os.statvfs(path).f_flag & os.ST_RDONLY:
                    raise SetupError("mask", 0, "%s is not masked by the empty directory after the bind" % path)
            elif stat.S_ISDIR(st.st_mode):
                if mask_source is not None:
                    if k._syscall(SYS_move_mount, mask_source, b"", AT_FDCWD, path.encode(),
                                  MOVE_MOUNT_F_EMPTY_PATH) != 0:
                        import ctypes
                        err = ctypes.get_errno()
                        raise SetupError("mask", err, "%s: %s" % (path, os.strerror(err)))
                else:
                    k.mount("tmpfs", path, "tmpfs", k.MS_RDONLY | k.MS_NOSUID | k.MS_NODEV | k.MS_NOEXEC,
                            "size=0,mode=0555", "mask")
                empty_fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
                if os.listdir("/proc/self/fd/%d" % empty_fd) or not os.statvfs(path).f_flag & os.ST_RDONLY:
                    raise SetupError("mask", 0, "%s is not an empty read-only directory after the mask" % path)
            if stat.S_ISDIR(st.st_mode):
                masked_dirs.add(path)
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
        for fd in (empty_fd, mask_source):  # the source's descriptor outlives its move_mount
            if fd is not None:
                os.close(fd)
    for path in readonly:
        if not os.path.exists(path) or path in masked_dirs:
            continue
        k.mount(path, path, None, k.MS_BIND | k.MS_REC, None, "readonly-path")
        make_readonly(path, "readonly-path")
