"""`pysandbox profile lint` and `pysandbox explain`."""
import pytest

from util import run_cli


def test_strict_lints_clean():
    proc = run_cli("profile", "lint", "strict")
    assert proc.returncode == 0, proc.stdout
    assert "clean: no dangerous settings found" in proc.stdout


def test_permissive_fails_lint_with_reasons():
    proc = run_cli("profile", "lint", "permissive")
    assert proc.returncode == 1
    for finding in ("seccomp-off", "net-host", "cap-sys-admin", "proc-sys-rw", "nnp-off", "pids-missing"):
        assert finding in proc.stdout, finding


def test_lint_reads_the_compiled_filter(tmp_path):
    """An imported Docker profile allows what Docker allows: lint says so from the filter itself."""
    from util import reference_seccomp
    docker = reference_seccomp("docker")
    profile = tmp_path / "p.toml"
    profile.write_text('extends = "default"\n[seccomp]\nimport = "%s"\n[capabilities]\nkeep = ["SYS_ADMIN"]\n'
                       '[process]\nnew_session = false\n[filesystem]\nbind = ["/run:/hostrun"]\n'
                       'replace = ["readonly_paths"]\n' % docker)
    proc = run_cli("profile", "lint", str(profile))
    assert proc.returncode == 1
    # Docker's profile re-allows unshare/mount for CAP_SYS_ADMIN and allows x32/i386, TIOCSTI
    for finding in ("userns-create", "x32-abi", "i386-abi", "tiocsti", "cap-sys-admin", "proc-sys-rw",
                    "sensitive-mount"):
        assert finding in proc.stdout, (finding, proc.stdout)


def test_lint_runtime_socket(tmp_path):
    import os
    from sandbox.errors import ProfileError
    profile = tmp_path / "p.toml"
    profile.write_text('extends = "strict"\n[filesystem]\nro_bind = ["/usr", "/var/run/docker.sock"]\n')
    proc = run_cli("profile", "lint", str(profile))
    assert "CRITICAL runtime-socket" in proc.stdout
    # without a Docker daemon the socket is missing: `run` would refuse the bind, so lint does too
    exists = os.path.exists("/var/run/docker.sock")
    assert proc.returncode == (1 if exists else ProfileError.exit_code), proc.stdout
    assert exists or "ERROR    filesystem.mounts" in proc.stdout


def _lint(tmp_path, text):
    profile = tmp_path / "p.toml"
    profile.write_text(text)
    return run_cli("profile", "lint", str(profile))


