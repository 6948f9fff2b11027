"""``pyshm demo``: the whole product on one market-data ring, verified end to end.

Processes (all real, all started here):

* ``pyshm run`` on the embedded configuration (``pyshm/configs/demo.yaml``): creates the
  ring and its replica, runs the replication engine (``auto``) in a child, snapshots the
  replica every few seconds;
* a **producer** publishing a tick stream (numpy records: timestamp, instrument, bid/ask
  prices and sizes) with ``publish_batch`` at a paced rate;
* two **consumers**: a *strategy* keeping the top of book of every instrument and a
  *logger* writing every 1000th tick to a file; both check that sequences arrive without a
  gap or a duplicate, and both checksum what they read.

Script: publish for ``duration`` s; ``kill -9`` the producer; stop the supervisor (final
sync and final snapshot); the primary ring is declared lost and unlinked; it is rebuilt by
promoting the replica (timed), the latest image is restored too (timed, checked, then
dropped); the supervisor restarts on the rebuilt ring; consumers notice the new ring and
resume at their next sequence; a new producer resumes at the ring's next sequence (seeding
its quotes from the ring) for another ``duration`` s and stops cleanly; then everything is
checked: published = mirrored = received by each consumer, nothing lost, the strategy's
book equals the producer's last quotes, both consumers' checksums agree, the replica is
byte-identical to the ring.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import yaml

from . import human
from .errors import ConfigError, PyshmError
from .images.format import IMAGE_SUFFIX

TICK = np.dtype([("ts_ns", "<i8"), ("instrument", "<u4"), ("flags", "<u4"),
                 ("bid", "<f8"), ("ask", "<f8"), ("bid_size", "<u4"), ("ask_size", "<u4")])
TICK_TYPE = 1
DEFAULT_DURATION = 8.0
DEFAULT_RATE = 200_000.0
DEFAULT_INSTRUMENTS = 64
EMBEDDED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "demo.yaml")


def _write_json(path: str, data: Any) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _wait_for(pred: Callable[[], Any], timeout: float, what: str,
              alive: subprocess.Popen[bytes] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if alive is not None and alive.poll() is not None:
            raise PyshmError(f"demo: {what}: the process exited with status {alive.returncode}")
        if time.monotonic() > deadline:
            raise PyshmError(f"demo: timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


# ----------------------------------------------------------------------------------
# The producer process


class _Stop:
    def __init__(self) -> None:
        self.flag = False
        signal.signal(signal.SIGTERM, self.set)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the demo decides when we stop

    def set(self, *_: Any) -> None:
        self.flag = True


def producer_main(spec: dict[str, Any]) -> int:
    from .ring import Ring

    stop = _Stop()
    n_instr = int(spec["instruments"])
    rng = np.random.default_rng(int(spec.get("seed", 1)))
    ring = Ring(spec["ring"])
    prod = ring.producer()
    first_seq = prod.sequence
    mid = 100.0 + 10.0 * np.arange(n_instr)
    if spec.get("resume"):
        # continue each instrument from its last committed quote (what a restarted feed
        # handler does), read back from the restored ring
        cons = ring.consumer(start="oldest")
        while True:
            b = cons.read_batch(8192)
            if not len(b):
                break
            t = b.array(TICK)
            t = t[t["instrument"] < n_instr]  # never index with unchecked shared data
            mid[t["instrument"]] = (t["bid"] + t["ask"]) / 2
        cons.close()
    last_bid = np.full(n_instr, np.nan)
    last_ask = np.full(n_instr, np.nan)
    rate = float(spec["rate"])
    batch_max = 4096
    sent = 0
    t0 = time.perf_counter()
    next_progress = 0.0
    progress = spec["progress"]
    while not stop.flag:
        now = time.perf_counter() - t0
        due = int(rate * now) - sent
        if due <= 0:
            time.sleep(0.0005)
            continue
        n = min(due, batch_max)
        ticks = np.empty(n, TICK)
        instr = rng.integers(0, n_instr, n, dtype=np.uint32)
        np.add.at(mid, instr, rng.normal(0.0, 0.01, n))
        np.maximum(mid, 1.0, out=mid)
        spread = rng.integers(1, 5, n) * 0.01
        ticks["ts_ns"] = time.time_ns()
        ticks["instrument"] = instr
        ticks["flags"] = 0
        ticks["bid"] = np.round(mid[instr] - spread / 2, 4)
        ticks["ask"] = np.round(mid[instr] + spread / 2, 4)
        ticks["bid_size"] = rng.integers(1, 100, n) * 100
        ticks["ask_size"] = rng.integers(1, 100, n) * 100
        done = prod.publish_batch(ticks, type=TICK_TYPE)
        if done != n:
            raise PyshmError(f"producer: published {done} of {n} ticks")
        last_bid[instr] = ticks["bid"]  # fancy assignment: the last occurrence wins
        last_ask[instr] = ticks["ask"]
        sent += n
        if now >= next_progress:
            _write_json(progress, {"published": sent, "next_sequence": prod.sequence})
            next_progress = now + 0.1
    _write_json(spec["result"], {
        "first_sequence": first_seq, "next_sequence": prod.sequence, "published": sent,
        "seconds": time.perf_counter() - t0,
        "last_bid": [None if np.isnan(x) else float(x) for x in last_bid],
        "last_ask": [None if np.isnan(x) else float(x) for x in last_ask]})
    prod.close()
    ring.close()
    return 0


# ----------------------------------------------------------------------------------
# The consumer processes


def consumer_main(spec: dict[str, Any]) -> int:
    _Stop()  # SIGTERM is only an emergency stop here: the demo sends stop.json instead
    role = spec["role"]
    n_instr = int(spec["instruments"])
    path = spec["ring_path"]
    bid = np.full(n_instr, np.nan)
    ask = np.full(n_instr, np.nan)
    expected: int | None = None
    received = gaps = dups = lost = crossed = bad_type = reattached = 0
    checksum = 0
    log = open(spec["log"], "w", encoding="utf-8") if role == "logger" else None
    book = None
    if role == "strategy" and spec.get("book_ref"):
        # the reference the state region is checked against: the same fold over every
        # tick this consumer receives (pyshm.state.demo_book)
        from .state.demo_book import BOOK, fold
        book = np.zeros(n_instr, BOOK)
    next_poll = 0.0
    deadline_idle = float(spec.get("idle_timeout", 60.0))
    last_data = time.monotonic()

    def attach() -> tuple[Any, Any, int]:
        ring = _wait_for_ring(path, deadline_idle)
        ino = os.stat(path).st_ino
        start: str | int = "oldest" if expected is None else expected
        return ring, ring.consumer(start=start), ino

    ring, cons, ino = attach()
    while True:
        b = cons.read_batch(4096, timeout=0.02, wait="sleep")
        n = len(b)
        if n:
            last_data = time.monotonic()
            seqs = b.sequences.astype(np.int64)
            if expected is not None and seqs[0] != expected:
                if seqs[0] > expected:
                    gaps += int(seqs[0] - expected)
                else:
                    dups += int(expected - seqs[0])
            d = np.diff(seqs)
            gaps += int((d[d > 1] - 1).sum())
            dups += int((d < 1).sum())
            expected = int(seqs[-1]) + 1
            received += n
            bad_type += int((b.types != TICK_TYPE).sum())
            t = b.array(TICK)
            bad = t["instrument"] >= n_instr  # never index with unchecked shared data
            if book is not None:
                ticks = b.types == TICK_TYPE  # as the region's apply_batch does
                fold(book, t[ticks], b.sequences[ticks])  # drops bad instruments itself
            if bad.any():
                bad_type += int(bad.sum())
                t = t[~bad]
            checksum = (checksum + int(t["ts_ns"].sum(dtype=np.uint64))
                        + int(t["instrument"].sum(dtype=np.uint64))) % (1 << 64)
            if role == "strategy":
                crossed += int((t["bid"] >= t["ask"]).sum())
                bid[t["instrument"]] = t["bid"]
                ask[t["instrument"]] = t["ask"]
            elif log is not None:
                for i in np.nonzero((seqs % 1000) == 0)[0]:
                    r = t[i]
                    log.write(f"{seqs[i]} {r['ts_ns']} instr={r['instrument']} "
                              f"{r['bid']:.4f}/{r['ask']:.4f} {r['bid_size']}x{r['ask_size']}\n")
        now = time.monotonic()
        if n and now < next_poll:
            continue
        next_poll = now + 0.1
        _write_json(spec["progress"], {"received": received, "next_sequence": expected})
        try:
            changed = os.stat(path).st_ino != ino
        except FileNotFoundError:
            changed = False  # lost and not rebuilt yet: keep the old mapping meanwhile
        if changed:
            # the ring was rebuilt (restore): resume on the new one at the next sequence
            lost += cons.lost
            cons.close()
            ring.close()
            ring, cons, ino = attach()
            reattached += 1
            continue
        stop = _read_json(spec["stop"])
        if stop and expected is not None and expected >= int(stop["final_sequence"]):
            break
        if not n and now - last_data > deadline_idle:
            break
    lost += cons.lost
    cons.close()
    ring.close()
    if log is not None:
        log.close()
    if book is not None:
        np.save(spec["book_ref"], book)
    _write_json(spec["result"], {
        "role": role, "received": received, "next_sequence": expected, "gaps": gaps,
        "duplicates": dups, "lost": lost, "crossed_books": crossed, "bad_type": bad_type,
        "reattached": reattached, "checksum": checksum,
        "book_bid": [None if np.isnan(x) else float(x) for x in bid],
        "book_ask": [None if np.isnan(x) else float(x) for x in ask]})
    return 0


def _wait_for_ring(path: str, timeout: float) -> Any:
    from .errors import CorruptSegmentError, RingNotFoundError
    from .ring import Ring

    deadline = time.monotonic() + timeout
    while True:
        try:
            return Ring(path)
        except (RingNotFoundError, CorruptSegmentError):
            # absent, or being rebuilt (the header is written last)
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


# ----------------------------------------------------------------------------------
# The orchestration


class _Demo:
    def __init__(self, workdir: str, quiet: bool):
        self.workdir = workdir
        self.quiet = quiet
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.t0 = time.monotonic()

    def say(self, msg: str) -> None:
        if not self.quiet:
            print(f"[{time.monotonic() - self.t0:5.1f}s] {msg}", file=sys.stderr, flush=True)

    def path(self, name: str) -> str:
        return os.path.join(self.workdir, name)

    def spawn(self, key: str, argv: list[str], log: str | None = None) -> subprocess.Popen[bytes]:
        out = open(self.path(log), "ab") if log else subprocess.DEVNULL
        # cwd: the work directory, never the caller's (`-m` puts cwd first on sys.path)
        p = subprocess.Popen([sys.executable, "-m", *argv], cwd=self.workdir, stdout=out,
                             stderr=subprocess.STDOUT if log else None,
                             stdin=subprocess.DEVNULL)
        self.procs[key] = p
        return p

    def role(self, key: str, spec: dict[str, Any]) -> subprocess.Popen[bytes]:
        return self.spawn(key, ["pyshm.demo", "_role", json.dumps(spec)], log=f"{key}.log")

    def stop(self, key: str, timeout: float) -> int | None:
        p = self.procs.get(key)
        if p is None or p.poll() is not None:
            return None if p is None else p.returncode
        p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
            return None

    def kill_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(5)


def _prepare_config(config: str | None, workdir: str,
                    instruments: int = DEFAULT_INSTRUMENTS) -> tuple[str, Any]:
    from .config import load_config

    src = config or EMBEDDED
    load_config(src)  # full validation, errors against the user's own file and lines
    try:
        with open(src, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise ConfigError(f"{src}: cannot read: {exc.strerror or exc}") from None
    rings = [r for r in data["rings"] if isinstance(r, dict) and "replica" in r
             and "snapshots" in r]
    if not rings:
        raise ConfigError(f"{src}: the demo needs a ring with a replica and snapshots")
    ring = rings[0]
    suffix = f".{os.getpid()}"
    ring["name"] = f"{ring['name']}{suffix}"
    rep = ring.get("replica") or {}
    rep["name"] = f"{rep.get('name') or ring['name'][:-len(suffix)] + '.replica'}{suffix}"
    ring["replica"] = rep
    # attach: the supervisor restarts on the ring the demo rebuilds (leftovers with these
    # pid-suffixed names are removed before the start)
    ring["existing"] = "attach"
    ring["unlink_on_exit"] = False
    ring["snapshots"]["directory"] = os.path.join(workdir, "images")
    data["rings"] = [ring]
    states = [s for s in data.get("states") or [] if isinstance(s, dict)
              and s.get("ring") == ring["name"][:-len(suffix)]]
    for st in states[:1]:  # the strategy's book, on the demo's ring
        st["name"] = f"{st['name']}{suffix}"
        st["ring"] = ring["name"]
        st["rows"] = instruments
        if isinstance(st.get("snapshots"), dict):
            st["snapshots"]["directory"] = os.path.join(workdir, "state-images")
        if isinstance(st.get("replica"), dict):
            given = st["replica"].get("name")
            st["replica"]["name"] = f"{given}{suffix}" if given else f"{st['name']}.replica"
    data["states"] = states[:1]
    data["name"] = "demo"
    data["state_dir"] = os.path.join(workdir, "state")
    data["metrics"] = dict(data.get("metrics") or {})
    data["metrics"].pop("listen", None)  # no port to collide with a running supervisor
    out = os.path.join(workdir, "demo.yaml")
    with open(out, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    return out, load_config(out)


def run_demo(config: str | None = None, duration: float | None = None,
             rate: float | None = None, instruments: int | None = None,
             workdir: str | None = None, keep: bool = False,
             quiet: bool = False) -> dict[str, Any]:
    """Run the demo and return its verified summary (``summary["verified"]``)."""
    duration = DEFAULT_DURATION if duration is None else duration
    rate = DEFAULT_RATE if rate is None else rate
    instruments = DEFAULT_INSTRUMENTS if instruments is None else instruments
    if duration <= 0 or rate <= 0 or not 1 <= instruments <= 1_000_000:
        raise PyshmError("demo: --duration and --rate must be > 0 and --instruments "
                         "between 1 and 1000000")
    own_dir = workdir is None
    workdir = os.path.abspath(workdir or tempfile.mkdtemp(prefix="pyshm-demo-"))
    os.makedirs(workdir, exist_ok=True)
    cfg_path, cfg = _prepare_config(config, workdir, instruments)
    rc = cfg.rings[0]
    assert rc.replica is not None and rc.snapshots is not None
    demo = _Demo(workdir, quiet)
    from .segment import resolve_path

    state_names = [n for sc in cfg.states for n in
                   [sc.name] + ([sc.replica.name] if sc.replica else [])]
    for n in (rc.name, rc.replica.name, *state_names):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(resolve_path(n))
    try:
        return _script(demo, cfg_path, cfg, rc, duration, rate, instruments)
    finally:
        demo.kill_all()
        if not keep:
            for n in (rc.name, rc.replica.name, rc.name + ".check", *state_names):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(resolve_path(n))
            if own_dir:
                shutil.rmtree(workdir, ignore_errors=True)
        elif not quiet:
            print(f"kept: work directory {workdir}, rings {rc.name} and {rc.replica.name}",
                  file=sys.stderr)


def _script(demo: _Demo, cfg_path: str, cfg: Any, rc: Any, duration: float, rate: float,
            instruments: int) -> dict[str, Any]:
    from . import images
    from .replica import Replica
    from .ring import Ring
    from .segment import resolve_path

    t_start = time.monotonic()
    ring_path = resolve_path(rc.name)
    status_path = cfg.status_path
    snap_seen: dict[str, float] = {}
    engine_stats: list[dict[str, Any]] = []

    def status() -> Any:
        st = _read_json(status_path)
        if not st:
            return None
        entry = st["rings"].get(rc.name, {})
        sn = entry.get("snapshots") or {}
        if sn.get("last_path") and sn.get("last_duration_s") is not None:
            snap_seen[sn["last_path"]] = sn["last_duration_s"]
        return entry

    def start_supervisor() -> subprocess.Popen[bytes]:
        sup = demo.spawn("supervisor", ["pyshm", "run", cfg_path], log="supervisor.log")
        eng = _wait_for(lambda: (e := (status() or {}).get("engine")) and e.get("stats") and e,
                        60, "the supervisor's engine to start", alive=sup)
        demo.say(f"supervisor pid {sup.pid}: engine {eng['name']} (pid {eng['pid']}) "
                 f"mirroring {rc.name} -> {rc.replica.name}")
        return sup

    def first_tick(after: int, proc: subprocess.Popen[bytes]) -> None:
        # a phase lasts `duration` s of publishing: the clock starts at the producer's
        # first record, not at its spawn (starting Python and numpy can take longer than
        # a short phase on a loaded machine, which then published nothing at all)
        with Ring(ring_path, readonly=True) as r:
            _wait_for(lambda: r.next_sequence > after, 60, "the producer's first tick",
                      alive=proc)

    def progress_loop(seconds: float, label: str) -> None:
        end = time.monotonic() + seconds
        ring = Ring(ring_path, readonly=True)
        try:
            last = (time.monotonic(), ring.next_sequence)
            while time.monotonic() < end:
                time.sleep(min(1.0, max(0.0, end - time.monotonic())))
                now, seq = time.monotonic(), ring.next_sequence
                # mirrored before tail: both only grow, so the difference is never negative
                mirrored = ring.mirrored
                lag_bytes = ring.tail - mirrored
                st = status() or {}
                e = (st.get("engine") or {}).get("stats") or {}
                sn = st.get("snapshots") or {}
                cons = [(_read_json(demo.path(f"{k}.progress")) or {}).get("received", 0)
                        for k in ("strategy", "logger")]
                # end to end: the producer's commit to readable in the replica
                p99 = human.duration_ns(e.get("e2e_lag_p99_ns")) \
                    if e.get("e2e_lag_samples") else "-"
                demo.say(f"{label}: published {seq:,} ({(seq - last[1]) / (now - last[0]):,.0f}"
                         f"/s)  replication lag p99 {p99} ({human.size(lag_bytes, 'B')} "
                         f"behind)  consumers {cons[0]:,} / {cons[1]:,}  snapshots "
                         f"{sn.get('count', 0)}")
                last = (now, seq)
        finally:
            ring.close()

    demo.say(f"work directory {demo.workdir}; configuration {cfg_path}")
    start_supervisor()
    consumer_spec = {"ring_path": ring_path, "instruments": instruments,
                     "stop": demo.path("stop.json"), "idle_timeout": 60.0}
    sc = cfg.states[0] if cfg.states else None  # the strategy's state region
    for role in ("strategy", "logger"):
        demo.role(role, {**consumer_spec, "cmd": "consumer", "role": role,
                         "progress": demo.path(f"{role}.progress"),
                         "result": demo.path(f"{role}.json"), "log": demo.path("ticks.log"),
                         "book_ref": demo.path("book_ref.npy") if sc else None})
    producer_spec = {"cmd": "producer", "ring": ring_path, "rate": rate,
                     "instruments": instruments, "progress": demo.path("producer.progress")}
    prod = demo.role("producer1", {**producer_spec, "seed": 1, "result": demo.path("p1.json")})
    demo.say(f"producer pid {prod.pid} publishing ~{rate:,.0f} ticks/s over {instruments} "
             f"instruments; strategy and logger consuming")
    first_tick(0, prod)
    progress_loop(duration, "phase 1")

    # -- crash -------------------------------------------------------------------------
    os.kill(prod.pid, signal.SIGKILL)
    prod.wait(10)
    with Ring(ring_path, readonly=True) as r:
        crashed_at = r.next_sequence
        crash_tail = r.tail
    demo.say(f"kill -9 producer (pid {prod.pid}): {crashed_at:,} records committed, "
             f"sequences {_seq_range(0, crashed_at)}")
    st = status() or {}
    engine_stats.append(((st.get("engine") or {}).get("stats")) or {})
    t = time.monotonic()
    rc_sup = demo.stop("supervisor", 30)
    demo.say(f"supervisor stopped (exit {rc_sup}, final sync and final snapshot) in "
             f"{human.duration_ns((time.monotonic() - t) * 1e9)}")
    with Replica.open(rc.replica.name) as rep:
        replica_seq, replica_tail = rep.next_sequence, rep.tail
    same = "the ring's tail too" if replica_tail == crash_tail else \
        f"ring tail {crash_tail:,}"
    demo.say(f"replica holds sequences {_seq_range(0, replica_seq)} (tail {replica_tail:,}, "
             f"{same})")

    # -- recovery ------------------------------------------------------------------------
    os.unlink(ring_path)
    demo.say(f"primary ring {rc.name} declared lost and unlinked")
    t = time.monotonic()
    info = images.promote(rc.replica.name, rc.name)
    restore_replica_s = time.monotonic() - t
    demo.say(f"rebuilt {rc.name} from the replica in "
             f"{human.duration_ns(restore_replica_s * 1e9)} (sequences "
             f"{_seq_range(info.first_sequence, info.next_sequence)})")
    # the newest image is the supervisor's final snapshot, taken after the final sync
    latest = sorted(f for f in os.listdir(rc.snapshots.directory) if f.endswith(IMAGE_SUFFIX))
    image_path = os.path.join(rc.snapshots.directory, latest[-1]) if latest else None
    restore_image_s = None
    image_info = None
    if image_path and os.path.exists(image_path):
        t = time.monotonic()
        image_info = images.restore(image_path, rc.name + ".check")
        restore_image_s = time.monotonic() - t
        os.unlink(resolve_path(rc.name + ".check"))
        demo.say(f"latest image {os.path.basename(image_path)} verified and restored in "
                 f"{human.duration_ns(restore_image_s * 1e9)} ({image_info.record_count:,} "
                 f"records, sequences "
                 f"{_seq_range(image_info.first_sequence, image_info.next_sequence)})")
    start_supervisor()

    # -- resume --------------------------------------------------------------------------
    prod = demo.role("producer2", {**producer_spec, "seed": 2, "resume": True,
                                   "result": demo.path("p2.json")})
    demo.say(f"producer restarted (pid {prod.pid}), resuming at the ring's next sequence, "
             f"{info.next_sequence:,}")
    first_tick(info.next_sequence, prod)
    state_kill: dict[str, Any] = {}
    if sc is not None:
        # kill -9 the strategy's state writer half-way: pyshm run restarts it, and it
        # recovers the book from its newest state image + the ring after it
        progress_loop(duration / 2, "phase 2")
        state_kill = _kill_state_writer(demo, cfg, sc)
        progress_loop(duration / 2, "phase 2")
    else:
        progress_loop(duration, "phase 2")
    demo.stop("producer2", 30)
    p2 = _read_json(demo.path("p2.json")) or {}
    with Ring(ring_path, readonly=True) as r:
        final_seq = r.next_sequence
        _wait_for(lambda: r.mirrored == r.tail, 30, "the replica to catch up")
    demo.say(f"producer stopped cleanly after sequence {final_seq - 1:,} ({final_seq:,} "
             f"records in all); waiting for consumers")
    _write_json(demo.path("stop.json"), {"final_sequence": final_seq})
    results = {}
    for role in ("strategy", "logger"):
        p = demo.procs[role]
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
        results[role] = _read_json(demo.path(f"{role}.json")) or {}
    st = status() or {}
    engine = st.get("engine") or {}
    engine_stats.append(engine.get("stats") or {})
    snaps_before_stop = dict(st.get("snapshots") or {})
    if sc is not None:
        from .state import State

        with State(sc.name, readonly=True) as book_region:
            _wait_for(lambda: book_region.applied_seq == final_seq - 1, 60,
                      "the state writer to apply every tick")
    demo.stop("supervisor", 30)

    # -- verification ----------------------------------------------------------------------
    with Ring(ring_path, readonly=True) as r, Replica.open(rc.replica.name) as rep:
        start = max(r.oldest(), rep.oldest())
        cap = r.capacity
        identical = r.tail == rep.tail and _window(r.data, cap, start, r.tail) == \
            _window(rep.data, cap, start, rep.tail)
        mirrored_seq = rep.next_sequence
        seqs = []
        cons = r.consumer(start="oldest")  # read-only ring: no slot, nothing written
        while len(b := cons.read_batch(8192)):
            seqs.append(b.sequences.astype(np.int64).copy())
        cons.close()
        allseq = np.concatenate(seqs) if seqs else np.empty(0, np.int64)
        window_ok = bool(len(allseq)) and int(allseq[-1]) == final_seq - 1 and \
            bool((np.diff(allseq) == 1).all())
    s, lg = results["strategy"], results["logger"]
    book_checked = 0
    book_ok = bool(p2)
    for i, (pb, pa) in enumerate(zip(p2.get("last_bid", []), p2.get("last_ask", []),
                                              strict=True)):
        if pb is None:
            continue
        book_checked += 1
        sb, sa = s.get("book_bid") or [], s.get("book_ask") or []
        if i >= len(sb) or sb[i] != pb or sa[i] != pa:
            book_ok = False
    lost = sum(int(x.get(k, 0) or 0) for x in (s, lg) for k in ("gaps", "lost"))
    checks = {
        "replica_complete_at_crash": replica_seq == crashed_at and replica_tail == crash_tail,
        "producer_resumed_at_next_sequence": p2.get("first_sequence") == crashed_at,
        "published_equals_producers": final_seq == crashed_at + int(p2.get("published", -1)),
        "strategy_received_all": s.get("received") == final_seq and s.get("next_sequence")
        == final_seq,
        "logger_received_all": lg.get("received") == final_seq,
        "nothing_lost": lost == 0,
        "no_duplicates": s.get("duplicates") == 0 and lg.get("duplicates") == 0,
        "no_crossed_books": s.get("crossed_books") == 0,
        "consumers_agree": s.get("checksum") == lg.get("checksum") and s.get("checksum")
        is not None,
        "book_matches_producer": book_ok and book_checked > 0,
        "consumers_resumed_on_rebuilt_ring": s.get("reattached") == 1 and
        lg.get("reattached") == 1,
        "replica_identical": identical and mirrored_seq == final_seq,
        "ring_window_contiguous": window_ok,
        "final_image_complete": image_info is not None and image_info.next_sequence == crashed_at,
    }
    state_summary: dict[str, Any] | None = None
    if sc is not None:
        state_summary = _check_state(demo, sc, final_seq, state_kill)
        checks["state_writer_recovered_from_image"] = bool(
            state_kill.get("how") == "recovered" and state_kill.get("image"))
        checks["state_book_bit_identical"] = state_summary["identical"]
        checks["state_replica_identical"] = state_summary["replica_identical"]
    durations = sorted(snap_seen.values())

    def lag(st: dict[str, Any]) -> dict[str, float]:
        """End-to-end replication lag (producer commit to readable in the replica)."""
        return {k: round((st.get(f"e2e_lag_{k}_ns") or 0) / 1e3, 2)
                for k in ("p50", "p99", "p999", "max")}

    summary = {
        "verified": all(checks.values()),
        "checks": checks,
        "engine": engine.get("name"),
        "published": final_seq,
        "published_before_crash": crashed_at,
        "published_after_restore": final_seq - crashed_at,
        "resumed_at_sequence": p2.get("first_sequence"),
        "mirrored": mirrored_seq,
        "lost": lost,
        "consumers": {k: {x: v.get(x) for x in ("received", "gaps", "duplicates", "lost",
                                                "reattached", "crossed_books")}
                      for k, v in results.items()},
        "book_instruments_checked": book_checked,
        "lag_us": {"before_crash": lag(engine_stats[0]), "after_restore": lag(engine_stats[-1])},
        "snapshots": {"count": len(durations) or snaps_before_stop.get("count", 0),
                      "mean_s": round(sum(durations) / len(durations), 4) if durations else None,
                      "max_s": round(durations[-1], 4) if durations else None},
        "restore": {"from_replica_s": round(restore_replica_s, 4),
                    "from_image_s": None if restore_image_s is None
                    else round(restore_image_s, 4),
                    "image_records": image_info.record_count if image_info else None},
        "state": state_summary,
        "rate_target": rate,
        "seconds": round(time.monotonic() - t_start, 1),
        "workdir": demo.workdir,
    }
    if not demo.quiet:
        print(render_summary(summary), file=sys.stderr)
    return summary


def _kill_state_writer(demo: _Demo, cfg: Any, sc: Any) -> dict[str, Any]:
    """kill -9 the state writer that ``pyshm run`` keeps, and wait for its successor to
    recover the region; returns how it started (image, sequences, timings)."""
    def entry() -> dict[str, Any]:
        st = _read_json(cfg.status_path) or {}
        return (st.get("states") or {}).get(sc.name) or {}

    from .state import State

    e = _wait_for(lambda: (x := entry()).get("pid") and x.get("applied_seq") is not None
                  and x, 30, "the state writer")
    pid = e["pid"]
    with State(sc.name, readonly=True) as region:
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)
        applied = region.applied_seq or 0
    demo.say(f"kill -9 the strategy's state writer (pid {pid}) with the book at sequence "
             f"{applied:,}")
    new = _wait_for(lambda: (x := entry()).get("pid") not in (None, pid) and
                    (x.get("started") or {}).get("caught_up") and x, 60,
                    "the state writer to be restarted and catch up")
    start = dict(new["started"])
    caught = start.get("caught_up") or {}
    start["replayed"] = caught.get("records")
    start["replay_s"] = caught.get("seconds")
    if start.get("how") == "recovered" and start.get("image_seq") is not None:
        demo.say(f"state writer restarted (pid {new['pid']}): the image at sequence "
                 f"{start['image_seq']:,} loaded in "
                 f"{human.duration_ns(start.get('image_load_s', 0) * 1e9)}, then "
                 f"{caught.get('records', 0):,} records replayed to the live end in "
                 f"{human.duration_ns((caught.get('seconds') or 0) * 1e9)}")
    else:
        demo.say(f"state writer restarted (pid {new['pid']}): {start.get('how')}")
    start.update(killed_pid=pid, killed_at_applied_seq=applied, new_pid=new["pid"])
    return start


def _check_state(demo: _Demo, sc: Any, final_seq: int,
                 kill: dict[str, Any]) -> dict[str, Any]:
    """The region against the strategy's reference fold of every tick, bit for bit."""
    from .state import State

    ref_path = demo.path("book_ref.npy")
    ref = np.load(ref_path, allow_pickle=False) if os.path.exists(ref_path) else None
    with State(sc.name, readonly=True) as st:
        rows = st.to_numpy()
        seq = st.applied_seq
    identical = ref is not None and rows.tobytes() == ref.tobytes() and seq == final_seq - 1
    rep_identical = True
    if sc.replica is not None:
        with State(sc.replica.name, readonly=True) as rep:
            rep_identical = rep.to_numpy().tobytes() == rows.tobytes() and \
                rep.applied_seq == seq
    demo.say(f"state region {sc.name}: {len(rows)} instruments at sequence {seq:,}: "
             f"{'bit-identical to' if identical else 'DIFFERENT from'} the strategy's fold "
             f"of all {final_seq:,} ticks"
             + (f"; replica {'identical' if rep_identical else 'DIFFERENT'}"
                if sc.replica is not None else ""))
    return {"name": sc.name, "applied_seq": seq, "identical": identical,
            "replica_identical": rep_identical,
            "positions": int(np.abs(rows["position"]).sum()),
            "recovery": {k: kill.get(k) for k in (
                "killed_at_applied_seq", "image_seq", "replayed", "image_load_s",
                "restore_s", "replay_s", "records_per_s")}}


