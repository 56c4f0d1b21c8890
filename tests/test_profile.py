"""Profile loading and validation: pure logic, no kernel needed."""
import pytest

from sandbox.errors import ProfileError
from sandbox.profile import load_profile, builtin_names, parse_size


def write(tmp_path, text, name="p.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_builtins_load_and_are_frozen():
    assert {"strict", "default", "permissive"} <= set(builtin_names())
    strict = load_profile("strict")
    assert strict.namespaces.user and strict.namespaces.time
    assert strict.environment.clear and strict.environment.get("pass") == ()
    assert strict.network.allow_host is False
    with pytest.raises(AttributeError):
        strict.namespaces.user = False
    with pytest.raises(AttributeError):
        strict.name = "x"
    with pytest.raises(TypeError):
        strict.environment.set["PATH"] = "/evil"


def test_permissive_is_marked_weak():
    assert "DELIBERATELY WEAK" in load_profile("permissive").description


def test_extends_merges_and_overrides(tmp_path):
    path = write(tmp_path, 'extends = "strict"\n[process]\nhostname = "grader"\n')
    p = load_profile(path)
    assert p.process.hostname == "grader"
    assert p.capabilities.keep == ()          # from strict
    assert p.filesystem.ro_bind == ("/usr",)  # from default, through strict
    assert p.sources[0] == path and p.sources[-1].endswith("default.toml")


def test_with_overrides_returns_new_profile():
    base = load_profile("default")
    changed = base.with_overrides({"process": {"hostname": "other"}})
    assert changed.process.hostname == "other" and base.process.hostname == "sandbox"


@pytest.mark.parametrize("text, key, line", [
    ('[namespaces]\nuser = true\nbogus = 1\n', "namespaces.bogus", 3),
    ('[process]\n\nhostname = 5\n', "process.hostname", 3),
    ('[limits]\nmemory = "lots"\n', "limits.memory", 2),
    ('[frobnicate]\nx = 1\n', "frobnicate", None),
    ('[network]\nmode = "bridge"\n', "network.mode", 2),
])
def test_errors_name_file_key_and_line(tmp_path, text, key, line):
    path = write(tmp_path, 'extends = "default"\n' + text)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    err = info.value
    assert err.source == path
    assert err.key == key
    if line:
        assert err.line == line + 1  # the extends line comes first
        assert str(err).startswith("%s:%d: %s: " % (path, line + 1, key))


def test_malformed_toml_names_line(tmp_path):
    path = write(tmp_path, '[process]\nhostname = "unterminated\n')
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert info.value.line == 2 and "malformed TOML" in str(info.value)


def test_unknown_profile_lists_known():
    with pytest.raises(ProfileError) as info:
        load_profile("nope")
    assert "unknown profile 'nope'" in str(info.value) and "strict" in str(info.value)


def test_impossible_combinations(tmp_path):
    with pytest.raises(ProfileError, match="host"):
        load_profile(write(tmp_path, 'extends = "strict"\n[namespaces]\nnet = false\n[network]\nmode = "host"\n'))
    with pytest.raises(ProfileError, match="namespaces.uts"):
        load_profile(write(tmp_path, 'extends = "default"\n[namespaces]\nuts = false\n', "b.toml"))
    with pytest.raises(ProfileError, match="keep"):
        load_profile(write(tmp_path, 'extends = "default"\n[capabilities]\nambient = ["SYS_ADMIN"]\n', "c.toml"))
    with pytest.raises(ProfileError, match="host uid 0"):
        load_profile(write(tmp_path, 'extends = "default"\n[idmap]\nroot_host_base = 0\n', "d.toml"))


def test_extends_loop(tmp_path):
    write(tmp_path, 'extends = "b.toml"\n', "a.toml")
    write(tmp_path, 'extends = "a.toml"\n', "b.toml")
    with pytest.raises(ProfileError, match="loops"):
        load_profile(str(tmp_path / "a.toml"))


def test_sizes():
    assert parse_size("64M") == 64 << 20
    assert parse_size("1.5g") == int(1.5 * (1 << 30))
    assert parse_size("512KiB") == 512 << 10
    assert parse_size(4096) == 4096
    assert parse_size("unlimited") == -1
    with pytest.raises(ValueError):
        parse_size("ten")
