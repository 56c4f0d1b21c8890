"""Confinement checks: no_new_privs, seccomp, LSM, user namespace creation, keyrings,
leaked file descriptors and the runtime's version."""
import stat

from . import check, fail, fixes, ok, ref, skip, unknown


def _active_failed(snapshot):
    why = [message for fact, message in snapshot.errors if fact == "active"]
    return " (%s)" % why[0] if why else ""


def _probe_text(p):
    return "active probe: %s" % ", ".join("%s=%s" % kv for kv in sorted(p.items()))


@check("nnp-off", "no_new_privs is not set", "low",
       "Without PR_SET_NO_NEW_PRIVS, execve of a setuid/setcap binary raises privileges inside the target.",
       "A setuid-root binary in the image (or one planted through a writable mount) regains capabilities "
       "from the bounding set, undoing a non-root user.",
       "Set no_new_privs.",
       ref(cis="5.25", pss="spec.containers[*].securityContext.allowPrivilegeEscalation"),
       fixes("--security-opt no-new-privileges", "allowPrivilegeEscalation: false", "profiles set `process.no_new_privs` = true"))
def nnp_off(snapshot):
    evidence = "status NoNewPrivs: %d" % snapshot.no_new_privs
    return ok(evidence) if snapshot.no_new_privs else fail(evidence)


@check("seccomp-off", "No seccomp filter", "high",
       "Without a seccomp filter every system call is reachable: the whole kernel is attack surface, including "
       "keyctl, bpf, userfaultfd, open_by_handle_at and unshare.",
       "Kernel exploits (Dirty Pipe CVE-2022-0847, CVE-2022-0185 via fsconfig) and capability abuse that Docker's "
       "default profile would have stopped.",
       "Run with a seccomp filter (Docker's default, or RuntimeDefault).",
       ref(cve=("CVE-2022-0185",), cis="5.21", pss="spec.containers[*].securityContext.seccompProfile.type"),
       fixes("remove --security-opt seccomp=unconfined", "seccompProfile: {type: RuntimeDefault}",
             "profiles keep a `seccomp` policy (strict and default do)"))
def seccomp_off(snapshot):
    evidence = ["status Seccomp: %d, Seccomp_filters: %d" % (snapshot.seccomp_mode, snapshot.seccomp_filters)]
    oci = snapshot.target.oci
    if oci is not None:
        evidence.append("OCI config linux.seccomp: %s" % (oci.get("seccomp") or "absent"))
    if snapshot.seccomp_mode == 0:
        return fail(*evidence)
    return ok(*evidence)


@check("lsm-off", "No LSM confinement (AppArmor/SELinux)", "medium",
       "No AppArmor or SELinux label confines the target: nothing denies mount, ptrace or writes to /proc beyond "
       "the capability and seccomp checks.",
       "AppArmor's docker-default profile is what stops `mount -t cgroup` in the release_agent escape even with "
       "CAP_SYS_ADMIN; without an LSM that last line is gone.",
       "Enable AppArmor or SELinux on the host and run the container with a profile.",
       ref(cis="5.1", pss="spec.containers[*].securityContext.appArmorProfile"),
       fixes("--security-opt apparmor=docker-default (needs AppArmor on the host)",
             "appArmorProfile: {type: RuntimeDefault}",
             "pysandbox confines with Landlock instead (not visible in /proc); keep it on"))
def lsm_off(snapshot):
    label = snapshot.lsm
    missing = snapshot.unreadable("attr/current")
    if label is None and missing:
        return unknown(missing)
    if label is None:
        return fail("attr/current: no LSM answers on this kernel (no AppArmor/SELinux label)")
    if label in ("unconfined", "kernel") or label.endswith(":unconfined_t:s0") or label.startswith("unconfined"):
        return fail("attr/current: %s" % label)
    return ok("attr/current: %s" % label)


