"""Snapshots of a replica built from its CRC table (pyshm.images.table_snapshot): the
chunk CRCs combined from block CRCs, an image indistinguishable from the CPU's, no pass
over the data for checksums, and the fall-backs (engine lapping the window, a table that
does not cover it)."""

from __future__ import annotations

import importlib
import os
import random
import struct
import sys

import crc32c as ref
import numpy as np
import pytest
from pyshm.fallback.cpu import CpuEngine

from pyshm import checksum
from pyshm import layout as L
from pyshm.images import format as fmt
from pyshm.images import restore, snapshot
from pyshm.images import table_snapshot as ts
from pyshm.images.inspect import inspect
from pyshm.replica import Replica
from pyshm.ring import Ring

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "conformance"))
from ringkit import PyRing, payload_for  # noqa: E402

CAP = 1 << 18
snapshot_mod = importlib.import_module("pyshm.images.snapshot")  # the name is a function too


def test_chunk_crcs_from_block_crcs():
    """Every combination of block size, chunk size (multiple or not), window start and a
    partial last block gives the crc32c package's CRC of each chunk; nothing is read
    when chunks are whole blocks."""
    rng = random.Random(5)
    data = rng.randbytes(1 << 17)
    for block in (64, 512, 4096):
        for chunk in (block, 4 * block, 4096 + 8, 3 * block + 24, 40_000):
            for start_block, end in ((0, len(data)), (3, len(data) - 1000),
                                     (1, 7 * block + 16), (2, 2 * block)):
                start = start_block * block
                blocks = [ref.crc32c(data[k:min(k + block, end)])
                          for k in range(start, end, block)]
                view = ts.TableView(start, end, 0, block, np.array(blocks, np.uint32))
                crcs, cpu = ts.chunk_crcs(view, chunk, lambda lo, hi: data[lo:hi])
                want = [ref.crc32c(data[c:min(c + chunk, end)])
                        for c in range(start, end, chunk)]
                assert crcs == want, (block, chunk, start, end)
                if chunk % block == 0:
                    assert cpu == 0


@pytest.fixture
def mirrored(names):
    """A ring (a few laps of records) mirrored by a running CPU engine into a replica
    with a CRC table."""
    ring = PyRing(names[0], capacity=CAP)
    rep = Replica.create(names[1], ring)
    eng = CpuEngine(ring, rep)
    eng.start()
    while ring.tail < 2 * CAP + CAP // 3:
        for _ in range(100):
            ring.publish(payload_for(ring.enc.sequence, 1500))
        eng.sync(5)
    yield ring, rep, eng
    eng.close()
    rep.close()
    ring.close()


def _spy_crcs(monkeypatch) -> list[int]:
    """Bytes checksummed by the image writer and by pyshm.checksum, as they happen."""
    seen: list[int] = []
    real_fmt, real_ck = fmt.crc, checksum.crc32c

    def fmt_crc(data, value=0):
        seen.append(len(memoryview(data).cast("B")))
        return real_fmt(data, value)

    def ck_crc(data, value=0):
        seen.append(len(memoryview(data).cast("B")))
        return real_ck(data, value)

    monkeypatch.setattr(fmt, "crc", fmt_crc)
    monkeypatch.setattr(checksum, "crc32c", ck_crc)
    return seen


def _chunks(path) -> tuple[fmt.ImageHeader, list[fmt.ChunkEntry], bytes]:
    with fmt.ImageReader(path) as r:
        return r.header, r.chunks, r.read_data().tobytes()


