"""Validated walks over a window of records, in a ring data area or an unwrapped copy.

``base``/``mask`` map a position to an offset: ``(pos - base) & mask``. For a ring data
area use ``base=0, mask=capacity-1``; for an unwrapped copy of ``[start, end)`` use
``base=start, mask=UNWRAPPED``. Every length is checked against the partition and the
window before the bytes it covers are touched, and sequences must be consecutive: a
window that passes is a run of whole, committed records.
"""

from __future__ import annotations

import mmap
import os
import struct
import sys
from collections.abc import Callable, Iterator
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


def _walk_error(view: memoryview, base: int, mask: int, end: int, partition_size: int,
                w, where: str) -> CorruptSegmentError:
    """The C walker's error, worded as :func:`summarize` words it."""
    from .._ring_c import lib

    pos, code = int(w.error_pos), int(w.error)
    if code == lib.PYSHM_WALK_E_STRAY:
        return CorruptSegmentError(f"{where}: {end - pos} stray bytes at position {pos}")
    if code == lib.PYSHM_WALK_E_BOUNDS:
        return CorruptSegmentError(f"{where}: record at position {pos} lies outside the "
                                   f"buffer walked")
    if code not in (lib.PYSHM_WALK_E_PADDING, lib.PYSHM_WALK_E_LENGTH,
                    lib.PYSHM_WALK_E_SEQUENCE):
        return CorruptSegmentError(f"{where}: window ending at {end} is not a valid range "
                                   f"(walk from {pos})")
    off = (pos - base) & mask
    length, _type = _II(view, off)
    if code == lib.PYSHM_WALK_E_PADDING:
        room = partition_size - (pos & (partition_size - 1))
        return CorruptSegmentError(f"{where}: padding record at position {pos} has length "
                                   f"{length}, expected {room}")
    if code == lib.PYSHM_WALK_E_LENGTH:
        return CorruptSegmentError(f"{where}: record at position {pos} has invalid length "
                                   f"{length}")
    (seq,) = _Q(view, off + 8)
    return CorruptSegmentError(f"{where}: record at position {pos} has sequence {seq} "
                               f"after {int(w.last_seq)} (not consecutive)")


def walk(buf, base: int, mask: int, start: int, end: int, partition_size: int,
         max_record: int, where: str = "window", *,
         ahead: Callable[[int], None] | None = None, step: int = 1 << 20) -> Summary:
    """Validate [start, end) of a buffer nobody writes to, reading record headers only
    (the C walker ``pyshm_walk``: the reader's length and padding checks, consecutive
    sequences, every offset checked against ``len(buf)``). Same result and messages as
    :func:`summarize`, at memory speed.

    ``ahead(position)`` is called before each ``step`` bytes are walked from
    ``position`` on: a caller checks the checksums of the bytes just ahead there, so
    that both passes read them once from memory.
    """
    if start % layout.RECORD_ALIGN or end < start or start < 0:
        raise CorruptSegmentError(f"{where}: window [{start}, {end}) is not a valid range")
    try:
        from .._ring_c import ffi, lib
    except ImportError:  # pragma: no cover - C core not built
        if ahead is not None:
            ahead(start)
        return summarize(buf, base, mask, start, end, partition_size, max_record, where)
    view = memoryview(buf).cast("B")
    if ahead is None and end - start > partition_size:
        try:
            return _walk_chains(view, base, mask, start, end, partition_size, max_record,
                                where)
        finally:
            view.release()
    ptr = ffi.from_buffer(view)
    try:
        w = ffi.new("pyshm_walk_t *")
        w.pos = start
        cbuf = ffi.cast("const uint8_t *", ptr)
        step = max(step, 4096)
        while True:
            if ahead is not None:
                ahead(int(w.pos))
            until = end if ahead is None else min(end, int(w.pos) + step)
            rc = lib.pyshm_walk(w, cbuf, len(view), base, mask, end, until, partition_size,
                                max_record)
            if rc != 0:
                raise _walk_error(view, base, mask, end, partition_size, w, where)
            if w.pos >= end:
                break
        count = int(w.count)
        return Summary(count, int(w.first_seq) if count else None,
                       int(w.last_seq) if count else None, int(w.payload_bytes),
                       int(w.padding_bytes))
    finally:
        ffi.release(ptr)
        view.release()


