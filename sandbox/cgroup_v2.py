"""cgroup v2 (unified): one leaf per sandbox, `<base>/pysandbox/<name>`.

base is the mount root when we are root, or our own cgroup when it is delegated to us
(rootless under `systemd-run --user --scope -p Delegate=yes`: we own its directory,
cgroup.procs and cgroup.subtree_control).

The kernel's rules that decide the order here:
- a controller can be enabled in X/cgroup.subtree_control only if it is listed in
  X/cgroup.controllers, i.e. enabled in X's parent;
- "no internal processes": a non-root cgroup with controllers in subtree_control cannot
  hold processes, so `pysandbox` only holds leaves. When the delegated cgroup still
  holds the supervisor itself, the supervisor first moves into its own leaf
  `pysandbox/supervisor.<pid>` (removed by gc once empty);
- moving a process needs write access to cgroup.procs of the common ancestor of source
  and destination -- inside a delegated subtree that is ours.
"""
import os

from . import cgroup_fs as cg
from .errors import SetupError

_PERIOD_US = 100000
_CONTROLLER_OF = {"memory": "memory", "pids": "pids", "cpu": "cpu", "cpu_weight": "cpu",
                  "io_weight": "io"}
SUPERVISOR_PREFIX = "supervisor."


def limit_writes(limits):
    """(file, value) writes for these limits."""
    writes = []
    memory = limits.memory if limits.memory and limits.memory > 0 else 0
    if memory:
        writes.append(("memory.max", str(memory)))
        # v2 limits swap by itself (memory.swap.max); the profile's memory_swap is
        # memory plus swap, as in v1 and docker.
        swap = limits.memory_swap
        if swap == 0:
            writes.append(("memory.swap.max", "0"))
        elif swap < 0:
            writes.append(("memory.swap.max", "max"))
        else:
            writes.append(("memory.swap.max", str(max(0, swap - memory))))
    if limits.pids and limits.pids > 0:
        writes.append(("pids.max", str(limits.pids)))
    if limits.cpus and limits.cpus > 0:
        writes.append(("cpu.max", "%d %d" % (max(1000, int(limits.cpus * _PERIOD_US)), _PERIOD_US)))
    if limits.cpu_weight:
        writes.append(("cpu.weight", str(limits.cpu_weight)))
    if limits.io_weight:
        writes.append(("io.weight", "default %d" % limits.io_weight))
    return writes


def read_verdict(leaf, limits_dict=None):
    """Verdict from a v2 leaf's files (live or recorded)."""
    events = cg.read_keyed(os.path.join(leaf, "memory.events"))
    pids_events = cg.read_keyed(os.path.join(leaf, "pids.events"))
    stat = cg.read_keyed(os.path.join(leaf, "cpu.stat"))
    peak = cg.read_int(os.path.join(leaf, "memory.peak"), 0)
    return {"oom": events.get("oom_kill", 0) > 0, "pids_limited": pids_events.get("max", 0) > 0,
            "memory_peak": max(peak, 0), "cpu_user": stat.get("user_usec", 0) / 1e6,
            "cpu_system": stat.get("system_usec", 0) / 1e6, "limits": dict(limits_dict or {}),
            "accounted": True, "layout": "v2"}


class V2Cgroup:
    layout = "v2"

    def __init__(self, name, limits, leaf):
        self.name = name
        self.leaf = leaf
        self._limits = cg.limits_dict(limits)
        self._lock = None
        self.warning = None

    @property
    def paths(self):
        return [self.leaf] if self.leaf else []

    def procs_files(self):
        """The file attach() writes the PID into (the stager writes it itself)."""
        return [os.path.join(self.leaf, "cgroup.procs")]

    def attach(self, pid):
        try:
            cg.write_file(os.path.join(self.leaf, "cgroup.procs"), str(pid))
        except OSError as e:
            raise SetupError("cgroup", e.errno, "attach to %s: %s" % (self.leaf, os.strerror(e.errno)))

    def verdict(self):
        return read_verdict(self.leaf, self._limits)

    def kill(self, use_kill_file=True):
        if not self.leaf:
            return True
        if use_kill_file:
            try:
                cg.write_file(os.path.join(self.leaf, "cgroup.kill"), "1")
                return cg.wait_empty(self.leaf)
            except FileNotFoundError:
                if not os.path.isdir(self.leaf):
                    return True
            except OSError:
                pass
        # Kernels before 5.14: freeze so nothing forks while we kill the list, then thaw.
        freeze = os.path.join(self.leaf, "cgroup.freeze")
        frozen = False
        try:
            cg.write_file(freeze, "1")
            frozen = True
            import time
            deadline = time.monotonic() + 1.0
            while cg.read_keyed(os.path.join(self.leaf, "cgroup.events")).get("frozen") != 1 \
                    and time.monotonic() < deadline:
                time.sleep(0.001)
        except OSError:
            pass
        cg.kill_tasks(self.leaf)
        if frozen:
            try:
                cg.write_file(freeze, "0")
            except OSError:
                pass
        for _round in range(200):
            if cg.wait_empty(self.leaf, 0.01) or not cg.kill_tasks(self.leaf):
                return cg.wait_empty(self.leaf)
        return cg.wait_empty(self.leaf)

    def destroy(self):
        if self.leaf:
            self.kill()
            cg.rmdir_quiet(self.leaf)
            self.leaf = None
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