def test_lint_warns_when_usr_is_replaced_away(tmp_path):
    proc = _lint(tmp_path, 'extends = "strict"\n[filesystem]\nreplace = ["ro_bind"]\nro_bind = ["%s:/data"]\n'
                 % tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "MEDIUM   no-usr" in proc.stdout and "replaces the inherited filesystem.ro_bind" in proc.stdout
    assert "clean" not in proc.stdout


def test_lint_warns_on_an_allowlist_without_basic_syscalls(tmp_path):
    proc = _lint(tmp_path, 'extends = "strict"\n[seccomp]\nreplace = ["allow"]\nallow = ["read", "write"]\n')
    assert "seccomp-basic-missing" in proc.stdout and "execve" in proc.stdout, proc.stdout + proc.stderr
    # adding to strict's allowlist keeps @basic: no such warning
    proc = _lint(tmp_path, 'extends = "strict"\n[seccomp]\nallow = ["ptrace"]\n')
    assert "seccomp-basic-missing" not in proc.stdout and "no-usr" not in proc.stdout, proc.stdout


def test_lint_warns_without_path(tmp_path):
    proc = _lint(tmp_path, 'extends = "strict"\n[environment]\nreplace = ["set"]\nset = { HOME = "/tmp" }\n')
    assert "LOW      no-path" in proc.stdout, proc.stdout + proc.stderr
    assert "no-path" not in run_cli("profile", "lint", "strict").stdout


def test_lint_and_show_refuse_what_run_refuses(tmp_path):
    from sandbox.errors import ProfileError
    profile = tmp_path / "p.toml"
    profile.write_text('extends = "strict"\n[filesystem]\nro_bind = ["/etc:/proc/x"]\n')
    for command in ("show", "lint"):
        proc = run_cli("profile", command, str(profile))
        assert proc.returncode == ProfileError.exit_code, (command, proc.stdout)
        assert proc.stderr == "pysandbox: %s:3: filesystem.ro_bind: refusing to mount over /proc/x (the runtime " \
            "builds it)\n" % profile, proc.stderr
    proc = run_cli("run", "--profile", str(profile), "--", "/bin/true")
    assert proc.returncode == ProfileError.exit_code and ":3: filesystem.ro_bind: " in proc.stderr


def test_lint_reports_a_missing_bind_source(tmp_path):
    from sandbox.errors import ProfileError
    proc = _lint(tmp_path, 'extends = "strict"\n[filesystem]\nro_bind = ["%s/absent:/data"]\n' % tmp_path)
    assert proc.returncode == ProfileError.exit_code
    assert "ERROR    filesystem.mounts" in proc.stdout and "absent does not exist" in proc.stdout


@pytest.mark.parametrize("layer", ["seccomp", "capabilities", "landlock", "no_new_privs", "namespaces", "limits",
                                   "rlimits", "filesystem", "network", "user"])
def test_explain_every_layer(layer):
    proc = run_cli("explain", layer, "--profile", "strict")
    assert proc.returncode == 0, proc.stderr
    assert "What it does:" in proc.stdout and "What it stops:" in proc.stdout
    assert "What profile 'strict' sets:" in proc.stdout


def test_explain_unknown_layer():
    proc = run_cli("explain", "magic")
    assert proc.returncode == 125 and proc.stderr.startswith("pysandbox: unknown layer, profile key or audit check 'magic'")
    assert proc.stderr.count("\n") == 1


def test_a_directory_profile_says_so(tmp_path):
    for command in (("profile", "show"), ("profile", "lint"), ("run", "--profile")):
        proc = run_cli(*command, str(tmp_path), *(("--", "/bin/true") if command[0] == "run" else ()))
        assert proc.returncode != 0 and "is a directory" in proc.stderr and "no such" not in proc.stderr, proc.stderr


def test_lint_warns_when_cwd_is_nowhere(tmp_path):
    proc = _lint(tmp_path, 'extends = "strict"\n[filesystem]\ncwd = "/work"\n')
    assert "MEDIUM   cwd-missing" in proc.stdout, proc.stdout + proc.stderr
    proc = _lint(tmp_path, 'extends = "strict"\n[filesystem]\ncwd = "/work/src"\nro_bind = ["%s:/work"]\n' % tmp_path)
    assert "cwd-missing" not in proc.stdout, proc.stdout
    proc = _lint(tmp_path, 'extends = "strict"\n[filesystem]\ncwd = "/tmp/proj"\n')   # /tmp starts empty
    assert "cwd-missing" in proc.stdout, proc.stdout


def test_explain_covers_every_profile_key_and_every_audit_check():
    """Every key of the schema and every audit check has an explanation (one process for all:
    the explain module is called in-process, as the CLI calls it)."""
    import contextlib
    import io
    from sandbox import explain
    from sandbox.cli import explain_audit_check
    from sandbox.profile.schema import SCHEMA, Key
    from audit.checks import all_checks
    names = []
    for section, spec in SCHEMA.items():
        if section and not isinstance(spec, Key):
            names += ["%s.%s" % (section, key) for key in spec]
    assert len(names) > 40
    for name in names + [c.id for c in all_checks()]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert explain.main([name, "--profile", "strict"], explain_check=explain_audit_check) == 0, name
        text = out.getvalue()
        assert name in text and len(text) > 60, (name, text)
        if "." in name:
            assert "What it is:" in text, (name, text)


def test_explain_a_key_shows_the_profiles_value():
    proc = run_cli("explain", "limits.memory", "--profile", "strict")
    assert proc.returncode == 0 and "memory = 536870912" in proc.stdout and "Example" in proc.stdout, proc.stdout
    proc = run_cli("explain", "cap-sys-admin")
    assert proc.returncode == 0 and "cap-sys-admin" in proc.stdout and "Fix:" in proc.stdout, proc.stdout
