"""A hostile target: a real process whose os-release, mountpoint names and open fd targets
carry terminal escapes (OSC title, clear screen, cursor home), a bidi override and rich
markup. Built with util-linux in namespaces the test owns (as root: mount + pid; rootless:
user + mount + pid), audited by the real CLI; the raw bytes of the plain text (piped) and of
the rich view (on a pty) must show those bytes escaped and never emit them."""
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest

from livetargets import REPO, require
from util import children as _children, comm as _comm

OSC_TITLE = "\x1b]0;pwned-title\x07"
CLEAR = "\x1b[2J"
HOME = "\x1b[H"
BIDI = "\u202e"
MARKUP = "[bold red]markup[/bold red]"
PRETTY = "%s%s%shostile%sos %s" % (OSC_TITLE, CLEAR, HOME, BIDI, MARKUP)
MOUNT_NAME = "mnt%s%s%s" % ("\x1b]0;mnt-title\x07", CLEAR, BIDI)
FD_NAME = "fd%s%s%s" % (HOME, "\x1b]0;fd-title\x07", BIDI)
# What must never leave the auditor raw: OSC, the screen-clearing and cursor CSIs, the
# override. (rich's own SGR styles, ESC [ ... m, are its own and allowed on a terminal.)
FORBIDDEN = [b"\x1b]", b"\x1b[2J", b"\x1b[H", BIDI.encode(), b"\x07"]


def _shell_bytes(text):
    """`text` as a printf %b argument (octal escapes: the shell script stays ASCII)."""
    return "".join("\\0%o" % b if b < 0x20 or b > 0x7e or b in b"\\'%" else chr(b) for b in text.encode())


@contextmanager
def hostile_target(tmp_path):
    require(shutil.which("unshare") and shutil.which("mount"), "util-linux unshare/mount not installed")
    base = tmp_path / "hostile"
    base.mkdir()
    # A directory with a hostile name in the test's own (host) mount namespace, held open by
    # the target: its fd points at a mount the target's namespace does not have.
    fd_dir = os.path.join(str(base), FD_NAME)
    os.mkdir(fd_dir)
    held = os.open(fd_dir, os.O_RDONLY | os.O_DIRECTORY)
    inside = base / "inside"
    inside.mkdir()
    script = "\n".join([
        "set -e",
        'D="%s"' % inside,
        'mount -t tmpfs -o size=1m,mode=755 hostile "$D"',
        "printf '%%b' 'ID=hostile\\nPRETTY_NAME=\"%s\"\\n' > \"$D/os-release\"" % _shell_bytes(PRETTY),
        # /etc/os-release is a symlink on Debian: the bind lands on what it points to, in
        # this mount namespace only
        'mount --bind "$D/os-release" /etc/os-release',
        "M=\"$D/$(printf '%%b' '%s')\"" % _shell_bytes(MOUNT_NAME),
        'mkdir "$M"',
        # a host directory bind-mounted at the hostile name: sensitive-mount names the mountpoint
        'mount --bind /etc "$M"',
        'mount -o remount,bind,ro "$M"',
        'exec sleep 3600',
    ])
    flags = ["--mount", "--propagation", "private", "--pid", "--fork"]
    if os.geteuid() != 0:
        flags = ["--user", "--map-root-user"] + flags
    proc = subprocess.Popen(["unshare", *flags, "--", "/bin/sh", "-c", script], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=(held,))
    target = None
    try:
        deadline = time.monotonic() + 10
        while target is None:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace")
                require(False, "cannot build the hostile target here: %s" % err.strip()[-300:])
            for pid in _children(proc.pid):
                if _comm(pid) == "sleep":
                    target = pid
            assert time.monotonic() < deadline, "hostile target did not reach sleep"
            time.sleep(0.01)
        yield target
    finally:
        os.close(held)
        for pid in ([target] if target else []) + [proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=10)
        proc.stderr.close()




def _env(**extra):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(extra)
    return env


def _audit_bytes(*args):
    proc = subprocess.run([sys.executable, "-m", "audit", *args], capture_output=True, env=_env(), cwd=REPO,
                          timeout=120)
    assert b"Traceback" not in proc.stderr, proc.stderr.decode(errors="replace")
    return proc


def _audit_on_pty(*args):
    """The CLI with stdout on a pseudo-terminal (so it renders rich): every byte it writes."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "audit", *args], stdout=slave, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=_env(COLUMNS="1000", TERM="xterm-256color"), cwd=REPO)
    os.close(slave)
    out = bytearray()
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 60)
            assert ready, "audit on a pty wrote nothing for 60 s"
            try:
                chunk = os.read(master, 65536)
            except OSError:          # EIO: the child closed the terminal's last descriptor
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
        proc.wait(timeout=60)
        proc.stderr.close()
    return proc.returncode, bytes(out)


def _json_strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _json_strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _json_strings(v)


def _escaped(text):
    from audit.report import printable
    return printable(text).encode()


def test_hostile_target_text_is_escaped_in_every_view(tmp_path):
    with hostile_target(tmp_path) as pid:
        jproc = _audit_bytes(str(pid), "--format", "json")
        assert jproc.returncode == 0, jproc.stderr.decode(errors="replace")
        doc = json.loads(jproc.stdout)
        text = _audit_bytes(str(pid), "-v")
        rc, rich = _audit_on_pty(str(pid), "-v")

    # the audit read the hostile bytes (JSON keeps them, escaped by JSON)
    assert doc["target"]["os"] == PRETTY
    assert b"\x1b" not in jproc.stdout and "\\u001b]0;pwned-title".encode() in jproc.stdout
    hostile = [s for s in _json_strings(doc) if "\x1b" in s or BIDI in s]
    assert any(MOUNT_NAME in s for s in hostile), "mountpoint name not in the report"
    assert any(FD_NAME in s for s in hostile), "fd target not in the report"

    assert text.returncode == 0, text.stderr.decode(errors="replace")
    assert rc == 0
    for view, out in (("text", text.stdout), ("rich", rich)):
        for raw in FORBIDDEN:
            assert raw not in out, (view, raw, out[:2000])
        # shown, escaped: the title, the mountpoint and the fd link target
        for name in (OSC_TITLE + CLEAR + HOME + "hostile", MOUNT_NAME, FD_NAME):
            assert _escaped(name) in out, (view, name)
    assert b"\x1b" not in text.stdout                 # piped text carries no escape at all
    assert b"\x1b[" in rich                           # the pty run really was rich (its own styles)
    # rich took the markup as text, not as a style
    assert MARKUP.encode() in rich
