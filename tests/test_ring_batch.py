"""Batch calls against the single-record ones (publish_batch/publish_packed place records in
runs with one tail store each; read_batch reads runs with one tail load and one seqlock
check each): the bytes written, the records returned, losses, laps, errors and the
lossless gate must be exactly those of the record-by-record calls."""

from __future__ import annotations

import struct
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyshm.fallback.cpu import CpuEngine

from pyshm import Ring, layout
from pyshm.errors import CorruptSegmentError
from pyshm.replica import Replica
from pyshm.ring import Producer

CAP, MAX_RECORD = 4096, 128
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def _u64(ring: Ring, off: int) -> int:
    return struct.unpack_from("<Q", ring.segment.buf, off)[0]


def _payloads(sizes: list[int], salt: int) -> list[bytes]:
    return [bytes([(salt + i) & 0xFF]) * n for i, n in enumerate(sizes)]


def _publish_one_by_one(p, payloads: list[bytes], type: int) -> int:
    for i, pl in enumerate(payloads):
        if p.publish(pl, type) < 0:
            return i
    return len(payloads)


sizes = st.lists(st.integers(0, MAX_RECORD - 16), min_size=1, max_size=200)


@SETTINGS
@given(calls=st.lists(st.tuples(sizes, st.sampled_from(["list", "packed", "numpy"]),
                                st.integers(0, 1 << 20)), min_size=1, max_size=4))
def test_batches_write_the_bytes_single_publishes_write(tmp_path_factory, calls):
    d = tmp_path_factory.mktemp("enc")
    with Ring.create(str(d / "one"), CAP, max_record=MAX_RECORD) as one, \
            Ring.create(str(d / "many"), CAP, max_record=MAX_RECORD) as many:
        p1, pn = one.producer(), many.producer()
        for k, (batch, how, type) in enumerate(calls):
            if how == "numpy":  # rows of one size
                batch = [batch[0]] * len(batch)
            payloads = _payloads(batch, k)
            assert _publish_one_by_one(p1, payloads, type) == len(payloads)
            if how == "list":
                n = pn.publish_batch(payloads, type=type)
            elif how == "packed":
                ends = np.cumsum([len(x) for x in payloads], dtype=np.uint64)
                n = pn.publish_packed(b"".join(payloads), ends, type=type)
            else:
                rows = np.frombuffer(b"".join(payloads), np.uint8).reshape(len(payloads),
                                                                           batch[0])
                n = pn.publish_batch(rows, type=type)
            assert n == len(payloads)
            assert (many.tail, many.tail_intent, many.next_sequence) == \
                (one.tail, one.tail_intent, one.next_sequence)
            assert bytes(many.data) == bytes(one.data)


def _drain_one_by_one(c) -> list[tuple[int, int, bytes]]:
    return [(m.sequence, m.type, bytes(m)) for m in c]


def _drain_batches(c, per_call: int) -> list[tuple[int, int, bytes]]:
    out = []
    while len(b := c.read_batch(per_call)):
        out += [(int(s), int(t), bytes(x)) for s, t, x in zip(b.sequences, b.types, b,
                                                               strict=True)]
    return out


ops = st.lists(st.one_of(
    st.tuples(st.just("publish"), sizes),
    st.tuples(st.just("batch"), sizes),
    st.tuples(st.just("read"), st.integers(1, 300)),
    # a producer that has begun to overwrite: tail_intent ahead of tail (by less than
    # capacity - partition, so that a lapped consumer lands below tail)
    st.tuples(st.just("intent"), st.integers(1, 400).map(lambda k: 8 * k)),
    # a follower ring's sequence jump: the records in between count as lost
    st.tuples(st.just("skip"), st.integers(1, 50)),
), min_size=1, max_size=25)


@SETTINGS
@given(ops=ops, start=st.sampled_from(["oldest", "latest", 0, 40, 300]))
def test_read_batch_returns_what_reads_return(tmp_path_factory, ops, start):
    """Two consumers of one overwrite ring, one reading record by record and one in
    batches, drained at the same moments: the same records, losses, laps, positions.
    A follower ring, so that sequences can jump inside a run of records."""
    path = tmp_path_factory.mktemp("rd") / "ring"
    with Ring.create(str(path), CAP, max_record=MAX_RECORD, follower_of=0) as r:
        p = Producer(r, follower=True)
        one, many = r.consumer(start), r.consumer(start)
        for k, (op, arg) in enumerate(ops):
            if op == "publish":
                _publish_one_by_one(p, _payloads(arg, k), k)
            elif op == "batch":
                assert p.publish_batch(_payloads(arg, k), type=k) == len(arg)
            elif op == "skip":
                p._set_sequence(p.sequence + arg)
            elif op == "intent":
                struct.pack_into("<Q", r.segment.buf, layout.OFF_TAIL_INTENT,
                                 max(r.tail_intent, r.tail + arg))
            else:
                assert _drain_batches(many, arg) == _drain_one_by_one(one)
                assert (many.position, many.lost, many.laps, many.next_sequence,
                        many.start_sequence) == \
                    (one.position, one.lost, one.laps, one.next_sequence,
                     one.start_sequence)
        assert _drain_batches(many, 7) == _drain_one_by_one(one)
        assert (many.position, many.lost, many.laps) == (one.position, one.lost, one.laps)


