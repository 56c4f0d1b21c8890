#!/usr/bin/env python3
"""pysandbox-oci next to runc (and crun when it can run here), as an engine sees them.

    sudo python3 benchmarks/oci.py [-n RUNS] [--format text|json] [--pysandbox-oci PATH]
                                   [--runc PATH] [--crun PATH] [--no-docker]

Two measurements, each interleaved (run 1 of every runtime, then run 2 of every runtime,
...), so a change of the machine's load during the run affects all alike:

- runtime alone: `R create --bundle B --pid-file F ID`, `R start ID`, the init reaped by
  this process (a child subreaper, as a shim is), `R delete ID`, on a bundle of runc's
  default spec whose root is busybox-static, command /bin/true;
- through Docker: `docker run --rm --runtime R IMAGE true` on one private dockerd (own
  socket, data and exec root, no bridge, no iptables) where every runtime is registered
  with --add-runtime; the image is `docker import` of a busybox-static root.

Medians in milliseconds and the ratio to runc's median are printed (and in --format json).
A runtime that is missing or cannot run here is reported with the reason instead of a
number: crun refuses this host's hybrid cgroup layout (v1 controllers plus a cgroup2 mount
with none: "cgroups in hybrid mode not supported"); alone it is run inside a private mount
namespace with that cgroup2 mount unmounted (the wrapper costs a few ms, included), which
Docker cannot do for it. Timings are wall clock; none is asserted anywhere.
"""
import argparse
import ctypes
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

PR_SET_CHILD_SUBREAPER = 36
BUSYBOX = shutil.which("busybox") or "/bin/busybox"


def fail(message):
    sys.stderr.write("benchmarks/oci.py: %s\n" % message)
    sys.exit(2)


# ------------------------------------------------------------------ runtimes present

def hybrid_cgroups():
    return os.path.ismount("/sys/fs/cgroup/unified")


def runtime_argv(name, path, *args):
    """argv of one runtime command; crun in a private mount namespace without the empty
    cgroup2 mount when the host's layout is hybrid (nothing changes on the host)."""
    if name == "crun" and hybrid_cgroups():
        quoted = " ".join("'%s'" % str(a).replace("'", "'\\''") for a in (path, *args))
        return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                "umount /sys/fs/cgroup/unified && exec " + quoted]
    return [path, *map(str, args)]


def find_runtimes(options):
    """{name: path} of those present, {name: reason} of those missing."""
    venv_script = os.path.join(sys.prefix, "bin", "pysandbox-oci")
    wanted = {"runc": options.runc or shutil.which("runc") or "/usr/sbin/runc",
              "pysandbox-oci": options.pysandbox_oci or (venv_script if os.path.exists(venv_script)
                                                         else shutil.which("pysandbox-oci") or venv_script),
              "crun": options.crun or shutil.which("crun") or "/usr/bin/crun"}
    present, missing = {}, {}
    for name, path in wanted.items():
        if os.path.isfile(path) and os.access(path, os.X_OK):
            present[name] = os.path.realpath(path)
        else:
            missing[name] = "%s not found (%s)" % (path, {"runc": "Debian package runc", "crun": "Debian package crun",
                                                          "pysandbox-oci": "setup.sh installs it"}[name])
    return present, missing


# ------------------------------------------------------------------ the runtime alone

def make_rootfs(path, applets=("true", "sh")):
    os.makedirs(os.path.join(path, "bin"))
    shutil.copy(BUSYBOX, os.path.join(path, "bin", "busybox"))
    for applet in applets:
        os.symlink("busybox", os.path.join(path, "bin", applet))
    return path


def make_bundle(directory, runc):
    make_rootfs(os.path.join(directory, "rootfs"))
    subprocess.run([runc, "spec"], cwd=directory, check=True)
    with open(os.path.join(directory, "config.json")) as f:
        config = json.load(f)
    config["process"]["terminal"] = False
    config["process"]["args"] = ["/bin/true"]
    # the hybrid layout's cgroup2 has no controllers: no cgroup mount inside
    config["mounts"] = [m for m in config["mounts"] if m.get("type") != "cgroup"]
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    return directory


