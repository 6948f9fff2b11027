"""Restore in place: the stopped ring's own pages are overwritten, only after the whole
image (checksums and records) is verified through a mapping of the file."""

from __future__ import annotations

import gc
import os
import struct
import subprocess
import sys

import pytest
from ringdata import fill, payload

from pyshm import layout
from pyshm.errors import (
    ImageChecksumError,
    ImageError,
    InvalidParameterError,
    ProducerBusyError,
    RingNotFoundError,
)
from pyshm.images import format as fmt
from pyshm.images import restore, snapshot
from pyshm.images.records import UNWRAPPED, summarize, summarize_file_window
from pyshm.ring import Ring

CAP = 1 << 15


@pytest.fixture
def names(new_name):
    return new_name


def records(ring: Ring, start="oldest") -> list[tuple[int, int, bytes]]:
    c = ring.consumer(start=start)
    out = []
    while (m := c.read()) is not None:
        out.append((m.sequence, m.type, bytes(m.data)))
    c.close()
    return out


def target_ring(name: str, n: int = 300) -> bytes:
    """A stopped ring of the image's geometry holding other records; its bytes."""
    with Ring(name, create=True, capacity=CAP) as other:
        fill(other, n, start=10_000)
        # a slot left behind by a consumer that died (no such pid can exist)
        buf = other.segment.buf
        off = layout.slot_offset(0)
        struct.pack_into("<q", buf, off + layout.SLOT_OFF_PID, 999_999_999)
        struct.pack_into("<Q", buf, off + layout.SLOT_OFF_FLAGS, layout.SLOT_ACTIVE)
        out = bytes(buf)
        buf.release()
        return out


def shm_bytes(name: str) -> bytes:
    with open(f"/dev/shm/{name}", "rb") as f:
        return f.read()


@pytest.fixture(params=["none", "zstd"])
def image(request, tmp_path, names):
    with Ring(names(), create=True, capacity=CAP) as ring:
        fill(ring, 2500)  # wraps several times: the window starts mid-ring
        before = records(ring)
        snapshot(ring, tmp_path / "img", chunk_size=4096, compression=request.param)
    return tmp_path / "img", before


def test_in_place_restores_records_and_producer_continues(image, names):
    path, before = image
    name = names()
    target_ring(name)
    info = restore(path, name, in_place=True)
    assert info.next_sequence == before[-1][0] + 1
    with Ring(name) as ring:
        assert records(ring) == before
        assert ring.segment.size == layout.segment_size(CAP)
        fill(ring, 5, start=info.next_sequence)
        assert [r[0] for r in records(ring, start=info.next_sequence)] == \
            list(range(info.next_sequence, info.next_sequence + 5))
        assert ring.slots() == []  # the dead consumer's slot went with the old ring


@pytest.mark.parametrize("which", [0, -1])
def test_damaged_chunk_leaves_target_untouched(tmp_path, names, which):
    with Ring(names(), create=True, capacity=CAP) as ring:
        fill(ring, 2500)
        snapshot(ring, tmp_path / "img", chunk_size=4096)
    path = tmp_path / "img"
    name = names()
    snap = target_ring(name)
    raw = bytearray(path.read_bytes())
    with fmt.ImageReader(path) as r:
        e = r.chunks[which]
    raw[e.offset + e.stored_length - 1] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(ImageChecksumError, match="chunk"):
        restore(path, name, in_place=True)
    assert shm_bytes(name) == snap
    gc.collect()  # the walk failed too, on another thread: nothing may point at the map


def lying_image(tmp_path, *, claim: int, corrupt_length: bool = False):
    enc = layout.RecordEncoder(CAP)
    data = bytearray(b"".join(raw for i in range(200) for _, raw in
                              enc.place(payload(i, 30))))
    if corrupt_length:
        struct.pack_into("<i", data, 8 * 48, 1 << 20)  # record 8: absurd length
    params = layout.RingParams(capacity=CAP, max_record=layout.default_max_record(CAP))
    h = fmt.ImageHeader(params, 0, len(data), 0, claim, claim, fmt.now_ns())
    fmt.write_image(tmp_path / "lie", h, bytes(data), chunk_size=4096)
    return tmp_path / "lie"


def test_records_that_lie_are_refused_before_the_target_changes(tmp_path, names):
    name = names()
    snap = target_ring(name)
    with pytest.raises(ImageError, match="disagree with the image header"):
        restore(lying_image(tmp_path, claim=201), name, in_place=True)
    assert shm_bytes(name) == snap


def test_invalid_record_reported_at_its_image_position(tmp_path, names):
    name = names()
    snap = target_ring(name)
    with pytest.raises(ImageError, match="position 384 has invalid length"):
        restore(lying_image(tmp_path, claim=200, corrupt_length=True), name, in_place=True)
    assert shm_bytes(name) == snap
    # the error's traceback must not keep a buffer export of the unmapped image window
    gc.collect()


