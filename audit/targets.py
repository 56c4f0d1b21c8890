"""Turn a TARGET argument into a PID and what the runtime knows about it.

What is refused: a kernel thread (PF_KTHREAD), a zombie or an exited process (TargetError,
exit 2). What is audited but labelled: a process in every host namespace (runtime "host",
note "not isolated: a host process").

How a PID is recognised (docs/audit-targets.md): find the container's first process (walk
up while the parent is in the same namespaces), then look at who started it: a
containerd shim (`-namespace moby` is Docker, any other namespace is containerd, its task
directory and bundle config.json give the id and Kubernetes annotations), conmon (Podman),
the LXC monitor, systemd-nspawn, firejail; else the state directories of runc and crun
(their init PID and its start time); else the pysandbox registry; else the cgroup path.
Marker files such as /.dockerenv are never consulted, because hosts can carry them too.

Every file read here is on the host, at a path the runtime owns (state directories,
bundles), never inside the target; JSON from them is bounded in size all the same.
"""
from __future__ import annotations

import os
import stat
from collections import namedtuple
from types import MappingProxyType

from pysandbox_common.procfs import INITIAL_NS_INODES, NAMESPACES, NoSuchProcess, ProcError, ProcFS

from .snapshot import TargetInfo

_EMPTY = MappingProxyType({})

# include/linux/sched.h: set on every kernel thread (kthreadd and its children).
PF_KTHREAD = 0x00200000
HOST_NOTE = "not isolated: a host process"
JSON_LIMIT = 1 << 20          # a runtime's state or bundle config is a few KiB
MAX_ANCESTORS = 64

CONTAINERD_STATE_DIRS = ("/run/containerd/io.containerd.runtime.v2.task", "/run/containerd/runc")
PODMAN_SOCKETS = ("/run/podman/podman.sock",)
FIREJAIL_NAMES = "/run/firejail/name"
MACHINES_DIR = "/run/systemd/machines"

# containerd's CRI plugin writes these into the bundle's config.json annotations; shown
# under the label names kubelet gives the same facts on Docker (dockershim).
CRI_ANNOTATIONS = {
    "io.kubernetes.cri.sandbox-name": "io.kubernetes.pod.name",
    "io.kubernetes.cri.sandbox-namespace": "io.kubernetes.pod.namespace",
    "io.kubernetes.cri.container-name": "io.kubernetes.container.name",
    "io.kubernetes.cri.sandbox-uid": "io.kubernetes.pod.uid",
    "io.kubernetes.cri.container-type": "io.kubernetes.cri.container-type",
}


class TargetError(Exception):
    """Bad target: the CLI prints it as one line and exits 2."""


def printable(text) -> str:
    """A target-supplied string made safe for one line on a terminal: every non-printable
    character (ESC, CR, newline, bidi controls...) shown as an escape, never emitted."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


# One record for a target, defined beside the snapshot that carries it.
Target = TargetInfo


def make_target(pid, runtime, container_id=None, name=None, runtime_version=None, oci=None, inspect=None,
                notes=(), image=None, labels=None, exe=None):
    if name or container_id:
        identity = "%s/%s" % (runtime, name or container_id)
    else:
        # No name: the program is the most stable thing left (a PID is new every run).
        identity = "%s/%s" % ("host" if runtime == "host" else "process", (exe or "pid-%d" % pid).lstrip("/"))
    return Target(pid=pid, runtime=runtime, container_id=container_id, name=name,
                  runtime_version=MappingProxyType(dict(runtime_version or {})), oci=oci, inspect=inspect,
                  notes=tuple(notes), image=image or None, labels=MappingProxyType(dict(labels or {})),
                  identity=identity)


# ------------------------------------------------------------------ /proc/PID/stat

ProcStat = namedtuple("ProcStat", "state ppid flags start comm")


def parse_stat(text):
    """/proc/PID/stat: comm is in parentheses and may itself contain ') ', so split at the
    last ')' (fs/proc/array.c)."""
    head, sep, rest = text.rpartition(")")
    if not sep:
        raise ValueError("no ')' in stat")
    fields = rest.split()
    comm = head.partition("(")[2]
    return ProcStat(state=fields[0], ppid=int(fields[1]), flags=int(fields[6]), start=int(fields[19]), comm=comm)


def _read_json(path, limit=JSON_LIMIT):
    """JSON from a host file the runtime owns; None if absent, unreadable, too big or malformed."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError:
        return None
    if len(data) > limit:
        return None
    import json
    try:
        return json.loads(data)
    except ValueError:
        return None


def _read_fd(fd):
    """The whole file (as registry.records() reads it: no limit)."""
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def glob_star(base, *parts):
    """glob.glob(os.path.join(base, *parts)) where each part is "*" or a plain name, without
    importing glob (and re through it): "*" matches every name not starting with "." (a
    directory where more parts follow), a plain name must exist (lexists, as glob)."""
    paths = [base]
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        found = []
        for path in paths:
            if part != "*":
                candidate = os.path.join(path, part)
                if os.path.lexists(candidate) if last else os.path.isdir(candidate):
                    found.append(candidate)
                continue
            try:
                with os.scandir(path) as entries:
                    for entry in entries:
                        if entry.name.startswith("."):
                            continue
                        try:
                            if not last and not entry.is_dir():
                                continue
                        except OSError:
                            continue
                        found.append(entry.path)
            except OSError:
                continue
        paths = found
    return paths


def _read_text(path, limit=4096):
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return None


def _arg(args, *names):
    """The value of an option in argv: `-n V`, `--name V` or `--name=V`."""
    for i, a in enumerate(args):
        for name in names:
            if a == name and i + 1 < len(args):
                return args[i + 1]
            if name.startswith("--") and a.startswith(name + "="):
                return a[len(name) + 1:]
    return None


# ------------------------------------------------------------------ Docker API

def _unix_connection(path, timeout):
    # http.client pulls in email and ssl (~30 ms): imported only when an API is asked.
    import http.client
    import socket

    class UnixHTTPConnection(http.client.HTTPConnection):
        def connect(self):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            sock.connect(path)
            self.sock = sock

    return UnixHTTPConnection("localhost", timeout=timeout)


