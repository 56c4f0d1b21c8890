"""Profile loading and validation: pure logic, no kernel needed."""
import os

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


# ---- immutable all the way down ------------------------------------------------------------

def test_every_attempt_to_change_a_profile_raises(tmp_path):
    p = load_profile(write(tmp_path, 'extends = "default"\n[filesystem]\n'
                           'mounts = [{ kind = "tmpfs", target = "/scratch", size = "8M" }]\n'))
    env_set = p.environment.set
    attempts = [
        lambda: setattr(p, "limits", None),
        lambda: delattr(p, "limits"),
        lambda: setattr(p.limits, "memory", 1),
        lambda: delattr(p.limits, "memory"),
        lambda: env_set.__setitem__("PATH", "/evil"),
        lambda: env_set.__delitem__("PATH"),
        lambda: p.filesystem.ro_bind.append("/etc"),
        lambda: p.filesystem.mounts.append(None),
        lambda: setattr(p.filesystem.mounts[-1], "target", "/etc"),
        lambda: p.filesystem.mounts[-1].options.__setitem__("size", 1),
        lambda: p.raw["filesystem"].__setitem__("cwd", "/"),
        lambda: setattr(p.seccomp, "default_action", ("allow",)),
        lambda: setattr(p, "_state", b""),
    ]
    for number, attempt in enumerate(attempts):
        with pytest.raises((AttributeError, TypeError)):
            attempt()
            pytest.fail("attempt %d changed the profile" % number)
    # augmented assignment: the operators exist on none of the frozen types, or make a new
    # object that cannot be stored back
    with pytest.raises(TypeError):
        env_set |= {"PATH": "/evil"}
    with pytest.raises(AttributeError):
        p.capabilities.keep += ("SYS_ADMIN",)
    with pytest.raises((TypeError, AttributeError)):
        p.environment.set |= {"PATH": "/evil"}
    assert p.environment.set["PATH"] == "/usr/local/bin:/usr/bin:/bin" and "SYS_ADMIN" not in p.capabilities.keep
    assert p.filesystem.mounts[-1].options["size"] == 8 << 20 and p.limits.memory == 0


# ---- every rule checked when the profile loads ---------------------------------------------

@pytest.mark.parametrize("text, key, line, message", [
    ('[filesystem]\nro_bind = ["/etc:/proc/x"]\n', "filesystem.ro_bind", 2, "refusing to mount over /proc/x"),
    ('[filesystem]\nro_bind = ["/etc:/a:b"]\n', "filesystem.ro_bind", 2, "more than one ':'"),
    ('[filesystem]\nbind = ["srv"]\n', "filesystem.bind", 2, "bind source must be an absolute path"),
    ('[filesystem]\nbind = ["/srv:data"]\n', "filesystem.bind", 2, "must be an absolute path without '..'"),
    ('[filesystem]\nbind = ["/srv:"]\n', "filesystem.bind", 2, "empty bind destination"),
    ('[filesystem]\ntmpfs = ["/dev/shm"]\n', "filesystem.tmpfs", 2, "refusing to mount over /dev/shm"),
    ('[filesystem]\ntmpfs = ["/"]\n', "filesystem.tmpfs", 2, "refusing to mount over /"),
    ('[filesystem]\nro_bind = ["/etc:/data"]\ntmpfs = ["/data"]\n', "filesystem.tmpfs", 3, "both mount /data"),
    ('[filesystem]\nro_bind = ["/etc:/data/in"]\ntmpfs = ["/data"]\n', "filesystem.tmpfs", 3,
     "tmpfs /data would hide ro-bind /etc:/data/in"),
    ('[filesystem]\nmounts = [{ kind = "overlay", target = "/x" }]\n', "filesystem.mounts", 2, "mount kind"),
    ('[filesystem]\nmounts = [{ kind = "bind", source = "/etc", size = "1M" }]\n', "filesystem.mounts", 2,
     "size applies to a tmpfs"),
    ('[filesystem]\nmounts = [{ kind = "tmpfs", target = "/x", mode = 99999 }]\n', "filesystem.mounts", 2,
     "mode must be within"),
    ('[filesystem]\nmounts = [{ kind = "tmpfs", target = "/x", size = 0 }]\n', "filesystem.mounts", 2,
     "positive size"),
    ('[filesystem]\netc = ["/root/.ssh"]\n', "filesystem.etc", 2, "relative to /etc"),
    ('[filesystem]\netc = ["../shadow"]\n', "filesystem.etc", 2, "relative to /etc"),
    ('[filesystem]\ntmp_size = 0\n', "filesystem.tmp_size", 2, "positive size"),
    ('[filesystem]\noverlay = true\n', "filesystem.overlay", 2, "needs filesystem.rootfs"),
    ('[filesystem]\nreplace = ["nope"]\n', "filesystem.replace", 2, "cannot replace unknown key 'nope'"),
    ('replace = ["nope"]\n', "replace", 1, "unknown section 'nope'"),
    ('[process]\nhostname = "%s"\n' % ("h" * 76), "process.hostname", 2, "at most 64 bytes"),
    ('[limits]\ncpu_weight = 0\n', "limits.cpu_weight", 2, "within 1..10000"),
    ('[limits]\nio_weight = 10001\n', "limits.io_weight", 2, "within 1..10000"),
    ('[limits]\npids = 5000000\n', "limits.pids", 2, "within 0..4194304"),
    ('[limits]\ncpus = 0.001\n', "limits.cpus", 2, "at least 0.01"),
    ('[limits]\ncpus = 1e8\n', "limits.cpus", 2, "at most 1000000"),
    ('[idmap]\nroot_host_base = 4294967000\n', "idmap.root_host_base", 2, "past the last host id"),
    ('[idmap]\nuid = -1\n', "idmap.uid", 2, "must be within 0..4294967294, got -1"),
    ('[environment]\nset = { A = "x\\u0000y" }\n', "environment.set", 2, "NUL"),
    ('[seccomp]\nallow = ["nosuchcall"]\n', "seccomp.allow", 2, "unknown syscall"),
])
def test_rules_refused_at_load_with_file_line_key(tmp_path, text, key, line, message):
    path = write(tmp_path, 'extends = "strict"\n' + text)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    err = info.value
    assert (err.source, err.key, err.line) == (path, key, line + 1), str(err)
    assert message in str(err)


