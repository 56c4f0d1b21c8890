#!/usr/bin/env python3
"""Throughput: sandboxes per second with K runs at once from one supervisor (threads over
one prepared `Sandbox(load_profile("strict"))`) next to K threads each calling
`subprocess.run(["bwrap", "--unshare-all", "--die-with-parent", "--new-session", ...])`, the
way a Python grader starts bubblewrap. Rounds of the two alternate in one run, so a change
of the machine's load affects both alike; the medians of the rounds are reported.

    sudo /opt/pysandbox/venv/bin/python benchmarks/throughput.py [-k 8] [-n 8] [--rounds 5] [--command true|python]

Run it with the interpreter of the install to measure (its venv's python). No timing is
asserted anywhere.
"""
import argparse
import os
import statistics
import subprocess
import threading
import time

BWRAP = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--ro-bind", "/usr", "/usr",
         "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
         "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
COMMANDS = {"true": ["/bin/true"], "python": ["/usr/bin/python3", "-c", "pass"]}


def in_threads(k, per_thread, one_run):
    """Wall time of k threads each doing per_thread runs (all threads exist before any run)."""
    ready = threading.Barrier(k + 1)
    failures = []

    def worker():
        ready.wait()
        for _ in range(per_thread):
            failure = one_run()
            if failure:
                failures.append(failure)
    threads = [threading.Thread(target=worker) for _ in range(k)]
    for thread in threads:
        thread.start()
    ready.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    if failures:
        raise RuntimeError("%d runs failed, e.g. %r" % (len(failures), failures[0]))
    return wall


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-k", type=int, default=8, help="runs at once (threads)")
    parser.add_argument("-n", type=int, default=8, help="runs per thread and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--command", choices=sorted(COMMANDS), default="python")
    args = parser.parse_args()
    from sandbox import Sandbox, load_profile
    argv = COMMANDS[args.command]
    box = Sandbox(load_profile("strict"))
    box.run(argv)  # prepared and warm, as a grader's long-lived supervisor is

    def sandbox_run():
        result = box.run(argv, timeout=60)
        return None if result.exit_code == 0 else result

    def bwrap_run():
        done = subprocess.run(BWRAP + argv, stdin=subprocess.DEVNULL)
        return None if done.returncode == 0 else done.returncode

    rates = {"pysandbox": [], "bubblewrap": []}
    runs = args.k * args.n
    for index in range(args.rounds):
        order = (("pysandbox", sandbox_run), ("bubblewrap", bwrap_run))
        for name, one in (order if index % 2 == 0 else order[::-1]):
            rates[name].append(runs / in_threads(args.k, args.n, one))
    box.close()
    ours, theirs = statistics.median(rates["pysandbox"]), statistics.median(rates["bubblewrap"])
    print("%d at once, %s, %d runs per round, %d rounds (pid %d)" % (args.k, " ".join(argv), runs, args.rounds,
                                                                    os.getpid()))
    print("%-12s %10s" % ("runtime", "runs/s"))
    print("%-12s %10.1f" % ("pysandbox", ours))
    print("%-12s %10.1f" % ("bubblewrap", theirs))
    print("pysandbox / bubblewrap: %.2f" % (ours / theirs))


if __name__ == "__main__":
    main()
