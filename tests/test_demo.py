"""pyshm demo in a small configuration: the summary must be verified and consistent."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys


def test_demo_small_run_is_verified(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pyshm", "demo", "--duration", "1.5", "--rate",
                        "20000", "--instruments", "16", "--json", "--workdir",
                        str(tmp_path / "w")],
                       cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout)
    assert s["verified"] is True, s["checks"]
    assert all(s["checks"].values())
    # the figures hang together, independently of the checks the demo made itself
    assert s["published"] == s["published_before_crash"] + s["published_after_restore"]
    assert s["published_before_crash"] > 0 and s["published_after_restore"] > 0
    assert s["resumed_at_sequence"] == s["published_before_crash"]
    assert s["mirrored"] == s["published"] and s["lost"] == 0
    for role in ("strategy", "logger"):
        c = s["consumers"][role]
        assert c["received"] == s["published"] and c["gaps"] == 0 and c["duplicates"] == 0
        assert c["reattached"] == 1
    assert s["engine"] == "cpu"
    assert s["restore"]["from_replica_s"] > 0 and s["restore"]["from_image_s"] > 0
    assert s["lag_us"]["after_restore"]["p99"] >= s["lag_us"]["after_restore"]["p50"]
    assert "lost" in r.stderr and "phase 1" in r.stderr  # progress and summary on stderr
    # figures for people: no negative lag, no raw dict, every line naming the sequences
    # committed before the crash names the same last one
    assert not re.search(r"lag -\d", r.stderr), r.stderr
    assert "{'" not in r.stderr and "{\"" not in r.stderr, r.stderr
    crash = r.stderr[r.stderr.index("kill -9 producer"):r.stderr.index("producer restarted")]
    lasts = {int(x.replace(",", "")) for x in re.findall(r"sequences [\d,]+\.\.([\d,]+)", crash)}
    assert lasts == {s["published_before_crash"] - 1}, crash
    assert len(re.findall(r"sequences [\d,]+\.\.", crash)) == 4, crash
    assert f"resuming at the ring's next sequence, {s['published_before_crash']:,}" in r.stderr
    # the strategy's state region: its writer was killed with kill -9 and recovered from
    # a state image + replay; the book ends bit-identical to the fold of every tick
    st = s["state"]
    assert st["identical"] and st["replica_identical"]
    assert st["applied_seq"] == s["published"] - 1
    rec = st["recovery"]
    assert rec["image_seq"] is not None and rec["replayed"] > 0, st
    assert rec["image_seq"] <= rec["killed_at_applied_seq"]
    assert "kill -9 the strategy's state writer" in r.stderr
    # rings, replica and state regions are removed at the end (pid-suffixed names)
    pid = str(_child_pid_hint(r.stderr))
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(("demo.md.", "demo.book."))
                and n.split(".")[-1] == pid]


def _child_pid_hint(stderr: str) -> str:
    # "mirroring demo.md.PID -> demo.md.replica.PID"
    for line in stderr.splitlines():
        if "mirroring demo.md." in line:
            return line.split("mirroring demo.md.")[1].split()[0]
    return "none"


def test_demo_rejects_bad_arguments(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pyshm", "demo", "--duration", "0"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "--duration and --rate must be > 0" in r.stderr
    bad = tmp_path / "c.yaml"
    bad.write_text("rings: [{name: x, capacity: 64K}]\n")
    r = subprocess.run([sys.executable, "-m", "pyshm", "demo", "--config", str(bad)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "needs a ring with a replica and snapshots" in r.stderr
    r = subprocess.run([sys.executable, "-m", "pyshm", "demo", "--help"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert "example:" in r.stdout and "--duration" in r.stdout
