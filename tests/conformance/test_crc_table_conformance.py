"""Conformance of the replica CRC table: every engine that checksums while it mirrors must
produce the table of docs/design.md ("Replica CRC table"), checked against the `crc32c`
package, and identical tables for identical data.

TABLE_ENGINES lists the engines that keep the table: the CPU engine and the simulated
RTL (`sim`, the ring-mirror IP's CRC unit through the driver), the latter on a small ring.
"""

from __future__ import annotations

import pytest
from crctable import assert_table_describes, table_bytes
from ringkit import PyRing, payload_for
from test_engine_conformance import EngineCase, engine

from pyshm.replica import Replica

TABLE_ENGINES = [
    EngineCase("cpu"),
    EngineCase("cpu", options={"threads": 2, "split_bytes": 4096, "wait": "yield"}),
    # RTL on Icarus copies some 20-60 kB/s: an 8 KiB ring (blocks of a partition, 1-2 KiB)
    EngineCase("sim", capacity=8192, records=200, timeout=60.0),
]
# the ring every engine mirrors in the identical-tables test: the smallest of the cases
SAME_CAPACITY = min(c.capacity for c in TABLE_ENGINES)


@pytest.fixture(params=TABLE_ENGINES, ids=str)
def case(request: pytest.FixtureRequest) -> EngineCase:
    return request.param


def _publish(ring: PyRing, n: int, max_payload: int, seed: int = 0) -> None:
    for _ in range(n):
        seq = ring.enc.sequence
        ring.publish(payload_for(seq * 7919 + seed, max_payload))


def test_table_follows_partial_blocks_and_wraps(case, names):
    """Round after round, the tail's block grows inside the table and the ring wraps
    several times: at every stop the table describes the replica exactly."""
    ring = PyRing(names[0], capacity=case.capacity, partitions=4)
    rep = Replica.create(names[1], ring)
    with engine(case, ring, rep) as eng:
        eng.start()
        checked = 0
        step = max(1, case.capacity // (4 * (case.max_payload + 24)))
        while ring.tail < 3 * case.capacity:
            _publish(ring, step, case.max_payload)
            eng.sync(case.timeout)
            eng.pause(case.timeout)
            checked += assert_table_describes(rep)
            eng.resume(case.timeout)
        eng.stop(case.timeout)
        blocks = 3 * case.capacity // rep.crc_table().block_size
        stats = eng.stats()
        assert stats.extra["crc_table"], stats.extra
        assert stats.extra["crc_blocks"] >= blocks - 1
    assert checked > 20
    rep.close()
    ring.close()


def test_table_after_overrun_resync(case, names):
    ring = PyRing(names[0], capacity=case.capacity)
    rep = Replica.create(names[1], ring)
    with engine(case, ring, rep) as eng:
        eng.start()
        _publish(ring, 50, case.max_payload)
        eng.sync(case.timeout)
        eng.pause(case.timeout)
        before = ring.tail
        while ring.tail < before + 3 * case.capacity:
            _publish(ring, 1, case.max_payload)
        eng.resume(case.timeout)
        eng.sync(case.timeout)
        assert eng.stats().overruns >= 1
        eng.pause(case.timeout)
        assert_table_describes(rep)
    rep.close()
    ring.close()


def test_identical_tables_for_identical_data(names, new_name):
    """The same records published into equal rings give byte-identical tables, whichever
    engine (and copy split) kept them, the RTL's included: a lossless, gated ring, so that
    no engine loses a byte and every table covers the same history (five laps)."""
    tables = {}
    records = 5 * SAME_CAPACITY // 100  # payloads of 8..199 bytes
    for case in TABLE_ENGINES:
        ring_name, rep_name = new_name(), new_name()
        ring = PyRing(ring_name, capacity=SAME_CAPACITY, lossless=True)
        rep = Replica.create(rep_name, ring)
        with engine(case, ring, rep, gate=True) as eng:
            eng.start()
            for i in range(records):
                assert ring.publish(payload_for(i * 31, 200), timeout=case.timeout) == i
            eng.sync(case.timeout)
        assert_table_describes(rep)
        tables[str(case)] = table_bytes(rep)
        rep.close()
        ring.close()
    first = next(iter(tables.values()))
    assert all(t == first for t in tables.values()), list(tables)
