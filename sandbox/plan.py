"""The plan: everything a sandbox needs, decided once in the supervisor before any fork
and frozen (no lookups after fork, nothing changes it between runs).

`build(profile, ...)` makes the runtime's own parts (namespaces, id maps through
user.plan, the mount plan through mnt.plan), asks every layer stage of the tables in
sandbox/stages.py for its part (`<module>.plan(profile, context)`), collects what verify
must see (core checks plus each layer's `expect(part)`) and returns one `Plan`. A front-end that is not a profile (the coming OCI runtime
reading config.json) builds the same Plan from its own input; the supervisor and the
stage tables (sandbox/stages.py) see only the Plan.
"""
import os

from . import native
from .errors import SetupError


class Frozen:
    """A record whose fields are all given at construction and never change."""

    __slots__ = ()

    def __init__(self, **values):
        missing = [k for k in self.__slots__ if k not in values]
        extra = [k for k in values if k not in self.__slots__]
        if missing or extra:
            raise TypeError("%s: missing %s, unknown %s" % (type(self).__name__, missing, extra))
        for key in self.__slots__:
            object.__setattr__(self, key, values[key])

    def __setattr__(self, name, value):
        raise AttributeError("%s is frozen" % type(self).__name__)

    __delattr__ = __setattr__

    def replace(self, **changes):
        values = {k: getattr(self, k) for k in self.__slots__}
        values.update(changes)
        return type(self)(**values)

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, ", ".join("%s=%r" % (k, getattr(self, k)) for k in self.__slots__))


class Plan(Frozen):
    __slots__ = (
        "profile_name",
        "clone_flags",      # namespaces clone() creates: user, pid
        "unshare_flags",    # namespaces PID 1 unshares once it is in its cgroups
        "idmap",            # user.IdMap or None (no user namespace)
        "mounts",           # mnt.MountPlan
        "hostname",         # "" when the uts namespace is shared
        "new_session",
        "close_fds",
        "no_new_privs",
        "layers",           # {layer module: its part} for the layer stages (read-only mapping)
        "verify",           # read-only mapping of expectations (verify.check) or None
        "cgroup_limits",    # the profile's [limits] when a cgroup is wanted, else None
        "env",              # the environment before per-run overrides (read-only mapping)
        "cwd",
        "timeout",
        "modules",          # modules the child needs, imported before clone
    )


class Context:
    """What a layer's plan() may look at besides the profile: the parts planned before it
    (in table order) and the runtime's own plans."""

    def __init__(self, idmap, mounts, extra_seccomp):
        self.idmap, self.mounts, self.extra_seccomp = idmap, mounts, extra_seccomp
        self.layers = {}


# types.MappingProxyType without importing `types` on the run path
_MappingProxy = type(type.__dict__)


def _readonly(mapping):
    return _MappingProxy(dict(mapping))


def environment_of(environment, environ=None):
    """The command's environment by the profile's [environment] section, inheriting from
    `environ` (default: this process's)."""
    environ = os.environ if environ is None else environ
    env = {} if environment.clear else dict(environ)
    for key in environment.get("pass"):
        if key in environ:
            env[key] = environ[key]
    env.update(environment.set)
    return env


def build(profile, extra_mounts=((), (), ()), extra_seccomp=None, environ=None):
    """The Plan for `profile` on this host, for the caller's credentials; the command's
    environment inherits from `environ` (default: this process's)."""
    p = profile
    ns = p.namespaces
    # clone() creates only what must exist at birth: the user namespace (its maps are
    # written from outside) and the pid namespace (the child is its PID 1). The child
    # unshares the rest itself, so the costly ones (a network namespace takes ~1-2 ms
    # of kernel work) are made in parallel with the supervisor's next sandbox; they
    # are owned by the new user namespace either way. The cgroup namespace must wait
    # until the child is in its cgroup; a time namespace applies to children only.
    clone_flags = unshare_flags = 0
    for name in ("user", "pid"):
        if getattr(ns, name):
            clone_flags |= native.NS_FLAGS[name]
    for name in ("mount", "net", "uts", "ipc", "cgroup", "time"):
        if getattr(ns, name):
            unshare_flags |= native.NS_FLAGS[name]
    if not ns.user and os.geteuid() != 0:
        raise SetupError("userns", 1, "a sandbox without a user namespace needs host root")
    modules = ["user", "verify", "stages", "channel", "child", "pyinit"]

    from . import user
    idmap = user.plan(p.idmap, p.idmap.uid, p.idmap.gid) if ns.user else None

    from . import mnt
    extra_ro, extra_rw, extra_tmpfs = extra_mounts
    mounts = mnt.plan(p.filesystem, ro_binds=extra_ro, binds=extra_rw, tmpfs=extra_tmpfs,
                      hostname=p.process.hostname if ns.uts else "", uid=p.idmap.uid, gid=p.idmap.gid)
    modules.append("mnt")

    # Every layer stage of the tables plans its part, in table order (sandbox/stages.py).
    from . import stages
    context = Context(idmap, mounts, extra_seccomp)
    for module_name in stages.layer_modules():
        module = __import__("sandbox." + module_name, fromlist=["plan"])
        part = module.plan(p, context)
        if part is not None:
            context.layers[module_name] = part
            modules.append(module_name)

    from . import verify
    expect = verify.expectations(p, idmap=idmap, mounts=mounts, layers=context.layers)
    lim = p.limits
    wants_cgroup = lim.memory or lim.pids or lim.cpus or lim.cpu_weight or lim.io_weight or lim.required
    return Plan(profile_name=p.name, clone_flags=clone_flags, unshare_flags=unshare_flags, idmap=idmap,
                mounts=mounts, hostname=p.process.hostname if ns.uts else "",
                new_session=p.process.new_session, close_fds=p.process.close_fds,
                no_new_privs=p.process.no_new_privs, layers=_readonly(context.layers),
                verify=_readonly(expect), cgroup_limits=lim if wants_cgroup else None,
                env=_readonly(environment_of(p.environment, environ)), cwd=p.filesystem.cwd,
                timeout=p.process.timeout or None, modules=tuple(modules))


def preload(plan):
    """Import what the child's stages need: after pivot_root the host's files are gone."""
    for name in plan.modules:
        __import__("sandbox." + name)
