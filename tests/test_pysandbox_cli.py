"""The command line as a user meets it: exit codes, --result, limits that are never
dropped, help on every command, the parsers in step, man pages and completions, the
packaged C init, and the one-line errors for bad input and missing libraries."""
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tomllib

import pytest

from util import ROOT, require, run_cli, run_in, py, pysandbox_cmd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NODELEG_USER = os.environ.get("PYSANDBOX_NODELEG_USER", "pysbx2")


def one_line_error(proc, code=125):
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert proc.stderr.startswith("pysandbox: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stderr


# ---------------------------------------------------------------- exit codes

@pytest.mark.parametrize("status", [0, 1, 2, 3, 42, 124, 125])
def test_the_commands_own_status_passes_through(status):
    proc, _ = run_in("default", "/bin/sh", "-c", "exit %d" % status)
    assert proc.returncode == status, proc.stderr
    assert proc.stderr == ""


@pytest.mark.parametrize("args, text", [
    (["run", "--pids", "-1", "--", "true"], "--pids must not be negative"),
    (["run", "--memory", "-5", "--", "true"], "--memory: size must be >= 0"),
    (["run", "--memory", "lots", "--", "true"], "--memory: expected a size such as 64M"),
    (["run", "--cpu-weight", "0", "--", "true"], "--cpu-weight must be within 1..10000, got '0'"),
    (["run", "--io-weight", "10001", "--", "true"], "--io-weight must be within 1..10000"),
    (["run", "--ro-bind", "/etc:/a:b", "--", "true"], "--ro-bind expects SRC[:DST] with at most one ':'"),
    (["run", "--bind", "/etc:/a:b", "--", "true"], "--bind expects SRC[:DST] with at most one ':'"),
    (["run", "--hostname", "h" * 65, "--", "true"], "--hostname must be 1-64 bytes, got 65"),
    (["run", "--hostname", "é" * 33, "--", "true"], "--hostname must be 1-64 bytes, got 66"),
    (["run", "--net", "wifi", "--", "true"], "--net must be none, loopback or host"),
    (["run", "--cwd", "relative", "--", "true"], "--cwd expects an absolute path"),
    (["run", "--uid", "x", "--", "true"], "--uid expects an integer"),
    (["run", "--overlay=yes", "--", "true"], "option --overlay takes no value"),
    (["run", "--profile", "no-such-profile", "--", "true"], "unknown profile 'no-such-profile'"),
    (["run", "--", ], "no command given"),
    (["frobnicate"], "unknown command 'frobnicate'"),
    (["profile"], "profile: the following arguments are required: ACTION"),
    (["profile", "show", "no-such-profile"], "unknown profile 'no-such-profile'"),
    (["profile", "frob"], "profile: argument ACTION: invalid choice: 'frob'"),
    (["explain"], "explain: the following arguments are required: LAYER"),
    (["explain", "magic"], "unknown layer, profile key or audit check 'magic'"),
    (["gc", "extra"], "unrecognized arguments: extra"),
    (["delegate"], "delegate: the following arguments are required: USER"),
])
def test_every_error_of_pysandbox_is_one_line_and_125(args, text, tmp_path):
    marker = tmp_path / "ran"
    if args[-1] == "true":
        args = args[:-1] + ["/bin/sh", "-c", "echo ran > %s" % marker]
    proc = run_cli(*args)
    assert text in one_line_error(proc)
    assert not marker.exists() and proc.stdout == ""


def test_no_arguments_is_a_usage_error():
    proc = run_cli()
    assert proc.returncode == 125 and proc.stderr.startswith("usage: pysandbox") and proc.stdout == ""


def test_names_of_the_codes_agree():
    from sandbox import errors
    assert errors.EXIT_USAGE == errors.EXIT_PROFILE == errors.EXIT_SETUP == 125
    assert errors.UsageError("x").exit_code == errors.ProfileError("x").exit_code == 125
    assert errors.SetupError("bind", 2).exit_code == 125
    # the old usage code some callers still pass is not a code of its own any more
    assert errors.SandboxError("x", 2).exit_code == 125 and errors.SandboxError("x", 127).exit_code == 127


# ---------------------------------------------------------------- --result

def _verdict(path):
    data = json.loads(path.read_text())
    assert data["schema"] == "pysandbox.result/1"
    return data


def _no_temp_left(directory):
    assert [n for n in os.listdir(directory) if n.endswith(".tmp")] == []


def test_result_of_a_normal_run_has_the_schema(tmp_path):
    out = tmp_path / "r.json"
    proc, _ = run_in("default", "/bin/sh", "-c", "exit 3", result_file=out)
    verdict = _verdict(out)
    assert proc.returncode == 3 and verdict["reason"] == "exit" and verdict["exit_code"] == 3
    _no_temp_left(tmp_path)


@pytest.mark.parametrize("args, stage, text", [
    # a setup error: the bind source is missing (found while the sandbox is prepared)
    (["--ro-bind", "/does/not/exist"], "bind", "bind source /does/not/exist does not exist"),
    # bad input found after the --result path was parsed
    (["--memory", "-5"], "usage", "--memory: size must be >= 0"),
    (["--cpu-weight", "0"], "usage", "--cpu-weight must be within 1..10000"),
    (["--hostname", "x" * 76], "usage", "--hostname must be 1-64 bytes"),
    # ... and before it: the scan goes on to find --result
    (["--bogus"], "usage", "unknown option --bogus"),
    (["--profile", "no-such-profile"], "profile", "unknown profile 'no-such-profile'"),
])
def test_result_is_written_for_every_error(tmp_path, args, stage, text):
    out = tmp_path / "r.json"
    if args == ["--bogus"]:
        proc = run_cli("run", *args, "--result", str(out), "--", "/bin/true")
    else:
        proc = run_cli("run", "--result", str(out), *args, "--", "/bin/true")
    assert text in one_line_error(proc)
    verdict = _verdict(out)
    assert verdict["exit_code"] == 125 and verdict["reason"] == "setup-error", verdict
    # a bind source may be checked by the profile (ordered mounts) or by the mount plan
    assert verdict["stage"] in ({stage, "profile"} if stage == "bind" else {stage}), verdict
    assert text in verdict["message"], verdict
    _no_temp_left(tmp_path)


def test_profile_error_result_names_the_profile_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('extends = "default"\n[limits]\ncpu_weight = 0.5\n')
    out = tmp_path / "r.json"
    proc = run_cli("run", "--result", str(out), "--profile", str(bad), "--", "/bin/true")
    one_line_error(proc)
    verdict = _verdict(out)
    assert verdict["stage"] == "profile" and str(bad) in verdict["message"]


def test_result_is_replaced_atomically(tmp_path):
    """While the command runs FILE still holds the previous verdict (the new one is
    written beside it and renamed over it); afterwards it holds exactly the new one."""
    out = tmp_path / "r.json"
    out.write_text('{"old": true}\n')
    proc = subprocess.Popen(pysandbox_cmd() + ["run", "--profile", "default", "--result", str(out), "--",
                                               "/bin/sh", "-c", "echo started; read line; exit 5"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The command has started (its first line) and waits for ours: the verdict is not
        # known yet, so FILE is untouched and the new one is being prepared beside it.
        assert proc.stdout.readline() == "started\n"
        assert [n for n in os.listdir(tmp_path) if n.endswith(".tmp")] == [".r.json.%d.tmp" % proc.pid]
        assert json.loads(out.read_text()) == {"old": True}
    finally:
        _, stderr = proc.communicate("go\n", timeout=60)
    assert proc.returncode == 5, stderr
    verdict = _verdict(out)
    assert verdict["exit_code"] == 5 and "old" not in verdict
    _no_temp_left(tmp_path)


def test_unwritable_result_fails_before_the_command_runs(tmp_path):
    marker = tmp_path / "ran"
    proc = run_cli("run", "--result", str(tmp_path), "--", "/bin/sh", "-c", "echo ran > %s" % marker)
    assert "--result %s: Is a directory" % tmp_path in one_line_error(proc)
    proc = run_cli("run", "--result", "/nonexistent-dir/r.json", "--", "/bin/sh", "-c", "echo ran > %s" % marker)
    assert "No such file or directory" in one_line_error(proc)
    assert not marker.exists()


# ---------------------------------------------------------------- limits are never dropped

def _nodeleg_user():
    try:
        return pwd.getpwnam(NODELEG_USER)
    except KeyError:
        return None


@pytest.mark.root_only
@pytest.mark.parametrize("limit", [["--memory", "64M"], ["--pids", "16"], ["--cpus", "0.5"],
                                   ["--cpu-weight", "50"], ["--io-weight", "50"],
                                   ["--memory", "64M", "--memory-swap", "128M"]])
def test_limit_without_cgroups_fails_rootless(limit):
    """A user without delegated cgroups (setup.sh creates pysbx2 for this; pysbx is
    delegated) asks for a limit: the run fails with 125 naming the fix, never runs unlimited."""
    require(ROOT, "switching to the undelegated user needs root")
    user = _nodeleg_user()
    require(user is not None, "setup.sh creates the undelegated test user %s" % NODELEG_USER)
    from sandbox import cgroup
    require(cgroup.detect() == "v1", "cgroup v1 host (per-user delegation through `pysandbox delegate`)")
    for point in set(cgroup.v1_hierarchies().values()):
        require(not os.path.isdir(cgroup.v1_parent(point, user.pw_uid)), "%s must have no delegation" % NODELEG_USER)
    import pathlib
    import tempfile
    work = pathlib.Path(tempfile.mkdtemp(prefix="nodeleg-", dir="/tmp"))   # reachable by that user
    request_cleanup = shutil.rmtree
    os.chmod(work, 0o1777)
    try:
        _limit_refused(user, work, limit)
    finally:
        request_cleanup(work)


def _limit_refused(user, work, limit):
    out = work / "r.json"
    marker = work / "ran"
    base = ["runuser", "-u", NODELEG_USER, "--", "env", "-i", "PATH=/usr/bin:/bin", "HOME=/"] + pysandbox_cmd()
    # the command would leave a mark through a bind if it ran
    proc = subprocess.run(base + ["run", "--profile", "default", "--result", str(out), "--bind", "%s:/out" % work,
                                  *limit, "--", "/bin/sh", "-c", "echo ran > /out/ran"],
                          capture_output=True, text=True, timeout=60)
    message = one_line_error(proc)
    assert "pysandbox delegate %s" % NODELEG_USER in message and " ".join(limit[:2]) in message, message
    assert "limits.required" not in message  # the profile's way out does not apply to a typed limit
    assert not marker.exists()
    verdict = _verdict(out)
    assert verdict["stage"] == "cgroup" and verdict["exit_code"] == 125
    # the same user without a limit runs (the profile's limits are not required)
    proc = subprocess.run(base + ["run", "--profile", "default", "--bind", "%s:/out" % work, "--",
                                  "/bin/sh", "-c", "echo ran > /out/ran"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and marker.exists(), proc.stderr


def test_limit_from_the_command_line_is_applied(tmp_path):
    """As root and rootless with delegation: --memory is in force (an allocation beyond it
    ends in the oom verdict) and marked required."""
    from sandbox import cgroup
    if not ROOT:
        # delegate makes the user's directories in every hierarchy but devices (a rootless
        # sandbox has no devices cgroup: writing an allowlist needs host root)
        require(cgroup.detect() == "v1" and all(
            os.path.isdir(cgroup.v1_parent(p)) for c, p in cgroup.v1_hierarchies().items() if c != "devices"),
            "the test user has delegated cgroups (setup.sh --test delegates them)")
    out = tmp_path / "r.json"
    proc, verdict = run_in("default", *py("b = bytearray(96 << 20); b[::4096] = b'x' * len(b[::4096])"),
                           extra=("--memory", "32M"), result_file=out)
    assert verdict["limits"]["memory"] == 32 << 20 and verdict["limits"]["required"] is True, verdict
    assert verdict["reason"] == "oom" and proc.returncode == 137, (verdict, proc.stderr)
    proc, verdict = run_in("default", "/bin/true", extra=("--memory", "32M"), result_file=out)
    assert proc.returncode == 0 and verdict["limits"]["memory"] == 32 << 20


def test_limit_options_mark_the_limits_required():
    from sandbox.cli import overrides_from
    from sandbox.profile import load_profile
    default = load_profile("default")
    assert default.limits.required is False
    for option, value in (("--memory", "64M"), ("--memory-swap", "128M"), ("--pids", "10"), ("--cpus", "1"),
                          ("--cpu-weight", "5"), ("--io-weight", "5")):
        overrides = overrides_from({option: value}, default)
        assert overrides["limits"]["required"] is True, option
        assert default.with_overrides(overrides).limits.required is True
    # "no limit" asks for nothing, so it makes nothing required
    assert "required" not in overrides_from({"--memory": "0"}, default).get("limits", {})


# ---------------------------------------------------------------- hostname, mounts

def test_hostname_of_64_bytes_is_taken():
    proc, _ = run_in("default", "/bin/cat", "/proc/sys/kernel/hostname", extra=("--hostname", "h" * 64))
    assert proc.returncode == 0 and proc.stdout.strip() == "h" * 64, proc.stderr


def test_mounts_keep_argv_order():
    from sandbox.cli import parse_run, mount_entries
    parsed = parse_run(["--tmpfs", "/data", "--ro-bind", "/etc:/data/in", "--bind", "/var/tmp", "--ro-bind=/usr:/u",
                        "--", "true"])
    assert mount_entries(parsed.mounts) == [
        {"kind": "tmpfs", "source": None, "target": "/data"},
        {"kind": "ro-bind", "source": "/etc", "target": "/data/in"},
        {"kind": "bind", "source": "/var/tmp", "target": "/var/tmp"},
        {"kind": "ro-bind", "source": "/usr", "target": "/u"},
    ]
    assert parsed.argv == ["true"]
    # a relative source is the caller's: made absolute against the current directory
    assert mount_entries([("ro-bind", "sub")])[0]["source"] == os.path.join(os.getcwd(), "sub")


def test_mounts_reach_the_profile_in_order():
    """Through the ordered-mount override of INTERFACES.md when the profile package has it."""
    from sandbox.cli import supports_ordered_mounts, mount_entries
    from sandbox.profile import load_profile
    profile = load_profile("default")
    if not supports_ordered_mounts(profile):
        pytest.skip("the profile package has no ordered mounts on this branch (legacy lists are used)")
    entries = mount_entries([("tmpfs", "/data"), ("ro-bind", "/etc:/data/in")])
    merged = profile.with_overrides({"filesystem": {"mounts": entries}})
    tail = [(m.kind, m.source, m.target) for m in merged.filesystem.mounts][-2:]
    assert tail == [("tmpfs", None, "/data"), ("ro-bind", "/etc", "/data/in")]


def test_bind_reaches_the_sandbox_where_asked(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("42\n")
    os.chmod(tmp_path, 0o755)
    os.chmod(src, 0o755)
    os.chmod(src / "f", 0o644)
    proc, _ = run_in("default", "/bin/cat", "/in/f", extra=("--ro-bind", "%s:/in" % src))
    assert proc.returncode == 0 and proc.stdout == "42\n", proc.stderr


def test_readme_quick_start_runs_a_script_from_the_current_directory(tmp_path_factory):
    """The README's quick start, exactly, from a directory under /tmp (as root and rootless)."""
    import tempfile
    work = tempfile.mkdtemp(prefix="quickstart-", dir="/tmp")
    try:
        os.chmod(work, 0o755)
        with open(os.path.join(work, "hello.py"), "w") as f:
            f.write("import os\nprint('hello from', os.getcwd())\n")
        os.chmod(os.path.join(work, "hello.py"), 0o644)
        proc = subprocess.run(pysandbox_cmd() + ["run", "--profile", "strict", "--ro-bind", work, "--cwd", work,
                                                 "--", "python3", "hello.py"],
                              cwd=work, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and proc.stdout == "hello from %s\n" % work, proc.stderr
    finally:
        shutil.rmtree(work)


def test_readme_shows_the_quick_start():
    readme = open(os.path.join(REPO, "README.md")).read()
    assert 'pysandbox run --profile strict --ro-bind "$PWD" --cwd "$PWD" -- python3 hello.py' in readme
    for package in ("libseccomp2", "libcap-ng0"):
        assert package in readme
    for code in ("124", "125", "126", "127", "128+N"):
        assert "| %s |" % code in readme or "| `%s` |" % code in readme, code


# ---------------------------------------------------------------- help, version, parsers

HELP_PATHS = [[], ["run"], ["profile"], ["profile", "list"], ["profile", "show"], ["profile", "lint"],
              ["explain"], ["gc"], ["delegate"], ["lab"], ["bench"]]


@pytest.mark.parametrize("path", HELP_PATHS, ids=lambda p: " ".join(p) or "pysandbox")
def test_help_on_every_command_teaches(path):
    for flag in ("--help", "-h"):
        proc = run_cli(*path, flag)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        text = proc.stdout
        assert text.startswith("usage: pysandbox" + "".join(" " + p for p in path)), text[:80]
        assert "exit status" in text and "125" in text, text
        assert "example" in text, text
    if path == ["run"]:
        for code in ("124", "126", "127", "128+N"):
            assert code in text
        for option in ("--memory", "--ro-bind", "--result", "--cpu-weight"):
            assert option in text


def test_top_level_help_lists_every_command():
    from sandbox.cli import COMMANDS
    text = run_cli("--help").stdout
    for command in COMMANDS:
        assert re.search(r"^\s+%s\s" % command, text, re.M), command


def test_help_command_and_audit_help():
    assert run_cli("help", "run").stdout == run_cli("run", "--help").stdout
    proc = run_cli("audit", "--help")
    assert proc.returncode == 0 and "usage: audit" in proc.stdout


def test_version_everywhere_agrees():
    from pysandbox_common import VERSION
    import sandbox
    from importlib.metadata import version
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        declared = tomllib.load(f)["project"]["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION)
    assert declared == VERSION == sandbox.__version__ == version("pysandbox")
    for flag in ("--version", "-V"):
        proc = run_cli(flag)
        assert proc.returncode == 0 and proc.stdout == "pysandbox %s\n" % VERSION


def test_lab_and_bench_dispatch():
    from sandbox.cli import _lazy_module
    for name in ("lab", "bench"):
        if _lazy_module(name) is None:
            proc = run_cli(name)
            assert "`pysandbox %s` is not part of this installation" % name in one_line_error(proc)
        else:
            # the module's options are checked by pysandbox's parser: a mistake is a usage error
            proc = run_cli(name, "--no-such-option")
            assert "unrecognized arguments: --no-such-option" in one_line_error(proc)


def test_hand_parser_and_argparse_agree():
    """`run` is parsed by hand (no argparse before exec); build_parser() describes the same
    options with the same arities, and both read a command line alike."""
    import argparse
    from sandbox.cli import build_parser, parse_run, RUN_OPTIONS, _KIND, _CANONICAL
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    run = sub.choices["run"]
    described = {}
    for action in run._actions:
        for option in action.option_strings:
            described[option] = action
    assert set(described) - {"-h", "--help"} == set(_KIND)
    assert len(RUN_OPTIONS) == len(set(_CANONICAL.values()))
    for option, kind in _KIND.items():
        action = described[option]
        assert action is described[_CANONICAL[option]], option   # an alias is the same option
        if kind == "flag":
            assert isinstance(action, argparse._StoreTrueAction), option
        elif kind in ("list", "mount"):
            assert isinstance(action, argparse._AppendAction), option
        else:
            assert isinstance(action, argparse._StoreAction) and action.nargs is None, option
        assert action.help, option
    argv = ["--profile", "strict", "--ro-bind", "/a:/b", "--tmpfs", "/t", "--bind=/c", "--env", "A=1", "--env",
            "B=2", "--memory", "64M", "--quiet", "--overlay", "--net", "none", "--timeout", "3", "--", "sh", "-c", "x"]
    hand = parse_run(argv)
    parsed = vars(parser.parse_args(["run"] + argv))
    assert hand.error is None
    assert hand.argv == ["sh", "-c", "x"] == [a for a in parsed["cmd"] if a != "--"]
    for option in set(_CANONICAL.values()):
        kind = _KIND[option]
        key = option[2:].replace("-", "_")
        if kind == "mount":
            assert [spec for k, spec in hand.mounts if k == option[2:]] == (parsed[key] or []), option
        elif kind == "list":
            assert hand.opts[option] == (parsed[key] or []), option
        elif kind == "flag":
            assert bool(hand.opts.get(option)) == parsed[key], option
        else:
            assert hand.opts.get(option) == parsed[key], option


def test_run_path_imports_no_argparse():
    """The parser and the verdict's writer stay off the run path (`re` is the runtime's
    business: rootless, sandbox/user.py's shutil.which pulls it in through fnmatch)."""
    code = ("import sys; from sandbox.cli import main; code = main(['run', '--profile', 'default', '--', '/bin/true']);"
            "print(code, sorted(m for m in ('argparse', 'json', 'rich', 'textwrap', 'shtab') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", "import sys; sys.path[:0] = %r; %s" % (
        [p for p in sys.path if p], code)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "0 []", (proc.stdout, proc.stderr)


# ---------------------------------------------------------------- man pages, completions

def _share():
    return os.path.join(os.path.dirname(sys.prefix), "share")


@pytest.mark.parametrize("name", ["pysandbox", "audit"])
def test_man_page_renders(name):
    page = os.path.join(_share(), "man", "man1", name + ".1")
    require(os.path.exists(page), "setup.sh generates %s" % page)
    require(shutil.which("man") is not None, "man-db (setup.sh installs it)")
    proc = subprocess.run(["man", "-l", "-P", "cat", page], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, MANWIDTH="100", LC_ALL="C.UTF-8"))
    assert proc.returncode == 0 and name.upper() + "(1)" in proc.stdout, proc.stderr
    assert "warning" not in proc.stderr.lower(), proc.stderr
    if name == "pysandbox":
        for text in ("EXIT STATUS", "125", "--memory", "pysandbox run", "EXAMPLES", "--ro-bind"):
            assert text in proc.stdout, text
    else:
        assert "--format" in proc.stdout


def test_man_finds_the_linked_pages():
    """With the default setup (PYSANDBOX_LINK=1) `man pysandbox` and `man audit` work from
    the system's man path; a private prefix (PYSANDBOX_LINK=0) links nothing."""
    for name in ("pysandbox", "audit"):
        link = "/usr/local/share/man/man1/%s.1" % name
        ours = os.path.join(_share(), "man", "man1", name + ".1")
        if not (os.path.islink(link) and os.path.realpath(link) == os.path.realpath(ours)):
            pytest.skip("this install did not link its man pages (PYSANDBOX_LINK=0)")
        proc = subprocess.run(["man", "-P", "cat", name], capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, MANWIDTH="100", LC_ALL="C.UTF-8"))
        assert proc.returncode == 0 and name.upper() + "(1)" in proc.stdout, proc.stderr


def _bash_complete(script, words):
    """Load the generated completion in a real bash and complete WORDS."""
    function = "_shtab_" + words[0]
    program = ('source %s; COMP_WORDS=(%s); COMP_CWORD=%d; COMP_LINE="%s"; COMP_POINT=${#COMP_LINE}; '
               '%s %s "${COMP_WORDS[-1]}" "${COMP_WORDS[-2]}"; printf "%%s\\n" "${COMPREPLY[@]}"') % (
        script, " ".join("'%s'" % w for w in words), len(words) - 1, " ".join(words), function, words[0])
    proc = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_bash_completion_completes():
    script = os.path.join(_share(), "bash-completion", "completions", "pysandbox")
    require(os.path.exists(script), "setup.sh generates %s" % script)
    assert subprocess.run(["bash", "-n", script]).returncode == 0
    assert _bash_complete(script, ["pysandbox", "ru"]) == ["run"]
    assert set(_bash_complete(script, ["pysandbox", "run", "--mem"])) == {"--memory", "--memory-swap"}
    assert set(_bash_complete(script, ["pysandbox", "profile", "l"])) == {"list", "lint"}
    audit_script = os.path.join(_share(), "bash-completion", "completions", "audit")
    assert subprocess.run(["bash", "-n", audit_script]).returncode == 0
    assert "--format" in _bash_complete(audit_script, ["audit", "--for"])


@pytest.mark.parametrize("name", ["pysandbox", "audit"])
def test_zsh_completion_parses(name):
    script = os.path.join(_share(), "zsh", "site-functions", "_" + name)
    require(os.path.exists(script), "setup.sh generates %s" % script)
    require(shutil.which("zsh") is not None, "zsh (setup.sh installs it)")
    proc = subprocess.run(["zsh", "-n", script], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    text = open(script).read()
    assert text.startswith("#compdef " + name)
    assert ("--memory" in text) == (name == "pysandbox")


# ---------------------------------------------------------------- packaging, libraries

@pytest.mark.slow
def test_wheel_carries_the_compiled_init(tmp_path):
    """`pip wheel` of the tree gives a platform wheel holding the compiled init (not only
    its source), and `pysandbox run` from a venv it is installed in uses it as PID 1."""
    require(shutil.which("gcc") is not None, "gcc (setup.sh installs it)")
    import zipfile
    src = tmp_path / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "build", "*.egg-info", "__pycache__", "pysandbox-init", "tests", "benchmarks"))
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    env = dict(os.environ, HOME=str(tmp_path), PIP_CACHE_DIR=str(tmp_path / "cache"))
    wheels = tmp_path / "wheels"
    proc = subprocess.run(pip + ["wheel", "--no-deps", "-w", str(wheels), str(src)], capture_output=True, text=True,
                          timeout=600, env=env)
    require(proc.returncode == 0 or "Could not find a version" not in proc.stderr, "PyPI for the build backend")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = os.listdir(wheels)
    assert re.fullmatch(r"pysandbox-[\d.]+-py3-none-linux_x86_64\.whl", wheel), wheel
    with zipfile.ZipFile(wheels / wheel) as z:
        names = z.namelist()
        info = z.getinfo("sandbox/pysandbox-init")
        assert z.read(info)[:4] == b"\x7fELF" and (info.external_attr >> 16) & 0o111
        assert "sandbox/init.c" not in names
        assert "sandbox/profiles/strict.toml" in names
    proc = subprocess.run(pip + ["install", str(wheels / wheel)], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = subprocess.run([str(venv / "bin" / "pysandbox"), "run", "--profile", "default", "--", "/bin/sh", "-c",
                           "tr '\\0' ' ' < /proc/1/cmdline"], capture_output=True, text=True, timeout=60, cwd="/")
    assert proc.returncode == 0 and proc.stdout.startswith("pysandbox-init "), (proc.stdout, proc.stderr)


def test_installed_package_has_the_init():
    import sandbox
    init = os.path.join(os.path.dirname(sandbox.__file__), "pysandbox-init")
    assert os.access(init, os.X_OK)
    proc, _ = run_in("default", "/bin/sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline")
    assert proc.stdout.startswith("pysandbox-init "), proc.stdout


# The test's own mount namespace: rootless, a user namespace that maps the caller to
# itself is made first (by the same process, which then holds CAP_SYS_ADMIN over the new
# mount namespace until it execs pysandbox as the unchanged, unprivileged caller).
_HIDE_LIBRARY = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, CLONE_NEWUSER, MS_BIND, MS_REC, MS_PRIVATE = 0x20000, 0x10000000, 4096, 16384, 1 << 18
uid, gid = os.getuid(), os.getgid()
def check(ret, what):
    if ret != 0:
        sys.exit("%s: %s" % (what, os.strerror(ctypes.get_errno())))
check(libc.unshare(CLONE_NEWNS | (CLONE_NEWUSER if uid else 0)), "unshare")
if uid:
    for name, text in (("setgroups", "deny"), ("uid_map", "%d %d 1" % (uid, uid)), ("gid_map", "%d %d 1" % (gid, gid))):
        with open("/proc/self/" + name, "w") as f:
            f.write(text)
check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "mount")
check(libc.mount(b"/dev/null", sys.argv[1].encode(), None, MS_BIND, None), "mount")
os.execv(sys.argv[2], sys.argv[2:])
"""


def _hidden_library_run(library, tmp_path):
    """Run `pysandbox run --profile strict -- /bin/true` where LIBRARY (a real file of the
    host) reads as an empty file: /dev/null bound over it in a mount namespace of our own."""
    real = os.path.realpath(library)
    require(os.path.exists(real), "%s is installed" % library)
    cmd = ["/usr/bin/python3", "-I", "-c", _HIDE_LIBRARY, real] + pysandbox_cmd() + [
        "run", "--profile", "strict", "--", "/bin/true"]
    # a cache of compiled filters must not hide the missing library: a fresh one
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYSANDBOX_CACHE_DIR=str(tmp_path / "cache")))


@pytest.mark.parametrize("library, package", [("/usr/lib/x86_64-linux-gnu/libseccomp.so.2", "libseccomp2"),
                                              ("/usr/lib/x86_64-linux-gnu/libcap-ng.so.0", "libcap-ng0")])
def test_missing_library_is_one_line_naming_the_package(tmp_path, library, package):
    proc = _hidden_library_run(library, tmp_path)
    require(not proc.stderr.startswith(("mount:", "unshare:")), "a private mount namespace (%s)" % proc.stderr.strip())
    message = one_line_error(proc)
    assert re.search(r"install (the Debian package |Debian's )%s\b" % package, message), message
    assert message.count(package) == 1, message


def test_missing_library_hint_unit():
    from sandbox.errors import missing_library_hint
    assert "libseccomp2" in missing_library_hint("cannot load: libseccomp.so.2: cannot open shared object file")
    assert "libcap-ng0" in missing_library_hint("libcap-ng is not available (ctypes: ...)")
    # a rule libseccomp refused is a profile problem, not a missing library
    assert missing_library_hint("seccomp.rules: libseccomp refused the rule for ptrace: Invalid argument") is None
