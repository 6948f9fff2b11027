"""Image file format, versions 1 and 2: writer and verifying reader.

::

    0                                                          header_size (256)
    +----------------------------------------------------------+
    | header: magic "PYSHMIMG", version, ring parameters,      |
    |   window [first_position, end_position), sequences,      |
    |   compression, chunk size/count, table CRC, header CRC   |
    +----------------------------------------------------------+ 256
    | chunk table: chunk_count x 24 bytes                       |
    |   {file offset u64, stored len u32, raw len u32,          |
    |    CRC32C of stored bytes u32, CRC32C of raw bytes u32}   |
    +----------------------------------------------------------+
    | chunk 0 | chunk 1 | ... (stored bytes, back to back)      |
    +----------------------------------------------------------+
    | trailer (32 bytes): "PYSHMEND", file length u64,          |
    |   CRC32C(header + table) u32, chunk count u32, own CRC    |
    +----------------------------------------------------------+

The chunks hold the window's bytes in position order (unwrapped): byte ``i`` of the data
is the ring byte of position ``first_position + i``. Everything read from a file is
checked before use; a damaged file raises an :class:`~pyshm.errors.ImageError` subclass
naming the part (and chunk) that is wrong. The format never uses pickle.

Kinds and versions. An image holds a ring window (kind ``ring``) or the rows of a state
region at one ring sequence (kind ``state``, see :class:`StateImageHeader`). Version 2
adds a ``kind`` field (u32 at header offset 184, inside bytes version 1 leaves zero);
framing (header size, chunk table, chunks, trailer, checksums) is the same in both. The
rule: a writer uses the lowest version that can express the image, so ring images are
still written as version 1 and every older pyshm keeps reading them; state images are
version 2, which an older pyshm refuses by its version check ("image format version 2")
instead of misreading it. Readers accept both; version 1 means kind ``ring``. A new kind
is a new value of the field; a reader refuses a kind it does not know by name.

State image header (version 2, kind 1), where it differs from the ring header::

    32  row_count u64 | 40 itemsize u32 | 44 desc_length u32 | 48 region flags u32
    52  desc_crc u32  | 56 region created_ns u64 | 64 applied_seq u64 (S; 2^64-1: none)
    72  region_id u64 | 80 epoch at the cut u64 | 88..103 reserved
    data: the dtype description (canonical JSON, zero-padded to 8 bytes), then the
          rows (row_count x itemsize), exactly as the region holds them at S
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import crc32c as _crc32c
import numpy as np

from .. import layout
from ..errors import (
    ImageChecksumError,
    ImageError,
    ImageTruncatedError,
    ImageVersionError,
    PyshmError,
    RingExistsError,
    RingNotFoundError,
)
from ..segment import access_error

MAGIC = b"PYSHMIMG"
IMAGE_SUFFIX = ".pyimg"  # the one file suffix of images: CLI, schedules, supervisor
TRAILER_MAGIC = b"PYSHMEND"
VERSION = 1                 # ring images are written as version 1 (see "Kinds and versions")
VERSION_KIND = 2            # version 2: the kind field at OFF_KIND
READ_VERSIONS = (1, 2)
KIND_RING = 0
KIND_STATE = 1
KIND_NAMES = {KIND_RING: "ring", KIND_STATE: "state"}
KIND_CODES = {v: k for k, v in KIND_NAMES.items()}
OFF_KIND = 184
HEADER_SIZE = 256
ENTRY_SIZE = 24
TRAILER_SIZE = 32
DEFAULT_CHUNK = 4 << 20
MIN_CHUNK = 4096
MAX_CHUNK = 1 << 30

COMPRESS_NONE = 0
COMPRESS_ZSTD = 1
COMPRESSION_NAMES = {COMPRESS_NONE: "none", COMPRESS_ZSTD: "zstd"}
COMPRESSION_CODES = {v: k for k, v in COMPRESSION_NAMES.items()}

IMAGE_FLAG_FROM_REPLICA = 0x1
KNOWN_IMAGE_FLAGS = IMAGE_FLAG_FROM_REPLICA

# magic, version, header_size, flags, compression, chunk_size, chunk_count,
# capacity, max_record, partition_count, ring_flags, reserved,
# ring_created_ns, first_position, end_position, first_sequence, next_sequence,
# record_count, created_ns, data_length, stored_length, table_crc, reserved, name
_HEADER = struct.Struct("<8sIIIIII QIIII QQQQQQQQQ II 48s")
_HEADER_CRC_OFF = HEADER_SIZE - 4
# the state kind: magic ... chunk_count as above, then row_count, itemsize, desc_length,
# region_flags, desc_crc, region_created_ns, applied_seq, region_id, cut_epoch,
# reserved x2, created_ns, data_length, stored_length, table_crc, reserved, name, kind
_STATE_HEADER = struct.Struct("<8sIIIIII QIIII QQQQQQ QQQ II 48s I")
_KIND = struct.Struct("<I")
assert _HEADER.size == OFF_KIND and _STATE_HEADER.size == OFF_KIND + 4
_ENTRY = struct.Struct("<QIIII")
_TRAILER = struct.Struct("<8sQIII4x")
assert _HEADER.size <= _HEADER_CRC_OFF and _ENTRY.size == ENTRY_SIZE
assert _TRAILER.size == TRAILER_SIZE

ProgressFn = Callable[[int, int], None]


def crc(data, value: int = 0) -> int:
    """CRC32C (Castagnoli; hardware instruction when the CPU has one)."""
    return _crc32c.crc32c(data, value)


@dataclass(frozen=True)
class ImageHeader:
    params: layout.RingParams
    first_position: int
    end_position: int
    first_sequence: int
    next_sequence: int
    record_count: int
    created_ns: int
    compression: int = COMPRESS_NONE
    chunk_size: int = DEFAULT_CHUNK
    chunk_count: int = 0
    stored_length: int = 0
    table_crc: int = 0
    flags: int = 0

    @property
    def data_length(self) -> int:
        """Bytes of the window (``end_position - first_position``)."""
        return self.end_position - self.first_position

    @property
    def compression_name(self) -> str:
        """``none`` or ``zstd``."""
        return COMPRESSION_NAMES.get(self.compression, f"unknown({self.compression})")

    @property
    def from_replica(self) -> bool:
        """True when the image was taken from a replica."""
        return bool(self.flags & IMAGE_FLAG_FROM_REPLICA)

    @property
    def last_sequence(self) -> int | None:
        """Sequence of the last record, None for an image without records."""
        return self.next_sequence - 1 if self.record_count else None

    def pack(self) -> bytes:
        """The 256-byte header as written to the file, CRC included."""
        p = self.params
        raw = _HEADER.pack(
            MAGIC, VERSION, HEADER_SIZE, self.flags, self.compression, self.chunk_size,
            self.chunk_count, p.capacity, p.max_record, p.partition_count,
            p.flags & ~layout.FLAG_EPHEMERAL, 0,  # the segment's persistence, not data
            p.created_ns, self.first_position, self.end_position, self.first_sequence,
            self.next_sequence, self.record_count, self.created_ns, self.data_length,
            self.stored_length, self.table_crc, 0, p.name.encode()[:layout.NAME_SIZE])
        raw += bytes(_HEADER_CRC_OFF - len(raw))
        return raw + struct.pack("<I", crc(raw))


@dataclass(frozen=True)
class StateImageHeader:
    """The header of a state image (kind ``state``, format version 2)."""

    row_count: int
    itemsize: int
    desc_length: int
    desc_crc: int
    applied_seq: int | None
    region_id: int
    cut_epoch: int
    name: str
    region_created_ns: int
    created_ns: int
    compression: int = COMPRESS_NONE
    chunk_size: int = DEFAULT_CHUNK
    chunk_count: int = 0
    stored_length: int = 0
    table_crc: int = 0
    flags: int = 0
    region_flags: int = 0

    kind = "state"

    @property
    def desc_area(self) -> int:
        """Bytes of the description in the data, padded to 8."""
        return (self.desc_length + 7) & ~7

    @property
    def rows_bytes(self) -> int:
        """Bytes of the rows in the data (row_count x itemsize)."""
        return self.row_count * self.itemsize

    @property
    def data_length(self) -> int:
        """Bytes of the data: the padded description, then the rows."""
        return self.desc_area + self.rows_bytes

    @property
    def compression_name(self) -> str:
        """``none`` or ``zstd``."""
        return COMPRESSION_NAMES.get(self.compression, f"unknown({self.compression})")

    @property
    def from_replica(self) -> bool:
        """True if the image was taken from a state replica."""
        return bool(self.flags & IMAGE_FLAG_FROM_REPLICA)

    def pack(self) -> bytes:
        """The 256 header bytes, header CRC included (format version 2, kind state)."""
        seq = (1 << 64) - 1 if self.applied_seq is None else self.applied_seq
        raw = _STATE_HEADER.pack(
            MAGIC, VERSION_KIND, HEADER_SIZE, self.flags, self.compression,
            self.chunk_size, self.chunk_count, self.row_count, self.itemsize,
            self.desc_length, self.region_flags, self.desc_crc, self.region_created_ns,
            seq, self.region_id, self.cut_epoch, 0, 0, self.created_ns, self.data_length,
            self.stored_length, self.table_crc, 0, self.name.encode()[:layout.NAME_SIZE],
            KIND_STATE)
        raw += bytes(_HEADER_CRC_OFF - len(raw))
        return raw + struct.pack("<I", crc(raw))


@dataclass(frozen=True)
class ChunkEntry:
    offset: int
    stored_length: int
    raw_length: int
    stored_crc: int
    raw_crc: int


def expected_chunks(data_length: int, chunk_size: int) -> int:
    """How many chunks a window of ``data_length`` bytes takes."""
    return (data_length + chunk_size - 1) // chunk_size


def _check_framing(h: ImageHeader | StateImageHeader, where: str) -> None:
    if h.flags & ~KNOWN_IMAGE_FLAGS:
        raise ImageError(f"{where}: header has unknown image flags 0x{h.flags:x}")
    if h.compression not in COMPRESSION_NAMES:
        raise ImageError(f"{where}: header names unknown compression {h.compression}")
    if not MIN_CHUNK <= h.chunk_size <= MAX_CHUNK or h.chunk_size % layout.RECORD_ALIGN:
        raise ImageError(f"{where}: header chunk size {h.chunk_size} is out of range")
    if h.chunk_count != expected_chunks(h.data_length, h.chunk_size):
        raise ImageError(f"{where}: header says {h.chunk_count} chunks but {h.data_length} "
                         f"bytes in chunks of {h.chunk_size} need "
                         f"{expected_chunks(h.data_length, h.chunk_size)}")


def _check_state_header_fields(h: StateImageHeader, where: str) -> None:
    from ..state import layout as state_layout

    state_layout.check_geometry(h.row_count, h.itemsize, h.desc_length, 1, where,
                                ImageError)
    if h.region_flags & ~state_layout.KNOWN_FLAGS:
        raise ImageError(f"{where}: header has unknown region flags 0x{h.region_flags:x}")
    _check_framing(h, where)


def _check_header_fields(h: ImageHeader | StateImageHeader, where: str) -> None:
    """Every field that sizes a later read, checked before any of them is used."""
    if isinstance(h, StateImageHeader):
        _check_state_header_fields(h, where)
        return
    p = h.params
    layout.check_params(p.capacity, p.max_record, p.partition_count, where, ImageError)
    if p.flags & ~layout.KNOWN_FLAGS:
        raise ImageError(f"{where}: header has unknown ring flags 0x{p.flags:x}")
    if h.flags & ~KNOWN_IMAGE_FLAGS:
        raise ImageError(f"{where}: header has unknown image flags 0x{h.flags:x}")
    if h.compression not in COMPRESSION_NAMES:
        raise ImageError(f"{where}: header names unknown compression {h.compression}")
    if not MIN_CHUNK <= h.chunk_size <= MAX_CHUNK or h.chunk_size % layout.RECORD_ALIGN:
        raise ImageError(f"{where}: header chunk size {h.chunk_size} is out of range")
    if h.end_position < h.first_position or h.data_length > p.capacity \
            or h.first_position % layout.RECORD_ALIGN or h.end_position % layout.RECORD_ALIGN \
            or h.end_position >= 1 << 63:
        raise ImageError(f"{where}: header window [{h.first_position}, {h.end_position}) "
                         f"does not fit a ring of capacity {p.capacity}")
    if h.chunk_count != expected_chunks(h.data_length, h.chunk_size):
        raise ImageError(f"{where}: header says {h.chunk_count} chunks but {h.data_length} "
                         f"bytes in chunks of {h.chunk_size} need "
                         f"{expected_chunks(h.data_length, h.chunk_size)}")
    if h.record_count > h.data_length // layout.RECORD_HEADER \
            or h.next_sequence < h.record_count or h.first_sequence + h.record_count \
            != h.next_sequence and h.record_count:
        raise ImageError(f"{where}: header sequence range (first {h.first_sequence}, next "
                         f"{h.next_sequence}, {h.record_count} records) is inconsistent")
    if h.record_count == 0 and h.first_sequence != h.next_sequence:
        raise ImageError(f"{where}: empty image with first sequence {h.first_sequence} != "
                         f"next sequence {h.next_sequence}")


# ----------------------------------------------------------------------------------
# writer


def _write_all(fd: int, data, offset: int) -> None:
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


_SYNC_FILE_RANGE_WRITE = 2
_PAGE = 4096
_writeback: list[Callable[[int, int, int], None]] = []


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing ``[offset, offset + length)`` of ``fd`` to disk
    now, without waiting (Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``).

    A durable image is written chunk by chunk, then fsynced. Without this, every byte
    first piles up dirty in the page cache and the disk starts only at the fsync (or
    when the dirty limit throttles the writer): the copy into the cache and the disk
    write run one after the other. Started chunk by chunk, they overlap, and the fsync
    waits only for the last chunks (measured: 256 MiB to this VM's disk 373 -> 271 ms,
    and the rounds' spread 288-1402 ms -> 178-315 ms). Elsewhere a no-op."""
    if not _writeback:
        call: Callable[[int, int, int], None] = lambda fd, off, n: None  # noqa: E731
        try:
            import ctypes

            fn = ctypes.CDLL(None, use_errno=True).sync_file_range
            fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
            fn.restype = ctypes.c_int

            def call(fd: int, off: int, n: int) -> None:
                fn(fd, off, n, _SYNC_FILE_RANGE_WRITE)  # a refusal changes nothing
        except (AttributeError, OSError):
            pass
        _writeback.append(call)
    _writeback[0](fd, offset, length)