def test_a_directory_is_not_a_profile(tmp_path):
    with pytest.raises(ProfileError) as info:
        load_profile(str(tmp_path))
    assert "is a directory" in str(info.value) and "no such" not in str(info.value)


def test_command_line_overrides_get_the_same_rules():
    strict = load_profile("strict")
    cases = [
        ({"limits": {"cpu_weight": 0}}, "--cpu-weight", "within 1..10000"),
        ({"process": {"hostname": "h" * 76}}, "--hostname", "at most 64 bytes"),
        ({"filesystem": {"mounts": [{"kind": "bind", "source": "/etc", "target": "/proc/x"}]}}, "--bind",
         "refusing to mount over /proc/x"),
        ({"filesystem": {"ro_bind": ["/etc:/a:b"]}}, "--ro-bind", "more than one ':'"),
        ({"filesystem": {"mounts": [{"kind": "tmpfs", "target": "/usr"}]}}, "--tmpfs", "both mount /usr"),
        ({"limits": {"memory": "lots"}}, "--memory", "expected a size"),
    ]
    for overrides, option, message in cases:
        with pytest.raises(ProfileError) as info:
            strict.with_overrides(overrides)
        assert info.value.source == "command line" and info.value.key == option, str(info.value)
        assert str(info.value).startswith("command line: %s: " % option) and message in str(info.value)


def test_overrides_append_mounts_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = load_profile(write(tmp_path, 'extends = "strict"\n[filesystem]\ntmpfs = ["/data"]\n'))
    p = base.with_overrides({"filesystem": {"mounts": [
        {"kind": "ro-bind", "source": "in", "target": "/data/in"},
        {"kind": "bind", "source": "/etc", "target": "/data/out"},
    ], "tmpfs": ["/data/scratch"]}})
    assert [(m.kind, m.source, m.target) for m in p.filesystem.mounts] == [
        ("ro-bind", "/usr", "/usr"), ("tmpfs", None, "/data"),
        ("ro-bind", str(tmp_path / "in"), "/data/in"),     # relative on the command line: from the cwd
        ("bind", "/etc", "/data/out"), ("tmpfs", None, "/data/scratch")]
    assert p.filesystem.mounts[2].origin == "command line" and p.filesystem.mounts[1].origin.endswith("p.toml")
    assert p.filesystem.ro_bind == ("/usr", str(tmp_path / "in") + ":/data/in")
    assert base.filesystem.mounts == (p.filesystem.mounts[0], p.filesystem.mounts[1])
    # the MountEntry shape is accepted as given (target None: the source's path; options nested)
    shaped = base.with_overrides({"filesystem": {"mounts": [
        {"kind": "bind", "source": "/etc", "target": None},
        {"kind": "tmpfs", "source": None, "target": "/data/t", "options": {"size": 4096, "mode": 0o755}}]}})
    assert [m.describe() for m in shaped.filesystem.mounts[2:]] == ["bind /etc", "tmpfs /data/t"]
    assert dict(shaped.filesystem.mounts[3].options) == {"size": 4096, "mode": 0o755}
    # overrides of overrides keep appending; a repeat of an inherited mount is dropped, not doubled
    again = p.with_overrides({"filesystem": {"ro_bind": ["/usr"]}})
    assert again.filesystem.mounts == p.filesystem.mounts


