"""Errors of state regions, recovery and handover (all are :class:`pyshm.PyshmError`)."""

from __future__ import annotations

from ..errors import CorruptSegmentError, InvalidParameterError, PyshmError


class StateBusyError(PyshmError, TimeoutError):
    """A wait on another process ran out of time (a live snapshot, writer or peer)."""


class WriterBusyError(PyshmError):
    """Another live process holds the writer role of the state region."""


class StateInconsistentError(CorruptSegmentError):
    """The region's writer died inside a transaction: rows may hold half of a record.
    Recover it (``pyshm.recover``) before writing or snapshotting it."""


class StateMismatchError(InvalidParameterError):
    """Two state regions or images do not hold the same dtype or number of rows."""


class MissingSequencesError(PyshmError):
    """The ring no longer holds (or never held) records recovery needs.

    ``first`` and ``last`` are the missing sequences (inclusive); ``available`` is the
    oldest sequence the source still holds (None if it holds none)."""

    def __init__(self, message: str, first: int, last: int, available: int | None = None):
        super().__init__(message)
        self.first = first
        self.last = last
        self.available = available


class ApplyError(PyshmError):
    """The user's apply function raised; ``sequence`` names the record."""

    def __init__(self, message: str, sequence: int):
        super().__init__(message)
        self.sequence = sequence


class HandoverError(PyshmError):
    """A handover could not complete; the old process keeps (or takes back) its role."""