def lifecycle_once(name, path, bundle, state_root, cid):
    """create, start, reap, delete; seconds of wall clock. This process is a child
    subreaper, so the init (orphaned when `create` exits) is reaped here."""
    pid_file = os.path.join(state_root, cid + ".pid")
    with open(os.path.join(bundle, "config.json")) as f:
        config = json.load(f)
    config["linux"]["cgroupsPath"] = "/" + cid          # a fresh cgroup each run, removed by delete
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(config, f)
    root = ["--root", state_root]
    # The container's init inherits the runtime's stdio: a pipe would stay open until the
    # init ends, so errors go to a file (as a shim's do).
    with tempfile.TemporaryFile() as err:
        def step(*args):
            err.seek(0)
            err.truncate()
            done = subprocess.run(runtime_argv(name, path, *root, *args), stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=err)
            if done.returncode != 0:
                err.seek(0)
                message = err.read().decode("utf-8", "replace").strip()[-300:]
                subprocess.run(runtime_argv(name, path, *root, "delete", "--force", cid), capture_output=True)
                raise RuntimeError("%s %s: %s" % (name, args[0], message))

        start = time.perf_counter()
        step("create", "--bundle", bundle, "--pid-file", pid_file, cid)
        with open(pid_file) as f:
            pid = int(f.read())
        step("start", cid)
        while True:                                      # reap the init (and any orphan before it)
            reaped, _status = os.waitpid(-1, 0)
            if reaped == pid:
                break
        step("delete", cid)
        elapsed = time.perf_counter() - start
    os.unlink(pid_file)
    return elapsed


def bench_alone(runtimes, runs, work):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        fail("prctl(PR_SET_CHILD_SUBREAPER): errno %d" % ctypes.get_errno())
    bundles, samples, failed = {}, {}, {}
    for name in runtimes:
        bundles[name] = make_bundle(os.path.join(work, "bundle-" + name), runtimes["runc"] if "runc" in runtimes
                                    else runtimes[name])
        os.makedirs(os.path.join(work, "state-" + name))
        samples[name] = []
    for i in range(runs):
        for name, path in runtimes.items():
            if name in failed:
                continue
            try:
                samples[name].append(lifecycle_once(name, path, bundles[name], os.path.join(work, "state-" + name),
                                                    "pysbx-bench-%s-%d-%d" % (name, os.getpid(), i)))
            except RuntimeError as e:
                failed[name] = str(e)
    return {n: s for n, s in samples.items() if n not in failed}, failed


# ------------------------------------------------------------------ through Docker

class Dockerd:
    """A private dockerd with every runtime registered; stopped by its PID."""

    def __init__(self, work, runtimes):
        self.root = os.path.join(work, "dockerd")
        os.makedirs(self.root)
        self.sock = os.path.join(self.root, "docker.sock")
        self.env = dict(os.environ, DOCKER_HOST="unix://" + self.sock)
        self.names = {}
        args = []
        for name, path in runtimes.items():
            # the builtin `runc` is runc from PATH; a runc given by path is registered too
            registered = "runc" if name == "runc" and path == os.path.realpath(shutil.which("runc") or "") else \
                "bench-" + name
            if registered != "runc":
                args += ["--add-runtime", "%s=%s" % (registered, path)]
            self.names[name] = registered
        self.cgroup_parents = [os.path.join("/sys/fs/cgroup", h, "docker") for h in os.listdir("/sys/fs/cgroup")]
        self.preexisting = {d for d in self.cgroup_parents if os.path.isdir(d)}
        self.log = open(os.path.join(self.root, "dockerd.log"), "wb")
        self.proc = subprocess.Popen(
            ["dockerd", "-H", "unix://" + self.sock, "--data-root", os.path.join(self.root, "data"),
             "--exec-root", os.path.join(self.root, "exec"), "--pidfile", os.path.join(self.root, "docker.pid"),
             "--config-file", self._empty_config(), "--bridge=none", "--iptables=false", "--ip6tables=false",
             "--ip-masq=false", *args], stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                fail("dockerd did not start: see the log (removed); rc %s" % self.proc.returncode)
            time.sleep(0.1)
        image_root = make_rootfs(os.path.join(self.root, "image"))
        tarball = os.path.join(self.root, "image.tar")
        subprocess.run(["tar", "-C", image_root, "-cf", tarball, "."], check=True)
        self.image = "pysbx-bench:1"
        self.cli("import", tarball, self.image)

    def _empty_config(self):
        path = os.path.join(self.root, "daemon.json")
        with open(path, "w") as f:
            f.write("{}\n")          # never the host's /etc/docker/daemon.json
        return path

    def _answers(self):
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(self.sock)
            s.close()
        except OSError:
            return False
        return subprocess.run(["docker", "version"], env=self.env, capture_output=True).returncode == 0

    def cli(self, *args):
        done = subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            # the daemon's error is the first line (docker adds a hint about --help after it)
            first = next((line for line in done.stderr.splitlines() if line.strip()), "")
            raise RuntimeError("docker %s: %s" % (args[0], first.strip()[-300:]))
        return done.stdout

    def run_once(self, name):
        start = time.perf_counter()
        self.cli("run", "--rm", "--network", "none", "--runtime", self.names[name], self.image, "true")
        return time.perf_counter() - start

    def stop(self):
        try:
            ids = subprocess.run(["docker", "ps", "-aq"], env=self.env, capture_output=True, text=True,
                                 timeout=60).stdout.split()
            if ids:
                subprocess.run(["docker", "rm", "-f", *ids], env=self.env, capture_output=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            pass
        # containerd (dockerd's child) dumps its stacks to /tmp when stopped: remove ours
        children = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open("/proc/%s/stat" % entry) as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                            children.append(int(entry))
                except (OSError, ValueError, IndexError):
                    pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f if line.split()[4].startswith(self.root + "/")]
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)
        for d in self.cgroup_parents:
            if d not in self.preexisting:
                try:
                    os.rmdir(d)
                except OSError:
                    pass
        for child in children:
            try:
                os.unlink("/tmp/containerd.%d.stacks.log" % child)
            except OSError:
                pass


