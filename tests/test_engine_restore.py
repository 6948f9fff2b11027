"""Restore through the engine: the CPU engine's copy mode (pyshm.engine.Copier) and the
restores that use it. In place: verified first, copied with the CRC checked again from
the bytes written, a damaged image refused with the target untouched, an image changed
during the copy detected. Into a new segment: one pass (copy with the check), damage
refused with no target and no temporary left. Which engine a restore takes (auto, a name,
none, an engine without a copy mode, one that writes only DMA-able memory), the staging
interface a DMA engine needs, and `pyshm restore --engine`."""

from __future__ import annotations

import glob
import os

import crc32c as ref
import numpy as np
import pytest
from pyshm.fallback.cpu import CpuCopier, CpuEngine

from pyshm.cli import main
from pyshm.engine import CopyChecksumError, CopyChunk, open_copier
from pyshm.errors import (
    CorruptSegmentError,
    EngineError,
    ImageChecksumError,
    ImageError,
    InvalidParameterError,
)
from pyshm.images import format as fmt
from pyshm.images import restore, snapshot
from pyshm.ring import Ring

CAP = 1 << 20


def _job(src: np.ndarray, cap: int, start: int, size: int) -> list[CopyChunk]:
    return [CopyChunk(o, start + o, min(size, len(src) - o),
                      ref.crc32c(src[o:o + size].tobytes())) for o in range(0, len(src), size)]


@pytest.mark.parametrize("threads", [1, 3])
def test_copier_copies_wraps_and_checks(threads):
    rng = np.random.default_rng(7)
    src = rng.integers(0, 256, (9 << 20) + 40, dtype=np.uint8)
    cap = 1 << 24
    start = cap - 4096 + 8  # the copy wraps
    job = _job(src, cap, start, 5 << 20)  # chunks larger than the 4 MiB pieces
    job.append(CopyChunk(len(src), start + len(src), 0, 0))  # an empty chunk
    dst = np.zeros(cap, np.uint8)
    copier = CpuCopier(threads)
    copier.verify(src, job)
    copier.copy(src, dst, cap, job)
    off = start & (cap - 1)
    assert (np.concatenate([dst[off:], dst[:len(src) - (cap - off)]]) == src).all()
    bad = list(job)
    bad[1] = CopyChunk(bad[1].source_offset, bad[1].position, bad[1].length, bad[1].crc ^ 4)
    with pytest.raises(CopyChecksumError) as exc:
        copier.verify(src, bad)
    assert exc.value.chunk == 1
    with pytest.raises(InvalidParameterError):
        copier.verify(src, [CopyChunk(len(src) - 8, 0, 16, 0)])  # beyond the source
    with pytest.raises(InvalidParameterError):
        copier.copy(src, dst, cap, [CopyChunk(0, 0, cap + 8, 0)])  # longer than the ring


def test_auto_picks_the_cpu_copier():
    c = open_copier("auto")
    assert isinstance(c, CpuCopier) and c.threads >= 1
    assert open_copier(None) is None


@pytest.fixture
def image(new_name, tmp_path):
    """A wrapped 1 MiB ring, its records, and an uncompressed image of it in 64 KiB
    chunks."""
    name = new_name()
    with Ring(name, create=True, capacity=CAP) as ring:
        p = ring.producer()
        i = 0
        while ring.tail < CAP + CAP // 3:
            p.publish(bytes([i & 0xFF]) * (100 + i % 900))
            i += 1
        p.close()
        path = tmp_path / "r.pyimg"
        snapshot(ring, path, chunk_size=64 << 10)
        want = _records(ring)
    return path, want


def _records(ring: Ring) -> list[tuple[int, bytes]]:
    c = ring.consumer(start="oldest")
    out = []
    while (m := c.read()) is not None:
        out.append((m.sequence, bytes(m.data)))
    c.close()
    return out


def _target(new_name) -> Ring:
    ring = Ring(new_name(), create=True, capacity=CAP, prefault=True)
    p = ring.producer()
    p.publish(b"old contents")
    p.close()
    return ring


