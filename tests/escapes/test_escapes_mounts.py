"""Escape suite, mount layer (issue 10 items 3, 4, 6): each test tries the attack for real
from inside strict, root and rootless, and checks the effect from outside.

- the pty pool: one sandbox opening ptys until its devpts is full leaves every other
  sandbox able to open one (devpts max=, docs/mounts.md);
- IRQ counters: /proc/stat's intr and softirq lines are zeroed, /proc/softirqs and
  /proc/irq masked, as /proc/interrupts is;
- set-id files through a writable bind: what the mount layer guarantees (the file belongs
  to the bind source's owner, never host root nor a sandbox's host id), and what needs the
  seccomp rule on chmod's mode bits (no set-id bit at all).
"""
import json
import os
import stat
import subprocess

import pytest

from util import ROOT, py, pysandbox_cmd, run_in

OWNER = 65534  # as root: the writable bind's owner, neither root nor a sandbox's id


def ok(proc):
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout


EXHAUST_PTYS = """
import errno, os, sys
held = []
while True:
    try:
        held.append(os.open('/dev/ptmx', os.O_RDWR | os.O_NOCTTY))
    except OSError as e:
        print(len(held), errno.errorcode[e.errno], flush=True)
        break
sys.stdin.read()
"""


def test_pty_pool_exhaustion_stays_inside_one_sandbox(strict):
    cmd = pysandbox_cmd() + ["run", "--profile", strict, "--"] + py(EXHAUST_PTYS)
    hog = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = hog.stdout.readline()  # printed once its devpts is full; it keeps them open
        from sandbox import mnt
        assert line.split() == [str(mnt.PTY_MAX_DEFAULT), "ENOSPC"], (line, "" if line else hog.stderr.read())
        proc, _ = run_in(strict, *py("import os\nprint(os.ttyname(os.openpty()[1]))"))
        assert ok(proc).split() == ["/dev/pts/0"]
    finally:
        hog.stdin.close()
        hog.wait(timeout=30)
    assert hog.returncode == 0, hog.stderr.read()


IRQ_PROBE = r"""
import json, os
out = {}
out["stat"] = {l.split()[0]: l.split()[1:] for l in open('/proc/stat') if l.strip()}
for path in ('/proc/interrupts', '/proc/softirqs'):
    try:
        out[path] = open(path).read()
    except OSError as e:
        out[path] = e.errno
out['/proc/irq'] = os.listdir('/proc/irq')
try:
    open('/proc/stat', 'w')
    out['write'] = 'opened'
except OSError as e:
    out['write'] = e.errno
print(json.dumps(out))
"""


def test_irq_counters_are_not_readable(strict):
    with open("/proc/stat") as f:
        host = {l.split()[0]: l.split()[1:] for l in f if l.strip()}
    assert int(host["intr"][0]) > 0 and os.listdir("/proc/irq")
    proc, _ = run_in(strict, *py(IRQ_PROBE))
    seen = json.loads(ok(proc).strip().splitlines()[-1])
    stat_lines = seen["stat"]
    assert stat_lines["intr"] and set(stat_lines["intr"]) == {"0"}
    assert stat_lines["softirq"] and set(stat_lines["softirq"]) == {"0"}
    # the cpu lines are a snapshot taken at start, with the host's field count
    assert len(stat_lines["cpu"]) == len(host["cpu"]) and int(stat_lines["cpu"][3]) > 0
    assert seen["/proc/interrupts"] == "" and seen["/proc/softirqs"] == ""
    assert seen["/proc/irq"] == []
    assert seen["write"] != "opened"


SETID = r"""
import errno, os, shutil, stat
def attempt(name, call):
    try:
        call()
        print(name, 'ok')
    except OSError as e:
        print(name, errno.errorcode[e.errno])
shutil.copy('/bin/true', '/out/suid')
open('/out/sgid', 'w').close()
attempt('chmod-4755', lambda: os.chmod('/out/suid', 0o4755))
attempt('chmod-2755', lambda: os.chmod('/out/sgid', 0o2755))
fd = os.open('/out/suid', os.O_RDONLY)
attempt('fchmod-6755', lambda: os.fchmod(fd, 0o6755))
attempt('fchmodat-4755', lambda: os.chmod('suid', 0o4755, dir_fd=os.open('/out', os.O_RDONLY)))
attempt('open-creat-6755', lambda: os.close(os.open('/out/created', os.O_WRONLY | os.O_CREAT, 0o6755)))
attempt('open-tmpfile-4755', lambda: os.close(os.open('/out', os.O_WRONLY | os.O_TMPFILE, 0o4755)))
attempt('mknod-4755', lambda: os.mknod('/out/node', stat.S_IFREG | 0o4755))
# what programs do stays possible: plain modes, the sticky bit
attempt('chmod-755', lambda: os.chmod('/out/suid', 0o755))
attempt('chmod-1777', lambda: os.chmod('/out/sgid', 0o1777))
attempt('open-creat-755', lambda: os.close(os.open('/out/created', os.O_WRONLY | os.O_CREAT, 0o755)))
"""

