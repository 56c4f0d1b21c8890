"""The six hook kinds of the runtime-spec: each hook runs with its own argv and environment, the
container's state as JSON on stdin, and its timeout; a failing prestart/createRuntime/
createContainer/startContainer hook fails the operation (its stderr in the message), a failing
poststart/poststop hook is logged and the operation goes on (runtime-spec config.md "Hooks").
"""
from .errors import SpecError

FATAL = ("prestart", "createRuntime", "createContainer", "startContainer")


def run(kind, hooks, state_json):
    """Run the hooks of one kind in order. Returns warning texts for the non-fatal kinds."""
    import subprocess
    warnings = []
    for path, args, env, timeout in hooks:
        argv = list(args) or [path]
        try:
            proc = subprocess.run(argv, executable=path, input=state_json.encode(), env=_env(env),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout,
                                  close_fds=True, start_new_session=False)
        except subprocess.TimeoutExpired:
            problem = "timed out after %d s" % timeout
        except OSError as e:
            problem = e.strerror or str(e)
        else:
            if proc.returncode == 0:
                continue
            detail = proc.stderr.decode(errors="replace").strip().splitlines()
            problem = "exit status %d%s" % (proc.returncode, (": " + detail[-1][:300]) if detail else "")
        message = "%s hook %s: %s" % (kind, path, problem)
        if kind in FATAL:
            raise SpecError(message)
        warnings.append(message)
    return warnings


def _env(entries):
    env = {}
    for entry in entries:
        key, _, value = entry.partition("=")
        env[key] = value
    return env


def state_json(container_id, status, pid, bundle, annotations):
    import json
    return json.dumps({"ociVersion": "1.0.2", "id": container_id, "status": status, "pid": pid,
                       "bundle": bundle, "annotations": annotations or {}})

