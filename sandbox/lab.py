"""`pysandbox lab [LAYER...]`: each isolation layer switched off and on, the same small
attack run in both states, and the audit's verdict on the running sandbox beside it.

Every lesson starts from the strict profile and derives a second profile with exactly one
layer off, so what changes between the two rows is that layer alone. The attacks are
harmless by construction: each proves reach (a file read, a connection to a listener the
lab itself opened, a nested namespace, a thread count) inside namespaces and directories
the lab owns, and the host is never written to.

Output: a rich table on a terminal, plain text when piped, `--format json` a list of
  {"layer", "attack", "off": {"attack_succeeded", "detail", "audit": {"verdict", "failing", "unknown"}}, "on": {...}}
`attack_succeeded` is null when a state cannot be made here (e.g. switching the user
namespace off needs host root); the detail says why.
"""
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import namedtuple

# The attack's report: one JSON line on stdout, {"ok": bool, "detail": str}; then the
# script blocks on stdin so the sandbox stays up while the lab audits it.
_PRELUDE = """
import json, os, sys
def report(ok, detail):
    sys.stdout.write(json.dumps({"ok": bool(ok), "detail": str(detail)}) + "\\n")
    sys.stdout.flush()
    sys.stdin.read()
    sys.exit(0)
"""

Lesson = namedtuple("Lesson", "layer attack off script needs_root_off setup")
# layer: the name users type; attack: one line; off: overrides (or a callable profile -> overrides)
# that switch the layer off; script: Python run inside (gets LAB_* in its environment);
# needs_root_off: the off state exists only as host root; setup: callable(context) -> dict of
# extra Sandbox arguments and environment (or None).


def _secret_file(ctx):
    # The host's /etc/shadow (mode 0640, owner root): readable by host root without any
    # capability, by nobody else. Bound read-only; the attack reports only a byte count.
    return {"ro_binds": ["/etc/shadow:/lab/secret"]}


def _listener(ctx):
    return {"env": {"LAB_PORT": str(ctx.port)}}


def _host_pid(ctx):
    return {"env": {"LAB_HOST_PID": str(os.getpid())}}


LESSONS = (
    Lesson("user", "read the host's /etc/shadow (owner root, mode 0640), bound in read-only",
           {"namespaces": {"user": False}},
           "try:\n    data = open('/lab/secret', 'rb').read()\n    report(True, 'read %d bytes of it as uid 0' % len(data))\n"
           "except OSError as e:\n    report(False, 'refused: %s (uid 0 inside is uid %s on the host)' % "
           "(e.strerror, open('/proc/self/uid_map').read().split()[1]))\n",
           True, _secret_file),
    Lesson("pid", "probe the lab's own process (a host process) with kill(pid, 0)",
           # Without a pid namespace there is no /proc of its own to mount either.
           {"namespaces": {"pid": False}, "filesystem": {"proc": False}},
           "import errno\npid = int(os.environ['LAB_HOST_PID'])\ntry:\n    os.kill(pid, 0)\n"
           "    report(True, 'host pid %d exists and may be signalled' % pid)\nexcept OSError as e:\n"
           "    if e.errno == errno.EPERM:\n        report(True, 'host pid %d is visible (EPERM: it exists, not ours to signal)' % pid)\n"
           "    report(False, 'no such process: the host pid %d does not exist in here' % pid)\n",
           False, _host_pid),
    Lesson("mount", "read the host's per-IRQ counters (/proc/interrupts, a side channel on host activity)",
           # Derived profiles add to inherited lists; dropping the masks takes an explicit replace.
           {"filesystem": {"masked_paths": [], "replace": ["masked_paths"]}},
           "try:\n    head = open('/proc/interrupts').read(200)\n"
           "    report(bool(head.strip()), 'read %d bytes: %r' % (len(head), head.splitlines()[0] if head else ''))\n"
           "except OSError as e:\n    report(False, 'refused: %s' % e.strerror)\n",
           False, None),
    Lesson("net", "connect to a service listening on the host's 127.0.0.1",
           {"namespaces": {"net": False}, "network": {"mode": "host", "allow_host": True}},
           "import socket\ns = socket.socket()\ns.settimeout(2)\ntry:\n"
           "    s.connect(('127.0.0.1', int(os.environ['LAB_PORT'])))\n    report(True, 'connected: %r' % s.recv(64))\n"
           "except OSError as e:\n    report(False, 'refused: %s' % (e.strerror or e))\n",
           False, _listener),
    Lesson("capabilities", "chown a file to another user (needs CAP_CHOWN)",
           {"capabilities": {"keep": ["ALL"]}},
           "open('/tmp/f', 'w').close()\ntry:\n    os.chown('/tmp/f', 1, 1)\n"
           "    report(True, 'chown to uid 1 worked: caps %s' % [l for l in open('/proc/self/status') if l.startswith('CapEff')][0].split()[1])\n"
           "except OSError as e:\n    report(False, 'refused: %s' % e.strerror)\n",
           False, None),
    Lesson("no_new_privs", "start without no_new_privs (what a setuid program would need)",
           {"process": {"no_new_privs": False}},
           "nnp = [l for l in open('/proc/self/status') if l.startswith('NoNewPrivs')][0].split()[1]\n"
           "report(nnp == '0', 'NoNewPrivs: %s%s' % (nnp, '' if nnp == '0' else ' (execve can never raise privileges)'))\n",
           False, None),
    Lesson("seccomp", "create a nested user namespace (the first step of many kernel exploits)",
           # strict has a second wall behind the filter: its user namespace's own
           # max_user_namespaces = 0 (docs/limits.md); the lesson lifts both
           {"seccomp": {"enabled": False}, "user_limits": {"max_user_namespaces": 2147483647}},
           # util-linux's unshare(1) from the host's /usr: the syscall, nothing else
           "import subprocess\nproc = subprocess.run(['unshare', '--user', 'true'], capture_output=True, text=True)\n"
           "if proc.returncode == 0:\n    report(True, 'unshare(CLONE_NEWUSER) succeeded: every capability again, in a namespace of its own')\n"
           "report(False, 'refused: %s' % (proc.stderr.strip().rsplit(': ', 1)[-1] or 'exit %d' % proc.returncode))\n",
           False, None),
    Lesson("landlock", "list the root directory and read /etc/hostname-like files outside the allowed tree",
           {"landlock": {"enabled": False}},
           "try:\n    names = os.listdir('/')\n    report(True, 'listed /: %s' % ' '.join(sorted(names)[:8]))\n"
           "except OSError as e:\n    report(False, 'refused: %s' % e.strerror)\n",
           False, None),
    Lesson("cgroup", "start 400 threads (strict allows 256 tasks)",
           {"limits": {"pids": 0, "required": False}},
           "import threading\nstop = threading.Event()\nn = 0\ntry:\n    for _ in range(400):\n"
           "        threading.Thread(target=stop.wait, daemon=True).start()\n        n += 1\n"
           "except RuntimeError as e:\n    pass\nreport(n >= 400, 'started %d threads' % n)\n",
           False, None),
)
LAYERS = tuple(lesson.layer for lesson in LESSONS)


