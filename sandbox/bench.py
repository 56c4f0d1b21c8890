"""`pysandbox bench [--quick] [--format json] [--plot FILE.png]`: the container-versus-VM
table of the course material, measured on this machine instead of remembered.

Every technology present runs the same static workload (sandbox/bench_probe.c, built once
with gcc): its start-up time (`true`), its memory per instance (N sleeping instances, the
drop of MemAvailable divided by N), how many would fit in a memory budget at that rate, and
the overhead of CPU work, syscalls, file I/O and loopback TCP against the bare host.
Technologies: the host itself (the baseline), pysandbox strict (the Python API, prepared
once, as a grader uses it), bubblewrap, Docker (a private daemon this command starts and
stops when none is running), gVisor's runsc (ptrace platform) and a QEMU virtual machine
(when qemu and a guest kernel are installed: the probe is the init of an initramfs written
here; on hosts without working KVM it is emulation and labelled so).
A technology that is missing gets a row saying why, never a made-up number.

Every measurement is taken in this one run, so the ratios compare like with like.
"""
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

# What the course material claims (the "seed" of this command); shown beside each measurement.
SEED = {
    "vm": {"startup": "boot over 30 s, creation over 2 minutes", "image": "tens of GB",
           "density": "1:4 to 1:8 per host", "overhead": "over 15%"},
    "container": {"startup": "under 1 s", "image": "200-300 MB", "density": "over 1000 per host",
                  "overhead": "no compute or storage overhead; 20%+ network loss through Docker's NAT",
                  "isolation": "weak: the kernel is shared"},
}
# Published figures, with where they come from.
PUBLISHED = {
    "firecracker": {"startup_ms": 125, "memory_overhead_mib": 5,
                    "source": "Firecracker SPECIFICATION.md: a microVM boots to user space within 125 ms "
                              "and its VMM costs at most 5 MiB of memory"},
}

QUICK = {"starts": 5, "instances": 10, "cpu": 30_000_000, "syscall": 200_000, "io_mib": 16, "net_mib": 64}
FULL = {"starts": 20, "instances": 100, "cpu": 200_000_000, "syscall": 1_000_000, "io_mib": 48, "net_mib": 512}
WORKLOADS = ("cpu", "syscall", "io", "net")


class Unavailable(Exception):
    """A technology that cannot run here; the message says why."""


def _run(argv, timeout=120, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)


def _mem_available_kib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    raise OSError("no MemAvailable in /proc/meminfo")


def _dir_mb(path):
    total = 0
    for top, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(top, name)).st_size
            except OSError:
                pass
    return round(total / (1 << 20), 1)


class Probe:
    """The workload binary and a minimal root around it (for images and bundles)."""

    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "probe")
        os.makedirs(self.dir)
        os.chmod(workdir, 0o755)
        os.chmod(self.dir, 0o755)
        self.path = os.path.join(self.dir, "bench-probe")
        source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_probe.c")
        gcc = shutil.which("gcc")
        if not gcc:
            raise Unavailable("gcc is needed to build the workload (Debian package gcc)")
        proc = _run([gcc, "-static", "-O2", "-o", self.path, source])
        if proc.returncode != 0:
            raise Unavailable("building the workload failed: %s" % proc.stderr.strip().splitlines()[-1:])
        self.rootfs = os.path.join(workdir, "rootfs")
        for sub in ("", "tmp", "proc", "dev", "sys"):
            os.makedirs(os.path.join(self.rootfs, sub), exist_ok=True)
        os.chmod(os.path.join(self.rootfs, "tmp"), 0o1777)
        shutil.copy2(self.path, os.path.join(self.rootfs, "bench-probe"))


class Technology:
    name = ""
    notes = ""

    def prepare(self, probe, workdir):
        self.probe = probe

    def run(self, *args):
        """Run the probe with args to completion; returns its stdout."""
        raise NotImplementedError

    def start_sleeping(self, count, started):
        """Start `count` sleeping instances, appending each to `started` as it starts (so a
        failure part-way still leaves stop() everything that runs)."""
        raise NotImplementedError

    def stop(self, handle):
        raise NotImplementedError

    def image_mb(self):
        return None

    def sizes(self, sizes, quick):
        """The counts this technology is measured with (a VM caps them)."""
        return sizes

    def startup_ms(self, count):
        return _median_ms(lambda: self.run("true"), count)

    def memory_per_instance(self, count):
        return _memory_per_instance(self, count)

    def run_batch(self, commands):
        """Run the probe once per argv in `commands`, in order; their stdouts."""
        return [self.run(*command) for command in commands]

    def close(self):
        pass


