"""How a report reads: unknowns counted and shown, failures grouped by severity with their
fix, passes under their own heading phrased as passes, and the same facts in plain text and
in rich. The snapshot is the test process's own (a real one); the findings are built here,
so every status, unknown included, is exercised whatever the checks of this build produce."""
import io
import json
import os
import re

import pytest

from audit import report
from audit.checks import Finding, all_checks, get
from audit.escapes import EscapePath

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def snap():
    from audit import snapshot
    from audit.targets import Resolver
    return snapshot.collect(Resolver().resolve("self"))


def _finding(cid, status, evidence=(), note=None, severity=None):
    chk = get(cid)
    return Finding(chk, status, severity or chk.severity, tuple(evidence), note)


FINDINGS = [
    ("runtime-socket", "fail", ("/var/run/docker.sock: a socket, connect() answered",), None),
    ("cap-net-raw", "fail", ("CAP_NET_RAW in effective",), None),
    ("seccomp-off", "fail", ("Seccomp: 0",), None),
    ("nnp-off", "fail", ("NoNewPrivs: 0",), None),
    ("proc-sys-rw", "unknown", (), "the target's /proc/sys cannot be opened as this user: run as root"),
    ("block-devices", "unknown", ("/dev: permission denied",), "run as root, or --active"),
    ("runtime-version", "skip", (), "runtime version not known for a process target"),
    ("keyring", "error", ("OSError: boom",), None),
    ("ns-pid-host", "pass", ("ns/pid -> pid:[4026532000]",), None),
    ("lsm-off", "pass", ("attr/current: docker-default (enforce)",), None),
]
PATHS = [EscapePath("runtime-socket", "runtime socket", "ask the runtime's API for a privileged container",
                    "critical", ("runtime-socket",), ())]


def _report(snap, findings=FINDINGS, paths=PATHS):
    return report.build(snap, [_finding(c, s, e, n) for c, s, e, n in findings], paths)


def test_unknown_is_counted_and_in_the_verdict(snap):
    r = _report(snap)
    s = r["summary"]
    assert (s["failed"], s["passed"], s["unknown"], s["skipped"], s["errors"]) == (4, 2, 2, 1, 1)
    assert s["verdict"].endswith("2 checks could not be judged")
    assert s["worst"] == "critical"
    text = report.render_text([r])
    assert "4 failed, 2 passed, 2 could not be judged, 1 skipped, 1 errors" in text
    assert "2 checks could not be judged: -v lists them" in text
    # unknowns are listed only with -v, under their own heading, with why and what would help
    assert "UNKNOWN" not in text
    verbose = report.render_text([r], verbose=True)
    section = verbose.split("COULD NOT BE JUDGED:")[1].split("SKIPPED:")[0]
    assert "proc-sys-rw" in section and "block-devices" in section
    assert "could not judge: the target's /proc/sys cannot be opened as this user: run as root" in section
    assert "could not judge: run as root, or --active" in section


def test_no_unknown_says_nothing_about_judging(snap):
    r = _report(snap, [f for f in FINDINGS if f[1] != "unknown"], [])
    assert "could not be judged" not in r["summary"]["verdict"]
    assert r["summary"]["unknown"] == 0


