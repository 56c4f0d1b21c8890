"""Network namespace: a new one holds only `lo`, and the kernel creates it down. Modes
"none" and "loopback" both bring it up (child half, from inside the namespace), as
Docker, bubblewrap and nsjail do: a program that talks to itself on 127.0.0.1 works,
and nothing else is reachable. "host" shares the host's network and creates no
namespace at all."""
import ctypes
import os

from . import native

AF_INET = 2
SOCK_DGRAM = 2
SOCK_CLOEXEC = 0o2000000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFF_RUNNING = 0x40


class _IfReq(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char * 16), ("flags", ctypes.c_short), ("pad", ctypes.c_char * 22)]


def bring_up_loopback():
    libc = native.libc()
    fd = native.check(libc.socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), "loopback", "socket")
    try:
        req = _IfReq(b"lo")
        native.check(libc.ioctl(fd, SIOCGIFFLAGS, ctypes.byref(req)), "loopback", "SIOCGIFFLAGS lo")
        req.flags |= IFF_UP | IFF_RUNNING
        native.check(libc.ioctl(fd, SIOCSIFFLAGS, ctypes.byref(req)), "loopback", "SIOCSIFFLAGS lo")
    finally:
        os.close(fd)


# -- the layer interface (sandbox/stages.py) ----------------------------------------

def plan(profile, context):
    """A new network namespace gets lo up unless the profile shares the host's network."""
    if profile.namespaces.net and profile.network.mode in ("none", "loopback"):
        return True
    return None


def child(part, launch):
    """PID 1, inside the new network namespace (stage "loopback")."""
    bring_up_loopback()
