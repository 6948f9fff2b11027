"""Restore a ring from an image file or a replica.

The new ring is built under a temporary name in the target's directory: every chunk is
read and its CRC32C checked straight into the new segment (pre-faulted first), the
records are walked and compared with the image header, and only then is the segment
published under the target name (``link``, which refuses an existing name, or
``rename`` over a stopped ring when overwriting). A damaged image therefore never
touches the target, and no process can attach to a half-built ring.

An uncompressed image goes through an engine's copy mode (:class:`pyshm.engine.Copier`)
when one is available (``engine="auto"``): into a new segment in one pass (copied with
every chunk's CRC checked from the bytes written), in place in two (every chunk verified
first, then copied and checked again), so the CPU itself never checksums.

The restored ring holds the window's bytes at the same positions modulo capacity, with
``tail = tail_intent = mirrored = end position`` and ``next_sequence = last + 1``: a
producer continues with the next sequence and a consumer resumes with
``ring.consumer(start=next_sequence)`` (or ``start="oldest"``), no gap, no duplicate.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import secrets
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import layout
from ..errors import (
    CorruptSegmentError,
    EngineError,
    ImageChecksumError,
    ImageError,
    InvalidParameterError,
    ProducerBusyError,
    RingExistsError,
    RingNotFoundError,
)
from ..ring import pid_alive
from ..segment import Segment, display_name, resolve_path
from . import format as fmt
from .records import MappedWindow, Summary, summarize_segment
from .snapshot import Capture, capture


@dataclass(frozen=True)
class RestoreInfo:
    name: str
    path: str
    start: int
    end: int
    first_sequence: int
    next_sequence: int
    record_count: int
    engine: str | None = None
    """The engine whose copy mode did the copy (``"cpu"``, ...), or None: the CPU path."""



def target_header(seg: Segment) -> layout.RingParams:
    """The static header of a ring about to be overwritten. A ring whose in-place
    restore was interrupted (magic ``MAGIC_RESTORING``) is accepted: running the restore
    again is its documented recovery."""
    head = bytes(seg.buf[:0x80])
    if head[:len(layout.MAGIC_RESTORING)] == layout.MAGIC_RESTORING:
        head = layout.MAGIC + head[len(layout.MAGIC):]
    try:
        return layout.unpack_static_header(head, where=seg.name, size=seg.size)
    except CorruptSegmentError as exc:
        raise CorruptSegmentError(f"refusing to overwrite {seg.name!r}: it is not a "
                                  f"pyshm ring ({exc})") from None


def check_stopped(target: str) -> None:
    """Refuse to overwrite a ring that a live producer or consumer is still using."""
    with Segment(target, readonly=True) as seg:
        params = target_header(seg)
        users = []
        if params.producer_pid and pid_alive(params.producer_pid):
            users.append(f"producer pid {params.producer_pid}")
        raw = seg.buf
        for i in range(layout.MAX_CONSUMERS):
            off = layout.slot_offset(i)
            pid, = struct.unpack_from("<q", raw, off + layout.SLOT_OFF_PID)
            flags, = struct.unpack_from("<Q", raw, off + layout.SLOT_OFF_FLAGS)
            if flags & layout.SLOT_ACTIVE and pid_alive(pid):
                users.append(f"consumer pid {pid}")
        raw.release()
    if users:
        raise ProducerBusyError(f"refusing to overwrite ring {seg.name!r}: still in use by "
                                f"{', '.join(users)}; stop them first")


def _check_window(header: fmt.ImageHeader, cap: int, psize: int) -> int:
    """The oldest position a reader of the restored ring starts from, checked."""
    start, end = header.first_position, header.end_position
    oldest = layout.oldest_boundary(end, cap, psize)
    if start > oldest and start % psize:
        raise ImageError(f"image window starts at {start}, inside a partition, after the "
                         f"oldest position {oldest} a reader would start from")
    return oldest


def _new_params(params: layout.RingParams, header: fmt.ImageHeader,
                name: str) -> layout.RingParams:
    # a restored ring is the user's new ring: persistent, whatever the source was, a
    # primary (no replica flag) and without a CRC table after its data
    flags = params.flags & ~(layout.FLAG_REPLICA | layout.FLAG_EPHEMERAL
                             | layout.FLAG_CRC_TABLE)
    if params.is_replica or header.from_replica:
        # a promoted replica has no engine yet: gating on `mirrored` would stall its
        # producer after one lap (pyshm.replica.promote clears it too)
        flags &= ~layout.FLAG_GATE_ON_MIRROR
    # a new identity: a bridge must not take the restored ring's records for those it
    # already shipped from the original, which may have gone further before it was lost;
    # and no longer a follower: the image does not say which ring it followed
    return dataclasses.replace(
        params, flags=flags & ~layout.FLAG_FOLLOWER, name=name, created_ns=fmt.now_ns(),
        creator_pid=os.getpid(), producer_pid=0, data_phys_addr=0,
        ring_id=layout.new_ring_id(), origin_id=0)


def _check_summary(s: Summary, header: fmt.ImageHeader) -> None:
    first = s.first_sequence if s.record_count else header.next_sequence
    nxt = (s.last_sequence + 1) if s.last_sequence is not None else header.next_sequence
    if (s.record_count, first, nxt) != (header.record_count, header.first_sequence,
                                        header.next_sequence):
        raise ImageError(
            f"records disagree with the image header: found {s.record_count} "
            f"records {first}..{nxt - 1}, header says {header.record_count} records "
            f"{header.first_sequence}..{header.next_sequence - 1}")


_MADV_POPULATE_WRITE = 23  # Linux 5.14+; Python 3.11's mmap does not name it


def _populate_call(seg: Segment) -> Callable[[], bool] | None:
    """A call that maps every page of ``seg`` writable (MADV_POPULATE_WRITE through
    ctypes, which drops the GIL) and says whether it worked; None without libc."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
        madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        anchor = ctypes.c_char.from_buffer(seg.mmap)
        addr = ctypes.addressof(anchor)
        del anchor  # the address stays valid while the segment is mapped
    except (AttributeError, OSError, TypeError, ValueError):
        return None
    return lambda: madvise(addr, seg.size, _MADV_POPULATE_WRITE) == 0


