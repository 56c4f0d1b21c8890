"""The on-disk cache shared by the layers (compiled seccomp filters, parsed profiles).

Entries are only ever trusted when the file belongs to us and nobody else can write
it: a cache is an input to the sandbox's own setup, so a planted entry must not count.
"""
import os


def cache_dir():
    explicit = os.environ.get("PYSANDBOX_CACHE_DIR")
    if explicit:
        return explicit
    if os.geteuid() == 0:
        return "/var/cache/pysandbox"
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return os.path.join(xdg, "pysandbox")
    return os.path.join(os.path.expanduser("~"), ".cache", "pysandbox")


def read_trusted(path):
    """The bytes of `path` if it is a regular file we own that only we can write, else None."""
    import stat
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return None
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_atomic(path, data):
    """Write `data` to `path` (mode 0600) through a temporary file and rename; errors are ignored
    (a cache that cannot be written only costs time)."""
    directory = os.path.dirname(path)
    tmp = "%s.%d.tmp" % (path, os.getpid())
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        return True
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False
