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

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import layout
from ..errors import CorruptSegmentError, SnapshotError
from ..segment import Segment
from . import format as fmt
from .records import UNWRAPPED, summarize

DEFAULT_RETRIES = 8
_COPY_PIECE = 16 << 20


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


@dataclass
class Capture:
    """An intact window of committed records, copied out of a ring."""

    params: layout.RingParams
    start: int
    end: int
    data: np.ndarray
    first_sequence: int
    next_sequence: int
    record_count: int
    from_replica: bool
    attempts: int = 1
    trimmed: int = 0

    def header(self) -> fmt.ImageHeader:
        return fmt.ImageHeader(
            params=self.params, first_position=self.start, end_position=self.end,
            first_sequence=self.first_sequence, next_sequence=self.next_sequence,
            record_count=self.record_count, created_ns=fmt.now_ns(),
            flags=fmt.IMAGE_FLAG_FROM_REPLICA if self.from_replica else 0)


def _copy_window(data: np.ndarray, start: int, end: int, capacity: int,
                 out: np.ndarray) -> None:
    mask = capacity - 1
    pos = start
    while pos < end:
        off = pos & mask
        n = min(end - pos, capacity - off, _COPY_PIECE)
        np.copyto(out[pos - start:pos - start + n], data[off:off + n])
        pos += n


def capture(source: Any, *, engine: Any = None, retries: int = DEFAULT_RETRIES,
            sync_timeout: float = 5.0, buffer: np.ndarray | None = None,
            _after_copy: Callable[[], None] | None = None) -> Capture:
    """Copy the intact committed window of ``source`` into memory.

    ``engine``: for a replica, the engine that mirrors into it; it is synced, paused
    for the copy and resumed. ``buffer``: a uint8 array of at least the capacity to
    reuse between snapshots (avoids page faults on a fresh allocation).
    """
    with _Source(source) as src:
        if engine is not None and src.params.is_replica:
            if hasattr(engine, "sync"):
                engine.sync(sync_timeout)
            engine.pause()
            try:
                return _capture(src, retries, buffer, _after_copy)
            finally:
                engine.resume()
        return _capture(src, retries, buffer, _after_copy)


def _capture(src: _Source, retries: int, buffer: np.ndarray | None,
             after_copy: Callable[[], None] | None) -> Capture:
    p = src.params
    cap, psize = p.capacity, p.partition_size
    replica = p.is_replica
    if buffer is not None and (buffer.dtype != np.uint8 or buffer.size < cap):
        raise ValueError(f"snapshot buffer must be a uint8 array of >= {cap} bytes")
    out = buffer if buffer is not None else np.empty(cap, dtype=np.uint8)
    trimmed_total = 0
    for attempt in range(1, max(1, retries) + 1):
        next_seq = src.next_sequence
        tail = src.tail
        intent = max(src.tail_intent, tail)
        if tail % layout.RECORD_ALIGN or intent - tail > cap:
            raise CorruptSegmentError(f"{src.name}: tail {tail} / tail intent {intent} are "
                                      f"not valid positions")
        start = min(layout.oldest_boundary(intent, cap, psize), tail)
        _copy_window(src.data, start, tail, cap, out)
        if after_copy is not None:
            after_copy()
        intent_after = max(src.tail_intent, src.tail)
        if replica and src.tail != tail:
            raise SnapshotError(f"{src.name}: the replica changed during the copy (tail "
                                f"{tail} -> {src.tail}); pass its engine so it is paused")
        intact_from = layout.oldest_boundary(intent_after, cap, psize)
        trimmed = 0
        if intact_from > start:
            trimmed = min(intact_from, tail) - start
            start = min(intact_from, tail)
        trimmed_total += trimmed
        if start == tail and tail > 0:
            continue  # the producer lapped the whole window while it was copied
        start0 = start - trimmed
        view = out[start - start0:tail - start0]
        s = summarize(view, start, UNWRAPPED, start, tail, psize, p.max_record,
                      where=f"{src.name} window [{start}, {tail})")
        if s.record_count:
            assert s.first_sequence is not None and s.last_sequence is not None
            first, nxt = s.first_sequence, s.last_sequence + 1
        else:
            first = nxt = next_seq
        data = view
        return Capture(p, start, tail, data, first, nxt, s.record_count, replica,
                       attempt, trimmed_total)
    raise SnapshotError(f"{src.name}: no intact window after {retries} attempts: the "
                        f"producer overwrote the ring faster than it could be copied "
                        f"({trimmed_total} bytes dropped)")


def snapshot(source: Any, path: str | os.PathLike[str], *, compression: str = "none",
             level: int = 3, chunk_size: int = fmt.DEFAULT_CHUNK, engine: Any = None,
             overwrite: bool = False, mode: int = 0o600, sync: bool = True,
             retries: int = DEFAULT_RETRIES, buffer: np.ndarray | None = None,
             progress: fmt.ProgressFn | None = None) -> fmt.ImageHeader:
    """Snapshot ``source`` (ring name, path, Segment, Ring or replica) to an image file."""
    cap = capture(source, engine=engine, retries=retries, buffer=buffer)
    return fmt.write_image(path, cap.header(), cap.data, compression=compression,
                           level=level, chunk_size=chunk_size, overwrite=overwrite,
                           mode=mode, sync=sync, progress=progress)
