"""Single-process behaviour of the ring: API, encoding, wrap-around, modes, bad input."""

from __future__ import annotations

import os
import stat
import struct
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyshm import FULL, Ring, layout
from pyshm.errors import (
    ClosedError,
    CorruptSegmentError,
    InvalidParameterError,
    NoConsumerSlotError,
    ProducerBusyError,
    RecordTooLargeError,
    RingExistsError,
    RingNotFoundError,
    VersionMismatchError,
)
from pyshm.ring import parse_size


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"], cwd="/")
    proc.wait()
    return proc.pid


@pytest.fixture
def ring(ring_name):
    r = Ring.create(ring_name, 64 * 1024)
    yield r
    r.close()
    r.unlink()


def test_roundtrip_all_buffer_kinds(ring):
    p, c = ring.producer(), ring.consumer()
    assert p.publish(b"hello") == 0
    assert p.publish(bytearray(b"ab"), type=7) == 1
    assert p.publish(memoryview(b"xyz")) == 2
    assert p.publish(np.arange(3, dtype=np.int64)) == 3
    assert p.publish(b"") == 4
    got = [(bytes(m.data), m.type, m.sequence) for m in c]
    assert got == [(b"hello", 0, 0), (b"ab", 7, 1), (b"xyz", 0, 2),
                   (np.arange(3, dtype=np.int64).tobytes(), 0, 3), (b"", 0, 4)]
    assert c.read() is None
    assert ring.next_sequence == 5 and ring.tail == c.position


def test_message_position_and_header_bytes(ring):
    p, c = ring.producer(), ring.consumer()
    p.publish(b"abc", type=9)
    m = c.read()
    raw = bytes(ring.data[m.position:m.position + 19])
    assert raw == layout.encode_record(b"abc", 9, 0)[:19]


def test_claim_commit_in_place_and_shrink(ring):
    p, c = ring.producer(), ring.consumer()
    view = p.claim(10)
    view[:] = b"0123456789"
    assert c.read() is None  # nothing visible before commit
    assert p.commit(type=2) == 0
    v2 = p.claim(100)
    v2[:4] = b"abcd"
    assert p.commit(length=4) == 1
    assert p.publish(b"next") == 2
    assert [(bytes(m.data), m.type) for m in c] == [(b"0123456789", 2), (b"abcd", 0),
                                                     (b"next", 0)]


def test_commit_without_claim_is_an_error(ring):
    p = ring.producer()
    with pytest.raises(Exception, match="out of order"):
        p.commit()


def test_batch_publish_numpy_and_list_and_read_batch(ring):
    p, c = ring.producer(), ring.consumer()
    rec = np.dtype([("px", "<f8"), ("qty", "<i4"), ("side", "u1"), ("pad", "V3")])
    arr = np.zeros(50, rec)
    arr["px"] = np.arange(50) * 0.5
    arr["qty"] = np.arange(50)
    assert p.publish_batch(arr, type=3) == 50
    assert p.publish_batch(np.arange(20, dtype=np.uint8).reshape(4, 5)) == 4
    assert p.publish_batch([b"a", bytearray(b"bb"), memoryview(b"ccc")]) == 3
    b = c.read_batch(50)
    out = b.array(rec)
    assert np.array_equal(out, arr) and (b.types == 3).all()
    assert list(b.sequences) == list(range(50))
    b2 = c.read_batch(100)
    assert [bytes(x) for x in b2] == [bytes(range(i * 5, i * 5 + 5)) for i in range(4)] + \
        [b"a", b"bb", b"ccc"]
    assert list(b2.lengths) == [5, 5, 5, 5, 1, 2, 3]
    assert len(c.read_batch(10)) == 0


def test_batch_refuses_oversized_rows_before_publishing(ring):
    p = ring.producer()
    with pytest.raises(RecordTooLargeError):
        p.publish_batch(np.zeros((2, ring.max_payload + 1), np.uint8))
    with pytest.raises(RecordTooLargeError):
        p.publish_batch([b"ok", bytes(ring.max_payload + 1)])
    assert ring.next_sequence == 0


def test_start_positions(ring):
    p = ring.producer()
    for i in range(10):
        p.publish(struct.pack("<I", i))
    assert ring.consumer("latest").read() is None
    c = ring.consumer(start=6)
    assert [m.sequence for m in c] == [6, 7, 8, 9]
    assert [m.sequence for m in ring.consumer("oldest")] == list(range(10))
    with pytest.raises(InvalidParameterError):
        ring.consumer("newest")