class Spy(CpuCopier):
    def __init__(self, threads: int = 2):
        super().__init__(threads)
        self.calls: list[str] = []

    def verify(self, source, chunks):
        self.calls.append("verify")
        super().verify(source, chunks)

    def copy(self, source, target, capacity, chunks):
        self.calls.append("copy")
        super().copy(source, target, capacity, chunks)


def test_in_place_restore_goes_through_the_engine(image, new_name):
    path, want = image
    ring = _target(new_name)
    spy = Spy()
    info = restore(path, ring, in_place=True, engine=spy)
    assert spy.calls and spy.calls[0] == "verify" and spy.calls[-1] == "copy"
    assert spy.calls.index("copy") > max(i for i, c in enumerate(spy.calls) if c == "verify")
    assert _records(ring) == want
    assert info.next_sequence == want[-1][0] + 1
    ring.close()


def test_default_restore_uses_the_engine_and_none_does_not(image, new_name, monkeypatch):
    path, want = image
    used = []
    real = CpuCopier.copy
    monkeypatch.setattr(CpuCopier, "copy", lambda self, *a: used.append(1) or real(self, *a))
    ring = _target(new_name)
    restore(path, ring, in_place=True)
    assert used and _records(ring) == want
    used.clear()
    restore(path, ring, in_place=True, engine=None)
    assert not used and _records(ring) == want
    ring.close()


def test_damaged_chunk_refused_target_untouched(image, new_name):
    path, _ = image
    with fmt.ImageReader(path) as r:
        bad = r.chunks[5]
    with open(path, "r+b") as f:
        f.seek(bad.offset + 1000)
        b = f.read(1)
        f.seek(bad.offset + 1000)
        f.write(bytes([b[0] ^ 0x10]))
    ring = _target(new_name)
    before = bytes(ring.segment.buf)
    with pytest.raises(ImageChecksumError, match="chunk 5 of") as exc:
        restore(path, ring, in_place=True, engine=Spy())
    assert exc.value.chunk == 5
    assert bytes(ring.segment.buf) == before  # not one byte changed
    ring.close()


def test_image_changed_during_the_copy_is_caught(image, new_name):
    """Fault injection: the image file is modified after the engine verified it and
    before it copies (the page cache the engine reads is the file's). The engine's check
    on the way catches it; the ring is left refused, as a killed restore leaves it."""
    path, _ = image
    with fmt.ImageReader(path) as r:
        victim = r.chunks[3]

    class Tamper(CpuCopier):
        def copy(self, source, target, capacity, chunks):
            fd = os.open(path, os.O_RDWR)
            try:
                old = os.pread(fd, 1, victim.offset + 10)
                os.pwrite(fd, bytes([old[0] ^ 0xFF]), victim.offset + 10)
            finally:
                os.close(fd)
            super().copy(source, target, capacity, chunks)

    ring = _target(new_name)
    name = ring.segment.name
    with pytest.raises(ImageChecksumError, match="chunk 3 changed while it was restored"):
        restore(path, ring, in_place=True, engine=Tamper(2))
    ring.close()
    with pytest.raises(CorruptSegmentError):
        Ring(name)


def test_staging_buffer_interface(image, new_name):
    """An engine that reads only its own (DMA) buffers gets the image's bytes copied
    into the buffer it hands out, and is given that buffer as the source."""
    path, want = image
    seen = []

    class Staging(CpuCopier):
        def staging_buffer(self, size, position=0):
            self.buf = bytearray(size)
            return self.buf

        def verify(self, source, chunks):
            seen.append(source is self.buf)
            super().verify(source, chunks)

    ring = _target(new_name)
    restore(path, ring, in_place=True, engine=Staging(2))
    assert seen and all(seen)
    assert _records(ring) == want
    ring.close()