class DockerAPI:
    """The Docker Engine API (also spoken by Podman's compat socket) over a unix socket."""

    def __init__(self, path, timeout=3.0, runtime="docker"):
        self.path = path
        self.timeout = timeout
        self.runtime = runtime

    def get(self, url):
        conn = _unix_connection(self.path, self.timeout)
        try:
            conn.request("GET", url, headers={"Host": "docker"})
            resp = conn.getresponse()
            body = resp.read(16 << 20)
        finally:
            conn.close()
        import json
        try:
            data = json.loads(body or b"null")
        except ValueError:
            data = None
        return resp.status, data

    def available(self):
        try:
            return self.get("/_ping")[0] == 200
        except OSError:
            return False

    def inspect(self, ref):
        from urllib.parse import quote
        status, data = self.get("/containers/%s/json" % quote(ref, safe=""))
        if status == 200 and isinstance(data, dict):
            return data
        message = (data or {}).get("message", "") if isinstance(data, dict) else ""
        if "multiple" in message.lower() or "ambiguous" in message.lower():
            raise TargetError("%s: ambiguous container id prefix %s" % (self.runtime, printable(repr(ref))))
        return None

    def list(self):
        status, data = self.get("/containers/json")
        return data if status == 200 and isinstance(data, list) else []

    def versions(self):
        try:
            status, data = self.get("/version")
        except OSError:
            return {}
        out = {}
        if status == 200 and isinstance(data, dict):
            out[self.runtime] = data.get("Version", "")
            for comp in data.get("Components") or []:
                name = (comp.get("Name") or "").lower()
                version = comp.get("Version") or ""
                if "runc" in name:
                    out["runc"] = version
                elif "containerd" in name:
                    out["containerd"] = version
                elif name == "crun":
                    out["crun"] = version
        return out


def docker_socket_path(option=None):
    """--docker-socket, else DOCKER_HOST (unix:// only), else the standard locations."""
    if option:
        return option[len("unix://"):] if option.startswith("unix://") else option
    env = os.environ.get("DOCKER_HOST", "")
    if env.startswith("unix://"):
        return env[len("unix://"):]
    for path in ("/var/run/docker.sock", "/run/docker.sock"):
        if os.path.exists(path):
            return path
    return None


def _inspect_summary(data):
    host = data.get("HostConfig") or {}
    return MappingProxyType({
        "privileged": bool(host.get("Privileged")),
        "cap_add": tuple(host.get("CapAdd") or ()),
        "cap_drop": tuple(host.get("CapDrop") or ()),
        "security_opt": tuple(host.get("SecurityOpt") or ()),
        "pid_mode": host.get("PidMode") or "",
        "network_mode": host.get("NetworkMode") or "",
        "binds": tuple(host.get("Binds") or ()),
        "memory": host.get("Memory") or 0,
        "pids_limit": host.get("PidsLimit") or 0,
        "image": (data.get("Config") or {}).get("Image", ""),
    })


# ------------------------------------------------------------------ OCI bundle

def oci_summary(config):
    linux = config.get("linux") or {}
    seccomp = linux.get("seccomp")
    if seccomp:
        seccomp_text = "defaultAction %s, %d syscall rules" % (seccomp.get("defaultAction"), len(seccomp.get("syscalls") or ()))
    else:
        seccomp_text = None
    process = config.get("process") or {}
    caps = (process.get("capabilities") or {}).get("effective") or ()
    return MappingProxyType({
        "seccomp": seccomp_text,
        "masked_paths": tuple(linux.get("maskedPaths") or ()),
        "readonly_paths": tuple(linux.get("readonlyPaths") or ()),
        "mounts": tuple("%s -> %s (%s)" % (m.get("source"), m.get("destination"), ",".join(m.get("options") or ()))
                        for m in config.get("mounts") or ()),
        "devices": tuple(d.get("path", "") for d in linux.get("devices") or ()),
        "capabilities": tuple(caps),
        "no_new_privileges": bool(process.get("noNewPrivileges")),
        "namespaces": tuple(n.get("type", "") for n in linux.get("namespaces") or ()),
    })


def _bundle_config(bundle):
    config = _read_json(os.path.join(bundle, "config.json")) if bundle else None
    return config if isinstance(config, dict) else None


def kubernetes_labels(annotations):
    """Pod, namespace and container names from containerd's CRI annotations (or kubelet's
    own io.kubernetes.* labels when a runtime passes those through)."""
    out = {}
    for key, value in (annotations or {}).items():
        if not isinstance(value, str):
            continue
        if key in CRI_ANNOTATIONS:
            out[CRI_ANNOTATIONS[key]] = value
        elif key.startswith("io.kubernetes.") and key not in out:
            out[key] = value
    return out


_CGROUP_ID = r"(?:docker|libpod|cri-containerd|crio|containerd)[-/]([0-9a-f]{12,64})"
# Every alternative of _CGROUP_ID contains one of these: a cgroup path without them cannot
# match, and most are checked without importing re (a plain audit never needs it).
_CGROUP_ID_WORDS = ("docker", "libpod", "crio", "containerd")


def _runtime_from_cgroup(pid, proc):
    try:
        text = proc.read(pid, "cgroup")
    except ProcError:
        return None, None
    m = None
    if any(word in text for word in _CGROUP_ID_WORDS):
        import re
        m = re.search(_CGROUP_ID, text)
    if not m:
        if "kubepods" in text:
            return "kubernetes", None
        return None, None
    kind = m.group(0).split("-")[0].split("/")[0]
    kind = {"libpod": "podman", "cri": "containerd", "crio": "cri-o"}.get(kind, kind)
    return kind, m.group(1)


