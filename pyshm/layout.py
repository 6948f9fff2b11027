"""Ring segment layout, version 1: the one Python description of the layout in docs/design.md.

The C core mirrors these numbers in ``pyshm/_core/layout.h`` (pinned there with
``_Static_assert``); ``tests/test_layout.py`` checks that the two agree. The RTL tests,
snapshots, restore and the pure-Python record encoder all use this module.

Segment::

    0x000 +-------------------------------------------------------------+
          | magic "PYSHMRNG" | version u32 | flags u32 | capacity u64   |
          | max_record u32 | partition_count u32 | created_ns u64       |
          | creator_pid u64 | name[48] | data_phys_addr u64             |
          | producer_pid u64 | ring_id u64 | origin_id u64              |
    0x080 | tail           producer, release store     (128-byte span)  |
    0x088 |   wake_seq u32, sleepers u64, wake_ack u64 (wait="block")   |
    0x100 | tail_intent    producer, store + fence     (128-byte span)  |
    0x140 |   gate_floor (producer), gate_joins (gating consumers)      |
    0x180 | mirrored       engine, release store       (128-byte span)  |
    0x188 |   lag summary, 0x1C0 probe_ack              (engine, lag probes) |
    0x200 | next_sequence  producer                    (128-byte span)  |
    0x240 |   probe_gen, probe_pos, probe_ns          (producer, lag probes) |
    0x280 | 27 consumer slots {position, pid, heartbeat_ns, flags}      |
    0x1000+-------------------------------------------------------------+
          | data[capacity]: byte of position p at data[p & (capacity-1)] |
          +-------------------------------------------------------------+

Record (8-byte aligned, never crosses a partition boundary)::

    0            4            8                         16
    +------------+------------+-------------------------+-----------------------+
    | length i32 | type i32   | sequence u64            | payload, pad to 8     |
    +------------+------------+-------------------------+-----------------------+

``length`` counts header and payload, not the padding. A padding record (type -1) has
only length and type, may be 8 bytes long, and fills the rest of a partition.

Identity (0x070, 0x078; in bytes older layouts left zero, so an old reader ignores them):
``ring_id`` is a random nonzero u64 written when a ring is created (0: a ring made by an
older pyshm), so a ring recreated under the same name is another ring; a restore or a
promotion makes a new identity too. ``origin_id`` is, for a follower ring (flag
``FOLLOWER``: its records and sequence numbers are copied from another ring by ``pyshm
bridge in``), the ``ring_id`` of the ring it follows. Old readers refuse the FOLLOWER
flag (``KNOWN_FLAGS``), so no old producer can write into a follower.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import CorruptSegmentError, InvalidParameterError, VersionMismatchError

MAGIC = b"PYSHMRNG"
# Written over MAGIC while `restore --in-place` rewrites a ring: every reader refuses the
# segment ("not a pyshm ring"), while restore and rm still recognise it, so a restore
# killed halfway can be run again (or the segment removed). The rest of the static
# header is the old ring's until the restore writes the new one, magic last.
MAGIC_RESTORING = b"PYSHMRST"
LAYOUT_VERSION = 1
HEADER_SIZE = 0x1000
MIN_CAPACITY = 4096
# smallest partition (check_params, on create and attach): at most 8 partitions per 4 KiB
MIN_PARTITION = 512
SPAN = 128
MAX_CONSUMERS = 27
DEFAULT_PARTITIONS = 8
# A record's length is an int32 in its header; 1 GiB keeps every length sum far from
# overflow and is more than any message a ring is for.
MAX_RECORD_LIMIT = 1 << 30

# header field offsets
OFF_MAGIC = 0x000
OFF_VERSION = 0x008
OFF_FLAGS = 0x00C
OFF_CAPACITY = 0x010
OFF_MAX_RECORD = 0x018
OFF_PARTITIONS = 0x01C
OFF_CREATED_NS = 0x020
OFF_CREATOR_PID = 0x028
OFF_NAME = 0x030
NAME_SIZE = 48
OFF_DATA_PHYS = 0x060
OFF_PRODUCER_PID = 0x068
OFF_RING_ID = 0x070
OFF_ORIGIN_ID = 0x078
OFF_TAIL = 0x080
# the block wait strategy's words, in tail's span (docs/ring.md, "The block wait strategy")
OFF_WAKE_SEQ = 0x088
OFF_SLEEPERS = 0x090
OFF_WAKE_ACK = 0x098
OFF_TAIL_INTENT = 0x100
# gating-consumer registration (docs/design.md, "Joining a lossless ring"), in
# tail_intent's second cache line: the highest floor a lossless producer cached a gate
# limit on, and a count of gating registrations
OFF_GATE_FLOOR = 0x140
OFF_GATE_JOINS = 0x148
OFF_MIRRORED = 0x180
# end-to-end lag (docs/design.md): engine-written summary and probe acknowledgement in
# the mirrored span, producer-written probe in next_sequence's second cache line
OFF_LAG_SAMPLES = 0x188
OFF_LAG_LAST_NS = 0x190
OFF_LAG_P50_NS = 0x198
OFF_LAG_P99_NS = 0x1A0
OFF_LAG_P999_NS = 0x1A8
OFF_LAG_MAX_NS = 0x1B0
OFF_LAG_UPDATED_NS = 0x1B8
OFF_PROBE_ACK = 0x1C0
OFF_NEXT_SEQUENCE = 0x200
OFF_PROBE_GEN = 0x240
OFF_PROBE_POS = 0x248
OFF_PROBE_NS = 0x250
OFF_SLOTS = 0x280
SLOT_SIZE = SPAN
SLOT_OFF_POSITION = 0
SLOT_OFF_PID = 8
SLOT_OFF_HEARTBEAT = 16
SLOT_OFF_FLAGS = 24
OFF_DATA = HEADER_SIZE

# header flags
FLAG_LOSSLESS = 0x1
FLAG_REPLICA = 0x2
FLAG_GATE_ON_MIRROR = 0x4
# The creator declared the segment disposable: `pyshm rm --stale` may remove it once its
# creator and every attached process are dead. Without it a segment is persistent and
# only an explicit `pyshm rm NAME` removes it. A property of the segment, not of its
# records: images do not carry it and a restored or replicated segment does not inherit it.
FLAG_EPHEMERAL = 0x8
FLAG_FOLLOWER = 0x10  # sequences are set by a bridge (pyshm bridge in); producers refused
# consumers may sleep in the kernel: producers must run the wake check (set by the first
# consumer that blocks, never cleared; builds without it refuse the ring)
FLAG_WAKE = 0x20
FLAG_CRC_TABLE = 0x40  # replica: a CRC table follows the data area (see below)
KNOWN_FLAGS = (FLAG_LOSSLESS | FLAG_REPLICA | FLAG_GATE_ON_MIRROR | FLAG_EPHEMERAL
               | FLAG_FOLLOWER | FLAG_WAKE | FLAG_CRC_TABLE)

# consumer slot flags
SLOT_ACTIVE = 0x1
SLOT_GATING = 0x2

# records
RECORD_HEADER = 16
RECORD_ALIGN = 8
PADDING_TYPE = -1
PADDING_MIN = 8

# Replica CRC table (FLAG_CRC_TABLE): right after the data area, page aligned::
#
#   HEADER_SIZE + capacity
#   +0x00 magic "PYSHMCRC"     +0x08 block_shift u32   +0x0C entries u32
#   +0x10 valid_from u64: lowest position whose blocks the table describes
#   +0x18 table_tail u64: the replica tail the entries agree with (engine, release)
#   +0x20 reserved (zero)
#   +0x40 entries[capacity >> block_shift] u32: CRC32C of the replica bytes of a block
#
# Block b covers positions [b * B, (b + 1) * B), B = 1 << block_shift, and its entry is
# entries[b % entries]. The rules (docs/design.md, "Replica CRC table") are the engines'
# contract with readers; pyshm.replica.CrcTable reads it.
CRC_MAGIC = b"PYSHMCRC"
CRC_HEADER_SIZE = 0x40
CRC_OFF_BLOCK_SHIFT = 0x08
CRC_OFF_ENTRIES = 0x0C
CRC_OFF_VALID_FROM = 0x10
CRC_OFF_TABLE_TAIL = 0x18
CRC_MAX_BLOCK_SHIFT = 16  # 64 KiB blocks, or a partition if partitions are smaller
CRC_MIN_BLOCK_SHIFT = 6
PAGE = 4096

_RECORD_HDR = struct.Struct("<iiQ")
_PADDING_HDR = struct.Struct("<ii")
_STATIC = struct.Struct("<8sIIQIIQQ48sQQQQ")  # 0x000 .. 0x080


def align8(n: int) -> int:
    """``n`` rounded up to a multiple of 8 (record alignment)."""
    return (n + 7) & ~7


def new_ring_id() -> int:
    """A random nonzero 64-bit ring identity (0 means "no identity": an older ring)."""
    while True:
        v = secrets.randbits(64)
        if v:
            return v


def is_power_of_two(n: int) -> bool:
    """True for 1, 2, 4, 8, ..."""
    return n > 0 and (n & (n - 1)) == 0


def segment_size(capacity: int) -> int:
    """Bytes of a ring segment: the 4 KiB header plus the data area."""
    return HEADER_SIZE + capacity


def crc_block_shift(capacity: int, partitions: int) -> int:
    """log2 of a replica CRC block: 64 KiB, or one partition when partitions are
    smaller, so that every partition start (where a window begins) starts a block."""
    psize = capacity // partitions
    return min(CRC_MAX_BLOCK_SHIFT, psize.bit_length() - 1)


def crc_table_offset(capacity: int) -> int:
    """Where a replica's CRC table starts: right after its data area."""
    return HEADER_SIZE + capacity


