"""cgroup v1 (and hybrid): one directory per hierarchy under `<mount>/pysandbox/<name>`.

Each v1 controller is its own tree (on this kind of host even cpu and cpuacct are
separate mounts), so a sandbox is a set of directories, one per mount, and the child
joins every one's tasks file. A sandbox with its own pid namespace ends with its PID 1
(the kernel kills the rest of the namespace). Without one, teardown freezes the freezer
cgroup first so that no task can fork while we SIGKILL the list, then thaws to let the
kills land; on a hybrid host without a v1 freezer a leaf in the unified (cgroup2) mount
is added instead: it has no controllers but offers cgroup.kill, which ends every task
atomically.
"""
import os

from . import cgroup_fs as cg
from .errors import SetupError

_PERIOD_US = 100000


def hierarchies(want=None, own_pid_namespace=False):
    """[(label, mountpoint)], primary first; labels name the controllers of that mount.

    With `want` (the requested limits) only the hierarchies this sandbox needs: pids,
    memory and cpuacct always (counters and the verdict), cpu and blkio when a limit asks
    for them, the freezer where there is one, else the unified leaf for its cgroup.kill,
    and neither for a sandbox with a pid namespace of its own. Each v1 memory cgroup costs ~50 KiB of kernel
    memory, and every directory a mkdir, an rmdir and the kernel's offlining work.

    The kernel's rule that makes a pid namespace enough: when its init (PID 1) dies, the
    kernel SIGKILLs every other process of the namespace and forks no new one into it
    (zap_pid_ns_processes; alloc_pid fails once the namespace is dying), and PID 1 is not
    reaped before they are all gone. Killing PID 1 through its pidfd is then an atomic
    teardown; the cgroup's own kill (kill(): pidfd-verified rounds) is left for what is
    outside the namespace, the stager's network helper, which exits on its own."""
    v1 = cg.v1_hierarchies()
    unified = cg.v2_mount()
    # The run path asks at every create: remembered per question. The answer depends on
    # nothing else but the unified kill's probe, which is cached per mount; the probe's
    # answer (and the probe itself) is part of the question, read after it has run.
    question = (tuple(v1.items()), unified, None if want is None else frozenset(want), own_pid_namespace,
                os.geteuid(), _unified_kill)
    known = _hierarchies_known.get(question + (_kill_file.get(unified),))
    if known is None:
        known = tuple(_hierarchies(v1, unified, want, own_pid_namespace))
        _hierarchies_known[question + (_kill_file.get(unified),)] = known
    return list(known)


_hierarchies_known = {}


def _hierarchies(v1, unified, want, own_pid_namespace):
    by_mount = {}
    order = []
    for ctrl, point in v1.items():
        if point not in by_mount:
            by_mount[point] = []
            order.append(point)
        by_mount[point].append(ctrl)
    out = []
    for ctrl in ("pids", "memory", "cpu", "cpuacct", "blkio", "freezer", "devices"):
        for point in order:
            if ctrl in by_mount[point] and (",".join(by_mount[point]), point) not in out:
                out.append((",".join(by_mount[point]), point))
    if unified:
        out.append(("unified", unified))
    if want is None:
        return out
    # The sandbox joins its v1 cgroups itself, one thread ("0" into `tasks`), which the
    # kernel does without taking the global threadgroup rwsem; moving a whole process
    # (cgroup.procs, and any move into the unified hierarchy) takes it, and its first
    # writer waits out an RCU grace period (~14 ms here) on every sandbox start. So the
    # freezer, not the unified leaf's cgroup.kill, makes teardown atomic where it exists.
    needed = {"pids", "memory", "cpuacct"}
    if "cpu" in want or "cpu_weight" in want:
        needed.add("cpu")
    if "io_weight" in want:
        needed.add("blkio")
    if own_pid_namespace:
        pass
    elif "freezer" in v1:
        needed.add("freezer")
    elif unified and _unified_kill(unified):
        needed.add("unified")
    if os.geteuid() == 0 and "devices" in v1:
        # Only host root may write a devices cgroup's lists (CAP_SYS_ADMIN in the initial
        # namespace); a delegated user's sandbox relies on its user namespace (no mknod)
        # and the minimal /dev instead.
        needed.add("devices")
    return [(label, point) for label, point in out if needed & set(label.split(","))]


