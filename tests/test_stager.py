"""The compiled child (sandbox/stager.py, sandbox/stager.c) against the Python stages.

Every run of a plan the stager covers goes through it; these tests check that it is used,
that what the command sees is the same as under the Python stages, and that it fails
closed and names the stage, as the Python stages do.
"""
import json
import os
import time

import pytest

from sandbox import Sandbox, load_profile, native, stager
from sandbox.errors import SetupError
from util import require

PROBE = r"""
import json, os
def status():
    out = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp", "Seccomp_filters"):
            out[key] = value.strip()
    return out
def listing(path):
    try:
        return sorted(os.listdir(path))
    except OSError as e:
        return "error %d" % e.errno
def loopback():
    import socket
    try:
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen()
        client = socket.create_connection(server.getsockname(), timeout=2)
        client.close()
        server.close()
        return "up"
    except OSError as e:
        return "error %d" % e.errno
mounts = sorted(line.split()[4] + " " + line.split()[5].split(",")[0] for line in open("/proc/self/mountinfo"))
print(json.dumps({
    "ids": [os.getuid(), os.getgid(), os.getgroups()],
    "status": status(),
    "root": listing("/"),
    "dev": listing("/dev") if os.path.isdir("/dev") else None,
    "mounts": mounts,
    "hostname": os.uname().nodename,
    "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
    "cwd": os.getcwd(),
    "env": sorted(os.environ),
    "sid": os.getsid(0) == os.getpid(),
    "pid": os.getpid(),
    "ns": sorted(os.listdir("/proc/self/ns")),
    "limits": open("/proc/self/limits").read(),
    "init": open("/proc/1/cmdline", "rb").read().rstrip(b"\0").decode(),
    "user_limits": {name: open("/proc/sys/user/" + name).read().strip() for name in sorted(os.listdir("/proc/sys/user"))},
    "loopback": loopback(),
}))
"""


def observe(profile, executor):
    box = Sandbox(load_profile(profile), executor="python" if executor == "python" else None)
    box.plan()
    views = []
    for _ in range(2):  # the second run of a thread goes through its zygote
        result = box.run(["python3", "-I", "-S", "-c", PROBE], capture_output=True, text=True)
        assert result.exit_code == 0, (result.stage, result.message, result.stderr)
        views.append(json.loads(result.stdout))
    box.close()
    inits = [view.pop("init") for view in views]
    assert views[0] == views[1]
    views[0]["init"] = inits[0]
    return views[0], box


def needs_stager():
    # setup.sh and setup.py build it: in CI a missing stager is a failure, not a skip
    require(os.path.exists(stager.BINARY), "the stager is not built (%s)" % stager.BINARY)


def test_header_is_generated_from_the_op_table():
    path = os.path.join(os.path.dirname(stager.__file__), "stager.h")
    if not os.path.exists(path):
        path = os.path.join(os.path.dirname(__file__), "..", "sandbox", "stager.h")
    with open(path) as f:
        assert f.read() == stager.c_header(), "sandbox/stager.h is stale: python3 -m sandbox.stager > sandbox/stager.h"


def test_every_child_stage_has_a_compiled_form():
    # A stage added to CHILD_STAGES without a compiler makes every plan fall back to the
    # Python stages (never a run without it): this names the gap instead.
    from sandbox.stages import CHILD_STAGES
    missing = [(process, name) for process, name, _ in CHILD_STAGES if (process, name) not in stager.COMPILERS]
    assert missing == []


def test_encoding_round_trip_shape():
    data = stager.encode([("clone", 5), ("stage", "mount"), ("mount", None, "/x", "tmpfs", 1, "mode=0755", "m")])
    assert data[:4] == b"PSBX" and int.from_bytes(data[4:8], "little") == stager.VERSION
    code = int.from_bytes(data[8:12], "little")
    assert code == stager.CODES["clone"] and int.from_bytes(data[12:16], "little") == 1
    # a number: 8 bytes + NUL
    assert int.from_bytes(data[16:20], "little") == 9
    with pytest.raises(stager.Unsupported):
        stager.encode([("stage", "a\0b")])


