"""Recovery = state image + replay: bit-identical after kill -9 at random moments, from a
live ring, a replica or a ring image; bad input refused with nothing overwritten."""

from __future__ import annotations

import os
import random
import time

import numpy as np
import pytest
from statekit import BOOK, ORDER, apply_order, fork, kill9, make_orders, reference_book

import pyshm
from pyshm import Ring, State
from pyshm.errors import CorruptSegmentError, InvalidParameterError
from pyshm.images.snapshot import snapshot
from pyshm.state import MissingSequencesError, StateMismatchError, WriterBusyError
from pyshm.state import layout as SL
from pyshm.state.follower import Follower
from pyshm.state.images import snapshot_state
from pyshm.state.recovery import Record, list_images

N = 6000
ORDERS = make_orders(N, seed=11)
REFERENCE = reference_book(ORDERS)


@pytest.fixture(scope="module")
def md(tmp_path_factory):
    """A market-data ring (overwrite mode) holding all N records, shared by the module."""
    name = f"pyshmtest_{os.getpid()}_md_{random.getrandbits(32):08x}"
    r = Ring(name, create=True, capacity=1 << 20)
    assert r.producer().publish_batch(ORDERS) == N
    yield r
    r.close()
    r.unlink()


def _fold_into(state: State, upto: int) -> None:
    w = state.writer()
    for k in range(upto):
        with w.transaction(k):
            apply_order(w, Record(k, 0, memoryview(ORDERS[k].tobytes())))
    w.close()


def test_recover_from_image_and_live_ring_is_bit_identical(md, new_name, tmp_path):
    name = new_name()
    with State(name, create=True, dtype=BOOK, rows=64) as st:
        _fold_into(st, 2500)
        snapshot_state(st, tmp_path / "i.pyimg")
        _fold_into(st, 10)  # damage the state: it now differs from any fold
    rec = pyshm.recover(name, tmp_path / "i.pyimg", md.name, apply_order)
    try:
        assert rec.image_seq == 2499 and rec.last_applied == N - 1
        assert rec.replayed == N - 2500 and rec.source.kind == "ring"
        assert rec.state.applied_seq == N - 1
        assert rec.state.to_numpy().tobytes() == REFERENCE.tobytes()
        s = rec.summary()
        assert s["records_per_s"] > 0 and s["image_load_s"] > 0
    finally:
        rec.close(unlink=True)


def test_recover_creates_a_missing_region_and_folds_without_image(md, new_name, tmp_path):
    name = new_name()
    with State(name, create=True, dtype=BOOK, rows=64) as st:
        _fold_into(st, 1000)
        snapshot_state(st, tmp_path / "i.pyimg")
        st.unlink()
    rec = pyshm.recover(name, tmp_path / "i.pyimg", md.name, apply_order)
    assert rec.created and rec.state.to_numpy().tobytes() == REFERENCE.tobytes()
    rec.close()
    # no image at all: an empty region folded from sequence 0
    rec = pyshm.recover(name, None, md.name, apply_order)
    assert rec.image_seq is None and rec.replayed == N
    assert rec.state.to_numpy().tobytes() == REFERENCE.tobytes()
    rec.close(unlink=True)


def test_recover_from_a_ring_image_and_from_a_replica(md, new_name, tmp_path):
    from pyshm.engine import open_engine
    from pyshm.replica import Replica

    name = new_name()
    with State(name, create=True, dtype=BOOK, rows=64) as st:
        _fold_into(st, 3000)
        snapshot_state(st, tmp_path / "i.pyimg")
    snapshot(md, tmp_path / "ring.pyimg")
    rec = pyshm.recover(name, tmp_path / "i.pyimg", str(tmp_path / "ring.pyimg"),
                        apply_order)
    assert rec.source.kind == "ring image" and rec.last_applied == N - 1
    assert rec.state.to_numpy().tobytes() == REFERENCE.tobytes()
    rec.close()
    rep = Replica.create(new_name(), md)
    with open_engine("cpu", md, rep) as eng:
        eng.start()
        eng.sync(5.0)
    rec = pyshm.recover(name, tmp_path / "i.pyimg", rep.name, apply_order)
    assert rec.source.kind == "replica" and rec.last_applied == N - 1
    assert rec.state.to_numpy().tobytes() == REFERENCE.tobytes()
    rec.close(unlink=True)
    rep.close()
    rep.unlink()


def test_apply_batch_replays_a_batch_per_transaction(md, new_name, tmp_path):
    name = new_name()
    seen = []

    def apply_batch(w, records):
        seen.append(len(records))
        for r in records:
            apply_order(w, r)

    with State(name, create=True, dtype=BOOK, rows=64) as st:
        _fold_into(st, 100)
        snapshot_state(st, tmp_path / "i.pyimg")
    rec = pyshm.recover(name, tmp_path / "i.pyimg", md.name, apply_batch=apply_batch,
                        batch=500)
    assert rec.state.to_numpy().tobytes() == REFERENCE.tobytes() and max(seen) == 500
    rec.close(unlink=True)


