"""The grader's API (issue 9 item 8, issue 10 item 5): argv as a list, input/text/check,
bounded capture, a CPU-time verdict apart from the wall timeout, argument validation,
the context manager, and docs/api.md's grader example run as written."""
import json
import os
import re
import subprocess
import sys

import pytest

from util import ROOT, require, run_cli


@pytest.fixture(scope="module")
def box(strict):
    from sandbox import Sandbox, load_profile
    with Sandbox(load_profile(strict)) as sandbox:
        yield sandbox


def test_a_string_argv_is_refused_with_a_hint(box):
    with pytest.raises(TypeError, match=re.escape("pass a list, e.g. ['sh', '-c', CMD]")):
        box.run("python3 -c 'print(1)'")
    with pytest.raises(TypeError, match="sequence"):
        box.run(["echo", 3])


def test_input_as_str_or_bytes_and_text(box):
    r = box.run(["cat"], input="héllo\n", capture_output=True, timeout=10)
    assert (r.reason, r.stdout) == ("exit", "héllo\n".encode())
    r = box.run(["sh", "-c", "cat; echo oops >&2"], input=b"\xff\x00raw", capture_output=True, text=True, timeout=10)
    assert r.stdout == "\ufffd\x00raw" and r.stderr == "oops\n"
    assert (r.stdout_truncated, r.stderr_truncated) == (False, False)


def test_check_raises_with_the_result(box):
    from sandbox import RunFailed
    with pytest.raises(RunFailed) as caught:
        box.run(["sh", "-c", "echo partial; exit 3"], check=True, capture_output=True, text=True, timeout=10)
    assert caught.value.result.exit_code == 3 and caught.value.result.stdout == "partial\n"
    assert "exited with 3" in str(caught.value)
    with pytest.raises(RunFailed) as caught:
        box.run(["/no/such/program"], check=True, timeout=10)
    assert caught.value.result.reason == "setup-error" and caught.value.result.exit_code == 127
    assert box.run(["true"], check=True, timeout=10).exit_code == 0


@pytest.mark.parametrize("kwargs", [dict(timeout=-1), dict(timeout=0), dict(timeout=float("nan")),
                                    dict(cpu_time=-1), dict(cpu_time=0), dict(max_output=-1),
                                    dict(timeout="1"), dict(max_output=1.5)])
def test_bad_arguments_are_refused_before_anything_starts(strict, kwargs):
    from sandbox import Sandbox, load_profile, ArgumentError, SandboxError
    with Sandbox(load_profile(strict)) as sandbox:
        with pytest.raises(ArgumentError) as caught:
            sandbox.run(["true"], capture_output=True, **kwargs)
        assert isinstance(caught.value, ValueError) and isinstance(caught.value, SandboxError)
        assert sandbox._plan is None  # not even the plan was built
        with pytest.raises(ArgumentError):
            sandbox.run(["true"], **kwargs)
        assert sandbox._plan is None


def test_the_context_manager_closes_the_sandbox(strict):
    from sandbox import Sandbox, load_profile
    with Sandbox(load_profile(strict)) as sandbox:
        assert sandbox.run(["true"], timeout=10).exit_code == 0
        held = sandbox._init_fd
    assert sandbox._plan is None and sandbox._init_fd is None
    if held is not None:
        with pytest.raises(OSError):
            os.fstat(held)


def test_output_past_max_output_is_dropped_and_flagged(box):
    r = box.run(["sh", "-c", "head -c 300000 /dev/zero; echo end >&2"], capture_output=True, max_output=1000,
                timeout=20)
    assert r.reason == "exit" and r.exit_code == 0  # the command was not stopped
    assert len(r.stdout) == 1000 and r.stdout_truncated
    assert r.stderr == b"end\n" and not r.stderr_truncated
    r = box.run(["echo", "x"], capture_output=True, max_output=0, timeout=10)
    assert r.stdout == b"" and r.stdout_truncated


