"""End-to-end replication lag: the producer's lag probes (ring.c) and the CPU engine that
measures them (engine.c), through the header words of docs/design.md "End-to-end lag"."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time

from pyshm.fallback.cpu import CpuEngine

from pyshm import layout as L
from pyshm import stats
from pyshm.replica import Replica
from pyshm.ring import Ring

CAP = 1 << 20


def _u64(ring: Ring, off: int) -> int:
    return struct.unpack_from("<Q", ring.segment.buf, off)[0]


def _publish(ring: Ring, n: int, eng: CpuEngine | None = None) -> None:
    p = ring.producer()
    for i in range(n):
        p.publish(b"%08d" % i + bytes(40))
        if eng is not None and i % 200 == 199:
            eng.sync(5)
    p.close()


def test_probes_measured_and_published(new_name):
    ring = Ring(new_name(), create=True, capacity=CAP)
    rep = Replica.create(new_name(), ring)
    t0 = time.monotonic()
    with CpuEngine(ring, rep, wait="spin") as eng:
        eng.start()
        _publish(ring, 20_000, eng)
        eng.sync(5)
        st = eng.stats()
        elapsed_ns = (time.monotonic() - t0) * 1e9
        # about one probe per 64 records, when the engine has consumed the previous one
        assert 20_000 // 200 <= st.e2e_lag_samples <= 20_000 // 2
        assert 0 <= st.e2e_lag_p50_ns <= st.e2e_lag_p99_ns <= st.e2e_lag_p999_ns \
            <= st.e2e_lag_max_ns < elapsed_ns
        assert "lag p50" in st.line() and "p99" in st.line()
    # after stop the ring header carries this engine's figures, for other processes
    assert _u64(ring, L.OFF_LAG_SAMPLES) == st.e2e_lag_samples
    assert _u64(ring, L.OFF_LAG_MAX_NS) == st.e2e_lag_max_ns
    assert _u64(ring, L.OFF_LAG_P99_NS) == st.e2e_lag_p99_ns
    assert abs(_u64(ring, L.OFF_LAG_UPDATED_NS) - time.time_ns()) < 60e9
    # every probe the producer offered was consumed
    assert _u64(ring, L.OFF_PROBE_ACK) == _u64(ring, L.OFF_PROBE_GEN)
    lag = stats.read_ring(ring.segment.name)["replication_lag"]
    assert lag["samples"] == st.e2e_lag_samples
    rep.close()
    ring.close()


def test_without_an_engine_the_producer_offers_one_probe(new_name):
    """A probe is stamped only once the engine consumed the previous one: with nobody
    consuming, 10,000 publishes cost one stamp."""
    ring = Ring(new_name(), create=True, capacity=CAP)
    _publish(ring, 10_000)
    assert _u64(ring, L.OFF_PROBE_GEN) == 1
    assert _u64(ring, L.OFF_PROBE_ACK) == 0
    pos = _u64(ring, L.OFF_PROBE_POS)
    assert 0 < pos <= ring.tail and pos % 8 == 0
    assert 0 < _u64(ring, L.OFF_PROBE_NS) <= time.monotonic_ns()
    ring.close()


def test_a_stale_probe_is_not_measured(new_name):
    """A probe stamped long before the engine started would measure the engine's
    absence: the engine consumes it unmeasured."""
    ring = Ring(new_name(), create=True, capacity=CAP)
    rep = Replica.create(new_name(), ring)
    _publish(ring, 1000)
    assert _u64(ring, L.OFF_PROBE_GEN) == 1
    time.sleep(0.3)
    with CpuEngine(ring, rep, wait="spin") as eng:
        eng.start()
        eng.sync(5)
        _publish(ring, 3000, eng)
        eng.sync(5)
        st = eng.stats()
    assert st.e2e_lag_samples > 0
    assert st.e2e_lag_max_ns < 0.25e9
    rep.close()
    ring.close()


PRODUCER = """
import sys
from pyshm.ring import Ring
ring = Ring(sys.argv[1])
p = ring.producer()
for i in range(int(sys.argv[2])):
    p.publish(b"x" * 56)
p.close()
"""


def test_probes_across_processes(new_name, tmp_path):
    """The producer is another process: its CLOCK_MONOTONIC stamps and the engine's clock
    agree (the lag is never negative, never more than the run)."""
    ring = Ring(new_name(), create=True, capacity=8 * CAP)  # no lap: every record arrives
    rep = Replica.create(new_name(), ring)
    with CpuEngine(ring, rep) as eng:
        eng.start()
        t0 = time.monotonic_ns()
        subprocess.run([sys.executable, "-c", PRODUCER, ring.segment.name, "30000"],
                       check=True, timeout=60, cwd=tmp_path)
        eng.sync(5)
        st = eng.stats()
        # the C producer publishes 30,000 records in a millisecond or two while the default
        # engine sleeps between polls, and each probe waits for the previous one's
        # acknowledgement: a few probes
        assert st.e2e_lag_samples >= 1
        assert st.e2e_lag_max_ns <= time.monotonic_ns() - t0
        assert st.records_mirrored == 30_000
    assert os.path.exists(rep.path)
    rep.close()
    ring.close()