# ---- extends adds; replace is explicit -----------------------------------------------------

def test_extends_adds_to_inherited_lists_and_tables(tmp_path):
    p = load_profile(write(tmp_path, 'extends = "strict"\n'
                           '[filesystem]\nro_bind = ["/srv"]\nmasked_paths = ["/proc/cpuinfo"]\n'
                           '[environment]\nset = { EDITOR = "vi" }\npass = ["LANG"]\n'
                           '[capabilities]\nkeep = ["CHOWN"]\n'
                           '[seccomp]\nallow = ["ptrace"]\n'))
    strict = load_profile("strict")
    assert p.filesystem.ro_bind == ("/usr", "/srv")
    assert p.filesystem.masked_paths == strict.filesystem.masked_paths + ("/proc/cpuinfo",)
    assert dict(p.environment.set) == dict(strict.environment.set, EDITOR="vi")
    assert p.environment.get("pass") == ("LANG",) and p.capabilities.keep == ("CHOWN",)
    allowed = {name for name, action, args in p.seccomp.rules if action == ("allow",) and not args}
    strict_allowed = {name for name, action, args in strict.seccomp.rules if action == ("allow",) and not args}
    assert "ptrace" in allowed and "ptrace" not in strict_allowed and strict_allowed <= allowed
    assert set(p.seccomp.rules) - set(strict.seccomp.rules) == {("ptrace", ("allow",), ())}


def test_replace_is_explicit(tmp_path):
    p = load_profile(write(tmp_path, 'extends = "strict"\n'
                           '[filesystem]\nreplace = ["ro_bind", "masked_paths"]\nro_bind = ["/srv"]\n'
                           '[environment]\nreplace = ["set"]\nset = { PATH = "/bin" }\n'))
    assert p.filesystem.ro_bind == ("/srv",)
    assert p.filesystem.masked_paths == ()  # replaced and not given: empty, not the default set
    assert dict(p.environment.set) == {"PATH": "/bin"}
    assert (p.sources[0], "filesystem.ro_bind") in p.replaced
    whole = load_profile(write(tmp_path, 'extends = "default"\nreplace = ["seccomp"]\n'
                               '[seccomp]\ndeny = ["ptrace"]\n', "whole.toml"))
    assert whole.seccomp.default_action == ("allow",)  # a denylist of its own: nothing of default's allowlist
    assert whole.seccomp.rules == (("ptrace", ("errno", 1), ()),)


def test_a_derived_action_wins_over_the_inherited_one(tmp_path):
    # default allows ptrace by name; a derived deny must not make "two different actions"
    p = load_profile(write(tmp_path, 'extends = "default"\n[seccomp]\ndeny = ["ptrace"]\n'
                           'errno = { socket = "EACCES" }\n'))
    actions = {name: action for name, action, args in p.seccomp.rules if not args}
    assert actions["ptrace"] == ("errno", 1) and actions["socket"] == ("errno", 13)
    assert not any(name == "socket" for name, _, args in p.seccomp.rules if args)  # inherited rules dropped
    # an allow does not drop inherited argument rules: that would silently loosen strict's clone check
    path = write(tmp_path, 'extends = "strict"\n[seccomp]\nallow = ["clone"]\n', "loose.toml")
    with pytest.raises(ProfileError, match="clone has an unconditional allow and a conditional allow") as info:
        load_profile(path)
    assert info.value.key == "seccomp.rules" and info.value.source.endswith("strict.toml")
    assert str(info.value).endswith("(this [seccomp] also takes keys from %s)" % path)
    p = load_profile(write(tmp_path, 'extends = "strict"\n[seccomp]\nallow = ["clone"]\nreplace = ["rules"]\n',
                           "explicit.toml"))
    assert ("clone", ("allow",), ()) in p.seccomp.rules and not any(args for _, _, args in p.seccomp.rules)


