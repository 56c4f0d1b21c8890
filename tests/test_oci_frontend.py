"""pysandbox-oci's front-end: config.json validated before any fork (every bad input one clear
error), runc's flag syntax, the texts engines match, and --profile strict's refusals and layers.
The lifecycle against real engines is in tests/oci/."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from sandbox.oci import bundle as oci_bundle
from sandbox.oci import cgroups, cli, commands, spec, strict
from sandbox.oci.errors import SpecError
from pysandbox_common.containers import RUNTIME_MASKED_PATHS
from util import require

RUNTIME = os.path.join(sys.prefix, "bin", "pysandbox-oci")
BUSYBOX = "/bin/busybox"


def base_config(**changes):
    config = {
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs"},
        "process": {"args": ["sh"], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0},
                    "capabilities": {k: ["CAP_KILL"] for k in ("bounding", "effective", "permitted")}},
        "hostname": "c",
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")]},
    }
    for key, value in changes.items():
        config[key] = value
    return config


@pytest.fixture
def bundle_dir(tmp_path):
    os.makedirs(tmp_path / "rootfs" / "bin")
    return str(tmp_path)


def plan_of(bundle_dir, config, profile=""):
    with open(os.path.join(bundle_dir, "config.json"), "w") as f:
        json.dump(config, f)
    return oci_bundle.load(bundle_dir, profile)


def test_a_valid_config_becomes_a_frozen_plan(bundle_dir):
    plan = plan_of(bundle_dir, base_config())
    assert plan.rootfs == os.path.join(bundle_dir, "rootfs")
    assert [k for k, _ in plan.namespaces] == ["ipc", "uts", "network", "pid", "mount"]  # join order
    assert plan.process.capabilities["bounding"] == ("KILL",)
    assert {d.path for d in plan.devices} >= {"/dev/null", "/dev/zero", "/dev/tty"}  # default devices
    with pytest.raises(AttributeError):
        plan.hostname = "x"


@pytest.mark.parametrize("change, words", [
    ({"ociVersion": "2.0.0"}, "ociVersion"),
    ({"root": None}, "root: missing"),
    ({"process": None}, "process: missing"),
    ({"process": {"args": []}}, "process.args"),
    ({"process": {"args": ["sh"], "cwd": "relative"}}, "process.cwd"),
    ({"process": {"args": ["sh"], "capabilities": {"bounding": ["CAP_NOPE"]}}}, "unknown capability"),
    ({"process": {"args": ["sh"], "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 5}]}}, "soft 10 is above hard 5"),
    ({"process": {"args": ["sh"], "rlimits": [{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}]}}, "unknown rlimit"),
    ({"hostname": "x" * 65}, "longer than 64"),
    ({"mounts": [{"destination": "relative", "type": "tmpfs"}]}, "absolute path"),
    ({"mounts": [{"destination": "/x", "type": "bind", "source": "/no/such/source"}]}, "does not exist"),
    ({"mounts": [{"destination": "/x", "type": "tmpfs", "options": ["idmap"]}]}, "not supported"),
    ({"mounts": [{"destination": "/x", "type": "nosuchfs"}]}, "unknown filesystem type"),
    ({"hooks": {"prestart": [{"path": "relative/hook"}]}}, "absolute path"),
    ({"hooks": {"whenever": []}}, "unknown hook kind"),
])
def test_bad_config_is_one_clear_error(bundle_dir, change, words):
    with pytest.raises(SpecError) as caught:
        plan_of(bundle_dir, base_config(**change))
    assert words in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("linux, words", [
    ({"namespaces": [{"type": "pid"}, {"type": "pid"}]}, "given twice"),
    ({"namespaces": [{"type": "bogus"}]}, "expected one of"),
    ({"namespaces": [{"type": "network", "path": "/no/such/netns"}]}, "does not exist"),
    ({"namespaces": [{"type": "mount"}], "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]},
     "need a new user namespace"),
    ({"namespaces": [{"type": "user"}, {"type": "mount"}]}, "needs linux.uidMappings"),
    ({"namespaces": [{"type": "mount"}], "sysctl": {"kernel.shmmax": "1"}}, "setting it would change the host"),
    ({"namespaces": [{"type": "mount"}], "sysctl": {"net.ipv4.ip_forward": "1"}}, "setting it would change the host"),
    ({"namespaces": [{"type": "mount"}], "resources": {"nosuch": {}}}, "unknown resource"),
    ({"namespaces": [{"type": "mount"}], "seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x"}},
     "listenerPath"),
    ({"namespaces": [{"type": "mount"}], "rootfsPropagation": "sideways"}, "rootfsPropagation"),
])
def test_bad_linux_section_is_one_clear_error(bundle_dir, linux, words):
    config = base_config(hostname="")
    config["linux"] = linux
    with pytest.raises(SpecError) as caught:
        plan_of(bundle_dir, config)
    assert words in str(caught.value)


def test_hostname_needs_a_uts_namespace(bundle_dir):
    config = base_config()
    config["linux"]["namespaces"] = [{"type": "mount"}]
    with pytest.raises(SpecError, match="uts namespace"):
        plan_of(bundle_dir, config)


def test_mount_options_become_flags_data_and_propagation():
    m = spec._mount({"destination": "/d", "type": "tmpfs", "source": "tmpfs",
                     "options": ["nosuid", "nodev", "ro", "size=64k", "mode=1777", "rslave"]}, 0, "/b")
    assert m.flags == spec.MS_NOSUID | spec.MS_NODEV | spec.MS_RDONLY
    assert m.data == "size=64k,mode=1777"
    assert m.propagation == spec.PROPAGATION["rslave"]
    b = spec._mount({"destination": "/d", "type": "none", "source": "/tmp", "options": ["rbind", "ro", "rw"]}, 0, "/b")
    assert b.bind and b.flags & spec.MS_REC and not b.flags & spec.MS_RDONLY


@pytest.mark.parametrize("text, number", [("TERM", 15), ("SIGKILL", 9), ("9", 9), ("usr1", 10), (None, 15),
                                          ("RTMIN+1", None)])
def test_signals_by_name_and_number(text, number):
    import signal
    expected = number if number is not None else int(signal.SIGRTMIN) + 1
    assert commands.parse_signal(text) == expected


@pytest.mark.parametrize("text", ["NOPE", "0", "99", "SIG"])
def test_bad_signal_is_refused(text):
    with pytest.raises(SpecError, match="invalid signal"):
        commands.parse_signal(text)


def test_systemd_cgroups_path_is_the_directory_systemd_would_make():
    assert cgroups.expand_systemd("system.slice:docker:abc") == "/system.slice/docker-abc.scope"
    assert cgroups.expand_systemd("kubepods-burstable.slice:cri-containerd:x") == \
        "/kubepods.slice/kubepods-burstable.slice/cri-containerd-x.scope"
    with pytest.raises(SpecError):
        cgroups.expand_systemd("a:b")


def test_resources_become_cgroup_v1_writes_in_the_kernels_order():
    writes = cgroups.writes({"memory": {"limit": 1 << 26, "swap": 1 << 27}, "pids": {"limit": 0},
                             "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"},
                             "devices": [{"allow": False, "access": "rwm"},
                                         {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"}]})
    files = [(c, f, v) for c, f, v, _ in writes]
    assert files.index(("memory", "memory.limit_in_bytes", 1 << 26)) < \
        files.index(("memory", "memory.memsw.limit_in_bytes", 1 << 27))  # memsw never below memory
    assert ("pids", "pids.max", "max") in files
    assert files.index(("cpu", "cpu.cfs_period_us", 100000)) < files.index(("cpu", "cpu.cfs_quota_us", 50000))
    assert ("devices", "devices.deny", "a") in files and ("devices", "devices.allow", "c 1:3 rw") in files
    # the default devices and ptys stay usable whatever was denied (runc's rule)
    assert ("devices", "devices.allow", "c 136:* rwm") in files


def test_cli_parses_runc_flag_syntax():
    glob, command, options, positional = cli.parse(
        ["--root=/r", "--log", "/l", "--log-format", "json", "create", "-b", "/b", "--pid-file=/p", "id1"])
    assert (glob["--root"], glob["--log"], command, options["--bundle"], options["--pid-file"], positional) == \
        ("/r", "/l", "create", "/b", "/p", ["id1"])
    _, command, options, positional = cli.parse(["exec", "-t", "--env", "A=1", "-e", "B=2", "id", "sh", "-c", "x"])
    assert options["--env"] == ["A=1", "B=2"] and positional == ["id", "sh", "-c", "x"]
    _, command, options, positional = cli.parse(["kill", "--all", "id", "KILL"])
    assert options["--all"] is True and positional == ["id", "KILL"]


def oci(*args, env=None):
    require(os.path.exists(RUNTIME), "pysandbox-oci is not installed in this venv (setup.sh)")
    return subprocess.run([RUNTIME, *args], capture_output=True, text=True, timeout=60, env=env)


def busybox_bundle(path, args, rootless=False):
    """A bundle at `path`: a rootfs of static busybox and its applets, the config (base_config,
    or `spec --rootless`'s) running `args`. Returns (bundle, config); write_config() saves it."""
    require(os.path.exists(BUSYBOX), "busybox-static is not installed")
    (path / "rootfs" / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, path / "rootfs" / "bin" / "busybox")
    for applet in ("sh", "sleep", "cat", "readlink"):
        os.symlink("busybox", path / "rootfs" / "bin" / applet)
    if rootless:
        assert oci("spec", "--rootless", "--bundle", str(path)).returncode == 0
        config = json.loads((path / "config.json").read_text())
        config["process"]["terminal"] = False
    else:
        config = base_config()
    config["process"]["args"] = list(args)
    write_config(path, config)
    return path, config


def write_config(bundle, config):
    (bundle / "config.json").write_text(json.dumps(config))


def run_detached(root, bundle, cid, *flags):
    """`run --detach`: the container keeps the stdio it is given, so never a captured pipe."""
    return subprocess.run([RUNTIME, "--root", str(root), *flags, "run", "--detach", "--bundle", str(bundle), cid],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          timeout=30).returncode


@pytest.mark.parametrize("args, words", [
    (["frobnicate"], "unknown command"),
    (["--bogus", "list"], "unknown global flag"),
    (["create"], "a container id is required"),
    (["create", "--nope", "x"], "unknown flag --nope"),
    (["state", "../escape"], "invalid container id"),
    (["--log-format", "xml", "list"], "--log-format"),
    (["--profile", "lax", "create", "--bundle", "/tmp", "x"], "--profile"),
])
def test_bad_command_lines_are_one_line_errors(args, words, tmp_path):
    done = oci("--root", str(tmp_path), *args)
    assert done.returncode == 1
    assert words in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_errors_reach_the_json_log_with_the_texts_engines_match(tmp_path):
    log = tmp_path / "log.json"
    for command in (["state", "gone"], ["kill", "gone", "9"], ["start", "gone"], ["delete", "gone"]):
        done = oci("--root", str(tmp_path), "--log", str(log), "--log-format", "json", *command)
        assert done.returncode == 1
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) == 4
    assert all(e["level"] == "error" and "does not exist" in e["msg"] and e["time"] for e in lines)
    # delete --force of what is already gone succeeds (containerd's cleanup relies on it)
    assert oci("--root", str(tmp_path), "delete", "--force", "gone").returncode == 0