@pytest.mark.parametrize("profile", ["strict", "default"])
def test_strict_and_default_runs_use_the_stager(profile):
    needs_stager()
    box = Sandbox(load_profile(profile))
    assert box.plan() is not None
    assert box.stager_reason is None
    process = box.start(["/bin/true"])
    assert process.executor == "stager"
    assert process.wait().exit_code == 0
    box.close()


@pytest.mark.parametrize("profile", ["strict", "default", "permissive"])
def test_the_command_sees_the_same_sandbox_under_both(profile):
    """Ids, capability sets, no_new_privs, seccomp, the root's listing, /dev, the mount
    table, hostname, descriptors, cwd, environment, session, namespaces and rlimits."""
    needs_stager()
    native_view, native_box = observe(profile, "stager")
    python_view, python_box = observe(profile, "python")
    assert "executor" in python_box.stager_reason
    # the C init in both; the Python stages exec it with its arguments
    assert native_view.pop("init") == "pysandbox-init"
    assert python_view.pop("init").startswith("pysandbox-init")
    assert native_view == python_view


def test_verify_failure_in_the_stager_names_the_layer_and_stops_the_command():
    needs_stager()
    box = Sandbox(load_profile("strict"))
    plan = box.plan()
    expect = {key: dict(value) if isinstance(value, dict) else value for key, value in plan.verify.items()}
    expect["caps"]["CapBnd"] = 1
    box._plan = plan.replace(verify=expect)
    process = box.start(["/bin/echo", "should not run"])
    assert process.executor == "stager"
    result = process.wait()
    box.close()
    assert result.exit_code == 125 and result.stage == "verify: capabilities", (result.stage, result.message)
    assert "CapBnd" in result.message


def test_unknown_expectation_falls_back_instead_of_skipping():
    plan = Sandbox(load_profile("strict")).plan()
    expect = dict(plan.verify, something_new=True)
    with pytest.raises(stager.Unsupported, match="something_new"):
        stager.compile(plan.replace(verify=expect))


def test_exec_failure_codes_and_message():
    needs_stager()
    box = Sandbox(load_profile("strict"))
    result = box.run(["/nonexistent/program"], capture_output=True)
    assert result.exit_code == 127 and result.stage == "exec", (result.stage, result.message)
    assert "/nonexistent/program" in result.message
    result = box.run(["/etc/passwd"], capture_output=True)
    assert result.exit_code == 126 and result.stage == "exec"
    box.close()


def test_a_failing_mount_is_reported_under_its_stage(tmp_path):
    needs_stager()
    source = tmp_path / "gone"
    source.mkdir()
    box = Sandbox(load_profile("strict"), ro_binds=["%s:/data" % source])
    box.plan()
    assert box.stager_reason is None
    source.rmdir()  # after planning: the run's mount cannot find it
    try:
        result = box.run(["/bin/true"])
    except SetupError as error:  # as root the supervisor opens the source (stage "sources")
        assert error.stage == "sources" and str(source) in str(error), error
    else:  # rootless the child binds it by path: the compiled mount stage says so
        assert result.exit_code == 125 and result.stage == "mount", (result.stage, result.message)
        assert str(source) in result.message and "No such file" in result.message, result.message
    box.close()


def test_recording_fake_gets_the_python_stages(monkeypatch):
    from sandbox.stages import Launch
    launch = Launch(["/bin/true"], {}, "/")
    assert stager.usable_for(launch)
    monkeypatch.setattr(native, "run_stage", lambda *a: None)
    assert not stager.usable_for(launch)


_HEAD = stager.MAGIC + stager.VERSION.to_bytes(4, "little")
BAD_PROGRAMS = [
    _HEAD + b"\x05\x00\x00\x00\xff\xff\xff\xff",                  # an absurd argument count
    stager.encode([("clone", 0), ("mount", "only one")]),            # fewer arguments than mount reads
    stager.encode([("clone", "not a number")]),                      # a string where a number goes
    _HEAD + b"\xff\x00\x00\x00\x00\x00\x00\x00",                  # no such operation
    stager.MAGIC + (stager.VERSION - 1).to_bytes(4, "little"),      # another version
]


