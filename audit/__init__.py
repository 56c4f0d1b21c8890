"""pysandbox audit: find a running container's isolation gaps and escape paths.

Entry point: audit.cli.main(argv). Kept import-free so `audit PID` starts fast.
"""
