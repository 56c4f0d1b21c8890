"""Registry of checks: each a small function over a Snapshot, with its metadata as data.

A check returns an Outcome; the registry adds id, title, severity, remediation and
references so every finding carries them. Import `all_checks()` to get them in a
stable order (by module, then definition order).
"""
from __future__ import annotations

from collections import namedtuple

from pysandbox_common.containers import SEVERITIES
SEVERITY_RANK = {name: rank for rank, name in enumerate(reversed(SEVERITIES))}  # info 0 .. critical 4
STATUSES = ("fail", "pass", "unknown", "skip", "error")


class Check(namedtuple("Check", "id title severity description escape remediation references fix func")):
    __slots__ = ()
    # id: str
    # title: str
    # severity: str
    # description: str          # what the check looks at and why it matters
    # escape: str               # how an attacker uses the gap
    # remediation: str
    # references: dict          # cve: [...], mitre: [...], cis_docker: str, k8s_pss: str
    # fix: dict                 # docker / kubernetes / pysandbox
    # func: the check function itself


class Outcome(namedtuple("Outcome", "status evidence severity note", defaults=((), None, None))):
    __slots__ = ()
    # status: str
    # evidence: tuple = ()
    # severity: str | None = None   # set when the finding is less (or more) serious than the check's default
    # note: str | None = None


def fail(*evidence, severity=None, note=None):
    return Outcome("fail", tuple(evidence), severity, note)


def ok(*evidence, note=None):
    return Outcome("pass", tuple(evidence), None, note)


def skip(reason, *evidence):
    return Outcome("skip", tuple(evidence), None, reason)


def unknown(reason, *evidence):
    """The evidence could not be read: never a pass. `reason` says why and what would let
    the auditor see (run as root, --active)."""
    return Outcome("unknown", tuple(evidence), None, reason)


_REGISTRY: dict = {}


def check(id, title, severity, description, escape, remediation, references, fix):
    def register(func):
        if id in _REGISTRY:
            raise ValueError("duplicate check id %r" % id)
        _REGISTRY[id] = Check(id, title, severity, description, escape, remediation,
                              references, fix, func)
        return func
    return register


def ref(cve=(), cis=None, pss=None, mitre=("T1611",)):
    return {"cve": list(cve), "mitre": list(mitre), "cis_docker": cis, "k8s_pss": pss}


def fixes(docker, kubernetes, pysandbox):
    return {"docker": docker, "kubernetes": kubernetes, "pysandbox": pysandbox}


_loaded = False


def all_checks():
    global _loaded
    if not _loaded:
        from . import namespaces, capabilities, confinement, filesystem, resources  # noqa: F401
        _loaded = True
    return list(_REGISTRY.values())


def get(check_id):
    all_checks()
    return _REGISTRY.get(check_id)


class Finding(namedtuple("Finding", "check status severity evidence note")):
    __slots__ = ()
    # check: Check
    # status: str
    # severity: str
    # evidence: tuple
    # note: str | None

    @property
    def id(self):
        return self.check.id

    @property
    def failed(self):
        return self.status == "fail"


def run_checks(snapshot):
    findings = []
    for chk in all_checks():
        try:
            outcome = chk.func(snapshot)
        except Exception as exc:  # a broken check must not hide the others' findings
            outcome = Outcome("error", ("%s: %s" % (type(exc).__name__, exc),))
        severity = outcome.severity or chk.severity
        findings.append(Finding(chk, outcome.status, severity, tuple(outcome.evidence), outcome.note))
    return findings
