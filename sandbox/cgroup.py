"""Resource limits: one cgroup per sandbox, under a parent of our own named `pysandbox`.

    layout = detect()                      # "v2", "v1" (hybrid counts as v1) or None
    cg = create(name, profile.limits)      # parent, before fork
    cg.attach(pid)                         # parent, while the child waits, before it
                                           # unshares its cgroup namespace
    ... sandbox runs ...
    cg.verdict()                           # oom / pids_limited / memory_peak / cpu times
    cg.destroy()                           # kill every task, rmdir; idempotent
    gc()                                   # orphans of killed supervisors

Layouts (detected from /proc/self/mountinfo at run time):
  v2  one leaf <mount>/pysandbox/<name> (or <own delegated cgroup>/pysandbox/<name>
      when rootless), controllers enabled in pysandbox/cgroup.subtree_control.
  v1  one directory per hierarchy: <mount>/pysandbox/<name> for pids, memory, cpu,
      cpuacct and blkio, and for a sandbox without a pid namespace of its own the freezer
      (or, without one, a leaf in a hybrid host's controller-less unified mount, whose
      cgroup.kill ends every task at once); with its own pid namespace, SIGKILL of its
      PID 1 already ends every task (cgroup_v1.hierarchies).

Liveness: the supervisor holds flock() on its leaf in the first ("primary") hierarchy
for as long as the sandbox lives. A leaf whose lock can be taken belongs to a dead
supervisor; gc removes it once no task is left in it (the kernel refuses rmdir of a
populated cgroup anyway, so a live process always keeps its cgroup). The primary leaf
is created first and removed last, so a half-made or half-removed sandbox is always
visible to the cheap gc that scans the primary hierarchy only.

This module is on the run path: it imports nothing beyond os/fcntl at import time.
"""
import os

from . import cgroup_fs as fs
from .errors import SetupError

def delegate_v1(user, remove=False):
    """As root: create (or remove) the delegated parents of `user` in every v1 hierarchy
    we use. Returns the directories touched."""
    import pwd
    entry = pwd.getpwnam(user) if not str(user).isdigit() else pwd.getpwuid(int(user))
    if entry.pw_uid == 0:
        raise SetupError("delegate", 22, "root needs no delegation")
    touched = []
    hier = fs.v1_hierarchies()
    # Rootless sandboxes never join the devices hierarchy (only host root may write its lists),
    # and a child there would make the kernel refuse the parent's "deny all" (EINVAL on a
    # devices cgroup with children) that every root sandbox's allowlist starts with.
    # (--remove still takes away what an older `delegate` made there.)
    points = sorted({point for ctrl, point in hier.items() if remove or ctrl != "devices"})
    primary = _primary_parent(hier)
    lock = fs.hold_parent(primary, create=True) if primary and not remove else None
    try:
        touched = _delegate_dirs(points, entry, remove, touched)
    finally:
        fs.release(lock)
    if remove:
        touched += release_parents()  # the last delegation gone, nothing running: no parent left
    return touched


def release_parents():
    """The empty `pysandbox` parents removed once a supervisor is done with cgroups (v1, as
    root; cgroup_v1.release_parents). Never fails: what stays is gc's."""
    try:
        if fs.detect() == "v1":
            from . import cgroup_v1
            return cgroup_v1.release_parents()
    except (OSError, SetupError):
        pass
    return []


def _primary_parent(hier):
    """Root's `pysandbox` in the primary hierarchy (pids, else the first we use): the lock."""
    for ctrl in ("pids", "memory", "cpuacct"):
        if ctrl in hier:
            return os.path.join(hier[ctrl], fs.PARENT)
    return None


def _delegate_dirs(points, entry, remove, touched):
    for point in points:
        path = fs.v1_parent(point, entry.pw_uid)
        if remove:
            if os.path.isdir(path):
                try:
                    os.rmdir(path)
                except OSError as e:
                    raise SetupError("delegate", e.errno, "%s: %s (sandboxes of %s still exist?)"
                                     % (path, os.strerror(e.errno), entry.pw_name)) from None
                touched.append(path)
            continue
        for _attempt in range(20):
            try:
                os.makedirs(path, 0o755, exist_ok=True)
                os.chown(path, entry.pw_uid, entry.pw_gid)
                break
            except FileNotFoundError:
                continue  # a parent went away under us (an older gc without the lock): again
        else:
            raise SetupError("delegate", 2, "mkdir %s: its parent keeps disappearing" % path)
        touched.append(path)
    return touched

