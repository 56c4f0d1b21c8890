"""Reads inside a root never leave it, with openat2(RESOLVE_IN_ROOT) and with the
O_NOFOLLOW walk that stands in for it on older kernels."""
import os

import pytest

from audit import saferead


@pytest.fixture
def tree(tmp_path):
    secret = tmp_path / "host-secret"
    secret.write_text("HOST-ONLY")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/os-release").write_text("ID=inside\n")
    (root / str(secret).lstrip("/")).parent.mkdir(parents=True)
    (root / str(secret).lstrip("/")).write_text("IN-ROOT-COPY")
    os.symlink(str(secret), root / "etc/absolute")                       # absolute: resolved in root
    os.symlink("../../../../../../../.." + str(secret), root / "etc/dotdot")
    os.symlink("/usr/lib/os-release", root / "etc/os-release")
    os.symlink("loop2", root / "etc/loop1")
    os.symlink("loop1", root / "etc/loop2")
    os.mkfifo(root / "etc/fifo")
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    yield fd
    os.close(fd)


@pytest.mark.parametrize("use_openat2", [True, False], ids=["openat2", "nofollow-walk"])
def test_links_resolve_inside_root(tree, use_openat2):
    read = lambda p: saferead.read_in_root(tree, p, use_openat2=use_openat2)  # noqa: E731
    assert read("/etc/os-release") == b"ID=inside\n"
    assert read("/etc/absolute") == b"IN-ROOT-COPY"
    assert read("/etc/dotdot") == b"IN-ROOT-COPY"
    assert read("etc/../../../../etc/os-release") == b"ID=inside\n"
    with pytest.raises(OSError):
        read("/etc/loop1")
    with pytest.raises(OSError):
        read("/etc/fifo")          # never blocks on a planted FIFO
    assert len(saferead.read_in_root(tree, "/etc/os-release", limit=3, use_openat2=use_openat2)) == 3


def test_lstat_and_listdir(tree):
    import stat
    assert stat.S_ISLNK(saferead.lstat_in_root(tree, "/etc/absolute").st_mode)
    assert "os-release" in saferead.listdir_in_root(tree, "/etc")
    assert saferead.readlink_in_root(tree, "/etc/os-release") == "/usr/lib/os-release"
