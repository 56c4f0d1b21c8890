"""The escape suite: probes/probes.c tries each escape technique for real inside a sandbox,
once per built-in profile, and every result is asserted exactly (an errno, a signal, or
"ok" where the profile deliberately leaves a route open). See docs/escapes.md.

The same file runs as root and as an unprivileged user (rootless sandbox); the table
holds the expected result per profile and, where the two modes legitimately differ,
per mode.
"""
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from util import pysandbox_cmd, require

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.geteuid() == 0
PROFILES = ("strict", "default", "permissive")

DOCKER_CAPS = "0xa80425fb"  # the 14 capabilities Docker keeps (capnames order)


def _all_caps():
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return "%#x" % ((1 << (int(f.read()) + 1)) - 1)


def _legacy_tiocsti():
    try:
        with open("/proc/sys/dev/tty/legacy_tiocsti") as f:
            return f.read().strip() == "1"
    except OSError:
        return True  # kernels before 6.2 always allow it


ALL_CAPS = _all_caps()
# TIOCSTI: with dev.tty.legacy_tiocsti = 0 the kernel refuses it with EIO before looking
# at the terminal; with 1 it is refused (EPERM) unless the tty is the caller's controlling
# terminal, which it is only when the sandbox shares the caller's session (permissive).
TIOCSTI_FOREIGN = "errno:EPERM" if _legacy_tiocsti() else "errno:EIO"
TIOCSTI_OWN = "ok" if _legacy_tiocsti() else "errno:EIO"

P, D, X = "errno:EPERM", "errno:EACCES", "errno:ENOENT"

# probe: (strict, default, permissive). Why each value is what it is: docs/escapes.md.
EXPECTED = {
    # -- namespaces and mounts
    "mount":                (P, P, "ok"),
    "unshare_userns":       (P, P, "ok"),
    "unshare_mntns":        (P, P, "ok"),
    "clone_userns":         (P, P, "ok"),
    "clone3_userns":        ("errno:ENOSYS", "errno:ENOSYS", "ok"),
    "setns_mnt":            (P, P, "ok"),
    "fsopen":               (P, P, "ok"),
    "open_tree":            (P, P, "ok"),
    "chroot":               (P, "ok", "ok"),
    "binfmt_misc_mount":    (P, P, "ok"),
    "release_agent":        ("errno:EPERM@mount",) * 3,
    "cgroup2_mount":        (P, P, P),
    # -- kernel interfaces
    "keyctl":               (P, P, "ok"),
    "add_key":              (P, P, "ok"),
    "bpf":                  (P, P, P),
    "perf_event_open":      (P, P, "ok"),
    "userfaultfd":          (P, P, P),
    "userfaultfd_user":     (P, P, "ok"),
    "io_uring":             (P, P, "ok"),
    "open_by_handle_at":    ("errno:EPERM@name_to_handle_at", P, P),
    "finit_module":         (P, P, "errno:ENOSYS"),
    "init_module":          (P, P, "errno:ENOSYS"),
    "kexec_load":           (P, P, "errno:ENOSYS"),
    "reboot":               (P, P, "errno:EINVAL"),
    "clock_settime":        (P, P, P),
    "iopl":                 (P, P, "errno:ENOSYS"),
    "swapon":               (P, P, P),
    "personality":          (P, P, "ok"),
    "tiocsti":              (TIOCSTI_FOREIGN, TIOCSTI_FOREIGN, TIOCSTI_OWN),
    # -- sockets
    "raw_socket":           (P, "ok", P),
    "packet_socket":        (P, "ok", P),
    "alg_socket":           (P, P, "errno:EAFNOSUPPORT"),
    # -- sensitive files: open for writing (then close) or read one byte
    "sysrq_trigger":        (X, X, X),
    "core_pattern":         (D, D, D),
    "modprobe":             (X, X, X),
    "uevent_helper":        (X, X, X),
    "binfmt_misc_register": (X, X, X),
    "kcore":                (X, X, X),
    "dev_mem":              (X, X, X),
    "dev_kmsg":             (X, X, X),
    "host_disk":            (X, X, X),
    "mknod_block":          (D, P, P),
    "mknod_char":           (D, P, P),
    "landlock":             (D, "ok", "ok"),
    # -- the process's own state
    "cap_eff":              ("value:0", "value:" + DOCKER_CAPS, "value:" + ALL_CAPS),
    "cap_prm":              ("value:0", "value:" + DOCKER_CAPS, "value:" + ALL_CAPS),
    "cap_inh":              ("value:0", "value:" + DOCKER_CAPS, "value:" + ALL_CAPS),
    "cap_bnd":              ("value:0", "value:" + DOCKER_CAPS, "value:" + ALL_CAPS),
    "cap_amb":              ("value:0",) * 3,
    "no_new_privs":         ("value:1", "value:1", "value:0"),
    "seccomp":              ("value:2", "value:2", "value:0"),
    "inherited_fds":        ("value:none",) * 3,
    "host_root_mapped":     ("value:no",) * 3,
}