def test_create_refuses_a_bundle_it_cannot_read(tmp_path):
    done = oci("--root", str(tmp_path / "root"), "create", "--bundle", str(tmp_path / "nothing"), "c1")
    assert done.returncode == 1 and "not a directory" in done.stderr
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "config.json").write_text("{not json")
    done = oci("--root", str(tmp_path / "root"), "create", "--bundle", str(tmp_path / "b"), "c1")
    assert done.returncode == 1 and "not valid JSON" in done.stderr
    assert not os.path.exists(tmp_path / "root" / "c1")  # nothing left behind


def test_systemd_cgroup_driver_is_refused_clearly_without_systemd(tmp_path):
    require(not os.path.isdir("/run/systemd/system"), "systemd runs this host: the flag is honoured there")
    done = oci("--root", str(tmp_path), "--systemd-cgroup", "create", "--bundle", str(tmp_path), "c1")
    assert done.returncode == 1 and "systemd is not the init of this host" in done.stderr


def test_spec_writes_a_config_once_and_features_describe_the_runtime(tmp_path):
    assert oci("spec", "--bundle", str(tmp_path)).returncode == 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["ociVersion"].startswith("1.") and config["root"]["path"] == "rootfs"
    again = oci("spec", "--bundle", str(tmp_path))
    assert again.returncode == 1 and "exists" in again.stderr
    features = json.loads(oci("features").stdout)
    assert "strict" in features["annotations"]["org.pysandbox.profiles"]
    assert set(features["hooks"]) == set(spec.HOOK_KINDS)
    assert oci("--version").stdout.startswith("pysandbox-oci version")


