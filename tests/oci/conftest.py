"""Fixtures of the OCI runtime tests live in ocitools.py (importable by the test modules:
a module called `conftest` would be ambiguous across the suite's directories)."""
from ocitools import make_container, oci_root_only, oci_runtime, oci_workdir, runtime  # noqa: F401
