"""The ring against damaged counters, backwards sequences and a producer killed at any
point: every call answers (data or a CorruptSegmentError naming the field), errors
repeat, and a restarted producer continues with no gap and no duplicate."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest

from pyshm import Ring, _ring_fast, layout
from pyshm.errors import CorruptSegmentError

CAP = 16 * 1024
U64 = (1 << 64) - 1
LIMIT = 1 << 62

# Each case runs in a child with a deadline: before the fix several of them spun in C
# for ever, which would have blocked pytest itself.
HEADER_CASE = r'''
import json, sys
from pyshm import Ring
from pyshm.errors import CorruptSegmentError
path, start, tail, intent = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
r = Ring.attach(path)
c = r.consumer("oldest")
for _ in range(int(start)):   # a consumer that already read part of the ring
    c.read()
u64 = r.segment.buf
if tail >= 0:
    u64[0x80:0x88] = tail.to_bytes(8, "little")
if intent >= 0:
    u64[0x100:0x108] = intent.to_bytes(8, "little")
out = []
for reader in (c, None):
    try:
        cc = reader or r.consumer("oldest")
        n = 0
        for _ in range(5):
            n += len(cc.read_batch(64))
            cc.read()
        out.append(["ok", n])
    except CorruptSegmentError as e:
        out.append(["corrupt", str(e)])
print(json.dumps(out))
'''


@pytest.fixture
def template(tmp_path):
    """A wrapped 16 KiB ring file (records of several sizes, padding included)."""
    path = tmp_path / "t.ring"
    with Ring.create(str(path), CAP) as r, r.producer() as p:
        for i in range(600):
            p.publish(bytes([i % 256]) * (i * 37 % (r.max_payload + 1)))
    return path


def run_case(tmp_path, path, start, tail, intent):
    script = tmp_path / "case.py"
    script.write_text(HEADER_CASE)
    try:
        out = subprocess.run([sys.executable, str(script), str(path), str(start), str(tail),
                              str(intent)], cwd=tmp_path, capture_output=True, text=True,
                             timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"read hangs with tail={tail} tail_intent={intent}")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("start", [0, 20])
@pytest.mark.parametrize("tail,intent,field", [
    (U64 - 7, 1 << 31, "tail"),          # the fuzzer's example: pos + capacity wrapped
    (U64 - 7, -1, "tail"),
    (LIMIT, -1, "tail"),                 # aligned but beyond the documented limit
    (CAP * 40 + 4, -1, "tail"),          # misaligned
    (-1, 1 << 63, "tail_intent"),
    (-1, U64, "tail_intent"),
])
def test_corrupt_counters_give_an_error_naming_the_field(tmp_path, template, start, tail,
                                                         intent, field):
    res = run_case(tmp_path, template, start, tail, intent)
    for kind, msg in res:
        assert kind == "corrupt", res
        assert f"header field {field} = " in msg, msg


@pytest.mark.parametrize("start", [0, 20])
@pytest.mark.parametrize("tail,intent", [
    (CAP * 50, 0),                        # intent far below tail - capacity: taken as tail
    (CAP * 50, CAP * 50 - 3 * CAP),
    ((1 << 62) - 8, 1 << 31),             # largest legal tail: sums must not wrap
    (CAP * 50, CAP * 50 + 5 * CAP),       # intent far ahead (a resynchronised replica)
])
def test_odd_but_legal_counters_answer(tmp_path, template, start, tail, intent):
    # whatever the bytes under such a tail hold, each call answers: records, nothing, or
    # a CorruptSegmentError about a record (not a spin)
    res = run_case(tmp_path, template, start, tail, intent)
    for kind, detail in res:
        assert kind == "ok" or "header field" not in detail, res


def test_consumer_beyond_tail_and_intent_is_an_error(ring_name):
    with Ring.create(ring_name, CAP) as r, r.producer() as p:
        for _ in range(50):
            p.publish(b"x" * 40)
        c = r.consumer("latest")
        # the ring was reset under the consumer: tail and intent back to 0
        for off in (layout.OFF_TAIL, layout.OFF_TAIL_INTENT):
            r.segment.buf[off:off + 8] = bytes(8)
        for _ in range(2):
            with pytest.raises(CorruptSegmentError, match="beyond the ring's tail"):
                c.read()


def _backwards_ring(ring_name):
    r = Ring.create(ring_name, CAP)
    with r.producer() as p:
        for i in range(10):
            p.publish(b"%d" % i)
    fifth = list(r.records())[5]
    off = layout.OFF_DATA + fifth.position + 8
    r.segment.buf[off:off + 8] = (2).to_bytes(8, "little")  # sequence 5 -> 2
    return r, fifth.position


def test_backwards_sequence_error_is_sticky_in_read_batch(ring_name):
    r, pos = _backwards_ring(ring_name)
    with r:
        c = r.consumer("oldest")
        assert list(c.read_batch(100).sequences) == [0, 1, 2, 3, 4]
        for _ in range(3):  # the bad record is never skipped: the error repeats
            with pytest.raises(CorruptSegmentError, match=f"sequence at position {pos}"):
                c.read_batch(100)
        assert c.position == pos and c.lost == 0


def test_backwards_sequence_error_is_sticky_in_read(ring_name):
    r, pos = _backwards_ring(ring_name)
    with r:
        c = r.consumer("oldest")
        assert [c.read().sequence for _ in range(5)] == [0, 1, 2, 3, 4]
        for _ in range(3):
            with pytest.raises(CorruptSegmentError, match="went backwards"):
                c.read()
        assert c.position == pos


@pytest.mark.parametrize("delta", [-1, +1, +7])
def test_restarted_producer_takes_sequence_from_records(ring_name, delta):
    # -1: killed between the tail store and the next_sequence store; +1: the state an
    # older build left when killed between storing next_sequence and tail
    with Ring.create(ring_name, CAP) as r:
        with r.producer() as p:
            for i in range(777):
                p.publish(b"y" * (i % 200))
        assert r.next_sequence == 777
        r.segment.buf[layout.OFF_NEXT_SEQUENCE:layout.OFF_NEXT_SEQUENCE + 8] = \
            (777 + delta).to_bytes(8, "little")
        with r.producer() as p:
            assert p.sequence == 777 and r.next_sequence == 777
            assert p.publish(b"next") == 777


def test_restarted_producer_refuses_a_corrupt_last_partition(ring_name):
    with Ring.create(ring_name, CAP) as r:
        with r.producer() as p:
            for _ in range(30):
                p.publish(b"z" * 100)
        last = list(r.records())[-1]
        off = layout.OFF_DATA + (last.position & (CAP - 1))
        r.segment.buf[off:off + 4] = (1 << 20).to_bytes(4, "little")
        with pytest.raises(CorruptSegmentError, match=f"at position {last.position}"):
            r.producer()


PRODUCER = r'''
import sys
from pyshm import Ring
r = Ring.attach(sys.argv[1])
p = r.producer()
print(p.sequence, flush=True)
recs = [b"k" * (i % 61) for i in range(997)]
while True:
    p.publish_batch(recs)
'''


def test_producer_killed_at_random_points_resumes_without_gap(ring_name, tmp_path):
    script = tmp_path / "producer.py"
    script.write_text(PRODUCER)
    rnd = random.Random(os.getpid())
    with Ring.create(ring_name, "64K", partitions=8) as r:
        expected = 0
        for _ in range(8):
            proc = subprocess.Popen([sys.executable, str(script), ring_name], cwd=tmp_path,
                                    stdout=subprocess.PIPE, text=True)
            try:
                assert int(proc.stdout.readline()) == expected
                time.sleep(rnd.uniform(0.0, 0.05))
            finally:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                proc.stdout.close()
            recs = list(r.records())
            seqs = [x.sequence for x in recs]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap, no repeat
            with r.producer() as p:  # the dead producer's pid is taken over
                assert p.sequence == seqs[-1] + 1 == r.next_sequence
            expected = seqs[-1] + 1


def test_lost_is_exact_from_start_sequence_when_the_first_copy_is_overwritten(ring_name):
    with Ring.create(ring_name, CAP) as r, r.producer() as p:
        for _ in range(10):
            p.publish(b"a" * 100)
        c = r.consumer("oldest")
        assert c.start_sequence == 0  # fixed at registration: the oldest record then

        def lap() -> None:
            if p.sequence < 1000:
                for _ in range(1000):  # several laps while read_copy copies
                    p.publish(b"b" * 100)

        # read_copy is C: the fault is injected between its finding a record and copying
        _ring_fast._inject_before_copy(lap)
        got = []
        try:
            while (m := c.read_copy()) is not None:
                got.append(m.sequence)
        finally:
            _ring_fast._inject_before_copy(None)
        assert c.start_sequence == 0 and got[0] > 1 and c.laps >= 1
        assert got == list(range(got[0], got[-1] + 1)) and got[-1] == p.sequence - 1
        assert len(got) + c.lost == got[-1] - c.start_sequence + 1


def _ring_near_position_limit(r, room_records: int):
    """Move tail and tail_intent up by whole laps, so that only about ``room_records``
    64-byte records fit below PYSHM_POS_LIMIT; the data (and so the producer's
    sequence reconciliation) is unchanged."""
    with r.producer() as p:
        for _ in range(3):
            p.publish(b"x" * 48)
    t = int.from_bytes(r.segment.buf[layout.OFF_TAIL:layout.OFF_TAIL + 8], "little")
    laps = (LIMIT - t - room_records * 64) // CAP
    for off in (layout.OFF_TAIL, layout.OFF_TAIL_INTENT):
        r.segment.buf[off:off + 8] = (t + laps * CAP).to_bytes(8, "little")
    return LIMIT - (t + laps * CAP)


@pytest.mark.parametrize("form", ["array", "list", "packed"])
def test_batch_stopping_at_the_position_limit_is_an_error(ring_name, form):
    # a batch on a lossy ring that stops short is not "full": it raises (as publish does),
    # naming the field and how much of the batch is in the ring; it used to return a
    # short count, then 0 forever
    import numpy as np

    with Ring.create(ring_name, CAP) as r:
        room = _ring_near_position_limit(r, 40)
        fits = room // 64
        n = fits + 200
        with r.producer() as p:
            with pytest.raises(CorruptSegmentError, match="header field tail") as info:
                if form == "array":
                    p.publish_batch(np.zeros((n, 48), np.uint8))
                elif form == "list":
                    p.publish_batch([b"y" * 48] * n)
                else:
                    p.publish_packed(bytes(48 * n), np.arange(1, n + 1, dtype=np.uint64) * 48)
            said = re.search(r"the first (\d+) records", str(info.value))
            next_seq = int.from_bytes(
                r.segment.buf[layout.OFF_NEXT_SEQUENCE:layout.OFF_NEXT_SEQUENCE + 8], "little")
            assert said and int(said.group(1)) == next_seq - 3 > fits - 5
            for again in (lambda: p.publish_batch([b"z" * 48]), lambda: p.publish(b"z" * 48)):
                with pytest.raises(CorruptSegmentError, match="header field tail"):
                    again()
