"""The audit's reports: the JSON document (schema pysandbox.audit/1, and pysandbox.audit-fleet/1
for several targets), SARIF 2.1.0, plain text and, on a TTY only, a rich report.

Everything read from a target (its os-release, mountpoints, fd link targets, names, labels,
image, evidence, notes) is untrusted: a hostile container chooses those bytes. JSON and SARIF
escape them by construction; the text and rich views go through `_display()`, which passes
every string of a report through `printable()` before any renderer sees it, so no check
author has to remember. rich is imported only inside the rich renderers, and markup, emoji
codes and highlighting are off there: target text is never parsed as markup.
"""
from __future__ import annotations

from .checks import SEVERITIES, SEVERITY_RANK

SCHEMA = "pysandbox.audit/1"
FLEET_SCHEMA = "pysandbox.audit-fleet/1"
# The order a reader meets statuses in: what is wrong, what could not be seen, what broke,
# what was not applicable, what is fine.
STATUS_ORDER = ("fail", "unknown", "error", "skip", "pass")
DOCS_URI = "https://github.com/pysandbox/pysandbox/blob/main/docs/audit.md"   # docs/audit.md as published
ESCAPE_RULE_PREFIX = "escape/"


def package_version():
    """pysandbox's version: the shared constant, else the installed distribution's metadata."""
    try:
        from pysandbox_common import VERSION
        return VERSION
    except ImportError:
        pass
    try:
        from importlib.metadata import PackageNotFoundError, version
        try:
            return version("pysandbox")
        except PackageNotFoundError:
            return "0+unknown"
    except ImportError:
        return "0+unknown"


def help_uri(rule_id):
    """The docs anchor of a check (`#<id>`) or an escape path (`#escape-<id>`)."""
    if rule_id.startswith(ESCAPE_RULE_PREFIX):
        return "%s#escape-%s" % (DOCS_URI, rule_id[len(ESCAPE_RULE_PREFIX):])
    return "%s#%s" % (DOCS_URI, rule_id)


# ------------------------------------------------------------------ terminal safety

_SURROGATE_LOW, _SURROGATE_HIGH = 0xDC80, 0xDCFF


def printable(text):
    """`text` with every non-printable character shown as a Python-style escape.

    Control characters (ESC, BEL, CR, ...), C1 controls, bidi overrides and other format
    characters (U+202E, U+200B), separators other than the space, and bytes that were not
    UTF-8 (decoded with surrogateescape: shown as the byte, `\\xff`) are never emitted raw.
    """
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
            continue
        code = ord(ch)
        if _SURROGATE_LOW <= code <= _SURROGATE_HIGH:
            out.append("\\x%02x" % (code - 0xDC00))
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif code < 0x100:
            out.append("\\x%02x" % code)
        elif code < 0x10000:
            out.append("\\u%04x" % code)
        else:
            out.append("\\U%08x" % code)
    return "".join(out)


def _display(obj):
    """A copy of a report (or any JSON value) with every string made printable."""
    if isinstance(obj, str):
        return printable(obj)
    if isinstance(obj, dict):
        return {printable(k) if isinstance(k, str) else k: _display(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_display(v) for v in obj]
    return obj


# ------------------------------------------------------------------ building the document

def target_identity(target):
    """A stable name for a target across runs (SARIF locations and fingerprints): the
    resolver's `identity` when it has one, else runtime/name-or-id, else process/<exe>."""
    identity = getattr(target, "identity", None)
    if identity:
        return identity
    runtime = target.runtime
    label = target.name or (target.container_id or "")[:12]
    if label and runtime not in ("process", "self", "host"):
        return "%s/%s" % (runtime, label)
    try:
        import os
        exe = os.readlink("/proc/%d/exe" % target.pid)
    except OSError:
        exe = None
    if exe:
        return "process/%s" % exe.lstrip("/")
    return "process/pid-%d" % target.pid   # nothing else exists to name it by


def _image(target):
    image = getattr(target, "image", None)
    if image:
        return image
    inspect = getattr(target, "inspect", None)
    if inspect:
        return inspect.get("image") or None
    return None


def build(snapshot, findings, escape_paths, mode="passive"):
    t = snapshot.target
    os_release = snapshot.os_release
    report = {
        "schema": SCHEMA,
        "mode": mode,
        "target": {
            "pid": t.pid,
            "runtime": t.runtime,
            "container_id": t.container_id,
            "name": t.name,
            "identity": target_identity(t),
            "image": _image(t),
            "labels": dict(getattr(t, "labels", None) or {}),
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
            "pass_title": pass_title(f.check),
            "evidence": list(f.evidence),
            "note": f.note,
            "remediation": f.check.remediation,
            "fix": dict(f.check.fix),
            "references": f.check.references,
            "help_uri": help_uri(f.id),
            "suppressed": None,
        } for f in findings],
        "escape_paths": [{
            "id": p.id, "name": p.name, "technique": p.technique, "severity": p.severity,
            "because": list(p.because), "cve": list(p.cve),
            # present: every precondition holds; possible: none is known false, some could not be read
            "status": getattr(p, "status", "present"), "unknown": list(getattr(p, "unknown", ()) or ()),
            "help_uri": help_uri(ESCAPE_RULE_PREFIX + p.id), "suppressed": None,
        } for p in escape_paths],
        "collection_errors": ["%s: %s" % e for e in snapshot.errors],
    }
    report["summary"] = summarize(report)
    return report


