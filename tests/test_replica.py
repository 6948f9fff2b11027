"""Replicas: creation (0600, flag, prefault, reuse), flush policy parsing, read-only
opening as a Ring, and promotion into a primary that a producer continues."""

from __future__ import annotations

import os
import stat
import struct
import sys

import pytest

from pyshm import layout as L
from pyshm.engine import open_engine
from pyshm.errors import CorruptSegmentError, InvalidParameterError
from pyshm.replica import FlushPolicy, Replica, parse_size, promote

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "conformance"))
from ringkit import PyRing, payload_for  # noqa: E402

CAP = 1 << 16


def test_create_sets_flag_and_mode(names):
    ring = PyRing(names[0], capacity=CAP, lossless=True)
    rep = Replica.create(names[1], ring)
    assert stat.S_IMODE(os.stat(rep.path).st_mode) == 0o600
    p = L.unpack_static_header(rep.segment.buf[:0x80])
    assert p.is_replica and p.lossless and not p.flags & L.FLAG_GATE_ON_MIRROR
    assert (p.capacity, p.max_record) == (ring.params.capacity, ring.params.max_record)
    rep.close()
    with pytest.raises(FileExistsError):
        Replica.create(names[1], ring)
    again = Replica.create(names[1], ring, exist_ok=True)  # reuse: resume
    again.close()
    other = L.RingParams(capacity=CAP * 2, max_record=256)
    with pytest.raises(InvalidParameterError, match="capacity"):
        Replica.create(names[1], other, exist_ok=True)
    ring.close()


def test_open_refuses_primary_and_garbage(names, tmp_path):
    PyRing(names[0], capacity=CAP).close()
    with pytest.raises(InvalidParameterError, match="primary ring"):
        Replica.open(names[0])
    junk = tmp_path / "junk"
    junk.write_bytes(b"x" * 8192)
    with pytest.raises(CorruptSegmentError, match="not a pyshm ring"):
        Replica.open(str(junk))


@pytest.mark.parametrize("spec, kind, interval, nbytes", [
    ("none", "none", 0, 0),
    ("periodic", "periodic", 1_000_000_000, 0),
    ("periodic:0.25", "periodic", 250_000_000, 0),
    ("bytes:16M", "bytes", 0, 16 << 20),
])
def test_flush_policy_parse(spec, kind, interval, nbytes):
    f = FlushPolicy.parse(spec)
    assert (f.kind, f.interval_ns, f.flush_bytes) == (kind, interval, nbytes)


@pytest.mark.parametrize("spec", ["always", "periodic:x", "bytes:-1", "none:3"])
def test_flush_policy_rejects(spec):
    with pytest.raises(InvalidParameterError):
        FlushPolicy.parse(spec)


def test_parse_size():
    assert parse_size("64K") == 65536 and parse_size("1MiB") == 1 << 20
    with pytest.raises(InvalidParameterError):
        parse_size("lots")


def _mirror(ring, rep, n):
    for _ in range(n):
        ring.publish(payload_for(ring.enc.sequence, 200))
    with open_engine("cpu", ring, rep) as eng:
        eng.start()
        eng.sync(5)


def test_promote_continues_sequence(names):
    ring = PyRing(names[0], capacity=CAP)
    rep = Replica.create(names[1], ring)
    _mirror(ring, rep, 3000)
    # the engine's header value is only a fallback: clobber it, promote derives it
    rep.segment.buf[L.OFF_NEXT_SEQUENCE: L.OFF_NEXT_SEQUENCE + 8] = struct.pack("<Q", 7)
    tail = rep.tail
    rep.close()
    res = promote(names[1])
    assert res.next_sequence == 3000 and res.tail == tail
    newp = PyRing(names[1], create=False)  # attaches as a producer would
    assert not newp.params.is_replica
    assert newp.tail_intent == newp.tail == tail
    assert newp.publish(payload_for(3000, 200)) == 3000
    newp.close()
    with pytest.raises(InvalidParameterError, match="primary"):
        promote(names[1])  # not a replica any more
    ring.close()


