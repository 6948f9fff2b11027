"""Numbers for people: sizes, counts, rates and durations as the CLI and the demo print
them. Sizes use binary units (K = 1024), as the command line reads them."""

from __future__ import annotations

_BINARY = (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10))


def size(n: float | None, suffix: str = "") -> str:
    """A byte count in binary units. Without ``suffix`` as the command line takes sizes:
    ``65536`` -> ``"64K"``, ``16781312`` -> ``"16.0M"`` (one decimal unless exact), ``512``
    -> ``"512"``. With ``suffix`` (``"B"``, ``"B/s"``) for reading: ``"12.4 KiB"``,
    ``"896 B"``."""
    if n is None:
        return "-"
    for unit, mult in _BINARY:
        if abs(n) >= mult:
            value = n / mult
            text = f"{value:.0f}" if n % mult == 0 else f"{value:.1f}"
            return f"{text} {unit}i{suffix}" if suffix else f"{text}{unit}"
    number = f"{n:.0f}" if isinstance(n, float) else f"{n}"
    return f"{number} {suffix}" if suffix else number


def count(n: float | None) -> str:
    """Thousands separated: ``1234567`` -> ``"1,234,567"``."""
    if n is None:
        return "-"
    return f"{n:,.0f}"


def rate(n: float | None, unit: str = "/s") -> str:
    """``2_500_000`` -> ``"2.50 M/s"``: decimal multiples for event rates."""
    if n is None:
        return "-"
    for prefix, mult in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= mult:
            return f"{n / mult:.2f} {prefix}{unit}"
    return f"{n:.0f} {unit}"


def duration_ns(ns: float | None) -> str:
    """Nanoseconds in the unit that reads best, three significant digits: ``240 ns``,
    ``12.3 us``, ``267 ms``, ``1.64 s``."""
    if ns is None:
        return "-"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if abs(ns) >= scale:
            return f"{_significant(ns / scale)} {unit}"
    return f"{ns:.0f} ns"


def _significant(value: float) -> str:
    """Three significant digits, no exponent: 1.64, 12.3, 267, 1234."""
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