def _controllers(path):
    return set((cg.read_file(path) or "").split())


def find_base(uid=None, root=None):
    """The directory under which `pysandbox` lives, and whether it is a delegated subtree."""
    if root is not None:
        return root, False
    mount = cg.v2_mount()
    if not mount:
        raise SetupError("cgroup", 2, "no cgroup2 filesystem is mounted")
    euid = os.geteuid()
    if euid == 0 and uid in (None, 0):
        return mount, False
    own = cg.own_cgroup().get("")
    if own is None:
        raise SetupError("cgroup", 2, "this process is in no cgroup2 cgroup")
    base = os.path.join(mount, own.lstrip("/"))
    owner = euid if uid is None else uid
    try:
        st = os.stat(base)
    except OSError as e:
        raise cg.setup_failure(e.errno, base, cg.DELEGATION_HINT_V2)
    delegated = (st.st_uid == owner and os.access(base, os.W_OK)
                 and os.access(os.path.join(base, "cgroup.procs"), os.W_OK)
                 and os.access(os.path.join(base, "cgroup.subtree_control"), os.W_OK))
    if not delegated:
        raise cg.setup_failure(13, "%s is not delegated to uid %d" % (base, owner), cg.DELEGATION_HINT_V2)
    return base, True


def _enable(directory, controllers):
    """Enable controllers for directory's children (those not yet enabled)."""
    have = _controllers(os.path.join(directory, "cgroup.subtree_control"))
    todo = [c for c in controllers if c not in have]
    if todo:
        cg.write_file(os.path.join(directory, "cgroup.subtree_control"),
                      " ".join("+" + c for c in todo))


def _prepare_parent(base, delegated, want):
    """mkdir base/pysandbox and enable on it the controllers we want (limits) and can have
    (accounting). Returns the set enabled for leaves."""
    parent = os.path.join(base, cg.PARENT)
    try:
        os.mkdir(parent, 0o755)
    except FileExistsError:
        pass
    except OSError as e:
        raise cg.setup_failure(e.errno, "mkdir " + parent, cg.DELEGATION_HINT_V2)
    wanted = ["memory", "pids", "cpu", "io"]
    available = _controllers(os.path.join(parent, "cgroup.controllers"))
    if delegated:
        # Our delegated cgroup must pass controllers down to `pysandbox`.
        offered = _controllers(os.path.join(base, "cgroup.controllers"))
        missing_here = [c for c in wanted if c in offered and c not in available]
        if missing_here:
            try:
                _enable(base, missing_here)
            except OSError as e:
                if e.errno != 16:
                    raise cg.setup_failure(e.errno, "enable controllers in " + base, cg.DELEGATION_HINT_V2)
                _move_self_to_leaf(base, parent)
                _enable(base, missing_here)
            available = _controllers(os.path.join(parent, "cgroup.controllers"))
    enable = [c for c in wanted if c in available]
    try:
        _enable(parent, enable)
    except OSError as e:
        raise cg.setup_failure(e.errno, "enable controllers in " + parent, cg.DELEGATION_HINT_V2)
    return set(enable)


def _move_self_to_leaf(base, parent):
    """No internal processes: the supervisor leaves the delegated cgroup for a leaf of its
    own, which is possible only when nothing else lives there."""
    others = [p for p in cg.procs(base) if p != os.getpid()]
    if others:
        raise SetupError("cgroup", 16, "%s holds other processes (%s); start pysandbox in a "
                         "scope of its own: %s" % (base, " ".join(map(str, others[:5])),
                                                   cg.DELEGATION_HINT_V2))
    leaf = os.path.join(parent, SUPERVISOR_PREFIX + str(os.getpid()))
    try:
        os.mkdir(leaf, 0o755)
    except FileExistsError:
        pass
    cg.write_file(os.path.join(leaf, "cgroup.procs"), str(os.getpid()))


