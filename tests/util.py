"""Shared test helpers: feature probes that skip locally but fail under CI=true, and
ways to run the real CLI."""
import json
import os
import subprocess
import sys

import pytest

IN_CI = os.environ.get("CI") == "true"
ROOT = os.geteuid() == 0

# Reference seccomp profiles from Debian's packages (setup.sh installs them): Docker's
# default from golang-github-docker-docker-dev (matching the installed docker.io) and
# Podman's from containers-common. Tests never read files beside the clone.
REFERENCE_SECCOMP = {
    "docker": ("/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json",
               "golang-github-docker-docker-dev"),
    "podman": ("/usr/share/containers/seccomp.json", "containers-common"),
}


def reference_seccomp(engine):
    """Path of Docker's ("docker") or Podman's ("podman") default seccomp profile."""
    path, package = REFERENCE_SECCOMP[engine]
    require(os.path.isfile(path), "%s not found: install Debian's %s (setup.sh does)" % (path, package))
    return path


def require(condition, reason):
    """Skip with `reason` when `condition` is false; in CI (CI=true) that is a failure,
    because the CI machine has every feature."""
    if not condition:
        if IN_CI:
            pytest.fail("required feature missing in CI: " + reason)
        pytest.skip(reason)


def pysandbox_cmd():
    """The installed console script when present, else `python -m sandbox`."""
    here = os.path.dirname(sys.executable)
    script = os.path.join(here, "pysandbox")
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-m", "sandbox"]


def run_cli(*args, timeout=60, input=None, env=None):
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.run(pysandbox_cmd() + list(args), capture_output=True, text=True, timeout=timeout,
                          input=input, env=full_env)


def run_in(profile, *cmd, extra=(), timeout=60, result_file=None):
    """`pysandbox run --profile P [extra] -- cmd`; returns (CompletedProcess, result dict or None)."""
    args = ["run", "--profile", profile, *extra]
    if result_file:
        args += ["--result", str(result_file)]
    proc = run_cli(*args, "--", *cmd, timeout=timeout)
    verdict = None
    if result_file and os.path.exists(result_file):
        with open(result_file) as f:
            verdict = json.load(f)
    return proc, verdict


def py(code):
    """argv running `code` with the sandbox's /usr/bin/python3 (isolated mode)."""
    return ["/usr/bin/python3", "-I", "-S", "-c", code]


def wait_until(condition, timeout=30, what="the condition"):
    """Poll `condition()` until it is true (returns its value) or fail after `timeout` s:
    waiting for an event the test can observe, never a fixed sleep standing in for one."""
    import time
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail("timed out after %gs waiting for %s" % (timeout, what))
        time.sleep(0.01)


def comm(pid):
    """The command name of `pid` (/proc/PID/comm), None once it is gone."""
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return None


def children(pid):
    """PIDs of the children of `pid` (its main thread's), [] once it is gone."""
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def command_running(pid1, name):
    """True once the sandbox whose PID 1 is `pid1` runs a process called `name`: setup
    is over (the command only execs after its last stage)."""
    for child in children(pid1):
        try:
            with open("/proc/%d/comm" % child) as f:
                if f.read().strip() == name[:15]:
                    return True
        except OSError:
            pass
    return False


def processes_with(marker):
    """PIDs of every process whose command line contains `marker` (observing only)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found