def _active(items):
    return [x for x in items if not x.get("suppressed")]


def summarize(report):
    """The summary of a report from its findings and escape paths; suppressed ones are counted
    apart and take no part in the verdict or the counts."""
    findings = _active(report["findings"])
    paths = _active(report["escape_paths"])
    failing = [f for f in findings if f["status"] == "fail"]
    counts = {s: 0 for s in SEVERITIES}
    for f in failing:
        counts[f["severity"]] += 1
    unknown = sum(f["status"] == "unknown" for f in findings)
    return {
        "verdict": verdict(paths, failing, unknown),
        "failed": len(failing),
        "passed": sum(f["status"] == "pass" for f in findings),
        "unknown": unknown,
        "skipped": sum(f["status"] == "skip" for f in findings),
        "errors": sum(f["status"] == "error" for f in findings),
        "suppressed": sum(bool(x.get("suppressed")) for x in report["findings"] + report["escape_paths"]),
        "by_severity": counts,
        "worst": worst_severity(report),
        "escape_paths": len(paths),
        "collection_errors": list(report.get("collection_errors", ())),
    }


def _plural(n, word):
    return "%d %s%s" % (n, word, "" if n == 1 else "s")


def verdict(paths, failing, unknown=0):
    present = [p for p in paths if p.get("status", "present") == "present"]
    possible = [p for p in paths if p.get("status", "present") != "present"]
    if present:
        text = "%s: %s" % (_plural(len(present), "escape path"),
                           ", ".join("%s (%s)" % (p["name"], p["severity"]) for p in present))
        if possible:
            text += "; %d more possible: %s" % (len(possible), ", ".join(p["name"] for p in possible))
    elif possible:
        text = "no escape path proven; %s (preconditions unknown): %s" % (
            _plural(len(possible), "possible escape path"), ", ".join("%s (%s)" % (p["name"], p["severity"]) for p in possible))
    elif failing:
        worst = max(failing, key=lambda f: SEVERITY_RANK[f["severity"]])["severity"]
        text = "no escape path found; %s, worst %s" % (_plural(len(failing), "gap"), worst)
    else:
        text = "no escape path found; no gaps"
    if unknown:
        text += "; %s could not be judged" % _plural(unknown, "check")
    return text


def worst_severity(report):
    """The worst severity among active failing findings and present escape paths, or None.
    A possible path (a precondition could not be read) is reported, but like an unknown
    finding it does not decide --fail-on: it says what the audit could not see."""
    ranks = [SEVERITY_RANK[x["severity"]] for x in _active(report["findings"]) if x["status"] == "fail"]
    ranks += [SEVERITY_RANK[p["severity"]] for p in _active(report["escape_paths"])
              if p.get("status", "present") == "present"]
    if not ranks:
        return None
    return {rank: name for name, rank in SEVERITY_RANK.items()}[max(ranks)]


def worst_failing_rank(report):
    worst = worst_severity(report)
    return SEVERITY_RANK[worst] if worst else -1


def fleet(reports):
    """Several targets: the envelope `pysandbox.audit-fleet/1` with a summary by runtime."""
    return {"schema": FLEET_SCHEMA, "targets": reports, "summary": fleet_summary(reports)}