def _block(text, label, cid):
    """The item line `  LABEL  cid ...` and its detail lines."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"  %s\s+%s\s" % (label, re.escape(cid)), line))
    end = start + 1
    while end < len(lines) and lines[end].startswith("          "):
        end += 1
    return "\n".join(lines[start:end])


def test_failures_first_by_severity_with_fix_and_explain(snap):
    text = report.render_text([_report(snap)])
    headings = [line for line in text.splitlines() if re.fullmatch(r"[A-Z ]+:", line)]
    assert headings == ["ESCAPE PATHS:", "CRITICAL:", "HIGH:", "MEDIUM:", "LOW:", "CHECK ERRORS:"]
    for cid in ("runtime-socket", "cap-net-raw", "seccomp-off", "nnp-off"):
        block = _block(text, "FAIL", cid)
        assert "fix: %s" % get(cid).remediation in block
        assert "more: audit explain %s" % cid in block
    assert "CVE: CVE-2020-14386" in _block(text, "FAIL", "cap-net-raw")
    # passes only with -v
    assert "PASS" not in text and "ns-pid-host" not in text


def test_passes_have_their_own_heading_and_read_as_passes(snap):
    text = report.render_text([_report(snap)], verbose=True)
    passed = text.split("PASSED:")[1]
    assert "Own PID namespace" in passed and "Confined by an LSM" in passed
    assert get("ns-pid-host").title not in passed and get("lsm-off").title not in passed
    # nothing that passed sits under a severity heading
    for heading in ("CRITICAL:", "HIGH:", "MEDIUM:", "LOW:"):
        if heading in text:
            assert "PASS " not in text.split(heading)[1].split(":\n")[0]
    # every check has a pass title that is not its failure title
    for chk in all_checks():
        assert report.pass_title(chk) != chk.title, chk.id


def _facts_text(text):
    facts = set()
    for line in text.splitlines():
        m = re.match(r"\s*(FAIL|PASS|UNKNOWN|SKIP|ERROR|ESCAPE)\b(?: \[\w+\])?\s+([a-z0-9][a-z0-9/-]*)(?:\s|$)", line)
        if m:
            facts.add((m.group(1), m.group(2)))
    facts |= {("cve", c) for c in re.findall(r"CVE-\d{4}-\d+", text)}
    facts |= {("reason", r.strip()) for r in re.findall(r"(?:reason|could not judge|fix): ([^\n│|]+)", text)}
    return facts


def _rich(reports, verbose, policy=None):
    from rich.console import Console
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=400, markup=False, emoji=False, highlight=False)
    report.render_rich(reports, out, verbose=verbose, policy=policy, console=console)
    return out.getvalue()


def _facts_rich(text):
    plain = ANSI.sub("", text)
    # table rows: "│ STATUS │ id │ title │" and continuation rows "│ │ │ detail │"
    rows = []
    for line in plain.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 3:
            rows.append(cells)
    lines = []
    for status, cid, body in rows:
        if status:
            lines.append("  %s %s %s" % (status, cid, body))
        else:
            lines.append("          " + body)
    return _facts_text("\n".join(lines) + "\n" + plain)


@pytest.mark.parametrize("verbose", [False, True])
def test_rich_and_plain_carry_the_same_facts(snap, verbose):
    r = _report(snap)
    plain = _facts_text(report.render_text([r], verbose=verbose))
    rich = _facts_rich(_rich([r], verbose))
    assert plain == rich
    assert ("cve", "CVE-2020-14386") in rich
    if verbose:
        assert ("reason", "runtime version not known for a process target") in rich
        assert ("UNKNOWN", "proc-sys-rw") in rich and ("PASS", "lsm-off") in rich


def test_rich_on_a_real_audit_matches_plain(snap):
    from audit.checks import run_checks
    from audit.escapes import find_escape_paths
    findings = run_checks(snap)
    r = report.build(snap, findings, find_escape_paths(snap, findings))
    assert _facts_text(report.render_text([r], verbose=True)) == _facts_rich(_rich([r], True))


def test_printable_escapes_what_a_terminal_would_act_on():
    p = report.printable
    assert p("plain /usr/lib path") == "plain /usr/lib path"
    assert p("\x1b]0;title\x07") == "\\x1b]0;title\\x07"
    assert p("a\u202eb\u200bc") == "a\\u202eb\\u200bc"
    assert p("x\ny\tz\r") == "x\\ny\\tz\\x0d"
    assert p("\x9b2J") == "\\x9b2J"                 # C1 CSI
    assert p(b"\xff\xfe".decode("utf-8", "surrogateescape")) == "\\xff\\xfe"
    assert p("caf\u00e9 \u4e2d") == "caf\u00e9 \u4e2d"   # printable non-ASCII stays
    for ch in map(chr, range(0x110000)):
        if 0xD800 <= ord(ch) <= 0xDFFF and not 0xDC80 <= ord(ch) <= 0xDCFF:
            continue
        assert p(ch).isprintable()


def test_json_keeps_the_raw_value_escaped_by_json(snap):
    r = _report(snap, [("leaked-fd", "fail", ("fd 7 -> /tmp/\x1b]0;x\x07",), None)], [])
    text = report.dumps(r)
    assert "\x1b" not in text and "\\u001b]0;x\\u0007" in text
    assert json.loads(text)["findings"][0]["evidence"] == ["fd 7 -> /tmp/\x1b]0;x\x07"]


def schema_validators():
    """Validators of audit/schema.json: the report (its root) and the fleet envelope (#/$defs/fleet)."""
    import jsonschema
    with open(os.path.join(os.path.dirname(report.__file__), "schema.json")) as f:
        schema = json.load(f)
    root = jsonschema.Draft202012Validator(schema)
    return root, root.evolve(schema=schema["$defs"]["fleet"])


def test_report_validates_against_the_schema(snap):
    import jsonschema
    report_v, fleet_v = schema_validators()
    r = _report(snap)
    report_v.validate(r)
    fleet_v.validate(report.fleet([r, r]))
    with pytest.raises(jsonschema.ValidationError):
        fleet_v.validate(report.fleet([dict(r, schema="pysandbox.audit/2")]))
    bad = dict(r, summary=dict(r["summary"]))
    del bad["summary"]["unknown"]
    with pytest.raises(jsonschema.ValidationError):
        report_v.validate(bad)
    bad = json.loads(json.dumps(r))
    bad["findings"][0]["status"] = "maybe"
    with pytest.raises(jsonschema.ValidationError):
        report_v.validate(bad)
