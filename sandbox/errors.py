"""Errors and the exit codes they map to.

`pysandbox run` passes the command's own status through, so pysandbox's own failures
need a code that commands rarely use. Like Docker and Podman (and env(1)/timeout(1)
for 126/127), every error of pysandbox itself exits 125: a usage mistake, a bad option
value, a profile that does not load or validate, a sandbox that could not be set up.
The message (and `--result`'s `stage`) says which. The rest:
  124  the wall-clock timeout killed the sandbox
  126  the command was found but could not be executed
  127  the command was not found
  128+N  the command died of signal N
The other subcommands (profile, explain, gc, delegate) use the same 125 for every
error; `profile lint` exits 1 when it finds something at or above its threshold.
UsageError and ProfileError stay distinct classes so callers can tell them apart.
"""

EXIT_TIMEOUT = 124
EXIT_SETUP = 125
EXIT_NOEXEC = 126
EXIT_NOTFOUND = 127
# Kept as names (other modules import them); both are 125 now, see above.
EXIT_USAGE = EXIT_SETUP
EXIT_PROFILE = EXIT_SETUP
# The findings code of `profile lint` (and of `audit --fail-on`).
EXIT_FINDINGS = 1

# The system library behind each ctypes binding, and the Debian package that ships it.
LIBRARY_PACKAGES = (("libseccomp", "libseccomp2"), ("libcap-ng", "libcap-ng0"))
# What dlopen, ctypes.util.find_library and the bindings say when a library is absent
# or broken (an error about a rule libseccomp refused is not one of these).
_LOAD_FAILURES = ("missing", "not available", "unable to find", "cannot open shared object", "file too short",
                  "no such file", "invalid elf header", "undefined symbol", "wrong elf class")


class SandboxError(Exception):
    """Any error pysandbox reports as one line: `pysandbox: <message>`."""

    exit_code = EXIT_SETUP
    stage = None

    def __init__(self, message, exit_code=None):
        super().__init__(message)
        # An explicit code is honoured only where it means something of its own (124,
        # 126, 127); the old usage codes 2 and 3 some callers still pass become 125.
        if exit_code is not None and exit_code in (EXIT_TIMEOUT, EXIT_NOEXEC, EXIT_NOTFOUND):
            self.exit_code = exit_code


class UsageError(SandboxError):
    """The command line (or an API argument) is wrong: exit 125, stage "usage"."""

    exit_code = EXIT_USAGE
    stage = "usage"


class ProfileError(SandboxError):
    """A profile that cannot be used: names the file, the key and where possible the line."""

    exit_code = EXIT_PROFILE
    stage = "profile"

    def __init__(self, message, source=None, key=None, line=None):
        self.source, self.key, self.line = source, key, line
        where = ""
        if source:
            where = source + (":%d" % line if line else "") + ": "
        if key:
            where += "%s: " % key
        super().__init__(where + message)


class SetupError(SandboxError):
    """A setup stage failed: `<stage>: <strerror>`; exit 125."""

    def __init__(self, stage, errno_=0, detail=""):
        import os
        self.stage, self.errno = stage, errno_
        text = stage + ": " + (detail or (os.strerror(errno_) if errno_ else "failed"))
        super().__init__(text, EXIT_SETUP)


def missing_library_hint(text):
    """For a message about a system library that could not be loaded: the same message
    plus the Debian package to install; None when `text` names none of ours."""
    lowered = text.lower()
    if not any(word in lowered for word in _LOAD_FAILURES):
        return None
    for library, package in LIBRARY_PACKAGES:
        if package in text:    # the message names the package already (sandbox.native does)
            return None
        if library in lowered:
            return "%s (%s is missing or unusable: install the Debian package %s)" % (text, library, package)
    return None
