"""Density: N sandboxes running at once, pysandbox (strict, one supervisor) next to bubblewrap.

    sudo /opt/pysandbox/venv/bin/python benchmarks/density.py [--n 100,1000] [--repeat 3] [--json out.json]

For each N and each runtime: start N sandboxes that sleep, report
  - start: seconds from the first start until every sleep runs (found in /proc),
  - memory: MemAvailable drop per sandbox once all run (kernel + user memory: namespaces,
    cgroups, page tables, the supervisor's own growth), and the Slab part of it,
  - held: the growth of what the sandboxes hold and no reclaim takes back, page cache left
    out (AnonPages + Shmem + PageTables + KernelStack + Slab + Percpu, /proc/meminfo):
    MemAvailable also moves with the page cache and the kernel's estimate of what it could
    reclaim, and wandered 305-840 KiB per sandbox over runs of one build (stop 21),
  - teardown: seconds from the first kill until every sandbox is gone (pysandbox: every
    handle waited and its cgroups removed).
pysandbox drives all N from this one process through `Sandbox.start()`; bubblewrap runs
one `bwrap --unshare-all --die-with-parent` process per sandbox (its normal use). Both get
user, pid, mount, net, uts, ipc and cgroup namespaces (strict adds a time namespace,
cgroups with limits, seccomp and Landlock). Prints medians of --repeat runs and the ratio
pysandbox/bubblewrap; the target is within 2x on start time and memory.
Needs root on this host (v1 cgroups); refuses to run without bubblewrap.
"""
import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# The install's own package, as the other benchmarks: this file's checkout has no compiled
# child (setup.sh builds pysandbox-stage into the install), and a run of the repository's
# sources took the Python stages (2.4x the start time and 2x the memory, stop 20).


def meminfo():
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            out[key] = int(value.split()[0]) * 1024
    return out


HELD = ("AnonPages", "Shmem", "PageTables", "KernelStack", "Slab", "Percpu")


def per_sandbox(before, after, n):
    return dict(mem=(before["MemAvailable"] - after["MemAvailable"]) / n,
                slab=(after["Slab"] - before["Slab"]) / n,
                held=sum(after.get(k, 0) - before.get(k, 0) for k in HELD) / n)


def sleepers(token):
    """PIDs of processes whose argv is `sleep <token>`."""
    want = ("sleep\0%s\0" % token).encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                data = f.read()
        except OSError:
            continue
        if data.endswith(want) and data.split(b"\0")[0].endswith(b"sleep"):
            found.append(int(entry))
    return found


def wait_count(token, n, timeout):
    deadline = time.monotonic() + timeout
    while True:
        count = len(sleepers(token))
        if count >= n:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def settle():
    # let the previous round's namespaces and cgroups be freed (RCU, deferred work)
    time.sleep(1.0)


def run_pysandbox(n, token):
    from sandbox import Sandbox, load_profile
    from sandbox import cgroup
    cgroup.gc()
    box = Sandbox(load_profile("strict"))
    box.plan()                # the one-time profile work (seccomp compile etc.) is not per sandbox
    box.run(["/bin/true"])    # and the compiled child's preparation
    if box.stager_reason is not None:
        sys.exit("density: this install runs the Python stages (%s), not the compiled child: run the "
                 "benchmark with the interpreter of a full install (its venv's python)" % box.stager_reason)
    before = meminfo()
    t0 = time.monotonic()
    handles = []
    try:
        for _ in range(n):
            handles.append(box.start(["/bin/sleep", token]))
        ok = wait_count(token, n, 120)
        t_running = time.monotonic() - t0
        after = meminfo()
    finally:
        t1 = time.monotonic()
        for handle in handles:
            handle.kill()
        for handle in handles:
            handle.wait()
        t_down = time.monotonic() - t1
    return dict(ok=ok, start=t_running, teardown=t_down, **per_sandbox(before, after, n))


def bwrap_argv(token):
    argv = ["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr"]
    for name in ("bin", "lib", "lib64", "sbin"):
        target = os.readlink("/" + name) if os.path.islink("/" + name) else None
        if target:
            argv += ["--symlink", target, "/" + name]
        elif os.path.isdir("/" + name):
            argv += ["--ro-bind", "/" + name, "/" + name]
    return argv + ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "sleep", token]


def run_bwrap(n, token):
    argv = bwrap_argv(token)
    before = meminfo()
    t0 = time.monotonic()
    procs = []
    try:
        for _ in range(n):
            procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, close_fds=True))
        ok = wait_count(token, n, 120)
        t_running = time.monotonic() - t0
        after = meminfo()
    finally:
        t1 = time.monotonic()
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()
        deadline = time.monotonic() + 30
        while sleepers(token) and time.monotonic() < deadline:
            time.sleep(0.02)
        t_down = time.monotonic() - t1
    return dict(ok=ok, start=t_running, teardown=t_down, **per_sandbox(before, after, n))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", default="100,1000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("density.py: needs root (cgroup v1 limits on this host)")
    if not shutil.which("bwrap"):
        sys.exit("density.py: bubblewrap not installed (apt-get install bubblewrap)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sizes = [int(x) for x in args.n.split(",")]
    results = {}
    for n in sizes:
        for runtime, fn in (("pysandbox", run_pysandbox), ("bwrap", run_bwrap)):
            rounds = []
            for r in range(args.repeat):
                settle()
                token = "%d.%d%d" % (3600, os.getpid(), len(rounds) + 100 * n + (7 if runtime == "bwrap" else 0))
                rounds.append(fn(n, token))
                print("  %-9s N=%-5d round %d: start %.2fs  mem %.0f KiB/sandbox  slab %.0f KiB  held %.0f KiB"
                      "  teardown %.2fs%s"
                      % (runtime, n, r + 1, rounds[-1]["start"], rounds[-1]["mem"] / 1024,
                         rounds[-1]["slab"] / 1024, rounds[-1]["held"] / 1024, rounds[-1]["teardown"],
                         "" if rounds[-1]["ok"] else "  (NOT ALL RUNNING)"), flush=True)
            results[(runtime, n)] = {k: statistics.median(x[k] for x in rounds)
                                     for k in ("start", "mem", "slab", "held", "teardown")}
    from sandbox import cgroup
    cgroup.gc(full=True)  # our empty parent cgroups go too
    print()
    print("%-6s %-10s %10s %14s %12s %12s %12s" % ("N", "runtime", "start s", "mem KiB/sbx", "slab KiB",
                                                   "held KiB", "teardown s"))

    def ratio(a, b):
        return a / b if b else float("nan")
    for n in sizes:
        for runtime in ("pysandbox", "bwrap"):
            m = results[(runtime, n)]
            print("%-6d %-10s %10.2f %14.0f %12.0f %12.0f %12.2f" % (n, runtime, m["start"], m["mem"] / 1024,
                                                                  m["slab"] / 1024, m["held"] / 1024, m["teardown"]))
        p, b = results[("pysandbox", n)], results[("bwrap", n)]
        print("%-6d %-10s %10.2f %14.2f %12.2f %12.2f %12.2f" % (
            n, "ratio", p["start"] / b["start"], ratio(p["mem"], b["mem"]), ratio(p["slab"], b["slab"]),
            ratio(p["held"], b["held"]), p["teardown"] / b["teardown"]))
    if args.json:
        import json
        with open(args.json, "w") as f:
            json.dump({"%s/%d" % k: v for k, v in results.items()}, f, indent=1)


if __name__ == "__main__":
    main()
