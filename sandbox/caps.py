"""Capability sets of the command, set exactly through libcap-ng.

`apply(keep, ambient)` runs in the command child after every privileged setup step
(mounts, pivot_root, setresuid/setresgid, rlimits) and leaves

    bounding = permitted = effective = inheritable = keep
    ambient  = ambient (plus keep when the inside uid is not 0, see below)

then reads the sets back and fails with SetupError("capabilities", ...) if the kernel
holds anything else. All of this happens inside the sandbox's user namespace: the
capabilities only ever act on objects that namespace owns.

Kernel rules that fix the order of the steps:
  * Clearing the ambient set is always allowed; raising an ambient capability needs it
    in both the permitted and the inheritable set (and capset() lowering either of them
    silently drops it from ambient). So: clear ambient first, raise ambient last.
  * PR_CAPBSET_DROP needs CAP_SETPCAP in the *effective* set, so the bounding set is
    cut while the process still holds everything, i.e. before capset().
  * capset() may only shrink permitted; the new inheritable set must lie within the
    old inheritable set plus the bounding set (hence within keep once the bounding
    set is cut); effective must lie within the new permitted set.

The uid inside the sandbox:
  * uid 0 (the default): at execve the kernel treats every file as carrying full
    file capabilities, so the new permitted set is inheritable | bounding = keep.
    With no_new_privs nothing can be gained above that.
  * a non-zero uid (`--uid`): setresuid() from 0 to non-zero clears permitted,
    effective and ambient unless SECBIT_KEEP_CAPS is set, and execve() as non-root
    computes permitted from the file's capabilities and the ambient set only. So the
    runtime sets PR_SET_KEEPCAPS before setresuid() (user.become), and
    `apply` makes every kept capability ambient as well so it survives execve.
    KEEP_CAPS itself is cleared by the kernel at execve.

libcap-ng is used through ctypes on libcap-ng.so.0 by default and through Debian's
`capng` module otherwise: both call the same C library, and the ctypes path is ~10x
cheaper to load here (dlopen ~0.1 ms against ~1.2 ms for importing `capng`, measured on
the run path's python3 -I -S). PYSANDBOX_CAPNG=module|ctypes forces one.
"""
import os

from pysandbox_common.capnames import CAPABILITIES, CAP_NUMBER, last_cap, normalize
from . import native
from .errors import SetupError

PR_CAPBSET_READ = native.PR_CAPBSET_READ
PR_CAP_AMBIENT = native.PR_CAP_AMBIENT
PR_CAP_AMBIENT_IS_SET = 1

# cap-ng.h
CAPNG_DROP, CAPNG_ADD = 0, 1
CAPNG_EFFECTIVE, CAPNG_PERMITTED, CAPNG_INHERITABLE, CAPNG_BOUNDING_SET, CAPNG_AMBIENT = 1, 2, 4, 8, 16
CAPNG_SELECT_CAPS, CAPNG_SELECT_BOUNDS, CAPNG_SELECT_AMBIENT, CAPNG_SELECT_ALL = 16, 32, 64, 112

SETS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")


class CapsPlan:
    """The capability layer's plan: what the command keeps, and what verify must see."""

    __slots__ = ("keep", "ambient", "expected")

    def __init__(self, keep, ambient, expected):
        object.__setattr__(self, "keep", keep)
        object.__setattr__(self, "ambient", ambient)
        object.__setattr__(self, "expected", expected)

    def __setattr__(self, name, value):
        raise AttributeError("CapsPlan is frozen")


def plan(profile, context):
    """[capabilities] -> CapsPlan (supervisor, before fork); None when the sandbox has no
    user namespace of its own and the caller is not root (nothing to drop). Loads
    libcap-ng here, before clone and pivot_root, so the child only calls into an already
    mapped library."""
    if not (profile.namespaces.user or os.geteuid() == 0):
        return None
    section = profile.capabilities
    inside_uid = context.idmap.inside_uid if context.idmap is not None else profile.idmap.uid
    keep = tuple(normalize(c) for c in section.keep)
    if "ALL" in keep:
        keep = CAPABILITIES[: last_cap() + 1]
    ambient = tuple(normalize(c) for c in section.ambient)
    preload()
    # A non-zero inside uid gets the kept set as ambient too (apply), or exec would drop it.
    return CapsPlan(keep, ambient, expected(keep, ambient, uid=inside_uid))


def child(part, launch):
    """The command's half (stage "capabilities")."""
    apply(part.keep, part.ambient)


def expect(part):
    return {"caps": dict(part.expected)}