def fleet_summary(reports):
    levels = list(SEVERITIES) + ["none"]
    by_runtime = {}
    total = {"targets": 0, "with_escape_paths": 0, "unknown": 0, "worst": {s: 0 for s in levels}}
    for r in reports:
        row = by_runtime.setdefault(r["target"]["runtime"], {
            "targets": 0, "with_escape_paths": 0, "unknown": 0, "worst": {s: 0 for s in levels}})
        worst = r["summary"]["worst"] or "none"
        for acc in (row, total):
            acc["targets"] += 1
            acc["with_escape_paths"] += bool(r["summary"]["escape_paths"])
            acc["unknown"] += r["summary"]["unknown"]
            acc["worst"][worst] += 1
    return dict(total, by_runtime=dict(sorted(by_runtime.items())),
                escape_paths=sum(r["summary"]["escape_paths"] for r in reports))


# ------------------------------------------------------------------ policy: selection and suppression

class Policy:
    """What the user asked to see: --checks, --skip (check ids or escape/<id>), ignore-file
    entries (suppress, with a reason, until an expiry date) and --severity (display only).

    Deselected findings leave the report; suppressed ones stay in JSON and SARIF, marked, and
    take no part in the verdict, the counts or --fail-on. Escape paths are always computed
    from every check: skipping a check a path rests on does not hide the path."""

    def __init__(self, checks=None, skip=(), ignore=(), min_severity=None):
        self.checks = set(checks) if checks else None
        self.skip = set(skip)
        self.ignore = list(ignore)
        self.min_severity = min_severity

    def selected(self, rule_id, because=()):
        if rule_id in self.skip:
            return False
        if self.checks is None:
            return True
        return rule_id in self.checks or any(b in self.checks for b in because)

    def apply(self, report):
        t = report["target"]
        findings = []
        for f in report["findings"]:
            if not self.selected(f["id"]):
                continue
            f = dict(f)
            f["suppressed"] = self._suppression(f["id"], t)
            findings.append(f)
        paths = []
        for p in report["escape_paths"]:
            rule = ESCAPE_RULE_PREFIX + p["id"]
            if not self.selected(rule, p["because"]):
                continue
            p = dict(p)
            p["suppressed"] = self._suppression(rule, t)
            paths.append(p)
        out = dict(report, findings=findings, escape_paths=paths)
        out["summary"] = summarize(out)
        return out

    def _suppression(self, rule_id, target):
        for entry in self.ignore:
            if entry.matches(rule_id, target):
                return {"reason": entry.reason, "expires": entry.expires, "source": entry.source}
        return None

    def shown(self, item):
        """--severity: is this finding or path at or above the level asked for?"""
        return self.min_severity is None or SEVERITY_RANK[item["severity"]] >= SEVERITY_RANK[self.min_severity]


# ------------------------------------------------------------------ the ignore file

class IgnoreFileError(ValueError):
    """A malformed ignore file: the CLI prints it as one line and exits 2."""


class IgnoreEntry:
    __slots__ = ("rule", "target", "reason", "expires", "source")

    def __init__(self, rule, target, reason, expires, source):
        self.rule, self.target, self.reason, self.expires, self.source = rule, target, reason, expires, source

    def matches(self, rule_id, target):
        if self.rule != rule_id:
            return False
        if self.target is None:
            return True
        from fnmatch import fnmatchcase
        names = [target.get("identity"), target.get("name"), target.get("container_id"),
                 (target.get("container_id") or "")[:12], target.get("image")]
        return any(n and fnmatchcase(n, self.target) for n in names)


_RULE_ID = r"^(escape/)?[a-z0-9][a-z0-9-]*$"


