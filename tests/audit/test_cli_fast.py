"""The plain `audit TARGET` path: read by hand (no argparse), no json/re/glob imported, and
the hand parser and build_parser() kept in step by one table."""
import argparse
import json
import os
import subprocess
import sys

import pytest

from audit import cli

# Command lines the hand parser must take (the shapes a user types), each read as argparse reads it.
COMMON = [
    ["1234"], ["self"], ["web"], ["--all"],
    ["1234", "--format", "json"], ["--format=sarif", "1234"], ["-v", "self"], ["self", "--verbose"],
    ["--all", "--jobs", "4", "--format", "json", "-o", "out.json"], ["--output=x.txt", "1234"],
    ["1234", "--fail-on", "high", "--severity", "medium"], ["1234", "--fail-on=critical"],
    ["1234", "--skip", "lsm-off", "--skip=cap-net-raw,escape/privileged", "--checks", "cap-sys-admin"],
    ["--checks=", "1234"], ["--ignore-file", "my.ignore", "1234"], ["--ignore-file=", "1234"],
    ["--active", "1234"], ["--docker-socket", "/run/docker.sock", "web"], ["--docker-socket=unix:///x", "web"],
    ["--all", "--jobs", "16"], ["--all", "--jobs=1"], ["--all", "1234"], [], ["explainx"],
    ["1234", "--format", "text", "--format", "json"], ["--skip", "a", "--all", "--skip", "b"],
]
# Command lines it must leave to argparse (help, version, errors, abbreviations, odd shapes).
LEFT_TO_ARGPARSE = [
    ["-h"], ["--help"], ["--version"], ["1", "2"], ["--bogus", "1"], ["--form", "json", "1"], ["--verb", "1"],
    ["--format", "xml", "1"], ["--format"], ["1", "--format"], ["--fail-on", "huge", "1"], ["--jobs", "0", "--all"],
    ["--jobs", "x", "--all"], ["--jobs=-3", "--all"], ["-o", "-", "1"], ["-o=f", "1"], ["-vo", "f", "1"], ["-ofile", "1"],
    ["--all=yes"], ["-v=1", "1"], ["--", "1"], ["-1"], [""], ["--checks", "--all"], ["--skip", "-x", "1"],
]


def _argparse_reading(argv):
    try:
        return vars(cli.build_parser().parse_args(argv))
    except cli._UsageError as exc:
        return "usage error: %s" % exc
    except SystemExit as exc:
        return "exit %s" % exc.code


def test_option_table_is_the_parser():
    """Every option of build_parser() comes from AUDIT_OPTIONS (but -h and --version), with its
    kind, choices, metavar and help: the hand parser cannot know an option argparse lacks."""
    parser = cli.build_parser()
    described = {o: a for a in parser._actions for o in a.option_strings}
    assert set(described) - {"-h", "--help", "--version"} == set(cli._OPTION_BY_NAME)
    for names, metavar, kind, choices, text in cli.AUDIT_OPTIONS:
        names = (names,) if isinstance(names, str) else names
        action = described[names[0]]
        assert all(described[n] is action for n in names), names
        assert action.dest == names[0][2:].replace("-", "_") and action.help == text
        expected = {"flag": argparse._StoreTrueAction, "list": argparse._AppendAction,
                    "value": argparse._StoreAction, "count": argparse._StoreAction}[kind]
        assert type(action) is expected, names
        if kind != "flag":
            assert action.metavar == metavar and action.choices == choices and action.nargs is None, names
        assert (action.type is cli._positive_int) == (kind == "count"), names


@pytest.mark.parametrize("argv", COMMON, ids=" ".join)
def test_hand_parser_reads_common_command_lines_as_argparse_does(argv):
    fast = cli.parse_fast(list(argv))
    assert fast is not None, argv
    assert vars(fast) == _argparse_reading(list(argv))


@pytest.mark.parametrize("argv", LEFT_TO_ARGPARSE, ids=" ".join)
def test_hand_parser_leaves_everything_else_to_argparse(argv):
    assert cli.parse_fast(list(argv)) is None


