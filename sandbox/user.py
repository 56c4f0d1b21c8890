"""User namespace: which host ids the sandbox's ids map onto (parent half), and
taking on the inside ids (child half).

The kernel's rules (user_namespaces(7)):
- uid_map/gid_map are written once, by a process in the parent user namespace.
- Without CAP_SETUID/CAP_SETGID in the parent namespace, a process may map only its
  own euid/egid, one id each, and must first write "deny" to setgroups (otherwise an
  unprivileged user could drop a group that denies it access).
- Multi-id maps from an unprivileged user go through the setuid helpers
  newuidmap/newgidmap, which check /etc/subuid and /etc/subgid.
Nothing here ever maps onto host id 0.
"""
import os

from . import native
from .errors import SetupError


class IdMap:
    """The maps to write for one sandbox."""

    __slots__ = ("uid_lines", "gid_lines", "method", "inside_uid", "inside_gid", "deny_setgroups", "host_uid",
                 "pool", "slot")

    def __init__(self, uid_lines, gid_lines, method, inside_uid, inside_gid, deny_setgroups, host_uid,
                 pool=None, slot=None):
        self.uid_lines, self.gid_lines, self.method = uid_lines, gid_lines, method
        self.inside_uid, self.inside_gid = inside_uid, inside_gid
        self.deny_setgroups, self.host_uid = deny_setgroups, host_uid
        # pool: (first host id, ids per range, ranges) when each run takes a range of its
        # own (host root); slot: the range this run holds (IdMap.on_slot)
        self.pool, self.slot = pool, slot

    def describe(self):
        out = {"method": self.method, "uid_map": [list(l) for l in self.uid_lines],
               "gid_map": [list(l) for l in self.gid_lines]}
        if self.slot is not None:
            out["slot"] = self.slot
        return out

    def on_slot(self, slot):
        """The same map moved onto range `slot` of the pool: host ids base + slot x size."""
        base, size, _ = self.pool
        first = base + slot * size
        return IdMap(((0, first, size),), ((0, first, size),), self.method, self.inside_uid, self.inside_gid,
                     self.deny_setgroups, first, self.pool, slot)


def _subid_range(path, names):
    try:
        with open(path) as f:
            for line in f:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[0] in names:
                    start, count = int(parts[1]), int(parts[2])
                    if start > 0 and count > 0:
                        return start, count
    except (OSError, ValueError):
        pass
    return None


def plan(idmap, inside_uid, inside_gid):
    """Decide the maps before fork. `idmap` is the profile's [idmap] section."""
    euid, egid = os.geteuid(), os.getegid()
    size = idmap.size
    if euid == 0:
        base = idmap.root_host_base
        if base <= 0 or base + size > 0xFFFFFFFF:
            raise SetupError("idmap", 0, "root_host_base %d + size %d is not a valid host range" % (base, size))
        pool = (base, size, idmap.pool_size) if idmap.pool_size else None
        if pool and base + idmap.pool_size * size > 0xFFFFFFFF:
            raise SetupError("idmap", 0, "root_host_base %d + pool_size %d x size %d is not a valid host range"
                             % (base, idmap.pool_size, size))
        return IdMap(((0, base, size),), ((0, base, size),), "write", inside_uid, inside_gid, False, base, pool)
    import shutil
    if idmap.subuid and shutil.which("newuidmap") and shutil.which("newgidmap"):
        import pwd
        try:
            name = pwd.getpwuid(euid).pw_name
        except KeyError:
            name = str(euid)
        uids = _subid_range("/etc/subuid", (name, str(euid)))
        gids = _subid_range("/etc/subgid", (name, str(euid)))
        if uids and gids:
            # Inside root is the caller; inside ids 1.. come from the subordinate range.
            ucount, gcount = min(uids[1], size - 1), min(gids[1], size - 1)
            return IdMap(((0, euid, 1), (1, uids[0], ucount)), ((0, egid, 1), (1, gids[0], gcount)),
                         "newuidmap", inside_uid, inside_gid, False, euid)
    # One id each way: the caller becomes `inside_uid` inside.
    return IdMap(((inside_uid, euid, 1),), ((inside_gid, egid, 1),), "single", inside_uid, inside_gid, True, euid)


