"""What cgroup.py and the layouts (cgroup_v1.py, cgroup_v2.py) all use: the parent's name,
the mount detection, small file helpers, the leaf and parent locks, teardown helpers.

cgroup.py is the entry point (create, gc, delegate) and imports the layouts; the layouts
import only this module, so the dependencies run one way (no import cycle). Tests that
move the sandboxes' parent or pretend another set of v1 hierarchies patch this module
(cgroup_fs.PARENT, cgroup_fs.v1_hierarchies): every lookup goes through it.

On the run path: it imports nothing beyond os at import time (fcntl and time lazily).
"""
import os

from .errors import SetupError

PARENT = "pysandbox"
DELEGATION_HINT_V2 = ("rootless without cgroup delegation: run under "
                      "`systemd-run --user --scope -p Delegate=yes` or set limits.required = false")
DELEGATION_HINT_V1 = ("no cgroups are delegated to this user: as root, run `pysandbox delegate %s`, "
                      "or set limits.required = false")
# cgroup v1 has no delegation protocol of its own, but its permissions allow one: a
# directory root creates and hands to a user (chown) lets that user create child
# cgroups, whose files the kernel gives to their creator, and move its own tasks there.
# `pysandbox delegate USER` makes <hierarchy>/pysandbox/user-<uid> for each controller.
V1_USER_PREFIX = "user-"


def v1_parent(point, uid=None):
    """The directory a sandbox's v1 cgroups are made in: ours as root, the delegated one
    of the user otherwise."""
    uid = os.geteuid() if uid is None else uid
    # a mount point from mountinfo has no trailing slash (but "/")
    parent = point + "/" + PARENT if not point.endswith("/") else os.path.join(point, PARENT)
    if uid == 0:
        return parent
    return parent + "/" + V1_USER_PREFIX + str(uid)


def delegation_hint():
    import pwd
    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        user = str(os.geteuid())
    return DELEGATION_HINT_V1 % user


_V1_CONTROLLERS = ("pids", "memory", "cpu", "cpuacct", "blkio", "freezer", "devices")
_mounts_cache = None


# ---------------------------------------------------------------- small file helpers
# os.open/os.write instead of open(): no buffering layer, one syscall each, and the
# kernel's errno comes back unchanged (cgroupfs reports limits it refuses as EINVAL).

def write_file(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode() if isinstance(text, str) else text)
    finally:
        os.close(fd)


def read_file(path):
    """Contents of a cgroup file, or None when it does not exist (controller absent)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode()
    except (FileNotFoundError, ProcessLookupError, OSError):
        return None
    finally:
        os.close(fd)


def read_int(path, default=0):
    text = read_file(path)
    if text is None:
        return default
    text = text.strip()
    if text == "max":
        return -1
    try:
        return int(text)
    except ValueError:
        return default


def read_keyed(path):
    """'key value' lines (memory.events, pids.events, cpu.stat, oom_control) -> {key: int}."""
    out = {}
    text = read_file(path)
    if not text:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        try:
            out[key] = int(value.split()[0]) if value.strip() else 0
        except ValueError:
            pass
    return out


def procs(directory):
    """PIDs in a cgroup (live or exiting); [] when the directory is gone."""
    text = read_file(os.path.join(directory, "cgroup.procs"))
    return [int(p) for p in text.split()] if text else []


def rmdir_quiet(path):
    """rmdir that treats 'already gone' as done; returns False if the kernel keeps it (EBUSY)."""
    try:
        os.rmdir(path)
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError:
        return False
    return True


def check_name(name):
    if not name or "/" in name or name in (".", "..") or "\0" in name or len(name) > 200 \
            or name.startswith(V1_USER_PREFIX):
        raise SetupError("cgroup", 22, "invalid sandbox name for a cgroup: %r" % (name,))


# ---------------------------------------------------------------- detection

def parse_mountinfo(text):
    """cgroup mounts as [(fstype, mountpoint, mount_root, frozenset(super options))]
    (through the one mountinfo parser, pysandbox_common.mountinfo)."""
    from pysandbox_common.mountinfo import parse
    return [(m[8], m[5], m[4], frozenset(m[10])) for m in parse(text, fstypes=("cgroup", "cgroup2"))]


def mounts(mountinfo="/proc/self/mountinfo"):
    """Cached cgroup mounts of this process's mount namespace (read once)."""
    global _mounts_cache
    if _mounts_cache is None or mountinfo != "/proc/self/mountinfo":
        try:
            with open(mountinfo) as f:
                text = f.read()
        except OSError:
            text = ""
        result = parse_mountinfo(text)
        if mountinfo != "/proc/self/mountinfo":
            return result
        _mounts_cache = result
    return _mounts_cache