# Probes whose kernel facts differ on other machines: the value above is this machine's
# (no CONFIG_MAGIC_SYSRQ, CONFIG_PROC_KCORE, CONFIG_MODULES, CONFIG_KEXEC, CONFIG_UEVENT_HELPER,
# AF_ALG, x86 iopl emulation off). On a kernel that has them the refusal changes form (e.g.
# EACCES instead of ENOENT, or "empty" for /proc/kcore masked by /dev/null) but must stay a refusal.
KERNEL_DEPENDENT = {"sysrq_trigger", "kcore", "modprobe", "finit_module", "init_module", "kexec_load",
                    "alg_socket", "iopl", "uevent_helper"}
CHECKS = {"cap_eff", "cap_prm", "cap_inh", "cap_bnd", "cap_amb", "no_new_privs", "seccomp", "inherited_fds",
          "host_root_mapped"}

# Runs TIOCSTI's precondition: the pty the test made is the controlling terminal of the
# session the supervisor (and, without new_session, the command) runs in.
_CTTY_WRAPPER = ("import fcntl, os, sys, termios\n"
                 "os.setsid()\n"
                 "fcntl.ioctl(0, termios.TIOCSCTTY, 0)\n"
                 "os.execv(sys.argv[1], sys.argv[1:])\n")


@pytest.fixture(scope="session")
def probe_dir():
    gcc = shutil.which("gcc") or (os.path.exists("/usr/bin/gcc") and "/usr/bin/gcc")
    require(bool(gcc), "gcc is needed to build the escape probes")
    directory = tempfile.mkdtemp(prefix="pysandbox-probes-")
    try:
        binary = os.path.join(directory, "probes")
        source = os.path.join(HERE, "probes.c")
        build = subprocess.run([gcc, "-static", "-O1", "-Wall", "-o", binary, source],
                               capture_output=True, text=True)
        if build.returncode != 0:  # no static libc: dynamic works too, /usr is bound inside
            build = subprocess.run([gcc, "-O1", "-Wall", "-o", binary, source], capture_output=True, text=True)
        assert build.returncode == 0, build.stderr
        # the sandbox's root is a mapped id that is not the owner: others need r-x
        os.chmod(directory, 0o755)
        os.chmod(binary, 0o755)
        if ROOT:  # a writable bind of a root-owned source is refused (docs/mounts.md)
            os.chown(directory, 65534, 65534)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def run_probes(probe_dir, profile, *probes, bind="--bind"):
    """Run the probes in a sandbox with a pty as stdin that is the controlling terminal of
    the caller's session. Returns ({probe: result}, CompletedProcess)."""
    # Probes are bound with --bind by default; test_strict_runs_from_ro_bind checks that a
    # read-only bind is executable under strict's Landlock ruleset too.
    cmd = pysandbox_cmd() + ["run", "--profile", profile, bind, probe_dir + ":/probes", "--",
                             "/probes/probes"] + (list(probes) or ["all"])
    master, slave = os.openpty()
    try:
        proc = subprocess.run([sys.executable, "-c", _CTTY_WRAPPER] + cmd, stdin=slave, capture_output=True,
                              text=True, timeout=120)
    finally:
        os.close(slave)
        os.close(master)
    results = {}
    for line in proc.stdout.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if "probe" in fields:
            results[fields["probe"]] = fields.get("result")
    return results, proc


