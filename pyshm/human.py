"""Numbers for people: sizes, counts, rates and durations as the CLI and the demo print
them. Sizes use binary units (K = 1024), as the command line reads them."""

from __future__ import annotations

_BINARY = (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10))


def size(n: float | None, suffix: str = "") -> str:
    """``16781312`` -> ``"16.0M"``; exact multiples lose the decimal (``65536`` ->
    ``"64K"``); below 1 KiB the plain number (``"512"``). ``suffix`` is appended
    (``"B"``, ``"B/s"``)."""
    if n is None:
        return "-"
    for unit, mult in _BINARY:
        if abs(n) >= mult:
            value = n / mult
            text = f"{value:.0f}" if n % mult == 0 else f"{value:.1f}"
            return f"{text}{unit}{suffix}"
    return f"{n:.0f}{suffix}" if isinstance(n, float) else f"{n}{suffix}"


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
    """Nanoseconds in the unit that reads best: ``850 ns``, ``12.3 us``, ``4.56 ms``,
    ``1.23 s``."""
    if ns is None:
        return "-"
    if abs(ns) < 1e3:
        return f"{ns:.0f} ns"
    if abs(ns) < 1e6:
        return f"{ns / 1e3:.1f} us"
    if abs(ns) < 1e9:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e9:.2f} s"
