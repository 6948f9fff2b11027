"""Snapshots of a replica that take their checksums from its CRC table.

A replica kept by a checksumming engine carries the CRC32C of every block of its data
(``pyshm.replica.CrcTable``; docs/design.md "Replica CRC table"). A snapshot of it then
needs no pass of its own over the data:

1. with the engine paused for a moment (sync, pause, read, resume): the window
   ``[oldest, tail)`` and a copy of its blocks' table entries;
2. engine running again: each image chunk's CRC is combined from its blocks' CRCs
   (``crc32c_combine``: multiplications, no data) and the chunks are written straight
   from the replica's mapping, never read back; the header's sequences come from the
   replica's ``next_sequence`` and the window's first record, and the full record walk
   (headers only) runs on another thread meanwhile and must agree;
3. before the image's name appears, the replica's ``tail_intent`` is read again: the
   engine raises it before it overwrites bytes of an earlier lap, so if the window's
   start is still at or above its oldest boundary, not one byte written or walked can
   have changed meanwhile (the seqlock test of the ring's readers). Otherwise the file
   is abandoned and the caller takes the copying path.

The image is the same format, byte for byte, as one whose CRCs the CPU computed, and
``inspect`` verifies it the usual way. Pieces of a chunk that cover a block only in part
(a chunk size that is not a multiple of the block size) are checksummed by the CPU; so
is the tail's partial block when no engine was paused (its entry may be ahead of the
tail a live engine published).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import checksum, layout
from ..errors import CorruptSegmentError, SnapshotError
from ..replica import CrcTable
from . import format as fmt
from .records import iter_records, walk


class _Lapped(Exception):
    """The engine overwrote part of the window while it was written: take the copy path."""


@dataclass(frozen=True)
class TableView:
    """A window of a replica and its blocks' CRCs, read consistently."""

    start: int
    end: int
    next_sequence: int
    block_size: int
    block_crcs: np.ndarray  # blocks of [start, end) in position order, the last partial


