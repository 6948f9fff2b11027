"""Crash-consistent snapshots of a live ring (or a replica) without pausing its producer.

The producer publishes with a seqlock-like protocol: it stores ``tail_intent`` (where it
is about to write up to), writes the record, then release-stores ``tail``. A snapshot:

1. loads ``tail`` (acquire) and ``tail_intent``; the window is
   ``[oldest_boundary(tail_intent), tail)``: only whole partitions, whose starts are
   record boundaries;
2. copies the window's bytes out (unwrapped, into one array);
3. reloads ``tail_intent``: every byte below ``tail_intent_after - capacity`` may have
   been overwritten while it was copied, so the window start moves up to the first
   partition boundary at or above that position (nothing is trusted below it);
4. walks the remaining records (lengths validated, sequences consecutive).

If nothing intact remains (the producer lapped the whole ring during the copy), it
retries a bounded number of times and then raises :class:`SnapshotError`. The loads
are plain aligned 8-byte loads through numpy: single instructions, and on x86-64 (TSO)
loads are not reordered with other loads, which is the ordering step 3 needs.

A replica is written by an engine that publishes no intent: pass the engine so it is
paused (after a sync) for the copy, or the replica must not change while it is copied.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import layout
from ..errors import CorruptSegmentError, SnapshotError
from ..segment import Segment
from . import format as fmt
from .records import summarize_segment

DEFAULT_RETRIES = 8
_COPY_PIECE = 1 << 20


class _Source:
    """A mapped ring or replica, its validated parameters and its counters."""

    def __init__(self, source: Any, readonly: bool = True):
        self._owned: Segment | None = None
        if isinstance(source, Segment):
            seg = source
        elif hasattr(source, "segment") and isinstance(source.segment, Segment):
            seg = source.segment
        elif isinstance(source, (str, os.PathLike)):
            seg = self._owned = Segment(source, readonly=readonly)
        else:
            raise TypeError(f"cannot snapshot {source!r}: give a ring name, a path, a "
                            f"Segment or a Ring")
        self.segment = seg
        self.name = seg.name
        try:
            self.params = layout.unpack_static_header(seg.buf[:0x80], where=seg.name,
                                                      size=seg.size)
            self._u64 = np.frombuffer(seg.mmap, dtype="<u8", count=layout.HEADER_SIZE // 8)
            self.data = np.frombuffer(seg.mmap, dtype=np.uint8, count=self.params.capacity,
                                      offset=layout.OFF_DATA)
        except CorruptSegmentError:
            try:
                seg.check_intact()  # truncated under this process (pyshm.guard)?
            finally:
                self.close()
            raise
        except BaseException:
            self.close()
            raise

    def load(self, offset: int) -> int:
        return int(self._u64[offset // 8])

    @property
    def tail(self) -> int:
        return self.load(layout.OFF_TAIL)

    @property
    def tail_intent(self) -> int:
        return self.load(layout.OFF_TAIL_INTENT)

    @property
    def next_sequence(self) -> int:
        return self.load(layout.OFF_NEXT_SEQUENCE)

    def close(self) -> None:
        # the numpy views export the mapping's buffer: drop them before unmapping
        self._u64 = None  # type: ignore[assignment]
        self.data = None  # type: ignore[assignment]
        if self._owned is not None:
            self._owned.close()
            self._owned = None

    def __enter__(self) -> _Source:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _alloc(size: int) -> np.ndarray:
    """A private buffer for one capture. Transparent huge pages, where the kernel offers
    them, cut the first-touch cost of a fresh gigabyte (faults, not the copy, dominate
    a one-off snapshot); the mapping is freed with the array."""
    if size >= 4 << 20 and hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            m.madvise(mmap.MADV_HUGEPAGE)
            return np.frombuffer(m, dtype=np.uint8)
        except (OSError, ValueError):
            pass
    return np.empty(size, dtype=np.uint8)


def scratch_size(params: layout.RingParams) -> int:
    """Bytes of the buffer a capture lays its copy out in: a whole ring segment."""
    return layout.segment_size(params.capacity)


@dataclass
class Capture:
    """An intact window of committed records, copied out of a ring.

    ``ring`` is a private copy laid out as a ring segment (header + data): the window's
    bytes sit at their own positions modulo capacity, so the C reader can validate it
    and a restore copies it back without reshuffling.
    """

    params: layout.RingParams
    start: int
    end: int
    ring: np.ndarray
    first_sequence: int
    next_sequence: int
    record_count: int
    from_replica: bool
    attempts: int = 1
    trimmed: int = 0

    def pieces(self) -> list[memoryview]:
        """The window's bytes in position order: one view, two if it wraps."""
        cap = self.params.capacity
        data = memoryview(self.ring.data).cast("B")[layout.OFF_DATA:layout.OFF_DATA + cap]
        off = self.start & (cap - 1)
        n = self.end - self.start
        if off + n <= cap:
            return [data[off:off + n]]
        return [data[off:], data[:n - (cap - off)]]

    @property
    def data(self) -> np.ndarray:
        """The window unwrapped (a view if it does not wrap, else a copy)."""
        pieces = self.pieces()
        if len(pieces) == 1:
            return np.frombuffer(pieces[0], dtype=np.uint8)
        return np.concatenate([np.frombuffer(x, dtype=np.uint8) for x in pieces])

    def header(self) -> fmt.ImageHeader:
        """The image header this capture would be written with."""
        return image_header(self.params, self.start, self.end, self.first_sequence,
                            self.next_sequence, self.record_count, self.from_replica)


