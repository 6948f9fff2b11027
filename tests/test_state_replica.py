"""State replicas: the CPU engine copies changed rows with their versions, and the
replica is always exactly the source as of the sequence it says it is consistent at."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
from statekit import (
    BOOK,
    apply_order,
    fold_into,
    fork,
    kill9,
    make_orders,
    reap,
    reference_book,
    wait_until,
)

from pyshm import State
from pyshm.errors import EngineError, InvalidParameterError
from pyshm.state import StateMismatchError
from pyshm.state.recovery import Record
from pyshm.state.replica import CpuStateEngine, create_replica, open_replica

ORDERS = make_orders(20000, seed=31)


@pytest.fixture
def pair(new_name):
    src = State(new_name(), create=True, dtype=BOOK, rows=64, chunk_rows=8)
    rep = create_replica(new_name(), src)
    yield src, rep
    for s in (src, rep):
        s.close()
        s.unlink()


def _fold(w, first: int, n: int) -> None:
    for k in range(first, first + n):
        with w.transaction(k):
            apply_order(w, Record(k, 0, memoryview(ORDERS[k].tobytes())))


def test_replica_copies_changed_rows_with_their_versions(pair):
    src, rep = pair
    assert rep.is_replica and rep.info()["consistent_seq"] is None
    w = src.writer()
    _fold(w, 0, 500)
    with CpuStateEngine(src, rep) as eng:
        assert eng.round()  # first round: a full resync
        st = eng.stats()
        assert st.extra["full_resyncs"] == 1 and st.records_mirrored == 64
        assert rep.applied_seq == 499 == eng.consistent_seq
        assert rep.to_numpy().tobytes() == src.to_numpy().tobytes()
        vs = src.capture(versions=True).versions
        vr = rep.capture(versions=True).versions
        assert (vr & ~np.uint64(1 << 62) == vs).all()  # the source's versions, with parity
        assert not eng.round()  # nothing changed: no round
        w.write(5, np.ones(1, BOOK))
        w.write(40, np.ones(1, BOOK))
        w.commit(500)
        assert eng.round()
        st = eng.stats()
        assert st.records_mirrored == 66  # only the two rows that changed
        assert st.extra["chunks_scanned"] == 8 + 2  # and only their chunks were compared
        assert rep.applied_seq == 500 and rep.source_id == src.region_id
        assert rep.to_numpy().tobytes() == src.to_numpy().tobytes()
    # a new engine on the same pair resumes incrementally: no full resync
    _fold(w, 501, 10)
    with CpuStateEngine(src, rep) as eng:
        eng.sync(5)
        assert eng.stats().extra["full_resyncs"] == 0
        assert rep.to_numpy().tobytes() == src.to_numpy().tobytes()


def test_replica_of_a_recreated_source_is_resynced_in_full(pair, new_name):
    src, rep = pair
    w = src.writer()
    _fold(w, 0, 300)
    with CpuStateEngine(src, rep) as eng:
        eng.sync(5)
    w.close()
    name = src.name
    src.close()
    src.unlink()
    src2 = State(name, create=True, dtype=BOOK, rows=64, chunk_rows=8)
    try:
        w2 = src2.writer()
        _fold(w2, 0, 3)  # fewer writes: versions collide with the old source's
        with CpuStateEngine(src2, rep) as eng:
            eng.sync(5)
            assert eng.stats().extra["full_resyncs"] == 1
        assert rep.to_numpy().tobytes() == src2.to_numpy().tobytes()
        assert rep.source_id == src2.region_id
    finally:
        src2.close()


def _writer_proc(name: str, n: int) -> None:
    st = State(name)
    w = st.writer()
    _fold(w, 0, n)
    w.close()


def _replica_reader(name: str, seconds: float, out: str) -> None:
    rep = State(name, readonly=True)
    end = time.monotonic() + seconds
    seen = []
    while time.monotonic() < end:
        c = rep.capture(method="optimistic")
        seen.append((c.seq, c.rows.tobytes()))
    rep.close()
    # check here, where the rows are: each read equals the fold up to its sequence
    # (one incremental fold, compared at every sequence a read was taken at)
    by_seq: dict[int, set[bytes]] = {}
    for seq, rows in seen:
        by_seq.setdefault(-1 if seq is None else seq, set()).add(rows)
    bad = 0
    prev = -1
    book = reference_book(ORDERS, upto=0)
    for seq in sorted(by_seq):
        if seq > prev:
            fold_into(book, ORDERS[prev + 1:seq + 1], prev + 1)
            prev = seq
        bad += sum(1 for rows in by_seq[seq] if rows != book.tobytes())
    seqs = [s for s in by_seq if s >= 0]
    with open(out, "w") as f:
        json.dump({"reads": len(seen), "bad": bad, "distinct": len(seqs)}, f)


def test_replica_is_exactly_the_fold_at_the_sequence_it_claims(pair, tmp_path):
    """A writer process folds 20k records while the engine mirrors and a reader process
    on the replica reads it: every read equals the reference fold of exactly the
    records up to the replica's applied_seq at that read."""
    src, rep = pair
    out = str(tmp_path / "r.json")
    with CpuStateEngine(src, rep) as eng:
        eng.start()
        reader = fork(_replica_reader, rep.name, 2.0, out)
        writer = fork(_writer_proc, src.name, len(ORDERS))
        assert reap(writer, 60) == 0
        eng.sync(10)
        assert reap(reader, 120) == 0
        st = eng.stats()
    r = json.load(open(out))
    assert r["reads"] > 20 and r["distinct"] > 5, r
    assert r["bad"] == 0, r
    assert rep.applied_seq == len(ORDERS) - 1
    assert rep.to_numpy().tobytes() == reference_book(ORDERS).tobytes()
    assert st.copies > 5 and st.extra["busy_retries"] >= 0


