"""docs/labs.md runs as written: its sh blocks, in order, in one shell (root and rootless)."""
import os
import re
import subprocess

from util import pysandbox_cmd

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "labs.md")


def test_labs_walkthrough_runs(tmp_path):
    with open(DOC) as f:
        blocks = re.findall(r"```sh\n(.*?)```", f.read(), flags=re.S)
    assert len(blocks) >= 6
    bindir = os.path.dirname(pysandbox_cmd()[0])
    script = "set -euo pipefail\n" + "\n".join(blocks)
    env = dict(os.environ, PATH=bindir + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"))
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert "net: connect to a service" in proc.stdout
    assert "no escape path" in proc.stdout   # found (root), or proven (an unprivileged auditor sees less)
