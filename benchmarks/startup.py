#!/usr/bin/env python3
"""Startup time of `pysandbox run --profile strict -- /bin/true` next to bubblewrap, runc
and crun (Debian's packages), measured in one run, medians and ratios.

    sudo python3 benchmarks/startup.py [-n RUNS] [--pysandbox PATH] [--baseline PATH]

--baseline PATH (another install's `pysandbox`, e.g. of the previous commit) adds an
interleaved comparison: the two are run alternately, strict CLI and warm API, so a
machine whose load changes during the measurement affects both alike; wall-clock
medians and the CPU time of the whole run (children included) are reported as ratios.

runc and crun run an OCI bundle whose root is a busybox-static tree; runc's default
spec (`runc spec`: every namespace but user and cgroup, masked paths, no seccomp).
crun refuses this host's hybrid cgroup layout (v1 controllers plus a cgroup2 mount that
has none), so the whole measurement runs inside a private mount namespace with the
cgroup2 mount unmounted there (nothing changes on the host). Every command runs once per
round, in rotation, so a load that changes during the measurement hits all alike:

  pysandbox strict          the CLI with no server (PYSANDBOX_SERVE=off)
  pysandbox strict, served  the same command with a `pysandbox serve` of this run's own
                            listening (started in the same namespace, or it would decline)
  interpreter floor         python3 -I -S -c 'import ctypes', the venv's interpreter

Timings are wall-clock of the whole command as a caller sees it. No timing is asserted
anywhere.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def make_bundle(directory):
    rootfs = os.path.join(directory, "rootfs")
    os.makedirs(os.path.join(rootfs, "bin"))
    shutil.copy("/bin/busybox", os.path.join(rootfs, "bin", "busybox"))
    os.symlink("busybox", os.path.join(rootfs, "bin", "true"))
    subprocess.run(["runc", "spec"], cwd=directory, check=True)
    with open(os.path.join(directory, "config.json")) as f:
        config = json.load(f)
    config["process"]["terminal"] = False
    config["process"]["args"] = ["/bin/true"]
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    return directory


API_LOOP = r"""
import json, sys, time
from sandbox import Sandbox, load_profile
box = Sandbox(load_profile("strict"))
box.run(["/bin/true"])
if getattr(box, "stager_reason", None):  # (a --baseline install may predate the attribute)
    sys.exit("the API runs the Python stages here: %s" % box.stager_reason)
out = []
for _ in range(int(sys.argv[1])):
    start = time.perf_counter()
    result = box.run(["/bin/true"])
    out.append(time.perf_counter() - start)
    if result.exit_code != 0:
        sys.exit("API run failed: %r" % result)
print(json.dumps(out))
"""

API_WORKER = r"""
import resource, sys, time
from sandbox import Sandbox, load_profile
box = Sandbox(load_profile("strict"))
box.run(["/bin/true"])
if getattr(box, "stager_reason", None):  # (a --baseline install may predate the attribute)
    sys.exit("the API runs the Python stages here: %s" % box.stager_reason)
for line in sys.stdin:
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    start, cpu = time.perf_counter(), time.process_time()
    result = box.run(["/bin/true"])
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu += c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime
    print(wall, cpu, result.exit_code, flush=True)
