"""The benchmark's pure-Python baseline ring must be correct, or every ratio is meaningless."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import sys
import time

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
sys.path.insert(0, BENCH)

from _common import interleaved, percentiles  # noqa: E402
from naive_ring import NaiveRing, RingFull  # noqa: E402

CTX = mp.get_context("fork")


@pytest.fixture
def ring():
    r = NaiveRing(capacity=4096)
    yield r
    r.close()
    r.unlink()


def payload(i: int, n: int) -> bytes:
    return (i.to_bytes(8, "little") * (n // 8 + 1))[:n]


def test_empty_ring_reads_none(ring):
    assert ring.read() is None


def test_contents_in_order_across_wrap(ring):
    rng = random.Random(2)
    sizes = [rng.randrange(0, 1500) for _ in range(3000)]
    got = []
    i = 0
    while len(got) < len(sizes):
        while i < len(sizes) and ring.try_publish(payload(i, sizes[i])):
            i += 1
        b = ring.read_bytes()
        if b is not None:
            got.append(b)
    assert got == [payload(k, n) for k, n in enumerate(sizes)]
    assert ring.read() is None


def test_full_ring_refuses_then_accepts(ring):
    n = 0
    while ring.try_publish(b"x" * 100):
        n += 1
    assert 0 < n <= 4096 // 104
    with pytest.raises(RingFull, match="no room"):
        ring.publish(b"x" * 100, timeout=0.01)
    assert ring.read_bytes() == b"x" * 100
    ring.read()  # releases the first record: the producer may reuse its space
    assert ring.try_publish(b"y" * 100)


def test_view_stays_valid_until_next_read(ring):
    while ring.try_publish(b"a" * 1000):
        pass
    view = ring.read()
    # the ring is full and the record under `view` is not released yet
    assert not ring.try_publish(b"b" * 1000)
    assert bytes(view) == b"a" * 1000
    del view


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="power of two"):
        NaiveRing(capacity=5000)
    with pytest.raises(ValueError, match="power of two"):
        NaiveRing(capacity=2048)
    r = NaiveRing(capacity=4096)
    try:
        with pytest.raises(ValueError, match="exceeds"):
            r.try_publish(bytes(r.max_payload + 1))
    finally:
        r.close()
        r.unlink()


def test_corrupt_length_is_refused(ring):
    ring.publish(b"hello")
    ring._lens[0] = 1 << 30  # a hostile producer
    with pytest.raises(ValueError, match="corrupt record length"):
        ring.read()


def _produce(ring: NaiveRing, seed: int, count: int) -> None:
    rng = random.Random(seed)
    for i in range(count):
        ring.publish(payload(i, rng.randrange(0, 300)), timeout=10)
    ring.close()


def test_two_processes_lossless_in_order():
    ring = NaiveRing(capacity=8192)
    count = 30000
    p = CTX.Process(target=_produce, args=(ring, 7, count))
    p.start()
    try:
        rng = random.Random(7)
        deadline = time.monotonic() + 30
        for i in range(count):
            want = payload(i, rng.randrange(0, 300))
            while (view := ring.read()) is None:
                assert time.monotonic() < deadline, f"stalled at record {i}"
            assert view == want, f"record {i} differs"
        del view
        p.join(10)
        assert p.exitcode == 0
        assert ring.read() is None
    finally:
        if p.is_alive():
            p.kill()
        ring.close()
        ring.unlink()


def test_percentiles_nearest_rank():
    s = list(range(1, 1001))
    got = percentiles(s, (50, 99, 99.9, 100))
    assert got == {"p50": 500, "p99": 990, "p99.9": 999, "p100": 1000}
    with pytest.raises(ValueError):
        percentiles([], (50,))


def test_interleaved_rotates_order():
    order = list(interleaved(3, ["a", "b", "c"]))
    assert [x for _, x in order] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
