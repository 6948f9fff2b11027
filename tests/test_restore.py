"""Restore: continuation without gap or duplicate, target safety, overwrite rules; the
new-segment tests run through the CPU engine's copy mode (the default) and the CPU path."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest
from ringdata import fill, payload

from pyshm import layout
from pyshm.errors import (
    ImageChecksumError,
    ImageError,
    InvalidParameterError,
    ProducerBusyError,
    RingExistsError,
)
from pyshm.images import capture, restore, restore_capture, snapshot
from pyshm.images import format as fmt
from pyshm.ring import Ring


@pytest.fixture
def names(new_name):
    return new_name


def records(ring: Ring, start="oldest") -> list[tuple[int, bytes]]:
    c = ring.consumer(start=start)
    out = []
    while (m := c.read()) is not None:
        out.append((m.sequence, bytes(m.data)))
    c.close()
    return out


@pytest.fixture
def image(tmp_path, names):
    with Ring(names(), create=True, capacity=1 << 15) as ring:
        fill(ring, 2500)
        before = records(ring)
        snapshot(ring, tmp_path / "img", chunk_size=4096)
    return tmp_path / "img", before


@pytest.mark.parametrize("engine", ["cpu", None])
def test_producer_and_consumers_continue_without_gap_or_duplicate(image, names, engine):
    path, before = image
    name = names()
    info = restore(path, name, engine=engine)
    assert info.engine == engine
    assert info.next_sequence == 2500 and info.record_count == len(before)
    with Ring(name) as ring:
        assert records(ring, start=info.first_sequence) == before
        resumed = ring.consumer(start=info.next_sequence)
        assert resumed.read() is None
        p = ring.producer()
        assert [p.publish(payload(s, 9)) for s in range(2500, 2510)] == list(range(2500, 2510))
        got = []
        while (m := resumed.read()) is not None:
            got.append((m.sequence, bytes(m.data)))
        assert got == [(s, payload(s, 9)) for s in range(2500, 2510)]
        resumed.close()
        p.close()


def test_restored_segment_is_owner_only_and_prefaulted_ring(image, names):
    path, _ = image
    name = names()
    restore(path, name)
    st = os.stat(f"/dev/shm/{name}")
    assert st.st_mode & 0o777 == 0o600
    with Ring(name) as ring:
        assert ring.producer_pid == 0 and ring.name == name


@pytest.mark.parametrize("engine", ["cpu", None])
def test_restore_to_a_file_path(image, tmp_path, engine):
    path, before = image
    target = str(tmp_path / "ring.shm")
    restore(path, target, engine=engine)
    with Ring(target) as ring:
        assert records(ring) == before


def test_existing_target_refused_and_untouched(image, names):
    path, _ = image
    name = names()
    with Ring(name, create=True, capacity=1 << 14) as other:
        fill(other, 10)
        snap = bytes(other.segment.buf)
    with pytest.raises(RingExistsError, match="already exists"):
        restore(path, name)
    with open(f"/dev/shm/{name}", "rb") as f:
        assert f.read() == snap


def test_overwrite_stopped_ring(image, names):
    path, before = image
    name = names()
    with Ring(name, create=True, capacity=1 << 12) as other:
        fill(other, 10)
    restore(path, name, overwrite=True)
    with Ring(name) as ring:
        assert ring.capacity == 1 << 15 and records(ring) == before


def test_overwrite_refused_while_producer_lives(image, names, tmp_path):
    path, _ = image
    name = names()
    Ring(name, create=True, capacity=1 << 12).close()
    script = tmp_path / "producer.py"
    script.write_text(
        "import sys, time\nfrom pyshm.ring import Ring\n"
        "r = Ring(sys.argv[1]); p = r.producer(); p.publish(b'x')\n"
        "print('ready', flush=True); sys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, str(script), name], cwd=tmp_path,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        with pytest.raises(ProducerBusyError, match=f"producer pid {proc.pid}"):
            restore(path, name, overwrite=True)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    restore(path, name, overwrite=True)  # its producer is gone now


@pytest.mark.parametrize("engine", ["cpu", None])
@pytest.mark.parametrize("where", ["chunk", "header", "trailer"])
def test_damaged_image_never_touches_target(image, names, where, engine):
    path, _ = image
    name = names()
    with Ring(name, create=True, capacity=1 << 12) as other:
        fill(other, 10)
        snap = bytes(other.segment.buf)
    raw = bytearray(path.read_bytes())
    with fmt.ImageReader(path) as r:
        off = {"chunk": r.chunks[-1].offset + 3, "header": 30, "trailer": len(raw) - 20}[where]
    raw[off] ^= 0x40
    path.write_bytes(bytes(raw))
    with pytest.raises(ImageChecksumError):
        restore(path, name, overwrite=True, engine=engine)
    with open(f"/dev/shm/{name}", "rb") as f:
        assert f.read() == snap
    assert glob.glob(f"/dev/shm/{name}.restore-*") == []  # the temporary is gone too


@pytest.mark.parametrize("engine", ["cpu", None])
def test_image_whose_records_lie_is_refused(tmp_path, names, engine):
    """Valid checksums but records that contradict the header: refused, nothing created."""
    cap = 1 << 14
    enc = layout.RecordEncoder(cap)
    data = b"".join(raw for i in range(20) for _, raw in enc.place(payload(i, 30)))
    params = layout.RingParams(capacity=cap, max_record=layout.default_max_record(cap))
    h = fmt.ImageHeader(params, 0, len(data), 0, 21, 21, fmt.now_ns())  # claims 21
    fmt.write_image(tmp_path / "lie", h, data)
    name = names()
    with pytest.raises(ImageError, match="disagree with the image header"):
        restore(tmp_path / "lie", name, engine=engine)
    assert not os.path.exists(f"/dev/shm/{name}")


def test_trimmed_window_gets_padding_so_oldest_reader_works(names):
    """A window that starts after the reader's oldest boundary is preceded by padding."""
    with Ring(names(), create=True, capacity=1 << 14) as ring:
        fill(ring, 1500)
        p = ring.producer()

        def lap_a_little():
            for s in range(1500, 1600):
                p.publish(payload(s, s % 61), type=s % 3)

        cap = capture(ring, _after_copy=lap_a_little)
        p.close()
    assert cap.start > layout.oldest_boundary(cap.end, cap.params.capacity,
                                              cap.params.partition_size)
    name = names()
    info = restore_capture(cap, name)
    with Ring(name) as r2:
        got = records(r2)
    assert [s for s, _ in got] == list(range(info.first_sequence, 1500))
    assert all(d == payload(s, s % 61) for s, d in got)


def test_device_target_is_never_replaced(image):
    path, _ = image
    with pytest.raises(InvalidParameterError, match="not a regular file"):
        restore(path, "/dev/null", overwrite=True, force=True)
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def test_ring_larger_than_free_space_is_refused(tmp_path, names):
    cap = 1 << 46  # 64 TiB: the layout allows it, /dev/shm cannot hold it
    params = layout.RingParams(capacity=cap, max_record=1024, partition_count=8)
    h = fmt.ImageHeader(params, 0, 0, 0, 0, 0, fmt.now_ns())
    fmt.write_image(tmp_path / "huge", h, b"")
    name = names()
    with pytest.raises(InvalidParameterError, match="bytes free"):
        restore(tmp_path / "huge", name)
    assert not os.path.exists(f"/dev/shm/{name}")
