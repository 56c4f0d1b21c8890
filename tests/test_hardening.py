"""Regression tests for what a security review of the runtime found: each one tries the
attack for real and asserts it no longer works."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from util import ROOT, require, run_cli, run_in, py


@pytest.fixture(scope="module")
def int80_probe(tmp_path_factory):
    """A static program that calls getpid through the i386 ABI (int 0x80) and prints it."""
    gcc = shutil.which("gcc")
    require(bool(gcc), "gcc is needed to build the int 0x80 probe")
    directory = tempfile.mkdtemp(prefix="pysandbox-int80-")
    try:
        source = os.path.join(directory, "int80.c")
        with open(source, "w") as f:
            f.write("#include <stdio.h>\n"
                    "int main(void) { long r; __asm__ volatile(\"int $0x80\" : \"=a\"(r) : \"a\"(20L));\n"
                    "  printf(\"int80 getpid=%ld\\n\", r); return 0; }\n")
        binary = os.path.join(directory, "int80")
        subprocess.run([gcc, "-static", "-O1", "-o", binary, source], check=True, capture_output=True)
        os.chmod(directory, 0o755)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_allow_default_import_kills_foreign_abi(int80_probe, tmp_path):
    """An allow-by-default OCI policy lists refusals by x86_64 number; int 0x80 must not walk
    around them (libseccomp's bad-arch action is a kill then, not the default allow)."""
    policy = tmp_path / "allow.json"
    policy.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["unshare", "mount", "getpid"], "action": "SCMP_ACT_ERRNO"}]}))
    os.chmod(tmp_path, 0o755)
    result = tmp_path / "r.json"
    proc, verdict = run_in("default", "/p/int80", extra=("--seccomp", str(policy), "--ro-bind", int80_probe + ":/p"),
                           result_file=result)
    assert "int80 getpid=" not in proc.stdout
    assert verdict["signal"] == 31 and verdict["reason"] == "seccomp"


