"""A producer killed with SIGKILL between claim and commit, and ``pyshm repair``.

The producer is a real process: it publishes a known prefix, claims the next record,
writes part of it, says so on stdout and waits to be killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pyshm import Ring
from pyshm.cli import main as cli_main
from pyshm.errors import ProducerBusyError
from pyshm.repair import last_committed_sequence, repair, stuck_claim

WORKER = r'''
import json, sys, time
from pyshm import Ring
name, n, claim, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ring = Ring.attach(name)
if mode == "consumer":
    c = ring.consumer("oldest", gating=True)
    print(json.dumps({"slot": c.slot}), flush=True)
    time.sleep(120)
p = ring.producer()
for i in range(n):
    size = int(sys.argv[5]) if len(sys.argv) > 5 else 8 + i % 40
    assert p.publish(bytes([i % 251]) * size, type=7) >= 0
if claim:
    view = p.claim(claim)
    view[: claim // 2] = b"\xee" * (claim // 2)   # half-written payload
print(json.dumps({"tail": ring.tail, "intent": ring.tail_intent, "seq": p.sequence}),
      flush=True)
time.sleep(120)
'''


@pytest.fixture
def worker(tmp_path):
    path = tmp_path / "worker.py"
    path.write_text(WORKER)
    procs: list[subprocess.Popen] = []

    def start(*args: object) -> tuple[subprocess.Popen, dict]:
        p = subprocess.Popen([sys.executable, str(path), *map(str, args)], cwd=tmp_path,
                             stdout=subprocess.PIPE, text=True)
        procs.append(p)
        line = p.stdout.readline()  # type: ignore[union-attr]
        assert line, f"worker exited with {p.wait(timeout=10)}"
        return p, json.loads(line)

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)


def kill9(p: subprocess.Popen) -> None:
    os.kill(p.pid, signal.SIGKILL)
    assert p.wait(timeout=10) == -signal.SIGKILL


def read_all(ring: Ring) -> list:
    with ring.consumer("oldest") as c:
        out = []
        while (m := c.read_copy(timeout=0.05, wait="sleep")) is not None:
            out.append(m)
        return out


@pytest.mark.parametrize("lossless", [False, True])
def test_producer_killed_between_claim_and_commit(ring_name, replica_name, worker, lossless):
    from pyshm.engine import open_engine
    from pyshm.replica import Replica

    with Ring.create(ring_name, 64 * 1024, lossless=lossless) as ring:
        p, st = worker(ring_name, 100, 200, "producer")
        kill9(p)
        assert ring.tail_intent > ring.tail == st["tail"]
        assert ring.producer_pid == p.pid
        # consumers read exactly the committed prefix and return: nothing waits on the claim
        t0 = time.monotonic()
        recs = read_all(ring)
        assert time.monotonic() - t0 < 5
        assert [m.sequence for m in recs] == list(range(100))
        assert all(m.data == bytes([m.sequence % 251]) * (8 + m.sequence % 40) for m in recs)
        # the engine mirrors the committed prefix and syncs within its timeout
        with Replica.create(replica_name, ring) as rep, \
                open_engine("cpu", ring, rep) as eng:
            eng.start()
            eng.sync(timeout=5.0)
            assert rep.tail == ring.tail
            assert [r.sequence for r in rep.records()] == list(range(100))
            eng.stop()
        assert stuck_claim(ring, timeout=0.1)
        rep_ = repair(ring_name)
        assert rep_.producer_pid == p.pid and not rep_.producer_alive
        assert rep_.discarded_bytes == st["intent"] - st["tail"] > 0
        assert ring.tail_intent == ring.tail and ring.producer_pid == 0
        assert not stuck_claim(ring, timeout=0.0)
        # a new producer continues after the last committed record, no gap, no duplicate
        with ring.producer() as prod:
            assert prod.sequence == 100
            for i in range(5):
                prod.publish(b"new%d" % i)
        recs = read_all(ring)
        assert [m.sequence for m in recs] == list(range(105))
        assert recs[-1].data == b"new4"


def test_repair_refuses_live_producer_unless_forced(ring_name, worker):
    with Ring.create(ring_name, 16 * 1024) as ring:
        p, st = worker(ring_name, 3, 64, "producer")
        intent = ring.tail_intent
        with pytest.raises(ProducerBusyError, match=str(p.pid)):
            repair(ring_name)
        assert cli_main(["repair", ring_name]) == 1
        assert ring.tail_intent == intent and ring.producer_pid == p.pid
        # a live producer in the middle of a claim is not "stuck"
        assert not stuck_claim(ring, timeout=0.05)
        rep = repair(ring_name, force=True)
        assert rep.producer_alive and ring.producer_pid == 0 and ring.tail_intent == ring.tail


def test_dry_run_changes_nothing(ring_name, worker, capsys):
    with Ring.create(ring_name, 16 * 1024) as ring:
        p, st = worker(ring_name, 3, 64, "producer")
        kill9(p)
        before = bytes(ring.segment.buf[:0x1000])
        assert cli_main(["repair", ring_name, "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert "would discard" in out and str(p.pid) in out
        assert bytes(ring.segment.buf[:0x1000]) == before
        assert cli_main(["repair", ring_name, "--json", "--wait", "0.05"]) == 0
        d = json.loads(capsys.readouterr().out)
        assert d["intent_after"] == d["tail"] == ring.tail_intent


def test_sequence_stored_ahead_of_tail_is_fixed(ring_name):
    # The producer stores next_sequence just before releasing tail; a kill between the
    # two leaves it one ahead. Reproduced by writing the word (the window is one store).
    with Ring.create(ring_name, 16 * 1024) as ring:
        with ring.producer() as prod:
            for i in range(10):
                prod.publish(b"x" * i)
        ring.segment.buf[0x200:0x208] = (11).to_bytes(8, "little")
        rep = repair(ring)
        assert (rep.next_sequence_before, rep.next_sequence_after) == (11, 10)
        with ring.producer() as prod:
            assert prod.publish(b"y") == 10
        with ring.consumer("oldest") as c:
            seqs = [m.sequence for m in c]
            assert seqs == list(range(11)) and c.lost == 0


def test_claim_that_overwrote_the_oldest_partition_keeps_its_intent(ring_name, worker):
    # Records of exactly max_record bytes fill partitions with no padding; after 1.5 laps
    # the tail is a partition start, so the claim overwrote the first record of the
    # oldest partition of the previous lap. Rolling the intent back would expose it.
    cap, parts = 16 * 1024, 8
    psize = cap // parts
    rec = psize // 4
    with Ring.create(ring_name, cap, partitions=parts, max_record=rec) as ring:
        n = (cap + cap // 2) // rec
        p, st = worker(ring_name, n, rec - 16, "producer", rec - 16)
        kill9(p)
        assert st["tail"] % psize == 0 and st["intent"] == st["tail"] + rec
        before = [m.sequence for m in read_all(ring)]
        rep = repair(ring_name)
        assert rep.intent_after == rep.intent_before and rep.notes
        assert ring.producer_pid == 0
        after = read_all(ring)
        # the first partition of the window is the one after the overwritten record
        assert [m.sequence for m in after] == before
        assert after[0].position >= st["intent"] - cap
        assert all(m.data == bytes([m.sequence % 251]) * (rec - 16) for m in after)
        assert last_committed_sequence(ring) == n - 1


def test_dead_consumer_slots_are_reaped(ring_name, worker):
    with Ring.create(ring_name, 16 * 1024, lossless=True) as ring:
        c1, s1 = worker(ring_name, 0, 0, "consumer")
        c2, s2 = worker(ring_name, 0, 0, "consumer")
        kill9(c1)
        rep = repair(ring_name)
        assert rep.reaped_slots == [(s1["slot"], c1.pid)]
        pids = {s["pid"] for s in ring.slots()}
        assert c1.pid not in pids and c2.pid in pids


def test_repair_refuses_replica(ring_name, replica_name):
    from pyshm.errors import PyshmError
    from pyshm.replica import Replica

    with Ring.create(ring_name, 16 * 1024) as ring, Replica.create(replica_name, ring):
        with pytest.raises(PyshmError, match="replica"):
            repair(replica_name)


CONSUMER = r'''
import json, sys, time
from pyshm import Ring
ring = Ring.attach(sys.argv[1])
c = ring.consumer("oldest", gating=True)
last = None
for _ in range(int(sys.argv[2])):
    last = c.read_copy().sequence
c.read()  # releases the previous record: the slot now points past it
print(json.dumps({"next": last + 2}), flush=True)   # it holds the record after `last`
time.sleep(120)
'''


def kill_and_pin(ring: Ring, tmp_path, reads: int) -> tuple[int, tuple[int, int]]:
    """A gating consumer in its own process reads ``reads`` records and holds the next;
    it is killed with SIGKILL and its slot pinned. Returns (its checkpoint, the pin)."""
    from pyshm.repair import pin_dead_slot

    script = tmp_path / "consumer.py"
    script.write_text(CONSUMER)
    p = subprocess.Popen([sys.executable, str(script), ring.name, str(reads)],
                         cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    try:
        checkpoint = json.loads(p.stdout.readline())["next"]  # type: ignore[union-attr]
    finally:
        kill9(p)
    # pinned before the producer's next reap: from now on the slot is ours and holds the
    # producer back exactly where the dead consumer stood
    pinned = pin_dead_slot(ring, p.pid)
    assert pinned is not None
    return checkpoint, pinned


def test_dead_gating_consumer_resumes_mid_partition(ring_name, tmp_path):
    from pyshm.repair import resume_consumer, unpin_slot

    with Ring.create(ring_name, 16 * 1024, lossless=True) as ring:
        prod = ring.producer()
        while prod.publish(b"r" * 40) >= 0:  # fill the ring up to the gate-free limit
            if prod.sequence >= 200:
                break
        checkpoint, pinned = kill_and_pin(ring, tmp_path, 37)
        assert ring.reap() == 0  # a pinned slot is no longer a dead one
        for _ in range(10_000):  # fill the ring up to that gate (a reap happens on FULL)
            if prod.publish(b"r" * 40) < 0:
                break
        assert prod.publish(b"r" * 40) < 0
        # a plain restart would start at a partition start, past the checkpoint
        with ring.consumer(checkpoint) as plain:
            first_plain = plain.read_copy()
            assert first_plain is not None and first_plain.sequence > checkpoint
        c = resume_consumer(ring, pinned[1], checkpoint)
        assert unpin_slot(ring, pinned[0])
        seqs = [m.sequence for m in iter(lambda: c.read_copy(), None)]
        assert seqs[0] == checkpoint and seqs == list(range(checkpoint, seqs[-1] + 1))
        assert c.lost == 0 and seqs[-1] == prod.sequence - 1
        c.close()
        prod.close()


def test_resume_before_the_partition_start_is_not_lapped(ring_name, tmp_path):
    """The dead consumer's position lies after the oldest partition start when the
    restart registers. The producer's gate limit, cached from the pinned slot, lets it
    overwrite the bytes before that position: a consumer left at the partition start was
    lapped at its first read and jumped past the position, losing the records between
    (the CI fault campaign lost 178 records this way in one of 8 consumer kills)."""
    from pyshm.repair import resume_consumer, unpin_slot

    with Ring.create(ring_name, 16 * 1024, lossless=True) as ring:
        cap, psize = ring.capacity, ring.partition_size
        prod = ring.producer()
        for _ in range(150):
            assert prod.publish(b"r" * 40) >= 0
        checkpoint, pinned = kill_and_pin(ring, tmp_path, 100)
        position = pinned[1]
        assert position > psize
        # past one capacity: the producer rescans the slots and caches the pinned slot's
        # limit, position + capacity
        while ring.tail <= cap:
            assert prod.publish(b"r" * 40) >= 0
        oldest_start = ring.oldest()
        assert oldest_start <= position  # the restart's partition start lies before it
        c = resume_consumer(ring, position, checkpoint)
        assert c.position == position
        assert unpin_slot(ring, pinned[0])
        while prod.publish(b"r" * 40) >= 0:  # up to the gate
            pass
        assert ring.tail_intent > oldest_start + cap  # the partition start was overwritten
        seqs = [m.sequence for m in iter(lambda: c.read_copy(), None)]
        assert seqs == list(range(checkpoint, prod.sequence)), (seqs[:3], c.lost)
        assert c.lost == 0
        c.close()
        prod.close()


def test_resume_refuses_a_position_beyond_the_tail(ring_name):
    from pyshm.errors import CorruptSegmentError
    from pyshm.repair import resume_consumer

    with Ring.create(ring_name, 16 * 1024, lossless=True) as ring:
        prod = ring.producer()
        assert prod.publish(b"r" * 40) >= 0
        with pytest.raises(CorruptSegmentError, match="beyond the ring's tail"):
            resume_consumer(ring, ring.tail + 8, 1)
        prod.close()
