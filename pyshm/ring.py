"""The shared-memory ring: one producer, many consumers, zero-copy reads.

The single-record hot calls (publish, read, read_copy, read_into and their waits) are a
CPython extension (``pyshm._ring_fast``); everything else calls the C core through cffi
(``pyshm._ring_c``). Both run the same protocol code (pyshm/_core/ring.c) on pointers
taken once when the ring was mapped; this module does registration, validation and error
mapping. See docs/ring.md for the protocol, the wait strategies and the threading rules.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from . import layout
from ._ring_c import ffi, lib
from ._ring_fast import Message
from ._ring_fast import Reader as _Reader
from ._ring_fast import Writer as _Writer
from .errors import (
    ClosedError,
    ConcurrentUseError,
    CorruptSegmentError,
    InvalidParameterError,
    NoConsumerSlotError,
    ProducerBusyError,
    PyshmError,
    RecordTooLargeError,
)
from .segment import Segment

__all__ = ["Ring", "Producer", "Consumer", "Message", "Batch", "FULL", "WAIT_STRATEGIES",
           "parse_size", "pid_alive"]

FULL = -1
"""What ``Producer.publish`` returns when a lossless ring stays full for ``timeout``."""

WAIT_STRATEGIES = {"spin": int(lib.PYSHM_WAIT_SPIN), "yield": int(lib.PYSHM_WAIT_YIELD),
                   "sleep": int(lib.PYSHM_WAIT_SLEEP), "block": int(lib.PYSHM_WAIT_BLOCK)}
"""Consumer wait strategies, by name (docs/ring.md, "Waiting for data")."""

_C_TAIL, _C_INTENT, _C_MIRRORED, _C_NEXT_SEQ = 0, 1, 2, 3
# How often a full lossless producer looks for gating consumers that died.
_REAP_INTERVAL = 0.01

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kKmMgGtT]?)(i?[bB])?\s*$")


def parse_size(text: int | str) -> int:
    """``"64K"``, ``"1M"``, ``"2GiB"`` or an int -> bytes (binary multiples)."""
    if isinstance(text, int):
        return text
    m = _SIZE_RE.match(str(text))
    if not m:
        raise InvalidParameterError(f"size {text!r}: expected a number with an optional "
                                    f"K, M, G or T suffix (e.g. 64K, 1M)")
    mult = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    return int(m.group(1)) * mult


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie counts as dead: it will never touch the ring)."""
    if pid <= 0 or pid > 0x7FFFFFFF:
        return False  # not a pid the kernel can hand out (and os.kill would overflow)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rindex(b")") + 2:stat.rindex(b")") + 3] != b"Z"
    except (OSError, ValueError):
        return True


def _field_message(field: int, value: int) -> str | None:
    """What a PYSHM_FIELD_* code of the C core says about ``value``."""
    limit = int(lib.PYSHM_POS_LIMIT)
    if field == lib.PYSHM_FIELD_TAIL:
        return (f"header field tail = {value} is invalid (must be a multiple of 8 below "
                f"2^62 = {limit})")
    if field == lib.PYSHM_FIELD_INTENT:
        return (f"header field tail_intent = {value} is invalid (must be below 2^62, not "
                f"move backwards and, for a producer, lie within a capacity above tail)")
    if field == lib.PYSHM_FIELD_RECORD:
        return f"invalid record length or type in the data area at position {value}"
    if field == lib.PYSHM_FIELD_POSITION:
        return f"consumer position {value} is invalid"
    if field == lib.PYSHM_FIELD_SEQUENCE:
        return (f"record sequence at position {value} is lower than the one expected "
                f"(sequence numbers went backwards)")
    if field == lib.PYSHM_FIELD_NEXT_SEQ:
        return f"record sequence at position {value} cannot be continued"
    return None


def _raise(rc: int, where: str, pos: int = -1, field: int = 0, seg: Any = None) -> None:
    if seg is not None:
        seg.check_intact()  # a truncated file (pyshm.guard) explains any error below
    if pos < 0 and field:
        pos &= (1 << 64) - 1  # the C side keeps a uint64 value in an int64 field
    at = f" at position {pos}" if pos >= 0 else ""
    if rc == lib.PYSHM_E_TOO_LARGE:
        raise RecordTooLargeError(f"{where}: record larger than the ring's max record")
    if rc == lib.PYSHM_E_CORRUPT:
        what = _field_message(field, pos)
        if what is not None:
            raise CorruptSegmentError(f"{where}: corrupt segment: {what}")
        raise CorruptSegmentError(f"{where}: invalid record length or position in shared "
                                  f"memory{at}")
    if rc == lib.PYSHM_E_AHEAD:
        raise CorruptSegmentError(f"{where}: consumer position {pos} is beyond the ring's "
                                  f"tail and tail_intent: the tail went backwards (was the "
                                  f"ring recreated or restored under this consumer?)")
    if rc == lib.PYSHM_E_PARAM:
        raise InvalidParameterError(f"{where}: invalid argument (type -1 is reserved for "
                                    f"padding records)")
    if rc == lib.PYSHM_E_STATE:
        raise PyshmError(f"{where}: claim()/commit() out of order")
    raise PyshmError(f"{where}: C core error {rc}")


class Batch:
    """Records from ``Consumer.read_batch``: payloads concatenated in ``data``.

    The arrays are views of buffers the consumer reuses: valid until its next
    ``read_batch``; call ``copy()`` to keep them.
    """

    def __init__(self, data: np.ndarray, ends: np.ndarray, types: np.ndarray,
                 sequences: np.ndarray):
        self.data = data
        self.ends = ends
        self.types = types
        self.sequences = sequences

    def __len__(self) -> int:
        return len(self.ends)

    @property
    def lengths(self) -> np.ndarray:
        """Payload length of each record (uint64 array)."""
        return np.diff(self.ends, prepend=np.uint64(0))

    @property
    def offsets(self) -> np.ndarray:
        """Start of each record's payload in :attr:`data`."""
        return self.ends - self.lengths

    def __getitem__(self, i: int) -> memoryview:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"record {i} of a batch of {len(self)}")
        start = int(self.ends[i - 1]) if i else 0
        return self.data[start:int(self.ends[i])].data

    def __iter__(self) -> Iterator[memoryview]:
        for i in range(len(self)):
            yield self[i]

    def array(self, dtype: Any, shape: Sequence[int] = ()) -> np.ndarray:
        """The payloads as one array of records of ``dtype`` (all must have its size)."""
        dt = np.dtype(dtype)
        size = dt.itemsize * int(np.prod(shape, dtype=np.int64))
        n = len(self)
        if n and (self.lengths != size).any():
            raise InvalidParameterError(f"batch records are not all {size} bytes "
                                        f"(dtype {dt}, shape {tuple(shape)})")
        return self.data[:n * size].view(dt).reshape((n, *shape))

    def copy(self) -> Batch:
        """A copy that stays valid after the consumer's next ``read_batch``."""
        return Batch(self.data.copy(), self.ends.copy(), self.types.copy(),
                     self.sequences.copy())

    def __repr__(self) -> str:
        first = int(self.sequences[0]) if len(self) else None
        return f"<Batch {len(self)} records, {len(self.data)} bytes, first seq={first}>"


