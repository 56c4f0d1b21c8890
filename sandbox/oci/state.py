"""Containers' state under --root: one directory per container holding state.json (written
atomically: a temporary file renamed over it), exec.fifo while the container is created and not
started, and a lock file every command takes (flock) so that concurrent calls on one container
are serialised (the engine's shim and a user's `docker kill` may race).

Status is derived, never trusted from the file: the recorded PID must still be the process we
started (its start time in /proc/PID/stat matches), and not a zombie; then paused when its
freezer is frozen, created while exec.fifo exists, running otherwise.
"""
import os

from .errors import SpecError

ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+.-")


def valid_id(text):
    """Letters, digits and _+.- (runc's rule), starting with a letter or digit; at most 1024."""
    return bool(text) and len(text) <= 1024 and text[0].isascii() and text[0].isalnum() and \
        set(text) <= ID_CHARS


class NotFound(SpecError):
    pass


def default_root():
    if os.geteuid() == 0:
        from pysandbox_common.containers import OCI_STATE_ROOT
        return OCI_STATE_ROOT
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir and os.path.isdir(runtime_dir) and os.stat(runtime_dir).st_uid == os.geteuid():
        return os.path.join(runtime_dir, "pysandbox-oci")
    return "/tmp/pysandbox-oci-%d" % os.geteuid()


def check_id(container_id):
    if not valid_id(container_id or "") or container_id in (".", ".."):
        raise SpecError("invalid container id %r: letters, digits and _+.- only" % container_id)
    return container_id


def start_time(pid):
    """Field 22 of /proc/PID/stat (clock ticks since boot), and the state letter."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except (OSError, ValueError):
        return None, None
    rest = data[data.rfind(b")") + 2:].split()
    return int(rest[19]), rest[0].decode()


class Store:
    def __init__(self, root):
        self.root = os.path.abspath(root or default_root())

    def dir(self, container_id):
        return os.path.join(self.root, check_id(container_id))

    def ensure_root(self):
        os.makedirs(self.root, mode=0o711, exist_ok=True)
        # A root another user made (or a symlink planted in /tmp) would let them swap our state:
        # it must be our own directory, writable by nobody else.
        import stat
        st = os.lstat(self.root)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise SpecError("--root %s: not a directory of this user's that only it can write" % self.root)

    def lock(self, container_id, create=False):
        """An exclusive flock on the container (held until the returned fd is closed)."""
        import fcntl
        directory = self.dir(container_id)
        if create:
            self.ensure_root()
            try:
                os.mkdir(directory, 0o711)
            except FileExistsError:
                raise SpecError("container with id %s already exists" % container_id) from None
        try:
            fd = os.open(os.path.join(directory, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            raise NotFound("container %s does not exist" % container_id) from None
        fcntl.flock(fd, fcntl.LOCK_EX)
        if not os.path.isdir(directory):
            os.close(fd)
            raise NotFound("container %s does not exist" % container_id)
        return fd

    def load(self, container_id):
        from . import fastjson as json
        try:
            with open(os.path.join(self.dir(container_id), "state.json"), "rb") as f:
                return json.loads(f.read())
        except FileNotFoundError:
            raise NotFound("container %s does not exist" % container_id) from None
        except ValueError:
            raise SpecError("container %s: state.json is damaged" % container_id) from None

    def save(self, container_id, state, sync=True):
        from . import fastjson as json
        directory = self.dir(container_id)
        tmp = os.path.join(directory, ".state.json.tmp")
        with open(tmp, "w") as f:
            f.write(json.dumps(state))
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.rename(tmp, os.path.join(directory, "state.json"))

    def ids(self):
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        return [n for n in names if valid_id(n) and os.path.exists(os.path.join(self.root, n, "state.json"))]

    def remove(self, container_id):
        # what create and save put there, then the directory (shutil costs ~10 ms to import)
        directory = self.dir(container_id)
        for name in ("state.json", ".state.json.tmp", "exec.fifo", "lock"):
            try:
                os.unlink(os.path.join(directory, name))
            except FileNotFoundError:
                pass
        try:
            os.rmdir(directory)
        except FileNotFoundError:
            pass

    def fifo(self, container_id):
        return os.path.join(self.dir(container_id), "exec.fifo")


def status(store, container_id, state):
    """created | running | paused | stopped, from the kernel's view of the recorded process."""
    pid = state.get("pid") or 0
    if state.get("creating"):
        # `create` still at work (its own process alive), or it died half-way: then stopped, and
        # `delete` removes what it left
        runtime = state.get("runtime_pid") or 0
        alive = runtime > 0 and start_time(runtime)[0] == state.get("runtime_start")
        return "creating" if alive else "stopped"
    if pid <= 0:
        return "stopped"
    started, letter = start_time(pid)
    if started is None or started != state.get("pid_start") or letter in ("Z", "X"):
        return "stopped"
    from .cgroups import ContainerCgroups
    if ContainerCgroups.from_state(state.get("cgroups")).frozen():
        return "paused"
    if os.path.exists(store.fifo(container_id)):
        return "created"
    return "running"


def oci_state(store, container_id, state):
    """The runtime-spec's state object (what `state` prints and hooks read on stdin)."""
    current = status(store, container_id, state)
    return {
        "ociVersion": state.get("ociVersion", "1.0.2"), "id": container_id, "status": current,
        "pid": state.get("pid", 0) if current != "stopped" else 0, "bundle": state.get("bundle", ""),
        "rootfs": state.get("rootfs", ""), "created": state.get("created", ""),
        "annotations": state.get("annotations") or {}, "owner": state.get("owner", ""),
    }
