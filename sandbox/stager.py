"""The compiled child: stages.CHILD_STAGES turned into a program for sandbox/stager.c.

A run's child side is the same list of kernel calls whoever makes them. The Python
stages make them in a child forked from the supervisor, which on this kind of machine
(a VM: every page fault and page-table copy traps) costs two copies of a Python heap
per run. The stager is a small static program started with posix_spawn (a vfork); it
runs the calls from a program compiled here once per Sandbox.

`compile(plan)` walks CHILD_STAGES in order and asks each stage's compiler (COMPILERS,
by the stage's process and name) for its operations. A stage without a compiler, or a
plan feature a compiler does not take, raises Unsupported: the Sandbox then runs the
Python stages (never a run with a layer left out). Per run the supervisor also uses the
Python stages when a run needs what only they do (a pty relay) or when the native layer
is replaced by the recording fake (tests that drive single stages).

The program: b"PSBX", a version, then operations: (code, number of arguments,
arguments); every argument is length-prefixed bytes with a NUL after them, numbers are
8 bytes little-endian. OPS below is the one list of operation names; sandbox/stager.h is
generated from it (`python3 -m sandbox.stager > sandbox/stager.h`, checked by a test).
"""
import os

from . import native
from .errors import SetupError

MAGIC = b"PSBX"
VERSION = 4  # 4: the command and environment fields are counted (parse_run)

# name: what it does (stager.c has one case per name, in this order)
OPS = (
    ("clone", 1, "the namespaces clone() makes (always first; the stager itself runs it)"),
    ("stage", 1, "the stage later errors are reported under"),
    ("pdeathsig", 0, "PR_SET_PDEATHSIG SIGKILL"),
    ("join_cgroups", 0, "write 0 to the run's v1 tasks files"),
    ("wait_go", 0, "wait for the supervisor's G"),
    ("enter_ids", 3, "setgroups(none)?, uid, gid inside the user namespace"),
    ("unshare", 1, "unshare(flags)"),
    ("sethostname", 1, "sethostname"),
    ("write", 5, "path, data, open flags, mode, label"),
    ("loopback", 0, "bring lo up"),
    ("mount", 6, "source, target, fstype, flags, data, label"),
    ("mount_sysfs", 2, "a fresh sysfs or a read-only bind of the host's"),
    ("restrict", 3, "nosuid, nodev (, read-only) recursively"),
    ("mkdir", 3, "path, mode, exist_ok"),
    ("mkdirs", 2, "path, mode"),
    ("mount_point", 2, "path, is_dir"),
    ("symlink", 2, "target, path"),
    ("pivot", 2, "new root, put old"),
    ("chdir", 1, "path"),
    ("umount", 3, "path, flags, label"),
    ("attach", 3, "source index, target, is_dir (move_mount of a detached tree)"),
    ("target_in_root", 3, "root, path, is_dir (made without following a link)"),
    ("proc_stat", 2, "path, copy"),
    ("mask", 1, "number of masked paths, masked paths, read-only paths"),
    ("close_host_fds", 0, "everything but stdio and the channel"),
    ("fork", 0, "fork the command; PID 1 goes on at init"),
    ("signals", 1, "default dispositions; setsid when set"),
    ("become_ids", 3, "uid, gid, keep capabilities"),
    ("rlimits", 0, "(resource, soft, hard)..."),
    ("cpu_time", 0, "RLIMIT_CPU from the run's budget"),
    ("cwd", 0, "chdir to the run's directory"),
    ("close_fds", 0, "everything but stdio and the channel"),
    ("caps", 2, "keep mask, ambient mask"),
    ("no_new_privs", 0, "PR_SET_NO_NEW_PRIVS"),
    ("landlock", 5, "ruleset masks and rules"),
    ("warn", 1, "a warning for the caller"),
    ("verify", 0, "expectations, as key/value pairs"),
    ("seccomp", 2, "BPF, flags"),
    ("seccomp_check", 1, "filters expected after ours"),
    ("exec", 0, "execvpe the command"),
    ("init", 0, "PID 1 becomes the init (init.c)"),
    ("net_helper", 0, "the stager's helper makes the network namespace (see _net_helper)"),
    ("keep_dir", 1, "path: kept open (O_PATH); relative write paths are below it (user limits)"),
    ("close_kept", 0, "PID 1: close the kept directory"),
    ("net_join", 0, "PID 1: setns into the helper's network namespace"),
    ("keep_mask_source", 1, "path: a detached read-only copy of this empty directory, for the masks"),
)
CODES = {name: code for code, (name, _, _) in enumerate(OPS)}
RLIM_INFINITY = (1 << 64) - 1


