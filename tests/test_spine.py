"""The runtime's spine without root: stage order, the error of a failing stage and the
cleanup after it, through the real supervisor and stage runner over the recording fake of
the native-call layer (tests/fake_native.py). Real-kernel behaviour is tested elsewhere."""
import errno
import os

import pytest

from fake_native import FakeNative
from sandbox import Sandbox, channel, load_profile, native, stages
from sandbox.errors import SandboxError, SetupError
from sandbox.runtime import SUPERVISOR_STAGES

SUPERVISOR = [name for name, _ in SUPERVISOR_STAGES]
PID1 = [name for name, _ in stages.PID1_STAGES]
COMMAND = [name for name, _ in stages.COMMAND_STAGES]


def test_one_table_holds_the_childs_order():
    rows = [(process, name) for process, name, _ in stages.CHILD_STAGES]
    fork = rows.index(("pid1", "fork"))
    # the command's rows sit between PID 1's fork and the rest of PID 1's work
    assert {p for p, _ in rows[fork + 1:fork + 1 + len(COMMAND)]} == {"command"}
    assert [n for p, n in rows if p == "pid1"] == PID1 and [n for p, n in rows if p == "command"] == COMMAND


def test_the_order_of_setup_is_the_kernels():
    """The tables are the one place the order lives; these are the orderings the kernel
    and the threat model impose (docs/architecture.md)."""
    def before(table, a, b):
        assert table.index(a) < table.index(b), "%s must come before %s" % (a, b)
    before(SUPERVISOR, "cgroup", "clone")        # limits hold from the child's first instruction
    before(SUPERVISOR, "clone", "idmap")
    before(SUPERVISOR, "idmap", "go")            # the child waits for its maps
    before(SUPERVISOR, "cgroup-attach", "go")
    before(PID1, "cgroup", "sync")               # v1 cgroups joined with host credentials
    before(PID1, "sync", "ids")
    before(PID1, "ids", "unshare")               # the new namespaces belong to the new user namespace
    before(PID1, "unshare", "mount")
    before(PID1, "mount", "close-host-fds")
    before(PID1, "close-host-fds", "fork")
    before(COMMAND, "setsid", "exec")
    before(COMMAND, "ids", "capabilities")       # capabilities after every privileged step
    before(COMMAND, "capabilities", "no_new_privs")
    before(COMMAND, "no_new_privs", "landlock")  # Landlock needs no_new_privs
    before(COMMAND, "landlock", "verify")
    before(COMMAND, "verify", "seccomp")         # verify may still use any syscall
    assert COMMAND[-2:] == ["seccomp", "exec"]   # seccomp last, then only execve


def leaks_after_close(box, fake):
    """After a verdict the run's cgroup waits in the sandbox's pool to be removed off the
    caller's path (cgroup.Pool); close() removes it: then nothing may be left."""
    fresh, retired = box._cgroups.held() if box._cgroups is not None else ([], [])
    assert len(retired) <= 1 and len(fresh) <= 1, (fresh, retired)  # one run at a time: one of each
    box.close()
    return fake.leaks()


@pytest.fixture
def box():
    sandbox = Sandbox(load_profile("strict"), name="spine-fake")
    sandbox.plan()  # built for real (no root needed): only the start is faked
    yield sandbox
    sandbox.close()


def test_a_run_goes_through_every_stage_in_table_order(box, monkeypatch):
    fake = FakeNative().install(monkeypatch)
    result = box.run(["/bin/true"])
    assert result.exit_code == 0 and result.reason == "exit", result
    assert fake.stages("supervisor") == SUPERVISOR
    assert fake.stages("pid1") == PID1
    assert fake.stages("command") == COMMAND
    order = [(e[1], e[2]) for e in fake.record if e[0] == "stage"]
    # the command's stages run inside PID 1's "fork" stage
    fork = order.index(("pid1", "fork"))
    assert order[fork + 1:fork + 1 + len(COMMAND)] == [("command", n) for n in COMMAND]
    assert leaks_after_close(box, fake) == []
    assert ("register", "spine-fake") in fake.record and ("unregister", "spine-fake") in fake.record