class Ring:
    """A ring segment, created or attached by name (``/dev/shm`` name or file path).

    ``Ring(name)`` attaches to an existing ring; ``Ring(name, create=True,
    capacity="1M")`` (or :meth:`create`) makes a new one, mode 0600, and ``exist_ok=True``
    attaches instead when a ring of that capacity exists. Creation parameters:
    ``capacity`` (a power of two >= 4 KiB; ints or "64K"/"16M"), ``max_record`` (header
    included; default a quarter of a partition), ``partitions`` (default 8),
    ``lossless`` (the producer waits for gating consumers instead of overwriting),
    ``gate_on_mirror`` (lossless: also for the replication engine), ``mode``,
    ``prefault`` (touch every page now), ``ephemeral`` (``pyshm rm --stale`` may remove
    it once its users are dead), ``device`` (make it in a u-dma-buf buffer, see
    :mod:`pyshm.udmabuf`). Attaching: ``readonly`` maps it read-only (consumers then
    read without a slot), ``reap_grace`` delays reaping dead gating consumers.

    ``close()`` unmaps (the ring stays); ``unlink()`` removes the name. Use it as a
    context manager to close it. :meth:`producer` and :meth:`consumer` give the ends.
    """

    def __init__(self, name: str | os.PathLike[str], *, create: bool = False,
                 capacity: int | str | None = None, max_record: int | str | None = None,
                 partitions: int = layout.DEFAULT_PARTITIONS, lossless: bool = False,
                 mode: int = 0o600, exist_ok: bool = False, readonly: bool = False,
                 gate_on_mirror: bool = False, replica: bool = False,
                 prefault: bool = False, reap_grace: float = 0.0,
                 follower_of: int | None = None, ephemeral: bool = False,
                 device: str | os.PathLike[str] | None = None):
        if reap_grace < 0:
            raise InvalidParameterError(f"ring {name}: reap_grace {reap_grace} is negative")
        # seconds a dead consumer's slot keeps gating after this process first sees it
        # dead: time for a supervisor to pin it (repair.pin_dead_slot) and restart the
        # consumer without loss, while the lossless producer waits
        self.reap_grace = float(reap_grace)
        self._dead_seen: dict[tuple[int, int], float] = {}
        self._seg: Segment | None = None
        self._ptr: Any = None
        self._children: list[Any] = []
        self._mv: memoryview | None = None
        self._data: memoryview | None = None
        where = str(name)
        if create:
            if capacity is None:
                raise InvalidParameterError(f"ring {where}: creating a ring needs a capacity")
            cap = parse_size(capacity)
            mr = parse_size(max_record) if max_record is not None else \
                layout.default_max_record(cap, partitions) if layout.is_power_of_two(cap) \
                and layout.is_power_of_two(partitions) and partitions <= cap else 0
            layout.check_params(cap, mr, partitions, f"ring {where}")
            flags = (layout.FLAG_LOSSLESS if lossless else 0) | \
                (layout.FLAG_GATE_ON_MIRROR if gate_on_mirror else 0) | \
                (layout.FLAG_REPLICA if replica else 0) | \
                (layout.FLAG_FOLLOWER if follower_of is not None else 0) | \
                (layout.FLAG_EPHEMERAL if ephemeral else 0)
            # follower_of: the ring_id of the ring whose records this one receives (see
            # pyshm.bridge.FollowerProducer); 0 for a source of unknown identity
            if follower_of is not None and not 0 <= follower_of < 1 << 64:
                raise InvalidParameterError(f"ring {where}: follower_of {follower_of} is "
                                            f"not a 64-bit ring identity")
            # device: a u-dma-buf buffer to create the ring in (pyshm.udmabuf)
            seg = Segment(name, create=True, size=layout.segment_size(cap), mode=mode,
                          exist_ok=exist_ok, device=device)
            self._seg = seg
            try:
                if seg.created:
                    params = layout.RingParams(capacity=cap, max_record=mr,
                                               partition_count=partitions, flags=flags,
                                               created_ns=time.time_ns(),
                                               creator_pid=os.getpid(), name=seg.name,
                                               ring_id=layout.new_ring_id(),
                                               origin_id=follower_of or 0,
                                               data_phys_addr=seg.bus_address
                                               and seg.bus_address + layout.OFF_DATA)
                    raw = layout.pack_static_header(params)
                    if prefault:
                        seg.prefault()
                    # magic last: an attacher racing the creator sees "not a ring yet",
                    # never a half-written header
                    seg.buf[8:0x80] = raw[8:]
                    seg.buf[0:8] = raw[:8]
                elif prefault:
                    seg.prefault()
            except BaseException:
                # a half-created segment is removed, whatever failed
                created = seg.created
                seg.close()
                if created:
                    seg.unlink()
                raise
        else:
            self._seg = Segment(name, readonly=readonly, prefault=prefault)
        try:
            self._attach(create and capacity is not None and not self._seg.created,
                         capacity, max_record)
        except BaseException:
            created = self._seg.created
            self.close()
            if created:
                self._seg.unlink()
            raise

    def _attach(self, check: bool, capacity: Any, max_record: Any) -> None:
        seg = self._seg
        assert seg is not None
        self.params = layout.unpack_static_header(seg.buf[:0x80], where=f"ring {seg.name!r}",
                                                  size=seg.size)
        if check:
            if parse_size(capacity) != self.params.capacity or (
                    max_record is not None and parse_size(max_record) != self.params.max_record):
                raise InvalidParameterError(
                    f"ring {seg.name!r} exists with capacity {self.params.capacity} and max "
                    f"record {self.params.max_record}, not the ones asked for")
        self._mv = memoryview(seg.mmap)
        self._ptr = ffi.from_buffer(seg.mmap)
        self._hdr = ffi.cast("void *", self._ptr)
        self._data = self._mv[layout.OFF_DATA:layout.OFF_DATA + self.params.capacity]

    @classmethod
    def create(cls, name: str | os.PathLike[str], capacity: int | str, **kw: Any) -> Ring:
        """Make a new ring (``Ring(name, create=True, capacity=capacity, **kw)``)."""
        return cls(name, create=True, capacity=capacity, **kw)

    @classmethod
    def attach(cls, name: str | os.PathLike[str], **kw: Any) -> Ring:
        """Attach to an existing ring (``Ring(name, **kw)``)."""
        return cls(name, **kw)

    # ------------------------------------------------------------ properties
    def _h(self) -> Any:
        if self._ptr is None:
            raise ClosedError(f"ring {self.name!r} is closed")
        return self._hdr

    @property
    def segment(self) -> Segment:
        """The mapped :class:`~pyshm.segment.Segment` under the ring."""
        if self._seg is None:
            raise ClosedError("ring is closed")
        return self._seg

    @property
    def name(self) -> str:
        """The ring's name (a /dev/shm name, or its path)."""
        return self._seg.name if self._seg is not None else "?"

    @property
    def path(self) -> str:
        """The file that holds the ring."""
        return self.segment.path

    @property
    def capacity(self) -> int:
        """Data bytes (a power of two)."""
        return self.params.capacity

    @property
    def max_record(self) -> int:
        """Largest record in bytes, its 16-byte header included."""
        return self.params.max_record

    @property
    def max_payload(self) -> int:
        """Largest payload one record can carry (``max_record - 16``)."""
        return self.params.max_record - layout.RECORD_HEADER

    @property
    def partition_size(self) -> int:
        """Bytes per partition (``capacity / partitions``); records never cross one."""
        return self.params.partition_size

    @property
    def lossless(self) -> bool:
        """True when the producer waits for gating consumers instead of overwriting."""
        return self.params.lossless

    @property
    def is_replica(self) -> bool:
        """True for a replica (written by a replication engine, not a producer)."""
        return self.params.is_replica

    @property
    def flags(self) -> int:
        """The header flags as created (``layout.FLAG_*``)."""
        return self.params.flags

    @property
    def is_follower(self) -> bool:
        """Records (and their sequence numbers) come from another ring through a bridge;
        only :class:`pyshm.bridge.FollowerProducer` writes it."""
        return bool(self._header_flags() & layout.FLAG_FOLLOWER)

    def _header_flags(self) -> int:
        # live, not the cached params: promoting a follower clears the flag in place
        return int.from_bytes(self._mv_checked()[layout.OFF_FLAGS:layout.OFF_FLAGS + 4],
                              "little")

    @property
    def ring_id(self) -> int:
        """This ring's identity (random, written at creation; 0 for an older ring)."""
        return self.params.ring_id

    @property
    def origin_id(self) -> int:
        """For a follower ring: the ring_id of the ring it follows (else 0)."""
        return self.params.origin_id

    @property
    def readonly(self) -> bool:
        """True when mapped read-only."""
        return self.segment.readonly

    @property
    def tail(self) -> int:
        """Position after the last committed record (acquire load)."""
        return int(lib.pyshm_get_counter(self._h(), _C_TAIL))

    @property
    def tail_intent(self) -> int:
        """Position the producer is about to write up to (at least ``tail``)."""
        return int(lib.pyshm_get_counter(self._h(), _C_INTENT))

    @property
    def mirrored(self) -> int:
        """Position up to which the replica is complete (written by the engine)."""
        return int(lib.pyshm_get_counter(self._h(), _C_MIRRORED))

    @property
    def next_sequence(self) -> int:
        """Sequence number the next record will get."""
        return int(lib.pyshm_get_counter(self._h(), _C_NEXT_SEQ))

    @property
    def producer_pid(self) -> int:
        """Pid of the attached producer, 0 when none."""
        return int.from_bytes(self._mv_checked()[layout.OFF_PRODUCER_PID:
                                                 layout.OFF_PRODUCER_PID + 8], "little")

    def set_mirrored(self, position: int) -> None:
        """Release-store ``mirrored`` (what an engine does after each copy)."""
        lib.pyshm_set_counter(self._h(), _C_MIRRORED, position)

    def _mv_checked(self) -> memoryview:
        if self._mv is None:
            raise ClosedError(f"ring {self.name!r} is closed")
        return self._mv

    @property
    def data(self) -> memoryview:
        """The data area (``capacity`` bytes) as a writable memoryview of the mapping."""
        if self._data is None:
            raise ClosedError(f"ring {self.name!r} is closed")
        return self._data

    def _export(self) -> memoryview:
        # The data area for one hot-call object (a Consumer's or Producer's C half) to
        # hold an export of: a view of its own, so that when a call that was inside at
        # close() lets go last, the mapping is unmapped right then (an export of the
        # shared `data` view would pin the mapping until that view is freed).
        return self._mv_checked()[layout.OFF_DATA:layout.OFF_DATA + self.params.capacity]

    def data_array(self) -> np.ndarray:
        """The data area as a uint8 numpy array sharing the mapping."""
        return np.frombuffer(self.data, dtype=np.uint8)

    def oldest(self) -> int:
        """The oldest position a reader can still start at (a partition start)."""
        return layout.oldest_boundary(self.tail_intent, self.capacity, self.partition_size)

    def records(self, start: int | None = None, end: int | None = None) -> Iterator[layout.Record]:
        """Walk the records of ``[start, end)`` (default: oldest .. tail). The window must
        be quiescent (producer stopped, or a replica/snapshot), else a CorruptSegmentError
        can name a position the producer is rewriting.

        With one partition, a claim that wrapped into the next lap (a producer killed
        before its commit) puts the oldest boundary past ``tail``: nothing is readable then,
        and the default window is empty rather than an invalid range."""
        e = self.tail if end is None else end
        s = min(self.oldest(), e) if start is None else start
        return layout.walk_records(self.data, self.capacity, self.partition_size,
                                   self.max_record, s, e, where=f"ring {self.name!r}")

    def slots(self) -> list[dict[str, Any]]:
        """Registered consumer slots: index, position, pid, alive, heartbeat_ns, gating."""
        out = []
        buf = ffi.new("int64_t[4]")
        h = self._h()
        for i in range(layout.MAX_CONSUMERS):
            lib.pyshm_slot_read(h, i, buf)
            pos, pid, hb, flags = buf[0], buf[1], buf[2], buf[3]
            if pid == 0 and flags == 0:
                continue
            out.append({"index": i, "position": pos, "pid": pid, "alive": pid_alive(pid),
                        "heartbeat_ns": hb, "active": bool(flags & layout.SLOT_ACTIVE),
                        "gating": bool(flags & layout.SLOT_GATING)})
        return out

    def reap(self) -> int:
        """Free the slots of consumers whose process died; returns how many.

        With ``reap_grace`` a slot is freed only once its process has been seen dead
        for that many seconds (counted from the first call that saw it dead)."""
        n = 0
        now = time.monotonic()
        dead: dict[tuple[int, int], float] = {}
        for s in self.slots():
            if s["pid"] and not s["alive"]:
                key = (s["index"], s["pid"])
                first = self._dead_seen.get(key, now)
                if now - first >= self.reap_grace:
                    n += max(0, lib.pyshm_slot_release(self._h(), s["index"], s["pid"]))
                else:
                    dead[key] = first
        self._dead_seen = dead  # forget slots that were freed, pinned or re-used
        return n

    def producer(self) -> Producer:
        """Attach as the ring's single producer (a second live one gets ProducerBusyError;
        a dead one's role is taken over, resuming after its last committed record).
        """
        p = Producer(self)
        self._children.append(p)
        return p

    def consumer(self, start: str | int = "oldest", gating: bool = False) -> Consumer:
        """A consumer with its own cursor: ``start`` is ``"oldest"``, ``"latest"`` or a
        sequence number; ``gating=True`` (lossless rings) holds the producer back at its
        position. A gating consumer starts no lower than the floor of the producer's
        cached gate limit (docs/ring.md, "Modes"), so it loses nothing once registered.
        """
        c = Consumer(self, start, gating)
        self._children.append(c)
        return c

    # ------------------------------------------------------------ lifetime
    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._ptr is None

    def close(self) -> None:
        """Close producers/consumers of this object, then unmap. Idempotent."""
        for child in self._children:
            child.close()
        self._children.clear()
        if self._ptr is not None:
            ffi.release(self._ptr)
            self._ptr = None
        for mv in (self._data, self._mv):
            if mv is not None:
                try:
                    mv.release()
                except BufferError:
                    pass  # a view handed to the caller still points here
        self._data = self._mv = None
        if self._seg is not None:
            self._seg.close()

    def unlink(self) -> None:
        """Remove the ring's name; processes that have it mapped keep working."""
        if self._seg is not None:
            self._seg.unlink()

    def __enter__(self) -> Ring:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return f"<Ring {self.name!r} closed>"
        mode = "lossless" if self.lossless else "overwrite"
        extra = " replica" if self.is_replica else ""
        return (f"<Ring {self.name!r} capacity={self.capacity} max_record={self.max_record} "
                f"partitions={self.params.partition_count} {mode}{extra} tail={self.tail} "
                f"next_seq={self.next_sequence}>")