class Host(Technology):
    name = "host"
    notes = "the bare host: the baseline of every overhead"

    def run(self, *args):
        return _check(_run([self.probe.path, *args]), self.name)

    def start_sleeping(self, count, started):
        for _ in range(count):
            started.append(subprocess.Popen([self.probe.path, "sleep"]))

    def stop(self, handle):
        for proc in handle:
            proc.kill()
            proc.wait()


def _check(proc, name):
    if proc.returncode != 0:
        raise RuntimeError("%s: exit %d: %s" % (name, proc.returncode, (proc.stderr or "").strip()[-300:]))
    return proc.stdout


class Pysandbox(Technology):
    name = "pysandbox strict"
    notes = "the Python API with a prepared Sandbox (as a grader calls it); loopback network for the net test"

    def prepare(self, probe, workdir):
        super().prepare(probe, workdir)
        from .profile import load_profile
        from .runtime import Sandbox
        profile = load_profile("strict").with_overrides({"network": {"mode": "loopback"}}, source="bench")
        self.box = Sandbox(profile, ro_binds=["%s:/bench" % probe.dir])

    def run(self, *args):
        result = self.box.run(["/bench/bench-probe", *args], capture_output=True, timeout=600)
        if result.exit_code != 0:
            raise RuntimeError("pysandbox: %s %s: %s" % (result.reason, result.exit_code,
                                                         (result.message or (result.stderr or b"").decode()[-300:])))
        return (result.stdout or b"").decode()

    def start_sleeping(self, count, started):
        for _ in range(count):
            started.append(self.box.start(["/bench/bench-probe", "sleep"]))

    def stop(self, handle):
        for proc in handle:
            proc.kill()
        for proc in handle:
            proc.wait()

    def image_mb(self):
        return 0.0

    def close(self):
        self.box.close()


class Bubblewrap(Technology):
    name = "bubblewrap"
    notes = "bwrap --unshare-all --die-with-parent --new-session, started from Python"

    def prepare(self, probe, workdir):
        super().prepare(probe, workdir)
        self.bwrap = shutil.which("bwrap")
        if not self.bwrap:
            raise Unavailable("bwrap not installed (Debian package bubblewrap)")

    def _argv(self, *args):
        return [self.bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--proc", "/proc", "--dev", "/dev",
                "--tmpfs", "/tmp", "--ro-bind", self.probe.dir, "/bench", "/bench/bench-probe", *args]

    def run(self, *args):
        return _check(_run(self._argv(*args), timeout=600), self.name)

    def start_sleeping(self, count, started):
        for _ in range(count):
            started.append(subprocess.Popen(self._argv("sleep")))

    def stop(self, handle):
        Host.stop(self, handle)

    def image_mb(self):
        return 0.0


