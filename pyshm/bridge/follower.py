"""Follower rings: rings whose records keep the sequence numbers of another ring.

A follower ring (header flag ``FOLLOWER``, ``origin_id`` = the source ring's
``ring_id``) is written by exactly one kind of producer, :class:`FollowerProducer`, which
publishes each record *with a given sequence number*. Ordinary producers are refused, so
the far copy of a ring cannot diverge from its source by a stray ``publish``. Consumers
read a follower like any ring, and :func:`promote` turns it into an ordinary ring (fail
over: a producer then continues at the next sequence).

The sequence rules:

* ``publish_at(s, ...)`` with ``s`` = the next sequence publishes the record;
* ``s`` below it is a redelivery: nothing is written and :data:`DUPLICATE` is returned,
  so a replayed message enters the ring at most once;
* ``s`` above it is a gap, refused with :class:`SequenceGapError`, unless the ring is
  still empty (a follower can start anywhere: a stream may no longer hold the source's
  first records), or the gap is recorded explicitly with :meth:`FollowerProducer.record_gap`.

A gap is recorded as one *gap record* per missing sequence: type :data:`GAP_TYPE` (-2)
and an empty payload. Sequence numbers then stay consecutive, which readers, snapshots
and images rely on, and every lost record is visible to a reader as a record that says
so. Type -2 is therefore reserved in follower rings; a source should not publish it.
"""

from __future__ import annotations

import os
import time
from typing import Any

from .. import layout
from ..errors import InvalidParameterError, ProducerBusyError, PyshmError
from ..ring import FULL, Producer, Ring, pid_alive

__all__ = ["FollowerProducer", "SequenceGapError", "GAP_TYPE", "DUPLICATE", "FULL",
           "promote", "create_follower"]

GAP_TYPE = -2
"""Type of a gap record: the source's record with this sequence number was lost."""

DUPLICATE = -2
"""What ``publish_at`` returns for a sequence the ring already holds (nothing written)."""

_GAP_BATCH = 4096


class SequenceGapError(PyshmError):
    """A record's sequence number is beyond the next one: records are missing."""

    def __init__(self, ring: str, first: int, last: int):
        self.first, self.last = first, last
        super().__init__(f"follower ring {ring!r}: sequences {first}..{last} "
                         f"({last - first + 1} records) are missing before {last + 1}; "
                         f"a gap is refused unless it is recorded explicitly")


def create_follower(name: str | os.PathLike[str], origin_id: int, capacity: int | str,
                    **kw: Any) -> Ring:
    """Create a follower ring of the ring whose identity is ``origin_id``."""
    return Ring(name, create=True, capacity=capacity, follower_of=origin_id, **kw)


