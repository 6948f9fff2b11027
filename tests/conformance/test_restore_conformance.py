"""Conformance of restore through the engine (issue 14): every engine with a copy mode
(pyshm.engine.Copier) restores the same image into byte-identical rings, and refuses the
same damaged image with the same ImageError naming the same chunk, leaving the target as
it was.

RESTORE_ENGINES: the CPU engine's memcpy threads (fused copy + CRC) and the simulated
ring-mirror IP's restore copy mode (`sim`: rm_restore under Icarus through the board
driver's RingMirror.restore_job), the latter on a 16 KiB ring in 4 KiB chunks whose
window wraps and starts inside a page (so a chunk passes the ring's end and the staging
buffer's placement matters).
"""

from __future__ import annotations

import os

import pytest

from pyshm import layout as L
from pyshm.cli import main
from pyshm.errors import ImageChecksumError
from pyshm.images import format as fmt
from pyshm.images import restore, snapshot
from pyshm.ring import Ring

CAP = 16384
RESTORE_ENGINES = ["cpu", "sim"]


@pytest.fixture
def image(tmp_path, new_name):
    """A wrapped 16 KiB ring's image in 4 KiB chunks (its window starts mid-page)."""
    return wrapped_image(tmp_path / "r.pyimg", new_name())


def wrapped_image(path, name: str):
    """Write that image to ``path`` (through a ring ``name``); returns ``path``."""
    with Ring(name, create=True, capacity=CAP) as ring:
        p = ring.producer()
        i = 0
        while ring.tail < CAP + CAP // 3:
            p.publish(bytes([(i * 37) & 0xFF]) * (40 + (i * 53) % 400))
            i += 1
        p.close()
        snapshot(ring, path, chunk_size=4096)
    with fmt.ImageReader(path) as r:
        h = r.header
        assert len(r.chunks) >= 4 and h.first_position % 4096, "the job must start mid-page"
        assert (h.first_position & (CAP - 1)) + h.data_length > CAP, "the job must wrap"
    return path


def _segment_bytes(name: str) -> bytes:
    with open(f"/dev/shm/{name}", "rb") as f:
        return f.read()


def _ring_bytes(name: str) -> bytes:
    """The segment without what identifies this one segment (creation time, creator pid,
    name, ring id): every byte a restore decides."""
    b = bytearray(_segment_bytes(name))
    b[L.OFF_CREATED_NS:L.OFF_DATA_PHYS] = bytes(L.OFF_DATA_PHYS - L.OFF_CREATED_NS)
    b[L.OFF_RING_ID:L.OFF_RING_ID + 8] = bytes(8)
    return bytes(b)


def _target(name: str) -> None:
    with Ring(name, create=True, capacity=CAP) as ring:
        p = ring.producer()
        p.publish(b"old contents")
        p.close()


def test_same_image_same_ring_bytes(image, new_name, capsys):
    """In place and into a new segment, every engine leaves the same bytes (header and
    data) as every other; the new segment through `pyshm restore --engine NAME`."""
    got: dict[tuple[str, str], bytes] = {}
    for engine in RESTORE_ENGINES:
        name = new_name()
        assert main(["restore", str(image), "--to", name, "--engine", engine]) == 0
        assert f"{engine} engine" in capsys.readouterr().out
        got[(engine, "new")] = _ring_bytes(name)
        os.unlink(f"/dev/shm/{name}")
        name = new_name()
        _target(name)
        info = restore(image, name, in_place=True, engine=engine)
        assert info.engine == engine
        got[(engine, "in place")] = _ring_bytes(name)
        os.unlink(f"/dev/shm/{name}")
    for how in ("new", "in place"):
        ref = got[(RESTORE_ENGINES[0], how)]
        for engine in RESTORE_ENGINES[1:]:
            assert got[(engine, how)] == ref, f"{engine} ({how}) differs from " \
                                              f"{RESTORE_ENGINES[0]}"
    # and the engines' rings are what the CPU path builds
    name = new_name()
    restore(image, name, engine=None)
    assert _ring_bytes(name) == got[(RESTORE_ENGINES[0], "new")]
    os.unlink(f"/dev/shm/{name}")


def test_damaged_image_same_error(image, new_name, tmp_path):
    """A damaged chunk (the one holding the ring's wrap) is the same ImageChecksumError
    naming the same chunk on every engine, in place (the target not touched) and into a
    new segment (no ring left)."""
    damaged = tmp_path / "damaged.pyimg"
    damaged.write_bytes(image.read_bytes())
    with fmt.ImageReader(damaged) as r:
        h = r.header
        wrap = (CAP - (h.first_position & (CAP - 1))) // h.chunk_size
        victim = r.chunks[wrap]
    with open(damaged, "r+b") as f:
        f.seek(victim.offset + 100)
        b = f.read(1)
        f.seek(victim.offset + 100)
        f.write(bytes([b[0] ^ 0x08]))
    errors = {}
    for engine in RESTORE_ENGINES:
        name = new_name()
        _target(name)
        before = _segment_bytes(name)
        with pytest.raises(ImageChecksumError) as exc:
            restore(damaged, name, in_place=True, engine=engine)
        assert _segment_bytes(name) == before, f"{engine}: the target changed"
        os.unlink(f"/dev/shm/{name}")
        errors[(engine, "in place")] = (exc.value.chunk, str(exc.value))
        name = new_name()
        with pytest.raises(ImageChecksumError) as exc:
            restore(damaged, name, engine=engine)
        assert not os.path.exists(f"/dev/shm/{name}")
        errors[(engine, "new")] = (exc.value.chunk, str(exc.value))
    assert {chunk for chunk, _ in errors.values()} == {wrap}, errors
    for how in ("in place", "new"):
        assert len({msg for (e, h_), (_, msg) in errors.items() if h_ == how}) == 1, errors