def test_chained_walk_matches_the_sequential_walk(new_name):
    """The walk cut into partition chains (what restores and snapshots use) gives the
    sequential walker's summary and, on damage anywhere, its error message."""
    import random

    from pyshm.errors import CorruptSegmentError as Corrupt
    from pyshm.images.records import summarize, walk

    with Ring(new_name(), create=True, capacity=1 << 16, partitions=16) as ring:
        p = ring.producer()
        i = 0
        while ring.tail < (1 << 16) + 5000:
            p.publish(bytes(20 + (i * 37) % 300))
            i += 1
        p.close()
        cap, tail = ring.capacity, ring.tail
        start = tail - cap + (-(tail - cap)) % ring.params.partition_size
        data = bytearray(ring.segment.buf[4096:4096 + cap])
    args = (0, cap - 1, start, tail, cap // 16, cap // 64)
    assert walk(data, *args) == summarize(data, *args) == walk(data, *args, ahead=lambda _: None)
    rng = random.Random(9)
    for _ in range(60):
        bad = bytearray(data)
        off = rng.randrange(0, cap // 8) * 8
        bad[off:off + 8] = rng.randbytes(8)
        results = []
        for fn in (walk, summarize):
            try:
                results.append(fn(bad, *args))
            except Corrupt as exc:
                results.append(str(exc))
        assert results[0] == results[1]


# ---- into a new segment ------------------------------------------------------------


def test_new_segment_restore_is_one_engine_pass(image, new_name):
    """No verify pass: the engine's copy checks every chunk from the bytes it wrote."""
    path, want = image
    spy = Spy()
    name = new_name()
    info = restore(path, name, engine=spy)
    assert spy.calls and set(spy.calls) == {"copy"}
    assert info.engine == "cpu"
    with Ring(name) as ring:
        assert _records(ring) == want
    name2 = new_name()
    assert restore(path, name2, engine=None).engine is None  # the CPU path
    with open(f"/dev/shm/{name}", "rb") as a, open(f"/dev/shm/{name2}", "rb") as b:
        # the same ring but for its identity and creation fields
        assert a.read()[0x1000:] == b.read()[0x1000:]


def _damage(path, chunk: int, at: int) -> None:
    with fmt.ImageReader(path) as r:
        off = r.chunks[chunk].offset + at
    with open(path, "r+b") as f:
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0x10]))


def test_new_segment_damaged_chunk_leaves_no_ring(image, new_name):
    path, _ = image
    _damage(path, 7, 2000)
    name = new_name()
    with pytest.raises(ImageChecksumError, match="chunk 7 of .*checksum mismatch") as exc:
        restore(path, name, engine=Spy())
    assert exc.value.chunk == 7
    assert not os.path.exists(f"/dev/shm/{name}")
    assert glob.glob(f"/dev/shm/{name}.restore-*") == []


