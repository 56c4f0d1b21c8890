"""Command line: `pysandbox run|profile|explain|gc|delegate|audit|lab|bench`.

`run` is parsed by hand: argparse (and everything rich) would add import time to every
sandbox start, and nothing on the run path may do that before exec. Its options are
one table, RUN_OPTIONS, which both the hand parser and `build_parser()` (argparse: help,
the man page, shell completion) read, so the two cannot drift apart.

Exit codes (sandbox/errors.py): `run` passes the command's own status through; every
error of pysandbox itself exits 125 (usage, a bad option value, a profile, setup);
124 timeout, 126 not executable, 127 not found, 128+N killed by signal N.
"""
import os
import sys

from .errors import SandboxError, UsageError, SetupError, EXIT_SETUP, missing_library_hint

RESULT_SCHEMA = "pysandbox.result/1"
HOSTNAME_MAX = 64          # the kernel's __NEW_UTS_LEN: sethostname refuses more with EINVAL
WEIGHT_RANGE = (1, 10000)  # cgroup v2 cpu.weight / io.weight (v1 values are mapped from it)

# (option, metavar, kind, help). option: "--name", or a tuple ("--name", "-n") whose first
# is the name the options are kept under. kind: "value" (the last one wins), "list"
# (repeatable), "mount" (repeatable, kept in argv order with the other mounts), "flag".
RUN_OPTIONS = (
    ("--profile", "NAME|PATH", "value", "profile to start from: strict, default, permissive or a TOML file "
     "(default: default; `pysandbox profile list`)"),
    ("--ro-bind", "SRC[:DST]", "mount", "bind host path SRC read-only at DST (default: the same path); "
     "repeatable, applied in the order given after the profile's mounts"),
    ("--bind", "SRC[:DST]", "mount", "bind host path SRC read-write at DST; repeatable, in order"),
    ("--tmpfs", "DST", "mount", "a fresh, empty tmpfs at DST; repeatable, in order"),
    ("--rootfs", "DIR", "value", "use DIR (e.g. an unpacked image) as the root instead of composing one"),
    ("--overlay", None, "flag", "writable root through overlayfs on a tmpfs (nothing reaches the host)"),
    ("--env", "KEY=VALUE", "list", "set an environment variable inside (repeatable)"),
    ("--cwd", "DIR", "value", "working directory inside (default: the profile's, /tmp for strict)"),
    ("--hostname", "NAME", "value", "hostname inside, at most %d bytes (needs the uts namespace)" % HOSTNAME_MAX),
    ("--net", "none|loopback|host", "value", "network: none (own namespace, only lo), loopback (lo up) "
     "or host (the host's network; refused by strict)"),
    ("--uid", "N", "value", "uid inside the sandbox (default 0: root inside, unprivileged outside)"),
    ("--gid", "N", "value", "gid inside the sandbox"),
    ("--timeout", "SECONDS", "value", "kill the whole sandbox after SECONDS of wall time (exit 124)"),
    ("--cpu-time", "SECONDS", "value", "CPU-time budget of the whole sandbox, apart from the wall timeout "
     "(exit 152, reason cpu-time)"),
    (("--tty", "-t"), None, "flag", "give the command a pty of the sandbox's own devpts, relayed to this terminal "
     "(automatic when one of stdin/stdout/stderr is a terminal)"),
    (("--interactive", "-i"), None, "flag", "with --tty, relay a stdin that is not a terminal"),
    ("--memory", "SIZE", "value", "memory limit, e.g. 64M (swap off unless --memory-swap); applied or the run "
     "fails with 125"),
    ("--memory-swap", "SIZE", "value", "memory+swap limit (-1: unlimited swap)"),
    ("--pids", "N", "value", "limit on processes and threads"),
    ("--cpus", "FLOAT", "value", "CPU quota in CPUs, e.g. 0.5"),
    ("--cpu-weight", "N", "value", "relative CPU weight, %d..%d" % WEIGHT_RANGE),
    ("--io-weight", "N", "value", "relative IO weight, %d..%d" % WEIGHT_RANGE),
    ("--seccomp", "FILE", "value", "import an OCI/Docker seccomp JSON profile (stacked under a locked policy)"),
    ("--name", "NAME", "value", "name the sandbox (for `audit NAME`); 1-64 of A-Z a-z 0-9 . _ -"),
    ("--result", "FILE", "value", "write the verdict as JSON (schema %s) to FILE, atomically; written "
     "for setup and usage errors too" % RESULT_SCHEMA),
    ("--quiet", None, "flag", "no warnings or notes on stderr"),
)
_KIND, _CANONICAL = {}, {}
for _names, _, _kind, _ in RUN_OPTIONS:
    for _name in ((_names,) if isinstance(_names, str) else _names):
        _KIND[_name] = _kind
        _CANONICAL[_name] = _names if isinstance(_names, str) else _names[0]
del _names, _name, _kind
_MOUNT_KIND = {"--ro-bind": "ro-bind", "--bind": "bind", "--tmpfs": "tmpfs"}
# Limits asked for on the command line are applied or the run fails (never dropped).
_LIMIT_OPTIONS = ("--memory", "--memory-swap", "--pids", "--cpus", "--cpu-weight", "--io-weight")