def test_file_window_walk_matches_python_walker(tmp_path, names):
    with Ring(names(), create=True, capacity=CAP, partitions=8) as ring:
        fill(ring, 2500)
        snapshot(ring, tmp_path / "img", chunk_size=4096)
    with fmt.ImageReader(tmp_path / "img") as r:
        h = r.header
        assert h.first_position % CAP  # the shifted-window case
        data = r.read_data()
        want = summarize(data, h.first_position, UNWRAPPED, h.first_position,
                         h.end_position, h.params.partition_size, h.params.max_record)
        got = summarize_file_window(r.fileno(), r.chunks[0].offset, h.params,
                                    h.first_position, h.end_position)
    assert (got.record_count, got.first_sequence, got.last_sequence) == \
        (want.record_count, want.first_sequence, want.last_sequence)
    assert want.record_count == h.record_count


def test_geometry_mismatch_refused(image, names):
    path, _ = image
    name = names()
    with Ring(name, create=True, capacity=CAP * 2) as other:
        fill(other, 10)
        snap = bytes(other.segment.buf)
    with pytest.raises(InvalidParameterError, match="restore into a new ring"):
        restore(path, name, in_place=True)
    assert shm_bytes(name) == snap


def test_missing_target_refused(image, names):
    with pytest.raises(RingNotFoundError, match="in place"):
        restore(image[0], names(), in_place=True)


def test_live_producer_refused(image, names, tmp_path):
    path, _ = image
    name = names()
    target_ring(name)
    script = tmp_path / "producer.py"
    script.write_text(
        "import sys\nfrom pyshm.ring import Ring\n"
        "r = Ring(sys.argv[1]); p = r.producer(); p.publish(b'x')\n"
        "print('ready', flush=True); sys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, str(script), name], cwd=tmp_path,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        before = shm_bytes(name)
        with pytest.raises(ProducerBusyError, match=f"producer pid {proc.pid}"):
            restore(path, name, in_place=True)
        assert shm_bytes(name) == before
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_open_ring_object_is_written_through_its_own_mapping(image, names):
    path, before = image
    name = names()
    target_ring(name)
    with Ring(name, prefault=True) as ring:
        view = ring.data_array()  # the caller's mapping, still in use afterwards
        restore(path, ring, in_place=True)
        assert records(ring) == before
        assert ring.next_sequence == before[-1][0] + 1
        del view
    with Ring(name) as again:
        assert records(again) == before


def test_ring_object_needs_in_place_and_a_writable_mapping(image, names):
    path, _ = image
    name = names()
    target_ring(name)
    with Ring(name) as ring:
        with pytest.raises(InvalidParameterError, match="in_place=True"):
            restore(path, ring)
    with pytest.raises(InvalidParameterError, match="Ring/Segment"):
        restore(path, object(), in_place=True)


def test_new_segment_without_write_syscall_falls_back_to_the_mapping(
        tmp_path, names, monkeypatch):
    """hugetlbfs has no write(2): the window is then copied through the mapping."""
    import errno

    with Ring(names(), create=True, capacity=CAP) as ring:
        fill(ring, 2500)
        before = records(ring)
        snapshot(ring, tmp_path / "img", chunk_size=4096)

    def no_write(*a, **k):
        raise OSError(errno.EINVAL, "no write here")

    monkeypatch.setattr(os, "pwrite", no_write)
    name = names()
    restore(tmp_path / "img", name)
    monkeypatch.undo()
    with Ring(name) as r:
        assert records(r) == before


def test_records_larger_than_the_walkers_cache_buffer(tmp_path, names):
    """The walker reads into a 1 MiB buffer; a bigger record is read on its own."""
    sizes = [100, (1 << 20) + 40, 7, (3 << 19), 64]
    with Ring(names(), create=True, capacity=16 << 20, partitions=2) as ring:
        p = ring.producer()
        for i, n in enumerate(sizes):
            p.publish(payload(i, n))
        p.close()
        before = records(ring)
        snapshot(ring, tmp_path / "big", chunk_size=1 << 20)
    name = names()
    restore(tmp_path / "big", name)
    with Ring(name) as r:
        assert records(r) == before and [len(x[2]) for x in before] == sizes
        restore(tmp_path / "big", r, in_place=True)
        assert records(r) == before


def test_cli_restore_in_place(image, names, capsys):
    from pyshm.cli import main

    path, before = image
    img = str(path)
    target = names()
    target_ring(target)
    assert main(["restore", img, "--to", target, "--in-place", "--no-progress"]) == 0
    out = capsys.readouterr().out
    nxt = before[-1][0] + 1
    assert f"restored {len(before)} records" in out and f"continue at sequence {nxt}" in out
    with Ring(target) as r:
        assert records(r) == before
    # exclusive with --overwrite; a ring as the source is refused (images only)
    assert main(["restore", img, "--to", target, "--in-place", "--overwrite"]) == 1
    assert "exclusive" in capsys.readouterr().err
    assert main(["restore", target, "--to", target, "--in-place"]) == 1
    assert "not an image file" in capsys.readouterr().err
    # no such ring: nothing is created
    missing = names()
    assert main(["restore", img, "--to", missing, "--in-place"]) == 1
    assert "no ring named" in capsys.readouterr().err
    assert not os.path.exists(f"/dev/shm/{missing}")


def test_cli_restore_help_shows_in_place(capsys):
    from pyshm.cli import main

    with pytest.raises(SystemExit):
        main(["restore", "--help"])
    out = capsys.readouterr().out
    assert "--in-place" in out and "pyshm restore md.pyimg --to md --in-place" in out
