"""CRC32C in the C core: the checksum of images and of a replica's CRC table.

The same convention as the ``crc32c`` package (``crc32c(b"123456789") == 0xE3069283``,
``crc32c(b, crc32c(a)) == crc32c(a + b)``); the C code (pyshm/_core/crc32c.c) uses the
SSE4.2 instruction when the CPU has it and a portable table otherwise. What it adds:

- :func:`crc32c_combine`: the CRC of ``A + B`` from the CRCs of ``A`` and ``B`` and the
  length of ``B``, without reading either (how a snapshot of a replica builds each image
  chunk's CRC from the engine's block CRCs);
- :func:`crc32c_fold`: the same over many equal-length blocks in one call;
- :func:`copy_crc32c`: copy and checksum in one pass (the CPU engine's loop);
- :func:`copy_blocks_crc32c`: the same per block of a run of equal blocks.
"""

from __future__ import annotations

from typing import Any

from ._ring_c import ffi, lib  # type: ignore[import-not-found,unused-ignore]


def _ptr(obj: Any, writable: bool = False) -> Any:
    return ffi.from_buffer(obj, require_writable=writable)


def crc32c(data: Any, value: int = 0) -> int:
    """CRC32C of ``data`` (any contiguous buffer), continuing from ``value``."""
    view = memoryview(data).cast("B")
    return int(lib.pyshm_crc32c(value & 0xFFFFFFFF, _ptr(view), len(view)))


def crc32c_combine(crc_a: int, crc_b: int, len_b: int) -> int:
    """CRC of ``A + B`` given ``crc32c(A)``, ``crc32c(B)`` and ``len(B)``."""
    if len_b < 0:
        raise ValueError(f"length {len_b} must be >= 0")
    return int(lib.pyshm_crc32c_combine(crc_a & 0xFFFFFFFF, crc_b & 0xFFFFFFFF, len_b))


def crc32c_fold(crc: int, block_crcs: Any, block_len: int) -> int:
    """CRC of a region after one whose CRC is ``crc``, made of consecutive blocks of
    ``block_len`` bytes whose CRCs are ``block_crcs`` (a uint32 buffer)."""
    view = memoryview(block_crcs).cast("B").cast("I")
    if block_len <= 0:
        raise ValueError(f"block length {block_len} must be positive")
    return int(lib.pyshm_crc32c_fold(crc & 0xFFFFFFFF, ffi.cast("uint32_t *", _ptr(view)),
                                     len(view), block_len))


def copy_crc32c(dst: Any, src: Any, value: int = 0, *, nontemporal: bool = False) -> int:
    """``dst[:] = src`` and the CRC32C of the bytes written (continuing ``value``)."""
    d = memoryview(dst).cast("B")
    s = memoryview(src).cast("B")
    if len(d) != len(s):
        raise ValueError(f"destination has {len(d)} bytes, source {len(s)}")
    crc = int(lib.pyshm_crc32c_copy(value & 0xFFFFFFFF, _ptr(d, True), _ptr(s), len(s),
                                    int(nontemporal)))
    if nontemporal:
        lib.pyshm_crc32c_store_fence()
    return crc


def copy_blocks_crc32c(dst: Any, src: Any, block_len: int, *,
                       nontemporal: bool = False) -> Any:
    """``dst[:] = src`` for a whole number of ``block_len``-byte blocks; returns each
    block's CRC32C (of the bytes written) as a uint32 numpy array. The CPU engine's loop
    for a replica's CRC table: several blocks far apart are copied at once."""
    import numpy as np

    d = memoryview(dst).cast("B")
    s = memoryview(src).cast("B")
    if len(d) != len(s):
        raise ValueError(f"destination has {len(d)} bytes, source {len(s)}")
    if block_len <= 0 or len(s) % block_len:
        raise ValueError(f"{len(s)} bytes are not a whole number of {block_len}-byte blocks")
    crcs = np.empty(len(s) // block_len, dtype=np.uint32)
    lib.pyshm_crc32c_copy_blocks(ffi.cast("uint32_t *", ffi.from_buffer(crcs)), _ptr(d, True),
                                 _ptr(s), len(crcs), block_len, int(nontemporal))
    if nontemporal:
        lib.pyshm_crc32c_store_fence()
    return crcs


def hardware() -> bool:
    """Whether the SSE4.2 instruction is in use."""
    return bool(lib.pyshm_crc32c_hardware())
