"""Soak, bounded to 30 s (bench/soak.py runs 10 minutes): producer at full rate into a
lossless ring, three verifying gating consumers, the CPU engine, periodic snapshots."""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time

import numpy as np
import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
sys.path.insert(0, BENCH)

import soak  # noqa: E402

from pyshm import Ring  # noqa: E402

SECONDS = float(os.environ.get("PYSHM_SOAK_SECONDS", "30"))
CAP = 4 << 20


@pytest.fixture(scope="module")
def result():
    return soak.run_soak(SECONDS, CAP, consumers=3, snapshot_every=2.0, warmup=5.0)


def test_every_process_ran_to_the_end(result):
    assert "died" not in result, result.get("died")
    assert all(code == 0 for code in result["exit_codes"].values()), result["exit_codes"]
    assert len(result["samples"]) >= SECONDS * 0.8


def test_nothing_lost_or_torn_in_lossless_mode(result):
    print(f"\nsoak {SECONDS:.0f} s: {result['records']:,} records, "
          f"{result['rate_mean'] / 1e6:.2f} M/s mean, snapshots {result['snapshots']}")
    assert result["records"] > 100_000
    for c in result["consumers_result"]:
        assert c == {"verified": result["records"], "lost": 0, "torn": 0, "errors": 0}


def test_replica_equals_the_ring_and_snapshots_verify(result):
    assert result["replica_equal"], result.get("replica_diff")
    assert result["engine"]["errors"] == 0
    assert result["snapshots"]["taken"] >= SECONDS / 2.0 * 0.5
    assert result["snapshots"].get("image0_records", 0) > 0


def test_lag_stays_bounded(result):
    # lossless gating bounds every consumer and the mirror to one capacity behind
    assert 0 < result["max_consumer_lag_bytes"] <= CAP
    assert result["max_mirror_lag_bytes"] <= CAP


def test_memory_stays_flat(result):
    print(f"\nRssAnon growth after warm-up (KiB): "
          f"{ {k: v['growth_kib'] for k, v in result['memory'].items()} }")
    assert set(result["memory"]) >= {"producer", "engine", "snapshot", "consumer0"}
    for proc, m in result["memory"].items():
        # private memory, after the warm-up: a leak of even 100 bytes per batch of
        # records would add megabytes in 30 s
        assert m["growth_kib"] <= 4096, (proc, m)


def test_gated_engine_is_never_overrun(ring_name, replica_name):
    """With the engine's gate set before the producer opens, the producer never passes
    ``mirrored`` by more than the capacity, so the engine must never report an overrun."""
    from pyshm.engine import open_engine
    from pyshm.replica import Replica

    ctx = mp.get_context("fork")
    with Ring.create(ring_name, 1 << 20, lossless=True) as ring, \
            Replica.create(replica_name, ring) as rep, \
            open_engine("cpu", ring, rep, gate=True) as eng:
        eng.start()

        def produce() -> None:
            r = Ring.attach(ring_name)
            p = r.producer()
            data = np.zeros(64 * 2048, np.uint8)
            ends = np.arange(1, 2049, dtype=np.uint64) * 64
            t = time.monotonic()
            while time.monotonic() - t < 1.5:
                p.publish_packed(data, ends, timeout=0.01)
            os._exit(0)

        proc = ctx.Process(target=produce)
        proc.start()
        proc.join(30)
        eng.sync(10)
        st = eng.stats()
        eng.stop()
        assert (st.overruns, st.bytes_lost) == (0, 0)
        assert st.records_mirrored == ring.next_sequence