def image_header(params: layout.RingParams, start: int, end: int, first_sequence: int,
                 next_sequence: int, record_count: int,
                 from_replica: bool) -> fmt.ImageHeader:
    """The header of an image of window [start, end): a replica's CRC table is not part
    of an image, so its flag is not either."""
    params = dataclasses.replace(params, flags=params.flags & ~layout.FLAG_CRC_TABLE)
    return fmt.ImageHeader(
        params=params, first_position=start, end_position=end,
        first_sequence=first_sequence, next_sequence=next_sequence,
        record_count=record_count, created_ns=fmt.now_ns(),
        flags=fmt.IMAGE_FLAG_FROM_REPLICA if from_replica else 0)


def _copy_window(src: np.ndarray, dst: np.ndarray, start: int, end: int,
                 capacity: int) -> None:
    """Copy positions [start, end) to the same offsets, in pieces (cache friendly)."""
    mask = capacity - 1
    pos = start
    while pos < end:
        off = pos & mask
        n = min(end - pos, capacity - off, _COPY_PIECE)
        np.copyto(dst[off:off + n], src[off:off + n])
        pos += n


def capture(source: Any, *, engine: Any = None, retries: int = DEFAULT_RETRIES,
            sync_timeout: float = 5.0, buffer: np.ndarray | None = None,
            _after_copy: Callable[[], None] | None = None) -> Capture:
    """Copy the intact committed window of ``source`` into memory.

    ``engine``: for a replica, the engine that mirrors into it; it is synced, paused
    for the copy and resumed. ``buffer``: a uint8 array of at least
    :func:`scratch_size` bytes to reuse between snapshots (no page faults on a fresh
    allocation; the returned capture points into it).
    """
    with _Source(source) as src:
        try:
            if engine is not None and src.params.is_replica:
                if hasattr(engine, "sync"):
                    engine.sync(sync_timeout)
                engine.pause()
                try:
                    return _capture(src, retries, buffer, _after_copy)
                finally:
                    engine.resume()
            return _capture(src, retries, buffer, _after_copy)
        except (CorruptSegmentError, SnapshotError):
            src.segment.check_intact()  # a file truncated under the copy (pyshm.guard)
            raise


