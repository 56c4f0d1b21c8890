"""`pysandbox bench`: every technology present is measured in one run, with the seed's claims
and published figures beside it; one that is missing says why instead of a number."""
import glob
import json
import os
import shutil

import pytest

from util import ROOT, require, run_cli

MEASURED = ("startup_ms", "memory_kib_per_instance", "density", "overhead", "image_mb")


def _bench(*args, timeout=600, env=None):
    proc = run_cli("bench", "--quick", *args, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def _rows(doc):
    return {row["technology"]: row for row in doc["rows"]}


def _assert_measured(row):
    assert row["startup_ms"] is not None and row["startup_ms"] > 0, row
    assert row["memory_kib_per_instance"] is not None and row["memory_kib_per_instance"] >= 0, row
    assert set(row["overhead"]) == {"cpu", "syscall", "io", "net"}, row
    for value in row["overhead"].values():
        assert value["ns"] > 0


@pytest.fixture(scope="module")
def sandboxes():
    return json.loads(_bench("--format", "json", "--only", "pysandbox", "--only", "bubblewrap").stdout)


def test_json_document(sandboxes):
    assert sandboxes["schema"] == "pysandbox.bench/1"
    assert set(sandboxes["seed"]) == {"vm", "container"}
    assert sandboxes["published"]["firecracker"]["startup_ms"] == 125
    rows = _rows(sandboxes)
    assert set(rows) == {"host", "pysandbox strict", "bubblewrap"}
    for row in rows.values():
        assert set(MEASURED) | {"technology", "notes"} == set(row)
    assert rows["host"]["overhead"]["cpu"]["percent"] == 0.0


def test_sandboxes_measured(sandboxes):
    for name in ("host", "pysandbox strict", "bubblewrap"):
        _assert_measured(_rows(sandboxes)[name])


@pytest.mark.root_only
def test_engines_measured_as_root():
    """Docker (a private daemon) and gVisor's runsc, each measured, or failing loudly."""
    require(ROOT, "Docker and runsc rows need root here")
    doc = json.loads(_bench("--format", "json", "--only", "docker", "--only", "gvisor", timeout=900).stdout)
    rows = _rows(doc)
    for name in ("docker", "gVisor runsc"):
        require("not measured" not in rows[name]["notes"], rows[name]["notes"])
        _assert_measured(rows[name])
        assert rows[name]["image_mb"] > 0


def test_missing_technology_says_why():
    doc = json.loads(_bench("--format", "json", "--only", "qemu", env={"PYSANDBOX_BENCH_KERNEL": "/nonexistent/vmlinuz"}).stdout)
    qemu = _rows(doc)["QEMU virtual machine"]
    assert qemu["startup_ms"] is None and qemu["notes"].startswith("not measured: ")
    assert "/nonexistent/vmlinuz" in qemu["notes"] or "qemu is not installed" in qemu["notes"]


def _processes_mentioning(text):
    found = []
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(path, "rb") as f:
                if text.encode() in f.read():
                    found.append(path.split("/")[2])
        except OSError:
            pass
    return found


def test_qemu_vm_measured(tmp_path):
    """A real VM: the guest kernel setup.sh unpacked boots under QEMU with the probe as its init;
    every row is measured, and nothing (VMs, initramfs, unpacked kernel) outlives the bench."""
    from sandbox.bench import guest_kernel
    require(shutil.which("qemu-system-x86_64"), "qemu-system-x86_64 not installed (Debian package qemu-system-x86)")
    require(os.access(guest_kernel(), os.R_OK), "no guest kernel at %s (setup.sh puts one there)" % guest_kernel())
    doc = json.loads(_bench("--format", "json", "--only", "qemu", env={"TMPDIR": str(tmp_path)}).stdout)
    assert os.listdir(tmp_path) == [] and _processes_mentioning(str(tmp_path)) == []
    rows = _rows(doc)
    assert set(rows) == {"host", "QEMU VM, emulation (TCG)"} or set(rows) == {"host", "QEMU VM (KVM)"}, rows
    vm = [row for name, row in rows.items() if name != "host"][0]
    assert "failed" not in vm["notes"] and "not measured" not in vm["notes"], vm["notes"]
    _assert_measured(vm)
    # A VM carries a whole kernel: megabytes of memory per instance and an image of megabytes.
    assert vm["memory_kib_per_instance"] > 10 << 10 and vm["image_mb"] > 1, vm
    assert vm["density"]["measured_with"] == 2 and vm["density"]["instances"] >= 1, vm
    if "TCG" in vm["technology"]:
        assert "no KVM: " in vm["notes"]


def test_plain_table_shows_claims_and_plot(tmp_path):
    png = tmp_path / "bench.png"
    proc = _bench("--only", "bubblewrap", "--plot", str(png))
    assert "\x1b" not in proc.stdout
    assert "container: startup under 1 s" in proc.stdout and "bubblewrap |" in proc.stdout
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_bad_budget_is_one_line():
    proc = run_cli("bench", "--budget", "0")
    assert proc.returncode == 125 and proc.stderr.count("\n") == 1
