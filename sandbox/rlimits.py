"""rlimits: checked in the parent against the host's hard limits, applied in the child.

A hard limit can be raised only with CAP_SYS_RESOURCE in the initial user namespace,
which no sandbox has (and this host's root lacks it too), so a profile asking for more
than the caller's hard limit is an error here, before fork, not a silent clamp.
"""
import resource

from .errors import SetupError

RESOURCES = {
    "nofile": resource.RLIMIT_NOFILE, "nproc": resource.RLIMIT_NPROC, "core": resource.RLIMIT_CORE,
    "fsize": resource.RLIMIT_FSIZE, "stack": resource.RLIMIT_STACK, "as": resource.RLIMIT_AS,
    "cpu": resource.RLIMIT_CPU,
    # per-user kernel counts, charged up the user-namespace chain to the sandbox's creator
    "sigpending": resource.RLIMIT_SIGPENDING, "msgqueue": resource.RLIMIT_MSGQUEUE,
    "memlock": resource.RLIMIT_MEMLOCK,
}


def plan(profile, context):
    """The layer's part: limits() of the profile's [rlimits], None when it sets none."""
    return limits(profile.rlimits) or None


def child(part, launch):
    """The command's half (stage "rlimits")."""
    apply(part)


def limits(section):
    """[(resource, soft, hard)] for every limit the section sets (-1 = unlimited)."""
    out = []
    for name, res in RESOURCES.items():
        value = section.get(name)
        if value is None:
            continue
        wanted = resource.RLIM_INFINITY if value == -1 else value
        _, hard = resource.getrlimit(res)
        if hard != resource.RLIM_INFINITY and (wanted == resource.RLIM_INFINITY or wanted > hard):
            raise SetupError("rlimits", 1, "rlimits.%s = %s is above the host's hard limit %d "
                             "(raising a hard limit needs CAP_SYS_RESOURCE)" % (name, value, hard))
        out.append((res, wanted, wanted))
    return tuple(out)


def apply(limits):
    for res, soft, hard in limits:
        try:
            resource.setrlimit(res, (soft, hard))
        except (OSError, ValueError) as e:
            raise SetupError("rlimits", getattr(e, "errno", 0) or 1) from None