EXIT_CODES_TEXT = """exit status:
  N      the command's own exit status
  124    the timeout killed the sandbox
  125    an error of pysandbox itself: usage, a bad option value, a profile that
         does not load, or a sandbox that could not be set up (the message names
         the stage; --result records it as reason "setup-error" with that stage)
  126    the command was found but is not executable
  127    the command was not found
  128+N  the command was killed by signal N (137: SIGKILL, e.g. out of memory)"""

RUN_EXAMPLES = """\
  pysandbox run --profile strict --ro-bind "$PWD" --cwd "$PWD" -- python3 hello.py
  pysandbox run --profile strict --memory 64M --pids 32 --timeout 2 --result out.json -- ./a.out
  pysandbox run --bind "$PWD/out:/out" --tmpfs /scratch -- /bin/sh -c 'ls / > /out/root.txt'"""

OTHER_EXIT_CODES = """exit status: 0 success; 125 an error of pysandbox (usage, profile, setup)"""

USAGE = """usage: pysandbox [--version] COMMAND [OPTIONS]

commands:
  run        run a command in a sandbox         pysandbox run --help
  profile    list, show or lint profiles        pysandbox profile --help
  explain    what a layer does and stops        pysandbox explain --help
  gc         remove what killed supervisors left
  delegate   (root) cgroups for a user's rootless sandboxes
  audit      audit a running container          pysandbox audit --help
  lab        guided exercises                   pysandbox lab --help
  bench      measure the runtime                pysandbox bench --help
  serve      keep runs warm for this user       pysandbox serve --help

""" + OTHER_EXIT_CODES + """; `run` passes the command's own status
through (see `pysandbox run --help`).

example:
  pysandbox run --profile strict --ro-bind "$PWD" --cwd "$PWD" -- python3 hello.py"""


def version():
    from pysandbox_common import VERSION
    return VERSION


def err(message):
    try:
        sys.stderr.write("pysandbox: %s\n" % message)
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):  # nobody reads stderr: the status still says it
        pass


# ---------------------------------------------------------------- run: the hand parser

class RunArgs:
    """What `run`'s command line says: options, the mounts in argv order, the command."""

    def __init__(self):
        self.opts = {"--env": []}
        self.mounts = []           # [(kind, spec)] in the order given
        self.argv = []
        self.error = None          # the first UsageError, raised once --result is known


def parse_run(args):
    """Parse `run`'s arguments. A mistake does not stop the scan: the caller learns the
    --result path even when an earlier option is wrong, and then reports the mistake."""
    parsed = RunArgs()
    opts = parsed.opts
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            parsed.argv = args[i + 1:]
            break
        if not arg.startswith("-") or arg == "-":
            parsed.argv = args[i:]
            break
        name, eq, inline = arg.partition("=")
        if name in ("-h", "--help") and not eq:
            opts["--help"] = True
            i += 1
            continue
        kind = _KIND.get(name)
        if kind is None:
            parsed.error = parsed.error or UsageError("unknown option %s (see `pysandbox run --help`)" % name)
            i += 1
            continue
        name = _CANONICAL[name]
        if kind == "flag":
            if eq:
                parsed.error = parsed.error or UsageError("option %s takes no value" % name)
            opts[name] = True
            i += 1
            continue
        if eq:
            value = inline
        else:
            if i + 1 >= len(args):
                parsed.error = parsed.error or UsageError("option %s needs a value" % name)
                break
            i += 1
            value = args[i]
        if kind == "mount":
            parsed.mounts.append((_MOUNT_KIND[name], value))
        elif kind == "list":
            opts[name].append(value)
        else:
            opts[name] = value
        i += 1
    return parsed


def _number(opts, name, kind, low=0, high=1e9):
    value = opts.get(name)
    if value is None:
        return None
    try:
        number = kind(value)
    except ValueError:
        raise UsageError("%s expects %s, got %r" % (name, "an integer" if kind is int else "a number", value)) from None
    if number != number or abs(number) > 1e9:
        raise UsageError("%s expects a finite number (at most 1e9), got %r" % (name, value))
    if number < 0 and low == 0:
        raise UsageError("%s must not be negative, got %r" % (name, value))
    if not (low <= number <= high):
        raise UsageError("%s must be within %s..%s, got %r" % (name, _fmt(low), _fmt(high), value))
    return number


def _fmt(number):
    return "%d" % number if number == int(number) else "%g" % number


def _size(opts, name, allow_unlimited=False):
    value = opts.get(name)
    if value is None:
        return None
    from .profile import parse_size
    try:
        size = parse_size(value)
    except ValueError as e:
        raise UsageError("%s: %s" % (name, e)) from None
    if size == -1 and not allow_unlimited:
        raise UsageError("%s expects a size such as 64M (omit it for no limit), got %r" % (name, value))
    return size


