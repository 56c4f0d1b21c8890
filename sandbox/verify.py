"""Fail closed: just before exec the command child checks, from its own view, that every
layer it was asked for holds; any difference raises SetupError("verify: <layer>", 0,
"<what differs>") and the runtime exits 125 naming the layer.

`check(expect)` runs after capabilities, no_new_privs and Landlock, and *before* the
seccomp filter is installed, so it may use any syscall. Keys (each optional; only what
is given is checked):

  no_new_privs          bool   /proc/self/status NoNewPrivs
  caps                  {"CapBnd": int, "CapPrm": .., "CapEff": .., "CapInh": .., "CapAmb": ..}
                               (caps.expected(keep, ambient, uid) computes them)
  seccomp_mode          0|2    Seccomp, before our filter (2 when the supervisor itself
                               runs under a filter, e.g. inside a container)
  seccomp_filters_before int   Seccomp_filters before our filter
  uid_map_no_host_root  True   no range of uid_map or gid_map covers host id 0
  masked_paths          [path] each absent, /dev/null (char 1:3), unopenable, or an empty
                               read-only directory
  readonly_paths        [path] each absent, or a file whose open for writing fails with
                               EROFS/EACCES/EPERM, or a directory on a read-only mount
  landlock              ("list", dir) | ("write", file) | True   the process is Landlock-
                               restricted: listing dir (True: "/", which the composed-root
                               policy never grants) or opening file for writing (opened and
                               closed, never written) fails with EACCES; landlock.probe_for
                               picks the probe the policy denies
  no_fds_above_2        True   /proc/self/fd holds only 0, 1, 2 and `allowed_fds`
  allowed_fds           [int]
  allow_cloexec_fds     bool   also accept descriptors marked close-on-exec

After the filter is installed, `seccomp_installed(filters_before)` checks Seccomp = 2 and
Seccomp_filters = filters_before + 1 with open/read/close only (syscalls the command's
own startup needs anyway, so any filter that lets the command run lets this run).
"""
import os

from . import native
from .errors import SetupError

def _fail(layer, detail):
    raise SetupError("verify: " + layer, 0, detail)


def status():
    """/proc/self/status as {field: text}."""
    return native.proc_status()


def expectations(profile, idmap, mounts, layers):
    """What the command must see just before exec (supervisor, before fork): the runtime's
    own checks plus each layer's expect(part), from the plan that layer made."""
    import sys
    expect = {"no_new_privs": profile.process.no_new_privs}
    if idmap is not None:
        expect["uid_map_no_host_root"] = True
    if mounts.proc:
        expect["masked_paths"] = [m for m in mounts.masked if m.startswith("/proc/")]
        expect["readonly_paths"] = list(mounts.readonly)
    for module_name, part in layers.items():
        layer_expect = getattr(sys.modules["sandbox." + module_name], "expect", None)
        if layer_expect is not None:
            expect.update(layer_expect(part))
    if profile.process.close_fds:
        expect["no_fds_above_2"] = True
    return expect


def check(expect):
    try:
        fields = status()
    except OSError as e:
        fields = None
        status_error = e.strerror
    needs_status = [k for k in ("no_new_privs", "caps", "seccomp_mode", "seccomp_filters_before") if k in expect]
    if needs_status and fields is None:
        _fail(needs_status[0].replace("_", " "), "cannot read /proc/self/status: %s" % status_error)

    if "no_new_privs" in expect:
        have = fields.get("NoNewPrivs")
        want = "1" if expect["no_new_privs"] else "0"
        if have != want:
            _fail("no_new_privs", "NoNewPrivs is %s, expected %s" % (have, want))

    if "caps" in expect:
        for key, want in expect["caps"].items():
            text = fields.get(key)
            have = int(text, 16) if text else None
            if have != want:
                _fail("capabilities", "%s is %s, expected %#x%s" % (
                    key, "missing" if have is None else "%#x" % have, want, _cap_diff(have, want)))

    if "seccomp_mode" in expect and fields.get("Seccomp") != str(expect["seccomp_mode"]):
        _fail("seccomp", "Seccomp mode is %s, expected %s" % (fields.get("Seccomp"), expect["seccomp_mode"]))
    if "seccomp_filters_before" in expect:
        have = fields.get("Seccomp_filters")
        if have != str(expect["seccomp_filters_before"]):
            _fail("seccomp", "%s seccomp filters already installed, expected %s" % (
                have if have is not None else "unknown (no Seccomp_filters field)", expect["seccomp_filters_before"]))

    if expect.get("uid_map_no_host_root"):
        for name in ("uid_map", "gid_map"):
            _check_map(name)

    for path in expect.get("masked_paths") or ():
        _check_masked(path)
    for path in expect.get("readonly_paths") or ():
        _check_readonly(path)

    probe = expect.get("landlock")
    if probe:
        if probe is True:
            probe = ("list", "/")
        elif isinstance(probe, str):
            probe = ("list", probe)
        _check_landlock(*probe)

    if expect.get("no_fds_above_2"):
        _check_fds(set(expect.get("allowed_fds") or ()), bool(expect.get("allow_cloexec_fds")))


