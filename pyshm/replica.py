"""Replicas: segments with a ring's own layout that an engine mirrors the ring into.

A replica's header is a copy of the ring's static header with ``FLAG_REPLICA`` set (and
``FLAG_GATE_ON_MIRROR`` cleared), so the replica is itself a ring image: consumers can
open it read-only, snapshots can read it, and :func:`promote` turns it into a primary.

Where it lives:

- a name without a slash: ``/dev/shm/NAME`` (lost at reboot, fastest);
- a path: any file (a disk file gives a persistent replica; pick a flush policy), or a
  hugetlbfs / device file.

The replica is pre-faulted when created or opened for mirroring: the first touch of a
fresh page costs about ten times a copy of it, and the engine must not pay that while
the producer runs.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, replace
from typing import Any

from . import layout as L
from .errors import CorruptSegmentError, InvalidParameterError
from .segment import DEFAULT_MODE, Segment, resolve_path

_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")

_SUFFIX = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str) -> int:
    """'64M' -> 67108864; plain integers are bytes."""
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = t[-1:] if t[-1:] in _SUFFIX else ""
    try:
        n = float(t[: len(t) - len(unit)])
    except ValueError:
        raise InvalidParameterError(f"invalid size {text!r}: use e.g. 4096, 64K, 16M") from None
    if n <= 0:
        raise InvalidParameterError(f"invalid size {text!r}: must be positive")
    return int(n * _SUFFIX[unit])


@dataclass(frozen=True)
class FlushPolicy:
    """How a file-backed replica reaches the disk.

    ``none``: the kernel writes back when it likes (a crash of the machine may lose
    recent data; a crash of a process loses nothing). ``periodic``: msync at most every
    ``interval`` seconds while there are new bytes. ``bytes``: msync after every
    ``nbytes`` mirrored. msync runs in the engine's poll thread, so it adds to the lag.
    """

    kind: str = "none"
    interval: float = 1.0
    nbytes: int = 64 << 20

    def __post_init__(self) -> None:
        if self.kind not in ("none", "periodic", "bytes"):
            raise InvalidParameterError(f"flush policy {self.kind!r}: use none, "
                                        f"periodic[:SECONDS] or bytes[:SIZE]")
        if self.interval <= 0 or self.nbytes <= 0:
            raise InvalidParameterError("flush interval and byte count must be positive")

    @classmethod
    def parse(cls, spec: str | FlushPolicy | None) -> FlushPolicy:
        """'none', 'periodic', 'periodic:0.5', 'bytes', 'bytes:64M'."""
        if spec is None:
            return cls()
        if isinstance(spec, FlushPolicy):
            return spec
        kind, _, arg = spec.partition(":")
        if kind == "periodic" and arg:
            try:
                return cls(kind, interval=float(arg))
            except ValueError:
                raise InvalidParameterError(f"flush policy {spec!r}: interval must be a "
                                            f"number of seconds") from None
        if kind == "bytes" and arg:
            return cls(kind, nbytes=parse_size(arg))
        if arg:
            raise InvalidParameterError(f"flush policy {spec!r} takes no argument")
        return cls(kind)

    @property
    def interval_ns(self) -> int:
        """``periodic``: the msync interval in ns (else 0)."""
        return int(self.interval * 1e9) if self.kind == "periodic" else 0

    @property
    def flush_bytes(self) -> int:
        """``bytes``: msync after this many bytes (else 0)."""
        return self.nbytes if self.kind == "bytes" else 0


def source_params(source: Any) -> L.RingParams:
    """The RingParams of a Ring, Replica, Segment, RingParams or ring name."""
    if isinstance(source, L.RingParams):
        return source.validate()
    params = getattr(source, "params", None)
    if isinstance(params, L.RingParams):
        return params
    seg = source if isinstance(source, Segment) else getattr(source, "segment", None)
    if isinstance(seg, Segment):
        return L.unpack_static_header(seg.buf[:0x80], seg.name, seg.size)
    if isinstance(source, (str, os.PathLike)):
        with Segment(source, readonly=True) as seg:
            return L.unpack_static_header(seg.buf[:0x80], seg.name, seg.size)
    raise InvalidParameterError(f"cannot take ring parameters from {type(source).__name__}")


def replica_params(params: L.RingParams, ephemeral: bool = False,
                   crc_table: bool = False) -> L.RingParams:
    """A replica's header: the ring's, flagged a replica, not gated, and persistent
    unless asked (a replica is usually what is kept when the ring goes); with the
    CRC_TABLE flag when it carries a CRC table."""
    flags = (params.flags | L.FLAG_REPLICA) & ~(L.FLAG_GATE_ON_MIRROR | L.FLAG_EPHEMERAL
                                                | L.FLAG_CRC_TABLE)
    if ephemeral:
        flags |= L.FLAG_EPHEMERAL
    if crc_table:
        flags |= L.FLAG_CRC_TABLE
    return replace(params, flags=flags, producer_pid=0, data_phys_addr=0)


class Replica:
    """A mapped replica segment. Use :meth:`create` or :meth:`open`."""

    def __init__(self, segment: Segment, params: L.RingParams, flush: FlushPolicy):
        self.segment = segment
        self.params = params
        self.flush = flush
        self._q: memoryview | None = segment.buf[:L.HEADER_SIZE].cast("Q")

    @classmethod
    def create(cls, target: str | os.PathLike[str], source: Any, *,
               flush: str | FlushPolicy | None = None, numa_node: int | None = None,
               mode: int = DEFAULT_MODE, exist_ok: bool = False,
               prefault: bool = True, ephemeral: bool = False,
               crc_table: bool = True,
               device: str | os.PathLike[str] | None = None) -> Replica:
        """Create a replica of ``source`` (a Ring, its params, or its name) at ``target``.

        With ``exist_ok`` an existing compatible replica is reused as it is, so that an
        engine resumes from its tail; an incompatible one is refused. ``ephemeral``
        lets ``pyshm rm --stale`` remove it once its creator and users are dead.

        ``crc_table`` (default): the replica carries a CRC table after its data, kept by
        engines that checksum while they mirror (the CPU engine does), so that a snapshot
        of the replica takes its checksums from the table instead of reading the data
        (see :class:`CrcTable`). It costs 4 bytes per 64 KiB block.

        ``device``: create it in that u-dma-buf buffer (pyshm.udmabuf), for the FPGA
        engine, with the buffer's bus address in the header.
        """
        params = replica_params(source_params(source), ephemeral, crc_table)
        policy = FlushPolicy.parse(flush)
        if exist_ok and os.path.exists(resolve_path(target)):
            rep = cls.open(target, flush=policy, prefault=prefault)
            try:
                rep.check_compatible(params)
            except BaseException:
                rep.close()
                raise
            return rep
        seg = Segment(target, create=True, size=params.segment_size, mode=mode,
                      device=device)
        try:
            if numa_node is not None:
                bind_numa(seg, numa_node)
            if seg.bus_address:
                params = replace(params, data_phys_addr=seg.bus_address + L.OFF_DATA)
            hdr = L.pack_static_header(params)
            seg.buf[: len(hdr)] = hdr
            if crc_table:
                shift = L.crc_block_shift(params.capacity, params.partition_count)
                at = L.crc_table_offset(params.capacity)
                table = L.pack_crc_header(params.capacity, shift)
                seg.buf[at:at + len(table)] = table
            if prefault:
                seg.prefault()
            return cls(seg, params, policy)
        except BaseException:
            created = seg.created
            seg.close()
            if created:
                seg.unlink()
            raise

    @classmethod
    def open(cls, target: str | os.PathLike[str], *, readonly: bool = False,
             flush: str | FlushPolicy | None = None, prefault: bool = False) -> Replica:
        """Attach to an existing replica (validated: a ring header with the replica flag)."""
        seg = Segment(target, readonly=readonly)
        try:
            params = L.unpack_static_header(seg.buf[:0x80], seg.name, seg.size)
            if not params.is_replica:
                raise InvalidParameterError(f"{seg.name}: is a primary ring, not a replica "
                                            f"(header flag 0x{L.FLAG_REPLICA:x} is clear)")
            if prefault:
                seg.prefault()
            return cls(seg, params, FlushPolicy.parse(flush))
        except BaseException:
            seg.close()
            raise

    def check_compatible(self, ring_params: L.RingParams) -> None:
        """Refuse (InvalidParameterError) a replica whose geometry differs from the ring's."""
        p = self.params
        for field in ("capacity", "max_record", "partition_count"):
            a, b = getattr(p, field), getattr(ring_params, field)
            if a != b:
                raise InvalidParameterError(f"replica {self.name}: {field} {a} differs from "
                                            f"the ring's {b}")

    # live counters (aligned 8-byte loads)
    def _u64(self, off: int) -> int:
        if self._q is None:
            raise CorruptSegmentError(f"replica {self.name} is closed")
        return int(self._q[off // 8])

    @property
    def tail(self) -> int:
        """Position up to which the replica holds the ring's bytes."""
        return self._u64(L.OFF_TAIL)

    @property
    def tail_intent(self) -> int:
        """Position the engine is about to write up to (the seqlock word)."""
        return self._u64(L.OFF_TAIL_INTENT)

    @property
    def next_sequence(self) -> int:
        """Sequence after the last record mirrored."""
        return self._u64(L.OFF_NEXT_SEQUENCE)

    @property
    def name(self) -> str:
        """The replica's name (a /dev/shm name, or its path)."""
        return self.segment.name

    @property
    def path(self) -> str:
        """The file that holds the replica."""
        return self.segment.path

    @property
    def data(self) -> memoryview:
        """The data area as a memoryview of the mapping."""
        return self.segment.buf[L.OFF_DATA: L.OFF_DATA + self.params.capacity]

    def crc_table(self) -> CrcTable | None:
        """The replica's CRC table, or None when it carries none."""
        if not self.params.has_crc_table:
            return None
        return CrcTable(self.segment, self.params)

    def oldest(self) -> int:
        """First position whose record the replica holds intact."""
        return max(0, L.oldest_boundary(self.tail_intent, self.params.capacity,
                                        self.params.partition_size))

    def records(self, start: int | None = None) -> list[L.Record]:
        """The records of a quiescent replica, oldest first (validated walk)."""
        tail = self.tail
        begin = self.oldest() if start is None else start
        begin = min(begin, tail)
        return list(L.walk_records(self.data, self.params.capacity,
                                   self.params.partition_size, self.params.max_record,
                                   begin, tail, where=f"replica {self.name}"))

    def as_ring(self) -> Any:
        """Open this replica read-only as a Ring, for consumers."""
        from .ring import Ring  # type: ignore[import-not-found,unused-ignore]

        return Ring(self.path, readonly=True)

    def info(self) -> dict[str, int | str]:
        """Name, capacity, tail, next sequence, oldest position and flush policy."""
        return {"name": self.name, "capacity": self.params.capacity, "tail": self.tail,
                "next_sequence": self.next_sequence, "oldest": self.oldest(),
                "flush": self.flush.kind}

    def close(self) -> None:
        """Unmap (the replica stays); safe to call twice."""
        if self._q is not None:
            self._q.release()
            self._q = None
        self.segment.close()

    def unlink(self) -> None:
        """Remove the replica's name."""
        self.segment.unlink()

    def __enter__(self) -> Replica:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Replica {self.name!r} capacity={self.params.capacity}>"


class CrcTable:
    """Read access to the CRC table a replica carries (``FLAG_CRC_TABLE``).

    Layout (pyshm.layout, docs/design.md "Replica CRC table"): a 64-byte header after the
    data area, then one CRC32C per block of ``block_size`` bytes; block ``b`` covers
    positions ``[b * block_size, (b + 1) * block_size)`` and its entry is
    ``entries[b % count]``. The engine writes a block's entry as it writes the block (a
    partial block's entry is the CRC of its bytes up to where they have been written),
    then ``table_tail``, then the replica's tail. So, read while the engine is paused or
    stopped, the table describes the replica's bytes when ``table_tail`` equals the
    replica's tail ``t``: every block from ``max(valid_from, oldest)`` up to ``t``'s
    block in full, and ``t``'s block from its start up to ``t``. Every field is
    validated here before it is used.
    """

    def __init__(self, segment: Segment, params: L.RingParams):
        cap = params.capacity
        at = L.crc_table_offset(cap)
        where = f"replica {segment.name}: CRC table"
        if segment.size < at + L.CRC_HEADER_SIZE:
            raise CorruptSegmentError(f"{where}: segment of {segment.size} bytes ends before "
                                      f"the table header at {at}")
        head = bytes(segment.buf[at:at + L.CRC_HEADER_SIZE])
        magic = head[:8]
        shift, count = struct.unpack_from("<II", head, L.CRC_OFF_BLOCK_SHIFT)
        if magic != L.CRC_MAGIC:
            raise CorruptSegmentError(f"{where}: magic {magic!r}, expected {L.CRC_MAGIC!r}")
        if not L.CRC_MIN_BLOCK_SHIFT <= shift <= L.CRC_MAX_BLOCK_SHIFT \
                or 1 << shift > params.partition_size:
            raise CorruptSegmentError(f"{where}: block shift {shift} is out of range (blocks "
                                      f"of 64 bytes .. min(64 KiB, a partition))")
        if count != cap >> shift:
            raise CorruptSegmentError(f"{where}: {count} entries, capacity {cap} in blocks "
                                      f"of {1 << shift} needs {cap >> shift}")
        if segment.size < at + L.CRC_HEADER_SIZE + 4 * count:
            raise CorruptSegmentError(f"{where}: truncated (segment of {segment.size} bytes, "
                                      f"table needs {at + L.CRC_HEADER_SIZE + 4 * count})")
        import numpy as np

        self.block_shift = shift
        self.block_size = 1 << shift
        self.count = count
        self.capacity = cap
        self._words = np.frombuffer(segment.mmap, dtype="<u8", count=4, offset=at)
        self.entries = np.frombuffer(segment.mmap, dtype="<u4", count=count,
                                     offset=at + L.CRC_HEADER_SIZE)

    @property
    def valid_from(self) -> int:
        """Position from which the table's checksums describe the data."""
        return int(self._words[L.CRC_OFF_VALID_FROM // 8])

    @property
    def table_tail(self) -> int:
        """Position up to which the table's checksums are complete."""
        return int(self._words[L.CRC_OFF_TABLE_TAIL // 8])

    def block_crcs(self, start: int, end: int, tail: int) -> Any:
        """The entries of the blocks of ``[start, end)`` in position order (a copy): all
        whole blocks, the last one partial when ``end == tail`` is inside a block.

        None when the table does not describe those bytes: ``table_tail != tail``,
        ``start`` below ``valid_from`` or not at a block start, ``end`` inside a block
        other than the tail's, or a window longer than the capacity.
        """
        import numpy as np

        b = self.block_size
        if self.table_tail != tail or start < self.valid_from or start % b \
                or not start <= end <= tail or end - start > self.capacity \
                or (end % b and end != tail):
            return None
        first, last = start >> self.block_shift, -(-end // b)
        idx = np.arange(first, last, dtype=np.int64) % self.count
        return self.entries[idx].astype(np.uint32)

    def close(self) -> None:
        """Drop the views of the table (the segment stays mapped)."""
        self._words = self.entries = None  # type: ignore[assignment]


def bind_numa(segment: Segment, node: int) -> None:
    """Bind the segment's pages to a NUMA node (before they are faulted in).

    On a one-node machine binding to node 0 is accepted and changes nothing; any other
    node fails with the kernel's error.
    """
    from .errors import EngineError

    try:
        from .fallback._engine_c import ffi, lib  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:  # pragma: no cover - the extension is built at install
        raise EngineError(f"NUMA binding needs the CPU engine extension: {exc}") from exc
    err = ffi.new("int *")
    buf = ffi.from_buffer(segment.mmap)
    rc = lib.pyshm_numa_bind(buf, segment.size, node, err)
    if rc != 0:
        raise InvalidParameterError(f"cannot bind {segment.name} to NUMA node {node}: "
                                    f"{os.strerror(err[0])}")


def _last_sequence(data: memoryview, params: L.RingParams, oldest: int,
                   tail: int) -> int | None:
    """Sequence of the last record before ``tail``, walking back partition by partition."""
    psize = params.partition_size
    end = tail
    while end > oldest:
        pstart = max(oldest, (end - 1) // psize * psize)
        last = None
        for rec in L.walk_records(data, params.capacity, psize, params.max_record,
                                  pstart, end, where="replica"):
            last = rec.sequence
        if last is not None:
            return last
        end = pstart
    return None


# ring.h's PYSHM_POS_LIMIT: positions at or above it are corruption, never used
_POS_LIMIT = 1 << 62


@dataclass(frozen=True)
class Promotion:
    tail: int
    next_sequence: int
    padded_partitions: int


def promote(target: str | os.PathLike[str] | Replica) -> Promotion:
    """Turn a stopped replica into a primary ring a producer can continue.

    The next sequence is derived from the last record in the replica (the header value
    the engine keeps is only a fallback); tail intent becomes tail; partitions the
    replica never received (after an overrun or a late start) are filled with padding
    records so no reader can take their stale bytes for records.

    When the replica's oldest readable position (the first partition boundary at or
    after ``tail_intent - capacity``) lies above its tail (the engine stopped right
    after a round it found torn: it had published the intent of a copy it then
    discarded), no byte below that boundary is proven intact, tail included. The
    promoted ring is then empty but consistent: tail and tail intent move up to that
    boundary, every partition a reader could start from holds one padding record, and
    sequences continue from the replica's ``next_sequence`` header (the engine's value:
    no record is left to derive it from). ``Promotion.tail`` reports the new tail.
    """
    from .lock import SegmentLock

    rep = target if isinstance(target, Replica) else Replica.open(target)
    lock = None
    try:
        if rep.segment.readonly:
            raise InvalidParameterError(f"replica {rep.name} is open read-only")
        # an engine still writing the replica would keep writing into the new primary
        lock = SegmentLock.acquire(rep.segment, "promote")
        p = rep.params
        tail, intent = rep.tail, rep.tail_intent
        if tail % L.RECORD_ALIGN or intent < tail or intent >= _POS_LIMIT:
            raise CorruptSegmentError(f"replica {rep.name}: tail {tail} / tail intent "
                                      f"{intent} are inconsistent")
        psize = p.partition_size
        oldest = L.oldest_boundary(intent, p.capacity, psize)
        data = rep.data
        if oldest > tail:
            # padding from the tail's partition would reach past the tail (and cover
            # bytes the torn round may have rewritten): start the ring at `oldest`
            tail = oldest
            last = None
        else:
            last = _last_sequence(data, p, oldest, tail)
        natural = L.oldest_boundary(tail, p.capacity, psize)
        next_seq = rep.next_sequence if last is None else last + 1
        padded = 0
        mask = p.capacity - 1
        # every padding record covers one whole partition that ends at or below tail
        for pos in range(natural, min(oldest, tail), psize):
            struct.pack_into("<ii", data, pos & mask, psize, L.PADDING_TYPE)
            padded += 1
        buf = rep.segment.buf
        _U64.pack_into(buf, L.OFF_NEXT_SEQUENCE, next_seq)
        _U64.pack_into(buf, L.OFF_MIRRORED, tail)
        _U64.pack_into(buf, L.OFF_TAIL_INTENT, tail)
        _U64.pack_into(buf, L.OFF_TAIL, tail)
        _U64.pack_into(buf, L.OFF_PRODUCER_PID, 0)
        # a new identity (the ring it mirrored may have published, and bridged, records
        # the replica never received); a follower's replica stays a follower of the same
        # origin, since it holds a prefix of the same records
        _U64.pack_into(buf, L.OFF_RING_ID, L.new_ring_id())
        flags = _U32.unpack_from(buf, L.OFF_FLAGS)[0]
        _U32.pack_into(buf, L.OFF_FLAGS, flags & ~(L.FLAG_REPLICA | L.FLAG_GATE_ON_MIRROR
                                                   | L.FLAG_CRC_TABLE))
        del buf, data
        rep.segment.mmap.flush()
        return Promotion(tail, next_seq, padded)
    finally:
        if lock is not None:
            lock.release()
        if not isinstance(target, Replica):
            rep.close()
