#!/usr/bin/env python3
"""Data beats per clock of the ring-mirror IP's restore copy mode (a VERIFY_ONLY job and a
copy of 1 MiB in 64 KiB chunks, 30-cycle read latency): ``rtl_throughput.py --mode
restore`` under its own name, so ``python bench/run_all.py --only rtl_restore_throughput``
writes bench/results/rtl_restore_throughput.json. Target: >= 0.9 beats/cycle.

    python bench/rtl_restore_throughput.py [--sim verilator] [--width 64] [--chunk 65536]
"""

from __future__ import annotations

import sys

import rtl_throughput

if __name__ == "__main__":
    sys.argv[1:1] = ["--mode", "restore"]
    sys.exit(rtl_throughput.main())