def _fsync_dir(path: str) -> None:
    try:
        dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass  # some file systems (tmpfs on old kernels) refuse fsync on a directory
    finally:
        os.close(dfd)



def _remove_dead_temps(path: str) -> None:
    """Remove temporary files that killed writers of ``path`` left behind.

    A writer named its temporary ``.NAME.tmp-PID-RANDOM``; one whose PID no longer runs
    will never rename it, so it is garbage. A live writer's temporary is left alone.
    """
    from ..ring import pid_alive

    directory, base = os.path.dirname(path), os.path.basename(path)
    prefix = f".{base}.tmp-"
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not name.startswith(prefix):
            continue
        pid_text = name[len(prefix):].split("-", 1)[0]
        if pid_text.isdigit() and not pid_alive(int(pid_text)):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass

def write_image(path: str | os.PathLike[str], header: Any, data, *,
                compression: str | int = "none", level: int = 3,
                chunk_size: int = DEFAULT_CHUNK, overwrite: bool = False, mode: int = 0o600,
                sync: bool = True, progress: ProgressFn | None = None,
                chunk_crcs: Sequence[int] | None = None,
                before_publish: Callable[[], None] | None = None) -> Any:
    """Write ``data`` (the window's bytes, len == header.data_length) as an image.

    ``header`` is an :class:`ImageHeader` (a ring window) or a :class:`StateImageHeader`
    (a state region's rows); the header as written is returned, of the same class.

    The file appears under ``path`` complete or not at all: it is written to a
    temporary name in the same directory, fsynced, then renamed (and the directory
    fsynced). Returns the header as written (chunk count, table CRC...).

    ``chunk_crcs``: the CRC32C of each chunk's raw bytes, already known (a replica's CRC
    table, :mod:`pyshm.images.table_snapshot`), so the data is only written, never read
    for checksumming; uncompressed images only. ``before_publish`` runs after the last
    byte is written and before the name appears; raising there abandons the file.
    """
    path = os.path.abspath(os.fspath(path))
    code = COMPRESSION_CODES.get(compression, compression) if isinstance(compression, str) \
        else compression
    if code not in COMPRESSION_NAMES:
        raise ValueError(f"unknown compression {compression!r}: use one of "
                         f"{', '.join(COMPRESSION_CODES)}")
    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK or chunk_size % layout.RECORD_ALIGN:
        raise ValueError(f"chunk size {chunk_size} must be a multiple of 8 in "
                         f"[{MIN_CHUNK}, {MAX_CHUNK}]")
    pieces = [memoryview(d).cast("B") for d in data] if isinstance(data, (list, tuple)) \
        else [memoryview(data).cast("B")]
    total = sum(len(x) for x in pieces)
    if total != header.data_length:
        raise ValueError(f"data is {total} bytes but the window holds "
                         f"{header.data_length}")
    if not overwrite and os.path.exists(path):
        raise RingExistsError(f"image {path} already exists (pass overwrite=True to replace it)")
    if not os.path.isdir(os.path.dirname(path)):
        raise RingNotFoundError(f"cannot write {path}: its directory does not exist")
    count = expected_chunks(total, chunk_size)
    if chunk_crcs is not None and (code != COMPRESS_NONE or len(chunk_crcs) != count):
        raise ValueError(f"{len(chunk_crcs)} chunk CRCs given for {count} uncompressed "
                         f"chunks")
    header = _replace(header, compression=code, chunk_size=chunk_size, chunk_count=count)
    _check_header_fields(header, path)

    compressor = None
    if code == COMPRESS_ZSTD:
        import zstandard
        compressor = zstandard.ZstdCompressor(level=level)

    _remove_dead_temps(path)
    tmp = os.path.join(os.path.dirname(path),
                       f".{os.path.basename(path)}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        return _write_tmp(path, tmp, header, pieces, total, count, compressor, chunk_size,
                          overwrite, mode, sync, progress, chunk_crcs, before_publish)
    except PyshmError:
        raise
    except OSError as exc:
        # disk full, quota, permission, I/O error: the temporary is gone (_write_tmp
        # removes it), the image name untouched
        err = access_error(path, exc, "write image")
        raise type(err)(f"{err}; nothing was written (no partial file is left)") from None


