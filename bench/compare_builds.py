"""bench/ring.py against several commits' builds of pyshm, interleaved in one run.

A regression seen across sessions may be the code or the machine (another host, another
load). This answers it on one machine: each revision is built once (``git archive`` of
it, ``pip install --no-deps --target``), then every round runs one ``bench/ring.py``
measurement (this checkout's harness) per build, with ``PYTHONPATH`` pointing at that
build, in a rotated order; the medians of the rounds and the load average come out side
by side.

Usage::

    python bench/compare_builds.py 176e049 edbab76 HEAD --tests batch64
    python bench/compare_builds.py edbab76 HEAD --peers c-floor,pyshm-block --tests wake

The builds stay in ``--builds`` (a temporary directory by default) for the next run.
Figures go to ``--out`` (default bench/results/compare_builds.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(rev: str, builds: str) -> tuple[str, str]:
    """(short sha, install directory) of ``rev``, built unless it already is."""
    sha = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", rev], check=True,
                         capture_output=True, text=True).stdout.strip()
    dest = os.path.join(builds, sha)
    if os.path.exists(os.path.join(dest, ".built")):
        return sha, dest
    src = os.path.join(builds, f"{sha}-src")
    subprocess.run(["rm", "-rf", src, dest], check=True)
    os.makedirs(src)
    archive = subprocess.run(["git", "-C", ROOT, "archive", sha], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", src], input=archive, check=True)
    print(f"building {rev} ({sha}) ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    dest, src], check=True, capture_output=True)
    open(os.path.join(dest, ".built"), "w").close()
    return sha, dest


def figures(result: dict[str, Any]) -> dict[str, float]:
    """peer/test -> the test's headline figure (msgs/s, or p50 ns for latency and wake)."""
    out = {}
    for peer, tests in result.get("rounds", {}).items():
        for test, runs in tests.items():
            for r in runs:
                key = "msgs_per_s" if "msgs_per_s" in r else "p50"
                out[f"{peer}/{test}"] = float(r[key])
    return out


def fmt(key: str, value: float) -> str:
    return C.fmt_ns(value) if key.endswith(("/lat64", "/wake")) else C.fmt_rate(value)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="example: python bench/compare_builds.py 176e049 "
                                        "HEAD --tests batch64 --rounds 7")
    ap.add_argument("revs", nargs="+", help="git revisions to build and compare")
    ap.add_argument("--peers", default="pyshm", help="bench/ring.py --peers (default pyshm)")
    ap.add_argument("--tests", default="batch64", help="bench/ring.py --tests")
    ap.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    ap.add_argument("--seconds", type=float, default=0.6, help="per measurement")
    ap.add_argument("--builds", default=os.path.join(tempfile.gettempdir(),
                                                     f"pyshm-builds-{os.getuid()}"))
    ap.add_argument("--out", default=os.path.join(C.RESULTS_DIR, "compare_builds.json"))
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be positive")
    os.makedirs(args.builds, exist_ok=True)
    try:
        built = [build(rev, args.builds) for rev in args.revs]
    except subprocess.CalledProcessError as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr
        print(f"cannot build: {' '.join(map(str, e.cmd))}\n{(err or '')[-2000:]}",
              file=sys.stderr)
        return 2
    raw: dict[str, list[dict[str, Any]]] = {sha: [] for sha, _ in built}
    loads = []
    with tempfile.TemporaryDirectory() as tmp:
        for rnd, (sha, dest) in C.interleaved(args.rounds, built):
            out = os.path.join(tmp, f"{sha}-{rnd}.json")
            load = os.getloadavg()[0]
            loads.append(load)
            proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "ring.py"),
                                   "--peers", args.peers, "--tests", args.tests,
                                   "--rounds", "1", "--seconds", str(args.seconds),
                                   "--out", out],
                                  env=dict(os.environ, PYTHONPATH=dest),
                                  capture_output=True, text=True)
            if proc.returncode != 0 or not os.path.exists(out):
                print(f"round {rnd + 1} {sha}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            with open(out) as f:
                fig = figures(json.load(f))
            raw[sha].append({"round": rnd, "load": load, **fig})
            shown = ", ".join(f"{k} {fmt(k, v)}" for k, v in fig.items())
            print(f"round {rnd + 1}/{args.rounds}  {sha}  {shown}  (load {load:.2f})",
                  file=sys.stderr)
    keys = sorted({k for runs in raw.values() for r in runs for k in r
                   if k not in ("round", "load")})
    rows = []
    summary: dict[str, dict[str, float]] = {}
    for sha, runs in raw.items():
        summary[sha] = {k: C.median([r[k] for r in runs if k in r]) for k in keys
                        if any(k in r for r in runs)}
        rows.append([sha] + [fmt(k, summary[sha][k]) if k in summary[sha] else "-"
                             for k in keys])
    print(C.table(["build"] + keys, rows))
    print(f"medians of {args.rounds} interleaved rounds; load average (1 min) "
          f"{min(loads):.2f}-{max(loads):.2f} on {os.cpu_count()} CPUs")
    path = C.write_json(args.out, {
        "benchmark": "compare_builds",
        "config": {"revs": args.revs, "builds": [sha for sha, _ in built],
                   "peers": args.peers, "tests": args.tests, "rounds": args.rounds,
                   "seconds": args.seconds},
        "loadavg_samples": loads, "summary": summary, "rounds": raw,
        "time": time.time()})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
