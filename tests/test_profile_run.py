"""Derived profiles on the real kernel: what `extends` adds is there, and what it inherits
stays (/usr, strict's @basic allowlist). Runs as root and again as an unprivileged user."""
import json
import os

import pytest

from util import ROOT, py, run_in

PTRACE_TRACEME = r"""
import ctypes, json
libc = ctypes.CDLL(None, use_errno=True)
rc = libc.ptrace(0, 0, None, None)   # PTRACE_TRACEME
print(json.dumps([rc, ctypes.get_errno()]))
"""


@pytest.fixture(scope="module")
def strict_base(tmp_path_factory):
    """What the derived profiles extend: strict, or rootless without delegated cgroups strict
    with its limits made optional (test_runtime covers that strict refuses to run so)."""
    if ROOT:
        return "strict"
    from sandbox import cgroup
    if cgroup.detect() == "v1" and os.path.isdir(cgroup.v1_parent(cgroup.v1_hierarchies()["pids"])):
        return "strict"
    path = tmp_path_factory.mktemp("profiles") / "strict-nolimits.toml"
    path.write_text('extends = "strict"\n[limits]\nrequired = false\nmemory = 0\npids = 0\ncpus = 0.0\n')
    return str(path)


def derived(tmp_path, base, text):
    path = tmp_path / "derived.toml"
    path.write_text('extends = %s\n%s' % (json.dumps(base), text))
    return str(path)


def shared_dir(tmp_path):
    """A host directory the sandbox's (unprivileged) root can read."""
    data = tmp_path / "x"
    data.mkdir()
    (data / "f.txt").write_text("hello from the host")
    os.chmod(tmp_path, 0o755)
    os.chmod(data, 0o755)
    os.chmod(data / "f.txt", 0o644)
    return data


def test_a_derived_bind_keeps_usr(tmp_path, strict_base):
    """issue 9.2: `extends = "strict"` with `ro_bind = ["/srv/x"]` lost /usr (ModuleNotFoundError)."""
    data = shared_dir(tmp_path)
    profile = derived(tmp_path, strict_base, '[filesystem]\nro_bind = ["%s:/srv/x"]\n' % data)
    proc, _ = run_in(profile, *py("import json, os; print(json.dumps([open('/srv/x/f.txt').read(), "
                                  "os.path.isdir('/usr/lib'), os.access('/srv/x', os.W_OK)]))"))
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert json.loads(proc.stdout) == ["hello from the host", True, False]


def test_a_derived_allow_keeps_basic(tmp_path, strict_base):
    """issue 9.2: `seccomp.allow = ["ptrace"]` on strict lost @basic (python died with SIGSEGV)."""
    proc, _ = run_in(strict_base, *py(PTRACE_TRACEME))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [-1, 1]  # strict: EPERM from the filter
    profile = derived(tmp_path, strict_base, '[seccomp]\nallow = ["ptrace"]\n')
    proc, _ = run_in(profile, *py(PTRACE_TRACEME))
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert json.loads(proc.stdout) == [0, 0]   # python ran (so @basic is there) and ptrace was allowed


def test_a_derived_deny_wins_over_an_inherited_allow(tmp_path):
    """default allows ptrace by name; a profile extending it can still deny it. (Capabilities
    are dropped here: the kernel refuses PTRACE_TRACEME to a tracee holding capabilities its
    tracer, the sandbox's init, lacks.)"""
    no_caps = '[capabilities]\nreplace = ["keep"]\n'
    proc, _ = run_in(derived(tmp_path, "default", no_caps), *py(PTRACE_TRACEME))
    assert proc.returncode == 0 and json.loads(proc.stdout) == [0, 0], proc.stderr
    proc, _ = run_in(derived(tmp_path, "default", no_caps + '[seccomp]\ndeny = ["ptrace"]\n'), *py(PTRACE_TRACEME))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [-1, 1]


def test_replace_drops_what_is_inherited(tmp_path, strict_base):
    """Replacing the inherited binds is explicit, and real: without /usr there is no python."""
    data = shared_dir(tmp_path)
    profile = derived(tmp_path, strict_base, '[filesystem]\nreplace = ["ro_bind"]\nro_bind = ["%s:/srv/x"]\n' % data)
    proc, _ = run_in(profile, "/usr/bin/python3", "-c", "pass")
    assert proc.returncode == 127, (proc.returncode, proc.stderr)
    proc, _ = run_in(profile, "/bin/sh", "-c", "true")   # /bin -> usr/bin: gone as well
    assert proc.returncode == 127, (proc.returncode, proc.stderr)
