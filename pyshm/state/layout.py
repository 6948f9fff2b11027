"""State region layout, version 1: the one Python description of a state segment.

A state region is the second kind of pyshm segment (the first is the ring): ``N`` rows of
one numpy structured dtype, written by one process and read by any number, each row
guarded by a seqlock, the whole region by an epoch. The C core mirrors these numbers in
``pyshm/state/_core/state_layout.h`` (pinned with ``_Static_assert``);
``tests/test_state_layout.py`` checks that the two agree.

Segment::

    0x000 +--------------------------------------------------------------------+
          | magic "PYSHMSTA" | version u32 | flags u32 | row_count u64          |
          | itemsize u32 | desc_length u32 | chunk_rows u32 | desc_crc u32      |
          | created_ns u64 | creator_pid u64 | name[56] | reserved[12]          |
          | header_crc u32: CRC32C of 0x000..0x07B (the immutable fields)      |
    0x080 | epoch          writer CAS even->odd, release even; bit 63: cut fixing|
    0x100 | applied_seq    writer, release store before the epoch goes even    |
    0x180 | writer         {pid (CAS), ring slot, ring id, heartbeat_ns}        |
    0x200 | cut            {pid (CAS), gen, active gen, seq, epoch, started_ns} |
    0x280 | handover       {state, new pid, old pid, claim pid, final seq, ns} |
    0x300 | identity       {region_id, source_id, source_seq, retain_seq,      |
          |                 retain_pos, retain_ring}: see I_RETAIN_*           |
    0x380 | (reserved, zero)                                                    |
    0x1000+--------------------------------------------------------------------+
          | dtype description: canonical JSON, desc_length bytes (see dtypes.py)|
          +-------------------------------------------- 4 KiB aligned ----------+
          | versions[row_count] u64: per-row seqlock, odd while a row is written|
          +-------------------------------------------- 4 KiB aligned ----------+
          | chunks[chunk_count] {cow u64, dirty_epoch u64}: per chunk of rows,  |
          |   cow = gen << 2 | {1 copying, 2 copied, 3 saved} for the cut in    |
          |   progress; dirty_epoch = epoch of the last write into the chunk    |
          +-------------------------------------------- 4 KiB aligned ----------+
          | rows[row_count]: itemsize bytes each (a plain numpy array)          |
          +-------------------------------------------- 4 KiB aligned ----------+
          | shadow_rows[row_count], then (4 KiB aligned) shadow_versions[]:     |
          |   pre-images of the chunks the writer changed during a cut         |
          |   (touched only while a snapshot or a mirror round runs)           |
          +--------------------------------------------------------------------+

Everything after the header is located by arithmetic on ``row_count``, ``itemsize``,
``desc_length`` and ``chunk_rows`` (nothing else is stored), and every one of those is
validated, against the mapped size too, before any of it is used.

Seqlock of a row: the writer stores ``v + 1`` (odd), a release fence, the bytes, then
release-stores ``v + 2``; a reader acquire-loads ``v``, copies, issues an acquire fence
and reloads: equal and even means the copy is intact. The epoch does the same for the
whole region: odd while a transaction (the rows one record changes) is in progress.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import CorruptSegmentError, InvalidParameterError, VersionMismatchError

MAGIC = b"PYSHMSTA"
LAYOUT_VERSION = 1
HEADER_SIZE = 0x1000
SPAN = 128
PAGE = 4096

OFF_MAGIC = 0x000
OFF_VERSION = 0x008
OFF_FLAGS = 0x00C
OFF_ROW_COUNT = 0x010
OFF_ITEMSIZE = 0x018
OFF_DESC_LENGTH = 0x01C
OFF_CHUNK_ROWS = 0x020
OFF_DESC_CRC = 0x024
OFF_CREATED_NS = 0x028
OFF_CREATOR_PID = 0x030
OFF_NAME = 0x038
NAME_SIZE = 56
OFF_HEADER_CRC = 0x07C
STATIC_SIZE = 0x080

OFF_EPOCH = 0x080
OFF_APPLIED_SEQ = 0x100
OFF_WRITER = 0x180          # writer block
W_PID, W_SLOT, W_RING_ID, W_HEARTBEAT = 0, 8, 16, 24
OFF_CUT = 0x200             # snapshot cut block
C_PID, C_GEN, C_ACTIVE, C_SEQ, C_EPOCH, C_STARTED = 0, 8, 16, 24, 32, 40
OFF_HANDOVER = 0x280        # handover block
H_STATE, H_NEW_PID, H_OLD_PID, H_CLAIM, H_FINAL, H_NS = 0, 8, 16, 24, 32, 40
OFF_IDENTITY = 0x300
I_REGION_ID, I_SOURCE_ID, I_SOURCE_SEQ = 0, 8, 16
# where the ring is held for recovery (by `pyshm run`: a gating slot at the newest
# state image's next sequence): sequence, ring position, ring created_ns
I_RETAIN_SEQ, I_RETAIN_POS, I_RETAIN_RING = 24, 32, 40
OFF_DESC = HEADER_SIZE

# header flags
FLAG_REPLICA = 0x1
KNOWN_FLAGS = FLAG_REPLICA

# epoch: bit 63 is set while a cut is being fixed (by its owner, or finished by the
# writer, who never waits for it); the rest counts
EPOCH_CUT = 1 << 63
# applied_seq before anything was applied
NO_SEQUENCE = (1 << 64) - 1

# chunk entry {cow u64, dirty_epoch u64}; cow states in the low two bits, the cut
# generation above them
CHUNK_COPYING = 1   # the snapshot is copying the live rows
CHUNK_COPIED = 2    # the snapshot has the live rows
CHUNK_SAVED = 3     # the writer saved the pre-image into the shadow area
CHUNK_ENTRY = 16
# a replica's row versions are the source's, with this bit flipped at each full resync
VERSION_PARITY = 1 << 62

# handover states
HO_NONE, HO_REQUESTED, HO_RELEASED, HO_DONE, HO_ABORTED = 0, 1, 2, 3, 4
HO_STATE_NAMES = {HO_NONE: "none", HO_REQUESTED: "requested", HO_RELEASED: "released",
                  HO_DONE: "done", HO_ABORTED: "aborted"}

# limits
MAX_ROWS = 1 << 40
MAX_ITEMSIZE = 1 << 20
MAX_DESC = 64 << 10
CHUNK_TARGET_BYTES = 16 << 10   # copy-on-write unit: bounds a writer stall to ~1-2 us

_STATIC = struct.Struct("<8sIIQIIII QQ56s12x")  # 0x000 .. 0x07C
assert _STATIC.size == OFF_HEADER_CRC


def round_up(n: int, to: int = PAGE) -> int:
    return (n + to - 1) // to * to


def default_chunk_rows(itemsize: int) -> int:
    return max(1, CHUNK_TARGET_BYTES // max(1, itemsize))


@dataclass(frozen=True)
class Geometry:
    """Where everything after the header lives, derived from the four sizing fields."""

    row_count: int
    itemsize: int
    desc_length: int
    chunk_rows: int

    @property
    def chunk_count(self) -> int:
        return (self.row_count + self.chunk_rows - 1) // self.chunk_rows

    @property
    def off_versions(self) -> int:
        return OFF_DESC + round_up(self.desc_length)

    @property
    def off_chunks(self) -> int:
        return self.off_versions + round_up(8 * self.row_count)

    @property
    def off_rows(self) -> int:
        return self.off_chunks + round_up(CHUNK_ENTRY * self.chunk_count)

    @property
    def rows_bytes(self) -> int:
        return self.row_count * self.itemsize

    @property
    def off_shadow_rows(self) -> int:
        return self.off_rows + round_up(self.rows_bytes)

    @property
    def off_shadow_versions(self) -> int:
        return self.off_shadow_rows + round_up(self.rows_bytes)

    @property
    def segment_size(self) -> int:
        return self.off_shadow_versions + round_up(8 * self.row_count)


def check_geometry(row_count: int, itemsize: int, desc_length: int, chunk_rows: int,
                   where: str = "state region",
                   error: type[Exception] = InvalidParameterError) -> Geometry:
    """Raise ``error`` naming the first sizing field the layout cannot hold."""
    if not 1 <= row_count <= MAX_ROWS:
        raise error(f"{where}: row count {row_count} must be between 1 and {MAX_ROWS}")
    if not 1 <= itemsize <= MAX_ITEMSIZE:
        raise error(f"{where}: row size {itemsize} must be between 1 and {MAX_ITEMSIZE}")
    if not 2 <= desc_length <= MAX_DESC:
        raise error(f"{where}: dtype description length {desc_length} must be between 2 "
                    f"and {MAX_DESC}")
    if not 1 <= chunk_rows <= MAX_ROWS:
        raise error(f"{where}: chunk rows {chunk_rows} must be between 1 and {MAX_ROWS}")
    if chunk_rows * itemsize > 1 << 30:
        raise error(f"{where}: a copy-on-write chunk of {chunk_rows} rows of {itemsize} "
                    f"bytes is larger than 1 GiB")
    return Geometry(row_count, itemsize, desc_length, chunk_rows)


@dataclass(frozen=True)
class StateParams:
    """The immutable part of a state region header, validated."""

    row_count: int
    itemsize: int
    desc_length: int
    chunk_rows: int
    desc_crc: int = 0
    flags: int = 0
    created_ns: int = 0
    creator_pid: int = 0
    name: str = ""
    version: int = LAYOUT_VERSION

    @property
    def geometry(self) -> Geometry:
        return Geometry(self.row_count, self.itemsize, self.desc_length, self.chunk_rows)

    @property
    def is_replica(self) -> bool:
        return bool(self.flags & FLAG_REPLICA)

    @property
    def segment_size(self) -> int:
        return self.geometry.segment_size


def pack_static_header(p: StateParams) -> bytes:
    """The first 0x80 bytes of a state segment, header CRC included."""
    from ..images.format import crc

    raw = _STATIC.pack(MAGIC, p.version, p.flags, p.row_count, p.itemsize, p.desc_length,
                       p.chunk_rows, p.desc_crc, p.created_ns, p.creator_pid,
                       p.name.encode()[:NAME_SIZE])
    return raw + struct.pack("<I", crc(raw))


def unpack_static_header(buf, where: str = "state region",
                         size: int | None = None) -> StateParams:
    """Parse and validate a state header; ``size`` is the mapped size."""
    from ..images.format import crc

    if len(buf) < STATIC_SIZE:
        raise CorruptSegmentError(f"{where}: {len(buf)} bytes is too short for a state "
                                  f"region header")
    raw = bytes(buf[:STATIC_SIZE])
    if raw[:8] != MAGIC:
        from .. import layout as ring_layout
        if raw[:8] == ring_layout.MAGIC:
            raise CorruptSegmentError(f"{where}: is a pyshm ring, not a state region")
        raise CorruptSegmentError(f"{where}: not a pyshm state region (magic {raw[:8]!r}, "
                                  f"expected {MAGIC!r})")
    (_, version, flags, rows, itemsize, desc_len, chunk_rows, desc_crc, created, creator,
     name) = _STATIC.unpack_from(raw, 0)
    if version != LAYOUT_VERSION:
        raise VersionMismatchError(f"{where}: state layout version {version}, this pyshm "
                                   f"reads version {LAYOUT_VERSION}")
    (want,) = struct.unpack_from("<I", raw, OFF_HEADER_CRC)
    if crc(raw[:OFF_HEADER_CRC]) != want:
        raise CorruptSegmentError(f"{where}: header checksum mismatch (the region header "
                                  f"is damaged)")
    if flags & ~KNOWN_FLAGS:
        raise CorruptSegmentError(f"{where}: unknown header flags 0x{flags:x}")
    geo = check_geometry(rows, itemsize, desc_len, chunk_rows, where, CorruptSegmentError)
    if size is not None and size < geo.segment_size:
        raise CorruptSegmentError(f"{where}: segment is {size} bytes but its header claims "
                                  f"{rows} rows of {itemsize} bytes (needs "
                                  f"{geo.segment_size})")
    return StateParams(rows, itemsize, desc_len, chunk_rows, desc_crc, flags, created,
                       creator, name.rstrip(b"\0").decode(errors="replace"), version)