def mount_entries(mounts):
    """The command line's mounts as ordered-mount overrides ({"kind", "source", "target"}).
    SRC is made absolute against the caller's directory; DST defaults to SRC."""
    entries = []
    for kind, spec in mounts:
        option = "--" + kind
        if kind == "tmpfs":
            if not spec.startswith("/"):
                raise UsageError("%s: the destination must be an absolute path, got %r" % (option, spec))
            entries.append({"kind": kind, "source": None, "target": spec})
            continue
        source, sep, target = spec.partition(":")
        if ":" in target:
            raise UsageError("%s expects SRC[:DST] with at most one ':', got %r" % (option, spec))
        if not source:
            raise UsageError("%s: empty bind source in %r (expected SRC[:DST])" % (option, spec))
        source = os.path.abspath(source)
        if not sep:
            target = source
        elif not target.startswith("/"):
            raise UsageError("%s: the destination must be an absolute path, got %r" % (option, spec))
        entries.append({"kind": kind, "source": source, "target": target})
    return entries


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
        cwd = opts["--cwd"]
        if not cwd.startswith("/"):
            raise UsageError("--cwd expects an absolute path inside the sandbox, got %r" % cwd)
        put("filesystem", "cwd", cwd)
    if "--hostname" in opts:
        hostname = opts["--hostname"]
        if not hostname or len(hostname.encode("utf-8", "surrogateescape")) > HOSTNAME_MAX or "\0" in hostname:
            raise UsageError("--hostname must be 1-%d bytes, got %d" % (
                HOSTNAME_MAX, len(hostname.encode("utf-8", "surrogateescape"))))
        put("process", "hostname", hostname)
    if "--net" in opts:
        mode = opts["--net"]
        if mode not in ("none", "loopback", "host"):
            raise UsageError("--net must be none, loopback or host, got %r" % mode)
        put("network", "mode", mode)
        put("namespaces", "net", mode != "host")
    for flag, key in (("--uid", "uid"), ("--gid", "gid")):
        value = _number(opts, flag, int)
        if value is not None:
            put("idmap", key, value)
    timeout = _number(opts, "--timeout", float)
    if timeout is not None:
        put("process", "timeout", timeout)
    explicit = []
    memory = _size(opts, "--memory", allow_unlimited=True)   # -1/unlimited: no limit, as in profiles
    if memory is not None:
        put("limits", "memory", memory)
        explicit.append(memory > 0)
    swap = _size(opts, "--memory-swap", allow_unlimited=True)
    if swap is not None:
        put("limits", "memory_swap", swap)
        explicit.append(swap > 0)
    for flag, key, kind, low, high in (("--pids", "pids", int, 0, 1e9), ("--cpus", "cpus", float, 0, 1e6),
                                       ("--cpu-weight", "cpu_weight", int) + WEIGHT_RANGE,
                                       ("--io-weight", "io_weight", int) + WEIGHT_RANGE):
        value = _number(opts, flag, kind, low, high)
        if value is not None:
            put("limits", key, value)
            explicit.append(value > 0)
    if any(explicit):
        # A limit the caller typed must hold: cgroup.create fails closed (SetupError
        # naming the way to get cgroups) instead of warning and running unlimited.
        put("limits", "required", True)

    if "--seccomp" in opts and not (profile.seccomp is not None and profile.seccomp.locked):
        # replaces the profile's own policy; a locked one gets it stacked instead (cmd_run)
        o["seccomp"] = {"import": os.path.abspath(opts["--seccomp"]), "enabled": True}
    return o


def supports_ordered_mounts(profile):
    """Whether this profile package has the ordered mount list of INTERFACES.md."""
    return getattr(profile.filesystem, "mounts", None) is not None


class ResultFile:
    """`--result FILE`, written atomically: a temporary file beside FILE is created before
    anything runs (a verdict that cannot be written is found out before the command runs)
    and renamed over FILE once the verdict is known; a reader never sees half a file."""

    def __init__(self, path, token=None):
        self.path = path
        self.tmp = None
        if os.path.isdir(path):
            raise UsageError("--result %s: Is a directory" % path)
        directory, base = os.path.split(os.path.abspath(path))
        # token: what makes the name this run's (the CLI's pid; the server's pid and run)
        tmp = os.path.join(directory, ".%s.%s.tmp" % (base, token or os.getpid()))
        try:
            self.fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise UsageError("--result %s: %s" % (path, e.strerror)) from None
        self.tmp = tmp

    def commit(self, verdict):
        import json
        data = dict(schema=RESULT_SCHEMA, **verdict)
        payload = (json.dumps(data, indent=2) + "\n").encode()
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(self.fd, view):]
            os.close(self.fd)
            self.fd = None
            os.replace(self.tmp, self.path)
            self.tmp = None
        except OSError as e:
            raise SetupError("result", e.errno, "--result %s: %s" % (self.path, e.strerror)) from None

    def fail(self, stage, message, name=None, profile=None, warnings=()):
        if self.fd is None:    # the verdict itself could not be written: nothing more to try
            return
        from .runtime import Result
        verdict = Result(name=name, exit_code=EXIT_SETUP, reason="setup-error", stage=stage, message=message,
                         warnings=list(warnings), profile=profile).to_dict()
        verdict["cpu"] = None
        self.commit(verdict)

    def discard(self):
        if getattr(self, "fd", None) is not None:
            os.close(self.fd)
            self.fd = None
        if self.tmp is not None:
            try:
                os.unlink(self.tmp)
            except OSError:
                pass
            self.tmp = None


