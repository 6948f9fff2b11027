"""State regions benchmark: snapshots against a plain copy, writer stalls, recovery
split into image load and replay, handover gaps, and seqlock row costs.

In one run (medians of --rounds, peers interleaved round by round):

* **snapshot** of a region of 1 M rows x 64 B while a writer process commits
  transactions of 4 random rows as fast as it can: the cut + copy into memory and the
  image write, against a plain copy (numpy ``copyto``) of the same 64 MiB; the writer's
  transaction latency inside and outside snapshots (p50 / p99 / p99.9 / max) and its own
  counters (chunks it saved, longest single stall);
* **recovery** from a state image of that region plus a ring of --replay records: image
  load (read + every CRC + description), restore (one transaction over every row) and
  replay in records/s through a trivial ``apply`` (does nothing), a one-row ``apply``
  and a no-op ``apply_batch``;
* **handover** gaps (no process applying) p50 / max over --handovers handovers between
  processes under a paced producer, for a 64-row region and a 1 M-row one (the latter
  compares every row: sync=diff);
* **row costs**: ``State.read(i)`` / ``StateWriter.write(i, row)`` and the batch calls
  per row, against unguarded numpy access to the same rows (``rows[i]``, ``rows[i].copy()``,
  ``rows[i] = row``, fancy indexing).

    python bench/state.py            # full run (a few minutes)
    python bench/state.py --quick    # smaller and shorter: checks the whole thing runs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import fmt_ns, machine_info, median, percentiles, table, write_json  # noqa: E402

from pyshm import Ring, State  # noqa: E402
from pyshm.state.follower import Follower  # noqa: E402
from pyshm.state.images import read_state_image, snapshot_state  # noqa: E402
from pyshm.state.recovery import recover, restore_rows  # noqa: E402

ROW = np.dtype([(f"f{i}", "<u8") for i in range(8)])  # 64 bytes
REC = np.dtype([("row", "<u8"), ("value", "<u8"), ("pad", "<u8", (2,))])  # 32 B records


def _child(fn, *args) -> int:  # noqa: ANN001
    """fork; the child runs fn(*args) and exits (never returns into the parent's code)."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fn(*args)
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 3
        os._exit(code)
    return pid


def _name(tag: str) -> str:
    return f"pyshmbench_state_{os.getpid()}_{tag}"


def _unlink(*names: str) -> None:
    for n in names:
        try:
            os.unlink(f"/dev/shm/{n}")
        except FileNotFoundError:
            pass


# ----------------------------------------------------------------------------------
# row costs


def per_call(fn, n: int) -> float:
    t0 = time.perf_counter_ns()
    fn(n)
    return (time.perf_counter_ns() - t0) / n


def bench_rows(rows: int, rounds: int, n: int) -> dict:
    name = _name("rows")
    _unlink(name)
    st = State(name, create=True, dtype=ROW, rows=rows)
    w = st.writer()
    raw = st.raw_rows()
    rng = np.random.default_rng(1)
    idx = rng.integers(0, rows, n).tolist()
    one = np.ones(1, ROW)[0]
    arr = np.ones(1024, ROW)
    bidx = rng.integers(0, rows, 1024)

    def guarded_read(k):
        r = st.read
        for i in idx[:k]:
            r(i)

    def numpy_view(k):
        for i in idx[:k]:
            raw[i]

    def numpy_copy(k):
        for i in idx[:k]:
            raw[i].copy()

    def guarded_write(k):
        wr = w.write
        for i in idx[:k]:
            wr(i, one)

    def guarded_write_tx(k):
        w.begin()
        wr = w.write
        for i in idx[:k]:
            wr(i, one)
        w.commit(None)

    def numpy_write(k):
        for i in idx[:k]:
            raw[i] = one

    def batch_read(k):
        for _ in range(k // 1024):
            st.read_batch(bidx)

    def numpy_fancy_read(k):
        for _ in range(k // 1024):
            raw[bidx]

    def batch_write(k):
        for _ in range(k // 1024):
            w.write_batch(bidx, arr)

    def numpy_fancy_write(k):
        for _ in range(k // 1024):
            raw[bidx] = arr

    peers = {"read: State.read(i)": guarded_read, "read: numpy rows[i] (view)": numpy_view,
             "read: numpy rows[i].copy()": numpy_copy,
             "write: StateWriter.write(i, row), autocommit": guarded_write,
             "write: StateWriter.write(i, row) in a transaction": guarded_write_tx,
             "write: numpy rows[i] = row": numpy_write,
             "read batch of 1024: read_batch, per row": batch_read,
             "read batch of 1024: numpy rows[idx], per row": numpy_fancy_read,
             "write batch of 1024: write_batch, per row": batch_write,
             "write batch of 1024: numpy rows[idx] = arr, per row": numpy_fancy_write}
    samples: dict[str, list[float]] = {k: [] for k in peers}
    names = list(peers)
    for r in range(rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            samples[k].append(per_call(peers[k], n))
    w.close()
    st.close()
    _unlink(name)
    out = {k: round(median(v), 1) for k, v in samples.items()}
    out["ratio read (State.read / rows[i].copy())"] = round(
        out["read: State.read(i)"] / out["read: numpy rows[i].copy()"], 2)
    out["ratio write (write in tx / rows[i] = row)"] = round(
        out["write: StateWriter.write(i, row) in a transaction"] /
        out["write: numpy rows[i] = row"], 2)
    out["ratio batch read (read_batch / fancy index)"] = round(
        out["read batch of 1024: read_batch, per row"] /
        out["read batch of 1024: numpy rows[idx], per row"], 2)
    return {"rows": rows, "ns_per_row": out}


# ----------------------------------------------------------------------------------
# snapshots and writer stalls


def _writer(name: str, seconds: float, out: str) -> None:
    st = State(name)
    w = st.writer()
    rng = np.random.default_rng(os.getpid())
    n = st.rows
    cap = 5_000_000
    t_start = np.empty(cap, np.int64)
    lat = np.empty(cap, np.int64)
    vals = np.ones(4, ROW)
    idx_all = rng.integers(0, n, (cap, 4))
    k = 0
    clock = time.perf_counter_ns
    end = clock() + int(seconds * 1e9)
    seq = 0
    while k < cap:
        t0 = clock()
        if t0 > end:
            break
        w.begin()
        w.write_batch(idx_all[k], vals)
        w.commit(seq)
        t1 = clock()
        t_start[k] = t0
        lat[k] = t1 - t0
        k += 1
        seq += 1
    np.savez(out, t=t_start[:k], lat=lat[:k])
    with open(out + ".json", "w") as f:
        json.dump(w.stats(), f)
    w.close()
    st.close()


def bench_snapshot(rows: int, rounds: int, seconds: float, workdir: str) -> dict:
    name = _name("snap")
    _unlink(name)
    st = State(name, create=True, dtype=ROW, rows=rows)
    w = st.writer()
    w.write_range(0, np.arange(rows * 8, dtype="<u8").view(ROW))
    w.close()
    buf = np.empty(rows, ROW)
    plain = np.empty(rows, ROW)
    raw = st.raw_rows()
    nbytes = rows * ROW.itemsize
    out = os.path.join(workdir, "writer")
    pid = _child(_writer, name, seconds, out)
    time.sleep(0.3)  # the writer is going
    windows = []
    cap_s, write_s, plain_s, holds, live, shadow = [], [], [], [], [], []
    deadline = time.monotonic() + seconds - 0.5
    r = 0
    while time.monotonic() < deadline and r < rounds:
        path = os.path.join(workdir, f"s{r}.pyimg")
        order = ["snap", "plain"] if r % 2 == 0 else ["plain", "snap"]
        for what in order:
            if what == "snap":
                t0 = time.perf_counter_ns()
                res = snapshot_state(st, path, buffer=buf, method="cut", overwrite=True)
                t1 = time.perf_counter_ns()
                windows.append((t0, t1))
                cap_s.append(res.capture_s)
                write_s.append(res.write_s)
                holds.append(res.capture.hold_ns)
                live.append(res.capture.copied_live)
                shadow.append(res.capture.copied_shadow)
                os.unlink(path)
            else:
                t0 = time.perf_counter()
                np.copyto(plain, raw)
                plain_s.append(time.perf_counter() - t0)
            time.sleep(0.1)
        r += 1
    _, status = os.waitpid(pid, 0)
    data = np.load(out + ".npz")
    t, lat = data["t"], data["lat"]
    with open(out + ".json") as f:
        wstats = json.load(f)
    inside = np.zeros(len(t), bool)
    for a, b in windows:
        inside |= (t >= a) & (t <= b)
    st.close()
    _unlink(name)

    def pct(x: np.ndarray) -> dict:
        if not len(x):
            return {}
        p = percentiles(x.tolist(), [50, 99, 99.9])
        return {"p50_ns": int(p["p50"]), "p99_ns": int(p["p99"]),
                "p99.9_ns": int(p["p99.9"]), "max_ns": int(x.max()), "count": int(len(x))}

    return {
        "rows": rows, "row_bytes": ROW.itemsize, "bytes": nbytes, "snapshots": len(cap_s),
        "capture_s": round(median(cap_s), 5), "image_write_s": round(median(write_s), 5),
        "snapshot_total_s": round(median([a + b for a, b in zip(cap_s, write_s,
                                                               strict=True)]), 5),
        "plain_copy_s": round(median(plain_s), 5),
        "capture_vs_plain_copy": round(median(cap_s) / median(plain_s), 2),
        "capture_gb_s": round(nbytes / median(cap_s) / 1e9, 2),
        "plain_copy_gb_s": round(nbytes / median(plain_s) / 1e9, 2),
        "hold_ns_median": int(median(holds)), "hold_ns_max": int(max(holds)),
        "chunks_copied_live_median": int(median(live)),
        "chunks_saved_by_writer_median": int(median(shadow)),
        "writer_transactions": int(len(lat)),
        "writer_tx_latency_outside_snapshots": pct(lat[~inside]),
        "writer_tx_latency_during_snapshots": pct(lat[inside]),
        "writer_counters": wstats,
        "writer_exit_status": status,
    }


# ----------------------------------------------------------------------------------
# recovery


def bench_recovery(rows: int, records: int, rounds: int, workdir: str) -> dict:
    sname, rname = _name("rec"), _name("recring")
    _unlink(sname, rname)
    st = State(sname, create=True, dtype=ROW, rows=rows)
    w = st.writer()
    w.write_range(0, np.arange(rows * 8, dtype="<u8").view(ROW))
    w.commit(0)
    w.close()
    img = os.path.join(workdir, "rec.pyimg")
    snapshot_state(st, img)
    st.close()
    cap = 1 << 27
    ring = Ring(rname, create=True, capacity=cap)
    recs = np.zeros(records + 1, REC)
    recs["row"] = np.arange(records + 1) % rows
    recs["value"] = np.arange(records + 1)
    p = ring.producer()
    done = 0
    while done < len(recs):
        done += p.publish_batch(recs[done:done + 65536])
    p.close()
    one = np.ones(1, ROW)[0]

    def noop(w, rec):
        pass

    def one_row(w, rec):
        w.write(rec.sequence % rows, one)

    def noop_batch(w, batch):
        pass

    def vector_batch(w, batch):
        r = batch.array(REC)
        w.write_batch(r["row"], np.ones(len(r), ROW))

    load, restore_, out = [], [], {}
    for _ in range(rounds):
        t0 = time.perf_counter()
        im = read_state_image(img)
        load.append(time.perf_counter() - t0)
        with State(sname) as s:
            wr = s.writer()
            t0 = time.perf_counter()
            restore_rows(s, wr, im.rows, im.applied_seq)
            restore_.append(time.perf_counter() - t0)
            wr.close()
    for label, kw in [("noop apply", {"apply": noop}), ("one-row apply", {"apply": one_row}),
                      ("noop apply_batch", {"apply_batch": noop_batch}),
                      ("numpy apply_batch (write_batch)", {"apply_batch": vector_batch})]:
        rates = []
        for _ in range(rounds):
            rec = recover(sname, img, rname, batch=4096, **kw)
            assert rec.replayed == records, (label, rec.replayed)
            rates.append(rec.records_per_s)
            rec.close()
        out[label] = round(median(rates))
    ring.close()
    ring.unlink()
    _unlink(sname)
    mb = rows * ROW.itemsize / 1e6
    return {"rows": rows, "image_mb": round(mb, 1), "records_replayed": records,
            "image_load_s": round(median(load), 4),
            "image_load_gb_s": round(mb / 1e3 / median(load), 2),
            "restore_s": round(median(restore_), 4),
            "replay_records_per_s": out}


# ----------------------------------------------------------------------------------
# handover


ORD = np.dtype([("row", "<u4"), ("pad", "<u4"), ("value", "<u8")])


def _apply_add(w, rec):
    o = np.frombuffer(rec.data, ORD, count=1)[0]
    with w.update(int(o["row"]) % w.state.rows) as row:
        row["f0"] += 1
        row["f1"] = int(o["value"])


def _producer(ring: str, rate: float, seconds: float) -> None:
    r = Ring(ring)
    p = r.producer()
    t0 = time.perf_counter()
    sent = 0
    rows = np.zeros(4096, ORD)
    while time.perf_counter() - t0 < seconds:
        due = int((time.perf_counter() - t0) * rate) - sent
        if due <= 0:
            time.sleep(0.0005)
            continue
        n = min(due, 4096)
        rows["row"][:n] = np.arange(sent, sent + n) % 1000003
        rows["value"][:n] = np.arange(sent, sent + n)
        sent += p.publish_batch(rows[:n], timeout=5.0)
    p.close()


def _follower(name: str, ring: str, rows: int, handover: bool, out: str, sync: str) -> None:
    f = Follower(name, ring, _apply_add, dtype=ROW, rows=rows, handover=handover,
                 batch=256, sync=sync, handover_timeout=60)
    try:
        info = f.start()
        with open(out + ".tmp", "w") as fh:
            json.dump(info, fh)
        os.replace(out + ".tmp", out)  # the parent polls for the name
        res = f.run()
        with open(out + ".end", "w") as fh:
            json.dump(res.as_dict(), fh)
    finally:
        f.close()


def bench_handover(rows: int, handovers: int, rate: float, workdir: str, sync: str) -> dict:
    sname, rname = _name(f"ho{rows}"), _name(f"horing{rows}")
    _unlink(sname, rname)
    ring = Ring(rname, create=True, capacity=1 << 24, lossless=True)
    seconds = 2.0 + handovers * 1.5
    prod = _child(_producer, rname, rate, seconds)
    procs: list[int] = []
    gaps, catch_up, differing = [], [], []
    parts: list[dict] = []
    try:
        out0 = os.path.join(workdir, f"h{rows}_0.json")
        procs.append(_child(_follower, sname, rname, rows, False, out0, sync))
        time.sleep(1.0)
        for k in range(1, handovers + 1):
            out = os.path.join(workdir, f"h{rows}_{k}.json")
            old = procs[-1]
            procs.append(_child(_follower, sname, rname, rows, True, out, sync))
            deadline = time.monotonic() + 120
            while not os.path.exists(out):  # written once the new one has taken over
                if time.monotonic() > deadline or os.waitpid(procs[-1], os.WNOHANG)[0]:
                    raise RuntimeError(f"handover {k} ({rows} rows) did not complete; see "
                                       f"the traceback above")
                time.sleep(0.01)
            os.waitpid(old, 0)  # the old one returns once handed over
            with open(out) as f:
                info = json.load(f)
            gaps.append(info["gap_ns"])
            parts.append(info.get("gap_parts_ns") or {})
            catch_up.append(info["catch_up_s"])
            differing.append(info["rows_differing"])
            time.sleep(0.2)
        os.waitpid(prod, 0)
        prod = 0
    finally:
        for p in [prod, *procs]:
            if p:
                try:
                    os.kill(p, signal.SIGKILL)
                    os.waitpid(p, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass
        if len(gaps) < handovers:  # failed: leave nothing behind
            ring.close()
            _unlink(sname, rname)
    ring.close()
    ring.unlink()
    _unlink(sname)
    return {"rows": rows, "sync": sync, "handovers": len(gaps), "producer_rate": rate,
            "gap_p50_ns": int(median(gaps)), "gap_max_ns": int(max(gaps)),
            "gaps_ns": [int(g) for g in gaps],
            "catch_up_s_median": round(median(catch_up), 4),
            "gap_parts_median_ns": {k: int(median([p[k] for p in parts if p.get(k) is not None]))
                                    for k in ("notice", "apply_to_final", "take_and_sync")
                                    if any(p.get(k) is not None for p in parts)},
            "rows_differing": differing}


# ----------------------------------------------------------------------------------
# kill -9 campaign: an order-book builder killed at random moments, recovered, compared


def _apply_tick(w, rec):  # one tick into its instrument's row, as demo_book.fold does
    from pyshm.demo import TICK

    t = np.frombuffer(rec.data, TICK, count=1)
    _fold_one(w, rec.sequence, t)


def _fold_one(w, seq: int, t: np.ndarray) -> None:
    """demo_book.fold of one tick, on a one-row book (the row of its instrument)."""
    from pyshm.state.demo_book import fold

    i = int(t["instrument"][0])
    if i >= w.state.rows:
        return
    book = w.state.raw_rows()[i:i + 1].copy()  # our own rows: nobody else writes them
    one = t.copy()
    one["instrument"] = 0
    fold(book, one, np.array([seq], np.uint64))
    w.write(i, book[0])


def _builder(name: str, ring: str, images: str, rows: int) -> None:
    from pyshm.state.demo_book import BOOK

    f = Follower(name, ring, _apply_tick, dtype=BOOK, rows=rows, images=images,
                 snapshot_records=400, keep=2, snapshot_poll=0.002, batch=64)
    f.run()


def bench_kills(trials: int, records: int, workdir: str) -> dict:
    import random

    from pyshm.demo import TICK, TICK_TYPE
    from pyshm.state.demo_book import BOOK, fold
    from pyshm.state.recovery import list_images

    rows = 64
    rname = _name("killring")
    _unlink(rname)
    rng = np.random.default_rng(5)
    ticks = np.zeros(records, TICK)
    ticks["instrument"] = rng.integers(0, rows, records)
    ticks["bid"] = np.round(100 + rng.normal(0, 1, records), 4)
    ticks["ask"] = ticks["bid"] + 0.01
    ticks["bid_size"] = rng.integers(1, 100, records) * 100
    ticks["ask_size"] = rng.integers(1, 100, records) * 100
    ticks["ts_ns"] = np.arange(records)
    ring = Ring(rname, create=True, capacity=1 << 22)
    p = ring.producer()
    done = 0
    while done < records:
        done += p.publish_batch(ticks[done:done + 8192], type=TICK_TYPE)
    p.close()
    ref = np.zeros(rows, BOOK)
    fold(ref, ticks, np.arange(records, dtype=np.uint64))
    pick = random.Random(9)
    out = {"trials": 0, "identical": 0, "inside_transaction": 0, "from_image": 0,
           "resumed": 0, "from_scratch": 0}
    recover_s: list[float] = []
    for k in range(trials):
        name = _name(f"kill{k}")
        images = os.path.join(workdir, f"k{k}")
        os.makedirs(images)
        pid = _child(_builder, name, rname, images, rows)
        time.sleep(pick.uniform(0.005, 0.4))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        in_tx = False
        if os.path.exists(f"/dev/shm/{name}"):
            with State(name) as probe:
                in_tx = bool(probe.epoch & 1)
        t0 = time.perf_counter()
        with Follower(name, rname, _apply_tick, dtype=BOOK, rows=rows, images=images,
                      batch=1024) as f:
            f.run(until=records - 1, max_seconds=120)
            how = f.start_info["how"]
            got = f.state.to_numpy()
        recover_s.append(time.perf_counter() - t0)
        out["trials"] += 1
        out["identical"] += int(got.tobytes() == ref.tobytes())
        out["inside_transaction"] += int(in_tx)
        if how == "resumed":
            out["resumed"] += 1
        elif list_images(images, name):
            out["from_image"] += 1
        else:
            out["from_scratch"] += 1
        _unlink(name)
        shutil.rmtree(images, ignore_errors=True)
    ring.close()
    ring.unlink()
    out["records"] = records
    out["restart_to_caught_up_s_p50"] = round(median(recover_s), 4)
    out["restart_to_caught_up_s_max"] = round(max(recover_s), 4)
    return out


# ----------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller and shorter")
    ap.add_argument("--rows", type=int, default=1 << 20, help="rows of 64 B (default 1 M)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--replay", type=int, default=500_000, help="records replayed")
    ap.add_argument("--handovers", type=int, default=12)
    ap.add_argument("--kill-trials", type=int, default=200,
                    help="order-book builder killed with kill -9 and recovered (the tests "
                         "run 50)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "state.json"))
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.replay, args.handovers, args.kill_trials = 3, 100_000, 4, 10
    workdir = tempfile.mkdtemp(prefix="pyshm-bench-state-")
    t0 = time.time()
    try:
        print(f"rows {args.rows} x {ROW.itemsize} B; load {os.getloadavg()}", flush=True)
        res_rows = bench_rows(args.rows, args.rounds, 20000 if args.quick else 100000)
        print(table(["operation", "ns per row"],
                    [[k, str(v)] for k, v in res_rows["ns_per_row"].items()]), flush=True)
        res_snap = bench_snapshot(args.rows, args.rounds * 2, 6.0 if args.quick else 12.0,
                                  workdir)
        print(f"snapshot of {res_snap['bytes'] >> 20} MiB: cut+copy "
              f"{res_snap['capture_s'] * 1e3:.1f} ms vs plain copy "
              f"{res_snap['plain_copy_s'] * 1e3:.1f} ms "
              f"({res_snap['capture_vs_plain_copy']}x), image write "
              f"{res_snap['image_write_s'] * 1e3:.1f} ms; epoch held "
              f"{fmt_ns(res_snap['hold_ns_max'])} at most", flush=True)
        for k in ("outside", "during"):
            p = res_snap[f"writer_tx_latency_{k}_snapshots"]
            if p:
                print(f"  writer transaction {k:7s} snapshots: p50 {fmt_ns(p['p50_ns'])}, "
                      f"p99 {fmt_ns(p['p99_ns'])}, p99.9 {fmt_ns(p['p99.9_ns'])}, max "
                      f"{fmt_ns(p['max_ns'])} ({p['count']} transactions)", flush=True)
        wc = res_snap["writer_counters"]
        print(f"  writer: {wc['cow_chunks']} chunk pre-images saved ({wc['chunks_taken']} "
              f"taken from under a cut), longest save {fmt_ns(wc['max_stall_ns'])} wall, "
              f"{fmt_ns(wc['max_stall_cpu_ns'])} CPU; cuts it finished: {wc['cuts_fixed']}",
              flush=True)
        res_rec = bench_recovery(args.rows, args.replay, max(2, args.rounds // 2), workdir)
        print(f"recovery: image load {res_rec['image_load_s'] * 1e3:.1f} ms "
              f"({res_rec['image_load_gb_s']} GB/s), restore "
              f"{res_rec['restore_s'] * 1e3:.1f} ms, replay records/s "
              f"{res_rec['replay_records_per_s']}", flush=True)
        res_ho = [bench_handover(64, args.handovers, 20000.0, workdir, "diff"),
                  bench_handover(args.rows, max(2, args.handovers // 3), 20000.0, workdir,
                                 "diff")]
        for h in res_ho:
            print(f"handover, {h['rows']} rows (sync {h['sync']}): gap p50 "
                  f"{fmt_ns(h['gap_p50_ns'])}, max {fmt_ns(h['gap_max_ns'])} over "
                  f"{h['handovers']} handovers at {h['producer_rate']:.0f} records/s",
                  flush=True)
        res_kill = bench_kills(args.kill_trials, 20000, workdir)
        print(f"kill -9 campaign: {res_kill['identical']}/{res_kill['trials']} bit-identical "
              f"after recovery ({res_kill['inside_transaction']} killed inside a "
              f"transaction, {res_kill['from_image']} recovered from an image, "
              f"{res_kill['resumed']} resumed); restart to caught up p50 "
              f"{res_kill['restart_to_caught_up_s_p50']} s", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    doc = {"config": {k: (os.path.relpath(v) if k == "out" else v)
                      for k, v in vars(args).items()}, "seconds": round(time.time() - t0, 1),
           "loadavg_end": list(os.getloadavg()), "row_costs": res_rows,
           "snapshot": res_snap, "recovery": res_rec, "handover": res_ho,
           "kills": res_kill, "machine_start": machine_info()}
    write_json(args.out, doc)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
