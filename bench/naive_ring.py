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
        # producer-side state: own tail, last seen head
        self._ptail = self._tailv[0]
        self._phead = self._headv[0]
        # consumer-side state: own position, position already published, last seen tail
        self._chead = self._phead
        self._cpub = self._phead
        self._ctail = self._ptail

    # -- producer ---------------------------------------------------------------------

    def try_publish(self, data) -> bool:
        """Append one record; False if the ring is full (the consumer is behind)."""
        n = len(data)
        if n > self.max_payload:
            raise ValueError(f"payload of {n} bytes exceeds the naive ring's maximum of "
                             f"{self.max_payload}")
        tail = self._ptail
        size = (n + 11) & ~7
        off = tail & self._mask
        pad = self.capacity - off
        if pad >= size:
            pad = 0
        end = tail + pad + size
        if end - self._phead > self.capacity:
            self._phead = self._headv[0]
            if end - self._phead > self.capacity:
                return False
        if pad:
            self._lens[off >> 2] = WRAP
            off = 0
        self._lens[off >> 2] = n
        start = DATA_OFF + off + 4
        self._buf[start:start + n] = data
        self._ptail = end
        self._tailv[0] = end
        return True

    def publish(self, data, timeout: float = 5.0) -> None:
        """Append one record, busy-waiting up to ``timeout`` seconds for room."""
        if self.try_publish(data):
            return
        deadline = time.monotonic() + timeout
        while not self.try_publish(data):
            if time.monotonic() > deadline:
                raise RingFull(f"naive ring {self.name!r}: no room for {len(data)} bytes "
                               f"within {timeout} s; is the consumer alive?")

    # -- consumer ---------------------------------------------------------------------

    def read(self) -> memoryview | None:
        """The next record's payload as a view (valid until the next read), or None."""
        head = self._chead
        if head != self._cpub:
            # release the previous record to the producer only now: its view was valid
            self._headv[0] = head
            self._cpub = head
        if head == self._ctail:
            self._ctail = self._tailv[0]
            if head == self._ctail:
                return None
        off = head & self._mask
        n = self._lens[off >> 2]
        if n == WRAP:
            head += self.capacity - off
            off = 0
            n = self._lens[0]
        if n > self.max_payload or off + 4 + n > self.capacity:
            raise ValueError(f"naive ring {self.name!r}: corrupt record length {n} at "
                             f"position {head}")
        start = DATA_OFF + off + 4
        self._chead = head + ((n + 11) & ~7)
        return self._buf[start:start + n]

    def read_bytes(self) -> bytes | None:
        """Like :meth:`read` but returns a copy."""
        view = self.read()
        return None if view is None else bytes(view)

    # -- lifetime ---------------------------------------------------------------------

    def close(self) -> None:
        """Unmap. Views handed out by :meth:`read` must have been released."""
        for v in (self._tailv, self._headv, self._lens):
            v.release()
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