def test_a_gigabyte_of_output_does_not_grow_the_supervisor(strict):
    """The supervisor is outside every cgroup: 1 GiB written through strict must leave
    its peak RSS (VmHWM, in a fresh process that runs only the API) in the tens of MB."""
    code = (
        "from sandbox import Sandbox, load_profile, runtime\n"
        "with Sandbox(load_profile(%r)) as box:\n"
        "    r = box.run(['head', '-c', '1G', '/dev/zero'], capture_output=True, timeout=120)\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]\n"
        "print(r.reason, r.exit_code, len(r.stdout), r.stdout_truncated, runtime.DEFAULT_MAX_OUTPUT, hwm)\n"
    ) % strict
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                          cwd="/")  # the installed package, not the checkout
    assert proc.returncode == 0, proc.stderr
    reason, code_, kept, truncated, default, hwm_kb = proc.stdout.split()
    assert (reason, code_, truncated) == ("exit", "0", "True")
    assert int(kept) == int(default) == 16 << 20
    assert int(hwm_kb) < 96 * 1024, "the supervisor's peak RSS was %s kB for 1 GiB of output" % hwm_kb


def test_cpu_time_has_its_own_verdict_apart_from_the_wall_timeout(box):
    busy = box.run(["sh", "-c", "while :; do :; done"], cpu_time=1, timeout=10)
    assert busy.reason == "cpu-time" and busy.exit_code == 152, busy
    assert busy.cpu_time == 1.0
    sleeping = box.run(["sleep", "30"], cpu_time=1, timeout=1)
    assert sleeping.reason == "timeout" and sleeping.exit_code == 124, sleeping
    assert sleeping.cpu < 1.0
    within = box.run(["true"], cpu_time=5, timeout=10)
    assert within.reason == "exit" and within.exit_code == 0


def test_cpu_time_counts_every_process_of_the_sandbox(strict):
    """Three busy processes: RLIMIT_CPU alone would let each spend 2 s (6 s in all); the
    supervisor's watch of the cgroup's counter ends the whole sandbox at the budget."""
    from sandbox import Sandbox, load_profile
    from sandbox import cgroup
    require(cgroup.detect() is not None and (ROOT or strict == "strict"),
            "no cgroup for this sandbox (delegate one): RLIMIT_CPU alone applies, per process")
    with Sandbox(load_profile(strict)) as sandbox:
        r = sandbox.run(["sh", "-c", "for i in 1 2 3; do (while :; do :; done) & done; wait"], cpu_time=1.5,
                        timeout=30)
    assert r.reason == "cpu-time" and r.signal == 9, r  # our kill, not each process's SIGXCPU
    assert r.cpu < 6.0


def test_cli_cpu_time(strict, tmp_path):
    out = tmp_path / "result.json"
    proc = run_cli("run", "--profile", strict, "--cpu-time", "1", "--timeout", "10", "--result", str(out), "--",
                   "sh", "-c", "while :; do :; done")
    assert proc.returncode == 152, proc.stderr
    assert "CPU time" in proc.stderr
    data = json.loads(out.read_text())
    assert data["reason"] == "cpu-time" and data["cpu_time"] == 1.0
    bad = run_cli("run", "--profile", strict, "--cpu-time", "-1", "--", "true")
    assert bad.returncode == 125 and bad.stderr.count("\n") == 1 and "--cpu-time" in bad.stderr
    zero = run_cli("run", "--profile", strict, "--cpu-time", "0", "--", "true")
    assert zero.returncode == 125 and zero.stderr.count("\n") == 1 and "cpu_time" in zero.stderr


def test_the_grader_example_of_docs_api_runs_as_written(strict):
    docs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "api.md")
    text = open(docs).read()
    section = text[text.index("## A grader"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, GRADER_PROFILE=strict), cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "OK OK OK\n"


def test_an_interrupted_wait_ends_the_sandbox(strict):
    """^C in the grader (KeyboardInterrupt inside wait) must not leave the sandbox running."""
    import signal
    # a caller started in the background by a shell inherits SIGINT ignored (and Python then
    # installs no KeyboardInterrupt handler): the grader's ^C is what is under test, so it is set
    code = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "from sandbox import Sandbox, load_profile\n"
            "box = Sandbox(load_profile(%r))\n"
            "proc = box.start(['sleep', '60'])\n"
            "print(proc.pid, flush=True)\n"
            "try:\n    proc.wait()\n"
            "except KeyboardInterrupt:\n"
            "    import os\n    print('left', os.path.exists('/proc/%%d' %% proc.pid), flush=True)\n    raise\n") % strict
    script = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True, cwd="/")
    pid1 = int(script.stdout.readline())
    from util import command_running, wait_until
    wait_until(lambda: command_running(pid1, "sleep"), what="sleep to run")
    script.send_signal(signal.SIGINT)
    out, err = script.communicate(timeout=30)
    assert "KeyboardInterrupt" in err
    # seen by the supervisor itself as wait returns: PID 1 already killed and reaped
    assert out.strip() == "left False", (out, err)
