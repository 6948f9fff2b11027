"""Publish market-data ticks into a ring.

    python examples/producer.py [RING] [--count N] [--rate PER_SECOND]

Creates RING (default ``md.ticks``, in /dev/shm, 1 MiB, overwrite mode) if it does not
exist, attaches to it otherwise, and publishes COUNT ticks at about RATE per second. A
tick is a fixed 24-byte struct: instrument id, price, size and the time it was made.
Read them with ``python examples/consumer.py`` (alongside, or afterwards) or with
``pyshm tail md.ticks``; remove the ring with ``pyshm rm md.ticks``.
"""

from __future__ import annotations

import argparse
import struct
import time

import pyshm

TICK = struct.Struct("<IdIq")  # instrument, price, size, created (ns since the epoch)
TICK_TYPE = 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ring", nargs="?", default="md.ticks")
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=100_000.0, help="ticks per second")
    args = parser.parse_args()

    # one call creates or attaches; exist_ok accepts a ring of the same capacity
    with pyshm.Ring(args.ring, create=True, capacity="1M", exist_ok=True) as ring:
        producer = ring.producer()  # one producer per ring: a second live one is refused
        start = time.perf_counter()
        sequence = None
        for i in range(args.count):
            tick = TICK.pack(i % 16, 100.0 + (i % 100) / 100, 1 + i % 10, time.time_ns())
            sequence = producer.publish(tick, type=TICK_TYPE)  # overwrite mode never waits
            # pace by the clock rather than sleeping per tick (a sleep costs ~60 us)
            ahead = (i + 1) / args.rate - (time.perf_counter() - start)
            if ahead > 0.001:
                time.sleep(ahead)
        producer.close()
        print(f"published {args.count} ticks to {ring.name}, last sequence {sequence}")


if __name__ == "__main__":
    main()
