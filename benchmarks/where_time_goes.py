#!/usr/bin/env python3
"""Where the machine's CPU goes per run: strict against bubblewrap, K at once, under `perf`.

Each runtime does K threads x N runs of `/bin/true` (or python) from one supervisor, as in
`throughput.py`, while `perf record -a -g -e cpu-clock` samples every CPU; only samples
between the first and the last counted run count (not the interpreter's start, the imports
or the warm-up), and the recordings of the two runtimes alternate over --rounds, averaged,
since the machine drifts from one recording to the next. Every sample is put in one
bucket: the process kind (the supervisor's Python, the stager and PID 1, bubblewrap, the
command, kernel workers, idle) and what it was doing (user space, the syscall it was in, a
page fault, a kernel worker's function, softirq work). The table gives milliseconds of CPU
per run for each bucket and the difference between the two runtimes, largest first: the
profile of where strict's time goes that the issue asks for, measured the same way before
and after a change. Nothing here is asserted anywhere; perf's own cost inflates every row
a little and alike.

    sudo /opt/pysandbox/venv/bin/python benchmarks/where_time_goes.py [-k 8] [-n 60] [--rounds 2]
        [--command true|python] [--top 30]

Needs perf (Debian's linux-perf) and root (system-wide sampling).
"""
import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def workload(variant, k, n, command, pid_file):
    """Run in the child perf records: K threads x N runs, after a warm-up. It writes its PID
    (the supervisor is told apart by it, not by a name a python command shares) and the
    CLOCK_MONOTONIC bounds of the counted runs: only samples between them are counted, so
    the interpreter's start, the imports, the Sandbox's preparation and the warm-up are not
    charged to the runs."""
    sys.path.insert(0, HERE)
    from throughput import BWRAP, COMMANDS, in_threads
    argv = COMMANDS[command]
    if variant == "strict":
        from sandbox import Sandbox, load_profile
        box = Sandbox(load_profile("strict"))
        box.run(argv)
        if box.stager_reason is not None:
            sys.exit("where_time_goes.py: strict runs the Python stages here (%s)" % box.stager_reason)

        def one():
            return None if box.run(argv, timeout=60).exit_code == 0 else "failed"
    else:
        def one():
            done = subprocess.run(BWRAP + argv, stdin=subprocess.DEVNULL)
            return None if done.returncode == 0 else done.returncode
    in_threads(k, 2, one)
    start = time.clock_gettime(time.CLOCK_MONOTONIC)
    in_threads(k, n, one)
    end = time.clock_gettime(time.CLOCK_MONOTONIC)
    with open(pid_file, "w") as f:
        f.write("%d %.9f %.9f\n" % (os.getpid(), start, end))
    if variant == "strict":
        box.close()


def kind(comm, pid, supervisor):
    if pid == supervisor:
        return "supervisor (python)"
    if comm.startswith("kworker"):
        return "kernel workers"
    if comm.startswith("swapper"):
        return "idle"
    if comm.startswith("ksoftirqd") or comm.startswith("rcu"):
        return "softirq threads"
    return {"python": "the command", "python3": "the command", "pysandbox-stage": "stager, PID 1",
            "pysandbox-init": "stager, PID 1", "bwrap": "bubblewrap", "true": "the command",
            "perf": "perf", "perf-exec": "perf"}.get(comm, "other")


def bucket(symbols):
    """What a sample was doing, from its kernel call chain (innermost first)."""
    if not symbols:
        return "user space"
    if "handle_softirqs" in symbols or "__do_softirq" in symbols:  # the latter before Linux 6.9
        return "softirq"
    for name in reversed(symbols):  # the outermost syscall of the chain
        if name.startswith(("__x64_sys_", "__do_sys_")):
            return "syscall " + name.replace("__x64_sys_", "").replace("__do_sys_", "")
    if "asm_exc_page_fault" in symbols:
        return "page fault"
    if "process_one_work" in symbols:
        at = symbols.index("process_one_work")
        return "work " + (symbols[at - 1] if at else "?")
    if "do_seccomp" in symbols:
        return "syscall seccomp"
    for name in ("kernfs_fop_write_iter", "seq_read", "seq_read_iter", "vfs_write", "vfs_read"):
        if name in symbols:
            return "syscall " + ("write" if "write" in name else "read")
    return "kernel, other"


