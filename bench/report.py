"""Turn the JSON results in bench/results/ into REPORT.md with PNG plots.

``python bench/report.py [RESULTS_DIR]`` (run_all.py calls it at the end).

Each benchmark writes its own JSON (bench/_common.write_json): ``benchmark``, ``machine``,
``config``, ``summary`` and, where the issue sets a target, ``targets`` as a list of
``{target, measured, value, ok}``. The report does not depend on one script's exact
keys: it reads the numeric leaves of ``summary`` and recognises figures by their names:

* ``..._p50_ns``, ``...p99.9_ns`` (any ``pNN``): percentiles -> one percentile-curve plot
  per metric, one line per peer/variant (x axis: 50, 90, 99, 99.9 ... evenly spaced);
* ``hist`` / ``histogram`` objects ``{edges|bins, counts}``: latency histograms;
* ``..._bytes_per_s`` / ``..._gb_per_s``: bandwidth bars (memcpy baselines included, so
  replication is drawn against memcpy of the same size);
* ``..._msgs_per_s``: throughput bars, on a log scale (peers differ by orders of
  magnitude).

Percentiles come in two spellings: fused with a metric (``pyshm.lat64_p99_ns``: line
``pyshm`` of the family ``lat64``) or as keys of their own (``latency.idle.p99_ns``: line
``idle`` of the family ``latency``), so that variants measured together (idle and
snapshotting) share one plot.

Tables show every figure, so nothing a benchmark measured is hidden; a long list of rows
(a soak's per-second samples) is summarised (min, median, max, last) and drawn over time
instead of printed. When a benchmark has a full run and a ``--quick`` one, the report uses
the full run (and says the quick one was left out), so a smoke run never replaces or
duplicates the real figures.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import sys
import time
from typing import Any

PCT_RE = re.compile(r"^(?P<head>.*?)(?P<sep>^|[._])(?:p(?P<q>\d+(?:\.\d+)?)|(?P<max>max))"
                    r"(?P<unit>_ns|_us)?$")
LONG_TABLE = 20  # rows beyond which a list of rows is summarised rather than printed
BW_RE = re.compile(r"(bytes_per_s|gb_per_s|gb_s|gbps)$", re.IGNORECASE)
# fields that name a row of a results table rather than measure something
IDENT_KEYS = ("peer", "engine", "name", "size", "capacity_mib", "capacity", "threads",
              "compression", "width", "sim", "mode")
MSGS_RE = re.compile(r"msgs_per_s|records_per_s", re.IGNORECASE)
SKIP_FILES = {"run_all.json"}


def load_results(results_dir: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
        if os.path.basename(path) in SKIP_FILES:
            continue
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError) as exc:
            print(f"report: skipping {path}: {exc}", file=sys.stderr)
            continue
        if isinstance(doc, dict):
            name = str(doc.get("benchmark") or doc.get("bench")
                       or os.path.splitext(os.path.basename(path))[0])
            doc.setdefault("_file", os.path.basename(path))
            out.append((name, doc))
    return choose_runs(out)


def _is_quick(doc: dict[str, Any]) -> bool:
    args = doc.get("args") if isinstance(doc.get("args"), dict) else {}
    return bool(doc.get("quick") or args.get("quick") or
                str(doc.get("_file", "")).endswith("_quick.json"))


def choose_runs(docs: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """One document per benchmark: a full run rather than a --quick one, the newest of
    several; the ones left out are named in the kept document's ``_left_out``."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for name, doc in docs:
        by_name.setdefault(name, []).append(doc)
    out = []
    for name, group in by_name.items():
        ranked = sorted(group, key=lambda d: (not _is_quick(d), str(d.get("time") or
                                                                     d.get("when") or "")))
        keep = ranked[-1]
        keep["_left_out"] = [str(d.get("_file")) + (" (--quick)" if _is_quick(d) else "")
                             for d in ranked[:-1]]
        out.append((name, keep))
    return out


