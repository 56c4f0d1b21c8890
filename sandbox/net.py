"""Network namespace: a new one holds only a downed `lo`. Mode "loopback" brings it up
(child half, from inside the namespace); "host" shares the host's network and creates
no namespace at all."""
import ctypes
import os

from .errors import SetupError
from .sys import libc

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
    fd = libc.socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)
    if fd < 0:
        raise SetupError("loopback", ctypes.get_errno())
    try:
        req = _IfReq(b"lo")
        if libc.ioctl(fd, SIOCGIFFLAGS, ctypes.byref(req)) < 0:
            raise SetupError("loopback", ctypes.get_errno())
        req.flags |= IFF_UP | IFF_RUNNING
        if libc.ioctl(fd, SIOCSIFFLAGS, ctypes.byref(req)) < 0:
            raise SetupError("loopback", ctypes.get_errno())
    finally:
        os.close(fd)
