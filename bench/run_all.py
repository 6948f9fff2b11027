"""Run every benchmark in bench/ and write one report: ``python bench/run_all.py [--quick]``.

A benchmark is a script in this directory with a ``__main__`` guard that writes its JSON
into ``bench/results/`` (see bench/_common.py); helpers (files starting with ``_``,
``naive_ring.py``, this file and ``report.py``) are not run. Each benchmark runs in its own
process, one after the other (never in parallel: they measure the machine), with a
timeout; its output goes to ``bench/results/logs/NAME.log``, and a failing or missing one
is reported, not fatal. At the end ``report.py`` turns every JSON in results/ into
``bench/results/REPORT.md`` with PNG plots, and ``run_all.json`` records what ran.

Examples::

    python bench/run_all.py --quick              # every benchmark, short rounds (~minutes)
    python bench/run_all.py --only ring,snapshot # a subset, full length
    python bench/run_all.py --report-only        # re-render REPORT.md from existing JSON
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
# run first in this order (cheap, most informative first); any other script runs after
ORDER = ["ring", "replication", "snapshot", "rtl_throughput"]
NOT_BENCHMARKS = {"run_all", "report", "naive_ring"}


def discover() -> list[str]:
    found = []
    for fn in sorted(os.listdir(HERE)):
        name, ext = os.path.splitext(fn)
        if ext != ".py" or name.startswith("_") or name in NOT_BENCHMARKS:
            continue
        try:
            with open(os.path.join(HERE, fn), encoding="utf-8") as f:
                if "__main__" not in f.read():
                    continue
        except OSError:
            continue
        found.append(name)
    return sorted(found, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def run_one(name: str, quick: bool, timeout: float, extra: list[str]) -> dict[str, object]:
    os.makedirs(os.path.join(RESULTS, "logs"), exist_ok=True)
    log_path = os.path.join(RESULTS, "logs", f"{name}.log")
    script = os.path.join(HERE, f"{name}.py")
    with open(script, encoding="utf-8") as f:
        source = f.read()
    cmd = [sys.executable, script]
    # options differ between scripts: pass --quick only to those that take it, and ask
    # for JSON explicitly from those that write it only on request
    if quick and '"--quick"' in source:
        cmd.append("--quick")
    if '"--json"' in source and '"--out"' not in source:
        cmd += ["--json", os.path.join(RESULTS, f"{name}.json")]
    cmd += extra
    t0 = time.monotonic()
    print(f"[{time.strftime('%H:%M:%S')}] {name}: running {' '.join(cmd[1:])} "
          f"(log {os.path.relpath(log_path)})", flush=True)
    with open(log_path, "w", encoding="utf-8") as log:
        try:
            # cwd=bench/: scripts import _common from their own directory
            proc = subprocess.run(cmd, cwd=HERE, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
            rc: int | None = proc.returncode
            status = "ok" if rc == 0 else f"exit status {rc}"
        except subprocess.TimeoutExpired:
            rc, status = None, f"timed out after {timeout:.0f} s"
    dt = time.monotonic() - t0
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {status} in {dt:.0f} s", flush=True)
    if rc not in (0, None):
        with open(log_path, encoding="utf-8", errors="replace") as f:
            tail = f.read()[-1500:]
        print("  last lines of the log:\n    " + tail.replace("\n", "\n    "), flush=True)
    # paths relative to the repository, so the results say nothing about this checkout
    command = [os.path.relpath(c, os.path.dirname(HERE)) if os.path.isabs(c) else c
               for c in cmd[1:]]
    return {"name": name, "command": command, "status": status, "returncode": rc,
            "seconds": round(dt, 1), "log": os.path.relpath(log_path, RESULTS)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("Examples::")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="pass --quick to every benchmark (short rounds, rough figures)")
    ap.add_argument("--only", help="comma-separated benchmark names (default: all found)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds per benchmark (default 900, quick 300)")
    ap.add_argument("--report-only", action="store_true",
                    help="do not run anything; rebuild REPORT.md from results/*.json")
    ap.add_argument("--list", action="store_true", help="list the benchmarks found and exit")
    args = ap.parse_args(argv)

    names = discover()
    if args.list:
        print("\n".join(names) or "no benchmarks found")
        return 0
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            ap.error(f"unknown benchmark(s) {', '.join(unknown)}; found: {', '.join(names)}")
        names = wanted
    timeout = args.timeout or (300.0 if args.quick else 900.0)
    runs = []
    t0 = time.monotonic()
    if not args.report_only:
        print(f"{len(names)} benchmark(s): {', '.join(names)}; one at a time"
              f"{' (quick)' if args.quick else ''}", flush=True)
        for i, name in enumerate(names, 1):
            print(f"--- {i}/{len(names)}", flush=True)
            runs.append(run_one(name, args.quick, timeout, []))
        os.makedirs(RESULTS, exist_ok=True)
        with open(os.path.join(RESULTS, "run_all.json"), "w", encoding="utf-8") as f:
            json.dump({"quick": args.quick, "started": time.time() - (time.monotonic() - t0),
                       "seconds": round(time.monotonic() - t0, 1), "runs": runs}, f, indent=2)

    sys.path.insert(0, HERE)
    import report  # noqa: E402  (bench/ is not a package)

    path = report.write_report(RESULTS)
    print(f"wrote {os.path.relpath(path)}")
    failed = [r for r in runs if r["status"] != "ok"]
    if failed:
        print(f"{len(failed)} benchmark(s) failed: "
              f"{', '.join(str(r['name']) for r in failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