def _ident(row: dict[str, Any], index: int) -> str:
    parts = [f"{k}={row[k]}" for k in IDENT_KEYS if k in row and not isinstance(row[k], dict)]
    return ",".join(parts) if parts else str(index)


def leaves(obj: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of nested dicts, keyed by dotted path; a list of dicts (a table of
    runs) is descended with each row named by its identifying fields: ``bw[threads=2]``."""
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            p = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, bool) or (k in IDENT_KEYS and not isinstance(v, (dict, list))):
                continue
            if isinstance(v, (int, float)) and math.isfinite(v):
                out[p] = float(v)
            elif isinstance(v, (dict, list)):
                out.update(leaves(v, p))
    elif isinstance(obj, list):
        for i, row in enumerate(obj):
            if isinstance(row, dict):
                out.update(leaves(row, f"{prefix}[{_ident(row, i)}]"))
    return out


def fmt(key: str, v: float) -> str:
    k = key.lower()
    if k.endswith("_ns") or k.endswith(".ns"):
        if v >= 1e6:
            return f"{v / 1e6:.2f} ms"
        return f"{v / 1e3:.2f} us" if v >= 1e3 else f"{v:.0f} ns"
    if k.endswith("_us"):
        return f"{v / 1e3:.2f} ms" if v >= 1e3 else f"{v:.2f} us"
    if "bytes_per_s" in k:
        return f"{v / 1e9:.2f} GB/s"
    if k.endswith("gb_s") or k.endswith("gb_per_s") or k.endswith("gbps"):
        return f"{v:.2f} GB/s"
    if "per_s" in k:
        return f"{v / 1e6:.2f} M/s" if v >= 1e6 else f"{v / 1e3:.1f} k/s"
    if k.endswith("_s") or k.endswith("seconds"):
        return f"{v:.3f} s" if v < 100 else f"{v:.0f} s"
    if k.endswith("bytes"):
        return f"{v / (1 << 20):.1f} MiB" if v >= 1 << 20 else f"{v:.0f} B"
    if abs(v) >= 1e5 or v == int(v):
        return f"{v:,.0f}"
    return f"{v:.3g}"


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(out)


def summary_table(summary: Any) -> str:
    """A dict of dicts becomes metric x variant; anything else a metric/value list."""
    if isinstance(summary, dict) and summary and all(isinstance(v, dict)
                                                     for v in summary.values()):
        cols = list(summary)
        metrics: list[str] = []
        per_col = {c: leaves(summary[c]) for c in cols}
        for c in cols:
            metrics += [m for m in per_col[c] if m not in metrics]
        rows = [[m] + [fmt(m, per_col[c][m]) if m in per_col[c] else "-" for c in cols]
                for m in metrics]
        return md_table(["figure"] + cols, rows)
    if isinstance(summary, list) and len(summary) > LONG_TABLE and \
            all(isinstance(v, dict) for v in summary):
        return long_table_summary(summary)
    if isinstance(summary, list) and summary and all(isinstance(v, dict) for v in summary):
        keys: list[str] = []
        for row in summary:
            keys += [k for k in row if k not in keys]
        return md_table(keys, [[fmt(k, r[k]) if isinstance(r.get(k), (int, float))
                                and not isinstance(r.get(k), bool) else str(r.get(k, "-"))
                                for k in keys] for r in summary])
    flat = leaves(summary) if isinstance(summary, dict) else {}
    if not flat:
        return "_(no numeric summary)_"
    return md_table(["figure", "value"], [[k, fmt(k, v)] for k, v in flat.items()])


def long_table_summary(rows: list[dict[str, Any]]) -> str:
    """Per numeric column (nested ones dotted): rows, min, median, max and last value."""
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key, value in leaves(row).items():
            columns.setdefault(key, []).append(value)
    out = []
    for key, values in columns.items():
        s = sorted(values)
        out.append([key, str(len(values)), fmt(key, s[0]), fmt(key, s[len(s) // 2]),
                    fmt(key, s[-1]), fmt(key, values[-1])])
    return (f"{len(rows)} rows, summarised:\n\n" +
            md_table(["column", "rows", "min", "median", "max", "last"], out))


# ----------------------------------------------------------------------------------
# Plots


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _quantile(m: re.Match[str]) -> float:
    if m.group("max"):
        return 100.0
    q = m.group("q")
    if "." not in q and len(q) > 2 and q.startswith("99"):
        return float(f"99.{q[2:]}")  # p999 -> 99.9, p9999 -> 99.99
    return float(q)


def percentile_groups(flat: dict[str, float]) -> dict[str, dict[str, dict[float, float]]]:
    """family -> line label -> {percentile: ns}, from keys like ``pyshm.lat64_p99_ns``,
    ``lag.p999_us`` or ``lag.max_us`` (max is drawn as the 100th percentile)."""
    fam: dict[str, dict[str, dict[float, float]]] = {}
    for path, v in flat.items():
        m = PCT_RE.match(path)  # on the whole path: keys such as "p99.9" contain dots
        if not m or not (m.group("unit") or "lat" in path.lower()):
            continue
        q = _quantile(m)
        if not 0 < q <= 100:
            continue
        head = m.group("head")
        if m.group("sep") == "_":
            # "pyshm.lat64_p99_ns": the metric is fused with the percentile, the line is
            # the component before it
            label, _, metric = head.rpartition(".")
            label = label or metric
        else:
            # "latency.idle.p99_ns" or "lag.p999_us": the percentile is a key of its own;
            # its parent names the line and the grandparent the family, so variants
            # measured together land on one plot
            parent, _, label = head.rpartition(".")
            metric = parent.rpartition(".")[2] or label
        metric = metric or "latency"
        label = label or metric
        ns = v * 1e3 if m.group("unit") == "_us" else v
        fam.setdefault(metric, {}).setdefault(label, {})[q] = ns
    return {k: {lbl: pts for lbl, pts in lines.items() if len(pts) >= 2}
            for k, lines in fam.items() if any(len(p) >= 2 for p in lines.values())}


def _nines(q: float) -> float:
    return -math.log10(max(1e-9, 1 - q / 100))


def plot_percentiles(name: str, metric: str, lines: dict[str, dict[float, float]],
                     out_dir: str) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ticks: set[float] = set()
    for label, pts in sorted(lines.items()):
        qs = sorted(pts)
        ticks.update(qs)
        ax.plot([_nines(q) for q in qs], [pts[q] / 1e3 for q in qs], marker="o",
                label=label, linewidth=2 if "pyshm" in label else 1.2)
    ax.set_xticks([_nines(q) for q in sorted(ticks)])
    ax.set_xticklabels(["max" if q == 100 else f"p{q:g}" for q in sorted(ticks)])
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(plt.matplotlib.ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(plt.matplotlib.ticker.FormatStrFormatter("%g"))
    ax.set_ylabel("microseconds (log)")
    ax.set_title(f"{name}: {metric} percentiles")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    path = os.path.join(out_dir, f"{name}_{_safe(metric)}_percentiles.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def find_histograms(obj: Any, prefix: str = "") -> dict[str, tuple[list[float], list[float]]]:
    out: dict[str, tuple[list[float], list[float]]] = {}
    if isinstance(obj, dict):
        edges = obj.get("edges", obj.get("bins"))
        counts = obj.get("counts")
        if isinstance(edges, list) and isinstance(counts, list) and counts and \
                len(edges) in (len(counts), len(counts) + 1):
            out[prefix or "histogram"] = ([float(e) for e in edges], [float(c) for c in counts])
        for k, v in obj.items():
            out.update(find_histograms(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def plot_histograms(name: str, hists: dict[str, tuple[list[float], list[float]]],
                    out_dir: str) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, (edges, counts) in sorted(hists.items()):
        xs = edges[: len(counts)]
        ax.step([x / 1e3 for x in xs], counts, where="post", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("microseconds (log)")
    ax.set_ylabel("samples")
    ax.set_title(f"{name}: latency histograms")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    path = os.path.join(out_dir, f"{name}_histograms.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_bars(name: str, what: str, values: dict[str, float], unit: str, scale: float,
              out_dir: str, log: bool = False) -> str:
    plt = _plt()
    labels = list(values)
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(labels) + 1.5))
    colors = ["tab:gray" if any(b in lbl.lower() for b in ("memcpy", "copyto", "naive", "raw"))
              else "tab:blue" for lbl in labels]
    ax.barh(range(len(labels)), [values[k] / scale for k in labels], color=colors)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    if log:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(plt.matplotlib.ticker.FormatStrFormatter("%g"))
    ax.set_xlabel(unit + (" (log)" if log else ""))
    ax.set_title(f"{name}: {what} (grey: baselines)")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    path = os.path.join(out_dir, f"{name}_{_safe(what)}.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def series(doc: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Top-level lists of rows with a time column ``t`` and more than LONG_TABLE rows."""
    return {k: v for k, v in doc.items() if isinstance(v, list) and len(v) > LONG_TABLE
            and all(isinstance(r, dict) and isinstance(r.get("t"), (int, float)) for r in v)}


def plot_series(name: str, key: str, rows: list[dict[str, Any]], out_dir: str) -> str:
    """Each top-level numeric column of ``rows`` against ``t``, one panel each."""
    plt = _plt()
    cols = [c for c in rows[0] if c != "t" and isinstance(rows[0][c], (int, float))
            and not isinstance(rows[0][c], bool)]
    fig, axes = plt.subplots(len(cols), 1, figsize=(7.5, 1.9 * len(cols) + 0.6), sharex=True,
                             squeeze=False)
    ts = [float(r["t"]) for r in rows]
    for ax, col in zip(axes[:, 0], cols, strict=True):
        ax.plot(ts, [float(r.get(col, math.nan)) for r in rows], linewidth=1)
        ax.set_ylabel(col, fontsize=8)
        ax.grid(True, alpha=0.3)
    axes[-1, 0].set_xlabel("seconds")
    axes[0, 0].set_title(f"{name}: {key} over time")
    path = os.path.join(out_dir, f"{name}_{_safe(key)}_over_time.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


# ----------------------------------------------------------------------------------


def render(results_dir: str) -> str:
    docs = load_results(results_dir)
    lines = ["# pyshm benchmark report", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')} from the JSON files in this "
             f"directory (raw data: `*.json`, logs: `logs/`). Figures are medians over "
             f"interleaved rounds on a shared machine; compare ratios measured in the same "
             f"run, not absolute numbers across runs.", ""]
    run_all = os.path.join(results_dir, "run_all.json")
    if os.path.exists(run_all):
        try:
            with open(run_all, encoding="utf-8") as f:
                ra = json.load(f)
            lines += ["## Runs" + (" (--quick)" if ra.get("quick") else ""), "",
                      md_table(["benchmark", "status", "seconds", "log"],
                               [[str(r.get("name")), str(r.get("status")),
                                 str(r.get("seconds")), str(r.get("log"))]
                                for r in ra.get("runs", [])]), ""]
        except (OSError, ValueError):
            pass
    if not docs:
        lines += ["_No benchmark results found._", ""]
        return "\n".join(lines)
    machines = [d["machine"] for _, d in docs if isinstance(d.get("machine"), dict)]
    machine = max(machines, key=len) if machines else None  # the most detailed one
    if machine:
        lines += ["## Machine", "", md_table(["", ""], [[str(k), str(v)]
                                                       for k, v in machine.items()]), ""]
    targets = [(n, t) for n, d in docs if isinstance(d.get("targets"), list)
               for t in d["targets"] if isinstance(t, dict)]
    if targets:
        lines += ["## Targets (docs/design.md)", "",
                  md_table(["benchmark", "target", "measured", "verdict"],
                           [[n, str(t.get("target")), str(t.get("measured")),
                             "PASS" if t.get("ok") else "FAIL"] for n, t in targets]), ""]
    for name, doc in docs:
        lines += [f"## {name}", ""]
        cfg = doc.get("config")
        if isinstance(cfg, dict) and cfg:
            lines += ["Configuration: " + ", ".join(f"`{k}={v}`" for k, v in cfg.items()), ""]
        mach = doc.get("machine") or {}
        load = (mach.get("loadavg") or mach.get("load_avg")) if isinstance(mach, dict) \
            else None
        if load or doc.get("load"):
            lines += [f"Load average: {load or doc.get('load')}", ""]
        if doc.get("_left_out"):
            lines += ["Left out: " + ", ".join(f"`{f}`" for f in doc["_left_out"]) +
                      " (the report uses one run per benchmark, a full one when there is "
                      "one).", ""]
        if _is_quick(doc):
            lines += ["_This is a --quick run: its figures check that the benchmark works "
                      "and are not comparable with full runs._", ""]
        meta = ("machine", "config", "time", "when", "benchmark", "bench", "quick", "args",
                "load", "errors")
        summary = doc.get("summary", {k: v for k, v in doc.items()
                                      if k not in meta and not k.startswith("_")
                                      and not (k == "targets" and isinstance(v, list))})
        if "summary" not in doc and isinstance(summary, dict):
            scalars = {k: v for k, v in summary.items() if not isinstance(v, (dict, list))}
            if scalars:  # figures at the top level (rtl_throughput, soak)
                lines += [md_table(["figure", "value"],
                                   [[k, fmt(k, v) if isinstance(v, (int, float))
                                     and not isinstance(v, bool) else str(v)]
                                    for k, v in scalars.items()]), ""]
            for key, part in summary.items():  # one table per part
                if isinstance(part, (dict, list)):
                    lines += [f"### {key}", "", summary_table(part), ""]
        else:
            lines += [summary_table(summary), ""]
        flat = leaves(summary)
        images = []
        try:
            for metric, group in percentile_groups(flat).items():
                images.append(plot_percentiles(name, metric, group, results_dir))
            hists = find_histograms(doc)
            if hists:
                images.append(plot_histograms(name, hists, results_dir))
            bw = {k: (v / 1e9 if "bytes_per_s" in k.lower() else v)
                  for k, v in flat.items() if BW_RE.search(k)}
            if bw:
                images.append(plot_bars(name, "bandwidth", bw, "GB/s", 1.0, results_dir))
            tp = {k: v for k, v in flat.items() if MSGS_RE.search(k)}
            if tp:
                images.append(plot_bars(name, "throughput", tp, "million messages/s", 1e6,
                                        results_dir, log=True))
            for key, rows in series(doc).items():
                images.append(plot_series(name, key, rows, results_dir))
        except ImportError as exc:
            lines += [f"_(plots skipped: {exc}; install the bench extra)_", ""]
        lines += [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in images]
        if doc.get("errors"):
            lines += ["", f"Errors during the run: {len(doc['errors'])} (see the JSON)"]
        lines.append("")
    return "\n".join(lines)


PLOT_SUFFIXES = ("_percentiles.png", "_histograms.png", "_bandwidth.png", "_throughput.png",
                 "_over_time.png")


def write_report(results_dir: str) -> str:
    """Render REPORT.md and its plots into ``results_dir``; returns the report's path.
    Plots of an earlier report are removed first, so none of them outlives its data."""
    os.makedirs(results_dir, exist_ok=True)
    for old in glob.glob(os.path.join(results_dir, "*.png")):
        if old.endswith(PLOT_SUFFIXES):
            os.unlink(old)
    text = render(results_dir)
    path = os.path.join(results_dir, "REPORT.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results")
    print(write_report(target))
