"""Bounded fault-injection campaign (bench/faults.py, a few trials per kind): kill -9 of
the producer, of a gating consumer, of the engine and of the snapshot writer at random
moments, then the documented recovery, then a check against the committed prefix."""

from __future__ import annotations

import os
import random
import sys
import tempfile

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
sys.path.insert(0, BENCH)

import faults  # noqa: E402

TRIALS = {"producer": 8, "consumer": 8, "engine": 5, "snapshot": 5}


@pytest.fixture(scope="module")
def workdir():
    d = tempfile.mkdtemp(prefix="pyshm_faults_test_")
    yield d
    for f in os.listdir(d):
        os.unlink(os.path.join(d, f))
    os.rmdir(d)


@pytest.mark.parametrize("kind", list(TRIALS))
def test_kill9_then_recovery_yields_the_committed_prefix(kind, workdir):
    rng = random.Random(f"faults-{kind}")
    results = [faults.trial(kind, rng, workdir) for _ in range(TRIALS[kind])]
    summary = {k: sum(int(r[k]) for r in results)
               for k in ("fault", "survived", "lost", "torn", "extra", "dupes", "records",
                         "mid_claim")}
    print(f"\n{kind}: {len(results)} trials {summary}")
    assert summary["fault"] == len(results)          # every kill landed on a live process
    assert summary["records"] > 1000 * len(results)  # the runs did real work
    # never a torn, invented or repeated record, whatever was killed
    assert summary["torn"] == summary["extra"] == summary["dupes"] == 0
    if kind == "consumer":
        # the producer's reap_grace keeps a dead gating slot gating long enough for the
        # supervisor to pin it (pin_dead_slot) and restart the consumer: nothing is lost
        assert all(r["slot_pinned"] for r in results), results
    assert summary["lost"] == 0, [r for r in results if r["lost"]]
    assert summary["survived"] == len(results)
