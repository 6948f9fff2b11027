"""Hot handover under load, with real processes: a new version of the order-book builder
takes over the region and the ring's gating role at an exact sequence; every record is
applied to the live region exactly once, and the table ends bit-identical to the fold."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from statekit import (
    BOOK,
    apply_order,
    apply_order_v2,
    fork,
    kill9,
    make_orders,
    reap,
    reference_book,
    wait_until,
)

from pyshm import Ring, State
from pyshm.state import HandoverError
from pyshm.state import layout as SL
from pyshm.state.follower import Follower

N = 40000
ORDERS = make_orders(N, seed=21)
STATEKIT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "statekit.py")


def _producer(ring: str, rate: float) -> None:
    """Publish the N records at ``rate`` records/s (lossless: waits for gating readers)."""
    r = Ring(ring)
    p = r.producer()
    t0 = time.perf_counter()
    sent = 0
    while sent < N:
        due = min(N, int((time.perf_counter() - t0) * rate)) - sent
        if due <= 0:
            time.sleep(0.0005)
            continue
        sent += p.publish_batch(ORDERS[sent:sent + min(due, 512)], timeout=5.0)
    p.close()
    r.close()


def _logging_apply(region: str, log: list[int], fn):  # noqa: ANN001
    def apply(w, rec):  # noqa: ANN001
        if w.state.name == region:  # staging applies are not applies to the region
            log.append(rec.sequence)
        fn(w, rec)
    return apply


def _follower(region: str, ring: str, out: str, handover: bool, images: str,
              version: int = 1, timeout: float = 30.0) -> None:
    log: list[int] = []
    fn = apply_order if version == 1 else apply_order_v2
    f = Follower(region, ring, _logging_apply(region, log, fn), dtype=BOOK, rows=64,
                 images=images, snapshot_records=2000, keep=2, batch=64, handover=handover,
                 handover_timeout=timeout, snapshot_poll=0.01)
    res = f.run(until=N - 1, max_seconds=60)
    f.close()
    with open(out, "w") as fh:
        json.dump({"result": res.as_dict(), "applied": log}, fh)


def _wait_writer(region: str, pid: int) -> None:
    def holds() -> bool:
        try:
            with State(region) as st:
                return st.writer_pid == pid
        except Exception:
            return False
    wait_until(holds, 60, f"pid {pid} to be the writer")


def _result(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


@pytest.fixture
def lossless(new_name):
    with Ring(new_name(), create=True, capacity=1 << 20, lossless=True) as r:
        yield r
        r.unlink()


def test_handover_chain_under_load_applies_each_record_once(lossless, new_name, tmp_path):
    """v1 -> v1' -> v1'' while the producer publishes 40k records at 12k/s: each new
    process takes over at an exact sequence; the union of what the processes applied to
    the region is 0..N-1 with no repeat; the table is the reference fold."""
    region = new_name()
    images = str(tmp_path / "images")
    prod = fork(_producer, lossless.name, 12000.0)
    outs = [str(tmp_path / f"f{i}.json") for i in range(3)]
    pids = [fork(_follower, region, lossless.name, outs[0], False, images)]
    try:
        for i in (1, 2):
            _wait_writer(region, pids[i - 1])  # (on a busy machine a start takes a while)
            time.sleep(0.5)
            pids.append(fork(_follower, region, lossless.name, outs[i], True, images))
            assert reap(pids[i - 1], 60) == 0  # the old one returns once handed over
        assert reap(prod, 60) == 0
        assert reap(pids[2], 60) == 0
    finally:
        for p in [prod, *pids]:
            try:
                os.kill(p, 9)
                os.waitpid(p, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
    res = [_result(o) for o in outs]
    summary = [r["result"] for r in res]  # shown if an assertion below fails
    print(json.dumps({"pids": pids, "results": summary}, indent=1), file=sys.stderr)
    for i in (0, 1):
        assert res[i]["result"]["reason"] == "handed_over", summary
    finals = [res[i]["result"]["handover"]["final_seq"] for i in (0, 1)]
    for i in (1, 2):
        h = res[i]["result"]["start"]  # how it started; "handover" is how it ended
        assert h["how"] == "handover" and h["final_seq"] == finals[i - 1], summary
        assert h["rows_differing"] == 0 and h["gap_ns"] > 0, summary
        assert h["old_pid"] == pids[i - 1], summary
    applied = [s for r in res for s in r["applied"]]
    assert applied == list(range(N))  # each sequence exactly once, in order across processes
    assert res[0]["applied"][-1] == finals[0] and res[1]["applied"][0] == finals[0] + 1
    with State(region) as st:
        assert st.applied_seq == N - 1
        assert st.to_numpy().tobytes() == reference_book(ORDERS).tobytes()
        assert st.info()["handover"]["state"] == "done"
    # the gating role moved with the region: no slot of the old processes is left
    slots = [s for s in lossless.slots() if s["active"]]
    assert all(s["pid"] not in pids[:2] or not s["alive"] for s in slots)
    os.unlink(f"/dev/shm/{region}")


def test_handover_to_a_version_that_folds_differently(lossless, new_name, tmp_path):
    """The new version's state differs from the old one's: the rows that differ at the
    handover sequence are copied into the live region, and from then on the region is
    the new version's fold."""
    region = new_name()
    images = str(tmp_path / "images")
    prod = fork(_producer, lossless.name, 15000.0)
    a, b = str(tmp_path / "a.json"), str(tmp_path / "b.json")
    pa = fork(_follower, region, lossless.name, a, False, images)
    _wait_writer(region, pa)
    time.sleep(0.7)
    pb = fork(_follower, region, lossless.name, b, True, images, 2)
    assert reap(pa, 60) == 0 and reap(prod, 60) == 0 and reap(pb, 60) == 0
    ra, rb = _result(a)["result"], _result(b)["result"]
    assert ra["reason"] == "handed_over"
    h = rb["start"]
    assert h["rows_differing"] > 0  # the two folds disagree where records came after S
    with State(region) as st:
        ref = reference_book(ORDERS, v2_after=h["image_seq"] if h["image_seq"] is not None
                             else -1)
        assert st.to_numpy().tobytes() == ref.tobytes()
    os.unlink(f"/dev/shm/{region}")


