"""cocotb testbench of the ``sim`` engine: the ring-mirror IP on real shared memory.

Runs inside the simulator (started by driver/sim_run.py, configured by the
PYSHM_SIM_CONFIG environment variable). The AXI4 memory model is :class:`BusMemory`: the
ring and the replica segment files, mmapped at their simulated bus addresses, with every
access checked against what the IP may touch (AxiRam would silently wrap an address it
does not hold; here it answers SLVERR, which the IP reports as a fault). Register
requests arrive on a unix socket (protocol in driver/sim.py) and become AXI4-Lite
transactions. The simulation ends when the engine says so or its socket closes (engine
process gone): the IP is then held in reset at once so it writes nothing more.

Every run is watched by the AXI4 protocol checker of the RTL tests
(:mod:`pyshm.driver.axi4_checker`; handshakes, stability, WLAST, 4 KiB, sizes, lanes; the
address windows are BusMemory's business, as above): on the first violation the IP is
held in reset, the violations are printed and the socket is closed, so the engine stops
with a SimulatorError that quotes them (its last output).
"""

from __future__ import annotations

import json
import mmap
import os
import select
import socket
import struct

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles
from cocotb.utils import get_sim_time
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam
from pyshm.driver import regmap as R
from pyshm.driver.axi4_checker import Axi4Checker

from pyshm import layout as L

REQ = struct.Struct("<IIQQ")
ANS = struct.Struct("<IIQ")
OP_READ, OP_WRITE, OP_CYCLES, OP_SHUTDOWN = 1, 2, 3, 4
CLK_NS = 10
POLL_CYCLES = 8  # socket poll period: register latency vs. Python work per cycle
IDLE_POLLS = 128  # polls without a request before an idle simulator may sleep
IDLE_SLEEP = 0.002  # seconds; a request wakes it at once
SLVERR = 2


class BusMemory:
    """A sparse bus: two mmapped segments, reads and writes limited to the IP's regions."""

    def __init__(self, size: int):
        self.size = size
        self.maps: list[tuple[int, int, mmap.mmap]] = []
        self.readable: list[tuple[int, int]] = []
        self.writable: list[tuple[int, int]] = []
        self.violations = 0

    def add(self, base: int, path: str, size: int) -> mmap.mmap:
        if base < 0 or base + size > self.size:
            raise ValueError(f"segment {path} at 0x{base:x}+{size} is outside the "
                             f"{self.size:#x}-byte bus")
        fd = os.open(path, os.O_RDWR)
        try:
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self.maps.append((base, size, mm))
        return mm

    def __len__(self) -> int:
        return self.size

    def _locate(self, start: int, stop: int, regions: list[tuple[int, int]],
                kind: str) -> tuple[mmap.mmap, int]:
        if not any(lo <= start and stop <= hi for lo, hi in regions):
            self.violations += 1
            msg = f"{kind} of [0x{start:x}, 0x{stop:x}) outside the IP's regions"
            if self.violations <= 5:  # the engine reports the fault; this says where
                print(f"pyshm sim bus: {msg} (answered SLVERR)", flush=True)
            raise OSError(msg)
        for base, size, mm in self.maps:
            if base <= start and stop <= base + size:
                return mm, start - base
        raise OSError(f"{kind} at 0x{start:x}: no memory")

    def __getitem__(self, key: slice) -> bytes:
        mm, off = self._locate(key.start, key.stop, self.readable, "read")
        return mm[off:off + key.stop - key.start]

    def __setitem__(self, key: slice, data: bytes) -> None:
        mm, off = self._locate(key.start, key.stop, self.writable, "write")
        mm[off:off + len(data)] = bytes(data)


def cycles_now() -> int:
    return int(get_sim_time("ns")) // CLK_NS