@check("userns-create", "Can create user namespaces", "low",
       "Inside a new user namespace an unprivileged process gets every capability over the namespaces it creates, "
       "exposing kernel code (netfilter, mount, overlayfs) that is otherwise root-only.",
       "Many kernel privilege escalations start with unshare(CLONE_NEWUSER): CVE-2022-0185, CVE-2023-32233, "
       "CVE-2022-25636.",
       "Block unshare/clone with CLONE_NEWUSER in seccomp, or set user.max_user_namespaces=0 in the target's namespace.",
       ref(cve=("CVE-2022-0185", "CVE-2023-32233"), cis="5.21", pss="spec.containers[*].securityContext.seccompProfile.type"),
       fixes("keep Docker's default seccomp profile (it blocks unshare without CAP_SYS_ADMIN)",
             "seccompProfile: {type: RuntimeDefault}", "profiles deny unshare/CLONE_NEWUSER in their `seccomp` policy"))
def userns_create(snapshot):
    probe = snapshot.probe("unshare-user")
    if probe is not None:
        if probe.get("result") == "created":
            return fail(_probe_text(probe))
        return ok(_probe_text(probe))
    limit = snapshot.host.sysctls.get("user.max_user_namespaces")
    if snapshot.root_link not in (None, "/"):
        # create_user_ns() refuses a chrooted caller (current_chrooted()): a root that is a
        # directory path as seen from the host, rather than a pivoted mount, is a chroot.
        return ok("root is %s: the target is chrooted, and the kernel refuses CLONE_NEWUSER to "
                  "chrooted processes" % snapshot.root_link)
    if limit == "0":
        return ok("user.max_user_namespaces = 0")
    missing = snapshot.unreadable("root")
    if snapshot.root_link is None and missing:
        # Without the root link a chrooted target (which the kernel refuses) cannot be told
        # from a pivoted one (which it allows).
        return unknown(missing + "; or prove it with --active")
    if snapshot.seccomp_mode == 0:
        return fail("no seccomp filter; user.max_user_namespaces = %s" % limit)
    return unknown("a seccomp filter is installed: whether it blocks CLONE_NEWUSER is read only by running it; "
                   "prove it with --active" + _active_failed(snapshot), "Seccomp_filters: %d" % snapshot.seccomp_filters)


@check("keyring", "Kernel keyring reachable", "low",
       "keyctl/add_key/request_key are not namespaced by container: a process can read and plant keys of the "
       "same uid across containers, and the keyring code has had exploitable bugs.",
       "CVE-2016-0728 (keyring refcount overflow to root); secrets stored in the session keyring by another "
       "container of the same uid.",
       "Block keyctl, add_key and request_key in seccomp (Docker's default does).",
       ref(cve=("CVE-2016-0728",), cis="5.21", pss="spec.containers[*].securityContext.seccompProfile.type"),
       fixes("keep Docker's default seccomp profile", "seccompProfile: {type: RuntimeDefault}",
             "profiles deny keyctl/add_key/request_key in seccomp"))
def keyring(snapshot):
    probe = snapshot.probe("syscall:keyctl")
    if probe is not None:
        if probe.get("verdict") == "allowed":
            return fail(_probe_text(probe))
        return ok(_probe_text(probe))
    if snapshot.seccomp_mode == 0:
        return fail("no seccomp filter: keyctl(2) is reachable")
    return unknown("a seccomp filter is installed: whether it blocks keyctl is read only by running it; "
                   "prove it with --active" + _active_failed(snapshot), "Seccomp_filters: %d" % snapshot.seccomp_filters)


_HARMLESS_CHAR_MAJORS = {1, 4, 5, 136}   # mem (null/zero/random...), tty, tty/ptmx, pts


@check("leaked-fd", "File descriptor open on a host file or directory", "high",
       "An open fd that refers to a mount not in the target's own mount namespace is a handle onto the host "
       "filesystem, whatever the target's root is.",
       "CVE-2024-21626 (runc leaked an fd of /sys/fs/cgroup: `cwd` or `openat(fd, \"../../..\")` walks to the host's "
       "root); any leaked directory fd allows openat() outside the container.",
       "Close or mark close-on-exec every fd above 2 before exec; update the runtime.",
       ref(cve=("CVE-2024-21626",), cis="5.31"),
       fixes("update runc to >= 1.1.12", "update the node's container runtime",
             "pysandbox closes every fd above 2 before exec (keep `process.close_fds` = true)"))
