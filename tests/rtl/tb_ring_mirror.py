"""cocotb testbench of the ring-mirror IP (hw/rtl/ring_mirror.v).

Run through tests/rtl/test_rtl.py (pytest + cocotb_tools.runner), not directly. The
simulated memory is one bytearray holding a ring segment and a replica segment laid out
as pyshm lays them out (pyshm.layout); the producer is this testbench writing real records
from pyshm.layout.RecordEncoder with the publish protocol (intent, record, tail).
"""

from __future__ import annotations

import functools
import logging
import os
import random
from collections import deque

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Event
from cocotb.utils import get_sim_time
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam
from cocotbext.axi.constants import AxiResp
from crc32c import crc32c
from pyshm.driver import regmap as R
from pyshm.driver.axi4_checker import Axi4Checker

from pyshm import layout as L

CLK_NS = 10
GUARD = 0xA5
RING_SEG = 0x0000


def cycles_now() -> int:
    return int(get_sim_time("ns")) // CLK_NS


class DelayedAR:
    """Stands in for AxiRamRead's AR sink: holds each request for a memory latency.

    Requests are taken from the bus at once (no back-pressure from the delay), released in
    order after their latency, so several bursts are in flight as with a real DRAM
    controller. Every address is checked against the regions the engine may read, since
    AxiRam would silently wrap an out-of-range one.
    """

    def __init__(self, tb: TB, sink):
        self.tb = tb
        self.sink = sink
        self.queue: deque = deque()
        self.event = Event()
        self.last_release = 0
        cocotb.start_soon(self._pump())

    def clear(self) -> None:
        self.queue.clear()

    async def _pump(self) -> None:
        while True:
            ar = await self.sink.recv()
            addr, beats = int(ar.araddr), int(ar.arlen) + 1
            self.tb.ar_log.append((addr, beats << int(ar.arsize)))
            if self.tb.hang_reads:
                await self.tb.hung.wait()   # the slave answers only once released
            release = max(self.last_release, cycles_now() + self.tb.latency())
            self.last_release = release
            self.queue.append((release, ar))
            self.event.set()

    async def recv(self):
        while not self.queue:
            self.event.clear()
            await self.event.wait()
        release, ar = self.queue.popleft()
        wait = release - cycles_now()
        if wait > 0:
            await ClockCycles(self.tb.dut.aclk, wait)
        return ar


