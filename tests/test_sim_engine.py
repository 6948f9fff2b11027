"""The ``sim`` engine end to end: the RTL under Icarus mirroring real segments.

The conformance suite (tests/conformance) runs the shared engine checks with
engine="sim"; these are the simulator-specific ones: the command line, a simulator that
dies, a simulator whose engine process is killed, and bus accesses outside the segments.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
from pyshm.driver import regmap as R
from pyshm.driver.ip import MirrorFaultError
from pyshm.driver.sim import SimulatorError, find_rtl

from pyshm import layout as L
from pyshm.engine import open_engine
from pyshm.errors import EngineError, InvalidParameterError
from pyshm.replica import Replica

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "conformance"))
from ringkit import PyRing, payload_for  # noqa: E402

pytestmark = pytest.mark.rtl
CAP = 8192
PYSHM = os.path.join(os.path.dirname(sys.executable), "pyshm")
# EngineStats.line(), after the CLI's rate column: the same for every engine
# EngineStats.line(): end-to-end lag first ("-" until the first probe), then positions
STATUS = re.compile(r"^\s*[\d.]+ [kKMGT]?B/s\s+(running|paused)\s+lag p50\s+([\d.]+|-)\s+p99\s+"
                    r"([\d.]+|-) us\s+mirrored\s+[\d,]+ B\s+records\s+[\d,]+\s+behind\s+"
                    r"[\d,]+ B\s+overruns \d+ \(lost [\d,]+ B\)$")


def wait_until(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.startswith("State:") and "Z" in line for line in f)
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("engine", ["cpu", "sim"])
def test_cli_replicate_mirrors_a_live_ring(engine, names, tmp_path):
    ring = PyRing(names[0], capacity=CAP)
    proc = subprocess.Popen([PYSHM, "replicate", names[0], "--to", names[1], "--engine", engine,
                             "--interval", "0.2", "--json"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: os.path.exists(f"/dev/shm/{names[1]}"), 60, "the replica")
        for seq in range(150):
            ring.publish(payload_for(seq, 200))
            if seq % 30 == 29:  # slices well below a lap: nothing may be lost
                wait_until(lambda: ring.mirrored == ring.tail, 60, "mirroring")
        time.sleep(0.5)  # at least one status line after the last copy
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    lines = [ln for ln in err.splitlines() if "mirrored" in ln and "records" in ln]
    assert lines and all(STATUS.match(ln) for ln in lines), err
    assert f"({engine} engine)" in err
    summary = json.loads(out)
    assert summary["engine"] == engine
    assert summary["records_mirrored"] == 150 and summary["bytes_mirrored"] == ring.tail
    assert summary["overruns"] == 0 and summary["errors"] == 0
    with Replica.open(names[1], readonly=True) as rep:
        assert rep.tail == ring.tail > CAP
        recs = rep.records()
        assert [r.sequence for r in recs] == list(range(recs[0].sequence, 150))
        assert all(r.payload == payload_for(r.sequence, 200) for r in recs)
        assert rep.next_sequence == 150


def test_dead_simulator_gives_a_clear_error(names):
    ring = PyRing(names[0], capacity=CAP)
    rep = Replica.create(names[1], ring)
    eng = open_engine("sim", ring, rep, register_timeout=5.0)
    try:
        eng.start()
        os.killpg(eng.sim.proc.pid, signal.SIGKILL)
        eng.sim.proc.wait(10)
        t0 = time.monotonic()
        # whichever thread notices first, every caller learns what happened
        with pytest.raises(SimulatorError, match="simulator (closed the connection|"
                                                 "connection failed).*exited"):
            eng.ip.status()
        assert time.monotonic() - t0 < 6
        wait_until(lambda: eng.state == "failed", 5, "the monitor noticing")
        assert "simulator" in eng.stats().last_error
    finally:
        eng.close()
        rep.close()
        ring.close()


ENGINE_CHILD = """
import sys, time
from pyshm.engine import open_engine
eng = open_engine("sim", sys.argv[1], sys.argv[2])
eng.start()
print(eng.sim.proc.pid, eng.sim._tmp, flush=True)
time.sleep(600)
"""


def test_simulator_ends_when_its_engine_is_killed(names, tmp_path):
    ring = PyRing(names[0], capacity=CAP)
    Replica.create(names[1], ring).close()
    script = tmp_path / "child.py"
    script.write_text(ENGINE_CHILD)
    child = subprocess.Popen([sys.executable, str(script), names[0], names[1]], cwd=tmp_path,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        pid_text, work_dir = child.stdout.readline().split()
        sim_pid = int(pid_text)
        assert os.path.isdir(work_dir)
        ring.publish(payload_for(0, 200))
        wait_until(lambda: ring.mirrored == ring.tail, 60, "the child engine")
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        wait_until(lambda: gone(sim_pid), 15, "the simulator to exit")
        assert not os.path.exists(work_dir), "an orphaned simulator removes its directory"
        # and it copies nothing more: the IP was held in reset when the socket closed
        held = ring.mirrored
        ring.publish(payload_for(1, 200))
        time.sleep(0.3)
        assert ring.mirrored == held
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        ring.close()


def test_bus_access_outside_the_segments_faults_instead_of_wrapping(names):
    """AxiRam would wrap an address it does not hold; the testbench answers SLVERR."""
    ring = PyRing(names[0], capacity=CAP)
    rep = Replica.create(names[1], ring)
    try:
        with open_engine("sim", ring, rep) as eng:
            eng.start()
            eng.pause(30)
            # the ring's tail word moved to an address that is not in either segment
            eng.ip.write64("RING_TAIL_ADDR", eng.ring_bus + 0x10_0000)
            eng.resume(30)
            ring.publish(payload_for(0, 200))
            with pytest.raises(MirrorFaultError, match="READ_SLVERR") as ei:
                eng.sync(60)
            assert ei.value.code == R.FAULT_READ_SLVERR
            assert rep.tail == 0 and ring.mirrored == 0  # nothing was published
            assert L.FLAG_REPLICA & rep.params.flags
    finally:
        rep.close()
        ring.close()


def test_protocol_checker_watches_every_run(names, tmp_path):
    """The sim engine's testbench runs the AXI4 protocol checker: an IP that breaks the
    protocol (a copy of the RTL whose read bursts cross 4 KiB) stops the run with an
    error that quotes the violation, instead of mirroring on."""
    rtl = tmp_path / "rtl"
    shutil.copytree(find_rtl(), rtl)
    mover = (rtl / "rm_mover.v").read_text()
    old = "ar_addr_next = src_base + ar_off_reg;"
    assert mover.count(old) == 1
    (rtl / "rm_mover.v").write_text(mover.replace(old, old[:-1] + " + 'hfc0;"))
    ring = PyRing(names[0], capacity=CAP)
    rep = Replica.create(names[1], ring)
    eng = open_engine("sim", ring, rep, rtl_dir=str(rtl), register_timeout=5.0)
    try:
        eng.start()
        for i in range(30):   # a copy of several bursts: the first one already crosses
            ring.publish(payload_for(i, 200))
        with pytest.raises(EngineError, match="AXI4 protocol violation by the IP: cycle \\d+: "
                                              "read burst .* crosses a 4 KiB boundary"):
            eng.sync(60)
            eng.ip.status()
    finally:
        eng.close()
        rep.close()
        ring.close()


def test_hostile_headers_stop_with_named_faults(names):
    """The IP's checks of what it reads from the ring surface as MirrorFaultError naming
    the fault, the header word and the ring position: a tail intent no producer can have
    written, then (after a restart) a tail below what the replica already holds."""
    ring = PyRing(names[0], capacity=CAP)
    rep = Replica.create(names[1], ring)
    try:
        with open_engine("sim", ring, rep, watchdog=100_000) as eng:
            eng.start()
            ring.publish(payload_for(0, 200))
            eng.sync(60)
            eng.pause(30)
            ring.publish(payload_for(1, 200))
            ring.q[L.OFF_TAIL_INTENT // 8] = 1 << 62
            eng.resume(30)
            with pytest.raises(MirrorFaultError, match="INTENT_RANGE") as ei:
                eng.sync(60)
            err = ei.value
            assert err.address == eng.ring_bus + L.OFF_TAIL_INTENT
            assert f"bus address 0x{err.address:x}" in str(err)
            assert eng.state == "failed" and "INTENT_RANGE" in eng.stats().last_error
            assert ring.mirrored == rep.tail < ring.tail  # nothing published from it
            eng.stop()
            ring.q[L.OFF_TAIL_INTENT // 8] = ring.tail
            eng.start()                     # SOFT_RESET, configure, start at the replica
            eng.sync(60)
            assert rep.tail == ring.tail
            eng.pause(30)
            ring.q[L.OFF_TAIL // 8] = rep.tail - 64
            eng.resume(30)
            wait_until(lambda: eng.state == "failed", 60, "the fault")
            last = eng.stats().last_error
            assert "TAIL_BACKWARDS" in last and f"ring position {rep.tail}" in last, last
    finally:
        rep.close()
        ring.close()


def test_bad_options_are_refused_before_starting_a_simulator(names):
    ring = PyRing(names[0], capacity=CAP)
    rep = Replica.create(names[1], ring)
    try:
        with pytest.raises(InvalidParameterError, match="simulator 'modelsim'"):
            open_engine("sim", ring, rep, simulator="modelsim")
        with pytest.raises(EngineError, match="RTL not found"):
            open_engine("sim", ring, rep, rtl_dir=str(names[0]))
    finally:
        rep.close()
        ring.close()


def test_sim_copier_jobs_wrap_and_chunk_indices(new_name):
    """SimCopier cuts a copy-mode job into IP jobs (chunks contiguous in source and ring,
    one size but the last) and reports a mismatch by the caller's chunk index: a wrapping
    run of 4 KiB chunks with a short last one, then chunks that start a new IP job; the
    ring ends up as the CPU copier leaves it, and nothing is written by verify."""
    import numpy as np
    from crc32c import crc32c
    from pyshm.driver.sim import SimCopier
    from pyshm.fallback.cpu import CpuCopier

    from pyshm.engine import CopyChecksumError, CopyChunk
    from pyshm.ring import Ring
    from pyshm.segment import Segment

    cap = 16384
    names = [new_name(), new_name()]
    for n in names:
        Ring(n, create=True, capacity=cap).close()
    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, 10000, dtype=np.uint8).tobytes()
    pos0 = 3 * cap - 4096 + 520              # the run passes the ring's end
    sizes = [4096, 4096, 808]                # one IP job (regular), 9000 bytes
    chunks, off = [], 0
    for n in sizes:
        chunks.append(CopyChunk(off, pos0 + off, n, crc32c(data[off:off + n])))
        off += n
    # a chunk that follows the short one: a second IP job
    chunks.append(CopyChunk(off, pos0 + off, 1000, crc32c(data[off:off + 1000])))
    with SimCopier() as sim, Segment(names[0]) as seg, Segment(names[1]) as ref:
        src = sim.staging_buffer(len(data), pos0)
        src[:] = data
        sim.attach_target(seg)
        ring = seg.buf[L.OFF_DATA:L.OFF_DATA + cap]
        before = bytes(ring)
        sim.verify(src, chunks)
        assert bytes(ring) == before, "verify wrote the ring"
        sim.copy(src, ring, cap, chunks)
        CpuCopier(1).copy(data, ref.buf[L.OFF_DATA:L.OFF_DATA + cap], cap, chunks)
        assert bytes(ring) == bytes(ref.buf[L.OFF_DATA:L.OFF_DATA + cap])
        bad = list(chunks)
        bad[3] = CopyChunk(bad[3].source_offset, bad[3].position, bad[3].length,
                           bad[3].crc ^ 1)
        with pytest.raises(CopyChecksumError) as exc:
            sim.verify(src, bad)
        assert exc.value.chunk == 3
        with pytest.raises(InvalidParameterError, match="staging buffer"):
            sim.verify(bytearray(len(data)), chunks)
        ring.release()
