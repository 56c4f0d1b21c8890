"""N strict CLI runs started at once (default 500) with a mix of exits, timeouts, OOM kills and
fork bombs; reports setup failures, verdicts, what was left behind and how long it took.
Nothing is asserted (tests/test_load.py asserts the same at N=100).

    python benchmarks/load.py [-n 500] [--pysandbox PATH] [--also-gc [--delegate USER]]

--also-gc runs `pysandbox gc` in a loop while the runs start and end (as root also
`pysandbox delegate USER` when --delegate USER is given), the orders the issue found fragile.
"""
import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from sandbox import cgroup  # noqa: E402

BOMB = ("import os, time\n"
        "while True:\n"
        "    try:\n"
        "        os.fork()\n"
        "    except OSError:\n"
        "        time.sleep(0.05); os._exit(3)\n")
PY = ["/usr/bin/python3", "-I", "-S", "-c"]
KINDS = [
    ("exit", [], ["/bin/true"], "exit"),
    ("exit3", [], ["/bin/sh", "-c", "exit 3"], "exit"),
    ("timeout", ["--timeout", "1"], ["/bin/sleep", "30"], "timeout"),
    ("oom", ["--memory", "32M"], PY + ["b = bytearray(96 << 20)"], "oom"),
    ("bomb", ["--pids", "16"], PY + [BOMB], "pids"),
]


def leftovers(prefix):
    dirs = set()
    for _fstype, point, _root, _opts in cgroup.mounts():
        for parent in (os.path.join(point, cgroup.PARENT), cgroup.v1_parent(point)):
            try:
                dirs.update(os.path.join(parent, n) for n in os.listdir(parent) if n.startswith(prefix))
            except OSError:
                pass
    procs = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/cgroup" % entry) as f:
                    if "/" + prefix in f.read():
                        procs.append(int(entry))
            except OSError:
                pass
    return sorted(dirs), procs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=500)
    beside = os.path.join(os.path.dirname(sys.executable), "pysandbox")  # this venv's own command
    parser.add_argument("--pysandbox", default=beside if os.path.exists(beside) else shutil.which("pysandbox"))
    parser.add_argument("--also-gc", action="store_true")
    parser.add_argument("--delegate", metavar="USER")
    options = parser.parse_args()
    work = tempfile.mkdtemp(prefix="pysandbox-load-")
    state = os.path.join(work, "state")
    env = dict(os.environ, PYSANDBOX_STATE_DIR=state)
    prefix = "bload%d-" % os.getpid()
    with open("/proc/self/mountinfo") as f:
        mounts_before = {line.split()[4] for line in f}
    runs = []
    side = []
    started = time.monotonic()
    try:
        for number in range(options.n):
            kind, extra, argv, reason = KINDS[number % len(KINDS)]
            name = "%s%d" % (prefix, number)
            result = os.path.join(work, name + ".json")
            err = open(os.path.join(work, name + ".err"), "w+")
            proc = subprocess.Popen([options.pysandbox, "run", "--profile", "strict", "--name", name, "--result",
                                     result] + extra + ["--"] + argv, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=err, env=env)
            runs.append((proc, err, kind, reason, result))
            if options.also_gc and number % 25 == 0:
                side.append(subprocess.Popen([options.pysandbox, "gc"], stdout=subprocess.DEVNULL,
                                             stderr=subprocess.PIPE, env=env, text=True))
                if options.delegate:
                    side.append(subprocess.Popen([options.pysandbox, "delegate", options.delegate],
                                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                                                 text=True))
        all_started = time.monotonic() - started
        outcomes = collections.Counter()
        setup_failures = []
        internal = 0
        for proc, err, kind, reason, result in runs:
            proc.wait()
            err.seek(0)
            message = err.read()
            err.close()
            verdict = {}
            try:
                with open(result) as f:
                    verdict = json.load(f)
            except (OSError, ValueError):
                verdict = {"reason": "no-verdict(exit %s)" % proc.returncode}
            got = verdict.get("reason", "none")
            outcomes[(kind, got)] += 1
            if proc.returncode == 125 or got == "setup-error" or got.startswith("no-verdict"):
                setup_failures.append((kind, verdict.get("stage"), message.strip()[:200]))
            internal += "internal error" in message
        all_done = time.monotonic() - started
        side_failures = []
        for proc in side:
            _out, err = proc.communicate()
            if proc.returncode != 0 or "internal error" in err:
                side_failures.append((proc.args[1], proc.returncode, err.strip()[:200]))
        dirs, procs = leftovers(prefix)
        with open("/proc/self/mountinfo") as f:
            new_mounts = [m for m in ({line.split()[4] for line in f} - mounts_before) if prefix in m or work in m]
        states = os.listdir(state) if os.path.isdir(state) else []
        print("%d strict CLI runs started at once (%s), layout %s, euid %d, %s"
              % (options.n, ", ".join(k[0] for k in KINDS), cgroup.detect(), os.geteuid(), options.pysandbox))
        print("  all started after %.2f s, all done after %.2f s" % (all_started, all_done))
        print("  verdicts (kind -> reason: count):")
        for (kind, got), count in sorted(outcomes.items()):
            expected = dict((k[0], k[3]) for k in KINDS)[kind]
            print("    %-8s -> %-12s %4d%s" % (kind, got, count, "" if got == expected else "   (expected %s)" % expected))
        print("  setup failures: %d   messages saying 'internal error': %d" % (len(setup_failures), internal))
        for failure in setup_failures[:10]:
            print("    %s: stage %s: %s" % failure)
        if options.also_gc:
            print("  gc/delegate alongside: %d, failed: %d" % (len(side), len(side_failures)))
            for failure in side_failures[:10]:
                print("    %s exit %s: %s" % failure)
        print("  left behind: %d cgroups, %d processes, %d host mounts, %d state files"
              % (len(dirs), len(procs), len(new_mounts), len(states)))
        for path in dirs[:10]:
            print("    " + path)
    finally:
        for proc, err, *_ in runs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
