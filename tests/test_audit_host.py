"""The auditor on a target whose namespace links it may not read (the host's PID 1):
unknown must never count as "inside a user namespace"."""
import json
import os
import subprocess
import sys


def test_host_init_capabilities_are_not_downgraded():
    audit = os.path.join(os.path.dirname(sys.executable), "audit")
    proc = subprocess.run([audit, "1", "--format", "json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode in (0, 1), proc.stderr
    report = json.loads(proc.stdout)
    findings = {f["id"]: f for f in report["findings"]}
    assert findings["cap-sys-admin"]["status"] == "fail"
    assert findings["cap-sys-admin"]["severity"] == "critical"
    assert report["escape_paths"], report["summary"]


def _audit_self(*binds):
    venv = sys.prefix
    argv = [os.path.join(os.path.dirname(sys.executable), "pysandbox"), "run", "--profile", "default",
            "--ro-bind", "%s:%s" % (venv, venv)]
    for bind in binds:
        argv += ["--ro-bind", bind]
    argv += ["--", os.path.join(venv, "bin", "audit"), "self", "--format", "json"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode in (0, 1), proc.stderr
    return {f["id"]: f for f in json.loads(proc.stdout)["findings"]}


def test_audit_self_from_inside_a_sandbox():
    """From inside there is no view of the host's mount table: the sandbox's own tmpfs root
    is not "the host's /", while a bind of the host's disk still shows as the host path."""
    clean = _audit_self()
    assert clean["sensitive-mount"]["status"] == "pass", clean["sensitive-mount"]
    assert clean["ns-user-host"]["status"] == "pass" and clean["seccomp-off"]["status"] == "pass"
    leaky = _audit_self("/etc:/hostetc")
    assert leaky["sensitive-mount"]["status"] == "fail"
    assert any("/hostetc -> host /etc" in line for line in leaky["sensitive-mount"]["evidence"])


def test_looking_up_a_name_does_not_initialise_podman():
    """The audit only observes: asking an unused podman about a name would create its storage
    (as root with a bind mount of it; rootless with a pause process left running)."""
    if os.geteuid() == 0:
        storage = "/var/lib/containers/storage"
    else:
        storage = os.path.join(os.path.expanduser("~"), ".local", "share", "containers", "storage")
    existed = os.path.isdir(storage)
    mounts_before = open("/proc/self/mountinfo").read().count("/var/lib/containers")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTAINERS_")}
    audit = os.path.join(os.path.dirname(sys.executable), "audit")
    proc = subprocess.run([audit, "no-such-container-%d" % os.getpid()], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 2 and proc.stderr.startswith("audit: ")
    assert os.path.isdir(storage) == existed
    assert open("/proc/self/mountinfo").read().count("/var/lib/containers") == mounts_before