# ---------------------------------------------------------------- bad input


def _bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_image_ahead_of_the_ring_is_refused_and_nothing_changes(md, new_name, tmp_path):
    name = new_name()
    short = new_name()
    with Ring(short, create=True, capacity=1 << 20) as r:
        r.producer().publish_batch(ORDERS[:100])
        with State(name, create=True, dtype=BOOK, rows=64) as st:
            _fold_into(st, 3000)
            snapshot_state(st, tmp_path / "i.pyimg")
            _fold_into(st, 5)
        before = _bytes(f"/dev/shm/{name}")
        with pytest.raises(InvalidParameterError,
                           match="image is at sequence 2999 but ring .* has only reached "
                                 "sequence 99.*image is ahead of the ring"):
            pyshm.recover(name, tmp_path / "i.pyimg", short, apply_order)
        assert _bytes(f"/dev/shm/{name}") == before
        r.unlink()
    os.unlink(f"/dev/shm/{name}")


def test_missing_sequences_are_named_exactly(new_name, tmp_path):
    name = new_name()
    lapped = new_name()
    with Ring(lapped, create=True, capacity=1 << 16) as r:  # holds ~1300 of 6000 records
        r.producer().publish_batch(ORDERS)
        c = r.consumer(start="oldest")
        oldest = int(c.read_batch(1).sequences[0])
        c.close()
        assert oldest > 1000
        with State(name, create=True, dtype=BOOK, rows=64) as st:
            _fold_into(st, 1000)
            snapshot_state(st, tmp_path / "i.pyimg")
        before = _bytes(f"/dev/shm/{name}")
        with pytest.raises(MissingSequencesError,
                           match=f"no longer holds sequences 1000..{oldest - 1} "
                                 f"\\(its oldest record is {oldest}\\)") as ei:
            pyshm.recover(name, tmp_path / "i.pyimg", lapped, apply_order)
        assert (ei.value.first, ei.value.last, ei.value.available) == (1000, oldest - 1,
                                                                       oldest)
        assert _bytes(f"/dev/shm/{name}") == before
        r.unlink()
    os.unlink(f"/dev/shm/{name}")


def test_dtype_mismatch_between_image_and_region(md, new_name, tmp_path):
    name = new_name()
    with State(name, create=True, dtype=BOOK, rows=64) as st:
        _fold_into(st, 10)
        snapshot_state(st, tmp_path / "i.pyimg")
        st.unlink()
    other = np.dtype([("x", "<f8")])
    for dt, rows, match in [(other, 64, "rows of .*x.*the image 64 rows"),
                            (BOOK, 65, "holds 65 rows")]:
        with State(name, create=True, dtype=dt, rows=rows) as st:
            before = _bytes(st.path)
            with pytest.raises(StateMismatchError, match=match):
                pyshm.recover(name, tmp_path / "i.pyimg", md.name, apply_order)
            assert _bytes(st.path) == before
            st.unlink()


def test_damaged_region_header_is_refused_and_left_alone(md, new_name, tmp_path):
    name = new_name()
    with State(name, create=True, dtype=BOOK, rows=64) as st:
        _fold_into(st, 10)
        snapshot_state(st, tmp_path / "i.pyimg")
        path = st.path
    with open(path, "r+b") as f:
        f.seek(SL.OFF_ROW_COUNT)
        f.write(b"\x07")
    before = _bytes(path)
    with pytest.raises(CorruptSegmentError, match="header checksum mismatch"):
        pyshm.recover(name, tmp_path / "i.pyimg", md.name, apply_order)
    assert _bytes(path) == before
    os.unlink(path)


def test_recover_refuses_a_region_with_a_live_writer(md, new_name, tmp_path):
    from statekit import wait_until

    name = new_name()
    with State(name, create=True, dtype=BOOK, rows=64) as st:
        snapshot_state(st, tmp_path / "i.pyimg")
    flag = f"/tmp/{new_name()}"
    pid = fork(_hold_writer, name, flag)
    try:
        wait_until(lambda: os.path.exists(flag))
        with pytest.raises(WriterBusyError, match=f"pid {pid}.*alive"):
            pyshm.recover(name, tmp_path / "i.pyimg", md.name, apply_order)
    finally:
        kill9(pid)
        os.unlink(flag)
    os.unlink(f"/dev/shm/{name}")


def _hold_writer(name: str, flag: str) -> None:
    s = State(name)
    s.writer()
    open(flag, "w").close()
    while True:
        time.sleep(1)