def _walk_chains(view: memoryview, base: int, mask: int, start: int, end: int,
                 partition_size: int, max_record: int, where: str) -> Summary:
    """:func:`walk` cut at partition starts (record boundaries) into chains the C code
    steps round-robin (``pyshm_walk_chains``), so several header loads are in flight
    instead of one: same checks, same result and messages, in position order."""
    from .._ring_c import ffi, lib

    cuts = [start] + list(range((start // partition_size + 1) * partition_size, end,
                                partition_size)) + [end]
    n = len(cuts) - 1
    walks = ffi.new("pyshm_walk_t[]", n)
    ends = ffi.new("uint64_t[]", cuts[1:])
    for i in range(n):
        walks[i].pos = cuts[i]
    ptr = ffi.from_buffer(view)
    try:
        lib.pyshm_walk_chains(walks, ends, n, ffi.cast("const uint8_t *", ptr), len(view),
                              base, mask, partition_size, max_record)
    finally:
        ffi.release(ptr)
    count = payload = padding = 0
    first = last = None
    for i in range(n):
        w = walks[i]
        if w.count:
            if last is not None and int(w.first_seq) != last + 1:
                raise CorruptSegmentError(f"{where}: record at position {cuts[i]} has "
                                          f"sequence {int(w.first_seq)} after {last} (not "
                                          f"consecutive)")
            if first is None:
                first = int(w.first_seq)
            last = int(w.last_seq)
        if w.error:
            raise _walk_error(view, base, mask, cuts[i + 1], partition_size, w, where)
        count += int(w.count)
        payload += int(w.payload_bytes)
        padding += int(w.padding_bytes)
    return Summary(count, first, last, payload, padding)


def summarize_segment(seg, params: layout.RingParams, start: int, end: int,
                      where: str = "window", *, ahead: Callable[[int], None] | None = None,
                      out_size: int = 1 << 20) -> Summary:
    """Validate [start, end) of a ring laid out in ``seg`` (header + data, nothing
    writing to it) with the C walker (:func:`walk`); ``out_size`` is the walk step
    between ``ahead`` calls."""
    mv = memoryview(seg).cast("B")
    try:
        cap = params.capacity
        if len(mv) < layout.OFF_DATA + cap:
            raise CorruptSegmentError(f"{where}: {len(mv)} bytes mapped, the ring needs "
                                      f"{layout.OFF_DATA + cap}")
        data = mv[layout.OFF_DATA:layout.OFF_DATA + cap]
        try:
            return walk(data, 0, cap - 1, start, end, params.partition_size,
                        params.max_record, where, ahead=ahead, step=out_size)
        finally:
            data.release()
    finally:
        mv.release()


def _libc():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)  # the process's own libc; no ldconfig run
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.restype = ctypes.c_int
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mprotect.restype = ctypes.c_int
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return ctypes, libc


class MappedWindow:
    """Window [start, end) of an uncompressed image file (stored unwrapped at
    ``data_offset``), mapped read-only from the page cache: :attr:`data` for checksums
    and copies, :meth:`summarize` for the record walk (the header-only C walker reads
    the window where it lies), nothing copied for either.

    The mapping is made through libc rather than :mod:`mmap` so that :meth:`close`
    unmaps it at once, whatever views of it a traceback may still hold. Off Linux, or
    without libc, the window is read into memory instead.
    """

    def __init__(self, fd: int, data_offset: int, params: layout.RingParams, start: int,
                 end: int, where: str = "window"):
        if start % layout.RECORD_ALIGN or end < start or data_offset < 0:
            raise CorruptSegmentError(f"{where}: window [{start}, {end}) is not a valid "
                                      f"range")
        self.params, self.start, self.end, self.where = params, start, end, where
        self.length = length = end - start
        self._base = 0
        self._total = 0
        self._map: memoryview | None = None
        if length == 0:
            self.data = memoryview(b"")
            return
        try:
            if not sys.platform.startswith("linux"):
                raise OSError("mapped windows are used on Linux only")
            ctypes, libc = _libc()
        except (OSError, AttributeError):  # pragma: no cover
            self.data = memoryview(os.pread(fd, length, data_offset)).toreadonly()
            return
        pg = mmap.PAGESIZE
        lo = data_offset // pg * pg
        total = -(-(data_offset + length - lo) // pg) * pg
        # read-only and shared with the page cache: no page is ever copied. Not
        # MAP_POPULATE: the first reader's faults map the cached pages in batches
        # (fault-around) for less than populating them up front costs (measured)
        base = libc.mmap(None, total, mmap.PROT_READ, mmap.MAP_SHARED, fd, lo)
        if base in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap of the image file failed")
        self._base, self._total, self._libc = base, total, libc
        self._map = memoryview((ctypes.c_char * total).from_address(base)).cast("B")
        skip = data_offset - lo
        self.data = self._map[skip:skip + length].toreadonly()

    def summarize(self, ahead: Callable[[int], None] | None = None,
                  out_size: int = 8 << 20) -> Summary:
        """Walk the window's records (lengths, padding, consecutive sequences).

        ``ahead(position)`` is called before each batch the walker reads from
        ``position`` on (at most about ``out_size`` payload bytes): a caller checks
        the checksums of the bytes just ahead, so that both read them once from memory.
        """
        p = self.params
        return walk(self.data, self.start, UNWRAPPED, self.start, self.end,
                    p.partition_size, p.max_record, self.where, ahead=ahead, step=out_size)

    def close(self) -> None:
        """Unmap; any view of :attr:`data` must be released first."""
        if getattr(self, "data", None) is not None:
            self.data.release()
        if self._map is not None:
            self._map.release()
            self._map = None
        if self._total:
            self._libc.munmap(self._base, self._total)
            self._total = 0

    def __enter__(self) -> MappedWindow:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def summarize_file_window(fd: int, data_offset: int, params: layout.RingParams, start: int,
                          end: int, where: str = "window") -> Summary:
    """Validate [start, end) stored unwrapped at ``data_offset`` of file ``fd``, through
    a :class:`MappedWindow` (no copy)."""
    with MappedWindow(fd, data_offset, params, start, end, where) as w:
        return w.summarize()
