"""`audit TARGET | --all | explain ID`: find a running container's isolation gaps.

Exit codes: 0 done (and nothing at or above --fail-on), 1 a failing finding at or above
--fail-on, 2 usage error or a target that does not exist or vanished mid-audit.
Heavy modules (rich, concurrent.futures) are imported only where they are used so a
passive audit of one PID stays well under 100 ms.
"""
from __future__ import annotations

import argparse
import os
import sys

from .checks import SEVERITIES, SEVERITY_RANK

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise _UsageError(message)


def _parser():
    p = _Parser(prog="audit", description="Audit a running container's isolation and report its escape paths.")
    p.add_argument("target", nargs="*", help="PID, container id/name, pysandbox sandbox, `self`; or `explain ID`")
    p.add_argument("--all", action="store_true", help="audit every container on the host")
    p.add_argument("--format", choices=("text", "json", "sarif"), default="text")
    p.add_argument("--fail-on", choices=SEVERITIES, default=None, metavar="SEVERITY",
                   help="exit 1 when a failing finding is at or above SEVERITY")
    p.add_argument("--active", action="store_true",
                   help="add harmless proofs run inside the target's namespaces (open-for-write, unshare, probe syscalls)")
    p.add_argument("--docker-socket", default=None, help="Docker API socket (default: DOCKER_HOST or /var/run/docker.sock)")
    p.add_argument("--jobs", type=int, default=None, help="parallel audits with --all (default: CPUs x 2)")
    p.add_argument("-v", "--verbose", action="store_true", help="also list passing and skipped checks")
    return p


def _fail(message):
    sys.stderr.write("audit: error: %s\n" % message.replace("\n", " "))
    return EXIT_USAGE


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


def _audit_all(resolver, args):
    from concurrent.futures import ThreadPoolExecutor
    from pysandbox_common.procfs import ProcError
    targets = resolver.all_targets()
    reports, vanished = [], []
    progress = None
    if sys.stderr.isatty() and len(targets) > 3 and args.format == "text":
        from rich.progress import Progress
        progress = Progress(transient=True)
        progress.start()
        task = progress.add_task("auditing %d containers" % len(targets), total=len(targets))

    def one(info):
        try:
            return audit_target(info)
        except ProcError:
            vanished.append(info.pid)
            return None
        finally:
            if progress:
                progress.advance(task)

    try:
        # Active probes fork helpers that setns(): they run one at a time, in this thread.
        if args.active:
            results = []
            for info in targets:
                try:
                    results.append(audit_target(info, active=True))
                except ProcError:
                    vanished.append(info.pid)
        else:
            jobs = args.jobs or min(16, 2 * (os.cpu_count() or 1))
            with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
                results = list(pool.map(one, targets))
    finally:
        if progress:
            progress.stop()
    reports = [r for r in results if r is not None]
    for pid in vanished:
        sys.stderr.write("audit: note: pid %d exited during the audit\n" % pid)
    return reports


def _explain(check_id):
    from .checks import all_checks, get
    chk = get(check_id)
    if chk is None:
        return _fail("unknown check id %r (known: %s)" % (check_id, ", ".join(c.id for c in all_checks())))
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
    ]
    sys.stdout.write("\n".join(out) + "\n")
    return EXIT_OK


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(argv)
    except _UsageError as exc:
        return _fail(str(exc))
    except SystemExit as exc:          # --help
        return int(exc.code or 0)
    if args.target and args.target[0] == "explain":
        if len(args.target) != 2:
            return _fail("usage: audit explain CHECK_ID")
        return _explain(args.target[1])
    if args.all == bool(args.target):
        return _fail("give exactly one TARGET, or --all")
    if len(args.target) > 1:
        return _fail("give exactly one TARGET (got %d)" % len(args.target))
    if args.jobs is not None and args.jobs < 1:
        return _fail("--jobs must be at least 1")

    from pysandbox_common.procfs import ProcError
    from .targets import Resolver, TargetError
    try:
        resolver = Resolver(args.docker_socket)
        if args.all:
            reports = _audit_all(resolver, args)
        else:
            info = resolver.resolve(args.target[0])
            reports = [audit_target(info, active=args.active)]
    except TargetError as exc:
        return _fail(str(exc))
    except ProcError as exc:
        return _fail("target vanished during the audit: %s" % exc)
    except KeyboardInterrupt:
        return _fail("interrupted")

    from . import report
    if args.format == "json":
        sys.stdout.write(report.dumps(reports if args.all else reports[0], sys.stdout.isatty()) + "\n")
    elif args.format == "sarif":
        from .checks import all_checks
        sys.stdout.write(report.dumps(report.render_sarif(reports, all_checks()), sys.stdout.isatty()) + "\n")
    elif sys.stdout.isatty():
        report.render_rich(reports, sys.stdout, verbose=args.verbose)
    else:
        sys.stdout.write(report.render_text(reports, verbose=args.verbose))
    sys.stdout.flush()

    if args.fail_on:
        threshold = SEVERITY_RANK[args.fail_on]
        if any(report.worst_failing_rank(r) >= threshold for r in reports):
            return EXIT_FINDINGS
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