def test_new_segment_damaged_record_header_names_the_chunk(image, new_name):
    """A flipped bit in a record's length fails the record walk, which runs before the
    copy; the damage is still reported as the chunk that holds it."""
    import struct

    path, _ = image
    with fmt.ImageReader(path) as r:
        h, base = r.header, r.data_offset
    window = path.read_bytes()[base:base + h.data_length]
    psize = h.params.partition_size
    pos = 0  # the first record boundary at or after chunk 4's start
    while pos < 4 * h.chunk_size:
        length, kind = struct.unpack_from("<ii", window, pos)
        pos += psize - (h.first_position + pos) % psize if kind == -1 else -(-length // 8) * 8
    assert pos < 5 * h.chunk_size
    _damage(path, 4, pos - 4 * h.chunk_size + 2)  # the length's third byte
    name = new_name()
    spy = Spy()
    with pytest.raises(ImageChecksumError, match="chunk 4 of .*checksum mismatch") as exc:
        restore(path, name, engine=spy)
    assert exc.value.chunk == 4 and "verify" in spy.calls
    assert not os.path.exists(f"/dev/shm/{name}")


def test_new_segment_engine_refuses_lying_records(tmp_path, new_name):
    """Valid CRCs, records that contradict the header: the walk refuses, the engine
    finds no damaged chunk, nothing is created."""
    from pyshm import layout

    cap = 1 << 14
    enc = layout.RecordEncoder(cap)
    data = b"".join(raw for i in range(20) for _, raw in enc.place(bytes([i]) * 30))
    params = layout.RingParams(capacity=cap, max_record=layout.default_max_record(cap))
    fmt.write_image(tmp_path / "lie", fmt.ImageHeader(params, 0, len(data), 0, 21, 21,
                                                      fmt.now_ns()), data)
    name = new_name()
    with pytest.raises(ImageError, match="disagree with the image header"):
        restore(tmp_path / "lie", name, engine=Spy())
    assert not os.path.exists(f"/dev/shm/{name}")


# ---- which engine ------------------------------------------------------------------


class NoCopyMode(CpuEngine):
    """An engine without a copy mode (every shipped engine has one now)."""

    @classmethod
    def copier(cls, **options):
        return None


def test_engine_choice_rules(image, new_name, monkeypatch):
    from pyshm import engine as E

    path, want = image
    # a registered engine without a copy mode, asked for by name: refused, named
    monkeypatch.setitem(E._REGISTRY, "nocopy", E._Entry(f"{__name__}:NoCopyMode", -20))
    with pytest.raises(InvalidParameterError, match="'nocopy' has no copy mode"):
        restore(path, new_name(), engine="nocopy")
    # pynq without its board (or without pynq): the copy mode says why, naming cpu
    with pytest.raises(EngineError, match="pynq engine's copy mode.*engine 'cpu'"):
        restore(path, new_name(), engine="pynq")
    with pytest.raises(InvalidParameterError, match="unknown engine 'warp'"):
        restore(path, new_name(), engine="warp")
    with pytest.raises(InvalidParameterError, match="engine=3"):
        restore(path, new_name(), engine=3)
    assert restore(path, new_name(), engine="none").engine is None
    assert restore(path, new_name()).engine == "cpu"  # auto, on this machine


class DmaOnly(Spy):
    """A copier that, like an FPGA engine, writes only DMA-able memory."""

    dma_only = True


def test_dma_only_engine_is_used_only_for_dma_rings(image, new_name, tmp_path, monkeypatch):
    path, want = image
    name = new_name()
    with pytest.raises(InvalidParameterError, match="only into DMA-able memory"):
        restore(path, name, engine=DmaOnly())
    assert not os.path.exists(f"/dev/shm/{name}")
    ring = _target(new_name)
    with pytest.raises(InvalidParameterError, match="only into DMA-able memory"):
        restore(path, ring, in_place=True, engine=DmaOnly())
    ring.close()
    # a ring in a (fake) u-dma-buf buffer: the engine copies into it
    sysfs = tmp_path / "sys"
    monkeypatch.setenv("PYSHM_SYSFS", str(sysfs))
    dev = tmp_path / "udmabuf9"
    size = 0x1000 + CAP
    dev.write_bytes(bytes(size))
    entry = sysfs / "class" / "u-dma-buf" / "udmabuf9"
    entry.mkdir(parents=True)
    (entry / "phys_addr").write_text("0x40000000\n")
    (entry / "size").write_text(f"{size}\n")
    dname = new_name()
    Ring(dname, create=True, capacity=CAP, device=str(dev)).close()
    try:
        spy = DmaOnly()
        info = restore(path, dname, in_place=True, engine=spy)
        assert info.engine == "cpu" and "copy" in spy.calls
        with Ring(dname) as r:
            assert _records(r) == want
    finally:
        os.unlink(f"/dev/shm/{dname}")


# ---- the command line ----------------------------------------------------------------


def test_cli_restore_engine_option(image, new_name, capsys):
    path, want = image
    for engine, says in (("cpu", "cpu engine"), ("none", "CPU path"), ("auto", "cpu engine")):
        name = new_name()
        assert main(["restore", str(path), "--to", name, "--engine", engine]) == 0
        out = capsys.readouterr().out
        assert says in out, out
        with Ring(name) as r:
            assert _records(r) == want
        assert main(["restore", str(path), "--to", name, "--in-place", "--engine",
                     engine]) == 0
        assert says in capsys.readouterr().out
    # (the sim engine's copy mode: tests/conformance/test_restore_conformance.py)
    # (the pynq engine's: tests/test_pynq_copier.py)
    assert main(["restore", str(path), "--to", new_name(), "--engine", "warp"]) == 1
    err = capsys.readouterr().err
    assert "unknown engine 'warp'" in err and "Traceback" not in err


def test_cli_restore_help_teaches_the_engine_option(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["restore", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--engine" in out and "auto" in out and "none" in out and "--engine none" in out
