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