class Docker(Technology):
    name = "docker"
    notes = "docker run --rm --network none (a private dockerd this command starts, unless one is running)"
    image = "pysandbox-bench:probe"

    def prepare(self, probe, workdir):
        super().prepare(probe, workdir)
        self.client = shutil.which("docker")
        dockerd = shutil.which("dockerd") or (os.path.exists("/usr/sbin/dockerd") and "/usr/sbin/dockerd")
        if not self.client:
            raise Unavailable("docker not installed (Debian package docker.io)")
        self.daemon = None
        self.state = os.path.join(workdir, "docker")
        if self._responds(None):
            self.host = []
        else:
            if os.geteuid() != 0:
                raise Unavailable("no Docker daemon is running and starting a private one needs root")
            if not dockerd:
                raise Unavailable("dockerd not installed (Debian package docker.io)")
            os.makedirs(self.state)
            sock = os.path.join(self.state, "docker.sock")
            self.host = ["-H", "unix://" + sock]
            self.log = open(os.path.join(self.state, "dockerd.log"), "w")
            self.daemon = subprocess.Popen(
                [dockerd, "-H", "unix://" + sock, "--data-root", os.path.join(self.state, "data"),
                 "--exec-root", os.path.join(self.state, "exec"), "--pidfile", os.path.join(self.state, "pid"),
                 "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false"],
                stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            deadline = time.monotonic() + 60
            while not self._responds(self.host):
                if self.daemon.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise Unavailable("the private dockerd did not start (log: %s)" % self.log.name)
                time.sleep(0.2)
            self.notes = self.notes.replace(", unless one is running", "")
        tar = subprocess.Popen(["tar", "-C", probe.rootfs, "-cf", "-", "."], stdout=subprocess.PIPE)
        imported = subprocess.run([self.client, *self.host, "import", "-", self.image], stdin=tar.stdout,
                                  capture_output=True, text=True, timeout=120)
        tar.wait()
        if imported.returncode != 0:
            self.close()
            raise Unavailable("docker import failed: %s" % imported.stderr.strip()[-200:])

    def _responds(self, host):
        try:
            return _run([self.client, *(host or []), "version", "--format", "{{.Server.Version}}"], timeout=10).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def run(self, *args):
        return _check(_run([self.client, *self.host, "run", "--rm", "--network", "none", "--tmpfs", "/tmp",
                            self.image, "/bench-probe", *args], timeout=600), self.name)

    def start_sleeping(self, count, started):
        for _ in range(count):
            proc = _run([self.client, *self.host, "run", "-d", "--network", "none", self.image, "/bench-probe", "sleep"])
            started.append(_check(proc, self.name).strip())

    def stop(self, handle):
        if handle:
            _run([self.client, *self.host, "rm", "-f", *handle], timeout=300)

    def image_mb(self):
        proc = _run([self.client, *self.host, "image", "inspect", "--format", "{{.Size}}", self.image])
        return round(int(proc.stdout.strip()) / (1 << 20), 1) if proc.returncode == 0 else None

    def close(self):
        if self.daemon is None:
            _run([self.client, *self.host, "rmi", "-f", self.image])
            return
        if self.daemon.poll() is None:
            self.daemon.terminate()     # our own daemon, by its PID
            try:
                self.daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        self.log.close()
        _unmount_under(self.state)
        self.daemon = None


def _quiet(argv):
    """Run a cleanup command; its failure (already gone, timed out) is not the bench's."""
    try:
        subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        pass


def _unmount_under(path):
    """Lazily unmount whatever a daemon left mounted below `path` (deepest first)."""
    try:
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
    except OSError:
        return
    prefix = os.path.realpath(path) + "/"
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


class Gvisor(Technology):
    name = "gVisor runsc"
    notes = "runsc --platform=ptrace --network=none run (its KVM platform hangs on this kind of host)"

    def prepare(self, probe, workdir):
        super().prepare(probe, workdir)
        self.runsc = shutil.which("runsc")
        if not self.runsc:
            raise Unavailable("runsc not installed (Debian package runsc)")
        if os.geteuid() != 0:
            raise Unavailable("runsc runs here as root only")
        self.root = os.path.join(workdir, "runsc-state")
        self.bundles = os.path.join(workdir, "runsc-bundles")
        os.makedirs(self.root)
        os.makedirs(self.bundles)
        self.serial = 0
        self.created = []

    def _bundle(self, args):
        self.serial += 1
        cid = "pysandbox-bench-%d-%d" % (os.getpid(), self.serial)
        self.created.append(cid)   # close() ends whatever is left of it, whatever failed
        bundle = os.path.join(self.bundles, cid)
        os.makedirs(bundle)
        config = {
            "ociVersion": "1.0.2", "root": {"path": self.probe.rootfs, "readonly": False},
            "process": {"args": ["/bench-probe", *args], "cwd": "/", "user": {"uid": 0, "gid": 0},
                        "env": ["PATH=/"], "terminal": False},
            "hostname": "bench", "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                                            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}],
            "linux": {"namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")]},
        }
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(config, f)
        return cid, bundle

    def _runsc(self, *args):
        return [self.runsc, "--root", self.root, "--platform=ptrace", "--network=none", *args]

    def run(self, *args):
        cid, bundle = self._bundle(args)
        try:
            return _check(_run(self._runsc("run", "--bundle", bundle, cid), timeout=600), self.name)
        finally:
            _run(self._runsc("delete", "-force", cid))

    def start_sleeping(self, count, started):
        for _ in range(count):
            cid, bundle = self._bundle(["sleep"])
            started.append(cid)
            # No pipes: the detached sandbox keeps its stdio open, and a pipe would never reach EOF.
            rc = subprocess.run(self._runsc("run", "--detach", "--bundle", bundle, cid), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120).returncode
            if rc != 0:
                raise RuntimeError("%s: run --detach exited %d" % (self.name, rc))

    def stop(self, handle):
        for cid in handle:
            _quiet(self._runsc("kill", cid, "KILL"))
        for cid in handle:
            _quiet(self._runsc("delete", "-force", cid))

    def image_mb(self):
        return _dir_mb(self.probe.rootfs)

    def close(self):
        # A run or a detached start that timed out leaves a sandbox (runsc-sandbox, runsc-gofer)
        # behind: end every container this bench created, then what it mounted.
        self.stop(getattr(self, "created", ()))
        _unmount_under(self.root)