@pytest.mark.parametrize("stage", SUPERVISOR)
def test_a_failing_supervisor_stage_names_itself_and_leaves_nothing(box, monkeypatch, stage):
    fake = FakeNative(fail_at=("supervisor", stage)).install(monkeypatch)
    with pytest.raises(SetupError) as info:
        box.run(["/bin/true"])
    assert info.value.exit_code == 125
    assert info.value.stage == stage and info.value.errno == errno.EPERM
    assert str(info.value) == "%s: %s" % (stage, os.strerror(errno.EPERM))
    assert fake.stages("supervisor") == SUPERVISOR[:SUPERVISOR.index(stage) + 1]
    assert fake.leaks() == []
    # and the name is free again for the next run
    ok = FakeNative().install(monkeypatch)
    assert box.run(["/bin/true"]).exit_code == 0
    assert leaks_after_close(box, ok) == []


@pytest.mark.parametrize("table, stage", [("pid1", s) for s in PID1] + [("command", s) for s in COMMAND])
def test_a_failing_child_stage_exits_125_naming_it_and_leaves_nothing(box, monkeypatch, table, stage):
    fake = FakeNative(fail_at=(table, stage)).install(monkeypatch)
    result = box.run(["/bin/true"])
    # exec is the command's own: EPERM there means "found but not executable" (126)
    assert result.exit_code == (126 if stage == "exec" else 125), result
    assert result.reason == "setup-error" and result.stage == stage
    assert result.message == "%s: %s" % (stage, os.strerror(errno.EPERM))
    done = fake.stages(table)
    assert done == (PID1 if table == "pid1" else COMMAND)[:done.index(stage) + 1]
    if table == "pid1" and PID1.index(stage) < PID1.index("fork"):
        assert fake.stages("command") == []      # no command process was started
    if table == "command":
        assert fake.stages("pid1") == PID1       # PID 1 goes on and reports the command's status
    assert leaks_after_close(box, fake) == []


def test_an_oserror_in_a_stage_is_reported_with_its_stage(monkeypatch):
    sent = []
    monkeypatch.setattr(native, "exit", lambda code: sent.append(("exit", code)))
    r, w = os.pipe()
    try:
        def broken(plan, launch):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/x")
        launch = stages.Launch(["/bin/true"], {}, "/")
        launch.msg_w = w
        stages.run((("first", lambda p, l: None), ("broken", broken), ("never", None)), None, launch)
        messages = channel.decode(os.read(r, 4096))
    finally:
        os.close(r)
        os.close(w)
    assert messages == [("E", ("broken", "2", "broken: /x No such file or directory"))]
    assert sent == [("exit", 125)]


def test_an_inner_setup_error_is_reported_under_the_table_stage(monkeypatch):
    monkeypatch.setattr(native, "exit", lambda code: None)
    r, w = os.pipe()
    try:
        def ids(plan, launch):
            raise SetupError("setresuid", errno.EPERM)

        def verify(plan, launch):
            raise SetupError("verify: landlock", 0, "the process is not Landlock-restricted")
        launch = stages.Launch(["/bin/true"], {}, "/")
        launch.msg_w = w
        stages.run((("ids", ids),), None, launch)
        stages.run((("verify", verify),), None, launch)
        messages = channel.decode(os.read(r, 4096))
    finally:
        os.close(r)
        os.close(w)
    assert messages == [("E", ("ids", "1", "ids: setresuid: Operation not permitted")),
                        ("E", ("verify: landlock", "0", "verify: landlock: the process is not Landlock-restricted"))]


def test_a_named_sandbox_keeps_its_name(monkeypatch):
    fake = FakeNative().install(monkeypatch)
    Sandbox(load_profile("strict")).run(["/bin/true"])  # an unnamed run first
    box = Sandbox(load_profile("strict"), name="grader")
    first, second = box.run(["/bin/true"]), box.run(["/bin/true"])
    assert first.name == second.name == "grader"
    assert [e for e in fake.record if e[0] == "register"] == [("register", "grader")] * 2


