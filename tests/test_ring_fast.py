"""The C hot path (pyshm._ring_fast): Message, read_into, argument errors, wait names,
concurrent use from two threads, signals during waits, and the mapping's lifetime."""

from __future__ import annotations

import gc
import signal
import threading
import time

import numpy as np
import pytest

import pyshm
from pyshm import FULL, Message, Ring
from pyshm.errors import (
    ClosedError,
    ConcurrentUseError,
    InvalidParameterError,
    RecordTooLargeError,
)
from pyshm.ring import WAIT_STRATEGIES


@pytest.fixture
def ring(ring_name):
    r = Ring.create(ring_name, 64 * 1024)
    yield r
    r.close()
    r.unlink()


# ------------------------------------------------------------------ Message


def test_message_api_zero_copy(ring):
    p, c = ring.producer(), ring.consumer()
    p.publish(b"hello world", type=7)
    m = c.read()
    assert isinstance(m, Message) and isinstance(m, pyshm.Message)
    assert (m.sequence, m.type, len(m)) == (0, 7, 11)
    assert m.position == 0 and "seq=0" in repr(m)
    view = m.data
    assert isinstance(view, memoryview) and bytes(view) == b"hello world"
    assert bytes(m) == b"hello world"                        # the buffer protocol
    assert np.frombuffer(m, np.uint8).tobytes() == b"hello world"
    # zero-copy: the view shows the ring's bytes themselves
    ring.data[16] = ord("J")
    assert bytes(view[:1]) == b"J" and bytes(m)[:1] == b"J"
    assert m.still_valid() and c.still_valid()
    with pytest.raises(TypeError):
        Message()
    with pytest.raises(AttributeError):
        m.sequence = 5


def test_message_still_valid_after_overwrite(ring):
    p, c = ring.producer(), ring.consumer()
    p.publish(b"x" * 100)
    m = c.read()
    for _ in range(2000):
        p.publish(b"y" * 100)
    assert not m.still_valid() and not c.still_valid()


def test_read_copy_message_is_bytes_and_valid(ring):
    p, c = ring.producer(), ring.consumer()
    p.publish(b"copy me", type=4)
    m = c.read_copy()
    assert m.data == b"copy me" and isinstance(m.data, bytes) and m.type == 4
    for _ in range(2000):
        p.publish(b"y" * 100)
    assert m.still_valid() and bytes(m) == b"copy me"


def test_publish_forwards_a_message_between_rings(ring, new_name):
    with Ring.create(new_name(), 8192) as other:
        p, c = ring.producer(), ring.consumer()
        p.publish(b"forward me", type=3)
        q, d = other.producer(), other.consumer()
        m = c.read()
        assert q.publish(m, type=m.type) == 0
        assert q.publish(c.read_copy() or m.data) == 1
        got = d.read()
        assert bytes(got.data) == b"forward me" and got.type == 3


def test_message_keeps_the_mapping_alive_until_released(ring_name):
    def mapped() -> bool:
        with open("/proc/self/maps") as f:
            return ring_name in f.read()

    r = Ring.create(ring_name, 8192)
    r.producer().publish(b"still here")
    m = r.consumer().read()
    view = m.data
    r.close()
    # the message and its view still read the mapping (no crash, same bytes)
    assert bytes(view) == b"still here" and bytes(m) == b"still here"
    assert mapped()
    del m, view
    gc.collect()
    assert not mapped()
    r.unlink()


# ------------------------------------------------------------------ read_into


def test_read_into_returns_the_length_and_fills_the_buffer(ring):
    p, c = ring.producer(), ring.consumer()
    p.publish(b"abc", type=5)
    p.publish(b"", type=6)
    p.publish(bytes(range(40)), type=7)
    buf = bytearray(64)
    assert c.read_into(buf) == 3 and buf[:3] == b"abc"
    assert (c.last_sequence, c.last_type) == (0, 5)
    assert c.read_into(buf) == 0 and (c.last_sequence, c.last_type) == (1, 6)
    arr = np.zeros(64, np.uint8)
    assert c.read_into(arr) == 40 and arr[:40].tobytes() == bytes(range(40))
    assert c.read_into(buf) is None
    assert c.read_into(memoryview(buf)[8:], timeout=0.002) is None


def test_read_into_too_small_keeps_the_record(ring):
    p, c = ring.producer(), ring.consumer()
    p.publish(b"x" * 50)
    with pytest.raises(InvalidParameterError, match="too small.*50 bytes"):
        c.read_into(bytearray(10))
    out = bytearray(50)
    assert c.read_into(out) == 50 and out == b"x" * 50 and c.lost == 0


def test_read_into_refuses_read_only_or_odd_buffers(ring):
    c = ring.consumer()
    for bad in (b"immutable", "text", 5, memoryview(b"ro")):
        with pytest.raises(TypeError, match="writable"):
            c.read_into(bad)


# ------------------------------------------------------------------ argument errors


def test_publish_text_names_the_accepted_types(ring):
    p = ring.producer()
    with pytest.raises(TypeError, match=r"bytes-like .*not str.*encode"):
        p.publish("text")
    with pytest.raises(TypeError, match="not int"):
        p.publish(123)
    gone = memoryview(b"released")
    gone.release()
    with pytest.raises(TypeError, match="bytes-like"):
        p.publish(gone)  # never the stale pointer a released view keeps
    with pytest.raises(TypeError, match="not str.*encode"):
        p.publish_batch(["a", "b"])
    with pytest.raises(TypeError, match="sequence of records"):
        p.publish_batch("ab")
    assert ring.next_sequence == 0