class Unsupported(Exception):
    """The plan needs something only the Python stages do (the reason is the message)."""


def _arg(value):
    """One argument: its bytes with the NUL after them (numbers: 8 bytes little-endian)."""
    kind = type(value)
    if kind is str:
        if "\0" in value:
            raise Unsupported("a NUL in %r" % value)
        return value.encode() + b"\0"
    if kind is int or kind is bool:
        return (int(value) & RLIM_INFINITY).to_bytes(8, "little") + b"\0"
    if kind is bytes or kind is bytearray:
        return bytes(value) + b"\0"
    if value is None:
        return b"\0"
    raise TypeError("program argument %r" % (value,))


def encode(operations):
    import _struct
    out = [MAGIC, VERSION.to_bytes(4, "little")]
    append = out.append
    header = _struct.Struct("<II").pack
    length = _struct.Struct("<I").pack
    for op in operations:
        append(header(CODES[op[0]], len(op) - 1))
        for value in op[1:]:
            data = _arg(value)
            append(length(len(data)))
            append(data)
    return b"".join(out)


# ---- the stages' compilers (process, stage name) -> function(plan) -> [operations] -----

def _net_helper(plan):
    """Whether the network namespace is made by the stager's helper, concurrently with PID 1's
    mount stage, instead of by PID 1's unshare.

    A new network namespace is the costliest namespace (~0.6 ms here). The helper is forked
    by the stager outside the sandbox (so it takes no PID inside), joins the run's cgroups
    (its kernel memory is the run's), enters PID 1's user namespace, unshares the network
    namespace, brings lo up, hands the namespace to PID 1 and exits: it waits for nothing of
    PID 1's, so neither the stager nor the supervisor that reaps it waits on PID 1's setup.
    PID 1 joins the namespace at the start of its user-limits stage, after `mount`: the
    kernel's rule that every namespace exists before the limits that would forbid it holds,
    since the helper's unshare is done once its namespace arrives."""
    return bool(plan.unshare_flags & native.NS_FLAGS["net"]) and plan.idmap is not None


def _unshare(plan):
    flags = plan.unshare_flags
    if _net_helper(plan):
        return [("unshare", flags & ~native.NS_FLAGS["net"])] if flags & ~native.NS_FLAGS["net"] else []
    return [("unshare", flags)] if flags else []


def _pid1_ids(plan):
    idmap = plan.idmap
    if idmap is None:
        return []
    uid = idmap.inside_uid if idmap.method == "single" else 0
    gid = idmap.inside_gid if idmap.method == "single" else 0
    return [("enter_ids", not idmap.deny_setgroups, uid, gid)]


def _user_limits(plan):
    from .user_limits import SYSCTL_DIR
    # the helper's network namespace first (errors under "loopback": the namespace the step
    # is about): its creation counted against the limits about to be lowered
    ops = [("stage", "loopback"), ("net_join",), ("stage", "user-limits")] if _net_helper(plan) else []
    part = plan.layers.get("user_limits")
    if not part:
        return ops
    # below the directory the mount stage kept (user_limits.py), else by path
    kept = plan.mounts is not None
    ops += [("write", (name if kept else SYSCTL_DIR + name), b"%d" % value, 0, 0, "user-limits") for name, value in part]
    return ops + ([("close_kept",)] if kept else [])


def _loopback(plan):
    if _net_helper(plan):
        return []  # the helper brings lo up in the namespace it makes
    return [("loopback",)] if plan.layers.get("net") else []


def _close_host_fds(plan):
    return [("close_host_fds",)]


