#!/usr/bin/env bash
# Set up pysandbox on Debian 12 (as root): system packages, a virtual environment at
# $PYSANDBOX_PREFIX/venv (default /opt/pysandbox, readable by every user so rootless
# runs can use it), the package itself (a normal, non-editable install), and the
# `pysandbox` and `audit` commands in /usr/local/bin.
#   ./setup.sh           set up only
#   ./setup.sh --test    set up, then run the whole test suite as root and again as an
#                        unprivileged user (created if missing)
set -euo pipefail
cd "$(dirname "$0")"
PREFIX=${PYSANDBOX_PREFIX:-/opt/pysandbox}
VENV=$PREFIX/venv
TEST_USER=${PYSANDBOX_TEST_USER:-pysbx}

if [ "$(id -u)" != 0 ]; then
    echo "setup.sh: run as root (it installs system packages)" >&2
    exit 2
fi

# Runtime: libseccomp and libcap-ng (loaded through ctypes), the Debian Python with venv
# and the capng bindings, newuidmap/newgidmap for rootless multi-id maps, util-linux and
# iproute2. Tests and benchmarks: gcc (escape probes), Docker and busybox (audit targets),
# and the peers we compare with; Docker's and Podman's default seccomp profiles (test data).
# Docker's: golang-github-docker-docker-dev (matches docker.io), Podman's: golang-github-containers-common (/usr/share/containers/seccomp.json).
# The man pages and completions are checked with man-db/groff, bash-completion and zsh.
# qemu-system-x86: the bench's virtual machine row (a guest kernel is fetched below).
PACKAGES="python3 python3-venv python3-cap-ng libseccomp2 libcap-ng0 uidmap util-linux iproute2 procps
gcc libc6-dev docker.io podman busybox-static bubblewrap crun runc firejail
golang-github-docker-docker-dev golang-github-containers-common lxc systemd-container runsc
man-db groff-base bash-completion zsh qemu-system-x86"
missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# The guest kernel of the bench's QEMU row: Debian's generic kernel, downloaded and unpacked
# into $PREFIX/share/vm, never installed on the host (no /boot entry, no initramfs hooks, no
# modules). Only the vmlinuz is kept; the bench writes its own initramfs. A failure warns:
# the bench's VM row then says what is missing.
VM_DIR=$PREFIX/share/vm
if [ ! -s "$VM_DIR/vmlinuz" ]; then
    kernel_pkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}'; }
    kernel_pkg=$(kernel_pkg)
    # No package lists yet (a fresh image): fetch them once, then name the kernel again.
    [ -n "$kernel_pkg" ] || { apt-get update -qq && kernel_pkg=$(kernel_pkg); } || true
    fetch=$(mktemp -d /tmp/pysandbox-vmlinuz.XXXXXX)
    ( cd "$fetch" && { apt-get download -qq -o APT::Sandbox::User=root "$kernel_pkg" 2>/dev/null ||
        { apt-get update -qq && apt-get download -qq -o APT::Sandbox::User=root "$kernel_pkg"; }; } &&
      dpkg-deb --fsys-tarfile ./*.deb | tar -xf - --wildcards './boot/vmlinuz-*' &&
      mkdir -p "$VM_DIR" && install -m 0644 boot/vmlinuz-* "$VM_DIR/vmlinuz" &&
      echo "$kernel_pkg" > "$VM_DIR/kernel-package" ) ||
        echo "setup.sh: warning: no guest kernel for the bench's VM row (${kernel_pkg:-linux-image-amd64})" >&2
    rm -rf "$fetch"
fi

if [ ! -x "$VENV/bin/python" ]; then
    mkdir -p "$PREFIX"
    # Debian's /usr/bin/python3, not one under /root: unprivileged users must be able to run it.
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
# The package's build step (setup.py) compiles sandbox/init.c into it as sandbox/pysandbox-init.
"$VENV/bin/pip" install -q --disable-pip-version-check --no-warn-script-location ".[test,docs]"
# pip's generic console script imports re and runs site's .pth processing on every start;
# the run path is measured in milliseconds, so the launcher runs Python isolated (-I -S)
# with the package's own directories on sys.path instead, and takes the interpreter's
# startup modules from its frozen copies (-X frozen_modules=on, ~2 ms; the kernel hands
# a shebang's options over as one argument, hence the single cluster).
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# The sandbox's PID 1 after setup: a small static C init (static, so it runs in any
# --rootfs image too), built by pip through setup.py. Without it the runtime falls back
# to its Python init; a pip too old to run the build step gets it compiled here.
[ -x "$SITE/sandbox/pysandbox-init" ] || gcc -static -Os -Wall -o "$SITE/sandbox/pysandbox-init" sandbox/init.c
# The compiled child (sandbox/stager.c); without it every run takes the Python stages.
# (again when a source is newer: a stager older than its supervisor misreads the run's fields)
stager_current() {
    [ -x "$SITE/sandbox/pysandbox-stage" ] || return 1
    for source in sandbox/stager.c sandbox/stager.h sandbox/init.c sandbox/channel.h; do
        [ "$source" -nt "$SITE/sandbox/pysandbox-stage" ] && return 1
    done
    return 0
}
stager_current || gcc -static -O2 -Wall -o "$SITE/sandbox/pysandbox-stage" sandbox/stager.c
for name in pysandbox pysandbox-cli audit pysandbox-oci; do
    case $name in
        # a `run` asks this user's warm server first (sandbox/serve_client.py: builtins only,
        # one stat when none listens), before anything else of pysandbox is imported
        pysandbox) call='if sys.argv[1:2] == ["run"]:
    from sandbox.serve_client import hand_over; hand_over(sys.argv[2:])
from sandbox.cli import entry; entry(serve=False)' ;;
        # what the C client below execs once it has asked the server
        pysandbox-cli) call="from sandbox.cli import entry; entry(serve=False)" ;;
        audit) call="from audit.cli import main; sys.exit(main())" ;;
        pysandbox-oci) call="from sandbox.oci.cli import entry; entry()" ;;
    esac
    cat > "$VENV/bin/$name" <<LAUNCHER
#!$VENV/bin/python3 -ISXfrozen_modules=on
import sys
sys.path += ["$SITE", "/usr/lib/python3/dist-packages"]
$call
LAUNCHER
done
# The `pysandbox` command itself, where gcc is at hand: a small C client (sandbox/client.c)
# that hands a `run` to this user's `pysandbox serve` without starting an interpreter (the
# interpreter alone takes about as long as crun's whole run), and execs the Python
# launcher pysandbox-cli for everything else. Without gcc the Python launcher above asks.
if gcc -static -O2 -Wall -DPYSANDBOX_CLI="\"$VENV/bin/pysandbox-cli\"" -o "$VENV/bin/pysandbox.client" \
        sandbox/client.c; then
    mv -f "$VENV/bin/pysandbox.client" "$VENV/bin/pysandbox"
else
    echo "setup.sh: warning: no C client; pysandbox run asks pysandbox serve from Python" >&2
fi
# Man pages and bash/zsh completions of both commands, generated from their parsers into
# $PREFIX/share (and linked into the system's search paths below).
"$VENV/bin/python" -I -c 'import sys; from sandbox.cli import write_shell_docs; write_shell_docs(sys.argv[1])' \
    "$PREFIX/share" >/dev/null
chmod -R a+rX "$PREFIX"
# A private prefix (PYSANDBOX_LINK=0) leaves the commands in /usr/local/bin alone, so
# several checkouts can be installed side by side for development.
if [ "${PYSANDBOX_LINK:-1}" != 0 ]; then
    ln -sf "$VENV/bin/pysandbox" /usr/local/bin/pysandbox
    ln -sf "$VENV/bin/audit" /usr/local/bin/audit
    ln -sf "$VENV/bin/pysandbox-oci" /usr/local/bin/pysandbox-oci
    mkdir -p /usr/local/share/man/man1 /usr/share/bash-completion/completions /usr/local/share/zsh/site-functions
    for name in pysandbox audit; do
        ln -sf "$PREFIX/share/man/man1/$name.1" /usr/local/share/man/man1/$name.1
        ln -sf "$PREFIX/share/bash-completion/completions/$name" /usr/share/bash-completion/completions/$name
        ln -sf "$PREFIX/share/zsh/site-functions/_$name" /usr/local/share/zsh/site-functions/_$name
    done
fi
# A second unprivileged user WITHOUT cgroup delegation: the tests prove that a limit asked
# for on the command line is refused (exit 125, naming the fix) rather than dropped when
# the caller has no cgroups of its own. It never gets a delegation or a login shell.
NODELEG_USER=${PYSANDBOX_NODELEG_USER:-pysbx2}
id "$NODELEG_USER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$NODELEG_USER"

if [ "${1:-}" != "--test" ]; then
    exit 0
fi

# Root run: the installed package is under test (the tests dir is not the package root).
# Reference data (Docker's and Podman's seccomp profiles) comes from the Debian packages
# above: nothing beside the clone is read.
status=0
"$VENV/bin/pytest" -q -p no:cacheprovider tests || status=$?

# Unprivileged run of the same suites, minus what needs host root by nature (Docker,
# host cgroup trees). The tests are copied where that user can read.
id "$TEST_USER" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$TEST_USER"
# Rootless strict needs cgroups of its own: delegate them for this run, take them back after.
"$VENV/bin/pysandbox" delegate "$TEST_USER" >/dev/null
# The tree is copied whole (tests read profiles/ and audit/schema.json beside them); the
# package under test is still the installed one.
work=$(mktemp -d /tmp/pysandbox-rootless.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir "$work/repo"
tar --exclude=.git -cf - . | tar -xf - -C "$work/repo"
chmod -R a+rX "$work"
chmod 1777 "$work"
cd "$work"
runuser -u "$TEST_USER" -- env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME="/home/$TEST_USER" \
    CI="${CI:-}" \
    "$VENV/bin/pytest" -q -p no:cacheprovider -m "not root_only" "$work/repo/tests" || status=$?
cd - >/dev/null
"$VENV/bin/pysandbox" delegate --remove "$TEST_USER" >/dev/null || status=$?
"$VENV/bin/pysandbox" gc >/dev/null
exit $status