def test_a_second_concurrent_start_of_a_name_is_refused(monkeypatch):
    FakeNative().install(monkeypatch)
    box = Sandbox(load_profile("strict"), name="grader")
    running = box.start(["/bin/true"])
    try:
        with pytest.raises(SandboxError, match="named 'grader' is already running"):
            Sandbox(load_profile("strict"), name="grader").start(["/bin/true"])
    finally:
        running.wait()
    box.run(["/bin/true"])  # once it ended the name is free


def test_the_plan_is_frozen(box):
    plan = box.plan()
    with pytest.raises(AttributeError):
        plan.cwd = "/elsewhere"
    with pytest.raises(TypeError):
        plan.verify["landlock"] = None
    with pytest.raises(TypeError):
        plan.env["PATH"] = "/evil"
    assert plan.replace(cwd="/x").cwd == "/x" and plan.cwd != "/x"


def test_a_new_layer_is_one_module_and_one_table_line(monkeypatch):
    """What docs/architecture.md promises a contributor: a module with plan/child/expect and
    one line in a stage table, and the plan, verify and the runner pick it up."""
    import sys
    import types
    calls = []
    demo = types.ModuleType("sandbox.demo_layer")
    demo.plan = lambda profile, context: ("demo part", context.mounts is not None)
    demo.child = lambda part, launch: calls.append(part)
    demo.expect = lambda part: {"demo": part[0]}
    monkeypatch.setitem(sys.modules, "sandbox.demo_layer", demo)
    # the one line, where CHILD_STAGES gets it (PID1_STAGES/COMMAND_STAGES derive from it)
    table = list(stages.CHILD_STAGES)
    table.insert(table.index(("command", "verify", stages.verify)), ("command", "demo", stages.layer("demo_layer")))
    monkeypatch.setattr(stages, "CHILD_STAGES", tuple(table))
    monkeypatch.setattr(stages, "COMMAND_STAGES", tuple((n, f) for p, n, f in table if p == "command"))

    box = Sandbox(load_profile("strict"))
    plan = box.plan()
    assert plan.layers["demo_layer"] == ("demo part", True)
    assert plan.verify["demo"] == "demo part"
    stages.layer("demo_layer")(plan, stages.Launch(["/bin/true"], {}, "/"))
    assert calls == [("demo part", True)]
    fake = FakeNative().install(monkeypatch)
    assert box.run(["/bin/true"]).exit_code == 0
    command = fake.stages("command")
    assert command.index("landlock") < command.index("demo") < command.index("verify")
    box.close()


@pytest.mark.parametrize("name", ["strict", "default", "permissive"])
def test_verify_is_always_planned(name):
    """verify is a fail-closed stage: nothing (an import error included) may leave it out."""
    box = Sandbox(load_profile(name))
    try:
        plan = box.plan()
        assert plan.verify is not None and "no_new_privs" in plan.verify
        assert ("verify", stages.verify) in stages.COMMAND_STAGES
    finally:
        box.close()


def test_concurrent_unnamed_starts_get_distinct_names(monkeypatch):
    """Threads starting sandboxes at once (a grader's pool) never collide on a generated name."""
    import threading
    fake = FakeNative().install(monkeypatch)
    box = Sandbox(load_profile("strict"))
    box.plan()
    started, errors = [], []

    def start_one():
        try:
            started.append(box.start(["/bin/true"]))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=start_one) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len({p.name for p in started}) == 16
    assert [p.wait().exit_code for p in started] == [0] * 16
    box.close()
    assert [leak for leak in fake.leaks() if not leak.startswith("PID 1")] == []


def test_an_inner_error_of_a_supervisor_stage_is_named_after_the_stage(box, monkeypatch):
    from sandbox import user
    fake = FakeNative().install(monkeypatch)

    def refuse(pid, idmap):
        raise SetupError("uid_map", errno.EPERM)
    monkeypatch.setattr(user, "write_maps", refuse)
    with pytest.raises(SetupError) as info:
        box.run(["/bin/true"])
    assert info.value.stage == "idmap" and info.value.errno == errno.EPERM
    assert str(info.value) == "idmap: uid_map: Operation not permitted"
    assert fake.leaks() == []