def _mount(plan):
    if plan.mounts is None:
        return []
    from . import mnt
    # As host root the supervisor opens the bind sources (mnt.open_sources); rootless the
    # child binds by path. The same process compiles and runs, so this holds per run.
    ops = []
    for op in mnt.operations(plan.mounts, os.geteuid() == 0, "user_limits" in plan.layers):
        if op[0] not in CODES:
            raise Unsupported("mount operation %s has no compiled form" % op[0])
        if op[0] == "mask":  # (masked paths, read-only paths): flattened, with the first count
            masked, readonly = op[1], op[2]
            op = ("mask", len(masked), *masked, *readonly)
        ops.append(op)
    return ops


def _fork(plan):
    part = plan.layers.get("seccomp")
    if part is not None and part.listener:
        raise Unsupported("a seccomp kill report (notify listener)")
    return [("fork",)]


def _command_ids(plan):
    if plan.idmap is None:
        return []
    return [("become_ids", plan.idmap.inside_uid, plan.idmap.inside_gid, plan.layers.get("caps") is not None)]


def _rlimits(plan):
    limits = plan.layers.get("rlimits")
    if not limits:
        return []
    return [("rlimits",) + tuple(v for limit in limits for v in limit)]


def _caps(plan):
    part = plan.layers.get("caps")
    if part is None:
        return []
    from . import caps
    # caps.apply's rules: a uid other than 0 keeps only ambient capabilities across execve
    keep = caps.numbers(part.keep)
    ambient = set(caps.numbers(part.ambient))
    uid = plan.idmap.inside_uid if plan.idmap is not None else os.getuid()
    if uid != 0:
        ambient |= set(keep)
    if ambient - set(keep):
        raise Unsupported("ambient capabilities that are not kept")
    return [("caps", sum(1 << n for n in keep), sum(1 << n for n in ambient))]


def _landlock(plan):
    part = plan.layers.get("landlock")
    if part is None:
        return []
    from . import landlock
    policy = part.policy
    if policy is None or not policy.enabled:
        return []
    version = landlock.abi()
    if version < 1:
        raise Unsupported("a kernel without Landlock")
    handled_fs = landlock.fs_rights(version)
    handled_net, rules = 0, []
    for key, right in (("tcp_bind", landlock.NET_BIND_TCP), ("tcp_connect", landlock.NET_CONNECT_TCP)):
        ports = getattr(policy, key)
        if ports is None:
            continue
        if version < 4:
            raise Unsupported("network rules on Landlock ABI %d" % version)
        handled_net |= right
        for port in ports:
            rules += ["n", right, port]
    scoped = 0
    for name in policy.scope:
        if version < 6:
            raise Unsupported("scopes on Landlock ABI %d" % version)
        scoped |= landlock.SCOPES[name]
    attr_size = 8 if version < 4 else 16 if version < 6 else 24
    paths = []
    for path, kind, essential, explicit in policy.for_root(tuple(part.extra_rw), tuple(part.extra_ro)):
        paths += ["p", path, landlock.ACCESS[kind] & handled_fs, (1 if essential else 0) | (2 if explicit else 0)]
    ops = [("landlock", handled_fs, handled_net, scoped, attr_size, landlock.FILE_RIGHTS, *paths, *rules)]
    if part.probe is None:
        ops.append(("warn", "landlock: the policy grants listing / and writing /dev/null, so verify has nothing "
                            "to probe: the ruleset is applied but not verified"))
    return ops


def _verify(plan):
    expect = plan.verify
    if expect is None:
        return []
    pairs = []
    for key, want in expect.items():
        if key == "no_new_privs":
            pairs += ["status:NoNewPrivs", "1" if want else "0"]
        elif key == "caps":
            for field, mask in want.items():
                pairs += ["status:" + field, "%x" % mask]
        elif key == "seccomp_mode":
            pairs += ["status:Seccomp", str(want)]
        elif key == "seccomp_filters_before":
            pairs += ["status:Seccomp_filters", str(want)]
        elif key == "uid_map_no_host_root":
            if want:
                pairs += ["map", "uid_map", "map", "gid_map"]
        elif key == "masked_paths":
            for path in want or ():
                pairs += ["masked", path]
        elif key == "readonly_paths":
            for path in want or ():
                pairs += ["readonly", path]
        elif key == "landlock":
            if want:
                probe = ("list", "/") if want is True else ("list", want) if isinstance(want, str) else want
                pairs += ["landlock-" + ("list" if probe[0] == "list" else "write"), probe[1]]
        elif key == "no_fds_above_2":
            if want:
                if expect.get("allow_cloexec_fds"):
                    raise Unsupported("verify: close-on-exec descriptors allowed")
                pairs += ["fds", ""]
        elif key == "allow_cloexec_fds":
            continue
        else:
            # fail closed: an expectation the compiled verify does not know is never skipped
            raise Unsupported("verify: %s" % key)
    return [("verify",) + tuple(pairs)] if pairs else []


