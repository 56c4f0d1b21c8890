"""The fleet view: `audit --all` gives one row per container with name, runtime, image,
worst severity and escape paths, then a summary by runtime; JSON is the envelope
pysandbox.audit-fleet/1. Built reports for the arithmetic, real targets for the CLI."""
import json
import os
import subprocess
import sys

from audit import report
from livetargets import REPO
from test_report_render import FINDINGS, PATHS, _finding, schema_validators, snap  # noqa: F401  (snap is a fixture)
from test_report_sarif import _plain_target


def _variant(r, runtime, name, image, paths=True, unknown=True):
    out = json.loads(json.dumps(r))
    out["target"].update(runtime=runtime, name=name, image=image, identity="%s/%s" % (runtime, name))
    if not paths:
        out["escape_paths"] = []
    if not unknown:
        out["findings"] = [f for f in out["findings"] if f["status"] != "unknown"]
    out["summary"] = report.summarize(out)
    return out


def test_fleet_summary_counts_by_runtime_and_worst_severity(snap):
    base = report.build(snap, [_finding(c, s, e, n) for c, s, e, n in FINDINGS], PATHS)
    clean = report.build(snap, [_finding("ns-pid-host", "pass")], [])
    reports = [_variant(base, "docker", "web", "nginx:1.25"),
               _variant(base, "docker", "db", None, paths=False, unknown=False),
               _variant(clean, "containerd", "k8s.io/job", "busybox")]
    doc = report.fleet(reports)
    schema_validators()[1].validate(doc)
    s = doc["summary"]
    assert s["targets"] == 3 and s["with_escape_paths"] == 1 and s["escape_paths"] == 1 and s["unknown"] == 2
    assert s["worst"] == {"critical": 2, "high": 0, "medium": 0, "low": 0, "info": 0, "none": 1}
    assert s["by_runtime"]["docker"]["targets"] == 2 and s["by_runtime"]["docker"]["worst"]["critical"] == 2
    assert s["by_runtime"]["containerd"]["worst"]["none"] == 1
    text = report.render_fleet_text(reports)
    rows = text.splitlines()
    assert rows[0].split() == ["NAME", "RUNTIME", "PID", "IMAGE", "WORST", "FAILED", "UNKNOWN", "ESCAPE", "PATHS"]
    assert rows[1].split()[:2] == ["web", "docker"] and "nginx:1.25" in rows[1] and "runtime socket" in rows[1]
    assert rows[2].split()[:2] == ["db", "docker"] and rows[2].rstrip().endswith("-")
    assert rows[3].split()[:2] == ["k8s.io/job", "containerd"] and " none " in rows[3]
    summary = text.split("summary (targets by worst severity):\n")[1].splitlines()
    assert summary[0].split()[:3] == ["RUNTIME", "TARGETS", "ESCAPE"]
    assert summary[1].split() == ["containerd", "1", "0", "0", "0", "0", "0", "0", "1", "0"]
    assert summary[2].split() == ["docker", "2", "1", "2", "0", "0", "0", "0", "0", "2"]
    assert summary[3].split() == ["total", "3", "1", "2", "0", "0", "0", "0", "1", "2"]


def test_fleet_rich_has_the_same_rows(snap):
    import io
    import re
    from rich.console import Console
    base = report.build(snap, [_finding(c, s, e, n) for c, s, e, n in FINDINGS], PATHS)
    reports = [_variant(base, "docker", "web", "nginx:1.25"), _variant(base, "podman", "api", None, paths=False)]
    out = io.StringIO()
    report.render_fleet_rich(reports, out, console=Console(file=out, force_terminal=True, width=300,
                                                          markup=False, emoji=False, highlight=False))
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue())
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in plain.splitlines() if line.count("│") >= 8]
    text_rows = [r for r in report._fleet_rows(reports)]
    assert [c for c in cells if c and c[0] in ("web", "api")] == text_rows


def _audit(*args):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "audit", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=300)


def test_all_lists_real_targets_in_the_envelope_and_the_table():
    with _plain_target() as first, _plain_target() as second:
        proc = _audit("--all", "--format", "json")
        text = _audit("--all")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr + text.stderr
    doc = json.loads(proc.stdout)
    schema_validators()[1].validate(doc)
    assert doc["schema"] == "pysandbox.audit-fleet/1"
    pids = [t["target"]["pid"] for t in doc["targets"]]
    assert len(pids) == len(set(pids)) and doc["summary"]["targets"] == len(pids)
    assert first in pids and second in pids
    mine = [t for t in doc["targets"] if t["target"]["pid"] in (first, second)]
    assert all(t["schema"] == "pysandbox.audit/1" and t["summary"]["failed"] > 0 for t in mine)
    rows = {line.split()[2]: line for line in text.stdout.splitlines()[1:] if len(line.split()) > 2}
    for pid in (first, second):
        assert str(pid) in rows, text.stdout
    assert text.stdout.splitlines()[0].startswith("NAME")
    assert "summary (targets by worst severity):" in text.stdout
    # the machine's other containers come and go between the two runs: the table is checked
    # against itself
    table = text.stdout.split("\n\n")[0].splitlines()[1:]
    total = next(line for line in text.stdout.splitlines() if line.startswith("total"))
    assert total.split()[1] == str(len(table))


def test_fleet_rows_escape_target_text(snap):
    base = report.build(snap, [_finding("ns-pid-host", "fail")], [])
    hostile = _variant(base, "docker", "web\x1b]0;t\x07\u202e", "img\x1b[2J")
    for out in (report.render_fleet_text([hostile]), report.render_text([hostile])):
        assert "\x1b" not in out and "\u202e" not in out and "\x07" not in out
        assert "web\\x1b]0;t\\x07\\u202e" in out
    assert "img\\x1b[2J" in report.render_fleet_text([hostile])
