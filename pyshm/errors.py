"""The pyshm exception hierarchy.

C functions return negative error codes; the Python wrappers turn them into these.
Every message names the segment or file and the field that is wrong.
"""

from __future__ import annotations


class PyshmError(Exception):
    """Base class of every error raised by pyshm."""


class RingNotFoundError(PyshmError, FileNotFoundError):
    """The named ring, replica or image does not exist."""


class RingExistsError(PyshmError, FileExistsError):
    """A segment with that name already exists (create=True without exist_ok)."""


class InvalidNameError(PyshmError, ValueError):
    """A ring name that could escape /dev/shm or is otherwise unusable."""


class InvalidParameterError(PyshmError, ValueError):
    """A capacity, record size or other parameter that the layout cannot hold."""


class CorruptSegmentError(PyshmError):
    """The segment is not a pyshm ring, or a length/offset in it is out of bounds."""


class VersionMismatchError(CorruptSegmentError):
    """The segment (or image) was written by another layout version."""


class RecordTooLargeError(PyshmError, ValueError):
    """A record longer than the ring's maximum record length."""


class ClosedError(PyshmError):
    """The ring, consumer or engine was closed."""


class ProducerBusyError(PyshmError):
    """Another live process is attached as this ring's producer."""


class SegmentLockedError(PyshmError):
    """Another live process holds the segment's lock: an engine writing a replica, a
    supervisor managing a ring, or a restore rewriting it. ``pid`` names the holder
    (None when the kernel does not say)."""

    def __init__(self, message: str, pid: int | None = None):
        super().__init__(message)
        self.pid = pid


class FileAccessError(PyshmError, OSError):
    """A file or segment could not be opened, read or written (permission, not a regular
    file, disk full, ...); the message names the path and the OS error."""


class PermissionDeniedError(FileAccessError, PermissionError):
    """The file or segment exists but this user may not open it that way."""


class SegmentTruncatedError(CorruptSegmentError):
    """The segment's file was truncated while this process had it mapped."""


class NoConsumerSlotError(PyshmError):
    """All consumer slots of the ring are taken by live consumers."""


class EngineError(PyshmError):
    """A replication engine failed (fault code in the message)."""


class EngineTimeoutError(EngineError, TimeoutError):
    """An engine did not answer within its timeout."""


class ImageError(PyshmError):
    """An image file is damaged, truncated, or not an image."""


class ImageTruncatedError(ImageError):
    """An image file is shorter (or longer) than its header and trailer say."""


class ImageChecksumError(ImageError):
    """A CRC32C in an image does not match; ``part`` is header/table/trailer/chunk."""

    def __init__(self, message: str, part: str = "", chunk: int | None = None):
        super().__init__(message)
        self.part = part
        self.chunk = chunk


class ImageVersionError(ImageError, VersionMismatchError):
    """The image was written by another image format version."""


class SnapshotError(PyshmError):
    """A snapshot could not capture an intact window (producer too fast, replica live)."""


class ConfigError(PyshmError, ValueError):
    """A configuration file is invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class ConcurrentUseError(PyshmError, RuntimeError):
    """A Producer or Consumer was called from a second thread while a call was running.

    Each is one cursor: give every thread its own consumer, and serialise the calls of
    the single producer (docs/ring.md, "Threads")."""
