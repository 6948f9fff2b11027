"""State regions: creation, the writer and reader APIs, validation of damaged regions,
and real processes hammering rows (no torn row, no inconsistent multi-row read)."""

from __future__ import annotations

import os
import struct
import time

import numpy as np
import pytest
from statekit import fork, kill9, reap, wait_until

from pyshm import Ring
from pyshm.errors import ClosedError, CorruptSegmentError, InvalidParameterError
from pyshm.state import (
    State,
    StateInconsistentError,
    StateMismatchError,
    WriterBusyError,
    dtypes,
)
from pyshm.state import layout as SL

ROW = np.dtype([("px", "<f8"), ("qty", "<i8"), ("tag", "S8"), ("lv", "<f8", (5,))])


@pytest.fixture
def region(new_name):
    s = State(new_name(), create=True, dtype=ROW, rows=1000)
    yield s
    s.close()
    s.unlink()


def test_create_attach_and_describe(region):
    assert region.rows == 1000 and region.itemsize == ROW.itemsize
    assert region.dtype == ROW and region.applied_seq is None
    assert os.stat(region.path).st_mode & 0o777 == 0o600
    with State(region.name) as again:
        assert again.dtype == ROW and again.description == region.description
        assert again.region_id == region.region_id != 0
    info = region.info()
    assert info["rows"] == 1000 and info["dtype"][0] == "px: <f8 @ 0"
    assert info["writer_pid"] is None and info["applied_seq"] is None


def test_exist_ok_requires_the_same_dtype_and_rows(region):
    with State(region.name, create=True, dtype=ROW, rows=1000, exist_ok=True) as s:
        assert s.region_id == region.region_id
    with pytest.raises(StateMismatchError, match="exists with 1000 rows"):
        State(region.name, create=True, dtype=ROW, rows=999, exist_ok=True)
    with pytest.raises(StateMismatchError):
        State(region.name, create=True, dtype=[("x", "<f8")], rows=1000, exist_ok=True)
    with pytest.raises(Exception, match="already exists"):
        State(region.name, create=True, dtype=ROW, rows=1000)


def test_write_read_update_and_transactions(region):
    w = region.writer()
    w.write(3, (1.5, 7, b"abc", (1, 2, 3, 4, 5)))
    r = region.read(3)
    assert r["px"] == 1.5 and r["qty"] == 7 and r["tag"] == b"abc"
    assert region.epoch == 2 and region.applied_seq is None  # one autocommitted write
    with w.update(3) as row:
        row["qty"] += 5
        row["lv"][2] = 9.0
    assert region.read(3)["qty"] == 12 and region.read(3)["lv"][2] == 9.0
    with pytest.raises(RuntimeError), w.update(3) as row:
        row["qty"] = 1000
        raise RuntimeError("discarded")
    assert region.read(3)["qty"] == 12  # an update that raised writes nothing
    with w.transaction(41):
        w.write(4, region.read(3))
        assert region.epoch % 2 == 1
        w.write_batch([5, 6], np.ones(2, ROW))
        w.write_range(10, np.full(3, 2, ROW))
    assert region.applied_seq == 41 and region.epoch % 2 == 0
    assert region.read(4) == region.read(3)
    assert (region.read_batch([5, 6, 10, 11, 12])["qty"] == [1, 1, 2, 2, 2]).all()
    w.write(-1, bytes(ROW.itemsize))
    assert region.read(999)["qty"] == 0 and region.read(-1)["px"] == 0
    w.commit(42)  # a record that changed nothing still advances applied_seq
    assert region.applied_seq == 42
    rows = region.to_numpy()
    assert rows[3]["qty"] == 12 and rows.dtype == ROW and len(rows) == 1000