def test_overwrite_lap_is_reported_exactly_and_resumes_at_oldest(ring):
    p, c = ring.producer(), ring.consumer()
    p.publish(b"first")
    assert c.read().sequence == 0
    n = 5000  # ~ 5 laps of a 64 KiB ring with ~70-byte records
    for i in range(n):
        p.publish(struct.pack("<Q", i + 1) * 7)
    m = c.read()
    assert m.sequence > 1
    assert c.lost == m.sequence - 1
    assert m.position >= ring.tail_intent - ring.capacity
    assert bytes(m.data) == struct.pack("<Q", m.sequence) * 7
    rest = list(c)
    assert rest[-1].sequence == n and c.lost == m.sequence - 1
    assert c.laps >= 1


def test_still_valid_after_overwrite(ring):
    p, c = ring.producer(), ring.consumer()
    p.publish(b"x" * 100)
    c.read()
    assert c.still_valid()
    for _ in range(2000):
        p.publish(b"y" * 100)
    assert not c.still_valid()


def test_read_copy_returns_bytes(ring):
    p, c = ring.producer(), ring.consumer()
    p.publish(b"copy me", type=4)
    m = c.read_copy()
    assert m.data == b"copy me" and isinstance(m.data, bytes) and m.type == 4


def test_lossless_gating_consumer_holds_producer(ring_name):
    with Ring.create(ring_name, 4096, lossless=True, max_record=128) as r:
        p = r.producer()
        c = r.consumer(gating=True)
        r.consumer(gating=False)  # a non-gating consumer never holds anything back
        published = 0
        while p.publish(b"z" * 40) != FULL:
            published += 1
            assert published < 1000
        assert published * 56 <= r.capacity
        assert p.publish(b"z", timeout=0.01) == FULL
        got = [m.sequence for m in c]
        assert got == list(range(published))
        assert c.lost == 0
        assert p.publish(b"again") == published


def _gate_floor(r: Ring) -> int:
    return struct.unpack_from("<Q", r.segment.buf, layout.OFF_GATE_FLOOR)[0]


def _run_past_a_capacity_with_a_leader(r: Ring) -> tuple:
    """A producer and a gating leader that reads every record at once, run until the
    ring is a capacity and a partition past its start: the producer's last slot scan
    cached a limit built on a floor near its tail, far above the oldest partition."""
    p = r.producer()
    lead = r.consumer("latest", gating=True)
    while r.tail < r.capacity + 2 * r.partition_size:
        assert p.publish(b"a" * 40) >= 0
        assert lead.read() is not None
    oldest = layout.oldest_boundary(r.tail_intent, r.capacity, r.partition_size)
    assert _gate_floor(r) > oldest  # a consumer at "oldest" lands below the floor
    return p, lead


def test_gating_consumer_joining_below_the_cached_gate_floor_is_not_lapped(ring_name):
    # Before the gate join, "oldest" put the consumer on a partition start below the
    # floor of the producer's cached limit: the producer overwrote what it was about to
    # read without scanning the slots again, and it lost records (lost > 0 here).
    with Ring.create(ring_name, 4096, lossless=True, max_record=128) as r:
        p, lead = _run_past_a_capacity_with_a_leader(r)
        late = r.consumer("oldest", gating=True)
        assert late.position == _gate_floor(r)
        while p.publish(b"b" * 40) != FULL:  # up to the cached limit, then the new slot
            assert lead.read() is not None
        got = [m.sequence for m in late]
        assert got[0] == late.start_sequence
        assert got == list(range(got[0], p.sequence))
        assert late.lost == 0 and late.laps == 0


def test_gating_consumer_asking_for_a_sequence_below_the_gate_floor_counts_it_lost(
        ring_name):
    with Ring.create(ring_name, 4096, lossless=True, max_record=128) as r:
        p, lead = _run_past_a_capacity_with_a_leader(r)
        oldest_seq = next(iter(r.records(layout.oldest_boundary(
            r.tail_intent, r.capacity, r.partition_size)))).sequence
        late = r.consumer(oldest_seq, gating=True)
        at_floor = next(iter(r.records(_gate_floor(r)))).sequence
        assert late.position == _gate_floor(r) and at_floor > oldest_seq
        while p.publish(b"b" * 40) != FULL:
            assert lead.read() is not None
        got = [m.sequence for m in late]
        # the records below the floor were never protected: skipped, and counted
        assert got == list(range(at_floor, p.sequence))
        assert late.lost == at_floor - oldest_seq and late.start_sequence == oldest_seq


