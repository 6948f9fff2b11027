"""Replication benchmark of the CPU engine, with its baselines measured in the same run.

1. Bandwidth with a large backlog: a ring full of committed records (64 MiB and 256 MiB)
   is mirrored into a pre-faulted replica by 1 thread (poll thread only) and 2 threads
   (poll thread + 1 worker), into a replica WITH a CRC table (the default: the fused
   copy+CRC loop keeps the table) and one without. The copy time is measured by the
   engine itself (one copy round: copy, seqlock check, record walk, publish). Baseline:
   numpy.copyto of the same size between the same two buffers, single thread.
   Target: ratio (with CRC) >= 0.9.
2. End-to-end lag, the headline: from the producer's commit of a record to the record
   being readable in the replica, sampled by the producer's lag probes (docs/design.md,
   "End-to-end lag"), while a producer in its own process publishes 64-byte records
   (48-byte payload) one by one, paced at 1 M and 100 k records/s, for each engine wait
   strategy (sleep is the default). Target: p99 <= 20 us at 1 M records/s. Each row also
   says where a tail comes from: the share of samples that waited through an engine
   sleep, the engine's poll-loop stalls (descheduled), involuntary context switches of
   the engine's poll thread and of the producer, and hypervisor steal time.

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
    """One copy round of a full ring, timed by the engine, into a replica with a CRC table
    (the fused copy+CRC loop) and into one without (plain memcpy), 1 and 2 threads, and
    numpy.copyto of the same bytes between the same buffers: interleaved, medians."""
    tag = uuid.uuid4().hex[:8]
    rname = f"bench_bw_ring_{tag}"
    ring = make_full_ring(rname, cap)
    reps = {"crc": Replica.create(f"bench_bw_rep_{tag}", ring),
            "nocrc": Replica.create(f"bench_bw_rep_{tag}_plain", ring, crc_table=False)}
    out = []
    try:
        src = np.frombuffer(ring.mmap, np.uint8, cap, L.OFF_DATA)
        dst = np.frombuffer(reps["nocrc"].segment.mmap, np.uint8, cap, L.OFF_DATA)
        memcpy_gbs: list[float] = []
        eng_gbs: dict[tuple[str, int], list[float]] = {}
        for _ in range(repeats):
            t0 = time.perf_counter_ns()
            np.copyto(dst, src)
            memcpy_gbs.append(cap / (time.perf_counter_ns() - t0))
            for kind, rep in reps.items():
                for nthreads in (1, 2):
                    reset_replica(rep, ring)
                    with open_engine("cpu", ring, rep, threads=nthreads - 1,
                                     wait="yield") as eng:
                        eng.start()
                        eng.sync(30)
                        x = eng.stats().extra
                        assert x["last_copy_bytes"] == cap, x
                        assert x["crc_table"] == (kind == "crc")
                        eng_gbs.setdefault((kind, nthreads), []).append(
                            cap / x["last_copy_ns"])
        del src, dst
        base = statistics.median(memcpy_gbs)
        for n in (1, 2):
            crc = statistics.median(eng_gbs[("crc", n)])
            plain = statistics.median(eng_gbs[("nocrc", n)])
            out.append({"capacity_mib": cap // MiB, "threads": n,
                        "engine_gb_s": round(crc, 2), "engine_no_crc_gb_s": round(plain, 2),
                        "numpy_copyto_gb_s": round(base, 2), "ratio": round(crc / base, 3),
                        "ratio_no_crc": round(plain / base, 3), "crc": True,
                        "repeats": repeats, "load": os.getloadavg()[0]})
    finally:
        for rep in reps.values():
            rep.close()
            rep.unlink()
        ring.close()
        ring.unlink()
    return out


def producer_main(name: str, rate: float, seconds: float) -> None:
    """Child: publish 64-byte records (48-byte payload) one by one, paced at ``rate``; a
    stall does not turn into a burst (missed slots are skipped). Prints JSON."""
    import resource

    from pyshm.ring import Ring

    ring = Ring(name)
    p = ring.producer()
    pay = b"\x5a" * 48
    period = 1.0 / rate
    clock = time.perf_counter
    nxt = clock()
    end = nxt + seconds
    sent = 0
    while True:
        now = clock()
        if now >= end:
            break
        if now < nxt:
            continue
        p.publish(pay)
        sent += 1
        nxt += period
        if now - nxt > 10 * period:
            nxt = now
    p.close()
    ring.close()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"sent": sent, "seconds": seconds, "involuntary_switches": ru.ru_nivcsw}))


def _ctx_switches(tid: int) -> int:
    try:
        with open(f"/proc/self/task/{tid}/status") as f:
            for line in f:
                if line.startswith("nonvoluntary_ctxt_switches:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _steal_ticks() -> int:
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return int(fields[8]) if len(fields) > 8 else 0


def _engine_options(variant: str) -> dict:
    """'sleep', 'spin', ... or 'spin+fifo': the wait strategy, and with '+fifo' the poll
    thread at SCHED_FIFO priority 10 (ordinary work can no longer preempt it)."""
    wait, _, rt = variant.partition("+")
    return {"wait": wait, **({"poll_priority": 10} if rt == "fifo" else {})}


def lag_run(rate: float, seconds: float, wait: str) -> dict:
    """End-to-end lag (the producer's probes) with a paced producer in its own process
    and the CPU engine in this one, plus what explains the tail: samples that waited
    through an engine sleep, poll-loop stalls (engine descheduled), involuntary context
    switches of the producer and of the engine's poll thread, and hypervisor steal."""
    import subprocess
    import sys

    from pyshm.ring import Ring

    tag = uuid.uuid4().hex[:8]
    ring = Ring(f"bench_lag_ring_{tag}", create=True, capacity=64 * MiB, prefault=True)
    rep = Replica.create(f"bench_lag_rep_{tag}", ring)
    try:
        with open_engine("cpu", ring, rep, **_engine_options(wait)) as eng:
            eng.start()
            eng.sync(5)
            deadline = time.monotonic() + 5
            while not eng.thread_ids()[0] and time.monotonic() < deadline:  # type: ignore[attr-defined]
                time.sleep(0.001)  # the poll thread records its tid when it starts
            tid = eng.thread_ids()[0]  # type: ignore[attr-defined]
            cs0, steal0 = _ctx_switches(tid), _steal_ticks()
            x0 = eng.stats().extra
            child = subprocess.run([sys.executable, os.path.abspath(__file__), "--producer",
                                    ring.segment.name, str(rate), str(seconds)],
                                   capture_output=True, text=True, timeout=seconds + 60,
                                   check=True)
            eng.sync(5)
            cs1, steal1 = _ctx_switches(tid), _steal_ticks()
            st = eng.stats()
        prod = json.loads(child.stdout)
        x = st.extra
        return {"achieved_rate": prod["sent"] / seconds,
                "p50_us": st.e2e_lag_p50_ns / 1e3, "p99_us": st.e2e_lag_p99_ns / 1e3,
                "p999_us": st.e2e_lag_p999_ns / 1e3, "max_us": st.e2e_lag_max_ns / 1e3,
                "samples": st.e2e_lag_samples,
                "after_sleep_share": x["e2e_after_sleep"] / max(1, st.e2e_lag_samples),
                "poll_stalls": x["poll_stalls"] - x0["poll_stalls"],
                "poll_stall_ms": (x["poll_stall_ns"] - x0["poll_stall_ns"]) / 1e6,
                "engine_involuntary_switches": cs1 - cs0,
                "producer_involuntary_switches": prod["involuntary_switches"],
                "steal_ticks": steal1 - steal0,
                "copy_lag_p99_us": st.lag_p99_ns / 1e3, "overruns": st.overruns,
                "utilisation": st.utilisation, "load": os.getloadavg()[0]}
    finally:
        rep.close()
        rep.unlink()
        ring.close()
        ring.unlink()


def lag(rates: list[float], waits: list[str], seconds: float, repeats: int) -> dict:
    """Medians over ``repeats`` interleaved rounds of every (rate, wait) pair."""
    runs: dict[str, list[dict]] = {}
    for _ in range(repeats):
        for rate in rates:
            for wait in waits:
                key = f"{rate / 1e6:g}M_{wait}" if rate >= 1e6 else f"{rate / 1e3:g}k_{wait}"
                runs.setdefault(key, []).append(lag_run(rate, seconds, wait))
    out = {}
    for key, rs in runs.items():
        med = {k: round(statistics.median(r[k] for r in rs), 3) for k in rs[0]}
        med.update(record_bytes=64, seconds=seconds, repeats=len(rs))
        out[key] = med
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                  "replication.json"))
    ap.add_argument("--producer", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--part", choices=["all", "bandwidth", "lag"], default="all",
                    help="run only one half (the JSON then holds only that half)")
    ap.add_argument("--waits", default=None,
                    help="engine variants for the lag runs, comma separated (default "
                         "sleep,yield,block,spin,spin+fifo; '+fifo' = poll thread "
                         "SCHED_FIFO)")
    args = ap.parse_args()
    if args.producer:
        producer_main(args.producer[0], float(args.producer[1]), float(args.producer[2]))
        return
    sizes = [4 * MiB] if args.quick else [64 * MiB, 256 * MiB]
    repeats = 1 if args.quick else args.repeats
    bw = [row for cap in sizes for row in bandwidth(cap, repeats)] \
        if args.part in ("all", "bandwidth") else []
    for row in bw:
        print(f"bandwidth {row['capacity_mib']:>4} MiB {row['threads']} thr: with CRC "
              f"{row['engine_gb_s']:6.2f} GB/s, without {row['engine_no_crc_gb_s']:6.2f} "
              f"GB/s vs copyto {row['numpy_copyto_gb_s']:6.2f} GB/s  ratio with CRC "
              f"{row['ratio']:.3f} (target >= 0.9), without {row['ratio_no_crc']:.3f}; "
              f"load {row['load']:.2f}")
    waits = args.waits.split(",") if args.waits else \
        ["sleep", "spin"] if args.quick else ["sleep", "yield", "block", "spin", "spin+fifo"]
    lg = lag([1e6, 1e5], waits, 0.5 if args.quick else 3.0, 1 if args.quick else 3) \
        if args.part in ("all", "lag") else {}
    for key, r in lg.items():
        print(f"end-to-end lag {key:>9}: {r['achieved_rate'] / 1e6:.2f} M rec/s  p50 "
              f"{r['p50_us']} us  p99 {r['p99_us']} us (target <= 20 at 1 M/s)  p99.9 "
              f"{r['p999_us']} us  max {r['max_us']} us  | waited through engine sleep "
              f"{r['after_sleep_share']:.0%}, engine stalls {r['poll_stalls']} "
              f"({r['poll_stall_ms']} ms), involuntary switches engine "
              f"{r['engine_involuntary_switches']} producer "
              f"{r['producer_involuntary_switches']}, steal {r['steal_ticks']} ticks, "
              f"load {r['load']}")
    result = {"benchmark": "replication", "quick": args.quick,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform()},
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "load_avg": os.getloadavg(), "bandwidth": bw, "lag": lg}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    out = args.out if not args.quick else args.out.replace(".json", "_quick.json")
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
