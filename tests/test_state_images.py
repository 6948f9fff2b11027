"""State images: the image format's kind field, consistent cuts at a sequence,
inspect/export/diff, and damaged or mismatched images refused by name."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest
from statekit import BOOK, apply_order, fork, make_orders, reap, reference_book, wait_until

from pyshm import Ring, State
from pyshm.errors import ImageChecksumError, ImageError, InvalidParameterError
from pyshm.images import format as fmt
from pyshm.images.inspect import inspect as inspect_ring_image
from pyshm.images.restore import restore
from pyshm.images.snapshot import snapshot
from pyshm.state.images import (
    diff_states,
    export_state_image,
    inspect_state_image,
    read_state_image,
    snapshot_state,
)
from pyshm.state.recovery import Record


def _fold(state: State, orders: np.ndarray, first_seq: int = 0) -> None:
    w = state.writer()
    for k, o in enumerate(orders):
        seq = first_seq + k
        with w.transaction(seq):
            apply_order(w, Record(seq, 0, memoryview(o.tobytes())))
    w.close()


@pytest.fixture
def book(new_name):
    s = State(new_name(), create=True, dtype=BOOK, rows=64)
    yield s
    s.close()
    s.unlink()


def test_state_image_round_trip(book, tmp_path):
    orders = make_orders(500)
    _fold(book, orders)
    res = snapshot_state(book, tmp_path / "b.pyimg")
    assert res.header.applied_seq == 499 and res.header.row_count == 64
    img = read_state_image(tmp_path / "b.pyimg")
    assert img.dtype == BOOK and img.applied_seq == 499
    assert img.rows.tobytes() == reference_book(orders).tobytes()
    assert os.stat(tmp_path / "b.pyimg").st_mode & 0o777 == 0o600
    # the kind field: version 2, kind 1 at offset 184
    head = (tmp_path / "b.pyimg").read_bytes()[:fmt.HEADER_SIZE]
    assert struct.unpack_from("<I", head, 8)[0] == 2
    assert struct.unpack_from("<I", head, fmt.OFF_KIND)[0] == fmt.KIND_STATE
    assert fmt.image_kind(tmp_path / "b.pyimg") == "state"
    info = inspect_state_image(tmp_path / "b.pyimg")
    assert info["applied_seq"] == 499 and info["region"]["rows"] == 64
    assert info["dtype"][0] == "bid_px: <f8[4] @ 0" and info["checksums"] == "verified"


def test_zstd_state_image(book, tmp_path):
    _fold(book, make_orders(200))
    snapshot_state(book, tmp_path / "z.pyimg", compression="zstd", chunk_size=4096)
    img = read_state_image(tmp_path / "z.pyimg")
    assert img.header.compression_name == "zstd" and img.header.chunk_count > 1
    assert img.rows.tobytes() == book.to_numpy().tobytes()


def test_ring_images_stay_version_1_and_kinds_do_not_mix(book, new_name, tmp_path):
    rname = new_name()
    with Ring(rname, create=True, capacity=1 << 16) as r:
        r.producer().publish(b"x")
        snapshot(r, tmp_path / "r.pyimg")
        r.unlink()
    head = (tmp_path / "r.pyimg").read_bytes()[:fmt.HEADER_SIZE]
    assert struct.unpack_from("<I", head, 8)[0] == 1  # older pyshm reads ring images
    assert head[fmt.OFF_KIND:fmt.OFF_KIND + 4] == bytes(4)
    assert fmt.image_kind(tmp_path / "r.pyimg") == "ring"
    snapshot_state(book, tmp_path / "s.pyimg")
    with pytest.raises(ImageError, match="is a state image, not a ring image"):
        fmt.ImageReader(tmp_path / "s.pyimg")
    with pytest.raises(ImageError, match="is a state image"):
        restore(tmp_path / "s.pyimg", new_name())
    with pytest.raises(ImageError, match="is a state image"):
        inspect_ring_image(tmp_path / "s.pyimg")
    with pytest.raises(ImageError, match="is a ring image, not a state image"):
        read_state_image(tmp_path / "r.pyimg")


def test_unknown_kind_and_future_version_are_refused(book, tmp_path):
    snapshot_state(book, tmp_path / "s.pyimg")
    raw = bytearray((tmp_path / "s.pyimg").read_bytes())
    struct.pack_into("<I", raw, fmt.OFF_KIND, 7)
    struct.pack_into("<I", raw, fmt.HEADER_SIZE - 4, fmt.crc(bytes(raw[:fmt.HEADER_SIZE - 4])))
    (tmp_path / "k.pyimg").write_bytes(bytes(raw))
    with pytest.raises(ImageError, match="image kind 7 is unknown"):
        fmt.ImageReader(tmp_path / "k.pyimg", kind=None)


def test_damaged_state_images_name_the_problem(book, tmp_path):
    _fold(book, make_orders(300))
    path = tmp_path / "d.pyimg"
    snapshot_state(book, path, chunk_size=4096)
    raw = path.read_bytes()
    h = fmt.ImageReader(path, kind="state")
    off = h.chunks[1].offset + 10
    h.close()
    bad = bytearray(raw)
    bad[off] ^= 0xFF
    (tmp_path / "c.pyimg").write_bytes(bytes(bad))
    with pytest.raises(ImageChecksumError, match="chunk 1 of"):
        read_state_image(tmp_path / "c.pyimg")
    (tmp_path / "t.pyimg").write_bytes(raw[:-100])
    with pytest.raises(ImageError, match="truncated"):
        read_state_image(tmp_path / "t.pyimg")


def test_a_lying_description_with_valid_checksums_is_refused(book, tmp_path):
    """An image written by a buggy or hostile writer: checksums fine, description not
    what its CRC field says, or not a valid description."""
    from pyshm.state.images import write_state_image

    cap = book.capture()
    path = tmp_path / "l.pyimg"
    write_state_image(path, book, cap)
    # rewrite the description (same length) and re-checksum chunk, table and trailer
    img = fmt.ImageReader(path, kind="state")
    h = img.header
    data = bytearray(img.read_data())
    img.close()
    data[2:8] = b"XXXXXX"
    header = fmt.StateImageHeader(**{**h.__dict__, "chunk_count": 0, "stored_length": 0,
                                     "table_crc": 0})
    fmt.write_image(tmp_path / "l2.pyimg", header, bytes(data))
    with pytest.raises(ImageError, match="description checksum mismatch"):
        read_state_image(tmp_path / "l2.pyimg")
    header = fmt.StateImageHeader(**{**header.__dict__, "desc_crc": fmt.crc(bytes(
        data[:h.desc_length]))})
    fmt.write_image(tmp_path / "l3.pyimg", header, bytes(data))
    with pytest.raises(ImageError, match="not valid JSON|dtype description"):
        read_state_image(tmp_path / "l3.pyimg")


def test_export_npz_needs_no_pickle(book, tmp_path):
    orders = make_orders(100)
    _fold(book, orders)
    snapshot_state(book, tmp_path / "e.pyimg")
    assert export_state_image(tmp_path / "e.pyimg", tmp_path / "e.npz") == 64
    with np.load(tmp_path / "e.npz", allow_pickle=False) as z:
        assert z["rows"].tobytes() == reference_book(orders).tobytes()
        assert z["applied_seq"][0] == 99
        assert (z["field.position"] == reference_book(orders)["position"]).all()
        assert z["field.bid_px"].shape == (64, 4)
        desc = bytes(z["description"]).decode()
        assert json.loads(desc)["itemsize"] == BOOK.itemsize


def test_diff_compares_row_by_row(book, tmp_path, new_name):
    orders = make_orders(300)
    _fold(book, orders[:200])
    snapshot_state(book, tmp_path / "a.pyimg")
    snapshot_state(book, tmp_path / "a2.pyimg")
    d = diff_states(str(tmp_path / "a.pyimg"), str(tmp_path / "a2.pyimg"))
    assert d.identical and d.compared_rows == 64 and d.a_seq == d.b_seq == 199
    _fold(book, orders[200:201], first_seq=200)
    snapshot_state(book, tmp_path / "b.pyimg")
    d = diff_states(str(tmp_path / "a.pyimg"), str(tmp_path / "b.pyimg"))
    sym = int(orders[200]["symbol"])
    assert not d.identical and d.differing_rows == 1
    assert d.examples[0].startswith(f"row {sym}:") and "last_seq" in d.field_counts
    assert d.a_seq == 199 and d.b_seq == 200
    # an image against the live region, and against another dtype
    assert diff_states(str(tmp_path / "b.pyimg"), book.name).identical
    with State(new_name(), create=True, dtype=[("x", "<f8")], rows=64) as other:
        d = diff_states(str(tmp_path / "b.pyimg"), other.name)
        assert d.dtype_differs and not d.identical
        other.unlink()
    with Ring(new_name(), create=True, capacity=1 << 16) as r:
        snapshot(r, tmp_path / "r.pyimg")
        r.unlink()
    with pytest.raises(InvalidParameterError, match="is a ring image"):
        diff_states(str(tmp_path / "r.pyimg"), str(tmp_path / "b.pyimg"))


def _fold_forever(name: str, orders: np.ndarray, flag: str) -> None:
    st = State(name)
    w = st.writer()
    open(flag, "w").close()
    k = 0
    while True:  # the same records again and again: the state keeps changing
        o = orders[k % len(orders)]
        with w.transaction(k):
            apply_order(w, Record(k, 0, memoryview(o.tobytes())))
        k += 1


def test_images_taken_while_the_writer_runs_are_cuts_at_their_sequence(book, tmp_path,
                                                                        new_name):
    """Every image of a live writer equals the reference fold of exactly the records up
    to its sequence S: bit for bit."""
    orders = make_orders(2000, seed=3)
    flag = f"/tmp/{new_name()}.flag"
    pid = fork(_fold_forever, book.name, orders, flag)
    try:
        wait_until(lambda: os.path.exists(flag), what="writer")
        seqs = []
        for i in range(12):
            res = snapshot_state(book, tmp_path / f"i{i}.pyimg", method="cut" if i % 2
                                 else "auto")
            seqs.append(res.header.applied_seq)
    finally:
        os.kill(pid, 9)
        reap(pid)
        os.unlink(flag)
    assert len(set(seqs)) > 3  # the writer really moved between images
    full = np.concatenate([orders] * (max(s for s in seqs if s is not None) // 2000 + 2))
    for i, s in enumerate(seqs):
        img = read_state_image(tmp_path / f"i{i}.pyimg")
        ref = reference_book(full, upto=0 if s is None else s + 1)
        assert img.rows.tobytes() == ref.tobytes(), (i, s)