def _engine_proc(src: str, rep: str, flag: str) -> None:
    eng = CpuStateEngine(src, rep, max_sleep=10e-6)
    eng.start()
    open(flag, "w").close()
    while True:
        time.sleep(1)


def test_engine_killed_mid_round_and_replaced(pair, tmp_path):
    src, rep = pair
    flag = str(tmp_path / "flag")
    w = src.writer()
    pid = fork(_engine_proc, src.name, rep.name, flag)
    try:
        wait_until(lambda: os.path.exists(flag), what="engine")
        _fold(w, 0, 3000)  # the engine runs rounds meanwhile
    finally:
        kill9(pid)
    # the dead engine may have died inside a round (replica epoch odd) or holding a cut
    with CpuStateEngine(src, rep) as eng:
        eng.sync(5)
        _fold(w, 3000, 100)
        eng.sync(5)
    assert rep.applied_seq == 3099 and rep.epoch % 2 == 0
    assert rep.to_numpy().tobytes() == reference_book(ORDERS, upto=3100).tobytes()


def test_bad_pairs_are_refused(pair, new_name):
    src, rep = pair
    with pytest.raises(InvalidParameterError, match="not a replica"):
        CpuStateEngine(src, src)
    other = State(new_name(), create=True, dtype=[("x", "<f8")], rows=64)
    bad_rep = create_replica(new_name(), other)
    with pytest.raises(StateMismatchError, match="holds 64 rows"):
        CpuStateEngine(src, bad_rep)
    with pytest.raises(StateMismatchError):
        create_replica(bad_rep.name, src)
    for s in (other, bad_rep):
        s.close()
        s.unlink()
    with CpuStateEngine(src, rep), pytest.raises(EngineError, match="already mirrored"):
        CpuStateEngine(src, State(rep.name))
    with pytest.raises(InvalidParameterError, match="is a state region, not a replica"):
        open_replica(src.name)
    with pytest.raises(InvalidParameterError, match="read-only"):
        open_replica(rep.name).writer()
