"""Per-call cost of the ring hot paths, in one process: pyshm against the naive ring.

No second process, no cache-line transfer: this isolates what one Python call of each
API costs (argument parsing, the C call, result construction), which is what the
end-to-end figures of bench/ring.py are made of on top of the cross-core floor. Both
rings are measured in the same run, interleaved, and the median over rounds is kept.

Measured, ns per call:

* ``publish64``      publish 64 bytes (a ``bytes`` object)
* ``publish64_mv``   publish 64 bytes given as a memoryview (what a pong sends back)
* ``read``           read one waiting record (and drop the returned view)
* ``read_empty``     read with nothing committed

Usage::

    python bench/ring_calls.py [--rounds 301] [--n 200]
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


def _pyshm_ends() -> tuple[Any, Any, Any, Callable[[], None]]:
    import pyshm
    name = f"pyshm-calls-{os.getpid()}"
    ring = pyshm.Ring(name, create=True, capacity=CAP, lossless=True, prefault=True)
    prod = ring.producer()
    cons = ring.consumer(start="oldest", gating=True)

    def close() -> None:
        prod.close()
        cons.close()
        ring.close()
        ring.unlink()
    return prod.publish, (lambda d: prod.publish(d) >= 0), cons.read, close


def _naive_ends() -> tuple[Any, Any, Any, Callable[[], None]]:
    ring = NaiveRing(capacity=CAP)

    def close() -> None:
        ring.close()
        ring.unlink()
    return ring.try_publish, ring.try_publish, ring.read, close


def _round(pub: Any, read: Any, n: int) -> dict[str, float]:
    """One timing of each operation over ``n`` calls (n records fit in the ring).

    ``n`` is small (a few hundred) on purpose: on a shared machine a timing that spans a
    scheduler tick is ruined, and short ones mostly are not; the median over many rounds
    throws the ruined ones away."""
    msg = bytes(range(64))
    mv = memoryview(bytearray(msg))
    pc = time.perf_counter_ns
    out = {}
    t0 = pc()
    for _ in range(n):
        pub(msg)
    out["publish64"] = (pc() - t0) / n
    t0 = pc()
    for _ in range(n):
        read()
    out["read"] = (pc() - t0) / n
    t0 = pc()
    for _ in range(n):
        read()
    out["read_empty"] = (pc() - t0) / n
    t0 = pc()
    for _ in range(n):
        pub(mv)
    out["publish64_mv"] = (pc() - t0) / n
    for _ in range(n):
        read()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=301)
    ap.add_argument("--n", type=int, default=200,
                    help="calls per timing (n * 80 bytes must fit in 1 MiB)")
    a = ap.parse_args(argv)
    if a.n * 80 > CAP:
        ap.error(f"--n {a.n}: that many 64-byte records do not fit in the 1 MiB rings")
    peers = {"pyshm": _pyshm_ends(), "naive": _naive_ends()}
    res: dict[str, dict[str, list[float]]] = {p: {} for p in peers}
    gc.disable()
    try:
        for _ in range(a.rounds):
            for p, (pub, _ok, read, _c) in peers.items():
                for k, v in _round(pub, read, a.n).items():
                    res[p].setdefault(k, []).append(v)
    finally:
        gc.enable()
        for *_, close in peers.values():
            close()
    keys = list(res["pyshm"])
    print(f"{'ns/call (median of ' + str(a.rounds) + ')':28}" + "".join(f"{k:>14}" for k in keys))
    for p in peers:
        print(f"{p:28}" + "".join(f"{statistics.median(res[p][k]):14.0f}" for k in keys))
    print(f"{'pyshm / naive':28}" + "".join(
        f"{statistics.median(res['pyshm'][k]) / statistics.median(res['naive'][k]):14.2f}"
        for k in keys))
    print(f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
