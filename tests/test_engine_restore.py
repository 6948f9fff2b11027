"""Restore through the engine: the CPU engine's copy mode (pyshm.engine.Copier) and the
in-place restore that uses it: verified first, copied with the CRC checked again from the
bytes written, a damaged image refused with the target untouched, an image changed
during the copy detected, and the staging interface a DMA engine needs."""

from __future__ import annotations

import os

import crc32c as ref
import numpy as np
import pytest
from pyshm.fallback.cpu import CpuCopier

from pyshm.engine import CopyChecksumError, CopyChunk, open_copier
from pyshm.errors import CorruptSegmentError, ImageChecksumError, InvalidParameterError
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
        def staging_buffer(self, size):
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