class _Context:
    def __init__(self):
        self.workdir = tempfile.mkdtemp(prefix="pysandbox-lab-")
        os.chmod(self.workdir, 0o755)
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(8)
        self._server.setblocking(False)
        self.port = self._server.getsockname()[1]

    def answer_pending(self):
        # The "service" of the net lesson: greet whoever connected (only local clients can).
        while True:
            try:
                conn, _ = self._server.accept()
            except BlockingIOError:
                return
            try:
                conn.sendall(b"hello from the host\n")
            except OSError:
                pass
            conn.close()

    def close(self):
        self._server.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _audit_command():
    here = os.path.join(os.path.dirname(sys.executable), "audit")
    if os.path.exists(here):
        return [here]
    found = shutil.which("audit")
    return [found] if found else [sys.executable, "-m", "audit"]


def _command_pid(pid1):
    """The sandboxed command: PID 1's child (the audit judges the command, not the init)."""
    try:
        with open("/proc/%d/task/%d/children" % (pid1, pid1)) as f:
            children = f.read().split()
    except OSError:
        return pid1
    return int(children[0]) if children else pid1


def _audit(pid):
    try:
        proc = subprocess.run(_audit_command() + [str(pid), "--format", "json"], capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"verdict": "audit could not run: %s" % e, "failing": [], "unknown": []}
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        return {"verdict": "audit failed: %s" % (proc.stderr.strip().splitlines() or ["no output"])[-1], "failing": [],
                "unknown": []}
    if "targets" in doc and doc.get("targets"):  # a fleet envelope
        doc = doc["targets"][0]
    failing = sorted(f["id"] for f in doc.get("findings", ()) if f.get("status") == "fail")
    # what the audit could not see (e.g. an unprivileged auditor): never shown as a pass
    unknown = sorted(f["id"] for f in doc.get("findings", ()) if f.get("status") == "unknown")
    return {"verdict": doc.get("summary", {}).get("verdict", ""), "failing": failing, "unknown": unknown}


def _run_state(lesson, profile, ctx, label):
    from .runtime import Sandbox
    from .errors import SandboxError
    extra = lesson.setup(ctx) if lesson.setup else {}
    env = dict(extra.get("env", {}))
    box = Sandbox(profile, ro_binds=tuple(extra.get("ro_binds", ())))
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    argv = ["/usr/bin/python3", "-I", "-S", "-c", _PRELUDE + lesson.script]
    try:
        try:
            proc = box.start(argv, env=env, stdin=in_r, stdout=out_w, timeout=60)
        except SandboxError as e:
            return {"attack_succeeded": False, "detail": "the sandbox refused to start: %s" % e,
                    "audit": {"verdict": "not running", "failing": [], "unknown": []}}
        finally:
            os.close(in_r)
            os.close(out_w)
        line = b""
        deadline = time.monotonic() + 30
        while not line.endswith(b"\n") and time.monotonic() < deadline:
            ctx.answer_pending()
            ready, _, _ = select.select([out_r], [], [], 0.05)
            if ready:
                chunk = os.read(out_r, 4096)
                if not chunk:
                    break
                line += chunk
        # Audit only a sandbox whose attack reported: one that failed during setup is gone
        # (or going), and its PID may already be someone else's.
        audit = _audit(_command_pid(proc.pid)) if line.endswith(b"\n") else {"verdict": "not running", "failing": [], "unknown": []}
        os.close(in_w)
        in_w = None
        result = proc.wait()
        try:
            report = json.loads(line.decode("utf-8", "replace"))
            state = {"attack_succeeded": bool(report["ok"]), "detail": report["detail"]}
        except (ValueError, KeyError):
            why = result.message or "exit %s (%s)" % (result.exit_code, result.reason)
            if result.reason == "setup-error":
                # strict fails closed: the layer cannot be switched off on its own here
                state = {"attack_succeeded": None, "detail": "the sandbox refuses to run this way: %s" % why}
            else:
                state = {"attack_succeeded": False, "detail": "the attack did not report: %s" % why}
        state["audit"] = audit
        return state
    finally:
        for fd in (in_w, out_r):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        box.close()


