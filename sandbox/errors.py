"""Errors and the exit codes they map to.

Exit codes follow the conventions of env(1), timeout(1) and the OCI runtimes:
the command's own status, 128+N for signal N, 124 timeout, 125 the sandbox could
not be set up, 126 found but not executable, 127 not found. Usage and profile
errors share 125's family but get their own codes so scripts can tell them apart.
"""

EXIT_TIMEOUT = 124
EXIT_SETUP = 125
EXIT_NOEXEC = 126
EXIT_NOTFOUND = 127
EXIT_USAGE = 2
EXIT_PROFILE = 3


class SandboxError(Exception):
    """Any error pysandbox reports as one line: `pysandbox: <message>`."""

    exit_code = EXIT_SETUP

    def __init__(self, message, exit_code=None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(SandboxError):
    exit_code = EXIT_USAGE


class ProfileError(SandboxError):
    """A profile that cannot be used: names the file, the key and where possible the line."""

    exit_code = EXIT_PROFILE

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
