"""Snapshots of rings and replicas: windows, trimming of overwritten bytes, round trips."""

from __future__ import annotations

import numpy as np
import pytest
from ringdata import payload

from pyshm import layout
from pyshm.errors import CorruptSegmentError, SnapshotError
from pyshm.images import ImageReader, capture, restore, snapshot
from pyshm.images.records import iter_records
from pyshm.images.snapshot import scratch_size
from pyshm.ring import Ring


@pytest.fixture
def names(new_name):
    return new_name


def ring_records(ring: Ring) -> list[tuple[int, int, bytes]]:
    c = ring.consumer(start="oldest")
    out = []
    while (m := c.read()) is not None:
        out.append((m.sequence, m.type, bytes(m.data)))
    c.close()
    return out


def fill(ring: Ring, n: int, size=lambda s: s % 97, start: int = 0) -> None:
    p = ring.producer()
    for s in range(start, start + n):
        assert p.publish(payload(s, size(s)), type=s % 5) == s
    p.close()


@pytest.mark.parametrize("compression", ["none", "zstd"])
@pytest.mark.parametrize("count", [0, 1, 100, 5000])  # empty, tiny, partial, wrapped
def test_round_trip(tmp_path, names, compression, count):
    src, dst = names(), names()
    with Ring(src, create=True, capacity=1 << 16) as ring:
        fill(ring, count)
        before = ring_records(ring)
        h = snapshot(ring, tmp_path / "s.img", compression=compression, chunk_size=4096)
        assert h.record_count == len(before)
        if before:
            assert (h.first_sequence, h.next_sequence) == (before[0][0], before[-1][0] + 1)
    info = restore(tmp_path / "s.img", dst)
    assert info.next_sequence == count
    with Ring(dst) as r2:
        assert ring_records(r2) == before
        assert r2.tail == r2.tail_intent == r2.mirrored == h.end_position
        assert r2.next_sequence == count
        assert not r2.is_replica


def test_full_ring_and_every_record_size(tmp_path, names):
    src, dst = names(), names()
    with Ring(src, create=True, capacity=1 << 15, partitions=4) as ring:
        sizes = list(range(0, ring.max_payload + 1))  # every payload length, padding too
        p = ring.producer()
        for i, n in enumerate(sizes):
            p.publish(payload(i, n), type=i)
        p.close()
        assert ring.tail > ring.capacity  # wrapped several times: the ring is full
        before = ring_records(ring)
        snapshot(ring, tmp_path / "f.img")
    restore(tmp_path / "f.img", dst)
    with Ring(dst) as r2:
        after = ring_records(r2)
    assert after == before and len(after) > 10
    assert all(data == payload(seq, sizes[seq]) for seq, _, data in after)


def test_image_holds_only_the_window(tmp_path, names):
    with Ring(names(), create=True, capacity=1 << 14) as ring:
        fill(ring, 3000)
        h = snapshot(ring, tmp_path / "w.img")
        assert h.first_position == layout.oldest_boundary(ring.tail_intent, ring.capacity,
                                                          ring.partition_size)
        assert h.end_position == ring.tail
    with ImageReader(tmp_path / "w.img") as r:
        data = r.read_data()
    seqs = [s for _, _, s, _ in iter_records(data, h.first_position, (1 << 64) - 1,
                                             h.first_position, h.end_position,
                                             h.params.partition_size, h.params.max_record)]
    assert seqs == list(range(h.first_sequence, h.next_sequence))


def test_overwrite_during_copy_is_trimmed(names):
    """Bytes the producer may have overwritten while they were copied are dropped."""
    with Ring(names(), create=True, capacity=1 << 14) as ring:
        fill(ring, 2000, size=lambda s: 40)
        producer = ring.producer()
        published = []

        def producer_runs_during_copy():
            # a third of a lap: the copy's oldest partitions are no longer trustworthy
            for s in range(2000, 2000 + 120):
                producer.publish(payload(s, 40), type=s % 5)
                published.append(s)

        tail_before = ring.tail
        cap = capture(ring, _after_copy=producer_runs_during_copy)
        producer.close()
        assert cap.trimmed > 0 and cap.attempts == 1
        assert cap.end == tail_before  # the image stops at the tail it started from
        low = layout.oldest_boundary(ring.tail_intent, ring.capacity, ring.partition_size)
        assert cap.start >= low
        recs = list(iter_records(cap.data, cap.start, (1 << 64) - 1, cap.start, cap.end,
                                 ring.partition_size, ring.max_record))
        assert recs and all(d == payload(s, 40) for _, _, s, d in recs)
        assert recs[-1][2] == 1999 and cap.next_sequence == 2000