def bench_docker(runtimes, runs, work):
    for tool in ("dockerd", "docker"):
        if not shutil.which(tool):
            return {}, {name: "%s not installed (Debian package docker.io)" % tool for name in runtimes}
    daemon = Dockerd(work, runtimes)
    samples, failed = {name: [] for name in runtimes}, {}
    try:
        for name in runtimes:                # one warm-up each (and a check it runs at all)
            try:
                daemon.run_once(name)
            except RuntimeError as e:
                failed[name] = str(e)
        for _ in range(runs):
            for name in runtimes:
                if name not in failed:
                    samples[name].append(daemon.run_once(name))
    finally:
        daemon.stop()
    return {n: s for n, s in samples.items() if n not in failed}, failed


# ------------------------------------------------------------------ report

def summary(samples):
    medians = {name: statistics.median(s) * 1000 for name, s in samples.items() if s}
    reference = medians.get("runc")
    return {name: {"median_ms": round(m, 2), "min_ms": round(min(samples[name]) * 1000, 2),
                   "runs": len(samples[name]),
                   "ratio_to_runc": round(m / reference, 3) if reference else None}
            for name, m in medians.items()}


def render(doc):
    lines = []
    for key, title in (("runtime_alone", "runtime alone: create + start + reap + delete of /bin/true"),
                       ("docker_run", "docker run --rm --runtime R IMAGE true (one private dockerd)")):
        part = doc.get(key)
        if part is None:
            continue
        lines.append("%s, %d runs each, interleaved" % (title, doc["runs"]))
        lines.append("  %-15s %10s %10s %12s" % ("runtime", "median ms", "min ms", "x runc"))
        for name, row in part["measured"].items():
            ratio = "%.2f" % row["ratio_to_runc"] if row["ratio_to_runc"] else "-"
            lines.append("  %-15s %10.1f %10.1f %12s" % (name, row["median_ms"], row["min_ms"], ratio))
        for name, reason in part["not_measured"].items():
            lines.append("  %-15s not measured: %s" % (name, reason))
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--runs", type=int, default=20)
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--pysandbox-oci", metavar="PATH")
    parser.add_argument("--runc", metavar="PATH")
    parser.add_argument("--crun", metavar="PATH")
    parser.add_argument("--no-docker", action="store_true", help="only the runtime alone")
    options = parser.parse_args(argv)
    if options.runs < 1:
        fail("--runs must be at least 1")
    if os.geteuid() != 0:
        fail("needs root (rootful runtimes and a private dockerd)")
    present, missing = find_runtimes(options)
    if not present:
        fail("no OCI runtime found: %s" % "; ".join(missing.values()))
    work = tempfile.mkdtemp(prefix="pysbx-bench-oci-", dir="/tmp")
    os.chmod(work, 0o755)
    doc = {"schema": "pysandbox.bench-oci/1", "runs": options.runs, "runtimes": present}
    try:
        samples, failed = bench_alone(present, options.runs, work)
        doc["runtime_alone"] = {"measured": summary(samples), "not_measured": dict(missing, **failed)}
        if not options.no_docker:
            samples, failed = bench_docker(present, options.runs, work)
            doc["docker_run"] = {"measured": summary(samples), "not_measured": dict(missing, **failed)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if options.format == "json":
        print(json.dumps(doc, indent=2))
    else:
        print(render(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
