"""The mount layer, on the real kernel: mounts in the order given after the runtime's base,
refusals before start, idmapped writable binds, devpts' own pty bound, /proc/stat's IRQ
counters. Each test runs as root and rootless (docs/mounts.md)."""
import json
import os
import stat
import subprocess

import pytest

from util import ROOT, py, require, run_in, pysandbox_cmd

# a host owner for writable binds as root: not root, not the sandbox's mapped ids
OWNER = 65534


def project(tmp_path):
    """A directory under /tmp holding a script, readable by the sandbox either way."""
    directory = tmp_path / "proj"
    directory.mkdir()
    (directory / "hello.py").write_text("import os\nprint('hello from', os.getcwd())\n")
    return directory


def ok(proc):
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout


def refused(proc, *words):
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr
    return proc.stderr


# -- order -------------------------------------------------------------------------

def test_quick_start_script_from_a_directory_under_tmp(strict, tmp_path):
    directory = project(tmp_path)
    assert str(directory).startswith("/tmp/")
    proc = subprocess.run(pysandbox_cmd() + ["run", "--profile", strict, "--ro-bind", str(directory), "--cwd",
                                             str(directory), "--", "python3", "hello.py"],
                          cwd=directory, capture_output=True, text=True, timeout=60)
    assert ok(proc).split() == ["hello", "from", str(directory)]


def test_ro_bind_over_tmp_replaces_the_runtime_tmp(strict, tmp_path):
    directory = project(tmp_path)
    proc, _ = run_in(strict, "/bin/ls", "/tmp", extra=("--ro-bind", "%s:/tmp" % directory))
    assert ok(proc).split() == ["hello.py"]


def test_bind_inside_a_tmpfs(strict, tmp_path):
    directory = project(tmp_path)
    tmpfs, bind = ("--tmpfs", "/data"), ("--ro-bind", "%s:/data/in" % directory)
    code = ("import os\nopen('/data/new','w').write('x')\n"
            "print(sorted(os.listdir('/data')), open('/data/in/hello.py').read().split()[0])")
    proc, _ = run_in(strict, *py(code), extra=tmpfs + bind)
    assert ok(proc).split() == ["['in',", "'new']", "import"]


def test_a_tmpfs_given_after_a_bind_inside_it_is_refused_naming_both(strict, tmp_path):
    """The command line's order is the order of mounting: a later tmpfs over an earlier
    bind would hide it, so the run is refused before start and says how to fix it."""
    directory = project(tmp_path)
    proc, _ = run_in(strict, "/bin/true", extra=("--ro-bind", "%s:/data/in" % directory, "--tmpfs", "/data"))
    assert proc.returncode == 125 and proc.stderr.count("\n") == 1, proc.stderr
    assert "tmpfs /data would hide ro-bind %s:/data/in" % directory in proc.stderr and "list /data first" in proc.stderr


def test_api_mounts_in_order(strict, tmp_path):
    from sandbox import Sandbox, load_profile
    directory = project(tmp_path)
    profile = load_profile(strict)
    result = Sandbox(profile, ro_binds=["%s:/data/in" % directory], tmpfs=["/data"]).run(
        py("print(open('/data/in/hello.py').read().split()[0])"), capture_output=True)
    assert result.exit_code == 0, result
    assert result.stdout.split() == [b"import"]


def test_tmpfs_belongs_to_the_sandbox_user_and_is_writable_under_landlock(strict):
    code = "import os\nopen('/scratch/f','w').write('x')\nst=os.stat('/scratch')\nprint(st.st_uid, os.getuid())"
    proc, _ = run_in(strict, *py(code), extra=("--tmpfs", "/scratch", "--uid", "1000", "--gid", "1000"))
    assert ok(proc).split() == ["1000", "1000"]


@pytest.mark.parametrize("first,second", [
    (("--ro-bind", "{a}:/data"), ("--bind", "{b}:/data")),
    (("--ro-bind", "{a}:/data"), ("--tmpfs", "/data")),
])
def test_a_mount_that_would_hide_another_is_refused_naming_both(strict, tmp_path, first, second):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    args = tuple(x.format(a=a, b=b) for x in first + second)
    proc, _ = run_in(strict, "/bin/true", extra=args)
    # the profile refuses both at load: the message names both mounts and the fix
    refused(proc, "both mount /data", "/data", str(a))