def _seccomp(plan):
    part = plan.layers.get("seccomp")
    if part is None:
        return []
    from . import seccomp
    ops = []
    filters = part.filters_before
    if part.extra_bpf is not None:
        ops.append(("seccomp", part.extra_bpf, 0))
        filters += 1
    ops.append(("seccomp", part.bpf, seccomp.SECCOMP_FILTER_FLAG_LOG if part.log else 0))
    ops.append(("seccomp_check", filters + 1))
    return ops


def _nothing(plan):
    return []


COMPILERS = {
    ("pid1", "pdeathsig"): lambda plan: [("pdeathsig",)],
    ("pid1", "cgroup"): lambda plan: [("join_cgroups",)],
    ("pid1", "sync"): lambda plan: [("wait_go",)],
    ("pid1", "ids"): _pid1_ids,
    ("pid1", "unshare"): _unshare,
    ("pid1", "sethostname"): lambda plan: [("sethostname", plan.hostname)] if plan.hostname else [],
    ("pid1", "user-limits"): _user_limits,
    ("pid1", "loopback"): _loopback,
    ("pid1", "mount"): _mount,
    ("pid1", "stdio"): _nothing,           # the stager's stdio is the command's from the start
    ("pid1", "close-host-fds"): _close_host_fds,
    ("pid1", "fork"): _fork,
    ("command", "setsid"): lambda plan: [("signals", plan.new_session)],
    ("command", "ids"): _command_ids,
    ("command", "tty"): _nothing,          # a run with a pty relay uses the Python stages
    ("command", "rlimits"): _rlimits,
    ("command", "cpu-time"): lambda plan: [("cpu_time",)],
    ("command", "chdir"): lambda plan: [("cwd",)],
    ("command", "close-fds"): lambda plan: [("close_fds",)] if plan.close_fds else [],
    ("command", "capabilities"): _caps,
    ("command", "no_new_privs"): lambda plan: [("no_new_privs",)] if plan.no_new_privs else [],
    ("command", "landlock"): _landlock,
    ("command", "verify"): _verify,
    ("command", "seccomp"): _seccomp,
    ("command", "exec"): lambda plan: [("exec",)],
    ("pid1", "init"): lambda plan: [("init",)],
    ("pid1", "dumpable"): _nothing,        # the init makes itself non-dumpable first
    ("pid1", "seccomp-listener"): _nothing,  # refused by _fork
    ("pid1", "wait"): _nothing,            # the init's loop
}


def operations(plan):
    """Every operation of the child, in stages.CHILD_STAGES order."""
    from .stages import CHILD_STAGES
    ops = [("clone", plan.clone_flags)]
    if _net_helper(plan):
        ops.append(("net_helper",))
    for process, name, _ in CHILD_STAGES:
        compiler = COMPILERS.get((process, name))
        if compiler is None:
            raise Unsupported("stage %s/%s has no compiled form" % (process, name))
        stage_ops = compiler(plan)
        if stage_ops:
            ops.append(("stage", name))
            ops.extend(stage_ops)
    return ops


def compile(plan):
    """The program for `plan` (bytes); Unsupported when the Python stages must run it."""
    return encode(operations(plan))


BINARY = os.path.join(os.path.dirname(__file__), "pysandbox-stage")


