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


def register(record):
    directory = state_dir()
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, record["name"] + ".json")
    tmp = path + ".%d.tmp" % os.getpid()
    with open(tmp, "w") as f:
        f.write(_dumps(record))
    os.replace(tmp, path)
    return path


def unregister(name):
    directory = state_dir()
    try:
        os.unlink(os.path.join(directory, name + ".json"))
    except FileNotFoundError:
        pass
    try:
        os.rmdir(directory)  # only when it holds no other sandbox: a per-user dir in /tmp must not pile up
    except OSError:
        pass


def exists(name):
    return os.path.exists(os.path.join(state_dir(), name + ".json"))


def records(directory=None):
    """Every state record, live or stale, as dicts (with "stale": bool added)."""
    import json
    directory = directory or state_dir()
    out = []
    try:
        names = sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return out
    for entry in names:
        if not entry.endswith(".json"):
            continue
        try:
            with open(os.path.join(directory, entry)) as f:
                record = json.load(f)
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict) or "pid" not in record:
            continue
        record["stale"] = not (alive(record.get("supervisor", 0)) and alive(record["pid"]))
        out.append(record)
    return out


def running(directory=None):
    """Records of sandboxes that are alive now."""
    return [r for r in records(directory) if not r["stale"]]


def find(name, directory=None):
    for record in running(directory):
        if record["name"] == name:
            return record
    return None