def parse_ignore_file(text, source, known_rules=None, today=None):
    """Entries of an ignore file, and warnings for expired ones (which no longer suppress).

    One entry a line: `ID [target=PATTERN] reason="WHY" [expires=YYYY-MM-DD]`, shell-quoted;
    `#` starts a comment. ID is a check id or `escape/<path id>`; PATTERN is an fnmatch
    pattern against the target's identity, name, container id (full or 12-character) or image.
    """
    import datetime
    import re
    import shlex
    today = today or datetime.date.today()
    entries, warnings = [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        where = "%s:%d" % (source, lineno)
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            raise IgnoreFileError("%s: %s" % (where, exc))
        if not words:
            continue
        rule, fields = words[0], {}
        if not re.match(_RULE_ID, rule):
            raise IgnoreFileError("%s: %r is not a check id or escape/<id>" % (where, rule))
        if known_rules is not None and rule not in known_rules:
            raise IgnoreFileError("%s: unknown check id %r (see `audit explain`)" % (where, rule))
        for word in words[1:]:
            key, sep, value = word.partition("=")
            if not sep or key not in ("target", "reason", "expires"):
                raise IgnoreFileError("%s: expected target=, reason= or expires=, got %r" % (where, word))
            if key in fields:
                raise IgnoreFileError("%s: %s= given twice" % (where, key))
            fields[key] = value
        if not fields.get("reason", "").strip():
            raise IgnoreFileError("%s: every entry needs reason=\"why it is accepted\"" % where)
        expires = fields.get("expires")
        if expires is not None:
            try:
                expiry = datetime.date.fromisoformat(expires)
            except ValueError:
                raise IgnoreFileError("%s: expires=%r is not a date (YYYY-MM-DD)" % (where, expires))
            if expiry < today:
                warnings.append("%s: the entry for %s expired on %s: it no longer suppresses" % (where, rule, expires))
                continue
        entries.append(IgnoreEntry(rule, fields.get("target"), fields["reason"], expires, where))
    return entries, warnings


# ------------------------------------------------------------------ what a reader sees (text and rich)

_PASS_TITLES = {
    "ns-pid-host": "Own PID namespace", "ns-net-host": "Own network namespace",
    "ns-ipc-host": "Own IPC namespace", "ns-uts-host": "Own UTS namespace",
    "ns-mnt-host": "Own mount namespace", "ns-cgroup-host": "Own cgroup namespace",
    "ns-user-host": "Own user namespace", "uid0-host": "Not the host's uid 0",
    "privileged": "Not privileged", "caps-ambient": "No ambient capabilities",
    "caps-nondefault": "No capabilities beyond Docker's default set",
    "nnp-off": "no_new_privs is set", "seccomp-off": "A seccomp filter is installed",
    "lsm-off": "Confined by an LSM (AppArmor/SELinux)", "userns-create": "Cannot create user namespaces",
    "keyring": "Kernel keyring not reachable", "leaked-fd": "No file descriptor open on a host file or directory",
    "runtime-version": "No known breakout CVE in the runtime's version",
    "core-pattern-writable": "core_pattern not writable", "modprobe-writable": "modprobe path not writable",
    "uevent-helper-writable": "uevent_helper not writable", "sysrq-writable": "/proc/sysrq-trigger not writable",
    "binfmt-misc-writable": "binfmt_misc register not writable",
    "proc-masks-missing": "procfs/sysfs paths that runtimes mask are masked",
    "proc-sys-rw": "/proc/sys is read-only", "sysfs-rw": "sysfs read-only or absent",
    "host-procfs": "No host procfs mounted inside", "kernel-leaks": "Kernel addresses and logs not readable",
    "release-agent": "No cgroup v1 release_agent reachable", "cgroupfs-rw": "cgroupfs read-only or absent",
    "block-devices": "No block device nodes reachable", "mem-devices": "No physical memory devices reachable",
    "runtime-socket": "No container runtime socket reachable", "sensitive-mount": "No sensitive host path mounted",
    "mount-propagation-shared": "No mount shared with the host's propagation group",
    "rootfs-rw": "Root filesystem read-only", "limits-memory-missing": "Memory limit set",
    "limits-pids-missing": "PID limit set", "limits-cpu-missing": "CPU limit set",
    "device-cgroup-open": "Device cgroup restricts devices",
}


_CAPABILITY_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ_")


def _held_capability(title):
    """"CAP_SYS_ADMIN" of a title "Holds CAP_SYS_ADMIN ...", else None (the regex
    `Holds (CAP_[A-Z_]+)` matched at the start, without importing re)."""
    prefix = "Holds CAP_"
    if not title.startswith(prefix):
        return None
    end = len(prefix)
    while end < len(title) and title[end] in _CAPABILITY_NAME_CHARS:
        end += 1
    return title[len("Holds "):end] if end > len(prefix) else None


def pass_title(check):
    """A check's title phrased as a pass ("Own PID namespace" for "Shares the host's PID namespace")."""
    if check.id in _PASS_TITLES:
        return _PASS_TITLES[check.id]
    capability = _held_capability(check.title)
    if capability:
        return "Does not hold %s" % capability
    return "Not found: %s" % check.title


class _Item:
    """One line of the readable report with the facts under it."""
    __slots__ = ("status", "id", "title", "severity", "details")

    def __init__(self, status, id, title, severity, details):
        self.status, self.id, self.title, self.severity, self.details = status, id, title, severity, details


def _finding_item(f, verbose):
    details = []
    limit = None if verbose else 4
    evidence = f["evidence"][:limit] if limit else f["evidence"]
    details += evidence
    if limit and len(f["evidence"]) > limit:
        details.append("... %d more (-v)" % (len(f["evidence"]) - limit))
    if f["status"] == "unknown":
        details.append("could not judge: %s" % (f["note"] or "the evidence could not be read"))
    elif f["status"] in ("skip", "error"):
        if f["note"]:
            details.append("reason: %s" % f["note"])
    elif f["note"]:
        details.append("note: %s" % f["note"])
    if f["status"] == "fail":
        cves = f["references"].get("cve") or []
        if cves:
            details.append("CVE: %s" % ", ".join(cves))
        details.append("fix: %s" % f["remediation"])
        details.append("more: audit explain %s" % f["id"])
    if f.get("suppressed"):
        s = f["suppressed"]
        details.append("suppressed by %s: %s%s" % (s["source"], s["reason"],
                                                   " (until %s)" % s["expires"] if s.get("expires") else ""))
    title = f.get("pass_title") or f["title"] if f["status"] == "pass" else f["title"]
    return _Item(f["status"], f["id"], title, f["severity"], details)


def _path_item(p):
    details = [p["technique"], "because: %s" % ", ".join(p["because"])]
    if p.get("status", "present") != "present":
        details.append("possible: could not judge %s" % "; ".join(p.get("unknown") or ("a precondition",)))
    if p["cve"]:
        details.append("CVE: %s" % ", ".join(p["cve"]))
    if p.get("suppressed"):
        s = p["suppressed"]
        details.append("suppressed by %s: %s" % (s["source"], s["reason"]))
    return _Item("escape", ESCAPE_RULE_PREFIX + p["id"], p["name"], p["severity"], details)


def _heading_title(report):
    t = report["target"]
    label = t["name"] or (t["container_id"] or "")[:12] or "pid %d" % t["pid"]
    extra = ", ".join(x for x in (t["runtime"], "pid %d" % t["pid"], t["os"]) if x)
    return "%s (%s)" % (label, extra)


def view(report, verbose=False, policy=None):
    """The readable report as data, made printable: title, header lines, verdict, sections of
    items and the closing count. Text and rich render exactly this, so they carry the same facts."""
    r = _display(report)
    policy = policy or Policy()
    t = r["target"]
    header = []
    if t.get("identity"):
        header.append("identity: %s" % t["identity"])
    if t.get("image"):
        header.append("image: %s" % t["image"])
    for key, value in sorted((t.get("labels") or {}).items()):
        if key.startswith("io.kubernetes."):
            header.append("label: %s=%s" % (key, value))
    for note in t.get("notes") or ():
        header.append("note: %s" % note)
    sections = []
    paths = [p for p in r["escape_paths"] if not p.get("suppressed")]
    if paths:
        sections.append(("ESCAPE PATHS", "escape", [_path_item(p) for p in paths]))
    active = [f for f in r["findings"] if not f.get("suppressed")]
    hidden = 0
    for severity in SEVERITIES:
        group = [f for f in active if f["status"] == "fail" and f["severity"] == severity]
        if not policy.shown({"severity": severity}):
            hidden += len(group)
            continue
        if group:
            sections.append((severity.upper(), severity, [_finding_item(f, verbose) for f in group]))
    errors = [f for f in active if f["status"] not in ("fail", "pass", "unknown", "skip")]
    if errors:   # a broken check (or a status this build does not know) is always shown: it may hide a gap
        sections.append(("CHECK ERRORS", "error", [_finding_item(f, verbose) for f in errors]))
    if verbose:
        for status, heading in (("unknown", "COULD NOT BE JUDGED"), ("skip", "SKIPPED"), ("pass", "PASSED")):
            group = [f for f in active if f["status"] == status and policy.shown(f)]
            if group:
                sections.append((heading, status, [_finding_item(f, verbose) for f in group]))
        suppressed = [_path_item(p) for p in r["escape_paths"] if p.get("suppressed")]
        suppressed += [_finding_item(f, verbose) for f in r["findings"] if f.get("suppressed")]
        if suppressed:
            sections.append(("SUPPRESSED", "suppressed", suppressed))
    s = r["summary"]
    counts = "%d failed, %d passed, %d could not be judged, %d skipped, %d errors" % (
        s["failed"], s["passed"], s["unknown"], s["skipped"], s["errors"])
    if s.get("suppressed"):
        counts += ", %d suppressed" % s["suppressed"]
    footer = [counts]
    if hidden:
        footer.append("%s below --severity %s not shown" % (_plural(hidden, "failing check"), policy.min_severity))
    if s["unknown"] and not verbose:
        footer.append("%s could not be judged: -v lists them with what would let the audit see"
                      % _plural(s["unknown"], "check"))
    if s.get("collection_errors"):
        footer.append("could not read: %s" % "; ".join(s["collection_errors"][:5]))
    return {"title": "audit: %s" % _heading_title(r), "header": header, "verdict": s["verdict"],
            "escape": bool(paths), "failed": s["failed"], "sections": sections, "footer": footer}


_TEXT_LABEL = {"fail": "FAIL", "pass": "PASS", "unknown": "UNKNOWN", "skip": "SKIP", "error": "ERROR",
               "escape": "ESCAPE"}


def render_text(reports, verbose=False, policy=None):
    lines = []
    for report in reports:
        v = view(report, verbose, policy)
        lines.append(v["title"])
        lines += ["  " + h for h in v["header"]]
        lines.append("verdict: %s" % v["verdict"])
        for heading, _kind, items in v["sections"]:
            lines.append("%s:" % heading)
            for item in items:
                label = _TEXT_LABEL.get(item.status, item.status.upper())
                if item.status == "escape":
                    label += " [%s]" % item.severity
                lines.append("  %-7s %-26s %s" % (label, item.id, item.title))
                lines += ["          " + d for d in item.details]
        lines += v["footer"]
        lines.append("")
    return "\n".join(lines)


_STYLE = {"critical": "bold white on red", "high": "bold red", "medium": "yellow", "low": "cyan", "info": "dim",
          "escape": "bold red", "error": "magenta", "unknown": "bold magenta", "skip": "dim", "pass": "green",
          "suppressed": "dim", "fail": "bold"}


def _console(stream):
    from rich.console import Console
    # markup, emoji codes and highlighting off: target text must never be interpreted
    return Console(file=stream, markup=False, emoji=False, highlight=False)


def render_rich(reports, stream, verbose=False, policy=None, console=None):
    from rich.table import Table
    from rich.text import Text

    console = console or _console(stream)
    for report in reports:
        v = view(report, verbose, policy)
        console.rule(Text(v["title"]))
        for h in v["header"]:
            console.print(Text("  " + h, style="dim"))
        style = "bold red" if v["escape"] else ("yellow" if v["failed"] else "green")
        console.print(Text(v["verdict"], style=style))
        for heading, kind, items in v["sections"]:
            table = Table(title=Text(heading, style=_STYLE.get(kind, "")), show_header=False, expand=True)
            table.add_column("status", no_wrap=True)
            table.add_column("id", style="bold", no_wrap=True)
            table.add_column("finding")
            for item in items:
                label = _TEXT_LABEL.get(item.status, item.status.upper()) + (" [%s]" % item.severity if item.status == "escape" else "")
                body = Text(item.title)
                for d in item.details:
                    body.append("\n" + d, style="dim" if not d.startswith("fix:") else "")
                table.add_row(Text(label, style=_STYLE.get(item.status, "")), Text(item.id), body)
            console.print(table)
        for line in v["footer"]:
            console.print(Text(line))


# ------------------------------------------------------------------ fleet view

def _fleet_rows(reports):
    rows = []
    for r in reports:
        t, s = r["target"], r["summary"]
        label = t["name"] or (t["container_id"] or "")[:12] or t.get("identity") or "-"
        paths = ", ".join(p["name"] for p in _active(r["escape_paths"])) or "-"
        rows.append([printable(x) for x in (label, t["runtime"], str(t["pid"]), t.get("image") or "-",
                                            s["worst"] or "none", str(s["failed"]), str(s["unknown"]), paths)])
    return rows


FLEET_COLUMNS = ("NAME", "RUNTIME", "PID", "IMAGE", "WORST", "FAILED", "UNKNOWN", "ESCAPE PATHS")
SUMMARY_COLUMNS = ("RUNTIME", "TARGETS", "ESCAPE") + tuple(s.upper() for s in SEVERITIES) + ("NONE", "UNKNOWN")


def _summary_rows(summary):
    rows = []
    for runtime, row in list(summary["by_runtime"].items()) + [("total", summary)]:
        rows.append([printable(runtime), str(row["targets"]), str(row["with_escape_paths"])]
                    + [str(row["worst"][s]) for s in list(SEVERITIES) + ["none"]] + [str(row["unknown"])])
    return rows


def _columns(header, rows):
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    for r in rows:
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return out


def render_fleet_text(reports, verbose=False, policy=None):
    summary = fleet_summary(reports)
    if not reports:
        return "audit: no containers found\n"
    lines = _columns(FLEET_COLUMNS, _fleet_rows(reports))
    lines.append("")
    lines.append("summary (targets by worst severity):")
    lines += _columns(SUMMARY_COLUMNS, _summary_rows(summary))
    lines.append("")
    if verbose:
        lines.append(render_text(reports, verbose=verbose, policy=policy))
    return "\n".join(lines) + "\n"


def render_fleet_rich(reports, stream, verbose=False, policy=None, console=None):
    from rich.table import Table
    from rich.text import Text

    console = console or _console(stream)
    if not reports:
        console.print(Text("audit: no containers found"))
        return
    table = Table(title=Text("containers"), expand=True)
    for c in FLEET_COLUMNS:
        table.add_column(c)
    for row in _fleet_rows(reports):
        worst = row[4]
        table.add_row(*[Text(c, style=_STYLE.get(worst, "") if i == 4 else "") for i, c in enumerate(row)])
    console.print(table)
    summary = Table(title=Text("summary (targets by worst severity)"))
    for c in SUMMARY_COLUMNS:
        summary.add_column(c)
    for row in _summary_rows(fleet_summary(reports)):
        summary.add_row(*[Text(c) for c in row])
    console.print(summary)
    if verbose:
        render_rich(reports, stream, verbose=verbose, policy=policy, console=console)


# ------------------------------------------------------------------ JSON output (with --severity)

def for_output(report, policy=None):
    """The JSON document as written: --severity drops findings below the level (the summary
    still counts them)."""
    if policy is None or policy.min_severity is None:
        return report
    return dict(report, findings=[f for f in report["findings"] if policy.shown(f)],
                escape_paths=[p for p in report["escape_paths"] if policy.shown(p)])


# ------------------------------------------------------------------ SARIF

_SARIF_LEVEL = {"critical": "error", "high": "error", "medium": "warning", "low": "note", "info": "note"}
_SECURITY_SEVERITY = {"critical": "9.5", "high": "8.0", "medium": "5.5", "low": "3.0", "info": "0.0"}


def _location_uri(identity):
    from urllib.parse import quote
    return "container://" + quote(identity, safe="/-._~:@")


def fingerprint(rule_id, identity):
    """A result's identity across runs: its rule and its target's identity (never a PID)."""
    import hashlib
    return hashlib.sha256(("%s\0%s" % (rule_id, identity)).encode("utf-8", "surrogateescape")).hexdigest()[:32]


def _check_rule(c):
    return {
        "id": c.id,
        "name": c.id.replace("-", "_"),
        "shortDescription": {"text": c.title},
        "fullDescription": {"text": c.description},
        "helpUri": help_uri(c.id),
        "help": {"text": "%s\nDocker: %s\nKubernetes: %s\npysandbox: %s\nMore: audit explain %s" % (
            c.remediation, c.fix["docker"], c.fix["kubernetes"], c.fix["pysandbox"], c.id)},
        "defaultConfiguration": {"level": _SARIF_LEVEL[c.severity]},
        "properties": {"security-severity": _SECURITY_SEVERITY[c.severity],
                       "tags": ["security", "container"] + c.references["mitre"] + c.references["cve"],
                       "cis_docker": c.references["cis_docker"], "k8s_pss": c.references["k8s_pss"]},
    }


def _escape_rule(p):
    rule_id = ESCAPE_RULE_PREFIX + p["id"]
    return {
        "id": rule_id,
        "name": "escape_" + p["id"].replace("-", "_"),
        "shortDescription": {"text": "Escape path: %s" % p["name"]},
        "fullDescription": {"text": p["technique"]},
        "helpUri": help_uri(rule_id),
        "help": {"text": "Remove any one of the findings it rests on: %s" % ", ".join(p["because"])},
        "defaultConfiguration": {"level": "error"},
        "properties": {"security-severity": _SECURITY_SEVERITY[p["severity"]],
                       "tags": ["security", "container", "escape-path"] + list(p["cve"])},
    }


def render_sarif(reports, checks, policy=None):
    rules = [_check_rule(c) for c in checks]
    index = {r["id"]: i for i, r in enumerate(rules)}
    results = []
    policy = policy or Policy()

    def add(rule_id, level, text, identity, target, props, suppressed):
        result = {
            "ruleId": rule_id, "ruleIndex": index[rule_id], "level": level,
            "message": {"text": text},
            "locations": [{
                "physicalLocation": {"artifactLocation": {"uri": _location_uri(identity)}},
                "logicalLocations": [{"name": target["name"] or identity, "fullyQualifiedName": identity,
                                      "kind": "container"}],
            }],
            "partialFingerprints": {"pysandboxAuditRuleTarget/v1": fingerprint(rule_id, identity)},
            "properties": dict(props, runtime=target["runtime"], pid=target["pid"]),
        }
        if suppressed:
            result["suppressions"] = [{"kind": "external", "status": "accepted",
                                       "justification": suppressed["reason"],
                                       "location": {"physicalLocation": {"artifactLocation": {
                                           "uri": suppressed["source"].rsplit(":", 1)[0]}}}}]
        results.append(result)

    for report in reports:
        t = report["target"]
        identity = t.get("identity") or "%s/%s" % (t["runtime"], t["container_id"] or t["name"] or t["pid"])
        for p in report["escape_paths"]:
            if not policy.shown(p):
                continue
            rule_id = ESCAPE_RULE_PREFIX + p["id"]
            if rule_id not in index:
                index[rule_id] = len(rules)
                rules.append(_escape_rule(p))
            add(rule_id, "error", "Escape path %s: %s (rests on %s)" % (p["name"], p["technique"], ", ".join(p["because"])),
                identity, t, {"status": "escape", "severity": p["severity"], "cve": list(p["cve"])}, p.get("suppressed"))
        for f in report["findings"]:
            if f["status"] not in ("fail", "unknown") or not policy.shown(f):
                continue
            if f["id"] not in index:
                continue   # a check this build does not know (a report from another version)
            if f["status"] == "fail":
                level, text = _SARIF_LEVEL[f["severity"]], "%s: %s" % (f["title"], "; ".join(f["evidence"][:3]) or "-")
            else:
                level, text = "note", "Could not be judged: %s: %s" % (f["title"], f["note"] or "the evidence could not be read")
            add(f["id"], level, text, identity, t, {"status": f["status"], "severity": f["severity"]}, f.get("suppressed"))
    version = package_version()
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{"tool": {"driver": {"name": "pysandbox-audit", "version": version, "semanticVersion": version,
                                      "informationUri": DOCS_URI, "rules": rules}},
                  "results": results}],
    }