def test_mount_point_missing_in_an_earlier_bind_is_refused_before_start(strict, tmp_path):
    a = project(tmp_path)
    proc, _ = run_in(strict, "/bin/true", extra=("--ro-bind", "%s:/data" % a, "--ro-bind", "%s:/data/sub" % a))
    refused(proc, "/data/sub", "does not exist in", str(a / "sub"))
    (a / "sub").mkdir()
    proc, _ = run_in(strict, "/bin/ls", "/data/sub", extra=("--ro-bind", "%s:/data" % a,
                                                            "--ro-bind", "%s:/data/sub" % a))
    assert sorted(ok(proc).split()) == ["hello.py", "sub"]


# plan's ordering rules on the explicit ordered list (pure logic: a stand-in section)
class _FS:
    rootfs, overlay, ro_bind, bind, tmpfs, etc = "", False, (), (), (), ()
    tmp_size, proc, sys, masked_paths, readonly_paths, readonly_root = 1 << 20, True, "none", (), (), True

    def __init__(self, mounts, **extra):
        self.mounts = mounts
        for key, value in extra.items():
            setattr(self, key, value)


def test_plan_keeps_the_given_order_and_refuses_hiding(tmp_path):
    from sandbox import mnt
    from sandbox.errors import UsageError
    entry = mnt.MountEntry
    fs = _FS((entry("tmpfs", None, "/data"), entry("ro-bind", str(tmp_path), "/data/in"),
              entry("bind", str(tmp_path), "/out")))
    mp = mnt.plan(fs)
    assert [(m.kind, m.target) for m in mp.mounts] == [("tmpfs", "/data"), ("ro-bind", "/data/in"), ("bind", "/out")]
    assert mp.mounts[1].parent is mp.mounts[0]
    assert mp.binds == ((str(tmp_path), "/data/in", False, True), (str(tmp_path), "/out", True, True))
    with pytest.raises(UsageError, match="--tmpfs /data would hide the earlier mount --ro-bind %s:/data/in"
                       % tmp_path):
        mnt.plan(_FS((entry("ro-bind", str(tmp_path), "/data/in"), entry("tmpfs", None, "/data"))))
    # the same mount asked twice (a profile and its caller) is one mount, not a shadow
    mp = mnt.plan(_FS((entry("ro-bind", str(tmp_path), "/x"), entry("ro-bind", str(tmp_path), "/x"))))
    assert len(mp.mounts) == 1
    assert mnt.plan(_FS(()), ).pty_max == mnt.PTY_MAX_DEFAULT
    assert mnt.plan(_FS((), pty_max=8)).pty_max == 8


# -- writable binds ----------------------------------------------------------------

WRITE = ("import os\nopen('/out/made','w').write('from sandbox')\nos.mkdir('/out/dir')\n"
         "print(os.stat('/out/made').st_uid)")


def _writable_dir(tmp_path):
    out = tmp_path / "out"
    out.mkdir(mode=0o700)
    if ROOT:
        os.chown(out, OWNER, OWNER)
    return out


def test_writable_bind_writes_as_the_source_owner(strict, tmp_path):
    out = _writable_dir(tmp_path)
    os.chmod(tmp_path, 0o755)
    proc, _ = run_in(strict, *py(WRITE), extra=("--bind", "%s:/out" % out))
    assert ok(proc).split() == ["0"]  # the sandbox's root sees its own file
    owner = OWNER if ROOT else os.getuid()
    for name in ("made", "dir"):
        st = os.stat(out / name)
        assert (st.st_uid, st.st_gid) == ((OWNER, OWNER) if ROOT else (os.getuid(), os.getgid()))
    assert (out / "made").read_text() == "from sandbox"
    assert owner != 0


@pytest.mark.root_only  # rootless, a --uid other than 0 maps onto a subordinate id (next test)
def test_writable_bind_with_uid_writes_as_the_source_owner(strict, tmp_path):
    out = _writable_dir(tmp_path)
    proc, _ = run_in(strict, *py(WRITE), extra=("--bind", "%s:/out" % out, "--uid", "1000", "--gid", "1000"))
    assert ok(proc).split() == ["1000"]
    st = os.stat(out / "made")
    assert (st.st_uid, st.st_gid) == (OWNER, OWNER)