def _prctl_is_set(option, arg2=0, arg3=0):
    try:
        return native.prctl(option, arg2, arg3, stage="capabilities") == 1
    except SetupError:
        return False


def numbers(names):
    """Capability numbers for names as in capnames ('ALL' = every capability the kernel has)."""
    result = set()
    for name in names:
        name = normalize(name)
        if name == "ALL":
            result.update(range(last_cap() + 1))
        else:
            result.add(CAP_NUMBER[name])
    return sorted(result)


def mask(names):
    """Bit mask of the named capabilities, as /proc/PID/status shows it."""
    value = 0
    for number in numbers(names):
        value |= 1 << number
    return value


def names(mask_value):
    """Inverse of mask(): names of the bits set (unknown high bits as 'CAP_<n>')."""
    out = []
    number = 0
    while mask_value >> number:
        if mask_value >> number & 1:
            out.append(CAPABILITIES[number] if number < len(CAPABILITIES) else "CAP_%d" % number)
        number += 1
    return out


def expected(keep, ambient=(), uid=None):
    """The masks `apply(keep, ambient)` leaves, for verify.check(expect={"caps": ...}).
    uid: the inside uid the command runs as (default: the caller's current uid)."""
    keep_mask = mask(keep)
    ambient_mask = mask(ambient)
    if (os.getuid() if uid is None else uid) != 0:
        ambient_mask |= keep_mask
    return {"CapInh": keep_mask, "CapPrm": keep_mask, "CapEff": keep_mask, "CapBnd": keep_mask,
            "CapAmb": ambient_mask}


def current():
    """{'CapInh': int, 'CapPrm': ..., 'CapEff': ..., 'CapBnd': ..., 'CapAmb': ...} of this process,
    from /proc/self/status; from capget()/prctl() when /proc is not mounted."""
    try:
        fields = native.proc_status()
    except OSError:
        return _current_from_syscalls()
    sets = {key: int(fields[key], 16) for key in SETS if key in fields}
    if len(sets) < len(SETS):
        return _current_from_syscalls()
    return sets


def _current_from_syscalls():
    import ctypes

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    header = Header(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3: two 32-bit words
    data = (Data * 2)()
    native.check(native.libc().capget(ctypes.byref(header), data), "capabilities", "capget")

    def join(field):
        return getattr(data[0], field) | getattr(data[1], field) << 32

    bounding = ambient = 0
    for number in range(last_cap() + 1):
        if _prctl_is_set(PR_CAPBSET_READ, number):
            bounding |= 1 << number
        if _prctl_is_set(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, number):
            ambient |= 1 << number
    return {"CapInh": join("inheritable"), "CapPrm": join("permitted"), "CapEff": join("effective"),
            "CapBnd": bounding, "CapAmb": ambient}


class _CtypesCapng:
    """libcap-ng through ctypes, with the `capng` module's function names."""

    def __init__(self, lib):
        import ctypes
        self._lib, self._ctypes = lib, ctypes
        lib.capng_clear.restype = None
        lib.capng_clear.argtypes = [ctypes.c_int]
        lib.capng_update.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_uint]
        lib.capng_apply.argtypes = [ctypes.c_int]
        lib.capng_get_caps_process.argtypes = []

    def capng_clear(self, select):
        self._lib.capng_clear(select)

    def capng_update(self, action, kind, number):
        return self._lib.capng_update(action, kind, number)

    def capng_apply(self, select):
        self._ctypes.set_errno(0)
        return self._lib.capng_apply(select)

    def capng_get_caps_process(self):
        return self._lib.capng_get_caps_process()

    def errno(self):
        return native.errno()


class _ModuleCapng:
    """Debian's `capng` module (SWIG over the same library). It does not expose errno."""

    def __init__(self, module):
        self._module = module

    def __getattr__(self, name):
        return getattr(self._module, name)

    def errno(self):
        return 0


_preloaded = None


def preload():
    """Load libcap-ng (and libc's prctl) in the supervisor, before clone and pivot_root, so
    the child only calls into an already mapped library."""
    global _preloaded
    if _preloaded is None:
        _preloaded = backend()
        native.libc()
    return _preloaded


def backend(prefer=None):
    """The libcap-ng binding to use: 'ctypes' (default, cheaper to load) or 'module'."""
    if prefer is None and _preloaded is not None:
        return _preloaded
    prefer = prefer or os.environ.get("PYSANDBOX_CAPNG") or "ctypes"
    order = ("module", "ctypes") if prefer == "module" else ("ctypes", "module")
    failures = []
    for kind in order:
        try:
            if kind == "ctypes":
                return _CtypesCapng(native.libcapng())
            import capng
            return _ModuleCapng(capng)
        except (OSError, ImportError, SetupError) as e:
            failures.append("%s: %s" % (kind, e))
    raise SetupError("capabilities", 0, "libcap-ng is not available (%s)" % "; ".join(failures))