# ---------------------------------------------------------------- the no-op group

class NoCgroup:
    """What create() returns when limits are not required and cannot be had."""

    layout = None
    paths = []

    def __init__(self, limits=None, warning=None):
        self.warning = warning
        self._limits = fs.limits_dict(limits) if limits is not None else {}

    def attach(self, pid):
        pass

    def procs_files(self):
        return []

    def verdict(self):
        return {"oom": False, "pids_limited": False, "memory_peak": 0, "cpu_user": 0.0,
                "cpu_system": 0.0, "limits": self._limits, "accounted": False, "layout": None}

    def kill(self):
        pass

    def destroy(self):
        pass


# ---------------------------------------------------------------- entry points

def create(name, limits, uid=None, root=None, layout=None, own_pid_namespace=False):
    """Create the per-sandbox cgroup(s) and write the limits (parent, before fork).

    root: a cgroup2 mount point (or any cgroup2 directory) to use instead of the
    detected layout; used by tests to run the v2 logic on /sys/fs/cgroup/unified.
    uid: the user whose delegated subtree may be used (default: the effective uid).
    own_pid_namespace: every task will be in the sandbox's own pid namespace (but the
    stager's short-lived network helper), so killing its PID 1 tears it down atomically
    and v1 needs no freezer cgroup for that (cgroup_v1.hierarchies).
    Raises SetupError("cgroup", ...) when limits.required and they cannot be applied;
    otherwise returns NoCgroup with a one-line .warning.
    """
    fs.check_name(name)
    want = fs.requested(limits)
    required = bool(getattr(limits, "required", False))
    if root is not None:
        layout = "v2"
    elif layout is None:
        layout = fs.detect()
    try:
        try:
            if layout == "v1":
                from . import cgroup_v1
                return cgroup_v1.create(name, limits, want, uid=uid, own_pid_namespace=own_pid_namespace)
            if layout == "v2":
                from . import cgroup_v2
                return cgroup_v2.create(name, limits, want, uid=uid, root=root)
            raise SetupError("cgroup", 2, "no cgroup filesystem is mounted")
        except OSError as e:
            # whatever the kernel said where we did not expect it: still the cgroup stage
            raise SetupError("cgroup", e.errno or 5, "%s%s" % (e.strerror or e,
                                                               ": " + e.filename if e.filename else "")) from None
    except SetupError as e:
        if required:
            raise
        if not want:
            # Nothing was asked: accounting is lost, which is not worth a warning.
            return NoCgroup(limits, None)
        return NoCgroup(limits, "warning: running without resource limits (%s)"
                        % str(e).split(": ", 1)[-1])