def test_apply_errors_name_the_record(md, new_name):
    name = new_name()
    State(name, create=True, dtype=BOOK, rows=64).close()

    def bad(w, rec):
        if rec.sequence == 7:
            raise ValueError("boom")
        apply_order(w, rec)

    from pyshm.state import ApplyError

    with pytest.raises(ApplyError, match="apply raised on record 7: ValueError"):
        pyshm.recover(name, None, md.name, bad)
    with State(name) as st:
        assert st.applied_seq == 6  # records 0..6 applied, 7 not committed
        st.unlink()


# ---------------------------------------------------------------- kill -9 at random moments


def _builder(name: str, ring: str, images: str) -> None:
    f = Follower(name, ring, apply_order, dtype=BOOK, rows=64, images=images,
                 snapshot_records=400, keep=2, snapshot_poll=0.002, batch=64)
    f.run()


TRIALS = 50


def test_order_book_builder_killed_at_random_moments(md, new_name, tmp_path):
    """kill -9 the builder (a Follower folding the ring, imaging every ~400 records) at
    a random moment, then recover from its newest image + the ring: the table is
    bit-identical to the reference fold every time. Half of the restarts go through a
    Follower (restart=auto: resume a consistent region, else image + replay), half
    through pyshm.recover with the image explicitly."""
    rng = random.Random(1234)
    outcomes = {"image": 0, "resume": 0, "no_image": 0, "mid_transaction": 0}
    for trial in range(TRIALS):
        name = new_name()
        images = tmp_path / f"t{trial}"
        images.mkdir()
        pid = fork(_builder, name, md.name, str(images))
        time.sleep(rng.uniform(0.005, 0.25))
        kill9(pid)
        died_in_tx = False
        if os.path.exists(f"/dev/shm/{name}"):
            with State(name) as probe:
                died_in_tx = bool(probe.epoch & 1)
        outcomes["mid_transaction"] += died_in_tx
        have_image = bool(list_images(images, name))
        if trial % 2 == 0:
            with Follower(name, md.name, apply_order, dtype=BOOK, rows=64,
                          images=str(images)) as f:
                r = f.run(until=N - 1, max_seconds=60)
                assert r.reason == "until", r
                how = f.start_info["how"]
                outcomes["resume" if how == "resumed" else "image" if have_image
                         else "no_image"] += 1
                if died_in_tx:
                    assert how == "recovered"
                rows = f.state.to_numpy()
                seq = f.state.applied_seq
        else:
            if not os.path.exists(f"/dev/shm/{name}"):
                State(name, create=True, dtype=BOOK, rows=64).close()
            rec = pyshm.recover(name, str(images) if have_image else None, md.name,
                                apply_order)
            outcomes["image" if have_image else "no_image"] += 1
            rows, seq = rec.state.to_numpy(), rec.state.applied_seq
            rec.close()
        assert seq == N - 1, (trial, seq)
        assert rows.tobytes() == REFERENCE.tobytes(), (trial, outcomes)
        os.unlink(f"/dev/shm/{name}")
    # the random moments did cover the interesting cases
    assert outcomes["image"] >= 10 and outcomes["mid_transaction"] >= 5, outcomes


def test_records_are_read_exactly_once_per_sequence(md, new_name):
    """A follower run split in pieces (until=...) applies each sequence exactly once."""
    name = new_name()
    seen: list[int] = []

    def count(w, rec):
        seen.append(rec.sequence)
        apply_order(w, rec)

    with Follower(name, md.name, count, dtype=BOOK, rows=64, batch=100) as f:
        for until in (10, 11, 500, 2999, N - 1):
            assert f.run(until=until).reason == "until"
        assert f.state.to_numpy().tobytes() == REFERENCE.tobytes()
    assert seen == list(range(N))
    os.unlink(f"/dev/shm/{name}")


def test_order_records_are_64_bytes_or_less():
    assert ORDER.itemsize <= 64


def test_record_batch_views_splits_and_copies():
    from pyshm.state.recovery import RecordBatch

    b = RecordBatch.from_records([(10 + i, 1, ORDERS[i].tobytes()) for i in range(5)])
    assert len(b) == 5 and (b.first, b.last) == (10, 14)
    assert b.array(ORDER).tobytes() == ORDERS[:5].tobytes()
    assert bytes(b[2].data) == ORDERS[2].tobytes() and b[-1].sequence == 14
    head, tail = b.split(12)
    assert [r.sequence for r in head] == [10, 11, 12] and [r.sequence for r in tail] == [13, 14]
    assert tail.array(ORDER).tobytes() == ORDERS[3:5].tobytes()
    assert b.split(99)[1].__len__() == 0 and len(b.split(9)[0]) == 0
    with pytest.raises(InvalidParameterError, match="not all 8 bytes"):
        b.array("<u8")
