"""Data-safety edges: destructive commands, half-finished set-ups, persistence intent,
files that are not what they claim to be. Each test failed before its fix."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading

import pytest

from pyshm import Ring, layout
from pyshm.cli import main as cli_main
from pyshm.errors import (
    CorruptSegmentError,
    FileAccessError,
    InvalidParameterError,
)
from pyshm.replica import Replica

CAP = 16 * 1024


def shm(name: str) -> str:
    return f"/dev/shm/{name}"


# ------------------------------------------------------------------ pyshm rm

def test_rm_dry_run_never_deletes(ring_name, capsys):
    Ring.create(ring_name, CAP).close()
    for flag in ("--dry-run", "-n"):
        assert cli_main(["rm", flag, ring_name]) == 0
        assert os.path.exists(shm(ring_name)), f"rm {flag} deleted the ring"
        assert "would remove" in capsys.readouterr().out
    assert cli_main(["rm", ring_name]) == 0
    assert not os.path.exists(shm(ring_name))


HOLD = r'''
import sys, time
from pyshm import Ring
r = Ring.attach(sys.argv[1])
p = r.producer()
print("ready", flush=True)
time.sleep(120)
'''


def test_rm_refuses_a_ring_in_use_unless_forced(ring_name, capsys, tmp_path):
    Ring.create(ring_name, CAP).close()
    # cwd: not the source tree, which `-c` would put first on sys.path
    proc = subprocess.Popen([sys.executable, "-c", HOLD, ring_name], stdout=subprocess.PIPE,
                            text=True, cwd=tmp_path)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        assert cli_main(["rm", ring_name]) == 1
        err = capsys.readouterr().err
        assert "in use" in err and str(proc.pid) in err and "--force" in err
        assert os.path.exists(shm(ring_name))
        assert cli_main(["rm", "--force", ring_name]) == 0
        assert not os.path.exists(shm(ring_name))
    finally:
        proc.kill()
        proc.wait(10)


def test_rm_removes_a_damaged_pyshm_segment_but_not_other_files(ring_name, tmp_path):
    with Ring.create(ring_name, CAP) as r:
        r.segment.buf[0x10:0x18] = (12345).to_bytes(8, "little")  # capacity damaged
    assert cli_main(["rm", ring_name]) == 0
    assert not os.path.exists(shm(ring_name))
    other = tmp_path / "notes.txt"
    other.write_bytes(b"x" * 8192)
    assert cli_main(["rm", str(other)]) == 1 and other.exists()


# ------------------------------------------------------------------ persistence intent

def test_persistence_intent(names, tmp_path):
    ring_name, replica_name = names
    with Ring.create(ring_name, CAP) as r:
        assert not r.params.ephemeral  # the default: persistent
    os.unlink(shm(ring_name))
    with Ring.create(ring_name, CAP, ephemeral=True) as r:
        assert r.flags & layout.FLAG_EPHEMERAL
        r.producer().publish(b"x")
        # a replica is kept unless asked otherwise, and an image carries no intent
        with Replica.create(replica_name, r) as rep:
            assert not rep.params.ephemeral
        from pyshm import images
        images.snapshot(r, tmp_path / "x.pyimg")
    from pyshm.images.format import ImageReader
    with ImageReader(tmp_path / "x.pyimg") as rd:
        assert not rd.header.params.flags & layout.FLAG_EPHEMERAL
    from pyshm.images import restore
    restore(tmp_path / "x.pyimg", ring_name, overwrite=True)
    with Ring.attach(ring_name) as r:
        assert not r.params.ephemeral  # a restored ring is the user's: persistent


# ------------------------------------------------------------------ creation

def test_huge_capacity_is_refused_before_anything_is_created(ring_name):
    for cap in (1 << 40, 1 << 45):
        with pytest.raises(InvalidParameterError, match="does not fit|free"):
            Ring(ring_name, create=True, capacity=cap)
        assert not os.path.exists(shm(ring_name))
    with pytest.raises(InvalidParameterError, match="max record"):
        Ring(ring_name, create=True, capacity=1 << 34, max_record=(1 << 31) + 8)
    assert not os.path.exists(shm(ring_name))
    # the default max record of a very large ring fits its int32 length field
    assert layout.default_max_record(1 << 46) == layout.MAX_RECORD_LIMIT


@pytest.mark.parametrize("where", ["ftruncate", "header", "prefault", "attach"])
def test_a_failed_create_leaves_nothing(ring_name, monkeypatch, where):
    import pyshm.ring as ring_mod
    import pyshm.segment as seg_mod

    def boom(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    if where == "ftruncate":
        monkeypatch.setattr(seg_mod.os, "ftruncate", boom)
        expect: type[Exception] = FileAccessError
    elif where == "header":
        monkeypatch.setattr(ring_mod.layout, "pack_static_header", boom)
        expect = OSError
    elif where == "prefault":
        monkeypatch.setattr(seg_mod.Segment, "prefault", boom)
        expect = OSError
    else:
        monkeypatch.setattr(ring_mod.Ring, "_attach", boom)
        expect = OSError
    with pytest.raises(expect):
        Ring(ring_name, create=True, capacity=CAP, prefault=True)
    assert not os.path.exists(shm(ring_name)), f"half-created segment left ({where})"


def test_replicate_with_a_bad_engine_leaves_no_replica(names, capsys):
    ring_name, replica_name = names
    Ring.create(ring_name, CAP).close()
    assert cli_main(["replicate", ring_name, "--to", replica_name, "--engine", "bogus",
                     "--duration", "0.1"]) == 1
    assert "bogus" in capsys.readouterr().err
    assert not os.path.exists(shm(replica_name))


# ------------------------------------------------------------------ not a regular file

def _in_time(fn, seconds: float = 10.0):
    """Run fn in a thread; fail (instead of hanging the suite) if it blocks."""
    out: dict[str, object] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "call blocked (a FIFO open waiting for a writer?)"
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out.get("value")


def test_a_fifo_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(CorruptSegmentError, match="not a regular file"):
        _in_time(lambda: Ring.attach(str(fifo), readonly=True))


def test_a_directory_is_a_clear_error(tmp_path):
    with pytest.raises(CorruptSegmentError, match=f"{tmp_path} is not a regular file"):
        Ring.attach(str(tmp_path), readonly=True)
    with pytest.raises(FileAccessError, match=str(tmp_path)):
        Ring.attach(str(tmp_path))  # read-write: EISDIR


def test_cli_create_in_a_missing_directory_says_so(tmp_path, capsys):
    assert cli_main(["create", str(tmp_path / "no" / "ring"), "--capacity", "16K"]) == 1
    assert "does not exist" in capsys.readouterr().err



# ------------------------------------------------------------------ one writer per replica

REPLICATE = r'''
import sys
from pyshm.cli import main
sys.exit(main(["replicate", sys.argv[1], "--to", sys.argv[2], "--quiet", "--interval",
               "0.05"]))
'''


def _replicate(ring: str, replica: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", REPLICATE, ring, replica],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd="/")


def _wait_started(proc: subprocess.Popen) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("replicating"):
            return
    raise AssertionError(f"replicate did not start (exit {proc.wait(10)})")


def test_a_replica_has_one_writer_and_a_killed_one_is_replaced(names):
    from pyshm.engine import open_engine
    from pyshm.errors import SegmentLockedError

    ring_name, replica_name = names
    with Ring.create(ring_name, CAP) as ring:
        ring.producer().publish(b"x" * 100)
        first = _replicate(ring_name, replica_name)
        try:
            _wait_started(first)
            second = _replicate(ring_name, replica_name)
            _, err = second.communicate(timeout=60)
            assert second.returncode == 1, err
            assert f"locked by pid {first.pid}" in err and "one writer" in err
            assert "Traceback" not in err
            with pytest.raises(SegmentLockedError) as info:
                open_engine("cpu", ring, replica_name)
            assert info.value.pid == first.pid
            os.kill(first.pid, signal.SIGKILL)  # the holder dies without cleaning up
            first.wait(10)
            with open_engine("cpu", ring, replica_name) as eng:  # the kernel released it
                eng.start()
                eng.sync(5)
                assert eng.mirrored == ring.tail
        finally:
            if first.poll() is None:
                first.kill()
            first.wait(10)


def test_two_supervisors_on_one_ring(tmp_path, names):
    from pyshm.config import load_config
    from pyshm.errors import SegmentLockedError
    from pyshm.supervisor import Supervisor

    ring_name, replica_name = names
    (tmp_path / "a.yaml").write_text(
        f"state_dir: {tmp_path}/state\nrings:\n  - name: {ring_name}\n    capacity: 16K\n"
        f"    replica: {{name: {replica_name}, engine: cpu}}\n")
    one = Supervisor(load_config(str(tmp_path / "a.yaml")))
    one.start()
    try:
        two = Supervisor(load_config(str(tmp_path / "a.yaml")))
        with pytest.raises(SegmentLockedError, match=f"locked by pid {os.getpid()}"):
            two.start()
        assert os.path.exists(shm(ring_name)) and os.path.exists(shm(replica_name))
        # and no other engine can take the replica while `one` runs, even between two of
        # its engine children
        with Ring.attach(ring_name) as ring:
            from pyshm.engine import open_engine
            with pytest.raises(SegmentLockedError):
                open_engine("cpu", ring, replica_name)
    finally:
        one.shutdown()


def test_a_failed_supervisor_start_removes_what_it_created(tmp_path, names):
    from pyshm.config import load_config
    from pyshm.supervisor import Supervisor

    ring_name, replica_name = names
    Ring.create(replica_name, CAP).close()  # a primary ring where the replica should be
    (tmp_path / "a.yaml").write_text(
        f"state_dir: {tmp_path}/state\nrings:\n  - name: {ring_name}\n    capacity: 16K\n"
        f"    replica: {{name: {replica_name}, engine: cpu}}\n")
    sup = Supervisor(load_config(str(tmp_path / "a.yaml")))
    with pytest.raises(InvalidParameterError, match="not a replica|primary"):
        sup.start()
    assert not os.path.exists(shm(ring_name)), "the ring it created was left behind"
    assert os.path.exists(shm(replica_name)), "what it did not create is not its to remove"


def test_snapshot_retention_keeps_other_rings_images(tmp_path):
    from pyshm.supervisor import IMAGE_SUFFIX, SnapshotSchedule

    other = tmp_path / f"md-2-20260101T000000-000000001{IMAGE_SUFFIX}"
    other.write_bytes(b"x")
    mine = [tmp_path / f"md-20260101T00000{i}-00000000{i}{IMAGE_SUFFIX}" for i in range(3)]
    for m in mine:
        m.write_bytes(b"x")

    class Cfg:
        directory = str(tmp_path)
        keep = 1

    class RC:
        name = "md"

    sched = SnapshotSchedule.__new__(SnapshotSchedule)
    sched.cfg, sched.ring = Cfg(), RC()
    sched.prune()
    assert other.exists(), "pruning ring md deleted an image of ring md-2"
    assert [m.exists() for m in mine] == [False, False, True]


# ------------------------------------------------------------------ loss accounting

def test_a_consumer_lapped_before_its_first_read_counts_the_loss(ring_name):
    with Ring.create(ring_name, CAP) as r:
        oldest = r.consumer()            # registered on an empty ring
        latest = r.consumer("latest")
        assert oldest.start_sequence == latest.start_sequence == 0
        p = r.producer()
        for _ in range(2000):            # laps both many times before they read
            p.publish(b"x" * 100)
        for c in (oldest, latest):
            got = [m.sequence for m in c]
            assert got[0] > 0 and got == list(range(got[0], 2000))
            assert c.lost == got[0], "records lost before the first read went uncounted"
            assert c.lost + len(got) == 2000 and c.laps >= 1


def test_registration_on_a_busy_ring_counts_nothing_it_did_not_miss(ring_name):
    with Ring.create(ring_name, CAP) as r:
        p = r.producer()
        for _ in range(500):
            p.publish(b"y" * 100)
        oldest, latest = r.consumer(), r.consumer("latest")
        assert latest.start_sequence == 500
        first = oldest.start_sequence
        assert first is not None and 0 < first < 500
        for _ in range(10):
            p.publish(b"z")
        assert [m.sequence for m in latest] == list(range(500, 510)) and latest.lost == 0
        assert [m.sequence for m in oldest] == list(range(first, 510)) and oldest.lost == 0


def test_latest_is_exact_when_the_header_sequence_lags(ring_name):
    # a producer killed between storing tail and next_sequence leaves the header one
    # behind: the registration baseline comes from the records, not from that word
    with Ring.create(ring_name, CAP) as r:
        p = r.producer()
        for _ in range(5):
            p.publish(b"q")
        p.close()
        r.segment.buf[0x200:0x208] = (4).to_bytes(8, "little")  # one behind
        c = r.consumer("latest")
        assert c.start_sequence == 5
        p = r.producer()
        assert p.publish(b"next") == 5
        assert [m.sequence for m in c] == [5] and c.lost == 0


def test_a_replica_is_not_promoted_under_its_engine(names):
    from pyshm.engine import open_engine
    from pyshm.errors import SegmentLockedError
    from pyshm.replica import promote

    ring_name, replica_name = names
    with Ring.create(ring_name, CAP) as ring:
        ring.producer().publish(b"x")
        Replica.create(replica_name, ring).close()
        with open_engine("cpu", ring, replica_name) as eng:
            eng.start()
            eng.sync(5)
            with pytest.raises(SegmentLockedError, match=f"pid {os.getpid()}"):
                promote(replica_name)
        assert promote(replica_name).next_sequence == 1  # engine gone: allowed


def test_a_fifo_configuration_is_refused_not_waited_on(tmp_path):
    from pyshm.config import load_config
    from pyshm.errors import ConfigError

    fifo = tmp_path / "run.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        _in_time(lambda: load_config(str(fifo)))