@pytest.mark.parametrize("program", BAD_PROGRAMS)
def test_stager_with_bad_program_fails_cleanly(program):
    needs_stager()
    import subprocess
    r, w = os.pipe()
    os.write(w, program)
    os.close(w)
    msg_r, msg_w = os.pipe()
    # PROGRAM_FD BIRTH_FD, then parse_run's fields (stager.run_fields)
    from sandbox.stages import Launch
    launch = Launch(["/bin/true"], {}, "/")
    launch.msg_w, launch.go_r = msg_w, 0
    fields = stager.run_fields(launch, None, str, (None, None, None))
    proc = subprocess.run([stager.BINARY, str(r), "1", *fields],
                          pass_fds=(r, msg_w), capture_output=True)
    os.close(msg_w)
    message = os.read(msg_r, 4096).decode()
    assert proc.returncode == 125 and message.startswith("E\tclone\t22\t"), (proc.returncode, message)
    os.close(r)
    os.close(msg_r)


def _malformed(fields):
    """The run's fields spoiled four ways: the old delimited command, a count that is not a
    number, a count past the end, and a field after the last one."""
    end = fields.index("--")
    yield "uncounted command", fields[:end + 1] + fields[end + 2:]
    yield "count with a suffix", fields[:end + 1] + [fields[end + 1] + "x"] + fields[end + 2:]
    yield "count past the end", fields[:end + 1] + ["99"] + fields[end + 2:]
    yield "unknown trailing field", fields + ["--surprise"]


def test_stager_refuses_malformed_fields_and_says_so_on_the_channel():
    """A stager that cannot read the run's fields (a supervisor of another version) puts one
    error on the run's channel and exits 125, instead of guessing where the command ends."""
    needs_stager()
    import subprocess
    from sandbox.stages import Launch
    program, reason = stager.prepare(Sandbox(load_profile("strict")).plan())
    assert program is not None, reason
    launch = Launch(["/bin/echo", "a", "b"], {}, "/")
    try:
        for label, fields in _malformed(stager.run_fields(launch, None, str, (None, None, None))):
            msg_r, msg_w = os.pipe()
            launch.msg_w, launch.go_r = msg_w, 0
            fields = [str(msg_w) if i == 0 else f for i, f in enumerate(fields)]
            proc = subprocess.run([stager.BINARY, str(program.fd), "1", *fields],
                                  pass_fds=(program.fd, msg_w), capture_output=True)
            os.close(msg_w)
            message = os.read(msg_r, 4096).decode()
            os.close(msg_r)
            assert proc.returncode == 125, (label, proc.returncode)
            assert message.startswith("E\tclone\t22\t") and "could not read the run's fields" in message, \
                (label, message)
    finally:
        program.close()


def children():
    return set(open("/proc/self/task/%d/children" % os.getpid()).read().split())


def test_many_runs_leave_no_process_or_cgroup():
    needs_stager()
    before = children()  # other tests' engines may be running
    box = Sandbox(load_profile("strict"))
    paths = []
    for _ in range(20):
        process = box.start(["/bin/true"])
        assert process.executor in ("stager", "zygote")
        paths += list(getattr(process._cgroup, "paths", []) or [])
        assert process.wait().exit_code == 0
    box.close()
    assert children() <= before
    # the run's own cgroups are gone (the devices hierarchy's shared parent stays)
    assert [p for p in paths if os.path.exists(p) and not p.rstrip("/").endswith("/pysandbox")] == []


def test_a_threads_second_run_uses_its_zygote_and_close_reaps_it():
    needs_stager()
    before = children()
    box = Sandbox(load_profile("strict"))
    executors = []
    for _ in range(3):
        process = box.start(["/bin/true"])
        executors.append(process.executor)
        assert process.wait().exit_code == 0
    assert executors == ["stager", "zygote", "zygote"]
    assert len(box._zygotes) == 1
    zygote_pid = box._zygotes[0][1].pid
    assert str(zygote_pid) in children()
    box.close()
    assert children() <= before
    assert not os.path.exists("/proc/%d" % zygote_pid)