ACTIVITIES = {
    "namespaces (clone, unshare, setns)": ("syscall clone", "syscall clone3", "syscall unshare", "syscall setns",
                                           "syscall vfork"),
    "cgroup directories (mkdir, rmdir)": ("syscall mkdir", "syscall mkdirat", "syscall rmdir"),
    "mounts": ("syscall mount", "syscall umount", "syscall pivot_root", "syscall open_tree", "syscall move_mount",
               "syscall mount_setattr", "syscall fsopen", "syscall fsmount", "syscall fsconfig"),
    "exec and exit": ("syscall execve", "syscall exit_group", "syscall exit", "page fault"),
    "files (open, read, write, stat, close)": ("syscall openat", "syscall open", "syscall read", "syscall write",
                                               "syscall newfstatat", "syscall close", "syscall readlink",
                                               "syscall creat", "syscall symlink", "syscall getdents64"),
    "seccomp and Landlock": ("syscall seccomp", "syscall prctl", "syscall landlock_create_ruleset",
                             "syscall landlock_add_rule", "syscall landlock_restrict_self"),
}


def _activity(what):
    if what.startswith("work "):
        return "kernel workers' " + ("cgroup teardown" if "css" in what else "other work")
    for name, members in ACTIVITIES.items():
        if what in members:
            return name
    return what if what in ("user space", "softirq") else "other kernel work"


def samples(data):
    """(comm, pid, time in s, bucket, period in ns) for every sample of a perf.data file."""
    out = subprocess.run(["perf", "script", "-i", data, "-F", "comm,pid,time,period,ip,sym,dso"], capture_output=True,
                         text=True, check=True).stdout
    for block in out.split("\n\n"):
        lines = block.strip().split("\n")
        if not lines or not lines[0].strip():
            continue
        head = lines[0].split()
        try:
            comm, pid, at, period = " ".join(head[:-3]), int(head[-3]), float(head[-2].rstrip(":")), int(head[-1])
        except (ValueError, IndexError):
            continue
        symbols = []
        for line in lines[1:]:
            parts = line.split(None, 1)
            if len(parts) == 2 and "[kernel.kallsyms]" in parts[1]:
                symbols.append(re.sub(r"\+0x[0-9a-f]+", "", parts[1]).split(" (")[0].strip())
        yield re.sub(r"[/:].*", "", comm), pid, at, bucket(symbols), period


