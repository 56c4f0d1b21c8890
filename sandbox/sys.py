"""Compatibility name for sandbox.native (the native-call layer); new code imports
`from . import native`. Kept so modules edited in parallel (mnt.py) need no change."""
from .native import *  # noqa: F401,F403
from .native import libc as _libc_loader, syscall as _named_syscall  # noqa: F401
from . import native as _native


def _syscall(number, *args):
    """Raw syscall by number for older callers; numbers come from native.syscalls.NR."""
    return _native.libc().syscall(number, *args)


class _LibcProxy:
    def __getattr__(self, name):
        return getattr(_native.libc(), name)


libc = _LibcProxy()
