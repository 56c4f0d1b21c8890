"""Command line: `pysandbox run|profile|explain|gc|audit`.

`run` is parsed by hand: argparse (and everything rich) would add import time to every
sandbox start, and nothing on the run path may do that before exec.
"""
import os
import sys

from .errors import SandboxError, UsageError, EXIT_USAGE

USAGE = """usage: pysandbox run [OPTIONS] -- CMD [ARG...]
       pysandbox profile list | show NAME|PATH | lint NAME|PATH
       pysandbox explain LAYER [--profile NAME]
       pysandbox gc
       pysandbox delegate [--remove] USER   (root: cgroups for USER's rootless sandboxes)
       pysandbox audit TARGET [OPTIONS]

run options:
  --profile NAME|PATH     profile to start from (default: default)
  --ro-bind SRC[:DST]     bind SRC read-only at DST (repeatable)
  --bind SRC[:DST]        bind SRC read-write at DST (repeatable)
  --tmpfs DST             a fresh tmpfs at DST (repeatable)
  --rootfs DIR            use DIR (e.g. an unpacked image) as the root
  --overlay               writable root through overlayfs on a tmpfs (nothing reaches the host)
  --env KEY=VALUE         set an environment variable (repeatable)
  --cwd DIR               working directory inside
  --hostname NAME         hostname inside (needs the uts namespace)
  --net none|loopback|host
  --uid N / --gid N       ids inside the sandbox
  --timeout SECONDS       kill the whole sandbox after SECONDS (exit 124)
  --cpu-time SECONDS      CPU-time budget of the whole sandbox (exit 152, reason cpu-time)
  -t, --tty               give the command a pty of the sandbox's own (automatic when stdin is a terminal)
  -i, --interactive       with -t, relay a stdin that is not a terminal
  --memory SIZE           memory limit (swap off unless --memory-swap)
  --memory-swap SIZE      memory+swap limit (-1: unlimited swap)
  --pids N                process limit
  --cpus FLOAT            CPU quota in CPUs
  --cpu-weight N          relative CPU weight (1..10000)
  --io-weight N           relative IO weight (1..10000)
  --seccomp FILE          import an OCI/Docker seccomp JSON profile
  --name NAME             name the sandbox (for `audit NAME`)
  --result FILE           write a JSON verdict to FILE
  --quiet                 no warnings or notes on stderr

exit status: the command's own; 128+N when killed by signal N; 124 timeout;
125 sandbox setup failed; 126 not executable; 127 not found; 2 usage; 3 bad profile."""

_VALUED = {"--profile", "--ro-bind", "--bind", "--tmpfs", "--rootfs", "--env", "--cwd", "--hostname", "--net",
           "--uid", "--gid", "--timeout", "--result", "--memory", "--memory-swap", "--pids", "--cpus",
           "--cpu-weight", "--io-weight", "--seccomp", "--name", "--cpu-time"}
_FLAGS = {"--quiet", "--overlay", "--help", "-h", "-t", "--tty", "-i", "--interactive"}


def err(message):
    sys.stderr.write("pysandbox: %s\n" % message)


def parse_run(args):
    opts = {"--ro-bind": [], "--bind": [], "--tmpfs": [], "--env": []}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return opts, args[i + 1:]
        if not arg.startswith("-"):
            return opts, args[i:]
        name, eq, inline = arg.partition("=")
        if name in _FLAGS and not eq:
            opts[name] = True
            i += 1
            continue
        if name not in _VALUED:
            raise UsageError("unknown option %s (see `pysandbox run --help`)" % name)
        if eq:
            value = inline
        else:
            if i + 1 >= len(args):
                raise UsageError("option %s needs a value" % name)
            i += 1
            value = args[i]
        if isinstance(opts.get(name), list):
            opts[name].append(value)
        else:
            opts[name] = value
        i += 1
    return opts, []


def _number(opts, name, kind):
    value = opts.get(name)
    if value is None:
        return None
    try:
        number = kind(value)
    except ValueError:
        raise UsageError("%s expects a number, got %r" % (name, value)) from None
    if number != number or number in (float("inf"), float("-inf")) or abs(number) > 1e9:
        raise UsageError("%s expects a finite number (at most 1e9), got %r" % (name, value))
    if number < 0 and not (name == "--memory-swap" and number == -1):
        raise UsageError("%s must not be negative" % name)
    return number


