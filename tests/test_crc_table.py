"""The replica CRC table with the CPU engine: restarts, rebuilds, big copies (streaming
stores, split across workers), hostile table headers, and the flag's life cycle through
promote, snapshot and restore. The engine-independent rules are in
tests/conformance/test_crc_table_conformance.py."""

from __future__ import annotations

import os
import struct
import sys

import pytest
from pyshm.fallback.cpu import CpuEngine

from pyshm import layout as L
from pyshm.errors import CorruptSegmentError
from pyshm.images import restore, snapshot
from pyshm.replica import Replica, promote
from pyshm.ring import Ring
from pyshm.segment import Segment

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "conformance"))
from crctable import assert_table_describes  # noqa: E402
from ringkit import PyRing, payload_for  # noqa: E402

CAP = 1 << 16


def fill(ring: PyRing, n: int, size: int = 200) -> None:
    for _ in range(n):
        ring.publish(payload_for(ring.enc.sequence, size))


def test_new_replica_carries_an_empty_table(names):
    ring = PyRing(names[0], capacity=CAP)
    rep = Replica.create(names[1], ring)
    table = rep.crc_table()
    assert rep.params.flags & L.FLAG_CRC_TABLE
    assert table is not None
    assert table.block_size == CAP // 8  # a partition: smaller than 64 KiB
    assert (table.valid_from, table.table_tail) == (0, 0)
    assert rep.segment.size == L.segment_size(CAP) + L.crc_table_size(CAP, table.block_shift)
    assert os.stat(rep.path).st_mode & 0o777 == 0o600
    table.close()
    rep.close()
    big = PyRing(names[0] + "_big", capacity=1 << 22)
    with Replica.create(names[1] + "_big", big) as rep2:
        assert rep2.crc_table().block_size == 1 << 16
    big.close()
    ring.close()


def test_replica_without_table(names):
    ring = PyRing(names[0], capacity=CAP)
    rep = Replica.create(names[1], ring, crc_table=False)
    assert rep.crc_table() is None
    with CpuEngine(ring, rep) as eng:
        eng.start()
        fill(ring, 300)
        eng.sync(5)
        assert eng.stats().extra["crc_table"] is False
        assert rep.tail == ring.tail
    rep.close()
    ring.close()


def test_restart_continues_the_partial_block(names):
    ring = PyRing(names[0], capacity=CAP)
    rep = Replica.create(names[1], ring)
    for rounds in range(6):
        with CpuEngine(ring, rep) as eng:
            eng.start()
            fill(ring, 37 + rounds)
            eng.sync(5)
            assert eng.stats().extra["crc_valid_from"] == 0  # nothing was rebuilt
        assert rep.tail % rep.crc_table().block_size  # stopped inside a block
        assert_table_describes(rep)
    rep.close()
    ring.close()


def test_table_rebuilt_after_another_writer(names):
    """An engine that does not keep the table (a crash between the table's tail and the
    replica's, or an engine without CRC) leaves table_tail behind the replica tail: the
    next CPU engine trusts nothing below the tail's block and checksums that block's
    written part again from the replica."""
    ring = PyRing(names[0], capacity=CAP)
    rep = Replica.create(names[1], ring)
    with CpuEngine(ring, rep) as eng:
        eng.start()
        fill(ring, 500)
        eng.sync(5)
    at = L.crc_table_offset(CAP)
    struct.pack_into("<Q", rep.segment.buf, at + L.CRC_OFF_TABLE_TAIL, 8)
    struct.pack_into("<I", rep.segment.buf, at + L.CRC_HEADER_SIZE, 0xDEADBEEF)
    tail = rep.tail
    block = rep.crc_table().block_size
    with CpuEngine(ring, rep) as eng:
        eng.start()
        eng.sync(5)
        assert eng.stats().extra["crc_valid_from"] == tail // block * block
        fill(ring, 700)
        eng.sync(5)
    table = rep.crc_table()
    assert table.valid_from == tail // block * block
    assert assert_table_describes(rep) >= 4
    # the window below valid_from is not vouched for
    assert table.block_crcs(table.valid_from - block, rep.tail, rep.tail) is None
    rep.close()
    ring.close()


@pytest.mark.parametrize("threads", [0, 1])
def test_large_backlog_streams_and_splits(names, threads):
    """A backlog of several MiB is one copy round: streaming stores (fenced before the
    publish) and, with a worker, split at block boundaries."""
    cap = 1 << 23
    ring = PyRing(names[0], capacity=cap)
    while ring.tail < cap + cap // 2:
        fill(ring, 500, 4000)
    rep = Replica.create(names[1], ring)
    with CpuEngine(ring, rep, threads=threads, split_bytes=1 << 20) as eng:
        eng.start()
        eng.sync(10)
        st = eng.stats()
        assert st.copies == 1
        assert st.extra["split_copies"] == threads
    assert assert_table_describes(rep) >= 100
    rep.close()
    ring.close()


@pytest.mark.parametrize("offset, value, word", [
    (0, b"NOTACRC!", "CRC table"),
    (L.CRC_OFF_BLOCK_SHIFT, struct.pack("<I", 40), "CRC table"),
    (L.CRC_OFF_BLOCK_SHIFT, struct.pack("<I", 15), "CRC table"),  # > a partition
    (L.CRC_OFF_ENTRIES, struct.pack("<I", 1 << 30), "CRC table"),
])
def test_hostile_table_header_is_refused(names, offset, value, word):
    ring = PyRing(names[0], capacity=CAP)
    rep = Replica.create(names[1], ring)
    at = L.crc_table_offset(CAP)
    rep.segment.buf[at + offset:at + offset + len(value)] = value
    with pytest.raises(CorruptSegmentError, match=word):
        CpuEngine(ring, rep)
    with pytest.raises(CorruptSegmentError, match=word):
        rep.crc_table()
    rep.close()
    ring.close()


def test_truncated_table_is_refused(names):
    ring = PyRing(names[0], capacity=CAP)
    rep = Replica.create(names[1], ring)
    rep.close()
    os.truncate(f"/dev/shm/{names[1]}", L.segment_size(CAP) + 32)
    with pytest.raises(CorruptSegmentError, match="CRC table"):
        Replica.open(names[1])
    ring.close()


def test_flag_does_not_leave_the_replica(names, new_name, tmp_path):
    """Images never carry the table, so neither do their headers or restored rings; a
    promoted replica is a primary without it."""
    ring = PyRing(names[0], capacity=CAP)
    rep = Replica.create(names[1], ring)
    with CpuEngine(ring, rep) as eng:
        eng.start()
        fill(ring, 400)
        eng.sync(5)
        h = snapshot(rep, tmp_path / "r.pyimg", engine=eng)
    assert not h.params.flags & L.FLAG_CRC_TABLE
    target = new_name()
    restore(tmp_path / "r.pyimg", target)
    with Ring(target) as r:
        assert not r.params.flags & L.FLAG_CRC_TABLE
    rep.close()
    promote(names[1])
    with Segment(names[1]) as seg:
        flags = L.unpack_static_header(seg.buf[:0x80], size=seg.size).flags
    assert not flags & (L.FLAG_CRC_TABLE | L.FLAG_REPLICA)
    ring.close()
