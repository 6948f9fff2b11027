"""Image file format v1: round trips, atomic writes, and refusal of every kind of damage."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyshm import layout
from pyshm.errors import (
    ImageChecksumError,
    ImageError,
    ImageTruncatedError,
    ImageVersionError,
    RingExistsError,
)
from pyshm.images import format as fmt

CAP = 1 << 20
PARAMS = layout.RingParams(capacity=CAP, max_record=layout.default_max_record(CAP),
                           partition_count=8, name="unit")


def encoded_window(n: int, start_seq: int = 0) -> tuple[bytes, int]:
    enc = layout.RecordEncoder(CAP, 8, sequence=start_seq)
    out = bytearray()
    for i in range(n):
        for _, raw in enc.place(bytes([i % 256]) * (i * 37 % 300)):
            out += raw
    return bytes(out), enc.sequence


def header_for(data: bytes, n: int, first_seq: int = 0) -> fmt.ImageHeader:
    return fmt.ImageHeader(PARAMS, 0, len(data), first_seq, first_seq + n, n, fmt.now_ns())


@pytest.fixture
def image(tmp_path):
    data, _ = encoded_window(300)
    path = tmp_path / "a.img"
    fmt.write_image(path, header_for(data, 300), data, chunk_size=4096)
    return path, data


@pytest.mark.parametrize("compression", ["none", "zstd"])
@pytest.mark.parametrize("chunk", [4096, 8192, 1 << 20])
def test_round_trip(tmp_path, compression, chunk):
    data, _ = encoded_window(500)
    path = tmp_path / "x.img"
    h = fmt.write_image(path, header_for(data, 500), data, compression=compression,
                        chunk_size=chunk)
    assert h.chunk_count == fmt.expected_chunks(len(data), chunk)
    with fmt.ImageReader(path) as r:
        assert r.header.record_count == 500 and r.header.next_sequence == 500
        assert r.header.compression_name == compression
        assert r.header.params.capacity == CAP and r.header.params.name == "unit"
        assert bytes(r.read_data()) == data
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_empty_window_round_trip(tmp_path):
    path = tmp_path / "e.img"
    h = fmt.ImageHeader(PARAMS, 0, 0, 7, 7, 0, fmt.now_ns())
    fmt.write_image(path, h, b"")
    with fmt.ImageReader(path) as r:
        assert r.header.chunk_count == 0 and r.read_data().size == 0
        assert r.header.next_sequence == 7 and r.header.last_sequence is None


def test_existing_file_is_not_replaced_without_overwrite(tmp_path, image):
    path, data = image
    before = path.read_bytes()
    with pytest.raises(RingExistsError):
        fmt.write_image(path, header_for(data, 300), data)
    assert path.read_bytes() == before
    fmt.write_image(path, header_for(data, 300), data, overwrite=True, chunk_size=8192)
    assert path.read_bytes() != before


def test_failed_write_leaves_no_file_and_no_temp(tmp_path):
    data, _ = encoded_window(50)
    path = tmp_path / "f.img"

    def boom(done, total):
        raise RuntimeError("disk pulled")

    with pytest.raises(RuntimeError):
        fmt.write_image(path, header_for(data, 50), data, chunk_size=4096, progress=boom)
    assert os.listdir(tmp_path) == []


def test_temporaries_of_killed_writers_are_removed_live_ones_kept(tmp_path):
    import subprocess
    import sys
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # its pid is now dead (reuse within this test is vanishingly unlikely)
    path = tmp_path / "snap.img"
    dead = tmp_path / f".snap.img.tmp-{child.pid}-0badc0de"
    live = tmp_path / f".snap.img.tmp-{os.getpid()}-0badc0de"
    other = tmp_path / f".other.img.tmp-{child.pid}-0badc0de"
    for f in (dead, live, other):
        f.write_bytes(b"half an image")
    data, _ = encoded_window(10)
    fmt.write_image(path, header_for(data, 10), data)
    assert not dead.exists()
    assert live.exists() and other.exists()
    assert fmt.ImageReader(path).header.record_count == 10


def test_bad_arguments_are_named(tmp_path):
    data, _ = encoded_window(10)
    with pytest.raises(ValueError, match="compression"):
        fmt.write_image(tmp_path / "a", header_for(data, 10), data, compression="rar")
    with pytest.raises(ValueError, match="chunk size"):
        fmt.write_image(tmp_path / "a", header_for(data, 10), data, chunk_size=100)
    with pytest.raises(ValueError, match="bytes but the window"):
        fmt.write_image(tmp_path / "a", header_for(data, 10), data[:-8])


# ---------------------------------------------------------------------- damage

def rewrite(path, offset, new: bytes):
    raw = bytearray(path.read_bytes())
    raw[offset:offset + len(new)] = new
    path.write_bytes(bytes(raw))


def flip(path, offset, bit=0):
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 1 << bit
    path.write_bytes(bytes(raw))


def test_zero_length_file(tmp_path):
    p = tmp_path / "z.img"
    p.write_bytes(b"")
    with pytest.raises(ImageTruncatedError, match="empty file"):
        fmt.ImageReader(p)


def test_wrong_magic(image):
    path, _ = image
    rewrite(path, 0, b"NOTANIMG")
    with pytest.raises(ImageError, match="not a pyshm image"):
        fmt.ImageReader(path)


def test_future_version(image):
    path, _ = image
    # version 2 is read (it adds the kind field: state images); 3 is the future
    rewrite(path, 8, struct.pack("<I", 3))
    with pytest.raises(ImageVersionError, match="version 3"):
        fmt.ImageReader(path)


@pytest.mark.parametrize("keep", [4, 100, fmt.HEADER_SIZE + 10, -1, -fmt.TRAILER_SIZE,
                                  -4096])
def test_truncated(image, keep):
    path, _ = image
    raw = path.read_bytes()
    path.write_bytes(raw[:keep])
    with pytest.raises(ImageTruncatedError, match="truncated"):
        fmt.ImageReader(path)


def test_appended_garbage(image):
    path, _ = image
    with open(path, "ab") as f:
        f.write(b"\0" * 8)
    with pytest.raises(ImageTruncatedError, match="unexpected bytes"):
        fmt.ImageReader(path)


@pytest.mark.parametrize("offset", [16, 40, 64, 100, 200, fmt.HEADER_SIZE - 1])
def test_header_bit_flip(image, offset):
    path, _ = image
    flip(path, offset)
    with pytest.raises(ImageChecksumError, match="header checksum") as ei:
        fmt.ImageReader(path)
    assert ei.value.part == "header"


def test_table_bit_flip(image):
    path, _ = image
    flip(path, fmt.HEADER_SIZE + fmt.ENTRY_SIZE + 12, 3)  # chunk 1's stored CRC
    with pytest.raises(ImageChecksumError, match="table") as ei:
        fmt.ImageReader(path)
    assert ei.value.part == "table"


def test_trailer_bit_flip(image):
    path, _ = image
    size = path.stat().st_size
    flip(path, size - fmt.TRAILER_SIZE + 17)
    with pytest.raises(ImageChecksumError, match="trailer") as ei:
        fmt.ImageReader(path)
    assert ei.value.part == "trailer"


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_chunk_bit_flip_names_the_chunk(tmp_path, compression):
    data, _ = encoded_window(800)
    path = tmp_path / "c.img"
    fmt.write_image(path, header_for(data, 800), data, chunk_size=4096,
                    compression=compression)
    with fmt.ImageReader(path) as r:
        target = 2 if len(r.chunks) > 2 else len(r.chunks) - 1
        e = r.chunks[target]
    flip(path, e.offset + e.stored_length // 2, 5)
    with fmt.ImageReader(path) as r:  # structure is intact: the chunk is caught on read
        with pytest.raises(ImageChecksumError, match=f"chunk {target} of") as ei:
            r.verify()
    assert ei.value.part == "chunk" and ei.value.chunk == target


def test_header_lying_about_window_is_refused(tmp_path):
    data, _ = encoded_window(20)
    path = tmp_path / "l.img"
    fmt.write_image(path, header_for(data, 20), data)
    raw = bytearray(path.read_bytes())
    # the window end moves past the capacity; the header CRC is recomputed, so only the
    # field checks can catch it
    struct.pack_into("<Q", raw, 72, CAP * 4)
    struct.pack_into("<I", raw, fmt.HEADER_SIZE - 4, fmt.crc(bytes(raw[:fmt.HEADER_SIZE - 4])))
    path.write_bytes(bytes(raw))
    with pytest.raises(ImageError, match="window"):
        fmt.ImageReader(path)


def test_is_image(tmp_path, image):
    path, _ = image
    assert fmt.is_image(path)
    (tmp_path / "t").write_bytes(b"hello")
    assert not fmt.is_image(tmp_path / "t")
    assert not fmt.is_image(tmp_path / "missing")


# ------------------------------------------------------------- property-based

_VALID: dict[str, bytes] = {}


def _valid_image(tmp_path_factory, compression: str) -> bytes:
    if compression not in _VALID:
        data, _ = encoded_window(400)
        p = tmp_path_factory.mktemp("valid") / "v.img"
        fmt.write_image(p, header_for(data, 400), data, chunk_size=4096,
                        compression=compression)
        _VALID[compression] = p.read_bytes()
    return _VALID[compression]


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 30), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 30), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 30), st.integers(0, 255)),
    st.tuples(st.just("set"), st.integers(0, 1 << 30), st.integers(0, 255)),
)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(muts=st.lists(mutation, min_size=1, max_size=3),
       compression=st.sampled_from(["none", "zstd"]))
def test_no_mutation_is_accepted_silently(tmp_path_factory, muts, compression):
    original = _valid_image(tmp_path_factory, compression)
    raw = bytearray(original)
    for kind, where, arg in muts:
        if not raw:
            break
        i = where % len(raw)
        if kind == "flip":
            raw[i] ^= 1 << arg
        elif kind == "truncate":
            del raw[i:]
        elif kind == "insert":
            raw.insert(i, arg)
        else:
            raw[i] = arg
    p = tmp_path_factory.mktemp("m") / "m.img"
    p.write_bytes(bytes(raw))
    try:
        with fmt.ImageReader(p) as r:
            got = r.read_data()
    except ImageError:
        return  # refused with a pyshm error: the wanted outcome for any damage
    # accepted: only allowed if the bytes are exactly the original ones
    assert bytes(raw) == original
    assert got.size == struct.unpack_from("<Q", original, 112)[0]


def test_read_data_is_verified_copy(image):
    path, data = image
    with fmt.ImageReader(path) as r:
        arr = r.read_data()
    assert isinstance(arr, np.ndarray) and bytes(arr) == data


def test_durable_writes_start_writeback_chunk_by_chunk(tmp_path, monkeypatch):
    """With sync=True the writer asks the kernel to start writing each chunk's whole
    pages as soon as they are written (not all at the fsync): page-aligned, contiguous
    ranges after the header and table, covering the data; never with sync=False."""
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(fmt, "_start_writeback", lambda fd, off, n: calls.append((off, n)))
    data, n = encoded_window(3000)
    assert len(data) > 5 * fmt.MIN_CHUNK
    h = fmt.write_image(tmp_path / "a", header_for(data, n), data, chunk_size=fmt.MIN_CHUNK,
                        sync=True)
    data_start = fmt.HEADER_SIZE + h.chunk_count * fmt.ENTRY_SIZE
    assert len(calls) >= h.chunk_count - 1
    assert calls[0][0] == -(-data_start // 4096) * 4096
    for (off, length), (nxt, _) in zip(calls, calls[1:], strict=False):
        assert off % 4096 == 0 and length % 4096 == 0 and off + length == nxt
    end = calls[-1][0] + calls[-1][1]
    assert data_start + len(data) - 4096 < end <= data_start + len(data)
    with fmt.ImageReader(tmp_path / "a") as r:  # and the image is intact
        assert bytes(r.read_data()) == data and r.header == h
    calls.clear()
    fmt.write_image(tmp_path / "b", header_for(data, n), data, chunk_size=fmt.MIN_CHUNK,
                    sync=False)
    assert calls == []
