"""Import of OCI/Docker seccomp profiles (JSON) into the seccomp layer's policy.

The JSON is read once, at profile load, into nested tuples (so the policy stays hashable and its
hash covers the file's content, not its path). Which rules apply is decided at compile time,
because Docker's profile re-allows syscalls for capabilities the container keeps (`includes.caps`),
for the native architecture (`includes.arches`) and for kernel versions (`minKernel`): the filter a
container really gets depends on its capabilities and on the host, as runc/moby resolve it.
"""
import os

from .errors import ProfileError

ACTIONS = {
    "SCMP_ACT_ALLOW": "allow",
    "SCMP_ACT_ERRNO": "errno",
    "SCMP_ACT_KILL": "kill_thread",
    "SCMP_ACT_KILL_THREAD": "kill_thread",
    "SCMP_ACT_KILL_PROCESS": "kill",
    "SCMP_ACT_TRAP": "trap",
    "SCMP_ACT_LOG": "log",
    "SCMP_ACT_TRACE": "trace",
}
OPS = {
    "SCMP_CMP_NE": "ne", "SCMP_CMP_LT": "lt", "SCMP_CMP_LE": "le", "SCMP_CMP_EQ": "eq",
    "SCMP_CMP_GE": "ge", "SCMP_CMP_GT": "gt", "SCMP_CMP_MASKED_EQ": "masked_eq",
}
# Go's GOARCH for this machine: what moby compares `includes.arches` with.
NATIVE_GOARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
NATIVE_SCMP_ARCH = {"x86_64": "SCMP_ARCH_X86_64"}.get(os.uname().machine, "")
EPERM, ENOSYS = 1, 38


def _fail(message):
    raise ProfileError(message, key="import")


def load(path):
    """Read and check an OCI seccomp JSON file; return it as nested tuples."""
    import json
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except OSError as e:
        _fail("%s: %s" % (path, e.strerror or e))
    except ValueError as e:
        _fail("%s: not JSON: %s" % (path, e))
    return parse(data, path)


def parse(data, path):
    """An OCI seccomp object (a profile file's content, or config.json's linux.seccomp) as
    nested tuples; `path` names it in errors."""
    if not isinstance(data, dict):
        _fail("%s: expected a JSON object" % path)
    for key in ("syscalls", "archMap", "architectures", "flags"):
        if data.get(key) is not None and not isinstance(data[key], list):
            _fail("%s: %s: expected a list" % (path, key))
    default = _action(data.get("defaultAction"), data.get("defaultErrnoRet"), "defaultAction")
    arches = []
    for entry in data.get("archMap") or ():
        if isinstance(entry, dict) and entry.get("architecture") == NATIVE_SCMP_ARCH:
            arches = [entry["architecture"]] + list(entry.get("subArchitectures") or ())
    if data.get("architectures"):
        arches = list(data["architectures"])
    if not all(isinstance(a, str) for a in arches):
        _fail("architectures: expected names such as SCMP_ARCH_X86_64")
    rules = []
    for number, call in enumerate(data.get("syscalls") or ()):
        where = "syscalls[%d]" % number
        if not isinstance(call, dict):
            _fail(where + ": expected an object")
        names = call.get("names") or ([call["name"]] if isinstance(call.get("name"), str) else [])
        # a string here would be iterated character by character and the rule lost
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            _fail(where + ": expected `names`, a list of syscall names")
        action = _action(call.get("action"), call.get("errnoRet"), where + ".action")
        args = []
        for arg in call.get("args") or ():
            if not isinstance(arg, dict) or arg.get("op") not in OPS:
                _fail(where + ".args: expected {index, value, valueTwo, op} with op one of " + ", ".join(OPS))
            index, value, value_two = arg.get("index"), arg.get("value", 0), arg.get("valueTwo", 0) or 0
            if not isinstance(index, int) or not 0 <= index <= 5:
                _fail(where + ".args: index must be 0..5")
            if not isinstance(value, int) or not isinstance(value_two, int):
                _fail(where + ".args: value and valueTwo must be integers")
            args.append((index, OPS[arg["op"]], value & (2**64 - 1), value_two & (2**64 - 1)))
        rules.append((tuple(names), action, tuple(args),
                      _condition(call.get("includes"), where + ".includes"),
                      _condition(call.get("excludes"), where + ".excludes")))
    return (default, tuple(arches), tuple(rules))


