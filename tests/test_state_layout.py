"""The C state layout (offsetof through cffi) and pyshm.state.layout describe the same
bytes, and the derived geometry agrees."""

from __future__ import annotations

import pytest
from pyshm.state._state_c import ffi, lib

from pyshm.state import layout as SL

EXPECTED = {
    0: SL.OFF_MAGIC, 1: SL.OFF_VERSION, 2: SL.OFF_FLAGS, 3: SL.OFF_ROW_COUNT,
    4: SL.OFF_ITEMSIZE, 5: SL.OFF_DESC_LENGTH, 6: SL.OFF_CHUNK_ROWS, 7: SL.OFF_DESC_CRC,
    8: SL.OFF_CREATED_NS, 9: SL.OFF_CREATOR_PID, 10: SL.OFF_NAME, 11: SL.OFF_HEADER_CRC,
    12: SL.OFF_EPOCH, 13: SL.OFF_APPLIED_SEQ,
    14: SL.OFF_WRITER + SL.W_PID, 15: SL.OFF_WRITER + SL.W_SLOT,
    16: SL.OFF_WRITER + SL.W_RING_ID, 17: SL.OFF_WRITER + SL.W_HEARTBEAT,
    18: SL.OFF_CUT + SL.C_PID, 19: SL.OFF_CUT + SL.C_GEN, 20: SL.OFF_CUT + SL.C_ACTIVE,
    21: SL.OFF_CUT + SL.C_SEQ, 22: SL.OFF_CUT + SL.C_EPOCH, 23: SL.OFF_CUT + SL.C_STARTED,
    24: SL.OFF_HANDOVER + SL.H_STATE, 25: SL.OFF_HANDOVER + SL.H_NEW_PID,
    26: SL.OFF_HANDOVER + SL.H_OLD_PID, 27: SL.OFF_HANDOVER + SL.H_CLAIM,
    28: SL.OFF_HANDOVER + SL.H_FINAL, 29: SL.OFF_HANDOVER + SL.H_NS,
    30: SL.OFF_IDENTITY + SL.I_REGION_ID, 31: SL.OFF_IDENTITY + SL.I_SOURCE_ID,
    32: SL.OFF_IDENTITY + SL.I_SOURCE_SEQ,
    33: SL.HEADER_SIZE, 34: SL.CHUNK_ENTRY, 35: SL.SPAN,
    36: SL.OFF_IDENTITY + SL.I_RETAIN_SEQ, 37: SL.OFF_IDENTITY + SL.I_RETAIN_POS,
    38: SL.OFF_IDENTITY + SL.I_RETAIN_RING,
}


def test_c_offsets_match_python_layout():
    assert {i: lib.pyshm_state_layout_offset(i) for i in EXPECTED} == EXPECTED


def test_offset_table_is_complete():
    assert lib.pyshm_state_layout_offset(len(EXPECTED)) == 2**64 - 1


def test_hot_words_have_their_own_span():
    offs = [SL.OFF_EPOCH, SL.OFF_APPLIED_SEQ, SL.OFF_WRITER, SL.OFF_CUT, SL.OFF_HANDOVER,
            SL.OFF_IDENTITY]
    assert all(b - a == SL.SPAN for a, b in zip(offs, offs[1:], strict=False))
    assert SL.OFF_IDENTITY + SL.SPAN <= SL.OFF_DESC


@pytest.mark.parametrize("rows,itemsize,desc,chunk", [
    (1, 1, 2, 1), (1000, 64, 300, 256), (1 << 20, 64, 4096, 256), (7, 4097, 70000 // 2, 3),
])
def test_c_geometry_matches_python(rows, itemsize, desc, chunk):
    g = SL.check_geometry(rows, itemsize, desc, chunk)
    out = ffi.new("uint64_t[7]")
    assert lib.pyshm_state_geometry(rows, itemsize, desc, chunk, out) == 0
    assert list(out) == [g.off_versions, g.off_chunks, g.off_rows, g.off_shadow_rows,
                         g.off_shadow_versions, g.segment_size, g.chunk_count]
    assert all(x % SL.PAGE == 0 for x in list(out)[:6])


def test_c_refuses_impossible_geometry():
    out = ffi.new("uint64_t[7]")
    for args in [(0, 8, 10, 1), (1, 0, 10, 1), (1, 8, 1, 1), (1, 8, 10, 0),
                 (SL.MAX_ROWS + 1, 8, 10, 1), (1, SL.MAX_ITEMSIZE + 1, 10, 1),
                 (1, 1 << 20, 10, 1025)]:
        assert lib.pyshm_state_geometry(*args, out) == lib.PYSHM_STATE_E_CORRUPT, args


def test_c_constants_match():
    assert lib.PYSHM_CHUNK_COPYING == SL.CHUNK_COPYING
    assert lib.PYSHM_CHUNK_COPIED == SL.CHUNK_COPIED
    assert lib.PYSHM_CHUNK_SAVED == SL.CHUNK_SAVED
    assert lib.PYSHM_STATE_EPOCH_CUT == SL.EPOCH_CUT
    assert lib.PYSHM_STATE_NO_SEQ == SL.NO_SEQUENCE
    assert lib.PYSHM_STATE_PARITY == SL.VERSION_PARITY
    assert lib.PYSHM_STATE_MAX_ROWS == SL.MAX_ROWS
    assert lib.PYSHM_STATE_MAX_ITEMSIZE == SL.MAX_ITEMSIZE
    assert lib.PYSHM_STATE_MAX_DESC == SL.MAX_DESC
    assert lib.PYSHM_STATE_HEADER_SIZE == SL.HEADER_SIZE
    assert lib.PYSHM_STATE_VERSION == SL.LAYOUT_VERSION