def _sequence_at(ring: Ring, c: Any) -> int | None:
    """The sequence of the first record at or after consumer ``c``'s position (committed
    or still to come), or None when the bytes it was read from were overwritten while
    they were read (the seqlock check failed) or cannot be walked."""
    hdr, cap, psize = ring._h(), ring.capacity, ring.partition_size
    mr, pos = ring.max_record, int(c.pos)
    tail = int(lib.pyshm_get_counter(hdr, _C_TAIL))
    if pos > tail or pos % layout.RECORD_ALIGN:
        return None
    buf = ffi.from_buffer(ring.data)
    w = ffi.new("pyshm_walk_t *")
    read_from = pos
    seq: int | None = None
    # the first record at or after pos below tail (padding skipped), one record a call
    w.pos = pos
    while w.count == 0 and w.pos < tail:
        if lib.pyshm_walk(w, buf, cap, 0, cap - 1, tail, w.pos + 1, psize, mr) != 0:
            return None
    if w.count:
        seq = int(w.first_seq)
    else:
        # nothing committed at or after pos yet: the next record will follow the last
        # one below pos; partitions start with a record, so walk back one at a time
        oldest = layout.oldest_boundary(int(lib.pyshm_get_counter(hdr, _C_INTENT)), cap,
                                        psize)
        end = pos
        while end > oldest and seq is None:
            start = max(oldest, (end - 1) // psize * psize)
            w = ffi.new("pyshm_walk_t *")
            w.pos = start
            if lib.pyshm_walk(w, buf, cap, 0, cap - 1, end, end, psize, mr) != 0:
                return None
            if w.count:
                seq = int(w.last_seq) + 1
            read_from, end = start, start
        if seq is None:
            # no record below pos in the readable window. Only a ring nothing was ever
            # published to has an exact answer: the header's next sequence (a follower's
            # first sequence comes from its source, so it has none)
            if tail or int(lib.pyshm_get_counter(hdr, _C_INTENT)) \
                    or ring.flags & layout.FLAG_FOLLOWER:
                return None
            seq = int(lib.pyshm_get_counter(hdr, _C_NEXT_SEQ))
    c.msg_pos = read_from
    return seq if lib.pyshm_still_valid(c) else None


def _closed(*args: Any, **kw: Any) -> Any:
    raise ClosedError("this producer/consumer is closed")


def _address(cdata: Any) -> int:
    return int(ffi.cast("uintptr_t", cdata))


def _check_type(type: Any, where: str) -> int:
    """A record type as the C core takes it: an int32 other than -1 (padding)."""
    if not isinstance(type, int):
        raise TypeError(f"{where}: type must be an int in [-2147483648, 2147483647] other "
                        f"than -1, not {type.__class__.__name__}")
    if not -(1 << 31) <= type < 1 << 31 or type == layout.PADDING_TYPE:
        raise InvalidParameterError(f"{where}: type {type} is invalid: use an int in "
                                    f"[-2147483648, 2147483647] other than -1 (type -1 is "
                                    f"reserved for padding records)")
    return type


_TYPE_MIN, _TYPE_MAX = -(1 << 31), (1 << 31) - 1


def _check_timeout(timeout: Any, where: str) -> float:
    """Seconds >= 0 (None: no limit) as a float."""
    if timeout is None:
        return float("inf")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{where}: timeout must be a number of seconds or None, not "
                        f"{timeout.__class__.__name__}")
    if not timeout >= 0:
        raise InvalidParameterError(f"{where}: timeout {timeout} is invalid: use seconds "
                                    f">= 0, or None to wait without limit")
    return float(timeout)