def test_bad_arguments_are_named(region):
    w = region.writer()
    with pytest.raises(InvalidParameterError, match="row 1000 is out of range"):
        w.write(1000, bytes(ROW.itemsize))
    with pytest.raises(InvalidParameterError, match="out of range"):
        region.read(1000)
    with pytest.raises(InvalidParameterError, match="a row has"):
        w.write(0, b"short")
    with pytest.raises(StateMismatchError, match="rows of dtype"):
        w.write_batch([0], np.zeros(1, [("x", "<f8")]))
    with pytest.raises(InvalidParameterError, match="row 5000 is out of range"):
        w.write_batch([0, 5000], np.zeros(2, ROW))
    assert region.read(0)["qty"] == 0  # the bad batch wrote nothing
    with pytest.raises(InvalidParameterError):
        region.read_batch([1, -5])
    with pytest.raises(InvalidParameterError, match="must be structured"):
        State(region.name + "x", create=True, dtype="<f8", rows=4)
    with pytest.raises(InvalidParameterError, match="objects cannot live"):
        State(region.name + "x", create=True, dtype=[("o", "O")], rows=4)
    with pytest.raises(InvalidParameterError, match="row count 0"):
        State(region.name + "x", create=True, dtype=ROW, rows=0)
    assert not os.path.exists(region.path + "x")


def test_one_writer_per_region(region, new_name):
    w = region.writer()
    assert region.writer() is w
    with State(region.name) as other, pytest.raises(WriterBusyError, match="this process"):
        other.writer()

    def hold(name, path):
        s = State(name)
        s.writer()
        open(path, "w").close()
        while True:
            pass

    w.close()
    flag = f"/tmp/{new_name()}.flag"
    pid = fork(hold, region.name, flag)
    try:
        wait_until(lambda: os.path.exists(flag), what="child writer")
        with pytest.raises(WriterBusyError, match=f"pid {pid}, alive"):
            State(region.name).writer()
    finally:
        kill9(pid)
        os.unlink(flag)
    # the dead writer's role is taken over
    with State(region.name) as again:
        again.writer().write(1, bytes(ROW.itemsize))


def test_readonly_attach_reads_but_cannot_write(region):
    region.writer().write(2, (1.0, 2, b"x", (0,) * 5))
    with State(region.name, readonly=True) as ro:
        assert ro.read(2)["qty"] == 2
        assert ro.capture(method="optimistic").rows[2]["qty"] == 2
        with pytest.raises(InvalidParameterError, match="read-only"):
            ro.writer()


def test_closed_region_says_so(region):
    w = region.writer()
    region.close()
    with pytest.raises(ClosedError):
        region.read(0)
    with pytest.raises(ClosedError):
        w.write(0, bytes(ROW.itemsize))


# ---------------------------------------------------------------- damaged regions

