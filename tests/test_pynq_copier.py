"""The ``pynq`` engine's copy mode (PynqCopier) off the board: restore through the IP's
restore copy mode with the ring and the staging buffer in u-dma-buf buffers.

No board here: the buffers are plain files described by a fake sysfs tree (PYSHM_SYSFS,
the fake_udmabuf fixture), and the IP is the RTL in a simulator (SimBoard) that maps them
at their bus addresses, so the copier's bus addresses, placement and jobs are the ones a
board gets. The refusals run against a scripted register window (no simulator). The same
copier through the real pynq stack: tests/test_driver_pynq.py.
"""

from __future__ import annotations

import os
import sys

import pytest
from pyshm.driver import regmap as R
from pyshm.driver.copier import STAGING_ENV, PynqCopier
from pyshm.driver.ip import DeviceBase, IPMismatchError, RefusedError, RingMirror
from pyshm.driver.sim import SimBoard

from pyshm import layout as L
from pyshm.cli import main
from pyshm.errors import EngineError, ImageChecksumError, InvalidParameterError
from pyshm.images import format as fmt
from pyshm.images import restore
from pyshm.ring import Ring

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "conformance"))
from test_restore_conformance import CAP, wrapped_image  # noqa: E402

RING_PHYS = 0x3_0000_0000   # above 4 GiB: the _HI words matter
STAGE_PHYS = 0x4_0000_0000


@pytest.fixture
def image(tmp_path, new_name):
    """The conformance suite's image (a wrapped 16 KiB ring in 4 KiB chunks whose window
    starts mid-page) and the chunk that holds the ring's wrap."""
    path = wrapped_image(tmp_path / "r.pyimg", new_name())
    with fmt.ImageReader(path) as r:
        h = r.header
        wrap = (CAP - (h.first_position & (CAP - 1))) // h.chunk_size
    return path, wrap


def _damaged(path, chunk: int, out) -> str:
    out.write_bytes(path.read_bytes())
    with fmt.ImageReader(out) as r:
        off = r.chunks[chunk].offset + 100
    with open(out, "r+b") as f:
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0x08]))
    return str(out)


def _old_ring(name: str, **kw) -> None:
    with Ring(name, create=True, capacity=CAP, **kw) as ring:
        p = ring.producer()
        p.publish(b"old contents")
        p.close()


def _restore_bytes(seg_bytes: bytes) -> bytes:
    """What a restore decides: the segment without this segment's identity (creation
    time, creator pid, name, where it lives, ring id)."""
    b = bytearray(seg_bytes)
    b[L.OFF_CREATED_NS:L.OFF_PRODUCER_PID] = bytes(L.OFF_PRODUCER_PID - L.OFF_CREATED_NS)
    b[L.OFF_RING_ID:L.OFF_RING_ID + 8] = bytes(8)
    return bytes(b)


