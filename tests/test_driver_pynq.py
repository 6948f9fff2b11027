"""The driver through the real pynq: DefaultIP binding, pynq.MMIO over a REGISTER_RW
pynq.Device, and the simulated RTL driven by that unchanged stack.

pynq 4.0 pins numpy<2, so these run only in the second environment (`make test-pynq`,
part of `make test`); the main environment's run leaves this file out (--ignore in the
Makefile). pynq is imported unconditionally: where the file runs, a missing pynq fails.
"""

from __future__ import annotations

import os
import sys
import uuid

import pynq
import pytest
from pyshm.driver import regmap as R  # noqa: E402
from pyshm.driver.ip import HAVE_PYNQ, MirrorFaultError, RingMirror  # noqa: E402
from pyshm.driver.sim import SimDevice  # noqa: E402

from pyshm import layout as L  # noqa: E402
from pyshm.engine import open_engine  # noqa: E402
from pyshm.replica import Replica  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "conformance"))
from ringkit import PyRing, payload_for  # noqa: E402

pytestmark = pytest.mark.rtl


def test_driver_is_a_pynq_defaultip_bound_to_the_vlnv():
    from pynq.overlay import _ip_drivers

    assert HAVE_PYNQ
    assert issubclass(RingMirror, pynq.DefaultIP)
    assert _ip_drivers[R.VLNV] is RingMirror  # what Overlay hands out for the IP
    assert issubclass(SimDevice, pynq.Device)


class RecordingDevice(pynq.Device):
    """PYNQ's own way of testing drivers: a Device that records register traffic."""

    def __init__(self):
        super().__init__("recording")
        self.capabilities = {"REGISTER_RW": True}
        self.regs = {R.ID: R.IP_ID, R.VERSION: R.IP_VERSION, R.STATUS: R.STATUS_IDLE_MASK}
        self.log: list[tuple[str, int, bytes]] = []

    def read_registers(self, address, length):
        data = self.regs.get(address - 0x8000_0000, 0).to_bytes(length, "little")
        self.log.append(("r", address, data))
        return data

    def write_registers(self, address, data):
        self.log.append(("w", address, bytes(data)))
        self.regs[address - 0x8000_0000] = int.from_bytes(data, "little")


def test_pynq_mmio_carries_the_driver_traffic():
    dev = RecordingDevice()
    ip = RingMirror({"phys_addr": 0x8000_0000, "addr_range": R.ADDR_RANGE, "device": dev})
    assert isinstance(ip.mmio, pynq.MMIO)
    ip.check_id()
    ip.write64("MIRRORED", 0x1_0000_0008)
    assert dev.log[:2] == [("r", 0x8000_0000 + R.ID, R.IP_ID.to_bytes(4, "little")),
                           ("r", 0x8000_0000 + R.VERSION, R.IP_VERSION.to_bytes(4, "little"))]
    assert dev.log[-2:] == [("w", 0x8000_0000 + R.MIRRORED_LO, (8).to_bytes(4, "little")),
                            ("w", 0x8000_0000 + R.MIRRORED_HI, (1).to_bytes(4, "little"))]


@pytest.fixture
def pair():
    tag = uuid.uuid4().hex[:10]
    names = [f"pyt_pq_{tag}", f"pyt_pqrep_{tag}"]
    ring = PyRing(names[0], capacity=8192)
    rep = Replica.create(names[1], ring)
    yield ring, rep
    rep.close()
    ring.close()
    for n in names:
        try:
            os.unlink(f"/dev/shm/{n}")
        except FileNotFoundError:
            pass