def record(variant, args, directory):
    data = os.path.join(directory, variant + ".data")
    pid_file = os.path.join(directory, variant + ".pid")
    child = [sys.executable, os.path.abspath(__file__), "--workload", variant, "-k", str(args.k), "-n", str(args.n),
             "--command", args.command, "--pid-file", pid_file]
    # cpu-clock: every sample's period is nanoseconds of a CPU's time (the default event on a
    # host with a PMU counts cycles); the monotonic clock: the workload's bounds compare
    subprocess.run(["perf", "record", "-q", "-a", "-g", "-e", "cpu-clock", "-k", "CLOCK_MONOTONIC",
                    "-F", str(args.frequency), "-o", data, "--"] + child, check=True, stdout=subprocess.DEVNULL)
    table = collections.Counter()
    runs = args.k * args.n
    with open(pid_file) as f:
        supervisor, start, end = f.read().split()
    supervisor, start, end = int(supervisor), float(start), float(end)
    for comm, pid, at, what, period in samples(data):
        if start <= at <= end:
            table[(kind(comm, pid, supervisor), what)] += period / 1e6 / runs
    return table


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-k", type=int, default=8, help="runs at once (threads)")
    parser.add_argument("-n", type=int, default=60, help="runs per thread")
    parser.add_argument("--command", choices=("true", "python"), default="true")
    parser.add_argument("--frequency", type=int, default=4000, help="samples per second and CPU")
    parser.add_argument("--top", type=int, default=30, help="rows of the detailed table")
    parser.add_argument("--rounds", type=int, default=2, help="recordings of each runtime, in alternating order")
    parser.add_argument("--workload", choices=("strict", "bubblewrap"), help=argparse.SUPPRESS)
    parser.add_argument("--pid-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.workload:
        return workload(args.workload, args.k, args.n, args.command, args.pid_file)
    if shutil.which("perf") is None:
        sys.exit("where_time_goes.py: perf is not installed (Debian: apt-get install linux-perf)")
    if os.geteuid() != 0:
        sys.exit("where_time_goes.py: system-wide sampling needs root")
    with tempfile.TemporaryDirectory(prefix="where-time-goes-") as directory:
        # rounds in alternating order, averaged: the machine drifts between recordings
        tables = {"strict": collections.Counter(), "bubblewrap": collections.Counter()}
        for index in range(args.rounds):
            for variant in (("strict", "bubblewrap") if index % 2 == 0 else ("bubblewrap", "strict")):
                for key, ms in record(variant, args, directory).items():
                    tables[variant][key] += ms / args.rounds
    strict, bwrap = tables["strict"], tables["bubblewrap"]
    print("%d at once, %s, %d x %d runs per recording, %d recordings each; CPU ms per run (all CPUs, perf's own "
          "cost included)" % (args.k, args.command, args.k, args.n, args.rounds))
    by_kind = {name: collections.Counter() for name in tables}
    for name, table in tables.items():
        for (who, _what), ms in table.items():
            by_kind[name][who] += ms
    print("\n%-40s %9s %11s %8s" % ("process kind", "strict", "bubblewrap", "delta"))
    for who in sorted(set(by_kind["strict"]) | set(by_kind["bubblewrap"]),
                      key=lambda w: -(by_kind["strict"][w] + by_kind["bubblewrap"][w])):
        print("%-40s %9.2f %11.2f %+8.2f" % (who, by_kind["strict"][who], by_kind["bubblewrap"][who],
                                             by_kind["strict"][who] - by_kind["bubblewrap"][who]))
    busy = {name: sum(ms for (who, _), ms in table.items() if who not in ("idle", "perf"))
            for name, table in tables.items()}
    print("%-40s %9.2f %11.2f %+8.2f" % ("busy, all but idle and perf", busy["strict"], busy["bubblewrap"],
                                         busy["strict"] - busy["bubblewrap"]))
    # what the CPUs did, whoever did it (a namespace made by bubblewrap's clone and by PID 1's
    # unshare are both "namespaces"; compare activities, then the detail)
    by_what = {name: collections.Counter() for name in tables}
    for name, table in tables.items():
        for (_who, what), ms in table.items():
            by_what[name][_activity(what)] += ms
    print("\n%-40s %9s %11s %8s" % ("activity", "strict", "bubblewrap", "delta"))
    for what in sorted(set(by_what["strict"]) | set(by_what["bubblewrap"]),
                       key=lambda w: -abs(by_what["strict"][w] - by_what["bubblewrap"][w])):
        print("%-40s %9.2f %11.2f %+8.2f" % (what, by_what["strict"][what], by_what["bubblewrap"][what],
                                             by_what["strict"][what] - by_what["bubblewrap"][what]))
    print("\n%-58s %8s %8s %8s" % ("process kind / what", "strict", "bwrap", "delta"))
    rows = sorted(set(strict) | set(bwrap), key=lambda key: -abs(strict[key] - bwrap[key]))
    for key in rows[:args.top]:
        print("%-58s %8.2f %8.2f %+8.2f" % (("%s / %s" % key)[:58], strict[key], bwrap[key], strict[key] - bwrap[key]))


if __name__ == "__main__":
    sys.exit(main())