"""


def compare(current, baseline, runs):
    """Interleaved runs of two installs; returns {measure: (baseline median, current median)}."""
    import resource
    installs = {"baseline": baseline, "current": current}
    samples = {(kind, who): [] for kind in ("cli wall", "cli cpu", "api wall", "api cpu") for who in installs}
    workers = {}
    for who, script in installs.items():
        python = os.path.join(os.path.dirname(os.path.realpath(script)), "python3")
        workers[who] = subprocess.Popen([python, "-c", API_WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)
        subprocess.run([script, "run", "--profile", "strict", "--", "/bin/true"], check=True)
    try:
        for i in range(runs):
            for who in (("baseline", "current") if i % 2 else ("current", "baseline")):
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                start = time.perf_counter()
                done = subprocess.run([installs[who], "run", "--profile", "strict", "--", "/bin/true"],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                wall = time.perf_counter() - start
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                if done.returncode != 0:
                    raise RuntimeError("%s failed: %s" % (installs[who], done.stderr.decode()[-300:]))
                samples[("cli wall", who)].append(wall)
                samples[("cli cpu", who)].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
                workers[who].stdin.write("run\n")
                workers[who].stdin.flush()
                wall, cpu, code = workers[who].stdout.readline().split()
                if code != "0":
                    raise RuntimeError("API run of %s exited %s" % (installs[who], code))
                samples[("api wall", who)].append(float(wall))
                samples[("api cpu", who)].append(float(cpu))
    finally:
        for worker in workers.values():
            worker.stdin.close()
            worker.wait()
    return {kind: (statistics.median(samples[(kind, "baseline")]), statistics.median(samples[(kind, "current")]))
            for kind in ("cli wall", "cli cpu", "api wall", "api cpu")}


ROTATION = r"""
import json, os, subprocess, sys, time
spec = json.loads(sys.argv[1])
server = None
if spec["serve"]:
    server = subprocess.Popen([spec["pysandbox"], "serve", "--socket", spec["socket"], "--warm", "strict",
                               "--warm", "default"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    while True:
        line = server.stderr.readline()
        if not line or "listening at" in line:
            break
samples = {name: [] for name, _, _ in spec["commands"]}
try:
    for i in range(spec["runs"] + 1):
        for name, argv, env in spec["commands"]:
            if name.startswith("crun") or name.startswith("runc"):
                argv = argv + ["bench-%d-%d" % (i, time.monotonic_ns())]
            start = time.perf_counter()
            done = subprocess.run(argv, env=dict(os.environ, **env), stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            took = time.perf_counter() - start
            if done.returncode:
                sys.exit("%s failed (%d): %s" % (name, done.returncode, done.stderr.decode()[-300:]))
            if i:  # the first round warms every cache
                samples[name].append(took)
finally:
    if server is not None:
        server.terminate()
        server.wait()
print(json.dumps(samples))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--runs", type=int, default=30)
    parser.add_argument("--pysandbox", default=shutil.which("pysandbox") or "pysandbox")
    parser.add_argument("--baseline", help="another install's pysandbox to compare with, interleaved")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("startup.py: run as root (runc and crun need it)")
    results = {}
    tmp = tempfile.mkdtemp(prefix="pysandbox-bench-")
    os.chmod(tmp, 0o700)
    python = os.path.join(os.path.dirname(os.path.realpath(args.pysandbox)), "python3")
    try:
        off, served = {"PYSANDBOX_SERVE": "off"}, {"PYSANDBOX_SERVE": "require",
                                                   "PYSANDBOX_SERVE_SOCKET": os.path.join(tmp, "srv", "s.sock")}
        true = ["run", "--profile", "strict", "--", "/bin/true"]
        commands = [("pysandbox strict", [args.pysandbox] + true, off),
                    ("pysandbox strict, served", [args.pysandbox] + true, served),
                    ("pysandbox default", [args.pysandbox, "run", "--profile", "default", "--", "/bin/true"], off),
                    ("pysandbox default, served", [args.pysandbox, "run", "--profile", "default", "--", "/bin/true"],
                     served),
                    ("interpreter floor", [python, "-I", "-S", "-c", "import ctypes"], {})]
        if shutil.which("bwrap"):
            commands.append(("bubblewrap", [
                "bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--ro-bind", "/usr", "/usr",
                "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
                "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "/bin/true"], {}))
        if shutil.which("runc") and os.path.exists("/bin/busybox"):
            bundle = make_bundle(os.path.join(tmp, "bundle"))
            commands.append(("runc", ["runc", "run", "-b", bundle], {}))
            if shutil.which("crun"):
                commands.append(("crun", ["crun", "run", "-b", bundle], {}))
        spec = {"runs": args.runs, "commands": commands, "serve": True, "pysandbox": args.pysandbox,
                "socket": served["PYSANDBOX_SERVE_SOCKET"]}
        loop = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
             "umount /sys/fs/cgroup/unified 2>/dev/null; exec \"$0\" -c \"$1\" \"$2\"",
             sys.executable, ROTATION, json.dumps(spec)], capture_output=True, text=True)
        if loop.returncode:
            sys.exit("startup.py: " + (loop.stderr.strip()[-500:] or "the rotation failed"))
        results.update(json.loads(loop.stdout))
        # The Python API with a prepared Sandbox: what a grader or service pays per run
        # (no interpreter start, profile and filter already in memory).
        api = subprocess.run([python, "-c", API_LOOP, str(args.runs)], capture_output=True, text=True)
        if api.returncode == 0:
            results["pysandbox API (warm)"] = json.loads(api.stdout)
        else:
            print("API: " + api.stderr.strip()[-300:], file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run([args.pysandbox, "gc"], stdout=subprocess.DEVNULL)  # our empty parent cgroups

    medians = {name: statistics.median(samples) for name, samples in results.items()}
    crun, bwrap = medians.get("crun"), medians.get("bubblewrap")
    print("%-26s %10s %10s %10s %10s" % ("runtime", "median ms", "p90 ms", "it / crun", "it / bwrap"))
    for name, samples in results.items():
        med = medians[name]
        p90 = sorted(samples)[int(len(samples) * 0.9) - 1]
        print("%-26s %10.1f %10.1f %10s %10s" % (name, med * 1000, p90 * 1000,
                                                 "%.2f" % (med / crun) if crun else "-",
                                                 "%.2f" % (med / bwrap) if bwrap else "-"))
    floor = medians.get("interpreter floor")
    if floor and bwrap:
        name = "pysandbox strict"
        print("%s above the interpreter floor: %.1f ms = %.2f x bubblewrap's whole start"
              % (name, (medians[name] - floor) * 1000, (medians[name] - floor) / bwrap))
        print("(a served run starts no interpreter: the installed `pysandbox` is the C client, sandbox/client.c)")
    if args.baseline:
        print("\ninterleaved with %s (medians of %d runs each)" % (args.baseline, args.runs))
        print("%-22s %12s %12s %10s" % ("strict", "baseline ms", "current ms", "ratio"))
        for kind, (base, current) in compare(args.pysandbox, args.baseline, args.runs).items():
            print("%-22s %12.2f %12.2f %10.2f" % (kind, base * 1000, current * 1000, current / base))


if __name__ == "__main__":
    main()
