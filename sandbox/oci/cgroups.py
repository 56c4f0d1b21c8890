"""The container's cgroups: linux.cgroupsPath in every hierarchy, linux.resources written to them,
and the freezer, signals and teardown the lifecycle commands need.

cgroup v1 (one mount per controller set) and cgroup v2 (one unified mount) are both handled: on a
hybrid host (v1 controllers plus a cgroup2 mount, as here) the container gets a directory in each,
like runc. A resource the spec sets whose file the host does not have is refused with the file's
name: never dropped. Only directories this runtime created are removed, deepest first.
"""
import os
import time

from .errors import SpecError

DEFAULT_ALLOWED_DEVICES = ("c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm", "c 5:0 rwm",
                           "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm")
DEFAULT_PARENT = "pysandbox-oci"  # cgroupsPath when the spec gives none: /pysandbox-oci/<id>
RESOURCE_KEYS = ("memory", "pids", "cpu", "blockIO", "hugepageLimits", "devices", "unified", "network", "rdma")
V1_NAMED = {"name=systemd"}


def hierarchies(mountinfo="/proc/self/mountinfo"):
    """[(version, mountpoint, controllers)] of the cgroup mounts of this mount namespace."""
    out, seen = [], set()
    with open(mountinfo) as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
                continue
            point = fields[4].replace("\\040", " ")
            if tail[0] == "cgroup2":
                key = ("v2",)
                controllers = ()
            else:
                controllers = tuple(o for o in tail[2].split(",") if o not in ("rw", "ro", "relatime", "noexec",
                                                                             "nosuid", "nodev", "clone_children",
                                                                             "xattr", "noprefix") and
                                    not o.startswith("release_agent="))
                key = controllers
            if key in seen or not (fields[3] == "/" or fields[3].startswith("/..")):
                continue
            seen.add(key)
            out.append(("v2" if tail[0] == "cgroup2" else "v1", point, controllers))
    return out


def own_cgroup(pid="self"):
    """{controllers-or-'': path} of a process (/proc/PID/cgroup)."""
    out = {}
    with open("/proc/%s/cgroup" % pid) as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            out[controllers] = path
    return out


def expand_systemd(path):
    """runc's systemd form 'slice:prefix:name' as the directory systemd would make for it:
    system.slice:docker:ID -> /system.slice/docker-ID.scope ('a-b.slice' nests in 'a.slice')."""
    parts = path.split(":")
    if len(parts) != 3:
        raise SpecError("linux.cgroupsPath %r: the systemd form is slice:prefix:name" % path)
    slice_name, prefix, name = parts
    slice_name = slice_name or "system.slice"
    if not slice_name.endswith(".slice"):
        raise SpecError("linux.cgroupsPath %r: %r is not a slice" % (path, slice_name))
    base = slice_name[:-len(".slice")]
    dirs, acc = [], ""
    for piece in base.split("-"):
        acc = piece if not acc else acc + "-" + piece
        dirs.append(acc + ".slice")
    unit = name if name.endswith(".slice") else "%s-%s.scope" % (prefix, name) if prefix else name + ".scope"
    return "/" + "/".join(dirs + [unit])


def paths_for(cgroups_path, container_id, systemd=False):
    """{mountpoint: directory} the container's cgroups live in."""
    if systemd or (cgroups_path.count(":") == 2 and not cgroups_path.startswith("/")):
        inner = expand_systemd(cgroups_path or "system.slice:pysandbox:" + container_id)
    else:
        inner = cgroups_path or "/%s/%s" % (DEFAULT_PARENT, container_id)
    out = {}
    own = own_cgroup() if not inner.startswith("/") else {}
    for version, point, controllers in hierarchies():
        if controllers and set(controllers) <= V1_NAMED:
            continue
        base = "/"
        if not inner.startswith("/"):
            # relative: under the runtime's own cgroup in that hierarchy (runc's rule)
            base = own.get("" if version == "v2" else ",".join(controllers), "/")
        directory = os.path.normpath(os.path.join(point, base.lstrip("/"), inner.lstrip("/")))
        if not directory.startswith(point.rstrip("/") + "/"):
            raise SpecError("linux.cgroupsPath %r: leaves the cgroup hierarchy" % cgroups_path)
        out[point] = directory
    return out


