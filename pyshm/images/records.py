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


def summarize_segment(seg, params: layout.RingParams, start: int, end: int,
                      where: str = "window", *, ahead: Callable[[int], None] | None = None,
                      out_size: int = 8 << 20) -> Summary:
    """Validate [start, end) of a ring laid out in ``seg`` (header + data, both counters
    already set to ``end``, nothing writing to it) with the ring's C consumer.

    One C call reads thousands of records (lengths checked exactly as
    :func:`summarize` does); sequences are checked to be consecutive with numpy. Falls
    back to :func:`summarize` when the C core is not built.
    """
    try:
        from .._ring_c import ffi, lib
    except ImportError:  # pragma: no cover - C core not built
        data = memoryview(seg).cast("B")[layout.OFF_DATA:layout.OFF_DATA + params.capacity]
        return summarize(data, 0, params.capacity - 1, start, end, params.partition_size,
                         params.max_record, where)
    import numpy as np

    mv = memoryview(seg).cast("B")
    c = ffi.new("pyshm_consumer_t *")
    ptr = ffi.from_buffer(mv)
    # the C pointers export mv and the arrays: released on every exit, so that an
    # error's traceback never keeps a buffer export (mv may be a mapping about to go)
    try:
        if lib.pyshm_consumer_open(c, ptr, len(mv), -1) != 0:
            raise CorruptSegmentError(f"{where}: ring header is not valid")
        if start % layout.RECORD_ALIGN or end < start:
            raise CorruptSegmentError(f"{where}: window [{start}, {end}) is not a valid range")
        c.pos = start
        # read_batch hands out the records before a refused one and may step past it (its
        # position moves before the sequence check), so an error is also detected by the
        # position it leaves here
        c.last_error_pos = -1
        batch = 65536
        # a small buffer stays in cache while the C reader rewrites it; a record larger
        # than it is read alone into one of max_record bytes (made when first needed)
        out = np.empty(min(out_size, params.max_record), dtype=np.uint8)
        big = None
        ends = np.empty(batch, dtype=np.uint64)
        types = np.empty(batch, dtype=np.int32)
        seqs = np.empty(batch, dtype=np.uint64)
        c_out, c_ends = ffi.from_buffer(out), ffi.from_buffer(ends)
        c_types, c_seqs = ffi.from_buffer(types), ffi.from_buffer(seqs)
        first = last = None
        count = payload = 0
        while True:
            if ahead is not None:
                ahead(int(c.pos))
            n = int(lib.pyshm_read_batch(c, ffi.cast("uint8_t *", c_out), len(out),
                                         ffi.cast("uint64_t *", c_ends),
                                         ffi.cast("int32_t *", c_types),
                                         ffi.cast("uint64_t *", c_seqs), batch))
            if n == 0 and c.pos < end and c.last_error_pos == -1:
                if big is None:
                    big = np.empty(params.max_record, dtype=np.uint8)
                c_big = ffi.from_buffer(big)
                n = int(lib.pyshm_read_batch(c, ffi.cast("uint8_t *", c_big), len(big),
                                             ffi.cast("uint64_t *", c_ends),
                                             ffi.cast("int32_t *", c_types),
                                             ffi.cast("uint64_t *", c_seqs), 1))
                ffi.release(c_big)
            if n < 0 or c.last_error_pos != -1:
                # the reference walker says exactly what is wrong and where (error path only)
                data = mv[layout.OFF_DATA:layout.OFF_DATA + params.capacity]
                summarize(data, 0, params.capacity - 1, start, end, params.partition_size,
                          params.max_record, where)
                raise CorruptSegmentError(f"{where}: invalid record at position "
                                          f"{c.last_error_pos} (C reader code {n})")
            if n == 0:
                break
            s = seqs[:n]
            expect_first = s[0] if last is None else last + 1
            if int(s[0]) != int(expect_first) or (n > 1 and not np.all(np.diff(s) == 1)):
                raise CorruptSegmentError(f"{where}: sequences are not consecutive near "
                                          f"sequence {int(s[0])}")
            if first is None:
                first = int(s[0])
            last = int(s[-1])
            count += n
            payload += int(ends[n - 1])
        if c.pos != end:
            raise CorruptSegmentError(f"{where}: records stop at position {c.pos}, window "
                                      f"ends at {end}")
        return Summary(count, first, last, payload, -1)
    finally:
        ffi.release(ptr)
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


_MAP_FIXED = 0x10  # Linux's value; the mmap module does not export it