def test_mounts_keep_the_order_of_the_file(tmp_path):
    parent = write(tmp_path, '[filesystem]\nro_bind = ["/usr"]\n', "parent.toml")
    p = load_profile(write(tmp_path, 'extends = "parent.toml"\n[filesystem]\n'
                           'tmpfs = ["/data"]\nro_bind = ["/etc:/data/etc"]\n'
                           'mounts = [{ kind = "tmpfs", target = "/data/etc/x", size = "1M", mode = 0o700 },'
                           ' { kind = "bind", source = "/a:b", target = "/c:d" }]\n'))
    assert [m.describe() for m in p.filesystem.mounts] == [
        "ro-bind /usr", "tmpfs /data", "ro-bind /etc:/data/etc", "tmpfs /data/etc/x", "bind /a:b:/c:d"]
    assert dict(p.filesystem.mounts[3].options) == {"size": 1 << 20, "mode": 0o700}
    assert p.sources[-1] == parent


def test_show_prints_the_resolved_profile_that_loads_back(tmp_path):
    from sandbox.tomlout import dumps
    import tomllib
    for text in ('extends = "strict"\n[filesystem]\nro_bind = ["/srv"]\n[seccomp]\nallow = ["ptrace"]\n',
                 'extends = "strict"\n[filesystem]\ntmpfs = ["/data"]\nro_bind = ["/etc:/data/etc"]\n'
                 'mounts = [{ kind = "tmpfs", target = "/data/x", size = "1M", mode = 0o700 }]\n'
                 '[process]\nhostname = "tab\\there"\n'):
        p = load_profile(write(tmp_path, text))
        shown = dumps(p)
        assert "extends" not in tomllib.loads(shown)
        again = load_profile(write(tmp_path, shown, "shown.toml"))
        for section in p.sections():
            assert getattr(again, section) == getattr(p, section), section
        assert again.filesystem.mounts == p.filesystem.mounts
    for name in builtin_names():
        p = load_profile(name)
        again = load_profile(write(tmp_path, dumps(p), "shown.toml"))
        for section in p.sections():
            if section == "seccomp" and p.seccomp is not None:
                assert again.seccomp.fingerprint() == p.seccomp.fingerprint(), name
            else:
                assert getattr(again, section) == getattr(p, section), (name, section)


def test_defaults_are_the_bottom_layer(tmp_path):
    from sandbox.profile import RUNTIME_MASKED_PATHS
    p = load_profile(write(tmp_path, '[filesystem]\nmasked_paths = ["/proc/cpuinfo"]\n'))
    assert p.filesystem.masked_paths == tuple(RUNTIME_MASKED_PATHS) + ("/proc/cpuinfo",)
    p = load_profile(write(tmp_path, '[filesystem]\nreplace = ["masked_paths"]\nmasked_paths = []\n', "b.toml"))
    assert p.filesystem.masked_paths == ()
    p = load_profile(write(tmp_path, 'replace = ["filesystem"]\n[filesystem]\ncwd = "/srv"\n', "c.toml"))
    assert p.filesystem.masked_paths == () and p.filesystem.cwd == "/srv" and p.filesystem.tmp_size == 64 << 20


# ---- the cache never serves a stale or mutable profile -------------------------------------

def test_cache_is_fresh_and_frozen(tmp_path, monkeypatch):
    monkeypatch.setenv("PYSANDBOX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PYSANDBOX_PROFILE_PATH", str(tmp_path / "search"))
    (tmp_path / "search").mkdir()
    path = write(tmp_path, 'extends = "strict"\n[process]\nhostname = "one"\n')
    first = load_profile(path)
    assert os.listdir(tmp_path / "cache")  # the parse was stored
    second = load_profile(path)
    assert second is not first and second.process.hostname == "one"
    with pytest.raises(AttributeError):
        second.process.hostname = "x"
    # an edit is seen at once, even one that keeps the size
    write(tmp_path, 'extends = "strict"\n[process]\nhostname = "two"\n')
    assert load_profile(path).process.hostname == "two"
    # a profile named like the one `extends` names, added earlier on the search path, wins at once
    write(tmp_path / "search", 'extends = "default"\n[process]\nhostname = "mine"\n', "strict.toml")
    mine = load_profile(path)
    assert mine.sources[1] == str(tmp_path / "search" / "strict.toml") and mine.process.hostname == "two"
    assert mine.capabilities.keep == load_profile("default").capabilities.keep