# The guest's init (bench_probe.c as /init) frames everything it says with this tag.
GUEST_TAG = "pysandbox-bench: "
# ./setup.sh unpacks Debian's kernel into $PREFIX/share/vm, beside the venv at $PREFIX/venv.
GUEST_KERNEL_ENV = "PYSANDBOX_BENCH_KERNEL"


def guest_kernel():
    """The guest kernel the QEMU row boots: $PYSANDBOX_BENCH_KERNEL, else the one setup.sh put in
    this installation's prefix. The interpreter is $PREFIX/venv/bin/python3 (sys.prefix is not
    the venv: the launcher runs Python with -S, and site.py is what would set it)."""
    if os.environ.get(GUEST_KERNEL_ENV):
        return os.environ[GUEST_KERNEL_ENV]
    prefix = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(sys.executable))))
    return os.path.join(prefix, "share", "vm", "vmlinuz")


def _cpio_newc(entries):
    """An uncompressed initramfs: the kernel's own "newc" cpio format (ASCII hex headers, names
    and data each padded to 4 bytes, a TRAILER!!! entry last). Written here, so no host tool and
    no privilege is needed for the device node: the kernel creates it while unpacking."""
    out = bytearray()
    for ino, (name, mode, data, rdev) in enumerate(list(entries) + [("TRAILER!!!", 0, b"", (0, 0))], 1):
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        out += b"070701" + "".join("%08X" % v for v in fields).encode() + encoded
        out += b"\0" * (-len(out) % 4)
        out += data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def _pvh_vmlinux(bzimage, dest):
    """Unpack the ELF vmlinux from an xz or gzip bzImage when it carries a PVH entry note, so QEMU
    boots it directly: under emulation the bzImage's own decompressor costs about 6 s per boot
    (measured here), the unpacking here about 1.5 s once. Returns dest, or None (boot the bzImage)."""
    import lzma
    import struct
    import zlib
    with open(bzimage, "rb") as f:
        image = f.read()
    # x86 boot protocol: setup_sects at 0x1f1 (0 means 4), payload_offset/length at 0x248.
    if len(image) < 0x250 or image[0x202:0x206] != b"HdrS":
        return None
    offset, length = struct.unpack_from("<II", image, 0x248)
    payload = image[((image[0x1f1] or 4) + 1) * 512 + offset:][:length]
    try:
        if payload.startswith(b"\xfd7zXZ\x00"):
            elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
        elif payload.startswith(b"\x1f\x8b"):
            elf = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(payload)
        else:
            return None
    except (lzma.LZMAError, zlib.error):
        return None
    if not _has_pvh_note(elf):
        return None
    with open(dest, "wb") as f:
        f.write(elf)
    return dest


def _has_pvh_note(elf):
    """Whether a 64-bit ELF has Xen's PHYS32_ENTRY note (type 18), the entry QEMU's PVH boot uses."""
    import struct
    if elf[:5] != b"\x7fELF\x02":
        return False
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, = struct.unpack_from("<I", elf, phoff + i * phentsize)
        p_offset, = struct.unpack_from("<Q", elf, phoff + i * phentsize + 8)
        p_filesz, = struct.unpack_from("<Q", elf, phoff + i * phentsize + 32)
        if p_type != 4:   # PT_NOTE
            continue
        at, end = p_offset, p_offset + p_filesz
        while at + 12 <= end:
            namesz, descsz, note_type = struct.unpack_from("<III", elf, at)
            name = elf[at + 12:at + 12 + namesz]
            if name == b"Xen\0" and note_type == 18:
                return True
            at += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3)
    return False


