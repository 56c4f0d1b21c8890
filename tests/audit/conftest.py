"""Fixtures of the audit tests live in livetargets.py (importable by the test modules too)."""
from livetargets import docker_daemon, stage_dir  # noqa: F401  (pytest fixtures)