class LocalHost:
    """Where a `run` happens: this process, as the CLI. The warm server (sandbox/serve.py)
    brings its own: a Sandbox kept from earlier runs of the same options, the client's
    stdio, its stderr for messages and its signals forwarded over the socket."""
    stdio = (None, None, None)
    result_token = None
    abandoned = False  # the server's end killed the run (ServedRun): not the command's doing

    def err(self, message):
        err(message)

    def sandbox(self, profile, name, legacy, extra_seccomp):
        from .runtime import Sandbox
        from . import cgroup
        # What a SIGKILLed supervisor left behind is removed by the next run (only cgroups
        # whose processes are all gone, and only ours). Before this run registers: with no
        # state record to read, gc imports no json.
        cgroup.gc()
        return Sandbox(profile, name=name, register=True, extra_seccomp=extra_seccomp, **legacy)

    def started(self, proc):
        import _signal as signal

        def forward(sig, _frame):
            proc.kill(sig)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(sig, forward)

    def finished(self, box):
        box.close()  # its run's cgroups: entry() ends with os._exit, which runs no atexit hook


def cmd_run(args, host=None, parsed=None):
    parsed = parse_run(args) if parsed is None else parsed
    host = host or LocalHost()
    opts = parsed.opts
    if opts.get("--help"):
        return help_for(["run"])
    result_file = ResultFile(opts["--result"], host.result_token) if "--result" in opts else None
    state = {"profile": None}
    try:
        return _run(parsed, result_file, state, host)
    except SandboxError as e:
        message = describe(e)
        if result_file is not None:
            result_file.fail(getattr(e, "stage", None) or "setup", message, opts.get("--name"), state["profile"])
        raise SandboxError(message) from None
    except Exception as e:
        if result_file is not None:
            result_file.fail("run", internal_message(e), opts.get("--name"), state["profile"])
        raise
    finally:
        if result_file is not None:
            result_file.discard()


def run_exit_code(args, host, parsed=None):
    """`run` with its errors as main() reports them, written through `host`."""
    try:
        return cmd_run(args, host, parsed)
    except SandboxError as e:
        host.err(str(e))
        return EXIT_SETUP if e.exit_code in (2, 3) else e.exit_code
    except Exception as e:
        host.err(internal_message(e))
        return EXIT_SETUP


def _run(parsed, result_file, state, host):
    opts, argv = parsed.opts, parsed.argv
    if parsed.error is not None:
        raise parsed.error
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
        holder = find(name)
        if holder is not None:
            from .runtime import name_taken
            raise UsageError(name_taken(name, holder.get("pid"), holder.get("supervisor")))
    mounts = mount_entries(parsed.mounts)
    from .profile import load_profile
    profile = load_profile(opts.get("--profile", "default"))
    state["profile"] = profile.name
    overrides = overrides_from(opts, profile)
    ordered = supports_ordered_mounts(profile)
    if mounts and ordered:
        overrides.setdefault("filesystem", {})["mounts"] = mounts
    if overrides:
        base = profile
        profile = profile.with_overrides(overrides)
        for key in ("memory", "pids", "cpus"):
            # 0 means "no limit": on a profile whose limits are required that drops a layer
            if base.limits.required and getattr(base.limits, key) > 0 and not getattr(profile.limits, key) > 0:
                raise UsageError("--%s %s would remove a limit that profile %s requires"
                                 % (key, opts.get("--" + key), base.name))
    legacy = {"ro_binds": [], "binds": [], "tmpfs": []}
    if not ordered:
        # The profile package predates ordered mounts: hand them over per kind, as before.
        for entry in mounts:
            if entry["kind"] == "tmpfs":
                legacy["tmpfs"].append(entry["target"])
            else:
                legacy["ro_binds" if entry["kind"] == "ro-bind" else "binds"].append(
                    "%s:%s" % (entry["source"], entry["target"]))
    extra_seccomp = None
    if "--seccomp" in opts and profile.seccomp is not None and profile.seccomp.locked:
        from .layers import validate
        from .errors import ProfileError
        try:
            extra_seccomp = validate("seccomp", {"import": os.path.abspath(opts["--seccomp"])})
        except ProfileError as e:
            raise ProfileError(str(e).split(": ", 1)[-1], source=opts["--seccomp"], key="seccomp") from None
    stdin, stdout, stderr = host.stdio
    try:
        box = host.sandbox(profile, name, legacy, extra_seccomp)
        proc = box.start(argv, env=env, cpu_time=_number(opts, "--cpu-time", float),
                         stdin=stdin, stdout=stdout, stderr=stderr,
                         tty=True if opts.get("--tty") else None, interactive=bool(opts.get("--interactive")))
    except SetupError as e:
        if e.stage == "cgroup" and any(flag in opts for flag in _LIMIT_OPTIONS):
            # The profile-level way out (limits.required = false) does not apply to a limit
            # typed on the command line: only getting cgroups does.
            given = " ".join("%s %s" % (f, opts[f]) for f in _LIMIT_OPTIONS if f in opts)
            reason = str(e).split(": ", 1)[-1].replace(", or set limits.required = false", "").replace(
                " or set limits.required = false", "")
            raise SetupError("cgroup", e.errno, "%s (%s was asked for on the command line: such limits are "
                             "applied or the run fails)" % (reason, given)) from None
        raise

    host.started(proc)
    result = proc.wait()
    host.finished(box)
    if host.abandoned:
        raise SetupError("serve", 0, "the server ended during the run (its sandbox was killed with it)")
    say = host.err
    quiet = opts.get("--quiet")
    if not quiet:
        for warning in result.warnings or ():
            say(warning if warning.startswith("warning:") else "warning: " + warning)
    if result.reason == "setup-error":
        say(result.message or result.stage)
    elif result.reason == "timeout" and not quiet:
        say("timed out after %gs; the sandbox was killed" % proc.timeout)
    elif result.reason == "cpu-time" and not quiet:
        say("used its CPU time (%gs); the sandbox was killed" % result.cpu_time)
    elif result.reason in ("oom", "pids", "seccomp") and not quiet:
        detail = {"oom": "killed: out of memory (limit %s)" % ((result.limits or {}).get("memory")),
                  "pids": "hit the process limit",
                  "seccomp": "killed by seccomp%s" % (" (syscall %s)" % result.syscall if result.syscall else "")}
        say(detail[result.reason])
    if result_file is not None:
        result_file.commit(result.to_dict())
    return result.exit_code