def _allocate(seg: Segment) -> bool:
    """Allocate and map every page of a new segment in the kernel: ``fallocate`` (tmpfs
    allocates them in one call, no fault per page), then MADV_POPULATE_WRITE (page tables
    only). On this project's VM that is ~2x faster than faulting them in, and faster
    than pwrite(2) into the file (docs/images.md). False when the pages are not mapped
    yet (no fallocate or madvise here): the caller pre-faults them."""
    from ..segment import access_error

    try:
        fd = os.open(seg.path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise access_error(seg.path, exc) from None
    try:
        os.posix_fallocate(fd, 0, seg.size)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
            raise access_error(seg.path, exc, "allocate the pages of") from None
        # EOPNOTSUPP, EINVAL, ENODEV: this file system allocates on first touch
    finally:
        os.close(fd)
    call = _populate_call(seg)
    return call is not None and call()


class _Populate:
    """Fault in a new segment's pages on a second thread (ctypes drops the GIL), so the
    image is verified while the kernel allocates: first touch of fresh shm (~1 GB/s)
    is the largest cost of a restore into a new segment."""

    def __init__(self, seg: Segment):
        self.seg = seg
        self.ok = False
        self.thread: threading.Thread | None = None
        call = _populate_call(seg)
        if call is None:
            return

        def run() -> None:
            self.ok = call()

        self.thread = threading.Thread(target=run, name="pyshm-restore-populate",
                                       daemon=True)
        self.thread.start()

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()
            self.thread = None

    def finish(self) -> None:
        self.join()
        if not self.ok:  # old kernel or no libc: the portable, slower path
            self.seg.prefault()


# what a restore's write_file did to the new segment, on its own thread
WROTE = "wrote"  # the window's bytes are in the file: no fill
ALLOCATED = "allocated"  # every page allocated and mapped: fill without a prefault


def _build(target: str, params: layout.RingParams, header: fmt.ImageHeader,
           fill: Callable[[memoryview], None], *, overwrite: bool, mode: int,
           prefault: bool, force: bool,
           verify_first: Callable[[], None] | None = None,
           write_file: Callable[[Segment], str] | None = None,
           engine: str | None = None, device: str | None = None) -> RestoreInfo:
    path = resolve_path(target)
    name = display_name(path)
    exists = os.path.exists(path)
    if exists and not overwrite:
        raise RingExistsError(f"ring {name!r} already exists ({path}); to replace a "
                              f"stopped ring pass overwrite=True")
    if exists and not os.path.isfile(path):
        raise InvalidParameterError(f"refusing to replace {path}: not a regular file (a "
                                    f"device-backed ring cannot be swapped by rename)")
    lock = None
    if exists:
        # an engine, `pyshm run` or another restore holding the target keeps it: a
        # rename would leave them writing a file nobody can open any more
        from ..lock import SegmentLock
        lock = SegmentLock.acquire(path, "restore")
    try:
        if exists and not force:
            check_stopped(path)
        return _build_unlocked(path, name, params, header, fill, overwrite=overwrite,
                               mode=mode, prefault=prefault, verify_first=verify_first,
                               write_file=write_file, engine=engine, device=device)
    finally:
        if lock is not None:
            lock.release()


def _build_unlocked(path: str, name: str, params: layout.RingParams,
                    header: fmt.ImageHeader, fill: Callable[[memoryview], None], *,
                    overwrite: bool, mode: int, prefault: bool,
                    verify_first: Callable[[], None] | None,
                    write_file: Callable[[Segment], str] | None,
                    engine: str | None = None, device: str | None = None) -> RestoreInfo:
    cap, psize = params.capacity, params.partition_size
    try:
        vfs = os.statvfs(os.path.dirname(path))
        free = vfs.f_bavail * vfs.f_frsize if device is None else None  # (a device: its own)
    except OSError:
        free = None
    if free is not None and layout.segment_size(cap) > free:
        # a sparse segment larger than the file system would fault (SIGBUS) on touch
        raise InvalidParameterError(
            f"cannot restore a ring of capacity {cap} into {os.path.dirname(path)}: only "
            f"{free} bytes free")
    start, end = header.first_position, header.end_position
    oldest = _check_window(header, cap, psize)
    new_params = _new_params(params, header, name)
    tmp = f"{path}.restore-{os.getpid()}-{secrets.token_hex(4)}"
    # device: the new ring is built in that u-dma-buf buffer (the temporary name is a
    # link to it), its bus address in the header, and named by a link to the device
    seg = Segment(tmp, create=True, size=layout.segment_size(cap), mode=mode, device=device)
    if device is not None:
        new_params = dataclasses.replace(new_params,
                                         data_phys_addr=seg.bus_address + layout.OFF_DATA)
        prefault = False  # a buffer is resident memory: nothing to allocate
    published = False
    try:
        # write(2) into the new file, or fallocate, allocates its pages in the kernel
        # without a page fault each (tmpfs: ~0.8 s/GiB here against ~1.2 s/GiB for
        # faulting them in); the file has no other name yet, so it runs while the image
        # is verified (or, for an engine copy, its records walked)
        written: list[str] = []
        failed: list[BaseException] = []

        def run_writer() -> None:
            try:
                written.append(write_file(seg) if write_file is not None else "")
            except BaseException as exc:
                failed.append(exc)

        writer = threading.Thread(target=run_writer, name="pyshm-restore-write",
                                  daemon=True) if write_file is not None else None
        if writer is not None:
            writer.start()
        try:
            if verify_first is not None:
                verify_first()
        finally:
            if writer is not None:
                writer.join()
        if failed:
            raise failed[0]
        copied = bool(written and written[0] == WROTE)
        if prefault and not copied and not (written and written[0] == ALLOCATED):
            _Populate(seg).finish()
        buf = seg.buf
        data = buf[layout.OFF_DATA:layout.OFF_DATA + cap]
        try:
            buf[:0x80] = layout.pack_static_header(new_params)
            if device is not None:
                # a buffer outlives a killed restore: it holds no ring until it is whole
                buf[:len(layout.MAGIC)] = layout.MAGIC_RESTORING
            if not copied:
                fill(data)
            # whole partitions between where a reader starts and the window: padding,
            # so a consumer starting at "oldest" walks into the first restored record
            for pos in range(oldest, start, psize):
                struct.pack_into("<ii", data, pos & (cap - 1), psize, layout.PADDING_TYPE)
            u64 = np.frombuffer(buf, dtype="<u8", count=layout.HEADER_SIZE // 8)
            for off in (layout.OFF_TAIL, layout.OFF_TAIL_INTENT, layout.OFF_MIRRORED):
                u64[off // 8] = end
            u64[layout.OFF_NEXT_SEQUENCE // 8] = header.next_sequence
            del u64
            if verify_first is None:
                # nobody can attach to the temporary name: walking it sees final bytes
                s = summarize_segment(buf, new_params, min(oldest, start), end,
                                      where=f"restored ring {name!r}")
                _check_summary(s, header)
            if device is not None:
                buf[:len(layout.MAGIC)] = layout.MAGIC
        except CorruptSegmentError as exc:
            raise ImageError(f"image records are invalid: {exc}") from None
        finally:
            data.release()
            buf.release()
        if display_name(path) == path:
            seg.mmap.flush()  # a file-backed ring must reach its file before it is named
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                if device is not None:  # a second link to the device (a hard link to a
                    os.symlink(os.readlink(tmp), path)  # device node crosses file systems)
                else:
                    os.link(tmp, path)
            except FileExistsError:
                raise RingExistsError(f"ring {name!r} appeared while restoring") from None
            os.unlink(tmp)
        published = True
    finally:
        seg.close()
        if not published:
            seg.unlink()
    return RestoreInfo(name, path, start, end, header.first_sequence, header.next_sequence,
                       header.record_count, engine)


def _copy_window(data: memoryview, src: memoryview, start: int, cap: int) -> None:
    """Unwrapped window bytes -> ring data area (at most two memcpys)."""
    off = start & (cap - 1)
    first = min(len(src), cap - off)
    data[off:off + first] = src[:first]
    if first < len(src):
        data[:len(src) - first] = src[first:]


_WALK_OUT = 1 << 20  # the walker's payload buffer: stays in L2 while it is rewritten


def _verify_mapped(reader: fmt.ImageReader, window: MappedWindow,
                   progress: fmt.ProgressFn | None) -> None:
    """Every chunk's CRC32C and the record walk over the file's mapping, interleaved:
    the chunks just ahead of the walker are checked first, so the walker reads them
    from the cache (one pass over memory for both). A damaged chunk is reported in
    preference to the walk error it may have caused."""
    h = reader.header
    chunks = reader.chunks
    data = window.data
    nxt = 0

    def ahead(pos: int) -> None:
        nonlocal nxt
        limit = pos - h.first_position + 2 * _WALK_OUT
        while nxt < len(chunks) and (nxt * h.chunk_size) < limit:
            reader.check_chunk(nxt, data, progress)
            nxt += 1

    try:
        s = window.summarize(ahead=ahead, out_size=_WALK_OUT)
    except CorruptSegmentError as exc:
        ahead(h.end_position + h.chunk_size)  # raises if a chunk is damaged
        raise ImageError(f"image records are invalid: {exc}") from None
    ahead(h.end_position + h.chunk_size)
    _check_summary(s, h)


def _decompressed_ring(reader: fmt.ImageReader, progress: fmt.ProgressFn | None) -> Any:
    """A compressed image's window, each chunk verified, laid out as a ring in private
    memory (header + data) and walked there with the C walker; returns the array."""
    h = reader.header
    p = h.params
    cap = p.capacity
    ring = np.zeros(layout.OFF_DATA + cap, dtype=np.uint8)
    mv = memoryview(ring.data).cast("B")
    data = mv[layout.OFF_DATA:]
    try:
        for i, e in enumerate(reader.chunks):
            lin = i * h.chunk_size
            off = (h.first_position + lin) & (cap - 1)
            n = e.raw_length
            pieces = [data[off:off + n]] if off + n <= cap else \
                [data[off:], data[:n - (cap - off)]]
            reader.read_chunk_into(i, pieces)
            if progress:
                progress(lin + n, h.data_length)
        mv[:0x80] = layout.pack_static_header(p)
        for o in (layout.OFF_TAIL, layout.OFF_TAIL_INTENT, layout.OFF_MIRRORED):
            struct.pack_into("<Q", mv, o, h.end_position)
        try:
            s = summarize_segment(mv, p, h.first_position, h.end_position,
                                  where=f"image {reader.path}")
        except CorruptSegmentError as exc:
            raise ImageError(f"image records are invalid: {exc}") from None
        _check_summary(s, h)
    finally:
        data.release()
        mv.release()
    return ring


def _copy_chunks(reader: fmt.ImageReader, h: fmt.ImageHeader) -> list[Any]:
    """The image's chunks as a copy-mode job: offsets in the window's data."""
    from ..engine import CopyChunk

    return [CopyChunk(i * h.chunk_size, h.first_position + i * h.chunk_size, e.raw_length,
                      e.raw_crc) for i, e in enumerate(reader.chunks)]


_ENGINE_BATCH = 64 << 20  # bytes per engine call: progress between calls


def _engine_batches(chunks: list[Any]) -> list[list[Any]]:
    out: list[list[Any]] = [[]]
    size = 0
    for c in chunks:
        if size >= _ENGINE_BATCH:
            out.append([])
            size = 0
        out[-1].append(c)
        size += c.length
    return out


def _verify_batches(copier: Any, source: Any, reader: fmt.ImageReader, chunks: list[Any],
                    done: Callable[[int], None] | None = None) -> None:
    """Check every chunk's CRC through the engine, in batches; the first mismatch is an
    ImageError naming its chunk. ``done`` gets the bytes verified so far."""
    from ..engine import CopyChecksumError

    verified = 0
    for batch in _engine_batches(chunks):
        try:
            copier.verify(source, batch)
        except CopyChecksumError as exc:
            raise reader._chunk_error(chunks.index(batch[exc.chunk]),
                                      "checksum mismatch (data damaged)") from None
        verified += sum(c.length for c in batch)
        if done:
            done(verified)


def _verify_by_engine(copier: Any, reader: fmt.ImageReader, window: MappedWindow,
                      source: Any, progress: fmt.ProgressFn | None) -> list[Any]:
    """Every chunk's CRC checked by the engine's copy mode (read only) while this process
    walks the record headers on another thread (both read the image's mapping; the walk
    waits on memory latency, the checksums on bandwidth, so they overlap well); returns
    the copy job. Nothing is written anywhere. A damaged chunk is reported in preference
    to the walk error it may have caused."""

    h = reader.header
    chunks = _copy_chunks(reader, h)
    walked: dict[str, Any] = {}

    def walk() -> None:
        try:
            walked["summary"] = window.summarize()
        except CorruptSegmentError as exc:
            walked["error"] = exc

    walker = threading.Thread(target=walk, name="pyshm-restore-walk", daemon=True)
    walker.start()
    try:
        _verify_batches(copier, source, reader, chunks,
                        (lambda done: progress(done, h.data_length)) if progress else None)
    finally:
        walker.join()
    if "error" in walked:
        raise ImageError(f"image records are invalid: {walked['error']}")
    _check_summary(walked["summary"], h)
    return chunks


def _engine_source(copier: Any, window: MappedWindow, length: int, position: int) -> Any:
    """What the engine reads: the image's mapping, or for an engine that reads only its
    own (DMA) buffers, its staging buffer (for data destined for ring ``position``
    onwards) with the image's bytes read into it once."""
    source = copier.staging_buffer(length, position)
    if source is None:
        return window.data
    memoryview(source).cast("B")[:length] = window.data
    return source


def _copy_new_by_engine(copier: Any, reader: fmt.ImageReader, source: Any,
                        data: memoryview, cap: int, chunks: list[Any],
                        progress: fmt.ProgressFn | None) -> None:
    """The one pass of a restore into a new segment: the engine copies every chunk into
    the (unpublished) segment and checks its CRC from the bytes written; a chunk that
    differs is the image's damage, reported as such, and the segment is discarded."""
    from ..engine import CopyChecksumError

    total = sum(c.length for c in chunks)
    done = 0
    for batch in _engine_batches(chunks):
        try:
            copier.copy(source, data, cap, batch)
        except CopyChecksumError as exc:
            raise reader._chunk_error(chunks.index(batch[exc.chunk]),
                                      "checksum mismatch (data damaged)") from None
        done += sum(c.length for c in batch)
        if progress:
            progress(done, total)


def _walk_for_engine(copier: Any, reader: fmt.ImageReader, window: MappedWindow,
                     source: Any, chunks: list[Any]) -> None:
    """The record walk of an engine restore into a new segment (the copy checks the
    CRCs). A walk that fails may be the effect of a damaged chunk: the engine checks
    them all then, so that the damage is what is reported."""

    try:
        s = window.summarize()
    except CorruptSegmentError as exc:
        _verify_batches(copier, source, reader, chunks)
        raise ImageError(f"image records are invalid: {exc}") from None
    _check_summary(s, reader.header)


def _copy_by_engine(copier: Any, reader: fmt.ImageReader, source: Any, data: memoryview,
                    cap: int, chunks: list[Any], name: str) -> None:
    """The verified chunks copied into the ring's data area by the engine, each CRC
    checked again from the bytes written: a chunk that differs now was changed in the
    image file during the restore."""
    from ..engine import CopyChecksumError

    for batch in _engine_batches(chunks):
        try:
            copier.copy(source, data, cap, batch)
        except CopyChecksumError as exc:
            i = chunks.index(batch[exc.chunk])
            raise ImageChecksumError(
                f"{reader.path}: chunk {i} changed while it was restored (verified, then "
                f"different when copied); ring {name!r} is left unusable (not a pyshm ring "
                f"until restored again)", part="chunk", chunk=i) from None


def _restore_in_place(reader: fmt.ImageReader, target: Any, *, force: bool,
                      progress: fmt.ProgressFn | None,
                      copier: Any = None) -> RestoreInfo:
    """:func:`_restore_in_place_locked` holding the target's lock (pyshm.lock): no
    second restore, engine or ``pyshm run`` can write the ring meanwhile."""
    from ..lock import SegmentLock

    if not isinstance(target, (str, os.PathLike)):
        given = getattr(target, "segment", target)
        if not isinstance(given, Segment) or given.readonly:
            raise InvalidParameterError(f"cannot restore in place into {target!r}: give "
                                        f"a ring name, or a Ring/Segment opened writable")
    try:
        lock = SegmentLock.acquire(target, "restore")
    except RingNotFoundError:
        raise RingNotFoundError(f"cannot restore in place: no ring named {target!r}") \
            from None
    with lock:
        return _restore_in_place_locked(reader, target, force=force, progress=progress,
                                        copier=copier)


def _restore_in_place_locked(reader: fmt.ImageReader, target: Any, *, force: bool,
                             progress: fmt.ProgressFn | None,
                             copier: Any = None) -> RestoreInfo:
    """Overwrite the existing, stopped ring ``target`` with the image, verified first.

    Every chunk's CRC32C and the whole record walk run over the image's page cache (a
    mapping of the file, nothing copied) before the first byte of the target changes;
    then each byte is copied once, file mapping -> ring mapping, into pages the ring
    already has. The ring's magic is replaced by ``MAGIC_RESTORING`` during the copy
    and the real one written last, so a restore killed halfway leaves a segment that
    readers refuse as "not a pyshm ring" instead of a mix of two rings, and that this
    function (``pyshm restore --in-place`` again) and ``pyshm rm`` still accept.

    With an engine's copy mode (``copier``, :class:`pyshm.engine.Copier`) the engine
    checks the chunks' CRCs (its threads share the work) and then copies them, checking
    each CRC again from the bytes written; the CPU only walks the record headers.
    """
    h = reader.header
    params = h.params
    cap, psize = params.capacity, params.partition_size
    if isinstance(target, (str, os.PathLike)):
        path = resolve_path(target)
        given = None
    else:
        # an open Ring or Segment: its mapping, already faulted in by its owner, is
        # written directly (no page-table work at all)
        given = getattr(target, "segment", target)
        if not isinstance(given, Segment) or given.readonly:
            raise InvalidParameterError(f"cannot restore in place into {target!r}: give "
                                        f"a ring name, or a Ring/Segment opened writable")
        path = given.path
    name = display_name(path)
    if not os.path.exists(path):
        raise RingNotFoundError(f"cannot restore in place: no ring named {name!r} ({path})")
    if not force:
        check_stopped(path)
    start, end = h.first_position, h.end_position
    oldest = _check_window(h, cap, psize)
    with (Segment(path) if given is None else contextlib.nullcontext(given)) as seg:
        cur = target_header(seg)
        if (cur.capacity, cur.partition_count) != (cap, params.partition_count):
            raise InvalidParameterError(
                f"cannot restore in place: ring {name!r} has capacity {cur.capacity} and "
                f"{cur.partition_count} partitions, the image {cap} and "
                f"{params.partition_count}; restore into a new ring instead")
        window: MappedWindow | None = None
        scratch: Any = None
        # the ring's pages exist but this new mapping has none of them yet: map them
        # (MADV_POPULATE_WRITE writes nothing) while the image is verified
        pop = _Populate(seg) if given is None else None
        try:
            if h.compression == fmt.COMPRESS_NONE:
                window = MappedWindow(reader.fileno(), reader.data_offset, params, start, end,
                                      where=f"image {reader.path}")
                if copier is not None:
                    copier.attach_target(seg)
                    source = _engine_source(copier, window, h.data_length, start)
                    job = _verify_by_engine(copier, reader, window, source, progress)
                else:
                    _verify_mapped(reader, window, progress)
            else:
                scratch = _decompressed_ring(reader, progress)
        except BaseException:
            if window is not None:
                window.close()
            raise
        finally:
            if pop is not None:
                pop.join()  # never leave a thread on the mapping, even on a refusal
        try:
            # verified in full: from here on the target is written
            if pop is not None:
                pop.finish()
            # where the ring lives is the target's, not the image's: a ring in a
            # u-dma-buf buffer keeps the bus address engines read from its header
            new_params = dataclasses.replace(_new_params(params, h, name),
                                             data_phys_addr=cur.data_phys_addr)
            buf = seg.buf
            data = buf[layout.OFF_DATA:layout.OFF_DATA + cap]
            try:
                # readers refuse the ring from here on; restore and rm still know it
                buf[:len(layout.MAGIC)] = layout.MAGIC_RESTORING
                if window is not None and copier is not None:
                    _copy_by_engine(copier, reader, source, data, cap, job, name)
                elif window is not None:
                    _copy_window(data, window.data, start, cap)
                else:
                    data[:] = memoryview(scratch.data)[layout.OFF_DATA:]
                for pos in range(oldest, start, psize):
                    struct.pack_into("<ii", data, pos & (cap - 1), psize, layout.PADDING_TYPE)
                # consumer slots, counters, producer pid: as a freshly created ring
                buf[0x80:layout.HEADER_SIZE] = bytes(layout.HEADER_SIZE - 0x80)
                for off in (layout.OFF_TAIL, layout.OFF_TAIL_INTENT, layout.OFF_MIRRORED):
                    struct.pack_into("<Q", buf, off, end)
                struct.pack_into("<Q", buf, layout.OFF_NEXT_SEQUENCE, h.next_sequence)
                static = layout.pack_static_header(new_params)
                buf[len(layout.MAGIC):0x80] = static[len(layout.MAGIC):]
                if display_name(path) == path:
                    # a file-backed ring: everything reaches the file before the magic
                    # that declares it whole
                    seg.mmap.flush()
                buf[:len(layout.MAGIC)] = static[:len(layout.MAGIC)]
            finally:
                data.release()
                buf.release()
            if display_name(path) == path:  # a file-backed ring: reach the file
                seg.mmap.flush()
        finally:
            if window is not None:
                window.close()
    return RestoreInfo(name, path, start, end, h.first_sequence, h.next_sequence,
                       h.record_count, copier.name if window is not None and copier is not None
                       else None)


def _pwrite_window(path: str, view: memoryview, start: int, cap: int) -> bool:
    """Write the unwrapped window into ring file ``path`` at its ring offsets; False
    when the file system has no write(2) (hugetlbfs: the caller copies by mapping)."""
    fd = os.open(path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        off = start & (cap - 1)
        first = min(len(view), cap - off)
        done = 0
        for dst, lo, hi in ((layout.OFF_DATA + off, 0, first),
                            (layout.OFF_DATA, first, len(view))):
            while lo < hi:
                try:
                    n = os.pwrite(fd, view[lo:hi], dst)
                except OSError as exc:
                    if done == 0 and exc.errno in (errno.EINVAL, errno.EOPNOTSUPP,
                                                   errno.ENOSYS):
                        return False
                    raise
                if n <= 0:
                    raise OSError(errno.EIO, f"short write to {path}")
                lo, dst, done = lo + n, dst + n, done + n
    finally:
        os.close(fd)
    return True


def _restore_mapped(reader: fmt.ImageReader, target: str, *, overwrite: bool, force: bool,
                    mode: int, prefault: bool, progress: fmt.ProgressFn | None,
                    copier: Any = None, device: str | None = None) -> RestoreInfo:
    """New segment from an uncompressed image mapped once.

    CPU path: the chunks' CRC32C and the record walk read the mapping while another
    thread writes it into the new file. Engine path (``copier``): another thread
    allocates the new segment's pages (fallocate + populate) while the records are
    walked, then the engine copies every chunk in and checks its CRC from the bytes
    written: one pass over the data. Either way the name appears only after both
    succeed."""
    h = reader.header
    cap = h.params.capacity
    with MappedWindow(reader.fileno(), reader.data_offset, h.params, h.first_position,
                      h.end_position, where=f"image {reader.path}") as window:
        if copier is not None:
            source = _engine_source(copier, window, h.data_length, h.first_position)
            job = _copy_chunks(reader, h)

            def allocate(seg: Segment) -> str:
                copier.attach_target(seg)
                return ALLOCATED if prefault and _allocate(seg) else ""

            return _build(
                target, h.params, h,
                lambda data: _copy_new_by_engine(copier, reader, source, data, cap, job,
                                                 progress),
                overwrite=overwrite, mode=mode, prefault=prefault, force=force,
                verify_first=lambda: _walk_for_engine(copier, reader, window, source, job),
                write_file=allocate, engine=copier.name, device=device)
        return _build(
            target, h.params, h,
            lambda data: _copy_window(data, window.data, h.first_position, cap),
            overwrite=overwrite, mode=mode, prefault=prefault, force=force,
            verify_first=lambda: _verify_mapped(reader, window, progress),
            write_file=lambda seg: WROTE if _pwrite_window(seg.path, window.data,
                                                           h.first_position, cap) else "",
            device=device)


ENGINE_CHOICES = ("auto", "none")  # besides the registered engine names


def _copier(engine: Any, *, dma_target: bool) -> Any:
    """The copy mode to restore through, or None for the CPU path.

    ``engine``: a :class:`pyshm.engine.Copier` (used as given), None or ``"none"`` (the
    CPU path), ``"auto"`` (the engine ``open_engine`` would pick, if it has a copy mode
    that can write this target; else the CPU path, silently), or an engine name (its
    copy mode, or a clear error when it has none or cannot write this target).
    ``dma_target``: the target ring lives in DMA-able memory (a bus address)."""
    from ..engine import Copier, open_copier

    if engine is None or engine == "none":
        return None
    copier: Copier
    if isinstance(engine, Copier):
        copier = engine
    elif not isinstance(engine, str):
        raise InvalidParameterError(f"engine={engine!r}: give an engine name, 'auto', "
                                    f"'none' or a pyshm.engine.Copier")
    else:
        try:
            found = open_copier(engine)
        except EngineError:
            if engine == "auto":
                return None  # no engine usable here: the CPU path
            raise
        if found is None:
            if engine == "auto":
                return None
            raise InvalidParameterError(f"engine {engine!r} has no copy mode to restore "
                                        f"through; use engine 'cpu' or 'none' (the CPU "
                                        f"path)")
        copier = found
    if copier.dma_only and not (dma_target or copier.maps_segments):
        if engine == "auto":
            copier.close()
            return None
        raise InvalidParameterError(f"engine {copier.name!r} copies only into DMA-able "
                                    f"memory (a ring created with --udmabuf); restore this "
                                    f"ring with engine 'cpu' or 'none'")
    return copier


def restore(image: str | os.PathLike[str], target: Any, *, overwrite: bool = False,
            in_place: bool = False, force: bool = False, mode: int = 0o600,
            prefault: bool = True, progress: fmt.ProgressFn | None = None,
            engine: Any = "auto", device: str | os.PathLike[str] | None = None) -> RestoreInfo:
    """Build ring ``target`` from ``image``; verified in full before the name appears.

    ``in_place=True`` instead overwrites the existing, stopped ring ``target`` (same
    capacity and partitions) in its own pages, after the whole image is verified: the
    fast recovery path. ``target`` may then also be an open, writable ``Ring`` or
    ``Segment`` (a recovery process that keeps the ring mapped): its mapping is written
    directly, with no page-table work (see ``docs/images.md`` for the figures).

    ``engine``: an uncompressed image goes through this engine's copy mode (``auto``:
    the engine ``open_engine`` would pick, when it has one that can write the target;
    a name; a :class:`pyshm.engine.Copier`; None or ``"none"`` for the CPU path). Into
    a new segment the engine copies every chunk and checks its CRC from the bytes
    written (one pass: the segment has no name until it succeeds); in place it verifies
    every chunk first, then copies and checks again. A compressed image is decompressed
    and checked by the CPU whatever ``engine`` says. :attr:`RestoreInfo.engine` says
    which engine copied (None: the CPU path).

    ``device``: build the new ring in this u-dma-buf buffer (``/dev/udmabufN``, as
    ``pyshm create --udmabuf`` does), so that the FPGA engine can mirror it, and restore
    through it (``engine="pynq"``); the name becomes a link to the device once the ring
    is whole. Not with ``in_place`` (that ring stays where it lives).
    """
    if device is not None:
        if in_place:
            raise InvalidParameterError("device= is for a new ring; a restore in place "
                                        "writes the ring where it already lives")
        device = os.fspath(device)
    if not in_place and not isinstance(target, (str, os.PathLike)):
        raise InvalidParameterError("a Ring or Segment object is only accepted with "
                                    "in_place=True; give a ring name to create one")
    with fmt.ImageReader(image) as reader:
        h = reader.header
        cap = h.params.capacity
        uncompressed = h.compression == fmt.COMPRESS_NONE
        copier = _copier(engine, dma_target=device is not None
                         or _dma_target(target, in_place)) if uncompressed else None
        try:
            if in_place:
                return _restore_in_place(reader, target, force=force, progress=progress,
                                         copier=copier)
            if uncompressed:
                return _restore_mapped(reader, target, overwrite=overwrite, force=force,
                                       mode=mode, prefault=prefault and device is None,
                                       progress=progress, copier=copier, device=device)
        finally:
            if copier is not None and copier is not engine:
                copier.close()  # one we opened

        def fill(data: memoryview) -> None:
            total = h.data_length
            for i, e in enumerate(reader.chunks):
                lin = i * h.chunk_size
                off = (h.first_position + lin) & (cap - 1)
                n = e.raw_length
                pieces = [data[off:off + n]] if off + n <= cap else \
                    [data[off:], data[:n - (cap - off)]]
                reader.read_chunk_into(i, pieces)
                if progress:
                    progress(lin + n, total)

        return _build(target, h.params, h, fill, overwrite=overwrite, mode=mode,
                      prefault=prefault, force=force, device=device)


def _dma_target(target: Any, in_place: bool) -> bool:
    """Whether the ring the restore writes lives in DMA-able memory (a u-dma-buf buffer):
    only an existing ring restored in place can; a new segment is ordinary shared
    memory."""
    if not in_place:
        return False
    from ..udmabuf import is_device_link

    seg = getattr(target, "segment", target)
    if isinstance(seg, Segment):
        return bool(seg.bus_address) or is_device_link(seg.path)
    try:
        return is_device_link(resolve_path(target))
    except (OSError, TypeError, ValueError):
        return False


def restore_capture(cap: Capture, target: str, *, overwrite: bool = False,
                    force: bool = False, mode: int = 0o600,
                    prefault: bool = True,
                    device: str | os.PathLike[str] | None = None) -> RestoreInfo:
    """Build ring ``target`` from an in-memory capture (a replica or another ring);
    ``device``: in that u-dma-buf buffer, as :func:`restore`."""
    capacity = cap.params.capacity
    header = cap.header()

    def fill(data: memoryview) -> None:
        pos = cap.start
        for piece in cap.pieces():
            off = pos & (capacity - 1)
            data[off:off + len(piece)] = piece
            pos += len(piece)

    return _build(target, cap.params, header, fill, overwrite=overwrite, mode=mode,
                  prefault=prefault, force=force,
                  device=None if device is None else os.fspath(device))


def promote(replica: Any, target: str, *, engine: Any = None, overwrite: bool = False,
            force: bool = False, mode: int = 0o600) -> RestoreInfo:
    """Make a new primary ring ``target`` from a replica (engine paused for the copy)."""
    return restore_capture(capture(replica, engine=engine), target, overwrite=overwrite,
                           force=force, mode=mode)
