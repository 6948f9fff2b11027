"""The C quiescent walker (``pyshm_walk`` via ``records.walk``) against the reference
Python walker (``records.summarize``): same summary on valid windows, same error (same
message) on damaged ones, and no read outside the buffer it is given."""

from __future__ import annotations

import random
import struct

import pytest

from pyshm import layout
from pyshm.errors import CorruptSegmentError
from pyshm.images.records import UNWRAPPED, summarize, walk

CAP = 1 << 16
PARTS = 8
PSIZE = CAP // PARTS


def _window(seed: int, start: int = 3 * PSIZE + 40, n: int = 400, seq0: int = 1000):
    """An unwrapped window of records starting at ``start``: (buffer, start, end)."""
    rng = random.Random(seed)
    enc = RecordEncoderAt(start, seq0)
    buf = bytearray()
    for _ in range(n):
        for _pos, raw in enc.place(bytes(rng.randrange(256) for _ in range(rng.choice(
                [0, 1, 7, 8, 100, 1000, 2000])))):
            buf += raw + bytes(layout.align8(len(raw)) - len(raw))
    return buf, start, start + len(buf)


def RecordEncoderAt(start: int, seq0: int) -> layout.RecordEncoder:
    return layout.RecordEncoder(CAP, PARTS, position=start, sequence=seq0)


def _both(buf, start, end, max_record=None, base=None):
    mr = max_record or layout.default_max_record(CAP, PARTS)
    base = start if base is None else base
    out = []
    for fn in (summarize, walk):
        try:
            out.append(fn(buf, base, UNWRAPPED, start, end, PSIZE, mr, "w"))
        except CorruptSegmentError as exc:
            out.append(str(exc))
    return out


@pytest.mark.parametrize("seed", range(4))
def test_valid_windows_agree(seed):
    buf, start, end = _window(seed)
    py, c = _both(buf, start, end)
    assert c == py
    assert c.record_count == 400 and c.first_sequence == 1000 and c.last_sequence == 1399
    assert c.padding_bytes > 0  # the window crosses partitions


def test_steps_with_ahead_give_the_same_summary():
    buf, start, end = _window(7)
    seen = []
    s = walk(buf, start, UNWRAPPED, start, end, PSIZE, layout.default_max_record(CAP, PARTS),
             ahead=seen.append, step=4096)
    assert s == summarize(buf, start, UNWRAPPED, start, end, PSIZE,
                          layout.default_max_record(CAP, PARTS))
    assert seen[0] == start and len(seen) > 10 and seen == sorted(seen)


def test_wrapped_ring_data_area():
    # the same records at their ring offsets (base 0, mask capacity - 1), wrapping
    buf, start, end = _window(3, start=CAP - 2 * PSIZE, n=60)
    assert end - start < CAP and start // CAP != (end - 1) // CAP  # it wraps
    ring = bytearray(CAP)
    for i, b in enumerate(buf):
        ring[(start + i) & (CAP - 1)] = b
    mr = layout.default_max_record(CAP, PARTS)
    assert walk(ring, 0, CAP - 1, start, end, PSIZE, mr) == \
        summarize(ring, 0, CAP - 1, start, end, PSIZE, mr)


def _first_record(buf, start):
    pos = start
    while True:
        length, type_ = struct.unpack_from("<ii", buf, pos - start)
        if type_ != layout.PADDING_TYPE:
            return pos - start, length
        pos += length


@pytest.mark.parametrize("damage", ["length_small", "length_big", "length_past_partition",
                                    "sequence_gap", "sequence_repeat", "padding_short",
                                    "truncated_end", "stray"])
def test_damage_gives_the_reference_error(damage):
    buf, start, end = _window(11)
    off, length = _first_record(buf, start)
    # the 5th record after the first: not the first, so sequences have a predecessor
    for _ in range(5):
        off += layout.align8(length)
        length, type_ = struct.unpack_from("<ii", buf, off)
        if type_ == layout.PADDING_TYPE:
            off += length
            length, _ = struct.unpack_from("<ii", buf, off)
    if damage == "length_small":
        struct.pack_into("<i", buf, off, 15)
    elif damage == "length_big":
        struct.pack_into("<i", buf, off, 1 << 30)
    elif damage == "length_past_partition":
        room = PSIZE - ((start + off) & (PSIZE - 1))
        struct.pack_into("<i", buf, off, min(room + 8, layout.default_max_record(CAP, PARTS)))
    elif damage == "sequence_gap":
        seq, = struct.unpack_from("<Q", buf, off + 8)
        struct.pack_into("<Q", buf, off + 8, seq + 2)
    elif damage == "sequence_repeat":
        seq, = struct.unpack_from("<Q", buf, off + 8)
        struct.pack_into("<Q", buf, off + 8, seq - 1)
    elif damage == "padding_short":
        struct.pack_into("<ii", buf, off, 64, layout.PADDING_TYPE)
    elif damage == "truncated_end":
        end = start + off + 8  # the window now ends inside a record
    elif damage == "stray":
        end = start + len(buf) + 4
        buf += bytes(4)
    py, c = _both(buf, start, end)
    assert isinstance(c, str), c
    assert c == py


def test_buffer_shorter_than_the_window_is_refused_not_read():
    buf, start, end = _window(5)
    short = bytes(buf[: len(buf) // 2])
    with pytest.raises(CorruptSegmentError, match="outside the buffer"):
        walk(short, start, UNWRAPPED, start, end, PSIZE, layout.default_max_record(CAP, PARTS))
    # a base above the window start would index before the buffer: refused as well
    with pytest.raises(CorruptSegmentError, match="outside the buffer"):
        walk(buf, start + 8, UNWRAPPED, start, end, PSIZE,
             layout.default_max_record(CAP, PARTS))


def test_bad_window_arguments():
    buf, start, end = _window(2)
    mr = layout.default_max_record(CAP, PARTS)
    with pytest.raises(CorruptSegmentError, match="not a valid range"):
        walk(buf, start, UNWRAPPED, start + 4, end, PSIZE, mr)
    with pytest.raises(CorruptSegmentError, match="not a valid range"):
        walk(buf, start, UNWRAPPED, end, start, PSIZE, mr)
    with pytest.raises(CorruptSegmentError, match="not a valid range"):
        walk(buf, start, UNWRAPPED, start, end, 100, mr)  # partition not a power of two


def test_empty_window():
    s = walk(b"", 0, UNWRAPPED, 64, 64, PSIZE, 1024)
    assert (s.record_count, s.first_sequence, s.last_sequence) == (0, None, None)