def test_table_image_equals_the_cpu_image(mirrored, tmp_path, monkeypatch):
    ring, rep, eng = mirrored
    eng.pause()  # the same window for both images
    snapshot(rep, tmp_path / "cpu.pyimg", use_crc_table=False)
    eng.resume()
    seen = _spy_crcs(monkeypatch)
    called = []
    monkeypatch.setattr(snapshot_mod, "capture", lambda *a, **k: called.append(1))
    tab = snapshot(rep, tmp_path / "table.pyimg", engine=eng, chunk_size=64 << 10)
    assert not called, "the table path must not fall back to copying"
    # header, table and trailer only: not one byte of the window was checksummed
    assert sum(seen) < 4096 and tab.data_length > CAP // 2
    monkeypatch.undo()
    h1, c1, d1 = _chunks(tmp_path / "cpu.pyimg")
    h2, c2, d2 = _chunks(tmp_path / "table.pyimg")
    assert (h1.first_position, h1.end_position, h1.record_count, h1.first_sequence,
            h1.next_sequence) == (h2.first_position, h2.end_position, h2.record_count,
                                  h2.first_sequence, h2.next_sequence)
    assert d1 == d2
    assert [e.raw_crc for e in c1] == [ref.crc32c(d1[i:i + h1.chunk_size])
                                       for i in range(0, len(d1), h1.chunk_size)]
    # same bytes in both chunkings: re-derive the CPU image's chunking from the table one
    assert [e.raw_crc for e in c2] == [ref.crc32c(d2[i:i + (64 << 10)])
                                       for i in range(0, len(d2), 64 << 10)]
    assert h2.data_length > 0 and h2.from_replica
    report = inspect(tmp_path / "table.pyimg")  # verifies every chunk the usual way
    assert report is not None
    # and it restores like any image
    restore(tmp_path / "table.pyimg", ring.segment.name + "_restored")
    with Ring(ring.segment.name + "_restored") as r:
        c = r.consumer(start="oldest")
        first = c.read()
        assert first.sequence == h2.first_sequence
        assert bytes(first.data) == payload_for(first.sequence, 1500)
        c.close()
    os.unlink("/dev/shm/" + ring.segment.name + "_restored")


def test_table_snapshot_of_a_stopped_replica(mirrored, tmp_path):
    """No engine to pause (stopped): the table still serves; the tail's partial block
    is checksummed from the replica."""
    ring, rep, eng = mirrored
    eng.stop()
    h = snapshot(rep, tmp_path / "s.pyimg")
    with fmt.ImageReader(tmp_path / "s.pyimg") as r:
        r.verify()
    assert h.end_position == rep.tail


def test_engine_lapping_the_window_falls_back(mirrored, tmp_path, monkeypatch):
    """The producer writes more than a ring while the image is written: the engine
    overwrites the window's start, the table path abandons its file and the snapshot is
    taken by copying instead; the image is sound either way."""
    ring, rep, eng = mirrored
    fallback = []
    real = snapshot_mod.capture
    monkeypatch.setattr(snapshot_mod, "capture",
                        lambda *a, **k: fallback.append(1) or real(*a, **k))

    def lap(done: int, total: int) -> None:
        if not fallback and done < total:
            start = ring.tail
            while ring.tail < start + CAP + CAP // 4:
                for _ in range(50):
                    ring.publish(payload_for(ring.enc.sequence, 1500))
                eng.sync(5)

    h = snapshot(rep, tmp_path / "l.pyimg", engine=eng, chunk_size=16 << 10, progress=lap)
    assert fallback == [1]
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".l.pyimg")]
    with fmt.ImageReader(tmp_path / "l.pyimg") as r:
        r.verify()
        assert r.header.record_count == h.record_count > 0


def test_table_not_covering_the_window_falls_back(mirrored, tmp_path):
    ring, rep, eng = mirrored
    eng.stop()
    at = L.crc_table_offset(CAP)
    struct.pack_into("<Q", rep.segment.buf, at + L.CRC_OFF_VALID_FROM,
                     rep.tail // 2 // 4096 * 4096)
    h = snapshot(rep, tmp_path / "f.pyimg")
    with fmt.ImageReader(tmp_path / "f.pyimg") as r:
        r.verify()
    assert h.end_position == rep.tail
