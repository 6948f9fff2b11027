"""`pyshm demo --far` runs end to end (a local nats-server, both bridges killed with
SIGKILL midway) and verifies the far ring, then leaves nothing behind in /dev/shm."""

from __future__ import annotations

import glob
import json
import subprocess
import sys


def test_far_demo_is_verified(tmp_path):
    before = set(glob.glob("/dev/shm/demo.far.*"))
    r = subprocess.run([sys.executable, "-m", "pyshm", "demo", "--far", "--duration", "3",
                        "--rate", "5000", "--json", "--quiet"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["verified"] and summary["far_records"] == summary["ticks"] > 1000
    assert set(glob.glob("/dev/shm/demo.far.*")) == before
