"""cocotb testbench of the CRC32C unit alone (hw/rtl/rm_crc32c.v), against the `crc32c`
package: every result must equal crc32c.crc32c(packet bytes, value=seed).

Run through tests/rtl/test_crc32c_rtl.py. The stimulus is random (RTL_SEED) but covers on
every width: each byte count at each lane offset of a single beat, packets of one to
many beats starting and ending at any lane, seeds 0 and random, empty beats inside a
packet and empty packets, idle cycles between beats (the stream the unit observes is
paced by somebody else), back-to-back one-beat packets, and resets with results in flight.
"""

from __future__ import annotations

import os
import random
from collections import deque

import cocotb
import crc32c
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge


def seed() -> int:
    return int(os.environ.get("RTL_SEED", "1"))


class Beat:
    __slots__ = ("data", "strb", "first", "last", "seed", "user")

    def __init__(self, data: int, strb: int, first: bool, last: bool, seed: int, user: int):
        self.data, self.strb, self.first, self.last = data, strb, first, last
        self.seed, self.user = seed, user


class TB:
    def __init__(self, dut):
        self.dut = dut
        self.nbytes = len(dut.s_strb)
        self.user_bits = len(dut.s_user)
        self.rng = random.Random(seed() * 1000 + self.nbytes)
        self.expected: deque[tuple[int, int, str]] = deque()   # (crc, user, what)
        self.got = 0
        self.errors: list[str] = []
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        self._idle()
        cocotb.start_soon(self._monitor())

    def _idle(self) -> None:
        d = self.dut
        d.s_valid.value = 0
        d.s_data.value = 0
        d.s_strb.value = 0
        d.s_first.value = 0
        d.s_last.value = 0
        d.s_seed.value = 0
        d.s_user.value = 0

    async def reset(self) -> None:
        self.dut.rst.value = 1
        self._idle()
        for _ in range(3):
            await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0
        self.expected.clear()

    async def _monitor(self) -> None:
        while True:
            await RisingEdge(self.dut.clk)
            await ReadOnly()
            if self.dut.rst.value == 1:
                continue
            if int(self.dut.m_valid.value):
                crc, user = int(self.dut.m_crc.value), int(self.dut.m_user.value)
                if not self.expected:
                    self.errors.append(f"unexpected result 0x{crc:08x} (user {user})")
                    continue
                want, wuser, what = self.expected.popleft()
                self.got += 1
                if (crc, user) != (want, wuser):
                    self.errors.append(f"{what}: got 0x{crc:08x} user {user}, want "
                                       f"0x{want:08x} user {wuser}")

    def packet(self, payload: bytes, lane: int, crc_seed: int, empties: int = 0
               ) -> list[Beat]:
        """Beats carrying ``payload`` from byte lane ``lane`` of the first beat, with
        ``empties`` beats of no strobe put at random places inside the packet."""
        n = self.nbytes
        user = self.rng.getrandbits(self.user_bits)
        self.expected.append((crc32c.crc32c(payload, value=crc_seed), user,
                              f"{len(payload)} bytes from lane {lane}, seed 0x{crc_seed:x}"))
        beats: list[tuple[int, int]] = []
        pos = 0
        first_lane = lane
        if not payload:
            beats.append((0, 0))
        while pos < len(payload):
            take = min(n - first_lane, len(payload) - pos)
            chunk = payload[pos:pos + take]
            data = int.from_bytes(bytes(first_lane) + chunk + bytes(n - first_lane - take),
                                  "little")
            # bytes outside the strobe are garbage on a real bus: they must not count
            garbage = int.from_bytes(self.rng.randbytes(n), "little")
            strb = ((1 << take) - 1) << first_lane
            mask = int.from_bytes(b"".join(b"\xff" if strb >> i & 1 else b"\x00"
                                           for i in range(n)), "little")
            beats.append((data | (garbage & ~mask), strb))
            pos += take
            first_lane = 0
        for _ in range(empties):
            at = self.rng.randint(1, len(beats))
            beats.insert(at, (int.from_bytes(self.rng.randbytes(n), "little"), 0))
        out = []
        for i, (data, strb) in enumerate(beats):
            out.append(Beat(data, strb, i == 0, i == len(beats) - 1, crc_seed, user))
        return out

    async def drive(self, beats: list[Beat], idle: float = 0.0) -> None:
        d = self.dut
        for b in beats:
            while idle and self.rng.random() < idle:
                self._idle()
                d.s_data.value = self.rng.getrandbits(8 * self.nbytes)  # ignored
                await RisingEdge(d.clk)
            d.s_valid.value = 1
            d.s_data.value = b.data
            d.s_strb.value = b.strb
            d.s_first.value = int(b.first)
            d.s_last.value = int(b.last)
            # seed and user are only sampled with first / last: drive noise otherwise
            d.s_seed.value = b.seed if b.first else self.rng.getrandbits(32)
            d.s_user.value = b.user if b.last else self.rng.getrandbits(self.user_bits)
            await RisingEdge(d.clk)
        self._idle()

    async def drain(self) -> None:
        for _ in range(40):
            await RisingEdge(self.dut.clk)
        assert not self.errors, "\n".join(self.errors[:10])
        assert not self.expected, f"{len(self.expected)} results never came"

    def random_seed(self) -> int:
        return self.rng.choice([0, 0xFFFFFFFF, self.rng.getrandbits(32)])


