"""`audit TARGET | --all | explain ID`: find a running container's isolation gaps.

Exit codes: 0 done (and nothing unsuppressed at or above --fail-on), 1 a failing finding or
escape path at or above --fail-on, 2 usage error, a bad ignore file, or a target that does
not exist, is not a container or vanished mid-audit; 141 the reader closed the pipe (as a
command killed by SIGPIPE), quietly.

A passive audit of one PID is measured in tens of milliseconds, most of it the
interpreter's and the imports'. So the command line is read by hand first
(`parse_fast`): the options are one table, AUDIT_OPTIONS, which both that parser and
`build_parser()` (argparse: --help, the man page, completion, and every error message)
read, so the two cannot drift apart. Anything the hand parser is not sure of (--help,
--version, an abbreviation, a bad value, an unknown option, `--`) goes to argparse, which
then decides as it always did. Heavy modules (argparse, json, rich, concurrent.futures)
are imported only where they are used.
"""
from __future__ import annotations

import os
import sys

from .checks import SEVERITIES, SEVERITY_RANK

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2
EXIT_BROKEN_PIPE = 128 + 13     # what a shell reports for a command killed by SIGPIPE
DEFAULT_IGNORE_FILE = ".auditignore"
FORMATS = ("text", "json", "sarif")

# (names, metavar, kind, choices, help). names: "--name" or a tuple whose first is the
# long name the value is kept under (dest: "--fail-on" -> fail_on). kind: "flag"
# (store_true), "value" (the last one wins), "list" (repeatable, kept in order) or
# "count" (a positive integer). choices: the values allowed, or None.
AUDIT_OPTIONS = (
    ("--all", None, "flag", None, "audit every container on the host: one row each"),
    ("--format", None, "value", FORMATS,
     "text (rich on a terminal), json (schema pysandbox.audit/1; pysandbox.audit-fleet/1 with --all) "
     "or sarif (SARIF 2.1.0); default text"),
    (("--output", "-o"), "FILE", "value", None,
     "write the report to FILE instead of standard output (text is plain)"),
    ("--fail-on", "SEVERITY", "value", SEVERITIES,
     "exit 1 when an unsuppressed failing finding or escape path is at or above SEVERITY (%s)"
     % ", ".join(SEVERITIES)),
    ("--severity", "LEVEL", "value", SEVERITIES,
     "show only findings at or above LEVEL (%s); counts and --fail-on still see every finding"
     % ", ".join(SEVERITIES)),
    ("--checks", "ID,...", "value", None,
     "report only these checks (and escape paths resting on them); ids as in `audit explain`, "
     "escape paths as escape/ID"),
    ("--skip", "ID", "list", None, "leave out a check or escape/ID (repeatable, or comma-separated)"),
    ("--ignore-file", "FILE", "value", None,
     "suppress accepted findings listed in FILE (default: ./%s when present)" % DEFAULT_IGNORE_FILE),
    ("--active", None, "flag", None,
     "add harmless proofs run inside the target's namespaces (open-for-write, unshare, probe syscalls)"),
    ("--docker-socket", "PATH", "value", None,
     "Docker API socket (default: DOCKER_HOST=unix://..., else /var/run/docker.sock)"),
    ("--jobs", "N", "count", None, "parallel audits with --all (default: 2 x CPUs, at most 16)"),
    (("--verbose", "-v"), None, "flag", None,
     "also list checks that could not be judged, skipped, passed and suppressed"),
)
_OPTION_BY_NAME = {}
for _entry in AUDIT_OPTIONS:
    for _name in ((_entry[0],) if isinstance(_entry[0], str) else _entry[0]):
        _OPTION_BY_NAME[_name] = _entry
del _entry, _name


def _dest(names):
    return (names if isinstance(names, str) else names[0])[2:].replace("-", "_")


def _default(kind):
    return False if kind == "flag" else [] if kind == "list" else None


class Options:
    """The parsed command line, by attribute (as argparse's Namespace)."""

    def __init__(self, **values):
        self.__dict__.update(values)

    def __eq__(self, other):
        return vars(self) == vars(other)

    def __repr__(self):
        return "Options(%s)" % ", ".join("%s=%r" % kv for kv in sorted(vars(self).items()))


def _positive_int_value(text):
    """int(text) when it is at least 1, else None (argparse and the hand parser share it)."""
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value >= 1 else None