def find_bundle(pid, proc):
    """The OCI bundle of a container's init: the shim's cwd, or conmon's -b argument."""
    try:
        ppid = int(proc.status(pid).get("PPid", "0"))
        if ppid <= 0:
            return None
        comm = proc.read(ppid, "comm", limit=64).strip()
        if comm.startswith("containerd-shim"):
            bundle = proc.readlink(ppid, "cwd")
        elif comm == "conmon":
            args = proc.read(ppid, "cmdline").split("\0")
            bundle = _arg(args, "-b", "--bundle")
        else:
            return None
    except (ProcError, OSError, ValueError):
        return None
    if bundle and os.path.isfile(os.path.join(bundle, "config.json")):
        return bundle
    return None


# ------------------------------------------------------------------ runc and crun state

# created: True while the container is created but not started (runc and crun both keep
# an exec.fifo in the state directory until `start` opens it)
RuntimeState = namedtuple("RuntimeState", "runtime id pid start bundle config annotations created")


def _runc_roots():
    """runc's --root: /run/runc as root, $XDG_RUNTIME_DIR/runc rootless (runc's own default)."""
    roots = ["/run/runc"]
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        roots.append(os.path.join(xdg, "runc"))
    roots.extend(sorted(glob_star("/run/user", "*", "runc")))
    return list(dict.fromkeys(roots))


def _crun_roots():
    roots = ["/run/crun"]
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        roots.append(os.path.join(xdg, "crun"))
    roots.extend(sorted(glob_star("/run/user", "*", "crun")))
    return list(dict.fromkeys(roots))


def runc_states():
    """Containers in runc's state directories: <root>/<id>/state.json (libcontainer's own
    format: init_process_pid, init_process_start, config.labels "bundle=..." and each
    annotation as "key=value")."""
    for root in _runc_roots():
        for path in glob_star(root, "*", "state.json"):
            data = _read_json(path)
            if not isinstance(data, dict):
                continue
            try:
                pid = int(data.get("init_process_pid") or 0)
                start = int(data.get("init_process_start") or 0)
            except (TypeError, ValueError):
                continue
            labels = {}
            for item in (data.get("config") or {}).get("labels") or ():
                if isinstance(item, str) and "=" in item:
                    key, _, value = item.partition("=")
                    labels[key] = value
            bundle = labels.pop("bundle", None)
            state_dir = os.path.dirname(path)
            yield RuntimeState("runc", data.get("id") or os.path.basename(state_dir), pid, start,
                               bundle, None, labels, os.path.exists(os.path.join(state_dir, "exec.fifo")))


def crun_states():
    """Containers in crun's state directories: <root>/<id>/status (pid, process-start-time,
    bundle) next to the config.json crun was started with."""
    for root in _crun_roots():
        for path in glob_star(root, "*", "status"):
            data = _read_json(path)
            if not isinstance(data, dict):
                continue
            try:
                pid = int(data.get("pid") or 0)
                start = int(data.get("process-start-time") or 0)
            except (TypeError, ValueError):
                continue
            state_dir = os.path.dirname(path)
            config = _bundle_config(state_dir)
            annotations = (config or {}).get("annotations") or {}
            yield RuntimeState("crun", os.path.basename(state_dir), pid, start, data.get("bundle"), config,
                               annotations if isinstance(annotations, dict) else {},
                               os.path.exists(os.path.join(state_dir, "exec.fifo")))


def _pysandbox_oci_roots():
    from pysandbox_common.containers import OCI_RUNTIME_NAME, OCI_STATE_ROOT
    roots = [OCI_STATE_ROOT, "/tmp/%s-%d" % (OCI_RUNTIME_NAME, os.geteuid())]
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        roots.append(os.path.join(xdg, OCI_RUNTIME_NAME))
    roots.extend(sorted(glob_star("/run/user", "*", OCI_RUNTIME_NAME)))
    return list(dict.fromkeys(roots))


def pysandbox_oci_states():
    """Containers pysandbox-oci runs under its default roots: <root>/<id>/state.json (pid,
    pid_start, bundle, annotations; exec.fifo while created and not started)."""
    from pysandbox_common.containers import OCI_RUNTIME_NAME
    for root in _pysandbox_oci_roots():
        for path in glob_star(root, "*", "state.json"):
            data = _read_json(path)
            if not isinstance(data, dict) or data.get("creating"):
                continue
            try:
                pid = int(data.get("pid") or 0)
                start = int(data.get("pid_start") or 0)
            except (TypeError, ValueError):
                continue
            state_dir = os.path.dirname(path)
            annotations = data.get("annotations") if isinstance(data.get("annotations"), dict) else {}
            bundle = data.get("bundle") if isinstance(data.get("bundle"), str) else None
            yield RuntimeState(OCI_RUNTIME_NAME, data.get("id") or os.path.basename(state_dir), pid, start,
                               bundle, None, annotations, os.path.exists(os.path.join(state_dir, "exec.fifo")))


# ------------------------------------------------------------------ resolution

