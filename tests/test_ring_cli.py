"""`pyshm create | info | tail | rm` through the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from pyshm import Ring

PYSHM = os.path.join(os.path.dirname(sys.executable), "pyshm")


def run(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYSHM, *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)


def test_create_info_tail_rm(tmp_path, ring_name):
    r = run(tmp_path, "create", ring_name, "--capacity", "64K", "--lossless",
            "--max-record", "1K")
    assert r.returncode == 0, r.stderr
    with Ring.attach(ring_name) as ring:
        assert ring.capacity == 65536 and ring.lossless and ring.max_record == 1024
        p = ring.producer()
        for i in range(20):
            p.publish(b"msg %d" % i, type=i % 3)
        keep = ring.consumer(gating=True)
        info = json.loads(run(tmp_path, "info", ring_name, "--json").stdout)
        assert info["next_sequence"] == 20 and info["mode"] == "lossless"
        assert info["producer_pid"] == os.getpid() and info["producer_alive"]
        (slot,) = info["consumers"]
        assert slot["gating"] and slot["lag_bytes"] == ring.tail
        keep.close()
    out = run(tmp_path, "tail", ring_name, "-n", "3").stdout.splitlines()
    assert [line.split("\t")[0] for line in out] == ["17", "18", "19"]
    assert "b'msg 19'" in out[-1] and "type=1" in out[-1]
    out = run(tmp_path, "tail", ring_name, "--from", "oldest").stdout.splitlines()
    assert len(out) == 20
    assert "lossless" in run(tmp_path, "info", ring_name).stdout
    assert run(tmp_path, "rm", ring_name).returncode == 0
    assert not os.path.exists(f"/dev/shm/{ring_name}")
    r = run(tmp_path, "rm", ring_name)
    assert r.returncode == 1 and "no ring named" in r.stderr


def test_clear_errors(tmp_path, ring_name):
    r = run(tmp_path, "create", ring_name, "--capacity", "3K")
    assert r.returncode == 1 and "power of two" in r.stderr
    r = run(tmp_path, "info", ring_name)
    assert r.returncode == 1 and "no ring named" in r.stderr
    r = run(tmp_path, "create", ring_name, "--capacity", "lots")
    assert r.returncode == 2 and "'lots' is not a size" in r.stderr
    not_ring = tmp_path / "file"
    not_ring.write_bytes(b"x" * 8192)
    r = run(tmp_path, "rm", str(not_ring))
    assert r.returncode == 1 and "not a pyshm ring" in r.stderr and not_ring.exists()


def test_help_has_examples(tmp_path):
    for cmd in ("create", "info", "tail", "rm"):
        assert "example:" in run(tmp_path, cmd, "--help").stdout