def parse_fast(argv):
    """The command line as Options, or None when argparse must read it.

    Accepts exactly what argparse accepts with the same meaning for the shapes a user types
    (a TARGET and whole option names, `--opt VALUE` or `--opt=VALUE`, in any order); None
    for everything else, so a usage error or --help is always argparse's own.
    """
    values = {_dest(e[0]): _default(e[2]) for e in AUDIT_OPTIONS}
    values["format"] = "text"
    target = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg or arg[0] != "-":
            if target is not None:
                return None         # argparse: "unrecognized arguments"
            target = arg
            continue
        name, eq, value = arg.partition("=")
        entry = _OPTION_BY_NAME.get(name)
        if entry is None or (eq and not name.startswith("--")):
            return None             # unknown, abbreviated, clustered, -h, --version, --
        names, _, kind, choices, _ = entry
        if kind == "flag":
            if eq:
                return None         # argparse: "ignored explicit argument"
            values[_dest(names)] = True
            continue
        if not eq:
            if i >= len(argv):
                return None         # argparse: "expected one argument"
            value = argv[i]
            i += 1
            if value[:1] == "-":
                return None         # argparse may read it as an option: let it decide
        if choices is not None and value not in choices:
            return None
        if kind == "count":
            value = _positive_int_value(value)
            if value is None:
                return None
        if kind == "list":
            values[_dest(names)].append(value)
        else:
            values[_dest(names)] = value
    if target == "":
        return None
    values["target"] = target
    return Options(**values)


class _UsageError(Exception):
    pass


