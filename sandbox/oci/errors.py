"""The one error of the OCI front-end: config.json, a process.json or the host refuses something.
Its text is what the engine shows the user (containerd and Docker match parts of it)."""


class SpecError(Exception):
    """config.json (or a process.json for exec) asks for something invalid or impossible."""