def _capture(src: _Source, retries: int, buffer: np.ndarray | None,
             after_copy: Callable[[], None] | None) -> Capture:
    p = src.params
    cap, psize = p.capacity, p.partition_size
    replica = p.is_replica
    size = scratch_size(p)
    if buffer is not None and (buffer.dtype != np.uint8 or buffer.size < size
                               or not buffer.flags.c_contiguous):
        raise ValueError(f"snapshot buffer must be a contiguous uint8 array of >= {size} "
                         f"bytes")
    scratch = buffer[:size] if buffer is not None else _alloc(size)
    scratch[:0x80] = np.frombuffer(layout.pack_static_header(p), dtype=np.uint8)
    counters = scratch[:layout.HEADER_SIZE].view("<u8")
    counters[layout.OFF_SLOTS // 8:] = 0  # no consumer slots in a private copy
    out = scratch[layout.OFF_DATA:]
    trimmed_total = 0
    for attempt in range(1, max(1, retries) + 1):
        next_seq = src.next_sequence
        tail = src.tail
        intent = max(src.tail_intent, tail)
        if tail % layout.RECORD_ALIGN:
            raise CorruptSegmentError(f"{src.name}: tail {tail} is not a valid position")
        # intent may be far past tail: the producer can publish many records between the
        # two loads; then nothing below tail is proven intact and the attempt is retried
        start = min(layout.oldest_boundary(intent, cap, psize), tail)
        _copy_window(src.data, out, start, tail, cap)
        if after_copy is not None:
            after_copy()
        intent_after = max(src.tail_intent, src.tail)
        if replica and (src.tail != tail or max(src.tail_intent, tail) != intent):
            raise SnapshotError(f"{src.name}: the replica changed during the copy (tail "
                                f"{tail} -> {src.tail}); pass its engine so it is paused")
        intact_from = layout.oldest_boundary(intent_after, cap, psize)
        if intact_from > start:
            trimmed_total += min(intact_from, tail) - start
            start = min(intact_from, tail)
        if start == tail and tail > 0:
            continue  # the producer lapped the whole window while it was copied
        for off in (layout.OFF_TAIL, layout.OFF_TAIL_INTENT, layout.OFF_MIRRORED):
            counters[off // 8] = tail
        counters[layout.OFF_NEXT_SEQUENCE // 8] = next_seq
        s = summarize_segment(scratch, p, start, tail,
                              where=f"{src.name} window [{start}, {tail})")
        if s.record_count:
            assert s.first_sequence is not None and s.last_sequence is not None
            first, nxt = s.first_sequence, s.last_sequence + 1
        else:
            first = nxt = next_seq
        return Capture(p, start, tail, scratch, first, nxt, s.record_count, replica,
                       attempt, trimmed_total)
    raise SnapshotError(f"{src.name}: no intact window after {retries} attempts: the "
                        f"producer overwrote the ring faster than it could be copied "
                        f"({trimmed_total} bytes dropped)")


def snapshot(source: Any, path: str | os.PathLike[str], *, compression: str = "none",
             level: int = 3, chunk_size: int = fmt.DEFAULT_CHUNK, engine: Any = None,
             overwrite: bool = False, mode: int = 0o600, sync: bool = True,
             retries: int = DEFAULT_RETRIES, buffer: np.ndarray | None = None,
             progress: fmt.ProgressFn | None = None,
             use_crc_table: bool = True) -> fmt.ImageHeader:
    """Snapshot ``source`` (ring name, path, Segment, Ring or replica) to an image file.

    An uncompressed snapshot of a replica that carries a CRC table kept by its engine
    takes the chunks' checksums from the table and writes straight from the replica
    (:mod:`pyshm.images.table_snapshot`; ``use_crc_table=False`` copies and checksums
    instead, as for a ring).
    """
    if use_crc_table and compression in ("none", fmt.COMPRESS_NONE):
        with _Source(source) as src:
            if src.params.is_replica and src.params.has_crc_table:
                from .table_snapshot import snapshot_from_table

                h = snapshot_from_table(src, path, engine=engine, chunk_size=chunk_size,
                                        overwrite=overwrite, mode=mode, sync=sync,
                                        progress=progress)
                if h is not None:
                    return h
    cap = capture(source, engine=engine, retries=retries, buffer=buffer)
    return fmt.write_image(path, cap.header(), cap.pieces(), compression=compression,
                           level=level, chunk_size=chunk_size, overwrite=overwrite,
                           mode=mode, sync=sync, progress=progress)