def _positive_int(text):
    import argparse
    value = _positive_int_value(text)
    if value is None:
        try:
            int(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not a number" % text)
        raise argparse.ArgumentTypeError("must be at least 1 (got %d)" % int(text))
    return value


def _argparse_parser_class():
    """An ArgumentParser whose errors are _UsageError (one line, exit 2), made on first use."""
    import argparse

    class _Parser(argparse.ArgumentParser):
        def error(self, message):
            raise _UsageError(message)

    return _Parser


def _version_action():
    import argparse

    class _VersionAction(argparse.Action):
        """--version, with the version read only when asked (importlib.metadata is not free)."""

        def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
            super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

        def __call__(self, parser, namespace, values, option_string=None):
            from .report import package_version
            sys.stdout.write("audit (pysandbox) %s\n" % package_version())
            parser.exit()

    return _VersionAction


EXIT_CODES = """exit codes:
  0    done; nothing unsuppressed at or above --fail-on
  1    a failing finding or escape path at or above --fail-on
  2    usage error, bad ignore file, or a target that does not exist, is not a container
       (kernel thread, zombie) or vanished during the audit
  141  the reader closed the pipe (e.g. `audit --all | head -1`); nothing is printed
"""

EPILOG = EXIT_CODES + """
statuses: fail, pass, unknown (the evidence could not be read: -v says why and what would
let the audit see, e.g. run as root or --active), skip (not applicable), error (the check broke).

ignore file (--ignore-file, default ./.auditignore when present), one entry a line:
  lsm-off reason="no LSM on this kernel" expires=2027-06-30
  cap-net-raw target="docker/ping-*" reason="ping needs raw sockets"
  escape/runtime-socket target=docker/ci-runner reason="CI builds images"
an expired entry warns and no longer suppresses.

examples:
  audit web                              a Docker/Podman/containerd container by name or id
  audit 4242 -v                          a PID, with passes and unknowns listed
  audit --all                            one row per container, then a summary by runtime
  audit --all --format sarif -o audit.sarif --fail-on high
  audit explain release-agent            what a check means and how to fix it
"""


def build_parser():
    """The `audit` command's parser: every option (help, man page, completion).

    `audit explain ID` is a command word handled before this parser (see
    build_explain_parser): TARGET is positional, so argparse subcommands cannot sit beside it.
    """
    import argparse
    p = _argparse_parser_class()(
        prog="audit",
        usage="audit [OPTIONS] TARGET | audit [OPTIONS] --all | audit explain CHECK_ID",
        description="Audit a running container's isolation: which checks fail, which could not be\n"
                    "judged, and which escape paths the gaps add up to. Passive by default: it only\n"
                    "reads /proc and the target's files. `pysandbox audit ...` is the same command.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", nargs="?", metavar="TARGET",
                   help="a PID, a container id (unique prefix) or name (Docker, Podman, containerd, ...), "
                        "a pysandbox sandbox name, or `self`")
    for names, metavar, kind, choices, text in AUDIT_OPTIONS:
        flags = (names,) if isinstance(names, str) else names[::-1]     # short first, as help shows them
        kwargs = dict(dest=_dest(names), help=text)
        if kind == "flag":
            kwargs.update(action="store_true")
        else:
            kwargs.update(metavar=metavar, choices=choices, default=_default(kind))
            if kind == "list":
                kwargs.update(action="append")
            elif kind == "count":
                kwargs.update(type=_positive_int)
        if names == "--format":
            kwargs.update(default="text")
        p.add_argument(*flags, **kwargs)
    p.add_argument("--version", action=_version_action(), help="print `audit (pysandbox) VERSION` and exit")
    return p


def build_explain_parser():
    import argparse
    p = _argparse_parser_class()(prog="audit explain", usage="audit explain CHECK_ID",
                description="Explain a check: what it looks at, how the escape works, how to fix it\n"
                            "(Docker, Kubernetes, pysandbox) and its references (CVE, MITRE ATT&CK,\n"
                            "CIS Docker Benchmark, Kubernetes Pod Security Standards).",
                epilog="exit codes:\n  0  explained\n  2  unknown check id\n\nexample:\n"
                       "  audit explain cap-sys-admin\n\nthe ids: every report names them; docs/audit.md lists them.",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("check_id", metavar="CHECK_ID", help="a check id, e.g. release-agent")
    return p


def _fail(message):
    from .report import printable
    sys.stderr.write("audit: error: %s\n" % printable(str(message).replace("\n", " ")))
    return EXIT_USAGE


def _warn(message):
    from .report import printable
    sys.stderr.write("audit: warning: %s\n" % printable(message))


def audit_target(info, active=False, proc=None):
    """Snapshot, checks and escape paths for one resolved target -> report dict."""
    from . import report, snapshot
    from .checks import run_checks
    from .escapes import find_escape_paths
    probes = None
    if active:
        from . import active as active_mod
        probes = active_mod.run_probes(info.pid)
    snap = snapshot.collect(info, proc, probes)
    findings = run_checks(snap)
    paths = find_escape_paths(snap, findings)
    return report.build(snap, findings, paths, mode="active" if active else "passive")


# A passive audit is CPU-bound Python (parsing /proc, walking /dev), so threads share one
# core (the GIL) and only overlap the reads. With many targets the fleet is split across
# forked processes, one per CPU: below this many targets per process the fork and the
# pickling cost more than they save.
FORK_MIN_TARGETS = 16


def _audit_in_processes(targets, processes, one, vanished):
    """one(target) for every target, in order, by this process and processes-1 forked
    children (each audits every processes-th target and pickles its reports back through
    a pipe). A child that fails in any way leaves its share to this process; every child
    is reaped before this returns. Called before any thread starts (fork copies only the
    calling thread)."""
    import pickle
    shares = [list(range(first, len(targets), processes)) for first in range(processes)]
    results = [None] * len(targets)
    pending = []      # (pid, read end, share) of children not yet reaped
    try:
        for share in shares[1:]:
            reader, writer = os.pipe()
            pid = os.fork()
            if pid == 0:
                # The child: its `vanished` starts empty (forked before any audit ran).
                status = 1
                try:
                    os.close(reader)
                    done = [(i, one(targets[i])) for i in share]
                    data = memoryview(pickle.dumps((done, list(vanished)), protocol=pickle.HIGHEST_PROTOCOL))
                    while data:
                        data = data[os.write(writer, data):]
                    status = 0
                finally:
                    os._exit(status)     # no atexit, no flushing of the parent's buffers
            os.close(writer)
            pending.append((pid, reader, share))
        for i in shares[0]:
            results[i] = one(targets[i])
        while pending:
            pid, reader, share = pending[0]
            chunks = []
            try:
                while True:
                    chunk = os.read(reader, 1 << 20)
                    if not chunk:
                        break
                    chunks.append(chunk)
            finally:
                os.close(reader)
                pending.pop(0)
                _, status = os.waitpid(pid, 0)
            done = None
            if status == 0:
                try:
                    done, child_vanished = pickle.loads(b"".join(chunks))
                except Exception:
                    done = None
            if done is None or [i for i, _ in done] != share:
                for i in share:
                    results[i] = one(targets[i])
                continue
            for i, report in done:
                results[i] = report
            vanished.extend(child_vanished)
    finally:
        for pid, reader, _ in pending:
            os.close(reader)      # a child still writing gets EPIPE and exits
            os.waitpid(pid, 0)
    return results


def _audit_all(resolver, args):
    from concurrent.futures import ThreadPoolExecutor
    from pysandbox_common.procfs import ProcError
    from .targets import TargetError
    targets = resolver.all_targets()
    vanished = []
    progress = None
    if sys.stderr.isatty() and len(targets) > 3 and args.format == "text":
        from rich.progress import Progress
        progress = Progress(transient=True)
        progress.start()
        task = progress.add_task("auditing %d containers" % len(targets), total=len(targets))

    def one(info, active=False):
        try:
            return audit_target(info, active=active)
        except (ProcError, TargetError):
            vanished.append(info.pid)
            return None
        finally:
            if progress:
                progress.advance(task)

    try:
        # Active probes fork helpers that setns(): they run one at a time, in this thread.
        if args.active:
            results = [one(info, active=True) for info in targets]
        else:
            jobs = args.jobs or min(16, 2 * (os.cpu_count() or 1))
            processes = min(jobs, os.cpu_count() or 1, len(targets) // FORK_MIN_TARGETS)
            if processes >= 2 and progress is None:
                results = _audit_in_processes(targets, processes, one, vanished)
            else:
                with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
                    results = list(pool.map(one, targets))
    finally:
        if progress:
            progress.stop()
    for pid in vanished:
        sys.stderr.write("audit: note: pid %d exited during the audit\n" % pid)
    return [r for r in results if r is not None]


def _explain(argv):
    from .checks import all_checks, get
    try:
        args = build_explain_parser().parse_args(argv)
    except _UsageError as exc:
        return _fail("explain: %s" % exc)
    except SystemExit as exc:          # --help
        return int(exc.code or 0)
    chk = get(args.check_id)
    if chk is None:
        return _fail("unknown check id %r (known: %s)" % (args.check_id, ", ".join(c.id for c in all_checks())))
    r = chk.references
    out = [
        "%s — %s  [%s]" % (chk.id, chk.title, chk.severity),
        "",
        "What it is:", "  " + chk.description, "",
        "How the escape works:", "  " + chk.escape, "",
        "Fix:", "  " + chk.remediation,
        "  Docker:     " + chk.fix["docker"],
        "  Kubernetes: " + chk.fix["kubernetes"],
        "  pysandbox:  " + chk.fix["pysandbox"], "",
        "References:",
        "  CVE: " + (", ".join(r["cve"]) or "none"),
        "  MITRE ATT&CK: " + ", ".join(r["mitre"]),
        "  CIS Docker Benchmark: " + (r["cis_docker"] or "-"),
        "  Kubernetes Pod Security Standards: " + (r["k8s_pss"] or "-"),
        "  docs: docs/audit.md#%s" % chk.id,
    ]
    from pysandbox_common.teaching import LAB_OF_CHECK
    if chk.id in LAB_OF_CHECK:
        layer = LAB_OF_CHECK[chk.id]
        out += ["", "See it happen:",
                "  pysandbox lab %s   (the same attack with the %s layer off and on; docs/labs.md)" % (layer, layer)]
    return _emit(lambda out_stream: out_stream.write("\n".join(out) + "\n"))


def _known_rules():
    """Check ids and escape/<id> of the escape paths this build can report."""
    from .checks import all_checks
    known = {c.id for c in all_checks()}
    try:
        from . import escapes
        ids = getattr(escapes, "ESCAPE_IDS", None)
    except ImportError:
        ids = None
    if ids is None:
        ids = ESCAPE_PATH_IDS
    return known | {"escape/" + i for i in ids}


# The escape paths of audit/escapes.py, for validating --skip/--checks/ignore entries
# (escapes.ESCAPE_IDS replaces this list when the module provides one).
ESCAPE_PATH_IDS = ("release-agent", "process-injection", "shocker", "host-file-write", "runtime-socket",
                   "core-pattern-writable", "modprobe-writable", "uevent-helper-writable",
                   "binfmt-misc-writable", "host-procfs", "host-mount-namespace", "block-device",
                   "physical-memory", "kernel-module", "leaked-fd", "privileged")


def _id_list(values):
    out = []
    for value in values:
        out += [v.strip() for v in value.split(",") if v.strip()]
    return out


def _policy(args):
    """--checks, --skip, the ignore file and --severity -> report.Policy (or a usage error)."""
    from .report import IgnoreFileError, Policy, parse_ignore_file
    known = _known_rules()
    checks = _id_list([args.checks]) if args.checks is not None else None
    if checks is not None and not checks:
        raise _UsageError("--checks needs at least one id")
    skip = _id_list(args.skip)
    for option, ids in (("--checks", checks or ()), ("--skip", skip)):
        for rule in ids:
            if rule not in known:
                raise _UsageError("%s: unknown check id %r (see `audit explain ID`, docs/audit.md)" % (option, rule))
    path = args.ignore_file
    if path is None and os.path.isfile(DEFAULT_IGNORE_FILE):
        path = DEFAULT_IGNORE_FILE
    ignore = []
    if path is not None:
        try:
            with open(path, "rb") as f:
                text = f.read(1 << 20).decode("utf-8", "replace")
        except OSError as exc:
            raise _UsageError("--ignore-file %s: %s" % (path, exc.strerror or exc))
        try:
            ignore, warnings = parse_ignore_file(text, path, known)
        except IgnoreFileError as exc:
            raise _UsageError(str(exc))
        for w in warnings:
            _warn(w)
    return Policy(checks=checks, skip=skip, ignore=ignore, min_severity=args.severity)


def _check_options(args):
    if args.target == "explain":
        raise _UsageError("usage: audit explain CHECK_ID")
    if args.all == bool(args.target):
        raise _UsageError("give exactly one TARGET, or --all")
    if args.docker_socket is not None:
        import stat
        path = args.docker_socket
        if "://" in path and not path.startswith("unix://"):
            raise _UsageError("--docker-socket %s: only unix sockets (unix:///path or a path)" % path)
        path = path[len("unix://"):] if path.startswith("unix://") else path
        try:
            st = os.stat(path)
        except OSError as exc:
            raise _UsageError("--docker-socket %s: %s" % (path, exc.strerror or exc))
        if not stat.S_ISSOCK(st.st_mode):
            raise _UsageError("--docker-socket %s: not a socket" % path)
    if args.output is not None:
        parent = os.path.dirname(os.path.abspath(args.output))
        if os.path.isdir(args.output):
            raise _UsageError("-o %s: is a directory" % args.output)
        if not os.path.isdir(parent):
            raise _UsageError("-o %s: no such directory %s" % (args.output, parent))
        if not os.access(parent, os.W_OK) and not os.access(args.output, os.W_OK):
            raise _UsageError("-o %s: not writable" % args.output)


def _emit(write, output=None):
    """Run write(stream) on stdout or -o FILE; a reader that closed the pipe ends us quietly."""
    if output is not None:
        try:
            with open(output, "w", encoding="utf-8", errors="surrogateescape") as f:
                write(f)
        except OSError as exc:
            return _fail("-o %s: %s" % (output, exc.strerror or exc))
        return EXIT_OK
    try:
        write(sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:
        # Point fd 1 at /dev/null so the interpreter's own flush at exit cannot complain again.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass
        return EXIT_BROKEN_PIPE
    return EXIT_OK


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "explain":
        return _explain(argv[1:])
    try:
        args = parse_fast(argv) or build_parser().parse_args(argv)
        _check_options(args)
        policy = _policy(args)
    except _UsageError as exc:
        return _fail(str(exc))
    except SystemExit as exc:          # --help, --version
        return int(exc.code or 0)

    from pysandbox_common.procfs import ProcError
    from .targets import Resolver, TargetError
    try:
        resolver = Resolver(args.docker_socket)
        if args.all:
            reports = _audit_all(resolver, args)
        else:
            info = resolver.resolve(args.target)
            reports = [audit_target(info, active=args.active)]
    except TargetError as exc:
        return _fail(str(exc))
    except ProcError as exc:
        return _fail("target vanished during the audit: %s" % exc)
    except KeyboardInterrupt:
        return _fail("interrupted")

    from . import report
    reports = [policy.apply(r) for r in reports]
    to_terminal = args.output is None and sys.stdout.isatty()

    def write(stream):
        if args.format == "json":
            shown = [report.for_output(r, policy) for r in reports]
            doc = report.fleet(shown) if args.all else shown[0]
            stream.write(report.dumps(doc, to_terminal, small=not args.all) + "\n")
        elif args.format == "sarif":
            from .checks import all_checks
            stream.write(report.dumps(report.render_sarif(reports, all_checks(), policy), to_terminal, small=False) + "\n")
        elif to_terminal:
            if args.all:
                report.render_fleet_rich(reports, stream, verbose=args.verbose, policy=policy)
            else:
                report.render_rich(reports, stream, verbose=args.verbose, policy=policy)
        elif args.all:
            stream.write(report.render_fleet_text(reports, verbose=args.verbose, policy=policy))
        else:
            stream.write(report.render_text(reports, verbose=args.verbose, policy=policy))

    rc = _emit(write, args.output)
    if rc != EXIT_OK:
        return rc
    if args.fail_on:
        threshold = SEVERITY_RANK[args.fail_on]
        if any(report.worst_failing_rank(r) >= threshold for r in reports):
            return EXIT_FINDINGS
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