def _bytes_like(obj: Any) -> bool:
    try:
        memoryview(obj)
    except TypeError:
        return False
    return True


def _bytes_like_error(obj: Any, where: str) -> TypeError:
    hint = ": encode text first, e.g. text.encode()" if isinstance(obj, str) else ""
    return TypeError(f"{where}: records must be bytes-like (bytes, bytearray, memoryview, a "
                     f"Message, a contiguous numpy array), not {obj.__class__.__name__}{hint}")


class Producer:
    """The ring's single writer. Obtain with ``ring.producer()``."""

    def __init__(self, ring: Ring, *, follower: bool = False):
        if ring.readonly:
            raise PyshmError(f"ring {ring.name!r} is attached read-only: cannot produce")
        if ring.is_replica:
            raise PyshmError(f"ring {ring.name!r} is a replica (written by its engine); "
                             f"promote it before producing into it")
        # follower=True: the producer inside pyshm.bridge.FollowerProducer, the only
        # writer a follower ring accepts (its sequence numbers are the source's)
        if ring.is_follower and not follower:
            raise PyshmError(f"ring {ring.name!r} is a follower ring (its records come from "
                             f"`pyshm bridge in`); promote it (`pyshm bridge promote "
                             f"{ring.name}`) before producing into it")
        if follower and not ring.is_follower:
            raise PyshmError(f"ring {ring.name!r} is not a follower ring")
        self.ring = ring
        self._hdr = ring._h()
        self._pid = os.getpid()
        self._claim_pos: int | None = None
        self._last_reap = 0.0
        self._take_over()
        self._p = ffi.new("pyshm_producer_t *")
        rc = lib.pyshm_producer_open(self._p, self._hdr, ring.segment.size)
        if rc < 0:
            lib.pyshm_producer_pid_cas(self._hdr, self._pid, 0)
            _raise(rc, f"ring {ring.name!r} producer", self._p.last_error_pos,
                   self._p.last_error_field)
        self._data = ring.data
        self._max_payload = ring.max_payload
        # The hot call is C (pyshm._ring_fast): bound once, so publish() costs one
        # vectorcall. Every other call that touches self._p holds the same guard
        # (self._fast.enter/leave) because cffi releases the GIL around its calls.
        # The Writer holds an export of the mapping and gives the producer role back at
        # close(): a call inside at that moment (another thread's: claim, a batch, a wait
        # for room; or the one a signal handler interrupted) does both as it ends, so the
        # ring is never unmapped, nor its role taken, under it.
        self._fast = _Writer(_address(self._p), self._p, self._slow, ring._export(),
                             self._pid)
        self.publish = self._fast.publish  # type: ignore[method-assign]

    def _slow(self, rc: int, data: Any, type: int, timeout: Any, nbytes: int) -> int:
        # publish() found the ring full with a timeout, or hit an error; it still holds
        # the guard, so the retries go through the unguarded single attempt
        wait = _check_timeout(timeout, f"ring {self.ring.name!r} publish")
        return self._retry(rc, wait, lambda: self._fast._publish_once(data, type), nbytes)

    def _take_over(self) -> None:
        for _ in range(100):
            cur = self.ring.producer_pid
            if cur and (cur == self._pid or pid_alive(cur)):
                raise ProducerBusyError(f"ring {self.ring.name!r} already has a producer "
                                        f"(pid {cur}, alive)")
            # the C side compares int64 words: a damaged pid >= 2^63 is passed as its
            # signed reading, else cffi raises OverflowError instead of taking over
            signed = cur - (1 << 64) if cur >= 1 << 63 else cur
            if lib.pyshm_producer_pid_cas(self._hdr, signed, self._pid):
                return
        raise ProducerBusyError(f"ring {self.ring.name!r}: producer slot keeps changing")

    @property
    def sequence(self) -> int:
        """The sequence number the next record will get."""
        return int(self._p.sequence)

    def _set_sequence(self, sequence: int) -> None:
        """Give the next record ``sequence`` (>= :attr:`sequence`): for follower rings
        only, through :class:`pyshm.bridge.FollowerProducer`."""
        if not self.ring.is_follower:
            raise PyshmError(f"ring {self.ring.name!r}: only a follower ring's producer "
                             f"sets sequence numbers")
        if not 0 <= sequence < (1 << 64) - 1:
            raise InvalidParameterError(f"sequence {sequence} is out of range")
        self._fast.enter()
        try:
            rc = int(lib.pyshm_producer_set_sequence(self._live(), sequence))
        finally:
            self._fast.leave()
        if rc == lib.PYSHM_E_PARAM:
            raise InvalidParameterError(f"ring {self.ring.name!r}: sequence {sequence} is "
                                        f"below the next one ({self.sequence}): sequence "
                                        f"numbers never go back")
        if rc < 0:
            _raise(rc, f"ring {self.ring.name!r} set sequence")

    @property
    def position(self) -> int:
        """Position after the last record this producer committed (the ring's tail)."""
        return int(self._p.tail)

    def publish(self, data: Any, type: int = 0, timeout: float | None = 0.0) -> int:
        """Append one record; return its sequence number, or FULL (-1) if a lossless ring
        stayed full for ``timeout`` seconds (None: until there is room).

        ``data`` is bytes-like: bytes, bytearray, memoryview, a ``Message`` (forwarded
        without a copy of its own), a C-contiguous numpy array. ``type`` is an int32
        other than -1."""
        return int(self._fast.publish(data, type, timeout))

    def _live(self) -> Any:
        # The producer struct for the next C call of a guarded call, or ClosedError once
        # close() ran meanwhile (another thread, or a signal handler: the GIL may switch
        # between any two bytecodes of a call that waits for room). Never self._p itself
        # there: None would reach C as a NULL pointer.
        p = self._p
        if p is None:
            raise ClosedError(f"ring {self.ring.name!r}: the producer was closed during "
                              f"the call")
        return p

    def _retry(self, rc: int, timeout: float, again: Any, size: int = 0) -> int:
        if rc != FULL:
            p = self._live()
            _raise(rc, f"ring {self.ring.name!r} publish of {size} bytes",
                   p.last_error_pos, p.last_error_field, seg=self.ring._seg)
        # FULL is the slow path: a file truncated under this process (pyshm.guard closes
        # the gate of its poisoned mapping) is reported here, not as a full ring
        seg = self.ring._seg
        if seg is not None:
            seg.check_intact()
        now = time.monotonic()
        deadline = now + timeout
        while True:
            if now - self._last_reap >= _REAP_INTERVAL:
                self._last_reap = now
                self.ring.reap()
                rc = again()
                if rc != FULL:
                    return int(rc)
            if now >= deadline:
                return FULL
            time.sleep(0) if timeout < 0.001 else time.sleep(min(50e-6, deadline - now))
            rc = again()
            if rc != FULL:
                return int(rc)
            now = time.monotonic()

    def claim(self, n: int, timeout: float | None = 0.0) -> memoryview:
        """Reserve ``n`` payload bytes and return a writable view of them; ``commit()``
        publishes. Nothing is visible to consumers before ``commit()``."""
        where = f"ring {self.ring.name!r} claim"
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"{where}: n is a payload size, an int in [0, "
                            f"{self.ring.max_payload}], not {n.__class__.__name__}")
        if n < 0:
            raise InvalidParameterError(f"{where}({n}): n is a payload size in bytes, an "
                                        f"int in [0, {self.ring.max_payload}]")
        if n > self.ring.max_payload:
            raise RecordTooLargeError(f"{where}({n}): larger than the ring's max payload "
                                      f"{self.ring.max_payload}")
        wait = _check_timeout(timeout, where)
        self._fast.enter()
        try:
            rc = lib.pyshm_claim(self._live(), n)
            if rc == FULL:
                rc = self._retry(rc, wait, lambda: lib.pyshm_claim(self._live(), n))
        finally:
            self._fast.leave()
        self._live()  # closed during the claim: it can never be committed
        if rc < 0:
            if rc == FULL:
                raise PyshmError(f"ring {self.ring.name!r}: full, no room to claim {n} bytes "
                                 f"within {timeout} s")
            _raise(rc, f"ring {self.ring.name!r} claim of {n} bytes")
        self._claim_view = self._data[rc:rc + n]
        return self._claim_view

    def commit(self, type: int = 0, length: int | None = None) -> int:
        """Publish the claimed record (``length`` may shrink it); return its sequence."""
        _check_type(type, f"ring {self.ring.name!r} commit")
        if length is not None and (isinstance(length, bool) or not isinstance(length, int)):
            raise TypeError(f"commit length must be an int, not {length.__class__.__name__}")
        if length is not None and length < 0:
            raise InvalidParameterError(f"commit length {length} is negative")
        self._fast.enter()
        try:
            p = self._live()
            n = int(p.claim_len) - layout.RECORD_HEADER if length is None else length
            if n > self.ring.max_payload:
                raise RecordTooLargeError(f"ring {self.ring.name!r} commit: length {n} is "
                                          f"larger than the claim")
            rc = lib.pyshm_commit(p, type, max(n, 0))
        finally:
            self._fast.leave()
        if rc < 0:
            _raise(rc, f"ring {self.ring.name!r} commit")
        self._claim_view.release()
        return int(rc)

    def publish_batch(self, records: Any, type: int = 0, timeout: float = 0.0) -> int:
        """Publish many records in one C call: a numpy array (one record per row of its
        first axis, e.g. a structured array or a 2-D uint8 array) or a sequence of
        bytes-like objects. Returns how many were published (fewer only when a lossless
        ring stays full for ``timeout``)."""
        if type.__class__ is not int or not _TYPE_MIN <= type <= _TYPE_MAX or type == -1:
            _check_type(type, f"ring {self.ring.name!r} publish_batch")
        if isinstance(records, (str, bytes, bytearray, memoryview)):
            raise TypeError(f"ring {self.ring.name!r} publish_batch: records is a sequence "
                            f"of records (or a numpy array of rows), not one "
                            f"{records.__class__.__name__}; use publish() for one record")
        self._fast.enter()
        try:
            return self._publish_batch(records, type, timeout)
        finally:
            self._fast.leave()

    def _publish_batch(self, records: Any, type: int, timeout: float) -> int:
        if isinstance(records, np.ndarray):
            arr = records if records.flags.c_contiguous else np.ascontiguousarray(records)
            count = arr.shape[0] if arr.ndim else 1
            if count == 0:
                return 0
            size = arr.nbytes // count
            buf = ffi.from_buffer(arr)
            if size > self._max_payload:
                raise RecordTooLargeError(
                    f"ring {self.ring.name!r}: batch records of {size} bytes exceed the max "
                    f"payload {self.ring.max_payload}")
            done = int(lib.pyshm_publish_fixed(self._live(), buf, size, size, count, type))
            if done < 0:
                self._batch_error(done)
            if done < count:
                rest = arr[done:]
                return done + self._batch_rest(rest, type, timeout, done)
            return done
        return self._publish_list(records, type, timeout)

    def _batch_rest(self, rest: Any, type: int, timeout: float, published: int) -> int:
        deadline = time.monotonic() + max(timeout, 0.0)
        done = 0
        while True:
            now = time.monotonic()
            if now - self._last_reap >= _REAP_INTERVAL:
                self._last_reap = now
                self.ring.reap()
            try:
                done += self._one_more(rest[done:], type)
            except PyshmError as exc:
                # a batch that stops on an error says how much of it is in the ring
                exc.args = (f"{exc.args[0]}; the first {published + done} records of the "
                            f"batch were published",)
                raise
            if done >= len(rest) or now >= deadline:
                return done
            time.sleep(50e-6)

    def _one_more(self, rest: Any, type: int) -> int:
        # after a reap the gate may have moved: one more non-waiting attempt
        if isinstance(rest, np.ndarray):
            arr = np.ascontiguousarray(rest)
            size = arr.nbytes // arr.shape[0]
            done = int(lib.pyshm_publish_fixed(self._live(), ffi.from_buffer(arr), size, size,
                                               arr.shape[0], type))
            if done < 0:
                self._batch_error(done)
            return done
        return self._list_once(rest, type)

    def _batch_error(self, rc: int, what: str = "publish_batch") -> None:
        p = self._live()
        _raise(rc, f"ring {self.ring.name!r} {what}", p.last_error_pos,
               p.last_error_field, seg=self.ring._seg)

    def _list_once(self, records: Sequence[Any], type: int) -> int:
        if len(records) == 0:
            return 0
        if all(r.__class__ is bytes for r in records):
            joined = b"".join(records)
            lens = np.fromiter(map(len, records), dtype=np.uint64, count=len(records))
        else:
            try:
                views = [memoryview(r).cast("B") for r in records]
            except TypeError:
                bad = next(r for r in records if not _bytes_like(r))
                raise _bytes_like_error(bad, f"ring {self.ring.name!r} publish_batch") \
                    from None
            joined = b"".join(views)
            lens = np.fromiter((v.nbytes for v in views), dtype=np.uint64, count=len(views))
        return self._packed_once(joined, np.cumsum(lens, dtype=np.uint64), type)

    def _packed_once(self, data: Any, ends: np.ndarray, type: int,
                     what: str = "publish_batch") -> int:
        buf = data if data.__class__ is bytes else ffi.from_buffer(data)
        rc = int(lib.pyshm_publish_var(self._live(), buf,
                                       ffi.cast("uint64_t *", ffi.from_buffer(ends)),
                                       len(ends), type))
        if rc < 0:
            self._batch_error(rc, what)
        return rc

    def publish_packed(self, data: Any, ends: Any, type: int = 0,
                       timeout: float = 0.0) -> int:
        """Publish records laid end to end in ``data``; record i ends at ``ends[i]``
        (the layout ``Batch`` uses). One C call; returns how many were published."""
        _check_type(type, f"ring {self.ring.name!r} publish_packed")
        self._fast.enter()
        try:
            return self._publish_packed(data, ends, type, timeout)
        finally:
            self._fast.leave()

    def _publish_packed(self, data: Any, ends: Any, type: int, timeout: float) -> int:
        e = np.ascontiguousarray(ends, dtype=np.uint64)
        nbytes = memoryview(data).nbytes
        if len(e) and (int(e[-1]) > nbytes or (e[1:] < e[:-1]).any()):
            raise InvalidParameterError(f"publish_packed: ends must be non-decreasing and "
                                        f"<= {nbytes} (the data size)")
        done = self._packed_once(data, e, type, "publish_packed")
        deadline = time.monotonic() + max(timeout, 0.0)
        while done < len(e):
            now = time.monotonic()
            if now - self._last_reap >= _REAP_INTERVAL:
                self._last_reap = now
                self.ring.reap()
            start = int(e[done - 1]) if done else 0
            try:
                n = self._packed_once(memoryview(data).cast("B")[start:], e[done:] - start,
                                      type, "publish_packed")
            except PyshmError as exc:
                exc.args = (f"{exc.args[0]}; the first {done} records were published",)
                raise
            done += n
            if done >= len(e) or now >= deadline:
                break
            if n == 0:
                time.sleep(20e-6)
        return done

    def _publish_list(self, records: Iterable[Any], type: int, timeout: float) -> int:
        recs = records if isinstance(records, (list, tuple)) else list(records)
        done = self._list_once(recs, type)
        if done < len(recs):
            done += self._batch_rest(recs[done:], type, timeout, done)
        return done

    def room(self) -> int:
        """Bytes that can be written now without passing a gate (capacity if ungated)."""
        self._fast.enter()
        try:
            return int(lib.pyshm_room(self._live()))
        finally:
            self._fast.leave()

    def close(self) -> None:
        """Give up the producer role (the header's producer pid goes back to 0)."""
        fast = getattr(self, "_fast", None)
        if fast is not None:
            # refuses every later call (a publish bound before close() too) and gives the
            # role back: now, or as the call inside (see __init__) ends with ClosedError
            fast.close()
        elif getattr(self, "_p", None) is not None and not self.ring.closed:
            lib.pyshm_producer_pid_cas(self._hdr, self._pid, 0)  # a half-finished setup
        self._p = None
        self.publish = self.claim = self.commit = self.publish_batch = _closed  # type: ignore
        self.publish_packed = self.room = _closed  # type: ignore

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._p is None:
            return "<Producer closed>"
        return f"<Producer ring={self.ring.name!r} pid={self._pid} next_seq={self.sequence}>"


