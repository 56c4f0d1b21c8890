"""The lifecycle commands (runc's semantics), over the state store and the container's cgroups."""
import os
import sys
import time

from . import hooks
from .cgroups import ContainerCgroups
from .errors import SpecError
from .state import NotFound, Store, oci_state, status

SIGNALS = {
    "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "IOT": 6, "BUS": 7, "FPE": 8, "KILL": 9,
    "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15, "STKFLT": 16, "CHLD": 17,
    "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21, "TTOU": 22, "URG": 23, "XCPU": 24, "XFSZ": 25,
    "VTALRM": 26, "PROF": 27, "WINCH": 28, "IO": 29, "POLL": 29, "PWR": 30, "SYS": 31,
}


def dispatch(command, glob, options, positional, log):
    store = Store(glob.get("--root"))
    handler = globals()["cmd_" + command]
    return handler(store, glob, options, positional, log) or 0


def _profile(glob):
    name = glob.get("--profile", "")
    if name and name not in ("strict", "default"):
        raise SpecError("--profile %r: pysandbox-oci knows the profiles strict and default" % name)
    return "" if name == "default" else name


def _systemd(glob):
    if not glob.get("--systemd-cgroup"):
        return False
    if not os.path.isdir("/run/systemd/system"):
        raise SpecError("--systemd-cgroup: systemd is not the init of this host; use the cgroupfs driver "
                        "(drop --systemd-cgroup, SystemdCgroup = false)")
    return True


def _preserve(options):
    value = options.get("--preserve-fds", "0")
    if not str(value).isdigit():
        raise SpecError("--preserve-fds %r: expected a number" % value)
    return int(value)


def cmd_create(store, glob, options, positional, log):
    from . import bundle, container
    systemd = _systemd(glob)
    plan = bundle.load(options.get("--bundle") or os.getcwd(), _profile(glob))
    container.create(store, positional[0], plan, pid_file=options.get("--pid-file", ""),
                     console_socket=options.get("--console-socket", ""), no_pivot=bool(options.get("--no-pivot")),
                     preserve_fds=_preserve(options), systemd=systemd, warn=log.warning,
                     new_keyring=not options.get("--no-new-keyring"))


def _locked(store, container_id):
    lock = store.lock(container_id)
    try:
        return lock, store.load(container_id)
    except BaseException:
        os.close(lock)
        raise


def cmd_start(store, glob, options, positional, log):
    cid = positional[0]
    lock, state = _locked(store, cid)
    try:
        current = status(store, cid, state)
        if current != "created":
            raise SpecError("cannot start a container that is %s (only a created one can start)" % current
                            if current != "stopped" else "cannot start a container that has stopped")
        fifo = store.fifo(cid)
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            raise SpecError("container %s: its process is gone (container not running)" % cid) from None
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
        os.unlink(fifo)
    finally:
        os.close(lock)
    state_text = hooks.state_json(cid, "running", state["pid"], state["bundle"], state.get("annotations"))
    for warning in hooks.run("poststart", _hooks(state, "poststart"), state_text):
        log.warning(warning)


def _hooks(state, kind):
    return [(h[0], tuple(h[1]), tuple(h[2]), h[3]) for h in (state.get("hooks") or {}).get(kind, ())]


def cmd_state(store, glob, options, positional, log):
    from . import fastjson as json
    state = store.load(positional[0])
    sys.stdout.write(json.dumps(oci_state(store, positional[0], state), indent=2) + "\n")


def parse_signal(text):
    text = (text or "TERM").upper()
    if text.isdigit():
        number = int(text)
        if not 0 < number < 65:
            raise SpecError("invalid signal %s" % text)
        return number
    name = text[3:] if text.startswith("SIG") else text
    if name in SIGNALS:
        return SIGNALS[name]
    if name.startswith("RTMIN") or name.startswith("RTMAX"):
        import signal
        base = signal.SIGRTMIN if name.startswith("RTMIN") else signal.SIGRTMAX
        offset = name[5:]
        try:
            return int(base) + (int(offset) if offset else 0)
        except ValueError:
            pass
    raise SpecError("invalid signal %r" % text)


