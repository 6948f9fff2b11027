"""The replica CRC table rules of docs/design.md, computed independently with the `crc32c`
package from the replica's bytes: what every engine that keeps the table must produce."""

from __future__ import annotations

import crc32c

from pyshm import layout as L
from pyshm.replica import Replica


def described_blocks(rep: Replica) -> tuple[int, int]:
    """[first, end) positions the table must describe now (engine paused or stopped):
    from max(valid_from, the replica's oldest readable boundary) up to its tail."""
    table = rep.crc_table()
    assert table is not None, "the replica carries no CRC table"
    lo = max(table.valid_from, rep.oldest())
    return lo, max(lo, rep.tail)


def reference_entries(rep: Replica, lo: int, hi: int) -> dict[int, int]:
    """{block number: CRC32C of the replica bytes of that block within [lo, hi)}."""
    table = rep.crc_table()
    assert table is not None
    b = table.block_size
    cap = rep.params.capacity
    data = rep.data
    out = {}
    for start in range(lo, hi, b):
        end = min(start + b, hi)
        off = start & (cap - 1)
        out[start // b] = crc32c.crc32c(bytes(data[off:off + end - start]))
    return out


def assert_table_describes(rep: Replica) -> int:
    """The table agrees with the replica tail and every entry it vouches for is the CRC of
    the replica's bytes. Returns the number of blocks checked."""
    table = rep.crc_table()
    assert table is not None
    assert table.table_tail == rep.tail, "table_tail must equal the replica tail when idle"
    assert table.valid_from % table.block_size == 0
    lo, hi = described_blocks(rep)
    assert lo % table.block_size == 0, "the described window starts on a block boundary"
    want = reference_entries(rep, lo, hi)
    got = {blk: int(table.entries[blk % table.count]) for blk in want}
    bad = {blk: (hex(got[blk]), hex(want[blk])) for blk in want if got[blk] != want[blk]}
    assert not bad, f"blocks with wrong CRCs (got, want): {bad}"
    via_api = table.block_crcs(lo, hi, rep.tail)
    assert via_api is not None and [int(x) for x in via_api] == [want[k] for k in sorted(want)]
    return len(want)


def table_bytes(rep: Replica) -> bytes:
    """The whole table region (header and entries) as it lies in the segment."""
    cap = rep.params.capacity
    at = L.crc_table_offset(cap)
    shift = L.crc_block_shift(cap, rep.params.partition_count)
    return bytes(rep.segment.buf[at:at + L.CRC_HEADER_SIZE + 4 * (cap >> shift)])
