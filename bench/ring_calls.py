"""Per-call cost of the ring hot paths, in one process: pyshm against the naive ring.

No second process, no cache-line transfer: this isolates what one Python call of each
API costs (argument parsing, the C call, result construction), which is what the
end-to-end figures of bench/ring.py are made of on top of the cross-core floor. Both
rings are measured in the same run, interleaved, and the median over rounds is kept.

Measured, ns per call:

* ``publish64``      publish 64 bytes (a ``bytes`` object)
* ``publish64_mv``   publish 64 bytes given as a memoryview (what a pong sends back)
* ``read``           read one waiting record (and drop what it returned)
* ``read_data``      read one waiting record and take its payload view (pyshm: ``m.data``;
                     the naive ring returns the view itself)
* ``read_wait``      ``read(timeout=None)`` with a record waiting (pyshm; naive: ``read()``)
* ``read_copy``      read one record as bytes (pyshm ``read_copy``; naive ``read_bytes``)
* ``read_into``      copy one record into a bytearray (pyshm ``read_into``; naive: read,
                     then a slice assignment)
* ``read_empty``     read with nothing committed

Usage::

    python bench/ring_calls.py [--rounds 301] [--n 200]

bench/ring.py measures the same paths end to end across two processes.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from naive_ring import NaiveRing  # noqa: E402

CAP = 1 << 20


class Ends:
    """One peer's calls: publish, and the read variants measured."""

    def __init__(self, publish: Any, read: Any, read_data: Any, read_wait: Any,
                 read_copy: Any, read_into: Any, close: Callable[[], None]):
        self.publish, self.read, self.read_data, self.read_wait = \
            publish, read, read_data, read_wait
        self.read_copy, self.read_into, self.close = read_copy, read_into, close


def _pyshm_ends() -> Ends:
    import pyshm
    name = f"pyshm-calls-{os.getpid()}"
    ring = pyshm.Ring(name, create=True, capacity=CAP, lossless=True, prefault=True)
    prod = ring.producer()
    cons = ring.consumer(start="oldest", gating=True)
    read = cons.read
    buf = bytearray(256)

    def read_data() -> Any:
        m = read()
        return m.data if m is not None else None

    def close() -> None:
        prod.close()
        cons.close()
        ring.close()
        ring.unlink()
    return Ends(prod.publish, read, read_data, lambda: read(None), cons.read_copy,
                lambda: cons.read_into(buf), close)


def _naive_ends() -> Ends:
    ring = NaiveRing(capacity=CAP)
    read = ring.read
    buf = bytearray(256)

    def read_into() -> int | None:
        v = read()
        if v is None:
            return None
        n = len(v)
        buf[:n] = v
        return n

    def close() -> None:
        ring.close()
        ring.unlink()
    return Ends(ring.try_publish, read, read, read, ring.read_bytes, read_into, close)


def _round(e: Ends, n: int) -> dict[str, float]:
    """One timing of each operation over ``n`` calls (n records fit in the ring).

    ``n`` is small (a few hundred) on purpose: on a shared machine a timing that spans a
    scheduler tick is ruined, and short ones mostly are not; the median over many rounds
    throws the ruined ones away."""
    msg = bytes(range(64))
    mv = memoryview(bytearray(msg))
    pc = time.perf_counter_ns
    pub = e.publish
    out = {}
    t0 = pc()
    for _ in range(n):
        pub(msg)
    out["publish64"] = (pc() - t0) / n
    for key in ("read", "read_data", "read_wait", "read_copy", "read_into"):
        fn = getattr(e, key)
        t0 = pc()
        for _ in range(n):
            fn()
        out[key] = (pc() - t0) / n
        for _ in range(n):
            pub(msg)
    read = e.read
    while read() is not None:
        pass
    t0 = pc()
    for _ in range(n):
        read()
    out["read_empty"] = (pc() - t0) / n
    t0 = pc()
    for _ in range(n):
        pub(mv)
    out["publish64_mv"] = (pc() - t0) / n
    while read() is not None:
        pass
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=301)
    ap.add_argument("--n", type=int, default=200,
                    help="calls per timing (n * 80 bytes must fit in 1 MiB)")
    a = ap.parse_args(argv)
    if a.n * 80 * 2 > CAP:
        ap.error(f"--n {a.n}: twice that many 64-byte records must fit in the 1 MiB rings")
    peers = {"pyshm": _pyshm_ends(), "naive": _naive_ends()}
    res: dict[str, dict[str, list[float]]] = {p: {} for p in peers}
    gc.disable()
    try:
        for _ in range(a.rounds):
            for p, ends in peers.items():
                for k, v in _round(ends, a.n).items():
                    res[p].setdefault(k, []).append(v)
    finally:
        gc.enable()
        for ends in peers.values():
            ends.close()
    keys = list(res["pyshm"])
    print(f"{'ns/call (median of ' + str(a.rounds) + ')':22}" + "".join(f"{k:>13}" for k in keys))
    for p in peers:
        print(f"{p:22}" + "".join(f"{statistics.median(res[p][k]):13.0f}" for k in keys))
    print(f"{'pyshm / naive':22}" + "".join(
        f"{statistics.median(res['pyshm'][k]) / statistics.median(res['naive'][k]):13.2f}"
        for k in keys))
    print(f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
