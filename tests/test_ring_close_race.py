"""Closing a ring, or one of its ends, while a call is inside it.

The usual shutdown: a reader thread waits in ``read(timeout=None)`` and the main thread
leaves ``with Ring(...)``, or a signal handler closes the ring under the call it
interrupted. The call must end with ClosedError, the mapping must outlive it (before the
fix the ring was unmapped under the waiting C code: SIGSEGV), and once it has ended the
slot or producer role is given back and the mapping is gone: no export is left behind.

Each case runs in a child process, so that a crash fails the test instead of killing
pytest. The child closes only once the call is provably inside its wait (the call's
busy flag, seen from another thread, means it let the GIL go in the wait; for ``block``,
a futex sleep has begun), so every case exercises the race rather than a call that
started after close().
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CHILD = r'''
import json, os, signal, sys, threading, time
from pyshm import Ring
from pyshm.errors import ClosedError

name, closer, how = sys.argv[1:4]
waits = sys.argv[4].split(",")
PRODUCER_CALLS = ("publish", "claim", "publish_batch")
producing = how in PRODUCER_CALLS


def mapped(path):
    with open("/proc/self/maps") as f:
        return any(path in line for line in f)


def until(cond, what):
    for _ in range(60000):  # a hang guard (30 s), not a measurement
        if cond():
            return
        time.sleep(0.0005)
    raise SystemExit(f"{what}: never happened")


def scenario(i, wait):
    ring = Ring(f"{name}_{i}", create=True, capacity=1 << 16, lossless=producing)
    path = ring.path
    # a gate that never reads, on a handle of its own: closing `ring` does not open the
    # gate, so the waiting producer call cannot end by finding room
    gate_ring = Ring(path) if producing else None
    ring.unlink()  # the name is not needed: nothing is left behind, even after a crash
    producer = ring.producer()
    message = None
    if producing:
        gate = gate_ring.consumer("oldest", gating=True)
        while producer.publish(b"x" * 1000) >= 0:
            pass
        target = producer
    else:
        consumer = ring.consumer("latest")
        if closer == "message":  # a Message of this consumer stays alive meanwhile
            producer.publish(b"m")
            message = consumer.read()
            assert message is not None
        target = consumer
    result = []

    def call():
        try:
            if how == "read":
                r = consumer.read(timeout=None, wait=wait)
            elif how == "read_copy":
                r = consumer.read_copy(timeout=None, wait=wait)
            elif how == "read_into":
                r = consumer.read_into(bytearray(100), timeout=None, wait=wait)
            elif how == "read_batch":
                r = consumer.read_batch(10, timeout=None, wait=wait)
            elif how == "publish":
                r = producer.publish(b"y" * 1000, timeout=None)
            elif how == "claim":
                r = producer.claim(1000, timeout=None)
            else:
                r = producer.publish_batch([b"y" * 1000] * 3, timeout=3600.0)
            result.append(f"returned {r!r}")
        except ClosedError:
            result.append("ClosedError")

    def inside():
        # busy seen from another thread (or a signal handler): the call let the GIL go
        # inside its wait; block: and is asleep in the futex, where only a wake-up helps
        return target._fast.busy and (wait != "block" or consumer._c.sleeps > 0)

    if closer == "signal":  # a handler closes the ring under the call it interrupted
        closed_inside = []

        def handler(*a):
            if inside():
                closed_inside.append(True)
                ring.close()
            else:
                signal.setitimer(signal.ITIMER_REAL, 0.01)  # not waiting yet: later

        signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, 0.01)
        call()
        signal.setitimer(signal.ITIMER_REAL, 0)
        assert closed_inside, "the handler never ran inside the call"
    else:
        t = threading.Thread(target=call)
        t.start()
        until(inside, "the call waiting")
        if closer == "end":
            target.close()
        else:
            ring.close()
        if closer == "message":
            del message  # the last Message goes while the call is still inside
        t.join(30)
        assert not t.is_alive(), "the waiting call did not end after close()"
    if gate_ring is not None:
        gate.close()
        gate_ring.close()
    out = {"wait": wait, "result": result[0]}
    if closer == "end":
        # the call has ended: the slot (or the producer role) is free again, the ring
        # still mapped and usable
        out["mapped_open"] = mapped(path)
        if producing:
            out["producer_pid"] = ring.producer_pid
        else:
            out["slots"] = [s["index"] for s in ring.slots()]
            out["slot_was"] = consumer._c.slot
        ring.close()
    out["mapped_after"] = mapped(path)
    print(json.dumps(out), flush=True)


for i, wait in enumerate(waits):
    scenario(i, wait)
'''

CONSUMER_CALLS = ["read", "read_copy", "read_into", "read_batch"]
PRODUCER_CALLS = ["publish", "claim", "publish_batch"]
WAITS = "spin,yield,sleep,block"


def _run(name: str, closer: str, how: str, waits: str) -> list[dict]:
    out = subprocess.run([sys.executable, "-c", CHILD, name, closer, how, waits], cwd="/",
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, (f"child exited with {out.returncode}\nstdout: "
                                 f"{out.stdout[-2000:]}\nstderr: {out.stderr[-3000:]}")
    results = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["wait"] for r in results] == waits.split(",")
    return results


@pytest.mark.parametrize("how", CONSUMER_CALLS + PRODUCER_CALLS)
@pytest.mark.parametrize("closer", ["ring", "signal"])
def test_closing_the_ring_ends_the_call_inside_and_then_unmaps(ring_name, closer, how):
    """ring.close() by another thread, or by a signal handler during the call."""
    waits = "-" if how in PRODUCER_CALLS else WAITS
    for r in _run(ring_name, closer, how, waits):
        assert r["result"] == "ClosedError", r
        assert not r["mapped_after"], f"{r}: the mapping outlived the call that held it"


@pytest.mark.parametrize("how", CONSUMER_CALLS)
def test_closing_the_consumer_ends_the_call_and_frees_its_slot(ring_name, how):
    for r in _run(ring_name, "end", how, WAITS):
        assert r["result"] == "ClosedError", r
        assert r["mapped_open"], r
        assert r["slots"] == [], f"{r}: the consumer's slot was not given back"
        assert r["slot_was"] == -1, r
        assert not r["mapped_after"], r


@pytest.mark.parametrize("how", PRODUCER_CALLS)
def test_closing_the_producer_ends_a_wait_for_room_and_frees_the_role(ring_name, how):
    (r,) = _run(ring_name, "end", how, "-")
    assert r["result"] == "ClosedError", r
    assert r["mapped_open"], r
    assert r["producer_pid"] == 0, f"{r}: the producer role was not given back"
    assert not r["mapped_after"], r


@pytest.mark.parametrize("how", ["read", "read_into"])
def test_the_last_message_going_meanwhile_does_not_unmap_under_the_call(ring_name, how):
    """A Message kept the consumer's export; it is freed after close() while the call is
    still inside: the export must stay with the call (the mapping is gone only after)."""
    for r in _run(ring_name, "message", how, "sleep,block"):
        assert r["result"] == "ClosedError", r
        assert not r["mapped_after"], r