def test_promote_after_gap_pads_stale_partitions(names):
    ring = PyRing(names[0], capacity=CAP)
    for _ in range(3000):  # several laps before the replica exists
        ring.publish(payload_for(ring.enc.sequence, 200))
    rep = Replica.create(names[1], ring)
    with open_engine("cpu", ring, rep) as eng:
        eng.start()
        eng.sync(5)
    rep.close()
    res = promote(names[1])
    got = PyRing(names[1], create=False)
    p = got.params
    recs = list(L.walk_records(got.data, p.capacity, p.partition_size, p.max_record,
                               L.oldest_boundary(got.tail, p.capacity, p.partition_size),
                               got.tail))
    seqs = [r.sequence for r in recs]
    assert seqs == list(range(seqs[0], 3000))
    assert res.next_sequence == 3000
    got.close()
    ring.close()


def test_replica_readable_as_ring_and_promoted_ring_usable(names):
    from pyshm.ring import Ring

    ring = Ring(names[0], create=True, capacity=CAP)
    prod = ring.producer()
    for i in range(500):
        assert prod.publish(b"m%05d" % i) == i
    rep = Replica.create(names[1], ring)
    with open_engine("cpu", ring, rep) as eng:
        eng.start()
        eng.sync(5)
    ro = rep.as_ring()
    assert ro.is_replica
    cons = ro.consumer(start="oldest")
    msgs = []
    while (m := cons.read()) is not None:
        msgs.append((m.sequence, bytes(m.data)))
    assert msgs[-1] == (499, b"m00499")
    assert [s for s, _ in msgs] == list(range(msgs[0][0], 500))
    ro.close()
    rep.close()
    prod.close() if hasattr(prod, "close") else None
    ring.close()
    assert promote(names[1]).next_sequence == 500
    newring = Ring(names[1])
    assert newring.producer().publish(b"after") == 500
    newring.close()


@pytest.mark.parametrize("tail_in_partition", [0, 1000])
def test_promote_with_oldest_boundary_above_tail_gives_an_empty_consistent_ring(
        names, tail_in_partition):
    """The engine stopped right after a torn round: the replica's tail intent is more
    than a capacity (plus a partition) above its tail, so its oldest readable position
    lies above the tail. Promote must not pad the tail's partition past the tail; the
    ring becomes empty at that boundary and continues the engine's sequence."""
    from pyshm.ring import Ring

    ring = PyRing(names[0], capacity=CAP)
    rep = Replica.create(names[1], ring)
    _mirror(ring, rep, 1500)
    p = rep.params
    psize = p.partition_size
    # deterministic torn state: tail somewhere in a partition, intent 2 partitions +
    # a capacity beyond it, the engine's next_sequence header kept
    tail = 5 * CAP + 3 * psize + tail_in_partition
    intent = tail + CAP + 2 * psize
    oldest = L.oldest_boundary(intent, CAP, psize)
    assert oldest > tail and oldest % psize == 0
    buf = rep.segment.buf
    struct.pack_into("<Q", buf, L.OFF_TAIL, tail)
    struct.pack_into("<Q", buf, L.OFF_TAIL_INTENT, intent)
    struct.pack_into("<Q", buf, L.OFF_NEXT_SEQUENCE, 1500)
    del buf
    rep.close()

    res = promote(names[1])
    assert res.tail == oldest and res.next_sequence == 1500
    assert res.padded_partitions == p.partition_count
    got = PyRing(names[1], create=False)
    assert got.tail == got.tail_intent == oldest
    # every partition a reader could start from is one padding record ending <= tail
    assert list(L.walk_records(got.data, CAP, psize, p.max_record,
                               L.oldest_boundary(got.tail, CAP, psize), got.tail)) == []
    got.close()

    # the C ring agrees: consumers find nothing stale, the producer continues at 1500
    r = Ring(names[1])
    c = r.consumer(start="oldest")
    assert c.read() is None
    prod = r.producer()
    assert prod.publish(b"next") == 1500
    m = c.read()
    assert (m.sequence, bytes(m.data), m.position) == (1500, b"next", oldest)
    c.close()
    r.close()
    ring.close()