def test_a_damaged_gate_floor_is_refused_by_a_gating_consumer(ring_name):
    with Ring.create(ring_name, 4096, lossless=True, max_record=128) as r:
        p = r.producer()
        for _ in range(10):
            p.publish(b"x" * 40)
        struct.pack_into("<Q", r.segment.buf, layout.OFF_GATE_FLOOR, r.tail + 8)
        with pytest.raises(CorruptSegmentError, match="gate_floor"):
            r.consumer(gating=True)
        assert r.slots() == []  # the slot it took was given back
        assert r.consumer().position == 0  # a non-gating consumer does not use it


def test_lossless_without_gating_consumers_never_blocks(ring_name):
    with Ring.create(ring_name, 4096, lossless=True, max_record=128) as r:
        p = r.producer()
        for _ in range(500):
            assert p.publish(b"q" * 50) >= 0


def test_lossless_gate_on_mirror(ring_name):
    with Ring.create(ring_name, 4096, lossless=True, gate_on_mirror=True,
                     max_record=128) as r:
        p = r.producer()
        n = 0
        while p.publish(b"m" * 40) != FULL:
            n += 1
        assert 0 < n and r.tail <= r.capacity
        r.set_mirrored(r.tail)
        assert p.publish(b"m" * 40) == n


def test_dead_gating_consumer_is_reaped(ring_name):
    with Ring.create(ring_name, 4096, lossless=True, max_record=128) as r:
        c = r.consumer(gating=True)
        idx = c.slot
        p = r.producer()
        while p.publish(b"d" * 40) != FULL:
            pass
        # pretend the consumer's process died: its pid now names no process
        struct.pack_into("<q", r.segment.buf, layout.slot_offset(idx) + layout.SLOT_OFF_PID,
                         dead_pid())
        assert p.publish(b"d" * 40, timeout=1.0) >= 0
        assert r.slots() == []


def test_reap_grace_keeps_a_dead_gating_slot_for_a_supervisor(ring_name):
    from pyshm.repair import pin_dead_slot, unpin_slot

    with Ring.create(ring_name, 4096, lossless=True, max_record=128,
                     reap_grace=30.0) as r:
        c = r.consumer(gating=True)
        idx, pos = c.slot, c.position
        p = r.producer()
        while p.publish(b"g" * 40) != FULL:
            pass
        gone = dead_pid()
        struct.pack_into("<q", r.segment.buf, layout.slot_offset(idx) + layout.SLOT_OFF_PID,
                         gone)
        # within the grace the dead slot still gates: the producer stays held back
        assert p.publish(b"g" * 40, timeout=0.05) == FULL
        assert r.reap() == 0
        # a new consumer does not take the dead slot while a free one exists
        other = r.consumer()
        assert other.slot != idx
        other.close()
        # the supervisor pins it and restarts the consumer at the same position
        assert pin_dead_slot(r, gone) == (idx, pos)
        assert unpin_slot(r, idx)
    with Ring.create(ring_name + "0", 4096, lossless=True, max_record=128) as r0:
        try:
            c = r0.consumer(gating=True)
            struct.pack_into("<q", r0.segment.buf,
                             layout.slot_offset(c.slot) + layout.SLOT_OFF_PID, dead_pid())
            assert r0.reap() == 1  # no grace (the default): freed at once
        finally:
            r0.unlink()
    with pytest.raises(InvalidParameterError):
        Ring.attach(ring_name + "x", reap_grace=-1)


def test_single_producer(ring):
    p = ring.producer()
    with pytest.raises(ProducerBusyError):
        ring.producer()
    p.publish(b"one")
    p.close()
    with pytest.raises(ClosedError):
        p.publish(b"two")
    p2 = ring.producer()  # resumes from the header
    assert p2.publish(b"two") == 1
    assert [bytes(m.data) for m in ring.consumer()] == [b"one", b"two"]


def test_dead_producer_is_taken_over(ring):
    ring.producer().publish(b"a")
    struct.pack_into("<q", ring.segment.buf, layout.OFF_PRODUCER_PID, dead_pid())
    # the closed producer reset the pid; the fake dead one must be taken over
    p = ring.producer()
    assert p.sequence == 1
    assert ring.producer_pid == os.getpid()