def overrides_from(opts, profile):
    """Command-line options as a profile overlay: {section: {key: value}}."""
    o = {}

    def put(section, key, value):
        o.setdefault(section, {})[key] = value

    if "--rootfs" in opts:
        put("filesystem", "rootfs", os.path.abspath(opts["--rootfs"]))
    if opts.get("--overlay"):
        put("filesystem", "overlay", True)
    if "--cwd" in opts:
        put("filesystem", "cwd", opts["--cwd"])
    if "--hostname" in opts:
        put("process", "hostname", opts["--hostname"])
    if "--net" in opts:
        mode = opts["--net"]
        if mode not in ("none", "loopback", "host"):
            raise UsageError("--net must be none, loopback or host")
        put("network", "mode", mode)
        put("namespaces", "net", mode != "host")
    for flag, key in (("--uid", "uid"), ("--gid", "gid")):
        value = _number(opts, flag, int)
        if value is not None:
            put("idmap", key, value)
    timeout = _number(opts, "--timeout", float)
    if timeout is not None:
        put("process", "timeout", timeout)
    for flag, key in (("--memory", "memory"), ("--memory-swap", "memory_swap")):
        if flag in opts:
            value = opts[flag]
            put("limits", key, int(value) if value.lstrip("-").isdigit() else value)
    for flag, key, kind in (("--pids", "pids", int), ("--cpus", "cpus", float), ("--cpu-weight", "cpu_weight", int),
                            ("--io-weight", "io_weight", int)):
        value = _number(opts, flag, kind)
        if value is not None:
            put("limits", key, value)

    if "--seccomp" in opts and not (profile.seccomp is not None and profile.seccomp.locked):
        # replaces the profile's own policy; a locked one gets it stacked instead (cmd_run)
        o["seccomp"] = {"import": os.path.abspath(opts["--seccomp"]), "enabled": True}
    return o


def cmd_run(args):
    opts, argv = parse_run(args)
    if opts.get("--help") or opts.get("-h"):
        print(USAGE)
        return 0
    if not argv:
        raise UsageError("no command given (usage: pysandbox run [OPTIONS] -- CMD [ARG...])")
    env = {}
    for item in opts["--env"]:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise UsageError("--env expects KEY=VALUE, got %r" % item)
        env[key] = value
    name = opts.get("--name")
    if name is not None:
        from pysandbox_common.registry import valid_name
        if not valid_name(name):
            raise UsageError("--name must be 1-64 characters of A-Z a-z 0-9 . _ - (not starting with . or -)")
        from pysandbox_common.registry import find
        if find(name) is not None:
            raise UsageError("a sandbox named %s is already running" % name)
    from .profile import load_profile
    profile = load_profile(opts.get("--profile", "default"))
    overrides = overrides_from(opts, profile)
    if overrides:
        base = profile
        profile = profile.with_overrides(overrides)
        for key in ("memory", "pids", "cpus"):
            # 0 means "no limit": on a profile whose limits are required that drops a layer
            if base.limits.required and getattr(base.limits, key) > 0 and not getattr(profile.limits, key) > 0:
                raise UsageError("--%s %s would remove a limit that profile %s requires"
                                 % (key, opts.get("--" + key), base.name))
    result_file = None
    if "--result" in opts:
        # Opened before anything runs: a verdict that cannot be written must not be
        # discovered only after the command ran.
        try:
            result_file = open(opts["--result"], "w")
        except OSError as e:
            raise UsageError("--result %s: %s" % (opts["--result"], e.strerror)) from None
    from .runtime import Sandbox
    from . import cgroup
    import _signal as signal
    # What a SIGKILLed supervisor left behind is removed by the next run (only cgroups
    # whose processes are all gone, and only ours).
    cgroup.gc()
    extra_seccomp = None
    if "--seccomp" in opts and profile.seccomp is not None and profile.seccomp.locked:
        from .layers import validate
        from .errors import ProfileError
        try:
            extra_seccomp = validate("seccomp", {"import": os.path.abspath(opts["--seccomp"])})
        except ProfileError as e:
            raise ProfileError(str(e).split(": ", 1)[-1], source=opts["--seccomp"], key="seccomp") from None
    box = Sandbox(profile, name=opts.get("--name"), ro_binds=opts["--ro-bind"], binds=opts["--bind"],
                  tmpfs=opts["--tmpfs"], register=True, extra_seccomp=extra_seccomp)
    cpu_time = _number(opts, "--cpu-time", float)
    proc = box.start(argv, env=env, cpu_time=cpu_time, tty=True if opts.get("-t") or opts.get("--tty") else None,
                     interactive=bool(opts.get("-i") or opts.get("--interactive")))

    def forward(sig, _frame):
        proc.kill(sig)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, forward)
    result = proc.wait()
    quiet = opts.get("--quiet")
    if not quiet:
        for warning in result.warnings or ():
            err(warning if warning.startswith("warning:") else "warning: " + warning)
    if result.reason == "setup-error":
        err(result.message or result.stage)
    elif result.reason == "cpu-time" and not quiet:
        err("used its CPU time (%gs); the sandbox was killed" % result.cpu_time)
    elif result.reason == "timeout" and not quiet:
        err("timed out after %gs; the sandbox was killed" % proc.timeout)
    elif result.reason in ("oom", "pids", "seccomp") and not quiet:
        detail = {"oom": "killed: out of memory (limit %s)" % ((result.limits or {}).get("memory")),
                  "pids": "hit the process limit",
                  "seccomp": "killed by seccomp%s" % (" (syscall %s)" % result.syscall if result.syscall else "")}
        err(detail[result.reason])
    if result_file is not None:
        import json
        try:
            with result_file:
                json.dump(result.to_dict(), result_file, indent=2)
                result_file.write("\n")
        except OSError as e:
            err("--result %s: %s" % (opts["--result"], e.strerror))
    return result.exit_code


