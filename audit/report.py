"""Report rendering: the JSON document (schema pysandbox.audit/1), SARIF 2.1.0, plain text
and, on a TTY only, a rich report. `rich` is imported only inside render_rich."""
from __future__ import annotations

import json

from .checks import SEVERITIES, SEVERITY_RANK

SCHEMA = "pysandbox.audit/1"


def build(snapshot, findings, escape_paths, mode="passive"):
    t = snapshot.target
    os_release = snapshot.os_release
    failing = [f for f in findings if f.failed]
    counts = {s: 0 for s in SEVERITIES}
    for f in failing:
        counts[f.severity] += 1
    return {
        "schema": SCHEMA,
        "mode": mode,
        "target": {
            "pid": t.pid,
            "runtime": t.runtime,
            "container_id": t.container_id,
            "name": t.name,
            "os": (os_release.get("PRETTY_NAME") or os_release.get("NAME") or None) if os_release else None,
            "os_release": {k: os_release[k] for k in ("ID", "VERSION_ID", "NAME") if k in os_release},
            "runtime_version": dict(t.runtime_version),
            "namespaces": {k: v for k, v in snapshot.namespaces.items() if v is not None},
            "notes": list(t.notes),
        },
        "host": {"kernel": snapshot.host.kernel, "cap_last_cap": snapshot.host.cap_last_cap,
                 "capabilities": "%016x" % snapshot.host.caps},
        "findings": [{
            "id": f.id,
            "status": f.status,
            "severity": f.severity,
            "title": f.check.title,
            "evidence": list(f.evidence),
            "note": f.note,
            "remediation": f.check.remediation,
            "references": f.check.references,
        } for f in findings],
        "escape_paths": [{
            "id": p.id, "name": p.name, "technique": p.technique, "severity": p.severity,
            "because": list(p.because), "cve": list(p.cve),
        } for p in escape_paths],
        "summary": {
            "verdict": verdict(escape_paths, failing),
            "failed": len(failing),
            "passed": sum(f.status == "pass" for f in findings),
            "skipped": sum(f.status == "skip" for f in findings),
            "errors": sum(f.status == "error" for f in findings),
            "by_severity": counts,
            "escape_paths": len(escape_paths),
            "collection_errors": ["%s: %s" % e for e in snapshot.errors],
        },
    }


def verdict(escape_paths, failing):
    if escape_paths:
        return "%d escape path%s: %s" % (len(escape_paths), "" if len(escape_paths) == 1 else "s",
                                         ", ".join("%s (%s)" % (p.name, p.severity) for p in escape_paths))
    if failing:
        worst = max(failing, key=lambda f: SEVERITY_RANK[f.severity]).severity
        return "no escape path found; %d gap%s, worst %s" % (len(failing), "" if len(failing) == 1 else "s", worst)
    return "no escape path found; no gaps"


def worst_failing_rank(report):
    ranks = [SEVERITY_RANK[f["severity"]] for f in report["findings"] if f["status"] == "fail"]
    return max(ranks) if ranks else -1


# ------------------------------------------------------------------ text

def _title(report):
    t = report["target"]
    label = t["name"] or (t["container_id"] or "")[:12] or "pid %d" % t["pid"]
    extra = ", ".join(x for x in (t["runtime"], "pid %d" % t["pid"], t["os"]) if x)
    return "%s (%s)" % (label, extra)


def render_text(reports, verbose=False):
    lines = []
    for report in reports:
        lines.append("audit: %s" % _title(report))
        lines.append("verdict: %s" % report["summary"]["verdict"])
        for p in report["escape_paths"]:
            lines.append("  ESCAPE [%s] %s: %s%s" % (p["severity"], p["name"], p["technique"],
                                                    " (%s)" % ", ".join(p["cve"]) if p["cve"] else ""))
        for severity in SEVERITIES:
            group = [f for f in report["findings"] if f["status"] == "fail" and f["severity"] == severity]
            if not group:
                continue
            lines.append("%s:" % severity.upper())
            for f in group:
                lines.append("  FAIL %-24s %s" % (f["id"], f["title"]))
                for e in f["evidence"][:4]:
                    lines.append("       %s" % e)
                if f["note"]:
                    lines.append("       note: %s" % f["note"])
        other = [f for f in report["findings"] if f["status"] != "fail"]
        if verbose:
            for f in other:
                lines.append("  %-4s %-24s %s%s" % (f["status"].upper(), f["id"], f["title"],
                                                   " (%s)" % f["note"] if f["note"] and f["status"] != "pass" else ""))
        s = report["summary"]
        lines.append("%d failed, %d passed, %d skipped, %d errors" % (s["failed"], s["passed"], s["skipped"], s["errors"]))
        lines.append("")
    return "\n".join(lines)


