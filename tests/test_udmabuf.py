"""Rings and replicas made in u-dma-buf buffers from the CLI and the API, against a fake
device: a plain file standing for /dev/udmabufN and a sysfs tree describing it
(PYSHM_SYSFS), since no u-dma-buf module runs on the CI machine (the fake_udmabuf
fixture of conftest.py)."""

from __future__ import annotations

import os
import struct

import pytest
from pyshm.driver.engine import segment_bus_address

from pyshm import layout
from pyshm.cli import main
from pyshm.engine import open_engine
from pyshm.errors import InvalidParameterError, RingExistsError
from pyshm.replica import Replica
from pyshm.ring import Ring
from pyshm.segment import Segment


def test_create_a_ring_in_a_udmabuf_from_the_cli(fake_udmabuf, ring_name, capsys):
    dev = fake_udmabuf("udmabuf0", 1 << 20, 0x7000_0000)
    assert main(["create", ring_name, "--capacity", "64K", "--udmabuf", dev]) == 0
    assert "bus address 0x70001000" in capsys.readouterr().out
    link = f"/dev/shm/{ring_name}"
    assert os.path.islink(link) and os.path.realpath(link) == dev
    with open(dev, "rb") as f:
        head = f.read(0x80)
    assert head[:8] == layout.MAGIC
    assert struct.unpack_from("<Q", head, layout.OFF_DATA_PHYS)[0] == 0x7000_1000
    # every command reaches it by name
    assert main(["publish", ring_name, "a", "b"]) == 0
    assert main(["tail", ring_name]) == 0
    assert "b'b'" in capsys.readouterr().out
    with Ring(ring_name) as r:
        assert r.next_sequence == 2 and r.params.data_phys_addr == 0x7000_1000
        assert segment_bus_address(r.segment) == 0x7000_0000  # what the FPGA engine uses
    assert main(["stats", ring_name, "--once"]) == 0
    # a buffer holds one ring at a time
    assert main(["create", ring_name + "x", "--capacity", "64K", "--udmabuf", dev]) == 1
    assert "already holds a ring" in capsys.readouterr().err
    # rm removes the link and frees the buffer, never the device
    assert main(["rm", ring_name]) == 0
    assert not os.path.lexists(link) and os.path.exists(dev)
    assert main(["create", ring_name, "--capacity", "64K", "--udmabuf", dev]) == 0