def test_lapped_every_attempt_fails_clearly(names):
    with Ring(names(), create=True, capacity=1 << 14) as ring:
        fill(ring, 500, size=lambda s: 40)
        producer = ring.producer()
        seq = [500]

        def lap_the_ring():
            for _ in range(ring.capacity // 56 + 50):
                producer.publish(payload(seq[0], 40))
                seq[0] += 1

        with pytest.raises(SnapshotError, match="no intact window after 3 attempts"):
            capture(ring, retries=3, _after_copy=lap_the_ring)
        producer.close()


def test_corrupt_ring_is_refused(tmp_path, names):
    with Ring(names(), create=True, capacity=1 << 14) as ring:
        fill(ring, 50)
        ring.segment.buf[layout.OFF_DATA:layout.OFF_DATA + 4] = (999999).to_bytes(4, "little")
        with pytest.raises(CorruptSegmentError, match="invalid length 999999"):
            snapshot(ring, tmp_path / "c.img")
    assert not (tmp_path / "c.img").exists()


def test_snapshot_by_name_and_reused_buffer(tmp_path, names):
    name = names()
    with Ring(name, create=True, capacity=1 << 14) as ring:
        fill(ring, 300)
        buf = np.empty(scratch_size(ring.params), dtype=np.uint8)
        a = snapshot(name, tmp_path / "a.img", buffer=buf)
        fill(ring, 10, start=300)
        b = snapshot(name, tmp_path / "b.img", buffer=buf)
    assert b.next_sequence == a.next_sequence + 10 == 310


class FakeEngine:
    def __init__(self):
        self.calls: list[str] = []

    def sync(self, timeout):
        self.calls.append("sync")

    def pause(self):
        self.calls.append("pause")

    def resume(self):
        self.calls.append("resume")


def make_replica(name: str, ring: Ring) -> Ring:
    """A replica as an engine leaves it: same bytes, replica flag, tail published."""
    rep = Ring(name, create=True, capacity=ring.capacity, replica=True)
    rep.data_array()[:] = ring.data_array()
    u64 = np.frombuffer(rep.segment.mmap, dtype="<u8", count=layout.HEADER_SIZE // 8)
    u64[layout.OFF_TAIL // 8] = ring.tail
    u64[layout.OFF_NEXT_SEQUENCE // 8] = ring.next_sequence
    del u64
    return rep


def test_replica_snapshot_pauses_engine_and_promotes(tmp_path, names):
    from pyshm.images import promote
    with Ring(names(), create=True, capacity=1 << 14) as ring:
        fill(ring, 700)
        before = ring_records(ring)
        with make_replica(names(), ring) as rep:
            eng = FakeEngine()
            h = snapshot(rep, tmp_path / "r.img", engine=eng)
            assert eng.calls == ["sync", "pause", "resume"]
            assert h.from_replica and h.record_count == len(before)
            new = names()
            info = promote(rep, new, engine=FakeEngine())
    assert info.next_sequence == 700
    with Ring(new) as primary:
        assert not primary.is_replica
        assert ring_records(primary) == before
        p = primary.producer()
        assert p.publish(b"next") == 700  # the new primary continues the sequence


def test_live_replica_without_engine_is_refused(names):
    with Ring(names(), create=True, capacity=1 << 14) as ring:
        fill(ring, 100)
        with make_replica(names(), ring) as rep:
            def engine_copies():
                buf = rep.segment.buf
                tail = int.from_bytes(buf[layout.OFF_TAIL:layout.OFF_TAIL + 8], "little")
                buf[layout.OFF_TAIL:layout.OFF_TAIL + 8] = (tail + 8).to_bytes(8, "little")
                buf.release()

            with pytest.raises(SnapshotError, match="pass its engine"):
                capture(rep, _after_copy=engine_copies)


def test_replica_of_cpu_engine_while_producer_publishes(tmp_path, names):
    """The real CPU engine keeps mirroring; snapshots pause it, the producer never stops."""
    import threading

    from pyshm.engine import open_engine
    from pyshm.images import promote
    from pyshm.replica import Replica

    with Ring(names(), create=True, capacity=1 << 16) as ring:
        rep = Replica.create(names(), ring)
        eng = open_engine("cpu", ring, rep)
        eng.start()
        stop = threading.Event()
        producer = ring.producer()

        def publish():
            s = producer.sequence
            while not stop.is_set() and s < 200_000:
                producer.publish(payload(s, s % 97), type=s % 5)
                s += 1

        t = threading.Thread(target=publish)
        t.start()
        try:
            heads = []
            refused = []
            for i in range(5):
                try:
                    h = snapshot(rep, tmp_path / f"r{i}.img", engine=eng)
                except (CorruptSegmentError, SnapshotError) as exc:
                    # a replica the engine left inconsistent must be refused, never
                    # imaged; what is accepted is checked exactly below
                    refused.append(exc)
                    continue
                assert h.from_replica
                heads.append((i, h))
            assert len(heads) >= 3, refused
            new = names()
            for _ in range(5):
                try:
                    promote(rep, new, engine=eng)
                    break
                except (CorruptSegmentError, SnapshotError) as exc:
                    refused.append(exc)
        finally:
            stop.set()
            t.join(timeout=30)
            producer.close()
            eng.close()
            rep.segment.close()
        for i, h in heads:
            with ImageReader(tmp_path / f"r{i}.img") as r:
                data = r.read_data()
            recs = list(iter_records(data, h.first_position, (1 << 64) - 1,
                                     h.first_position, h.end_position,
                                     h.params.partition_size, h.params.max_record))
            assert [s for _, _, s, _ in recs] == list(range(h.first_sequence,
                                                            h.next_sequence))
            assert all(d == payload(s, s % 97) and ty == s % 5 for _, ty, s, d in recs)
        nexts = [h.next_sequence for _, h in heads]
        assert nexts == sorted(nexts)
        with Ring(new) as primary:
            got = ring_records(primary)
            assert got and all(d == payload(s, s % 97) for s, _, d in got)
            assert primary.next_sequence == got[-1][0] + 1


def test_sequence_gap_in_ring_is_refused(tmp_path, names):
    with Ring(names(), create=True, capacity=1 << 14) as ring:
        fill(ring, 50, size=lambda s: 8)
        # record 10 sits at 10 * 24; its sequence field claims 77
        off = layout.OFF_DATA + 10 * 24 + 8
        ring.segment.buf[off:off + 8] = (77).to_bytes(8, "little")
        with pytest.raises(CorruptSegmentError, match="not consecutive"):
            snapshot(ring, tmp_path / "g.img")


def test_stale_record_at_window_end_is_refused(tmp_path, names):
    """A record from an older lap (lower sequence) just before the tail: the C reader
    skips past it, the snapshot must still refuse the window."""
    with Ring(names(), create=True, capacity=1 << 14) as ring:
        fill(ring, 40, size=lambda s: 8)
        off = layout.OFF_DATA + 39 * 24 + 8  # the last record's sequence
        ring.segment.buf[off:off + 8] = (3).to_bytes(8, "little")
        with pytest.raises(CorruptSegmentError, match="sequence 3 after 38"):
            snapshot(ring, tmp_path / "s.img")
        assert not (tmp_path / "s.img").exists()


def test_intent_far_past_tail_is_retried_not_corrupt(names):
    """Between the loads of tail and intent a fast producer may run laps ahead: that
    proves nothing intact below tail, so the attempt is retried, then refused."""
    with Ring(names(), create=True, capacity=1 << 14) as ring:
        fill(ring, 200)
        ahead = ring.tail + 3 * ring.capacity
        ring.segment.buf[layout.OFF_TAIL_INTENT:layout.OFF_TAIL_INTENT + 8] = \
            ahead.to_bytes(8, "little")
        with pytest.raises(SnapshotError, match="no intact window after 2 attempts"):
            capture(ring, retries=2)