_STYLE = {"critical": "bold white on red", "high": "bold red", "medium": "yellow", "low": "cyan", "info": "dim"}


def render_rich(reports, stream, verbose=False):
    from rich.console import Console
    from rich.table import Table

    console = Console(file=stream)
    for report in reports:
        console.rule("audit: %s" % _title(report))
        paths = report["escape_paths"]
        style = "bold red" if paths else ("yellow" if report["summary"]["failed"] else "green")
        console.print(report["summary"]["verdict"], style=style)
        for p in paths:
            console.print("  [%s]%s[/] %s: %s" % (_STYLE[p["severity"]], p["severity"], p["name"], p["technique"]))
        for severity in SEVERITIES:
            group = [f for f in report["findings"] if f["status"] == "fail" and f["severity"] == severity]
            if not group:
                continue
            table = Table(title=severity.upper(), title_style=_STYLE[severity], show_header=False, expand=True)
            table.add_column("id", style="bold", no_wrap=True)
            table.add_column("finding")
            for f in group:
                body = f["title"] + "".join("\n  " + e for e in f["evidence"][:4])
                if f["note"]:
                    body += "\n  note: " + f["note"]
                table.add_row(f["id"], body)
            console.print(table)
        if verbose:
            for f in report["findings"]:
                if f["status"] != "fail":
                    console.print("  %s %s %s" % (f["status"], f["id"], f["title"]), style="dim")
        s = report["summary"]
        console.print("%d failed, %d passed, %d skipped, %d errors" % (s["failed"], s["passed"], s["skipped"], s["errors"]))


# ------------------------------------------------------------------ SARIF

_SARIF_LEVEL = {"critical": "error", "high": "error", "medium": "warning", "low": "note", "info": "note"}
_SECURITY_SEVERITY = {"critical": "9.5", "high": "8.0", "medium": "5.5", "low": "3.0", "info": "0.0"}


def render_sarif(reports, checks):
    rules = [{
        "id": c.id,
        "name": c.id.replace("-", "_"),
        "shortDescription": {"text": c.title},
        "fullDescription": {"text": c.description},
        "help": {"text": "%s\nDocker: %s\nKubernetes: %s\npysandbox: %s" % (
            c.remediation, c.fix["docker"], c.fix["kubernetes"], c.fix["pysandbox"])},
        "defaultConfiguration": {"level": _SARIF_LEVEL[c.severity]},
        "properties": {"security-severity": _SECURITY_SEVERITY[c.severity],
                       "tags": ["security", "container"] + c.references["mitre"] + c.references["cve"],
                       "cis_docker": c.references["cis_docker"], "k8s_pss": c.references["k8s_pss"]},
    } for c in checks]
    index = {c.id: i for i, c in enumerate(checks)}
    results = []
    for report in reports:
        t = report["target"]
        uri = "container://%s/%s" % (t["runtime"], t["container_id"] or t["name"] or t["pid"])
        for f in report["findings"]:
            if f["status"] != "fail":
                continue
            results.append({
                "ruleId": f["id"], "ruleIndex": index[f["id"]],
                "level": _SARIF_LEVEL[f["severity"]],
                "message": {"text": "%s: %s" % (f["title"], "; ".join(f["evidence"][:3]))},
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": uri}}}],
                "properties": {"severity": f["severity"], "pid": t["pid"]},
            })
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{"tool": {"driver": {"name": "pysandbox-audit",
                                      "version": "1", "rules": rules}},
                  "results": results}],
    }


def dumps(obj, pretty=False):
    # Indented output goes through json's pure-Python encoder (~10 ms for a report); piped
    # output, which machines read, uses the C encoder.
    return json.dumps(obj, indent=2) if pretty else json.dumps(obj)
