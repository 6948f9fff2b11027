"""The ring-mirror driver alone, against scripted register traffic.

A recording device (a ``pynq.Device`` with REGISTER_RW when pynq is installed, the
driver's stand-in otherwise) answers register reads from a small model of the IP and logs
every access, so the tests say exactly what the driver writes, in what order, for start,
stop, sync and faults. Runs in both environments; tests/test_driver_pynq.py adds what
needs the real pynq.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import uuid

import pytest
from pyshm.driver import regmap as R
from pyshm.driver.engine import MirrorEngine, open_segment, segment_bus_address
from pyshm.driver.ip import (
    DeviceBase,
    IPMismatchError,
    MirrorConfig,
    MirrorFaultError,
    RefusedError,
    RingMirror,
    Status,
)
from pyshm.driver.sim import ANS, OP_READ, REQ, BusError, SimChannel, SimDevice, SimulatorError

from pyshm import layout as L
from pyshm.errors import CorruptSegmentError, EngineError, EngineTimeoutError, InvalidParameterError
from pyshm.replica import Replica

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "conformance"))
from ringkit import PyRing  # noqa: E402  (the layout-only producer of the engine suite)

BASE = 0xA000_0000
HW = (4 << 24) | (15 << 16) | (40 << 8) | 8  # 64-bit bus, 40-bit addresses, 16-beat bursts


class ScriptedDevice(DeviceBase):  # type: ignore[misc,valid-type]
    """Logs ("r"|"w", register name, value); a minimal model of the IP answers reads."""

    capabilities = {"REGISTER_RW": True}

    def __init__(self):
        super().__init__("scripted")
        self.log: list[tuple[str, str, int]] = []
        self.regs: dict[int, int] = {R.ID: R.IP_ID, R.VERSION: R.IP_VERSION, R.HW_CONFIG: HW,
                                     R.CAPABILITIES: R.CAPABILITIES_CRC_TABLE_MASK,
                                     R.STATUS: R.STATUS_IDLE_MASK, R.CONTROL: 0}
        self.names = {v: k for k, v in vars(R).items()
                      if k.isupper() and isinstance(v, int) and k not in ("IP_ID", "IP_VERSION",
                                                                           "ADDR_RANGE")
                      and not k.endswith(("_MASK", "_SHIFT"))
                      and not (k.startswith("FAULT_") and not k.endswith(("_LO", "_HI")))
                      and v < R.ADDR_RANGE}
        self.busy_polls = 0  # STATUS reads BUSY this many times after ENABLE is cleared

    def has_capability(self, cap: str) -> bool:
        return bool(self.capabilities.get(cap, False))

    def read_registers(self, address: int, length: int) -> bytes:
        assert length == 4
        off = address - BASE
        value = self.regs.get(off, 0)
        if off == R.STATUS and self.busy_polls:
            self.busy_polls -= 1
            value = R.STATUS_BUSY_MASK
        self.log.append(("r", self.names[off], value))
        return value.to_bytes(4, "little")

    def write_registers(self, address: int, data: bytes) -> None:
        off = address - BASE
        value = int.from_bytes(data, "little")
        self.log.append(("w", self.names[off], value))
        if off == R.CONTROL:
            if value & R.CONTROL_SOFT_RESET_MASK:
                self.regs[R.STATUS] = R.STATUS_IDLE_MASK  # done at once, fault cleared
                value = 0
            self.regs[R.CONTROL] = value
        elif off in (R.STATUS, R.IRQ_STATUS):
            pass  # w1c bits
        else:
            self.regs[off] = value

    def writes(self) -> list[tuple[str, int]]:
        return [(n, v) for kind, n, v in self.log if kind == "w"]

    def clear(self) -> None:
        self.log.clear()


@pytest.fixture
def dev():
    return ScriptedDevice()


@pytest.fixture
def ip(dev):
    mirror = RingMirror({"phys_addr": BASE, "addr_range": R.ADDR_RANGE, "device": dev})
    mirror.poll_sleep = 0.0
    return mirror


def pairs(name: str, value: int) -> list[tuple[str, int]]:
    return [(name + "_LO", value & 0xFFFFFFFF), (name + "_HI", value >> 32)]


CFG = MirrorConfig(ring_data=0x1_0000_1000, capacity=8192, partition_size=1024,
                   replica_data=0x2_0000_1000, ring_tail_addr=0x1_0000_0080,
                   ring_intent_addr=0x1_0000_0100, ring_mirrored_addr=0x1_0000_0180,
                   replica_tail_addr=0x2_0000_0080)


def test_bindto_is_the_generated_vlnv():
    assert RingMirror.bindto == [R.VLNV] == ["pyshm:ip:ring_mirror:1.0"]


def test_check_id_reads_id_version_config(ip, dev):
    hw = ip.check_id()
    assert [(k, n) for k, n, _ in dev.log] == [("r", "ID"), ("r", "VERSION"), ("r", "CAPABILITIES"),
                                              ("r", "HW_CONFIG")]
    assert (hw.data_bytes, hw.addr_width, hw.max_burst, hw.max_outstanding) == (8, 40, 16, 4)


def test_check_id_refuses_other_ip_and_major_version(ip, dev):
    dev.regs[R.ID] = 0xDEADBEEF
    with pytest.raises(IPMismatchError, match="0xdeadbeef.*not a ring-mirror IP"):
        ip.check_id()
    dev.regs[R.ID] = R.IP_ID
    dev.regs[R.VERSION] = 0x0002_0000
    with pytest.raises(IPMismatchError, match="version 2.0"):
        ip.check_id()
    dev.regs[R.VERSION] = R.IP_VERSION | 7  # a newer minor version is compatible
    ip.check_id()


def test_configure_writes_every_address_lo_then_hi(ip, dev):
    ip.configure(CFG, poll_interval=32, irq_progress=4096)
    expect = (pairs("RING_DATA_BASE", CFG.ring_data) + pairs("RING_CAPACITY", 8192)
              + pairs("PARTITION_SIZE", 1024) + pairs("REPLICA_DATA_BASE", CFG.replica_data)
              + pairs("RING_TAIL_ADDR", CFG.ring_tail_addr)
              + pairs("RING_INTENT_ADDR", CFG.ring_intent_addr)
              + pairs("RING_MIRRORED_ADDR", CFG.ring_mirrored_addr)
              + pairs("REPLICA_TAIL_ADDR", CFG.replica_tail_addr)
              + [("POLL_INTERVAL", 32), ("IRQ_PROGRESS", 4096)])
    assert dev.writes() == expect
    # the high words really carry the bits above 4 GiB
    assert dev.regs[R.RING_DATA_BASE_HI] == 1 and dev.regs[R.REPLICA_DATA_BASE_HI] == 2


def test_configure_refused_while_enabled_or_invalid(ip, dev):
    dev.regs[R.CONTROL] = R.CONTROL_ENABLE_MASK
    with pytest.raises(EngineError, match="configure while ENABLE"):
        ip.configure(CFG)
    dev.regs[R.CONTROL] = 0
    bad = [({"capacity": 6000}, "capacity 6000"), ({"partition_size": 32}, "partition size 32"),
           ({"replica_data": CFG.replica_data + 8}, "replica_data .* not 4 KiB aligned"),
           ({"ring_tail_addr": CFG.ring_tail_addr + 4}, "ring_tail_addr .* 8-byte aligned"),
           ({"ring_data": 1 << 40}, "does not fit the IP's 40-bit")]
    for change, msg in bad:
        dev.clear()
        cfg = MirrorConfig(**{**CFG.__dict__, **change})
        with pytest.raises(InvalidParameterError, match=msg):
            ip.configure(cfg)
        assert dev.writes() == [], f"{change}: wrote registers before refusing"


def test_read64_reads_lo_first(ip, dev):
    dev.regs[R.BYTES_COPIED_LO] = 0x89ABCDEF
    dev.regs[R.BYTES_COPIED_HI] = 0x1
    assert ip.read64("BYTES_COPIED") == 0x1_89ABCDEF
    assert [n for _, n, _ in dev.log] == ["BYTES_COPIED_LO", "BYTES_COPIED_HI"]


def test_fault_decoded_into_named_exception(ip, dev):
    dev.regs[R.STATUS] = R.STATUS_ERROR_MASK | (R.FAULT_READ_DECERR << R.STATUS_FAULT_SHIFT)
    with pytest.raises(MirrorFaultError) as ei:
        ip.check_fault()
    assert ei.value.code == R.FAULT_READ_DECERR and ei.value.fault == "READ_DECERR"
    assert "fault 2 READ_DECERR: a read answered DECERR" in str(ei.value)
    assert isinstance(ei.value, EngineError)
    dev.regs[R.STATUS] = R.STATUS_ERROR_MASK | (0x77 << R.STATUS_FAULT_SHIFT)
    with pytest.raises(MirrorFaultError, match="fault 119 UNKNOWN"):
        ip.check_fault()


def test_fault_names_bus_address_and_ring_position(ip, dev):
    """Map 1.3: the error says what the IP was touching (FAULT_ADDR/FAULT_POSITION)."""
    dev.regs[R.STATUS] = R.STATUS_ERROR_MASK | (R.FAULT_TAIL_BACKWARDS << R.STATUS_FAULT_SHIFT)
    dev.regs[R.FAULT_ADDR_LO], dev.regs[R.FAULT_ADDR_HI] = 0x80, 0x1
    dev.regs[R.FAULT_POSITION_LO], dev.regs[R.FAULT_POSITION_HI] = 4096, 0
    with pytest.raises(MirrorFaultError) as ei:
        ip.check_fault()
    err = ei.value
    assert (err.code, err.fault, err.address, err.position) == (
        R.FAULT_TAIL_BACKWARDS, "TAIL_BACKWARDS", 0x1_0000_0080, 4096)
    assert "TAIL_BACKWARDS: the ring's tail went below one seen before" in str(err)
    assert "bus address 0x100000080, ring position 4096" in str(err)
    # every new fault code has a name and an explanation
    for code in (R.FAULT_INTENT_RANGE, R.FAULT_WATCHDOG, R.FAULT_OVERLAP,
                 R.FAULT_POSITION_LIMIT):
        dev.regs[R.STATUS] = R.STATUS_ERROR_MASK | (code << R.STATUS_FAULT_SHIFT)
        with pytest.raises(MirrorFaultError, match=R.FAULT_NAMES[code].split(":")[0]):
            ip.check_fault()
    # an IP of map 1.2 has no detail registers: the driver does not read them
    ip.map_minor = 2
    dev.clear()
    with pytest.raises(MirrorFaultError) as ei:
        ip.check_fault()
    assert ei.value.address is None and "bus address" not in str(ei.value)
    assert [n for _, n, _ in dev.log] == ["STATUS"]


def test_refused_writes_raise(ip, dev):
    """MIRRORED or an address written while the IP runs is ignored by it: the driver
    reads the STATUS bit, clears it and raises instead of believing the write took."""
    dev.regs[R.STATUS] = R.STATUS_IDLE_MASK | R.STATUS_LOAD_REFUSED_MASK
    with pytest.raises(RefusedError, match="LOAD_REFUSED"):
        ip.set_start(4096)
    assert ("STATUS", R.STATUS_LOAD_REFUSED_MASK) in dev.writes()
    dev.regs[R.STATUS] = R.STATUS_IDLE_MASK | R.STATUS_CONFIG_REFUSED_MASK
    with pytest.raises(RefusedError, match="CONFIG_REFUSED"):
        ip.configure(CFG)


def test_configure_programs_the_watchdog(ip, dev):
    ip.configure(CFG, watchdog=5000)
    assert dev.writes()[-1] == ("WATCHDOG", 5000)
    with pytest.raises(InvalidParameterError, match="watchdog"):
        ip.configure(CFG, watchdog=-1)
    ip.map_minor = 2
    with pytest.raises(EngineError, match="no WATCHDOG"):
        ip.configure(CFG, watchdog=5000)


def test_waits_time_out_and_stop_on_faults(ip, dev):
    dev.regs[R.STATUS] = R.STATUS_BUSY_MASK  # never idle
    t0 = time.monotonic()
    with pytest.raises(EngineTimeoutError, match=r"stop \(STATUS.IDLE\) did not happen within"):
        ip.disable(0.05)
    assert time.monotonic() - t0 < 2
    # a fault during the wait ends it at once with the fault, not a timeout
    dev.regs[R.STATUS] = R.STATUS_ERROR_MASK | (R.FAULT_BAD_TAIL << R.STATUS_FAULT_SHIFT)
    t0 = time.monotonic()
    with pytest.raises(MirrorFaultError, match="BAD_TAIL"):
        ip.sync_once(30)
    assert time.monotonic() - t0 < 2


def test_disable_waits_for_the_round_in_flight(ip, dev):
    dev.regs[R.CONTROL] = R.CONTROL_ENABLE_MASK
    ip._control = R.CONTROL_ENABLE_MASK
    dev.busy_polls = 3
    ip.disable(1.0)
    reads = [n for k, n, _ in dev.log if k == "r"]
    assert dev.writes() == [("CONTROL", 0)]
    assert reads.count("STATUS") >= 4  # three BUSY answers, then IDLE


def test_status_fields():
    st = Status(R.STATUS_BUSY_MASK | R.STATUS_OVERRUN_MASK | (9 << R.STATUS_FAULT_SHIFT))
    assert st.busy and st.overrun and not st.idle and not st.error and st.fault == 9


# ---- the engine over scripted registers ---------------------------------------------

class ScriptedEngine(MirrorEngine):
    name = "scripted"

    def __init__(self, ring, replica, ip, **kw):
        super().__init__(ring, replica, monitor_interval=3600, **kw)
        self._bind(ip, 0x1_0000_0000, 0x2_0000_0000)


@pytest.fixture
def segs():
    tag = uuid.uuid4().hex[:10]
    ring = PyRing(f"pyt_drv_{tag}", capacity=8192, lossless=True)
    rep = Replica.create(f"pyt_drvrep_{tag}", ring)
    yield ring, rep
    rep.close()
    ring.close()
    for n in (f"pyt_drv_{tag}", f"pyt_drvrep_{tag}"):
        try:
            os.unlink(f"/dev/shm/{n}")
        except FileNotFoundError:
            pass


def test_engine_start_stop_register_sequence(segs, ip, dev):
    ring, rep = segs
    rep.segment.buf[L.OFF_TAIL:L.OFF_TAIL + 8] = (4096).to_bytes(8, "little")
    ring.q[L.OFF_TAIL // 8] = 4096
    eng = ScriptedEngine(ring, rep, ip, gate=True, poll_interval=24)
    try:
        eng.start()
        w = dev.writes()
        assert w[:2] == [("CONTROL", 0), ("CONTROL", R.CONTROL_SOFT_RESET_MASK)]
        cfg = w[2:20]
        assert cfg[0] == ("RING_DATA_BASE_LO", 0x1000) and cfg[1] == ("RING_DATA_BASE_HI", 1)
        assert cfg[-2:] == [("POLL_INTERVAL", 24), ("IRQ_PROGRESS", 0)]
        # the replica's CRC table kept by the IP (map 1.4), continuing CRC 0 (the start is
        # a block start), then the start position (the replica's tail) after the soft reset
        # that zeroes MIRRORED, then ENABLE last
        assert w[20:] == [("CRC_CONFIG", R.CRC_CONFIG_ENABLE_MASK), ("CRC_SEED", 0)] \
            + pairs("MIRRORED", 4096) + [("CONTROL", R.CONTROL_ENABLE_MASK)]
        # the table agreed with no tail before: it now describes nothing below 4096
        table = rep.crc_table()
        assert (table.valid_from, table.table_tail) == (4096, 4096)
        assert ring.flags & L.FLAG_GATE_ON_MIRROR
        assert ring.mirrored == 4096  # repaired up to the replica's tail
        assert eng.stats().start_position == 4096
        dev.clear()
        eng.pause(1.0)
        assert dev.writes() == [("CONTROL", 0)]
        dev.clear()
        eng.resume(1.0)
        assert dev.writes() == [("CONTROL", R.CONTROL_ENABLE_MASK)]
        dev.clear()
        eng.stop(1.0)
        assert dev.writes() == [("CONTROL", 0)]
        assert any(n == "STATUS" for k, n, _ in dev.log if k == "r")
        assert not ring.flags & L.FLAG_GATE_ON_MIRROR  # clean stop releases the producer
    finally:
        eng.close()


@pytest.mark.parametrize("minor, caps, unit", [(5, 0, False), (5, 1, True), (4, 0, True),
                                               (3, 0, False)])
def test_crc_unit_from_capabilities(segs, ip, dev, minor, caps, unit):
    """Map 1.5 reports the CRC table unit in CAPABILITIES (a CRC_TABLE=0 build has none);
    every 1.4 IP has it and an older one has none (its CAPABILITIES offset is unmapped, so
    the driver does not read it). Without the unit the engine leaves the replica's table
    alone (no CRC_CONFIG/CRC_SEED writes) and asking for it is a clear error."""
    ring, rep = segs
    dev.regs[R.VERSION] = (R.IP_VERSION & 0xFFFF0000) | minor
    dev.regs[R.CAPABILITIES] = caps
    ip.check_id()
    assert ip.has_crc_unit is unit
    assert ("r", "CAPABILITIES", caps) in dev.log if minor >= 5 else \
        all(n != "CAPABILITIES" for _, n, _ in dev.log)
    if not unit:
        with pytest.raises(EngineError, match="no CRC table unit"):
            ip.crc_configure(True)
    if minor < 4:
        return
    eng = ScriptedEngine(ring, rep, ip)
    try:
        dev.clear()
        eng.start()
        crc_writes = [w for w in dev.writes() if w[0] in ("CRC_CONFIG", "CRC_SEED")]
        assert crc_writes == ([("CRC_CONFIG", R.CRC_CONFIG_ENABLE_MASK), ("CRC_SEED", 0)]
                              if unit else [])
    finally:
        eng.close()


@pytest.mark.parametrize("clean", [False, True])
def test_engine_start_continues_the_crc_table(segs, ip, dev, clean):
    """Start inside a block: after a crash (table_tail != the replica's tail) the driver
    checksums the block's bytes below the tail from the replica, moves valid_from to the
    block start and hands that CRC to the IP (CRC_SEED); after a clean stop it hands over
    the entry as it is and leaves the table alone."""
    import crc32c

    ring, rep = segs
    t = 4096 + 200                      # blocks of a partition: 1 KiB
    data = bytes(range(256)) * 4
    rep.segment.buf[L.OFF_DATA + 4096:L.OFF_DATA + 4096 + 1024] = data
    rep.segment.buf[L.OFF_TAIL:L.OFF_TAIL + 8] = t.to_bytes(8, "little")
    ring.q[L.OFF_TAIL // 8] = t
    table = rep.crc_table()
    at = L.crc_table_offset(8192)
    entry = at + L.CRC_HEADER_SIZE + 4 * ((t >> table.block_shift) % table.count)
    if clean:
        rep.segment.buf[entry:entry + 4] = (0x12345678).to_bytes(4, "little")
        rep.segment.buf[at + L.CRC_OFF_TABLE_TAIL:at + L.CRC_OFF_TABLE_TAIL + 8] = \
            t.to_bytes(8, "little")
    eng = ScriptedEngine(ring, rep, ip)
    try:
        eng.start()
        want = 0x12345678 if clean else crc32c.crc32c(data[:200])
        assert ("CRC_SEED", want) in dev.writes()
        assert int(table.entries[(t >> table.block_shift) % table.count]) == want
        assert (table.valid_from, table.table_tail) == ((0, t) if clean else (4096, t))
        assert eng.stats().extra["crc_table"]
    finally:
        eng.close()


def test_engine_sync_waits_for_mirrored_and_reports_faults(segs, ip, dev):
    ring, rep = segs
    eng = ScriptedEngine(ring, rep, ip)
    try:
        eng.start()
        ring.q[L.OFF_TAIL // 8] = 64
        with pytest.raises(EngineTimeoutError, match="sync to position 64"):
            eng.sync(0.05)

        def publish_later():
            time.sleep(0.05)
            ring.q[L.OFF_MIRRORED // 8] = 64
        t = threading.Thread(target=publish_later)
        t.start()
        dev.regs[R.MIRRORED_LO] = 64
        dev.regs[R.BYTES_COPIED_LO] = 64
        eng.sync(2.0)
        t.join()
        ring.q[L.OFF_TAIL // 8] = 128
        dev.regs[R.STATUS] = R.STATUS_ERROR_MASK | (R.FAULT_WRITE_SLVERR << R.STATUS_FAULT_SHIFT)
        with pytest.raises(MirrorFaultError, match="WRITE_SLVERR"):
            eng.sync(30)
    finally:
        dev.regs[R.STATUS] = R.STATUS_IDLE_MASK
        eng.close()


def test_engine_refuses_gate_on_overwrite_ring(ip):
    tag = uuid.uuid4().hex[:10]
    ring = PyRing(f"pyt_drvo_{tag}", capacity=8192)
    rep = Replica.create(f"pyt_drvorep_{tag}", ring)
    try:
        with pytest.raises(InvalidParameterError, match="lossless"):
            ScriptedEngine(ring, rep, ip, gate=True)
    finally:
        rep.close()
        ring.close()
        os.unlink(f"/dev/shm/pyt_drvo_{tag}")
        os.unlink(f"/dev/shm/pyt_drvorep_{tag}")


def test_shm_segments_have_no_bus_address(segs):
    ring, _ = segs
    with pytest.raises(EngineError, match="not in DMA-able memory"):
        segment_bus_address(ring.segment)
    # a bus address published in the header is what the board engine uses
    ring.segment.buf[L.OFF_DATA_PHYS:L.OFF_DATA_PHYS + 8] = (0x7000_1000).to_bytes(8, "little")
    assert segment_bus_address(ring.segment) == 0x7000_0000
    ring.segment.buf[L.OFF_DATA_PHYS:L.OFF_DATA_PHYS + 8] = (0x7000_1008).to_bytes(8, "little")
    with pytest.raises(CorruptSegmentError, match="not a 4 KiB aligned"):
        segment_bus_address(ring.segment)


def test_open_segment_rejects_other_types():
    with pytest.raises(InvalidParameterError, match="expected a Ring"):
        open_segment(42, "ring")


# ---- the simulator channel ------------------------------------------------------------

def fake_sim(answer):
    """A socket pair whose far end answers requests with ``answer(op, addr, value)``."""
    a, b = socket.socketpair()

    def serve():
        while True:
            data = b.recv(REQ.size)
            if len(data) < REQ.size:
                b.close()
                return
            op, seq, addr, value = REQ.unpack(data)
            out = answer(op, addr, value)
            if out is None:
                continue  # stay silent
            if out == "close":
                b.close()
                return
            b.sendall(ANS.pack(seq, *out))
    threading.Thread(target=serve, daemon=True).start()
    return a


def test_sim_device_round_trip_and_window_checks():
    regs = {R.ID: R.IP_ID}
    chan = SimChannel(fake_sim(lambda op, addr, v: (0, regs.get(addr, 0))), None, 2.0)
    dev = SimDevice(chan)
    assert int.from_bytes(dev.read_registers(0xA000_0000, 4), "little") == R.IP_ID
    with pytest.raises(BusError, match="outside the IP window"):
        dev.read_registers(0xA000_0000 + R.ADDR_RANGE, 4)
    with pytest.raises(BusError, match="not word aligned"):
        dev.write_registers(0xA000_0002, b"\0\0\0\0")
    chan.close()


def test_sim_device_bus_error_is_reported():
    chan = SimChannel(fake_sim(lambda op, addr, v: (2, 0)), None, 2.0)
    with pytest.raises(BusError, match="read of register 0x04 answered SLVERR"):
        SimDevice(chan).read_registers(0xA000_0004, 4)
    chan.close()


def test_silent_or_dead_simulator_never_hangs():
    chan = SimChannel(fake_sim(lambda op, addr, v: None), None, 0.2)
    t0 = time.monotonic()
    with pytest.raises(EngineTimeoutError, match="did not answer"):
        chan.transact(OP_READ, 0)
    assert time.monotonic() - t0 < 2
    with pytest.raises(SimulatorError, match="closed"):
        chan.transact(OP_READ, 0)  # out of step after a timeout: refuses to guess
    chan2 = SimChannel(fake_sim(lambda op, addr, v: "close"), None, 2.0)
    with pytest.raises(SimulatorError, match="closed the connection"):
        chan2.transact(OP_READ, 0)


def test_device_file_that_is_not_a_udmabuf_is_refused(segs):
    ring, _ = segs
    with pytest.raises(EngineError, match="no u-dma-buf sysfs entry"):
        open_segment("/dev/null", "ring")
    with pytest.raises(EngineError, match="no u-dma-buf sysfs entry"):
        ScriptedEngine(ring, "/dev/null", None)


def test_engine_reports_overruns_while_mirrored_stands_still(segs, ip, dev):
    """A producer that laps every round leaves `mirrored` where it was: stats() still
    reads OVERRUNS and BYTES_LOST from the IP (map 1.2), and not BYTES_LOST from a 1.1 IP,
    which would answer SLVERR."""
    ring, rep = segs
    eng = ScriptedEngine(ring, rep, ip)
    try:
        eng.start()
        ring.q[L.OFF_TAIL // 8] = 40960
        dev.regs[R.OVERRUNS_LO] = 7
        dev.regs[R.BYTES_LOST_LO] = 30000
        st = eng.stats()
        assert (st.mirrored, st.overruns, st.bytes_lost) == (0, 7, 30000)
        eng.stop(1.0)
    finally:
        eng.close()
    dev.regs[R.VERSION] = 0x0001_0001
    dev.clear()
    eng = ScriptedEngine(ring, rep, ip)
    try:
        eng.start()
        st = eng.stats()
        assert st.overruns == 7 and st.bytes_lost == 0
        assert not any(n.startswith("BYTES_LOST") for _, n, _ in dev.log)
    finally:
        eng.close()


@pytest.mark.parametrize("minor, caps, has", [(6, 3, True), (6, 1, False), (5, 1, False),
                                              (4, 0, False)])
def test_restore_mode_from_version_and_capabilities(ip, dev, minor, caps, has):
    """Map 1.6 has the restore copy mode when CAPABILITIES.RESTORE says it was built; an
    older IP or a RESTORE=0 build is refused before any RESTORE_* access, with the reason
    and what to use instead."""
    dev.regs[R.VERSION] = (R.IP_VERSION & 0xFFFF0000) | minor
    dev.regs[R.CAPABILITIES] = caps
    ip.check_id()
    assert ip.has_restore_mode() is has
    if has:
        return
    dev.clear()
    with pytest.raises(EngineError, match="has no restore copy mode") as exc:
        ip.restore_job(source=0x1000, table=0x2000, position=0, length=4096, chunk=4096,
                       verify=True, timeout=1.0)
    assert ("RESTORE=0" in str(exc.value)) == (minor >= 6) and "'cpu'" in str(exc.value)
    assert dev.log == []
