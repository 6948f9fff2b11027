#!/usr/bin/env python3
"""Data beats per clock of the ring-mirror RTL on a long copy (default 1 MiB).

Runs tb_ring_mirror.test_throughput in a simulator: a ring of the given capacity is filled
with real records, one SYNC round copies it with a fixed read latency and no back-pressure,
and the engine's BUSY_CYCLES counter gives the cycles. Target (docs/design.md): >= 0.9,
with the replica CRC table kept (CRC_CONFIG.ENABLE); by default the same build also runs
without it, so the CRC unit's cost is a ratio of one run.

    python bench/rtl_throughput.py [--sim verilator] [--width 64] [--bytes 1048576]
                                   [--crc on|off|both]

The restore copy mode has its own bench, bench/rtl_restore_throughput.py. The test suite
runs neither case: a speed target is held here, not asserted in a test.
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sim", choices=rtl_sim.SIMULATORS, default="verilator")
    ap.add_argument("--width", type=int, default=64, help="AXI data width in bits")
    ap.add_argument("--bytes", type=int, default=1 << 20, help="ring capacity copied")
    ap.add_argument("--crc", choices=("on", "off", "both"), default="both",
                    help="keep the replica CRC table (CRC_CONFIG.ENABLE); both: two runs")
    ap.add_argument("--json", help="also write the result to this file")
    args = ap.parse_args()
    runs: dict[str, dict] = {}
    t0 = time.monotonic()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="rtl_bench_") as tmp:
        for mode in (["on", "off"] if args.crc == "both" else [args.crc]):
            out = Path(tmp) / f"result_{mode}.txt"
            lat = Path(tmp) / f"latency_{mode}.txt"
            rtl_sim.run(args.sim, Path(tmp) / "build",
                        {"DATA_WIDTH": args.width, "ADDR_WIDTH": 32, "MAX_BURST_LEN": 16,
                         "MAX_OUTSTANDING": 4, "FIFO_DEPTH": 64},
                        testcase=["test_throughput", "test_round_latency"],
                        extra_env={"RTL_THROUGHPUT_BYTES": str(args.bytes),
                                   "RTL_THROUGHPUT_OUT": str(out), "RTL_LATENCY_OUT": str(lat),
                                   "RTL_CRC": "1" if mode == "on" else "0"})
            copied, beats, busy, ratio = out.read_text().split()
            samples = sorted(int(x) for x in lat.read_text().split())
            runs[mode] = {"bytes": int(copied), "beats": int(beats), "busy_cycles": int(busy),
                          "beats_per_cycle": float(ratio),
                          "round_latency_cycles": {"median": samples[len(samples) // 2],
                                                   "min": samples[0], "max": samples[-1],
                                                   "samples": samples}}
    wall = time.monotonic() - t0
    head = runs["on"] if "on" in runs else runs["off"]
    ratio = head["beats_per_cycle"]
    result = {"figure": "rtl_mirror_beats_per_cycle", "simulator": args.sim,
              "data_width": args.width, "crc_table": "on" in runs, **head,
              "read_latency_cycles": 30, "target": 0.9, "load_average": round(load, 2),
              "wall_s": round(wall, 1)}
    if len(runs) == 2:
        result["without_crc_table"] = runs["off"]
        result["crc_cost_ratio"] = round(runs["on"]["beats_per_cycle"]
                                         / runs["off"]["beats_per_cycle"], 4)
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0 if float(ratio) >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
