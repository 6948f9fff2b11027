"""The C layout (offsetof through cffi) and pyshm.layout must describe the same bytes."""

from pyshm._ring_c import ffi, lib

from pyshm import layout

# index -> expected value; the indices are those of pyshm_layout_offset() in ring.c
EXPECTED = {
    0: layout.OFF_MAGIC,
    1: layout.OFF_VERSION,
    2: layout.OFF_FLAGS,
    3: layout.OFF_CAPACITY,
    4: layout.OFF_MAX_RECORD,
    5: layout.OFF_PARTITIONS,
    6: layout.OFF_CREATED_NS,
    7: layout.OFF_CREATOR_PID,
    8: layout.OFF_NAME,
    9: layout.OFF_DATA_PHYS,
    10: layout.OFF_PRODUCER_PID,
    11: layout.OFF_TAIL,
    12: layout.OFF_TAIL_INTENT,
    13: layout.OFF_MIRRORED,
    14: layout.OFF_NEXT_SEQUENCE,
    15: layout.OFF_SLOTS,
    16: layout.SLOT_SIZE,
    17: layout.SLOT_OFF_POSITION,
    18: layout.SLOT_OFF_PID,
    19: layout.SLOT_OFF_HEARTBEAT,
    20: layout.SLOT_OFF_FLAGS,
    21: layout.HEADER_SIZE,
    22: layout.RECORD_HEADER,
    23: layout.MAX_CONSUMERS,
    24: layout.NAME_SIZE,
    25: layout.OFF_RING_ID,
    26: layout.OFF_ORIGIN_ID,
    27: layout.OFF_WAKE_SEQ,
    28: layout.OFF_SLEEPERS,
    29: layout.OFF_WAKE_ACK,
    30: layout.OFF_GATE_FLOOR,
    31: layout.OFF_GATE_JOINS,
}


def test_c_offsets_match_python_layout():
    got = {i: lib.pyshm_layout_offset(i) for i in EXPECTED}
    assert got == EXPECTED


def test_offset_table_is_complete():
    # an index past the table answers a sentinel, so a new C field needs a new entry here
    assert lib.pyshm_layout_offset(len(EXPECTED)) == 2**64 - 1


def test_slots_fit_before_data():
    assert layout.OFF_SLOTS + layout.MAX_CONSUMERS * layout.SLOT_SIZE <= layout.OFF_DATA


def test_hot_counters_have_their_own_span():
    offs = [layout.OFF_TAIL, layout.OFF_TAIL_INTENT, layout.OFF_MIRRORED,
            layout.OFF_NEXT_SEQUENCE, layout.OFF_SLOTS]
    assert all(b - a == layout.SPAN for a, b in zip(offs, offs[1:], strict=False))


def test_c_constants_match():
    assert lib.PYSHM_FULL == -1
    assert lib.PYSHM_MIN_PARTITION == layout.MIN_PARTITION


def _c_open_header(capacity: int, partitions: int, max_record: int) -> int:
    """pyshm_producer_open on a header written by hand, bypassing Python's checks."""
    seg = bytearray(layout.segment_size(capacity))
    static = layout.pack_static_header(layout.RingParams(
        capacity=capacity, max_record=max_record, partition_count=partitions))
    seg[:len(static)] = static
    p = ffi.new("pyshm_producer_t *")
    return lib.pyshm_producer_open(p, ffi.from_buffer(seg), len(seg))


def test_c_core_refuses_partitions_python_refuses():
    # The C core validates the shared header itself; its partition rule is the one
    # layout.check_params enforces, so a header Python would refuse never opens in C.
    smallest = layout.MIN_PARTITION
    assert _c_open_header(4096, 4096 // smallest, smallest // 4) == 0
    assert _c_open_header(4096, 8192 // smallest, smallest // 8) == lib.PYSHM_E_CORRUPT
    assert _c_open_header(4096, 64, 16) == lib.PYSHM_E_CORRUPT
