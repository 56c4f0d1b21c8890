"""pysandbox-oci: runc's command line.

    pysandbox-oci [--root DIR] [--log FILE] [--log-format text|json] [--debug] [--systemd-cgroup]
                  [--rootless true|false|auto] [--profile NAME] COMMAND [OPTIONS] ID

Errors go to stderr and, with --log, to the log file (as JSON lines `{"level": "error", "msg": ...,
"time": ...}` with --log-format json: the engines' shims show the last error line to the user).
The texts are the ones engines match: "does not exist", "container not running", "already exists".
Exit status 1 on an error (runc's); `run` and a foreground `exec` exit with the process's status.
"""
import os
import sys

from ..errors import SetupError
from .errors import SpecError

VERSION_TEXT = "pysandbox-oci version %s\nspec: 1.0.2\n"

GLOBAL_FLAGS = {"--root": True, "--log": True, "--log-format": True, "--debug": False,
                "--systemd-cgroup": False, "--rootless": True, "--criu": True, "--profile": True}
# command -> {flag: takes a value}; short aliases map onto long ones
COMMANDS = {
    "create": {"--bundle": True, "--pid-file": True, "--console-socket": True, "--no-pivot": False,
               "--no-new-keyring": False, "--preserve-fds": True},
    "run": {"--bundle": True, "--pid-file": True, "--console-socket": True, "--no-pivot": False,
            "--no-new-keyring": False, "--preserve-fds": True, "--detach": False, "--keep": False},
    "start": {}, "state": {}, "pause": {}, "resume": {}, "features": {},
    "kill": {"--all": False},
    "delete": {"--force": False},
    "list": {"--format": True, "--quiet": False},
    "ps": {"--format": True},
    "spec": {"--bundle": True, "--rootless": False},
    "update": {"--resources": True, "--memory": True, "--memory-swap": True, "--memory-reservation": True,
               "--cpu-shares": True, "--cpu-quota": True, "--cpu-period": True, "--cpuset-cpus": True,
               "--cpuset-mems": True, "--pids-limit": True, "--blkio-weight": True},
    "exec": {"--process": True, "--detach": False, "--tty": False, "--pid-file": True, "--console-socket": True,
             "--preserve-fds": True, "--cwd": True, "--env": True, "--user": True, "--additional-gids": True,
             "--cap": True, "--no-new-privs": False, "--process-label": True, "--apparmor": True,
             "--cgroup": True, "--ignore-paused": False},
}
SHORT = {"-b": "--bundle", "-d": "--detach", "-t": "--tty", "-p": "--process", "-e": "--env", "-u": "--user",
         "-g": "--additional-gids", "-c": "--cap", "-a": "--all", "-f": "--force", "-q": "--quiet",
         "-r": "--resources"}
REPEATED = ("--env", "--cap", "--additional-gids")
NEEDS_ID = ("create", "run", "start", "state", "pause", "resume", "kill", "delete", "ps", "update", "exec")
COMMAND_HELP = {
    "create": "create a container, set up and blocked before exec (create --bundle B ID)",
    "start": "run the program of a created container",
    "run": "create and start a container, then wait for it (--detach to return at once)",
    "state": "print a container's state as JSON",
    "kill": "send a signal (default TERM; a name or a number) to the container's process (--all: every process)",
    "delete": "remove a stopped container (--force: kill it first)",
    "exec": "run a process inside a running container (--process FILE or ARGS...)",
    "ps": "list the host PIDs of the container's processes (--format json|table)",
    "pause": "freeze every process of the container",
    "resume": "thaw a paused container",
    "update": "change the resources of a container (--resources FILE or -)",
    "list": "list containers under --root (--format table|json, --quiet)",
    "features": "print the features of this runtime as JSON",
    "spec": "write a default config.json into the bundle (--bundle, --rootless)",
}


class UsageError(Exception):
    pass


class Log:
    def __init__(self, path="", fmt="text", debug=False):
        self.path, self.fmt, self.debug_on = path, fmt, debug

    def _write(self, level, message):
        if not self.path:
            return
        import time
        now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"
        if self.fmt == "json":
            from . import fastjson as json
            line = json.dumps({"level": level, "msg": message, "time": now})
        else:
            line = 'time="%s" level=%s msg=%s' % (now, level, _quote(message))
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, (line + "\n").encode(errors="replace"))
            finally:
                os.close(fd)
        except OSError:
            pass

    def error(self, message):
        self._write("error", message)

    def warning(self, message):
        self._write("warning", message)
        if not self.path:  # with a log the engine reads it there; stderr may be the container's
            sys.stderr.write("pysandbox-oci: warning: %s\n" % _printable(message))

    def debug(self, message):
        if self.debug_on:
            self._write("debug", message)