_INT, _STR, _BOOL = "int", "str", "bool"
_DEVICE_RATE = {"major": _INT, "minor": _INT, "rate": _INT}
# linux.resources as the runtime-spec types it: a field this runtime would not apply is refused
# here by name (never dropped), so a typo or a newer field fails create instead of going unheard.
RESOURCE_SCHEMA = {
    "memory": {"limit": _INT, "reservation": _INT, "swap": _INT, "kernel": _INT, "kernelTCP": _INT,
               "swappiness": _INT, "disableOOMKiller": _BOOL, "useHierarchy": _BOOL},
    "cpu": {"shares": _INT, "quota": _INT, "burst": _INT, "period": _INT, "realtimeRuntime": _INT,
            "realtimePeriod": _INT, "cpus": _STR, "mems": _STR, "idle": _INT},
    "pids": {"limit": _INT},
    "blockIO": {"weight": _INT, "leafWeight": _INT,
                "weightDevice": [{"major": _INT, "minor": _INT, "weight": _INT, "leafWeight": _INT}],
                "throttleReadBpsDevice": [_DEVICE_RATE], "throttleWriteBpsDevice": [_DEVICE_RATE],
                "throttleReadIOPSDevice": [_DEVICE_RATE], "throttleWriteIOPSDevice": [_DEVICE_RATE]},
    "hugepageLimits": [{"pageSize": _STR, "limit": _INT}],
    "devices": [{"allow": _BOOL, "type": _STR, "major": _INT, "minor": _INT, "access": _STR}],
    "unified": "unified",
    "network": {"classID": _INT, "priorities": [{"name": _STR, "priority": _INT}]},
    "rdma": "rdma",
}


def _check(value, schema, where):
    kinds = {_INT: int, _STR: str, _BOOL: bool}
    if isinstance(schema, str) and schema in kinds:
        if not isinstance(value, kinds[schema]) or (schema == _INT and isinstance(value, bool)):
            raise SpecError("%s: expected %s" % (where, {"int": "an integer", "str": "a string",
                                                          "bool": "true or false"}[schema]))
    elif isinstance(schema, list):
        if not isinstance(value, list):
            raise SpecError("%s: expected a list" % where)
        for i, item in enumerate(value):
            _check(item, schema[0], "%s[%d]" % (where, i))
    elif isinstance(schema, dict):
        if not isinstance(value, dict):
            raise SpecError("%s: expected an object" % where)
        for key, item in value.items():
            if key not in schema:
                raise SpecError("%s.%s: not a field pysandbox-oci applies" % (where, key))
            if item is not None:
                _check(item, schema[key], "%s.%s" % (where, key))
    elif schema == "unified":
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise SpecError("%s: expected an object of file names and string values" % where)
    elif schema == "rdma":
        if not isinstance(value, dict):
            raise SpecError("%s: expected an object" % where)


def validate(resources):
    """Shape checks before any fork (the values are checked by the kernel as they are written)."""
    if not isinstance(resources, dict):
        raise SpecError("linux.resources: expected an object")
    for key, value in resources.items():
        if key not in RESOURCE_SCHEMA:
            raise SpecError("linux.resources.%s: unknown resource" % key)
        if value is not None:
            _check(value, RESOURCE_SCHEMA[key], "linux.resources." + key)
    for key in ("network", "rdma"):
        if resources.get(key):
            raise SpecError("linux.resources.%s: this host has no %s controller" % (key, key))
    for entry in resources.get("hugepageLimits") or ():
        if "/" in (entry.get("pageSize") or "/") or ".." in entry.get("pageSize", ""):
            raise SpecError("linux.resources.hugepageLimits: pageSize %r is not a page size" % entry.get("pageSize"))
    for entry in resources.get("devices") or ():
        if (entry.get("type") or "a") not in ("a", "b", "c") or not set(entry.get("access") or "rwm") <= set("rwm"):
            raise SpecError("linux.resources.devices: type must be a, b or c and access of r, w, m")


