"""Wall time of the audit CLI, as a user runs it (the installed `audit` command, a fresh process each time).

    sudo python3 benchmarks/audit.py [--containers N] [--runs R] [--docker NAME]

Builds N lightweight containers (default 100): sleepers made with util-linux `unshare`
(mount, PID, network, IPC and UTS namespaces; each is two processes, the `unshare`
launcher and its child, PID 1 inside, which `--all` counts as one container). Prints the
median wall time of a passive `audit PID` of one of them, of `audit --all` over all of
them (and how many targets it reported), of the resolver's grouping alone
(Resolver.all_targets() in this process) and of an active `audit PID`. With --docker and
DOCKER_HOST pointing at a running daemon, `audit NAME` of that Docker container too.
Modules are byte-compiled first, as an installed package would be. Nothing is asserted.
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


def audit_command():
    """The installed `audit` (setup.sh's launcher: what a user runs), else this tree's module."""
    import shutil
    installed = shutil.which("audit")
    if installed:
        return [installed], dict(os.environ)
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return [sys.executable, "-m", "audit"], env


def timed(args, runs):
    command, env = audit_command()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(command + list(args), env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, cwd=REPO)
        samples.append(time.perf_counter() - start)
        if proc.returncode not in (0, 1):
            raise SystemExit("audit %s failed: %s" % (" ".join(args), proc.stderr.decode()))
    return statistics.median(samples) * 1000, min(samples) * 1000


def count_targets():
    """PIDs of the targets `audit --all --format json` reported (a list, or an envelope)."""
    command, env = audit_command()
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
    args = ap.parse_args()
    compileall.compile_dir(os.path.join(REPO, "audit"), quiet=1)
    print("audit command: %s" % " ".join(audit_command()[0]))
    procs, pids = spawn(args.containers)
    try:
        med, best = timed([str(pids[0]), "--format", "json"], args.runs)
        print("passive audit PID (one namespaced process): median %.1f ms, min %.1f ms" % (med, best))
        if args.docker:
            med, best = timed([args.docker, "--format", "json"], args.runs)
            print("passive audit NAME (Docker container, via its API): median %.1f ms, min %.1f ms" % (med, best))
        med, best = timed(["--all", "--format", "json"], max(3, args.runs // 3))
        reported = count_targets()
        mine = sum(1 for pid in pids if pid in reported)
        print("audit --all over %d containers (+ whatever else runs here): median %.1f ms, min %.1f ms; "
              "%d targets reported, %d of ours (each once: %s)" % (
                  len(pids), med, best, len(reported), mine, mine == len(pids) and not
                  any(p.pid in reported for p in procs)))
        med, best = grouping_time(max(3, args.runs // 3))
        print("Resolver.all_targets() alone (in process): median %.1f ms, min %.1f ms" % (med, best))
        med, best = timed([str(pids[0]), "--active", "--format", "json"], max(3, args.runs // 3))
        print("active audit PID: median %.1f ms, min %.1f ms" % (med, best))
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