def crc_table_size(capacity: int, block_shift: int) -> int:
    """Bytes of a CRC table (header + entries), rounded up to whole pages."""
    raw = CRC_HEADER_SIZE + 4 * (capacity >> block_shift)
    return (raw + PAGE - 1) // PAGE * PAGE


def pack_crc_header(capacity: int, block_shift: int) -> bytes:
    """A fresh table header: nothing described yet (valid_from = table_tail = 0)."""
    raw = CRC_MAGIC + struct.pack("<IIQQ", block_shift, capacity >> block_shift, 0, 0)
    return raw + bytes(CRC_HEADER_SIZE - len(raw))


def default_max_record(capacity: int, partitions: int = DEFAULT_PARTITIONS) -> int:
    """The max record length a new ring gets: a quarter of a partition (capped)."""
    return min((capacity // partitions) // 4, MAX_RECORD_LIMIT)


def slot_offset(index: int) -> int:
    """Header offset of consumer slot ``index`` (IndexError outside 0..26)."""
    if not 0 <= index < MAX_CONSUMERS:
        raise IndexError(f"consumer slot {index} out of range 0..{MAX_CONSUMERS - 1}")
    return OFF_SLOTS + index * SLOT_SIZE


@dataclass(frozen=True)
class RingParams:
    """The static part of a ring header, validated."""

    capacity: int
    max_record: int
    partition_count: int = DEFAULT_PARTITIONS
    flags: int = 0
    created_ns: int = 0
    creator_pid: int = 0
    name: str = ""
    data_phys_addr: int = 0
    producer_pid: int = 0
    version: int = LAYOUT_VERSION
    ring_id: int = 0
    origin_id: int = 0

    @property
    def partition_size(self) -> int:
        """Bytes per partition."""
        return self.capacity // self.partition_count

    @property
    def lossless(self) -> bool:
        """The LOSSLESS flag: gating consumers hold the producer back."""
        return bool(self.flags & FLAG_LOSSLESS)

    @property
    def is_replica(self) -> bool:
        """The REPLICA flag: written by an engine, not a producer."""
        return bool(self.flags & FLAG_REPLICA)

    @property
    def is_follower(self) -> bool:
        """The FOLLOWER flag: sequences are set by a bridge."""
        return bool(self.flags & FLAG_FOLLOWER)

    @property
    def ephemeral(self) -> bool:
        """The EPHEMERAL flag: ``pyshm rm --stale`` may remove it once its users died."""
        return bool(self.flags & FLAG_EPHEMERAL)

    @property
    def has_crc_table(self) -> bool:
        """The CRC_TABLE flag: a replica with a table of block checksums."""
        return bool(self.flags & FLAG_CRC_TABLE)

    @property
    def segment_size(self) -> int:
        """Header + data, + the CRC table of a replica that carries one."""
        size = segment_size(self.capacity)
        if self.has_crc_table:
            size += crc_table_size(self.capacity,
                                   crc_block_shift(self.capacity, self.partition_count))
        return size

    def validate(self, where: str = "ring") -> RingParams:
        """Check the geometry and flags (errors name ``where``); returns self."""
        check_params(self.capacity, self.max_record, self.partition_count, where)
        if self.flags & ~KNOWN_FLAGS:
            raise CorruptSegmentError(f"{where}: unknown header flags 0x{self.flags:x}")
        return self


def check_params(capacity: int, max_record: int, partitions: int, where: str = "ring",
                 error: type[Exception] = InvalidParameterError) -> None:
    """Raise ``error`` naming the first parameter the layout cannot hold."""
    if not is_power_of_two(capacity) or capacity < MIN_CAPACITY:
        raise error(f"{where}: capacity {capacity} must be a power of two >= {MIN_CAPACITY}")
    if capacity > 1 << 46:
        raise error(f"{where}: capacity {capacity} is larger than 64 TiB")
    if not is_power_of_two(partitions) or capacity // partitions < MIN_PARTITION:
        raise error(f"{where}: partition count {partitions} must be a power of two "
                    f"leaving partitions of at least {MIN_PARTITION} bytes")
    psize = capacity // partitions
    if not RECORD_HEADER <= max_record <= min(psize // 4, MAX_RECORD_LIMIT):
        raise error(f"{where}: max record length {max_record} must be between "
                    f"{RECORD_HEADER} and partition size / 4 = {psize // 4}"
                    + (f" and at most {MAX_RECORD_LIMIT} (1 GiB)"
                       if psize // 4 > MAX_RECORD_LIMIT else ""))


POSITION_LIMIT = 1 << 62  # PYSHM_POS_LIMIT of ring.h: no valid position reaches it


def counter_problem(tail: int, tail_intent: int) -> str | None:
    """What is wrong with a header's ``tail``/``tail_intent`` pair, naming the damaged
    field as the C core does, or None. A ``tail_intent`` below ``tail`` is not damage
    (readers take it as ``tail``), nor is one more than a capacity above it (a replica
    resynchronised after an overrun waits there)."""
    if tail % RECORD_ALIGN or tail >= POSITION_LIMIT:
        return (f"header field tail = {tail} is invalid (must be a multiple of 8 below "
                f"2^62)")
    if tail_intent >= POSITION_LIMIT:
        return f"header field tail_intent = {tail_intent} is invalid (must be below 2^62)"
    return None


def content_fingerprint(header) -> tuple[int, int, int, int]:
    """(created_ns, ring_id, tail, next_sequence) of a mapped header: equal values mean no
    record was committed in between (and the segment was not recreated), so an image taken
    now would hold the same records as one taken then."""
    u64 = struct.Struct("<Q").unpack_from
    return (u64(header, OFF_CREATED_NS)[0], u64(header, OFF_RING_ID)[0],
            u64(header, OFF_TAIL)[0], u64(header, OFF_NEXT_SEQUENCE)[0])


def pack_static_header(p: RingParams) -> bytes:
    """The first 0x80 bytes of a segment header (counters and slots are zero)."""
    name = p.name.encode()[:NAME_SIZE]
    return _STATIC.pack(MAGIC, p.version, p.flags, p.capacity, p.max_record,
                        p.partition_count, p.created_ns, p.creator_pid, name,
                        p.data_phys_addr, p.producer_pid, p.ring_id, p.origin_id)


def unpack_static_header(buf, where: str = "segment", size: int | None = None) -> RingParams:
    """Parse and validate a header; ``size`` is the mapped size, checked against capacity."""
    if len(buf) < 0x80:
        raise CorruptSegmentError(f"{where}: {len(buf)} bytes is too short for a ring header")
    (magic, version, flags, capacity, max_record, partitions, created_ns, creator_pid,
     name, phys, producer, ring_id, origin_id) = _STATIC.unpack_from(buf, 0)
    if magic != MAGIC:
        raise CorruptSegmentError(f"{where}: not a pyshm ring (magic {bytes(magic)!r}, "
                                  f"expected {MAGIC!r})")
    if version != LAYOUT_VERSION:
        raise VersionMismatchError(f"{where}: ring layout version {version}, this pyshm "
                                   f"reads version {LAYOUT_VERSION}")
    check_params(capacity, max_record, partitions, where, CorruptSegmentError)
    if size is not None and size < segment_size(capacity):
        raise CorruptSegmentError(f"{where}: segment is {size} bytes but its header claims "
                                  f"capacity {capacity} (needs {segment_size(capacity)})")
    params = RingParams(capacity=capacity, max_record=max_record, partition_count=partitions,
                        flags=flags, created_ns=created_ns, creator_pid=creator_pid,
                        name=name.rstrip(b"\0").decode(errors="replace"),
                        data_phys_addr=phys, producer_pid=producer, version=version,
                        ring_id=ring_id, origin_id=origin_id)
    params.validate(where)
    if size is not None and size < params.segment_size:
        raise CorruptSegmentError(f"{where}: segment is {size} bytes but its header "
                                  f"announces a CRC table after the data (flag "
                                  f"0x{FLAG_CRC_TABLE:x}; needs {params.segment_size})")
    return params


# ----------------------------------------------------------------------------------
# Pure-Python record encoder/walker. The C core is the fast path; this is the reference
# used by tests, the RTL testbench, snapshots and the image tools.


def encode_record(payload: bytes, type_: int, sequence: int) -> bytes:
    """One record as it lies in the ring, padding to 8 bytes included."""
    length = RECORD_HEADER + len(payload)
    raw = _RECORD_HDR.pack(length, type_, sequence) + bytes(payload)
    return raw + bytes(align8(length) - length)


def encode_padding(nbytes: int) -> bytes:
    """A padding record of ``nbytes`` (a multiple of 8, >= 8)."""
    if nbytes < PADDING_MIN or nbytes % RECORD_ALIGN:
        raise ValueError(f"padding of {nbytes} bytes: must be a multiple of 8, >= 8")
    return _PADDING_HDR.pack(nbytes, PADDING_TYPE) + bytes(nbytes - 8)


@dataclass(frozen=True)
class Record:
    position: int
    type: int
    sequence: int
    payload: bytes


class RecordEncoder:
    """Lays records into a byte stream exactly as the producer does (padding included).

    ``place(payload)`` returns ``[(position, bytes), ...]``: the padding record (if the
    record would cross a partition boundary) and the record itself.
    """

    def __init__(self, capacity: int, partition_count: int = DEFAULT_PARTITIONS,
                 max_record: int | None = None, position: int = 0, sequence: int = 0):
        self.capacity = capacity
        self.partition_size = capacity // partition_count
        self.max_record = max_record or default_max_record(capacity, partition_count)
        check_params(capacity, self.max_record, partition_count)
        self.position = position
        self.sequence = sequence

    def place(self, payload: bytes, type_: int = 0) -> list[tuple[int, bytes]]:
        """Lay out the next record: ``[(position, bytes), ...]``, a padding record first
        when it would cross a partition boundary.
        """
        length = RECORD_HEADER + len(payload)
        if length > self.max_record:
            raise ValueError(f"record of {length} bytes exceeds max record {self.max_record}")
        out: list[tuple[int, bytes]] = []
        room = self.partition_size - (self.position & (self.partition_size - 1))
        if align8(length) > room:
            out.append((self.position, encode_padding(room)))
            self.position += room
        out.append((self.position, encode_record(payload, type_, self.sequence)))
        self.position += align8(length)
        self.sequence += 1
        return out


def oldest_boundary(tail_intent: int, capacity: int, partition_size: int) -> int:
    """First partition start at or after ``tail_intent - capacity`` (never negative)."""
    low = max(0, tail_intent - capacity)
    return (low + partition_size - 1) // partition_size * partition_size


def walk_records(data, capacity: int, partition_size: int, max_record: int,
                 start: int, end: int, where: str = "ring") -> Iterator[Record]:
    """Yield the records in positions [start, end) of a quiescent data area.

    ``data`` is the data area (len == capacity). Every length is validated; a bad one
    raises :class:`CorruptSegmentError` naming the position.
    """
    if len(data) != capacity:
        raise CorruptSegmentError(f"{where}: data area is {len(data)} bytes, expected {capacity}")
    if end - start > capacity or start > end or start % RECORD_ALIGN:
        raise CorruptSegmentError(f"{where}: window [{start}, {end}) is not a valid range")
    mask = capacity - 1
    pos = start
    while pos < end:
        off = pos & mask
        room = partition_size - (pos & (partition_size - 1))
        if end - pos < PADDING_MIN:
            raise CorruptSegmentError(f"{where}: {end - pos} stray bytes at position {pos}")
        length, type_ = _PADDING_HDR.unpack_from(data, off)
        if type_ == PADDING_TYPE:
            if length != room:
                raise CorruptSegmentError(f"{where}: padding record at position {pos} has "
                                          f"length {length}, expected {room}")
            pos += length
            continue
        if not RECORD_HEADER <= length <= max_record or align8(length) > room \
                or pos + align8(length) > end:
            raise CorruptSegmentError(f"{where}: record at position {pos} has invalid "
                                      f"length {length}")
        _, _, seq = _RECORD_HDR.unpack_from(data, off)
        yield Record(pos, type_, seq, bytes(data[off + RECORD_HEADER: off + length]))
        pos += align8(length)
