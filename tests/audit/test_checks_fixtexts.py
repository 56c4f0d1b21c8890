"""Every pysandbox fix text names only profile keys that exist: each `section.key` in
backticks is checked against the profile schema, each bare `word` must be a section or a
built-in profile. The schema is imported here only: audit code never imports sandbox."""
import os
import re

from audit.checks import all_checks
from sandbox.profile import SCHEMA

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROFILES = {name[:-5] for name in os.listdir(os.path.join(REPO, "profiles")) if name.endswith(".toml")}


def _references(text):
    for token in re.findall(r"`([^`]+)`", text):
        yield re.split(r"[\s=]", token.strip(), 1)[0]


def test_fix_texts_name_real_profile_keys():
    bad = []
    for chk in all_checks():
        text = chk.fix["pysandbox"]
        for ref in _references(text):
            if "." in ref:
                section, _, key = ref.partition(".")
                spec = SCHEMA.get(section)
                if not isinstance(spec, dict) or key not in spec:
                    bad.append((chk.id, ref))
            elif ref not in SCHEMA and ref not in PROFILES:
                bad.append((chk.id, ref))
    assert bad == []


def test_every_check_has_a_pysandbox_fix_and_the_parser_sees_references():
    texts = [c.fix["pysandbox"] for c in all_checks()]
    assert all(texts)
    refs = {r for t in texts for r in _references(t)}
    # the parser is not vacuous: keys the fixes are known to name are found
    assert {"namespaces.mount", "capabilities.keep", "capabilities.ambient", "limits.memory"} <= refs