# ---- the pool of host id ranges (host root) -------------------------------------------
# Every running sandbox of host root maps its ids onto a range of its own, so that no host
# process running as one sandbox's ids can signal, ptrace or own files of another's (the
# way `podman --userns=auto` allocates). Range k is held by flock on its lock file
# /run/pysandbox/idpool/<k>.lock (PYSANDBOX_IDPOOL_DIR elsewhere) for the sandbox's whole
# life: concurrent starts never get the same one (flock is per open file, so two threads of
# one supervisor exclude each other too), and a supervisor that dies, however it dies, releases its range with its last
# descriptor. PID 1 dies with its supervisor (PR_SET_PDEATHSIG), and with it the sandbox,
# so a released range has no process left running as its ids. The lock files stay: they
# are the pool (at most pool_size empty files), never a sandbox's state.

class Lease:
    """One range of the pool held by this process: `idmap` is the run's map; release()
    gives the range back (closing the lock's descriptor)."""

    __slots__ = ("idmap", "fd")

    def __init__(self, idmap, fd):
        self.idmap, self.fd = idmap, fd

    def release(self):
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)


POOL_DIR = "/run/pysandbox/idpool"


def _open_pool_dir():
    """A descriptor on the pool's directory (PYSANDBOX_IDPOOL_DIR, else /run/pysandbox/idpool),
    made private (0700) when missing, in a parent only we may write. Its own place, not the
    registry's state directory: that one may be redirected (PYSANDBOX_STATE_DIR) to a directory
    the registry refuses, and a pool in a directory anyone else can write could have a lock
    file swapped under a holder, giving two sandboxes one range."""
    path = os.environ.get("PYSANDBOX_IDPOOL_DIR") or POOL_DIR
    parent, name = os.path.split(os.path.abspath(path))
    try:
        try:
            os.mkdir(parent, 0o700)
        except FileExistsError:
            pass
        above = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            st = os.fstat(above)
            if st.st_uid != os.geteuid() or st.st_mode & 0o022:
                raise SetupError("id-range", 1, "%s may be written by others than uid %d; refusing to keep the id "
                                 "pool's locks there" % (parent, os.geteuid()))
            try:
                os.mkdir(name, 0o700, dir_fd=above)
            except FileExistsError:
                pass
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=above)
        finally:
            os.close(above)
    except OSError as e:
        raise SetupError("id-range", e.errno, "%s: %s" % (path, e.strerror)) from None
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        os.close(fd)
        raise SetupError("id-range", 1, "%s is not private to uid %d; refusing to use it" % (path, os.geteuid()))
    return fd, path


# The pool's directory, opened once per process: {(pid, euid, path): (fd, dev, ino)}. Each
# lease checks the path still names that directory (one stat instead of the seven calls of
# opening it safely): locks in a directory replaced meanwhile would exclude nobody.
_pool_dirs = {}


def _pool_dir():
    path = os.environ.get("PYSANDBOX_IDPOOL_DIR") or POOL_DIR
    key = (os.getpid(), os.geteuid(), path)
    cached = _pool_dirs.get(key)
    if cached is not None:
        fd, dev, ino = cached
        try:
            st = os.stat(path, follow_symlinks=False)
            if (st.st_dev, st.st_ino) == (dev, ino):
                return fd, path
        except OSError:
            pass
        _pool_dirs.pop(key, None)
        os.close(fd)
    fd, where = _open_pool_dir()
    st = os.fstat(fd)
    for old in [k for k in _pool_dirs if k[0] != key[0]]:
        os.close(_pool_dirs.pop(old)[0])  # a forked parent's entry: this process's copy of its fd
    _pool_dirs[key] = (fd, st.st_dev, st.st_ino)
    return fd, where


def lease(idmap):
    """The run's IdMap: `idmap` itself when it has no pool (rootless, or a pinned
    root_host_base), else the first free range of the pool, held until release()."""
    if idmap is None or idmap.pool is None:
        return Lease(idmap, None)
    import fcntl
    directory, where = _pool_dir()
    return _take_free_slot(idmap, directory, where, fcntl)


# Where this process's next probe starts: a fresh process takes the lowest free range; one
# that runs many sandboxes (Sandbox.start in a loop, a density benchmark) goes round the pool
# from the range after the last it took, instead of probing every range it already holds
# (each probe is an open and a flock: ~25 us, 26 ms a start with 1000 held). Threads racing
# on it only probe more: the flock decides.
_next_probe = [0]


