"""Bounded fuzzing of the C extension's hot calls (pyshm._ring_fast) on hostile segments.

tests/test_fuzz.py drives the record reader through read_batch and read_copy; the calls
users make most (zero-copy ``read()``, ``read_into()``, the waits of every strategy with
their futex words, ``aread()`` and the ``fileno()`` waker thread, ``publish()``) run
other C code, which must keep every validation as well. Each example mutates the header
(counters, wake-up words), records and data of a wrapped ring, some of it while a
consumer is waiting on it, in a forked child with a deadline: the only acceptable
outcomes are data, None at a timeout, or a PyshmError.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fuzz import (
    CAP,
    INTERESTING_32,
    INTERESTING_64,
    STARTS,
    TEMPLATE,
    apply,
    run_isolated,
)

from pyshm import Ring, layout
from pyshm.errors import PyshmError

EXAMPLES = int(os.environ.get("PYSHM_FUZZ_EXAMPLES", "100"))
WAITS = ["spin", "yield", "sleep", "block"]

# the tail's span holds the block strategy's words (wake_seq, sleepers, wake_ack)
counter_patch = st.tuples(
    st.sampled_from([layout.OFF_TAIL, layout.OFF_TAIL_INTENT, layout.OFF_WAKE_SEQ,
                     layout.OFF_SLEEPERS, layout.OFF_WAKE_ACK, layout.OFF_NEXT_SEQUENCE,
                     layout.OFF_PRODUCER_PID, layout.OFF_MIRRORED, layout.OFF_PROBE_GEN,
                     layout.OFF_PROBE_POS, layout.OFF_PROBE_ACK]),
    st.sampled_from(INTERESTING_64 + [CAP * 3, CAP * 5 - 8]), st.just(8))
flags_patch = st.tuples(st.just(layout.OFF_FLAGS),
                        st.sampled_from([0, 0x20, 0x21, 0x22, 0xFFFFFFFF]), st.just(4))
record_patch = st.tuples(st.sampled_from(STARTS), st.sampled_from([0, 4, 8]),
                         st.sampled_from(INTERESTING_32 + [0xFFFFFFFF]))
data_patch = st.tuples(st.integers(0, CAP - 1), st.binary(min_size=1, max_size=16))


def _drain(c, how: str, wait: str) -> None:
    buf = bytearray(CAP)
    for _ in range(200):
        try:
            if how == "read":
                m = c.read()
                if m is not None:
                    bytes(m)
                    m.still_valid()
            elif how == "read_into":
                m = c.read_into(buf)
            elif how == "read_copy":
                m = c.read_copy()
            else:  # a wait that ends at its timeout when nothing (valid) comes
                m = c.read(timeout=0.002, wait=wait)
        except PyshmError:
            return
        if m is None:
            return


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(counters=st.lists(st.one_of(counter_patch, flags_patch), max_size=4),
       recs=st.lists(record_patch, max_size=4), data=st.lists(data_patch, max_size=3),
       mid=st.integers(0, 300), how=st.sampled_from(["read", "read_into", "read_copy",
                                                      "wait"]),
       wait=st.sampled_from(WAITS))
def test_fuzz_hot_calls_on_a_damaged_ring(tmp_path, counters, recs, data, mid, how, wait):
    path = str(tmp_path / "fast.ring")

    def target() -> None:
        with open(path, "wb") as f:
            f.write(TEMPLATE)
        with Ring.attach(path) as ring, ring.consumer("oldest") as c:
            for _ in range(mid):
                if c.read() is None:
                    break
            apply(ring.segment.buf, counters, recs, data)
            _drain(c, how, wait)
            try:
                with ring.consumer("oldest") as c2:
                    _drain(c2, how, wait)
            except PyshmError:
                pass
            try:
                with ring.producer() as p:
                    for i in range(20):
                        if p.publish(b"y" * (i * 29 % 200), type=i) < 0:
                            break
            except PyshmError:
                pass

    run_isolated("hot calls", target)


@settings(max_examples=max(EXAMPLES // 2, 10), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(counters=st.lists(st.one_of(counter_patch, flags_patch), min_size=1, max_size=3),
       recs=st.lists(record_patch, max_size=2), how=st.sampled_from(["aread", "fileno"]))
def test_fuzz_asyncio_and_fileno_on_a_damaged_ring(tmp_path, counters, recs, how):
    """The waker thread reads the header on its own: damage written while it sleeps
    must end in a record, None at the timeout, or a PyshmError at the next read."""
    path = str(tmp_path / "async.ring")

    def target() -> None:
        import asyncio
        import selectors
        import threading

        with open(path, "wb") as f:
            f.write(TEMPLATE)
        with Ring.attach(path) as ring, ring.consumer("latest") as c:
            buf = ring.segment.buf
            timer = threading.Timer(0.01, apply, (buf, counters, recs, []))
            timer.start()
            try:
                if how == "aread":
                    async def go() -> None:
                        for _ in range(20):
                            if await c.aread(timeout=0.05) is None:
                                return
                    asyncio.run(go())
                else:
                    with selectors.DefaultSelector() as sel:
                        sel.register(c.fileno(), selectors.EVENT_READ)
                        for _ in range(20):
                            if not sel.select(0.05):
                                return
                            while c.read() is not None:
                                pass
            except PyshmError:
                pass
            finally:
                timer.join()

    run_isolated("asyncio", target)
