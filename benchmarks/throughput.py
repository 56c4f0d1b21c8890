#!/usr/bin/env python3
"""Throughput: sandboxes per second with K runs at once from one supervisor (threads over
one prepared `Sandbox(load_profile("strict"))`) next to K threads each calling
`subprocess.run(["bwrap", "--unshare-all", "--die-with-parent", "--new-session", ...])`, the
way a Python grader starts bubblewrap. Rounds of the variants rotate in one run, so a change
of the machine's load affects all alike; the medians of the rounds are reported.

Besides strict itself, `strict without cgroups` is strict with its [limits] off (no cgroup
is made at all): the difference between the two rows is what the cgroups cost a run. Each
row also gives the CPU time the whole machine spent per run (/proc/stat: every process and
kernel thread, the kernel's cgroup and namespace teardown workers included).

`cgroups alone, no task` makes, reads and removes one run's cgroup set with strict's limits
and nothing else: no sandbox, and no task ever joins it (so the kernel's attach and exit
work is left out). Its CPU per set is a lower bound of what the cgroups add to a run, to set
against what strict without cgroups saves against bubblewrap (the last line).

    sudo /opt/pysandbox/venv/bin/python benchmarks/throughput.py [-k 8] [-n 8] [--rounds 5] [--command true|python]

Run it with the interpreter of the install to measure (its venv's python). No timing is
asserted anywhere.
"""
import argparse
import os
import statistics
import subprocess
import sys
import threading
import time

BWRAP = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--ro-bind", "/usr", "/usr",
         "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
         "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
COMMANDS = {"true": ["/bin/true"], "python": ["/usr/bin/python3", "-c", "pass"]}
CGROUPS_ALONE = "cgroups alone, no task"


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
    import tempfile
    argv = COMMANDS[args.command]
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as unlimited:
        unlimited.write('extends = "strict"\n[limits]\nrequired = false\nmemory = 0\nmemory_swap = -1\n'
                        'pids = 0\ncpus = 0\n')
        unlimited.flush()
        boxes = {"pysandbox strict": Sandbox(load_profile("strict")),
                 "strict without cgroups": Sandbox(load_profile(unlimited.name))}
    if boxes["strict without cgroups"].plan().cgroup_limits is not None:
        sys.exit("throughput.py: the variant without cgroups still asks for some (strict's [limits] changed)")
    for name, box in boxes.items():
        box.run(argv)  # prepared and warm, as a grader's long-lived supervisor is
        if box.stager_reason is not None:
            sys.exit("throughput.py: %s runs the Python stages here (%s), not the compiled child"
                     % (name, box.stager_reason))

    def sandbox_run(box):
        def one():
            result = box.run(argv, timeout=60)
            return None if result.exit_code == 0 else result
        return one

    def bwrap_run():
        done = subprocess.run(BWRAP + argv, stdin=subprocess.DEVNULL)
        return None if done.returncode == 0 else done.returncode

    # How often a run made its network namespace in PID 1 rather than in the stager's helper
    # (stager.net_inline: no CPU free for the helper), reported with the rates.
    from sandbox import stager
    choices = {True: 0, False: 0}
    decide = stager.net_inline

    def counted_net_inline():
        inline = decide()
        choices[inline] += 1
        return inline
    stager.net_inline = counted_net_inline

    # The cgroups alone: what one run's set costs the machine with no sandbox at all (made
    # with strict's limits, its counters read, removed). No task ever joins, so the kernel's
    # attach and exit work is left out: a lower bound of what the cgroups add to a run.
    from sandbox import cgroup
    import itertools
    limits = boxes["pysandbox strict"].plan().cgroup_limits
    set_numbers = itertools.count()  # next() is atomic in CPython: one name per set, across threads

    def cgroups_alone():
        group = cgroup.create("bench-%d-%d" % (os.getpid(), next(set_numbers)), limits, own_pid_namespace=True)
        if isinstance(group, cgroup.NoCgroup):
            sys.exit("throughput.py: no cgroup could be made here (%s)" % (group.warning or "no cgroups"))
        try:
            group.verdict()
        finally:
            group.destroy()

    variants = [(name, sandbox_run(box)) for name, box in boxes.items()] + [("bubblewrap", bwrap_run),
                                                                             (CGROUPS_ALONE, cgroups_alone)]
    rates = {name: [] for name, _ in variants}
    cpu = {name: [] for name, _ in variants}
    runs = args.k * args.n
    for index in range(args.rounds):
        shift = index % len(variants)
        for name, one in variants[shift:] + variants[:shift]:
            before = machine_cpu_ms()
            rates[name].append(runs / in_threads(args.k, args.n, one))
            cpu[name].append((machine_cpu_ms() - before) / runs)
    for box in boxes.values():
        box.close()
    base = statistics.median(rates["bubblewrap"])
    cost = {name: statistics.median(values) for name, values in cpu.items()}
    print("%d at once, %s, %d runs per round, %d rounds (pid %d)" % (args.k, " ".join(argv), runs, args.rounds,
                                                                    os.getpid()))
    print("%-24s %10s %14s %14s" % ("runtime", "runs/s", "CPU ms/run", "/ bubblewrap"))
    for name, _ in variants:
        rate = statistics.median(rates[name])
        ratio = "%14.2f" % (rate / base) if name != CGROUPS_ALONE else "%14s" % "-"  # not a run
        print("%-24s %10.1f %14.2f %s" % (name, rate, statistics.median(cpu[name]), ratio))
    print("pysandbox / bubblewrap: %.2f" % (statistics.median(rates["pysandbox strict"]) / base))
    print("CPU per run, bubblewrap's less strict without cgroups': %+.2f ms; the cgroups alone (no task): %.2f ms "
          "per set" % (cost["bubblewrap"] - cost["strict without cgroups"], cost[CGROUPS_ALONE]))
    total = choices[True] + choices[False]
    if total:
        print("network namespace made by PID 1 itself (no CPU free for the helper): %d of %d runs"
              % (choices[True], total))


def machine_cpu_ms():
    """CPU time the whole machine has spent busy (all CPUs, /proc/stat), in milliseconds."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system irq softirq: not idle or iowait, not steal (the hypervisor's), and not
    # guest, which user already counts
    busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6]
    return busy * 1000.0 / os.sysconf("SC_CLK_TCK")

if __name__ == "__main__":
    main()
