"""Deterministic record payloads shared by the image, snapshot and restore tests."""

from __future__ import annotations

from pyshm.ring import Ring


def payload(seq: int, size: int) -> bytes:
    """The payload of record ``seq``: its sequence number repeated, ``size`` bytes."""
    return (seq.to_bytes(8, "little") * (size // 8 + 1))[:size]


def fill(ring: Ring, n: int, start: int = 0) -> None:
    """Publish records ``start .. start+n-1`` (sizes 0-60, types 0-2), then close."""
    p = ring.producer()
    for s in range(start, start + n):
        p.publish(payload(s, s % 61), type=s % 3)
    p.close()