class Program:
    """A compiled plan, held in a sealed memfd that every run's stager reads (pread)."""

    __slots__ = ("fd", "size", "plan", "net_helper")

    def __init__(self, data, plan):
        self.plan = plan  # the plan it was compiled from: a run of another plan recompiles
        self.net_helper = _net_helper(plan)  # a run may still go without it (net_inline)
        fd = os.memfd_create("pysandbox-program", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            import fcntl
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
                        | fcntl.F_SEAL_SEAL)
        except BaseException:
            os.close(fd)
            raise
        self.fd, self.size = fd, len(data)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def prepare(plan):
    """A Program for the plan, or (None, reason) when the Python stages must run it."""
    if not os.path.exists(BINARY):
        return None, "the stager is not installed (%s)" % BINARY
    if not os.environ.get("PYSANDBOX_STAGER", "x"):
        return None, "PYSANDBOX_STAGER is empty"
    try:
        return Program(compile(plan), plan), None
    except Unsupported as e:
        return None, str(e)


class Release:
    """What the stager does for the supervisor right after the clone, so PID 1 does not
    wait for a round trip through it: the id maps written, the cgroups joined, "G"."""

    __slots__ = ("go_w", "deny_setgroups", "uid_map", "gid_map", "procs_files")

    def __init__(self, go_w, idmap, procs_files):
        self.go_w = go_w
        self.deny_setgroups = bool(idmap is not None and idmap.deny_setgroups)
        self.uid_map = "".join("%d %d %d\n" % line for line in idmap.uid_lines) if idmap is not None else ""
        self.gid_map = "".join("%d %d %d\n" % line for line in idmap.gid_lines) if idmap is not None else ""
        self.procs_files = list(procs_files)


def run_fields(launch, release, fd, stdio):
    """The run's arguments in stager.c's parse_run order; `fd(number)` names a descriptor
    (its number for the one-shot stager, "@K" in a zygote request); `stdio`: what PID 1
    puts on 0-2 (None: what it has)."""
    sources = list(launch.source_fds or ())
    cgroups = list(launch.cgroup_tasks or ())
    cpu = "-" if launch.cpu_time is None else str(int(launch.cpu_time) + (launch.cpu_time % 1 > 0))
    fields = [fd(launch.msg_w), fd(launch.go_r), cpu, launch.cwd,
              *("-" if slot is None else fd(slot) for slot in stdio),
              str(len(sources)), *map(fd, sources), str(len(cgroups)), *cgroups]
    if release is None:
        fields += ["-", "-", "", "", "0"]
    else:
        fields += [fd(release.go_w), "deny" if release.deny_setgroups else "-", release.uid_map, release.gid_map,
                   str(len(release.procs_files)), *release.procs_files]
    # counted, not delimited: a command's own "--env" or "--net-inline" stays its argument
    return fields + ["--", str(len(launch.argv)), *launch.argv]


def net_inline(loadavg="/proc/loadavg"):
    """Whether this run's PID 1 should make its network namespace itself instead of the
    stager's helper (_net_helper): when no CPU is free for the helper.

    The helper overlaps the namespace (~0.6 ms) with PID 1's mount stage, which shortens a
    start only while a second CPU is idle; on a busy machine it is pure cost (a fork, five
    cgroup joins, an exit: ~0.9 ms of CPU per run with 8 at once on 2 CPUs, docs/
    performance.md). The kernel's count of runnable tasks of this instant (/proc/loadavg's
    fourth field, the caller itself included) against the CPUs this process may use: PID 1
    makes it itself once more tasks are runnable than there are CPUs. The count also holds
    the kernel's teardown workers of the run before, a burst that is over before PID 1's
    mount stage; so at exactly as many tasks as CPUs the helper still goes (measured in one
    run: sequential latency 0.965 of bubblewrap's against 0.984 with the stricter rule, the
    same 8-at-once throughput). Either way the namespace is owned by the run's user
    namespace, charged to its cgroups and made before the user limits; only who makes it
    differs."""
    try:
        with open(loadavg, "rb") as f:
            running = int(f.read().split()[3].split(b"/")[0])
        cpus = len(os.sched_getaffinity(0))
    except (OSError, ValueError, IndexError):
        return False
    return running > cpus