def test_usage_errors_are_argparse_words_after_the_hand_parser():
    """A value the hand parser will not take is argparse's one-line error, exit 2."""
    for argv, words in ((["--jobs", "0", "--all"], "must be at least 1"), (["--format", "xml", "1"], "invalid choice"),
                        (["--form", "json"], "give exactly one TARGET")):
        proc = subprocess.run([sys.executable, "-m", "audit"] + argv, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and proc.stderr.startswith("audit: error: ") and words in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1


def _modules_after(argv, tmp_path):
    """Run audit.cli.main(argv) in a fresh isolated interpreter (as setup.sh's launcher runs
    it), with an empty sandbox registry; -> (exit code, heavy modules it imported)."""
    heavy = ("argparse", "json", "re", "glob", "rich", "shutil", "subprocess", "concurrent.futures", "importlib.metadata")
    code = ("import sys; sys.path[:0] = %r; from audit.cli import main; rc = main(%r); sys.stdout.flush();"
            "sys.stderr.write('\\nMODULES %%d %%s' %% (rc, ' '.join(m for m in %r if m in sys.modules)))"
            % ([p for p in sys.path if p], argv, heavy))
    env = dict(os.environ, PYSANDBOX_STATE_DIR=str(tmp_path / "state"))
    env.pop("DOCKER_HOST", None)
    proc = subprocess.run([sys.executable, "-I", "-S", "-X", "frozen_modules=on", "-c", code], capture_output=True,
                          text=True, timeout=60, env=env, cwd=str(tmp_path))
    assert "MODULES" in proc.stderr, proc.stderr
    rc, _, modules = proc.stderr.rpartition("MODULES ")[2].partition(" ")
    return int(rc), modules.split()


def test_plain_path_imports_no_argparse_json_or_re(tmp_path):
    """`audit PID`, `audit self` (text, -v, --fail-on, -o FILE, --format json) import neither
    the parser nor json, nor re and glob: the interpreter and the audit's own work are the
    whole cost."""
    target = subprocess.Popen(["sleep", "60"])
    try:
        for argv in ([str(target.pid)], ["self"], ["-v", str(target.pid)], [str(target.pid), "--fail-on", "critical"],
                     ["self", "--skip", "lsm-off", "-o", str(tmp_path / "report.txt")],
                     [str(target.pid), "--format", "json", "-o", str(tmp_path / "report.json")]):
            rc, modules = _modules_after(argv, tmp_path)
            assert rc in (0, 1) and modules == [], (argv, rc, modules)
    finally:
        target.kill()
        target.wait()
    assert "audit:" in (tmp_path / "report.txt").read_text()
    assert json.loads((tmp_path / "report.json").read_text())["target"]["pid"] == target.pid


def test_the_import_harness_sees_what_it_looks_for(tmp_path):
    """The measurement above is not vacuous: the same harness sees argparse for --help and
    json when a pysandbox state record names the target (the registry is parsed then)."""
    rc, modules = _modules_after(["--help"], tmp_path)
    assert rc == 0 and "argparse" in modules
    state = tmp_path / "state"
    state.mkdir(mode=0o700)     # the registry reads only a directory private to its user
    target = subprocess.Popen(["sleep", "60"])
    try:
        # A stale record (its supervisor is not alive) whose pid is the target's: parsed, then skipped.
        (state / "stale-one.json").write_text(json.dumps({"name": "stale-one", "pid": target.pid,
                                                          "supervisor": 999999999, "profile": "default"}))
        rc, modules = _modules_after([str(target.pid)], tmp_path)
        assert rc in (0, 1) and "json" in modules
    finally:
        target.kill()
        target.wait()


def test_registry_prefilter_finds_a_live_sandbox_record(tmp_path, monkeypatch):
    """The pre-filter that spares the registry's JSON only skips records that cannot name the
    target: a live record whose pid is the target's is found, and labels it pysandbox."""
    from audit.targets import Resolver
    monkeypatch.setenv("PYSANDBOX_STATE_DIR", str(tmp_path))
    target = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / "other.json").write_text(json.dumps({"name": "other", "pid": 999999998,
                                                         "supervisor": os.getpid(), "profile": "default"}))
        assert Resolver().describe_pid(target.pid).runtime != "pysandbox"
        (tmp_path / "mine.json").write_text(json.dumps({"name": "mine", "pid": target.pid,
                                                        "supervisor": os.getpid(), "profile": "strict"}))
        info = Resolver().describe_pid(target.pid)
        assert info.runtime == "pysandbox" and info.name == "mine"
    finally:
        target.kill()
        target.wait()
    # (a sandbox's command, a child of the recorded init, found through its ancestors:
    # test_live_pysandbox.py::test_sandbox_target_fields_and_fleet, on a real sandbox)


