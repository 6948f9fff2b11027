"""Argument types for the command line: each refuses a bad value with a message that says
what was expected, in the words of the option (argparse prints ``argument --X: MESSAGE``).

argparse words a ``ValueError`` from a type function as ``invalid <function name> value``,
which tells a user nothing; these raise ``ArgumentTypeError`` instead.
"""

from __future__ import annotations

import argparse


def size(text: str) -> int:
    """A byte count: ``4096``, ``64K``, ``4M``, ``1G``, ``2GiB`` (powers of 1024)."""
    from ..errors import InvalidParameterError
    from ..ring import parse_size
    try:
        value = parse_size(text)
    except InvalidParameterError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size: use a number of bytes with an optional K, M, G or T "
            f"suffix, e.g. 4096, 64K, 16M") from None
    return value


def octal_mode(text: str) -> int:
    """File permissions in octal, e.g. ``600`` or ``0640``."""
    try:
        value = int(text, 8)
    except ValueError:
        value = -1
    if not 0 <= value <= 0o777:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a permission mode: use octal digits, e.g. 600 or 640")
    return value


def count(text: str) -> int:
    """A whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count: use a whole number >= 0")
    return value


def positive_int(text: str) -> int:
    """A whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: use a whole number >= 1")
    return value


def seconds(text: str) -> float:
    """A duration in seconds, > 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: use a number of "
                                         f"seconds > 0, e.g. 0.5 or 10")
    return value


def start(text: str) -> str | int:
    """Where a consumer starts: ``oldest``, ``latest`` or a sequence number."""
    if text in ("oldest", "latest"):
        return text
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"{text!r}: use oldest, latest or a sequence number (a whole number >= 0)")
    return value


def listen(text: str) -> str:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` (the last two listen on 127.0.0.1)."""
    from ..config import split_listen
    try:
        split_listen(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not HOST:PORT: use e.g. 127.0.0.1:9464, 0.0.0.0:9464 or 9464 "
            f"(port 0..65535)") from None
    return text


def record_type(text: str) -> int:
    """A record type: a signed 32-bit number other than -1 (reserved for padding)."""
    try:
        value = int(text, 0)
    except ValueError:
        value = None
    if value is None or not -(1 << 31) <= value < (1 << 31) or value == -1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a record type: use a whole number from -2147483648 to "
            f"2147483647 other than -1 (reserved for padding records)")
    return value
