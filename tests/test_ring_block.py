"""wait="block" across real processes.

The main test publishes millions of records in bursts whose gaps straddle the sleepers'
10 us poll phase, so that very many publishes land while a consumer is between
registering and falling asleep, against consumers that sleep in the kernel. Every wait
must end in data or its own timeout: a lost wake-up would be a wait that sleeps to its
10 s timeout while records are there. The producer is killed (kill -9) halfway and a
new one, using the other barrier mode, takes over while the consumers sleep.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time

import pytest
from pyshm._ring_c import lib

from pyshm import Ring, layout
from pyshm.errors import CorruptSegmentError

# make test-asan runs fewer: the sanitised build is several times slower
TOTAL = int(os.environ.get("PYSHM_TEST_BLOCK_TOTAL", "1500000"))

PRODUCER = r'''
import json, random, struct, sys, time
from pyshm import Ring
from pyshm._ring_c import lib

name, total, mode, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
if mode == "fence":
    lib.pyshm_wake_force_fence(1)
r = Ring.attach(name)
p = r.producer()
rng = random.Random(seed)
# gaps around the sleepers' 10 us poll phase: publishes land while they register
gaps = [0, 0, 0, 3_000, 8_000, 10_000, 12_000, 20_000, 60_000, 150_000]
pc = time.perf_counter_ns
pack = struct.Struct("<Q").pack
publish = p.publish
seq = p.sequence
print(json.dumps({"ready": True, "start": seq, "mode": int(p._p.wake_mode)}), flush=True)
batch = p.publish_batch
while seq < total:
    k = min(rng.randint(1, 24), total - seq)
    if k > 1:
        # most bursts in one C call: tail stores and wake checks back to back
        n = batch([pack(s) for s in range(seq, seq + k)], 0, 5.0)
        if n != k:
            print(json.dumps({"error": f"ring stayed full at {seq + n}"}), flush=True)
            sys.exit(1)
        seq += k
    else:
        if publish(pack(seq), 0, 5.0) < 0:
            print(json.dumps({"error": f"ring stayed full at {seq}"}), flush=True)
            sys.exit(1)
        seq += 1
    g = rng.choice(gaps)
    if g:
        t = pc() + g
        while pc() < t:
            pass
print(json.dumps({"done": seq, "wakes": int(p._p.wakes), "mode": int(p._p.wake_mode)}),
      flush=True)
'''

CONSUMER = r'''
import json, struct, sys
from pyshm import Ring
from pyshm._ring_c import lib

name, total, api = sys.argv[1], int(sys.argv[2]), sys.argv[3]
r = Ring.attach(name)
c = r.consumer("oldest", gating=True)
print(json.dumps({"ready": True, "slot": c.slot}), flush=True)
cs, data = c._c, r.data
unpack = struct.Struct("<Q").unpack_from
TIMEOUT_NS = 10_000_000_000
expect = timeouts = 0
error = None
while expect < total:
    if api == "c":
        # one unsliced futex wait per call: a lost wake-up sleeps to the timeout
        rc = lib.pyshm_wait_read(cs, TIMEOUT_NS, lib.PYSHM_WAIT_BLOCK)
        if rc <= 0:
            timeouts += rc == 0
            error = None if rc == 0 else f"C error {rc}"
            break
        seq, value = cs.meta[2], unpack(data, rc)[0]
    else:
        m = c.read(timeout=10.0, wait="block")
        if m is None:
            timeouts += 1
            break
        seq, value = m.sequence, unpack(m)[0]
    if seq != expect or value != expect:
        error = f"record {seq} holds {value}, expected {expect}"
        break
    expect += 1
print(json.dumps({"got": expect, "timeouts": timeouts, "error": error, "lost": c.lost,
                  "sleeps": int(cs.sleeps)}), flush=True)
'''


@pytest.fixture
def scripts(tmp_path):
    (tmp_path / "producer.py").write_text(PRODUCER)
    (tmp_path / "consumer.py").write_text(CONSUMER)
    procs: list[subprocess.Popen] = []

    def spawn(script: str, *args: object) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, str(tmp_path / script), *map(str, args)],
                             stdout=subprocess.PIPE, text=True)
        procs.append(p)
        return p

    yield spawn
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
        if p.stdout:
            p.stdout.close()


def line(proc: subprocess.Popen) -> dict:
    text = proc.stdout.readline()
    assert text, f"{proc.args} exited with {proc.wait()} without output"
    return json.loads(text)


def sleepers(ring: Ring) -> int:
    return struct.unpack_from("<Q", ring.segment.buf, layout.OFF_SLEEPERS)[0]


def wait_for(pred, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


def test_millions_of_publishes_against_sleeping_consumers(ring_name, scripts):
    with Ring.create(ring_name, 1 << 20, lossless=True) as r:
        consumers = [scripts("consumer.py", ring_name, TOTAL, api)
                     for api in ("c", "c", "py")]
        slots = [line(c)["slot"] for c in consumers]
        bits = sum(1 << s for s in slots)
        # everybody asleep before any producer exists: the first one's open wakes them
        wait_for(lambda: sleepers(r) & bits == bits, "the consumers to sleep")
        assert r._header_flags() & layout.FLAG_WAKE

        first = scripts("producer.py", ring_name, TOTAL, "membarrier", 1)
        hello = line(first)
        assert hello["start"] == 0 and hello["mode"] in (lib.PYSHM_WAKE_MEMBARRIER,
                                                         lib.PYSHM_WAKE_FENCE)
        wait_for(lambda: r.next_sequence >= TOTAL // 2, "half of the records", 60)
        first.send_signal(signal.SIGKILL)  # mid-burst, consumers asleep or about to be
        first.wait()
        cut = r.next_sequence

        second = scripts("producer.py", ring_name, TOTAL, "fence", 2)
        hello = line(second)
        assert hello["start"] == cut and hello["mode"] == lib.PYSHM_WAKE_FENCE
        done = line(second)
        assert done["done"] == TOTAL and done["wakes"] > 0
        results = [line(c) for c in consumers]
    for res in results:
        assert res["error"] is None and res["timeouts"] == 0, res
        assert res["got"] == TOTAL and res["lost"] == 0, res
        # the run really exercised sleeping, not only the poll phase
        assert res["sleeps"] > 1000, res
    print(f"\nsleeps per consumer: {[res['sleeps'] for res in results]}, "
          f"wakes by the second producer: {done['wakes']}, first producer killed at {cut}")


def test_bits_of_killed_sleepers_are_reset_by_the_producer(ring_name, scripts):
    with Ring.create(ring_name, 1 << 16) as r:
        p = r.producer()
        victim = scripts("consumer.py", ring_name, 10, "c")
        slot = line(victim)["slot"]
        wait_for(lambda: sleepers(r) == 1 << slot, "the consumer to sleep")
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        assert sleepers(r) == 1 << slot  # left behind by the dead sleeper
        for i in range(200):
            p.publish(b"x%d" % i)
        assert sleepers(r) == 0
        wakes = int(p._p.wakes)
        for i in range(200):
            p.publish(b"y%d" % i)
        assert int(p._p.wakes) == wakes  # no more system calls once reset


def test_block_degrades_to_bounded_sleeps_without_an_acknowledging_producer(ring_name):
    """An older pyshm producer never wakes anybody: records it commits are still seen
    (within 1 ms steps), and the same holds for a read-only attachment."""
    with Ring.create(ring_name, 1 << 16) as r:
        c = r.consumer()
        ro_ring = Ring.attach(ring_name, readonly=True)
        ro = ro_ring.consumer()
        # an "old" producer: a live pid in the header, no acknowledgement, and records
        # written with the reference encoder and a bare tail store
        struct.pack_into("<Q", r.segment.buf, layout.OFF_PRODUCER_PID, os.getpid())
        enc = layout.RecordEncoder(r.capacity, r.params.partition_count, r.max_record)
        got: dict = {}

        def read(name: str, consumer) -> None:
            m = consumer.read(timeout=10, wait="block")
            got[name] = None if m is None else bytes(m)

        threads = [threading.Thread(target=read, args=(n, x)) for n, x in
                   (("rw", c), ("ro", ro))]
        for t in threads:
            t.start()
        wait_for(lambda: sleepers(r) != 0, "the writable consumer to sleep")
        for pos, raw in enc.place(b"from an old producer"):
            r.data[pos:pos + len(raw)] = raw
        lib.pyshm_set_counter(r._h(), 0, enc.position)
        for t in threads:
            t.join(15)
        assert got == {"rw": b"from an old producer", "ro": b"from an old producer"}
        ro.close()
        ro_ring.close()


def test_the_wake_flag_is_sticky_and_refused_by_older_readers(ring_name, monkeypatch):
    with Ring.create(ring_name, 1 << 16) as r:
        assert not r._header_flags() & layout.FLAG_WAKE
        c = r.consumer()
        assert c.read(timeout=0.001, wait="block") is None
        assert r._header_flags() & layout.FLAG_WAKE
        c.close()
        with Ring.attach(ring_name) as again:  # this build knows the flag
            assert again.flags & layout.FLAG_WAKE
        # a build that predates it refuses the ring instead of never waking its sleepers
        monkeypatch.setattr(layout, "KNOWN_FLAGS", layout.KNOWN_FLAGS & ~layout.FLAG_WAKE)
        with pytest.raises(CorruptSegmentError, match="unknown header flags"):
            Ring.attach(ring_name)