class MappedWindow:
    """Window [start, end) of an uncompressed image file (stored unwrapped at
    ``data_offset``), mapped read-only from the page cache: :attr:`data` for checksums
    and copies, :meth:`summarize` for the record walk, nothing copied for either.

    The C consumer reads a ring: a 4 KiB header followed by ``capacity`` bytes indexed
    by ``pos & (capacity - 1)``. The file is mapped right after a reserved address range
    and a ring header is written just before the window's first byte, for a ring large
    enough that the window does not wrap, with positions moved by a multiple of the
    partition size (so partition boundaries, hence padding, stay where they were). Only
    the pages under that header are writable (private copies); the window is read-only.
    Without the C core, or off Linux, the window is read into memory and walked in Python.
    """

    def __init__(self, fd: int, data_offset: int, params: layout.RingParams, start: int,
                 end: int, where: str = "window"):
        if start % layout.RECORD_ALIGN or end < start:
            raise CorruptSegmentError(f"{where}: window [{start}, {end}) is not a valid "
                                      f"range")
        self.params, self.start, self.end, self.where = params, start, end, where
        self.length = length = end - start
        self._base = 0
        self._total = 0
        self._ring: memoryview | None = None
        psize = params.partition_size
        self._shifted = shifted = start % psize
        cap = max(layout.MIN_CAPACITY, psize)
        while cap < shifted + length:
            cap *= 2
        self._cap = cap
        try:
            if not sys.platform.startswith("linux"):
                raise OSError("MAP_FIXED below is Linux's value")
            from .._ring_c import ffi  # noqa: F401  (the walker needs the C core)
            ctypes, libc = _libc()
        except (ImportError, OSError, AttributeError):  # pragma: no cover
            self.data = memoryview(os.pread(fd, length, data_offset)).toreadonly()
            return
        hs, pg = layout.HEADER_SIZE, mmap.PAGESIZE
        pre = -(-(shifted + hs) // pg) * pg  # reserved bytes before the file mapping
        file_len = -(-(data_offset + length) // pg) * pg
        total = pre + max(file_len, -(-(data_offset - shifted + cap) // pg) * pg)
        anon = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0)
        rw = mmap.PROT_READ | mmap.PROT_WRITE
        base = libc.mmap(None, total, mmap.PROT_READ, anon, -1, 0)
        if base in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "reserving address space for the image failed")
        self._base, self._total, self._libc = base, total, libc
        try:
            # read-only: no page is ever copied. Not MAP_POPULATE: the first reader's
            # faults map the cached pages in batches (fault-around) for less than
            # populating them up front costs (measured), and on the CRC thread
            got = libc.mmap(base + pre, file_len, mmap.PROT_READ,
                            mmap.MAP_PRIVATE | _MAP_FIXED, fd, 0)
            if got != base + pre:
                raise OSError(ctypes.get_errno(), "mmap of the image file failed")
            hdr = base + pre + data_offset - shifted - hs
            if libc.mprotect(base, -(-(hdr + hs - base) // pg) * pg, rw) != 0:
                raise OSError(ctypes.get_errno(), "mprotect of the walk header failed")
            fake = layout.RingParams(capacity=cap, max_record=params.max_record,
                                     partition_count=cap // psize, flags=0, created_ns=0,
                                     name="image-walk")
            self._fake = fake
            self._delta = start - shifted
            head = bytearray(hs)
            head[:0x80] = layout.pack_static_header(fake)
            for off in (layout.OFF_TAIL, layout.OFF_TAIL_INTENT, layout.OFF_MIRRORED):
                struct.pack_into("<Q", head, off, end - self._delta)
            ctypes.memmove(hdr, bytes(head), hs)
            self._ring = memoryview((ctypes.c_char * (hs + cap)).from_address(hdr)).cast("B")
            self.data = self._ring[hs + shifted:hs + shifted + length].toreadonly()
        except BaseException:
            self.close()
            raise

    def summarize(self, ahead: Callable[[int], None] | None = None,
                  out_size: int = 8 << 20) -> Summary:
        """Walk the window's records (lengths, padding, consecutive sequences).

        ``ahead(position)`` is called before each batch the walker reads from
        ``position`` on (at most about ``out_size`` payload bytes): a caller checks
        the checksums of the bytes just ahead, so that both read them once from memory.
        """
        p = self.params
        if self._ring is None:  # pragma: no cover - fallback without the C core
            return summarize(self.data, self.start, UNWRAPPED, self.start, self.end,
                             p.partition_size, p.max_record, self.where)
        delta = self._delta
        shifted_ahead = None if ahead is None else (lambda pos: ahead(pos + delta))
        try:
            return summarize_segment(self._ring, self._fake, self._shifted,
                                     self.end - delta, where=self.where,
                                     ahead=shifted_ahead, out_size=out_size)
        except CorruptSegmentError:
            # say what is wrong in the image's own positions, not the shifted ones
            summarize(self.data, self.start, UNWRAPPED, self.start, self.end,
                      p.partition_size, p.max_record, self.where)
            raise

    def close(self) -> None:
        """Unmap; any view of :attr:`data` must be released first."""
        if getattr(self, "data", None) is not None:
            self.data.release()
        if self._ring is not None:
            self._ring.release()
            self._ring = None
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