def leaked_fd(snapshot):
    own = {m.mount_id for m in snapshot.mounts}
    missing = snapshot.unreadable("mountinfo", "fd")
    if missing:
        return unknown(missing)
    if not own:
        return unknown("the target's mount table is empty")
    leaked, inherited = [], []
    for f in snapshot.fds:
        if not f.target.startswith("/") or f.target.startswith("/memfd:") or f.mnt_id < 0:
            continue
        if stat.S_ISCHR(f.mode) and (f.rdev >> 8) in _HARMLESS_CHAR_MAJORS:
            continue
        if not (stat.S_ISDIR(f.mode) or stat.S_ISREG(f.mode) or stat.S_ISBLK(f.mode) or stat.S_ISCHR(f.mode)):
            continue
        if f.mnt_id in own:
            continue
        if stat.S_ISREG(f.mode) or stat.S_ISCHR(f.mode):
            # A file fd reaches that one file (often stdout redirected by the caller), not a
            # tree: openat() relative to it is impossible. Noted, not failed.
            inherited.append("fd %d -> %s: a host file, reachable only itself" % (f.fd, f.target))
            continue
        leaked.append("fd %d -> %s (%s on mnt_id %d, not in the target's mount namespace)"
                      % (f.fd, f.target, "directory" if stat.S_ISDIR(f.mode) else "block device", f.mnt_id))
    if leaked:
        return fail(*leaked)
    return ok("%d fds, none a host directory or block device" % len(snapshot.fds), *inherited)


def _version_tuple(text):
    import re     # only with a runtime version to compare: a plain audit never needs it
    m = re.match(r"v?(\d+)\.(\d+)\.(\d+)(?:-rc\.?(\d+))?", text or "")
    if not m:
        return None
    major, minor, patch, rc = m.groups()
    # an -rc sorts before its release
    return (int(major), int(minor), int(patch), int(rc) if rc else 10 ** 6)


# (component, fixed versions per minor line, CVE): a version below the fix of its minor line
# (or below every listed line) is vulnerable.
RUNTIME_ADVISORIES = (
    ("runc", ("1.1.12",), "CVE-2024-21626 (leaked fd, container breakout)"),
    ("runc", ("1.2.8", "1.3.3"), "CVE-2025-31133/CVE-2025-52565/CVE-2025-52881 (masked-path and /dev/console races)"),
    ("containerd", ("1.3.9", "1.4.3"), "CVE-2020-15257 (abstract shim socket reachable from host-network containers)"),
)


def _vulnerable(version, fixed):
    v = _version_tuple(version)
    if v is None:
        return None
    fixes_ = [_version_tuple(f) for f in fixed]
    for f in fixes_:
        if v[:2] == f[:2]:
            return v < f
    return v < max(fixes_)


@check("runtime-version", "Container runtime version has known breakout CVEs", "high",
       "The runtime that created the container (runc, containerd) is older than the fix of a known breakout.",
       "CVE-2024-21626: a container started with a crafted workdir gets a host directory fd; CVE-2025-31133: "
       "/dev/null replaced by a symlink turns a masked path into a host write; CVE-2019-5736 overwrote host runc.",
       "Update the runtime.",
       ref(cve=("CVE-2024-21626", "CVE-2025-31133", "CVE-2025-52565", "CVE-2025-52881", "CVE-2019-5736", "CVE-2020-15257"),
           cis="1.1.x / 5.x (keep the container runtime up to date)"),
       fixes("upgrade docker/containerd/runc packages", "upgrade the node's runtime", "pysandbox has no runtime binary; keep the host kernel updated"))
def runtime_version(snapshot):
    versions = dict(snapshot.target.runtime_version)
    if not versions:
        return skip("runtime version not known for a %s target" % snapshot.target.runtime)
    evidence = ["%s %s" % kv for kv in sorted(versions.items())]
    hits = []
    for component, fixed, cve in RUNTIME_ADVISORIES:
        if component in versions and _vulnerable(versions[component], fixed):
            hits.append("%s %s < %s: %s" % (component, versions[component], "/".join(fixed), cve))
    if hits:
        return fail(*(hits + evidence))
    return ok(*evidence)