def _window(data: memoryview, capacity: int, start: int, end: int) -> bytes:
    """Bytes of positions [start, end) of a data area, unwrapped."""
    a, b = start & (capacity - 1), end & (capacity - 1)
    if end - start >= capacity or (a >= b and end > start):
        return bytes(data[a:]) + bytes(data[:b])
    return bytes(data[a:b])


def _seq_range(first: int, next_sequence: int) -> str:
    """``"0..121,738"`` for the sequences in [first, next): the last one is shown, not the
    next, so every line that names a range agrees with every other."""
    return "none" if next_sequence <= first else f"{first:,}..{next_sequence - 1:,}"


def _lag_text(lag_us: dict[str, float]) -> str:
    return ", ".join(f"{name} {human.duration_ns(lag_us.get(key, 0) * 1e3)}" for name, key in
                     (("p50", "p50"), ("p99", "p99"), ("p99.9", "p999"), ("max", "max")))


def _seconds_text(value: float | None) -> str:
    return "-" if value is None else human.duration_ns(value * 1e9)


def render_summary(s: dict[str, Any]) -> str:
    ok = "VERIFIED" if s["verified"] else "FAILED"
    c = s["consumers"]
    lines = [
        f"--- summary ({ok}, {s['seconds']} s) ---",
        f"engine               {s['engine']}",
        f"published            {s['published']:,} ({s['published_before_crash']:,} before "
        f"kill -9, {s['published_after_restore']:,} after; resumed at sequence "
        f"{s['resumed_at_sequence']:,})" if s["resumed_at_sequence"] is not None else
        f"published            {s['published']:,}",
        f"mirrored             {s['mirrored']:,}",
        f"received             strategy {c['strategy']['received']:,}, logger "
        f"{c['logger']['received']:,}",
        f"lost                 {s['lost']}",
        "replication lag      producer commit -> readable in the replica:",
        f"                     before the crash: {_lag_text(s['lag_us']['before_crash'])}",
        f"                     after the restore: {_lag_text(s['lag_us']['after_restore'])}",
        f"snapshots            {s['snapshots']['count']} (mean "
        f"{_seconds_text(s['snapshots']['mean_s'])}, max "
        f"{_seconds_text(s['snapshots']['max_s'])})",
        f"restore              from the replica {_seconds_text(s['restore']['from_replica_s'])}"
        f", from the image {_seconds_text(s['restore']['from_image_s'])}",
    ]
    st = s.get("state")
    if st:
        r = st["recovery"]
        if r.get("image_seq") is not None:
            lines.append(
                f"state                book of {st['name']}: writer killed at sequence "
                f"{r['killed_at_applied_seq']:,}, recovered from the image at "
                f"{r['image_seq']:,} (loaded in {_seconds_text(r['image_load_s'])}) + "
                f"{r['replayed']:,} records replayed in {_seconds_text(r['replay_s'])}; "
                f"{'bit-identical' if st['identical'] else 'DIFFERENT'} at the end")
    lines += [f"  {'ok  ' if v else 'FAIL'} {k}" for k, v in s["checks"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "_role":
        spec = json.loads(argv[1])
        return producer_main(spec) if spec["cmd"] == "producer" else consumer_main(spec)
    print("usage: pyshm demo (this module's entry point is for the demo's own processes)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