SETID_REFUSED = ("chmod-4755", "chmod-2755", "fchmod-6755", "fchmodat-4755", "open-creat-6755", "open-tmpfile-4755",
                 "mknod-4755")


def _bind_dir(tmp_path):
    out = tmp_path / "out"
    out.mkdir(mode=0o700)
    if ROOT:
        os.chown(out, OWNER, OWNER)
    return out


def _setid_run(strict, tmp_path):
    out = _bind_dir(tmp_path)
    proc, _ = run_in(strict, *py(SETID), extra=("--bind", "%s:/out" % out))
    results = dict(line.split() for line in ok(proc).splitlines())
    return results, {name: os.stat(out / name) for name in ("suid", "sgid", "created")}


def test_setid_file_through_a_bind_never_belongs_to_host_root_or_a_sandbox_id(strict, tmp_path):
    expected = (OWNER, OWNER) if ROOT else (os.getuid(), os.getgid())
    for name, st in _setid_run(strict, tmp_path)[1].items():
        # whatever mode bits are left, the file is the bind source owner's own
        assert (st.st_uid, st.st_gid) == expected, (name, st.st_uid, st.st_gid)
        assert st.st_uid != 0 and st.st_gid != 0


def test_no_setid_bit_survives_on_the_host(strict, tmp_path):
    """strict's seccomp rules refuse a set-id bit in every mode the sandbox can give a file
    (chmod, fchmod, fchmodat, creation modes of open/openat/mknod, O_TMPFILE); plain modes and
    the sticky bit still work. Checked on the host's files."""
    results, files = _setid_run(strict, tmp_path)
    for attempt in SETID_REFUSED:
        assert results.get(attempt) == "EPERM", (attempt, results)
    for attempt in ("chmod-755", "chmod-1777", "open-creat-755"):
        assert results.get(attempt) == "ok", (attempt, results)
    assert not os.path.exists(tmp_path / "out" / "node")
    assert stat.S_IMODE(files["suid"].st_mode) == 0o755 and files["sgid"].st_mode & stat.S_ISVTX
    for name, st in files.items():
        assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID), (name, oct(st.st_mode))


COREUTILS = r"""
cd /out || exit 9
cp /bin/true t && install -m 755 /bin/true i && chmod 755 t && mkdir d && chmod 1777 d || exit 10
./t && ./i || exit 11
python3 -I -S -c 'open("/out/py", "w").write("x")' || exit 12
chmod 4755 t 2>err4; echo "chmod4755=$?"
chmod g+s d 2>errg; echo "chmodgs=$?"
install -m 4755 /bin/true s 2>erri; echo "install4755=$?"
cat err4 errg erri
"""


def test_chmod_4755_fails_with_eperm_and_programs_still_work(strict, tmp_path):
    """The shell's view: coreutils' chmod 4755 and install -m 4755 get EPERM, chmod 755,
    cp, install -m 755 and python3 work, and nothing on the host carries a set-id bit."""
    out = _bind_dir(tmp_path)
    proc, _ = run_in(strict, "/bin/sh", "-c", COREUTILS, extra=("--bind", "%s:/out" % out))
    text = ok(proc)
    assert "chmod4755=1" in text and "chmodgs=1" in text and "install4755=1" in text, text
    assert text.count("Operation not permitted") == 3, text
    assert (out / "py").read_text() == "x"
    assert stat.S_IMODE(os.stat(out / "t").st_mode) == 0o755 and stat.S_IMODE(os.stat(out / "i").st_mode) == 0o755
    for entry in os.scandir(out):
        assert not entry.stat(follow_symlinks=False).st_mode & (stat.S_ISUID | stat.S_ISGID), entry.name
