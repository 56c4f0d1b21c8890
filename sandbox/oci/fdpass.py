"""Unix sockets for the runtime without the `socket` module (it imports enum: milliseconds on
every create): the channel to the container's process, the console socket, and descriptors
passed with SCM_RIGHTS (the pty master to the engine, detached mounts to the child)."""
import _socket
import array

AF_UNIX, SOCK_STREAM, SOCK_SEQPACKET = _socket.AF_UNIX, _socket.SOCK_STREAM, _socket.SOCK_SEQPACKET
SOL_SOCKET, SCM_RIGHTS = _socket.SOL_SOCKET, _socket.SCM_RIGHTS


def pair():
    """A connected SOCK_SEQPACKET pair (one message per send, message boundaries kept)."""
    return _socket.socketpair(AF_UNIX, SOCK_SEQPACKET)


def connect(path):
    sock = _socket.socket(AF_UNIX, SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock


def from_fd(fd):
    return _socket.socket(fileno=fd)


def send_fds(sock, data, fds):
    sock.sendmsg([data], [(SOL_SOCKET, SCM_RIGHTS, array.array("i", fds))] if fds else [])


def recv_fds(sock, size, max_fds):
    """(data, [fds]) of one message."""
    data, ancillary, _, _ = sock.recvmsg(size, _socket.CMSG_SPACE(max_fds * 4))
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == SOL_SOCKET and kind == SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    return data, list(fds)