def test_each_thread_has_its_own_zygote_and_a_dead_threads_is_closed():
    needs_stager()
    import threading
    box = Sandbox(load_profile("strict"))
    results = []

    def two_runs():
        for _ in range(2):
            process = box.start(["/bin/true"])
            results.append((threading.get_ident(), process.executor, process.wait().exit_code))
    for _ in range(2):
        worker = threading.Thread(target=two_runs)
        worker.start()
        worker.join()
    assert [r[1:] for r in results] == [("stager", 0), ("zygote", 0)] * 2
    import gc
    gc.collect()
    # the first thread's zygote was closed when the second thread made its own
    assert len(box._zygotes) == 1
    box.close()
    assert box._zygotes == []


def test_a_dead_zygote_is_replaced_and_the_run_still_happens():
    needs_stager()
    import signal
    box = Sandbox(load_profile("strict"))
    box.run(["/bin/true"])
    assert box.start(["/bin/true"]).wait().exit_code == 0
    zygote = box._zygotes[0][1]
    os.kill(zygote.pid, signal.SIGKILL)
    # dead, not dying: a request sent to a zygote still exiting would be lost with it (and
    # that run fails: test_a_zygote_lost_mid_request_fails_the_run...)
    import time
    deadline = time.monotonic() + 10
    while open("/proc/%d/stat" % zygote.pid).read().rsplit(")", 1)[1].split()[0] != "Z" \
            and time.monotonic() < deadline:
        time.sleep(0.005)
    process = box.start(["/bin/echo", "still runs"])
    assert process.executor == "stager"
    assert process.wait().exit_code == 0
    process = box.start(["/bin/true"])
    assert process.executor == "zygote"
    assert process.wait().exit_code == 0
    box.close()
    assert not os.path.exists("/proc/%d" % zygote.pid) or "Z" not in open("/proc/%d/stat" % zygote.pid).read().split()[2]


def test_zygote_runs_get_their_own_stdio_and_environment():
    needs_stager()
    box = Sandbox(load_profile("strict"))
    outputs = []
    for word in ("one", "two", "three"):
        result = box.run(["/bin/sh", "-c", 'echo "$WORD"; echo err >&2'], env={"WORD": word},
                         capture_output=True, text=True)
        outputs.append((result.stdout, result.stderr))
    box.close()
    assert outputs == [("one\n", "err\n"), ("two\n", "err\n"), ("three\n", "err\n")]


INHERIT_SCRIPT = r"""
import os, sys
from sandbox import Sandbox, load_profile
box = Sandbox(load_profile("strict"), executor="python" if sys.argv[1] == "python" else None)
out = []
for i in range(3):
    if i == 2:  # after the zygote started: what a run inherits must be the supervisor's of now
        os.umask(0o077)
        import resource
        resource.setrlimit(10, (50, 60))  # RLIMIT_LOCKS, which strict leaves alone
        os.nice(3)
    process = box.start(["/bin/sh", "-c", "umask; grep locks /proc/self/limits; cut -d' ' -f19 /proc/self/stat"])
    result = process.wait()
    out.append(process.executor)
box.close()
print(" ".join(out))
"""


