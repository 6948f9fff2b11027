"""Bounded fuzzing (hypothesis) of everything that parses bytes another process or a file
controls: the segment header, the record reader under a live consumer, the image reader
and restore.

Each example runs in a forked child with a deadline, so a crash (SIGSEGV/SIGABRT) or a
hang in C is reported as such instead of taking pytest down or blocking it. The only
acceptable outcomes are data or a :class:`PyshmError`. bench/fuzz.py runs the same
targets for longer (and under atheris when it is installed).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyshm import Ring, layout

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "bench"))
from _common import isolated  # noqa: E402  (the fork-and-deadline harness bench/fuzz.py uses)

from pyshm.errors import PyshmError

CAP = 16 * 1024
PARTS = 8
EXAMPLES = int(os.environ.get("PYSHM_FUZZ_EXAMPLES", "100"))
DEADLINE_S = float(os.environ.get("PYSHM_FUZZ_DEADLINE", "5"))
EXECUTIONS: dict[str, int] = {}

INTERESTING_64 = [0, 1, 7, 8, 15, 16, CAP - 8, CAP, CAP + 8, 2 * CAP, 1 << 31, 1 << 32,
                  1 << 46, (1 << 63) - 1, 1 << 63, (1 << 64) - 8, (1 << 64) - 1]
INTERESTING_32 = [0, 1, 7, 8, 15, 16, 17, 24, 64, 255, 256, 511, 512, 513, CAP // PARTS,
                  CAP, 0x7FFFFFFF, 0x80000000, 0xFFFFFFF8, 0xFFFFFFFF]


def run_isolated(name: str, fn: Callable[[], None]) -> None:
    """Run ``fn`` in a forked child; fail on a crash, a hang or a non-pyshm exception."""
    EXECUTIONS[name] = EXECUTIONS.get(name, 0) + 1
    outcome, detail = isolated(fn, DEADLINE_S)
    if outcome == "hang":
        pytest.fail(f"{name}: no answer within {DEADLINE_S} s (hang)")
    if outcome == "crash":
        pytest.fail(f"{name}: child killed by {detail} (crash)")
    assert outcome == "ok", f"{name}: unexpected exception:\n{detail}"


def _template() -> tuple[bytes, list[int]]:
    """A wrapped ring with records of many sizes, padding included, and their positions."""
    path = f"/tmp/pyshm_fuzz_template_{os.getpid()}"
    try:
        with Ring.create(path, CAP, partitions=PARTS) as r, r.producer() as p:
            for i in range(700):
                p.publish(bytes([i % 256]) * (i * 37 % (r.max_payload + 1)), type=i % 5)
            starts = [rec.position & (CAP - 1) for rec in r.records()]
            return bytes(r.segment.buf), starts
    finally:
        os.unlink(path)


TEMPLATE, STARTS = _template()

header_patch = st.one_of(
    st.tuples(st.sampled_from(range(0, 0x280, 8)), st.sampled_from(INTERESTING_64),
              st.just(8)),
    st.tuples(st.sampled_from(range(0, 0x80, 4)), st.sampled_from(INTERESTING_32),
              st.just(4)),
    st.tuples(st.integers(0, 0xFFF), st.integers(0, 255), st.just(1)),
)
record_patch = st.tuples(st.sampled_from(STARTS), st.sampled_from([0, 4, 8]),
                         st.sampled_from(INTERESTING_32 + [0xFFFFFFFF]))
data_patch = st.tuples(st.integers(0, CAP - 1), st.binary(min_size=1, max_size=16))


def apply(buf, hdr: list, recs: list, data: list) -> None:
    for off, val, size in hdr:
        buf[off:off + size] = (val & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
    for start, field, val in recs:
        off = layout.OFF_DATA + start + field
        buf[off:off + 4] = struct.pack("<I", val)
    for off, raw in data:
        off = layout.OFF_DATA + off
        raw = raw[:len(buf) - off]
        buf[off:off + len(raw)] = raw


def consume(ring: Ring, c, limit: int = 3000) -> int:
    n = 0
    while n < limit:
        try:
            b = c.read_batch(64)
        except PyshmError:
            break
        if not len(b):
            break
        assert all(0 <= int(x) <= ring.max_payload for x in b.lengths)
        n += len(b)
    for _ in range(50):
        try:
            if c.read_copy() is None:
                break
        except PyshmError:
            break
    return n


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(hdr=st.lists(header_patch, max_size=6), truncate=st.sampled_from([None, None, None,
       0x80, 0x1000, 0x1000 + CAP // 2, 0x1000 + CAP - 1]))
def test_fuzz_segment_header(tmp_path, hdr, truncate):
    """Attach, consume, produce, snapshot and repair a ring whose header is mutated."""
    raw = bytearray(TEMPLATE)
    apply(raw, hdr, [], [])
    if truncate is not None:
        raw = raw[:truncate]
    path = str(tmp_path / "hdr.ring")

    def target() -> None:
        from pyshm.images import capture
        from pyshm.repair import read_segment_info, repair

        with open(path, "wb") as f:
            f.write(raw)
        read_segment_info(path)
        with Ring.attach(path) as ring:
            with ring.consumer("oldest") as c:
                consume(ring, c)
            try:
                capture(ring, retries=1)
            except PyshmError:
                pass
            try:
                repair(ring, dry_run=True)
            except PyshmError:
                pass
            with ring.producer() as p:
                for i in range(40):
                    if p.publish(b"z" * (i * 13 % 100)) < 0:
                        break

    run_isolated("segment header", target)


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(recs=st.lists(record_patch, min_size=1, max_size=6),
       data=st.lists(data_patch, max_size=4),
       counters=st.lists(st.tuples(st.sampled_from([layout.OFF_TAIL, layout.OFF_TAIL_INTENT]),
                                   st.sampled_from(INTERESTING_64 + [CAP * 3, CAP * 5 - 8]),
                                   st.just(8)), max_size=2),
       mid=st.integers(0, 300))
def test_fuzz_records_under_live_consumer(tmp_path, recs, data, counters, mid):
    """Corrupt the data area (and the counters) under a consumer that already started."""
    path = str(tmp_path / "rec.ring")

    def target() -> None:
        with open(path, "wb") as f:
            f.write(TEMPLATE)
        with Ring.attach(path) as ring, ring.consumer("oldest") as c:
            for _ in range(mid):
                if c.read() is None:
                    break
            apply(ring.segment.buf, counters, recs, data)
            consume(ring, c)
            with ring.consumer("oldest") as c2:  # a consumer that starts on the damage
                consume(ring, c2)

    run_isolated("records", target)


@settings(max_examples=max(EXAMPLES // 2, 10), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(recs=st.lists(record_patch, max_size=4), data=st.lists(data_patch, max_size=4),
       seq_shift=st.sampled_from([0, 0, 1, -1, 1 << 40]),
       count_shift=st.sampled_from([0, 0, 1, -1]),
       first=st.sampled_from([None, 0, 8, CAP // PARTS]))
def test_fuzz_image_with_valid_checksums(tmp_path, recs, data, seq_shift, count_shift, first):
    """Images whose checksums are right but whose contents lie: restore refuses them or
    builds a ring that the C reader walks without crashing."""
    from pyshm.images import format as fmt
    from pyshm.images import restore

    src = bytearray(TEMPLATE)
    apply(src, [], recs, data)
    with Ring.attach(str(_write(tmp_path / "src.ring", TEMPLATE))) as ring:
        tail, oldest, nseq = ring.tail, ring.oldest(), ring.next_sequence
        params = ring.params
        n = sum(1 for _ in ring.records())
    start = oldest if first is None else max(oldest, tail - CAP + first)
    start -= start % 8
    window = bytes((src[layout.OFF_DATA:] * 2)[start % CAP: start % CAP + tail - start])
    header = fmt.ImageHeader(params, start, tail, nseq - n + seq_shift, nseq + seq_shift,
                             max(0, n + count_shift), fmt.now_ns())
    image = str(tmp_path / "x.img")
    target_ring = str(tmp_path / "restored.ring")

    def target() -> None:
        fmt.write_image(image, header, [memoryview(window)], chunk_size=4096, sync=False)
        with fmt.ImageReader(image) as r:
            r.verify()
        restore(image, target_ring, prefault=False)
        with Ring.attach(target_ring) as ring2, ring2.consumer("oldest") as c:
            consume(ring2, c)

    run_isolated("image", target)


def _write(path, raw: bytes):
    with open(path, "wb") as f:
        f.write(raw)
    return path


HANG = r'''
import sys
from pyshm import Ring
r = Ring.attach(sys.argv[1])
c = r.consumer("latest")
buf = r.segment.buf
buf[0x80:0x88] = (r.tail + 4 * r.capacity).to_bytes(8, "little")   # tail far ahead
buf[0x100:0x108] = (0).to_bytes(8, "little")                         # intent below it
try:
    c.read()
except Exception as e:
    print(type(e).__name__)
print("returned")
'''


def test_known_hang_lapped_with_intent_below_tail(tmp_path):
    path = _write(tmp_path / "hang.ring", TEMPLATE)
    script = _write(tmp_path / "hang.py", HANG.encode())
    try:
        out = subprocess.run([sys.executable, str(script), str(path)], cwd=tmp_path,
                             capture_output=True, text=True, timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail("pyshm_read spins on a consumer lapped with tail_intent below tail")
    assert "returned" in out.stdout, out.stderr


def test_huge_producer_pid_is_a_dead_producer(tmp_path):
    # found by test_fuzz_segment_header: os.kill overflowed on a pid above 2^31
    raw = bytearray(TEMPLATE)
    raw[layout.OFF_PRODUCER_PID:layout.OFF_PRODUCER_PID + 8] = (1 << 40).to_bytes(8, "little")
    with Ring.attach(str(_write(tmp_path / "pid.ring", bytes(raw)))) as ring:
        with ring.producer() as p:
            assert ring.producer_pid == os.getpid()
            assert p.publish(b"after takeover") >= 0


def test_known_producer_pid_above_int64(tmp_path):
    raw = bytearray(TEMPLATE)
    raw[layout.OFF_PRODUCER_PID:layout.OFF_PRODUCER_PID + 8] = (1 << 63).to_bytes(8, "little")
    with Ring.attach(str(_write(tmp_path / "pid63.ring", bytes(raw)))) as ring:
        try:
            ring.producer().close()
        except PyshmError:
            pass


def test_report_fuzz_executions(capsys):
    # runs last in this module: the counts go to the terminal with -s and to the log
    with capsys.disabled():
        print(f"\nfuzz executions: {EXECUTIONS}")
