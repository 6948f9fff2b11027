"""Replication benchmark of the CPU engine, with its baselines measured in the same run.

1. Bandwidth with a large backlog: a ring full of committed records (64 MiB and 256 MiB)
   is mirrored into a pre-faulted replica by 1 thread (poll thread only) and 2 threads
   (poll thread + 1 worker). The copy time is measured by the engine itself (one copy
   round: copy, seqlock check, record walk, publish). Baseline: numpy.copyto of the same
   size between the same two buffers, single thread. Target: ratio >= 0.9.
2. Lag while a producer publishes 64-byte records (48-byte payload) at 1 M records/s in
   batches, with the engine's lag histogram (time from the engine first seeing a new
   tail to publishing it). Target: p99 <= 20 us.

Every figure is the median of --repeats runs. Results: bench/results/replication.json.

    python bench/replication.py            # full run (about a minute)
    python bench/replication.py --quick    # small sizes, to check that it works
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import struct
import time
import uuid

import numpy as np

from pyshm import layout as L
from pyshm.engine import open_engine
from pyshm.replica import Replica
from pyshm.segment import Segment

MiB = 1 << 20


def make_full_ring(name: str, cap: int) -> Segment:
    """A ring with exactly one lap of committed max-size records (tail == capacity)."""
    parts = 8
    mr = L.default_max_record(cap, parts)
    params = L.RingParams(capacity=cap, max_record=mr, partition_count=parts)
    seg = Segment(name, create=True, size=params.segment_size, prefault=True)
    seg.buf[:0x80] = L.pack_static_header(params)
    enc = L.RecordEncoder(cap, parts, mr)
    payload = bytes(range(256)) * ((mr - L.RECORD_HEADER) // 256)
    data = seg.buf[L.OFF_DATA:L.OFF_DATA + cap]
    while True:
        before = (enc.position, enc.sequence)
        pieces = enc.place(payload)
        if enc.position > cap:
            enc.position, enc.sequence = before
            break
        for pos, raw in pieces:
            data[pos:pos + len(raw)] = raw
    if enc.position < cap:  # pad the last partition so that tail == capacity
        room = cap - enc.position
        data[enc.position:enc.position + room] = L.encode_padding(room)
    del data
    for off, v in ((L.OFF_TAIL_INTENT, cap), (L.OFF_TAIL, cap),
                   (L.OFF_NEXT_SEQUENCE, enc.sequence)):
        struct.pack_into("<Q", seg.buf, off, v)
    return seg


def reset_replica(rep: Replica, ring: Segment) -> None:
    for off in (L.OFF_TAIL, L.OFF_TAIL_INTENT, L.OFF_NEXT_SEQUENCE):
        struct.pack_into("<Q", rep.segment.buf, off, 0)
    struct.pack_into("<Q", ring.buf, L.OFF_MIRRORED, 0)


def bandwidth(cap: int, repeats: int) -> list[dict]:
    tag = uuid.uuid4().hex[:8]
    rname, pname = f"bench_bw_ring_{tag}", f"bench_bw_rep_{tag}"
    ring = make_full_ring(rname, cap)
    rep = Replica.create(pname, ring)
    out = []
    try:
        src = np.frombuffer(ring.mmap, np.uint8, cap, L.OFF_DATA)
        dst = np.frombuffer(rep.segment.mmap, np.uint8, cap, L.OFF_DATA)
        memcpy_gbs, eng_gbs = [], {1: [], 2: []}
        for _ in range(repeats):
            t0 = time.perf_counter_ns()
            np.copyto(dst, src)
            memcpy_gbs.append(cap / (time.perf_counter_ns() - t0))
            for nthreads in (1, 2):
                reset_replica(rep, ring)
                with open_engine("cpu", ring, rep, threads=nthreads - 1,
                                 wait="yield") as eng:
                    eng.start()
                    eng.sync(30)
                    x = eng.stats().extra
                    assert x["last_copy_bytes"] == cap, x
                    eng_gbs[nthreads].append(cap / x["last_copy_ns"])
        del src, dst
        base = statistics.median(memcpy_gbs)
        for n in (1, 2):
            med = statistics.median(eng_gbs[n])
            out.append({"capacity_mib": cap // MiB, "threads": n,
                        "engine_gb_s": round(med, 2), "numpy_copyto_gb_s": round(base, 2),
                        "ratio": round(med / base, 3), "repeats": repeats})
    finally:
        rep.close()
        rep.unlink()
        ring.close()
        ring.unlink()
    return out


def lag(rate: float, seconds: float, repeats: int) -> dict:
    from pyshm.ring import Ring

    runs = []
    for _ in range(repeats):
        tag = uuid.uuid4().hex[:8]
        ring = Ring(f"bench_lag_ring_{tag}", create=True, capacity=64 * MiB, prefault=True)
        rep = Replica.create(f"bench_lag_rep_{tag}", ring)
        try:
            prod = ring.producer()
            batch = 50
            recs = np.zeros((batch, 48), np.uint8)
            period = batch / rate
            with open_engine("cpu", ring, rep, wait="yield") as eng:
                eng.start()
                t_end = time.perf_counter() + seconds
                nxt = time.perf_counter()
                sent = 0
                while True:
                    now = time.perf_counter()
                    if now >= t_end:
                        break
                    if now < nxt:
                        continue
                    sent += prod.publish_batch(recs)
                    nxt += period
                elapsed = seconds
                eng.sync(5)
                st = eng.stats()
                runs.append({"achieved_rate": sent / elapsed, "p50_us": st.lag_p50_ns / 1e3,
                             "p99_us": st.lag_p99_ns / 1e3, "p999_us": st.lag_p999_ns / 1e3,
                             "max_us": st.lag_max_ns / 1e3, "samples": st.lag_samples,
                             "overruns": st.overruns, "utilisation": st.utilisation})
        finally:
            rep.close()
            rep.unlink()
            ring.close()
            ring.unlink()
    med = {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}
    med.update(record_bytes=64, target_rate=rate, seconds=seconds, repeats=repeats)
    return med


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                  "replication.json"))
    args = ap.parse_args()
    sizes = [4 * MiB] if args.quick else [64 * MiB, 256 * MiB]
    repeats = 1 if args.quick else args.repeats
    bw = [row for cap in sizes for row in bandwidth(cap, repeats)]
    for row in bw:
        print(f"bandwidth {row['capacity_mib']:>4} MiB {row['threads']} thr: "
              f"{row['engine_gb_s']:6.2f} GB/s vs copyto {row['numpy_copyto_gb_s']:6.2f} "
              f"GB/s  ratio {row['ratio']:.3f} (target >= 0.9)")
    lg = lag(1e6, 0.5 if args.quick else 3.0, 1 if args.quick else 3)
    print(f"lag at {lg['achieved_rate'] / 1e6:.2f} M rec/s: p50 {lg['p50_us']} us, "
          f"p99 {lg['p99_us']} us (target <= 20), p99.9 {lg['p999_us']} us, "
          f"max {lg['max_us']} us, overruns {lg['overruns']}")
    result = {"benchmark": "replication", "quick": args.quick,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform()},
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "bandwidth": bw, "lag": lg}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    out = args.out if not args.quick else args.out.replace(".json", "_quick.json")
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
