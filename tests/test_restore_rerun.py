"""A `restore --in-place` killed with SIGKILL in the middle of its copy: readers refuse
the half-written ring, and running the restore again (the documented recovery) works,
as does removing it. Failed before the fix: the zeroed magic made restore and rm
refuse the segment too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from pyshm import Ring, images
from pyshm.cli import main as cli_main
from pyshm.errors import CorruptSegmentError
from pyshm.repair import read_segment_info

CAP = 256 * 1024

# Killed half-way through each of the two copy paths an in-place restore can take: the
# CPU's copy of the window, and the engine's copy mode (the default when an engine is
# usable, so `pyshm restore --in-place` takes it).
KILLED_MID_COPY = {
    "cpu": r'''
import importlib, sys, time
R = importlib.import_module("pyshm.images.restore")
real = R._copy_window
def half(data, src, start, cap):
    real(data, src[:len(src) // 2], start, cap)   # half the window is in the ring
    print("half", flush=True)
    time.sleep(120)                                 # ... and the process is killed here
R._copy_window = half
R.restore(sys.argv[1], sys.argv[2], in_place=True, engine=None)
''',
    "engine": r'''
import importlib, sys, time
R = importlib.import_module("pyshm.images.restore")
real = R._copy_by_engine
def half(copier, reader, source, data, cap, chunks, name):
    real(copier, reader, source, data, cap, chunks[:len(chunks) // 2], name)
    print("half", flush=True)
    time.sleep(120)
R._copy_by_engine = half
R.restore(sys.argv[1], sys.argv[2], in_place=True, engine="cpu")
''',
}


def _records(name: str) -> list[tuple[int, bytes]]:
    with Ring.attach(name, readonly=True) as r:
        return [(rec.sequence, rec.payload) for rec in r.records()]


def _killed_restore(image: str, target: str, path: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", KILLED_MID_COPY[path], image, target],
                            stdout=subprocess.PIPE, text=True, cwd="/")
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "half"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)


@pytest.fixture
def setup(tmp_path, ring_name):
    image = str(tmp_path / "md.pyimg")
    with Ring.create(ring_name, CAP) as r, r.producer() as p:
        for i in range(3000):
            p.publish(b"%06d" % i * 10)
        images.snapshot(r, image)
        want = _records(ring_name)
        for i in range(3000, 3500):  # the ring moves on after the image
            p.publish(b"later %d" % i)
    return image, want


@pytest.mark.parametrize("path", sorted(KILLED_MID_COPY))
def test_a_killed_in_place_restore_can_be_run_again(setup, ring_name, capsys, path):
    image, want = setup
    _killed_restore(image, ring_name, path)
    with pytest.raises(CorruptSegmentError, match="not a pyshm ring"):
        Ring.attach(ring_name)  # no reader takes a half-restored ring for a ring
    info = read_segment_info(f"/dev/shm/{ring_name}")
    assert info is not None and info.restoring and not info.stale
    assert cli_main(["ls"]) == 0
    assert "restore interrupted" in capsys.readouterr().out
    assert cli_main(["restore", image, "--to", ring_name, "--in-place"]) == 0, \
        capsys.readouterr().err
    assert _records(ring_name) == want
    with Ring.attach(ring_name) as r, r.producer() as p:
        assert p.publish(b"next") == want[-1][0] + 1


@pytest.mark.parametrize("path", sorted(KILLED_MID_COPY))
def test_a_killed_in_place_restore_can_be_removed(setup, ring_name, path):
    image, _ = setup
    _killed_restore(image, ring_name, path)
    assert cli_main(["rm", ring_name]) == 0
    assert not os.path.exists(f"/dev/shm/{ring_name}")


def test_two_in_place_restores_never_run_at_once(setup, ring_name):
    from pyshm.errors import SegmentLockedError
    from pyshm.lock import SegmentLock

    image, _ = setup
    with SegmentLock.acquire(ring_name, "restore"):  # another restore in progress
        with pytest.raises(SegmentLockedError, match=f"pid {os.getpid()}"):
            images.restore(image, ring_name, in_place=True)