# ---- every key documented --------------------------------------------------------------------

def test_every_key_has_a_description_and_a_place_in_the_docs():
    from sandbox.profile import schema_keys, describe_key
    docs = os.path.join(os.path.dirname(__file__), "..", "docs", "profiles.md")
    with open(docs) as f:
        text = f.read()
    keys = schema_keys()
    assert len(keys) > 60 and "filesystem.mounts" in keys and "seccomp.allow" in keys
    for key in keys:
        description = describe_key(key)
        assert description and description.endswith((".", ")")), key
        assert "`%s`" % key in text, key
    assert describe_key("filesystem.nope") is None and describe_key("nope.x") is None
    assert describe_key("limits.cpu_weight").startswith("cgroup CPU weight 1..10000")


def test_every_key_has_an_example_that_checks():
    import tomllib
    from sandbox.profile import schema_keys, example_of, SCHEMA, Key
    from sandbox.profile.rules import check_value
    for name in schema_keys():
        section, _, key = name.rpartition(".")
        parsed = tomllib.loads(example_of(name))
        assert list(parsed) == [key], name
        spec = SCHEMA[section]
        if not isinstance(spec, Key) and key not in ("ro_bind", "bind", "tmpfs", "mounts"):
            check_value(spec[key], parsed[key], section, key)


def test_documented_layer_keys_are_the_layers_keys():
    from sandbox import seccomp, landlock
    from sandbox.profile import RAW_KEYS
    assert set(RAW_KEYS["seccomp"]) == set(seccomp.SECTION_KEYS)
    assert set(RAW_KEYS["landlock"]) == set(landlock._KEYS)


def test_frozen_parts_copy_and_pickle():
    import copy
    import pickle
    p = load_profile("strict")
    for value in (p.filesystem, p.limits, p.filesystem.mounts, p.environment.set):
        assert copy.deepcopy(value) == value and pickle.loads(pickle.dumps(value)) == value
    clone = copy.deepcopy(p.filesystem)
    with pytest.raises(AttributeError):
        clone.cwd = "/"


def test_mount_table_for_run_options(tmp_path, monkeypatch):
    from sandbox.profile import mount_table
    monkeypatch.chdir(tmp_path)
    assert mount_table("ro-bind", "/srv:/data") == {"kind": "ro-bind", "source": "/srv", "target": "/data"}
    assert mount_table("bind", "out") == {"kind": "bind", "source": str(tmp_path / "out"),
                                          "target": str(tmp_path / "out")}
    assert mount_table("tmpfs", "/scratch") == {"kind": "tmpfs", "target": "/scratch"}
    for kind, spec, message in (("ro-bind", "/etc:/a:b", "more than one ':'"), ("bind", ":/x", "empty bind source"),
                                ("tmpfs", "/proc/sys", "refusing to mount over /proc/sys"),
                                ("ro-bind", "/etc:relative", "absolute path")):
        with pytest.raises(ValueError, match=message):
            mount_table(kind, spec)


def test_a_profile_extending_its_own_name_builds_on_the_next_one(tmp_path, monkeypatch):
    search = tmp_path / "search"
    search.mkdir()
    monkeypatch.setenv("PYSANDBOX_PROFILE_PATH", str(search))
    monkeypatch.setenv("PYSANDBOX_CACHE_DIR", str(tmp_path / "cache"))
    write(search, 'extends = "strict"\n[process]\nhostname = "site"\n', "strict.toml")
    for _ in range(2):  # parsed, then from the cache
        p = load_profile("strict")
        assert p.sources[0] == str(search / "strict.toml") and p.sources[1].endswith("profiles/strict.toml")
        assert p.process.hostname == "site" and p.seccomp.locked  # the built-in strict underneath
    write(search, 'extends = "nosuch"\n', "nosuch.toml")
    with pytest.raises(ProfileError, match="no profile 'nosuch' further down the search path"):
        load_profile("nosuch")
