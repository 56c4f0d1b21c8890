"""Validation hooks for the profile sections that belong to a layer module.

Each layer validates its own section into a frozen policy object; `None` means the
layer is off. The module behind a section is imported only when the section is
non-empty, so a profile that does not use a layer does not pay for loading it.
"""
from .errors import ProfileError


def validate(section, raw):
    if section == "seccomp":
        if not raw or raw.get("enabled") is False and len(raw) == 1:
            return None
        from . import seccomp
        return seccomp.validate_section(raw)
    if section == "landlock":
        if not raw or raw.get("enabled") is False:
            return None
        from . import landlock
        return landlock.validate_section(raw)
    raise ProfileError("no validator for section", key=section)
