"""Escape suite, per-user kernel budgets: what a strict sandbox takes of the counts the kernel
charges up the user-namespace chain to its creator (queued signals, POSIX message queue
bytes) is bounded by strict's rlimits, so a sandbox that exhausts them leaves its creator
working.

The sandbox queues real-time signals to itself until the kernel says EAGAIN and opens POSIX
message queues until EMFILE, then holds them while a helper process of the test, running as
the same user outside the sandbox, queues signals, creates a POSIX timer (which needs a queued
signal slot) and opens a message queue. Without the bounds the sandbox's share would reach the
creator's own limits (it inherits them) and the helper would fail.

Budget-exhausting: runs rootless (the test user) only, and takes a fraction of a second.
"""
import json
import subprocess
import sys

import pytest

from util import ROOT, pysandbox_cmd, require

pytestmark = pytest.mark.skipif(ROOT, reason="budget-exhausting: runs rootless, as the test user, so that a "
                                             "regression never spends host root's budget")

# inside: take everything the rlimits allow, report, hold it until stdin closes
HOG = r"""
import ctypes, errno, json, os, signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])
libc = ctypes.CDLL(None, use_errno=True)
# sigqueue, not kill: past the limit kill(2) silently drops the extra instance, sigqueue says EAGAIN
queued = 0
while True:
    if libc.sigqueue(os.getpid(), signal.SIGRTMIN, ctypes.c_void_p(0)) < 0:
        stopped = errno.errorcode[ctypes.get_errno()]
        break
    queued += 1
    if queued > 10 ** 6:
        stopped = "never"
        break
queues = 0
while queues < 1000:
    if libc.mq_open(b"/hog%d" % queues, os.O_CREAT | os.O_RDWR, 0o600, None) < 0:
        mq_stopped = errno.errorcode[ctypes.get_errno()]
        break
    queues += 1
else:
    mq_stopped = "never"
print(json.dumps({"signals": queued, "stopped": stopped, "queues": queues, "mq_stopped": mq_stopped}), flush=True)
sys.stdin.read()
"""

# outside, as the creator: what must still work while the sandbox holds its share
CREATOR_SIGNALS = r"""
import ctypes, errno, json, os, signal
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])
libc = ctypes.CDLL(None, use_errno=True)
queued = 0
result = "ok"
for _ in range(64):
    if libc.sigqueue(os.getpid(), signal.SIGRTMIN, ctypes.c_void_p(0)) < 0:
        result = errno.errorcode[ctypes.get_errno()]
        break
    queued += 1
timer = ctypes.c_void_p()
created = libc.timer_create(1, None, ctypes.byref(timer))  # CLOCK_MONOTONIC, SIGALRM
print(json.dumps({"sigqueue": result, "queued": queued,
                  "timer_create": "ok" if created == 0 else errno.errorcode[ctypes.get_errno()]}))
"""

# outside, in a private IPC namespace (so nothing lands in the host's): the queue's bytes are
# still charged to the creator's count at the top of the user-namespace chain
CREATOR_QUEUE = r"""
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
print("ok" if libc.mq_open(b"/creator", os.O_CREAT | os.O_RDWR, 0o600, None) >= 0
      else errno.errorcode[ctypes.get_errno()])
"""


# Under strict, Landlock already refuses mq_open (the mqueue filesystem is not in its ruleset:
# EACCES); the hog lifts only that layer so that the queues reach the msgqueue rlimit.
STRICT_WITHOUT_LANDLOCK = 'extends = "strict"\n[landlock]\nenabled = false\n'


def test_a_sandbox_exhausting_its_budgets_leaves_the_creator_working(tmp_path):
    profile = tmp_path / "strict-without-landlock.toml"
    profile.write_text(STRICT_WITHOUT_LANDLOCK)
    hog = subprocess.Popen(pysandbox_cmd() + ["run", "--profile", str(profile), "--", "/usr/bin/python3", "-I", "-S",
                                              "-c", HOG],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = hog.stdout.readline()
        if not line:
            hog.stdin.close()
            err = hog.stderr.read()
            hog.wait()
            require(not (hog.returncode == 125 and "cgroup" in err), "strict needs delegated cgroups rootless")
            pytest.fail("the sandbox did not report (%s): %s" % (hog.returncode, err))
        inside = json.loads(line)
        # the sandbox stopped at its own bound (strict: sigpending = 256, msgqueue = 128K)
        assert inside["stopped"] == "EAGAIN" and 0 < inside["signals"] <= 256, inside
        assert inside["mq_stopped"] == "EMFILE" and inside["queues"] == 1, inside
        creator = subprocess.run([sys.executable, "-I", "-S", "-c", CREATOR_SIGNALS], capture_output=True,
                                 text=True, timeout=30)
        assert json.loads(creator.stdout) == {"sigqueue": "ok", "queued": 64, "timer_create": "ok"}, creator
        queue = subprocess.run(["unshare", "--user", "--map-root-user", "--ipc", sys.executable, "-I", "-S", "-c", CREATOR_QUEUE],
                               capture_output=True, text=True, timeout=30)
        assert queue.returncode == 0 and queue.stdout.strip() == "ok", queue
    finally:
        if hog.poll() is None:
            hog.stdin.close()
        hog.wait(timeout=30)
    assert hog.returncode == 0, hog.stderr.read()


def test_strict_rlimits_are_in_force_inside():
    """The values themselves, read from inside (what docs/limits.md documents); and mq_open refused."""
    proc = subprocess.run(pysandbox_cmd() + ["run", "--profile", "strict", "--", "/usr/bin/python3", "-I", "-S", "-c",
                                             "import resource as r, ctypes, os; print(*[r.getrlimit(x)[0] for x in "
                                             "(r.RLIMIT_SIGPENDING, r.RLIMIT_MSGQUEUE, r.RLIMIT_MEMLOCK)]);"
                                             "c = ctypes.CDLL(None, use_errno=True);"
                                             "print(c.mq_open(b'/q', os.O_CREAT | os.O_RDWR, 0o600, None),"
                                             " os.strerror(ctypes.get_errno()))"],
                          capture_output=True, text=True, timeout=60)
    require(not (proc.returncode == 125 and "cgroup" in proc.stderr), "strict needs delegated cgroups rootless")
    assert proc.returncode == 0, proc.stderr
    limits, queue = proc.stdout.splitlines()
    assert limits.split() == [str(256), str(128 << 10), str(1 << 20)]
    assert queue == "-1 Permission denied"  # Landlock: strict's sandbox cannot create POSIX queues at all
