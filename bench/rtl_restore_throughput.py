#!/usr/bin/env python3
"""Data beats per clock of the ring-mirror IP's restore copy mode (RTL simulation).

Two chunk sizes in one build and one run: 1 MiB in 64 KiB chunks and 256 KiB in 4 KiB
chunks (the smallest an image allows), each as a VERIFY_ONLY job and as a copy
(tb_ring_mirror.test_restore_throughput: 30-cycle read latency, no back-pressure, cycles
from START to the job's end as software sees it). Target: >= 0.9 beats/cycle for every
job (and 64 KiB chunks >= 0.98).
``python bench/run_all.py --only rtl_restore_throughput`` writes
bench/results/rtl_restore_throughput.json.

    python bench/rtl_restore_throughput.py [--sim verilator] [--width 64] [--json FILE]
    python bench/rtl_restore_throughput.py --job 262144:4096     # one job (bytes:chunk)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "rtl"))
import rtl_sim  # noqa: E402

JOBS = ("1048576:65536", "262144:4096")
TARGET = 0.9


def job_spec(text: str) -> tuple[int, int]:
    try:
        size, chunk = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected BYTES:CHUNK, e.g. 262144:4096") from None
    if size < 8 or chunk < 8 or chunk % 8:
        raise argparse.ArgumentTypeError(f"{text!r}: bytes >= 8 and a chunk a multiple of 8")
    return size, chunk


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="example: python bench/rtl_restore_throughput.py --job 262144:4096")
    ap.add_argument("--sim", choices=rtl_sim.SIMULATORS, default="verilator")
    ap.add_argument("--width", type=int, default=64, help="AXI data width in bits")
    ap.add_argument("--job", type=job_spec, action="append",
                    help=f"BYTES:CHUNK of a job (repeatable; default {' and '.join(JOBS)})")
    ap.add_argument("--json", help="also write the result to this file")
    args = ap.parse_args()
    jobs = args.job or [job_spec(j) for j in JOBS]
    t0 = time.monotonic()
    load = os.getloadavg()[0]
    runs = []
    params = {"DATA_WIDTH": args.width, "ADDR_WIDTH": 32, "MAX_BURST_LEN": 16,
              "MAX_OUTSTANDING": 4, "FIFO_DEPTH": 64}
    with tempfile.TemporaryDirectory(prefix="rtl_bench_") as tmp:
        out = Path(tmp) / "restore.txt"
        for size, chunk in jobs:
            rtl_sim.run(args.sim, Path(tmp) / "build", params,
                        testcase=["test_restore_throughput"],
                        extra_env={"RTL_THROUGHPUT_BYTES": str(size),
                                   "RTL_RESTORE_CHUNK": str(chunk),
                                   "RTL_RESTORE_OUT": str(out)})
            v = out.read_text().split()
            run = {"bytes": size, "chunk": chunk}
            for i, name in enumerate(("verify", "copy")):
                run[name] = {"beats": int(v[3 * i]), "cycles": int(v[3 * i + 1]),
                             "beats_per_cycle": float(v[3 * i + 2])}
            runs.append(run)
    result = {"figure": "rtl_restore_beats_per_cycle", "simulator": args.sim,
              "data_width": args.width, "runs": runs, "read_latency_cycles": 30,
              "target": TARGET, "load_average": round(load, 2),
              "wall_s": round(time.monotonic() - t0, 1)}
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    worst = min(r[m]["beats_per_cycle"] for r in runs for m in ("verify", "copy"))
    return 0 if worst >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