# ---- --profile strict --------------------------------------------------------------------------

def docker_like(bundle_dir, **linux):
    config = base_config()
    config["linux"]["namespaces"].append({"type": "cgroup"})
    config["linux"].update(linux)
    return config


@pytest.mark.parametrize("change, words", [
    (lambda c: c["process"]["capabilities"].update(bounding=["CAP_SYS_ADMIN"]), "CAP_SYS_ADMIN"),
    (lambda c: c["linux"].update(namespaces=[{"type": t} for t in ("ipc", "uts", "mount")]),
     "shares the host's pid namespace"),
    (lambda c: c["linux"].update(namespaces=[{"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                                                 {"type": "mount"}, {"type": "network", "path": "/proc/self/ns/net"}]),
     "is the host's"),
    (lambda c: c["linux"].update(devices=[{"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11}]),
     "/dev/kmsg"),
    (lambda c: c["linux"].update(resources={"devices": [{"allow": True, "access": "rwm"}]}), "every device"),
    (lambda c: c["mounts"].append({"destination": "/h", "type": "bind", "source": "/", "options": ["rbind"]}),
     "host's /"),
    (lambda c: c["mounts"].append({"destination": "/p", "type": "bind", "source": "/proc/self", "options": ["bind"]}),
     "bind mount of the host's"),
])
def test_strict_refuses_what_reaches_the_host(bundle_dir, change, words):
    config = docker_like(bundle_dir)
    change(config)
    with pytest.raises(SpecError) as caught:
        plan_of(bundle_dir, config, "strict")
    assert "--profile strict refuses this container" in str(caught.value) and words in str(caught.value)


def test_strict_refuses_an_engine_socket_bind(bundle_dir, tmp_path):
    import socket
    sock_dir = tmp_path / "run"
    sock_dir.mkdir()
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_dir / "docker.sock"))
    try:
        for source in (sock_dir / "docker.sock", sock_dir):
            config = docker_like(bundle_dir)
            config["mounts"].append({"destination": "/s", "type": "bind", "source": str(source), "options": ["bind"]})
            with pytest.raises(SpecError, match="docker.sock"):
                plan_of(bundle_dir, config, "strict")
    finally:
        server.close()


@pytest.mark.root_only  # strict adds a many-id user namespace only as host root
def test_strict_adds_its_layers(bundle_dir):
    config = docker_like(bundle_dir, sysctl={"net.ipv4.ping_group_range": "0 2147483647"})
    config["annotations"] = {"org.pysandbox.profile": "strict"}  # the annotation asks as --profile would
    plan = plan_of(bundle_dir, config)
    assert plan.profile == "strict" and plan.idmap_rootfs and plan.ns("user") == (True, "")
    assert all(not values for values in plan.process.capabilities.values())
    assert plan.process.no_new_privileges and plan.extra_bpf and plan.landlock is not None
    assert set(RUNTIME_MASKED_PATHS) <= set(plan.masked_paths)
    assert plan.resources["pids"]["limit"] > 0 and plan.resources["memory"]["limit"] > 0
    assert dict(plan.sysctl)["net.ipv4.ping_group_range"] == "0 65535"
    limits = {name: (soft, hard) for _, name, soft, hard in plan.process.rlimits}
    assert limits["RLIMIT_CORE"] == (0, 0)
    # the default is exactly the spec: no layer added
    plain = plan_of(bundle_dir, docker_like(bundle_dir))
    assert plain.profile == "" and not plain.extra_bpf and plain.ns("user") == (False, "")


@pytest.mark.root_only
def test_strict_container_runs_on_its_own_host_ids_with_its_rootfs_owned(tmp_path):
    """A real run: strict's user namespace on a range of the pool, the rootfs idmapped so the
    container's root owns the image's files (a file it writes is the image owner's on disk), no
    capabilities, two filters; the range, the cgroups and the state are gone after delete."""
    bundle, config = busybox_bundle(tmp_path / "bundle", [
        "sh", "-c", "cat /proc/self/uid_map; grep -E 'CapEff|NoNewPrivs|Seccomp_filters' /proc/self/status; "
        "echo made > /written; ls -n /bin/busybox"])
    config["linux"]["namespaces"].append({"type": "cgroup"})
    config["linux"]["cgroupsPath"] = "/pysandbox-oci-test/strict-%d" % os.getpid()
    write_config(bundle, config)
    root = tmp_path / "state"
    done = oci("--root", str(root), "--profile", "strict", "run", "--bundle", str(bundle), "s1")
    assert done.returncode == 0, done.stderr
    inside, host, size = done.stdout.split("\n")[0].split()
    assert (inside, size) == ("0", str(strict.ID_RANGE)) and int(host) >= strict.ID_POOL_BASE
    assert "CapEff:\t0000000000000000" in done.stdout and "NoNewPrivs:\t1" in done.stdout
    assert "Seccomp_filters:\t1" in done.stdout  # strict's own (this spec has none)
    assert " 0 " in done.stdout.splitlines()[-1]  # the image's root-owned file is the container root's
    written = bundle / "rootfs" / "written"
    assert written.read_text() == "made\n" and os.stat(written).st_uid == 0
    assert not os.path.exists(root / "s1")
    slots = [n for n in os.listdir(strict.ID_POOL_DIR) if n.isdigit()]
    for name in slots:
        assert open(os.path.join(strict.ID_POOL_DIR, name)).read().strip() != str(root / "s1")
    # every cgroup directory create made, the parent it made too, is gone
    leftovers = [os.path.join(p, "pysandbox-oci-test") for _, p, _ in cgroups.hierarchies()
                 if os.path.exists(os.path.join(p, "pysandbox-oci-test"))]
    assert leftovers == []


def test_lifecycle_of_a_rootless_spec_as_any_user(tmp_path):
    """`spec --rootless` then run, as whoever runs the suite (root, and the unprivileged test user):
    the caller is root inside a user namespace of one id, the state lives under --root and is gone
    after the run."""
    bundle, _ = busybox_bundle(tmp_path / "b", ["sh", "-c", "cat /proc/self/uid_map; exit 3"], rootless=True)
    root = tmp_path / "state"
    done = oci("--root", str(root), "run", "--bundle", str(bundle), "rl")
    assert done.returncode == 3, done.stderr
    assert done.stdout.split() == ["0", str(os.geteuid()), "1"]
    assert os.listdir(root) == []


def test_a_root_directory_someone_else_can_write_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    (tmp_path / "rootfs").mkdir()
    (tmp_path / "config.json").write_text(json.dumps(base_config()))
    done = oci("--root", str(shared), "create", "--bundle", str(tmp_path), "x")
    assert done.returncode == 1 and "only it can write" in done.stderr


@pytest.mark.root_only
def test_update_changes_the_running_containers_cgroup(tmp_path):
    """`update --resources -` (what `docker update` sends) and the flag form, on a detached run;
    a limit the host cannot take is refused with the file it tried."""
    bundle, config = busybox_bundle(tmp_path / "b", ["sleep", "60"])
    config["linux"]["cgroupsPath"] = "/pysandbox-oci-test/update-%d" % os.getpid()
    config["linux"]["resources"] = {"memory": {"limit": 64 << 20}}
    write_config(bundle, config)
    root = str(tmp_path / "state")
    assert run_detached(root, bundle, "u1") == 0
    try:
        memory = [p for _, p, c in cgroups.hierarchies() if "memory" in c][0]
        limit_file = os.path.join(memory, "pysandbox-oci-test", "update-%d" % os.getpid(), "memory.limit_in_bytes")
        assert int(open(limit_file).read()) == 64 << 20
        done = subprocess.run([RUNTIME, "--root", root, "update", "--resources", "-", "u1"],
                              input=json.dumps({"memory": {"limit": 96 << 20}}), text=True, capture_output=True)
        assert done.returncode == 0, done.stderr
        assert int(open(limit_file).read()) == 96 << 20
        assert oci("--root", root, "update", "--memory", str(80 << 20), "u1").returncode == 0
        assert int(open(limit_file).read()) == 80 << 20
        refused = subprocess.run([RUNTIME, "--root", root, "update", "--resources", "-", "u1"],
                                 input=json.dumps({"unified": {"memory.max": "1G"}}), text=True, capture_output=True)
        assert refused.returncode == 1 and "memory.max" in refused.stderr
    finally:
        assert oci("--root", root, "delete", "--force", "u1").returncode == 0
    assert not os.path.exists(os.path.join(memory, "pysandbox-oci-test"))


@pytest.mark.root_only
def test_strict_pod_shares_the_sandbox_containers_user_namespace(tmp_path):
    """A Kubernetes pod as the CRI makes it: a sandbox container, then a container joining its
    network, ipc and uts namespaces by path. Under strict the sandbox gets its own user namespace
    and id range; the joining container enters that user namespace too (a namespace can only be
    joined from the user namespace that owns it) and gets a new pid namespace made inside it."""
    def make(name, args, joins=None):
        bundle, config = busybox_bundle(tmp_path / name, args)
        config["hostname"] = "" if joins else "pod"
        config["linux"]["namespaces"] = [{"type": "pid"}, {"type": "mount"}, {"type": "cgroup"}] + (
            [{"type": t, "path": "/proc/%d/ns/%s" % (joins, f)} for t, f in
             (("network", "net"), ("ipc", "ipc"), ("uts", "uts"))] if joins else
            [{"type": t} for t in ("network", "ipc", "uts")])
        write_config(bundle, config)
        return str(bundle)

    root = str(tmp_path / "state")
    sandbox_bundle = make("sandbox", ["sleep", "60"])
    assert run_detached(root, sandbox_bundle, "pause", "--profile", "strict") == 0
    try:
        pid = json.loads(oci("--root", root, "state", "pause").stdout)["pid"]
        app = make("app", ["sh", "-c", "cat /proc/self/uid_map; readlink /proc/self/ns/net; echo pid=$$"], joins=pid)
        done = oci("--root", root, "--profile", "strict", "run", "--bundle", app, "app")
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        with open("/proc/%d/uid_map" % pid) as f:
            assert lines[0].split() == f.read().split()  # one id range for the pod
        assert lines[1] == os.readlink("/proc/%d/ns/net" % pid)
        assert lines[2] == "pid=1"  # a pid namespace of its own, made inside the pod's user namespace
        # a host-made namespace cannot be joined under strict: refused with the reason
        host_joiner = make("hostjoin", ["true"], joins=os.getpid())
        refused = oci("--root", root, "--profile", "strict", "run", "--bundle", host_joiner, "hj")
        assert refused.returncode == 1 and "the host's" in refused.stderr
    finally:
        assert oci("--root", root, "delete", "--force", "pause").returncode == 0
    assert os.listdir(root) == []


def test_a_create_killed_half_way_leaves_what_delete_removes(tmp_path):
    """SIGKILL of `create` while the container is half set up (a prestart hook kills its
    parent, the runtime): the container's process sees the channel close and exits, and
    `delete --force` removes the state and the cgroups it had made."""
    bundle, config = busybox_bundle(tmp_path / "b", ["sh", "-c", "sleep 100"], rootless=True)
    config["hooks"] = {"prestart": [{"path": "/bin/sh", "args": ["sh", "-c", "kill -9 $PPID"]}]}
    config["linux"]["cgroupsPath"] = "/pysandbox-oci-test/killed-%d" % os.getpid()
    write_config(bundle, config)
    root = tmp_path / "state"
    done = oci("--root", str(root), "create", "--bundle", str(bundle), "k1")
    assert done.returncode == -9
    state = json.loads(oci("--root", str(root), "state", "k1").stdout)
    assert state["status"] == "stopped"
    created_state = json.loads((root / "k1" / "state.json").read_text())
    created = created_state["cgroups"]["created"]
    assert created_state["child_pid"] > 0
    assert oci("--root", str(root), "delete", "--force", "k1").returncode == 0
    assert os.listdir(root) == []
    assert [d for d in created if os.path.exists(d)] == []
    # the container's half-made process is gone (or only a zombie for init to reap)
    from sandbox.oci.state import start_time
    started, letter = start_time(created_state["child_pid"])
    assert started != created_state["child_start"] or letter in ("Z", "X")


def test_many_containers_at_once_leave_nothing(tmp_path):
    """40 `run`s of one bundle started together (distinct ids, one --root): every one exits with
    its own status, and the root, the cgroups and the id pool hold nothing afterwards."""
    bundle, config = busybox_bundle(tmp_path / "b", ["sh", "-c", 'exit "$CODE"'], rootless=True)
    write_config(bundle, config)
    root = tmp_path / "state"
    procs = []
    for i in range(40):
        config["process"]["env"] = ["PATH=/bin", "CODE=%d" % (i % 7)]
        sub = tmp_path / ("b%d" % i)
        sub.mkdir()
        os.symlink(bundle / "rootfs", sub / "rootfs")
        (sub / "config.json").write_text(json.dumps(config))
        procs.append(subprocess.Popen([RUNTIME, "--root", str(root), "run", "--bundle", str(sub), "m%d" % i],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    codes = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert [c for c, _ in codes] == [i % 7 for i in range(40)], [e for _, e in codes if e][:3]
    assert os.listdir(root) == []
    leftovers = [os.path.join(p, "pysandbox-oci", "m%d" % i) for _, p, _ in cgroups.hierarchies()
                 for i in range(40) if os.path.exists(os.path.join(p, "pysandbox-oci", "m%d" % i))]
    assert leftovers == []
    # the shared default parent goes with the last container, whichever container made it
    assert [p for _, p, _ in cgroups.hierarchies() if os.path.exists(os.path.join(p, "pysandbox-oci"))] == []


def test_seccomp_flags_are_honoured_or_refused(bundle_dir):
    config = base_config()
    config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_LOG"],
                                  "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_ERRNO"}]}
    plan = plan_of(bundle_dir, config)
    assert plan.seccomp_log and plan.seccomp_bpf
    config["linux"]["seccomp"]["flags"] = ["SECCOMP_FILTER_FLAG_SPEC_ALLOW"]
    with pytest.raises(SpecError, match="SPEC_ALLOW"):
        plan_of(bundle_dir, config)


def test_concurrent_calls_on_one_container(tmp_path):
    """The engine's shim and a user race: states, kills and ten deletes of one container at once.
    Every call answers cleanly and the container is removed exactly once."""
    bundle, config = busybox_bundle(tmp_path / "b", ["sleep", "100"], rootless=True)
    write_config(bundle, config)
    root = str(tmp_path / "state")
    assert run_detached(root, bundle, "race") == 0
    calls = [["state", "race"]] * 5 + [["kill", "race", "KILL"]] * 3 + [["delete", "--force", "race"]] * 10
    procs = [subprocess.Popen([RUNTIME, "--root", root, *c], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for c in calls]
    results = [(c, p.wait(timeout=60), p.stderr.read()) for c, p in zip(calls, procs)]
    for command, code, err in results:
        assert "Traceback" not in err
        if command[0] == "delete":
            assert code == 0, err
        else:  # before the delete, or after it: "does not exist" / "not running", never a crash
            assert code == 0 or "does not exist" in err or "not running" in err, err
    assert os.listdir(root) == []


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, prefix + (index,))


def test_any_wrong_type_anywhere_is_a_spec_error_never_a_crash(bundle_dir):
    """Every field of a full config replaced by every JSON type in turn: the front-end accepts it
    or says what is wrong (SpecError), and nothing else escapes (no TypeError, KeyError...)."""
    import copy
    config = base_config()
    config["linux"].update(resources={"memory": {"limit": 1 << 26}, "pids": {"limit": 10},
                                      "devices": [{"allow": False, "access": "rwm"}]},
                           sysctl={"net.ipv4.ip_forward": "0"}, maskedPaths=["/proc/kcore"],
                           readonlyPaths=["/proc/sys"], devices=[{"path": "/dev/fuse", "type": "c", "major": 10,
                                                                  "minor": 229}],
                           seccomp={"defaultAction": "SCMP_ACT_ALLOW",
                                    "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_ERRNO"}]})
    config["process"].update(rlimits=[{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 10}], terminal=False,
                             consoleSize={"height": 1, "width": 1}, oomScoreAdj=0)
    config["hooks"] = {"prestart": [{"path": "/bin/true", "args": ["true"], "timeout": 1}]}
    config["mounts"].append({"destination": "/t", "type": "tmpfs", "source": "tmpfs", "options": ["size=1k"]})
    tried = 0
    crashes = {}
    for path in list(_paths(config)):
        if not path:
            continue
        for replacement in (None, 7, -1, "x", "", [], {}, True, [1], {"a": 1}):
            mutated = copy.deepcopy(config)
            target = mutated
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = replacement
            tried += 1
            try:
                plan = spec.from_config(mutated, bundle_dir)
                cgroups.writes(plan.resources)  # what create would write, checked at load
            except SpecError:
                pass
            except Exception as e:  # noqa: BLE001 - the point: collect every other escape
                crashes.setdefault(type(e).__name__ + ": " + str(e)[:80], path + (repr(replacement),))
    assert tried > 500
    assert crashes == {}, "\n".join("%s at %s" % kv for kv in crashes.items())


@pytest.mark.root_only
def test_audit_finds_a_pysandbox_oci_container_by_id_and_pid(tmp_path):
    """A container run with pysandbox-oci under its default root is an audit target by its id and
    by its PID, named with the runtime that made it."""
    bundle, config = busybox_bundle(tmp_path / "b", ["sleep", "60"])
    write_config(bundle, config)
    cid = "audit-oci-%d" % os.getpid()
    assert subprocess.run([RUNTIME, "run", "--detach", "--bundle", str(bundle), cid], stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30).returncode == 0  # default root
    try:
        pid = json.loads(oci("state", cid).stdout)["pid"]
        audit = os.path.join(sys.prefix, "bin", "audit")
        for target in (cid, str(pid)):
            done = subprocess.run([audit, target, "--format", "json"], capture_output=True, text=True, timeout=60)
            report = json.loads(done.stdout)
            assert report["target"]["runtime"] == "pysandbox-oci", report["target"]
            assert report["target"]["container_id"] == cid
            assert "pysandbox-oci" in report["target"]["runtime_version"]
    finally:
        assert oci("delete", "--force", cid).returncode == 0


def test_ps_lists_the_container_with_or_without_a_cgroup(tmp_path):
    """As root the container's cgroup says which processes are its; rootless without delegated
    cgroups its own pid namespace does (never an empty answer for a running container)."""
    bundle, config = busybox_bundle(tmp_path / "b", ["sleep", "60"], rootless=True)
    write_config(bundle, config)
    root = str(tmp_path / "state")
    assert run_detached(root, bundle, "ps1") == 0
    try:
        pid = json.loads(oci("--root", root, "state", "ps1").stdout)["pid"]
        done = oci("--root", root, "ps", "--format", "json", "ps1")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == [pid]
    finally:
        assert oci("--root", root, "delete", "--force", "ps1").returncode == 0


KEYRING_PROBE = ("import ctypes; libc = ctypes.CDLL(None, use_errno=True); "
                 "print(libc.syscall(250, 0, -3, 0))")  # keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING)


def test_each_container_gets_a_session_keyring_of_its_own(tmp_path):
    """As runc: a new session keyring per container (the caller's keys are not the container's);
    --no-new-keyring keeps the caller's."""
    require(os.path.exists("/usr/bin/python3"), "Debian's python3 is not installed")
    bundle, config = busybox_bundle(tmp_path / "b", ["/usr/bin/python3", "-I", "-S", "-c", KEYRING_PROBE],
                                    rootless=True)
    for path in ("/usr", "/lib", "/lib64"):
        if os.path.isdir(path):
            config["mounts"].append({"destination": path, "type": "bind", "source": path,
                                     "options": ["rbind", "ro"]})
    write_config(bundle, config)
    root = str(tmp_path / "state")
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    mine = libc.syscall(250, 0, -3, 1)  # create ours if the test runs without one
    fresh = oci("--root", root, "run", "--bundle", str(bundle), "k1")
    kept = oci("--root", root, "run", "--no-new-keyring", "--bundle", str(bundle), "k2")
    assert fresh.returncode == 0 and kept.returncode == 0, (fresh.stderr, kept.stderr)
    assert int(fresh.stdout) > 0 and int(fresh.stdout) != mine
    assert int(kept.stdout) == mine
