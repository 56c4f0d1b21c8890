"""Registry of running sandboxes, so `audit NAME` and `pysandbox gc` can find them.

Each running sandbox has one JSON file `<state_dir>/<name>.json`:
    {"name": str, "pid": int (host pid of the sandbox's PID 1), "supervisor": int,
     "profile": str, "started": float (epoch), "cgroups": [str, ...], "uid": int}
The file is written after the sandbox's PID 1 exists and removed when the supervisor
tears the sandbox down. A file whose supervisor is dead is stale (its PID 1 died with
it through PDEATHSIG); `running()` skips such files and `gc` removes them.
"""
import os

# Names become file names here and cgroup directory names elsewhere.
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def valid_name(name):
    return bool(name) and len(name) <= 64 and name[0] not in ".-" and set(name) <= NAME_CHARS


def _dumps(value):
    """JSON for the record's plain values (the json module is not imported on the run path)."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        out = ['"']
        for ch in value:
            if ch in '"\\':
                out.append("\\" + ch)
            elif ord(ch) < 0x20:
                out.append("\\u%04x" % ord(ch))
            else:
                out.append(ch)
        return "".join(out) + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_dumps(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(_dumps(str(k)) + ": " + _dumps(v) for k, v in value.items()) + "}"
    return _dumps(str(value))


def state_dir(uid=None):
    """Directory for this user's state files (root: /run/pysandbox)."""
    override = os.environ.get("PYSANDBOX_STATE_DIR")
    if override:
        return override
    uid = os.geteuid() if uid is None else uid
    if uid == 0:
        return "/run/pysandbox"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, "pysandbox")
    return "/tmp/pysandbox-%d" % uid


def alive(pid):
    """Does process `pid` exist (a zombie counts)? EPERM means it does, owned by another user."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _open_dir(create):
    """A descriptor on the state directory, trusted only if it is a real directory of ours
    that nobody else can write. Rootless without XDG_RUNTIME_DIR the directory sits in
    /tmp under a predictable name, where another user could have made it first (and
    planted symlinks in it)."""
    directory = state_dir()
    if create:
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass
        except FileNotFoundError:
            os.makedirs(os.path.dirname(directory), exist_ok=True)
            os.mkdir(directory, 0o700)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        os.close(fd)
        raise PermissionError(1, "state directory %s is not private to this user; refusing to use it" % directory)
    return fd


def _write(dirfd, record):
    """NAME.json, whole or not at all: written beside it and renamed over it."""
    final = record["name"] + ".json"
    tmp = "%s.%d.tmp" % (final, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dirfd)
    try:
        os.write(fd, _dumps(record).encode())
    finally:
        os.close(fd)
    os.rename(tmp, final, src_dir_fd=dirfd, dst_dir_fd=dirfd)
    return os.path.join(state_dir(), final)


def register(record):
    if not valid_name(record["name"]):
        raise ValueError("invalid sandbox name %r" % record["name"])
    dirfd = _open_dir(create=True)
    try:
        return _write(dirfd, record)
    finally:
        os.close(dirfd)


def claim(record):
    """Register `record` unless a live sandbox holds its name; returns that one's record
    (then nothing is written), else None. Atomic among claimers: they hold the state
    directory's lock across the check and the write, so two runs of one name that start
    together cannot both go (a check and a later register could)."""
    if not valid_name(record["name"]):
        raise ValueError("invalid sandbox name %r" % record["name"])
    import fcntl
    dirfd = _open_dir(create=True)
    try:
        fcntl.flock(dirfd, fcntl.LOCK_EX)
        holder = None
        try:
            fd = os.open(record["name"] + ".json", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
        except FileNotFoundError:
            fd = None
        if fd is not None:
            import json
            try:
                with os.fdopen(fd) as f:
                    holder = json.load(f)
            except ValueError:
                holder = None
            if not isinstance(holder, dict) or not isinstance(holder.get("pid"), int) or \
                    not (alive(holder.get("supervisor", 0)) and alive(holder["pid"])):
                holder = None  # a dead supervisor's: replaced
        if holder is None:
            _write(dirfd, record)
        return holder
    finally:
        os.close(dirfd)  # and with it the lock


def remove_stale_temporaries(directory, names):
    """Remove NAME.json.PID.tmp files (register()'s, before its rename) whose writer is
    gone: a supervisor killed between the two leaves one. Returns the paths removed."""
    out = []
    for entry in names:
        head, _, pid = entry[:-len(".tmp")].rpartition(".") if entry.endswith(".tmp") else ("", "", "")
        if not head.endswith(".json") or not valid_name(head[:-len(".json")]) or not pid.isdigit():
            continue
        if alive(int(pid)):
            continue
        try:
            os.unlink(os.path.join(directory, entry))
            out.append(os.path.join(directory, entry))
        except OSError:
            pass
    return out


def unregister(name):
    if not valid_name(name):
        return
    try:
        dirfd = _open_dir(create=False)
    except OSError:
        return
    try:
        os.unlink(name + ".json", dir_fd=dirfd)
    except FileNotFoundError:
        pass
    finally:
        os.close(dirfd)
    try:
        os.rmdir(state_dir())  # only when it holds no other sandbox: a per-user dir in /tmp must not pile up
    except OSError:
        pass


def exists(name):
    return valid_name(name) and os.path.exists(os.path.join(state_dir(), name + ".json"))


def records(directory=None):
    """Every state record, live or stale, as dicts (with "stale": bool added)."""
    out = []
    try:
        if directory is None:
            dirfd = _open_dir(create=False)
        else:
            dirfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return out
    try:
        names = sorted(os.listdir(dirfd))
        for entry in names:
            if not entry.endswith(".json") or not valid_name(entry[:-5]):
                continue
            try:
                import json    # only with a record to read: `audit PID` checks the registry every time
                fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
                with os.fdopen(fd) as f:
                    record = json.load(f)
            except (OSError, ValueError):
                continue
            if not isinstance(record, dict) or record.get("name") != entry[:-5] \
                    or not isinstance(record.get("pid"), int):
                continue
            out.append(record)
    finally:
        os.close(dirfd)
    for record in out:
        record["stale"] = not (alive(record.get("supervisor", 0)) and alive(record["pid"]))
    return out


def running(directory=None):
    """Records of sandboxes that are alive now (not a name still being claimed by a
    supervisor whose sandbox is not started: its record names no sandbox yet)."""
    return [r for r in records(directory) if not r["stale"] and not r.get("starting")]


def find(name, directory=None):
    for record in running(directory):
        if record["name"] == name:
            return record
    return None