def spawn(program, launch, release=None):
    """Start a one-shot stager for one run; returns (stager pid, birth pipe read end).

    Its descriptors keep their numbers (a dup2 onto itself clears close-on-exec in the
    child only, so no other thread's child ever inherits them); stdio is dup2'ed onto 0-2."""
    birth_r, birth_w = native.pipe2(os.O_CLOEXEC)
    try:
        # posix_spawn puts the run's stdio on 0-2 itself
        fields = run_fields(launch, release, str, (None, None, None))
        if launch.net_inline:
            fields.append("--net-inline")
        argv = [BINARY, str(program.fd), str(birth_w), *fields]
        keep = [program.fd, launch.msg_w, launch.go_r, birth_w] + list(launch.source_fds or ()) \
            + ([release.go_w] if release else [])
        actions = [(os.POSIX_SPAWN_DUP2, fd, fd) for fd in keep]
        for target, fd in enumerate(launch.stdio or ()):
            if fd is not None and fd != target:
                actions.append((os.POSIX_SPAWN_DUP2, fd, target))
        try:
            pid = os.posix_spawn(BINARY, argv, launch.env, file_actions=actions,
                                 setsigdef=range(1, 32), setsigmask=())
        except OSError as e:
            import errno
            if e.errno != errno.E2BIG:
                raise
            # the command's own exec would refuse it as well: say so in the command's terms
            raise SetupError("clone", e.errno, "the command's arguments and environment are larger than the "
                             "kernel lets one exec take (ARG_MAX %d bytes, at most %d per string)"
                             % (os.sysconf("SC_ARG_MAX"), 32 * os.sysconf("SC_PAGE_SIZE"))) from None
    except BaseException:
        os.close(birth_r)
        raise
    finally:
        os.close(birth_w)
    return pid, birth_r


def inherited():
    """What a process the supervisor starts now inherits and a zygote started earlier may not
    have any more: the umask, the nice value and every resource limit (`--inherit` fields).
    Asked afresh at every run: the caller may have changed any of them since the last."""
    import resource
    umask = "022"
    # one read of the status file (its second line is the umask; a name's newline is escaped)
    fd = os.open("/proc/thread-self/status", os.O_RDONLY | os.O_CLOEXEC)
    try:
        status = os.read(fd, 4096)
    finally:
        os.close(fd)
    at = status.find(b"\nUmask:\t")
    if at >= 0:
        end = status.find(b"\n", at + 8)
        umask = status[at + 8:end if end >= 0 else None].decode()
    # every limit Linux has (RLIM_NLIMITS is 16), also those the module has no name for
    # (RLIMIT_LOCKS); unlimited is -1 in the fields
    getrlimit, infinity = resource.getrlimit, resource.RLIM_INFINITY
    fields = ["--inherit", umask, str(os.getpriority(os.PRIO_PROCESS, 0)), "16"]
    for number in range(16):
        soft, hard = getrlimit(number)
        fields += (_NUMBER_TEXT[number], "-1" if soft == infinity else str(soft),
                   "-1" if hard == infinity else str(hard))
    return fields


_NUMBER_TEXT = tuple(str(number) for number in range(16))


# What one zygote request may carry (stager.c's zygote: its receive buffer less the final
# NUL, and the descriptors it takes from one message); a larger run goes through a one-shot
# stager instead, whose arguments only the kernel's exec limits bound.
ZYGOTE_MAX_REQUEST = (1 << 17) - 1
ZYGOTE_MAX_FDS = 250


class TooLarge(Exception):
    """This run's request does not fit a zygote's message: start a one-shot stager."""


class ZygoteLost(OSError):
    """The zygote ended during a request; `pid` is the PID 1 it had started (0: none)."""

    def __init__(self, pid):
        super().__init__(32, "the stager's zygote ended during the request")
        self.pid = pid