def _damage(path: str, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


@pytest.mark.parametrize("offset,data,match", [
    (0, b"XXXXXXXX", "not a pyshm state region"),
    (SL.OFF_VERSION, struct.pack("<I", 9), "state layout version 9"),
    (SL.OFF_NAME, b"evil", "header checksum mismatch"),
    (SL.OFF_ROW_COUNT, struct.pack("<Q", 1 << 50), "header checksum mismatch"),
    (SL.OFF_DESC + 2, b"Z", "description checksum mismatch"),
])
def test_damaged_region_header_is_a_clear_error(region, offset, data, match):
    region.writer().write(0, (1.0, 1, b"a", (0,) * 5))
    _damage(region.path, offset, data)
    with pytest.raises(CorruptSegmentError, match=match):
        State(region.name)


def test_lying_header_with_a_valid_checksum_is_refused(region):
    """Sizing fields that are wrong but re-checksummed: caught by the geometry checks."""
    p = SL.unpack_static_header(open(region.path, "rb").read(SL.STATIC_SIZE))
    for bad, match in [
        (p.__class__(**{**p.__dict__, "row_count": 10 ** 9}), "segment is .* bytes"),
        (p.__class__(**{**p.__dict__, "itemsize": 0}), "row size 0"),
        (p.__class__(**{**p.__dict__, "desc_length": 1}), "description length 1"),
        (p.__class__(**{**p.__dict__, "itemsize": 40}), "its dtype has"),
    ]:
        _damage(region.path, 0, SL.pack_static_header(bad))
        with pytest.raises(CorruptSegmentError, match=match):
            State(region.name)


def test_non_canonical_description_is_refused(new_name):
    name = new_name()
    s = State(name, create=True, dtype=ROW, rows=4)
    path = s.path
    text = s.description.replace(",", ", ", 1)
    s.close()
    from pyshm.images.format import crc

    with open(path, "r+b") as f:
        p = SL.unpack_static_header(f.read(SL.STATIC_SIZE))
        p2 = p.__class__(**{**p.__dict__, "desc_length": len(text),
                            "desc_crc": crc(text.encode())})
        head = SL.pack_static_header(p2)
        f.seek(0)
        f.write(head)
        f.seek(SL.OFF_DESC)
        f.write(text.encode())
    try:
        with pytest.raises(CorruptSegmentError, match="canonical|segment is"):
            State(name)
    finally:
        os.unlink(path)


def test_a_ring_or_a_short_file_is_not_a_region(new_name, tmp_path):
    name = new_name()
    with Ring(name, create=True, capacity=1 << 16) as r:
        with pytest.raises(CorruptSegmentError, match="is a pyshm ring, not a state region"):
            State(name)
        r.unlink()
    short = tmp_path / "short"
    short.write_bytes(b"PYSHMSTA" + bytes(20))
    with pytest.raises(CorruptSegmentError, match="too short"):
        State(str(short))


@pytest.mark.parametrize("text,match", [
    ('{"fields":[],"itemsize":8,"version":1}', "1..1024 entries"),
    ('{"fields":[{"format":"<f8","name":"a","offset":4,"shape":[]}],"itemsize":8,'
     '"version":1}', "past the row"),
    ('{"fields":[{"format":"<f8","name":"a","offset":0,"shape":[]},{"format":"<f8",'
     '"name":"b","offset":4,"shape":[]}],"itemsize":16,"version":1}', "overlap"),
    ('{"fields":[{"format":"O","name":"a","offset":0,"shape":[]}],"itemsize":8,'
     '"version":1}', "not a supported scalar"),
    ('{"fields":[{"format":"<f8","name":"a","offset":0,"shape":[-1]}],"itemsize":8,'
     '"version":1}', "shape"),
    ('{"fields":[{"format":"<f8","name":"a","offset":0,"shape":[]}],"itemsize":8,'
     '"version":2}', "version 2"),
    ('{"fields":[{"format":"<f8","name":"a","offset":0,"shape":[]}],"itemsize":8,'
     '"version":1,"x":1}', "keys"),
    ("not json", "not valid JSON"),
    ('{"fields":[{"format":"<f8","name":"a","offset":0,"shape":[]}],"itemsize":8,'
     '"version":1}'.replace("8,", "8 ,"), "canonical"),
])
def test_description_validator(text, match):
    with pytest.raises(CorruptSegmentError, match=match):
        dtypes.parse(text)


def test_description_round_trips_nested_and_subarray_dtypes():
    dt = np.dtype([("sym", "S8"), ("bid", "<f8", (5,)), ("n", [("a", "<u4"), ("b", "<u2")]),
                   ("t", "<M8[ns]"), ("ok", "?"), ("c", "<c16"), ("u", "<U3")], align=True)
    assert dtypes.parse(dtypes.describe(dt)) == dt


# ---------------------------------------------------------------- real processes

HAMMER = np.dtype([("a", "<u8"), ("b", "<u8"), ("c", "<u8", (6,))])  # 64 bytes


def _hammer_writer(name: str, rows: int, seconds: float) -> None:
    """Every transaction k writes value k into every field of a few rows and into
    row 0, so a torn row has mixed values and an inconsistent cut has row 0 != the
    largest value present."""
    import time

    s = State(name)
    w = s.writer()
    rng = np.random.default_rng(os.getpid())
    end = time.monotonic() + seconds
    k = 0
    batch = np.zeros(4, HAMMER)
    while time.monotonic() < end:
        k += 1
        idx = rng.integers(1, rows, 3)
        with w.transaction(k):
            for i in idx:
                w.write(int(i), (k, k, (k,) * 6))
            batch[:] = (k, k, (k,) * 6)
            w.write_batch(np.append(idx[:3], 0), batch)
    w.close()
    s.close()


def _hammer_reader(name: str, rows: int, seconds: float, kind: str, out: str) -> None:
    import json
    import time

    s = State(name)
    end = time.monotonic() + seconds
    n = torn = inconsistent = 0
    rng = np.random.default_rng(os.getpid())
    while time.monotonic() < end:
        if kind == "row":
            r = s.read(int(rng.integers(0, rows)))
            vals = {int(r["a"]), int(r["b"]), *map(int, r["c"])}
            torn += len(vals) != 1
            n += 1
        elif kind == "batch":
            b = s.read_batch(rng.integers(0, rows, 64))
            torn += int(((b["a"] != b["b"]) | (b["c"] != b["a"][:, None]).any(axis=1)).sum())
            n += 64
        else:
            c = s.capture(method=kind)
            rows_ = c.rows
            torn += int(((rows_["a"] != rows_["b"])
                         | (rows_["c"] != rows_["a"][:, None]).any(axis=1)).sum())
            seq = c.seq or 0
            inconsistent += int(rows_["a"].max() != seq or rows_["a"][0] != seq)
            n += 1
    with open(out, "w") as f:
        json.dump({"n": n, "torn": torn, "inconsistent": inconsistent}, f)
    s.close()


def test_readers_hammering_rows_never_see_a_torn_row(new_name, tmp_path):
    import json

    name = new_name()
    rows = 256
    State(name, create=True, dtype=HAMMER, rows=rows, chunk_rows=16).close()
    seconds = 2.0
    readers = []
    for kind in ("row", "batch", "optimistic", "cut"):
        out = str(tmp_path / f"{kind}.json")
        readers.append((kind, out, fork(_hammer_reader, name, rows, seconds, kind, out)))
    writer = fork(_hammer_writer, name, rows, seconds)
    assert reap(writer) == 0
    results = {}
    for kind, out, pid in readers:
        assert reap(pid) == 0, kind
        results[kind] = json.load(open(out))
    for kind, r in results.items():
        assert r["n"] > 0, (kind, r)
        assert r["torn"] == 0, (kind, r)
        assert r["inconsistent"] == 0, (kind, r)
    with State(name) as s:
        assert s.applied_seq and s.applied_seq > 10
        c = s.capture()
        assert c.rows["a"].max() == s.applied_seq
    os.unlink(f"/dev/shm/{name}")


def _die_in_transaction(name: str, flag: str) -> None:
    s = State(name)
    w = s.writer()
    w.begin()
    w.write(5, (1.0, 1, b"half", (0,) * 5))
    open(flag, "w").close()
    while True:
        pass


def test_writer_killed_inside_a_transaction(region, new_name):
    flag = f"/tmp/{new_name()}.flag"
    pid = fork(_die_in_transaction, region.name, flag)
    wait_until(lambda: os.path.exists(flag), what="child in transaction")
    kill9(pid)
    os.unlink(flag)
    assert region.epoch % 2 == 1 and region.writer_pid == pid
    with pytest.raises(StateInconsistentError, match=f"pid {pid}.*died inside a transaction"):
        region.writer()
    region.timeout = 0.2
    with pytest.raises(StateInconsistentError, match="died inside a transaction"):
        region.capture(method="optimistic")
    with pytest.raises(StateInconsistentError, match="recover"):
        region.capture(method="cut")
    # force keeps the half-written rows and closes the transaction
    w = region.writer(force=True)
    assert region.epoch % 2 == 0 and region.read(5)["tag"] == b"half"
    w.write(6, bytes(ROW.itemsize))


def _begin_cut_and_wait(name: str, flag: str) -> None:
    from pyshm.state._state_c import lib

    s = State(name)
    assert lib.pyshm_state_cut_begin(s._c, os.getpid()) == 0
    open(flag, "w").close()
    while True:
        pass


def test_a_snapshot_killed_mid_cut_never_blocks_the_writer(region, new_name):
    """The writer never waits for a cut: a chunk the cut 'is copying' is taken over (its
    pre-image saved), a cut left half-fixed is finished by the writer itself."""
    from pyshm.state._state_c import lib

    w = region.writer()
    w.write(0, (1.0, 1, b"before", (0,) * 5))
    flag = f"/tmp/{new_name()}.flag"
    pid = fork(_begin_cut_and_wait, region.name, flag)
    wait_until(lambda: os.path.exists(flag), what="child cut")
    gen = region._load("C_ACTIVE")
    assert gen and region._load("C_PID") == pid
    # the dead cut "is copying" chunk 0: the worst moment to die
    chunks = np.frombuffer(region.segment.mmap, "<u8", count=2,
                           offset=region.params.geometry.off_chunks)
    chunks[0] = gen << 2 | SL.CHUNK_COPYING
    kill9(pid)
    os.unlink(flag)
    t0 = time.perf_counter()
    w.write(0, (3.0, 3, b"after", (0,) * 5))  # takes the chunk over at once
    assert time.perf_counter() - t0 < 1.0  # (no 2 ms spin, no timeout: it never waits)
    assert chunks[0] == gen << 2 | SL.CHUNK_SAVED and w.stats()["chunks_taken"] == 1
    assert region.read(0)["qty"] == 3
    # a cut bit left set by a dead owner: the writer's next begin finishes it
    e = region.epoch
    region._store("EPOCH", e | SL.EPOCH_CUT)
    w.write(1, (4.0, 4, b"fixed", (0,) * 5))
    assert region.read(1)["qty"] == 4 and not region._load("EPOCH") & SL.EPOCH_CUT
    assert w.stats()["cuts_fixed"] == 1 and region._load("C_EPOCH") == e
    # the dead owner's cut is abandoned by the next one, which then works
    assert lib.pyshm_state_cut_begin(region._c, os.getpid()) == lib.PYSHM_STATE_E_CUT
    assert lib.pyshm_state_cut_abandon(region._c, pid) == 1
    cap = region.capture(method="cut")
    assert cap.rows[0]["qty"] == 3 and cap.rows[1]["qty"] == 4


def _steal_writer(name: str, seconds: float) -> None:
    st = State(name)
    w = st.writer()
    end = time.monotonic() + seconds
    k = 0
    vals = np.zeros(1, HAMMER)
    while time.monotonic() < end:
        k += 1
        vals[:] = (k, k, (k,) * 6)
        with w.transaction(k):
            w.write_batch([k % st.rows, (k * 7) % st.rows], np.repeat(vals, 2))
    w.close()


def test_cuts_stay_consistent_while_the_writer_takes_chunks_from_them(new_name):
    """Small chunks and a writer touching them all the time: the writer often takes a
    chunk the cut is copying; every cut is still exactly one commit's rows."""
    name = new_name()
    rows = 512
    with State(name, create=True, dtype=HAMMER, rows=rows, chunk_rows=1) as st:
        pid = fork(_steal_writer, name, 1.5)
        n = 0
        while True:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            c = st.capture(method="cut")
            seq = c.seq or 0
            r = c.rows
            assert not ((r["a"] != r["b"]) | (r["c"] != r["a"][:, None]).any(axis=1)).any()
            # the commit at seq wrote value seq into rows seq % rows and 7*seq % rows
            if seq:
                assert r["a"][seq % rows] == seq and r["a"].max() == seq
            n += 1
        assert n > 10
    os.unlink(f"/dev/shm/{name}")