def cmd_profile(args):
    if not args or args[0] in ("-h", "--help"):
        print("usage: pysandbox profile list | show NAME|PATH | lint NAME|PATH")
        return 0 if args else EXIT_USAGE
    from .profile import load_profile, builtin_names
    action = args[0]
    if action == "list":
        for name in builtin_names():
            try:
                description = load_profile(name).description
            except SandboxError as e:
                description = "(invalid: %s)" % e
            print("%-12s %s" % (name, description))
        return 0
    if action in ("show", "lint") and len(args) == 2:
        profile = load_profile(args[1])
        if action == "show":
            from .tomlout import dumps
            sys.stdout.write(dumps(profile))
            return 0
        from .lint import main as lint_main
        return lint_main(profile)
    raise UsageError("usage: pysandbox profile list | show NAME|PATH | lint NAME|PATH")


def cmd_gc(args):
    if args:
        raise UsageError("usage: pysandbox gc")
    from . import cgroup
    # cgroups first, then state files; both only where the supervisor is dead and no task is left
    for item in cgroup.gc(full=True):
        print("removed", item)
    return 0


def cmd_delegate(args):
    """`pysandbox delegate [--remove] USER`: give USER cgroups of its own for rootless limits."""
    remove = "--remove" in args
    users = [a for a in args if a != "--remove"]
    if len(users) != 1 or users[0].startswith("-"):
        raise UsageError("usage: pysandbox delegate [--remove] USER")
    if os.geteuid() != 0:
        raise UsageError("pysandbox delegate must run as root")
    from . import cgroup
    if cgroup.detect() != "v1":
        raise UsageError("cgroup v2 delegation belongs to the service manager: "
                         "run the user's sandboxes under `systemd-run --user --scope -p Delegate=yes`")
    try:
        for path in cgroup.delegate_v1(users[0], remove=remove):
            print(("removed " if remove else "delegated ") + path)
    except KeyError:
        raise UsageError("no such user: %s" % users[0]) from None
    return 0


def main(argv=None):
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        if not args or args[0] in ("-h", "--help", "help"):
            print(USAGE)
            return 0 if args else EXIT_USAGE
        command, rest = args[0], args[1:]
        if command == "run":
            return cmd_run(rest)
        if command == "profile":
            return cmd_profile(rest)
        if command == "gc":
            return cmd_gc(rest)
        if command == "delegate":
            return cmd_delegate(rest)
        if command == "explain":
            from .explain import main as explain_main
            return explain_main(rest)
        if command == "audit":
            from audit.cli import main as audit_main
            return audit_main(rest)
        raise UsageError("unknown command %r (run, profile, explain, gc, audit)" % command)
    except SandboxError as e:
        err(str(e))
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug of ours: still one line, and the setup-failure code
        err("internal error: %s: %s" % (type(e).__name__, e))
        return 125


def entry():
    """Console-script entry: exit without the interpreter's finalization (tearing down every
    module costs ~4 ms on each sandbox start); everything we wrote is flushed or closed."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code if isinstance(code, int) else 1)


if __name__ == "__main__":
    entry()
