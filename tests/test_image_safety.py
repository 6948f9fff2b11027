"""Image files that are not what they claim, and disks that fill up: clean errors naming
the path, nothing hangs, nothing partial is left. Each test failed before its fix."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterator

import pytest

from pyshm import Ring, images
from pyshm.cli import main as cli_main
from pyshm.errors import (
    FileAccessError,
    ImageChecksumError,
    PermissionDeniedError,
)
from pyshm.images.format import TRAILER_SIZE, ImageReader

CAP = 64 * 1024


@pytest.fixture
def image(tmp_path, ring_name) -> str:
    path = str(tmp_path / "ring.pyimg")
    with Ring.create(ring_name, CAP) as r, r.producer() as p:
        for i in range(400):
            p.publish(bytes([i % 251]) * 100)
        images.snapshot(r, path)
    return path


def _in_time(fn, seconds: float = 10.0):
    out: dict[str, object] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "blocked: a FIFO opened for reading waits for a writer"
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out.get("value")


@pytest.mark.parametrize("argv", [["inspect", "{p}"], ["restore", "{p}", "--to", "{r}"],
                                  ["export", "{p}", "-o", "{o}"], ["diff", "{p}", "{p}"]])
def test_a_fifo_image_is_refused_at_once(tmp_path, ring_name, capsys, argv):
    fifo = tmp_path / "img.pyimg"
    os.mkfifo(fifo)
    args = [a.format(p=fifo, r=ring_name, o=tmp_path / "out.jsonl") for a in argv]
    rc = _in_time(lambda: cli_main(args))
    err = capsys.readouterr().err
    assert rc != 0 and str(fifo) in err and "Traceback" not in err, err
    assert not os.path.exists(f"/dev/shm/{ring_name}")


def test_a_directory_or_an_unreadable_image_names_the_path(tmp_path, image, capsys,
                                                           monkeypatch):
    rc = cli_main(["inspect", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 1 and f"{tmp_path} is a directory" in err and "Traceback" not in err
    import pyshm.images.format as fmt

    real = os.open

    def deny(path, *a, **k):
        if os.fspath(path) == image:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real(path, *a, **k)

    monkeypatch.setattr(fmt.os, "open", deny)
    with pytest.raises(PermissionDeniedError, match=f"{image}: permission denied"):
        ImageReader(image)
    rc = cli_main(["inspect", image])
    assert rc == 1 and image in capsys.readouterr().err


def test_every_bit_of_the_trailer_padding_is_checked(image):
    size = os.path.getsize(image)
    raw = bytearray(open(image, "rb").read())
    for byte in range(size - 4, size):
        for bit in range(8):
            raw[byte] ^= 1 << bit
            bad = image + ".bad"
            with open(bad, "wb") as f:
                f.write(raw)
            raw[byte] ^= 1 << bit
            with pytest.raises(ImageChecksumError, match="trailer padding") as info:
                ImageReader(bad)
            assert info.value.part == "trailer"
    assert size - 4 >= size - TRAILER_SIZE + 28  # those are the trailer's last 4 bytes
    ImageReader(image).close()  # the original is still accepted


# ------------------------------------------------------------------ a full disk

@pytest.fixture
def tiny_fs(monkeypatch) -> Iterator[str]:
    """A 32 KiB file system: a real tmpfs mount (root, as on CI), else a directory
    whose writes fail with ENOSPC past 32 KiB (injected)."""
    d = tempfile.mkdtemp(prefix="pyshm-tinyfs-")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k,mode=0700", "tmpfs",
                              d], capture_output=True).returncode == 0 \
        if shutil.which("mount") and os.geteuid() == 0 else False
    if not mounted:
        import pyshm.images.format as fmt

        written = {"n": 0}
        real_pwrite, real_write = os.pwrite, os.write

        def full(fd: int, n: int) -> None:
            if os.readlink(f"/proc/self/fd/{fd}").startswith(d):
                written["n"] += n
                if written["n"] > 32 * 1024:
                    raise OSError(errno.ENOSPC, "No space left on device")

        def pwrite(fd, data, off):
            full(fd, len(data))
            return real_pwrite(fd, data, off)

        def write(fd, data):
            full(fd, len(data))
            return real_write(fd, data)

        monkeypatch.setattr(fmt.os, "pwrite", pwrite)
        monkeypatch.setattr(os, "write", write)
    try:
        yield d
    finally:
        if mounted:
            subprocess.run(["umount", d], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


def test_snapshot_on_a_full_disk_is_a_clean_error_and_leaves_nothing(tiny_fs, ring_name,
                                                                     capsys):
    with Ring.create(ring_name, CAP) as r, r.producer() as p:
        for i in range(500):
            p.publish(b"%d" % i * 30)
        target = os.path.join(tiny_fs, "snap.pyimg")
        with pytest.raises(FileAccessError, match="no space left on device"):
            images.snapshot(r, target)
        assert os.listdir(tiny_fs) == []
        rc = cli_main(["snapshot", ring_name, "-o", target])
        err = capsys.readouterr().err
        assert rc == 1 and target in err and "no space left" in err
        assert "Traceback" not in err and os.listdir(tiny_fs) == []


def test_export_is_atomic_0600_and_a_full_disk_leaves_the_old_file(tiny_fs, image,
                                                                    tmp_path, capsys):
    out = tmp_path / "records.jsonl"
    assert cli_main(["export", image, "-o", str(out)]) == 0
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert sum(1 for _ in open(out)) == 400
    npz = tmp_path / "records"  # no suffix: written under exactly this name
    assert cli_main(["export", image, "--format", "npz", "-o", str(npz)]) == 0
    assert npz.exists() and not (tmp_path / "records.npz").exists()
    capsys.readouterr()

    target = os.path.join(tiny_fs, "records.jsonl")
    with open(target, "w") as f:
        f.write("previous\n")
    rc = cli_main(["export", image, "-o", target])
    err = capsys.readouterr().err
    assert rc == 1 and "no space left" in err and "Traceback" not in err
    assert os.listdir(tiny_fs) == ["records.jsonl"]  # no temporary left
    assert open(target).read() == "previous\n"  # the old file is untouched


def test_export_refuses_to_overwrite_its_own_image(image, capsys):
    rc = cli_main(["export", image, "-o", image])
    assert rc == 1 and "image being read" in capsys.readouterr().err
    ImageReader(image).close()



def test_a_window_too_large_for_memory_is_an_image_error(image, monkeypatch):
    import pyshm.images.format as fmt
    from pyshm.errors import ImageError

    def no_memory(*a, **k):
        raise MemoryError

    with ImageReader(image) as r:
        monkeypatch.setattr(fmt.np, "empty", no_memory)
        with pytest.raises(ImageError, match="does not fit in memory"):
            r.read_data()