@cocotb.test()
async def test_every_count_and_lane(dut):
    """Single-beat packets: every byte count at every lane offset, seeds 0 and random,
    plus empty packets (the result is the seed), back to back."""
    tb = TB(dut)
    await tb.reset()
    n = tb.nbytes
    beats: list[Beat] = []
    for lane in range(n + 1):
        for count in range(0 if lane == n else 1, n - lane + 1):
            for s in (0, tb.rng.getrandbits(32)):
                beats += tb.packet(tb.rng.randbytes(count), lane, s)
    await tb.drive(beats)
    await tb.drain()
    assert tb.got == len(beats)


@cocotb.test()
async def test_random_packets_with_gaps(dut):
    """Packets of 1 byte to 8 beats and more, starting at any lane and ending at any lane,
    random seeds, empty beats inside, idle cycles between beats and none at all."""
    tb = TB(dut)
    await tb.reset()
    n = tb.nbytes
    total = 0
    for idle in (0.0, 0.3, 0.7):
        beats: list[Beat] = []
        for _ in range(60):
            length = tb.rng.choice([1, 2, 3, 4, 5, 7, 8, n - 1, n, n + 1, 2 * n,
                                    tb.rng.randint(1, 9 * n)])
            lane = tb.rng.randrange(n)
            empties = tb.rng.choice([0, 0, 0, 1, 2])
            beats += tb.packet(tb.rng.randbytes(length), lane, tb.random_seed(), empties)
        total += sum(b.last for b in beats)
        await tb.drive(beats, idle)
    await tb.drain()
    assert tb.got == total


@cocotb.test()
async def test_long_packet_continued(dut):
    """A long stream checksummed as consecutive packets, each continuing the previous
    result (how the IP continues a partial block in the next round) equals one CRC."""
    tb = TB(dut)
    await tb.reset()
    n = tb.nbytes
    data = tb.rng.randbytes(64 * n)
    cuts = sorted(tb.rng.sample(range(8, len(data) - 8, 8), 5))
    prev, value = 0, 0
    for cut in cuts + [len(data)]:
        piece = data[prev:cut]
        beats = tb.packet(piece, prev % n, value)
        await tb.drive(beats, 0.2)
        value = crc32c.crc32c(piece, value=value)
        prev = cut
    await tb.drain()
    assert value == crc32c.crc32c(data)


@cocotb.test()
async def test_reset_drops_results_in_flight(dut):
    """A reset in the middle of packets and with results in the pipeline: nothing from
    before it comes out after it, and the next packets are right."""
    tb = TB(dut)
    await tb.reset()
    n = tb.nbytes
    for _ in range(5):
        beats: list[Beat] = []
        for _ in range(6):
            beats += tb.packet(tb.rng.randbytes(tb.rng.randint(1, 4 * n)),
                               tb.rng.randrange(n), tb.random_seed())
        stop = tb.rng.randint(1, len(beats))
        await tb.drive(beats[:stop])
        for _ in range(tb.rng.randint(0, 4)):
            await RisingEdge(dut.clk)
        await tb.reset()                   # forgets what was expected
        for _ in range(30):
            await RisingEdge(dut.clk)
        assert not tb.errors, "a result from before the reset came out: " + tb.errors[0]
        after = tb.packet(tb.rng.randbytes(3 * n), 1 % n, 0x12345678)
        await tb.drive(after)
        await tb.drain()
