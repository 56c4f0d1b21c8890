import os
import sys

import pytest

# Tests import the package as installed (setup.sh installs it into the venv that runs
# pytest); from a source checkout without an install, fall back to the tree itself.
try:
    import sandbox  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


# Suites that need host root by nature: Docker's daemon, util-linux targets built as root,
# and the host's cgroup v1 trees (v1 has no delegation to unprivileged users). The
# unprivileged run deselects them with -m "not root_only"; what rootless must do instead
# (fail closed with a clear message) is asserted by the runtime and escape suites.
ROOT_ONLY_FILES = {"test_cgroup.py", "test_cgroup_runtime.py", "test_live_docker.py", "test_live_utillinux.py",
                   "test_live_pysandbox.py"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if os.path.basename(str(item.fspath)) in ROOT_ONLY_FILES:
            item.add_marker(pytest.mark.root_only)


@pytest.fixture(scope="session", autouse=True)
def remove_empty_cgroup_parents():
    """The last sandbox out removes the `pysandbox` parent cgroups itself (cgroup.release_parents);
    a test session still collects at its end what a SIGKILLed supervisor left (only when no
    sandbox and no delegation is left)."""
    yield
    try:
        from sandbox import cgroup
        cgroup.gc(full=True)
    except Exception:
        pass


@pytest.fixture(scope="session")
def strict(tmp_path_factory):
    """The strict profile for tests of isolation. Rootless without delegated cgroups strict
    cannot get its required limits (tests/test_cgroup.py::test_rootless_without_delegation
    covers that), so those tests use strict with its limits made optional."""
    if os.geteuid() == 0:
        return "strict"
    from sandbox import cgroup
    if cgroup.detect() == "v1" and os.path.isdir(cgroup.v1_parent(cgroup.v1_hierarchies()["pids"])):
        return "strict"  # root delegated cgroups to this user (`pysandbox delegate`)
    path = tmp_path_factory.mktemp("profiles") / "strict-nolimits.toml"
    path.write_text('extends = "strict"\n[limits]\nrequired = false\nmemory = 0\npids = 0\ncpus = 0.0\n')
    return str(path)