class Consumer:
    """One reader with its own cursor. Obtain with ``ring.consumer()``."""

    def __init__(self, ring: Ring, start: str | int = "oldest", gating: bool = False):
        self.ring = ring
        self._hdr = ring._h()
        self._pid = os.getpid()
        self.gating = gating
        self._slot = -1
        self._bufs: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._aread_pending = False
        # the waiting aread's [loop, future, fd, registered]: close() wakes it
        self._aread_waiter: list[Any] | None = None
        if isinstance(start, str):
            if start not in ("oldest", "latest"):
                raise InvalidParameterError(f"consumer start {start!r}: use 'oldest', "
                                            f"'latest' or a sequence number")
            whence, seq = (0 if start == "oldest" else 1), 0
        elif isinstance(start, int) and start >= 0:
            whence, seq = 2, start
        else:
            raise InvalidParameterError(f"consumer start {start!r}: use 'oldest', 'latest' "
                                        f"or a sequence number >= 0")
        if gating and ring.readonly:
            raise PyshmError(f"ring {ring.name!r} is read-only: a gating consumer needs a "
                             f"slot in its header")
        if not ring.readonly:
            self._slot = self._claim_slot()
        self._c = ffi.new("pyshm_consumer_t *")
        rc = lib.pyshm_consumer_open(self._c, self._hdr, ring.segment.size, self._slot)
        if rc >= 0:
            rc = lib.pyshm_consumer_seek(self._c, whence, seq)
        if rc < 0:
            self._release_slot()
            _raise(rc, f"ring {ring.name!r} consumer", self._c.last_error_pos,
                   self._c.last_error_field)
        flags = layout.SLOT_ACTIVE | (layout.SLOT_GATING if gating else 0)
        if self._slot >= 0:
            self._activate(flags)
        if whence != 2:
            self._count_from_registration(whence, flags)
        self._data = ring.data
        self._max_payload = ring.max_payload
        self._where = f"ring {ring.name!r} consumer"
        # The hot calls are C (pyshm._ring_fast), bound once. The error callback closes
        # over the struct, not over self: no reference cycle keeps the mapping's export.
        c, where, seg = self._c, self._where, ring._seg

        def on_error(rc: int) -> None:
            # seg: a file truncated under this process (pyshm.guard) names the cause
            _raise(rc, where, c.last_error_pos, c.last_error_field, seg=seg)
        # The Reader holds an export of the mapping and gives the slot back at close(): a
        # call inside at that moment (another thread's, or the one a signal handler
        # interrupted) does both as it ends, so neither is lost under it.
        self._fast = _Reader(_address(self._c), self._c, ring._export(), on_error,
                             self._pid)
        self.read = self._fast.read  # type: ignore[method-assign]
        self.read_copy = self._fast.read_copy  # type: ignore[method-assign]
        self.read_into = self._fast.read_into  # type: ignore[method-assign]

    def _count_from_registration(self, whence: int, flags: int) -> None:
        """Fix the sequence ``lost`` counts from at registration: the sequence of the
        first record at or after this consumer's position, whether it is committed yet
        or not. Without it a consumer lapped before its first read (registered on an
        empty ring, say) took the first record it met as its start and reported lost=0.

        Exact or nothing: the bytes read are proven intact by the reader's seqlock check
        (``pyshm_still_valid``); when the producer laps the registration itself, the
        consumer seeks again (a few times) and otherwise keeps the older rule (count
        from the first record met), never a guess that could be too high."""
        c, ring = self._c, self.ring
        for _ in range(4):
            seq = _sequence_at(ring, c)
            if seq is not None:
                c.expect = c.start_seq = seq
                c.have_expect = 1
                return
            if lib.pyshm_consumer_seek(c, whence, 0) < 0:
                return
            if self._slot >= 0:
                self._activate(flags)

    def _activate(self, flags: int) -> None:
        """Publish the slot at this consumer's position; a gating one then joins the
        producer's gate (docs/design.md, "Joining a lossless ring").

        A lossless producer scans the slots only when it reaches its cached gate limit,
        so the slot protects nothing below the floor that limit was built on: bytes
        there may be overwritten before this consumer reads them. The join returns that
        floor (or a newer one), and the consumer starts there instead. With
        ``start=<sequence>`` the records skipped are counted in ``lost``; with
        ``"oldest"``, ``start_sequence`` is the first record at the floor."""
        c, hdr = self._c, self._hdr
        lib.pyshm_slot_activate(hdr, self._slot, c.pos, flags, time.time_ns())
        if not flags & layout.SLOT_GATING:
            return
        floor = int(lib.pyshm_gate_join(hdr))
        if floor <= c.pos:
            return
        tail = self.ring.tail
        if floor > tail or floor % layout.RECORD_ALIGN:
            # the producer publishes only aligned floors at or below its tail, which
            # never goes back: this header was damaged
            self._release_slot()
            raise CorruptSegmentError(
                f"ring {self.ring.name!r} consumer: corrupt segment: header field "
                f"gate_floor = {floor} is invalid (beyond tail {tail} or not 8-aligned)")
        c.pos = floor
        lib.pyshm_slot_activate(hdr, self._slot, floor, flags, time.time_ns())

    def _err(self, rc: int) -> None:
        _raise(rc, self._where, self._c.last_error_pos, self._c.last_error_field,
               seg=self.ring._seg)

    def _claim_slot(self) -> int:
        buf = ffi.new("int64_t[4]")
        # free slots first: a dead consumer's slot may still be gating for a supervisor
        # that is about to pin it and restart that consumer (Ring.reap_grace)
        for take_dead in (False, True):
            for i in range(layout.MAX_CONSUMERS):
                lib.pyshm_slot_read(self._hdr, i, buf)
                pid = buf[1]
                if pid == 0 or (take_dead and pid != self._pid and not pid_alive(pid)):
                    if lib.pyshm_slot_claim(self._hdr, i, pid, self._pid) == 1:
                        return i
        raise NoConsumerSlotError(f"ring {self.ring.name!r}: all {layout.MAX_CONSUMERS} "
                                  f"consumer slots are held by live processes")

    def _release_slot(self) -> None:
        if self._slot >= 0 and not self.ring.closed:
            lib.pyshm_slot_release(self._hdr, self._slot, self._pid)
        self._slot = -1

    @property
    def slot(self) -> int:
        """Index of this consumer's slot in the header (-1 without one)."""
        return self._slot

    @property
    def position(self) -> int:
        """The next position this consumer reads."""
        return int(self._c.pos)

    @property
    def lost(self) -> int:
        """Records this consumer never returned, exactly: every sequence from
        ``start_sequence`` to the last one read was either returned or counted here
        (gaps from overruns, and records ``read_copy`` found overwritten while copying).
        ``start_sequence`` is fixed at registration, so a consumer lapped before its
        first read counts what it missed too."""
        return int(self._c.lost)

    @property
    def start_sequence(self) -> int | None:
        """The first sequence ``lost`` accounts from: the sequence asked for with
        ``start=<int>``; else the sequence of the first record at or after the position
        the consumer registered at ("oldest": the oldest record then readable;
        "latest": the next one to be published). In the rare case the producer laps
        the registration itself (several times running), or on a follower ring nothing
        was published to yet, it is the first record this consumer meets; None before."""
        return int(self._c.start_seq) if self._c.have_expect else None

    @property
    def laps(self) -> int:
        """How many times the producer lapped this consumer."""
        return int(self._c.laps)

    @property
    def next_sequence(self) -> int | None:
        """The sequence this consumer expects next; None before its first record."""
        return int(self._c.expect) if self._c.have_expect else None

    def read(self, timeout: float | None = 0.0, wait: str = "spin") -> Message | None:
        """The next record as a zero-copy Message, or None if nothing arrived within
        ``timeout`` seconds (0: do not wait; None: wait forever). ``wait`` is the wait
        strategy: spin, yield, sleep or block (docs/ring.md, "Waiting for data")."""
        return self._fast.read(timeout, wait)

    @property
    def last_sequence(self) -> int:
        """Sequence number of the last record read (by any read call)."""
        return int(self._fast.last_sequence)

    @property
    def last_type(self) -> int:
        """Type of the last record read (by any read call)."""
        return int(self._fast.last_type)

    def still_valid(self) -> bool:
        """True if the last Message's bytes were not overwritten yet (overwrite mode).
        Check it after using ``message.data``: the seqlock re-check of docs/design.md."""
        return bool(self._fast.still_valid())

    def read_copy(self, timeout: float | None = 0.0, wait: str = "spin") -> Message | None:
        """Like read(), but ``data`` is a bytes copy proven intact. A record overwritten
        while it was copied counts in ``lost``; after a ring's worth of those in one call
        (a producer lapping the copy every time) None is returned."""
        return self._fast.read_copy(timeout, wait)

    def read_into(self, buffer: Any, timeout: float | None = 0.0,
                  wait: str = "spin") -> int | None:
        """Copy the next record's payload into ``buffer`` (writable, contiguous: a
        bytearray, memoryview or numpy array), proven intact, and return its length; None
        if nothing arrived within ``timeout``. No object is created for the record: its
        sequence and type are ``last_sequence`` and ``last_type``. A buffer too small
        for the record raises InvalidParameterError and leaves the record unread."""
        return self._fast.read_into(buffer, timeout, wait)

    # ------------------------------------------------------------ asyncio and selectors
    def fileno(self) -> int:
        """An eventfd that becomes readable when a record may be waiting, for selectors,
        epoll or an event loop's ``add_reader``.

        The first call starts a waker thread (C, no GIL) that sleeps in the ring's futex
        with the ``block`` protocol and signals the eventfd once the tail passes the
        position the consumer had then; every read that finds nothing re-arms it at the
        new position (and clears the eventfd). So: register the fd, and when it is
        readable, read until ``read()`` returns None. Wake-ups can be spurious, never
        missed. docs/ring.md ("asyncio and selectors") gives the latency it adds."""
        return int(self._fast.fileno())

    async def aread(self, timeout: float | None = None) -> Message | None:
        """``await consumer.aread()``: the next record, waiting without blocking the event
        loop (no polling: the loop sleeps on ``fileno()``); None after ``timeout``
        seconds (None: no limit). A record already there is returned without a round
        trip through the loop. One ``aread`` at a time per consumer."""
        import asyncio

        m = self._fast.read()
        if m is not None:
            return m
        if self._aread_pending:
            raise ConcurrentUseError(f"{self._where}: another aread() is already waiting "
                                     f"on this consumer")
        loop = asyncio.get_running_loop()
        fd = self.fileno()  # armed at the position the read above stopped at
        deadline = None if timeout is None else loop.time() + _check_timeout(timeout,
                                                                             "aread")
        self._aread_pending = True
        try:
            while True:
                ready = loop.create_future()

                def wake(fut: asyncio.Future[None] = ready) -> None:
                    if not fut.done():
                        fut.set_result(None)
                loop.add_reader(fd, wake)
                waiter = self._aread_waiter = [loop, ready, fd, True]
                try:
                    if deadline is None:
                        await ready
                    else:
                        left = deadline - loop.time()
                        if left <= 0:
                            return None
                        try:
                            await asyncio.wait_for(ready, left)
                        except asyncio.TimeoutError:
                            return self._fast.read()
                finally:
                    self._aread_waiter = None
                    if waiter[3]:  # close() may have taken the fd out of the loop already
                        loop.remove_reader(fd)
                m = self._fast.read()  # re-arms when it finds nothing (a spurious wake)
                if m is not None:
                    return m
        finally:
            self._aread_pending = False

    def _wake_aread(self) -> None:
        # the eventfd is about to be closed: take it out of the waiting aread's loop (in
        # that loop's thread: now; from another thread: the loop does it next) and wake
        # the aread, whose next read raises ClosedError
        waiter = getattr(self, "_aread_waiter", None)
        if waiter is None:
            return
        loop, fut, fd = waiter[0], waiter[1], waiter[2]

        def wake() -> None:
            if waiter[3]:
                waiter[3] = False
                loop.remove_reader(fd)
            if not fut.done():
                fut.set_result(None)
        try:
            import asyncio
            here = asyncio.get_running_loop() is loop
        except RuntimeError:
            here = False
        if here:
            wake()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(wake)

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> Message:
        """``async for msg in consumer``: records as they come, for ever (until the
        consumer is closed)."""
        try:
            m = await self.aread()
        except ClosedError:
            raise StopAsyncIteration from None
        assert m is not None  # no timeout: aread returns a record
        return m

    def read_batch(self, max_records: int = 1024, timeout: float | None = 0.0,
                   wait: str = "spin", max_bytes: int | None = None) -> Batch:
        """Copy up to ``max_records`` records into numpy arrays (one C call)."""
        if max_records <= 0:
            raise InvalidParameterError(f"max_records {max_records} must be positive")
        if wait not in WAIT_STRATEGIES:
            raise InvalidParameterError(f"wait strategy {wait!r}: use one of "
                                        f"{', '.join(WAIT_STRATEGIES)}")
        # the message is built only for a timeout that needs a look
        limit = 0.0 if timeout == 0.0 and timeout.__class__ is float else \
            _check_timeout(timeout, f"{self._where} read_batch")
        self._fast.enter()
        try:
            return self._read_batch(max_records, limit, wait, max_bytes)
        finally:
            self._fast.leave()

    def _read_batch(self, max_records: int, timeout: float, wait: str,
                    max_bytes: int | None) -> Batch:
        mp = self._max_payload
        need = max(mp, max_bytes if max_bytes is not None else min(max_records * mp, 1 << 22))
        b = self._bufs
        if b is None or len(b[1]) < max_records or len(b[0]) < need:
            b = self._bufs = (np.empty(need, np.uint8), np.empty(max_records, np.uint64),
                              np.empty(max_records, np.int32), np.empty(max_records, np.uint64))
            keep = tuple(ffi.from_buffer(x) for x in b)  # the pointers below stay valid
            self._cbufs = (keep, ffi.cast("uint8_t *", keep[0]), len(b[0]),
                           ffi.cast("uint64_t *", keep[1]), ffi.cast("int32_t *", keep[2]),
                           ffi.cast("uint64_t *", keep[3]))
        _, out, out_len, ends, types, seqs = self._cbufs
        read_batch, c = lib.pyshm_read_batch, self._c
        deadline = time.monotonic() + timeout if timeout else 0.0
        while True:
            n = read_batch(c, out, out_len, ends, types, seqs, max_records)
            if n < 0:
                _raise(n, self._where, c.last_error_pos, c.last_error_field,
                       seg=self.ring._seg)
            if n or timeout == 0.0:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            # in C with the GIL released; True once tail passed the position, ClosedError
            # if close() came meanwhile (another thread, or a signal handler)
            self._fast.wait(None if left == float("inf") else left, wait)
            if self._fast.closed:  # ... or just after it: no read after the close
                raise ClosedError(f"{self._where} read_batch: the consumer was closed "
                                  f"during the call")
        used = int(b[1][n - 1]) if n else 0
        return Batch(b[0][:used], b[1][:n], b[2][:n], b[3][:n])

    def __iter__(self) -> Iterator[Message]:
        """Messages until the ring is momentarily empty."""
        while True:
            m = self.read()
            if m is None:
                return
            yield m

    def close(self) -> None:
        """Release the consumer slot; safe to call twice. A call waiting on this consumer
        in another thread (or an ``aread``/``async for`` waiting in the event loop) ends
        with ClosedError (``async for`` simply ends)."""
        self._wake_aread()
        fast = getattr(self, "_fast", None)
        if fast is not None:
            # refuses later calls, gives the slot back and, once no Message of it is
            # alive, lets the mapping go: now, or as the call inside ends (see __init__)
            fast.close()
            self._slot = -1
        else:
            self._release_slot()
        self._bufs = None
        self.read = self.read_copy = self.read_batch = self.read_into = _closed  # type: ignore

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<Consumer ring={self.ring.name!r} slot={self._slot} "
                f"pos={int(self._c.pos)} lost={int(self._c.lost)}"
                f"{' gating' if self.gating else ''}>")
