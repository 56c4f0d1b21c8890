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
                       'readonly_paths = []\n' % docker)
    proc = run_cli("profile", "lint", str(profile))
    assert proc.returncode == 1
    # Docker's profile re-allows unshare/mount for CAP_SYS_ADMIN and allows x32/i386, TIOCSTI
    for finding in ("userns-create", "x32-abi", "i386-abi", "tiocsti", "cap-sys-admin", "proc-sys-rw",
                    "sensitive-mount"):
        assert finding in proc.stdout, (finding, proc.stdout)


def test_lint_runtime_socket(tmp_path):
    profile = tmp_path / "p.toml"
    profile.write_text('extends = "strict"\n[filesystem]\nro_bind = ["/usr", "/var/run/docker.sock"]\n')
    proc = run_cli("profile", "lint", str(profile))
    assert proc.returncode == 1 and "CRITICAL runtime-socket" in proc.stdout


@pytest.mark.parametrize("layer", ["seccomp", "capabilities", "landlock", "no_new_privs", "namespaces", "limits",
                                   "rlimits", "filesystem", "network", "user"])
def test_explain_every_layer(layer):
    proc = run_cli("explain", layer, "--profile", "strict")
    assert proc.returncode == 0, proc.stderr
    assert "What it does:" in proc.stdout and "What it stops:" in proc.stdout
    assert "What profile 'strict' sets:" in proc.stdout


def test_explain_unknown_layer():
    proc = run_cli("explain", "magic")
    assert proc.returncode == 2 and proc.stderr.startswith("pysandbox: unknown layer 'magic'")