def _cap_diff(have, want):
    if have is None:
        return ""
    from .caps import names
    extra, missing = names(have & ~want), names(want & ~have)
    parts = []
    if extra:
        parts.append("unexpected " + ", ".join(extra))
    if missing:
        parts.append("missing " + ", ".join(missing))
    return " (" + "; ".join(parts) + ")" if parts else ""


def _check_map(name):
    try:
        with open("/proc/self/" + name) as f:
            text = f.read()
    except OSError as e:
        _fail("id maps", "cannot read /proc/self/%s: %s" % (name, e.strerror))
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 3:
            _fail("id maps", "unreadable %s line %r" % (name, line))
        inside, outside, count = (int(x) for x in fields)
        if outside <= 0 < outside + count:
            _fail("id maps", "%s maps inside id %d onto host id 0 (%s)" % (name, inside - outside, line.strip()))


def _check_masked(path):
    import stat
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError:
        return  # cannot even be looked at
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3):
        return
    if stat.S_ISDIR(st.st_mode):
        try:
            entries = os.listdir(path)
        except OSError:
            return
        if entries:
            _fail("masked paths", "%s is a directory with %d entries, expected it masked" % (path, len(entries)))
        if not os.statvfs(path).f_flag & os.ST_RDONLY:
            _fail("masked paths", "%s is an empty but writable directory, expected it read-only" % path)
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return
    os.close(fd)
    _fail("masked paths", "%s can be opened for reading, expected it masked" % path)


def _check_readonly(path):
    import errno
    import stat
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError:
        return
    if stat.S_ISDIR(st.st_mode):
        if not os.statvfs(path).f_flag & os.ST_RDONLY:
            _fail("readonly paths", "%s is on a writable mount" % path)
        return
    try:
        # opened and closed at once, nothing is ever written
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return
        _fail("readonly paths", "%s: opening for writing failed with %s, expected EROFS or EACCES" % (
            path, errno.errorcode.get(e.errno, e.errno)))
    os.close(fd)
    _fail("readonly paths", "%s can be opened for writing" % path)


def _check_landlock(kind, probe):
    import errno
    flags = os.O_RDONLY | os.O_DIRECTORY if kind == "list" else os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK
    doing = "listing" if kind == "list" else "opening for writing"
    try:
        fd = os.open(probe, flags | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.EACCES:
            return
        _fail("landlock", "probe: %s %s failed with %s, expected EACCES" % (
            doing, probe, errno.errorcode.get(e.errno, e.errno)))
    os.close(fd)
    _fail("landlock", "the process is not Landlock-restricted: %s %s outside the allowed set succeeded" % (
        doing, probe))


def _check_fds(allowed, allow_cloexec):
    import fcntl
    allowed = allowed | {0, 1, 2}
    listed = [int(name) for name in os.listdir("/proc/self/fd")]
    for fd in listed:
        if fd in allowed:
            continue
        try:
            flags = fcntl.fcntl(fd, fcntl.F_GETFD)
        except OSError:
            continue  # the descriptor os.listdir used for the directory, closed by now
        if allow_cloexec and flags & fcntl.FD_CLOEXEC:
            continue
        try:
            target = os.readlink("/proc/self/fd/%d" % fd)
        except OSError:
            target = "?"
        _fail("descriptors", "fd %d (%s) is open, expected only 0, 1, 2%s" % (
            fd, target, "".join(", %d" % a for a in sorted(allowed - {0, 1, 2}))))


def seccomp_installed(filters_before):
    """After installing one filter: Seccomp = 2 and Seccomp_filters = filters_before + 1."""
    try:
        fields = status()
    except OSError as e:
        _fail("seccomp", "cannot read /proc/self/status after installing the filter: %s" % e.strerror)
    if fields.get("Seccomp") != "2":
        _fail("seccomp", "Seccomp mode is %s after installing the filter, expected 2" % fields.get("Seccomp"))
    want = str(int(filters_before) + 1)
    if fields.get("Seccomp_filters") != want:
        _fail("seccomp", "%s seccomp filters after installing, expected %s" % (fields.get("Seccomp_filters"), want))
