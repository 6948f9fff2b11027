"""CPU-engine specifics: configuration errors, header validation, pinning, NUMA, flush,
statistics, the registry and `pyshm replicate`. The shared behaviour is in
tests/conformance."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time

import pytest
from pyshm.fallback.cpu import CpuEngine

from pyshm import layout as L
from pyshm.engine import EngineStats, clear_gate, engine_class, open_engine, pick_engine
from pyshm.errors import (
    ClosedError,
    CorruptSegmentError,
    EngineError,
    EngineTimeoutError,
    InvalidParameterError,
)
from pyshm.replica import Replica, promote
from pyshm.segment import Segment

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "conformance"))
from ringkit import PyRing, payload_for, unwrap  # noqa: E402

CAP = 1 << 16


@pytest.fixture
def pair(names):
    ring = PyRing(names[0], capacity=CAP)
    rep = Replica.create(names[1], ring)
    yield ring, rep
    rep.close()
    ring.close()


def fill(ring: PyRing, n: int) -> None:
    for _ in range(n):
        ring.publish(payload_for(ring.enc.sequence, 200))


@pytest.mark.parametrize("opts, word", [
    ({"threads": 17}, "threads"),
    ({"wait": "nap"}, "wait strategy"),
    ({"split_bytes": 100}, "split_bytes"),
    ({"poll_cpu": 4096}, "CPU 4096"),
    ({"threads": 1, "copy_cpus": [0, 0]}, "copy CPUs"),
])
def test_bad_options_name_the_problem(pair, opts, word):
    with pytest.raises(InvalidParameterError, match=word):
        CpuEngine(*pair, **opts)


def test_gate_needs_lossless_ring(pair):
    with pytest.raises(InvalidParameterError, match="lossless"):
        CpuEngine(*pair, gate=True)


def test_mismatched_replica_refused(names):
    ring = PyRing(names[0], capacity=CAP)
    other = L.RingParams(capacity=CAP * 2, max_record=1024)
    rep = Replica.create(names[1], other)
    with pytest.raises(InvalidParameterError, match="differ"):
        CpuEngine(ring, rep)
    rep.close()
    ring.close()


def test_primary_as_replica_refused(names):
    ring = PyRing(names[0], capacity=CAP)
    other = PyRing(names[1], capacity=CAP)
    with pytest.raises(CorruptSegmentError, match="replica"):
        CpuEngine(ring, other.segment)
    with pytest.raises(InvalidParameterError, match="same segment|not a replica|primary"):
        Replica.open(names[1])
    other.close()
    ring.close()


@pytest.mark.parametrize("field, value", [
    (L.OFF_CAPACITY, struct.pack("<Q", 5000)),  # not a power of two
    (L.OFF_CAPACITY, struct.pack("<Q", 1 << 40)),  # larger than the mapping
    (L.OFF_MAGIC, b"NOTARING"),
    (L.OFF_MAX_RECORD, struct.pack("<I", 1 << 30)),
])
def test_corrupt_ring_header_is_an_error_not_a_crash(pair, field, value):
    ring, rep = pair
    ring.segment.buf[field: field + len(value)] = value
    with pytest.raises(CorruptSegmentError):
        CpuEngine(ring, rep)


def test_ring_tail_going_backwards_fails_the_engine(pair):
    ring, rep = pair
    fill(ring, 100)
    eng = CpuEngine(ring, rep)
    eng.start()
    eng.sync(5)
    ring.q[L.OFF_TAIL // 8] = 8  # a reset ring under a running engine
    deadline = time.monotonic() + 5
    while eng.state != "failed" and time.monotonic() < deadline:
        time.sleep(0.001)
    st = eng.stats()
    assert st.state == "failed" and "went below" in st.last_error
    with pytest.raises(EngineError, match="went below"):
        eng.sync(1)
    eng.close()


def test_replica_ahead_of_ring_refused_at_start(pair):
    ring, rep = pair
    rep.segment.buf[L.OFF_TAIL: L.OFF_TAIL + 8] = struct.pack("<Q", 1 << 20)
    eng = CpuEngine(ring, rep)
    with pytest.raises(EngineError, match="ahead"):
        eng.start()
    eng.close()


def test_calls_after_close_raise(pair):
    eng = CpuEngine(*pair)
    eng.close()
    with pytest.raises(ClosedError):
        eng.start()
    eng.close()  # idempotent


# the ring's names, and the engine's earlier names as silent aliases
@pytest.mark.parametrize("wait,canonical", [("spin", "spin"), ("yield", "yield"),
                                            ("sleep", "sleep"), ("spin-yield", "yield"),
                                            ("backoff", "sleep")])
def test_wait_strategies_all_mirror(pair, wait, canonical):
    ring, rep = pair
    with CpuEngine(ring, rep, wait=wait, spin_count=10) as eng:
        assert eng.options["wait"] == canonical
        eng.start()
        fill(ring, 500)
        eng.sync(5)
        assert rep.tail == ring.tail


@pytest.mark.parametrize("wait", ["bogus", "block-ish", "", None, 2])
def test_unknown_wait_strategy_is_refused(pair, wait):
    with pytest.raises(InvalidParameterError, match="spin, yield, sleep"):
        CpuEngine(*pair, wait=wait)


def test_lag_quantiles_never_exceed_the_max(pair):
    """A quantile is its bucket's middle, which can lie above every sample in the bucket:
    with one sample that was a p50 above the max about half of the time."""
    ring, rep = pair
    for _ in range(24):
        with CpuEngine(ring, rep, wait="spin") as eng:
            eng.start()
            fill(ring, 1)
            eng.sync(5)
            st = eng.stats()
        assert st.lag_samples >= 1
        assert st.lag_p50_ns <= st.lag_p99_ns <= st.lag_p999_ns <= st.lag_max_ns, st


def test_large_backlog_is_split_across_workers(pair):
    ring, rep = pair
    fill(ring, 300)  # backlog before start: one copy round
    with CpuEngine(ring, rep, threads=2, split_bytes=4096) as eng:
        eng.start()
        eng.sync(5)
        st = eng.stats()
        assert st.extra["split_copies"] >= 1
        assert st.extra["copy_busy_ns"] > 0
        assert 0.0 <= st.utilisation <= 1.0
        t = ring.tail
        lo = max(0, t - CAP)
        assert unwrap(rep.data, CAP, lo, t) == unwrap(ring.data, CAP, lo, t)


def _allowed_cpus(tid: int) -> str:
    with open(f"/proc/self/task/{tid}/status") as f:
        for line in f:
            if line.startswith("Cpus_allowed_list:"):
                return line.split(":", 1)[1].strip()
    raise AssertionError("no Cpus_allowed_list")


def test_threads_are_pinned(pair):
    last = (os.cpu_count() or 1) - 1
    with CpuEngine(*pair, threads=1, poll_cpu=last, copy_cpus=[0]) as eng:
        eng.start()
        deadline = time.monotonic() + 5
        while 0 in eng.thread_ids() and time.monotonic() < deadline:
            time.sleep(0.001)
        poll, worker = eng.thread_ids()
        assert _allowed_cpus(poll) == str(last)
        assert _allowed_cpus(worker) == "0"


def test_numa_bind_call_path(names):
    ring = PyRing(names[0], capacity=CAP)
    rep = Replica.create(names[1], ring, numa_node=0)  # node 0 exists everywhere
    assert rep.tail == 0
    rep.close()
    os.unlink(f"/dev/shm/{names[1]}")
    with pytest.raises(InvalidParameterError, match="NUMA node 999"):
        Replica.create(names[1], ring, numa_node=999)
    assert not os.path.exists(f"/dev/shm/{names[1]}")  # a failed create leaves nothing
    ring.close()


def test_file_replica_flush_per_bytes(names, tmp_path):
    ring = PyRing(names[0], capacity=CAP)
    path = str(tmp_path / "rep.img")
    rep = Replica.create(path, ring, flush="bytes:16K")
    with CpuEngine(ring, rep) as eng:
        eng.start()
        fill(ring, 1000)
        eng.sync(5)
        # the engine publishes `mirrored` (what sync waits for) before it msyncs the
        # round's bytes, so the flush may still be on its way when sync returns
        deadline = time.monotonic() + 10
        while eng.stats().extra["flushes"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        # a round may cover many 16K slices when descheduled: at least one flush
        assert eng.stats().extra["flushes"] >= 1
    rep.close()
    with open(path, "rb") as f:  # the bytes are in the file, not only in the mapping
        f.seek(L.OFF_DATA)
        assert f.read(16) == bytes(ring.data[:16])
    ring.close()


def test_lag_percentiles_are_ordered(pair):
    ring, rep = pair
    with CpuEngine(*pair) as eng:
        eng.start()
        for _ in range(200):
            fill(ring, 5)
            eng.sync(5)
        st = eng.stats()
        assert st.lag_samples >= 200
        assert 0 < st.lag_p50_ns <= st.lag_p99_ns <= st.lag_p999_ns
        assert st.lag_p999_ns <= st.lag_max_ns  # clamped: never above the max
        assert isinstance(st, EngineStats) and "overruns 0" in st.line()


def test_registry_and_auto(pair):
    assert engine_class("cpu") is CpuEngine
    name, why = pick_engine()
    assert name == "cpu" and "cpu" in why
    said: list[str] = []
    with open_engine("auto", *pair, announce=said.append) as eng:
        assert eng.name == "cpu"
    assert said and "auto picked 'cpu'" in said[0]
    with pytest.raises(InvalidParameterError, match="unknown engine 'warp'"):
        open_engine("warp", *pair)


def test_clear_gate_after_crash(names):
    ring = PyRing(names[0], capacity=CAP, lossless=True)
    rep = Replica.create(names[1], ring)
    eng = CpuEngine(ring, rep, gate=True, keep_gate=True)
    eng.start()
    eng.close()
    assert ring.flags & L.FLAG_GATE_ON_MIRROR  # keep_gate: as a crashed engine leaves it
    assert clear_gate(Segment(names[0])) is True
    assert not ring.flags & L.FLAG_GATE_ON_MIRROR
    rep.close()
    ring.close()


def _pyshm() -> list[str]:
    return [os.path.join(os.path.dirname(sys.executable), "pyshm")]


def test_cli_replicate_runs_until_sigterm(names, tmp_path):
    ring = PyRing(names[0], capacity=CAP)
    fill(ring, 400)
    proc = subprocess.Popen(_pyshm() + ["replicate", names[0], "--to", names[1],
                                        "--interval", "0.05"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if ring.mirrored == ring.tail:
                break
            time.sleep(0.01)
        fill(ring, 100)
        deadline = time.monotonic() + 10
        while ring.mirrored != ring.tail and time.monotonic() < deadline:
            time.sleep(0.01)
        # a live status line comes every --interval: wait for one before stopping it (a
        # loaded machine could let the copy finish before the first interval ended)
        seen = []
        assert proc.stderr is not None
        for line in proc.stderr:  # ends at EOF if the process exits instead
            seen.append(line)
            if "records" in line:
                break
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        err = "".join(seen) + err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "records" in err and "picked 'cpu'" in err  # live status + auto's choice
    assert "stopped (signal 15)" in out and "500 records" in out
    rep = Replica.open(names[1])
    assert rep.tail == ring.tail and rep.next_sequence == 500
    rep.close()
    # restarting resumes from the replica's tail instead of recopying
    r = subprocess.run(_pyshm() + ["replicate", names[0], "--to", names[1], "--duration",
                                   "0.2", "--json", "--quiet"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert f'"start_position": {ring.tail}' in r.stdout
    assert '"bytes_mirrored": 0' in r.stdout
    ring.close()


def test_cli_replicate_refuses_primary_target(names, tmp_path):
    PyRing(names[0], capacity=CAP).close()
    PyRing(names[1], capacity=CAP).close()
    r = subprocess.run(_pyshm() + ["replicate", names[0], "--to", names[1], "--duration",
                                   "0.1"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1
    assert "not a replica" in r.stderr


def _replica_window_matches_ring(ring: PyRing, rep: Replica) -> list[L.Record]:
    """Every record a replica reader accepts (from the replica's oldest boundary up to its
    tail) is the ring's committed record at that position, byte for byte."""
    psize = ring.params.partition_size
    lo, hi = rep.oldest(), rep.tail
    assert lo % psize == 0, "replica readers must start on a partition boundary"
    lo = min(lo, hi)
    assert unwrap(rep.data, CAP, lo, hi) == unwrap(ring.data, CAP, lo, hi), \
        f"replica bytes in [{lo}, {hi}) differ from the ring's (a stale lap is exposed)"
    recs = rep.records()
    for a, b in zip(recs, recs[1:], strict=False):
        assert b.sequence == a.sequence + 1
    return recs


