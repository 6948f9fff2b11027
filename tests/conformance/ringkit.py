"""A minimal pure-Python producer that follows the publish protocol of docs/design.md exactly.

The engine suite drives engines with it so that it depends only on the layout contract
(pyshm.layout), not on one ring implementation: every engine, on any machine, is tested
against the same byte stream. It is also the child-process producer of the crash tests.
"""

from __future__ import annotations

import os
import struct
import sys
import time

from pyshm import layout as L
from pyshm.segment import Segment


def payload_for(seq: int, max_payload: int) -> bytes:
    """Deterministic payload: its sequence number, then a size and pattern derived from it."""
    size = 8 + (seq * 7919) % max(1, max_payload - 8)
    body = bytes((seq + i) & 0xFF for i in range(min(size - 8, 64)))
    body = (body * (size // max(1, len(body)) + 1))[: size - 8] if body else b""
    return seq.to_bytes(8, "little") + body


class PyRing:
    """Creates or attaches a ring segment and publishes into it (single producer)."""

    def __init__(self, name: str, capacity: int = 1 << 16, partitions: int = 8,
                 max_record: int | None = None, lossless: bool = False,
                 create: bool = True):
        if create:
            mr = max_record or L.default_max_record(capacity, partitions)
            params = L.RingParams(capacity=capacity, max_record=mr,
                                  partition_count=partitions,
                                  flags=L.FLAG_LOSSLESS if lossless else 0,
                                  created_ns=time.time_ns(), creator_pid=os.getpid(),
                                  name=os.path.basename(name)).validate()
            self.segment = Segment(name, create=True, size=params.segment_size)
            self.segment.buf[:0x80] = L.pack_static_header(params)
        else:
            self.segment = Segment(name)
        self.params = L.unpack_static_header(self.segment.buf[:0x80], self.segment.name,
                                             self.segment.size)
        self.q = self.segment.buf[:L.HEADER_SIZE].cast("Q")
        self.data = self.segment.buf[L.OFF_DATA: L.OFF_DATA + self.params.capacity]
        self.enc = L.RecordEncoder(self.params.capacity, self.params.partition_count,
                                   self.params.max_record, position=self.tail,
                                   sequence=self.q[L.OFF_NEXT_SEQUENCE // 8])
        self.max_payload = self.params.max_record - L.RECORD_HEADER

    @property
    def tail(self) -> int:
        return int(self.q[L.OFF_TAIL // 8])

    @property
    def tail_intent(self) -> int:
        return int(self.q[L.OFF_TAIL_INTENT // 8])

    @property
    def mirrored(self) -> int:
        return int(self.q[L.OFF_MIRRORED // 8])

    @property
    def flags(self) -> int:
        return struct.unpack_from("<I", self.segment.buf, L.OFF_FLAGS)[0]

    def publish(self, payload: bytes, type_: int = 0, timeout: float = 0.0) -> int:
        """Sequence number, or -1 when a lossless ring is full for ``timeout`` seconds."""
        cap = self.params.capacity
        need = L.align8(L.RECORD_HEADER + len(payload)) + self.params.partition_size
        if self.params.lossless and self.flags & L.FLAG_GATE_ON_MIRROR:
            deadline = time.monotonic() + timeout
            while self.enc.position + need - self.mirrored > cap:
                if time.monotonic() >= deadline:
                    return -1
                time.sleep(0.0002)
        seq = self.enc.sequence
        pieces = self.enc.place(payload, type_)
        end = self.enc.position
        self.q[L.OFF_TAIL_INTENT // 8] = end  # x86: stores stay in program order
        mask = cap - 1
        for pos, raw in pieces:
            off = pos & mask
            self.data[off: off + len(raw)] = raw
        self.q[L.OFF_NEXT_SEQUENCE // 8] = self.enc.sequence
        self.q[L.OFF_TAIL // 8] = end
        return seq

    def data_bytes(self, start: int, end: int) -> bytes:
        """Ring bytes of positions [start, end), unwrapped."""
        mask = self.params.capacity - 1
        out = bytearray()
        while start < end:
            off = start & mask
            n = min(end - start, self.params.capacity - off)
            out += self.data[off: off + n]
            start += n
        return bytes(out)

    def close(self) -> None:
        self.q.release()
        self.data.release()
        self.segment.close()


def unwrap(data, capacity: int, start: int, end: int) -> bytes:
    mask = capacity - 1
    out = bytearray()
    while start < end:
        off = start & mask
        n = min(end - start, capacity - off)
        out += data[off: off + n]
        start += n
    return bytes(out)


def main(argv: list[str]) -> int:
    """Child producer: ``ringkit.py NAME COUNT [TIMEOUT [PACE]]``; COUNT 0 = forever.

    Prints ``ready`` then publishes payload_for(seq) records, sleeping PACE seconds
    between records (0: full speed); in a gated lossless ring a full ring is retried
    until TIMEOUT seconds pass without progress.
    """
    name, count = argv[0], int(argv[1])
    timeout = float(argv[2]) if len(argv) > 2 else 10.0
    pace = float(argv[3]) if len(argv) > 3 else 0.0
    ring = PyRing(name, create=False)
    cap_payload = min(ring.max_payload, 200)
    print("ready", flush=True)
    n = 0
    while count == 0 or n < count:
        seq = ring.enc.sequence
        if ring.publish(payload_for(seq, cap_payload), timeout=timeout) < 0:
            print(f"full at {seq}", flush=True)
            return 3
        n += 1
        if pace:
            time.sleep(pace)
    print(f"done {n}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