def _write(directory, name, value, what):
    path = os.path.join(directory, name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SpecError("%s: %s does not exist (the controller or the feature is missing on this host)"
                        % (what, path)) from None
    except OSError as e:
        raise SpecError("%s: %s: %s" % (what, path, e.strerror)) from None
    try:
        os.write(fd, str(value).encode())
    except OSError as e:
        raise SpecError("%s: writing %r to %s: %s" % (what, value, path, e.strerror)) from None
    finally:
        os.close(fd)


def _dev(entry, what):
    try:
        return "%d:%d" % (entry["major"], entry["minor"])
    except (KeyError, TypeError):
        raise SpecError("%s: expected major and minor" % what) from None


def writes(resources):
    """[(controller, file, value, what)] for cgroup v1, in the order the kernel accepts them."""
    out = []
    mem = resources.get("memory") or {}
    limit, swap = mem.get("limit"), mem.get("swap")
    if limit is not None:
        out.append(("memory", "memory.limit_in_bytes", limit, "linux.resources.memory.limit"))
    if swap is not None and (limit is None or swap != limit or swap > 0):
        # memsw is memory + swap and must not be below the memory limit: written after it
        out.append(("memory", "memory.memsw.limit_in_bytes", swap, "linux.resources.memory.swap"))
    if mem.get("reservation") is not None:
        out.append(("memory", "memory.soft_limit_in_bytes", mem["reservation"], "linux.resources.memory.reservation"))
    if mem.get("swappiness") is not None and 0 <= mem["swappiness"] <= 100:
        out.append(("memory", "memory.swappiness", mem["swappiness"], "linux.resources.memory.swappiness"))
    if mem.get("disableOOMKiller"):
        out.append(("memory", "memory.oom_control", 1, "linux.resources.memory.disableOOMKiller"))
    for key, name in (("kernel", "memory.kmem.limit_in_bytes"), ("kernelTCP", "memory.kmem.tcp.limit_in_bytes")):
        if mem.get(key):
            out.append(("memory", name, mem[key], "linux.resources.memory." + key))
    if mem.get("useHierarchy") is not None:
        out.append(("memory", "memory.use_hierarchy", int(mem["useHierarchy"]), "linux.resources.memory.useHierarchy"))
    pids = resources.get("pids") or {}
    if pids.get("limit") is not None:
        out.append(("pids", "pids.max", pids["limit"] if pids["limit"] > 0 else "max", "linux.resources.pids.limit"))
    cpu = resources.get("cpu") or {}
    for key, name in (("shares", "cpu.shares"), ("period", "cpu.cfs_period_us"), ("quota", "cpu.cfs_quota_us"),
                      ("burst", "cpu.cfs_burst_us"), ("idle", "cpu.idle"),
                      ("realtimePeriod", "cpu.rt_period_us"), ("realtimeRuntime", "cpu.rt_runtime_us")):
        if cpu.get(key):
            out.append(("cpu", name, cpu[key], "linux.resources.cpu." + key))
    for key, name in (("cpus", "cpuset.cpus"), ("mems", "cpuset.mems")):
        if cpu.get(key):
            out.append(("cpuset", name, cpu[key], "linux.resources.cpu." + key))
    blkio = resources.get("blockIO") or {}
    if blkio.get("weight"):
        out.append(("blkio", "blkio.weight", blkio["weight"], "linux.resources.blockIO.weight"))
    if blkio.get("leafWeight"):
        out.append(("blkio", "blkio.leaf_weight", blkio["leafWeight"], "linux.resources.blockIO.leafWeight"))
    for entry in blkio.get("weightDevice") or ():
        what = "linux.resources.blockIO.weightDevice"
        if entry.get("weight"):
            out.append(("blkio", "blkio.weight_device", "%s %d" % (_dev(entry, what), entry["weight"]), what))
    for key, name in (("throttleReadBpsDevice", "blkio.throttle.read_bps_device"),
                      ("throttleWriteBpsDevice", "blkio.throttle.write_bps_device"),
                      ("throttleReadIOPSDevice", "blkio.throttle.read_iops_device"),
                      ("throttleWriteIOPSDevice", "blkio.throttle.write_iops_device")):
        for entry in blkio.get(key) or ():
            what = "linux.resources.blockIO." + key
            out.append(("blkio", name, "%s %d" % (_dev(entry, what), entry.get("rate", 0)), what))
    for entry in resources.get("hugepageLimits") or ():
        what = "linux.resources.hugepageLimits"
        out.append(("hugetlb", "hugetlb.%s.limit_in_bytes" % entry.get("pageSize"), entry.get("limit", 0), what))
    rules = resources.get("devices")
    if rules:
        for entry in rules:
            kind = entry.get("type") or "a"
            major = "*" if entry.get("major") in (None, -1) else entry["major"]
            minor = "*" if entry.get("minor") in (None, -1) else entry["minor"]
            rule = "a" if kind == "a" and major == "*" and minor == "*" else "%s %s:%s %s" % (
                kind, major, minor, entry.get("access") or "rwm")
            out.append(("devices", "devices.allow" if entry.get("allow") else "devices.deny", rule,
                        "linux.resources.devices"))
        # The devices every container has (runtime-spec "Default Devices") and its own ptys stay
        # usable whatever the rules above denied (runc appends the same list).
        for rule in DEFAULT_ALLOWED_DEVICES:
            out.append(("devices", "devices.allow", rule, "linux.resources.devices (default devices)"))
    return out


class ContainerCgroups:
    """The container's directories: {mountpoint: directory}, the ones this runtime made, the v2 one."""

    def __init__(self, dirs, created=()):
        self.dirs, self.created = dict(dirs), list(created)

    def to_state(self):
        return {"dirs": self.dirs, "created": self.created}

    @classmethod
    def from_state(cls, data):
        return cls((data or {}).get("dirs") or {}, (data or {}).get("created") or ())

    def layout(self):
        """[(version, mountpoint, controllers, directory)] of the container's cgroups."""
        return [(v, point, controllers, self.dirs[point]) for v, point, controllers in hierarchies()
                if point in self.dirs]

    def controller_dir(self, controller):
        for version, point, controllers in hierarchies():
            if controller in controllers and point in self.dirs:
                return self.dirs[point]
        return None

    @property
    def v2_dir(self):
        for version, point, _ in hierarchies():
            if version == "v2" and point in self.dirs:
                return self.dirs[point]
        return None

    def create(self):
        # Parents are shared (/pysandbox-oci/<id> for every container): making them and removing
        # the last one's parent happen under one lock, so a delete never removes the parent a
        # concurrent create is about to make its cgroup in.
        lock = _parents_lock()
        try:
            self._create()
        finally:
            _release(lock)

    def _create(self):
        cpuset_points = {point for _, point, controllers in hierarchies() if "cpuset" in controllers}
        for point, directory in list(self.dirs.items()):
            missing = []
            d = directory
            while d != point and not os.path.isdir(d):
                missing.append(d)
                d = os.path.dirname(d)
            for d in reversed(missing):
                try:
                    os.mkdir(d, 0o755)
                except FileExistsError:
                    continue
                except PermissionError:
                    if os.geteuid() != 0:
                        # rootless without a delegated hierarchy: no cgroup there (like runc);
                        # a resource that needs it is refused by apply() with its name
                        del self.dirs[point]
                        break
                    raise SpecError("cgroup %s: permission denied" % d) from None
                except OSError as e:
                    raise SpecError("cgroup %s: %s" % (d, e.strerror)) from None
                self.created.append(d)
                if point in cpuset_points:
                    # a v1 cpuset cgroup takes no task until its cpus and mems are set
                    for name in ("cpuset.cpus", "cpuset.mems"):
                        with open(os.path.join(os.path.dirname(d), name)) as f:
                            value = f.read().strip()
                        _write(d, name, value, "cgroup " + d)

    def apply(self, resources):
        for controller, name, value, what in writes(resources):
            directory = self.controller_dir(controller)
            if directory is None and controller == "hugetlb" and self.v2_dir:
                directory, name = self.v2_dir, name.replace(".limit_in_bytes", ".max")
            if directory is None:
                raise SpecError("%s: this host has no %s cgroup controller" % (what, controller))
            _write(directory, name, value, what)
        unified = resources.get("unified") or {}
        if unified:
            if self.v2_dir is None:
                raise SpecError("linux.resources.unified: this host has no cgroup2 hierarchy")
            for key, value in sorted(unified.items()):
                if "/" in key or key.startswith("."):
                    raise SpecError("linux.resources.unified.%s: not a cgroup file name" % key)
                _write(self.v2_dir, key, value, "linux.resources.unified." + key)

    def attach(self, pid):
        for directory in self.dirs.values():
            _write(directory, "cgroup.procs", pid, "cgroup")

    def pids(self):
        found = []
        for directory in self.dirs.values():
            try:
                with open(os.path.join(directory, "cgroup.procs")) as f:
                    found = [int(x) for x in f.read().split()]
            except OSError:
                continue
            break
        return found

    # -- freezer
    def _freezer(self):
        directory = self.controller_dir("freezer")
        if directory is not None:
            return "v1", directory
        if self.v2_dir and os.path.exists(os.path.join(self.v2_dir, "cgroup.freeze")):
            return "v2", self.v2_dir
        return None, None

    def frozen(self):
        kind, directory = self._freezer()
        try:
            if kind == "v1":
                with open(os.path.join(directory, "freezer.state")) as f:
                    return f.read().strip() == "FROZEN"
            if kind == "v2":
                with open(os.path.join(directory, "cgroup.freeze")) as f:
                    return f.read().strip() == "1"
        except OSError:
            pass
        return False

    def freeze(self, on):
        kind, directory = self._freezer()
        if kind is None:
            raise SpecError("pause: this host has no freezer (cgroup v1 freezer or cgroup2 cgroup.freeze)")
        if kind == "v2":
            _write(directory, "cgroup.freeze", 1 if on else 0, "freezer")
            return
        want = "FROZEN" if on else "THAWED"
        deadline = time.monotonic() + 5
        while True:
            _write(directory, "freezer.state", want, "freezer")
            with open(os.path.join(directory, "freezer.state")) as f:
                if f.read().strip() == want:
                    return
            if time.monotonic() > deadline:
                raise SpecError("freezer: %s did not reach %s" % (directory, want))
            time.sleep(0.001)

    def remove(self, timeout=5.0):
        """Remove the directories this runtime made (deepest first), waiting for tasks to leave."""
        deadline = time.monotonic() + timeout
        left = []
        lock = None
        for d in sorted(self.created, key=lambda p: -p.count("/")):
            if lock is None and d not in self.dirs.values():
                lock = _parents_lock()  # the leaves are gone: now the shared parents
            while True:
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno == 16 and _has_children(d):
                        break  # a parent we made that another container's cgroup now lives in
                    if e.errno == 16 and time.monotonic() < deadline:  # EBUSY: tasks still leaving
                        time.sleep(0.002)
                        continue
                    left.append("%s: %s" % (d, e.strerror))
                    break
        # The default parent /pysandbox-oci is this runtime's own: whoever leaves it empty
        # removes it, whichever container made it.
        for point, directory in self.dirs.items():
            parent = os.path.dirname(directory)
            if os.path.basename(parent) == DEFAULT_PARENT and os.path.dirname(parent) == point:
                if lock is None:
                    lock = _parents_lock()
                try:
                    os.rmdir(parent)
                except OSError:
                    pass  # another container's cgroup is still in it
        _release(lock)
        return left


def _has_children(directory):
    try:
        with os.scandir(directory) as entries:
            return any(entry.is_dir(follow_symlinks=False) for entry in entries)
    except OSError:
        return False


PARENTS_LOCK = "/run/pysandbox-oci-cgroups.lock"


def _parents_lock():
    import fcntl
    try:
        fd = os.open(PARENTS_LOCK if os.geteuid() == 0 else "/tmp/pysandbox-oci-cgroups-%d.lock" % os.geteuid(),
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError:
        return None
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _release(fd):
    if fd is not None and fd is not False:
        os.close(fd)
