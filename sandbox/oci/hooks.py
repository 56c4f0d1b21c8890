"""The six hook kinds of the runtime-spec: each hook runs with its own argv and environment, the
container's state as JSON on stdin, and its timeout; a failing prestart/createRuntime/
createContainer/startContainer hook fails the operation (its stderr in the message), a failing
poststart/poststop hook is logged and the operation goes on (runtime-spec config.md "Hooks").

Hooks are started with posix_spawn, not subprocess (whose import costs milliseconds on every
create), and also run inside the container before exec, where only preloaded modules exist.
"""
import os

from .errors import SpecError

FATAL = ("prestart", "createRuntime", "createContainer", "startContainer")


def run(kind, hooks, state_json):
    """Run the hooks of one kind in order. Returns warning texts for the non-fatal kinds."""
    warnings = []
    for path, args, env, timeout in hooks:
        problem = _run_one(path, list(args) or [path], env, timeout, state_json.encode())
        if problem is None:
            continue
        message = "%s hook %s: %s" % (kind, path, problem)
        if kind in FATAL:
            raise SpecError(message)
        warnings.append(message)
    return warnings


def _run_one(path, argv, env, timeout, stdin_data):
    """None when the hook exited 0, else what went wrong."""
    import select
    import time
    state_r, state_w = os.pipe()
    err_r, err_w = os.pipe()
    null = os.open("/dev/null", os.O_WRONLY | os.O_CLOEXEC)
    try:
        try:
            pid = os.posix_spawn(path, argv, _env(env), file_actions=[
                (os.POSIX_SPAWN_DUP2, state_r, 0), (os.POSIX_SPAWN_DUP2, null, 1),
                (os.POSIX_SPAWN_DUP2, err_w, 2)])
        except OSError as e:
            return e.strerror or str(e)
    finally:
        for fd in (state_r, err_w, null):
            os.close(fd)
    try:
        os.write(state_w, stdin_data)
    except OSError:
        pass  # a hook that does not read its stdin
    os.close(state_w)
    deadline = None if timeout is None else time.monotonic() + timeout
    watch = select.poll()
    watch.register(err_r, select.POLLIN)
    stderr = b""
    timed_out = False
    while True:
        wait_ms = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
        if not watch.poll(wait_ms):
            timed_out = True
            break
        chunk = os.read(err_r, 65536)
        if not chunk:
            break
        stderr = (stderr + chunk)[-4096:]
    os.close(err_r)
    if timed_out:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    _, status = os.waitpid(pid, 0)
    if timed_out:
        return "timed out after %d s" % timeout
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return None
    detail = stderr.decode(errors="replace").strip().splitlines()
    what = "exit status %d" % code if code > 0 else "killed by signal %d" % -code
    return what + (": " + detail[-1][:300] if detail else "")


def _env(entries):
    env = {}
    for entry in entries:
        key, _, value = entry.partition("=")
        env[key] = value
    return env


def state_json(container_id, status, pid, bundle, annotations):
    from . import fastjson
    return fastjson.dumps({"ociVersion": "1.0.2", "id": container_id, "status": status, "pid": pid,
                           "bundle": bundle, "annotations": annotations or {}})
