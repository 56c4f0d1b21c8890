"""A minimal shim, as containerd-shim-runc-v2 and conmon are: it makes itself a child
subreaper (prctl PR_SET_CHILD_SUBREAPER) before running `RUNTIME ... create`, so the
container's init, orphaned when the runtime exits, is reparented to it; it then reaps the
init and reports how it ended. One JSON object a line on stdout:
  {"create": RC, "stderr": "..."}  the runtime's create returned (RC 0: the pid follows)
  {"pid": PID}                     the init PID from --pid-file
  {"exit": CODE} or {"signal": N}  how the init ended (waitpid on it)

usage: shim.py PID_FILE STDOUT_FILE STDERR_FILE RUNTIME_ARGV...
The container's stdio is the runtime's (no terminal): stdin /dev/null, stdout and stderr
the two files, as a shim hands the runtime pipes or files.
"""
import ctypes
import json
import os
import subprocess
import sys

PR_SET_CHILD_SUBREAPER = 36


def say(**fields):
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def main():
    pid_file, out_file, err_file, argv = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        say(create=-1, stderr="prctl(PR_SET_CHILD_SUBREAPER): errno %d" % ctypes.get_errno())
        return 1
    with open(out_file, "wb") as out, open(err_file, "wb") as err:
        rc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err).returncode
    with open(err_file, "rb") as f:
        say(create=rc, stderr=f.read().decode("utf-8", "replace")[-4000:])
    if rc != 0:
        return 0
    with open(pid_file) as f:
        pid = int(f.read().strip())
    say(pid=pid)
    # Reap every orphan that reaches us (a runtime may leave helpers behind) until the
    # init itself is reaped: its status is the container's.
    while True:
        try:
            reaped, status = os.waitpid(-1, 0)
        except ChildProcessError:
            say(exit=None, error="init %d was never reaped here" % pid)
            return 0
        if reaped == pid:
            if os.WIFSIGNALED(status):
                say(signal=os.WTERMSIG(status))
            else:
                say(exit=os.WEXITSTATUS(status))
            return 0


if __name__ == "__main__":
    sys.exit(main())