def run_lessons(layers=None, base="strict"):
    """The lab's results, as the JSON list (see the module docstring)."""
    from .profile import load_profile
    from .errors import SandboxError
    chosen = [lesson for lesson in LESSONS if not layers or lesson.layer in layers]
    strict = load_profile(base)
    ctx = _Context()
    results = []
    try:
        for lesson in chosen:
            entry = {"layer": lesson.layer, "attack": lesson.attack}
            if lesson.needs_root_off and os.geteuid() != 0:
                entry["off"] = {"attack_succeeded": None, "audit": {"verdict": "not run", "failing": [], "unknown": []},
                                "detail": "switching the %s layer off needs host root" % lesson.layer}
            else:
                try:
                    weaker = strict.with_overrides(lesson.off, source="lab: %s off" % lesson.layer)
                except SandboxError as e:
                    weaker = None
                    entry["off"] = {"attack_succeeded": None, "audit": {"verdict": "not run", "failing": [], "unknown": []},
                                    "detail": "the profile refuses it: %s" % e}
                if weaker is not None:
                    entry["off"] = _run_state(lesson, weaker, ctx, "off")
            entry["on"] = _run_state(lesson, strict, ctx, "on")
            results.append(entry)
    finally:
        ctx.close()
    return results


def _mark(state):
    if state["attack_succeeded"] is None:
        return "n/a"
    return "SUCCEEDED" if state["attack_succeeded"] else "blocked"


def _audit_cell(state):
    failing = state["audit"]["failing"]
    return "%d failing%s" % (len(failing), (": " + ", ".join(failing[:6]) + (" ..." if len(failing) > 6 else "")) if failing else "")


def render_plain(results):
    lines = []
    for entry in results:
        lines.append("%s: %s" % (entry["layer"], entry["attack"]))
        for state in ("off", "on"):
            s = entry[state]
            lines.append("  %-3s attack %-9s %s" % (state, _mark(s), s["detail"]))
            lines.append("      audit: %s; %s" % (s["audit"]["verdict"], _audit_cell(s)))
        only_off = sorted(set(entry["off"]["audit"]["failing"]) - set(entry["on"]["audit"]["failing"]))
        if only_off:
            lines.append("      the audit sees with the layer off: %s" % ", ".join(only_off))
        lines.append("")
    return "\n".join(lines)


def render_rich(results, stream):
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    table = Table(title="pysandbox lab: each layer off and on", show_lines=True)
    for column in ("layer", "attack", "off", "on", "audit sees only when off"):
        table.add_column(column)
    for entry in results:
        cells = []
        for state in ("off", "on"):
            s = entry[state]
            style = "red" if s["attack_succeeded"] else "green"
            cells.append("[%s]%s[/]\n%s\n[dim]%s[/]" % (style, _mark(s), escape(s["detail"]), escape(_audit_cell(s))))
        only_off = sorted(set(entry["off"]["audit"]["failing"]) - set(entry["on"]["audit"]["failing"]))
        table.add_row(entry["layer"], escape(entry["attack"]), cells[0], cells[1], escape(", ".join(only_off)))
    Console(file=stream).print(table)


def add_arguments(parser):
    parser.description = ("Run the same harmless attack with one isolation layer off and on, and audit the "
                          "running sandbox in each state.")
    parser.add_argument("layers", nargs="*", metavar="LAYER", help="layers to show (default: all): " + ", ".join(LAYERS))
    parser.add_argument("--format", choices=("text", "json"), default="text")


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(prog="pysandbox lab")
    add_arguments(parser)
    args = parser.parse_args(argv)
    unknown = [layer for layer in args.layers if layer not in LAYERS]
    if unknown:
        sys.stderr.write("pysandbox lab: unknown layer %s (choose from %s)\n" % (", ".join(unknown), ", ".join(LAYERS)))
        return 125
    results = run_lessons(args.layers)
    if args.format == "json":
        sys.stdout.write(json.dumps(results, indent=2) + "\n")
    elif sys.stdout.isatty():
        render_rich(results, sys.stdout)
    else:
        sys.stdout.write(render_plain(results) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