def _pss_kib(pid):
    """Proportional set size of a process: its private pages plus its share of shared ones."""
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise OSError("no Pss in /proc/%d/smaps_rollup" % pid)


def _kvm_refusal():
    """Why KVM cannot boot the stock guest kernel here (None: worth a probe boot)."""
    if not os.path.exists("/dev/kvm"):
        return "no /dev/kvm"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is not open to this user"
    vendors = [m for m in ("kvm_intel", "kvm_amd") if os.path.isdir("/sys/module/" + m)]
    if os.path.isdir("/sys/module/kvm_pvm") and not vendors:
        # PVM virtualises in software on a host without hardware virtualisation of its own:
        # its KVM runs only guest kernels built for PVM, a stock kernel never boots.
        return "/dev/kvm here is PVM (module kvm_pvm), which runs only guest kernels built for PVM"
    return None


class Guest:
    """One QEMU virtual machine running the probe as its init; its serial console is our pipe."""

    def __init__(self, argv, log):
        self.started = time.perf_counter()
        self.log = log
        self.log.flush()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
        self.buffer = b""
        self.lines = []

    def read_until(self, word, timeout):
        """The guest's tagged lines up to `word` (the tag's first word); raises if the VM ends or
        the timeout passes first."""
        import select
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while True:
            while b"\n" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\n", 1)
                line = raw.decode(errors="replace").strip()
                self.lines.append(line)
                at = line.find(GUEST_TAG)
                if at >= 0 and line[at + len(GUEST_TAG):].split(" ")[0] == word:
                    return
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("qemu: no %r from the guest within %d s; last output: %s"
                                   % (word, timeout, " / ".join(self.lines[-3:])))
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.proc.wait()
                    raise RuntimeError("qemu exited %s before the guest said %r; last output: %s%s"
                                       % (self.proc.returncode, word, " / ".join(self.lines[-3:]), self._log_tail()))
                self.buffer += chunk

    def _log_tail(self):
        try:
            with open(self.log.name, "rb") as f:
                tail = f.read()[-300:].decode(errors="replace").strip()
        except OSError:
            return ""
        return "; qemu said: " + tail if tail else ""

    def results(self):
        """(exit status, ns or None) of each script line, from the framed output."""
        out, pending = [], None
        for line in self.lines:
            at = line.find(GUEST_TAG)
            if at < 0:
                continue
            words = line[at + len(GUEST_TAG):].split()
            if words[0] == "result":
                pending = words[1]
            elif words[0] == "exit":
                out.append((int(words[1]), pending))
                pending = None
        return out

    def end(self):
        """Stop the VM (our child, by its PID) and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()


class Qemu(Technology):
    name = "QEMU virtual machine"
    # A VM per start and per instance: emulated boots take seconds, so fewer of them.
    caps = {True: {"starts": 3, "instances": 2}, False: {"starts": 5, "instances": 4}}
    memory_mib = 256   # guest RAM: room for the 48 MiB file of the full I/O test in its tmpfs
    boot_timeout = 180

    def prepare(self, probe, workdir):
        super().prepare(probe, workdir)
        self.qemu = shutil.which("qemu-system-x86_64")
        if not self.qemu:
            raise Unavailable("qemu is not installed (Debian package qemu-system-x86)")
        self.kernel = guest_kernel()
        if not os.path.isfile(self.kernel):
            raise Unavailable("no guest kernel at %s (./setup.sh unpacks Debian's linux-image there; "
                              "or set %s)" % (self.kernel, GUEST_KERNEL_ENV))
        if not os.access(self.kernel, os.R_OK):
            raise Unavailable("the guest kernel %s is not readable by this user" % self.kernel)
        self.dir = os.path.join(workdir, "vm")
        os.makedirs(self.dir)
        self.log = open(os.path.join(self.dir, "qemu.log"), "wb")
        self.guests = []
        self.serial = 0
        try:
            self._choose_kernel_and_accel(probe)
        except BaseException:
            self.close()
            raise

    def _choose_kernel_and_accel(self, probe):
        with open(probe.path, "rb") as f:
            self.probe_bytes = f.read()
        try:
            self.boot_kernel = _pvh_vmlinux(self.kernel, os.path.join(self.dir, "vmlinux")) or self.kernel
        except OSError as e:
            raise Unavailable("reading the guest kernel %s: %s" % (self.kernel, e.strerror))
        refusal = _kvm_refusal()
        self.accel = "tcg"
        if refusal is None:
            # Hardware KVM may work: one probe boot, and emulation when it does not reach init.
            self.accel = "kvm"
            guest = self._boot("true")
            try:
                guest.read_until("ready", 30)
            except RuntimeError as e:
                self.accel = "tcg"
                refusal = "a probe boot with KVM did not reach init (%s)" % str(e)[:120]
            finally:
                guest.end()
        if self.accel == "kvm":
            self.name = "QEMU VM (KVM)"
            how = "hardware virtualisation (KVM)"
        else:
            self.name = "QEMU VM, emulation (TCG)"
            how = "QEMU's emulation (TCG, no KVM: %s), so every guest instruction is translated" % refusal
        self.notes = ("%s; guest: %s booted %s with a %.1f MiB initramfs whose init is the bench probe, %d MiB RAM; "
                      "start = launch to the guest's init; memory = PSS of each idle qemu process; "
                      "I/O in the initramfs' tmpfs; image = kernel + initramfs"
                      % (how, self._release(), "directly (PVH, its vmlinux unpacked once)"
                         if self.boot_kernel != self.kernel else "from its bzImage",
                         len(self._initrd("true")) / (1 << 20), self.memory_mib))

    def _release(self):
        named = os.path.join(os.path.dirname(self.kernel), "kernel-package")
        try:
            with open(named) as f:
                return "Debian's " + f.read().strip()
        except OSError:
            return os.path.basename(self.kernel)

    def _initrd(self, script):
        import stat
        return _cpio_newc([
            ("dev", stat.S_IFDIR | 0o755, b"", (0, 0)),
            # The kernel opens /dev/console for init's stdio before anything is mounted.
            ("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)),
            ("tmp", stat.S_IFDIR | 0o1777, b"", (0, 0)),
            ("init", stat.S_IFREG | 0o755, self.probe_bytes, (0, 0)),
            ("bench-script", stat.S_IFREG | 0o644, script.encode(), (0, 0)),
        ])

    def _boot(self, script):
        """Start a VM whose init runs `script` (one probe command per line)."""
        self.serial += 1
        initrd = os.path.join(self.dir, "initrd-%d.cpio" % self.serial)
        with open(initrd, "wb") as f:
            f.write(self._initrd(script + "\n"))
        argv = [self.qemu, "-accel", self.accel, "-m", str(self.memory_mib), "-nodefaults", "-no-user-config",
                "-display", "none", "-serial", "stdio", "-no-reboot", "-kernel", self.boot_kernel, "-initrd", initrd,
                # panic=-1: a guest panic reboots at once, and -no-reboot turns that into qemu's exit.
                "-append", "console=ttyS0 quiet panic=-1"]
        guest = Guest(argv, self.log)
        self.guests.append(guest)   # close() ends it whatever fails
        return guest

    def sizes(self, sizes, quick):
        return dict(sizes, **self.caps[quick])

    def startup_ms(self, count):
        times = []
        for _ in range(count):
            guest = self._boot("true")
            try:
                guest.read_until("ready", self.boot_timeout)
                times.append((time.perf_counter() - guest.started) * 1000)
                guest.read_until("done", 60)
            finally:
                guest.end()
        return round(statistics.median(times), 2)

    def run_batch(self, commands):
        """All the commands in one boot (each still a fresh process in the guest)."""
        guest = self._boot("\n".join(" ".join(c) for c in commands))
        try:
            guest.read_until("done", self.boot_timeout + 600)
        finally:
            guest.end()
        results = guest.results()
        if len(results) != len(commands):
            raise RuntimeError("qemu: %d results for %d commands" % (len(results), len(commands)))
        for command, (status, ns) in zip(commands, results):
            if status != 0 or ns is None:
                raise RuntimeError("qemu: %s exited %d in the guest" % (" ".join(command), status))
        return [ns for _status, ns in results]

    def run(self, *args):
        return self.run_batch([args])[0]

    def start_sleeping(self, count, started):
        for _ in range(count):
            started.append(self._boot("sleep"))
        for guest in started:
            guest.read_until("ready", self.boot_timeout)

    def memory_per_instance(self, count):
        started = []
        try:
            self.start_sleeping(count, started)
            time.sleep(1.0)   # a settling delay after init (not a synchronisation), as for the others
            return sum(_pss_kib(guest.proc.pid) for guest in started) // count
        finally:
            self.stop(started)

    def stop(self, handle):
        for guest in handle:
            guest.end()

    def image_mb(self):
        return round((os.path.getsize(self.kernel) + len(self._initrd("true"))) / (1 << 20), 1)

    def close(self):
        self.stop(getattr(self, "guests", ()))
        if getattr(self, "log", None):
            self.log.close()


TECHNOLOGIES = (Host, Pysandbox, Bubblewrap, Docker, Gvisor, Qemu)


def _median_ms(fn, count):
    times = []
    for _ in range(count):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 2)


def _memory_per_instance(tech, count):
    before = _mem_available_kib()
    started = []
    try:
        tech.start_sleeping(count, started)
        time.sleep(1.0)   # let every instance reach its sleep (not a synchronisation: a settling delay)
        after = _mem_available_kib()
    finally:
        tech.stop(started)
    return max(0, (before - after) // count)


def measure(quick=False, budget_mib=None, only=None, progress=None):
    """The table as a dict (see `--format json`)."""
    sizes = QUICK if quick else FULL
    workdir = tempfile.mkdtemp(prefix="pysandbox-bench-")
    budget_kib = (budget_mib << 10) if budget_mib else _mem_available_kib() // 2
    rows = []
    baseline = {}
    try:
        probe = Probe(workdir)
        for cls in TECHNOLOGIES:
            tech = cls()
            if only and cls is not Host and tech.name not in only and cls.__name__.lower() not in only:
                continue
            row = {"technology": tech.name, "startup_ms": None, "memory_kib_per_instance": None, "density": None,
                   "overhead": {}, "image_mb": None, "notes": tech.notes}
            if progress:
                progress("measuring %s" % tech.name)
            try:
                tech.prepare(probe, workdir)
            except Unavailable as e:
                row["notes"] = "not measured: %s" % e
                rows.append(row)
                continue
            row["technology"], row["notes"] = tech.name, tech.notes
            counts = tech.sizes(sizes, quick)
            try:
                row["startup_ms"] = tech.startup_ms(counts["starts"])
                per = tech.memory_per_instance(counts["instances"])
                row["memory_kib_per_instance"] = per
                row["density"] = {"budget_mib": budget_kib >> 10, "instances": (budget_kib // per) if per else None,
                                  "measured_with": counts["instances"]}
                commands = [(workload, *{"cpu": (str(counts["cpu"]),), "syscall": (str(counts["syscall"]),),
                                         "io": (str(counts["io_mib"]), "/tmp"), "net": (str(counts["net_mib"]),)}[workload])
                            for workload in WORKLOADS for _ in range(3)]
                outputs = iter(tech.run_batch(commands))
                for workload in WORKLOADS:
                    elapsed = min(int(next(outputs).strip()) for _ in range(3))
                    if cls is Host:
                        baseline[workload] = elapsed
                    row["overhead"][workload] = {"ns": elapsed, "percent": round((elapsed / baseline[workload] - 1) * 100, 1)
                                                 if baseline.get(workload) else 0.0}
                row["image_mb"] = tech.image_mb()
            except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as e:
                row["notes"] += "; failed: %s" % str(e)[:300]
            finally:
                tech.close()
            rows.append(row)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"schema": "pysandbox.bench/1", "quick": quick, "rows": rows, "seed": SEED, "published": PUBLISHED}


def _fmt(value, unit=""):
    return "-" if value is None else "%s%s" % (value, unit)


def table_rows(doc):
    """Display rows: technology, start, memory, density, cpu/syscall/io/net overhead, image."""
    out = []
    for row in doc["rows"]:
        ov = row["overhead"]
        out.append([row["technology"], _fmt(row["startup_ms"], " ms"), _fmt(row["memory_kib_per_instance"], " KiB"),
                    _fmt((row["density"] or {}).get("instances")),
                    *[("%+.1f%%" % ov[w]["percent"]) if w in ov else "-" for w in WORKLOADS],
                    _fmt(row["image_mb"], " MB"), row["notes"]])
    return out


HEADERS = ["technology", "start", "memory/instance", "fit in budget", "cpu", "syscall", "file I/O", "loopback net",
           "image/root", "notes"]


def render_plain(doc):
    lines = []
    budget = next((r["density"]["budget_mib"] for r in doc["rows"] if r["density"]), None)
    for cells in table_rows(doc):
        lines.append(" | ".join(str(c) for c in cells[:-1]))
        lines.append("    " + cells[-1])
    lines.insert(0, " | ".join(HEADERS[:-1]))
    lines.append("")
    if budget:
        lines.append("memory budget for 'fit in budget': %d MiB" % budget)
    lines.append("the course material claims:")
    for kind, claims in doc["seed"].items():
        lines.append("  %s: %s" % (kind, "; ".join("%s %s" % (k, v) for k, v in claims.items())))
    for name, fig in doc["published"].items():
        lines.append("published (%s): %s" % (name, fig["source"]))
    return "\n".join(lines)


def render_rich(doc, stream):
    from rich.console import Console
    from rich.table import Table
    table = Table(title="containers and VMs, measured on this machine", show_lines=True)
    for header in HEADERS:
        table.add_column(header)
    seed_row = ["claim (containers)", SEED["container"]["startup"], "", SEED["container"]["density"],
                SEED["container"]["overhead"], "", "", "", SEED["container"]["image"], ""]
    for cells in table_rows(doc):
        table.add_row(*[str(c) for c in cells])
    table.add_row(*seed_row, style="dim")
    table.add_row("claim (VMs)", SEED["vm"]["startup"], "", SEED["vm"]["density"], SEED["vm"]["overhead"], "", "", "",
                  SEED["vm"]["image"], "", style="dim")
    console = Console(file=stream)
    console.print(table)
    for name, fig in doc["published"].items():
        console.print("published (%s): %s" % (name, fig["source"]), style="dim")


def plot(doc, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("pysandbox bench: --plot needs matplotlib (pip install 'pysandbox[plot]')")
    measured = [r for r in doc["rows"] if r["startup_ms"] is not None]
    names = [r["technology"] for r in measured]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    axes[0].bar(names, [r["startup_ms"] for r in measured], color="tab:blue")
    axes[0].set_ylabel("ms")
    axes[0].set_title("start-up (claim: containers < 1 s, VMs > 30 s)")
    axes[1].bar(names, [r["memory_kib_per_instance"] / 1024 for r in measured], color="tab:green")
    axes[1].set_ylabel("MiB per instance")
    axes[1].set_title("memory per running instance")
    width = 0.2
    for i, workload in enumerate(WORKLOADS):
        axes[2].bar([x + i * width for x in range(len(names))],
                    [r["overhead"].get(workload, {}).get("percent", 0) for r in measured], width, label=workload)
    axes[2].set_xticks([x + 1.5 * width for x in range(len(names))])
    axes[2].set_xticklabels(names)
    axes[2].axhline(15, color="grey", linestyle="--", linewidth=1)
    axes[2].set_title("overhead vs the bare host (dashed: the claimed 15% of VMs)")
    axes[2].set_ylabel("%")
    axes[2].legend()
    for ax in axes:
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_arguments(parser):
    parser.description = ("Measure start-up, memory per instance, density and overheads of pysandbox and its "
                          "peers on this machine, beside the course material's claims.")
    parser.add_argument("--quick", action="store_true", help="small counts (about a minute)")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--plot", metavar="FILE.png", help="also draw a chart (needs matplotlib)")
    parser.add_argument("--budget", type=int, metavar="MiB", help="memory budget for the density column "
                        "(default: half of MemAvailable)")
    parser.add_argument("--only", action="append", metavar="TECH",
                        help="measure only this technology besides the host (repeatable): "
                             "pysandbox, bubblewrap, docker, gvisor, qemu")


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(prog="pysandbox bench")
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.budget is not None and args.budget <= 0:
        sys.stderr.write("pysandbox bench: --budget must be a positive number of MiB\n")
        return 125
    only = set(args.only or ()) or None
    progress = (lambda text: sys.stderr.write(text + "\n")) if sys.stderr.isatty() else None
    doc = measure(quick=args.quick, budget_mib=args.budget, only=only, progress=progress)
    if args.plot:
        plot(doc, args.plot)
    if args.format == "json":
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    elif sys.stdout.isatty():
        render_rich(doc, sys.stdout)
    else:
        sys.stdout.write(render_plain(doc) + "\n")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