def describe(error):
    """The one line for a SandboxError, with the Debian package when a library is missing."""
    text = str(error)
    return missing_library_hint(text) or text if isinstance(error, SetupError) else text


def internal_message(e, command="run"):
    """One line for an exception that is not a SandboxError: a system library that cannot
    be loaded (dlopen's OSError through a binding) names its Debian package; anything
    else names the command it broke and says it is a bug of ours (every setup stage raises
    SetupError naming itself, so this is never a stage's failure)."""
    if isinstance(e, (OSError, RuntimeError, ImportError)):
        hint = missing_library_hint("cannot load a system library: %s" % e)
        if hint:
            return hint
    return "%s: unexpected %s: %s (a bug of pysandbox: please report it)" % (command, type(e).__name__, e)


# ---------------------------------------------------------------- argparse: help, man, completion

def _argparse():
    import argparse

    class Parser(argparse.ArgumentParser):
        """argparse whose mistakes are pysandbox's usage errors: one line, exit 125."""

        def error(self, message):
            command = self.prog.partition(" ")[2] or "usage"
            raise UsageError("%s: %s (see `%s --help`)" % (command, message, self.prog))

    class Formatter(argparse.RawDescriptionHelpFormatter):
        """Prose paragraphs are wrapped to the terminal; a paragraph with an indented
        line (exit codes, examples) is printed as written."""

        def _fill_text(self, text, width, indent):
            import textwrap
            out = []
            for paragraph in text.split("\n\n"):
                if any(line.startswith(" ") for line in paragraph.splitlines()):
                    out.append(paragraph)
                else:
                    out.append(textwrap.fill(" ".join(paragraph.split()), width, initial_indent=indent,
                                             subsequent_indent=indent))
            return "\n\n".join(out)

    Parser.formatter = Formatter
    return argparse, Parser


def _lazy_module(name):
    """sandbox.lab / sandbox.bench when installed, else None (written by another part)."""
    import importlib
    try:
        return importlib.import_module("sandbox." + name)
    except ModuleNotFoundError as e:
        if e.name in ("sandbox." + name,):
            return None
        raise