@cocotb.test()
async def serve(dut):
    """Serve register requests until the engine shuts the simulation down or goes away."""
    cfg = json.loads(os.environ["PYSHM_SIM_CONFIG"])
    ring_bus, rep_bus = int(cfg["ring_bus"]), int(cfg["replica_bus"])
    bus = BusMemory(1 << int(cfg["addr_width"]))
    restore_mode = cfg.get("mode", "mirror") == "restore"
    ring: mmap.mmap | None = None
    if restore_mode:
        # the restore copy mode (driver/sim.py, SimCopier): the copier's staging buffer
        # (source bytes and expected-CRC table) at the replica's address, read only; the
        # target ring, when there is one, at the ring's, only its data area writable
        bus.add(rep_bus, cfg["replica_path"], int(cfg["replica_size"]))
        bus.readable = [(rep_bus, rep_bus + int(cfg["replica_size"]))]
        if cfg["ring_path"]:
            ring = bus.add(ring_bus, cfg["ring_path"], int(cfg["ring_size"]))
            # the capacity given (a ring not yet written there) or the ring's own
            cap = int(cfg.get("ring_capacity") or 0) or \
                int.from_bytes(ring[L.OFF_CAPACITY:L.OFF_CAPACITY + 8], "little")
            if not (L.MIN_CAPACITY <= cap and L.HEADER_SIZE + cap <= int(cfg["ring_size"])):
                raise ValueError(f"ring capacity {cap} does not fit the segment")
            bus.writable = [(ring_bus + L.OFF_DATA, ring_bus + L.OFF_DATA + cap)]
    else:
        ring, _ = _mirror_regions(bus, cfg, ring_bus, rep_bus)
    await _serve(dut, cfg, bus, ring, restore_mode)


def _mirror_regions(bus: BusMemory, cfg: dict, ring_bus: int,
                    rep_bus: int) -> tuple[mmap.mmap, int]:
    """Map the ring and the replica; what the mirroring IP may read and write."""
    ring = bus.add(ring_bus, cfg["ring_path"], int(cfg["ring_size"]))
    rep = bus.add(rep_bus, cfg["replica_path"], int(cfg["replica_size"]))
    cap = int.from_bytes(ring[L.OFF_CAPACITY:L.OFF_CAPACITY + 8], "little")
    if not (L.MIN_CAPACITY <= cap and L.HEADER_SIZE + cap <= int(cfg["ring_size"])
            and L.HEADER_SIZE + cap <= int(cfg["replica_size"])):
        raise ValueError(f"ring capacity {cap} does not fit the segments")
    ring_data, rep_data = ring_bus + L.OFF_DATA, rep_bus + L.OFF_DATA
    words = [ring_bus + L.OFF_TAIL, ring_bus + L.OFF_TAIL_INTENT]
    # the IP writes the replica's data, tail and tail intent and the ring's mirrored word
    written = [rep_bus + L.OFF_TAIL, rep_bus + L.OFF_TAIL_INTENT, ring_bus + L.OFF_MIRRORED]
    bus.writable = [(rep_data, rep_data + cap), *((w, w + 8) for w in written)]
    (flags,) = struct.unpack_from("<I", rep, L.OFF_FLAGS)
    if flags & L.FLAG_CRC_TABLE:
        # a replica CRC table: the IP writes its entries and its table_tail word
        parts = int.from_bytes(ring[L.OFF_PARTITIONS:L.OFF_PARTITIONS + 4], "little")
        table = rep_bus + L.crc_table_offset(cap)
        entries = cap >> L.crc_block_shift(cap, max(1, parts))
        end = table + L.CRC_HEADER_SIZE + 4 * entries
        if end - rep_bus > int(cfg["replica_size"]):
            raise ValueError("the replica's CRC table does not fit its segment")
        bus.writable += [(table + L.CRC_OFF_TABLE_TAIL, table + L.CRC_OFF_TABLE_TAIL + 8),
                         (table + L.CRC_HEADER_SIZE, end)]
    bus.readable = [(ring_data, ring_data + cap), *((w, w + 8) for w in words),
                    *bus.writable]
    return ring, cap