@pytest.mark.parametrize("bad", [2**31, -(2**31) - 1, -1, 2**80])
def test_bad_record_types_are_refused_by_range(ring, bad):
    p = ring.producer()
    for call in (lambda: p.publish(b"x", type=bad),
                 lambda: p.publish_batch([b"x"], type=bad)):
        with pytest.raises(InvalidParameterError, match=r"\[-2147483648, 2147483647\]"):
            call()
    with pytest.raises(TypeError, match="type must be an int"):
        p.publish(b"x", type="1")
    assert ring.next_sequence == 0


def test_claim_refuses_negative_and_non_int_sizes(ring):
    p = ring.producer()
    with pytest.raises(InvalidParameterError, match=rf"\[0, {ring.max_payload}\]"):
        p.claim(-1)
    with pytest.raises(TypeError, match="int in"):
        p.claim("10")
    with pytest.raises(TypeError, match="int in"):
        p.claim(1.5)
    with pytest.raises(RecordTooLargeError):
        p.claim(2**70)
    v = p.claim(4)  # nothing was reserved by the refused calls
    v[:] = b"okay"
    with pytest.raises(InvalidParameterError, match="-1"):
        p.commit(type=-1)
    assert p.commit() == 0


def test_wait_names_are_checked_even_without_waiting(ring):
    assert list(WAIT_STRATEGIES) == ["spin", "yield", "sleep", "block"]
    c = ring.consumer()
    calls = [lambda w: c.read(0, w), lambda w: c.read(timeout=0, wait=w),
             lambda w: c.read_copy(wait=w), lambda w: c.read_into(bytearray(8), wait=w),
             lambda w: c.read_batch(8, timeout=0, wait=w)]
    for call in calls:
        with pytest.raises(InvalidParameterError, match="wait strategy 'bogus'"):
            call("bogus")
        assert call("block") in (None, 0) or len(call("block")) == 0
    for bad in (-1, float("nan")):
        with pytest.raises(InvalidParameterError, match="timeout"):
            c.read(bad)
    with pytest.raises(TypeError, match="timeout"):
        c.read("1")
    with pytest.raises(TypeError, match="unexpected keyword"):
        c.read(timeot=1)


@pytest.mark.parametrize("wait", list(WAIT_STRATEGIES))
def test_every_strategy_times_out_and_delivers(ring, wait):
    p, c = ring.producer(), ring.consumer()
    t0 = time.monotonic()
    assert c.read(timeout=0.02, wait=wait) is None
    assert time.monotonic() - t0 >= 0.02
    timer = threading.Timer(0.05, lambda: p.publish(b"late"))
    timer.start()
    try:
        m = c.read(timeout=5, wait=wait)
    finally:
        timer.join()
    assert m is not None and bytes(m) == b"late"
    assert c.read_copy(timeout=0.001, wait=wait) is None


# ------------------------------------------------------------------ threads


def _in_thread(fn):
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - reported to the test thread
            out["error"] = e
    t = threading.Thread(target=run)
    t.start()
    return t, out


def _wait_busy(obj) -> None:
    deadline = time.monotonic() + 5
    while not obj._fast.busy:
        assert time.monotonic() < deadline, "the other thread never started its call"
        time.sleep(0.001)


@pytest.mark.parametrize("wait", ["sleep", "block", "yield"])
def test_consumer_used_from_two_threads_at_once_raises(ring, wait):
    p, c = ring.producer(), ring.consumer()
    t, out = _in_thread(lambda: c.read(timeout=10, wait=wait))
    _wait_busy(c)
    for call in (c.read, c.read_copy, lambda: c.read_into(bytearray(8)),
                 lambda: c.read_batch(8)):
        with pytest.raises(ConcurrentUseError, match="another thread"):
            call()
    p.publish(b"one")
    t.join(10)
    assert bytes(out["value"]) == b"one"
    assert c.read() is None and c.lost == 0  # nothing read twice, nothing skipped
    p.publish(b"two")
    assert bytes(c.read()) == b"two"          # sequential use from any thread is fine


def test_producer_used_from_two_threads_at_once_raises(ring_name):
    with Ring.create(ring_name, 4096, lossless=True, max_record=128) as r:
        p, c = r.producer(), r.consumer(gating=True)
        while p.publish(b"f" * 40) != FULL:
            pass
        t, out = _in_thread(lambda: p.publish(b"waits", timeout=10))
        _wait_busy(p)
        for call in (lambda: p.publish(b"x"), lambda: p.claim(8), p.room,
                     lambda: p.publish_batch([b"x"])):
            with pytest.raises(ConcurrentUseError, match="another thread"):
                call()
        seqs = [m.sequence for m in c]
        t.join(10)
        assert out["value"] == seqs[-1] + 1
        assert [m.sequence for m in c] == [seqs[-1] + 1] and c.lost == 0


def test_closed_endpoints_refuse_calls_bound_before(ring):
    p, c = ring.producer(), ring.consumer()
    publish, read, read_into = p.publish, c.read, c.read_into
    p.close()
    c.close()
    with pytest.raises(ClosedError):
        publish(b"x")
    with pytest.raises(ClosedError):
        read()
    with pytest.raises(ClosedError):
        read_into(bytearray(8))
    with pytest.raises(ClosedError):
        c.still_valid()


# ------------------------------------------------------------------ signals


class _Alarm(Exception):
    pass


@pytest.mark.parametrize("wait", list(WAIT_STRATEGIES))
def test_signal_handlers_run_during_an_endless_wait(ring, wait):
    c = ring.consumer()

    def handler(signum, frame):
        raise _Alarm

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.05)
    try:
        t0 = time.monotonic()
        with pytest.raises(_Alarm):
            c.read(timeout=None, wait=wait)
        assert time.monotonic() - t0 < 5
        assert not c._fast.busy  # the guard was released on the way out
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