def _write_tmp(path: str, tmp: str, header: ImageHeader, pieces: list[memoryview],
               total: int, count: int, compressor: Any, chunk_size: int, overwrite: bool,
               mode: int, sync: bool, progress: ProgressFn | None,
               chunk_crcs: Sequence[int] | None,
               before_publish: Callable[[], None] | None) -> ImageHeader:
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        os.fchmod(fd, mode)
        table_off = HEADER_SIZE
        pos = table_off + count * ENTRY_SIZE
        entries = []
        # writeback is started for whole pages only, from the first page after the header
        # and table (rewritten at the end): a page a later write completes is not sent
        # to the disk half-written first
        started = -(-pos // _PAGE) * _PAGE
        for i, raw_pieces in enumerate(_split(pieces, chunk_size)):
            raw_crc = 0
            raw_len = sum(len(piece) for piece in raw_pieces)
            if chunk_crcs is not None:
                raw_crc = chunk_crcs[i]
            else:
                for piece in raw_pieces:
                    raw_crc = crc(piece, raw_crc)
            if compressor is not None:
                whole = raw_pieces[0] if len(raw_pieces) == 1 else b"".join(raw_pieces)
                stored = compressor.compress(whole)
                _write_all(fd, stored, pos)
                stored_len, stored_crc = len(stored), crc(stored)
            else:
                off = pos
                for piece in raw_pieces:
                    _write_all(fd, piece, off)
                    off += len(piece)
                stored_len, stored_crc = raw_len, raw_crc
            upto = (pos + stored_len) // _PAGE * _PAGE
            if sync and upto > started:
                _start_writeback(fd, started, upto - started)
                started = upto
            entries.append(ChunkEntry(pos, stored_len, raw_len, stored_crc, raw_crc))
            pos += stored_len
            if progress:
                progress(min((i + 1) * chunk_size, total), total)
        table = b"".join(_ENTRY.pack(e.offset, e.stored_length, e.raw_length, e.stored_crc,
                                     e.raw_crc) for e in entries)
        header = _replace(header, stored_length=pos - table_off - len(table),
                          table_crc=crc(table))
        head = header.pack()
        _write_all(fd, head + table, 0)
        total = pos + TRAILER_SIZE
        trailer = _TRAILER.pack(TRAILER_MAGIC, total, crc(table, crc(head)), count, 0)
        trailer = trailer[:24] + struct.pack("<I", crc(trailer[:24])) + trailer[28:]
        _write_all(fd, trailer, pos)
        if before_publish is not None:
            before_publish()
        if sync:
            os.fsync(fd)
        os.close(fd)
        fd = -1
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # unlike rename, fails if the name appeared meanwhile
            except FileExistsError:
                raise RingExistsError(f"image {path} already exists") from None
            finally:
                os.unlink(tmp)
        if sync:
            _fsync_dir(path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return header


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], mode: int = 0o600,
                  source: str | os.PathLike[str] | None = None) -> Iterator[IO[bytes]]:
    """A binary file that appears under ``path`` complete or not at all.

    Written to ``.NAME.tmp-PID-RANDOM`` beside it (created ``mode``), fsynced, renamed
    over ``path``. Any failure (a full disk included) removes the temporary and raises
    a :class:`~pyshm.errors.FileAccessError` naming ``path``; ``path`` keeps its old
    content. ``path`` must not be an existing non-regular file, nor ``source`` itself.
    """
    path = os.path.abspath(os.fspath(path))
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise access_error(path, exc, "write") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise ImageError(f"refusing to write {path}: it exists and is not a regular file")
    if st is not None and source is not None:
        try:
            same = os.path.samefile(path, source)
        except OSError:
            same = False
        if same:
            raise ImageError(f"refusing to write {path}: it is the image being read")
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise RingNotFoundError(f"cannot write {path}: its directory does not exist")
    _remove_dead_temps(path)
    tmp = os.path.join(directory,
                       f".{os.path.basename(path)}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except OSError as exc:
        raise access_error(path, exc, "write") from None
    done = False
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        done = True
        _fsync_dir(path)
    except PyshmError:
        raise
    except OSError as exc:
        err = access_error(path, exc, "write")
        raise type(err)(f"{err}; nothing was written (no partial file is left)") from None
    finally:
        if not done:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def _split(pieces: list[memoryview], chunk_size: int):
    """Cut the concatenation of ``pieces`` into chunks: lists of 1 or more views."""
    cur: list[memoryview] = []
    room = chunk_size
    for piece in pieces:
        while len(piece):
            take = piece[:room]
            cur.append(take)
            piece = piece[len(take):]
            room -= len(take)
            if room == 0:
                yield cur
                cur, room = [], chunk_size
    if cur:
        yield cur


def _replace(h: Any, **kw) -> Any:
    import dataclasses
    return dataclasses.replace(h, **kw)


# ----------------------------------------------------------------------------------
# reader


@dataclass
class ImageReader:
    """An opened image whose header, trailer and chunk table are verified.

    Chunks are verified as they are read (:meth:`read_into`, :meth:`verify`). ``kind``
    is the kind of image the caller can use (``ring``, the default, or ``state``; None
    for either): another kind is refused by name before anything else is read.
    """

    path: str | os.PathLike[str]
    kind: str | None = "ring"
    header: Any = field(init=False)
    chunks: list[ChunkEntry] = field(init=False)
    file_size: int = field(init=False)

    def __post_init__(self) -> None:
        self.path = where = os.fspath(self.path)
        self._where = where
        self._fd = open_regular(self.path, "image")
        try:
            self._load()
        except OSError as exc:
            self.close()
            if isinstance(exc, PyshmError):
                raise
            raise access_error(self.path, exc, "read image") from None
        except BaseException:
            self.close()
            raise

    def _pread(self, n: int, off: int) -> bytes:
        try:
            out = os.pread(self._fd, n, off)
        except OSError as exc:
            raise access_error(os.fspath(self.path), exc, "read image") from None
        if len(out) != n:
            raise ImageTruncatedError(f"{self.path}: truncated: wanted {n} bytes at offset "
                                      f"{off}, file has {self.file_size}")
        return out

    def _load(self) -> None:
        where = self._where
        self.file_size = os.fstat(self._fd).st_size
        if self.file_size == 0:
            raise ImageTruncatedError(f"{where}: empty file (0 bytes), not an image")
        first = os.pread(self._fd, HEADER_SIZE, 0)
        if first[:len(MAGIC)] != MAGIC[:len(first)]:
            raise ImageError(f"{where}: not a pyshm image (magic {first[:8]!r}, "
                             f"expected {MAGIC!r})")
        if len(first) < 12:
            raise ImageTruncatedError(f"{where}: truncated: {self.file_size} bytes is "
                                      f"shorter than an image header ({HEADER_SIZE})")
        (version,) = struct.unpack_from("<I", first, 8)
        if version not in READ_VERSIONS:
            raise ImageVersionError(f"{where}: image format version {version}, this pyshm "
                                    f"reads versions {', '.join(map(str, READ_VERSIONS))}")
        if len(first) < HEADER_SIZE:
            raise ImageTruncatedError(f"{where}: truncated: {self.file_size} bytes is "
                                      f"shorter than an image header ({HEADER_SIZE})")
        (hsize,) = struct.unpack_from("<I", first, 12)
        (want,) = struct.unpack_from("<I", first, _HEADER_CRC_OFF)
        if crc(first[:_HEADER_CRC_OFF]) != want:
            raise ImageChecksumError(f"{where}: header checksum mismatch (header damaged)",
                                     part="header")
        if hsize != HEADER_SIZE:
            raise ImageError(f"{where}: header size {hsize}, expected {HEADER_SIZE}")
        code = KIND_RING if version == 1 else _KIND.unpack_from(first, OFF_KIND)[0]
        kind = KIND_NAMES.get(code)
        if kind is None:
            raise ImageError(f"{where}: image kind {code} is unknown to this pyshm (it reads "
                             f"{', '.join(KIND_NAMES.values())} images)")
        if self.kind is not None and kind != self.kind:
            raise ImageError(f"{where}: is a {kind} image, not a {self.kind} image"
                             + (" (a state region's rows: use pyshm.recover or `pyshm state "
                                "restore`)" if kind == "state" else
                                " (a ring window: use pyshm.images.restore or `pyshm "
                                "restore`)"))
        if kind == "state":
            (_, _, _, flags, comp, chunk_size, chunk_count, rows, itemsize, desc_len,
             region_flags, desc_crc, region_created, seq, region_id, cut_epoch, _, _,
             created, data_len, stored_len, table_crc, _, name, _) = \
                _STATE_HEADER.unpack_from(first, 0)
            h: Any = StateImageHeader(
                rows, itemsize, desc_len, desc_crc, None if seq == (1 << 64) - 1 else seq,
                region_id, cut_epoch, name.rstrip(b"\0").decode(errors="replace"),
                region_created, created, comp, chunk_size, chunk_count, stored_len,
                table_crc, flags, region_flags)
        else:
            f = _HEADER.unpack_from(first, 0)
            (_, _, _, flags, comp, chunk_size, chunk_count, capacity, max_record,
             partitions, ring_flags, _, ring_created, first_pos, end_pos, first_seq,
             next_seq, nrec, created, data_len, stored_len, table_crc, _, name) = f
            params = layout.RingParams(
                capacity=capacity, max_record=max_record, partition_count=partitions,
                flags=ring_flags, created_ns=ring_created,
                name=name.rstrip(b"\0").decode(errors="replace"))
            h = ImageHeader(params, first_pos, end_pos, first_seq, next_seq, nrec, created,
                            comp, chunk_size, chunk_count, stored_len, table_crc, flags)
        self.kind_name = kind
        _check_header_fields(h, where)
        if data_len != h.data_length:
            raise ImageError(f"{where}: header data length {data_len} != "
                             + ("window size" if kind == "ring" else "description + rows")
                             + f" {h.data_length}")
        if comp == COMPRESS_NONE and stored_len != data_len or stored_len >= 1 << 62:
            raise ImageError(f"{where}: header stored length {stored_len} is impossible")
        table_len = chunk_count * ENTRY_SIZE
        expected = HEADER_SIZE + table_len + stored_len + TRAILER_SIZE
        if self.file_size < expected:
            raise ImageTruncatedError(f"{where}: truncated: file has {self.file_size} bytes, "
                                      f"its header says {expected}")
        if self.file_size > expected:
            raise ImageTruncatedError(f"{where}: {self.file_size - expected} unexpected bytes "
                                      f"after the trailer (file has {self.file_size}, header "
                                      f"says {expected})")
        trailer = self._pread(TRAILER_SIZE, expected - TRAILER_SIZE)
        t_magic, t_len, t_meta, t_count, t_crc = _TRAILER.unpack(trailer)
        if t_magic != TRAILER_MAGIC:
            raise ImageTruncatedError(f"{where}: trailer magic {t_magic!r} is wrong (file "
                                      f"truncated or damaged at the end)")
        if crc(trailer[:24]) != t_crc:
            raise ImageChecksumError(f"{where}: trailer checksum mismatch (trailer damaged)",
                                     part="trailer")
        if trailer[28:] != bytes(TRAILER_SIZE - 28):
            # outside the trailer's own CRC: checked so that no byte of a file goes
            # unchecked (the writer writes zeros)
            raise ImageChecksumError(f"{where}: trailer padding (its last 4 bytes) is not "
                                     f"zero (trailer damaged)", part="trailer")
        if t_len != self.file_size or t_count != chunk_count:
            raise ImageTruncatedError(f"{where}: trailer says {t_len} bytes and {t_count} "
                                      f"chunks, file has {self.file_size} bytes and its "
                                      f"header {chunk_count} chunks")
        table = self._pread(table_len, HEADER_SIZE)
        if crc(table) != table_crc:
            raise ImageChecksumError(f"{where}: chunk table checksum mismatch (table "
                                     f"damaged)", part="table")
        if crc(table, crc(first)) != t_meta:
            raise ImageChecksumError(f"{where}: trailer checksum of header+table does not "
                                     f"match (header and trailer disagree)", part="trailer")
        chunks = []
        off = HEADER_SIZE + table_len
        for i in range(chunk_count):
            e = ChunkEntry(*_ENTRY.unpack_from(table, i * ENTRY_SIZE))
            raw_want = min(chunk_size, data_len - i * chunk_size)
            if e.offset != off or e.raw_length != raw_want \
                    or (comp == COMPRESS_NONE and e.stored_length != e.raw_length) \
                    or e.offset + e.stored_length > expected - TRAILER_SIZE:
                raise ImageError(f"{where}: chunk {i} table entry is inconsistent (offset "
                                 f"{e.offset}, stored {e.stored_length}, raw {e.raw_length})")
            chunks.append(e)
            off += e.stored_length
        if off != expected - TRAILER_SIZE:
            raise ImageError(f"{where}: chunks end at {off}, trailer starts at "
                             f"{expected - TRAILER_SIZE}")
        self.header = h
        self.chunks = chunks

    # -- chunk access ---------------------------------------------------------------

    def _chunk_error(self, i: int, what: str) -> ImageChecksumError:
        return ImageChecksumError(f"{self.path}: chunk {i} of {len(self.chunks)} {what}",
                                  part="chunk", chunk=i)

    def read_chunk_into(self, i: int, out: list[memoryview]) -> None:
        """Read chunk ``i``, verified, into ``out`` (1 or 2 slices, total raw length)."""
        e = self.chunks[i]
        if self.header.compression == COMPRESS_NONE:
            value = 0
            off = e.offset
            for piece in out:
                try:
                    n = os.preadv(self._fd, [piece], off)
                except OSError as exc:
                    raise access_error(os.fspath(self.path), exc, "read image") from None
                if n != len(piece):
                    raise ImageTruncatedError(f"{self.path}: truncated inside chunk {i}")
                value = crc(piece, value)
                off += n
            if value != e.stored_crc:
                raise self._chunk_error(i, "checksum mismatch (data damaged)")
            return
        stored = self._pread(e.stored_length, e.offset)
        if crc(stored) != e.stored_crc:
            raise self._chunk_error(i, "checksum mismatch (compressed data damaged)")
        import zstandard
        try:
            raw = zstandard.ZstdDecompressor().decompress(stored, max_output_size=e.raw_length)
        except zstandard.ZstdError as exc:
            raise self._chunk_error(i, f"does not decompress: {exc}") from None
        if len(raw) != e.raw_length or crc(raw) != e.raw_crc:
            raise self._chunk_error(i, "decompresses to the wrong bytes")
        done = 0
        for piece in out:
            piece[:] = raw[done:done + len(piece)]
            done += len(piece)

    def check_chunks(self, data, progress: ProgressFn | None = None) -> None:
        """Check every chunk's CRC32C over ``data``: the stored bytes of an uncompressed
        image as they lie in its file (a mapping of it, see
        :class:`~pyshm.images.records.MappedWindow`), so nothing is copied to check."""
        h = self.header
        if h.compression != COMPRESS_NONE:
            raise ImageError(f"{self.path}: chunks of a {h.compression_name} image are "
                             f"checked as they are read (read_chunk_into)")
        view = memoryview(data).cast("B")
        if len(view) != h.data_length:
            raise ValueError(f"{len(view)} bytes given, the window holds {h.data_length}")
        try:
            for i in range(len(self.chunks)):
                self.check_chunk(i, view, progress)
        finally:
            view.release()

    def check_chunk(self, i: int, view: memoryview,
                    progress: ProgressFn | None = None) -> None:
        """Check chunk ``i`` of an uncompressed image over ``view`` (see
        :meth:`check_chunks`)."""
        e = self.chunks[i]
        lo = e.offset - self.chunks[0].offset
        if crc(view[lo:lo + e.stored_length]) != e.stored_crc:
            raise self._chunk_error(i, "checksum mismatch (data damaged)")
        if progress:
            progress(lo + e.raw_length, self.header.data_length)

    @property
    def data_offset(self) -> int:
        """Where the window's first stored byte is in the file."""
        return self.chunks[0].offset if self.chunks else HEADER_SIZE

    def read_data(self, progress: ProgressFn | None = None) -> np.ndarray:
        """The whole window (verified) as a new uint8 array."""
        h = self.header
        try:
            out = np.empty(h.data_length, dtype=np.uint8)
        except MemoryError:
            # the header's window size (checked only against the ring's capacity, up to
            # 64 TiB) sizes this buffer: a compressed image can claim more than fits
            raise ImageError(f"{self.path}: its window of {h.data_length} bytes does not "
                             f"fit in memory") from None
        mv = memoryview(out.data)
        for i, e in enumerate(self.chunks):
            start = i * h.chunk_size
            self.read_chunk_into(i, [mv[start:start + e.raw_length]])
            if progress:
                progress(start + e.raw_length, h.data_length)
        return out

    def verify(self, progress: ProgressFn | None = None) -> None:
        """Read and check every chunk without keeping the data."""
        buf = memoryview(bytearray(self.header.chunk_size))
        total = self.header.data_length
        done = 0
        for i, e in enumerate(self.chunks):
            self.read_chunk_into(i, [buf[:e.raw_length]])
            done += e.raw_length
            if progress:
                progress(done, total)

    def fileno(self) -> int:
        """The open file's descriptor."""
        return self._fd

    def close(self) -> None:
        """Close the file; safe to call twice."""
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ImageReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def image_kind(path: str | os.PathLike[str]) -> str | None:
    """``"ring"`` or ``"state"`` for an image file (its header checksum verified), None
    for anything that is not an image. A damaged image raises the reader's error."""
    if not is_image(path):
        return None
    with ImageReader(path, kind=None) as r:
        return r.kind_name


def open_regular(path: str | os.PathLike[str], what: str = "file",
                 devices: bool = False) -> int:
    """A read-only descriptor of ``path``, which must be a regular file.

    Opened with O_NONBLOCK so that a FIFO is refused at once instead of waiting for a
    writer forever; a directory, a device or a socket is refused too, and every OS
    error becomes a :class:`~pyshm.errors.FileAccessError` naming the path.
    """
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise RingNotFoundError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise access_error(path, exc, f"open {what}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) and not (devices and stat.S_ISCHR(st.st_mode)):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else \
                "a FIFO" if stat.S_ISFIFO(st.st_mode) else "not a regular file"
            raise ImageError(f"{path} is {kind}, not an {what}" if what == "image" else
                             f"{path} is {kind}, not a {what}")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def is_image(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a regular file starting with the image magic (never waits:
    a FIFO is not an image)."""
    try:
        fd = open_regular(path)
    except PyshmError:
        return False
    try:
        return os.pread(fd, len(MAGIC), 0) == MAGIC
    except OSError:
        return False
    finally:
        os.close(fd)


def now_ns() -> int:
    """Wall-clock time in ns since the epoch (image creation times)."""
    return time.time_ns()
