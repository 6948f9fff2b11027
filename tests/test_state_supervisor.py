"""`pyshm run` with state regions: the writer child killed with kill -9 is restarted and
recovers its region, SIGHUP and `pyshm handover --run` hand it over to a new process,
images on schedule, the replica follows; the region ends as the fold of every record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from statekit import fork, make_orders, reap, reference_book

from pyshm import Ring, State
from pyshm.config import loads
from pyshm.errors import ConfigError
from pyshm.state.recovery import list_images

STATEKIT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "statekit.py")
BOOK_SPEC = ("bid_px:<f8[4],bid_qty:<i8[4],ask_px:<f8[4],ask_qty:<i8[4],last_seq:<u8,"
             "updates:<u8,position:<i8,cash:<f8")
N = 30000
ORDERS = make_orders(N, seed=41)
PYSHM = os.path.join(os.path.dirname(sys.executable), "pyshm")


def _config(tmp_path, ring: str, state: str, **extra: str) -> str:
    text = f"""
name: sttest{os.getpid()}
state_dir: {tmp_path}/run
rings:
  - name: {ring}
    capacity: 1M
    lossless: true
states:
  - name: {state}
    ring: {ring}
    dtype: "{BOOK_SPEC}"
    rows: 64
    apply: {STATEKIT}:apply_order
    batch: 64
    snapshots: {{directory: {tmp_path}/images, every_records: 2000, keep: 3}}
    replica: {{name: {state}.replica}}
supervisor: {{restart_delay: 100ms, check_interval: 50ms}}
metrics: {{status_interval: 100ms}}
"""
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return str(path)


def test_states_section_is_validated():
    good = """
rings: [{name: md, capacity: 64K}]
states:
  - {name: book, ring: md, dtype: "a:<f8,b:<i8[2]", rows: 8, apply: m:f,
      snapshots: {directory: /tmp/x, interval: 1s}}
"""
    cfg = loads(good)
    (sc,) = cfg.states
    assert sc.rows == 8 and sc.restart == "auto" and sc.upgrade == "handover"
    assert json.loads(sc.description)["itemsize"] == 24 and sc.snapshots.interval == 1.0
    bad = """
rings: [{name: md, capacity: 64K, replica: {name: md.r}}]
states:
  - {name: md.r, ring: md, dtype: "a:<q9", rows: 0, apply: nocolon,
     snapshots: {directory: /tmp/x}, restart: sometimes, colour: blue}
  - {name: book, ring: md, dtype: "a:<f8", rows: 4}
"""
    with pytest.raises(ConfigError) as ei:
        loads(bad)
    problems = "\n".join(ei.value.problems)
    for phrase in ["states[0].colour: unknown key", "states[0].dtype:", "not a numpy format",
                   "states[0].rows: 0 is out of range", "states[0].apply: 'nocolon' is not "
                   "MODULE:FUNCTION", "states[0].snapshots: give interval and/or "
                   "every_records", "states[0].restart:", "states[0].name: duplicate name "
                   "'md.r'", "states[1].apply: required key is missing"]:
        assert phrase in problems, (phrase, problems)


def _producer(ring: str, rate: float) -> None:
    r = Ring(ring)
    p = r.producer()
    t0 = time.perf_counter()
    sent = 0
    while sent < N:
        due = min(N, int((time.perf_counter() - t0) * rate)) - sent
        if due <= 0:
            time.sleep(0.001)
            continue
        sent += p.publish_batch(ORDERS[sent:sent + min(due, 512)], timeout=5.0)
    p.close()
    r.close()


def _status(cfg_path: str) -> dict:
    from pyshm.config import load_config

    cfg = load_config(cfg_path)
    try:
        with open(cfg.status_path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _wait(pred, timeout: float, what: str):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_run_keeps_a_state_region_through_kill_and_handovers(new_name, tmp_path):
    ring, state = new_name(), new_name()
    cfg = _config(tmp_path, ring, state)
    sup = subprocess.Popen([PYSHM, "run", cfg], stdout=subprocess.DEVNULL,
                           stderr=open(tmp_path / "sup.log", "w"))
    prod = None
    try:
        st = _wait(lambda: (_status(cfg).get("states") or {}).get(state, {}).get("pid") and
                   _status(cfg)["states"][state], 60, "the state writer")
        prod = fork(_producer, ring, 10000.0)
        first_pid = st["pid"]
        # kill -9 the writer in the middle of the stream: the supervisor restarts it and it
        # recovers the region (resume, or newest image + replay)
        _wait(lambda: (_status(cfg)["states"][state].get("applied_seq") or 0) > 3000, 60,
              "records applied")
        os.kill(first_pid, signal.SIGKILL)
        st = _wait(lambda: (s := _status(cfg)["states"][state]).get("pid") not in
                   (None, first_pid) and s.get("started") and s, 60, "the restart")
        assert st["restarts"] == 1 and st["started"]["how"] in ("resumed", "recovered")
        second_pid = st["pid"]
        # SIGHUP: hot handover to a new writer process
        _wait(lambda: (_status(cfg)["states"][state].get("applied_seq") or 0) > 10000, 60,
              "more records")
        sup.send_signal(signal.SIGHUP)
        st = _wait(lambda: (s := _status(cfg)["states"][state]).get("handovers") and s, 60,
                   "the SIGHUP handover")
        h = st["handovers"][-1]
        assert "failed" not in h and h["old_pid"] == second_pid and h["gap_ns"] > 0
        # and once more through the command line
        r = subprocess.run([PYSHM, "handover", state, "--run", cfg, "--json"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        h2 = json.loads(r.stdout)
        assert h2["final_seq"] >= h["final_seq"] and h2["rows_differing"] == 0
        r = subprocess.run([PYSHM, "stats", ring, "--once", "--state-dir",
                            str(tmp_path / "run")], capture_output=True, text=True,
                           timeout=60)
        assert f"state {state}  [folds {ring}]" in r.stdout, r.stdout
        assert "last handover at sequence" in r.stdout and "replica" in r.stdout
        assert reap(prod, 120) == 0
        prod = None
        _wait(lambda: _status(cfg)["states"][state].get("applied_seq") == N - 1, 60,
              "every record applied")
        st = _status(cfg)["states"][state]
        assert st["snapshots"]["count"] >= 1 and st["replica"]["consistent_seq"] is not None
    finally:
        if prod is not None:
            os.kill(prod, signal.SIGKILL)
            reap(prod)
        sup.send_signal(signal.SIGTERM)
        rc = sup.wait(60)
    assert rc == 0, (tmp_path / "sup.log").read_text()[-3000:]
    ref = reference_book(ORDERS).tobytes()
    with State(state, readonly=True) as s:
        assert s.applied_seq == N - 1 and s.to_numpy().tobytes() == ref
    with State(f"{state}.replica", readonly=True) as rep:
        assert rep.applied_seq == N - 1 and rep.to_numpy().tobytes() == ref
    images = list_images(tmp_path / "images", state)
    assert 1 <= len(images) <= 3
    log = (tmp_path / "sup.log").read_text()
    assert "restarting it (it recovers the region)" in log and "handed over from pid" in log
    for n in (state, f"{state}.replica"):
        os.unlink(f"/dev/shm/{n}")
