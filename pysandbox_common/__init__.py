"""What both halves of pysandbox use: the runtime (`sandbox`) and the auditor (`audit`).

Dependencies run one way: `sandbox` and `audit` import from here; nothing here imports
either of them.
  capnames   capability names and numbers, the kernel's last capability
  registry   the state files of running sandboxes (found by `audit NAME`, removed by gc)
  procfs     /proc readers and parsers with an injectable procfs root
"""

# The release, shared by `pysandbox --version` and `audit --version`; pyproject.toml's
# [project] version is kept equal (tests/test_pysandbox_cli.py checks).
VERSION = "0.2.0"