def build_parser():
    """The whole command line as argparse: every command, subcommand and option, with the
    text `--help` prints, the man page and the shell completions are made from."""
    argparse, Parser = _argparse()
    raw = Parser.formatter
    top = Parser(prog="pysandbox", formatter_class=raw,
                 description="pysandbox: run untrusted code isolated in every namespace the Linux kernel "
                 "offers (user, pid, mount, net, uts, ipc, cgroup, time), with cgroup limits, no capabilities, "
                 "no_new_privs, Landlock and seccomp; and audit running containers for isolation gaps.",
                 epilog=USAGE.split("\n\n", 1)[1])
    top.add_argument("-V", "--version", action="version", version="pysandbox " + version())
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser(
        "run", formatter_class=raw, help="run a command in a sandbox",
        usage="pysandbox run [OPTIONS] -- CMD [ARG...]",
        description="Run CMD in a new sandbox made from a profile and the options below, wait for it, "
        "and exit with its status. Options after the profile override it; mounts are applied in the "
        "order given, after the profile's own. The sandbox sees only what is mounted into it: to run a "
        "script from the current directory, bind the directory (see the example).",
        epilog=EXIT_CODES_TEXT + """

--result FILE is JSON with "schema": "%s" and the fields exit_code, signal,
reason (exit, signal, timeout, setup-error, oom, pids, seccomp), stage, message,
syscall, wall, cpu_user, cpu_system, cpu, memory_peak, limits, warnings, profile.

examples:
""" % RESULT_SCHEMA + RUN_EXAMPLES)
    for names, metavar, kind, text in RUN_OPTIONS:
        names = (names,) if isinstance(names, str) else names
        option = names[0]
        kwargs = {"help": text, "dest": option[2:].replace("-", "_")}
        if kind == "flag":
            kwargs["action"] = "store_true"
        else:
            kwargs["metavar"] = metavar
            if kind in ("list", "mount"):
                kwargs["action"] = "append"
            if option == "--net":
                kwargs["choices"] = ("none", "loopback", "host")
                kwargs["metavar"] = None
            if option in ("--ro-bind", "--bind", "--rootfs", "--cwd"):
                kwargs["metavar"] = metavar
        action = run.add_argument(*names, **kwargs)
        if option in ("--ro-bind", "--bind", "--rootfs", "--seccomp", "--result"):
            action.complete = {"bash": "_shtab_compgen_files", "zsh": "_files"} \
                if option not in ("--ro-bind", "--bind", "--rootfs") else {"bash": "_shtab_compgen_dirs",
                                                                           "zsh": "_files -/"}
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD [ARG...]", help="the command and its arguments")

    prof = sub.add_parser("profile", formatter_class=raw, help="list, show or lint profiles",
                          description="Profiles are TOML files: the built-in strict, default and permissive, "
                          "or your own (by path, or by name from $PYSANDBOX_PROFILE_PATH, "
                          "~/.config/pysandbox/profiles, /etc/pysandbox/profiles).",
                          epilog=OTHER_EXIT_CODES + "; `profile lint` 1 when it finds something of high "
                          "severity or worse.\n\nexamples:\n  pysandbox profile list\n"
                          "  pysandbox profile show strict\n  pysandbox profile lint ./mine.toml")
    psub = prof.add_subparsers(dest="action", metavar="ACTION", required=True)
    psub.add_parser("list", formatter_class=raw, help="the profiles found, with their descriptions",
                    description="List every profile found on the search path with its description.",
                    epilog=OTHER_EXIT_CODES + "\n\nexample:\n  pysandbox profile list")
    show = psub.add_parser("show", formatter_class=raw, help="print the resolved profile as TOML",
                           description="Print the profile as pysandbox uses it: inherited profiles merged, "
                           "every key with its value.",
                           epilog=OTHER_EXIT_CODES + "\n\nexample:\n  pysandbox profile show strict")
    show.add_argument("profile", metavar="NAME|PATH", help="a profile name or a TOML file")
    lint = psub.add_parser("lint", formatter_class=raw, help="warn about dangerous settings",
                           description="Check a profile for dangerous settings and combinations (capabilities, "
                           "shared namespaces, seccomp holes read off the compiled filter, missing limits).",
                           epilog="exit status: 0 clean or only findings below high; 1 a finding of high "
                           "severity or worse; 125 an error of pysandbox (usage, a profile that does not "
                           "load).\n\nexample:\n  pysandbox profile lint permissive")
    lint.add_argument("profile", metavar="NAME|PATH", help="a profile name or a TOML file")

    from .explain import LAYERS, ALIASES
    explain = sub.add_parser("explain", formatter_class=raw, help="what a layer does, what a profile sets, "
                             "what it stops",
                             description="Explain one isolation layer (what it does, what the profile sets "
                             "for it, which attacks it stops), one profile key (SECTION.KEY: what it is, what "
                             "the profile sets, an example) or one audit check (its id: the audit's explanation).",
                             epilog=OTHER_EXIT_CODES + "\n\nlayers: %s\naliases: %s\n\nexamples:\n"
                             "  pysandbox explain seccomp\n  pysandbox explain limits --profile strict\n"
                             "  pysandbox explain filesystem.ro_bind --profile strict\n"
                             "  pysandbox explain cap-sys-admin" % (
                                 ", ".join(LAYERS), ", ".join("%s=%s" % kv for kv in sorted(ALIASES.items()))))
    # no argparse choices: explain names the layers itself when one is unknown
    explain.add_argument("layer", metavar="LAYER|SECTION.KEY|CHECK-ID",
                         help="a layer (%s), a profile key such as limits.memory, or an audit check id"
                         % ", ".join(LAYERS))
    explain.add_argument("--profile", metavar="NAME|PATH", default="default",
                         help="the profile whose settings to show (default: default)")

    sub.add_parser("gc", formatter_class=raw, help="remove what killed supervisors left behind",
                   description="Remove the cgroups and state files of sandboxes whose supervisor is gone and "
                   "whose processes have all exited (only pysandbox's own). Every run does a cheap pass too.",
                   epilog=OTHER_EXIT_CODES + "\n\nexample:\n  pysandbox gc")

    serve = sub.add_parser(
        "serve", formatter_class=raw, help="keep `pysandbox run` warm for this user (a local server)",
        description="Listen on a socket only this user can reach and run the sandboxes of this user's "
        "`pysandbox run` calls in this process, where the modules are imported and each set of options "
        "has its prepared sandbox (mount plan, compiled seccomp filter, cgroups made ahead). Every run still "
        "gets fresh namespaces, cgroups and processes. `pysandbox run` hands its run over when a server "
        "listens and the caller looks exactly like the server (the same uid, groups, capabilities, "
        "namespaces, cgroups, limits, umask, no_new_privs and seccomp state, and the same PYSANDBOX_*, HOME "
        "and XDG_* settings) and has no terminal on stdin, stdout or stderr; otherwise it runs the sandbox "
        "itself, as without a server. PYSANDBOX_SERVE=off never hands over; =require fails instead of "
        "running locally.",
        epilog=OTHER_EXIT_CODES + "\n\nexamples:\n  pysandbox serve &\n"
        "  PYSANDBOX_SERVE=require pysandbox run --profile strict -- /bin/true\n"
        "  pysandbox serve --socket /run/grader/pysandbox.sock --idle-exit 600")
    serve.add_argument("--socket", metavar="PATH", help="listen here (default: PYSANDBOX_SERVE_SOCKET, "
                       "/run/pysandbox/serve.sock for root, $XDG_RUNTIME_DIR/pysandbox/serve.sock or "
                       "/tmp/pysandbox-serve-UID/serve.sock for a user); its directory is made mode 0700")
    serve.add_argument("--threads", metavar="N", type=int, default=8,
                       help="runs kept warm at once (default 8); more run at once on extra threads")
    serve.add_argument("--idle-exit", metavar="SECONDS", type=float, default=None,
                       help="stop after SECONDS with no run (default: run until SIGTERM or ^C)")
    serve.add_argument("--warm", metavar="PROFILE", action="append",
                       help="prepare this profile before the first client (repeatable; default: strict)")

    delegate = sub.add_parser("delegate", formatter_class=raw, help="(root) give USER cgroups for rootless limits",
                              description="As root, on a cgroup v1 host: create cgroups that USER owns in "
                              "every controller, so USER's rootless sandboxes get memory, pids and CPU limits. "
                              "On cgroup v2, delegation belongs to the service manager: run the sandbox under "
                              "`systemd-run --user --scope -p Delegate=yes`.",
                              epilog=OTHER_EXIT_CODES + " (also when not root or on a cgroup v2 host)."
                              "\n\nexamples:\n  pysandbox delegate alice\n  pysandbox delegate --remove alice")
    delegate.add_argument("--remove", action="store_true", help="take the delegation back")
    delegate.add_argument("user", metavar="USER", help="a user name")

    audit = sub.add_parser("audit", formatter_class=raw, add_help=False,
                           help="audit a running container (the `audit` command)",
                           description="Probe a running container, pod or sandbox for isolation gaps and "
                           "report its escape paths: the same as the `audit` command. "
                           "See `pysandbox audit --help` (or `man audit`) for its options and exit codes.",
                           epilog="example:\n  pysandbox audit --all --format json")
    audit.add_argument("args", nargs=argparse.REMAINDER, metavar="ARG", help="the arguments of `audit`")

    for name, text in (("lab", "guided exercises: break a weak sandbox, then harden it"),
                       ("bench", "measure start time, density and overhead against other runtimes")):
        module = _lazy_module(name)
        parser = sub.add_parser(name, formatter_class=raw, help=text, description=text[0].upper() + text[1:] + ".",
                                epilog=OTHER_EXIT_CODES + "\n\nexample:\n  pysandbox %s" % name)
        if module is not None and hasattr(module, "add_arguments"):
            module.add_arguments(parser)
        else:
            parser.description += " (not part of this installation)"
            parser.add_argument("args", nargs=argparse.REMAINDER, metavar="ARG", help=argparse.SUPPRESS)
    return top