def test_refusals_name_the_problem(fake_udmabuf, ring_name, tmp_path, capsys):
    small = fake_udmabuf("udmabuf1", 32 << 10, 0x1000_0000)
    assert main(["create", ring_name, "--capacity", "64K", "--udmabuf", small]) == 1
    assert "does not fit the u-dma-buf buffer" in capsys.readouterr().err
    plain = tmp_path / "not-a-udmabuf"
    plain.write_bytes(bytes(1 << 20))
    assert main(["create", ring_name, "--capacity", "64K", "--udmabuf", str(plain)]) == 1
    assert "is not a u-dma-buf device" in capsys.readouterr().err
    assert main(["create", ring_name, "--capacity", "64K", "--udmabuf",
                 str(tmp_path / "udmabuf9")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not os.path.lexists(f"/dev/shm/{ring_name}")


def test_force_reuses_a_buffer_only_when_nobody_uses_its_ring(fake_udmabuf, new_name, capsys):
    dev = fake_udmabuf("udmabuf2", 1 << 20, 0x2000_0000)
    first = new_name()
    assert main(["create", first, "--capacity", "64K", "--udmabuf", dev]) == 0
    with Ring(first) as r:
        r.producer()  # a live producer (this process)
        assert main(["create", new_name(), "--capacity", "64K", "--udmabuf", dev,
                     "--force"]) == 1
        assert "still used by pid(s)" in capsys.readouterr().err
        assert main(["rm", first]) == 1
        assert "in use by producer pid" in capsys.readouterr().err
    # the creator (`pyshm create` here, this process) does not count: it made the ring and
    # went; the producer closed with the ring
    os.unlink(f"/dev/shm/{first}")  # the link is lost, the buffer still holds the ring
    second = new_name()
    with pytest.raises(RingExistsError, match="already holds a ring"):
        Ring(second, create=True, capacity=1 << 16, device=dev)
    assert main(["create", second, "--capacity", "64K", "--udmabuf", dev, "--force"]) == 0


def test_a_buffer_whose_restore_was_interrupted(fake_udmabuf, new_name, capsys):
    """A restore marks the buffer's header MAGIC_RESTORING while it writes. Killed in
    place, the ring keeps its name and the buffer is not free: `create` refuses it and
    says how to recover; `rm --force` frees it. Killed while building a new ring (no
    name yet), the buffer is free."""
    dev = fake_udmabuf("udmabuf8", 1 << 20, 0x8000_0000)
    first = new_name()
    assert main(["create", first, "--capacity", "64K", "--udmabuf", dev]) == 0

    def mark_restoring() -> None:
        with open(dev, "r+b") as f:
            f.write(layout.MAGIC_RESTORING)

    mark_restoring()
    second = new_name()
    with pytest.raises(RingExistsError, match=f"restore was interrupted, still named "
                                              f"'{first}'"):
        Ring(second, create=True, capacity=1 << 16, device=dev)
    assert main(["create", second, "--capacity", "64K", "--udmabuf", dev]) == 1
    err = capsys.readouterr().err
    assert f"pyshm rm --force {first}" in err and "Traceback" not in err
    assert not os.path.lexists(f"/dev/shm/{second}")
    with open(dev, "rb") as f:
        assert f.read(len(layout.MAGIC_RESTORING)) == layout.MAGIC_RESTORING  # untouched
    assert main(["rm", "--force", first]) == 0
    assert main(["create", second, "--capacity", "64K", "--udmabuf", dev]) == 0
    # a new ring's restore killed before its name was made: nothing names the buffer
    assert main(["rm", second]) == 0
    mark_restoring()
    third = new_name()
    assert main(["create", third, "--capacity", "64K", "--udmabuf", dev]) == 0
    with Ring(third) as r:
        assert r.params.data_phys_addr == 0x8000_1000
    assert main(["rm", third]) == 0


def test_replica_in_a_udmabuf_is_mirrored_into(fake_udmabuf, ring_name, replica_name):
    dev = fake_udmabuf("udmabuf3", 1 << 20, 0x3000_0000)
    with Ring(ring_name, create=True, capacity=1 << 16) as ring:
        p = ring.producer()
        for i in range(100):
            p.publish(b"tick %d" % i)
        rep = Replica.create(replica_name, ring, device=dev)
        try:
            assert rep.params.data_phys_addr == 0x3000_1000 and rep.params.is_replica
            with open_engine("cpu", ring, rep) as eng:
                eng.start()
                eng.sync(timeout=10)
            assert rep.tail == ring.tail and rep.next_sequence == 100
        finally:
            rep.close()
    with open(dev, "rb") as f:
        assert f.read(8) == layout.MAGIC


def test_a_character_device_takes_its_size_from_sysfs(fake_udmabuf, tmp_path):
    # /dev/zero maps like a device buffer; its size comes from the (fake) sysfs entry
    entry = tmp_path / "sys" / "class" / "u-dma-buf" / "zero"
    fake_udmabuf("unused", 4096, 0x1000)  # creates the tree and sets PYSHM_SYSFS
    entry.mkdir(parents=True)
    (entry / "phys_addr").write_text("0x40000000")
    (entry / "size").write_text(str(3 << 20))
    with Segment("/dev/zero", readonly=True) as seg:
        assert seg.size == 3 << 20
    with pytest.raises(InvalidParameterError, match="device= is for creating"):
        Segment("/dev/zero", device="/dev/zero")


def test_replicate_into_a_udmabuf_from_the_cli(fake_udmabuf, ring_name, replica_name, capsys):
    dev = fake_udmabuf("udmabuf4", 1 << 20, 0x4000_0000)
    with Ring(ring_name, create=True, capacity=1 << 16) as ring:
        p = ring.producer()
        for i in range(10):
            p.publish(b"x %d" % i)
        p.close()
    assert main(["replicate", ring_name, "--to", replica_name, "--udmabuf", dev,
                 "--engine", "cpu", "--duration", "0.3", "--quiet"]) == 0
    with Replica.open(replica_name, readonly=True) as rep:
        assert rep.params.data_phys_addr == 0x4000_1000 and rep.next_sequence == 10
    assert os.path.realpath(f"/dev/shm/{replica_name}") == dev


def test_bus_address_from_sysfs_when_the_header_has_none(fake_udmabuf, ring_name):
    """A ring in a u-dma-buf buffer whose header carries no bus address (data_phys_addr
    0, e.g. written by an older release) is found through sysfs by its name, which links
    to the device; ordinary shared memory still has none."""
    dev = fake_udmabuf("udmabuf7", 1 << 20, 0x5000_0000)
    Ring(ring_name, create=True, capacity=1 << 16, device=dev).close()
    with Segment(ring_name) as seg:
        struct.pack_into("<Q", seg.buf, layout.OFF_DATA_PHYS, 0)
        assert segment_bus_address(seg) == 0x5000_0000
    os.unlink(f"/dev/shm/{ring_name}")


def test_restore_a_capture_into_a_udmabuf(fake_udmabuf, new_name):
    """restore_capture(..., device=) (`pyshm restore REPLICA --to NAME --udmabuf DEV`)
    builds the copy in the buffer, with its bus address, under a name that links to it;
    a buffer that already holds a ring is refused before anything is written."""
    from pyshm.images import capture, restore_capture

    src, dst = new_name(), new_name()
    dev = fake_udmabuf("udmabuf6", 1 << 20, 0x6000_0000)
    with Ring(src, create=True, capacity=1 << 16) as ring:
        p = ring.producer()
        for i in range(500):
            p.publish(bytes([i & 0xFF]) * (50 + i % 200))
        p.close()
        want = [(m.sequence, bytes(m.data)) for m in iter(ring.consumer(start="oldest").read,
                                                           None)]
        info = restore_capture(capture(ring), dst, device=dev)
        with pytest.raises(RingExistsError, match="already holds a ring"):
            restore_capture(capture(ring), new_name(), device=dev)
    assert os.path.realpath(f"/dev/shm/{dst}") == dev and info.next_sequence == 500
    with Ring(dst) as r:
        assert r.params.data_phys_addr == 0x6000_1000
        got = [(m.sequence, bytes(m.data)) for m in iter(r.consumer(start="oldest").read,
                                                         None)]
    assert got == want and len(got) > 100
