"""Turn a TARGET argument into a PID and what the runtime knows about it.

Order: `self`, a PID, a pysandbox sandbox name, then Docker (its API socket), Podman
(its socket, else its CLI), containerd (its task state directories). For any PID the
runtime is recognised from the process tree (the shim's or conmon's bundle directory
holds the OCI config.json) and /proc/PID/cgroup; marker files such as /.dockerenv are
never consulted, because hosts can carry them too.
"""
from __future__ import annotations

import glob
import json
import os
import re
from types import MappingProxyType

from pysandbox_common.procfs import INITIAL_NS_INODES, ProcFS, ProcError
from .snapshot import TargetInfo


class TargetError(Exception):
    """Bad target: the CLI prints it as one line and exits 2."""


CONTAINERD_STATE_DIRS = ("/run/containerd/io.containerd.runtime.v2.task", "/run/containerd/runc")
PODMAN_SOCKETS = ("/run/podman/podman.sock",)


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
            raise TargetError("%s: ambiguous container id prefix %r" % (self.runtime, ref))
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


def _read_json(path, limit=4 << 20):
    try:
        with open(path, "rb") as f:
            return json.loads(f.read(limit))
    except (OSError, ValueError):
        return None


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
            bundle = next((args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-b", "--bundle")), None)
        else:
            return None
    except (ProcError, OSError, ValueError):
        return None
    if bundle and os.path.isfile(os.path.join(bundle, "config.json")):
        return bundle
    return None


_CGROUP_ID = re.compile(r"(?:docker|libpod|cri-containerd|crio|containerd)[-/]([0-9a-f]{12,64})")


def _runtime_from_cgroup(pid, proc):
    try:
        text = proc.read(pid, "cgroup")
    except ProcError:
        return None, None
    m = _CGROUP_ID.search(text)
    if not m:
        if "kubepods" in text:
            return "kubernetes", None
        return None, None
    kind = m.group(0).split("-")[0].split("/")[0]
    kind = {"libpod": "podman", "cri": "containerd", "crio": "cri-o"}.get(kind, kind)
    return kind, m.group(1)


# ------------------------------------------------------------------ resolution

class Resolver:
    def __init__(self, docker_socket=None, proc=None):
        self.proc = proc or ProcFS()
        path = docker_socket_path(docker_socket)
        self.docker = DockerAPI(path) if path else None
        self.explicit_socket = bool(docker_socket)
        self._versions = {}

    def _docker_info(self, api, data):
        if api.runtime not in self._versions:
            self._versions[api.runtime] = api.versions()
        state = data.get("State") or {}
        pid = int(state.get("Pid") or 0)
        name = (data.get("Name") or "").lstrip("/")
        if not state.get("Running") or pid <= 0:
            raise TargetError("%s container %s is not running" % (api.runtime, name or data.get("Id", "")[:12]))
        return self._describe(pid, api.runtime, data.get("Id"), name, self._versions[api.runtime],
                              inspect=_inspect_summary(data))

    def _describe(self, pid, runtime, container_id=None, name=None, versions=None, inspect=None, notes=()):
        bundle = find_bundle(pid, self.proc)
        config = _read_json(os.path.join(bundle, "config.json")) if bundle else None
        return TargetInfo(pid=pid, runtime=runtime, container_id=container_id, name=name,
                          runtime_version=MappingProxyType(dict(versions or {})),
                          oci=oci_summary(config) if isinstance(config, dict) else None,
                          inspect=inspect, notes=tuple(notes))

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
        found = self._pysandbox(spec)
        if found:
            return found
        for api in self._apis():
            try:
                data = api.inspect(spec)
            except OSError as exc:
                if self.explicit_socket and api is self.docker:
                    raise TargetError("cannot reach the Docker API at %s: %s" % (api.path, exc.strerror or exc))
                continue
            if data:
                return self._docker_info(api, data)
        found = self._podman_cli(spec) or self._containerd(spec)
        if found:
            return found
        raise TargetError("no such target: %r is not a PID, a running container or a pysandbox sandbox" % spec)

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
        pid, notes = init, ["profile %s" % record.get("profile")]
        try:
            with open("/proc/%d/task/%d/children" % (init, init)) as f:
                children = sorted(int(c) for c in f.read().split())
        except OSError:
            children = []
        if children:
            pid = children[0]
            notes.append("auditing the command (pid %d), child of the sandbox's init (pid %d)" % (pid, init))
        return TargetInfo(pid=pid, runtime="pysandbox", container_id=None, name=record["name"], notes=tuple(notes))

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
            data = json.loads(out.stdout or b"[]")
        except ValueError:
            return None
        if out.returncode != 0 or not data:
            return None
        return self._docker_info(DockerAPI("", runtime="podman"), data[0])

    def _containerd_tasks(self):
        for base in CONTAINERD_STATE_DIRS:
            for task in glob.glob(os.path.join(base, "*", "*")):
                pid_text = None
                for name in ("init.pid",):
                    try:
                        with open(os.path.join(task, name)) as f:
                            pid_text = f.read(32).strip()
                    except OSError:
                        pass
                if pid_text and pid_text.isdigit():
                    yield os.path.basename(os.path.dirname(task)), os.path.basename(task), int(pid_text), task

    def _containerd(self, spec):
        matches = [(ns, cid, pid, task) for ns, cid, pid, task in self._containerd_tasks() if cid.startswith(spec)]
        if len({cid for _, cid, _, _ in matches}) > 1:
            raise TargetError("containerd: ambiguous container id prefix %r" % spec)
        if not matches:
            return None
        ns, cid, pid, task = matches[0]
        if not self.proc.exists(pid):
            raise TargetError("containerd container %s is not running" % cid[:12])
        return self._describe(pid, "containerd", cid, "%s/%s" % (ns, cid[:12]))

    def describe_pid(self, pid, runtime_hint=None):
        """Label a PID: pysandbox record, container runtime (cgroup + API), or a bare process."""
        try:
            from pysandbox_common import registry as state
            for record in state.running():
                if int(record["pid"]) == pid:
                    return self._pysandbox_info(record)
        except ImportError:
            pass
        kind, cid = _runtime_from_cgroup(pid, self.proc)
        if kind in ("docker", "podman") and cid:
            for api in self._apis():
                if api.runtime != kind:
                    continue
                try:
                    data = api.inspect(cid)
                except (OSError, TargetError):
                    data = None
                if data and int((data.get("State") or {}).get("Pid") or 0) == pid:
                    return self._docker_info(api, data)
        runtime = runtime_hint or (kind if kind else "process")
        return self._describe(pid, runtime, cid, None)

    def all_targets(self):
        """Every container on the host: each process-tree root of a non-host (pid, mnt) namespace
        pair, labelled through the runtimes; found by namespaces, so sandboxes that no runtime
        knows (bubblewrap, unshare) are included."""
        host_pid, host_mnt = self._host_ns()
        groups = {}
        for pid in self.proc.pids():
            try:
                ns = self.proc.namespaces(pid)
                status = self.proc.status(pid)
            except ProcError:
                continue
            if int(status.get("PPid", "0") or 0) in (0, 2) or pid == 2:
                continue   # kernel threads
            key = (ns.get("pid"), ns.get("mnt"))
            if None in key or key == (host_pid, host_mnt) or pid == os.getpid():
                continue
            groups.setdefault(key, []).append((pid, int(status.get("PPid", "0") or 0)))
        roots = []
        for members in groups.values():
            pids = {p for p, _ in members}
            roots.extend(p for p, parent in members if parent not in pids)
        targets = []
        for pid in sorted(roots):
            try:
                targets.append(self.describe_pid(pid))
            except (TargetError, ProcError):
                continue
        return targets

    def _host_ns(self):
        mine = self.proc.namespaces(os.getpid())
        if mine.get("pid") == INITIAL_NS_INODES["pid"]:
            return mine.get("pid"), mine.get("mnt")
        return INITIAL_NS_INODES["pid"], None


def _podman_in_use():
    if os.environ.get("CONTAINERS_STORAGE_CONF"):
        return True  # the caller points podman at storage of its own
    if os.geteuid() == 0:
        return os.path.isdir("/var/lib/containers/storage")
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.isdir(os.path.join(data, "containers", "storage"))