def test_rootless_uid_on_a_subordinate_id_is_refused_before_start(strict, tmp_path):
    if ROOT:
        pytest.skip("a rootless case (as root the bind is idmapped: the test above)")
    from sandbox import load_profile
    from sandbox import user
    p = load_profile(strict)
    idmap = user.plan(p.idmap, 1000, 1000)
    require(idmap.method == "newuidmap", "the test user has no subordinate ids")
    out = _writable_dir(tmp_path)
    proc, _ = run_in(strict, "/bin/true", extra=("--bind", "%s:/out" % out, "--uid", "1000"))
    refused(proc, "--bind %s:/out" % out, "subordinate id", "--uid 0")


@pytest.mark.root_only  # only host root has root-owned sources to refuse
def test_root_owned_writable_bind_is_refused_naming_the_option(strict, tmp_path):
    out = tmp_path / "rootout"
    out.mkdir(mode=0o755)
    proc, _ = run_in(strict, "/bin/true", extra=("--bind", "%s:/out" % out))
    refused(proc, str(out), "owned by host root", "bind_host_root")
    # a world-writable drop directory is bound as is: the sandbox writes as its own
    # unprivileged host id, never as root
    os.chmod(out, 0o1777)
    proc, _ = run_in(strict, "/bin/touch", "/out/x", extra=("--bind", "%s:/out" % out))
    ok(proc)
    assert os.stat(out / "x").st_uid not in (0, OWNER)


class _Options:
    """A profile with filesystem keys the schema may not know yet (bind_host_root,
    bind_idmap): the real profile, its filesystem section seen through extra attributes."""

    def __init__(self, profile, **filesystem):
        self._profile, self._filesystem = profile, filesystem

    def __getattr__(self, name):
        value = getattr(self._profile, name)
        if name != "filesystem":
            return value
        extra = self._filesystem

        class View:
            def __getattr__(self, key):
                return extra[key] if key in extra else getattr(value, key)
        return View()


@pytest.mark.root_only
def test_bind_host_root_writes_as_root_only_when_asked(strict, tmp_path):
    from sandbox import Sandbox, load_profile
    out = tmp_path / "rootout"
    out.mkdir(mode=0o700)
    code = py("open('/out/made','w').write('x')")
    box = Sandbox(_Options(load_profile(strict), bind_host_root=True), binds=["%s:/out" % out])
    result = box.run(code, capture_output=True)
    assert result.exit_code == 0, (result.stage, result.message, result.stderr)
    st = os.stat(out / "made")
    assert (st.st_uid, st.st_gid) == (0, 0)


@pytest.mark.root_only
def test_bind_idmap_off_binds_as_is(strict, tmp_path):
    from sandbox import Sandbox, load_profile
    out = _writable_dir(tmp_path)
    box = Sandbox(_Options(load_profile(strict), bind_idmap=False), binds=["%s:/out" % out])
    result = box.run(py("import errno\ntry:\n open('/out/made','w')\nexcept OSError as e:\n"
                        " print(errno.errorcode[e.errno])"), capture_output=True)
    assert result.exit_code == 0 and result.stdout.split() == [b"EACCES"], result.stderr
    assert not os.path.exists(out / "made")


@pytest.mark.root_only
def test_a_filesystem_that_cannot_idmap_is_refused_before_start(strict, tmp_path):
    """ramfs cannot be idmapped: mounted in a private mount namespace of the test's own."""
    unshare = subprocess.run(["sh", "-c", "command -v unshare"], capture_output=True, text=True).stdout.strip()
    require(bool(unshare), "util-linux unshare is needed")
    target = tmp_path / "ramfs"
    target.mkdir()
    script = 'mount -t ramfs none "$1" && chown %d:%d "$1" && shift && exec "$@"' % (OWNER, OWNER)
    proc = subprocess.run([unshare, "-m", "--propagation", "private", "sh", "-c", script, "sh", str(target)]
                          + pysandbox_cmd() + ["run", "--profile", strict, "--bind", "%s:/out" % target, "--",
                                               "/bin/touch", "/out/x"], capture_output=True, text=True, timeout=60)
    refused(proc, "bind-idmap", str(target), "(ramfs) cannot be idmapped", "bind_idmap = false")
    assert os.listdir(target) == []  # the host's directory, never mounted over outside


