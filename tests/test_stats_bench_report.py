"""bench/report.py: every benchmark's JSON lands in REPORT.md with its tables and plots."""

from __future__ import annotations

import importlib.util
import json
import os

import matplotlib  # noqa: F401  (in the test extra: the plots are part of what is tested)

BENCH = os.path.join(os.path.dirname(__file__), "..", "bench")


def load_report():
    spec = importlib.util.spec_from_file_location("bench_report",
                                                  os.path.join(BENCH, "report.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_report_tables_targets_and_plots(tmp_path):
    report = load_report()
    (tmp_path / "ring.json").write_text(json.dumps({
        "benchmark": "ring", "machine": {"cpu_count": 2, "loadavg": [0.5, 0.5, 0.5]},
        "config": {"rounds": 2},
        "summary": {"pyshm": {"lat64_p50_ns": 300, "lat64_p99_ns": 900, "lat64_p99.9_ns": 3000,
                              "thr64_msgs_per_s": 5e6},
                    "naive": {"lat64_p50_ns": 700, "lat64_p99_ns": 2000,
                              "lat64_p99.9_ns": 9000, "thr64_msgs_per_s": 2.5e6}},
        "targets": [{"target": "latency p50 <= 0.5x naive", "measured": "0.43x",
                     "value": 0.43, "ok": True},
                    {"target": "p99.9 <= 5 us", "measured": "9 us", "ok": False}]}))
    (tmp_path / "replication.json").write_text(json.dumps({
        "benchmark": "replication", "machine": {"cpus": 2},
        "bandwidth": [{"capacity_mib": 64, "threads": 1, "engine_gb_s": 13.0,
                       "numpy_copyto_gb_s": 14.0}],
        "lag": {"p50_us": 0.1, "p99_us": 0.6, "p999_us": 60.0, "max_us": 3000.0},
        "hist": {"edges": [100, 1000, 10000], "counts": [9, 1]}}))
    (tmp_path / "broken.json").write_text("{not json")
    path = report.write_report(str(tmp_path))
    text = open(path).read()
    assert "| ring | latency p50 <= 0.5x naive | 0.43x | PASS |" in text
    assert "| ring | p99.9 <= 5 us | 9 us | FAIL |" in text
    assert "| lat64_p99.9_ns | 3.00 us | 9.00 us |" in text
    assert "| 64 | 1 | 13.00 GB/s | 14.00 GB/s |" in text
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["replication_bandwidth.png", "replication_histograms.png",
                    "replication_lag_percentiles.png", "ring_lat64_percentiles.png",
                    "ring_throughput.png"]
    for name in pngs:
        assert f"]({name})" in text
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_percentile_keys_are_understood():
    report = load_report()
    groups = report.percentile_groups({"pyshm.lat64_p50_ns": 1.0, "pyshm.lat64_p99.9_ns": 2.0,
                                       "lag.p999_us": 3.0, "lag.max_us": 4.0,
                                       "lag.p50_us": 0.5, "thr64_msgs_per_s": 9.0})
    assert groups["lat64"]["pyshm"] == {50.0: 1.0, 99.9: 2.0}
    assert groups["lag"]["lag"] == {99.9: 3000.0, 100.0: 4000.0, 50.0: 500.0}


def test_report_of_the_committed_results(tmp_path, monkeypatch):
    """On the JSON of the last full run: no empty or duplicate section, full runs rather
    than quick ones, the soak summarised, throughput on a log scale, idle and
    snapshotting latency on one plot."""
    import glob
    import re
    import shutil

    for path in glob.glob(os.path.join(BENCH, "results", "*.json")):
        shutil.copy(path, tmp_path)
    report = load_report()
    calls = []
    real_bars = report.plot_bars
    monkeypatch.setattr(report, "plot_bars",
                        lambda *a, **kw: calls.append((a[1], kw)) or real_bars(*a, **kw))
    (tmp_path / "stale_percentiles.png").write_bytes(b"old")
    text = open(report.write_report(str(tmp_path))).read()
    sections = re.findall(r"^## (.+)$", text, re.M)
    assert len(sections) == len(set(sections)), sections
    body = dict(zip(sections, re.split(r"^## .+$", text, flags=re.M)[1:], strict=True))
    for name in ("fuzz", "rtl_throughput", "soak", "replication", "snapshot"):
        assert body[name].count("|") > 10, f"section {name} is empty"
    assert "executions" in body["fuzz"] and "beats_per_cycle" in body["rtl_throughput"]
    # the full replication run, not the quick one (4 MiB): its plots too
    assert "replication_quick.json (--quick)" in body["replication"]
    assert "| 64 |" in body["replication"] and "| 4 |" not in body["replication"]
    # the soak's per-second samples: a summary and a plot, not hundreds of rows
    assert "rows, summarised" in body["soak"] and body["soak"].count("\n|") < 80
    assert "soak_samples_over_time.png" in body["soak"]
    assert ("throughput", {"log": True}) in calls
    groups = report.percentile_groups(report.leaves(json.load(
        open(tmp_path / "snapshot.json"))["latency"], "latency"))
    assert {"idle", "snapshotting"} <= set(groups["latency"])
    assert "snapshot_latency_percentiles.png" in body["snapshot"]
    assert not (tmp_path / "stale_percentiles.png").exists()
    for png in re.findall(r"\]\(([^)]+\.png)\)", text):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