def _plain_writer(region: str, flag: str) -> None:
    st = State(region, create=True, dtype=BOOK, rows=64)
    w = st.writer()
    w.commit(0)
    open(flag, "w").close()
    while True:
        time.sleep(0.01)


def test_an_old_writer_that_does_not_answer_keeps_its_role(lossless, new_name, tmp_path):
    region = new_name()
    flag = str(tmp_path / "flag")
    lossless.producer().publish_batch(ORDERS[:10])
    pid = fork(_plain_writer, region, flag)
    try:
        wait_until(lambda: os.path.exists(flag), what="plain writer")
        f = Follower(region, lossless.name, apply_order, handover=True, handover_timeout=0.5)
        with pytest.raises(HandoverError, match=f"pid {pid}.*did not answer within 0.5 s"):
            f.start()
        f.close()
        with State(region) as st:
            assert st.writer_pid == pid
            assert st.info()["handover"]["state"] == "aborted"
            assert not [n for n in os.listdir("/dev/shm") if n.startswith(region + ".")]
    finally:
        kill9(pid)
    os.unlink(f"/dev/shm/{region}")


def test_handover_with_no_live_writer_just_starts(lossless, new_name):
    region = new_name()
    lossless.producer().publish_batch(ORDERS[:500])
    with Follower(region, lossless.name, apply_order, dtype=BOOK, rows=64) as f:
        f.run(until=199)
    with Follower(region, lossless.name, apply_order, handover=True) as f:
        info = f.start()
        assert info["how"] == "resumed" and "no live writer" in info["note"]
        f.run(until=499)
        assert f.state.to_numpy().tobytes() == reference_book(ORDERS[:500]).tobytes()
    os.unlink(f"/dev/shm/{region}")


def _cli_follower(region: str, ring: str) -> None:
    f = Follower(region, ring, apply_order, dtype=BOOK, rows=64, batch=64)
    f.run(max_seconds=60)
    f.close()


def test_pyshm_handover_command(lossless, new_name, tmp_path):
    region = new_name()
    lossless.producer().publish_batch(ORDERS[:3000])
    pa = fork(_cli_follower, region, lossless.name)
    try:
        wait_until(lambda: os.path.exists(f"/dev/shm/{region}") and
                   State(region).applied_seq == 2999, what="old follower caught up")
        pyshm = os.path.join(os.path.dirname(sys.executable), "pyshm")
        r = subprocess.run([pyshm, "handover", region, "--ring", lossless.name, "--apply",
                            f"{STATEKIT}:apply_order", "--exit-after", "--json"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        info = json.loads(r.stdout)
        assert info["how"] == "handover" and info["old_pid"] == pa
        assert info["final_seq"] == 2999 and info["gap_ns"] > 0
        assert reap(pa, 30) == 0  # the old follower handed over and returned
    finally:
        try:
            kill9(pa)
        except (ProcessLookupError, ChildProcessError):
            pass
    with State(region) as st:
        assert st.to_numpy().tobytes() == reference_book(ORDERS[:3000]).tobytes()
        assert st._load("H_STATE") == SL.HO_DONE
    os.unlink(f"/dev/shm/{region}")


def test_orders_are_deterministic():
    assert np.array_equal(ORDERS, make_orders(N, seed=21))


def test_two_upgrades_asked_at_once_run_one_after_the_other(lossless, new_name, tmp_path):
    region = new_name()
    images = str(tmp_path / "images")
    prod = fork(_producer, lossless.name, 15000.0)
    outs = [str(tmp_path / f"g{i}.json") for i in range(3)]
    pids = [fork(_follower, region, lossless.name, outs[0], False, images)]
    try:
        _wait_writer(region, pids[0])
        time.sleep(0.3)
        pids += [fork(_follower, region, lossless.name, outs[i], True, images)
                 for i in (1, 2)]
        assert reap(prod, 120) == 0
        for p in pids:
            assert reap(p, 120) == 0
    finally:
        for p in [prod, *pids]:
            try:
                os.kill(p, 9)
                os.waitpid(p, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
    res = [_result(o) for o in outs]
    print(json.dumps({"pids": pids, "results": [r["result"] for r in res]}, indent=1),
          file=sys.stderr)
    reasons = sorted(r["result"]["reason"] for r in res)
    assert reasons == ["handed_over", "handed_over", "until"], [r["result"] for r in res]
    applied = sorted(s for r in res for s in r["applied"])
    assert applied == list(range(N))
    with State(region) as st:
        assert st.to_numpy().tobytes() == reference_book(ORDERS).tobytes()
    os.unlink(f"/dev/shm/{region}")