def _reports():
    from audit.checks import all_checks
    from audit.cli import audit_target
    from audit.report import Policy, fleet, for_output, render_sarif
    from audit.targets import Resolver
    policy = Policy(checks=None, skip=[], ignore=[], min_severity=None)
    one = policy.apply(audit_target(Resolver().resolve("self")))
    return [for_output(one, policy), fleet([for_output(one, policy)]), render_sarif([one], all_checks(), policy)]


@pytest.mark.parametrize("pretty", [False, True])
def test_json_text_is_json_dumps_text(pretty):
    """report.dumps writes what json.dumps would, byte for byte (reports, fleet envelope, SARIF,
    hostile strings, numbers), and hands anything else to json itself."""
    from audit.report import dumps
    odd = {"esc": "\x1b]0;title\x07\x1b[2J", "surrogate": "\udcff", "bidi": "\u202e", "accent": "é", "emoji": "\U0001f600",
           "nested": [[], {}, [{}], (1, 2)], "numbers": [0, -1, 10 ** 30, 0.1, -0.0, 1e300, 1e-7], "flags": [True, False, None]}
    for doc in _reports() + [odd, [], {}, "x", 3]:
        assert dumps(doc, pretty) == json.dumps(doc, indent=2 if pretty else None)
        assert dumps(doc, pretty, small=False) == json.dumps(doc, indent=2 if pretty else None)
    for doc in ({1: "int key"}, [float("nan")], {"x": float("inf")}):
        assert dumps(doc, pretty) == json.dumps(doc, indent=2 if pretty else None)
    with pytest.raises(TypeError):
        dumps({"x": {1, 2}}, pretty)


def _children_of_this_process():
    out = set()
    for task in os.listdir("/proc/self/task"):
        with open("/proc/self/task/%s/children" % task) as f:
            out.update(int(p) for p in f.read().split())
    return out


def test_fleet_split_across_processes_gives_the_serial_reports():
    """--all over many targets forks one auditor per CPU: the reports come back in target
    order, the same as one process makes them, and every child is reaped."""
    from audit.cli import _audit_in_processes, audit_target
    from audit.targets import Resolver
    sleepers = [subprocess.Popen(["sleep", "60"]) for _ in range(5)]
    try:
        resolver = Resolver()
        targets = [resolver.describe_pid(p.pid) for p in sleepers] * 2

        def ids(report):
            return (report["target"]["pid"], sorted((f["id"], f["status"]) for f in report["findings"]))

        before = _children_of_this_process()
        vanished = []
        split = _audit_in_processes(targets, 3, audit_target, vanished)
        assert _children_of_this_process() == before and vanished == []
        assert [ids(r) for r in split] == [ids(audit_target(t)) for t in targets]
    finally:
        for p in sleepers:
            p.kill()
            p.wait()


def test_fleet_child_that_fails_leaves_its_share_to_the_parent():
    """A child that breaks (here: every audit raises outside the parent) is reaped and its
    targets are audited by the parent; a target that vanished is reported as such."""
    from audit.cli import _audit_in_processes
    parent = os.getpid()
    seen = []

    def one(target):
        if os.getpid() != parent:
            raise RuntimeError("the child breaks")
        seen.append(target)
        if target == 4:
            vanished.append(target)
            return None
        return {"target": target}

    before = _children_of_this_process()
    vanished = []
    results = _audit_in_processes(list(range(7)), 2, one, vanished)
    assert _children_of_this_process() == before
    assert results == [{"target": i} if i != 4 else None for i in range(7)]
    assert sorted(seen) == list(range(7)) and vanished == [4]