def test_in_place_restore_through_the_ip_matches_the_cpu(image, new_name, fake_udmabuf,
                                                         tmp_path):
    """A ring in a u-dma-buf buffer restored in place by the IP (source: the staging
    buffer, at its bus address; each pass cut into jobs of two chunks, the room of a
    small CRC table) is byte-identical to the CPU copier's restore and keeps its bus
    address; a damaged chunk (the wrap's) is the CPU's ImageChecksumError, with
    the target untouched."""
    path, wrap = image
    ring_dev = fake_udmabuf("udmabuf0", L.segment_size(CAP), RING_PHYS, dma_coherent=1)
    stage_dev = fake_udmabuf("udmabuf1", 64 << 10, STAGE_PHYS, dma_coherent=1)
    name, ref = new_name(), new_name()
    _old_ring(name, device=ring_dev)
    _old_ring(ref)
    bad = _damaged(path, wrap, tmp_path / "bad.pyimg")
    try:
        with SimBoard(ring_dev, stage_dev) as board, \
                PynqCopier(ip=board.ip, staging=stage_dev) as copier:
            # a CRC table for 2 chunks: each pass is cut into IP jobs of 2 chunks
            copier.table_entries = 2
            jobs: list[int] = []
            run = board.ip.restore_job
            board.ip.restore_job = lambda **kw: jobs.append(kw["length"]) or run(**kw)
            info = restore(path, name, in_place=True, engine=copier)
            assert info.engine == "pynq"
            with fmt.ImageReader(path) as r:
                n = len(r.chunks)
            assert len(jobs) == 2 * -(-n // 2) and max(jobs) <= 2 * 4096, jobs  # 2 passes
            del board.ip.restore_job
            copier.table_entries = 16384
            assert restore(path, ref, in_place=True, engine="cpu").engine == "cpu"
            with open(ring_dev, "rb") as f, open(f"/dev/shm/{ref}", "rb") as g:
                got, want = f.read(), g.read()
            assert _restore_bytes(got) == _restore_bytes(want)
            with Ring(name) as r:
                assert r.params.data_phys_addr == RING_PHYS + L.OFF_DATA  # still DMA-able
                assert r.next_sequence == info.next_sequence
            errors = []
            for engine in ("cpu", copier):
                target = ref if engine == "cpu" else name
                before = open(os.path.realpath(f"/dev/shm/{target}"), "rb").read()
                with pytest.raises(ImageChecksumError) as exc:
                    restore(bad, target, in_place=True, engine=engine)
                assert open(os.path.realpath(f"/dev/shm/{target}"), "rb").read() == before
                errors.append((exc.value.chunk, str(exc.value)))
            assert errors[0] == errors[1] and errors[0][0] == wrap
    finally:
        os.unlink(f"/dev/shm/{name}")


# ---- refusals, against a scripted register window -------------------------------------

BASE = 0xA000_0000


class Window(DeviceBase):  # type: ignore[misc,valid-type]
    """Answers ID, VERSION, CAPABILITIES and CONTROL; logs every register touched."""

    capabilities = {"REGISTER_RW": True}

    def __init__(self, minor: int = R.IP_VERSION & 0xFFFF,
                 caps: int = R.CAPABILITIES_CRC_TABLE_MASK | R.CAPABILITIES_RESTORE_MASK):
        super().__init__("window")
        self.regs = {R.ID: R.IP_ID, R.VERSION: (R.IP_VERSION & ~0xFFFF) | minor,
                     R.CAPABILITIES: caps, R.CONTROL: 0}
        self.touched: list[int] = []

    def has_capability(self, cap: str) -> bool:
        return bool(self.capabilities.get(cap, False))

    def read_registers(self, address: int, length: int) -> bytes:
        self.touched.append(address - BASE)
        return self.regs.get(address - BASE, 0).to_bytes(length, "little")

    def write_registers(self, address: int, data: bytes) -> None:
        self.touched.append(address - BASE)
        self.regs[address - BASE] = int.from_bytes(data, "little")


def _ip(window: Window) -> RingMirror:
    return RingMirror({"phys_addr": BASE, "addr_range": R.ADDR_RANGE, "device": window})


RESTORE_REGS = {v for k, v in vars(R).items() if k.startswith("RESTORE_")
                and isinstance(v, int) and not k.endswith(("_MASK", "_SHIFT"))}


@pytest.mark.parametrize("minor,caps,why", [
    (5, R.CAPABILITIES_CRC_TABLE_MASK, "came with map 1.6"),
    (6, R.CAPABILITIES_CRC_TABLE_MASK, "RESTORE=0")])
def test_ip_without_restore_mode_is_refused_first(minor, caps, why, fake_udmabuf):
    """An IP older than map 1.6, or built with RESTORE=0: IPMismatchError naming why and
    the CPU engine, before the staging buffer is looked at and before any RESTORE_*
    register is touched."""
    window = Window(minor, caps)
    with pytest.raises(IPMismatchError, match=f"no restore copy mode.*{why}.*engine 'cpu'"):
        PynqCopier(ip=_ip(window), staging="/nonexistent/udmabuf")
    assert window.touched and not RESTORE_REGS & set(window.touched)


def test_staging_buffer_refusals_name_the_fix(image, new_name, fake_udmabuf, monkeypatch):
    """No staging buffer configured, one that does not exist, one that is not coherent,
    one too small for the image, one holding a ring: each a clear error naming the option
    and the CPU engine; a restore refused for it leaves the target as it was."""
    path, _ = image
    monkeypatch.delenv(STAGING_ENV, raising=False)
    with pytest.raises(EngineError, match=f"none is configured: set {STAGING_ENV}.*'cpu'"):
        PynqCopier(ip=_ip(Window()))
    with pytest.raises(EngineError, match="staging buffer .*does not exist.*'cpu'"):
        PynqCopier(ip=_ip(Window()), staging="/nonexistent/udmabuf7")
    warm = fake_udmabuf("udmabuf2", 64 << 10, STAGE_PHYS, dma_coherent=0)
    with pytest.raises(EngineError, match="not DMA-coherent.*dma-coherent"):
        PynqCopier(ip=_ip(Window()), staging=warm)
    small = fake_udmabuf("udmabuf3", 8 << 10, STAGE_PHYS + (1 << 20))
    monkeypatch.setenv(STAGING_ENV, small)  # the environment variable configures it
    ring_dev = fake_udmabuf("udmabuf4", L.segment_size(CAP), RING_PHYS)
    name = new_name()
    _old_ring(name, device=ring_dev)
    try:
        before = open(ring_dev, "rb").read()
        with PynqCopier(ip=_ip(Window())) as copier:
            assert copier.staging.device == small
            with pytest.raises(EngineError, match="holds 8,192 bytes; this restore needs "
                                                  r"2\d,\d{3}.*larger buffer.*'cpu'"):
                restore(path, name, in_place=True, engine=copier)
        with PynqCopier(ip=_ip(Window()), staging=ring_dev) as copier:  # holds the ring
            with pytest.raises(EngineError, match="holds a ring"):
                copier.staging_buffer(4096, 0)
        assert open(ring_dev, "rb").read() == before
    finally:
        os.unlink(f"/dev/shm/{name}")


def test_target_must_be_dma_able(image, new_name, fake_udmabuf, tmp_path):
    """A ring in ordinary shared memory: restore(engine=<pynq copier>) refuses it before
    anything changes (asked for by name, the engine does not quietly hand the work to the
    CPU); the copier itself refuses to attach it, naming the problem; so does a ring
    whose buffer is not DMA-coherent. A mirroring IP is refused before any job."""
    path, _ = image
    stage = fake_udmabuf("udmabuf5", 64 << 10, STAGE_PHYS)
    name = new_name()
    _old_ring(name)
    before = open(f"/dev/shm/{name}", "rb").read()
    window = Window()
    with PynqCopier(ip=_ip(window), staging=stage) as copier:
        with pytest.raises(InvalidParameterError, match="only into DMA-able memory.*'cpu'"):
            restore(path, name, in_place=True, engine=copier)
        with pytest.raises(InvalidParameterError, match="only into DMA-able memory"):
            restore(path, new_name(), engine=copier)
        with Ring(name) as r:
            with pytest.raises(EngineError, match="not in DMA-able memory"):
                copier.attach_target(r.segment)
        warm = fake_udmabuf("udmabuf6", L.segment_size(CAP), RING_PHYS, dma_coherent=0)
        wname = new_name()
        _old_ring(wname, device=warm)
        try:
            with Ring(wname) as r:
                with pytest.raises(EngineError, match="not DMA-coherent"):
                    copier.attach_target(r.segment)
        finally:
            os.unlink(f"/dev/shm/{wname}")
        window.regs[R.CONTROL] = R.CONTROL_ENABLE_MASK
        src = copier.staging_buffer(4096, 0)
        with pytest.raises(EngineError, match="is mirroring.*stop that engine"):
            copier.verify(src, [])
        del src
    assert open(f"/dev/shm/{name}", "rb").read() == before
    assert not RESTORE_REGS & set(window.touched)


def test_board_lookup_coherency_and_buffer_sharing(monkeypatch, fake_udmabuf, new_name):
    """Without ip= the copier takes the overlay's IP and refuses to run while HPC
    coherency is off (LPD_APU.brdc_inner clear, read through pynq.MMIO), naming the CPU
    engine, unless check_coherency=False. An IP that refuses the target's address (a job
    of another process runs) is refused; so is a ring in the staging buffer itself as a
    target."""
    import pyshm.driver.engine as E

    window = Window()
    monkeypatch.setattr(E, "find_mirror_ip", lambda overlay=None, ip_name=None: _ip(window))
    apu = {"word": 0}

    class FakePynq:
        class MMIO:
            def __init__(self, base, length):
                assert (base, length) == (E.LPD_APU_ADDR, 4)

            def read(self, offset):
                return apu["word"]

    monkeypatch.setattr(E, "_import_pynq", lambda: FakePynq)
    stage = fake_udmabuf("udmabuf5", L.segment_size(CAP), STAGE_PHYS)
    with pytest.raises(EngineError, match="HPC coherency is off.*engine 'cpu'"):
        PynqCopier(staging=stage)
    PynqCopier(staging=stage, check_coherency=False).close()
    apu["word"] = E.LPD_APU_BRDC_INNER
    name, other = new_name(), new_name()
    _old_ring(other, device=fake_udmabuf("udmabuf9", L.segment_size(CAP), RING_PHYS))
    try:
        with PynqCopier(staging=stage) as copier, Ring(other) as r:
            assert copier.ip.mmio.device is window
            copier.attach_target(r.segment)
            window.regs[R.STATUS] = R.STATUS_CONFIG_REFUSED_MASK
            src = copier.staging_buffer(4096, 0)
            with pytest.raises(RefusedError, match="another restore job is running"):
                copier.verify(src, [])
            del src
        _old_ring(name, device=stage)
        with PynqCopier(staging=stage) as copier, Ring(name) as r:
            with pytest.raises(EngineError, match="lives in the staging buffer"):
                copier.attach_target(r.segment)
    finally:
        os.unlink(f"/dev/shm/{other}")
        if os.path.lexists(f"/dev/shm/{name}"):
            os.unlink(f"/dev/shm/{name}")


def test_cli_restore_engine_pynq_off_board(image, new_name, capsys):
    """Off the board `pyshm restore --engine pynq` says why in one line, no traceback,
    and names the CPU engine; --help names the engine and its staging buffer."""
    path, _ = image
    assert main(["restore", str(path), "--to", new_name(), "--engine", "pynq"]) == 1
    err = capsys.readouterr().err
    assert "pynq" in err and "engine 'cpu'" in err and "Traceback" not in err, err
    with pytest.raises(SystemExit) as exc:
        main(["restore", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "pynq" in out and STAGING_ENV in out


def test_new_ring_in_a_udmabuf_through_the_ip(image, new_name, fake_udmabuf, tmp_path,
                                              capsys):
    """restore(image, NAME, device=DEV, engine=pynq): one pass by the IP into a new ring
    built in the u-dma-buf buffer, which gets its name only when whole: byte-identical to
    the CPU copier's new ring, with its bus address in the header. A damaged chunk is the
    CPU's ImageChecksumError and leaves no name, no temporary and a buffer free for the
    next ring. The CPU path builds the same ring in a buffer (`pyshm restore
    --udmabuf`)."""
    path, wrap = image
    ring_dev = fake_udmabuf("udmabuf0", L.segment_size(CAP), RING_PHYS, 1)
    cpu_dev = fake_udmabuf("udmabuf8", L.segment_size(CAP), RING_PHYS + (1 << 20), 1)
    stage_dev = fake_udmabuf("udmabuf1", 64 << 10, STAGE_PHYS, 1)
    bad = _damaged(path, wrap, tmp_path / "bad.pyimg")
    name, ref, cpu_name = new_name(), new_name(), new_name()
    errors = []
    with pytest.raises(ImageChecksumError) as exc:
        restore(bad, new_name(), engine="cpu")
    errors.append(str(exc.value))
    with SimBoard(ring_dev, stage_dev, capacity=CAP) as board, \
            PynqCopier(ip=board.ip, staging=stage_dev) as copier:
        with pytest.raises(ImageChecksumError) as exc:
            restore(bad, name, device=ring_dev, engine=copier)
        errors.append(str(exc.value))
        assert not os.path.lexists(f"/dev/shm/{name}")
        assert not [n for n in os.listdir("/dev/shm") if n.startswith(name + ".restore-")]
        info = restore(path, name, device=ring_dev, engine=copier)  # the buffer is free
        assert info.engine == "pynq"
    assert errors[0] == errors[1] and f"chunk {wrap}" in errors[0]
    assert restore(path, ref, engine="cpu").engine == "cpu"
    assert main(["restore", str(path), "--to", cpu_name, "--udmabuf", cpu_dev,
                 "--engine", "none"]) == 0
    assert "CPU path" in capsys.readouterr().out
    try:
        with open(f"/dev/shm/{ref}", "rb") as f:
            want = _restore_bytes(f.read())
        for n, dev, phys in ((name, ring_dev, RING_PHYS),
                             (cpu_name, cpu_dev, RING_PHYS + (1 << 20))):
            assert os.path.realpath(f"/dev/shm/{n}") == dev
            with open(dev, "rb") as f:
                assert _restore_bytes(f.read()) == want, n
            with Ring(n) as r:
                assert r.params.data_phys_addr == phys + L.OFF_DATA
                assert r.next_sequence == info.next_sequence
        assert main(["restore", str(path), "--to", new_name(), "--in-place",
                     "--udmabuf", cpu_dev]) == 1
        assert "--udmabuf is for a new ring" in capsys.readouterr().err
        with pytest.raises(InvalidParameterError, match="device= is for a new ring"):
            restore(path, name, in_place=True, device=cpu_dev)
    finally:
        for n in (name, cpu_name):
            os.unlink(f"/dev/shm/{n}")


_HOLDER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from test_pynq_copier import Window, _ip
from pyshm.driver.copier import PynqCopier
copier = PynqCopier(ip=_ip(Window()), staging=sys.argv[2])
print("holding", flush=True)
time.sleep(120)
"""


def test_one_user_of_the_ip_across_processes(fake_udmabuf, ip_lock_dir, new_name,
                                             monkeypatch, image, capsys):
    """A restore in another process holds the IP (through PynqCopier's own path): a second
    copier, a pynq engine and `pyshm restore --engine pynq` on the same IP are refused
    naming its pid, before touching a register and releasing what they had set up; once
    the holder is killed with kill -9 the kernel has released the lock and the copier
    gets the IP. The lock file is 0600."""
    import signal
    import stat
    import subprocess

    import pyshm.driver.engine as E
    from pyshm.driver.owner import IPBusyError, claim_ip, ip_lock_path

    from pyshm.lock import SegmentLock
    from pyshm.replica import Replica

    stage = fake_udmabuf("udmabuf6", 64 << 10, STAGE_PHYS)
    # cwd: not the checkout, whose source tree (no compiled core there) would shadow the
    # installed package on the child's sys.path
    child = subprocess.Popen([sys.executable, "-c", _HOLDER, os.path.dirname(__file__), stage],
                             stdout=subprocess.PIPE, text=True, cwd=ip_lock_dir)
    try:
        assert child.stdout is not None and child.stdout.readline() == "holding\n"
        lock = ip_lock_path(BASE)
        assert os.path.dirname(lock) == ip_lock_dir
        assert stat.S_IMODE(os.stat(lock).st_mode) == 0o600
        window = Window()
        with pytest.raises(IPBusyError, match=rf"(?s)0x{BASE:x} .* in use by pid {child.pid} "
                                              r"\(.*python.*\), restoring an image through "
                                              r"its copy mode: .*stop that engine or wait for "
                                              r"that restore, or restore with engine 'cpu'"
                           ) as refused:
            PynqCopier(ip=_ip(window), staging=stage)
        assert refused.value.pid == child.pid and window.touched == []

        # the engine's path: refused after the replica is claimed, which it gives back
        ring_name, rep_name = new_name(), new_name()
        ring, rep = Ring(ring_name, create=True, capacity=CAP), None
        try:
            rep = Replica.create(rep_name, ring)
            monkeypatch.setitem(sys.modules, "pynq", type(sys)("pynq"))
            monkeypatch.setattr(E, "find_mirror_ip", lambda *a: _ip(window))
            with pytest.raises(IPBusyError, match=rf"(?s)in use by pid {child.pid} .*, restoring "
                                                  r".*mirror with engine 'cpu'"):
                E.PynqEngine(ring_name, rep_name)
            assert window.touched == []
            SegmentLock.acquire(rep_name, "engine").release()

            # the CLI: one line naming the holder, no traceback
            class FakePynq:
                class MMIO:
                    def __init__(self, base, length):
                        pass

                    def read(self, offset):
                        return E.LPD_APU_BRDC_INNER

            monkeypatch.setattr(E, "_import_pynq", lambda: FakePynq)
            monkeypatch.setenv(STAGING_ENV, stage)
            capsys.readouterr()
            assert main(["restore", str(image[0]), "--to", new_name(), "--engine", "pynq"]) == 1
            err = capsys.readouterr().err
            assert f"in use by pid {child.pid}" in err and "Traceback" not in err, err
            assert window.touched == []
        finally:
            if rep is not None:
                rep.close()
                rep.unlink()
            ring.close()
            ring.unlink()

        child.send_signal(signal.SIGKILL)
        child.wait()
        # the dead holder's text stays in the file; a new holder that has not written
        # its own yet (here: a bare flock) is not described by it
        import fcntl
        bare = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(bare, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with open(lock) as f:
                assert f.read().startswith(f"{child.pid} restoring")
            with pytest.raises(IPBusyError, match=f"in use by pid {os.getpid()}") as refused:
                claim_ip(_ip(Window()), "wait", "a test")
            assert "restoring" not in str(refused.value)
        finally:
            os.close(bare)
        with PynqCopier(ip=_ip(Window()), staging=stage) as copier:
            with pytest.raises(IPBusyError, match=f"in use by pid {os.getpid()} .*, "
                                                  "restoring an image through its copy mode:"):
                claim_ip(copier.ip, "wait", "a test")  # held: not even this process gets it twice
        claim_ip(_ip(Window()), "free again", "a test").release()
        # a half-finished setup gives the IP back (an IP without the restore mode)
        with pytest.raises(IPMismatchError):
            PynqCopier(ip=_ip(Window(5, R.CAPABILITIES_CRC_TABLE_MASK)), staging=stage)
        claim_ip(_ip(Window()), "free again", "a test").release()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