def _signal(pid, started, sig):
    """Signal pid only if it is still the process we started (pidfd: no PID-reuse race)."""
    from .state import start_time
    if not pid or pid <= 0:
        return False
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    try:
        if start_time(pid)[0] != started:
            return False
        import _signal  # not `signal`: it imports enum, milliseconds on every kill
        _signal.pidfd_send_signal(pidfd, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(pidfd)


def cmd_kill(store, glob, options, positional, log):
    cid = positional[0]
    sig = parse_signal(positional[1] if len(positional) > 1 else "TERM")
    state = store.load(cid)
    current = status(store, cid, state)
    if current == "stopped":
        raise SpecError("container not running")
    if options.get("--all"):
        groups = ContainerCgroups.from_state(state.get("cgroups"))
        for pid in groups.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if current == "paused" and sig == 9:
            groups.freeze(False)
        return
    if not _signal(state["pid"], state.get("pid_start"), sig):
        raise SpecError("container not running")


def cmd_delete(store, glob, options, positional, log):
    cid = positional[0]
    try:
        lock, state = _locked(store, cid)
    except NotFound:
        if options.get("--force"):
            return  # runc: deleting what is already gone with --force succeeds
        raise
    try:
        current = status(store, cid, state)
        if current in ("running", "paused") and not options.get("--force"):
            raise SpecError("cannot delete container %s that is not stopped: %s" % (cid, current))
        groups = ContainerCgroups.from_state(state.get("cgroups"))
        if state.get("creating"):
            # left by a create that died half-way: its child exits when the channel closes,
            # but may not have yet
            _signal(state.get("child_pid") or 0, state.get("child_start"), 9)
        if current != "stopped":
            _kill_all(store, cid, state, groups)
        else:
            for pid in groups.pids():  # whatever the container left behind
                _kill_quiet(pid)
        left = groups.remove()
        for problem in left:
            log.warning("delete: cgroup %s" % problem)
        state_text = hooks.state_json(cid, "stopped", 0, state["bundle"], state.get("annotations"))
        for warning in hooks.run("poststop", _hooks(state, "poststop"), state_text):
            log.warning(warning)
        if state.get("profile"):
            from .strict import release_id_range
            release_id_range(store.dir(cid))
        store.remove(cid)
    finally:
        os.close(lock)


def _kill_quiet(pid, sig=9):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _kill_all(store, cid, state, groups):
    _signal(state["pid"], state.get("pid_start"), 9)
    for pid in groups.pids():
        _kill_quiet(pid)
    if groups.frozen():
        groups.freeze(False)
    deadline = time.monotonic() + 10
    while status(store, cid, state) != "stopped" or groups.pids():
        if time.monotonic() > deadline:
            raise SpecError("container %s: its processes did not die within 10 s of SIGKILL" % cid)
        for pid in groups.pids():
            _kill_quiet(pid)
        time.sleep(0.002)


def cmd_pause(store, glob, options, positional, log):
    cid = positional[0]
    lock, state = _locked(store, cid)
    try:
        current = status(store, cid, state)
        if current not in ("running", "created"):
            raise SpecError("container not running" if current == "stopped" else "container %s is %s" % (cid, current))
        ContainerCgroups.from_state(state.get("cgroups")).freeze(True)
    finally:
        os.close(lock)


def cmd_resume(store, glob, options, positional, log):
    cid = positional[0]
    lock, state = _locked(store, cid)
    try:
        if status(store, cid, state) != "paused":
            raise SpecError("container %s is not paused" % cid)
        ContainerCgroups.from_state(state.get("cgroups")).freeze(False)
    finally:
        os.close(lock)


def cmd_ps(store, glob, options, positional, log):
    from . import fastjson as json
    cid = positional[0]
    state = store.load(cid)
    groups = ContainerCgroups.from_state(state.get("cgroups"))
    pids = groups.pids() if groups.dirs else _pids_by_namespace(store, cid, state)
    fmt = options.get("--format", "table")
    if fmt == "json":
        sys.stdout.write(json.dumps(pids) + "\n")
        return
    if fmt != "table":
        raise SpecError("ps --format %r: expected table or json" % fmt)
    import subprocess
    args = positional[1:] or ["-ef"]
    out = subprocess.run(["ps"] + args, stdout=subprocess.PIPE, check=False).stdout.decode(errors="replace")
    lines = out.splitlines()
    if not lines:
        return
    header = lines[0].split()
    if "PID" not in header:
        raise SpecError("ps: the output has no PID column (give -ef or -o pid,...)")
    column = header.index("PID")
    keep = set(pids)
    sys.stdout.write(lines[0] + "\n")
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > column and fields[column].isdigit() and int(fields[column]) in keep:
            sys.stdout.write(line + "\n")


def _pids_by_namespace(store, cid, state):
    """Without a cgroup (rootless, nothing delegated): the processes in the container's own pid
    namespace, found by its inode in /proc. A container sharing a pid namespace has no such set."""
    if status(store, cid, state) == "stopped":
        return []
    try:
        inode = os.stat("/proc/%d/ns/pid" % state["pid"]).st_ino
    except OSError as e:
        raise SpecError("ps: cannot read the pid namespace of %s: %s" % (cid, e.strerror)) from None
    if inode == os.stat("/proc/self/ns/pid").st_ino:
        raise SpecError("ps: container %s has no cgroup and shares this pid namespace: its processes "
                        "cannot be told apart" % cid)
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat("/proc/%s/ns/pid" % entry).st_ino == inode:
                    found.append(int(entry))
            except OSError:
                continue
    return sorted(found)


def cmd_list(store, glob, options, positional, log):
    from . import fastjson as json
    rows = []
    for cid in store.ids():
        try:
            state = store.load(cid)
        except SpecError:
            continue
        rows.append(oci_state(store, cid, state))
    if options.get("--quiet"):
        sys.stdout.write("".join(r["id"] + "\n" for r in rows))
        return
    fmt = options.get("--format", "table")
    if fmt == "json":
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    table = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
    table += [(r["id"], str(r["pid"]), r["status"], r["bundle"], r["created"], r["owner"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(6)]
    for row in table:
        sys.stdout.write("   ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() + "\n")


def cmd_update(store, glob, options, positional, log):
    from . import fastjson as json
    cid = positional[0]
    lock, state = _locked(store, cid)
    try:
        if status(store, cid, state) == "stopped":
            raise SpecError("container not running")
        resources = {}
        source = options.get("--resources")
        if source:
            text = sys.stdin.read() if source == "-" else open(source).read()
            try:
                resources = json.loads(text)
            except ValueError as e:
                raise SpecError("--resources: not valid JSON: %s" % e) from None
        flag_map = {"--memory": ("memory", "limit"), "--memory-swap": ("memory", "swap"),
                    "--memory-reservation": ("memory", "reservation"), "--cpu-shares": ("cpu", "shares"),
                    "--cpu-quota": ("cpu", "quota"), "--cpu-period": ("cpu", "period"),
                    "--cpuset-cpus": ("cpu", "cpus"), "--cpuset-mems": ("cpu", "mems"),
                    "--pids-limit": ("pids", "limit"), "--blkio-weight": ("blockIO", "weight")}
        for flag, (section, key) in flag_map.items():
            if flag in options:
                value = options[flag]
                resources.setdefault(section, {})[key] = value if key in ("cpus", "mems") else int(value)
        from . import cgroups
        cgroups.validate(resources)
        ContainerCgroups.from_state(state.get("cgroups")).apply(resources)
    finally:
        os.close(lock)


def cmd_features(store, glob, options, positional, log):
    from . import fastjson as json
    from pysandbox_common.capnames import CAPABILITIES
    from pysandbox_common import VERSION
    from .spec import MOUNT_FLAGS, PROPAGATION, NAMESPACE_FLAGS
    from .. import oci_seccomp
    features = {
        "ociVersionMin": "1.0.0", "ociVersionMax": "1.0.2",
        "hooks": list(hooks.FATAL) + ["poststart", "poststop"],
        "mountOptions": sorted(list(MOUNT_FLAGS) + list(PROPAGATION)),
        "linux": {
            "namespaces": sorted(NAMESPACE_FLAGS),
            "capabilities": list(CAPABILITIES),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False},
            "seccomp": {"enabled": True, "actions": sorted(oci_seccomp.ACTIONS),
                        "operators": sorted(oci_seccomp.OPS), "archs": ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64",
                                                                         "SCMP_ARCH_X32"]},
            "apparmor": {"enabled": False}, "selinux": {"enabled": False},
        },
        "annotations": {"org.pysandbox.version": VERSION,
                        "org.pysandbox.profiles": "default (exactly the spec), strict"},
    }
    sys.stdout.write(json.dumps(features, indent=2) + "\n")


def cmd_spec(store, glob, options, positional, log):
    from . import fastjson as json
    bundle = options.get("--bundle") or os.getcwd()
    path = os.path.join(bundle, "config.json")
    if os.path.exists(path):
        raise SpecError("File %s exists. Remove it first" % path)
    from .template import default_spec
    with open(path, "w") as f:
        f.write(json.dumps(default_spec(rootless=bool(options.get("--rootless"))), indent=2))
        f.write("\n")


def cmd_run(store, glob, options, positional, log):
    from . import bundle, container
    import signal
    cid = positional[0]
    systemd = _systemd(glob)
    plan = bundle.load(options.get("--bundle") or os.getcwd(), _profile(glob))
    import ctypes
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: the container stays our child
    pid = container.create(store, cid, plan, pid_file=options.get("--pid-file", ""),
                           console_socket=options.get("--console-socket", ""),
                           no_pivot=bool(options.get("--no-pivot")), preserve_fds=_preserve(options),
                           systemd=systemd, warn=log.warning,
                           new_keyring=not options.get("--no-new-keyring"))
    cmd_start(store, glob, {}, [cid], log)
    if options.get("--detach"):
        return 0
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, lambda number, frame: _kill_quiet(pid, number))
    code = 255
    while True:
        try:
            got, status_word = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if got == pid:
            code = os.waitstatus_to_exitcode(status_word)
            code = 128 - code if code < 0 else code
            break
    if not options.get("--keep"):
        cmd_delete(store, glob, {"--force": True}, [cid], log)
    return code


def cmd_exec(store, glob, options, positional, log):
    from . import execute
    return execute.run(store, glob, options, positional, log)