# What v1_hierarchies and v2_mount derived from the cached mount list, with the list they
# came from: the run path asks several times a run, and a walk of every mount with every
# controller name was a seventh of the supervisor's Python per run. A new list (a test that
# clears _mounts_cache) is derived afresh.
_derived = (None, None, None)


def _derive(mount_list):
    hierarchies, unified = {}, None
    for fstype, point, _root, opts in mount_list:
        if fstype == "cgroup2":
            unified = point if unified is None else unified
        elif fstype == "cgroup":
            for ctrl in _V1_CONTROLLERS:
                if ctrl in opts and ctrl not in hierarchies:
                    hierarchies[ctrl] = point
    return hierarchies, unified


def _derived_for(mount_list):
    global _derived
    if mount_list is not None:
        return _derive(mount_list)
    current = mounts()
    derived = _derived  # one read: another thread may replace it meanwhile
    if derived[0] is not current:
        derived = _derived = (current, *_derive(current))
    return derived[1], derived[2]


def v1_hierarchies(mount_list=None):
    """{controller: mountpoint} for the v1 controllers we use (first mount of each wins);
    a new dict each call (callers may change theirs)."""
    return dict(_derived_for(mount_list)[0])


def v2_mount(mount_list=None):
    """The first cgroup2 mount point, or None."""
    return _derived_for(mount_list)[1]


def detect(mount_list=None):
    """"v1" when any v1 hierarchy carries a resource controller (hybrid included),
    "v2" for a unified-only host, None without cgroups."""
    v1 = v1_hierarchies(mount_list)
    if any(c in v1 for c in ("memory", "pids", "cpu", "cpuacct", "blkio")):
        return "v1"
    if v2_mount(mount_list):
        return "v2"
    return None


def requested(limits):
    """Which limits the profile asks for: {"memory", "pids", "cpu", "cpu_weight", "io_weight"}."""
    want = set()
    if getattr(limits, "memory", 0) and limits.memory > 0:
        want.add("memory")
    if getattr(limits, "pids", 0) and limits.pids > 0:
        want.add("pids")
    if getattr(limits, "cpus", 0) and limits.cpus > 0:
        want.add("cpu")
    if getattr(limits, "cpu_weight", 0):
        want.add("cpu_weight")
    if getattr(limits, "io_weight", 0):
        want.add("io_weight")
    return want


def limits_dict(limits):
    return {key: getattr(limits, key, 0) for key in
            ("memory", "memory_swap", "pids", "cpus", "cpu_weight", "io_weight", "required")}


def setup_failure(errno_, what, hint):
    """The SetupError for a cgroup we could not make; names the kernel's reason and the way out."""
    reason = os.strerror(errno_) if errno_ else "failed"
    if errno_ in (1, 13, 30):     # EPERM, EACCES, EROFS: no delegation
        return SetupError("cgroup", errno_, "%s: %s; %s" % (what, reason, hint))
    return SetupError("cgroup", errno_, "%s: %s" % (what, reason))


# ---------------------------------------------------------------- leaf locks and teardown
# shared by cgroup_v1 and cgroup_v2

def lock_new_leaf(path):
    """Take the liveness lock on a leaf we just made. Blocking: a gc that raced us holds
    it for a moment. Afterwards the leaf must still be the one we made (gc may have
    removed it as an empty orphan in between); None tells the caller to make it again."""
    import fcntl
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None  # a gc took the empty leaf before we could lock it: make it again
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        held = os.fstat(fd)
        now = os.stat(path)
        if (now.st_ino, now.st_dev) == (held.st_ino, held.st_dev):
            return fd
    except FileNotFoundError:
        pass
    os.close(fd)
    return None


