"""Closing a ring (or one of its ends) while another thread is inside a call on it.

The usual shutdown: a reader thread waits in ``read(timeout=None)`` and the main thread
leaves ``with Ring(...)``, or a signal handler closes the ring. The waiting call must end
with ClosedError and the mapping must outlive the call: before the fix the ring was
unmapped under the waiting C code, and the process died with SIGSEGV. Each scenario runs
in a child process so that a crash fails the test instead of killing pytest.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

CHILD = r'''
import os, signal, sys, threading, time
from pyshm import Ring
from pyshm.errors import ClosedError

name, what, how, wait = sys.argv[1:5]
ring = Ring(name, create=True, capacity=1 << 16, lossless=(how == "publish"))
ring.unlink()  # the name is not needed any more: nothing is left behind
if how == "publish":
    producer = ring.producer()
    gate = ring.consumer("oldest", gating=True)
    while producer.publish(b"x" * 1000) >= 0:
        pass
else:
    consumer = ring.consumer("latest")
    producer = ring.producer()
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
        else:
            r = producer.publish(b"y" * 1000, timeout=None)
        result.append(repr(r))
    except ClosedError:
        result.append("ClosedError")

def close():
    if what == "consumer":
        (producer if how == "publish" else consumer).close()
    else:
        ring.close()

if what == "signal":  # a handler that closes the ring, run inside the waiting call
    signal.signal(signal.SIGALRM, lambda *a: close())
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    call()
else:
    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.2)
    close()
    t.join(10)
    assert not t.is_alive(), "the waiting call did not end after close()"
print(result[0], flush=True)
'''


def _run(name: str, what: str, how: str, wait: str) -> str:
    out = subprocess.run([sys.executable, "-c", CHILD, name, what, how, wait], cwd="/",
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"child exited with {out.returncode}: {out.stderr[-2000:]}"
    return out.stdout.strip()


@pytest.mark.parametrize("wait", ["spin", "yield", "sleep", "block"])
@pytest.mark.parametrize("how", ["read", "read_copy", "read_into", "read_batch"])
def test_closing_the_ring_ends_a_waiting_read(ring_name, how, wait):
    assert _run(ring_name, "ring", how, wait) == "ClosedError"


@pytest.mark.parametrize("how", ["read", "read_into", "read_batch"])
def test_closing_the_consumer_ends_a_waiting_read(ring_name, how):
    assert _run(ring_name, "consumer", how, "block") == "ClosedError"


@pytest.mark.parametrize("how", ["read", "read_batch"])
def test_a_signal_handler_may_close_the_ring_under_a_wait(ring_name, how):
    assert _run(ring_name, "signal", how, "sleep") == "ClosedError"


@pytest.mark.parametrize("what", ["ring", "consumer"])
def test_closing_under_a_publish_waiting_for_room(ring_name, what):
    assert _run(ring_name, what, "publish", "-") == "ClosedError"