def test_a_zygote_run_inherits_the_supervisors_umask_nice_and_limits_of_now():
    needs_stager()
    import subprocess
    import sys
    outputs = {}
    for executor in ("stager", "python"):
        done = subprocess.run([sys.executable, "-I", "-c", INHERIT_SCRIPT, executor], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        outputs[executor] = done.stdout
    lines = outputs["stager"].splitlines()
    assert lines[-1] == "stager zygote zygote"
    assert outputs["python"].splitlines()[-1] == "python python python"
    # the same three sandboxes either way; the third sees umask 077, 50/60 locks and nice 3
    assert lines[:-1] == outputs["python"].splitlines()[:-1]
    assert [line.split() for line in lines[-4:-1]] == [["0077"], ["Max", "file", "locks", "50", "60", "locks"], ["3"]]


KILLED_SUPERVISOR = r"""
import os, sys, time
from sandbox import Sandbox, load_profile
box = Sandbox(load_profile("strict"))
box.run(["/bin/true"])
box.run(["/bin/true"])  # this thread's zygote exists now
process = box.start(["/bin/sleep", "600"])
print(box._zygotes[0][1].pid, process.pid, flush=True)
time.sleep(600)
"""


def test_sigkill_of_the_supervisor_leaves_no_zygote_and_no_sandbox():
    needs_stager()
    import signal
    import subprocess
    import sys
    import time
    supervisor = subprocess.Popen([sys.executable, "-I", "-c", KILLED_SUPERVISOR], stdout=subprocess.PIPE, text=True)
    try:
        zygote_pid, pid1 = (int(x) for x in supervisor.stdout.readline().split())
        assert os.path.exists("/proc/%d" % zygote_pid) and os.path.exists("/proc/%d" % pid1)
    finally:
        supervisor.send_signal(signal.SIGKILL)
        supervisor.wait()

    def alive(pid):
        try:
            with open("/proc/%d/stat" % pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False
    deadline = time.monotonic() + 10
    while (alive(zygote_pid) or alive(pid1)) and time.monotonic() < deadline:
        time.sleep(0.02)
    # the zygote ends on its socket's EOF, PID 1 on its parent-death signal
    assert not alive(zygote_pid) and not alive(pid1)
    from sandbox import cgroup
    cgroup.gc()  # what the killed supervisor left: its cgroups, as the next run would


def test_the_environment_switch_and_a_bad_executor():
    from sandbox.errors import SandboxError
    with pytest.raises(SandboxError, match="executor"):
        Sandbox(load_profile("strict"), executor="C")
    saved = os.environ.get("PYSANDBOX_STAGER")
    os.environ["PYSANDBOX_STAGER"] = ""
    try:
        box = Sandbox(load_profile("strict"))
        box.plan()
        assert box.stager_reason == "PYSANDBOX_STAGER is empty"
        box.close()
    finally:
        if saved is None:
            os.environ.pop("PYSANDBOX_STAGER", None)
        else:
            os.environ["PYSANDBOX_STAGER"] = saved


def test_every_mount_operation_has_both_executors():
    from sandbox import mnt
    assert set(mnt._EXECUTORS) <= set(stager.CODES)
    plan = Sandbox(load_profile("strict")).plan()
    kinds = {op[0] for op in mnt.operations(plan.mounts, True)} | {op[0] for op in mnt.operations(plan.mounts, False)}
    assert kinds <= set(mnt._EXECUTORS)


def test_a_zygote_lost_mid_request_fails_the_run_and_reaps_what_it_started(monkeypatch):
    """The zygote reports PID 1 before releasing it; if it dies in between, the run fails
    (a second PID 1 on the same channel could be let go) and that PID 1 is reaped."""
    needs_stager()
    box = Sandbox(load_profile("strict"))
    box.run(["/bin/true"])
    orphan = os.posix_spawn("/bin/sleep", ["sleep", "60"], {})

    def lost(self, launch, release):
        raise stager.ZygoteLost(orphan)
    monkeypatch.setattr(stager.Zygote, "start", lost)
    with pytest.raises(SetupError) as error:
        box.start(["/bin/true"])
    assert error.value.stage == "clone" and "zygote ended" in str(error.value)
    with pytest.raises(ChildProcessError):
        os.waitpid(orphan, os.WNOHANG)  # killed and reaped by the failed start
    monkeypatch.undo()
    assert box.start(["/bin/true"]).wait().exit_code == 0  # the next run starts a new zygote
    box.close()


@pytest.mark.parametrize("inline", [False, True], ids=["helper", "inline"])
def test_the_network_namespace_is_its_own_with_lo_up_and_the_limits_in_force(monkeypatch, inline):
    """strict's network namespace is made by the stager's helper (stager._net_helper), or by
    PID 1 itself when no CPU is free for the helper (stager.net_inline): either way the
    command must see a namespace that is not the host's, lo up, and every user limit."""
    needs_stager()
    monkeypatch.setattr(stager, "net_inline", lambda: inline)
    box = Sandbox(load_profile("strict"))
    plan = box.plan()
    assert stager._net_helper(plan)
    host_net = os.stat("/proc/self/ns/net").st_ino
    before = children()
    views = []
    for _ in range(2):  # one-shot stager, then the zygote
        result = box.run(["python3", "-I", "-S", "-c", PROBE + "\nimport os; print(os.stat('/proc/self/ns/net').st_ino)"],
                         capture_output=True, text=True)
        assert result.exit_code == 0, (result.stage, result.message, result.stderr)
        view_line, net_line = result.stdout.strip().splitlines()
        view = json.loads(view_line)
        assert int(net_line) != host_net
        assert view["loopback"] == "up"
        for name, value in plan.layers["user_limits"]:
            assert view["user_limits"][name] == str(value), name
        views.append(view)
    # The zygote reaps a run's helper only at its next request: right after the run its
    # helper is still its child, and an inline run forked none.
    zygote_pid = box._zygotes[0][1].pid
    helpers = open("/proc/%d/task/%d/children" % (zygote_pid, zygote_pid)).read().split()
    assert len(helpers) == (0 if inline else 1), helpers
    box.close()
    assert children() <= before  # the helpers were reaped


def test_net_inline_compares_the_runnable_tasks_with_the_cpus(tmp_path):
    """PID 1 makes its network namespace itself once more tasks are runnable than CPUs."""
    cpus = len(os.sched_getaffinity(0))
    loadavg = tmp_path / "loadavg"
    for running, inline in ((1, False), (cpus, False), (cpus + 1, True), (cpus + 7, True)):
        loadavg.write_text("0.50 0.40 0.30 %d/345 12345\n" % max(running, 0))
        assert stager.net_inline(str(loadavg)) is inline, (running, cpus)
    loadavg.write_text("garbage\n")
    assert stager.net_inline(str(loadavg)) is False  # unreadable: the helper, as before
    assert stager.net_inline(str(tmp_path / "missing")) is False


@pytest.mark.parametrize("argv", [
    ["/bin/echo", "a", "--env", "b"],
    ["/bin/echo", "--inherit", "1", "2", "3"],
    ["/bin/echo", "--net-inline", "--"],
    ["/bin/echo", "--", "--env"],
])
def test_a_commands_own_option_words_reach_it(argv):
    """The stager's fields are counted, not delimited: a command's own "--env" or
    "--inherit" once cut its arguments off (and left it without its environment)."""
    needs_stager()
    box = Sandbox(load_profile("strict"))
    executors = []
    for _ in range(2):  # one-shot stager, then the zygote
        process = box.start(argv, stdout=None)
        executors.append(process.executor)
        process.wait()
        result = box.run(argv + ["end"], env={"MARK": "kept"}, capture_output=True, text=True)
        assert result.exit_code == 0 and result.stdout == " ".join(argv[1:] + ["end"]) + "\n", result.stdout
        env = box.run(["/usr/bin/env", "--", "/bin/sh", "-c", 'echo "$MARK"', "--env"], env={"MARK": "kept"},
                      capture_output=True, text=True)
        assert env.stdout == "kept\n", env.stdout
    assert executors[-1] == "zygote"
    box.close()


def test_a_run_too_large_for_a_zygote_request_takes_a_one_shot_stager():
    """A zygote request is one message of at most 128 KiB (stager.ZYGOTE_MAX_REQUEST): a
    larger command line goes through a one-shot stager, whole; so do 10000 small arguments
    (once cut to the zygote's first 8192 fields, the environment with them)."""
    needs_stager()
    box = Sandbox(load_profile("strict"))
    assert box.run(["/bin/true"]).exit_code == 0
    count = 'echo $# $(printf %s "$@" | wc -c) "$MARK"'
    for n, size, executor in ((10000, 1, "zygote"), (3000, 60, "stager"), (3, 1, "zygote")):
        argv = ["/bin/sh", "-c", count, "x"] + ["a" * size] * n
        r, w = os.pipe()
        process = box.start(argv, env={"MARK": "kept"}, stdout=w)
        os.close(w)
        assert process.executor == executor, (n, size, process.executor)
        with os.fdopen(r, "rb") as pipe:
            out = pipe.read()
        assert process.wait().exit_code == 0
        assert out.decode() == "%d %d kept\n" % (n, n * size), out
    assert len(box._zygotes) == 1  # the large run left the zygote in place
    # a socket buffer smaller than a request under the limit (a host's low wmem_default):
    # EMSGSIZE is the same answer, and the zygote stays
    import socket
    zygote = box._zygotes[0][1]
    zygote._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    process = box.start(["/bin/true"] + ["a" * 1000] * 40)
    assert process.executor == "stager" and process.wait().exit_code == 0
    assert box._zygotes[0][1] is zygote
    # beyond what any exec takes: one line in the command's terms, not the stager's path
    with pytest.raises(SetupError) as error:
        box.start(["/bin/true", "a" * (32 * os.sysconf("SC_PAGE_SIZE"))])
    assert error.value.stage == "clone" and "larger than the kernel lets one exec take" in str(error.value)
    assert stager.BINARY not in str(error.value)
    assert box.run(["/bin/true"]).exit_code == 0
    box.close()


def _limit_operations(plan):
    return [op for op in stager.operations(plan)
            if op[0] in ("keep_dir", "close_kept", "net_join", "mask")
            or op[0] == "write" and op[-1] == "user-limits"
            or op[0] == "mount" and op[-1] == "mount-proc"]


def test_the_user_limits_go_through_the_sandboxs_own_procfs(tmp_path):
    """Through the host's /proc every live sandbox's user namespace adds a dentry to the one
    hash chain each later write walks (user_limits.py): the mount stage keeps the fresh
    /proc's /proc/sys/user open before the masks, and PID 1 writes below it after `mount`,
    once it has joined the network helper's namespace (whose creation counted against them)."""
    plan = Sandbox(load_profile("strict")).plan()
    ops = _limit_operations(plan)
    names = [op[0] for op in ops]
    assert names.index("mount") < names.index("keep_dir") < names.index("mask"), names
    assert ops[names.index("keep_dir")][1] == "/newroot/proc/sys/user"
    writes = [op for op in ops if op[0] == "write"]
    assert len(writes) == len(plan.layers["user_limits"]) > 0
    assert all(op[1].startswith("max_") for op in writes), writes  # relative: below the kept directory
    assert names.index("mask") < names.index("write") and names[-1] == "close_kept", names
    if stager._net_helper(plan):
        assert names.index("mask") < names.index("net_join") < names.index("write"), names
    # without a fresh /proc: the inherited one's directory, kept the same way
    no_proc = tmp_path / "no-proc.toml"
    no_proc.write_text('extends = "strict"\n[namespaces]\npid = false\n[filesystem]\nproc = false\n')
    plan = Sandbox(load_profile(str(no_proc))).plan()
    ops = _limit_operations(plan)
    assert ("keep_dir", "/oldroot/proc/sys/user") in ops, ops


def test_the_python_stages_keep_the_directory_too(monkeypatch):
    from sandbox import mnt
    kept = []

    def keep(source_fds, path):
        kept.append(path)
        raise SetupError("mount", 1, "kept %s (the test refuses it)" % path)
    monkeypatch.setitem(mnt._EXECUTORS, "keep_dir", keep)
    box = Sandbox(load_profile("strict"), executor="python")
    result = box.run(["/bin/true"])
    box.close()
    assert result.exit_code == 125 and result.stage == "mount", (result.stage, result.message)
    assert "kept /newroot/proc/sys/user" in result.message


def test_start_does_not_wait_for_pid1s_own_setup(monkeypatch):
    """start() reaps the one-shot stager, which waits for its network helper: the helper must
    wait for nothing of PID 1's, or a PID 1 held in its mount stage (a stuck bind source)
    would hold start() too, with no deadline running yet. PID 1 is stopped right after its
    birth; start() must return all the same, through the one-shot stager and the zygote."""
    needs_stager()
    import signal
    import threading
    from sandbox import runtime

    stopped = []

    def stop_pid1(process, plan, launch):
        original_pidfd(process, plan, launch)
        os.kill(process.pid, signal.SIGSTOP)
        stopped.append(process.pid)
    original_pidfd = dict(runtime.SUPERVISOR_STAGES)["pidfd"]
    monkeypatch.setattr(runtime, "SUPERVISOR_STAGES", tuple(
        (name, stop_pid1 if name == "pidfd" else step) for name, step in runtime.SUPERVISOR_STAGES))
    box = Sandbox(load_profile("strict"))
    assert stager._net_helper(box.plan())
    started, proceed = [], threading.Event()

    def two_starts():  # one thread: its first run is one-shot, its second goes through its zygote
        for _ in range(2):
            started.append(box.start(["/bin/true"]))
            proceed.wait(30)
            proceed.clear()
    thread = threading.Thread(target=two_starts, daemon=True)
    thread.start()
    try:
        for run in range(2):
            deadline = time.monotonic() + 20
            while len(started) <= run and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(started) > run, "start() waited on a stopped PID 1 (run %d)" % run
            process = started[run]
            os.kill(process.pid, signal.SIGCONT)
            result = process.wait()
            assert result.exit_code == 0, (result.stage, result.message)
            if run == 1:
                assert process.executor == "zygote"
            proceed.set()
        thread.join(30)
    finally:
        reaped = {process.pid for process in started if process.result is not None}
        for pid in stopped:
            if pid not in reaped:  # still unreaped (ours or the zygote's child): the number is its own
                os.kill(pid, signal.SIGKILL)
        thread.join(30)
        for process in started:
            if process.result is None:
                process.wait()
        box.close()


@pytest.mark.parametrize("executor", [None, "python"])
def test_the_command_starts_with_default_signals_and_none_blocked(strict, executor):
    """exec keeps ignored signals and the blocked mask: neither the supervisor's (a Python
    process ignores SIGPIPE and SIGXFSZ; the static stager's glibc leaves its real-time
    signals 32 and 33 ignored) nor its caller's may reach the command."""
    import subprocess
    import sys
    script = (
        "import signal, sys\n"
        "from sandbox import Sandbox, load_profile\n"
        "signal.signal(signal.SIGUSR2, signal.SIG_IGN)\n"
        "signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGTERM})\n"
        "box = Sandbox(load_profile(sys.argv[1]), executor=None if sys.argv[2] == 'None' else sys.argv[2])\n"
        "result = box.run(['/bin/grep', '^Sig[IB]', '/proc/self/status'], capture_output=True, text=True)\n"
        "print(box.stager_reason is None, result.stdout.split())\n")
    done = subprocess.run([sys.executable, "-I", "-c", script, strict, str(executor)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    compiled, fields = done.stdout.rsplit("\n", 1)[0].split(" ", 1)
    assert compiled == str(executor is None)
    assert fields == str(["SigBlk:", "0" * 16, "SigIgn:", "0" * 16])


def test_a_deep_mount_point_is_made_without_recursion():
    """mkdir -p of a mount point 1500 components deep (3000 characters, under PATH_MAX) works.
    The stager makes it in one buffer: a recursive version with a 4 KiB buffer per level ran
    out of an 8 MiB stack near 2000 components in a harness (PID 1's stack is larger, so this
    test does not catch that version here)."""
    from util import run_cli
    deep = "/d" * 1500
    proc = run_cli("run", "--profile", "strict", "--tmpfs", deep, "--", "/bin/sh", "-c",
                   "cd %s && echo ok" % deep)
    assert (proc.returncode, proc.stdout) == (0, "ok\n"), proc.stderr