def help_for(path):
    """Print the argparse help of `pysandbox PATH...` (exit 0)."""
    try:
        build_parser().parse_args(list(path) + ["--help"])
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def audit_parser():
    """The `audit` command's argparse parser: audit.cli.build_parser() (INTERFACES.md), or
    the older private _parser() while the audit side does not have it yet."""
    from audit import cli as audit_cli
    for attribute in ("build_parser", "_parser"):
        factory = getattr(audit_cli, attribute, None)
        if factory is not None:
            parser = factory()
            parser.prog = "audit"
            return parser
    raise SetupError("docs", 0, "audit.cli has neither build_parser() nor _parser()")


def _roff_preformatted(text):
    """`text` as a roff no-fill block: backslashes escaped, no line read as a request."""
    lines = []
    for line in text.replace("\\", "\\e").splitlines():
        lines.append("\\&" + line if line[:1] in (".", "'") else line)
    return ".nf\n" + "\n".join(lines) + "\n.fi"


def write_shell_docs(share):
    """Generate, from the parsers, the man pages and the bash and zsh completions of
    `pysandbox` and `audit` under SHARE (man/man1, bash-completion/completions,
    zsh/site-functions); setup.sh calls this and links them into the system's paths.
    Needs the `docs` extra (shtab, argparse-manpage). Returns the files written."""
    import shtab
    from argparse_manpage.manpage import Manpage
    written = []
    pages = (("pysandbox", build_parser(), "a hardened Linux sandbox runtime"),
             ("audit", audit_parser(), "find a running container's isolation gaps"))
    for name, parser, summary in pages:
        if name == "pysandbox":
            # The epilog's text becomes sections of its own, kept as written (roff would
            # fill the tables); the top-level command summary is in the page already.
            parser.epilog = None
            parser._manpage = [{"heading": "exit status", "content": _roff_preformatted(
                                    EXIT_CODES_TEXT.split("\n", 1)[1]) + "\n.PP\nThe other commands: 0 success; "
                                    "125 an error of pysandbox; `profile lint` 1 on a finding of high severity or "
                                    "worse; `audit` its own codes (see audit(1))."},
                               {"heading": "examples", "content": _roff_preformatted(RUN_EXAMPLES)},
                               {"heading": "see also", "content": "audit(1); pysandbox run --help; "
                                "README.md and docs/ of the source tree"}]
        else:
            parser._manpage = list(getattr(parser, "_manpage", None) or []) + [
                {"heading": "see also", "content": "pysandbox(1)"}]
        page = Manpage(parser, _data={"project_name": "pysandbox", "version": version(),
                                      "manual_title": "pysandbox manual", "description": summary})
        files = {os.path.join(share, "man", "man1", name + ".1"): str(page),
                 os.path.join(share, "bash-completion", "completions", name): shtab.complete(parser, shell="bash"),
                 os.path.join(share, "zsh", "site-functions", "_" + name): shtab.complete(parser, shell="zsh")}
        for path, text in files.items():
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                f.write(text if text.endswith("\n") else text + "\n")
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
            written.append(path)
    return written