_kill_file = {}


def _unified_kill(unified):
    """Does a non-root cgroup of the unified mount have cgroup.kill (Linux >= 5.14)?
    Known from our parent there (kernfs shows the same files in every non-root cgroup)."""
    if unified not in _kill_file:
        parent = os.path.join(unified, cg.PARENT)
        try:
            os.mkdir(parent, 0o755)
        except OSError:
            pass
        _kill_file[unified] = os.path.exists(os.path.join(parent, "cgroup.kill"))
    return _kill_file[unified]


def _share(weight):
    # systemd's mapping: cgroup v2 weight 100 (default) <-> v1 shares 1024.
    return max(2, min(262144, weight * 1024 // 100))


# null, zero, full, random, urandom, tty, ptmx and the devpts instance's ptys
DEVICE_ALLOW = ("c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm", "c 5:0 rwm", "c 5:2 rwm",
                "c 136:* rwm")


def devices_parent(parent):
    """Our `pysandbox` cgroup in the v1 devices hierarchy, holding the allowlist: deny every
    device, then allow exactly what the minimal /dev holds, so that a node reaching a
    sandbox some other way (an image, a bind) still cannot be opened.

    The kernel's rules for the list (security/device_cgroup.c): "a" (all) in devices.deny or
    devices.allow is refused with EINVAL once the cgroup has a child, and a child copies its
    parent's list when it is made. So the list is written on a cgroup without children (the
    parent holds root sandboxes' tasks directly; `delegate` makes no user directory here, and
    an empty one an older version made is removed first), only while no task is in it (a
    rewrite starts with "deny all", which would cut off running sandboxes), and under flock on
    the directory so that two first runs never interleave their writes."""
    import fcntl
    for _attempt in range(20):
        try:
            os.mkdir(parent, 0o755)
        except FileExistsError:
            pass
        except FileNotFoundError:
            continue  # the hierarchy's root cannot vanish; a parent of ours just did: again
        except OSError as e:
            raise cg.setup_failure(e.errno, "mkdir " + parent, cg.delegation_hint())
        break
    listing = os.path.join(parent, "devices.list")
    if (cg.read_file(listing) or "").split("\n")[:-1] == list(DEVICE_ALLOW):
        return parent
    try:
        fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise SetupError("cgroup", e.errno, "devices allowlist in %s: %s" % (parent, os.strerror(e.errno)))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if (cg.read_file(listing) or "").split("\n")[:-1] == list(DEVICE_ALLOW):
            return parent  # another first run wrote it while we waited
        if cg.procs(parent):
            raise SetupError("cgroup", 16, "devices allowlist in %s: tasks run there under another device list"
                             % parent)
        for child in sorted(os.listdir(parent)):
            path = os.path.join(parent, child)
            if not os.path.isdir(path):
                continue
            if child.startswith(cg.V1_USER_PREFIX) and not cg.procs(path) and cg.rmdir_quiet(path):
                continue  # a delegation an older `delegate` made here: unused, rootless never joins devices
            raise SetupError("cgroup", 16, "devices allowlist in %s: the child cgroup %s exists, and the kernel "
                             "refuses \"deny all\" on a devices cgroup with children; remove it" % (parent, child))
        try:
            _deny_all_settling(parent)
            for rule in DEVICE_ALLOW:
                cg.write_file(os.path.join(parent, "devices.allow"), rule)
        except OSError as e:
            raise SetupError("cgroup", e.errno, "devices allowlist in %s: %s" % (parent, os.strerror(e.errno)))
        return parent
    finally:
        os.close(fd)


def _deny_all_settling(parent):
    """devices.deny "a", retried briefly on EINVAL: a child removed a moment ago stays "online"
    for the kernel until an RCU grace period has passed, and blocks "a" until then."""
    import errno
    import time
    deadline = time.monotonic() + 2.0
    while True:
        try:
            cg.write_file(os.path.join(parent, "devices.deny"), "a")
            return
        except OSError as e:
            if e.errno != errno.EINVAL or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def limit_writes(limits, have):
    """The (controller, file, value) writes for these limits, in the order the kernel
    accepts them; `have(controller, file)` says whether the kernel offers a file.
    Returns (writes, missing) where missing names requested limits not offered."""
    writes, missing = [], []
    memory = limits.memory if limits.memory and limits.memory > 0 else 0
    if memory:
        # memsw (memory+swap) must never be below limit_in_bytes: on a fresh cgroup both
        # are unlimited, so the memory limit goes first, then memsw.
        writes.append(("memory", "memory.limit_in_bytes", str(memory)))
        swap = limits.memory_swap
        if have("memory", "memory.memsw.limit_in_bytes"):
            if swap == 0:
                writes.append(("memory", "memory.memsw.limit_in_bytes", str(memory)))
            elif swap > 0:
                writes.append(("memory", "memory.memsw.limit_in_bytes", str(max(swap, memory))))
        if swap == 0:
            writes.append(("memory", "memory.swappiness", "0"))
    if limits.pids and limits.pids > 0:
        writes.append(("pids", "pids.max", str(limits.pids)))
    if limits.cpus and limits.cpus > 0:
        # The quota is per period of _PERIOD_US, which is every new cgroup's period: the
        # kernel starts each task group's bandwidth at default_cfs_period() (100 ms), never
        # at its parent's. So the period is not written (one open and write less per run).
        writes.append(("cpu", "cpu.cfs_quota_us", str(max(1000, int(limits.cpus * _PERIOD_US)))))
    if limits.cpu_weight:
        writes.append(("cpu", "cpu.shares", str(_share(limits.cpu_weight))))
    if limits.io_weight:
        if have("blkio", "blkio.bfq.weight"):
            # BFQ: 1..1000, default 100 -- the v2 io.weight scale up to 1000.
            writes.append(("blkio", "blkio.bfq.weight", str(max(1, min(1000, limits.io_weight)))))
        elif have("blkio", "blkio.weight"):
            # CFQ: 10..1000, default 500.
            writes.append(("blkio", "blkio.weight", str(max(10, min(1000, limits.io_weight * 5)))))
        else:
            missing.append("io_weight (the kernel offers neither blkio.bfq.weight nor blkio.weight)")
    return writes, missing


class V1Cgroup:
    layout = "v1"

    def __init__(self, name, limits):
        self.name = name
        self._limits = cg.limits_dict(limits)
        self.dirs = []            # [(label, path)], primary first
        self._lock = None
        self.warning = None

    @property
    def paths(self):
        return [path for _label, path in self.dirs]

    def _dir(self, ctrl):
        # {controller: directory} of the current dirs, made again whenever they change
        dirs = self.dirs
        index = self.__dict__.get("_index")
        if index is None or index[0] is not dirs or index[1] != len(dirs):
            by_ctrl = {}
            for label, path in dirs:
                for name in label.split(","):
                    by_ctrl.setdefault(name, path)
            index = self._index = (dirs, len(dirs), by_ctrl)
        return index[2].get(ctrl)

    def task_files(self):
        """Files the sandbox's first process writes "0" into to join every hierarchy by
        itself (single thread, before it has forked): None when a hierarchy needs a whole-
        process move (the unified leaf), so the supervisor must use attach()."""
        if any(label == "unified" for label, _ in self.dirs):
            return None
        return [path + "/tasks" for _label, path in self.dirs]

    def procs_files(self):
        """The files attach() writes the PID into (the stager writes them itself)."""
        return [os.path.join(path, "cgroup.procs") for _label, path in self.dirs]

    def attach(self, pid):
        for _label, path in self.dirs:
            try:
                cg.write_file(os.path.join(path, "cgroup.procs"), str(pid))
            except OSError as e:
                raise SetupError("cgroup", e.errno, "attach to %s: %s" % (path, os.strerror(e.errno)))

    def verdict(self):
        out = {"oom": False, "pids_limited": False, "memory_peak": 0, "cpu_user": 0.0,
               "cpu_system": 0.0, "limits": dict(self._limits), "accounted": True, "layout": "v1"}
        memory = self._dir("memory")
        if memory:
            control = cg.read_keyed(memory + "/memory.oom_control")
            if "oom_kill" in control:
                out["oom"] = control["oom_kill"] > 0
            else:
                # Kernels before 4.13 do not count kills: hitting the limit with nothing
                # to reclaim is the best evidence left.
                out["oom"] = control.get("under_oom", 0) > 0 or \
                    cg.read_int(memory + "/memory.failcnt") > 0
            out["memory_peak"] = cg.read_int(memory + "/memory.max_usage_in_bytes")
        pids = self._dir("pids")
        if pids:
            out["pids_limited"] = cg.read_keyed(pids + "/pids.events").get("max", 0) > 0
        cpuacct = self._dir("cpuacct")
        if cpuacct:
            user = cg.read_int(cpuacct + "/cpuacct.usage_user", None)
            system = cg.read_int(cpuacct + "/cpuacct.usage_sys", None)
            if user is not None and system is not None:
                out["cpu_user"], out["cpu_system"] = user / 1e9, system / 1e9
            else:
                stat = cg.read_keyed(os.path.join(cpuacct, "cpuacct.stat"))
                hz = os.sysconf("SC_CLK_TCK")
                out["cpu_user"], out["cpu_system"] = stat.get("user", 0) / hz, stat.get("system", 0) / hz
        else:
            unified = self._dir("unified")
            if unified:
                stat = cg.read_keyed(os.path.join(unified, "cpu.stat"))
                out["cpu_user"] = stat.get("user_usec", 0) / 1e6
                out["cpu_system"] = stat.get("system_usec", 0) / 1e6
        return out

    def kill(self, use_unified=True):
        if not self.dirs:
            return True
        primary = self.dirs[0][1]
        unified = self._dir("unified") if use_unified else None
        if unified and os.path.exists(os.path.join(unified, "cgroup.kill")):
            try:
                cg.write_file(os.path.join(unified, "cgroup.kill"), "1")
                return cg.wait_empty(primary)
            except OSError:
                pass  # gone (destroy removed it first) or refused: the freezer, or the rounds
        freezer = self._dir("freezer")
        if freezer and self._freeze_and_kill(freezer):
            return cg.wait_empty(primary)
        # Last resort: kill what is listed until nothing is (a fork bomb is bounded by
        # pids.max, so each round shrinks the set).
        for _round in range(200):
            if not cg.kill_tasks(primary):
                return True
            cg.wait_empty(primary, 0.01)
        return cg.wait_empty(primary)

    def _freeze_and_kill(self, freezer):
        import time
        state = os.path.join(freezer, "freezer.state")
        try:
            cg.write_file(state, "FROZEN")
        except OSError:
            # Gone or refused. A freezer destroy() removed (it was empty) says nothing of the
            # primary, which may still list a task that never joined it: the rounds decide.
            return False
        # FREEZING means some task has not stopped yet (e.g. in an uninterruptible
        # sleep); the kernel finishes the transition on a re-read or re-write.
        deadline = time.monotonic() + 1.0
        while (cg.read_file(state) or "").strip() == "FREEZING" and time.monotonic() < deadline:
            time.sleep(0.001)
            try:
                cg.write_file(state, "FROZEN")
            except OSError:
                break
        # Frozen tasks cannot fork or exit, so this list is complete and its PIDs are
        # not reused; SIGKILL is queued and acts at thaw.
        cg.kill_tasks(freezer, frozen=True)
        try:
            cg.write_file(state, "THAWED")
        except OSError:
            pass
        return True

    def destroy(self):
        if self.dirs:
            # primary last: it carries the lock gc relies on. The kernel refuses (EBUSY) to
            # remove a cgroup any task is still in, so an rmdir that succeeds proves that
            # cgroup empty; only when one is refused is anything killed (and listed). After
            # a run with its own pid namespace nothing is left (PID 1 was reaped after the
            # whole namespace), so the usual teardown lists no cgroup.procs at all.
            order = [path for label, path in list(self.dirs[1:]) + list(self.dirs[:1])
                     if label != "devices"]  # shared by every sandbox; gc removes it when empty
            left = [path for path in order if not cg.rmdir_quiet(path)]
            if left:
                self.kill()
                for path in left:
                    cg.rmdir_quiet(path)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
        self.dirs = []


def create(name, limits, want, uid=None, own_pid_namespace=False):
    hier = hierarchies(want, own_pid_namespace)
    labels = ",".join(label for label, _p in hier).split(",")
    need = {"memory": "memory", "pids": "pids", "cpu": "cpu", "cpu_weight": "cpu",
            "io_weight": "blkio"}
    for key in sorted(want):
        if need[key] not in labels:
            raise SetupError("cgroup", 95, "the %s controller is not mounted (limit %s)" % (need[key], key))
    group = V1Cgroup(name, limits)
    try:
        for attempt in range(20):
            if _make_dirs(group, hier):
                break
        else:
            raise SetupError("cgroup", 16, "could not create %s (raced with gc)" % name)
        writes, missing = limit_writes(limits, lambda c, f: _offers(group._dir(c), f))
        if missing:
            if limits.required:
                raise SetupError("cgroup", 95, "; ".join(missing))
            group.warning = "warning: limit not applied: " + "; ".join(missing)
        for ctrl, filename, value in writes:
            path = group._dir(ctrl) + "/" + filename
            try:
                cg.write_file(path, value)
            except OSError as e:
                if filename == "memory.swappiness":
                    continue      # swap is off through memsw already, or there is no swap
                raise SetupError("cgroup", e.errno, "%s = %s: %s" % (path, value, os.strerror(e.errno)))
    except BaseException:
        group.destroy()
        raise
    return group


_offered = set()  # (hierarchy's parent, file) a cgroup there was seen to have


def _offers(leaf, filename):
    """Does the kernel offer `filename` in this hierarchy (memsw needs swap accounting,
    blkio's weight a scheduler)? Every cgroup of a hierarchy shows the same files (kernfs
    makes them from the controllers' lists), so a yes holds for the process's life; a no is
    asked again, since a scheduler module loaded later adds its files."""
    if leaf is None:
        return False
    key = (os.path.dirname(leaf), filename)
    if key in _offered:
        return True
    if os.path.exists(os.path.join(leaf, filename)):
        _offered.add(key)  # only a yes is kept: blkio's weight appears when its scheduler loads
        return True
    return False


def _make_dirs(group, hier):
    """mkdir every leaf, primary first and locked at once. False: raced with gc, retry.

    Under a shared hold of the primary parent (cg.hold_parent): gc cannot reap the primary
    leaf before it is locked, nor remove a parent while the leaves are being made."""
    root = os.geteuid() == 0
    primary_parent = cg.v1_parent(hier[0][1])
    try:
        parent_lock = cg.hold_parent(primary_parent, create=root)
    except FileNotFoundError:
        raise cg.setup_failure(13, "mkdir " + os.path.join(primary_parent, group.name), cg.delegation_hint()) \
            from None
    except OSError as e:
        raise cg.setup_failure(e.errno, "open " + primary_parent, cg.delegation_hint()) from None
    try:
        return _make_dirs_held(group, hier, root)
    finally:
        cg.release(parent_lock)


def _mkdir_leaf(leaf, parent, root):
    """mkdir a leaf; as root make its parent again when it is missing (a gc removed it)."""
    for _attempt in range(20):
        try:
            os.mkdir(leaf, 0o755)
            return
        except FileNotFoundError:
            if not root:
                raise PermissionError(13, "not delegated") from None
            try:
                os.mkdir(parent, 0o755)
            except (FileExistsError, FileNotFoundError):
                pass
    raise SetupError("cgroup", 2, "mkdir %s: its parent keeps disappearing" % leaf)


def _make_dirs_held(group, hier, root):
    for index, (label, point) in enumerate(hier):
        parent = cg.v1_parent(point)
        if label == "devices":
            # One devices cgroup serves every sandbox: the allowlist is the same for all,
            # and a per-sandbox directory cost a mkdir, nine writes and an rmdir each.
            group.dirs.append((label, devices_parent(parent)))
            continue
        leaf = parent + "/" + group.name  # check_name: one path component
        try:
            _mkdir_leaf(leaf, parent, root)
        except FileExistsError:
            # Ours only if nobody holds it (primary) and nothing runs in it: an orphan.
            if index == 0:
                fd = cg.try_lock(leaf)
                if fd is None:
                    raise SetupError("cgroup", 17, "%s is in use by a running sandbox" % leaf)
                try:
                    stale = [os.path.join(cg.v1_parent(p), group.name) for _l, p in hier]
                    if any(cg.procs(d) for d in stale):
                        raise SetupError("cgroup", 16, "%s still has processes" % leaf)
                    cg.reap_orphan(stale)
                finally:
                    os.close(fd)
                return False
            if cg.procs(leaf) or not cg.rmdir_quiet(leaf):
                raise SetupError("cgroup", 16, "%s still has processes" % leaf)
            os.mkdir(leaf, 0o755)
        except OSError as e:
            if label == "unified":
                continue          # optional: only a faster kill
            raise cg.setup_failure(e.errno, "mkdir " + leaf, cg.delegation_hint())
        group.dirs.append((label, leaf))
        if index == 0:
            group._lock = cg.lock_new_leaf(leaf)
            if group._lock is None:
                group.dirs = []
                return False
    return True


def _rmdir_settling(path):
    """rmdir, retried briefly: children removed a moment ago may still be going offline."""
    import errno
    import time
    for _ in range(40):
        try:
            os.rmdir(path)
            return
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise
            time.sleep(0.005)


def gc(full=False):
    hier = hierarchies()
    if not hier:
        return []
    parents = [cg.v1_parent(point) for _l, point in hier]
    # Exclusive hold of the primary parent: no creator is between its mkdir and its lock, and
    # none is about to use a parent we remove. The run path's gc only tries; `pysandbox gc`
    # waits for the creators of the moment (each holds it for about a millisecond).
    try:
        lock = cg.hold_parent(parents[0], create=False, exclusive=True, blocking=full)
    except OSError:
        return []  # no parent yet: nothing to collect
    if lock is None:
        return []  # creators at work: the next gc collects
    try:
        return _gc_held(parents, full)
    finally:
        cg.release(lock)


def _gc_held(parents, full):
    names = set()
    for parent in (parents if full else parents[:1]):
        try:
            # user-<uid>: a delegation root made by `pysandbox delegate`, not a sandbox
            names.update(n for n in os.listdir(parent) if not n.startswith(cg.V1_USER_PREFIX))
        except OSError:
            pass
    removed = []
    for name in sorted(names):
        primary = os.path.join(parents[0], name)
        # the lock first: a live sandbox costs one open+flock, nothing else
        fd = cg.try_lock(primary)
        if fd is None and (not full or os.path.isdir(primary)):
            continue              # held by a live supervisor (or already gone)
        try:
            dirs = [os.path.join(parent, name) for parent in parents]
            dirs = [d for d in dirs if os.path.isdir(d)]
            if dirs:
                removed += cg.reap_orphan(dirs)
        finally:
            if fd is not None:
                os.close(fd)
    if full and os.geteuid() == 0:
        removed += _remove_empty_parents(parents)
    return removed


def _child_cgroups(parent):
    # a cgroup directory always lists its control files; only child cgroups are directories
    try:
        with os.scandir(parent) as entries:
            return [e.name for e in entries if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _remove_empty_parents(parents):
    """Under the exclusive hold of the primary parent: remove our `pysandbox` parents once no
    sandbox (live, spare or orphaned) and no delegation is left in the primary one. The
    devices parent has no children of its own (root sandboxes' tasks sit in it directly,
    and rmdir refuses it while any does)."""
    if _child_cgroups(parents[0]):
        return []
    removed = []
    for parent in list(parents[1:]) + parents[:1]:  # primary last: it is the lock
        if os.path.isdir(parent) and not _child_cgroups(parent):
            try:
                _rmdir_settling(parent)
                removed.append(parent)
            except OSError:
                pass
    return removed


def release_parents():
    """As root, when a supervisor is done with cgroups (a Sandbox closed, a delegation taken
    back): remove the empty parents, so that nothing of ours stays on the host once nothing
    runs. Never waits: a creator at work holds the primary parent shared, and then the
    parents stay for it (its own end removes them)."""
    if os.geteuid() != 0:
        return []
    hier = hierarchies()
    if not hier:
        return []
    parents = [cg.v1_parent(point) for _l, point in hier]
    try:
        lock = cg.hold_parent(parents[0], create=False, exclusive=True, blocking=False)
    except OSError:
        return []  # no parent: nothing to remove
    if lock is None:
        return []
    try:
        return _remove_empty_parents(parents)
    finally:
        cg.release(lock)