def _consumer_sees_only_ring_records(ring: PyRing, rep: Replica) -> list[int]:
    """A ring consumer on the replica, from its oldest record: each message it accepts
    carries the sequence the (quiescent) ring committed at that position."""
    psize = ring.params.partition_size
    committed = {r.position: r.sequence for r in L.walk_records(
        ring.data, CAP, psize, ring.params.max_record,
        L.oldest_boundary(ring.tail, CAP, psize), ring.tail) if r.type != L.PADDING_TYPE}
    seen = []
    view = rep.as_ring()
    try:
        c = view.consumer("oldest")
        while (m := c.read()) is not None:
            assert committed.get(m.position) == m.sequence, \
                f"replica consumer accepted a stale record at {m.position}"
            seen.append(m.sequence)
    finally:
        view.close()
    return seen


def test_resync_past_tail_hides_every_stale_byte(pair, tmp_path):
    """Lapped while paused, and the engine then reads a tail intent far past the tail (a
    producer that claimed a batch, or one that ran on between the engine's two loads):
    the oldest intact boundary r lies above the tail. The engine must not resynchronise
    to the tail itself (mid-partition), where the replica's only readable boundary would
    sit on the previous-lap bytes just below the tail: it waits for the tail to pass r,
    copies from r and moves replica readers to r. Deterministic: the producer is frozen
    with its intent raised, then commits while the engine is paused."""
    ring, rep = pair
    psize = ring.params.partition_size
    with CpuEngine(ring, rep) as eng:
        eng.start()
        while ring.tail < 2 * CAP:  # the replica holds a whole lap: stale records everywhere
            fill(ring, 50)
            eng.sync(5)
        before = ring.mirrored
        rintent = rep.tail_intent
        eng.pause(5)
        # lap the paused engine; stop with the tail at least one record into a partition
        while ring.tail < before + 3 * CAP or ring.tail % psize < 1024:
            fill(ring, 1)
        tail = ring.tail
        boundary = tail - tail % psize
        # the replica still holds an older lap where the ring holds this one
        assert unwrap(rep.data, CAP, boundary, tail) != unwrap(ring.data, CAP, boundary, tail)
        # claim (not yet written): the ring's oldest intact boundary moves above the tail
        claim = boundary + CAP + 8
        r = L.oldest_boundary(claim, CAP, psize)
        assert r == boundary + psize > tail
        ring.q[L.OFF_TAIL_INTENT // 8] = claim
        eng.resume(5)
        deadline = time.monotonic() + 5
        while eng.stats().overruns < 1 and time.monotonic() < deadline:
            time.sleep(0.001)
        eng.pause(5)  # returns once the poll thread finished that round
        # whatever the replica now offers its readers above its old tail must be this lap's
        committed = {x.position: x.sequence for x in L.walk_records(
            ring.data, CAP, psize, ring.params.max_record, boundary, tail)}
        for x in rep.records():
            if x.position >= before:
                assert committed.get(x.position) == x.sequence, \
                    f"replica readers see a previous-lap record at {x.position} below the tail"
        # nothing below r is intact, nothing at or above r committed: nothing to publish
        eng.resume(5)
        with pytest.raises(EngineTimeoutError):
            eng.sync(0.05)
        st = eng.stats()
        assert st.overruns == 1 and st.errors == 0
        assert st.bytes_lost == r - before
        assert rep.tail == before and rep.tail_intent == rintent
        # the producer commits its claim (the engine paused so that it cannot lap it
        # again): the replica resumes at r, readable from r
        eng.pause(5)
        while ring.tail < claim:
            fill(ring, 1)
        assert L.oldest_boundary(ring.tail_intent, CAP, psize) == r
        eng.resume(5)
        eng.sync(5)
        st = eng.stats()
        assert st.overruns == 1 and st.errors == 0
        assert rep.tail == ring.tail
        assert rep.oldest() == r
        assert rep.tail_intent <= ring.tail_intent, "the replica's intent never passes the ring's"
        recs = _replica_window_matches_ring(ring, rep)
        assert recs and recs[0].position == r
        assert recs[-1].sequence == ring.enc.sequence - 1
        assert rep.next_sequence == ring.enc.sequence
        assert _consumer_sees_only_ring_records(ring, rep) == [x.sequence for x in recs]
        # lapped again while paused, producer at rest: resync at the ring's own boundary
        eng.pause(5)
        while ring.tail < claim + CAP + psize:
            fill(ring, 1)
        eng.resume(5)
        eng.sync(5)
        st = eng.stats()
        assert st.overruns == 2 and st.errors == 0
        assert rep.oldest() == L.oldest_boundary(ring.tail_intent, CAP, psize)
        recs = _replica_window_matches_ring(ring, rep)
        assert recs and recs[0].position == rep.oldest()
        assert recs[-1].sequence == ring.enc.sequence - 1
        assert _consumer_sees_only_ring_records(ring, rep) == [x.sequence for x in recs]
        # a snapshot of the replica and a promotion see the same window
        from pyshm.images import snapshot
        h = snapshot(rep, tmp_path / "rep.img", engine=eng)
        assert (h.first_position, h.end_position) == (recs[0].position, rep.tail)
        assert (h.first_sequence, h.record_count) == (recs[0].sequence, len(recs))
    assert promote(rep).next_sequence == ring.enc.sequence


def test_gated_engine_copies_a_full_ring_from_mid_partition(names):
    """A producer gated on ``mirrored`` may fill the ring up to exactly mirrored +
    capacity. With ``mirrored`` mid-partition the oldest partition start of that intent
    lies above ``mirrored``, yet every byte from ``mirrored`` on is intact (lapped iff
    intent > position + capacity): the engine must copy all of it, with no overrun."""
    from pyshm import FULL, Ring

    rec = bytes(48)  # 64 bytes with its header: a divisor of the partition, never padded
    with Ring.create(names[0], CAP, lossless=True) as ring, \
            Replica.create(names[1], ring) as rep, \
            CpuEngine(ring, rep, gate=True) as eng:
        psize = ring.partition_size
        eng.start()
        prod = ring.producer()
        for _ in range(5):
            prod.publish(rec)
        eng.sync(5)
        for _ in range(3):
            m = ring.mirrored
            assert m % psize and L.oldest_boundary(m + CAP, CAP, psize) > m
            eng.pause(5)
            while prod.publish(rec) != FULL:
                pass
            assert ring.tail == ring.tail_intent == m + CAP, "the gate stops exactly there"
            assert prod.room() == 0
            eng.resume(5)
            eng.sync(5)
            st = eng.stats()
            assert (st.overruns, st.bytes_lost, st.errors) == (0, 0, 0)
            assert st.records_mirrored == ring.next_sequence
            assert rep.tail == ring.tail and bytes(rep.data) == bytes(ring.data)
            assert rep.next_sequence == ring.next_sequence
            prod.publish(rec)  # move mirrored to the next mid-partition position
            eng.sync(5)
        prod.close()


_LATE_GATE_PRODUCER = """
import sys
from pyshm import FULL, Ring

ring = Ring.attach(sys.argv[1])
prod = ring.producer()
rec = bytes(48)
for _ in range(10):
    prod.publish(rec)
print("open", flush=True)
sys.stdin.readline()
# far more than a capacity: only the engine's gate can stop this
for _ in range(4 * ring.capacity // 64):
    if prod.publish(rec, timeout=0.2) == FULL:
        print("full", ring.tail, flush=True)
        break
else:
    print("not held back", ring.tail, flush=True)
sys.stdin.readline()
n = 0
for _ in range(2 * ring.capacity // 64):
    if prod.publish(rec, timeout=10) == FULL:
        break
    n += 1
print("done", n, flush=True)
"""


def _line(proc: subprocess.Popen, timeout: float) -> str:
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise AssertionError(f"no line from the producer within {timeout} s")
    finally:
        sel.close()
    return proc.stdout.readline()


def test_engine_gated_after_the_producer_opened_holds_it_back(names, tmp_path):
    """The producer process opens (and publishes) before the engine sets its gate: it
    must see the flag appear, stop at mirrored + capacity while the engine is paused,
    and go on as the engine mirrors, so nothing is lost."""
    from pyshm import Ring

    script = tmp_path / "producer.py"
    script.write_text(_LATE_GATE_PRODUCER)
    with Ring.create(names[0], CAP, lossless=True) as ring, \
            Replica.create(names[1], ring) as rep:
        proc = subprocess.Popen([sys.executable, str(script), names[0]], cwd=tmp_path,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert _line(proc, 20) == "open\n"
            def live_flags() -> int:
                return int.from_bytes(ring.segment.buf[0x0C:0x10], "little")

            assert not live_flags() & L.FLAG_GATE_ON_MIRROR
            with CpuEngine(ring, rep, gate=True) as eng:
                eng.start()
                assert live_flags() & L.FLAG_GATE_ON_MIRROR
                eng.sync(5)
                m = ring.mirrored
                assert m == 640
                eng.pause(5)
                proc.stdin.write("go\n")
                proc.stdin.flush()
                assert _line(proc, 30).split() == ["full", str(m + CAP)]
                assert ring.tail == m + CAP
                eng.resume(5)
                proc.stdin.write("go\n")
                proc.stdin.flush()
                assert _line(proc, 60).split() == ["done", str(2 * CAP // 64)]
                assert proc.wait(10) == 0
                eng.sync(5)
                st = eng.stats()
                assert (st.overruns, st.bytes_lost, st.errors) == (0, 0, 0)
                assert st.records_mirrored == ring.next_sequence
                assert rep.tail == ring.tail and bytes(rep.data) == bytes(ring.data)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


def test_cli_replicate_wait_names(names, capsys):
    from pyshm.cli import main as cli_main

    PyRing(names[0], capacity=CAP).close()
    with pytest.raises(SystemExit) as exc:
        cli_main(["replicate", names[0], "--to", names[1], "--wait", "nap"])
    assert exc.value.code == 2
    assert "'nap' is not one of spin, yield, sleep" in capsys.readouterr().err
    # the engine's earlier name still works, silently
    assert cli_main(["replicate", names[0], "--to", names[1], "--wait", "backoff",
                     "--duration", "0.05", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "backoff" not in err and "deprecated" not in err


def _poll_tid(eng: CpuEngine) -> int:
    deadline = time.monotonic() + 5
    while not eng.thread_ids()[0] and time.monotonic() < deadline:
        time.sleep(0.001)
    return eng.thread_ids()[0]


def test_poll_thread_sleeps_with_a_short_timer_slack(pair):
    """Linux rounds a thread's sleeps up by its timer slack (50 us by default), which made
    every back-off step of the `sleep` strategy last at least 50 us."""
    with CpuEngine(*pair) as eng:
        eng.start()
        with open(f"/proc/{_poll_tid(eng)}/timerslack_ns") as f:
            assert int(f.read()) == 1000


def test_poll_priority(pair):
    for bad in (-1, 100):
        with pytest.raises(InvalidParameterError, match="poll_priority"):
            CpuEngine(*pair, poll_priority=bad)
    eng = CpuEngine(*pair, poll_priority=7)
    try:
        if os.geteuid() == 0:
            eng.start()
            tid = _poll_tid(eng)
            assert os.sched_getscheduler(tid) == os.SCHED_FIFO
            assert os.sched_getparam(tid).sched_priority == 7
        else:  # without CAP_SYS_NICE the refusal says what is missing
            with pytest.raises(InvalidParameterError, match="CAP_SYS_NICE"):
                eng.start()
    finally:
        eng.close()


def test_block_wait_sleeps_in_the_rings_wake_protocol(names):
    """wait="block": once idle the poll thread sleeps in FUTEX_WAIT under its own sleepers
    bit, the producer's next commit wakes it, and stop reaches it at once."""
    from pyshm.ring import Ring

    ring = Ring(names[0], create=True, capacity=CAP)
    rep = Replica.create(names[1], ring)
    p = ring.producer()
    eng = CpuEngine(ring, rep, wait="block", spin_count=10)
    try:
        eng.start()
        tid = _poll_tid(eng)
        bit = 1 << 27  # layout.h PYSHM_SLEEPER_ENGINE_BIT
        for round_ in range(3):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with open(f"/proc/{tid}/syscall") as f:
                    in_futex = f.read().split()[0] == "202"  # SYS_futex on x86-64
                sleepers = struct.unpack_from("<Q", ring.segment.buf, 0x90)[0]
                if in_futex and sleepers & bit:
                    break
                time.sleep(0.002)
            else:
                raise AssertionError("the idle poll thread never slept in the futex")
            flags = struct.unpack_from("<I", ring.segment.buf, L.OFF_FLAGS)[0]
            assert flags & 0x20  # FLAG_WAKE: producers now run the wake check
            p.publish(b"wake up %d" % round_)
            eng.sync(5)
            assert rep.tail == ring.tail
        t0 = time.monotonic()
        eng.stop(5)
        assert eng.state == "stopped"
        assert time.monotonic() - t0 < 5
    finally:
        eng.close()
        p.close()
        rep.close()
        ring.close()