def _quote(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _printable(text):
    return "".join(c if c.isprintable() or c == "\t" else "\\x%02x" % ord(c) for c in text)


def parse(argv):
    """-> (globals, command, options, positional). Both `--flag v` and `--flag=v`."""
    glob, i = {}, 0
    while i < len(argv) and argv[i].startswith("-"):
        arg = argv[i]
        if arg in ("--version", "-v"):
            return glob, "version", {}, []
        if arg in ("--help", "-h"):
            return glob, "help", {}, []
        name, eq, value = arg.partition("=")
        if name not in GLOBAL_FLAGS:
            raise UsageError("unknown global flag %s" % name)
        if GLOBAL_FLAGS[name] and not eq:
            i += 1
            if i >= len(argv):
                raise UsageError("%s needs a value" % name)
            value = argv[i]
        glob[name] = value if GLOBAL_FLAGS[name] else True
        i += 1
    if i >= len(argv):
        return glob, "help", {}, []
    command = argv[i]
    if command == "help":
        return glob, "help", {}, argv[i + 1:i + 2]
    if command not in COMMANDS:
        raise UsageError("unknown command %r (see pysandbox-oci --help)" % command)
    flags = COMMANDS[command]
    options, positional = {}, []
    i += 1
    while i < len(argv):
        arg = argv[i]
        if positional and command in ("exec", "ps") or arg == "--":
            positional.extend(argv[i + 1:] if arg == "--" else argv[i:])
            break
        if arg.startswith("-") and arg != "-":
            if arg in ("--help", "-h"):
                return glob, "help", {}, [command]
            name, eq, value = arg.partition("=")
            name = SHORT.get(name, name)
            if name not in flags:
                raise UsageError("%s: unknown flag %s" % (command, arg.partition("=")[0]))
            if flags[name] and not eq:
                i += 1
                if i >= len(argv):
                    raise UsageError("%s: %s needs a value" % (command, name))
                value = argv[i]
            if not flags[name]:
                value = value.lower() not in ("false", "0") if eq else True
            if name in REPEATED:
                options.setdefault(name, []).append(value)
            else:
                options[name] = value
        else:
            positional.append(arg)
        i += 1
    if command in NEEDS_ID and not positional:
        raise UsageError("%s: a container id is required" % command)
    return glob, command, options, positional


def usage(command=None):
    if command in COMMAND_HELP:
        flags = " ".join("[%s%s]" % (f, " VALUE" if v else "") for f, v in COMMANDS[command].items())
        return "usage: pysandbox-oci [global flags] %s %s%s\n\n%s\n" % (
            command, flags + " " if flags else "", "ID" if command in NEEDS_ID else "", COMMAND_HELP[command])
    lines = ["usage: pysandbox-oci [--root DIR] [--log FILE] [--log-format text|json] [--debug]",
             "                     [--systemd-cgroup] [--rootless true|false|auto] [--profile NAME] COMMAND ...",
             "", "An OCI runtime with runc's command line (Docker --add-runtime, podman --runtime,",
             "ctr --runc-binary, a containerd runtime handler). --profile strict (or the annotation",
             "org.pysandbox.profile=strict) adds pysandbox's hardening; the default is exactly the spec.", "",
             "commands:"]
    lines += ["  %-9s %s" % (name, text) for name, text in COMMAND_HELP.items()]
    lines += ["", "pysandbox-oci COMMAND --help shows a command's flags; docs/oci.md has the engine setups."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    log = Log()
    try:
        glob, command, options, positional = parse(argv)
        log = Log(glob.get("--log", ""), glob.get("--log-format", "text"), bool(glob.get("--debug")))
        if glob.get("--log-format", "text") not in ("text", "json"):
            raise UsageError("--log-format %r: expected text or json" % glob["--log-format"])
        if command == "version":
            from pysandbox_common import VERSION
            sys.stdout.write(VERSION_TEXT % VERSION)
            return 0
        if command == "help":
            sys.stdout.write(usage(positional[0] if positional else None))
            return 0
        log.debug("%s %s" % (command, " ".join(argv)))
        from . import commands
        return commands.dispatch(command, glob, options, positional, log)
    except UsageError as e:
        return _fail(log, "%s (see pysandbox-oci --help)" % e)
    except (SpecError, SetupError) as e:
        return _fail(log, str(e))
    except KeyboardInterrupt:
        return 130
    except OSError as e:
        where = " %s" % e.filename if e.filename else ""
        return _fail(log, "%s%s" % (e.strerror or e, where))


def _fail(log, message):
    log.error(message)
    sys.stderr.write("pysandbox-oci: %s\n" % _printable(message))
    return 1


def entry():
    sys.exit(main())