class Zygote:
    """A stager started once and kept (per Sandbox and supervisor thread): it holds the
    parsed program and clones each run's PID 1 on request, so a run costs neither an exec
    nor a parse. PID 1 is still a fresh clone in fresh namespaces; nothing of one run is
    seen by the next (the zygote only ever runs the supervisor's requests). A zygote serves
    the thread that started it only: PID 1's parent is the zygote's parent, and the
    parent-death signal follows that thread."""

    def __init__(self, program):
        from .oci import fdpass
        self._fdpass = fdpass
        self.joined = None  # the shared cgroup's tasks file it was moved into (runtime._joined_by_zygote)
        ours, theirs = fdpass.pair()
        try:
            if min(ours.fileno(), theirs.fileno(), program.fd) < 3:
                raise OSError(9, "the supervisor's stdio is closed: no zygote")
            argv = [BINARY, "--zygote", str(theirs.fileno()), str(program.fd)]
            # Its stdio is /dev/null: it must hold none of the caller's pipes or terminals open
            # (a reader of the caller's output would wait for their end for as long as it lives).
            actions = [(os.POSIX_SPAWN_DUP2, fd, fd) for fd in (theirs.fileno(), program.fd)]
            actions += [(os.POSIX_SPAWN_OPEN, target, "/dev/null", os.O_RDWR, 0) for target in (0, 1, 2)]
            self.pid = os.posix_spawn(BINARY, argv, {}, file_actions=actions, setsigdef=range(1, 32),
                                      setsigmask=())
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        # Reaped through a pidfd: once reaped, its number may be anyone's (even another child).
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except BaseException:
            ours.close()
            os.waitpid(self.pid, 0)
            raise
        self._sock = ours
        self.owner = os.getpid()
        self.program = program

    def start(self, launch, release):
        """One run's PID 1: (pid or 0, status); status 125 means its error is on the channel."""
        fds = []

        def fd(number):
            fds.append(number)
            return "@%d" % (len(fds) - 1)

        # The zygote's own 0-2 are not the caller's of now: the run's stdio always travels.
        stdio = tuple(index if slot is None else slot for index, slot in enumerate(launch.stdio or (None,) * 3))
        fields = run_fields(launch, release, fd, stdio)
        env = ["%s=%s" % item for item in launch.env.items()]
        fields += ["--env", str(len(env)), *env]
        if launch.net_inline:
            fields.append("--net-inline")
        fields += inherited()
        text = "\0".join(fields)
        if text.count("\0") != len(fields) - 1:
            raise ValueError("embedded null byte")
        import sys
        data = text.encode(sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()) + b"\0"  # os.fsencode
        if len(data) > ZYGOTE_MAX_REQUEST or len(fds) > ZYGOTE_MAX_FDS:
            raise TooLarge()
        try:
            self._fdpass.send_fds(self._sock, data, fds)
        except OSError as e:
            import errno
            if e.errno == errno.EMSGSIZE:
                raise TooLarge() from None  # a socket buffer below the request: the zygote is fine
            raise
        # "P<pid>" the moment PID 1 exists, then "S<status>"; a zygote that dies between the
        # two still told us whom to reap (ZygoteLost carries it)
        pid = 0
        while True:
            reply = self._sock.recv(64)
            if not reply:
                raise ZygoteLost(pid)
            if reply.startswith(b"P"):
                pid = int(reply[1:])
            elif reply.startswith(b"S"):
                return pid, int(reply[1:])

    def close(self):
        sock, self._sock = self._sock, None
        self.program = None
        if sock is not None:
            sock.close()  # EOF: the zygote exits
            pidfd, self._pidfd = self._pidfd, None
            try:
                os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
            except ChildProcessError:
                pass  # reaped already
            finally:
                os.close(pidfd)


def usable_for(launch):
    """Whether this run may use the stager: only runs the compiled program covers."""
    if launch.tty is not None:
        return False
    fds = [launch.msg_w, launch.go_r] + list(launch.source_fds or ())
    # dup2 onto 0-2 would overwrite one of them (a supervisor started with stdio closed)
    return all(fd is None or fd > 2 for fd in fds) and native.run_stage is native.REAL_RUN_STAGE


def c_header():
    lines = ["/* Generated from sandbox/stager.py by `python3 -m sandbox.stager`: do not edit. */",
             "#ifndef PYSANDBOX_STAGER_H", "#define PYSANDBOX_STAGER_H",
             '#define STAGER_MAGIC "%s"' % MAGIC.decode(), "#define STAGER_VERSION %d" % VERSION]
    for code, (name, _, what) in enumerate(OPS):
        lines.append("#define OP_%s %d /* %s */" % (name.upper(), code, what))
    lines.append("#define OP_COUNT %d" % len(OPS))
    lines.append("static const unsigned op_min_args[OP_COUNT] = {%s};" % ", ".join(str(n) for _, n, _ in OPS))
    lines.append("#endif")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(c_header(), end="")
