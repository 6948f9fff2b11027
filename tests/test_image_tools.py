"""Inspect, export, diff, scheduled snapshots and the image CLI commands."""

from __future__ import annotations

import base64
import glob
import json
import os
import secrets
import subprocess
import sys
import time

import numpy as np
import pytest

from pyshm.cli import main
from pyshm.errors import ImageError
from pyshm.images import snapshot
from pyshm.images.inspect import diff, export, inspect
from pyshm.images.schedule import SnapshotSchedule
from pyshm.ring import Ring


def payload(seq: int) -> bytes:
    return (seq.to_bytes(8, "little") * 8)[:seq % 50]


@pytest.fixture
def ring():
    name = f"pyshm-test-tools-{os.getpid()}-{secrets.token_hex(3)}"
    r = Ring(name, create=True, capacity=1 << 15)
    yield r
    r.close()
    for p in glob.glob(f"/dev/shm/{name}*"):
        os.unlink(p)


def publish(ring: Ring, n: int) -> None:
    p = ring.producer()
    for _ in range(n):
        s = p.sequence
        p.publish(payload(s), type=s % 4)
    p.close()


def test_inspect_reports_and_verifies(tmp_path, ring):
    publish(ring, 400)
    snapshot(ring, tmp_path / "a.img", compression="zstd", chunk_size=4096)
    info = inspect(tmp_path / "a.img")
    assert info["sequences"] == {"first": 0, "last": 399, "next": 400, "records": 400}
    assert info["ring"]["capacity"] == 1 << 15 and info["compression"] == "zstd"
    assert info["checksums"] == "verified" and info["ratio"] > 1
    raw = bytearray((tmp_path / "a.img").read_bytes())
    raw[-200] ^= 1
    (tmp_path / "a.img").write_bytes(bytes(raw))
    with pytest.raises(ImageError, match="chunk"):
        inspect(tmp_path / "a.img")
    assert inspect(tmp_path / "a.img", verify=False)["checksums"].startswith("header")


def test_export_jsonl_and_npz(tmp_path, ring):
    publish(ring, 120)
    snapshot(ring, tmp_path / "a.img")
    assert export(tmp_path / "a.img", tmp_path / "a.jsonl") == 120
    lines = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [x["sequence"] for x in lines] == list(range(120))
    assert all(base64.b64decode(x["payload"]) == payload(x["sequence"]) for x in lines)
    assert all(x["type"] == x["sequence"] % 4 and x["length"] == x["sequence"] % 50
               for x in lines)
    assert export(tmp_path / "a.img", tmp_path / "a.npz", format="npz") == 120
    with np.load(tmp_path / "a.npz", allow_pickle=False) as z:
        off, pay = z["offsets"], z["payload"]
        assert list(z["sequence"]) == list(range(120))
        assert all(bytes(pay[off[i]:off[i + 1]]) == payload(i) for i in range(120))
    with pytest.raises(ValueError, match="export format"):
        export(tmp_path / "a.img", tmp_path / "x", format="csv")


def test_diff_images_and_ring(tmp_path, ring):
    publish(ring, 100)
    snapshot(ring, tmp_path / "a.img")
    publish(ring, 20)
    snapshot(ring, tmp_path / "b.img")
    d = diff(str(tmp_path / "a.img"), str(tmp_path / "b.img"))
    assert (d.common, d.only_a, d.only_b, d.differing) == (100, 0, 20, 0)
    assert not d.identical
    assert diff(str(tmp_path / "b.img"), ring.name).identical