# ---------------------------------------------------------------- the other commands

def cmd_profile(ns):
    from .profile import load_profile, builtin_names
    if ns.action == "list":
        for name in builtin_names():
            try:
                description = load_profile(name).description
            except SandboxError as e:
                description = "(invalid: %s)" % e
            print("%-12s %s" % (name, description))
        return 0
    profile = load_profile(ns.profile)
    if ns.action == "show":
        from .tomlout import dumps
        sys.stdout.write(dumps(profile))
        return 0
    from .lint import main as lint_main
    # 0 clean, 1 a finding at or above high, 125 the profile cannot run on this machine
    return lint_main(profile)


def cmd_serve(ns):
    from . import serve
    return serve.main(sys.modules[__name__], ns.socket, threads=ns.threads, idle_exit=ns.idle_exit, warm=ns.warm)


def cmd_gc(ns):
    from . import cgroup
    # cgroups first, then state files; both only where the supervisor is dead and no task is left
    for item in cgroup.gc(full=True):
        print("removed", item)
    return 0


def cmd_delegate(ns):
    """`pysandbox delegate [--remove] USER`: give USER cgroups of its own for rootless limits."""
    if ns.user.startswith("-"):
        raise UsageError("usage: pysandbox delegate [--remove] USER")
    if os.geteuid() != 0:
        raise UsageError("pysandbox delegate must run as root")
    from . import cgroup
    if cgroup.detect() != "v1":
        raise UsageError("cgroup v2 delegation belongs to the service manager: "
                         "run the user's sandboxes under `systemd-run --user --scope -p Delegate=yes`")
    try:
        for path in cgroup.delegate_v1(ns.user, remove=ns.remove):
            print(("removed " if ns.remove else "delegated ") + path)
    except KeyError:
        raise UsageError("no such user: %s" % ns.user) from None
    return 0


def cmd_explain(ns):
    from .explain import main as explain_main
    return explain_main([ns.layer, "--profile", ns.profile], explain_check=explain_audit_check)


def explain_audit_check(name):
    """`pysandbox explain CHECK-ID`: the audit's own explanation (exit code), None if no check has that id."""
    from audit.checks import get
    if get(name) is None:
        return None
    from audit.cli import main as audit_main
    return audit_main(["explain", name])


def cmd_external(name, rest):
    """`pysandbox lab|bench ...`: the module's own main(argv) -> int, imported only now.
    Its options are checked (and --help answered, with the exit codes and an example)
    by build_parser() first, from the module's add_arguments(parser), so a mistake is
    pysandbox's usage error (125) like everywhere else."""
    module = _lazy_module(name)
    if module is None or not hasattr(module, "main"):
        if rest[:1] in (["-h"], ["--help"]):
            return help_for([name])
        raise UsageError("`pysandbox %s` is not part of this installation (sandbox/%s.py is missing)" % (name, name))
    try:
        build_parser().parse_args([name] + list(rest))
    except SystemExit as e:    # --help
        return int(e.code or 0)
    try:
        return module.main(list(rest))
    except SystemExit as e:    # the module's own argparse: its usage code 2 is our 125
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_SETUP)
        return EXIT_SETUP if code == 2 else code


COMMANDS = ("run", "profile", "explain", "gc", "delegate", "audit", "lab", "bench", "serve")


def main(argv=None):
    args = sys.argv[1:] if argv is None else list(argv)
    command = args[0] if args else "pysandbox"
    try:
        if not args:
            sys.stderr.write(USAGE + "\n")
            return EXIT_SETUP
        command, rest = args[0], args[1:]
        if command in ("-h", "--help", "help"):
            return help_for(rest[:1] if command == "help" and rest and rest[0] in COMMANDS else [])
        if command in ("--version", "-V"):
            print("pysandbox " + version())
            return 0
        if command == "run":
            return cmd_run(rest)
        if command == "audit":
            from audit.cli import main as audit_main
            return audit_main(rest)
        if command in ("lab", "bench"):
            return cmd_external(command, rest)
        if command not in COMMANDS:
            raise UsageError("unknown command %r (commands: %s; see `pysandbox --help`)" % (command, ", ".join(COMMANDS)))
        try:
            ns = build_parser().parse_args(args)
        except SystemExit as e:    # --help
            return int(e.code or 0)
        handler = {"profile": cmd_profile, "gc": cmd_gc, "delegate": cmd_delegate, "explain": cmd_explain,
                   "serve": cmd_serve}[command]
        return handler(ns)
    except SandboxError as e:
        err(str(e))
        return EXIT_SETUP if e.exit_code in (2, 3) else e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug of ours, or a system library that cannot be loaded: still one line
        err(internal_message(e, command))
        return EXIT_SETUP


def entry(serve=True):
    """Console-script entry: exit without the interpreter's finalization (tearing down every
    module costs ~4 ms on each sandbox start); everything we wrote is flushed or closed.
    A `run` goes to this user's `pysandbox serve` first, when one listens (setup.sh's
    launcher asks before it imports this module, and passes serve=False)."""
    if serve and sys.argv[1:2] == ["run"]:
        from .serve_client import hand_over
        hand_over(sys.argv[2:])
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code if isinstance(code, int) else 1)


if __name__ == "__main__":
    entry()
