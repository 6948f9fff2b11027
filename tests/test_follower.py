"""Ring identity (ring_id / origin_id) and follower rings: FollowerProducer publishes
with given sequence numbers, ordinary producers are refused, gaps are refused or
recorded, a killed follower producer's successor resumes after the last record, and a
follower is promoted into an ordinary ring."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from ringdata import payload

from pyshm import FULL, Ring, layout
from pyshm.bridge import (
    DUPLICATE,
    GAP_TYPE,
    FollowerProducer,
    SequenceGapError,
    create_follower,
    promote,
)
from pyshm.errors import ProducerBusyError, PyshmError
from pyshm.images import restore, snapshot
from pyshm.replica import Replica
from pyshm.replica import promote as promote_replica

CAP = 1 << 14
ORIGIN = 0x1234_5678_9ABC_DEF0


def test_a_new_ring_has_a_random_identity_and_a_recreated_one_another(ring_name):
    with Ring.create(ring_name, CAP) as ring:
        first = ring.ring_id
        assert first != 0 and ring.origin_id == 0 and not ring.is_follower
    os.unlink(f"/dev/shm/{ring_name}")
    with Ring.create(ring_name, CAP) as ring:
        assert ring.ring_id not in (0, first)


def test_identity_round_trips_through_the_header():
    p = layout.RingParams(capacity=CAP, max_record=512, ring_id=2**64 - 1, origin_id=7,
                          flags=layout.FLAG_FOLLOWER)
    raw = layout.pack_static_header(p)
    assert len(raw) == 0x80
    assert raw[0x70:0x80] == (2**64 - 1).to_bytes(8, "little") + (7).to_bytes(8, "little")
    q = layout.unpack_static_header(raw)
    assert (q.ring_id, q.origin_id, q.is_follower) == (2**64 - 1, 7, True)


def test_ordinary_producer_is_refused_on_a_follower(ring_name):
    with create_follower(ring_name, ORIGIN, CAP) as ring:
        assert ring.is_follower and ring.origin_id == ORIGIN and ring.ring_id != ORIGIN
        with pytest.raises(PyshmError, match="follower ring"):
            ring.producer()
    with Ring.create(ring_name + "x", CAP) as plain:
        with pytest.raises(PyshmError, match="not a follower"):
            FollowerProducer(plain)
    os.unlink(f"/dev/shm/{ring_name}x")


def test_publish_at_keeps_sequences_and_drops_duplicates(ring_name):
    with create_follower(ring_name, ORIGIN, CAP) as ring, FollowerProducer(ring) as fp:
        assert fp.empty and fp.last_sequence is None
        # an empty follower starts at the first sequence it receives
        assert fp.publish_at(1000, b"a", type=5) == 1000
        assert fp.publish_at(1001, b"", type=6) == 1001  # empty payloads are records
        assert fp.publish_at(1000, b"again") == DUPLICATE
        assert fp.publish_at(999, b"older") == DUPLICATE
        with pytest.raises(SequenceGapError) as gap:
            fp.publish_at(1005, b"late")
        assert (gap.value.first, gap.value.last) == (1002, 1004)
        assert "1002..1004" in str(gap.value)
        assert fp.sequence == 1002 and fp.last_sequence == 1001
        c = ring.consumer()
        got = [(m.sequence, m.type, bytes(m.data)) for m in c]
        assert got == [(1000, 5, b"a"), (1001, 6, b"")]
        assert ring.next_sequence == 1002


def test_record_gap_writes_one_gap_record_per_lost_sequence(ring_name):
    with create_follower(ring_name, ORIGIN, CAP) as ring, FollowerProducer(ring) as fp:
        fp.publish_at(10, b"x")
        assert fp.record_gap(11, 14) == 15
        assert fp.publish_at(15, b"y") == 15
        got = [(m.sequence, m.type, len(m)) for m in ring.consumer()]
        assert got == [(10, 0, 1)] + [(s, GAP_TYPE, 0) for s in range(11, 15)] + [(15, 0, 1)]
        assert fp.gap_records == 4
        with pytest.raises(SequenceGapError):
            fp.record_gap(20, 21)  # a gap record must start at the next sequence


def test_lossless_follower_returns_full_when_its_gating_consumer_lags(ring_name):
    with create_follower(ring_name, ORIGIN, 4096, lossless=True) as ring, \
            FollowerProducer(ring) as fp:
        c = ring.consumer(gating=True)
        seq, rc = 0, 0
        while rc != FULL:
            rc = fp.publish_at(seq, bytes(100), timeout=0.0)
            seq += rc != FULL
        assert fp.sequence == seq
        assert c.read() is not None
        c.read()  # releases the first record
        assert fp.publish_at(seq, bytes(100), timeout=1.0) == seq


def test_second_follower_producer_is_refused_while_the_first_lives(ring_name):
    with create_follower(ring_name, ORIGIN, CAP) as ring, FollowerProducer(ring):
        with Ring(ring_name) as other, pytest.raises(ProducerBusyError):
            FollowerProducer(other)


def test_killed_follower_producer_is_resumed_after_its_last_record(ring_name, tmp_path):
    create_follower(ring_name, ORIGIN, CAP).close()
    code = (f"import os, sys\nfrom pyshm.bridge import FollowerProducer\n"
            f"fp = FollowerProducer({ring_name!r})\n"
            f"for s in range(500, 600): fp.publish_at(s, bytes([s % 256]) * (s % 40))\n"
            f"print('ok', flush=True)\nsys.stdin.read()\n")
    # cwd: not the source tree, which would shadow the installed package
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, cwd=tmp_path)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ok\n"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    with FollowerProducer(ring_name) as fp:
        assert fp.sequence == 600 and not fp.empty
        assert fp.publish_at(599, b"dup") == DUPLICATE
        assert fp.publish_at(600, b"next") == 600
        seqs = [m.sequence for m in fp.ring.consumer()]
        assert seqs == list(range(500, 601))


def test_promote_makes_an_ordinary_ring(ring_name):
    with create_follower(ring_name, ORIGIN, CAP) as ring:
        with FollowerProducer(ring) as fp:
            for s in range(40, 50):
                fp.publish_at(s, payload(s, 30))
            with pytest.raises(ProducerBusyError, match="still written"):
                promote(ring_name)
        assert promote(ring_name) == 50
        assert not ring.is_follower and ring.origin_id == ORIGIN  # lineage kept
        with ring.producer() as p:
            assert p.publish(b"after failover") == 50
        with pytest.raises(PyshmError, match="not a follower"):
            promote(ring_name)
        with pytest.raises(PyshmError, match="not a follower"):
            FollowerProducer(ring)


def test_snapshot_of_a_follower_restores_as_a_new_ordinary_ring(new_name, tmp_path):
    src, dst = new_name(), new_name()
    with create_follower(src, ORIGIN, CAP) as ring, FollowerProducer(ring) as fp:
        fp.publish_at(7, b"a")
        fp.record_gap(8, 9)
        fp.publish_at(10, b"b")
        snapshot(ring, tmp_path / "f.img")
        rid = ring.ring_id
    restore(tmp_path / "f.img", dst)
    with Ring(dst) as back:
        assert not back.is_follower and back.origin_id == 0
        assert back.ring_id not in (0, rid)
        assert [(m.sequence, m.type) for m in back.consumer()] == \
            [(7, 0), (8, GAP_TYPE), (9, GAP_TYPE), (10, 0)]


def test_replica_carries_the_identity_and_a_promoted_replica_gets_a_new_one(names):
    with Ring.create(names[0], CAP) as ring:
        rep = Replica.create(names[1], ring)
        assert rep.params.ring_id == ring.ring_id
        rep.close()
        promote_replica(names[1])
        with Ring(names[1]) as promoted:
            assert promoted.ring_id not in (0, ring.ring_id)