class Pool:
    """The cgroups of one Sandbox's runs, made ahead and removed after the verdict.

    A run takes a *fresh* set (made for it and never joined by anything: `take`), or makes
    one on the spot when none is ready; after the verdict it hands its set back (`retire`)
    and the set is removed later, never reused. `tend()` does that later work — remove the
    retired sets, make fresh ones up to the number of runs lately in flight — and the
    supervisor calls it while it would only wait (a run's child is setting itself up), so
    neither mkdir nor rmdir sits between a caller and its verdict. `close()` removes
    everything (Sandbox.close, and at exit). A reused Sandbox only: its first run makes its
    own set and makes none ahead, so a one-shot run (the CLI) pays nothing for the pool.

    Liveness is each set's own: a fresh set holds its primary lock like a running one, so a
    dead supervisor's spares are orphans `gc` removes. A forked copy of the supervisor never
    takes the parent's spares (they would put two sandboxes in one cgroup)."""

    MAX_SPARES = 8

    def __init__(self, limits, new_name, own_pid_namespace=False):
        import _thread
        self.limits, self._new_name = limits, new_name
        self.own_pid_namespace = own_pid_namespace
        self._lock = _thread.allocate_lock()
        self._owner = os.getpid()
        self._fresh, self._retired = [], []
        self._making = 0
        self._in_flight = self._wanted = 0
        self._runs = 0
        self._broken = self._closed = False

    def take(self):
        """A fresh cgroup set for a run (made ahead, or now). Its name is the pool's own, never
        the sandbox's: a named sandbox's next run starts while the last one's set still waits
        for removal under its name."""
        with self._lock:
            self._runs += 1
            self._in_flight += 1
            self._wanted = max(self._wanted, self._in_flight)
            if self._fresh and self._owner == os.getpid():
                return self._fresh.pop()
        try:
            return create(self._new_name(), self.limits, own_pid_namespace=self.own_pid_namespace)
        except BaseException:
            self.done()
            raise

    def done(self):
        with self._lock:
            self._in_flight -= 1

    def retire(self, group):
        """A finished run's set: removed by the next tend() (or close), never reused."""
        with self._lock:
            self._in_flight -= 1
            if self._owner == os.getpid() and not self._closed:
                self._retired.append(group)
                return
        group.destroy()

    def sweep(self):
        """Remove the retired sets now (a long-lived owner between runs: pysandbox serve)."""
        while True:
            with self._lock:
                if not self._retired:
                    return
                group = self._retired.pop()
            group.destroy()

    def tend(self):
        """Remove the retired sets, then make fresh ones up to the runs lately in flight."""
        self.sweep()
        while True:
            with self._lock:
                want = min(self._wanted, self.MAX_SPARES) if self._runs > 1 else 0
                if self._broken or self._closed or self._owner != os.getpid() \
                        or len(self._fresh) + self._making >= want:
                    return
                self._making += 1
            group = None
            try:
                group = create(self._new_name(), self.limits, own_pid_namespace=self.own_pid_namespace)
            except Exception:
                # a spare is only a head start: the run makes its own set and reports what fails
                self._broken = True
            finally:
                with self._lock:
                    self._making -= 1
                    if group is not None and not self._closed:
                        self._fresh.append(group)
                        group = None
            if group is not None:
                group.destroy()  # the pool was closed while this one was being made

    def close(self):
        with self._lock:
            self._closed = True
            owner = self._owner == os.getpid()
            groups = self._retired + self._fresh if owner else []
            self._retired, self._fresh = [], []
        for group in groups:
            try:
                group.destroy()
            except Exception:
                pass
        if owner:
            release_parents()  # the last sandbox of the host gone: no parent of ours stays

    def held(self):
        """The sets this pool holds now (fresh and retired), for tests and the note."""
        with self._lock:
            return list(self._fresh), list(self._retired)


def gc(verbose=False, full=None):
    """Remove orphaned sandbox cgroups (supervisor dead, no task left) and stale state files.

    Cheap by default (the run path calls it): scans our `pysandbox` parent in the
    primary hierarchy only. verbose/full (`pysandbox gc`) scans every hierarchy.
    Returns the removed paths (and state files).
    """
    if full is None:
        full = verbose
    removed = []
    layout = fs.detect()
    try:
        if layout == "v1":
            from . import cgroup_v1
            removed += cgroup_v1.gc(full=full)
        elif layout == "v2":
            from . import cgroup_v2
            removed += cgroup_v2.gc(full=full)
    except (OSError, SetupError):
        pass  # the next gc tries again; a run must never fail because of another's leftovers
    try:
        removed += _gc_state(full)
    except OSError:
        pass
    if verbose:
        for path in removed:
            print("removed " + path)
    return removed


def _gc_state(full):
    """Stale state files: supervisor dead. The run-path call parses state only when a
    file exists whose sandbox has no locked cgroup (i.e. maybe a dead supervisor)."""
    from pysandbox_common import registry as state
    directory = state.state_dir()
    try:
        listing = os.listdir(directory)
    except OSError:
        return []
    out = state.remove_stale_temporaries(directory, [e for e in listing if e.endswith(".tmp")])
    entries = [e for e in listing if e.endswith(".json")]
    if not entries:
        return out
    for record in state.records(directory):
        supervisor = record.get("supervisor", 0)
        if not record.get("stale") or (supervisor and state.alive(supervisor)):
            continue
        # records() only yields names that are valid file names, matching their file
        state.unregister(record["name"])
        out.append(os.path.join(directory, record["name"] + ".json"))
    return out


# The shared helpers and constants live in cgroup_fs and are still reached through this module
# as before (cgroup.detect(), cgroup.PARENT): each is a property of this module's class, so
# reading one gives cgroup_fs's current value, and setting one (a test's private parent:
# `cgroup.PARENT = name`, or monkeypatch, which restores it the same way) sets it in
# cgroup_fs, where the layouts look it up: never a stale copy here.

def _forward(name):
    return property(lambda _module: getattr(fs, name), lambda _module, value: setattr(fs, name, value))


_ForwardingModule = type("_ForwardingModule", (type(os),), {
    name: _forward(name) for name in vars(fs) if not name.startswith("__") and name not in globals()})
__import__("sys").modules[__name__].__class__ = _ForwardingModule