def test_diff_finds_a_changed_payload(tmp_path, ring):
    publish(ring, 50)
    snapshot(ring, tmp_path / "a.img")
    # same record layout, one payload byte changed: only a diff of contents can tell
    data = ring.data_array()
    pos = sum((16 + s % 50 + 7) // 8 * 8 for s in range(3)) + 16  # record 3's payload
    data[pos] ^= 0xFF
    snapshot(ring, tmp_path / "b.img")
    d = diff(str(tmp_path / "a.img"), str(tmp_path / "b.img"))
    assert d.differing == 1 and "sequence 3: payload differs" in d.examples[0]


def test_schedule_by_bytes_keeps_last_k(tmp_path, ring):
    publish(ring, 10)
    (tmp_path / "unrelated-1-2.pyimg").write_bytes(b"x")  # not ours: never rotated away
    with SnapshotSchedule(ring, tmp_path, every_bytes=2000, keep=3, prefix="md") as s:
        assert s.due()
        first = s.run_once()
        assert not s.due()  # nothing published since
        for _ in range(5):
            publish(ring, 60)  # > 2000 bytes each round
            assert s.due()
            s.run_once()
        imgs = s.images()
        assert len(imgs) == 3 and first not in imgs
        assert [int(p.rsplit("-", 1)[1].split(".")[0]) for p in imgs] == [190, 250, 310]
    assert (tmp_path / "unrelated-1-2.pyimg").exists()


def test_schedule_thread_by_time(tmp_path, ring):
    publish(ring, 10)
    errors: list[Exception] = []
    s = SnapshotSchedule(ring, tmp_path, every_seconds=0.05, keep=2, poll=0.01,
                         on_error=errors.append, skip_unchanged=False)
    s.start()
    deadline = time.monotonic() + 10
    while s.taken < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    s.close()
    assert s.taken >= 4 and not errors
    assert len(s.images()) == 2


def test_schedule_rejects_bad_arguments(tmp_path, ring):
    with pytest.raises(ValueError, match="every_seconds and/or every_bytes"):
        SnapshotSchedule(ring, tmp_path)
    with pytest.raises(ValueError, match="keep"):
        SnapshotSchedule(ring, tmp_path, every_seconds=1, keep=0)
    with pytest.raises(FileNotFoundError):
        SnapshotSchedule(ring, tmp_path / "nope", every_seconds=1)


def test_cli_round_trip(tmp_path, ring, capsys):
    publish(ring, 300)
    img = str(tmp_path / "c.pyimg")
    assert main(["snapshot", ring.name, "-o", img, "--compress", "zstd"]) == 0
    assert "300 records" in capsys.readouterr().out
    assert main(["snapshot", ring.name, "-o", img]) == 1  # exists, no --force
    assert "already exists" in capsys.readouterr().err
    assert main(["inspect", img, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["sequences"]["next"] == 300
    assert main(["inspect", img]) == 0
    assert "sequences 0..299" in capsys.readouterr().out
    target = ring.name + "-restored"
    assert main(["restore", img, "--to", target]) == 0
    assert "continue at sequence 300" in capsys.readouterr().out
    assert main(["diff", img, target]) == 0
    assert main(["export", img, "--format", "jsonl", "-o", str(tmp_path / "c.jsonl")]) == 0
    assert len((tmp_path / "c.jsonl").read_text().splitlines()) == 300
    publish(ring, 1)
    capsys.readouterr()
    assert main(["diff", img, ring.name]) == 1
    assert "only in B 1" in capsys.readouterr().out


def test_cli_damaged_image_is_an_error(tmp_path, capsys):
    bad = tmp_path / "bad.pyimg"
    bad.write_bytes(b"PYSHMIMG" + b"\0" * 300)
    assert main(["inspect", str(bad)]) == 1
    assert "pyshm inspect: error" in capsys.readouterr().err


def test_cli_scheduled_snapshots_in_a_process(tmp_path, ring):
    publish(ring, 10)
    out = subprocess.run([sys.executable, "-m", "pyshm", "snapshot", ring.name, "-o",
                          str(tmp_path), "--every", "0.05", "--keep", "2", "--duration",
                          "1.0", "--even-if-unchanged"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("10 records") >= 3  # ~20 expected; slack for a loaded CI
    assert len(glob.glob(str(tmp_path / "snapshot-*.pyimg"))) == 2


def test_cli_schedule_of_an_unchanged_ring_writes_one_image_and_says_so(tmp_path, ring):
    publish(ring, 10)
    out = subprocess.run([sys.executable, "-m", "pyshm", "snapshot", ring.name, "-o",
                          str(tmp_path), "--every", "0.05", "--keep", "2", "--duration",
                          "0.8"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    (image,) = glob.glob(str(tmp_path / "snapshot-*.pyimg"))
    assert out.stdout.count("10 records") == 1
    # said once for the idle stretch, not once per interval
    assert out.stdout.count(f"unchanged since {image}") == 1, out.stdout


def test_schedule_skips_unchanged_and_resumes_on_change(tmp_path, ring):
    publish(ring, 5)
    skipped = []
    with SnapshotSchedule(ring, tmp_path, every_seconds=0.01, keep=10,
                          on_skip=skipped.append) as sched:
        sched.start()
        deadline = time.monotonic() + 30
        while sched.skipped < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sched.taken == 1 and sched.skipped >= 3 and skipped[0] == sched.images()[0]
        publish(ring, 1)
        while sched.taken < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sched.taken == 2
        # a lost image is replaced even though the ring did not change
        for p in sched.images():
            os.unlink(p)
        while sched.taken < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sched.taken == 3 and len(sched.images()) == 1


def test_cli_restore_from_a_replica(tmp_path, ring, capsys):
    from pyshm.replica import Replica
    publish(ring, 200)
    rep = Replica.create(ring.name + "-rep", ring)
    try:
        rep.segment.buf[0x1000:0x1000 + ring.capacity] = ring.segment.buf[0x1000:]
        rep.segment.buf[0x80:0x88] = ring.tail.to_bytes(8, "little")
    finally:
        rep.segment.close()
    assert main(["restore", ring.name + "-rep", "--to", ring.name + "-new"]) == 0
    assert "restored 200 records" in capsys.readouterr().out
    assert main(["diff", ring.name, ring.name + "-new"]) == 0


def test_progress_bar_only_for_large_images(capsys):
    from pyshm.cli.images import PROGRESS_THRESHOLD, Progress
    small = Progress("restore", True)
    small(10, 100)
    assert capsys.readouterr().err == ""
    big = Progress("restore", True)
    big(PROGRESS_THRESHOLD // 2, PROGRESS_THRESHOLD)
    big(PROGRESS_THRESHOLD, PROGRESS_THRESHOLD)
    err = capsys.readouterr().err
    assert "50.0%" in err and "100.0%" in err and err.endswith("\n")
    off = Progress("restore", False)
    off(PROGRESS_THRESHOLD, PROGRESS_THRESHOLD)
    assert capsys.readouterr().err == ""