def test_sim_engine_through_pynq_mmio_mirrors_and_faults(pair):
    ring, rep = pair
    with open_engine("sim", ring, rep) as eng:
        assert isinstance(eng.ip.mmio, pynq.MMIO) and isinstance(eng.device, pynq.Device)
        eng.start()
        for seq in range(120):
            ring.publish(payload_for(seq, 200))
            if seq % 30 == 29:  # well below a lap per slice: nothing may be lost
                eng.sync(60)
        assert rep.tail == ring.tail == ring.mirrored > 8192
        recs = rep.records()
        assert [r.sequence for r in recs] == list(range(recs[0].sequence, 120))
        assert all(r.payload == payload_for(r.sequence, 200) for r in recs)
        st = eng.stats()
        assert st.records_mirrored == 120 and st.bytes_mirrored == ring.tail
        # a tail that breaks the layout's alignment stops the RTL with its fault code
        ring.q[L.OFF_TAIL // 8] = ring.tail + 3
        with pytest.raises(MirrorFaultError, match="BAD_TAIL") as ei:
            eng.sync(60)
        assert ei.value.code == R.FAULT_BAD_TAIL
        st = eng.stats()
        assert st.state == "failed" and "BAD_TAIL" in st.last_error and st.errors >= 1
        eng.stop(5)  # stopping a faulted engine is not an error: it has stopped


def test_auto_picks_pynq_only_when_the_loaded_overlay_has_the_ip(monkeypatch):
    from pyshm.driver.engine import PynqEngine

    from pyshm.engine import pick_engine

    ok, why = PynqEngine.available()  # off-board: pynq finds no device
    assert not ok and "no PYNQ overlay loaded" in why
    assert pick_engine()[0] == "cpu"

    class LoadedPL:
        ip_dict = {"ring_mirror_0": {"type": R.VLNV, "phys_addr": 0xA0000000},
                   "axi_gpio_0": {"type": "xilinx.com:ip:axi_gpio:2.0"}}

    monkeypatch.setattr(pynq, "PL", LoadedPL)
    ok, why = PynqEngine.available()
    assert ok and "ring_mirror_0" in why
    name, why = pick_engine()
    assert name == "pynq" and "ring_mirror_0" in why
    LoadedPL.ip_dict = {"axi_gpio_0": {"type": "xilinx.com:ip:axi_gpio:2.0"}}
    assert PynqEngine.available() == (False, "the loaded overlay has no ring-mirror IP")


@pytest.fixture
def restored(tmp_path, new_name):
    """(image of a 16 KiB ring in 4 KiB chunks, name of the ring the CPU path restores
    from it)."""
    from pyshm.images import restore, snapshot
    from pyshm.ring import Ring

    with Ring(new_name(), create=True, capacity=16384) as ring:
        p = ring.producer()
        for i in range(150):
            p.publish(bytes([i & 0xFF]) * (40 + (i * 53) % 400))
        p.close()
        snapshot(ring, tmp_path / "r.pyimg", chunk_size=4096)
    name = new_name()
    restore(tmp_path / "r.pyimg", name, engine=None)
    return tmp_path / "r.pyimg", name


def _same_data(a: str, b: str) -> None:
    from pyshm.ring import Ring

    with Ring(a) as ra, Ring(b) as rb:
        assert bytes(ra.segment.buf[L.OFF_DATA:]) == bytes(rb.segment.buf[L.OFF_DATA:])
        assert ra.next_sequence == rb.next_sequence == 150


def test_sim_restore_copy_mode_through_pynq_mmio(restored, new_name):
    """The restore copy mode through the same pynq stack: SimCopier's RingMirror is a pynq
    DefaultIP on pynq.MMIO; a restore through it gives the CPU path's ring, and a damaged
    chunk is refused by the IP naming it."""
    from pyshm.driver.sim import SimCopier

    from pyshm.errors import ImageChecksumError
    from pyshm.images import format as fmt
    from pyshm.images import restore

    image, cpu = restored
    name = new_name()
    with SimCopier() as copier:
        info = restore(image, name, engine=copier)
        assert info.engine == "sim"
        assert isinstance(copier._ip.mmio, pynq.MMIO)
    _same_data(cpu, name)
    with fmt.ImageReader(image) as r:
        victim = r.chunks[1]
    with open(image, "r+b") as f:
        f.seek(victim.offset + 7)
        f.write(b"\xff\x00")
    with pytest.raises(ImageChecksumError) as exc:
        restore(image, name, in_place=True, engine="sim")
    assert exc.value.chunk == 1


def test_pynq_copier_through_pynq_mmio(restored, new_name, fake_udmabuf, monkeypatch):
    """The pynq engine's copy mode over the real pynq stack: PynqCopier's RingMirror on
    pynq.MMIO (the simulated IP, with u-dma-buf buffers at their bus addresses) restores
    a ring in place as the CPU does. Off the board, PynqEngine.copier() says that no
    overlay is loaded and names the CPU engine."""
    from pyshm.driver.copier import STAGING_ENV, PynqCopier
    from pyshm.driver.engine import PynqEngine
    from pyshm.driver.sim import SimBoard

    from pyshm.errors import EngineError
    from pyshm.images import restore
    from pyshm.ring import Ring

    image, cpu = restored
    ring_dev = fake_udmabuf("udmabuf0", L.segment_size(16384), 0x3_0000_0000, 1)
    stage_dev = fake_udmabuf("udmabuf1", 64 << 10, 0x4_0000_0000, 1)
    monkeypatch.setenv(STAGING_ENV, stage_dev)
    name = new_name()
    Ring(name, create=True, capacity=16384, device=ring_dev).close()
    with SimBoard(ring_dev, stage_dev) as board, PynqCopier(ip=board.ip) as copier:
        assert isinstance(copier.ip.mmio, pynq.MMIO)
        assert restore(image, name, in_place=True, engine=copier).engine == "pynq"
    _same_data(cpu, name)
    with pytest.raises(EngineError, match="no PYNQ overlay.*engine 'cpu'"):
        PynqEngine.copier()