def _take_free_slot(idmap, directory, where, fcntl):
    base, size, count = idmap.pool
    first = _next_probe[0] % count
    for step in range(count):
        slot = (first + step) % count
        path = "%s/%d.lock" % (where, slot)
        try:
            fd = os.open("%d.lock" % slot, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600,
                         dir_fd=directory)
        except OSError as e:
            raise SetupError("id-range", e.errno, "open %s: %s" % (path, e.strerror)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        except OSError as e:
            os.close(fd)
            raise SetupError("id-range", e.errno, "flock %s: %s" % (path, e.strerror)) from None
        _next_probe[0] = slot + 1
        return Lease(idmap.on_slot(slot), fd)
    raise SetupError("id-range", 11, "all %d ranges of the host id pool are held by running sandboxes "
                     "(idmap.pool_size = %d, %d ids each from host id %d on): wait for one to end or raise "
                     "idmap.pool_size" % (count, count, size, base))


def _write(path, text, stage):
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise SetupError(stage, e.errno) from None


def check_maps(idmap):
    """No line may map onto host id 0 (checked before anyone writes the maps)."""
    for lines in (idmap.uid_lines, idmap.gid_lines):
        for inside, host, count in lines:
            if host == 0 or (host <= 0 < host + count):
                raise SetupError("uid_map", 0, "refusing to map onto host id 0")


def write_maps(pid, idmap):
    """Parent half: write the child's maps (gid before uid: once uid_map is written
    the child is no longer ours to write for when we are unprivileged)."""
    check_maps(idmap)
    proc = "/proc/%d/" % pid
    if idmap.method == "newuidmap":
        import subprocess
        for tool, lines in (("newgidmap", idmap.gid_lines), ("newuidmap", idmap.uid_lines)):
            args = [tool, str(pid)] + [str(v) for line in lines for v in line]
            done = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)
            if done.returncode != 0:
                raise SetupError(tool.replace("new", "").replace("map", "_map"), 0,
                                 "%s failed: %s" % (tool, done.stderr.decode(errors="replace").strip()))
        return
    if idmap.deny_setgroups:
        _write(proc + "setgroups", "deny", "setgroups")
    _write(proc + "gid_map", "".join("%d %d %d\n" % l for l in idmap.gid_lines), "gid_map")
    _write(proc + "uid_map", "".join("%d %d %d\n" % l for l in idmap.uid_lines), "uid_map")


def enter(idmap):
    """Child half, in PID 1 right after the maps are written: take on mapped ids.

    The cloned child keeps the caller's host credentials; when the caller is host root,
    host uid 0 is unmapped in the new namespace, and creating any file fails with
    EOVERFLOW until the process switches to an id that is mapped (inside 0). The switch
    keeps the namespace's full capability set: it moves onto the namespace's own root.
    Supplementary groups inherited from the caller are host groups (root's gid 0 among
    them) and would still grant access to host files: they are dropped wherever the
    kernel lets us (not when setgroups is denied)."""
    if not idmap.deny_setgroups:
        try:
            native.setgroups([])
        except OSError as e:
            raise SetupError("setgroups", e.errno) from None
    uid = idmap.inside_uid if idmap.method == "single" else 0
    gid = idmap.inside_gid if idmap.method == "single" else 0
    try:
        native.setresgid(gid)
        native.setresuid(uid)
    except OSError as e:
        raise SetupError("setresuid", e.errno) from None


def keep_caps_across_setuid():
    """SECBIT_KEEP_CAPS: setresuid() from 0 to another uid then keeps the permitted set
    (the kernel still empties effective; caps.apply raises it again). execve clears it."""
    native.prctl(native.PR_SET_KEEPCAPS, 1, stage="keepcaps")


def parent(idmap, pid):
    """The supervisor's half (stage "idmap"): write the maps of child `pid`."""
    write_maps(pid, idmap)


def become(idmap, keep_caps):
    """Child half, in the command process: the final inside ids."""
    if keep_caps and idmap.inside_uid != 0:
        keep_caps_across_setuid()
    try:
        native.setresgid(idmap.inside_gid)
        native.setresuid(idmap.inside_uid)
    except OSError as e:
        raise SetupError("setresuid", e.errno) from None
