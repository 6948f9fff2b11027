"""pyshm stats: header sampling, JSON output, and the Prometheus endpoint."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pyshm import layout, stats
from pyshm.errors import CorruptSegmentError
from pyshm.segment import Segment

CAP = 64 * 1024


def make_ring(path, tail=0, seq=0, mirrored=0, consumers=(), flags=0, producer_pid=0):
    """A ring header written directly through the layout (no ring implementation needed)."""
    seg = Segment(str(path), create=True, size=layout.segment_size(CAP))
    p = layout.RingParams(capacity=CAP, max_record=1024, flags=flags, created_ns=time.time_ns(),
                          creator_pid=os.getpid(), name=path.name, producer_pid=producer_pid)
    buf = seg.buf
    buf[:0x80] = layout.pack_static_header(p)
    struct.pack_into("<Q", buf, layout.OFF_TAIL, tail)
    struct.pack_into("<Q", buf, layout.OFF_TAIL_INTENT, tail)
    struct.pack_into("<Q", buf, layout.OFF_MIRRORED, mirrored)
    struct.pack_into("<Q", buf, layout.OFF_NEXT_SEQUENCE, seq)
    for slot, (pos, pid, sflags) in enumerate(consumers):
        struct.pack_into("<QQQQ", buf, layout.slot_offset(slot), pos, pid, time.time_ns(),
                         sflags)
    buf.release()
    return seg


def write_status(state_dir, ring_name):
    os.makedirs(state_dir, exist_ok=True)
    st = {"run": "t", "pid": os.getpid(), "config": "x.yaml", "started": time.time(),
          "updated": time.time(),
          "rings": {ring_name: {
              "replica": ring_name + ".replica",
              "engine": {"name": "cpu", "pid": os.getpid(), "state": "running", "restarts": 2,
                         "stats": {"lag_bytes": 128, "overruns": 1, "errors": 0,
                                   "lag_percentiles_ns": {"0.5": 1000, "0.99": 5000}}},
              "snapshots": {"count": 3, "failures": 0, "last_time": time.time() - 1,
                            "last_duration_s": 0.01, "last_path": "/x/img"},
              "bridges": [{"kind": "out", "stream": "MD", "state": "running", "acked": 90,
                           "lag_records": 10, "lag_us": 250.0, "in_flight": 4,
                           "redeliveries": 1, "reconnects": 2, "lost": 0}]}}}
    with open(os.path.join(state_dir, "t.status.json"), "w") as f:
        json.dump(st, f)


@pytest.fixture
def ring(tmp_path):
    path = tmp_path / "md"
    dead_pid = 4_000_000  # above pid_max: never a live process
    seg = make_ring(path, tail=4096, seq=100, mirrored=3072,
                    consumers=[(1024, os.getpid(), layout.SLOT_ACTIVE | layout.SLOT_GATING),
                               (4096, dead_pid, layout.SLOT_ACTIVE), (0, 0, 0)],
                    flags=layout.FLAG_LOSSLESS, producer_pid=os.getpid())
    yield str(path)
    seg.close()
    seg.unlink()


def test_read_ring(ring):
    r = stats.read_ring(ring)
    assert (r["capacity"], r["tail"], r["next_sequence"], r["mirrored"]) == (CAP, 4096, 100, 3072)
    assert r["mirror_lag_bytes"] == 1024 and r["lossless"] and not r["replica"]
    assert r["producer_alive"] is True
    assert [c["slot"] for c in r["consumers"]] == [0, 1]  # slot 2 is not active
    c0, c1 = r["consumers"]
    assert c0["lag_bytes"] == 3072 and c0["gating"] and c0["alive"]
    assert c1["lag_bytes"] == 0 and not c1["alive"]
    assert 0 <= c0["heartbeat_age_s"] < 60


def test_corrupt_header_is_an_error_for_that_ring_only(tmp_path, ring):
    bad = tmp_path / "bad"
    seg = make_ring(bad)
    struct.pack_into("<Q", seg.buf, layout.OFF_CAPACITY, 3000)  # not a power of two
    seg.close()
    with pytest.raises(CorruptSegmentError, match="capacity 3000"):
        stats.read_ring(str(bad))
    sample = stats.collect([ring, str(bad)], state_dir=str(tmp_path / "state"))
    assert "error" in sample["rings"][str(bad)] and sample["rings"][ring]["tail"] == 4096

    tampered = tmp_path / "tampered"
    seg = make_ring(tampered, tail=8192)
    struct.pack_into("<Q", seg.buf, layout.OFF_TAIL_INTENT, 8192 + 10 * CAP)
    seg.close()
    with pytest.raises(CorruptSegmentError, match="tail = 8192 and tail_intent"):
        stats.read_ring(str(tampered))


def test_list_rings_finds_segments_by_magic(tmp_path, ring):
    (tmp_path / "other").write_bytes(b"not a ring" * 10)
    assert stats.list_rings(str(tmp_path)) == [ring]


def test_status_files_are_merged_and_rates_computed(tmp_path, ring):
    state = str(tmp_path / "state")
    write_status(state, ring)
    first = stats.collect([ring], state_dir=state)
    seg = Segment(ring)
    struct.pack_into("<Q", seg.buf, layout.OFF_TAIL, 8192)
    struct.pack_into("<Q", seg.buf, layout.OFF_TAIL_INTENT, 8192)
    struct.pack_into("<Q", seg.buf, layout.OFF_NEXT_SEQUENCE, 200)
    seg.close()
    time.sleep(0.05)
    second = stats.collect([ring], state_dir=state, previous=first)
    r = second["rings"][ring]
    assert r["engine"]["restarts"] == 2 and r["snapshots"]["count"] == 3
    assert r["rate_records_s"] > 0 and r["rate_bytes_s"] > 0
    text = stats.render(second)
    assert "engine cpu" in text and "restarts 2" in text and "last snapshot" in text
    assert "consumer slot  1" in text and "(dead)" in text


def _engine_lag_summary(ring: str) -> None:
    """The end-to-end lag words an engine keeps in the ring header (layout.OFF_LAG_*)."""
    seg = Segment(ring)
    for off, v in ((layout.OFF_LAG_SAMPLES, 1234), (layout.OFF_LAG_P50_NS, 2_000),
                   (layout.OFF_LAG_P99_NS, 15_000), (layout.OFF_LAG_P999_NS, 40_000),
                   (layout.OFF_LAG_MAX_NS, 90_000), (layout.OFF_LAG_UPDATED_NS, time.time_ns())):
        struct.pack_into("<Q", seg.buf, off, v)
    seg.close()


def test_replication_lag_is_the_headline(tmp_path, ring):
    assert stats.collect([ring])["rings"][ring]["replication_lag"] is None
    _engine_lag_summary(ring)
    r = stats.collect([ring])["rings"][ring]
    assert r["replication_lag"]["p99_ns"] == 15_000
    lines = stats.render(stats.collect([ring])).splitlines()
    assert lines[1].startswith("  replication lag, commit -> readable in the replica: p50 "
                               "2.0 us  p99 15.0 us  p99.9 40.0 us  max 90.0 us")


def test_metrics_endpoint_serves_documented_names(tmp_path, ring):
    state = str(tmp_path / "state")
    write_status(state, ring)
    _engine_lag_summary(ring)
    server = stats.serve_metrics("127.0.0.1:0", [ring], state)
    try:
        port = server.server_address[1]
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    finally:
        server.shutdown()
    fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
    # the parser strips the _total suffix of counters, so every name in METRICS appears as is
    assert set(stats.METRICS) <= set(fams), set(stats.METRICS) - set(fams)
    for name, (kind, _) in stats.METRICS.items():
        assert fams[name].type == kind, name

    def value(name, **labels):
        for s in fams[name].samples:
            if all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
        raise AssertionError(f"{name} {labels} not found")

    assert value("pyshm_ring_published_bytes", ring=ring) == 4096
    assert value("pyshm_ring_mirror_lag_bytes", ring=ring) == 1024
    assert value("pyshm_consumer_lag_bytes", ring=ring, slot="0") == 3072
    assert value("pyshm_consumer_alive", ring=ring, slot="1") == 0
    assert value("pyshm_engine_restarts", ring=ring) == 2
    assert value("pyshm_bridge_lag_records", ring=ring, kind="out") == 10
    assert value("pyshm_bridge_lag_seconds", ring=ring, kind="out") == pytest.approx(250e-6)
    assert value("pyshm_engine_lag_seconds", ring=ring, quantile="0.99") == pytest.approx(5e-6)
    assert value("pyshm_ring_replication_lag_seconds", ring=ring, quantile="0.99") == \
        pytest.approx(15e-6)


def test_metrics_endpoint_bad_address():
    with pytest.raises(ValueError):
        stats.serve_metrics("localhost:notaport")


def test_cli_stats_json(tmp_path, ring):
    state = tmp_path / "state"
    write_status(str(state), ring)
    r = subprocess.run([sys.executable, "-m", "pyshm", "stats", ring, "--json", "--interval",
                        "0.05", "--state-dir", str(state)], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["rings"][ring]["next_sequence"] == 100
    assert out["rings"][ring]["engine"]["name"] == "cpu"
    r = subprocess.run([sys.executable, "-m", "pyshm", "stats", "--help"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert "example" in r.stdout and "--serve" in r.stdout