class _NotPlainJSON(Exception):
    pass


def _encode_json(obj, indent):
    """json.dumps(obj) (indent=None) or json.dumps(obj, indent=indent), the same text, for
    the plain values a report is made of (dict with str keys, list, tuple, str, int, float,
    bool, None). Importing json costs a plain audit more than encoding (json imports re
    and enum); the strings go through json's own C quoting (ensure_ascii, as json.dumps).
    Anything else raises _NotPlainJSON, and dumps() hands the object to json itself."""
    from _json import encode_basestring_ascii as quote
    chunks = []
    append = chunks.append

    def value(o, level):
        kind = type(o)
        if kind is str:
            append(quote(o))
        elif o is None:
            append("null")
        elif o is True:
            append("true")
        elif o is False:
            append("false")
        elif kind is int:
            append(int.__repr__(o))
        elif kind is float:
            if o != o or o in (float("inf"), float("-inf")):
                raise _NotPlainJSON()      # NaN/Infinity: json's own spelling
            append(float.__repr__(o))
        elif kind is dict or kind is list or kind is tuple:
            if not o:
                append("{}" if kind is dict else "[]")
                return
            opening, closing = ("{", "}") if kind is dict else ("[", "]")
            if indent is None:
                separator, end = ", ", closing
            else:
                inner = "\n" + " " * (indent * (level + 1))
                opening, separator, end = opening + inner, "," + inner, "\n" + " " * (indent * level) + closing
            append(opening)
            first = True
            if kind is dict:
                for key, item in o.items():
                    if type(key) is not str:
                        raise _NotPlainJSON()
                    if not first:
                        append(separator)
                    first = False
                    append(quote(key))
                    append(": ")
                    value(item, level + 1)
            else:
                for item in o:
                    if not first:
                        append(separator)
                    first = False
                    value(item, level + 1)
            append(end)
        else:
            raise _NotPlainJSON()

    value(obj, 0)
    return "".join(chunks)


def dumps(obj, pretty=False, small=True):
    """The report as JSON text: indented for a terminal, one line for a pipe. `small` (one
    target's report, a few hundred values) is encoded here, which spares the json import;
    a large document (a fleet, SARIF over many targets) goes to json's C encoder, which
    is faster than this file's once there are thousands of values."""
    if small:
        try:
            return _encode_json(obj, 2 if pretty else None)
        except (_NotPlainJSON, RecursionError, ImportError):
            pass
    import json
    return json.dumps(obj, indent=2) if pretty else json.dumps(obj)
