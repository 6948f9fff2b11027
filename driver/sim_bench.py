"""Speed of the ``sim`` engine: simulated copy rate and simulated cycles per wall second.

    python -m pyshm.driver.sim_bench [--simulator icarus|verilator] [--capacity 65536]

Creates a ring and a replica in /dev/shm, pauses the engine, publishes a backlog just
under one capacity of large records, resumes and times the copy until ``sync`` returns.
Prints one line (and JSON with ``--json``). Run it from any directory but the source root.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from .. import layout as L
from ..engine import open_engine
from ..replica import Replica
from ..segment import Segment
from .sim import SimEngine


def publish_backlog(seg: Segment, params: L.RingParams, nbytes: int) -> int:
    """Records following the publish protocol of docs/design.md (single producer, no consumers)."""
    q = seg.buf[:L.HEADER_SIZE].cast("Q")
    data = seg.buf[L.OFF_DATA:L.OFF_DATA + params.capacity]
    enc = L.RecordEncoder(params.capacity, params.partition_count, params.max_record)
    payload = bytes(range(256)) * ((params.max_record - L.RECORD_HEADER) // 256)
    while enc.position + params.max_record < nbytes:
        pieces = enc.place(payload)
        q[L.OFF_TAIL_INTENT // 8] = enc.position
        for pos, raw in pieces:
            off = pos & (params.capacity - 1)
            data[off:off + len(raw)] = raw
        q[L.OFF_NEXT_SEQUENCE // 8] = enc.sequence
        q[L.OFF_TAIL // 8] = enc.position
    end = enc.position
    q.release()
    data.release()
    return end


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--simulator", default="icarus", choices=["icarus", "verilator"])
    ap.add_argument("--capacity", type=int, default=1 << 16)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    tag = f"{os.getpid()}_{time.monotonic_ns() % 1_000_000}"
    params = L.RingParams(capacity=args.capacity,
                          max_record=L.default_max_record(args.capacity),
                          partition_count=L.DEFAULT_PARTITIONS,
                          created_ns=time.time_ns(), creator_pid=os.getpid(),
                          name=f"simbench_{tag}").validate()
    ring = Segment(f"pyshm_simbench_{tag}", create=True, size=params.segment_size)
    rep = None
    try:
        ring.buf[:0x80] = L.pack_static_header(params)
        rep = Replica.create(f"pyshm_simbench_rep_{tag}", params)
        t0 = time.monotonic()
        with open_engine("sim", ring, rep, simulator=args.simulator,
                         startup_timeout=600) as eng:
            start_s = time.monotonic() - t0
            assert isinstance(eng, SimEngine) and eng.ip is not None
            ip = eng.ip
            eng.start()
            eng.pause(60)
            end = publish_backlog(ring, params, args.capacity - 4096)
            c0, b0 = eng.cycles(), ip.read64("BUSY_CYCLES")
            t1 = time.monotonic()
            eng.resume(60)
            eng.sync(3600)
            wall = time.monotonic() - t1
            c1, b1 = eng.cycles(), ip.read64("BUSY_CYCLES")
            data_bytes = ip.hw_config().data_bytes
        res = {"simulator": args.simulator, "startup_s": round(start_s, 2), "bytes": end,
               "wall_s": round(wall, 3), "bytes_per_s": round(end / wall),
               "cycles": c1 - c0, "cycles_per_s": round((c1 - c0) / wall),
               "beats_per_busy_cycle": round(end / data_bytes / max(1, b1 - b0), 3)}
        if args.json:
            print(json.dumps(res))
        else:
            print(f"{res['simulator']}: start {res['startup_s']} s; {end:,d} B in "
                  f"{res['wall_s']} s = {res['bytes_per_s'] / 1e3:.1f} kB/s simulated copy; "
                  f"{res['cycles']:,d} cycles = {res['cycles_per_s']:,d} cycles/s; "
                  f"{res['beats_per_busy_cycle']} beats per busy cycle")
    finally:
        if rep is not None:
            rep.close()
            rep.unlink()
        ring.close()
        ring.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
