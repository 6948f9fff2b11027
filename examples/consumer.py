"""Read the ticks of examples/producer.py, zero-copy, and say what was lost.

    python examples/consumer.py [RING] [--count N] [--start oldest|latest|SEQ] [--idle S]

Attaches to RING (default ``md.ticks``), reads from START until COUNT ticks arrived or
nothing arrived for IDLE seconds, and prints a summary: ticks read, records lost to
overruns (a slow consumer of an overwrite ring is lapped, and told so), and the mean age
of a tick when it was read.
"""

from __future__ import annotations

import argparse
import struct
import time

import pyshm

TICK = struct.Struct("<IdIq")  # as in examples/producer.py
TICK_TYPE = 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ring", nargs="?", default="md.ticks")
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--start", default="oldest")
    parser.add_argument("--idle", type=float, default=2.0, help="give up after S quiet seconds")
    args = parser.parse_args()
    start = int(args.start) if args.start.isdigit() else args.start

    with pyshm.Ring(args.ring) as ring:                   # attach: the ring must exist
        consumer = ring.consumer(start=start)           # a cursor of our own in the header
        read = 0
        overwritten = 0
        age_ns = 0
        volume = 0
        while read < args.count:
            # `sleep` waits cheaply; use "spin" on a dedicated core for the lowest latency
            msg = consumer.read(timeout=args.idle, wait="sleep")
            if msg is None:
                break                                   # nothing for --idle seconds
            if msg.type != TICK_TYPE:
                continue
            instrument, price, size, created = TICK.unpack_from(msg.data)
            # msg.data is a view into the ring: in overwrite mode the producer may reuse
            # those bytes, so confirm they were intact while we used them
            if not consumer.still_valid():
                overwritten += 1                        # lapped while we looked at it
                continue
            age_ns += time.time_ns() - created
            volume += size
            read += 1
        age_us = age_ns / max(read, 1) / 1e3
        age = f"{age_us:.1f} us" if age_us < 1000 else f"{age_us / 1e3:.1f} ms"
        print(f"read {read} ticks from {ring.name} (volume {volume}), "
              f"lost {consumer.lost + overwritten} to overruns, mean age {age}")
        consumer.close()


if __name__ == "__main__":
    main()