class Resolver:
    def __init__(self, docker_socket=None, proc=None):
        self.proc = proc or ProcFS()
        path = docker_socket_path(docker_socket)
        self.docker = DockerAPI(path) if path else None
        self.explicit_socket = bool(docker_socket)
        self._versions = {}
        self._binary_versions = {}
        self._binary_names = {}
        self._host = None
        self._state_cache = None     # runc/crun state, read once per Resolver
        self._stat_cache = {}
        self._ns_cache = {}
        self._records = None
        self._registry_bytes = None

    # ---------------------------------------------------------- process facts

    def stat(self, pid):
        # A Resolver serves one command: what it read about a PID stays valid for it (the
        # fleet view reads each process once, not once per container that walks past it).
        if pid in self._stat_cache:
            return self._stat_cache[pid]
        try:
            value = parse_stat(self.proc.read(pid, "stat", limit=4096))
        except (ProcError, OSError, ValueError, IndexError):
            value = None
        self._stat_cache[pid] = value
        return value

    def _cmdline(self, pid):
        try:
            return [a for a in self.proc.read(pid, "cmdline", limit=65536).split("\0")]
        except (ProcError, OSError):
            return []

    def _exe(self, pid):
        """The program's path, else its comm (/proc/PID/exe needs ptrace access)."""
        try:
            return self.proc.readlink(pid, "exe")
        except (ProcError, OSError):
            st = self.stat(pid)
            return st.comm if st else None

    def _ns_key(self, pid):
        if pid in self._ns_cache:
            return self._ns_cache[pid]
        try:
            ns = self.proc.namespaces(pid)
            value = tuple(ns.get(n) for n in NAMESPACES)
        except ProcError:
            value = None
        self._ns_cache[pid] = value
        return value

    def host_namespaces(self):
        """The host's namespace inodes, in NAMESPACES order. pid, user, ipc, uts, cgroup and
        time have fixed initial inodes; net and mnt are read from PID 1 or kthreadd (which
        the kernel starts in the initial namespaces), else -- when the auditor itself is in
        the initial PID and user namespaces -- from the auditor."""
        if self._host is not None:
            return self._host
        host = dict(INITIAL_NS_INODES)
        me = os.getpid() if self.proc.root == "/proc" else "self"
        try:
            mine = self.proc.namespaces(me)
        except ProcError:
            mine = {}
        if mine.get("pid") == INITIAL_NS_INODES["pid"]:
            for pid in (1, 2):
                try:
                    ns = self.proc.namespaces(pid)
                except ProcError:
                    continue
                if ns.get("net") and ns.get("mnt"):
                    host["net"], host["mnt"] = ns["net"], ns["mnt"]
                    break
            else:
                if mine.get("user") == INITIAL_NS_INODES["user"]:
                    host["net"], host["mnt"] = mine.get("net"), mine.get("mnt")
        if mine.get("time") is None:
            host["time"] = None       # a kernel without time namespaces
        self._host = tuple(host.get(n) for n in NAMESPACES)
        return self._host

    def _sees_host_pids(self):
        me = os.getpid() if self.proc.root == "/proc" else "self"
        try:
            return self.proc.namespaces(me).get("pid") == INITIAL_NS_INODES["pid"]
        except ProcError:
            return False

    def is_host_process(self, key):
        host = self.host_namespaces()
        return key is not None and None not in key[:6] and key == host

    def check_auditable(self, pid):
        """Refuse what is not a running process: a kernel thread, a zombie, an exited PID."""
        st = self.stat(pid)
        if st is None:
            raise TargetError("no process with PID %d (it does not exist or has exited)" % pid)
        if st.flags & PF_KTHREAD:
            raise TargetError("PID %d is a kernel thread (%s), not a container: nothing to audit"
                              % (pid, printable(st.comm)))
        if st.state in ("Z", "X", "x"):
            raise TargetError("PID %d is a zombie: it has exited (its parent, PID %d, has not reaped it); "
                              "a target that is not running cannot be audited" % (pid, st.ppid))
        return st

    def container_root(self, pid):
        """The first process of pid's container: walk up while the parent is in the same
        namespaces (a container's init is the child of a process outside them)."""
        key = self._ns_key(pid)
        current = pid
        for _ in range(MAX_ANCESTORS):
            st = self.stat(current)
            if st is None or st.ppid <= 0:
                break
            parent_key = self._ns_key(st.ppid)
            # unreadable links (another user's process, rootless) prove nothing: stop there
            if key is None or None in (key[0], key[4]) or parent_key != key:
                break
            current = st.ppid
        return current

    def ancestors(self, pid, depth=4):
        """(pid, comm) of the nearest `depth` ancestors, nearest first (who started a
        container is its parent; firejail and pysandbox need two or three levels)."""
        out = []
        current = pid
        for _ in range(depth):
            st = self.stat(current)
            if st is None or st.ppid <= 0:
                break
            current = st.ppid
            parent = self.stat(current)
            out.append((current, parent.comm if parent else ""))
        return out

    def _binary_version(self, binary):
        """`BINARY --version` of a host runtime binary (runc 1.1.5+ds1 -> 1.1.5), cached."""
        if binary in self._binary_versions:
            return self._binary_versions[binary]
        import shutil
        import subprocess
        version = None
        path = binary if os.path.isabs(binary) else shutil.which(binary)
        if path:
            try:
                out = subprocess.run([path, "--version"], capture_output=True, timeout=5, check=False,
                                     stdin=subprocess.DEVNULL).stdout.decode("utf-8", "replace")
                # "runc version 1.1.5+ds1", "crun version 1.8.1", "firejail version 0.9.72",
                # "systemd 252 (252.39-1~deb12u2)", lxc-start's bare "5.0.2"
                import re
                m = re.search(r"(?:version\s+v?|^systemd\s+|^)(\d+(?:\.\d+)*)", out.strip(), re.M)
                version = m.group(1) if m else None
                # what the binary says it is ("pysandbox-oci version 0.2.0"): an engine may
                # call it through a wrapper of another name (Docker's runtimeArgs scripts)
                self._binary_names[binary] = (out.split() or [""])[0].lower()
            except (OSError, subprocess.TimeoutExpired):
                version = None
        self._binary_versions[binary] = version
        return version

    # ---------------------------------------------------------- runtime recognisers

    def _docker_info(self, api, data, pid=None, notes=()):
        if api.runtime not in self._versions:
            self._versions[api.runtime] = api.versions()
        state = data.get("State") or {}
        init = int(state.get("Pid") or 0)
        name = (data.get("Name") or "").lstrip("/")
        if not state.get("Running") or init <= 0:
            raise TargetError("%s container %s is not running"
                              % (api.runtime, printable(name or data.get("Id", "")[:12])))
        config = data.get("Config") or {}
        labels = config.get("Labels") or {}
        versions = dict(self._versions[api.runtime])
        runtime_name = (data.get("HostConfig") or {}).get("Runtime") or ""
        if runtime_name not in ("", "runc", "io.containerd.runc.v2"):
            # another OCI runtime than the daemon's default (--runtime NAME): the daemon's
            # component versions describe runc, not it; the shim's BinaryName says which it is
            bundle = find_bundle(pid or init, self.proc)
            versions = {k: v for k, v in versions.items() if k not in ("runc", "crun")}
            versions.update(self._shim_versions(bundle) if bundle else {})
        return self._describe(pid or init, api.runtime, data.get("Id"), name, versions,
                              inspect=_inspect_summary(data), image=config.get("Image"),
                              labels=labels if isinstance(labels, dict) else {}, notes=notes)

    def _describe(self, pid, runtime, container_id=None, name=None, versions=None, inspect=None, notes=(),
                  bundle=None, config=None, image=None, labels=None):
        if config is None:
            bundle = bundle or find_bundle(self.container_root(pid), self.proc)
            config = _bundle_config(bundle)
        labels = dict(labels or {})
        if config:
            labels.update(kubernetes_labels(config.get("annotations")))
            annotations = config.get("annotations") or {}
            image = image or annotations.get("io.kubernetes.cri.image-name") or \
                annotations.get("org.opencontainers.image.ref.name") or None
        return make_target(pid, runtime, container_id, name, versions,
                           oci=oci_summary(config) if config else None, inspect=inspect, notes=notes,
                           image=image, labels=labels, exe=self._exe(pid))

    def _from_shim(self, pid, root, shim):
        """A containerd shim's child: `-namespace NS -id ID`, the bundle is the shim's
        working directory; one shim may serve several containers of a pod, so the task
        directory whose init.pid is this container's is looked up next to it."""
        args = self._cmdline(shim)
        namespace = _arg(args, "-namespace", "--namespace") or ""
        cid = _arg(args, "-id", "--id")
        try:
            bundle = self.proc.readlink(shim, "cwd")
        except (ProcError, OSError):
            bundle = None
        if bundle:
            ns_dir = os.path.dirname(bundle)
            for task in glob_star(ns_dir, "*", "init.pid"):
                text = (_read_text(task, 32) or "").strip()
                if text.isdigit() and int(text) == root:
                    bundle = os.path.dirname(task)
                    cid = os.path.basename(bundle)
                    break
        config = _bundle_config(bundle)
        if namespace == "moby" and cid:
            found = self._docker_by_id(cid, pid)
            if found:
                return found
            # No API to ask (or it does not answer): what the shim and bundle say.
            return self._describe(pid, "docker", cid, None, self._shim_versions(bundle), bundle=bundle,
                                  config=config, notes=("named by its containerd shim; the Docker API "
                                                        "was not reachable for its name and image",))
        annotations = (config or {}).get("annotations") or {}
        k8s = kubernetes_labels(annotations)
        name = k8s.get("io.kubernetes.container.name")
        if k8s.get("io.kubernetes.pod.name") and (name or k8s.get("io.kubernetes.cri.container-type") == "sandbox"):
            # a pod's sandbox (pause) container has no container name of its own
            name = "%s/%s/%s" % (k8s.get("io.kubernetes.pod.namespace", ""), k8s["io.kubernetes.pod.name"],
                                 name or "(sandbox)")
        return self._describe(pid, "containerd", cid, name or ("%s/%s" % (namespace, cid) if cid else None),
                              self._shim_versions(bundle), bundle=bundle, config=config,
                              notes=("containerd namespace %s" % printable(namespace),) if namespace else ())

    def _shim_versions(self, bundle):
        """The runtime binary behind a runc shim: options.json's binary_name, else runc."""
        options = _read_json(os.path.join(bundle, "options.json")) if bundle else None
        binary = "runc"
        if isinstance(options, dict):
            binary = options.get("binary_name") or options.get("BinaryName") or binary
        version = self._binary_version(binary)
        name = self._binary_names.get(binary) or os.path.basename(binary)
        # the runtime the shim runs (BinaryName): runc, crun, or pysandbox's own OCI runtime
        component = "pysandbox-oci" if "pysandbox" in name else "crun" if "crun" in name else "runc"
        return {component: version} if version else {}

    def _docker_by_id(self, cid, pid):
        if not self.docker:
            return None
        try:
            data = self.docker.inspect(cid)
        except (OSError, TargetError):
            return None
        return self._docker_info(self.docker, data, pid=pid) if data else None

    def _from_conmon(self, pid, conmon):
        args = self._cmdline(conmon)
        cid = _arg(args, "-c", "--cid")
        name = _arg(args, "-n", "--name")
        bundle = _arg(args, "-b", "--bundle")
        exit_command = _arg(args, "--exit-command") or ""
        runtime = "podman" if ("podman" in exit_command or "libpod" in (bundle or "")
                               or "overlay-containers" in (bundle or "")) else "cri-o"
        if runtime == "podman" and cid:
            for api in self._apis():
                if api.runtime != "podman":
                    continue
                try:
                    data = api.inspect(cid)
                except (OSError, TargetError):
                    data = None
                if data:
                    return self._docker_info(api, data, pid=pid)
        oci_runtime = _arg(args, "-r", "--runtime") or "runc"
        version = self._binary_version(oci_runtime)
        versions = {("crun" if "crun" in os.path.basename(oci_runtime) else "runc"): version} if version else {}
        config = _bundle_config(bundle)
        image = None
        if config:
            annotations = config.get("annotations") or {}
            image = annotations.get("io.podman.annotations.image") or annotations.get("io.kubernetes.cri-o.ImageName")
        return self._describe(pid, runtime, cid, name, versions, bundle=bundle, config=config, image=image)

    def _from_lxc(self, pid, monitor):
        # lxc-start's monitor renames itself "[lxc monitor] LXCPATH NAME" (lxc/start.c).
        args = self._cmdline(monitor)
        words = " ".join(a for a in args if a).split()
        name = lxcpath = None
        if len(words) >= 4 and words[0] == "[lxc" and words[1] == "monitor]":
            lxcpath, name = words[2], words[3]
        else:
            name = _arg(args, "-n", "--name")
            lxcpath = _arg(args, "-P", "--lxcpath") or "/var/lib/lxc"
        version = self._binary_version("lxc-start")
        notes = ("lxcpath %s" % printable(lxcpath),) if lxcpath else ()
        return self._describe(pid, "lxc", name, name, {"lxc": version} if version else {}, notes=notes,
                              config={})

    def _from_nspawn(self, pid, nspawn):
        args = self._cmdline(nspawn)
        name = _arg(args, "-M", "--machine")
        # the machine's root: a directory tree (-D) or a disk image (-i), nspawn's "image"
        directory = _arg(args, "-D", "--directory") or _arg(args, "-i", "--image")
        if not name and directory:
            name = os.path.basename(directory.rstrip("/")) or None
        notes = []
        machine = _read_text(os.path.join(MACHINES_DIR, name)) if name and "/" not in name else None
        if machine:
            notes.append("registered with systemd-machined")
        version = self._binary_version("systemd-nspawn")
        return self._describe(pid, "systemd-nspawn", name, name, {"systemd": version} if version else {},
                              notes=notes, config={}, image=directory)

    def _from_firejail(self, pid, root, outer):
        """firejail: an outer firejail (host namespaces) starts an inner one as PID 1 of the
        sandbox, which starts the program. The sandbox id is the outer PID (`firejail
        --join=PID`), its name in /run/firejail/name/<outer PID>."""
        name = (_read_text(os.path.join(FIREJAIL_NAMES, str(outer)), 256) or "").strip() or None
        notes = []
        if pid == root:
            children = self._children(root)
            if children:
                pid = children[0]
                notes.append("auditing the program (pid %d), child of firejail's PID 1 (pid %d)" % (pid, root))
        version = self._binary_version("firejail")
        return self._describe(pid, "firejail", str(outer), name, {"firejail": version} if version else {},
                              notes=notes, config={})

    def _children(self, pid):
        text = _read_text(os.path.join(self.proc.root, str(pid), "task", str(pid), "children"), 65536) or ""
        return sorted(int(c) for c in text.split() if c.isdigit())

    def _states(self):
        if self._state_cache is None:
            self._state_cache = list(runc_states()) + list(crun_states()) + list(pysandbox_oci_states())
        return self._state_cache

    def _from_state(self, pid, state, root_stat=None):
        if root_stat is not None and state.start and root_stat.start != state.start:
            return None    # the PID was reused: the state file is stale
        config = state.config if state.config is not None else _bundle_config(state.bundle)
        labels = dict(state.annotations or {})
        version = self._binary_version(state.runtime)
        notes = ["bundle %s" % printable(state.bundle)] if state.bundle else []
        if state.created:
            notes.append("created, not started: its init waits on exec.fifo to exec the workload")
        return self._describe(pid, state.runtime, state.id, state.id, {state.runtime: version} if version else {},
                              config=config or {}, labels=labels, notes=notes)

    # ---------------------------------------------------------- describe a PID

    def describe_pid(self, pid, runtime_hint=None):
        """Label a PID: which runtime made its container, its name, id, image and labels.
        Raises TargetError for what is not a running process (kernel thread, zombie)."""
        self.check_auditable(pid)
        records = self._pysandbox_records() if self._registry_may_hold(pid) else ()
        for record in records:
            if int(record["pid"]) == pid:
                return self._pysandbox_info(record)
        key = self._ns_key(pid)
        root = self.container_root(pid)
        root_stat = self.stat(root)
        chain = self.ancestors(root)
        parent, parent_comm = chain[0] if chain else (0, "")
        found = None
        if runtime_hint != "self":
            if self._registry_may_hold(root, parent, *[p for p, _ in chain]):
                records = self._pysandbox_records()
            for record in records:
                if int(record["pid"]) in (root, parent) or int(record["pid"]) in [p for p, _ in chain]:
                    t = self._pysandbox_info(record)
                    found = make_target(pid, "pysandbox", None, record["name"], notes=t.notes[:1],
                                        exe=self._exe(pid))
                    break
            if found is None and not self.is_host_process(key):
                found = self._recognise(pid, root, root_stat, parent, parent_comm)
        if found is not None:
            return found
        kind, cid = _runtime_from_cgroup(pid, self.proc)
        if kind in ("docker", "podman") and cid:
            for api in self._apis():
                if api.runtime != kind:
                    continue
                try:
                    data = api.inspect(cid)
                except (OSError, TargetError):
                    data = None
                if data and int((data.get("State") or {}).get("Pid") or 0) == root:
                    return self._docker_info(api, data, pid=pid)
        notes = []
        if self.is_host_process(key) or (pid == 1 and self._sees_host_pids()):
            # PID 1 of the host's PID namespace is the host's init even when its namespace
            # links cannot be read (it may hold capabilities the auditor lacks).
            runtime = runtime_hint or "host"
            notes.append(HOST_NOTE)
        else:
            runtime = runtime_hint or (kind if kind else "process")
            if key is None or key[0] is None:
                notes.append("its namespaces could not be read (run as root to see them)")
        return self._describe(pid, runtime, cid, None, notes=notes)

    def _in_host_pid_ns(self, pid):
        """Is pid in the auditor's (the host's) PID namespace? /proc/PID/status NSpid lists
        one PID per nested PID namespace and is readable by every user, unlike ns links."""
        if not self._sees_host_pids():
            return True        # a contained auditor cannot tell; its own view is all it has
        try:
            nspid = self.proc.status(pid).get("NSpid", "")
        except ProcError:
            return False
        return len(nspid.split()) == 1

    def _recognise(self, pid, root, root_stat, parent, parent_comm):
        # A launcher is named by its comm, which any process can set (PR_SET_NAME, or exec
        # of a file called `conmon`). Runtimes' launchers run in the host's PID namespace;
        # a process inside a container is not, so it cannot pose as one for its children.
        # (A container sharing the host's PID namespace could; it gains only a label.)
        named_parent = parent_comm
        if not self._in_host_pid_ns(parent):
            parent_comm = ""
        if parent_comm.startswith("containerd-shim"):
            return self._from_shim(pid, root, parent)
        if parent_comm == "conmon":
            return self._from_conmon(pid, parent)
        if parent_comm in ("lxc-start", "lxc-execute"):
            return self._from_lxc(pid, parent)
        if parent_comm == "systemd-nspawn":
            return self._from_nspawn(pid, parent)
        if root_stat is not None and root_stat.comm == "firejail" and parent_comm == "firejail":
            return self._from_firejail(pid, root, parent)
        if named_parent == "firejail":
            # rootless: firejail's own processes are setuid root and their namespaces
            # unreadable, so the walk stops at the program; its parent is the inner firejail
            # (in the sandbox's PID namespace), the outer one must be in the host's
            inner = self.stat(parent)
            outer = self.stat(inner.ppid) if inner else None
            if outer is not None and outer.comm == "firejail" and self._in_host_pid_ns(inner.ppid):
                return self._from_firejail(pid, parent, inner.ppid)
        for state in self._states():
            if state.pid == root:
                found = self._from_state(pid, state, root_stat)
                if found:
                    return found
        return None

    # ---------------------------------------------------------- resolve a TARGET argument

    def _apis(self):
        apis = []
        if self.docker:
            apis.append(self.docker)
        for path in PODMAN_SOCKETS:
            if os.path.exists(path):
                apis.append(DockerAPI(path, runtime="podman"))
        return apis

    def resolve(self, spec):
        if spec == "self":
            return self.describe_pid(os.getpid(), runtime_hint="self")
        if spec.isdigit():
            pid = int(spec)
            if pid <= 0 or not self.proc.exists(pid):
                raise TargetError("no process with PID %s" % spec)
            return self.describe_pid(pid)
        if not spec or "\0" in spec or len(spec) > 1024:
            raise TargetError("no such target: %s" % printable(repr(spec)))
        found = self._pysandbox(spec) or self._local_exact(spec)
        if found:
            return found
        for api in self._apis():
            try:
                data = api.inspect(spec)
            except OSError as exc:
                if self.explicit_socket and api is self.docker:
                    raise TargetError("cannot reach the Docker API at %s: %s"
                                      % (printable(api.path), exc.strerror or exc))
                continue
            if data:
                return self._docker_info(api, data)
        found = self._podman_cli(spec) or self._containerd(spec) or self._state_prefix(spec)
        if found:
            return found
        raise TargetError("no such target: %s is not a PID, a running container or a pysandbox sandbox"
                          % printable(repr(spec)))

    def _running_state(self, state):
        st = self.stat(state.pid) if state.pid > 0 else None
        if st is None or st.state in ("Z", "X", "x") or (state.start and st.start != state.start):
            raise TargetError("%s container %s is not running" % (state.runtime, printable(state.id)))
        return self._from_state(state.pid, state, st)

    def _local_exact(self, name):
        """runc and crun ids, LXC, systemd-nspawn and firejail names: exact matches."""
        for state in self._states():
            if state.id == name:
                return self._running_state(state)
        for pid in self.proc.pids():
            st = self.stat(pid)
            if st is None or st.flags & PF_KTHREAD:
                continue
            if st.comm == "lxc-start":
                args = self._cmdline(pid)
                words = " ".join(a for a in args if a).split()
                if words[:2] == ["[lxc", "monitor]"] and words[3:4] == [name]:
                    child = self._children(pid)
                    if child:
                        return self.describe_pid(child[0])
            elif st.comm == "systemd-nspawn":
                args = self._cmdline(pid)
                machine = _arg(args, "-M", "--machine")
                directory = _arg(args, "-D", "--directory")
                if machine == name or (not machine and directory and os.path.basename(directory.rstrip("/")) == name):
                    child = self._children(pid)
                    if child:
                        return self.describe_pid(child[0])
        try:
            entries = os.listdir(FIREJAIL_NAMES)
        except OSError:
            entries = []
        for entry in entries:
            if entry.isdigit() and (_read_text(os.path.join(FIREJAIL_NAMES, entry), 256) or "").strip() == name:
                inner = self._children(int(entry))
                if inner:
                    return self.describe_pid(inner[0])
        machine = _read_text(os.path.join(MACHINES_DIR, name)) if "/" not in name else None
        if machine:
            import re
            m = re.search(r"^LEADER=(\d+)$", machine, re.M)
            if m and self.stat(int(m.group(1))):
                return self.describe_pid(int(m.group(1)))
        return None

    def _state_prefix(self, prefix):
        matches = [s for s in self._states() if s.id.startswith(prefix)]
        if len({(s.runtime, s.id) for s in matches}) > 1:
            raise TargetError("ambiguous container id prefix %s: %s" % (
                printable(repr(prefix)), ", ".join(printable("%s/%s" % (s.runtime, s.id)) for s in matches[:5])))
        return self._running_state(matches[0]) if matches else None

    def _registry_may_hold(self, *pids):
        """Could a pysandbox state record name one of `pids`? A record's pid is a JSON integer, so its
        file holds that pid's decimal digits: a registry whose files do not is not parsed
        (json, and re through it, would cost more than the rest of a plain audit). A file
        that cannot be read here (a symlink, not a regular file) is one registry.records()
        cannot read either (it opens with O_NOFOLLOW and skips what fails)."""
        if self._records is not None:
            return True
        if self._registry_bytes is None:
            try:
                from pysandbox_common import registry as state
            except ImportError:
                return True
            directory = state.state_dir()
            contents = []
            try:
                names = [n for n in os.listdir(directory) if n.endswith(".json")]
            except OSError:
                names = []
            for name in names:
                try:
                    fd = os.open(os.path.join(directory, name),
                                 os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
                except OSError:
                    continue
                try:
                    if stat.S_ISREG(os.fstat(fd).st_mode):
                        contents.append(_read_fd(fd))
                except OSError:
                    pass
                finally:
                    os.close(fd)
            self._registry_bytes = contents
        wanted = [str(pid).encode() for pid in pids if pid > 0]
        return any(digits in data for digits in wanted for data in self._registry_bytes)

    def _pysandbox_records(self):
        if self._records is None:
            try:
                from pysandbox_common import registry as state
                self._records = list(state.running())
            except ImportError:
                self._records = []
        return self._records

    def _pysandbox(self, name):
        try:
            from pysandbox_common import registry as state
        except ImportError:
            return None
        record = state.find(name)
        if not record:
            return None
        return self._pysandbox_info(record)

    def _pysandbox_info(self, record):
        """pysandbox's PID 1 is its own minimal init (it keeps the runtime's powers inside the
        sandbox's user namespace and reaps); the workload is its command, PID 1's first child."""
        init = int(record["pid"])
        pid, notes = init, ["profile %s" % printable(record.get("profile"))]
        children = self._children(init)
        if children:
            pid = children[0]
            notes.append("auditing the command (pid %d), child of the sandbox's init (pid %d)" % (pid, init))
        return make_target(pid, "pysandbox", None, record["name"], notes=notes, exe=self._exe(pid))

    def _podman_cli(self, spec):
        import shutil
        import subprocess
        podman = shutil.which("podman")
        if not podman:
            return None
        if not _podman_in_use():
            # The first run of podman creates its storage (as root it also bind-mounts the
            # overlay directory onto itself; rootless it leaves a pause process behind):
            # the audit only observes, so it asks only a podman that is already in use.
            # Without its storage there is no podman container to find anyway.
            return None
        try:
            out = subprocess.run([podman, "inspect", "--type", "container", spec], capture_output=True,
                                 timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        try:
            import json
            data = json.loads(out.stdout or b"[]")
        except ValueError:
            return None
        if out.returncode != 0 or not data:
            return None
        return self._docker_info(DockerAPI("", runtime="podman"), data[0])

    def _containerd_bases(self):
        """containerd's task state directories: the standard ones, and those of every running
        shim (its working directory is <state>/io.containerd.runtime.v2.task/<ns>/<id>), so
        a containerd with a state directory of its own is found too."""
        bases = list(CONTAINERD_STATE_DIRS)
        for pid in self.proc.pids():
            st = self.stat(pid)
            if st is None or not st.comm.startswith("containerd-shim"):
                continue
            try:
                bundle = self.proc.readlink(pid, "cwd")
            except (ProcError, OSError):
                continue
            bases.append(os.path.dirname(os.path.dirname(bundle)))
        return list(dict.fromkeys(bases))

    def _containerd_tasks(self):
        for base in self._containerd_bases():
            for task in glob_star(base, "*", "*"):
                pid_text = (_read_text(os.path.join(task, "init.pid"), 32) or "").strip()
                if pid_text.isdigit():
                    yield os.path.basename(os.path.dirname(task)), os.path.basename(task), int(pid_text), task

    def _containerd(self, spec):
        """A containerd task by id, unique id prefix, or Kubernetes name namespace/pod/container."""
        tasks = list(self._containerd_tasks())
        matches = [m for m in tasks if m[1] == spec] or [m for m in tasks if m[1].startswith(spec)]
        if not matches and spec.count("/") == 2:
            for m in tasks:
                k8s = kubernetes_labels((_bundle_config(m[3]) or {}).get("annotations"))
                if "/".join(k8s.get(k, "") for k in ("io.kubernetes.pod.namespace", "io.kubernetes.pod.name",
                                                     "io.kubernetes.container.name")) == spec:
                    matches.append(m)
        if len({cid for _, cid, _, _ in matches}) > 1:
            raise TargetError("containerd: ambiguous container id prefix %s" % printable(repr(spec)))
        if not matches:
            return None
        ns, cid, pid, task = matches[0]
        if self.stat(pid) is None:
            raise TargetError("containerd container %s is not running" % printable(cid[:12]))
        return self.describe_pid(pid)

    # ---------------------------------------------------------- the fleet

    def all_targets(self):
        """One target per container. Processes are grouped by their namespace set and root
        directory; a group that differs from the group of its children only in namespaces it
        still shares with the host (an `unshare --pid --fork` parent, bubblewrap's or
        firejail's monitor) is that container's launcher and joins it. Processes in every
        host namespace are not containers and are left out; sandboxes no runtime knows
        (bubblewrap, unshare) are found all the same."""
        host = self.host_namespaces()
        me = os.getpid()
        procs = {}
        for pid in self.proc.pids():
            if pid == me:
                continue
            st = self.stat(pid)
            if st is None or st.flags & PF_KTHREAD or st.state in ("Z", "X", "x"):
                continue
            key = self._ns_key(pid)
            if key is None or key[0] is None or key[4] is None or key == host:
                continue       # unreadable (not ours, rootless) or a host process
            try:
                root = self.proc.readlink(pid, "root")
            except (ProcError, OSError):
                root = None
            procs[pid] = (st, (key, root))
        groups = {}
        for pid, (st, group) in procs.items():
            groups.setdefault(group, []).append(pid)
        merged_into = {}
        for pid, (st, group) in procs.items():
            parent = procs.get(st.ppid)
            if parent is None or parent[1] == group:
                continue
            launcher = parent[1]
            # the launcher differs from its child's group only where it is in the host's namespace
            if all(a == b or a == h for a, b, h in zip(launcher[0], group[0], host)):
                merged_into.setdefault(launcher, group)

        def sink(group):
            seen = set()
            while group in merged_into and group not in seen:
                seen.add(group)
                group = merged_into[group]
            return group

        containers = {}
        for group, members in groups.items():
            containers.setdefault(sink(group), [])
            if group not in merged_into:
                containers[sink(group)].extend(members)
        targets = []
        for group, members in containers.items():
            member_set = set(members)
            roots = [p for p in members if procs[p][0].ppid not in member_set]
            if not roots:
                continue
            first = min(roots, key=lambda p: (procs[p][0].start, p))
            try:
                targets.append(self.describe_pid(first))
            except (TargetError, ProcError):
                continue       # exited meanwhile
        targets.sort(key=lambda t: t.pid)
        return targets


def _podman_in_use():
    if os.environ.get("CONTAINERS_STORAGE_CONF"):
        return True  # the caller points podman at storage of its own
    if os.geteuid() == 0:
        return os.path.isdir("/var/lib/containers/storage")
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.isdir(os.path.join(data, "containers", "storage"))