def test_consumer_slots_run_out_and_come_back(ring):
    cs = [ring.consumer() for _ in range(layout.MAX_CONSUMERS)]
    with pytest.raises(NoConsumerSlotError):
        ring.consumer()
    cs[3].close()
    c = ring.consumer()
    assert c.slot == 3
    assert len(ring.slots()) == layout.MAX_CONSUMERS


def test_slot_reports_consumer_position(ring):
    p, c = ring.producer(), ring.consumer()
    p.publish(b"x" * 8)
    p.publish(b"y" * 8)
    c.read()
    c.read()
    c.read()
    (slot,) = ring.slots()
    assert slot["position"] == ring.tail and slot["alive"] and slot["pid"] == os.getpid()


def test_records_of_a_single_partition_ring_with_a_wrapped_claim_is_empty(ring_name):
    # the state a producer killed between claim and commit leaves: the claim's intent is in
    # the next lap, so the one partition's old records are being overwritten
    with Ring(ring_name, create=True, capacity=8192, max_record=2048, partitions=1) as r:
        p = r.producer()
        for _ in range(7):
            p.publish(b"x" * 1000)
        assert len(list(r.records())) == 7
        p.claim(1500)
        assert r.tail_intent > r.capacity > r.tail and r.oldest() > r.tail
        assert list(r.records()) == []
        p.close()


def test_records_walk_matches_published(ring):
    p = ring.producer()
    payloads = [bytes([i & 0xFF]) * (i * 7 % 300) for i in range(3000)]
    for i, pl in enumerate(payloads):
        p.publish(pl, type=i % 5)
    recs = list(ring.records())
    assert recs[-1].sequence == 2999
    for r in recs:
        assert r.payload == payloads[r.sequence] and r.type == r.sequence % 5


def test_wait_timeout_returns_none(ring):
    c = ring.consumer()
    for w in ("spin", "yield", "sleep"):
        assert c.read(timeout=0.005, wait=w) is None
    with pytest.raises(InvalidParameterError, match="wait strategy"):
        c.read(timeout=0.001, wait="nap")


def test_repr_and_close(ring_name):
    r = Ring.create(ring_name, "8K")
    assert "capacity=8192" in repr(r) and ring_name in repr(r)
    c = r.consumer()
    r.close()
    r.close()
    assert "closed" in repr(r)
    with pytest.raises(ClosedError):
        c.read()
    with pytest.raises(ClosedError):
        _ = r.tail
    r.unlink()


def test_file_path_ring_and_permissions(tmp_path, ring_name):
    path = tmp_path / "ring.shm"
    with Ring.create(str(path), 4096) as r:
        r.producer().publish(b"file")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with Ring.attach(str(path)) as r:
        assert bytes(r.consumer().read().data) == b"file"
    with Ring.create(ring_name, 4096):
        assert stat.S_IMODE(os.stat(f"/dev/shm/{ring_name}").st_mode) == 0o600


def test_readonly_attach_reads_without_slot(ring):
    ring.producer().publish(b"ro")
    with Ring.attach(ring.name, readonly=True) as r:
        c = r.consumer()
        assert c.slot == -1 and bytes(c.read().data) == b"ro"
        with pytest.raises(Exception, match="read-only"):
            r.producer()


def test_parse_size():
    assert parse_size("64K") == 65536 and parse_size("1M") == 1 << 20
    assert parse_size("2GiB") == 2 << 30 and parse_size(4096) == 4096
    with pytest.raises(InvalidParameterError):
        parse_size("lots")


# ------------------------------------------------------------------ bad input

@pytest.mark.parametrize("cap", [5000, 1000, 0, 3 * 4096])
def test_bad_capacity(ring_name, cap):
    with pytest.raises(InvalidParameterError, match="capacity"):
        Ring.create(ring_name, cap)
    assert not os.path.exists(f"/dev/shm/{ring_name}")


def test_bad_max_record_and_partitions(ring_name):
    with pytest.raises(InvalidParameterError, match="max record"):
        Ring.create(ring_name, 4096, max_record=4096)
    with pytest.raises(InvalidParameterError, match="partition"):
        Ring.create(ring_name, 4096, partitions=3)


def test_record_too_large(ring):
    p = ring.producer()
    with pytest.raises(RecordTooLargeError):
        p.publish(bytes(ring.max_payload + 1))
    assert p.publish(bytes(ring.max_payload)) == 0
    with pytest.raises(RecordTooLargeError):
        p.claim(ring.max_payload + 1)


def test_padding_type_is_reserved(ring):
    with pytest.raises(InvalidParameterError, match="-1"):
        ring.producer().publish(b"x", type=-1)