# The parent (`pysandbox`, or a user's `pysandbox/user-<uid>`) in the primary hierarchy is
# the lock that orders creation against removal. A creator holds it shared from the moment it
# needs the parents until its primary leaf exists and is locked; gc holds it exclusively while
# it reaps orphans and removes parents. So gc never takes a leaf between its mkdir and its
# lock, never removes a parent a creator is about to use, and creators never wait for each
# other. The run path's gc only tries (non-blocking) and skips when a creator is at work.

def hold_parent(path, create, exclusive=False, blocking=True, patience=0.01):
    """fd holding flock on the parent directory `path` (shared, or exclusive), or None when
    non-blocking and still busy after `patience` seconds (creators hold it about a millisecond).
    create: mkdir the parent (and its own parent) when missing; without it a missing parent
    raises FileNotFoundError. The fd refers to the directory at `path` now: a parent removed
    and made again while we waited is taken again."""
    import fcntl
    mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if blocking else fcntl.LOCK_NB)
    deadline = None
    for _attempt in range(100):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            if not create:
                raise
            try:
                os.makedirs(path, 0o755, exist_ok=True)
            except FileNotFoundError:
                pass  # an ancestor vanished under us (gc of a parent): try again
            continue
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            os.close(fd)
            import time
            now = time.monotonic()
            deadline = now + patience if deadline is None else deadline
            if now >= deadline:
                return None
            time.sleep(0.001)
            continue
        try:
            held, now = os.fstat(fd), os.stat(path)
            if (held.st_ino, held.st_dev) == (now.st_ino, now.st_dev):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # removed while we waited for the lock
    raise SetupError("cgroup", 16, "%s keeps disappearing (a gc running in a loop?)" % path)


def release(fd):
    if fd is not None:
        os.close(fd)


def try_lock(path):
    """fd holding the lock of an existing leaf nobody holds, or None (locked or gone)."""
    import fcntl
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


PIN_BATCH = 64  # pidfds held at once by kill_tasks (a cgroup may list more than fds are free)


def kill_tasks(directory, frozen=False):
    """SIGKILL every process listed in a cgroup; returns how many were listed.

    A listed PID may exit and be reused by a process elsewhere before the signal: each is
    pinned first (pidfd_open), then the cgroup is listed again, and only a pinned process
    still listed is signalled through its pidfd. A pidfd names one process for good, so a
    PID reused after the second listing is not the one signalled (ESRCH instead). Pins are
    taken PIN_BATCH at a time; one that cannot be taken (no free descriptor) is left for the
    caller's next round, which lists again. `frozen`: every listed task is frozen, so none
    can exit and free its PID: plain kill(2) is exact then."""
    pids = procs(directory)
    if frozen:
        for pid in pids:
            try:
                os.kill(pid, 9)
            except (ProcessLookupError, PermissionError):
                pass
        return len(pids)
    import _signal
    for start in range(0, len(pids), PIN_BATCH):
        pinned = {}
        try:
            for pid in pids[start:start + PIN_BATCH]:
                try:
                    pinned[pid] = os.pidfd_open(pid)
                except ProcessLookupError:
                    pass  # gone already
                except OSError:
                    break  # EMFILE, ENOMEM: the next round lists it again
            if not pinned:
                continue
            still = set(procs(directory))
            for pid, pidfd in pinned.items():
                if pid in still:
                    try:
                        _signal.pidfd_send_signal(pidfd, 9)
                    except OSError:
                        pass
        finally:
            for pidfd in pinned.values():
                os.close(pidfd)
    return len(pids)


def wait_empty(directory, timeout=5.0):
    """Poll until no task is listed (killed tasks leave as soon as they exit; zombies
    are not listed). Back-off from 0.5 ms keeps the common case fast."""
    import time
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while procs(directory):
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    return True


def reap_orphan(dirs):
    """Remove the directories of one orphaned sandbox (primary last) if no task is in any."""
    if any(procs(d) for d in dirs):
        return []
    removed = []
    for d in list(dirs[1:]) + list(dirs[:1]):
        if os.path.isdir(d) and rmdir_quiet(d):
            removed.append(d)
    return removed


def own_cgroup(pid="self"):
    """This process's cgroup per hierarchy: {"": v2 path, "memory": v1 path, ...}."""
    out = {}
    text = read_file("/proc/%s/cgroup" % pid) or ""
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[1] == "":
            out[""] = parts[2]
        for ctrl in parts[1].split(","):
            out[ctrl] = parts[2]
    return out