def test_ordered_profile_mounts_apply_in_order_and_refuse_hiding(strict, tmp_path):
    """`filesystem.mounts` (the ordered list a profile gives) on the real kernel."""
    from sandbox import Sandbox, load_profile, mnt
    from sandbox.errors import UsageError
    directory = project(tmp_path)
    profile = load_profile(strict)
    base = tuple(mnt.MountEntry("ro-bind", s.partition(":")[0], s.partition(":")[2] or s) for s in
                 profile.filesystem.ro_bind)
    inner = mnt.MountEntry("ro-bind", str(directory), "/data/in")
    outer = mnt.MountEntry("tmpfs", None, "/data", {"size": 1 << 20, "mode": 0o700})
    box = Sandbox(_Options(profile, mounts=base + (outer, inner)))
    result = box.run(py("import os\nprint(oct(os.stat('/data').st_mode & 0o777), os.listdir('/data/in'))"),
                     capture_output=True)
    assert result.exit_code == 0, (result.stage, result.message, result.stderr)
    assert result.stdout.split() == [b"0o700", b"['hello.py']"]
    with pytest.raises(UsageError, match="--tmpfs /data would hide the earlier mount --ro-bind %s:/data/in"
                       % directory):
        Sandbox(_Options(profile, mounts=base + (inner, outer))).run(["/bin/true"])


MASK_PROBE = r"""
import json, os
mounts = [line.split() for line in open("/proc/self/mountinfo")]
out = {}
out["/"] = [m for m in mounts if m[4] == "/"][-1][2]
for path in ("/proc/acpi", "/proc/irq"):
    lines = [m for m in mounts if m[4] == path]
    try:
        open(os.path.join(path, "x"), "w")
        write = "written"
    except OSError as e:
        write = e.errno
    out[path] = {"mounts": len(lines), "dev": lines[-1][2] if lines else None,
                 "entries": os.listdir(path) if os.path.isdir(path) else None, "write": write}
print(json.dumps(out))
"""


@pytest.mark.parametrize("executor", ["stager", "python"])
def test_masked_directories_show_one_empty_read_only_directory_without_a_superblock(executor):
    """strict masks /proc/acpi and /proc/irq (readonly too, by OCI's default list): an empty
    directory of the scratch tmpfs, taken as a detached read-only copy before the pivot, is
    moved over the first and bound over the others, one mount per path, under both
    executors: no superblock of its own (a tmpfs each cost its creation and teardown in
    every run), the same one as the root's."""
    import errno
    from sandbox import Sandbox, load_profile
    box = Sandbox(load_profile("strict"), executor="python" if executor == "python" else None)
    plan = box.plan()
    assert "/proc/irq" in plan.mounts.masked and "/proc/irq" in plan.mounts.readonly
    result = box.run(["python3", "-I", "-S", "-c", MASK_PROBE], capture_output=True, text=True)
    box.close()
    assert result.exit_code == 0, (result.stage, result.message, result.stderr)
    view = json.loads(result.stdout)
    root_dev = view.pop("/")
    present = {path: seen for path, seen in view.items() if seen["mounts"]}
    assert "/proc/irq" in present, view  # the host has /proc/irq; /proc/acpi depends on the VM
    for path, seen in present.items():
        assert seen["mounts"] == 1 and seen["entries"] == [] and seen["write"] == errno.EROFS, (path, seen)
    assert {seen["dev"] for seen in present.values()} == {root_dev}, (view, root_dev)


ROOT_PROBE = r"""
import json, os
line = [l.split() for l in open("/proc/self/mountinfo") if l.split()[4] == "/"][-1]
vfs = os.statvfs("/")
print(json.dumps({"root": line[3], "fstype": line[line.index("-") + 1], "opts": line[5].split(","),
                  "size": vfs.f_blocks * vfs.f_frsize}))
"""


@pytest.mark.parametrize("executor", ["stager", "python"])
def test_the_root_is_the_scratch_tmpfs_bound_onto_itself_with_the_roots_size(executor):
    """Without an image the new root is the scratch tmpfs's /newroot made a mount point by a
    self-bind (one superblock fewer per run than a tmpfs of its own); its size is still 16
    MiB and it is still read-only."""
    from sandbox import Sandbox, load_profile
    box = Sandbox(load_profile("strict"), executor="python" if executor == "python" else None)
    result = box.run(["python3", "-I", "-S", "-c", ROOT_PROBE], capture_output=True, text=True)
    box.close()
    assert result.exit_code == 0, (result.stage, result.message, result.stderr)
    view = json.loads(result.stdout)
    assert view["root"] == "/newroot" and view["fstype"] == "tmpfs", view
    assert "ro" in view["opts"] and view["size"] == 16 << 20, view