def test_missing_ring(ring_name):
    with pytest.raises(RingNotFoundError, match=ring_name):
        Ring.attach(ring_name)


def test_exists(ring):
    with pytest.raises(RingExistsError):
        Ring.create(ring.name, 4096)
    with Ring.create(ring.name, ring.capacity, exist_ok=True) as again:
        assert again.capacity == ring.capacity
    with pytest.raises(InvalidParameterError, match="exists"):
        Ring.create(ring.name, 8192, exist_ok=True)


def test_not_a_ring(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_bytes(b"hello world, not a ring" * 300)
    with pytest.raises(CorruptSegmentError, match="not a pyshm ring"):
        Ring.attach(str(f))
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(CorruptSegmentError, match="empty"):
        Ring.attach(str(empty))


def test_other_layout_version(ring):
    struct.pack_into("<I", ring.segment.buf, layout.OFF_VERSION, 2)
    with pytest.raises(VersionMismatchError, match="version 2"):
        Ring.attach(ring.name)


def test_truncated_file(tmp_path):
    path = tmp_path / "r"
    Ring.create(str(path), 65536).close()
    os.truncate(path, 8192)
    with pytest.raises(CorruptSegmentError, match="capacity"):
        Ring.attach(str(path))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.binary(min_size=0x80, max_size=0x80))
def test_random_header_is_refused(tmp_path, junk):
    path = tmp_path / "junk"
    path.write_bytes(junk + bytes(layout.HEADER_SIZE - 0x80 + 4096))
    try:
        r = Ring.attach(str(path))
    except CorruptSegmentError:
        return
    # the random bytes happened to form a valid header: it must then be usable safely
    with r:
        r.consumer().read()


@pytest.mark.parametrize("length", [0, 7, 15, 1 << 20, -16])
def test_corrupt_record_length_is_an_error_not_a_crash(ring, length):
    p = ring.producer()
    p.publish(b"a" * 32)
    struct.pack_into("<i", ring.data, 0, length)
    with pytest.raises(CorruptSegmentError, match="position 0"):
        ring.consumer().read()


def test_corrupt_padding_and_tail(ring):
    p = ring.producer()
    while ring.tail < ring.partition_size:  # produce a padding record at a partition end
        p.publish(b"p" * 100)
    recs = list(ring.records())
    gap_start = next(a.position + layout.align8(len(a.payload) + 16)
                     for a, b in zip(recs, recs[1:], strict=False)
                     if b.position - a.position != layout.align8(len(a.payload) + 16))
    struct.pack_into("<i", ring.data, gap_start, 24)
    c = ring.consumer()
    with pytest.raises(CorruptSegmentError):
        list(c)
    struct.pack_into("<Q", ring.segment.buf, layout.OFF_TAIL, 13)
    with pytest.raises(CorruptSegmentError):
        ring.consumer()


# ------------------------------------------------------------------ encoding vs reference

sizes = st.lists(st.integers(0, 112), min_size=1, max_size=300)


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=sizes, second=sizes, types=st.integers(0, 1 << 20))
def test_c_producer_matches_reference_encoder(tmp_path_factory, first, second, types):
    path = tmp_path_factory.mktemp("enc") / "ring"
    with Ring.create(str(path), 4096, max_record=128) as r:
        p = r.producer()
        enc = layout.RecordEncoder(4096, 8, 128)
        for batch in (first, second):
            expected = bytearray(r.data)
            payloads = [bytes([(len(batch) + i) & 0xFF]) * n for i, n in enumerate(batch)]
            for i, pl in enumerate(payloads):
                for pos, raw in enc.place(pl, (types + i) & 0x7FFFFFFF):
                    length, typ = struct.unpack_from("<ii", raw)
                    # the C producer writes the padding header and the record's own
                    # bytes; alignment filler keeps whatever was there before
                    n = 8 if typ == layout.PADDING_TYPE else length
                    off = pos & 4095
                    expected[off:off + n] = raw[:n]
            for i, pl in enumerate(payloads):
                assert p.publish(pl, (types + i) & 0x7FFFFFFF) >= 0
            assert r.tail == enc.position and r.next_sequence == enc.sequence
            assert bytes(r.data) == bytes(expected)
            walked = list(r.records())
            assert walked[-1].sequence == enc.sequence - 1
            assert all(w.payload == bytes([w.payload[0]]) * len(w.payload)
                       for w in walked if w.payload)