def _action(name, errno_ret, where):
    if name == "SCMP_ACT_NOTIFY":
        _fail(where + ": SCMP_ACT_NOTIFY needs a seccomp agent, which pysandbox does not run")
    if not isinstance(name, str) or name not in ACTIONS:
        _fail("%s: unknown action %r (known: %s)" % (where, name, ", ".join(sorted(ACTIONS))))
    kind = ACTIONS[name]
    if kind == "errno":
        code = EPERM if errno_ret is None else errno_ret
        if not isinstance(code, int) or not 0 <= code <= 4094:  # libseccomp refuses 4095
            _fail(where + ": errnoRet must be 0..4094")
        return ("errno", code)
    if kind == "trace":
        return ("trace", errno_ret if isinstance(errno_ret, int) else 0)
    return (kind,)


def _condition(raw, where):
    if not raw:
        return ((), (), "")
    if not isinstance(raw, dict):
        _fail(where + ": expected an object")
    for key in ("caps", "arches"):
        if not isinstance(raw.get(key) or [], list) or not all(isinstance(c, str) for c in raw.get(key) or []):
            _fail("%s.%s: expected a list of names" % (where, key))
    caps = tuple(sorted(c.upper() if c.upper().startswith("CAP_") else "CAP_" + c.upper()
                        for c in raw.get("caps") or ()))
    arches = tuple(raw.get("arches") or ())
    min_kernel = raw.get("minKernel") or ""
    if min_kernel and _version(min_kernel) is None:
        _fail(where + ".minKernel: expected a version such as 4.8")
    return (caps, arches, min_kernel)


def _version(text):
    parts = []
    for piece in str(text).split("-")[0].split(".")[:2]:
        if not piece.isdigit():
            return None
        parts.append(int(piece))
    return tuple(parts + [0] * (2 - len(parts)))


def kernel_version():
    return _version(os.uname().release) or (0, 0)


def normalize_caps(caps):
    """Capability names as the profile has them ("SYS_ADMIN", "ALL") -> {"CAP_SYS_ADMIN", ...} or None for all."""
    out = set()
    for cap in caps or ():
        cap = cap.upper()
        if cap in ("ALL", "CAP_ALL"):
            return None
        out.add(cap if cap.startswith("CAP_") else "CAP_" + cap)
    return frozenset(out)


def uses_kernel_version(oci):
    return any(inc[2] or exc[2] for _, _, _, inc, exc in oci[2])


def resolve(oci, caps):
    """The rules that apply for these capabilities on this machine, as moby resolves them.

    Returns (default_action, arches, [(name, action, args)]) with args as (index, op, value, value_two).
    """
    have = normalize_caps(caps)
    kernel = kernel_version()
    out = []
    for names, action, args, includes, excludes in oci[2]:
        inc_caps, inc_arches, inc_kernel = includes
        exc_caps, exc_arches, exc_kernel = excludes
        if have is not None and any(c not in have for c in inc_caps):
            continue
        if inc_arches and NATIVE_GOARCH not in inc_arches:
            continue
        if inc_kernel and kernel < _version(inc_kernel):
            continue
        if exc_caps and (have is None or any(c in have for c in exc_caps)):
            continue
        if exc_arches and NATIVE_GOARCH in exc_arches:
            continue
        if exc_kernel and kernel >= _version(exc_kernel):
            continue
        for name in names:
            out.append((name, action, args))
    return oci[0], oci[1], out
