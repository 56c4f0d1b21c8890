"""runc and crun containers started from OCI bundles (busybox root) with `run -d`, found by
PID through their state directories (/run/runc/<id>/state.json, /run/crun/<id>/status),
by id and by unique id prefix, and labelled with runtime, id, annotations and version."""
import json
import os
import re
import subprocess

import pytest

from livetargets import oci_bundle, oci_container, require, resolver, root_only, run_audit

ANNOTATIONS = {"org.example.team": "audit", "org.opencontainers.image.ref.name": "busybox:audit"}


def _version(runtime):
    out = subprocess.run([runtime, "--version"], capture_output=True, text=True).stdout
    return re.search(r"version (\d+\.\d+(?:\.\d+)?)", out).group(1)


def _rootless_runc(tmp_path, monkeypatch):
    """Rootless, runc keeps its state in $XDG_RUNTIME_DIR/runc: one of the test's own."""
    rootless = os.geteuid() != 0
    if rootless:
        xdg = tmp_path / "xdg"
        xdg.mkdir(mode=0o700)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    return rootless


@pytest.fixture(params=["runc", pytest.param("crun", marks=pytest.mark.root_only)])
def container(request, tmp_path, monkeypatch):
    runtime = request.param
    if runtime == "crun":
        root_only()    # crun runs here from a private mount namespace (hybrid cgroups): as root
    require(subprocess.run(["which", "runc"], capture_output=True).returncode == 0,
            "runc is needed for `runc spec` (Debian package runc)")
    rootless = _rootless_runc(tmp_path, monkeypatch)
    bundle = oci_bundle(str(tmp_path / "bundle"), annotations=ANNOTATIONS, rootless=rootless)
    cid = "audit-%s-bundle-%d" % (runtime, os.getpid())
    with oci_container(runtime, bundle, cid) as (cid, pid):
        yield runtime, cid, pid, bundle


def test_recognised_by_pid(container):
    runtime, cid, pid, bundle = container
    t = resolver().describe_pid(pid)
    assert (t.runtime, t.container_id, t.name, t.pid) == (runtime, cid, cid, pid)
    assert t.identity == "%s/%s" % (runtime, cid)
    assert dict(t.labels) == ANNOTATIONS
    assert t.image == "busybox:audit"
    assert dict(t.runtime_version) == {runtime: _version(runtime)}
    assert t.oci is not None and "/proc/kcore" in t.oci["masked_paths"]
    assert any(bundle in n for n in t.notes)


def test_resolved_by_id_and_prefix(container):
    runtime, cid, pid, _ = container
    r = resolver()
    for spec in (cid, cid[:len("audit-%s-bun" % runtime)]):
        t = r.resolve(spec)
        assert (t.runtime, t.container_id, t.pid) == (runtime, cid, pid), spec


def test_audit_cli_by_id(container):
    runtime, cid, pid, _ = container
    proc = run_audit(cid, "--format", "json")
    assert proc.returncode in (0, 1), proc.stderr
    report = json.loads(proc.stdout)
    assert (report["target"]["runtime"], report["target"]["container_id"], report["target"]["pid"]) == \
        (runtime, cid, pid)
    assert report["target"]["os"] == "audit test root"
    statuses = {f["id"]: f["status"] for f in report["findings"]}
    # runc spec's default: private pid/net/ipc/uts/mnt namespaces, OCI masks, read-only root
    # (net and mnt have no fixed host inode: rootless, the host's are not known)
    for ns in ("pid", "ipc", "uts") + (("net", "mnt") if os.geteuid() == 0 else ()):
        assert statuses["ns-%s-host" % ns] == "pass", ns
    assert statuses["rootfs-rw"] == "pass"
    assert statuses["proc-masks-missing"] == "pass"


def test_in_audit_all_once(container):
    runtime, cid, pid, _ = container
    mine = [t for t in resolver().all_targets() if t.container_id == cid]
    assert [(t.runtime, t.pid) for t in mine] == [(runtime, pid)]


def test_ambiguous_prefix_and_stopped_container(tmp_path, monkeypatch):
    rootless = _rootless_runc(tmp_path, monkeypatch)
    bundle = oci_bundle(str(tmp_path / "bundle"), rootless=rootless)
    base = "audit-prefix-%d" % os.getpid()
    with oci_container("runc", bundle, base + "-a"), oci_container("runc", bundle, base + "-b"):
        proc = run_audit(base)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert "ambiguous" in proc.stderr and base + "-a" in proc.stderr
    # deleted: its state directory is gone, so is the id
    proc = run_audit(base + "-a")
    assert proc.returncode == 2 and "no such target" in proc.stderr


def test_created_not_started(tmp_path, monkeypatch):
    """`runc create`: the init exists, blocked on exec.fifo; it is audited with a note."""
    rootless = _rootless_runc(tmp_path, monkeypatch)
    bundle = oci_bundle(str(tmp_path / "bundle"), rootless=rootless)
    cid = "audit-created-%d" % os.getpid()
    with open(tmp_path / "err", "wb") as err:
        done = subprocess.run(["runc", "create", "--bundle", bundle, cid], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=err, timeout=60)
    try:
        assert done.returncode == 0, (tmp_path / "err").read_text()
        pid = int(json.loads(subprocess.run(["runc", "state", cid], capture_output=True, text=True,
                                            check=True).stdout)["pid"])
        t = resolver().resolve(cid)
        assert (t.runtime, t.container_id, t.pid) == ("runc", cid, pid)
        assert any("created, not started" in n for n in t.notes)
    finally:
        subprocess.run(["runc", "delete", "-f", cid], capture_output=True, timeout=60)