class TB:
    """A ring + replica in simulated memory, the IP, a CPU (AXI4-Lite) and a producer."""

    def __init__(self, dut, capacity: int = 4096, partitions: int = 8, mem_size: int = 0x10000,
                 replica_seg: int = 0x8000, seed: int = 1, crc: bool | None = None,
                 ip_partition: int | None = None):
        self.dut = dut
        self.rng = random.Random(seed)
        self.capacity = capacity
        self.partitions = partitions
        self.psize = capacity // partitions
        self.data_bytes = len(dut.m_axi_wdata) // 8
        self.ring_seg = RING_SEG
        self.replica_seg = replica_seg
        self.mem = bytearray([GUARD]) * mem_size
        self.latency_range = (0, 0)
        self.errors: list[str] = []
        self.ar_log: list[tuple[int, int]] = []
        self.published: list[int] = []
        self.fail_read: tuple[int, int] | None = None
        self.fail_write: tuple[int, int] | None = None
        self.decerr = False

        for bus in ("s_axil", "m_axi"):
            logging.getLogger(f"cocotb.{dut._name}.{bus}").setLevel(logging.ERROR)
        cocotb.start_soon(Clock(dut.aclk, CLK_NS, unit="ns").start())
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.aclk, dut.aresetn,
                                  reset_active_level=False)
        self.ram = AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.aclk, dut.aresetn,
                          reset_active_level=False, size=mem_size, mem=self.mem)
        self.ram.read_if.ar_channel = DelayedAR(self, self.ram.read_if.ar_channel)
        self._wrap_ram()

        self.ring_data = self.ring_seg + L.OFF_DATA
        self.replica_data = self.replica_seg + L.OFF_DATA
        # the replica's CRC table (CRC_CONFIG.ENABLE; RTL_CRC=0 runs a test without it)
        self.crc = os.environ.get("RTL_CRC", "1") != "0" if crc is None else crc
        self.table = self.replica_data + capacity
        # the IP's partition (PARTITION_SIZE) may be smaller than the producer's: smaller
        # CRC blocks than the layout allows the producer (tests of the entry queue)
        self.ip_psize = ip_partition or self.psize
        self.blk_shift = L.crc_block_shift(capacity, capacity // self.ip_psize)
        self.blk = 1 << self.blk_shift
        self.nent = capacity >> self.blk_shift
        self.entries = self.table + L.CRC_HEADER_SIZE
        self.ttail_addr = self.table + L.CRC_OFF_TABLE_TAIL
        self.ttail_writes: list[int] = []
        self.crc_trusted = True     # the table model agrees with the IP's start (see wr64)
        self.crc_checked = 0        # blocks whose entry was checked at a publish
        # the replica's tail intent is read once after each (re)start, then only written
        self.rintent_addr = self.replica_seg + L.OFF_TAIL_INTENT
        self.read_regions = [(self.ring_data, capacity),
                             (self.ring_seg + L.OFF_TAIL, 8),
                             (self.ring_seg + L.OFF_TAIL_INTENT, 8),
                             (self.rintent_addr, 8)]
        self.write_regions = [(self.replica_data, capacity),
                              (self.replica_seg + L.OFF_TAIL, 8),
                              (self.rintent_addr, 8),
                              (self.ring_seg + L.OFF_MIRRORED, 8)]
        if self.crc:
            self.write_regions += [(self.ttail_addr, 8), (self.entries, 4 * self.nent)]
        # every AXI4 transaction of the IP goes through the protocol checker; rtl_test
        # fails the test on any violation
        self.checker = Axi4Checker(dut, dut.aclk, dut.aresetn, "m_axi",
                                   data_bytes=self.data_bytes,
                                   max_burst=int(dut.MAX_BURST_LEN.value),
                                   read_windows=lambda: self.read_regions,
                                   write_windows=lambda: self.write_regions, clk_ns=CLK_NS,
                                   log_path=os.environ.get("RTL_CHECKER_LOG"))
        ACTIVE.append(self)
        self._init_segments()
        self.enc = L.RecordEncoder(capacity, partitions)
        self.tail = 0
        self.intent = 0
        # every byte ever committed, by position: what a replica reader must get
        self.history = bytearray()
        self.hist_base = 0          # position of history[0] (start_at moves it)
        self.hang_reads = False     # swallow read requests: the slave never answers R
        self.hang_writes = False    # hold write requests: the slave never answers B
        self.hung = Event()         # set to release what the hang held
        self.round_tail: int | None = None   # the ring tail the engine's latest poll read
        self.rintent_writes: list[int] = []
        # replica intent raised after data of the same round landed: a torn round that
        # kept its intact partitions (the intent must hide the torn ones before publishing)
        self.round_data = False
        self.after_intent = False   # the last control read was the ring's tail intent
        self.late_rintent_writes = 0

    # ------------------------------------------------------------------ memory model
    def _init_segments(self) -> None:
        params = L.RingParams(capacity=self.capacity,
                              max_record=L.default_max_record(self.capacity, self.partitions),
                              partition_count=self.partitions)
        hdr = L.pack_static_header(params)
        self.mem[self.ring_seg:self.ring_seg + 0x80] = hdr
        for off in (L.OFF_TAIL, L.OFF_TAIL_INTENT, L.OFF_MIRRORED):
            self.put64(self.ring_seg + off, 0)
        self.mem[self.ring_data:self.ring_data + self.capacity] = bytes(self.capacity)
        # the replica keeps the guard pattern everywhere except its tail and intent words
        self.put64(self.replica_seg + L.OFF_TAIL, 0)
        self.put64(self.replica_seg + L.OFF_TAIL_INTENT, 0)
        if self.crc:
            head = L.pack_crc_header(self.capacity, self.blk_shift)
            self.mem[self.table:self.table + len(head)] = head

    def put64(self, addr: int, value: int) -> None:
        self.mem[addr:addr + 8] = value.to_bytes(8, "little")

    def get64(self, addr: int) -> int:
        return int.from_bytes(self.mem[addr:addr + 8], "little")

    def latency(self) -> int:
        lo, hi = self.latency_range
        return self.rng.randint(lo, hi) if hi else 0

    def _wrap_ram(self) -> None:
        rd, wr = self.ram.read_if, self.ram.write_if
        orig_read, orig_write = rd._read, wr._write
        tb = self

        async def read(address, length):
            if tb.fail_read and tb.fail_read[0] <= address < tb.fail_read[0] + tb.fail_read[1]:
                raise OSError("injected read error")
            data = await orig_read(address, length)
            tail_at = tb.ring_seg + L.OFF_TAIL - address
            if 0 <= tail_at < length and not tb.after_intent:
                # a round's poll; the tail read right after the intent (to vet an intent
                # that says the copy was overrun) belongs to the same round
                tb.round_tail = int.from_bytes(data[tail_at:tail_at + 8], "little")
                tb.round_data = False
            if address <= tb.ring_seg + L.OFF_TAIL_INTENT < address + length:
                tb.after_intent = True
            elif 0 <= tail_at < length:
                tb.after_intent = False
            return data

        async def write(address, data):
            if tb.hang_writes:
                await tb.hung.wait()
            if tb.fail_write and tb.fail_write[0] <= address < tb.fail_write[0] + tb.fail_write[1]:
                raise OSError("injected write error")
            if address in (tb.ring_seg + L.OFF_MIRRORED, tb.rintent_addr,
                           tb.replica_seg + L.OFF_TAIL):
                tb.after_intent = False   # publishing: the next tail read is a poll
            if tb.crc and address == tb.ttail_addr:
                tb.ttail_writes.append(int.from_bytes(data, "little"))
            elif tb.crc and address == tb.replica_seg + L.OFF_TAIL:
                value = int.from_bytes(data, "little")
                if not tb.ttail_writes or tb.ttail_writes[-1] != value:
                    tb.errors.append(f"replica tail {value} written before the CRC table's "
                                     f"table_tail (last {tb.ttail_writes[-1:]})")
            if address == tb.ring_seg + L.OFF_MIRRORED:
                tb.on_mirrored(int.from_bytes(data, "little"))
            elif address == tb.rintent_addr:
                tb.on_replica_intent(int.from_bytes(data, "little"))
            elif tb.replica_data <= address < tb.replica_data + tb.capacity:
                tb.on_replica_data(address - tb.replica_data, len(data))
            return await orig_write(address, data)

        rd._read = read
        wr._write = write

        # SLVERR answers can be turned into DECERR to test both fault codes
        for chan, field in ((rd.r_channel, "rresp"), (wr.b_channel, "bresp")):
            orig_send = chan.send

            async def send(obj, orig_send=orig_send, field=field):
                if tb.decerr and getattr(obj, field) == AxiResp.SLVERR:
                    setattr(obj, field, AxiResp.DECERR)
                await orig_send(obj)
            chan.send = send

    def on_replica_intent(self, value: int) -> None:
        """The engine raises the replica's tail intent: it only grows, and it never hides
        the newest partition of the round (it may pass the ring's own intent only after a
        catch-up skip, to hide the older partitions the engine did not copy)."""
        old = self.get64(self.rintent_addr)
        if value <= old:
            self.errors.append(f"replica tail intent written {old} -> {value}: must grow")
        end = self.round_tail or 0
        if end and L.oldest_boundary(value, self.capacity, self.psize) > \
                (end - 1) & ~(self.psize - 1):
            self.errors.append(f"replica tail intent {value} hides the newest partition of "
                               f"the round (tail {end})")
        if value > self.intent + self.capacity - self.psize:
            self.errors.append(f"replica tail intent {value} too far beyond the ring's "
                               f"{self.intent}")
        self.rintent_writes.append(value)
        if self.round_data:
            self.late_rintent_writes += 1

    def on_replica_data(self, off: int, nbytes: int) -> None:
        """Replica data bytes land only under a tail intent that already covers them
        (written and acknowledged before the round's first data burst)."""
        end = self.round_tail
        self.round_data = True
        rint = self.get64(self.rintent_addr)
        if end is None:
            self.errors.append("replica data written before any tail poll")
            return
        if rint < end:
            self.errors.append(f"replica data landed with tail intent {rint} below the "
                               f"round's end {end}")
        # position of the highest byte written: the one below `end` at that offset
        last = off + nbytes - 1
        pos = end - 1 - ((end - 1 - last) % self.capacity)
        if pos >= rint:
            self.errors.append(f"replica byte at position {pos} written with tail intent {rint}")

    def on_mirrored(self, value: int) -> None:
        """The engine publishes `mirrored`: check it against what the producer committed."""
        prev = self.published[-1] if self.published else self.start_position
        if value < prev:
            self.errors.append(f"mirrored went backwards: {prev} -> {value}")
        if value > self.tail:
            self.errors.append(f"mirrored {value} ahead of committed tail {self.tail}")
        if self.get64(self.replica_seg + L.OFF_TAIL) != value:
            self.errors.append(f"mirrored {value} published before the replica's tail")
        rint = self.get64(self.rintent_addr)
        if rint < value:
            self.errors.append(f"replica tail {value} published above its tail intent {rint}")
        # a reader of the replica accepts positions from the first partition at or after
        # its tail intent - capacity: each must hold the byte the producer committed there
        # (stale bytes of an older lap or of a discarded round must be below that)
        low = max(self.start_position, L.oldest_boundary(rint, self.capacity, self.psize))
        mask = self.capacity - 1
        for pos in range(low, value, 8):
            off = pos & mask
            if self.mem[self.replica_data + off:self.replica_data + off + 8] != \
                    self.history[pos - self.hist_base:pos - self.hist_base + 8]:
                self.errors.append(f"replica reader would get wrong bytes at position {pos} "
                                   f"(replica tail {value}, intent {rint})")
                break
        # every byte the replica now claims, and the producer has not overwritten since
        # (a reader of the replica starts at the first partition at or after
        # tail - capacity, so bytes below that are never claimed)
        low = max(prev, L.oldest_boundary(self.intent, self.capacity, self.psize),
                  L.oldest_boundary(rint, self.capacity, self.psize))
        for pos in range(low, value, 8):
            off = pos & (self.capacity - 1)
            a = self.mem[self.ring_data + off:self.ring_data + off + 8]
            b = self.mem[self.replica_data + off:self.replica_data + off + 8]
            if a != b:
                self.errors.append(f"replica differs at position {pos} when {value} published")
                break
        if self.crc and self.crc_trusted:
            self.check_crc_table(value, rint)
        self.published.append(value)

    def check_crc_table(self, value: int, rint: int) -> None:
        """At a publish the table describes the replica (docs/design.md, "Replica CRC
        table"): every block from max(valid_from, the replica's oldest boundary) up to the
        tail holds the CRC32C of its replica bytes written so far."""
        valid_from = self.get64(self.table + L.CRC_OFF_VALID_FROM)
        lo = max(valid_from, L.oldest_boundary(rint, self.capacity, self.psize))
        lo = -(-lo // self.blk) * self.blk if lo % self.blk else lo
        for start in range(lo, value, self.blk):
            end = min(start + self.blk, value)
            off = start & (self.capacity - 1)
            want = crc32c(bytes(self.mem[self.replica_data + off:
                                         self.replica_data + off + end - start]))
            at = self.entries + 4 * ((start >> self.blk_shift) % self.nent)
            got = int.from_bytes(self.mem[at:at + 4], "little")
            if got != want:
                self.errors.append(f"CRC table entry of block {start // self.blk} "
                                   f"[{start}, {end}) is 0x{got:08x}, its bytes' CRC is "
                                   f"0x{want:08x} (replica tail {value})")
                break
            self.crc_checked += 1

    # ------------------------------------------------------------------ producer
    start_position = 0

    def publish(self, payload: bytes, type_: int = 1) -> None:
        """One record with the producer's protocol: intent, bytes, then tail."""
        pieces = self.enc.place(payload, type_)
        end = self.enc.position
        self.intent = end
        self.put64(self.ring_seg + L.OFF_TAIL_INTENT, end)
        mask = self.capacity - 1
        for pos, raw in pieces:
            off = pos & mask
            self.mem[self.ring_data + off:self.ring_data + off + len(raw)] = raw
        # what the ring now holds at the committed positions, including the alignment
        # bytes after a record that the producer leaves as they were
        for pos in range(self.hist_base + len(self.history), end):
            self.history.append(self.mem[self.ring_data + (pos & mask)])
        self.tail = end
        self.put64(self.ring_seg + L.OFF_TAIL, end)

    def random_payload(self) -> bytes:
        n = self.rng.choice([0, 1, 7, 8, 24, 40, 64, 100, self.enc.max_record - L.RECORD_HEADER])
        return bytes(self.rng.getrandbits(8) for _ in range(n))

    def start_at(self, position: int) -> None:
        """The producer (and the header) continue from `position` (nothing before it
        exists); MIRRORED must be loaded with it too."""
        self.enc.position = position
        self.tail = self.intent = position
        self.hist_base = position
        self.history = bytearray()
        self.start_position = position
        self.put64(self.ring_seg + L.OFF_TAIL, position)
        self.put64(self.ring_seg + L.OFF_TAIL_INTENT, position)
        self.put64(self.ring_seg + L.OFF_MIRRORED, position)
        self.put64(self.replica_seg + L.OFF_TAIL, position)
        self.put64(self.rintent_addr, position)

    def publish_bytes(self, nbytes: int) -> None:
        goal = self.tail + nbytes
        while self.tail < goal:
            self.publish(self.random_payload())

    # ------------------------------------------------------------------ CPU side
    async def reset(self) -> None:
        self.after_intent = False
        self.dut.aresetn.value = 0
        await ClockCycles(self.dut.aclk, 4)
        self.dut.aresetn.value = 1
        await ClockCycles(self.dut.aclk, 2)

    async def rd(self, offset: int) -> int:
        resp = await self.axil.read(offset, 4)
        assert resp.resp == AxiResp.OKAY, f"read of 0x{offset:02x} answered {resp.resp}"
        return int.from_bytes(resp.data, "little")

    async def wr(self, offset: int, value: int) -> None:
        resp = await self.axil.write(offset, value.to_bytes(4, "little"))
        assert resp.resp == AxiResp.OKAY, f"write of 0x{offset:02x} answered {resp.resp}"

    async def rd64(self, name: str) -> int:
        lo = await self.rd(getattr(R, name + "_LO"))
        hi = await self.rd(getattr(R, name + "_HI"))
        return hi << 32 | lo

    async def wr64(self, name: str, value: int) -> None:
        if name == "MIRRORED" and self.crc:
            await self.crc_start(value)
        await self.wr(getattr(R, name + "_LO"), value & 0xFFFFFFFF)
        await self.wr(getattr(R, name + "_HI"), value >> 32)

    async def crc_start(self, t: int) -> None:
        """What the driver does before loading a start position t: the table describes
        nothing below t's block, the entry of t's block holds the CRC of the replica's
        bytes [block start, t), and CRC_SEED continues it. Only while the IP is stopped;
        otherwise the load may be refused and the model stops checking the table."""
        ctrl = await self.rd(R.CONTROL)
        st = await self.status()
        busy = ctrl & (R.CONTROL_ENABLE_MASK | R.CONTROL_SYNC_MASK | R.CONTROL_SOFT_RESET_MASK)
        if busy or not st & R.STATUS_IDLE_MASK:
            self.crc_trusted = False
            return
        bstart = t - t % self.blk
        off = bstart & (self.capacity - 1)
        seed = crc32c(bytes(self.mem[self.replica_data + off:self.replica_data + off + t - bstart]))
        at = self.entries + 4 * ((t >> self.blk_shift) % self.nent)
        if t > bstart:
            self.mem[at:at + 4] = seed.to_bytes(4, "little")
        self.put64(self.table + L.CRC_OFF_VALID_FROM, bstart)
        self.put64(self.ttail_addr, t)
        await self.wr(R.CRC_SEED, seed)
        self.crc_trusted = True

    async def configure(self, **override) -> None:
        cfg = {
            "RING_DATA_BASE": self.ring_data,
            "RING_CAPACITY": self.capacity,
            "PARTITION_SIZE": self.ip_psize,
            "REPLICA_DATA_BASE": self.replica_data,
            "RING_TAIL_ADDR": self.ring_seg + L.OFF_TAIL,
            "RING_INTENT_ADDR": self.ring_seg + L.OFF_TAIL_INTENT,
            "RING_MIRRORED_ADDR": self.ring_seg + L.OFF_MIRRORED,
            "REPLICA_TAIL_ADDR": self.replica_seg + L.OFF_TAIL,
        }
        cfg.update(override)
        for name, value in cfg.items():
            await self.wr64(name, value)
        await self.wr(R.POLL_INTERVAL, 4)
        await self.wr(R.CRC_CONFIG, R.CRC_CONFIG_ENABLE_MASK if self.crc else 0)
        if self.crc:
            await self.crc_start(await self.rd64("MIRRORED"))

    async def status(self) -> int:
        return await self.rd(R.STATUS)

    async def fault(self) -> int:
        return (await self.status() & R.STATUS_FAULT_MASK) >> R.STATUS_FAULT_SHIFT

    async def wait_mirrored(self, target: int, timeout_cycles: int) -> None:
        deadline = cycles_now() + timeout_cycles
        while self.get64(self.ring_seg + L.OFF_MIRRORED) < target:
            assert cycles_now() < deadline, (
                f"mirrored {self.get64(self.ring_seg + L.OFF_MIRRORED)} did not reach "
                f"{target} in {timeout_cycles} cycles (fault {await self.fault()})")
            await ClockCycles(self.dut.aclk, 50)
        # the MIRRORED register follows the ring's mirrored word a few cycles later (the
        # round writes it, then BYTES_COPIED, once that word's write is acknowledged)
        mirrored = self.get64(self.ring_seg + L.OFF_MIRRORED)
        deadline = cycles_now() + 100
        while await self.rd64("MIRRORED") < mirrored:
            assert cycles_now() < deadline, "MIRRORED lags the ring's mirrored word"

    async def wait_status(self, mask: int, want: int, timeout_cycles: int) -> int:
        deadline = cycles_now() + timeout_cycles
        while True:
            st = await self.status()
            if st & mask == want:
                return st
            assert cycles_now() < deadline, f"STATUS 0x{st:x} never matched 0x{want:x}/0x{mask:x}"
            await ClockCycles(self.dut.aclk, 20)

    def set_backpressure(self, on: bool) -> None:
        """Random idle cycles on R and B, random not-ready cycles on AW, W (and AR via latency)."""
        ri, wi = self.ram.read_if, self.ram.write_if
        chans = [ri.r_channel, wi.b_channel, wi.w_channel]
        for ch in chans:
            if on:
                rng = random.Random(self.rng.getrandbits(32))
                ch.set_pause_generator(iter(lambda rng=rng: rng.random() < 0.3, None))
            else:
                ch.clear_pause_generator()

    def assert_replica_matches(self) -> None:
        """The replica holds exactly the ring's intact window, with the same records."""
        tail = self.tail
        start = L.oldest_boundary(self.intent, self.capacity, self.psize)
        mask = self.capacity - 1
        ring = bytes(self.mem[self.ring_data:self.ring_data + self.capacity])
        rep = bytes(self.mem[self.replica_data:self.replica_data + self.capacity])
        for pos in range(start, tail, 8):
            off = pos & mask
            assert ring[off:off + 8] == rep[off:off + 8], f"replica differs at position {pos}"
        mr = L.default_max_record(self.capacity, self.partitions)
        got = list(L.walk_records(rep, self.capacity, self.psize, mr, start, tail, "replica"))
        want = list(L.walk_records(ring, self.capacity, self.psize, mr, start, tail, "ring"))
        assert got == want and got, "replica records differ from the ring's"
        assert self.get64(self.replica_seg + L.OFF_TAIL) == tail
        assert self.get64(self.ring_seg + L.OFF_MIRRORED) == tail

    def assert_guards(self) -> None:
        """Nothing outside the replica data and its tail and tail-intent words was written."""
        rs = self.replica_seg
        hdr = self.mem[rs:rs + L.OFF_DATA]
        for i, b in enumerate(hdr):
            if b != GUARD and not (L.OFF_TAIL <= i < L.OFF_TAIL + 8
                                   or L.OFF_TAIL_INTENT <= i < L.OFF_TAIL_INTENT + 8):
                raise AssertionError(f"replica header byte 0x{i:x} overwritten")
        end = self.replica_data + self.capacity
        if self.crc:
            # the CRC table: the IP writes its entries and table_tail, nothing else
            head = L.pack_crc_header(self.capacity, self.blk_shift)
            t = self.table
            assert self.mem[t:t + L.CRC_OFF_VALID_FROM] == head[:L.CRC_OFF_VALID_FROM], \
                "CRC table header overwritten"
            assert self.mem[t + 0x20:t + L.CRC_HEADER_SIZE] == bytes(L.CRC_HEADER_SIZE - 0x20), \
                "CRC table reserved bytes overwritten"
            end = self.entries + 4 * self.nent
        assert all(b == GUARD for b in self.mem[end:]), "bytes after the replica overwritten"
        mid = self.mem[self.ring_data + self.capacity:rs]
        assert all(b == GUARD for b in mid), "bytes between ring and replica overwritten"

    def assert_no_errors(self) -> None:
        assert not self.errors, "\n".join(self.errors[:10])
        self.checker.assert_clean()

    async def stop_and_check(self) -> None:
        """Disable mirroring, wait for IDLE, then: the replica matches the ring, no guard
        byte was written, no bus or protocol error was seen."""
        await self.wr(R.CONTROL, 0)
        await self.wait_status(R.STATUS_IDLE_MASK, R.STATUS_IDLE_MASK, 5000)
        self.assert_replica_matches()
        self.assert_guards()
        self.assert_no_errors()


def seed() -> int:
    return int(os.environ.get("RTL_SEED", "1"))


# the testbenches of the running test: rtl_test checks their protocol checkers at the end
ACTIVE: list[TB] = []


def rtl_test(fn):
    """cocotb.test that also fails on any AXI4 protocol violation the checker recorded,
    whatever the test body asserted itself."""
    @functools.wraps(fn)
    async def wrapper(dut):
        ACTIVE.clear()
        await fn(dut)
        for tb in ACTIVE:
            tb.checker.assert_clean()
    return cocotb.test()(wrapper)


# ---------------------------------------------------------------------- tests
@rtl_test
async def test_register_reset_values(dut):
    """Every register reads its reset value from the map; unmapped offsets answer SLVERR."""
    tb = TB(dut, seed=seed())
    await tb.reset()
    hw_config = (int(dut.MAX_OUTSTANDING.value) << 24 | (int(dut.MAX_BURST_LEN.value) - 1) << 16
                 | int(dut.ADDR_WIDTH.value) << 8 | int(dut.DATA_WIDTH.value) // 8)
    depends = {"HW_CONFIG": hw_config,
               "CAPABILITIES": int(dut.CRC_TABLE.value) | int(dut.RESTORE.value) << 1}
    mapped = set()
    for name, (off, width, _access, reset, _latch) in R.REGISTERS.items():
        want = depends[name] if reset is None else reset
        if width == 64:
            got = await tb.rd(off) | await tb.rd(off + 4) << 32
            mapped |= {off, off + 4}
        else:
            got = await tb.rd(off)
            mapped.add(off)
        assert got == want, f"{name}: reset value 0x{got:x}, map says 0x{want:x}"
    assert await tb.rd(R.ID) == R.IP_ID
    for off in range(0, R.ADDR_RANGE, 4):
        if off in mapped:
            continue
        resp = await tb.axil.read(off, 4)
        assert resp.resp == AxiResp.SLVERR and bytes(resp.data) == bytes(4), hex(off)
        wresp = await tb.axil.write(off, b"\xff\xff\xff\xff")
        assert wresp.resp == AxiResp.SLVERR, hex(off)
    # a read-only register ignores writes; read-write ones keep them, byte enables honoured
    await tb.wr(R.ID, 0)
    assert await tb.rd(R.ID) == R.IP_ID
    await tb.wr(R.RING_CAPACITY_LO, 0x12345678)
    await tb.axil.write(R.RING_CAPACITY_LO + 1, b"\xab")
    assert await tb.rd(R.RING_CAPACITY_LO) == 0x1234AB78


async def mirror_while_publishing(dut, latency, backpressure, rounds=40):
    tb = TB(dut, capacity=8192, seed=seed())
    tb.latency_range = latency
    await tb.reset()
    tb.set_backpressure(backpressure)
    await tb.configure()
    await tb.wr(R.IRQ_PROGRESS, 4096)
    await tb.wr(R.CONTROL, R.CONTROL_ENABLE_MASK | R.CONTROL_IRQ_ENABLE_MASK)
    done = 0
    while done < rounds or tb.tail <= 2 * tb.capacity + 512:
        done += 1
        # bounded bursts of records, paced so that the engine is never lapped (no overrun
        # expected here, whatever the engine's speed under this back-pressure)
        while tb.tail - tb.get64(tb.ring_seg + L.OFF_MIRRORED) > tb.capacity // 2:
            await ClockCycles(dut.aclk, 20)
        for _ in range(tb.rng.randint(1, 12)):
            tb.publish(tb.random_payload())
        await ClockCycles(dut.aclk, tb.rng.randint(20, 200))
    await tb.wait_mirrored(tb.tail, 20000)
    st = await tb.status()
    assert st & R.STATUS_ERROR_MASK == 0 and st & R.STATUS_OVERRUN_MASK == 0, hex(st)
    assert await tb.rd64("OVERRUNS") == 0
    assert await tb.rd64("MIRRORED") == tb.tail
    assert await tb.rd64("TAIL_SEEN") == tb.tail
    assert await tb.rd64("BYTES_COPIED") == tb.tail
    assert await tb.rd64("BURSTS") >= tb.tail // (tb.data_bytes * int(dut.MAX_BURST_LEN.value))
    assert tb.tail > 2 * tb.capacity, "the test must wrap the ring"
    assert len(tb.published) > 5
    # progress interrupts were raised (more than IRQ_PROGRESS bytes were published)
    assert await tb.rd(R.IRQ_STATUS) & R.IRQ_STATUS_PROGRESS_MASK
    assert dut.irq.value == 1
    await tb.wr(R.IRQ_STATUS, R.IRQ_STATUS_PROGRESS_MASK)
    assert dut.irq.value == 0 or await tb.rd(R.IRQ_STATUS)  # a new one may be pending
    await tb.stop_and_check()


@rtl_test
async def test_mirror_no_latency(dut):
    """Continuous mirroring of real records while publishing, ideal memory."""
    await mirror_while_publishing(dut, (0, 0), False)


@rtl_test
async def test_mirror_latency_backpressure(dut):
    """Same with 20-50 cycle read latency, idle cycles on R/B and back-pressure on W."""
    await mirror_while_publishing(dut, (20, 50), True)


@rtl_test
async def test_sync_one_shot_and_start_position(dut):
    """SYNC copies once with ENABLE off; MIRRORED sets where copying starts."""
    tb = TB(dut, seed=seed())
    await tb.reset()
    await tb.configure()
    tb.publish_bytes(1000)
    first = tb.tail
    await tb.wr(R.CONTROL, R.CONTROL_SYNC_MASK)
    deadline = cycles_now() + 5000
    while await tb.rd(R.CONTROL) & R.CONTROL_SYNC_MASK:
        assert cycles_now() < deadline, "SYNC never completed"
    assert tb.get64(tb.ring_seg + L.OFF_MIRRORED) == first
    tb.publish_bytes(500)
    await ClockCycles(dut.aclk, 500)
    assert tb.get64(tb.ring_seg + L.OFF_MIRRORED) == first, "copied without ENABLE or SYNC"
    # restart position: software says everything up to tail is mirrored already
    tb.start_position = tb.tail
    tb.published.clear()
    await tb.wr64("MIRRORED", tb.tail)
    assert await tb.rd64("MIRRORED") == tb.tail
    skipped = tb.tail
    tb.publish_bytes(300)
    await tb.wr(R.CONTROL, R.CONTROL_ENABLE_MASK)
    await tb.wait_mirrored(tb.tail, 5000)
    assert await tb.rd64("BYTES_COPIED") == first + (tb.tail - skipped)
    tb.assert_no_errors()


@rtl_test
async def test_overrun_detected_and_recovered(dut):
    """The producer laps the engine before and during a copy: counted, no torn publish."""
    tb = TB(dut, capacity=4096, seed=seed())
    tb.latency_range = (40, 50)
    await tb.reset()
    await tb.configure()
    await tb.wr(R.CONTROL, R.CONTROL_IRQ_ENABLE_MASK)
    # lapped before the engine starts: it must skip to the oldest intact partition
    tb.publish_bytes(3 * tb.capacity + 200)
    await tb.wr(R.CONTROL, R.CONTROL_ENABLE_MASK | R.CONTROL_IRQ_ENABLE_MASK)
    await tb.wait_mirrored(tb.tail, 10000)
    assert await tb.rd64("OVERRUNS") >= 1
    assert tb.published[-1] == tb.tail
    before = await tb.rd64("OVERRUNS")
    bursts = await tb.rd64("BURSTS")
    # lapped during a copy: publish a large backlog, then a full lap while it is read
    tb.publish_bytes(tb.capacity - 600)
    deadline = cycles_now() + 2000
    while await tb.rd64("BURSTS") < bursts + 2:
        assert cycles_now() < deadline, "the engine did not start copying the backlog"
    tb.publish_bytes(tb.capacity + 512)
    await tb.wait_mirrored(tb.tail, 20000)
    assert await tb.rd64("OVERRUNS") > before
    st = await tb.status()
    assert st & R.STATUS_OVERRUN_MASK and not st & R.STATUS_ERROR_MASK, hex(st)
    assert await tb.rd(R.IRQ_STATUS) & R.IRQ_STATUS_OVERRUN_MASK
    assert dut.irq.value == 1
    await tb.wr(R.STATUS, R.STATUS_OVERRUN_MASK)
    assert not await tb.status() & R.STATUS_OVERRUN_MASK
    await tb.wr(R.CONTROL, 0)
    tb.assert_replica_matches()
    tb.assert_guards()
    tb.assert_no_errors()


async def expect_fault(tb: TB, code: int) -> None:
    st = await tb.wait_status(R.STATUS_ERROR_MASK, R.STATUS_ERROR_MASK, 5000)
    got = (st & R.STATUS_FAULT_MASK) >> R.STATUS_FAULT_SHIFT
    assert got == code, f"fault {R.FAULT_NAMES.get(got, got)}, expected {R.FAULT_NAMES[code]}"
    assert not st & R.STATUS_BUSY_MASK
    assert await tb.rd(R.IRQ_STATUS) & R.IRQ_STATUS_FAULT_MASK
    # stopped cleanly: no further read requests
    n = len(tb.ar_log)
    await ClockCycles(tb.dut.aclk, 200)
    assert len(tb.ar_log) == n, "the engine kept reading after a fault"
    # soft reset clears the fault
    await tb.wr(R.CONTROL, R.CONTROL_SOFT_RESET_MASK)
    await tb.wait_status(R.STATUS_ERROR_MASK | R.STATUS_IDLE_MASK, R.STATUS_IDLE_MASK, 500)
    assert await tb.rd(R.IRQ_STATUS) == 0
    assert await tb.rd(R.CONTROL) & R.CONTROL_SOFT_RESET_MASK == 0


@rtl_test
async def test_fault_codes(dut):
    """Bus errors and bad configuration stop the engine with the numbered fault code."""
    tb = TB(dut, seed=seed())
    await tb.reset()
    on = R.CONTROL_ENABLE_MASK
    cases = [
        ({"RING_CAPACITY": 3000}, None, R.FAULT_BAD_CAPACITY),
        ({"PARTITION_SIZE": 48}, None, R.FAULT_BAD_PARTITION),
        ({"REPLICA_DATA_BASE": tb.replica_data + 8}, None, R.FAULT_BAD_ALIGNMENT),
        ({"RING_TAIL_ADDR": 1 << 45}, None, R.FAULT_ADDR_RANGE),
        ({}, "read", R.FAULT_READ_SLVERR),
        ({}, "read-decerr", R.FAULT_READ_DECERR),
        ({}, "write", R.FAULT_WRITE_SLVERR),
        ({}, "write-decerr", R.FAULT_WRITE_DECERR),
        ({}, "bad-tail", R.FAULT_BAD_TAIL),
        ({}, "bad-intent", R.FAULT_BAD_INTENT),
    ]
    for override, inject, code in cases:
        tb.fail_read = tb.fail_write = None
        tb.decerr = inject is not None and inject.endswith("decerr")
        tb.errors.clear()
        # out-of-range configuration makes no bus access, so the region checks stay valid
        await tb.configure(**override)
        tb.publish_bytes(600)
        if inject and inject.startswith("read"):
            tb.fail_read = (tb.ring_data, tb.capacity)
        elif inject and inject.startswith("write"):
            tb.fail_write = (tb.replica_data, tb.capacity)
        elif inject == "bad-tail":
            tb.put64(tb.ring_seg + L.OFF_TAIL, tb.tail + 3)
        elif inject == "bad-intent":
            tb.put64(tb.ring_seg + L.OFF_TAIL_INTENT, tb.tail - 8)
        await tb.wr(R.CONTROL, on)
        await expect_fault(tb, code)
        await tb.wr(R.CONTROL, 0)
        tb.put64(tb.ring_seg + L.OFF_TAIL, tb.tail)
        tb.put64(tb.ring_seg + L.OFF_TAIL_INTENT, tb.intent)
        tb.start_position = 0
        tb.published.clear()
        if inject in ("write", "write-decerr"):
            # after a write error the remaining beats went out with no byte enabled
            assert tb.get64(tb.ring_seg + L.OFF_MIRRORED) <= tb.tail
        tb.assert_no_errors()
    tb.fail_read = tb.fail_write = None
    tb.decerr = False
    await tb.configure()
    await tb.wr(R.CONTROL, on)
    await tb.wait_mirrored(tb.tail, 20000)
    tb.assert_no_errors()


@rtl_test
async def test_throughput(dut):
    """A 64 KiB copy with 30-cycle read latency and no back-pressure, for
    bench/rtl_throughput.py, which holds the >= 0.9 beats/cycle target (not a suite case:
    no speed assertions in tests)."""
    cap = int(os.environ.get("RTL_THROUGHPUT_BYTES", 65536))
    tb = TB(dut, capacity=cap, mem_size=4 * (cap + 0x1000), replica_seg=2 * (cap + 0x1000),
            seed=seed())
    tb.latency_range = (30, 30)
    await tb.reset()
    await tb.configure()
    while tb.tail + tb.enc.max_record * 2 < cap:
        tb.publish(bytes(tb.enc.max_record - L.RECORD_HEADER))
    start = cycles_now()
    await tb.wr(R.CONTROL, R.CONTROL_SYNC_MASK)
    while tb.get64(tb.ring_seg + L.OFF_MIRRORED) < tb.tail:
        await ClockCycles(dut.aclk, 16)
    elapsed = cycles_now() - start
    busy = await tb.rd64("BUSY_CYCLES")
    beats = await tb.rd64("BYTES_COPIED") // tb.data_bytes
    assert await tb.rd64("OVERRUNS") == 0
    ratio = beats / busy
    dut._log.info("copied %d bytes = %d beats in %d busy cycles (%d wall cycles): "
                  "%.3f beats/cycle", tb.tail, beats, busy, elapsed, ratio)
    out = os.environ.get("RTL_THROUGHPUT_OUT")
    if out:
        with open(out, "w") as f:
            f.write(f"{tb.tail} {beats} {busy} {ratio:.4f}\n")
    tb.assert_no_errors()


@rtl_test
async def test_fast_producer_laps_every_copy(dut):
    """A producer faster than the copy laps the engine mid-copy round after round.

    The engine keeps the partitions still intact when a round ends (publishing them under
    a replica tail intent that hides the torn ones) and restarts at the oldest intact
    partition only when nothing is left, so `mirrored` keeps moving; overruns and bytes
    lost are counted. Every publish is checked by on_mirrored: each byte a replica reader
    would accept equals what the producer committed there.
    """
    tb = TB(dut, capacity=4096, partitions=8, seed=seed())
    tb.latency_range = (20, 40)
    await tb.reset()
    tb.set_backpressure(True)
    await tb.configure()
    await tb.wr(R.CONTROL, R.CONTROL_ENABLE_MASK)
    # the copy moves at most DATA_BYTES per cycle; the producer writes several times that
    # in bursts, with pauses of varying length so that some rounds are torn only in part
    end = cycles_now() + 16000
    while cycles_now() < end:
        # phases of 1000 cycles at 0.5 to 3 bus words per cycle, record by record
        rate = tb.rng.choice([0.5, 1, 2, 3]) * tb.data_bytes
        phase_end = cycles_now() + 1000
        debt = 0.0
        while cycles_now() < phase_end:
            before = tb.tail
            tb.publish(tb.random_payload())
            debt += (tb.tail - before) / rate
            if debt >= 1:
                await ClockCycles(dut.aclk, int(debt))
                debt -= int(debt)
    await tb.wait_mirrored(tb.tail, 20000)
    overruns, lost = await tb.rd64("OVERRUNS"), await tb.rd64("BYTES_LOST")
    copied, mirrored = await tb.rd64("BYTES_COPIED"), await tb.rd64("MIRRORED")
    dut._log.info("published %d times, %d overruns, %d of %d bytes lost, %d kept partial "
                  "rounds", len(tb.published), overruns, lost, mirrored, tb.late_rintent_writes)
    assert mirrored == tb.tail
    assert tb.tail > 20 * tb.capacity, "the producer must lap the ring many times"
    assert len(tb.published) >= 5, f"mirrored moved only {len(tb.published)} times"
    assert overruns >= 5, f"{overruns} overruns"
    assert tb.late_rintent_writes >= 1, "no torn round kept its intact partitions"
    # every position up to mirrored was either published or counted lost, never both
    assert copied + lost == mirrored, (copied, lost, mirrored)
    assert 0 < lost < mirrored
    st = await tb.status()
    assert st & R.STATUS_OVERRUN_MASK and not st & R.STATUS_ERROR_MASK, hex(st)
    await tb.wr(R.CONTROL, 0)
    await tb.wait_status(R.STATUS_IDLE_MASK, R.STATUS_IDLE_MASK, 5000)
    tb.assert_guards()
    tb.assert_no_errors()


@rtl_test
async def test_checker_selftest(dut):
    """Mirroring under back-pressure on every channel (AR and AW ready included), so that
    each protocol rule is exercised. With RTL_EXPECT_VIOLATION set (test_rtl.py runs this
    against deliberately broken copies of the RTL, with RTL_CHECKER_LOG) the violations
    are left in that file for test_rtl.py to judge (the memory model may itself trip over
    the broken bus and end the test early)."""
    expect = os.environ.get("RTL_EXPECT_VIOLATION")
    tb = TB(dut, capacity=8192, seed=seed())
    tb.latency_range = (0, 20)
    await tb.reset()
    tb.set_backpressure(True)
    for sink in (tb.ram.read_if.ar_channel.sink, tb.ram.write_if.aw_channel):
        rng = random.Random(tb.rng.getrandbits(32))
        sink.set_pause_generator(iter(lambda rng=rng: rng.random() < 0.5, None))
    await tb.configure()
    await tb.wr(R.CONTROL, R.CONTROL_ENABLE_MASK)
    for _ in range(12):
        for _ in range(tb.rng.randint(1, 12)):
            tb.publish(tb.random_payload())
        await ClockCycles(dut.aclk, tb.rng.randint(50, 300))
    if expect:
        await ClockCycles(dut.aclk, 2000)
        return
    await tb.wait_mirrored(tb.tail, 20000)
    assert all(tb.checker.counts[c] > 10 for c in ("aw", "w", "b", "ar", "r")), \
        tb.checker.counts
    tb.assert_replica_matches()
    tb.assert_guards()
    tb.assert_no_errors()


# ---------------------------------------------------------------------- defect classes
# Each test below failed on the ring-mirror RTL of map version 1.2 (see the commit that
# added it); they run on every bus width under both simulators.

async def fault_details(tb: TB) -> tuple[int, int, int]:
    """(fault code, FAULT_ADDR, FAULT_POSITION) once STATUS.ERROR is set."""
    st = await tb.wait_status(R.STATUS_ERROR_MASK, R.STATUS_ERROR_MASK, 20000)
    code = (st & R.STATUS_FAULT_MASK) >> R.STATUS_FAULT_SHIFT
    return code, await tb.rd64("FAULT_ADDR"), await tb.rd64("FAULT_POSITION")


async def soft_reset(tb: TB) -> None:
    await tb.wr(R.CONTROL, R.CONTROL_SOFT_RESET_MASK)
    deadline = cycles_now() + 5000
    while await tb.rd(R.CONTROL) & R.CONTROL_SOFT_RESET_MASK:
        assert cycles_now() < deadline, "SOFT_RESET never completed"
    st = await tb.status()
    assert st & R.STATUS_IDLE_MASK and not st & R.STATUS_ERROR_MASK, hex(st)


def fault_name(code: int) -> str:
    return R.FAULT_NAMES.get(code, str(code)).split(":")[0]


@rtl_test
async def test_w_stable_when_fault_hits_stalled_beat(dut):
    """A read error arrives while W beats wait for WREADY: the stalled beat keeps its data,
    strobes and WLAST (the checker), and no byte read at or after the error lands."""
    tb = TB(dut, capacity=8192, seed=seed())
    tb.latency_range = (0, 4)
    await tb.reset()
    rng = random.Random(seed())
    tb.ram.write_if.w_channel.set_pause_generator(iter(lambda: rng.random() < 0.85, None))
    await tb.configure()
    tb.publish_bytes(4000)
    bad = tb.ring_data + 2048          # a beat in the middle of the copy
    tb.fail_read = (bad, tb.data_bytes)
    await tb.wr(R.CONTROL, R.CONTROL_ENABLE_MASK)
    await tb.wait_status(R.STATUS_ERROR_MASK, R.STATUS_ERROR_MASK, 20000)
    tb.checker.assert_clean()
    code, addr, pos = await fault_details(tb)
    assert code == R.FAULT_READ_SLVERR, fault_name(code)
    assert addr == bad and pos == 2048, (hex(addr), pos)
    # every replica byte from the failed beat on still holds the guard pattern
    rep = tb.mem[tb.replica_data + 2048:tb.replica_data + tb.tail]
    assert all(b == GUARD for b in rep), "bytes read at or after the error reached the replica"
    assert tb.get64(tb.ring_seg + L.OFF_MIRRORED) == 0
    tb.assert_no_errors()


@rtl_test
async def test_config_bounds_and_refusals(dut):
    """base + size is checked against ADDR_WIDTH (a replica or ring just below the top of
    the address space wrapped to bus address 0), data areas may not overlap, an area ending
    exactly at 2^ADDR_WIDTH is accepted, and address registers do not move while running."""
    tb = TB(dut, seed=seed())
    await tb.reset()
    top = 1 << int(dut.ADDR_WIDTH.value)
    cases = [
        # 4 KiB below the top with 8 KiB of data: base and size both fit, their sum does not
        ({"REPLICA_DATA_BASE": top - 0x1000, "RING_CAPACITY": 8192}, R.FAULT_ADDR_RANGE),
        ({"RING_DATA_BASE": top - 0x1000, "RING_CAPACITY": 8192}, R.FAULT_ADDR_RANGE),
        ({"REPLICA_TAIL_ADDR": top - 0x40}, R.FAULT_ADDR_RANGE),   # its intent word wraps
        ({"REPLICA_DATA_BASE": tb.ring_data}, R.FAULT_OVERLAP),
        ({"RING_CAPACITY": top}, R.FAULT_BAD_CAPACITY),
    ]
    tb.publish_bytes(300)
    for override, want in cases:
        await tb.configure(**override)
        counts = dict(tb.checker.counts)
        await tb.wr(R.CONTROL, R.CONTROL_ENABLE_MASK)
        code, addr, _pos = await fault_details(tb)
        assert code == want, f"{override}: {fault_name(code)}, expected {fault_name(want)}"
        assert addr == 0
        assert tb.checker.counts == counts, "a refused configuration reached the bus"
        await soft_reset(tb)
        assert not await tb.rd(R.CONTROL) & R.CONTROL_ENABLE_MASK
    # the ring's data area ending exactly at the top is fine (nothing to copy: only the
    # tail word is read)
    tb.put64(tb.ring_seg + L.OFF_TAIL, 0)
    await tb.configure(RING_DATA_BASE=top - tb.capacity)
    await tb.wr(R.CONTROL, R.CONTROL_ENABLE_MASK)
    await ClockCycles(dut.aclk, 300)
    st = await tb.status()
    assert not st & R.STATUS_ERROR_MASK, f"fault {fault_name((st >> 8) & 0xFF)}"
    # address registers refuse writes while the engine may be using them
    await tb.wr64("REPLICA_DATA_BASE", 0x7000)
    st = await tb.status()
    assert st & R.STATUS_CONFIG_REFUSED_MASK
    assert await tb.rd64("REPLICA_DATA_BASE") == tb.replica_data
    await tb.wr(R.STATUS, R.STATUS_CONFIG_REFUSED_MASK)
    assert not await tb.status() & R.STATUS_CONFIG_REFUSED_MASK
    await tb.wr(R.CONTROL, 0)
    await tb.wait_status(R.STATUS_IDLE_MASK, R.STATUS_IDLE_MASK, 2000)
    tb.put64(tb.ring_seg + L.OFF_TAIL, tb.tail)
    await tb.configure()
    assert not await tb.status() & R.STATUS_CONFIG_REFUSED_MASK
    await tb.wr(R.CONTROL, R.CONTROL_ENABLE_MASK)
    await tb.wait_mirrored(tb.tail, 20000)
    tb.assert_replica_matches()
    tb.assert_guards()
    tb.assert_no_errors()


@rtl_test
async def test_hostile_tail_intent(dut):
    """A tail intent far beyond the tail (2^62) is a fault, not a silent stall with a
    nonsense BYTES_LOST; once the header is sane again the IP recovers."""
    tb = TB(dut, seed=seed())
    await tb.reset()
    await tb.configure()
    tb.publish_bytes(1500)
    tb.put64(tb.ring_seg + L.OFF_TAIL_INTENT, 1 << 62)
    await tb.wr(R.CONTROL, R.CONTROL_ENABLE_MASK)
    code, addr, _pos = await fault_details(tb)
    assert code == R.FAULT_INTENT_RANGE, fault_name(code)
    assert addr == tb.ring_seg + L.OFF_TAIL_INTENT
    assert await tb.rd64("BYTES_LOST") == 0
    assert tb.get64(tb.ring_seg + L.OFF_MIRRORED) == 0
    tb.put64(tb.ring_seg + L.OFF_TAIL_INTENT, tb.intent)
    await soft_reset(tb)
    await tb.wr(R.CONTROL, R.CONTROL_ENABLE_MASK)
    tb.publish_bytes(500)
    await tb.wait_mirrored(tb.tail, 20000)
    assert await tb.rd64("BYTES_LOST") == 0
    tb.assert_replica_matches()
    tb.assert_guards()
    tb.assert_no_errors()


@rtl_test
async def test_tail_moving_backwards(dut):
    """A tail below the one seen before, or below MIRRORED as loaded, is a fault."""
    tb = TB(dut, seed=seed())
    await tb.reset()
    await tb.configure()
    tb.publish_bytes(800)
    await tb.wr(R.CONTROL, R.CONTROL_ENABLE_MASK)
    await tb.wait_mirrored(tb.tail, 10000)
    tb.put64(tb.ring_seg + L.OFF_TAIL, tb.tail - 64)
    code, addr, pos = await fault_details(tb)
    assert code == R.FAULT_TAIL_BACKWARDS, fault_name(code)
    assert addr == tb.ring_seg + L.OFF_TAIL and pos == tb.tail
    await soft_reset(tb)
    # replica ahead of the ring (software loads a start beyond its tail)
    tb.put64(tb.ring_seg + L.OFF_TAIL, tb.tail)
    await tb.wr64("MIRRORED", tb.tail + 4096)
    await tb.wr(R.CONTROL, R.CONTROL_SYNC_MASK)
    code, _addr, _pos = await fault_details(tb)
    assert code == R.FAULT_TAIL_BACKWARDS, fault_name(code)
    # SYNC is not left pending by the faulted round
    assert not await tb.rd(R.CONTROL) & R.CONTROL_SYNC_MASK
    tb.assert_no_errors()


@rtl_test
async def test_top_of_position_range(dut):
    """Positions up to 2^64 - 8 copy like any other on every bus width (the 128-bit IP
    used to livelock: its burst end wrapped to 0)."""
    tb = TB(dut, capacity=4096, partitions=1, seed=seed())
    await tb.reset()
    end = (1 << 64) - 8
    rec = 40
    tb.start_at(end - 60 * rec)
    await tb.configure()
    await tb.wr64("MIRRORED", tb.tail)
    for _ in range(60):
        tb.publish(bytes(rec - L.RECORD_HEADER))
    assert tb.tail == end
    await tb.wr(R.CONTROL, R.CONTROL_ENABLE_MASK)
    await tb.wait_mirrored(end, 20000)
    assert await tb.rd64("MIRRORED") == end
    assert tb.get64(tb.replica_seg + L.OFF_TAIL) == end
    assert await tb.rd64("BYTES_COPIED") == 60 * rec
    mask = tb.capacity - 1
    for pos in range(end - 60 * rec, end, 8):
        off = pos & mask
        assert tb.mem[tb.replica_data + off:tb.replica_data + off + 8] == \
            tb.mem[tb.ring_data + off:tb.ring_data + off + 8], f"position {pos}"
    # and then it only polls: no more bursts, no fault
    bursts = await tb.rd64("BURSTS")
    await ClockCycles(dut.aclk, 500)
    assert await tb.rd64("BURSTS") == bursts
    assert not await tb.status() & R.STATUS_ERROR_MASK
    tb.assert_guards()
    tb.assert_no_errors()


@rtl_test
async def test_control_semantics(dut):
    """SOFT_RESET leaves the IP idle until enabled again; a MIRRORED write while running is
    refused with STATUS.LOAD_REFUSED (not silently dropped); SYNC never stays pending
    after a faulted round."""
    tb = TB(dut, seed=seed())
    await tb.reset()
    await tb.configure()
    tb.publish_bytes(600)
    await tb.wr(R.CONTROL, R.CONTROL_ENABLE_MASK)
    await tb.wait_mirrored(tb.tail, 10000)
    await tb.wr64("MIRRORED", 8)
    st = await tb.status()
    assert st & R.STATUS_LOAD_REFUSED_MASK, "a MIRRORED write while enabled was dropped silently"
    assert await tb.rd64("MIRRORED") == tb.tail
    await tb.wr(R.CONTROL, R.CONTROL_ENABLE_MASK | R.CONTROL_SOFT_RESET_MASK)
    deadline = cycles_now() + 5000
    while await tb.rd(R.CONTROL) & R.CONTROL_SOFT_RESET_MASK:
        assert cycles_now() < deadline
    assert await tb.rd(R.CONTROL) & R.CONTROL_ENABLE_MASK == 0
    assert not await tb.status() & R.STATUS_LOAD_REFUSED_MASK
    reads = len(tb.ar_log)
    await ClockCycles(dut.aclk, 500)
    assert len(tb.ar_log) == reads, "the IP kept polling after SOFT_RESET"
    # stopped: the load is applied
    await tb.wr64("MIRRORED", tb.tail)
    assert await tb.rd64("MIRRORED") == tb.tail
    assert not await tb.status() & R.STATUS_LOAD_REFUSED_MASK
    tb.start_position = tb.tail
    tb.published.clear()
    # a SYNC round that faults does not leave SYNC pending (nor restart after SOFT_RESET)
    tb.publish_bytes(300)
    tb.fail_read = (tb.ring_data, tb.capacity)
    await tb.wr(R.CONTROL, R.CONTROL_SYNC_MASK)
    code, _a, _p = await fault_details(tb)
    assert code == R.FAULT_READ_SLVERR, fault_name(code)
    assert not await tb.rd(R.CONTROL) & R.CONTROL_SYNC_MASK, "SYNC pending after a fault"
    await tb.wr(R.CONTROL, R.CONTROL_SYNC_MASK)     # ignored while faulted
    assert not await tb.rd(R.CONTROL) & R.CONTROL_SYNC_MASK
    tb.fail_read = None
    await soft_reset(tb)
    reads = len(tb.ar_log)
    await ClockCycles(dut.aclk, 500)
    assert len(tb.ar_log) == reads, "a stale SYNC ran after SOFT_RESET"
    tb.assert_no_errors()


@rtl_test
async def test_watchdog(dut):
    """A slave that never answers R, then one that never answers B: fault WATCHDOG after
    WATCHDOG cycles, naming the address and position; SOFT_RESET completes only once the
    slave answered what was outstanding."""
    tb = TB(dut, seed=seed())
    await tb.reset()
    await tb.configure()
    assert await tb.rd(R.WATCHDOG) == R.REGISTERS["WATCHDOG"][3]
    await tb.wr(R.WATCHDOG, 300)
    tb.publish_bytes(1000)
    tb.hang_reads = True
    t0 = cycles_now()
    await tb.wr(R.CONTROL, R.CONTROL_ENABLE_MASK)
    code, addr, pos = await fault_details(tb)
    assert code == R.FAULT_WATCHDOG, fault_name(code)
    assert cycles_now() - t0 >= 300
    assert addr == tb.ring_seg + L.OFF_TAIL and pos == 0, (hex(addr), pos)
    await tb.wr(R.CONTROL, R.CONTROL_SOFT_RESET_MASK)
    await ClockCycles(dut.aclk, 200)
    assert await tb.rd(R.CONTROL) & R.CONTROL_SOFT_RESET_MASK, "reset with a read outstanding"
    tb.hang_reads = False
    tb.hung.set()
    await tb.wait_status(R.STATUS_IDLE_MASK | R.STATUS_ERROR_MASK, R.STATUS_IDLE_MASK, 5000)
    tb.hung = Event()
    # now the writes hang (the data write responses never come)
    tb.hang_writes = True
    await tb.wr(R.CONTROL, R.CONTROL_ENABLE_MASK)
    code, addr, pos = await fault_details(tb)
    assert code == R.FAULT_WATCHDOG, fault_name(code)
    assert tb.replica_seg <= addr < tb.replica_data + tb.capacity, hex(addr)
    tb.hang_writes = False
    tb.hung.set()
    await soft_reset(tb)
    await tb.wr(R.WATCHDOG, 0)
    await tb.wr(R.CONTROL, R.CONTROL_ENABLE_MASK)
    await tb.wait_mirrored(tb.tail, 20000)
    tb.assert_replica_matches()
    tb.assert_guards()
    tb.assert_no_errors()


@rtl_test
async def test_reset_during_bursts(dut):
    """aresetn in the middle of bursts, again and again, with latency and back-pressure:
    after each reset software restarts from the replica's tail and the replica ends up
    right (the checker also holds VALID low in reset)."""
    tb = TB(dut, capacity=8192, seed=seed())
    tb.latency_range = (5, 30)
    await tb.reset()
    tb.set_backpressure(True)
    for _ in range(4):
        await tb.configure()
        start = tb.get64(tb.replica_seg + L.OFF_TAIL)
        tb.put64(tb.ring_seg + L.OFF_MIRRORED, start)
        await tb.wr64("MIRRORED", start)
        tb.start_position = start
        tb.published.clear()
        tb.publish_bytes(tb.rng.randint(1500, 3000))
        await tb.wr(R.CONTROL, R.CONTROL_ENABLE_MASK)
        await ClockCycles(dut.aclk, tb.rng.randint(40, 400))
        await tb.reset()
    await tb.configure()
    start = tb.get64(tb.replica_seg + L.OFF_TAIL)
    await tb.wr64("MIRRORED", start)
    tb.start_position = start
    tb.published.clear()
    await tb.wr(R.CONTROL, R.CONTROL_ENABLE_MASK)
    await tb.wait_mirrored(tb.tail, 30000)
    tb.assert_replica_matches()
    tb.assert_guards()
    tb.assert_no_errors()


@rtl_test
async def test_rapid_control_toggling(dut):
    """Random CONTROL writes (ENABLE, SYNC, SOFT_RESET) and MIRRORED writes at random times
    while the producer publishes: never a protocol violation or a wrong publish; afterwards
    a clean restart mirrors everything."""
    tb = TB(dut, capacity=8192, seed=seed())
    tb.latency_range = (0, 20)
    await tb.reset()
    tb.set_backpressure(True)
    await tb.configure()
    for _ in range(60):
        if tb.rng.random() < 0.5:
            tb.publish(tb.random_payload())
        op = tb.rng.choice(["enable", "disable", "sync", "soft", "mirrored", "wait"])
        if op == "enable":
            await tb.wr(R.CONTROL, R.CONTROL_ENABLE_MASK)
        elif op == "disable":
            await tb.wr(R.CONTROL, 0)
        elif op == "sync":
            await tb.wr(R.CONTROL, R.CONTROL_SYNC_MASK)
        elif op == "soft":
            await tb.wr(R.CONTROL, R.CONTROL_SOFT_RESET_MASK)
            tb.start_position = 0
            tb.published.clear()
        elif op == "mirrored":
            # a load is taken only while stopped; either way the IP stays consistent
            await tb.wr64("MIRRORED", tb.get64(tb.replica_seg + L.OFF_TAIL))
        await ClockCycles(dut.aclk, tb.rng.randint(0, 60))
        st = await tb.status()
        assert not st & R.STATUS_ERROR_MASK, f"fault {fault_name((st >> 8) & 0xFF)}"
        tb.published.clear()
        tb.start_position = 0
    await tb.wr(R.CONTROL, 0)
    await tb.wait_status(R.STATUS_IDLE_MASK, R.STATUS_IDLE_MASK, 10000)
    await soft_reset(tb)
    start = tb.get64(tb.replica_seg + L.OFF_TAIL)
    await tb.wr64("MIRRORED", start)
    assert not await tb.status() & R.STATUS_LOAD_REFUSED_MASK
    tb.start_position = start
    await tb.wr(R.CONTROL, R.CONTROL_ENABLE_MASK)
    await tb.wait_mirrored(tb.tail, 30000)
    tb.assert_replica_matches()
    tb.assert_guards()
    tb.assert_no_errors()


@rtl_test
async def test_round_latency(dut):
    """Cycles from a tail change to the replica's tail, ideal memory (no read latency, no
    back-pressure), engine idle and polling every cycle: what the pipeline costs. The
    figure is for bench/rtl_throughput.py (RTL_LATENCY_OUT); the test checks only that
    every round publishes."""
    tb = TB(dut, capacity=8192, seed=seed())
    await tb.reset()
    await tb.configure()
    await tb.wr(R.POLL_INTERVAL, 0)
    await tb.wr(R.CONTROL, R.CONTROL_ENABLE_MASK)
    samples = []
    for i in range(8):
        await ClockCycles(dut.aclk, 200 + 7 * i)   # idle, at a varying poll phase
        t0 = cycles_now()
        tb.publish(bytes(64 * (1 + i % 2)))
        while tb.get64(tb.replica_seg + L.OFF_TAIL) != tb.tail:
            await ClockCycles(dut.aclk, 1)
            assert cycles_now() - t0 < 5000, "a round never published"
        samples.append(cycles_now() - t0)
    samples.sort()
    dut._log.info("tail change -> replica tail: %s cycles", samples)
    out = os.environ.get("RTL_LATENCY_OUT")
    if out:
        with open(out, "w") as f:
            f.write(" ".join(map(str, samples)) + "\n")
    tb.assert_no_errors()


async def mirror_small_blocks(dut, crc: bool) -> TB:
    """64-byte partitions in the IP (the producer keeps 512), so 64-byte CRC blocks: one
    burst completes several blocks, the entry writes queue up and W waits at burst starts.
    Mirrors under back-pressure and read latency (no overrun: the IP's partitions matter
    only to a resynchronisation), then stops the engine."""
    tb = TB(dut, capacity=4096, partitions=8, seed=seed(), crc=crc, ip_partition=64)
    tb.latency_range = (0, 12)
    await tb.reset()
    tb.set_backpressure(True)
    await tb.configure()
    await tb.wr(R.CONTROL, R.CONTROL_ENABLE_MASK)
    for _ in range(30):
        for _ in range(tb.rng.randint(1, 6)):
            tb.publish(tb.random_payload())
        await ClockCycles(dut.aclk, tb.rng.randint(20, 200))
    await tb.wait_mirrored(tb.tail, 40000)
    await tb.stop_and_check()
    return tb


@rtl_test
async def test_crc_table_small_blocks(dut):
    """The table describes the replica at every publish with the smallest blocks; CRC_SEED
    then reads the partial CRC of the tail's block, CRC_BLOCKS the blocks completed."""
    tb = await mirror_small_blocks(dut, crc=True)
    assert tb.crc_checked > 50, tb.crc_checked
    assert await tb.rd(R.CRC_BLOCKS) >= tb.tail // tb.blk - 1
    t = tb.tail
    if t % tb.blk:
        at = tb.entries + 4 * ((t >> tb.blk_shift) % tb.nent)
        assert await tb.rd(R.CRC_SEED) == int.from_bytes(tb.mem[at:at + 4], "little")


@rtl_test
async def test_crc_table_off(dut):
    """Without CRC_CONFIG.ENABLE the IP writes nothing after the replica's data area
    (assert_guards) and counts no blocks."""
    tb = await mirror_small_blocks(dut, crc=False)
    assert await tb.rd(R.CRC_CONFIG) == 0
    assert await tb.rd(R.CRC_BLOCKS) == 0


@rtl_test
async def test_crc_unit_build_option(dut):
    """CAPABILITIES.CRC_TABLE says whether the IP was built with the CRC table unit
    (parameter CRC_TABLE). With it CRC_CONFIG.ENABLE sticks; without it the bit ignores
    writes (no CONFIG_REFUSED: the driver reads CAPABILITIES first), CRC_SEED and
    CRC_BLOCKS read 0, and the engine mirrors without writing anything after the replica's
    data area (the checker's write windows and assert_guards)."""
    unit = int(dut.CRC_TABLE.value)
    tb = TB(dut, seed=seed(), crc=False)
    tb.latency_range = (0, 8)
    await tb.reset()
    caps = await tb.rd(R.CAPABILITIES)
    assert caps & R.CAPABILITIES_CRC_TABLE_MASK == (R.CAPABILITIES_CRC_TABLE_MASK if unit else 0)
    await tb.configure()
    await tb.wr(R.CRC_CONFIG, R.CRC_CONFIG_ENABLE_MASK)
    assert await tb.rd(R.CRC_CONFIG) == (R.CRC_CONFIG_ENABLE_MASK if unit else 0)
    assert not await tb.status() & R.STATUS_CONFIG_REFUSED_MASK
    if unit:
        await tb.wr(R.CRC_CONFIG, 0)    # (this test's memory model keeps no table)
    else:
        await tb.wr(R.CRC_SEED, 0x12345678)
        assert await tb.rd(R.CRC_SEED) == 0
    tb.set_backpressure(True)
    await tb.wr(R.CONTROL, R.CONTROL_ENABLE_MASK)
    for _ in range(12):
        tb.publish(tb.random_payload())
        await ClockCycles(dut.aclk, tb.rng.randint(20, 200))
    await tb.wait_mirrored(tb.tail, 40000)
    await tb.stop_and_check()
    assert await tb.rd(R.CRC_BLOCKS) == 0


@rtl_test
async def test_crc_table_write_error(dut):
    """A CRC-table entry write answered SLVERR stops the IP with WRITE_SLVERR, FAULT_ADDR
    naming the table (its table_tail word); neither table_tail nor the replica's tail is
    published over it."""
    tb = TB(dut, seed=seed(), crc=True)
    await tb.reset()
    await tb.configure()
    tb.fail_write = (tb.entries, 4 * tb.nent)
    tb.publish_bytes(700)
    await tb.wr(R.CONTROL, R.CONTROL_ENABLE_MASK)
    code, addr, pos = await fault_details(tb)
    assert code == R.FAULT_WRITE_SLVERR, fault_name(code)
    assert addr == tb.ttail_addr, hex(addr)
    assert pos == 0
    assert tb.ttail_writes == [] and tb.get64(tb.replica_seg + L.OFF_TAIL) == 0
    tb.checker.assert_clean()


# ---------------------------------------------------------------------- restore copy mode
# rm_restore (map 1.6): checksummed chunks from a source buffer into the ring, or only
# checked (VERIFY_ONLY). Memory: the ring's data area (8 KiB at 0x1000), the source buffer
# from 0x4000 placed at the job's ring offset modulo 4096, the expected-CRC table at 0x7800.
RS_SRC = 0x4000
RS_TABLE = 0x7800
RS_FILL = 0x5A


class RestoreJob:
    """A restore job's memory image: source bytes, table, and where the chunks land."""

    def __init__(self, tb: TB, position: int, length: int, chunk: int, src: int | None = None):
        self.tb, self.position, self.length, self.chunk = tb, position, length, chunk
        self.src = RS_SRC + (position & 0xFFF) if src is None else src
        self.data = bytes(tb.rng.getrandbits(8) for _ in range(length))
        self.crcs = [crc32c(self.data[i:i + chunk]) for i in range(0, length, chunk)]
        tb.mem[self.src:self.src + length] = self.data
        table = b"".join(c.to_bytes(4, "little") for c in self.crcs)
        tb.mem[RS_TABLE:RS_TABLE + len(table)] = table
        b = tb.data_bytes
        lo = self.src & ~(b - 1)
        self.read_windows = [(lo, -(-(self.src + length) // b) * b - lo),
                             (RS_TABLE, -(-len(table) // 8) * 8)]

    def ring_ranges(self, upto: int | None = None) -> list[tuple[int, int]]:
        """(ring offset, bytes) the job writes up to byte `upto` of the source."""
        cap = self.tb.capacity
        off, n = self.position & (cap - 1), self.length if upto is None else upto
        first = min(n, cap - off)
        return [(off, first)] + ([(0, n - first)] if n > first else [])

    def write_windows(self, upto: int | None = None) -> list[tuple[int, int]]:
        b, base = self.tb.data_bytes, self.tb.ring_data
        return [(base + (o & ~(b - 1)), -(-(o + n) // b) * b - (o & ~(b - 1)))
                for o, n in self.ring_ranges(upto)]

    def expected_ring(self, upto: int | None = None) -> bytes:
        """The ring's data area after the job copied `upto` source bytes (fill elsewhere)."""
        ring = bytearray([RS_FILL]) * self.tb.capacity
        done = 0
        for o, n in self.ring_ranges(upto):
            ring[o:o + n] = self.data[done:done + n]
            done += n
        return bytes(ring)


async def restore_setup(dut, latency: tuple[int, int] = (0, 0), backpressure: bool = False) -> TB:
    tb = TB(dut, capacity=8192, seed=seed(), crc=False)
    tb.latency_range = latency
    await tb.reset()
    tb.set_backpressure(backpressure)
    await tb.configure()
    tb.mem[tb.ring_data:tb.ring_data + tb.capacity] = bytes([RS_FILL]) * tb.capacity
    return tb


async def restore_run(tb: TB, job: RestoreJob, verify: bool = False, wait: bool = True,
                      writes_upto: int | None = None, **override) -> int:
    """Program the job (fields overridable), START it; with `wait`, return RESTORE_STATUS
    once the job has ended. The checker's windows: the job's source and table for reads,
    the job's ring bytes (none when verifying) for writes."""
    # (+ the ring's header words: the mirroring engine's polls, when a test enables it)
    tb.read_regions = job.read_windows + [(tb.ring_seg + L.OFF_TAIL, 8),
                                          (tb.ring_seg + L.OFF_TAIL_INTENT, 8),
                                          (tb.rintent_addr, 8)]
    tb.write_regions = [] if verify else job.write_windows(writes_upto)
    regs = {"RESTORE_SOURCE": job.src, "RESTORE_TABLE": RS_TABLE,
            "RESTORE_POSITION": job.position, "RESTORE_LENGTH": job.length}
    regs.update({k: v for k, v in override.items() if k != "chunk"})
    await tb.wr(R.RESTORE_CHUNK_SIZE, override.get("chunk", job.chunk))
    for name, value in regs.items():
        await tb.wr64(name, value)
    await tb.wr(R.RESTORE_CONTROL, R.RESTORE_CONTROL_VERIFY_ONLY_MASK if verify else 0)
    await tb.wr(R.RESTORE_CONTROL, R.RESTORE_CONTROL_START_MASK
                | (R.RESTORE_CONTROL_VERIFY_ONLY_MASK if verify else 0))
    if not wait:
        return 0
    return await restore_wait(tb)


async def restore_wait(tb: TB, timeout_cycles: int = 200000) -> int:
    deadline = cycles_now() + timeout_cycles
    while True:
        st = await tb.rd(R.RESTORE_STATUS)
        if not st & R.RESTORE_STATUS_BUSY_MASK and \
                not await tb.rd(R.RESTORE_CONTROL) & R.RESTORE_CONTROL_START_MASK:
            return st
        assert cycles_now() < deadline, f"restore job still running (RESTORE_STATUS 0x{st:x})"
        await ClockCycles(tb.dut.aclk, 20)


def restore_fault(st: int) -> int:
    return (st & R.RESTORE_STATUS_FAULT_MASK) >> R.RESTORE_STATUS_FAULT_SHIFT


def ring_bytes(tb: TB) -> bytes:
    return bytes(tb.mem[tb.ring_data:tb.ring_data + tb.capacity])


@rtl_test
async def test_restore_copy(dut):
    """Jobs copied byte-exact into the ring under read latency and back-pressure: a job
    that wraps at the ring's end inside a chunk, chunks that start inside a bus beat
    (1000 bytes), a last partial chunk; nothing outside the job's bytes is written, and
    mirroring is free to run again afterwards."""
    tb = await restore_setup(dut, latency=(0, 20), backpressure=True)
    for position, length, chunk in ((3 * 8192 + 5000, 6000, 1024), (8, 8192, 1000),
                                    (4096 + 64, 200, 4096)):
        tb.mem[tb.ring_data:tb.ring_data + tb.capacity] = bytes([RS_FILL]) * tb.capacity
        job = RestoreJob(tb, position, length, chunk)
        st = await restore_run(tb, job)
        assert st & R.RESTORE_STATUS_DONE_MASK and not st & R.RESTORE_STATUS_ERROR_MASK, hex(st)
        assert restore_fault(st) == R.FAULT_NONE
        assert await tb.rd64("RESTORE_BYTES") == length
        got, want = ring_bytes(tb), job.expected_ring()
        assert got == want, f"ring differs from the job ({position}, {length}, {chunk}) at " \
            f"offset {next(i for i in range(len(got)) if got[i] != want[i])}"
    assert await tb.status() & R.STATUS_IDLE_MASK
    tb.assert_no_errors()


@rtl_test
async def test_restore_verify_only_and_damage(dut):
    """VERIFY_ONLY reads and writes nothing; a damaged chunk stops the job with
    CRC_MISMATCH naming the chunk (RESTORE_FAULT_CHUNK, its computed CRC in
    RESTORE_CRC_SEEN), in VERIFY_ONLY and in a copy (no byte of the chunks after it lands:
    a write burst of theirs already issued carries no byte enable)."""
    tb = await restore_setup(dut, latency=(0, 8), backpressure=True)
    job = RestoreJob(tb, 8192 + 4000, 5000, 1024)
    st = await restore_run(tb, job, verify=True)
    assert st & R.RESTORE_STATUS_DONE_MASK and restore_fault(st) == R.FAULT_NONE, hex(st)
    assert ring_bytes(tb) == bytes([RS_FILL]) * tb.capacity, "VERIFY_ONLY wrote the ring"
    # damage chunk 2
    bad = 2
    tb.mem[job.src + bad * 1024 + 17] ^= 0x40
    damaged = crc32c(bytes(tb.mem[job.src + bad * 1024:job.src + (bad + 1) * 1024]))
    for verify in (True, False):
        st = await restore_run(tb, job, verify=verify)
        assert st & R.RESTORE_STATUS_ERROR_MASK and not st & R.RESTORE_STATUS_DONE_MASK, hex(st)
        assert restore_fault(st) == R.FAULT_CRC_MISMATCH, fault_name(restore_fault(st))
        assert await tb.rd(R.RESTORE_FAULT_CHUNK) == bad
        assert await tb.rd(R.RESTORE_CRC_SEEN) == damaged
        assert await tb.rd64("RESTORE_FAULT_ADDR") == job.src + bad * 1024
        assert await tb.rd64("RESTORE_BYTES") == bad * 1024
    # the copy wrote chunks 0..2 (2 as it was read) and nothing after
    job.data = bytes(tb.mem[job.src:job.src + job.length])
    assert ring_bytes(tb) == job.expected_ring((bad + 1) * 1024)
    tb.assert_no_errors()


def landed(tb: TB, job: RestoreJob) -> int:
    """How many of the job's bytes are in the ring: the ring must hold a prefix of the job
    (the rest of its bytes, and every byte outside it, keep the fill)."""
    got = bytearray(job.length)
    done = 0
    for o, n in job.ring_ranges():
        got[done:done + n] = tb.mem[tb.ring_data + o:tb.ring_data + o + n]
        done += n
    m = next((i for i in range(job.length) if got[i] != job.data[i]), job.length)
    assert ring_bytes(tb) == job.expected_ring(m), f"the ring holds more than a prefix ({m})"
    return m


@rtl_test
async def test_restore_chunk_overlap(dut):
    """Small chunks, several to a mover run, chunk n+1 read while chunk n's writes and CRC
    drain: a damaged chunk at a segment's start or end, at the ring's end or last (partial)
    is named exactly (index, CRC, address, RESTORE_BYTES) and in a copy no byte after it
    lands; a table word that may not be read (OVERLAP) or answers SLVERR inside a segment
    stops the job at its chunk with the chunks before it copied; a source read error names
    the beat's chunk with nothing at or after the beat landed; ABORT at random points
    leaves a prefix of the job in the ring."""
    tb = await restore_setup(dut, latency=(0, 8), backpressure=True)
    chunk = 32
    # 63 chunks (30 + 30 + 3 per run of the mover), the last one 24 bytes; ring offset
    # 7168: the job passes the ring's end at chunk 32
    job = RestoreJob(tb, 8192 + 7168, 62 * chunk + 24, chunk)
    pristine = bytes(tb.mem[job.src:job.src + job.length])
    for verify in (True, False):
        tb.mem[tb.ring_data:tb.ring_data + tb.capacity] = bytes([RS_FILL]) * tb.capacity
        st = await restore_run(tb, job, verify=verify)
        assert st & R.RESTORE_STATUS_DONE_MASK and restore_fault(st) == R.FAULT_NONE, hex(st)
        assert await tb.rd64("RESTORE_BYTES") == job.length
        assert await tb.rd(R.RESTORE_FAULT_CHUNK) == 63
    assert ring_bytes(tb) == job.expected_ring()
    for bad in (0, 29, 30, 31, 62):
        at = job.src + bad * chunk + tb.rng.randrange(min(chunk, job.length - bad * chunk))
        tb.mem[at] ^= 0x10
        end = job.src + min(job.length, (bad + 1) * chunk)
        seen = crc32c(bytes(tb.mem[job.src + bad * chunk:end]))
        for verify in (True, False):
            tb.mem[tb.ring_data:tb.ring_data + tb.capacity] = bytes([RS_FILL]) * tb.capacity
            st = await restore_run(tb, job, verify=verify)
            assert restore_fault(st) == R.FAULT_CRC_MISMATCH and \
                st & R.RESTORE_STATUS_ERROR_MASK, (bad, verify, hex(st))
            assert await tb.rd(R.RESTORE_FAULT_CHUNK) == bad, (bad, verify)
            assert await tb.rd(R.RESTORE_CRC_SEEN) == seen, (bad, verify)
            assert await tb.rd64("RESTORE_FAULT_ADDR") == job.src + bad * chunk
            assert await tb.rd64("RESTORE_BYTES") == bad * chunk, (bad, verify)
            if not verify:
                job.data = bytes(tb.mem[job.src:job.src + job.length])
                want = job.expected_ring(min(job.length, (bad + 1) * chunk))
                assert ring_bytes(tb) == want, f"chunk {bad}: the copy wrote past it"
                job.data = pristine
        tb.mem[at] ^= 0x10
    # a table word the job may not read (inside the ring) at chunk 10, inside the first
    # run: chunks 0..9 copied, then OVERLAP naming chunk 10 and the word
    saved = bytes(tb.mem[tb.ring_data - 40:tb.ring_data])
    table = b"".join(c.to_bytes(4, "little") for c in job.crcs[:10])
    tb.mem[tb.ring_data - 40:tb.ring_data] = table
    windows = job.read_windows
    job.read_windows = [windows[0], (tb.ring_data - 40, 40)]
    tb.mem[tb.ring_data:tb.ring_data + tb.capacity] = bytes([RS_FILL]) * tb.capacity
    st = await restore_run(tb, job, writes_upto=10 * chunk, RESTORE_TABLE=tb.ring_data - 40)
    assert restore_fault(st) == R.FAULT_OVERLAP, fault_name(restore_fault(st))
    assert await tb.rd(R.RESTORE_FAULT_CHUNK) == 10
    assert await tb.rd64("RESTORE_FAULT_ADDR") == tb.ring_data
    assert await tb.rd64("RESTORE_BYTES") == 10 * chunk
    assert ring_bytes(tb) == job.expected_ring(10 * chunk)
    job.read_windows = windows
    tb.mem[tb.ring_data - 40:tb.ring_data] = saved
    # the table word of chunks 40 and 41 answers SLVERR (inside the second run)
    tb.fail_read = (RS_TABLE + 4 * 40, 8)
    for verify in (True, False):
        tb.mem[tb.ring_data:tb.ring_data + tb.capacity] = bytes([RS_FILL]) * tb.capacity
        st = await restore_run(tb, job, verify=verify, writes_upto=40 * chunk)
        assert restore_fault(st) == R.FAULT_READ_SLVERR, fault_name(restore_fault(st))
        assert await tb.rd(R.RESTORE_FAULT_CHUNK) == 40
        assert await tb.rd64("RESTORE_FAULT_ADDR") == RS_TABLE + 4 * 40
        assert await tb.rd64("RESTORE_BYTES") == 40 * chunk
        assert ring_bytes(tb) == (bytes([RS_FILL]) * tb.capacity if verify
                                  else job.expected_ring(40 * chunk))
    # a source burst answers SLVERR: the chunk of its first beat, nothing from it on
    burst = 16 * tb.data_bytes
    fail_at = (job.src + 45 * chunk) & ~(burst - 1)
    tb.fail_read = (fail_at, 1)
    for verify in (True, False):
        tb.mem[tb.ring_data:tb.ring_data + tb.capacity] = bytes([RS_FILL]) * tb.capacity
        st = await restore_run(tb, job, verify=verify)
        assert restore_fault(st) == R.FAULT_READ_SLVERR, fault_name(restore_fault(st))
        assert await tb.rd64("RESTORE_FAULT_ADDR") == fail_at
        assert await tb.rd(R.RESTORE_FAULT_CHUNK) == (fail_at - job.src) // chunk
        done = await tb.rd64("RESTORE_BYTES")
        assert done % chunk == 0 and done <= fail_at - job.src, done
        assert landed(tb, job) <= fail_at - job.src
    tb.fail_read = None
    # ABORT somewhere in a copy: a prefix landed, the mode idle, the next job completes
    for _ in range(2):
        tb.mem[tb.ring_data:tb.ring_data + tb.capacity] = bytes([RS_FILL]) * tb.capacity
        await restore_run(tb, job, wait=False)
        await ClockCycles(dut.aclk, tb.rng.randint(20, 3 * job.length // tb.data_bytes))
        await tb.wr(R.RESTORE_CONTROL, R.RESTORE_CONTROL_ABORT_MASK)
        st = await restore_wait(tb)
        if st & R.RESTORE_STATUS_DONE_MASK:
            assert landed(tb, job) == job.length
            continue
        assert restore_fault(st) == R.FAULT_ABORTED, fault_name(restore_fault(st))
        done = await tb.rd64("RESTORE_BYTES")
        assert done % chunk == 0 and done <= landed(tb, job), done
    st = await restore_run(tb, job)
    assert st & R.RESTORE_STATUS_DONE_MASK and ring_bytes(tb) == job.expected_ring()
    tb.assert_no_errors()


@rtl_test
async def test_restore_refusals(dut):
    """Bad jobs are refused before any bus access, each with its fault code; a job does
    not start while mirroring is enabled, and while one runs ENABLE, SYNC and the
    configuration registers are refused."""
    tb = await restore_setup(dut)
    job = RestoreJob(tb, 4096 + 256, 3000, 1024)
    top = 1 << int(dut.ADDR_WIDTH.value)
    cases = [
        ({"chunk": 12}, R.FAULT_BAD_RESTORE),
        ({"chunk": 0}, R.FAULT_BAD_RESTORE),
        ({"RESTORE_LENGTH": 0}, R.FAULT_BAD_RESTORE),
        ({"RESTORE_LENGTH": tb.capacity + 8}, R.FAULT_BAD_RESTORE),
        ({"RESTORE_SOURCE": job.src + 8}, R.FAULT_BAD_ALIGNMENT),
        ({"RESTORE_TABLE": RS_TABLE + 2}, R.FAULT_BAD_ALIGNMENT),
        ({"RESTORE_SOURCE": top - 4096 + 256, "RESTORE_LENGTH": 6000}, R.FAULT_ADDR_RANGE),
        ({"RESTORE_SOURCE": top + job.src}, R.FAULT_ADDR_RANGE),
        ({"RESTORE_SOURCE": tb.ring_data + 256}, R.FAULT_OVERLAP),
        ({"RESTORE_TABLE": tb.ring_data + 64}, R.FAULT_OVERLAP),
    ]
    for override, code in cases:
        tb.ar_log.clear()
        st = await restore_run(tb, job, **override)
        assert st & R.RESTORE_STATUS_ERROR_MASK and restore_fault(st) == code, \
            (override, fault_name(restore_fault(st)))
        assert tb.ar_log == [], f"{override}: the IP read {tb.ar_log[:3]}"
        assert await tb.rd64("RESTORE_FAULT_ADDR") == 0 or code == R.FAULT_OVERLAP
    assert ring_bytes(tb) == bytes([RS_FILL]) * tb.capacity
    # mirroring enabled: the job does not start
    await tb.wr(R.CONTROL, R.CONTROL_ENABLE_MASK)
    st = await restore_run(tb, job)
    assert restore_fault(st) == R.FAULT_MODE_CONFLICT, fault_name(restore_fault(st))
    await tb.wr(R.CONTROL, 0)
    await tb.wait_status(R.STATUS_IDLE_MASK, R.STATUS_IDLE_MASK, 5000)
    # while a job runs (its reads held by the slave): mirroring and configuration refused
    tb.hang_reads = True
    await restore_run(tb, job, wait=False)
    await ClockCycles(dut.aclk, 50)
    assert await tb.rd(R.RESTORE_STATUS) & R.RESTORE_STATUS_BUSY_MASK
    await tb.wr(R.CONTROL, R.CONTROL_ENABLE_MASK | R.CONTROL_SYNC_MASK)
    assert await tb.status() & R.STATUS_CONFIG_REFUSED_MASK
    assert not await tb.rd(R.CONTROL) & (R.CONTROL_ENABLE_MASK | R.CONTROL_SYNC_MASK)
    await tb.wr(R.RING_CAPACITY_LO, 4096)
    assert await tb.rd64("RING_CAPACITY") == tb.capacity
    await tb.wr(R.RESTORE_LENGTH_LO, 8)
    assert await tb.rd(R.RESTORE_STATUS) & R.RESTORE_STATUS_REFUSED_MASK
    assert await tb.rd(R.RESTORE_LENGTH_LO) == job.length
    tb.hang_reads = False
    tb.hung.set()
    st = await restore_wait(tb)
    assert st & R.RESTORE_STATUS_DONE_MASK, hex(st)
    assert ring_bytes(tb) == job.expected_ring()
    tb.assert_no_errors()


@rtl_test
async def test_restore_abort_reset_watchdog(dut):
    """ABORT, SOFT_RESET and aresetn in the middle of a job leave the mode idle (ABORT
    with its fault, SOFT_RESET without); a slave that never answers raises WATCHDOG naming
    the source beat; every transaction is answered before the job ends."""
    tb = await restore_setup(dut, latency=(0, 10), backpressure=True)
    job = RestoreJob(tb, 2048, 8000, 2048)
    for how in ("abort", "abort", "abort", "soft_reset", "aresetn"):
        await restore_run(tb, job, wait=False)
        # somewhere in the job (it takes at least a cycle per beat)
        await ClockCycles(dut.aclk, tb.rng.randint(20, job.length // tb.data_bytes // 2))
        if how == "abort":
            await tb.wr(R.RESTORE_CONTROL, R.RESTORE_CONTROL_ABORT_MASK)
            st = await restore_wait(tb)
            assert st & R.RESTORE_STATUS_ERROR_MASK and \
                restore_fault(st) == R.FAULT_ABORTED, hex(st)
        elif how == "soft_reset":
            await soft_reset(tb)
            st = await restore_wait(tb)
            assert st & ~R.RESTORE_STATUS_REFUSED_MASK == 0, hex(st)
        else:
            await tb.reset()
            st = await restore_wait(tb)
            assert st == 0 and await tb.rd(R.RESTORE_LENGTH_LO) == 0, hex(st)
            await tb.configure()
            await tb.wr(R.CONTROL, 0)
        assert not await tb.rd(R.RESTORE_STATUS) & R.RESTORE_STATUS_BUSY_MASK
        # no job is left half-running: the next one completes
        st = await restore_run(tb, job)
        assert st & R.RESTORE_STATUS_DONE_MASK, (how, hex(st))
        assert ring_bytes(tb) == job.expected_ring(), how
    # the watchdog: the source's reads are never answered
    await tb.wr(R.WATCHDOG, 300)
    tb.hang_reads = True
    await restore_run(tb, job, wait=False)
    deadline = cycles_now() + 20000
    while not await tb.rd(R.RESTORE_STATUS) & R.RESTORE_STATUS_FAULT_MASK:
        assert cycles_now() < deadline, "no watchdog fault"
        await ClockCycles(dut.aclk, 50)
    assert await tb.rd(R.RESTORE_STATUS) & R.RESTORE_STATUS_BUSY_MASK, \
        "the job ended with reads outstanding"
    tb.hang_reads = False
    tb.hung.set()
    st = await restore_wait(tb)
    assert restore_fault(st) == R.FAULT_WATCHDOG, fault_name(restore_fault(st))
    addr = await tb.rd64("RESTORE_FAULT_ADDR")
    assert RS_TABLE <= addr < RS_TABLE + 64 or job.src - 64 <= addr < job.src + job.length, \
        hex(addr)
    tb.assert_no_errors()


@rtl_test
async def test_restore_build_option(dut):
    """CAPABILITIES.RESTORE says whether the IP was built with the restore copy mode
    (parameter RESTORE). Without it a START does nothing (no bus access, RESTORE_STATUS
    and RESTORE_CONTROL read 0) and mirroring is never refused."""
    built = int(dut.RESTORE.value)
    tb = await restore_setup(dut)
    caps = await tb.rd(R.CAPABILITIES)
    assert caps & R.CAPABILITIES_RESTORE_MASK == (R.CAPABILITIES_RESTORE_MASK if built else 0)
    job = RestoreJob(tb, 4096, 2000, 1024)
    tb.ar_log.clear()
    st = await restore_run(tb, job, wait=False)
    await ClockCycles(dut.aclk, 2000)
    st = await tb.rd(R.RESTORE_STATUS)
    if built:
        assert st & R.RESTORE_STATUS_DONE_MASK and ring_bytes(tb) == job.expected_ring()
    else:
        assert st == 0 and await tb.rd(R.RESTORE_CONTROL) == 0 and tb.ar_log == []
        assert await tb.rd(R.RESTORE_LENGTH_LO) == 0
        assert ring_bytes(tb) == bytes([RS_FILL]) * tb.capacity
    await tb.wr(R.CONTROL, R.CONTROL_SYNC_MASK)
    assert not await tb.status() & R.STATUS_CONFIG_REFUSED_MASK
    tb.assert_no_errors()


@rtl_test
async def test_restore_throughput(dut):
    """The restore copy mode on a long job with 30-cycle read latency and no
    back-pressure: data beats per cycle of a VERIFY_ONLY job and of a copy, from START to
    the job's end as the CPU sees it, and the copy byte-exact. A benchmark, not in the
    suite (test_rtl.BENCH_ONLY): bench/rtl_restore_throughput.py runs it (1 MiB in 64 KiB
    chunks and 256 KiB in 4 KiB chunks) and holds the target."""
    cap = int(os.environ.get("RTL_THROUGHPUT_BYTES", 32768))
    chunk = int(os.environ.get("RTL_RESTORE_CHUNK", 8192))
    tb = TB(dut, capacity=cap, mem_size=4 * (cap + 0x1000), replica_seg=2 * (cap + 0x1000),
            seed=seed(), crc=False)
    tb.latency_range = (30, 30)
    await tb.reset()
    await tb.configure()
    src = tb.replica_data
    table = src + cap
    data = bytes(tb.rng.getrandbits(8) for _ in range(cap))
    tb.mem[src:src + cap] = data
    crcs = b"".join(crc32c(data[i:i + chunk]).to_bytes(4, "little")
                    for i in range(0, cap, chunk))
    tb.mem[table:table + len(crcs)] = crcs
    tb.read_regions = [(src, cap), (table, -(-len(crcs) // 8) * 8)]
    beats = cap // tb.data_bytes
    results = []
    for verify in (True, False):
        tb.write_regions = [] if verify else [(tb.ring_data, cap)]
        await tb.wr(R.RESTORE_CHUNK_SIZE, chunk)
        for name, value in (("RESTORE_SOURCE", src), ("RESTORE_TABLE", table),
                            ("RESTORE_POSITION", 0), ("RESTORE_LENGTH", cap)):
            await tb.wr64(name, value)
        start = cycles_now()
        await tb.wr(R.RESTORE_CONTROL, R.RESTORE_CONTROL_START_MASK
                    | (R.RESTORE_CONTROL_VERIFY_ONLY_MASK if verify else 0))
        while await tb.rd(R.RESTORE_CONTROL) & R.RESTORE_CONTROL_START_MASK:
            await ClockCycles(dut.aclk, 16)
        cycles = cycles_now() - start
        st = await tb.rd(R.RESTORE_STATUS)
        assert st & R.RESTORE_STATUS_DONE_MASK, hex(st)
        results.append((beats, cycles, beats / cycles))
        dut._log.info("restore %s: %d bytes = %d beats in %d cycles: %.3f beats/cycle",
                      "verify" if verify else "copy", cap, beats, cycles, beats / cycles)
    assert bytes(tb.mem[tb.ring_data:tb.ring_data + cap]) == data
    out = os.environ.get("RTL_RESTORE_OUT")
    if out:
        with open(out, "w") as f:
            f.write(" ".join(f"{b} {c} {r:.4f}" for b, c, r in results) + "\n")
    tb.assert_no_errors()