async def _serve(dut, cfg: dict, bus: BusMemory, ring: mmap.mmap | None,
                 restore_mode: bool) -> None:

    for name in ("s_axil", "m_axi"):
        import logging
        logging.getLogger(f"cocotb.{dut._name}.{name}").setLevel(logging.ERROR)
    cocotb.start_soon(Clock(dut.aclk, CLK_NS, unit="ns").start())  # type: ignore[arg-type]
    axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.aclk, dut.aresetn,
                         reset_active_level=False)
    AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.aclk, dut.aresetn, reset_active_level=False,
           size=bus.size, mem=bus)
    checker = Axi4Checker(
        dut, dut.aclk, dut.aresetn, "m_axi", data_bytes=len(dut.m_axi_wdata) // 8,
        max_burst=int(dut.MAX_BURST_LEN.value),
        # where the IP reads and writes follows the driver's configuration, which may
        # point it anywhere (BusMemory answers SLVERR outside the segments): no windows
        read_windows=lambda: [(0, bus.size)], write_windows=lambda: [(0, bus.size)],
        on_violation=lambda line: print(f"pyshm sim bus: AXI4 protocol violation by the IP: "
                                        f"{line}", flush=True))
    dut.aresetn.value = 0
    await ClockCycles(dut.aclk, 4)
    dut.aresetn.value = 1
    await ClockCycles(dut.aclk, 2)

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(float(cfg.get("timeout", 10.0)))
    sock.connect(cfg["socket"])
    # the ring's tail and mirrored words (mirroring: idle while they are equal)
    q = memoryview(ring)[:L.HEADER_SIZE].cast("Q") if ring is not None else None
    poll_cycles = int(cfg.get("poll_cycles", POLL_CYCLES))
    buf = b""
    idle = 0
    enabled = False
    stop = False
    while not stop:
        await ClockCycles(dut.aclk, poll_cycles)
        if checker.violations:
            # no answer to anything any more: the engine reports this output
            print(f"pyshm sim bus: simulation stopped after {len(checker.violations)} AXI4 "
                  f"protocol violation(s)", flush=True)
            break
        wait = 0.0
        if idle >= IDLE_POLLS and (not enabled or (
                not restore_mode and q is not None
                and q[L.OFF_TAIL // 8] == q[L.OFF_MIRRORED // 8])):
            wait = IDLE_SLEEP  # nothing to copy: let the CPU go instead of spinning the clock
        ready, _, _ = select.select([sock], [], [], wait)
        if not ready:
            idle += 1
            continue
        chunk = sock.recv(4096)
        if not chunk:
            break  # the engine process is gone
        idle = 0
        buf += chunk
        while len(buf) >= REQ.size and not stop:
            op, seq, addr, value = REQ.unpack_from(buf)
            buf = buf[REQ.size:]
            resp, out = 0, 0
            if op == OP_READ:
                r = await axil.read(addr, 4)
                resp, out = int(r.resp), int.from_bytes(r.data, "little")
                if restore_mode and addr == R.RESTORE_CONTROL and not resp:
                    enabled = bool(out & R.RESTORE_CONTROL_START_MASK)  # job still running
            elif op == OP_WRITE:
                w = await axil.write(addr, (value & 0xFFFFFFFF).to_bytes(4, "little"))
                resp = int(w.resp)
                if addr == R.CONTROL and not resp and not restore_mode:
                    enabled = bool(value & (R.CONTROL_ENABLE_MASK | R.CONTROL_SYNC_MASK))
                if addr == R.RESTORE_CONTROL and not resp and restore_mode:
                    enabled = enabled or bool(value & R.RESTORE_CONTROL_START_MASK)
            elif op == OP_CYCLES:
                out = cycles_now()
            elif op == OP_SHUTDOWN:
                stop = True
            else:
                resp = SLVERR
            sock.sendall(ANS.pack(seq, resp, out))
    # hold the IP in reset: nothing may be written once the engine has let go
    dut.aresetn.value = 0
    await ClockCycles(dut.aclk, 2)
    if q is not None:
        q.release()
    sock.close()
    dut._log.info("sim engine testbench done at cycle %d (%d bus violations, %d AXI4 protocol "
                  "violations, %s handshakes checked)", cycles_now(), bus.violations,
                  len(checker.violations), dict(checker.counts))