def test_read_batch_hands_out_the_records_before_a_corrupt_one(ring_name):
    with Ring.create(ring_name, 64 * 1024) as r:
        p = r.producer()
        for i in range(6):
            p.publish(b"%02d" % i * 8)
        bad = 3 * layout.align8(16 + 16)
        struct.pack_into("<i", r.data, bad, 7)
        c = r.consumer()
        b = c.read_batch(100)
        assert [bytes(x) for x in b] == [b"%02d" % i * 8 for i in range(3)]
        for _ in range(2):  # the error names the record and repeats
            with pytest.raises(CorruptSegmentError, match=f"position {bad}"):
                c.read_batch(100)


@pytest.mark.parametrize("size", [1, 48, 112])
def test_batches_stop_at_the_lossless_gate_where_single_publishes_do(tmp_path, size):
    with Ring.create(str(tmp_path / "one"), CAP, max_record=MAX_RECORD,
                     lossless=True) as one, \
            Ring.create(str(tmp_path / "many"), CAP, max_record=MAX_RECORD,
                        lossless=True) as many:
        p1, pn = one.producer(), many.producer()
        c1, cn = one.consumer(gating=True), many.consumer(gating=True)
        rows = np.arange(500 * size, dtype=np.uint32).astype(np.uint8).reshape(500, size)
        sent = 0
        for step in range(200):
            n1 = _publish_one_by_one(p1, [bytes(x) for x in rows[sent:]], 0)
            nn = pn.publish_batch(rows[sent:])
            assert nn == n1 and (many.tail, many.tail_intent) == (one.tail, one.tail_intent)
            assert bytes(many.data) == bytes(one.data)
            sent += nn
            if sent == len(rows):
                break
            k = 3 + step % 40  # the consumers free a little room
            a, b = [bytes(m) for m in c1.read_batch(k)], [bytes(m) for m in cn.read_batch(k)]
            assert a == b and len(a) == k
        assert sent == len(rows)


def test_batches_offer_lag_probes_like_single_publishes(new_name):
    ring = Ring(new_name(), create=True, capacity=1 << 20)
    rows = np.zeros((256, 48), np.uint8)
    p = ring.producer()
    for _ in range(40):  # 10,240 records and nobody consuming probes: one stamp
        assert p.publish_batch(rows) == 256
    assert _u64(ring, layout.OFF_PROBE_GEN) == 1
    pos = _u64(ring, layout.OFF_PROBE_POS)
    assert 0 < pos <= ring.tail and pos % 8 == 0
    rep = Replica.create(new_name(), ring)
    with CpuEngine(ring, rep, wait="spin") as eng:
        eng.start()
        eng.sync(5)
        for _ in range(80):
            assert p.publish_batch(rows) == 256
            eng.sync(5)
        st = eng.stats()
    # 20,480 records: about one probe per 64 records, at most one per run of 16 KiB
    # (~256 records here), and only once the engine consumed the previous one
    assert st.e2e_lag_samples >= 40
    assert _u64(ring, layout.OFF_PROBE_ACK) == _u64(ring, layout.OFF_PROBE_GEN)
    p.close()
    rep.close()
    ring.close()


KILLED_PRODUCER = r'''
import sys
import numpy as np
from pyshm import Ring
r = Ring.attach(sys.argv[1])
p = r.producer()
lens = np.random.default_rng(int(sys.argv[2])).integers(0, r.max_payload + 1, 64)
data = np.zeros(int(lens.sum()), np.uint8)
ends = np.cumsum(lens, dtype=np.uint64)
print("ready", flush=True)
while True:
    p.publish_packed(data, ends)
'''


@pytest.mark.parametrize("partitions", [1, 2, 8])
def test_a_producer_killed_inside_a_run_leaves_a_ring_the_next_one_continues(
        tmp_path, ring_name, partitions):
    """kill -9 at random moments of back-to-back batches on rings smaller than a run:
    tail_intent never leads tail by more than one publish can make it, so every next
    producer opens (no 'tail_intent is invalid') and continues the sequence without a
    gap or a duplicate."""
    script = tmp_path / "producer.py"
    script.write_text(KILLED_PRODUCER)
    rng = np.random.default_rng(partitions)
    with Ring.create(ring_name, 8192, partitions=partitions,
                     max_record=8192 // partitions // 4) as r:
        for k in range(10):
            proc = subprocess.Popen([sys.executable, str(script), ring_name, str(k)],
                                    stdout=subprocess.PIPE, text=True)
            try:
                assert proc.stdout.readline().strip() == "ready"
                time.sleep(float(rng.uniform(0.005, 0.03)))
            finally:
                proc.kill()
                proc.wait()
                proc.stdout.close()
            assert r.tail_intent - r.tail <= r.partition_size + r.max_record
            p = r.producer()  # refused if tail_intent led tail by more than a capacity
            if layout.oldest_boundary(r.tail_intent, r.capacity, r.partition_size) <= r.tail:
                seqs = [rec.sequence for rec in r.records()]
                assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
                assert p.sequence == seqs[-1] + 1
            # else a single partition whose next lap had begun: nothing below tail is
            # intact, and the header's next_sequence stands
            assert p.publish(b"next") == r.next_sequence - 1
            p.close()