def create(name, limits, want, uid=None, root=None):
    base, delegated = find_base(uid, root)
    enabled = _prepare_parent(base, delegated, want)
    missing = sorted({_CONTROLLER_OF[k] for k in want} - enabled)
    warning = None
    if missing:
        text = "controller %s not available in %s/cgroup.controllers" % (
            " ".join(missing), os.path.join(base, cg.PARENT))
        if limits.required:
            raise SetupError("cgroup", 95, text)
        warning = "warning: limit not applied: " + text
    parent = os.path.join(base, cg.PARENT)
    leaf = os.path.join(parent, name)
    group = V2Cgroup(name, limits, None)
    group.warning = warning
    # shared hold of the parent while the leaf is made and locked (see cgroup.hold_parent)
    try:
        parent_lock = cg.hold_parent(parent, create=True)
    except OSError as e:
        raise cg.setup_failure(e.errno, "open " + parent, cg.DELEGATION_HINT_V2) from None
    try:
        for _attempt in range(5):
            try:
                os.mkdir(leaf, 0o755)
            except FileExistsError:
                fd = cg.try_lock(leaf)
                if fd is None:
                    raise SetupError("cgroup", 17, "%s is in use by a running sandbox" % leaf)
                try:
                    if not cg.reap_orphan([leaf]):
                        raise SetupError("cgroup", 16, "%s still has processes" % leaf)
                finally:
                    os.close(fd)
                continue
            except OSError as e:
                raise cg.setup_failure(e.errno, "mkdir " + leaf, cg.DELEGATION_HINT_V2)
            group.leaf = leaf
            group._lock = cg.lock_new_leaf(leaf)
            if group._lock is not None:
                break
            group.leaf = None
        else:
            raise SetupError("cgroup", 16, "could not create %s (raced with gc)" % leaf)
        cg.release(parent_lock)
        parent_lock = None
        for filename, value in limit_writes(limits):
            if filename.split(".")[0] not in enabled:
                continue          # reported above as missing
            path = os.path.join(leaf, filename)
            try:
                cg.write_file(path, value)
            except FileNotFoundError:
                if filename == "memory.swap.max":
                    continue      # no swap accounting: the kernel cannot swap what it does not count
                if limits.required:
                    raise SetupError("cgroup", 95, "%s: not offered by this kernel" % path)
                group.warning = "warning: limit not applied: %s not offered" % filename
            except OSError as e:
                raise SetupError("cgroup", e.errno, "%s = %s: %s" % (path, value, os.strerror(e.errno)))
    except BaseException:
        group.destroy()
        raise
    finally:
        cg.release(parent_lock)
    return group


def gc(full=False, bases=None):
    if bases is None:
        bases = []
        mount = cg.v2_mount()
        if mount:
            if os.geteuid() == 0:
                bases.append(mount)
            own = cg.own_cgroup().get("")
            if own and own != "/":
                base = os.path.join(mount, own.lstrip("/"))
                # our own cgroup may be the supervisor leaf inside pysandbox
                if os.path.basename(base).startswith(SUPERVISOR_PREFIX):
                    base = os.path.dirname(os.path.dirname(base))
                if base not in bases:
                    bases.append(base)
    removed = []
    for base in bases:
        parent = os.path.join(base, cg.PARENT)
        try:
            lock = cg.hold_parent(parent, create=False, exclusive=True, blocking=full)
        except OSError:
            continue
        if lock is None:
            continue  # creators at work: the next gc collects
        try:
            removed += _gc_parent(parent)
        finally:
            cg.release(lock)
    return removed


def _gc_parent(parent):
    removed = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in sorted(names):
        leaf = os.path.join(parent, name)
        if not os.path.isfile(os.path.join(leaf, "cgroup.procs")):
            continue
        if name.startswith(SUPERVISOR_PREFIX):
            if name != SUPERVISOR_PREFIX + str(os.getpid()) and cg.rmdir_quiet(leaf):
                removed.append(leaf)
            continue
        fd = cg.try_lock(leaf)
        if fd is None:
            continue
        try:
            removed += cg.reap_orphan([leaf])
        finally:
            os.close(fd)
    return removed