class FollowerProducer:
    """The producer of a follower ring: ``publish_at(sequence, data, type)``.

    ``ring`` is an open follower :class:`~pyshm.Ring` (or its name). Like a
    :class:`~pyshm.Producer` it takes the ring's single producer role (a second live
    writer gets :class:`~pyshm.errors.ProducerBusyError`) and, after a crash, continues
    after the last record the ring holds. Not thread-safe: one writer thread.
    """

    def __init__(self, ring: Ring | str | os.PathLike[str]):
        self._own = not isinstance(ring, Ring)
        self.ring: Ring = ring if isinstance(ring, Ring) else Ring(ring)
        try:
            if not self.ring.is_follower:
                raise PyshmError(f"ring {self.ring.name!r} is not a follower ring (create it "
                                 f"with pyshm.bridge.create_follower or `pyshm bridge in`)")
            self._producer = Producer(self.ring, follower=True)
        except BaseException:
            if self._own:
                self.ring.close()
            raise
        self.gap_records = 0

    @property
    def sequence(self) -> int:
        """The sequence number the ring expects next."""
        return self._producer.sequence

    @property
    def empty(self) -> bool:
        """True while the ring has never held a record (a follower may start anywhere)."""
        return self._producer.position == 0

    @property
    def last_sequence(self) -> int | None:
        """Sequence of the last record in the ring, or None if it never held one."""
        return None if self.empty else self._producer.sequence - 1

    def start_at(self, sequence: int) -> None:
        """Make an empty ring start at ``sequence`` (the first record the source still has)."""
        if not self.empty:
            raise PyshmError(f"follower ring {self.ring.name!r} already holds records up to "
                             f"sequence {self.sequence - 1}")
        if sequence != self.sequence:
            self._producer._set_sequence(sequence)

    def publish_at(self, sequence: int, data: Any, type: int = 0,
                   timeout: float = 0.0) -> int:
        """Publish ``data`` as the record with number ``sequence``.

        Returns ``sequence``, :data:`DUPLICATE` (the ring already holds that sequence;
        nothing written) or :data:`FULL` (a lossless ring stayed full for ``timeout``
        seconds; retry). Raises :class:`SequenceGapError` when records are missing
        before ``sequence`` (see :meth:`record_gap`).
        """
        nxt = self._producer.sequence
        if sequence != nxt:
            if sequence < nxt:
                return DUPLICATE
            if not self.empty:
                raise SequenceGapError(self.ring.name, nxt, sequence - 1)
            self._producer._set_sequence(sequence)
        return int(self._producer.publish(data, type, timeout))

    def record_gap(self, first: int, last: int, timeout: float = 0.0) -> int:
        """Record that sequences ``first..last`` were lost upstream: one gap record
        (type :data:`GAP_TYPE`, empty payload) each, from the next sequence on.

        ``first`` must be the next sequence (or, for an empty ring, any). Sequences
        already in the ring are skipped. Returns the next sequence afterwards; it is
        below ``last + 1`` only when a lossless ring stayed full for ``timeout``.
        """
        if last < first:
            raise InvalidParameterError(f"gap {first}..{last} is empty")
        nxt = self._producer.sequence
        if first > nxt:
            if not self.empty:
                raise SequenceGapError(self.ring.name, nxt, first - 1)
            self._producer._set_sequence(first)
        deadline = time.monotonic() + max(timeout, 0.0)
        while self._producer.sequence <= last:
            n = min(last + 1 - self._producer.sequence, _GAP_BATCH)
            left = max(0.0, deadline - time.monotonic())
            done = self._producer.publish_batch([b""] * n, type=GAP_TYPE, timeout=left)
            self.gap_records += done
            if done < n:
                break
        return self._producer.sequence

    def room(self) -> int:
        """Bytes the ring can take now without waiting (as :meth:`Producer.room`)."""
        return self._producer.room()

    def close(self) -> None:
        """Detach the producer (and close the ring when this object opened it)."""
        self._producer.close()
        if self._own:
            self.ring.close()

    def __enter__(self) -> FollowerProducer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<FollowerProducer ring={self.ring.name!r} origin={self.ring.origin_id:016x} "
                f"next_seq={self.sequence}>")


def promote(name: str | os.PathLike[str], *, force: bool = False) -> int:
    """Turn a follower ring into an ordinary ring (fail over); returns its next sequence.

    The ring keeps its records, its identity and ``origin_id`` (which now records where
    it came from); an ordinary producer then continues at the next sequence. Refused
    while a live ``bridge in`` (the follower's producer) still writes it, unless
    ``force`` (the caller makes sure that writer is stopped).
    """
    import struct

    with Ring(name) as ring:
        if not ring.is_follower:
            raise PyshmError(f"ring {ring.name!r} is not a follower ring: nothing to promote")
        pid = ring.producer_pid
        if pid and pid_alive(pid) and not force:
            raise ProducerBusyError(f"follower ring {ring.name!r} is still written by pid "
                                    f"{pid} (its bridge); stop it first, or pass force")
        buf = ring.segment.buf
        try:
            flags = struct.unpack_from("<I", buf, layout.OFF_FLAGS)[0]
            struct.pack_into("<I", buf, layout.OFF_FLAGS, flags & ~layout.FLAG_FOLLOWER)
        finally:
            buf.release()
        return ring.next_sequence
