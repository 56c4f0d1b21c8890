"""Wall time of the audit CLI, as a user runs it (the installed `audit` command, a fresh process each time).

    sudo python3 benchmarks/audit.py [--containers N] [--runs R] [--docker NAME] [--audit LAUNCHER ...]

Builds N lightweight containers (default 100): sleepers made with util-linux `unshare`
(mount, PID, network, IPC and UTS namespaces; each is two processes, the `unshare`
launcher and its child, PID 1 inside, which `--all` counts as one container). Prints the
median wall time of a passive `audit PID` of one of them (text and JSON), of `audit self`,
of `audit --all` over all of them (and how many targets it reported), of the resolver's grouping alone
(Resolver.all_targets() in this process) and of an active `audit PID`. With --docker and
DOCKER_HOST pointing at a running daemon, `audit NAME` of that Docker container too.
Modules are byte-compiled first, as an installed package would be. Nothing is asserted.
With several --audit launchers (say main's install and a branch's), their runs alternate
and each median is given with its ratio to the first's: on a loaded machine only such an
interleaved comparison means anything.
"""
import argparse
import compileall
import json
import os
import signal
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def spawn(n):
    procs = []
    for _ in range(n):
        procs.append(subprocess.Popen(["unshare", "--mount", "--pid", "--fork", "--net", "--ipc", "--uts",
                                       "--propagation", "private", "sleep", "300"], stdin=subprocess.DEVNULL,
                                      # unshare complains when its child is SIGKILLed at the end
                                      stderr=subprocess.DEVNULL))
    pids = []
    for p in procs:
        for _ in range(500):
            try:
                with open("/proc/%d/task/%d/children" % (p.pid, p.pid)) as f:
                    kids = f.read().split()
            except OSError:
                kids = []
            if kids:
                pids.append(int(kids[0]))
                break
            time.sleep(0.01)
    return procs, pids


def audit_command(launcher=None):
    """`launcher` (an installed `audit`, e.g. /opt/pysandbox/venv/bin/audit), else the installed
    `audit` on PATH (setup.sh's launcher: what a user runs), else this tree's module."""
    import shutil
    installed = launcher or shutil.which("audit")
    if installed:
        return [installed], dict(os.environ)
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return [sys.executable, "-m", "audit"], env


def timed(args, runs, launchers):
    """Median and best wall time (ms) of each launcher running `audit ARGS`; the runs of the
    launchers alternate, so a machine whose load changes weighs on each alike."""
    commands = [audit_command(launcher) for launcher in launchers]
    samples = [[] for _ in commands]
    for _ in range(runs):
        for (command, env), mine in zip(commands, samples):
            start = time.perf_counter()
            proc = subprocess.run(command + list(args), env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, cwd=REPO)
            mine.append(time.perf_counter() - start)
            if proc.returncode not in (0, 1):
                raise SystemExit("%s %s failed: %s" % (command[0], " ".join(args), proc.stderr.decode()))
    return [(statistics.median(s) * 1000, min(s) * 1000) for s in samples]


def show(what, results, launchers):
    """One line per launcher; with several, each one's ratio to the first."""
    base = results[0][0]
    for launcher, (med, best) in zip(launchers, results):
        ratio = "" if len(launchers) == 1 else ", %.2fx the first" % (med / base)
        name = "" if len(launchers) == 1 else " [%s]" % (launcher or "audit")
        print("%s%s: median %.1f ms, min %.1f ms%s" % (what, name, med, best, ratio))


def count_targets(launcher=None):
    """PIDs of the targets `audit --all --format json` reported (a list, or an envelope)."""
    command, env = audit_command(launcher)
    out = subprocess.run(command + ["--all", "--format", "json"], env=env, capture_output=True, cwd=REPO).stdout
    data = json.loads(out or b"[]")
    if isinstance(data, dict):
        data = data.get("reports") or data.get("targets") or []
    return {r["target"]["pid"] for r in data if isinstance(r, dict) and "target" in r}


def grouping_time(runs):
    sys.path.insert(0, REPO)
    from audit.targets import Resolver
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        Resolver().all_targets()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000, min(samples) * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--containers", type=int, default=100)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--docker", default=None, help="name of a running Docker container to audit by name")
    ap.add_argument("--audit", action="append", default=None, metavar="LAUNCHER",
                    help="an installed `audit` to time (repeatable: their runs alternate and each is "
                         "compared with the first); default: `audit` on PATH, else this tree")
    args = ap.parse_args()
    launchers = args.audit or [None]
    compileall.compile_dir(os.path.join(REPO, "audit"), quiet=1)
    for launcher in launchers:
        print("audit command: %s" % " ".join(audit_command(launcher)[0]))
    procs, pids = spawn(args.containers)
    try:
        show("passive audit PID, text (one namespaced process)",
             timed([str(pids[0])], args.runs, launchers), launchers)
        show("passive audit PID --format json",
             timed([str(pids[0]), "--format", "json"], args.runs, launchers), launchers)
        show("passive audit self", timed(["self"], args.runs, launchers), launchers)
        if args.docker:
            show("passive audit NAME (Docker container, via its API)",
                 timed([args.docker, "--format", "json"], args.runs, launchers), launchers)
        show("audit --all --format json over %d containers (+ whatever else runs here)" % len(pids),
             timed(["--all", "--format", "json"], max(3, args.runs // 3), launchers), launchers)
        for launcher in launchers:
            reported = count_targets(launcher)
            mine = sum(1 for pid in pids if pid in reported)
            print("  %s: %d targets reported, %d of ours (each once: %s)" % (
                launcher or "audit", len(reported), mine,
                mine == len(pids) and not any(p.pid in reported for p in procs)))
        med, best = grouping_time(max(3, args.runs // 3))
        print("Resolver.all_targets() alone (this tree, in process): median %.1f ms, min %.1f ms" % (med, best))
        show("active audit PID", timed([str(pids[0]), "--active", "--format", "json"], max(3, args.runs // 3),
                                       launchers), launchers)
    finally:
        # The namespaced sleepers are PID 1 of their namespaces: killing them (by PID) ends
        # the namespace; then their unshare parents.
        for pid in pids + [p.pid for p in procs]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in procs:
            p.wait()


if __name__ == "__main__":
    main()