def apply(keep, ambient=(), *, binding=None):
    """Set every capability set of this process exactly (see the module docstring)."""
    try:
        keep_numbers = numbers(keep)
        ambient_numbers = numbers(ambient)
    except ValueError as e:
        raise SetupError("capabilities", 0, str(e)) from None
    uid_is_root = os.getuid() == 0 or os.geteuid() == 0
    if not uid_is_root:
        # execve() as a non-root uid keeps only ambient capabilities.
        ambient_numbers = sorted(set(ambient_numbers) | set(keep_numbers))
    missing_ambient = set(ambient_numbers) - set(keep_numbers)
    if missing_ambient:
        raise SetupError("capabilities", 0, "ambient capabilities must also be kept: "
                         + ", ".join(CAPABILITIES[n] for n in sorted(missing_ambient)))
    want = {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapBnd": 0, "CapAmb": 0}
    for number in keep_numbers:
        for key in ("CapInh", "CapPrm", "CapEff", "CapBnd"):
            want[key] |= 1 << number
    for number in ambient_numbers:
        want["CapAmb"] |= 1 << number

    have = current()
    lost = want["CapPrm"] & ~have["CapPrm"]
    if lost:
        raise SetupError("capabilities", 1, "cannot keep %s: not in the permitted set%s" % (
            ", ".join(names(lost)),
            "" if uid_is_root else " (lost at setresuid: PR_SET_KEEPCAPS must be set first)"))
    setpcap = 1 << CAP_NUMBER["SETPCAP"]
    cut_bounding = have["CapBnd"] & ~want["CapBnd"]

    capng = binding if binding is not None else backend()

    def step(what, select):
        rc = capng.capng_apply(select)
        if rc != 0:
            err = capng.errno() or 1
            raise SetupError("capabilities", err, "%s: libcap-ng capng_apply returned %d (%s)" % (
                what, rc, os.strerror(err)))

    if cut_bounding and not have["CapEff"] & setpcap:
        if not have["CapPrm"] & setpcap:
            raise SetupError("capabilities", 1, "cutting the bounding set needs CAP_SETPCAP, which this "
                             "process no longer has%s" % (
                                 "" if uid_is_root else " (PR_SET_KEEPCAPS must be set before setresuid)"))
        # After setresuid() with KEEP_CAPS the effective set is empty: raise it from the
        # permitted set for the steps below (capset may raise effective within permitted).
        if capng.capng_get_caps_process() != 0:
            raise SetupError("capabilities", capng.errno() or 1, "libcap-ng could not read the process's sets")
        for number in range(last_cap() + 1):
            if have["CapPrm"] >> number & 1:
                capng.capng_update(CAPNG_ADD, CAPNG_EFFECTIVE, number)
        step("raising effective", CAPNG_SELECT_CAPS)

    capng.capng_clear(CAPNG_SELECT_ALL)
    # 1. ambient emptied (always permitted; capset below would otherwise trim it implicitly)
    step("clearing ambient", CAPNG_SELECT_AMBIENT)
    # 2. bounding cut while CAP_SETPCAP is still effective
    for number in keep_numbers:
        capng.capng_update(CAPNG_ADD, CAPNG_BOUNDING_SET, number)
    if cut_bounding:
        step("bounding set", CAPNG_SELECT_BOUNDS)
    # 3. capset: permitted = effective = inheritable = keep
    for number in keep_numbers:
        capng.capng_update(CAPNG_ADD, CAPNG_EFFECTIVE | CAPNG_PERMITTED | CAPNG_INHERITABLE, number)
    step("capset", CAPNG_SELECT_CAPS)
    # 4. ambient raised last: each needs to be in permitted and inheritable already
    if ambient_numbers:
        for number in ambient_numbers:
            capng.capng_update(CAPNG_ADD, CAPNG_AMBIENT, number)
        step("ambient set", CAPNG_SELECT_AMBIENT)

    # Fail closed: the kernel's view must be exactly what was asked for.
    have = current()
    for key in SETS:
        if have.get(key) != want[key]:
            raise SetupError("capabilities", 1, "%s is %#x after setup, expected %#x" % (
                key, have.get(key, -1), want[key]))
