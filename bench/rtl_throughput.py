#!/usr/bin/env python3
"""Data beats per clock of the ring-mirror RTL on a long copy (default 1 MiB).

Runs tb_ring_mirror.test_throughput in a simulator: a ring of the given capacity is filled
with real records, one SYNC round copies it with a fixed read latency and no back-pressure,
and the engine's BUSY_CYCLES counter gives the cycles. Target (docs/design.md): >= 0.9.

    python bench/rtl_throughput.py [--sim verilator] [--width 64] [--bytes 1048576]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "rtl"))
import rtl_sim  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sim", choices=rtl_sim.SIMULATORS, default="verilator")
    ap.add_argument("--width", type=int, default=64, help="AXI data width in bits")
    ap.add_argument("--bytes", type=int, default=1 << 20, help="ring capacity copied")
    ap.add_argument("--json", help="also write the result to this file")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="rtl_bench_") as tmp:
        out = Path(tmp) / "result.txt"
        lat = Path(tmp) / "latency.txt"
        t0 = time.monotonic()
        rtl_sim.run(args.sim, Path(tmp) / "build",
                    {"DATA_WIDTH": args.width, "ADDR_WIDTH": 32, "MAX_BURST_LEN": 16,
                     "MAX_OUTSTANDING": 4, "FIFO_DEPTH": 64},
                    testcase=["test_throughput", "test_round_latency"],
                    extra_env={"RTL_THROUGHPUT_BYTES": str(args.bytes),
                               "RTL_THROUGHPUT_OUT": str(out), "RTL_LATENCY_OUT": str(lat)})
        wall = time.monotonic() - t0
        copied, beats, busy, ratio = out.read_text().split()
        lat_samples = sorted(int(x) for x in lat.read_text().split())
    result = {"figure": "rtl_mirror_beats_per_cycle", "simulator": args.sim,
              "data_width": args.width, "bytes": int(copied), "beats": int(beats),
              "busy_cycles": int(busy), "beats_per_cycle": float(ratio),
              "read_latency_cycles": 30, "target": 0.9,
              "round_latency_cycles": {"median": lat_samples[len(lat_samples) // 2],
                                       "min": lat_samples[0], "max": lat_samples[-1],
                                       "samples": lat_samples},
              "wall_s": round(wall, 1)}
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0 if float(ratio) >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