def chunk_crcs(view: TableView, chunk_size: int,
               read: Callable[[int, int], Any]) -> tuple[list[int], int]:
    """The CRC32C of each chunk ``[start + i*chunk_size, ...)`` of the window, from its
    blocks' CRCs; ``read(lo, hi)`` gives the bytes of a piece that covers a block only
    in part. Returns the CRCs and the number of bytes that had to be read."""
    b = view.block_size
    first = view.start // b
    end = view.end
    crcs: list[int] = []
    cpu = 0
    for c0 in range(view.start, end, chunk_size):
        c1 = min(c0 + chunk_size, end)
        crc, a = 0, c0
        if a % b:  # the chunk starts inside a block
            hi = min(c1, (a // b + 1) * b)
            crc = checksum.crc32c(read(a, hi), crc)
            cpu += hi - a
            a = hi
        # whole table blocks in [a, c1): full blocks ending by c1, and the window's last
        # (partial) block when the chunk ends with the window
        k0, k1 = a // b, c1 // b
        if a < c1 and a % b == 0 and k1 > k0:
            crc = checksum.crc32c_fold(crc, view.block_crcs[k0 - first:k1 - first], b)
            a = k1 * b
        if a < c1 and c1 == end and a % b == 0:
            crc = checksum.crc32c_combine(crc, int(view.block_crcs[a // b - first]), c1 - a)
            a = c1
        if a < c1:  # the chunk ends inside a block
            crc = checksum.crc32c(read(a, c1), crc)
            cpu += c1 - a
        crcs.append(crc)
    return crcs, cpu


def _window_pieces(data: np.ndarray, cap: int, start: int, end: int) -> list[memoryview]:
    off = start & (cap - 1)
    mv = memoryview(data.data).cast("B")
    n = end - start
    if off + n <= cap:
        return [mv[off:off + n]]
    return [mv[off:], mv[:n - (cap - off)]]


def _read(data: np.ndarray, cap: int) -> Callable[[int, int], Any]:
    def read(lo: int, hi: int) -> Any:
        off = lo & (cap - 1)  # a piece never crosses the wrap: it lies inside a block
        return data[off:off + (hi - lo)]
    return read


def take_view(src: Any, table: CrcTable, engine: Any, sync_timeout: float) -> TableView | None:
    """The window and its block CRCs, engine paused meanwhile (if given). None when the
    table does not describe the window (see ``CrcTable.block_crcs``)."""
    p = src.params
    if engine is not None:
        if hasattr(engine, "sync"):
            engine.sync(sync_timeout)
        engine.pause()
    try:
        tail = src.tail
        intent = max(src.tail_intent, tail)
        next_seq = src.next_sequence
        start = min(layout.oldest_boundary(intent, p.capacity, p.partition_size), tail)
        crcs = table.block_crcs(start, tail, tail)
    finally:
        if engine is not None:
            engine.resume()
    if crcs is None:
        return None
    if engine is None and tail % table.block_size and len(crcs):
        # no engine was paused: the tail block's entry may already cover bytes past the
        # tail; checksum that block's published part instead (under one block)
        lo = tail // table.block_size * table.block_size
        crcs[-1] = checksum.crc32c(_read(src.data, p.capacity)(lo, tail))
    return TableView(start, tail, next_seq, table.block_size, crcs)


def snapshot_from_table(src: Any, path: str | os.PathLike[str], *, engine: Any,
                        chunk_size: int, overwrite: bool, mode: int, sync: bool,
                        sync_timeout: float = 5.0,
                        progress: fmt.ProgressFn | None = None) -> fmt.ImageHeader | None:
    """Write the image of replica ``src`` (a snapshot ``_Source``) with CRCs from its
    table. None when the table cannot serve (none, not describing the window, or the
    engine lapped the window while it was written): the caller copies instead."""
    from .snapshot import image_header

    p = src.params
    if not p.has_crc_table:
        return None
    table = CrcTable(src.segment, p)
    try:
        view = take_view(src, table, engine, sync_timeout)
    finally:
        table.close()
    if view is None:
        return None
    cap = p.capacity
    where = f"{src.name} window [{view.start}, {view.end})"

    def unchanged() -> None:
        intent = max(src.tail_intent, src.tail)
        if layout.oldest_boundary(intent, cap, p.partition_size) > view.start:
            raise _Lapped()
        if engine is None and (src.tail != view.end):
            raise SnapshotError(f"{src.name}: the replica changed during the snapshot (tail "
                                f"{view.end} -> {src.tail}); pass its engine so it is paused")

    # The image header's sequences come from the replica's next_sequence (the engine's,
    # read while it was paused) and the window's first record; the full walk that
    # validates every record runs on another thread while the chunks are written (it
    # waits on memory, the write on the kernel's copy) and must agree before the name
    # appears. Disagreement (an engine that does not count records) means the copy path.
    try:
        first = _first_sequence(src.data, cap, p, view.start, view.end, where)
    except CorruptSegmentError:
        unchanged()  # bytes overwritten under the reader: not a corrupt replica
        raise
    nxt = view.next_sequence if first is not None else None
    if first is None or nxt is None or nxt < first:
        first = nxt = view.next_sequence
    walked: dict[str, Any] = {}

    def run_walk() -> None:
        try:
            walked["summary"] = walk(src.data, 0, cap - 1, view.start, view.end,
                                     p.partition_size, p.max_record, where)
        except CorruptSegmentError as exc:
            walked["error"] = exc

    walker = threading.Thread(target=run_walk, name="pyshm-snapshot-walk", daemon=True)

    def check() -> None:
        walker.join()
        unchanged()
        if "error" in walked:
            raise walked["error"]
        got = walked["summary"]
        want_first = first if nxt > first else None
        if (got.record_count, got.first_sequence) != (nxt - first, want_first):
            raise _Lapped()  # the header's next_sequence is not the records': copy instead

    walker.start()
    try:
        crcs, _ = chunk_crcs(view, chunk_size, _read(src.data, cap))
        header = image_header(p, view.start, view.end, first, nxt, nxt - first, True)
        return fmt.write_image(path, header,
                               _window_pieces(src.data, cap, view.start, view.end),
                               chunk_size=chunk_size, overwrite=overwrite, mode=mode,
                               sync=sync, progress=progress, chunk_crcs=crcs,
                               before_publish=check)
    except _Lapped:
        return None
    finally:
        walker.join()


def _first_sequence(data: np.ndarray, cap: int, p: Any, start: int, end: int,
                    where: str) -> int | None:
    """Sequence of the window's first record (after any padding), None if it has none."""
    for _pos, _type, seq, _payload in iter_records(data, 0, cap - 1, start, end,
                                                   p.partition_size, p.max_record, where,
                                                   copy=False):
        return int(seq)
    return None
