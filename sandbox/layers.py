"""Validation hooks for the profile sections that belong to a layer module.

Each layer validates its own section into a frozen policy object; `None` means the
layer is off. The module behind a section is imported only when the section is
non-empty, so a profile that does not use a layer does not pay for loading it.
"""
from .errors import ProfileError


def validate(section, raw):
    # A disabled section with other keys is still checked: a typo must not hide behind
    # `enabled = false` until someone turns the layer on.
    if not raw or (raw.get("enabled") is False and len(raw) == 1):
        return None
    if section == "seccomp":
        from . import seccomp
        return seccomp.validate_section(raw)
    if section == "landlock":
        from . import landlock
        return landlock.validate_section(raw)
    raise ProfileError("no validator for section", key=section)