_cache = {}

# Rootless on a cgroup v1 host (no delegation) strict cannot get its required limits and
# refuses to run (exit 125, naming the cgroup stage). Every other strict layer is then
# checked through a profile that extends strict with only limits.required relaxed.
STRICT_WITHOUT_LIMITS = 'extends = "strict"\ndescription = "strict, limits not required"\n' \
                        '[limits]\nrequired = false\n'


def results_for(probe_dir, profile):
    if profile not in _cache:
        results, proc = run_probes(probe_dir, profile)
        if profile == "strict" and not ROOT and proc.returncode == 125 and "cgroup" in proc.stderr:
            _cache["strict-refusal"] = proc
            path = os.path.join(probe_dir, "strict-without-limits.toml")
            with open(path, "w") as f:
                f.write(STRICT_WITHOUT_LIMITS)
            results, proc = run_probes(probe_dir, path)
        _cache[profile] = (results, proc)
    results, proc = _cache[profile]
    assert proc.returncode == 0, "sandbox failed (%d): %s" % (proc.returncode, proc.stderr)
    assert "guard" not in results, results
    return results


def test_strict_limits_fail_closed_without_delegation(probe_dir):
    results_for(probe_dir, "strict")
    refusal = _cache.get("strict-refusal")
    if ROOT or refusal is None:
        # as root (or with delegation) strict's required limits are in force: nothing refused
        assert refusal is None
        return
    assert refusal.stdout == "" and refusal.stderr.startswith("pysandbox: cgroup: ")


def test_every_probe_has_an_expectation(probe_dir):
    listed = subprocess.run([os.path.join(probe_dir, "probes"), "list"], capture_output=True,
                            text=True).stdout.split()
    assert sorted(listed) == sorted(EXPECTED)


def test_guard_refuses_the_host(probe_dir):
    """Where host root is mapped (the host's own user namespace, whoever runs them) the
    probes refuse to run at all."""
    out = subprocess.run([os.path.join(probe_dir, "probes"), "all"], capture_output=True, text=True)
    assert out.returncode == 3 and out.stdout.strip() == "probe=guard result=refused:host-root-mapped"


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("probe", sorted(EXPECTED))
def test_probe(probe_dir, profile, probe):
    results = results_for(probe_dir, profile)
    want = EXPECTED[probe][PROFILES.index(profile)]
    got = results.get(probe)
    if probe in KERNEL_DEPENDENT and got != want and want != "ok":
        # another kernel's refusal of a feature this one lacks: still never "ok"
        assert got and (got.startswith(("errno:", "signal:")) or (probe == "kcore" and got == "empty")), got
        return
    assert got == want, "%s under %s: got %s, expected %s" % (probe, profile, got, want)


def test_strict_refuses_every_attempt(probe_dir):
    """Whatever the table says: under strict no technique succeeds."""
    results = results_for(probe_dir, "strict")
    opened = sorted(p for p, r in results.items() if p not in CHECKS and r == "ok")
    assert opened == []


def test_permissive_shows_escapes(probe_dir):
    """The suite can see an open route: under permissive nested namespaces, mounts, keyrings and
    io_uring work and no seccomp filter or no_new_privs is in place."""
    results = results_for(probe_dir, "permissive")
    for probe in ("unshare_userns", "clone3_userns", "mount", "fsopen", "keyctl", "io_uring"):
        assert results[probe] == "ok", probe
    assert results["seccomp"] == "value:0" and results["no_new_privs"] == "value:0"


def test_strict_runs_from_ro_bind(probe_dir):
    results_for(probe_dir, "strict")
    profile = "strict"
    if "strict-refusal" in _cache:  # rootless without delegation: strict minus required limits
        profile = os.path.join(probe_dir, "strict-without-limits.toml")
    results, proc = run_probes(probe_dir, profile, "landlock", bind="--ro-bind")
    assert proc.returncode == 0, proc.stderr
    assert results == {"landlock": "errno:EACCES"}
