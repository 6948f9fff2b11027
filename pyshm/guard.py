"""Python side of the mapping guard (``pyshm/_core/guard.c``).

Every :class:`~pyshm.segment.Segment` registers its mapping. If the file under it is
truncated while mapped, the first access past the new end raises SIGBUS; the guard's
handler swaps the mapping for poisoned private pages (every later read or publish then
fails as on a corrupt header) and :meth:`Segment.check_intact` turns that into a
:class:`~pyshm.errors.SegmentTruncatedError`. Nothing is added to the publish/read path.
"""

from __future__ import annotations

import mmap
from typing import Any

try:
    from ._guard_c import ffi, lib  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - built at install time
    ffi = lib = None


def register(m: mmap.mmap, readonly: bool, ring: bool = True) -> int:
    """Guard mapping ``m``; returns a handle (-1: not guarded)."""
    if lib is None or len(m) == 0:
        return -1
    p: Any = ffi.from_buffer(m)
    try:
        addr = int(ffi.cast("uintptr_t", p))
    finally:
        ffi.release(p)  # no export left behind: the mmap must stay closable
    prot = mmap.PROT_READ | (0 if readonly else mmap.PROT_WRITE)
    return int(lib.pyshm_guard_register(addr, len(m), prot, int(ring)))


def faulted(handle: int) -> bool:
    """True once the guarded mapping's file was found truncated (SIGBUS caught)."""
    return handle >= 0 and lib is not None and bool(lib.pyshm_guard_faulted(handle))


def unregister(handle: int) -> None:
    if handle >= 0 and lib is not None:
        lib.pyshm_guard_unregister(handle)


def faults() -> int:
    """SIGBUS faults caught in this process so far."""
    return 0 if lib is None else int(lib.pyshm_guard_faults())
