"""The baseline pyshm is measured against: a plain pure-Python SPSC ring.

One producer, one consumer, over ``multiprocessing.shared_memory``, busy polling. It is
meant to be a *fair* baseline, i.e. the fastest thing a competent Python programmer would
write in an afternoon without C: no locks, no seqlock, no per-message allocation on the
producer side, precompiled ``struct`` objects, ``memoryview`` slice assignment for the
payload, and both counters cached locally so the shared ones are touched once per call.

Segment::

    0     tail  u64   written by the producer after the record bytes (publication)
    128   head  u64   written by the consumer after it has finished with a record
    256   data[capacity]

Record: ``length u32 | payload | pad to 8``. A length of ``WRAP`` (0xFFFFFFFF) means "the
rest of the buffer is unused, continue at offset 0": records never wrap, so a reader can
always hand out one contiguous ``memoryview``.

Ordering: CPython stores to the mapping happen in program order and x86-64 does not
reorder stores with other stores nor loads with other loads (TSO), so "write payload, then
write tail" is enough for the reader. The counters are read and written through
``memoryview.cast("Q")`` items, which are single aligned 8-byte accesses. Not through
``struct.pack_into``: it zero-fills the destination before writing the value, so a reader
polling the tail sees 0 now and then (measured: thousands of torn reads in 2 M stores).
On a weakly ordered CPU (ARM) this ring would need fences that Python cannot express;
that is one reason pyshm has a C core.

The consumer publishes ``head`` lazily, at its *next* read: a view returned by
:meth:`NaiveRing.read` stays valid (the producer cannot overwrite it) until then. This is
the same contract as ``pyshm.Consumer.read``.
"""

from __future__ import annotations

import time
from multiprocessing import shared_memory

TAIL_OFF = 0
HEAD_OFF = 128
DATA_OFF = 256
WRAP = 0xFFFFFFFF
MIN_CAPACITY = 4096


class RingFull(Exception):
    """``publish`` could not find room before its timeout (the consumer is stuck)."""


class NaiveRing:
    """A single-producer single-consumer byte ring in one shared-memory segment.

    Create it in the parent and let ``fork`` hand the object to both processes, or attach
    by ``name`` (Python 3.11's resource tracker then unlinks the segment when the
    attaching process exits, a known CPython quirk; fork inheritance avoids it).
    """

    def __init__(self, name: str | None = None, *, create: bool = True,
                 capacity: int = 1 << 20):
        if create:
            if capacity < MIN_CAPACITY or capacity & (capacity - 1):
                raise ValueError(
                    f"naive ring capacity must be a power of two >= {MIN_CAPACITY}, "
                    f"got {capacity}")
            self._shm = shared_memory.SharedMemory(name=name, create=True,
                                                   size=DATA_OFF + capacity)
            # touch every page now so page faults are not timed as ring latency
            self._shm.buf[:] = bytes(DATA_OFF + capacity)
        else:
            if name is None:
                raise ValueError("attaching to a naive ring needs its name")
            self._shm = shared_memory.SharedMemory(name=name, create=False)
            capacity = self._shm.size - DATA_OFF
            if capacity < MIN_CAPACITY or capacity & (capacity - 1):
                self._shm.close()
                raise ValueError(f"segment {name!r} is not a naive ring "
                                 f"(data size {capacity} is not a power of two >= 4096)")
        self.name = self._shm.name
        self.capacity = capacity
        # the largest record keeps at least one other record's worth of room: a record
        # bigger than half the ring could need a wrap marker plus itself > capacity
        self.max_payload = capacity // 2 - 8
        self._buf = self._shm.buf
        self._mask = capacity - 1
        self._tailv = self._buf[TAIL_OFF:TAIL_OFF + 8].cast("Q")
        self._headv = self._buf[HEAD_OFF:HEAD_OFF + 8].cast("Q")
        # record lengths, indexed by data offset / 4 (records are 8-byte aligned)
        self._lens = self._buf[DATA_OFF:DATA_OFF + capacity].cast("I")
        self._make_producer(self._tailv[0], self._headv[0])
        self._make_consumer(self._headv[0], self._tailv[0])

    # The hot paths are closures over local state rather than methods over attributes:
    # a cell variable costs less than an instance attribute in CPython, and this is what
    # an optimising Python programmer would do. The methods below are bound per instance.

    def _make_producer(self, tail: int, head: int) -> None:
        buf, lens, tailv, headv = self._buf, self._lens, self._tailv, self._headv
        cap, mask, maxp, name = self.capacity, self._mask, self.max_payload, self.name

        def try_publish(data) -> bool:
            """Append one record; False if the ring is full (the consumer is behind)."""
            nonlocal tail, head
            n = len(data)
            if n > maxp:
                raise ValueError(f"payload of {n} bytes exceeds the naive ring's maximum "
                                 f"of {maxp}")
            size = (n + 11) & ~7
            off = tail & mask
            pad = cap - off
            if pad >= size:
                pad = 0
            end = tail + pad + size
            if end - head > cap:
                head = headv[0]
                if end - head > cap:
                    return False
            if pad:
                lens[off >> 2] = WRAP
                off = 0
            lens[off >> 2] = n
            start = DATA_OFF + off + 4
            buf[start:start + n] = data
            tail = end
            tailv[0] = end
            return True

        def publish(data, timeout: float = 5.0) -> None:
            """Append one record, busy-waiting up to ``timeout`` seconds for room."""
            if try_publish(data):
                return
            deadline = time.monotonic() + timeout
            while not try_publish(data):
                if time.monotonic() > deadline:
                    raise RingFull(f"naive ring {name!r}: no room for {len(data)} bytes "
                                   f"within {timeout} s; is the consumer alive?")

        self.try_publish = try_publish
        self.publish = publish

    def _make_consumer(self, head: int, tail: int) -> None:
        buf, lens, tailv, headv = self._buf, self._lens, self._tailv, self._headv
        cap, mask, maxp, name = self.capacity, self._mask, self.max_payload, self.name
        published = head

        def read() -> memoryview | None:
            """The next record's payload as a view (valid until the next read), or None."""
            nonlocal head, tail, published
            if head != published:
                # release the previous record to the producer only now: its view was valid
                headv[0] = head
                published = head
            if head == tail:
                tail = tailv[0]
                if head == tail:
                    return None
            off = head & mask
            n = lens[off >> 2]
            if n == WRAP:
                head += cap - off
                off = 0
                n = lens[0]
            if n > maxp or off + 4 + n > cap:
                raise ValueError(f"naive ring {name!r}: corrupt record length {n} at "
                                 f"position {head}")
            start = DATA_OFF + off + 4
            head += (n + 11) & ~7
            return buf[start:start + n]

        self.read = read

    def read_bytes(self) -> bytes | None:
        """Like :meth:`read` but returns a copy."""
        view = self.read()
        return None if view is None else bytes(view)

    # -- lifetime ---------------------------------------------------------------------

    def close(self) -> None:
        """Unmap. Views handed out by :meth:`read` must have been released."""
        for v in (self._tailv, self._headv, self._lens):
            v.release()
        # the closures hold the views too; drop them so the mapping can go
        self.read = self.publish = self.try_publish = None  # type: ignore[assignment]
        self._buf = None  # type: ignore[assignment]
        self._shm.close()

    def unlink(self) -> None:
        self._shm.unlink()

    def __enter__(self) -> NaiveRing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"NaiveRing(name={self.name!r}, capacity={self.capacity})"
