"""Validated walks over a window of records, in a ring data area or an unwrapped copy.

``base``/``mask`` map a position to an offset: ``(pos - base) & mask``. For a ring data
area use ``base=0, mask=capacity-1``; for an unwrapped copy of ``[start, end)`` use
``base=start, mask=UNWRAPPED``. Every length is checked against the partition and the
window before the bytes it covers are touched, and sequences must be consecutive: a
window that passes is a run of whole, committed records.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from .. import layout
from ..errors import CorruptSegmentError

UNWRAPPED = (1 << 64) - 1
_II = struct.Struct("<ii").unpack_from
_Q = struct.Struct("<Q").unpack_from


@dataclass(frozen=True)
class Summary:
    record_count: int
    first_sequence: int | None
    last_sequence: int | None
    payload_bytes: int
    padding_bytes: int


def iter_records(buf, base: int, mask: int, start: int, end: int, partition_size: int,
                 max_record: int, where: str = "window",
                 copy: bool = True) -> Iterator[tuple[int, int, int, bytes | memoryview]]:
    """Yield ``(position, type, sequence, payload)`` for [start, end), validated."""
    view = memoryview(buf).cast("B")
    if start % layout.RECORD_ALIGN or end < start:
        raise CorruptSegmentError(f"{where}: window [{start}, {end}) is not a valid range")
    pmask = partition_size - 1
    prev_seq = None
    pos = start
    while pos < end:
        off = (pos - base) & mask
        room = partition_size - (pos & pmask)
        if end - pos < layout.PADDING_MIN:
            raise CorruptSegmentError(f"{where}: {end - pos} stray bytes at position {pos}")
        length, type_ = _II(view, off)
        if type_ == layout.PADDING_TYPE:
            if length != room or pos + length > end:
                raise CorruptSegmentError(f"{where}: padding record at position {pos} has "
                                          f"length {length}, expected {room}")
            pos += length
            continue
        alen = (length + 7) & ~7
        if not layout.RECORD_HEADER <= length <= max_record or alen > room \
                or pos + alen > end:
            raise CorruptSegmentError(f"{where}: record at position {pos} has invalid "
                                      f"length {length}")
        (seq,) = _Q(view, off + 8)
        if prev_seq is not None and seq != prev_seq + 1:
            raise CorruptSegmentError(f"{where}: record at position {pos} has sequence "
                                      f"{seq} after {prev_seq} (not consecutive)")
        prev_seq = seq
        payload = view[off + layout.RECORD_HEADER: off + length]
        yield pos, type_, seq, (bytes(payload) if copy else payload)
        pos += alen


def summarize(buf, base: int, mask: int, start: int, end: int, partition_size: int,
              max_record: int, where: str = "window") -> Summary:
    """Validate [start, end) and count it; the fast path of :func:`iter_records`."""
    view = memoryview(buf).cast("B")
    if start % layout.RECORD_ALIGN or end < start:
        raise CorruptSegmentError(f"{where}: window [{start}, {end}) is not a valid range")
    pmask = partition_size - 1
    first = last = None
    count = payload = padding = 0
    pos = start
    pad = layout.PADDING_TYPE
    hdr = layout.RECORD_HEADER
    while pos < end:
        off = (pos - base) & mask
        room = partition_size - (pos & pmask)
        if end - pos < 8:
            raise CorruptSegmentError(f"{where}: {end - pos} stray bytes at position {pos}")
        length, type_ = _II(view, off)
        if type_ == pad:
            if length != room or pos + length > end:
                raise CorruptSegmentError(f"{where}: padding record at position {pos} has "
                                          f"length {length}, expected {room}")
            padding += length
            pos += length
            continue
        alen = (length + 7) & ~7
        if not hdr <= length <= max_record or alen > room or pos + alen > end:
            raise CorruptSegmentError(f"{where}: record at position {pos} has invalid "
                                      f"length {length}")
        (seq,) = _Q(view, off + 8)
        if last is None:
            first = seq
        elif seq != last + 1:
            raise CorruptSegmentError(f"{where}: record at position {pos} has sequence "
                                      f"{seq} after {last} (not consecutive)")
        last = seq
        count += 1
        payload += length - hdr
        pos += alen
    return Summary(count, first, last, payload, padding)