def test_state_directory_planted_by_another_user_is_refused(tmp_path):
    """Rootless without XDG_RUNTIME_DIR the state directory has a predictable name in /tmp;
    one made by someone else (with symlinks planted in it) is not used."""
    hostile = tmp_path / "state"
    hostile.mkdir()
    os.chmod(hostile, 0o777)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    env = {"PYSANDBOX_STATE_DIR": str(hostile)}
    # plant the temporary name the next register would use, for a range of pids
    for n in range(1, 3):
        for pid in range(os.getpid(), os.getpid() + 200):
            name = hostile / ("sbx-%d-%d.json.%d.tmp" % (pid, n, pid))
            os.symlink(victim, name)
    proc = run_cli("run", "--profile", "default", "--", "/bin/true", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "not recorded" in proc.stderr and "not private" in proc.stderr
    assert victim.read_text() == "precious"
    from pysandbox_common import registry as state
    assert state.records(str(hostile)) == []


def test_state_records_with_hostile_names_are_ignored(tmp_path):
    directory = tmp_path / "s"
    directory.mkdir(mode=0o700)
    (directory / "evil.json").write_text(json.dumps({"name": "../../etc/passwd", "pid": 1, "supervisor": 1}))
    from pysandbox_common import registry as state
    assert state.records(str(directory)) == []


@pytest.mark.parametrize("args, code, text", [
    (["--timeout", "nan"], 125, "--timeout expects a finite number"),
    (["--timeout", "inf"], 125, "--timeout expects a finite number"),
    (["--result", "/nonexistent/dir/r.json"], 125, "--result /nonexistent/dir/r.json: No such file or directory"),
    (["--bind", ":/x"], 125, "empty bind source"),
    (["--bind", "/etc://proc"], 125, "refusing to mount over /proc"),
    (["--ro-bind", "/etc:relative"], 125, "must be an absolute path"),
    (["--tmpfs", "relative"], 125, "must be an absolute path"),
    (["--tmpfs", "/dev/x"], 125, "refusing to mount over /dev/x"),
    (["--memory", "0"], 125, "--memory 0 would remove a limit that profile strict requires"),
    (["--pids", "0"], 125, "--pids 0 would remove a limit that profile strict requires"),
    (["--memory", "-1"], 125, "--memory -1 would remove a limit that profile strict requires"),
    (["--memory", "unlimited"], 125, "--memory unlimited would remove a limit"),
    (["--timeout", "1e300"], 125, "--timeout expects a finite number"),
    (["--cpus", "nan"], 125, "--cpus expects a finite number"),
])
def test_bad_run_options_fail_before_anything_runs(args, code, text, tmp_path):
    marker = tmp_path / "ran"
    proc = run_cli("run", "--profile", "strict", *args, "--", "/bin/sh", "-c", "echo ran")
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.startswith("pysandbox: ") and text in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and "ran" not in proc.stdout


@pytest.mark.parametrize("toml, key", [
    ('[environment]\nset = { "A=B" = "x" }\n', "environment.set"),
    ('[filesystem]\nmasked_paths = ["relative"]\n', "filesystem.masked_paths"),
    ('[filesystem]\nreadonly_paths = ["/proc/../etc"]\n', "filesystem.readonly_paths"),
    ('[process]\ntimeout = inf\n', "process.timeout"),
    ('[limits]\ncpus = nan\n', "limits.cpus"),
    ('[capabilities]\nkeep = ["NOSUCH"]\n', "capabilities.keep"),
    ('[process]\ntimeout = 1e300\n', "process.timeout"),
    ('[landlock]\nscope = [[1]]\n', "landlock.scope"),
])
def test_bad_profile_values(tmp_path, toml, key):
    profile = tmp_path / "p.toml"
    profile.write_text('extends = "default"\n' + toml)
    proc = run_cli("run", "--profile", str(profile), "--", "/bin/true")
    assert proc.returncode == 125 and (": %s: " % key) in proc.stderr, proc.stderr


def _image(tmp_path):
    busybox = "/bin/busybox"
    require(os.path.exists(busybox), "busybox-static is not installed")
    root = tmp_path / "image"
    for name in ("bin", "etc", "tmp", "proc", "dev", "data"):
        (root / name).mkdir(parents=True)
    shutil.copy(busybox, root / "bin" / "busybox")
    for applet in ("sh", "cat", "echo", "ls"):
        os.symlink("busybox", root / "bin" / applet)
    owner = 1_000_000_000 if ROOT else os.getuid()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
            os.lchown(name, owner, owner)
    os.chmod(tmp_path, 0o755)
    return root


@pytest.mark.root_only  # only host root can make the device node the image carries
def test_device_nodes_in_an_image_do_not_work(tmp_path):
    """An image may carry device nodes (made by whoever built it); the rootfs is nodev."""
    root = _image(tmp_path)
    os.mknod(root / "data" / "nul", 0o20666, os.makedev(1, 3))
    proc, _ = run_in("default", "/bin/sh", "-c", "echo x > /data/nul && echo wrote", extra=("--rootfs", str(root)))
    assert "wrote" not in proc.stdout and "Permission denied" in proc.stderr


def test_image_symlink_to_root_does_not_break_strict(tmp_path):
    root = _image(tmp_path)
    os.symlink("/", root / "x")
    proc, _ = run_in("strict", "/bin/ls", "/x/bin/busybox", extra=("--rootfs", str(root)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "/x/bin/busybox"


def test_image_symlink_cannot_steer_a_mount_onto_the_host(tmp_path):
    """An image's absolute symlink resolved against the setup's scratch root would land
    mount points (and their creation) on the host."""
    root = _image(tmp_path)
    os.symlink("/oldroot/tmp", root / "hostlink")
    probe = tmp_path / "landed"
    proc, _ = run_in("default", "/bin/true", extra=("--rootfs", str(root), "--ro-bind",
                                                    "/etc/hostname:/hostlink/%s" % os.path.basename(str(probe))))
    assert proc.returncode == 125 and "refusing to mount through it" in proc.stderr, proc.stderr
    assert not os.path.exists("/tmp/%s" % os.path.basename(str(probe)))


def test_seccomp_import_stacks_on_strict(int80_probe, tmp_path):
    """--seccomp on strict adds a filter; it cannot take strict's place (strict's own policy
    is `locked`): both apply, the stricter answer wins."""
    policy = tmp_path / "allow.json"
    policy.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}))
    os.chmod(tmp_path, 0o755)
    code = ("import ctypes, os\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "r = libc.syscall(110)\n"                       # getppid: refused by the imported file
            "print('getppid', r, ctypes.get_errno())\n"
            "r = libc.syscall(272, 0x10000000)\n"           # unshare(CLONE_NEWUSER): refused by strict
            "print('unshare', r, ctypes.get_errno())\n")
    proc, _ = run_in("strict", *py(code), extra=("--seccomp", str(policy)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["getppid -1 13", "unshare -1 1"]
    proc, _ = run_in("strict", "/p/int80", extra=("--seccomp", str(policy), "--ro-bind", int80_probe + ":/p"))
    # the i386 ABI stays closed whatever was imported; the kernel takes the stricter of the
    # two answers, here the imported file's kill for a foreign ABI over strict's EPERM
    assert proc.stdout == "" and proc.returncode == 128 + 31


def test_a_deny_list_alone_allows_the_rest():
    """`deny = [...]` without an allow list is a denylist: everything else stays allowed
    (refusing everything by default would kill the program at its first syscall)."""
    from sandbox import seccomp
    policy = seccomp.validate_section({"deny": ["getppid"]})
    assert policy.default_action[0] == "allow"
    bpf = seccomp.compile_policy(policy)
    nr = seccomp.SYSCALLS_X86_64
    assert seccomp.allowed(seccomp.emulate(bpf, nr["getpid"])[0])
    assert not seccomp.allowed(seccomp.emulate(bpf, nr["getppid"])[0])
    assert seccomp.validate_section({"allow": ["read"]}).default_action[0] == "errno"
