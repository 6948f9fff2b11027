"""Snapshot and restore benchmark, against the physical limits of the same machine.

In one run, for each ring size (default 64 MiB and 1 GiB):
  * snapshot time (fresh copy buffer, reused buffer, zstd) vs a raw sequential write of
    the same bytes to the same directory (both fsynced);
  * (a) restore into a NEW segment (all-in: allocation + page faults + verify + copy +
    publish) vs memcpy into a fresh shm segment (same faults) and vs warm memcpy;
  * (b) restore IN PLACE over an existing, stopped, already-faulted ring (the recovery
    case: verify every chunk and record first, then one copy) vs warm memcpy, the
    target of docs/design.md (<= 1.5x; the check below still uses the earlier 2x);
  * (c) snapshot of a REPLICA kept by the CPU engine, its chunk CRCs taken from the
    replica's CRC table (no pass over the data but the write itself) vs a raw write of
    the same bytes with fsync, interleaved round by round; the same snapshot with the CPU
    computing the CRCs (use_crc_table=False) alongside. Target: <= 1.1x;
  * (d) in-place restore into a ring held open THROUGH THE ENGINE (its copy mode: the
    engine verifies every chunk, then copies and checks again) vs the CPU path, vs warm
    memcpy of the same bytes. Target: <= 1.5x at 256 MiB and 1 GiB;
and the producer's publish latency (p50/p99/p99.9, 64 B, paced, separate process) with
and without snapshots running. Medians of --repeats; JSON in bench/results/.

    python bench/snapshot.py                 # full run
    python bench/snapshot.py --quick         # 64 MiB only, fewer repeats (smoke run)

It also repeats the test suite's crash-consistency trials (--crash-trials, default 200):
a forked producer killed with SIGKILL while snapshots run; "bad" must be 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

from pyshm.engine import open_copier, open_engine
from pyshm.images import restore, snapshot
from pyshm.images.snapshot import scratch_size
from pyshm.replica import Replica
from pyshm.ring import Ring, parse_size
from pyshm.segment import Segment

HERE = os.path.dirname(os.path.abspath(__file__))


def median_time(fn, repeats: int, setup=None, teardown=None) -> float:
    times = []
    for _ in range(repeats):
        if setup:
            setup()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if teardown:
            teardown()
    return statistics.median(times)


def unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def fill(ring: Ring, payload_size: int) -> None:
    """Publish until the ring has wrapped once: a full, wrapped window."""
    p = ring.producer()
    pay = b"\xa5" * payload_size
    batch = [pay] * 4096
    while ring.tail < ring.capacity + ring.capacity // 3:
        p.publish_batch(batch)
    p.close()


def bench_size(size: int, repeats: int, directory: str, payload_size: int) -> dict:
    tag = f"bench-img-{os.getpid()}"
    name = f"{tag}-{size}"
    img = os.path.join(directory, f"{tag}.pyimg")
    raw = os.path.join(directory, f"{tag}.raw")
    out: dict = {"size": size, "payload": payload_size}
    ring = Ring(name, create=True, capacity=size, prefault=True)
    try:
        fill(ring, payload_size)
        data = ring.data_array()
        buf = np.empty(scratch_size(ring.params), dtype=np.uint8)
        buf[:] = 0  # touched: the reused-buffer case has no page faults

        out["snapshot_fresh_s"] = median_time(
            lambda: snapshot(ring, img, overwrite=True), repeats, teardown=lambda: unlink(img))
        out["snapshot_reused_s"] = median_time(
            lambda: snapshot(ring, img, overwrite=True, buffer=buf), repeats,
            teardown=lambda: unlink(img))
        t0 = time.perf_counter()
        h = snapshot(ring, img + ".zst", overwrite=True, buffer=buf, compression="zstd")
        out["snapshot_zstd_s"] = time.perf_counter() - t0
        out["zstd_ratio"] = round(h.data_length / max(1, h.stored_length), 2)
        unlink(img + ".zst")
        h = snapshot(ring, img, overwrite=True, buffer=buf)
        out["window_bytes"] = h.data_length
        out["records"] = h.record_count

        def raw_write() -> None:
            fd = os.open(raw, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                mv = memoryview(data)
                step = 4 << 20
                for off in range(0, h.data_length, step):
                    os.write(fd, mv[off:min(off + step, h.data_length)])
                os.fsync(fd)
            finally:
                os.close(fd)

        out["raw_write_s"] = median_time(raw_write, repeats, teardown=lambda: unlink(raw))
        out["snapshot_vs_raw_write"] = round(out["snapshot_reused_s"] / out["raw_write_s"], 2)

        target = f"{tag}-restored"
        out["restore_s"] = median_time(lambda: restore(img, target), repeats,
                                       teardown=lambda: unlink(f"/dev/shm/{target}"))
        dst = np.empty(h.data_length, dtype=np.uint8)
        dst[:] = 1
        src = data[:h.data_length]
        out["memcpy_s"] = median_time(lambda: np.copyto(dst, src), max(3, repeats))

        def memcpy_fresh() -> None:
            seg = Segment(f"{tag}-fresh", create=True, size=h.data_length)
            try:
                view = np.frombuffer(seg.mmap, dtype=np.uint8)
                np.copyto(view, src)
                del view
            finally:
                seg.close()
                seg.unlink()

        out["memcpy_fresh_shm_s"] = median_time(memcpy_fresh, repeats)
        out["restore_vs_memcpy"] = round(out["restore_s"] / out["memcpy_s"], 2)
        out["restore_vs_memcpy_fresh_shm"] = round(out["restore_s"] /
                                                   out["memcpy_fresh_shm_s"], 2)

        # (b) recovery in place: a stopped ring of the same geometry, already faulted.
        # Held open by the recovering process (its mapping is faulted, like memcpy's
        # destination), and by name (this process maps it anew: page-table work).
        # (d) the same through the engine's copy mode, interleaved with the CPU path and
        # with memcpy of the same bytes round by round.
        inplace = f"{tag}-inplace"
        held = Ring(inplace, create=True, capacity=size, prefault=True)
        try:
            copier = open_copier("cpu")
            rounds = {"engine": [], "cpu": [], "memcpy": []}
            for _ in range(max(3, repeats)):
                for key, fn in (("memcpy", lambda: np.copyto(dst, src)),
                                ("engine", lambda: restore(img, held, in_place=True,
                                                           engine=copier)),
                                ("cpu", lambda: restore(img, held, in_place=True,
                                                        engine=None))):
                    t0 = time.perf_counter()
                    fn()
                    rounds[key].append(time.perf_counter() - t0)
            out["restore_in_place_s"] = statistics.median(rounds["cpu"])
            out["restore_in_place_engine_s"] = statistics.median(rounds["engine"])
            out["memcpy_interleaved_s"] = statistics.median(rounds["memcpy"])
            out["restore_in_place_engine_vs_memcpy"] = round(
                out["restore_in_place_engine_s"] / out["memcpy_interleaved_s"], 2)
            out["restore_in_place_cpu_vs_memcpy_interleaved"] = round(
                out["restore_in_place_s"] / out["memcpy_interleaved_s"], 2)
            out["restore_engine_threads"] = copier.threads
            out["target_in_place_engine_le_1_5x_memcpy"] = \
                out["restore_in_place_engine_vs_memcpy"] <= 1.5
            out["restore_in_place_by_name_s"] = median_time(
                lambda: restore(img, inplace, in_place=True), max(3, repeats))
        finally:
            held.close()
            unlink(f"/dev/shm/{inplace}")
        out.update(replica_snapshot(ring, size, repeats, directory, tag))
        # warm memcpy again, right after: the machine is shared, take the fairer of two
        out["memcpy_s"] = min(out["memcpy_s"], median_time(lambda: np.copyto(dst, src),
                                                           max(3, repeats)))
        out["restore_vs_memcpy"] = round(out["restore_s"] / out["memcpy_s"], 2)
        out["restore_in_place_vs_memcpy"] = round(out["restore_in_place_s"] /
                                                  out["memcpy_s"], 2)
        out["restore_in_place_by_name_vs_memcpy"] = round(
            out["restore_in_place_by_name_s"] / out["memcpy_s"], 2)
        out["target_in_place_le_2x_memcpy"] = out["restore_in_place_vs_memcpy"] <= 2.0
        out["target_new_segment_le_2x_memcpy"] = out["restore_vs_memcpy"] <= 2.0
    finally:
        ring.close()
        unlink(f"/dev/shm/{name}")
        unlink(img)
        unlink(raw)
    return out


def replica_snapshot(ring: Ring, size: int, repeats: int, directory: str, tag: str) -> dict:
    """(c): a replica of ``ring`` kept by the CPU engine (running, producer idle), its
    snapshot from the CRC table, the same with CPU CRCs, and a raw write of the same
    bytes from the replica with fsync: one of each per round, interleaved."""
    rep = Replica.create(f"{tag}-rep-{size}", ring)
    img = os.path.join(directory, f"{tag}-rep.pyimg")
    raw = os.path.join(directory, f"{tag}-rep.raw")
    out: dict = {}
    try:
        with open_engine("cpu", ring, rep) as eng:
            eng.start()
            eng.sync(60)
            # a view of the replica's data, dropped before the replica is unmapped
            views = [np.frombuffer(rep.segment.mmap, np.uint8, size, 4096)]
            h = snapshot(rep, img, engine=eng, overwrite=True)  # warm-up, and the window
            unlink(img)
            off = h.first_position & (size - 1)

            def raw_write() -> None:
                fd = os.open(raw, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    pos, left = off, h.data_length
                    while left:
                        n = min(left, 4 << 20, size - pos)
                        os.write(fd, views[0][pos:pos + n])
                        pos, left = (pos + n) & (size - 1), left - n
                    os.fsync(fd)
                finally:
                    os.close(fd)

            rounds = {"raw": [], "table": [], "cpu": []}
            for _ in range(max(3, repeats)):
                for key, fn in (
                        ("raw", raw_write),
                        ("table", lambda: snapshot(rep, img, engine=eng, overwrite=True)),
                        ("cpu", lambda: snapshot(rep, img, engine=eng, overwrite=True,
                                                 use_crc_table=False))):
                    t0 = time.perf_counter()
                    fn()
                    rounds[key].append(time.perf_counter() - t0)
                    unlink(img)
                    unlink(raw)
            views.clear()
            med = {k: statistics.median(v) for k, v in rounds.items()}
            ratios = [t / r for t, r in zip(rounds["table"], rounds["raw"], strict=True)]
            out = {"replica_window_bytes": h.data_length,
                   "replica_raw_write_s": med["raw"],
                   "replica_snapshot_table_s": med["table"],
                   "replica_snapshot_cpu_crc_s": med["cpu"],
                   "replica_snapshot_table_vs_raw_write": round(med["table"] / med["raw"], 2),
                   "replica_snapshot_table_vs_raw_write_per_round": [round(x, 2)
                                                                     for x in ratios],
                   "replica_snapshot_cpu_crc_vs_raw_write": round(med["cpu"] / med["raw"], 2),
                   "target_replica_snapshot_le_1_1x_raw_write":
                       med["table"] / med["raw"] <= 1.1,
                   "load_avg_after_replica": os.getloadavg()}
    finally:
        rep.close()
        rep.unlink()
        unlink(img)
        unlink(raw)
    return out


# ------------------------------------------------------------------ latency


def producer_main(name: str, count: int, pace_ns: int) -> None:
    """Child: publish ``count`` 64-byte messages, one every ``pace_ns``; time each call."""
    ring = Ring(name)
    p = ring.producer()
    lat = np.empty(count, dtype=np.int64)
    pay = b"\x5a" * 64
    clock = time.perf_counter_ns
    nxt = clock()
    for i in range(count):
        while clock() < nxt:
            pass
        t0 = clock()
        p.publish(pay)
        lat[i] = clock() - t0
        nxt = t0 + pace_ns
    p.close()
    ring.close()
    q = np.percentile(lat[count // 10:], [50, 99, 99.9])  # skip warm-up
    print(json.dumps({"p50_ns": float(q[0]), "p99_ns": float(q[1]), "p999_ns": float(q[2])}))


def latency(directory: str, count: int, pace_ns: int, ring_size: int) -> dict:
    name = f"bench-img-lat-{os.getpid()}"
    img = os.path.join(directory, f"{name}.pyimg")
    res: dict = {"messages": count, "pace_ns": pace_ns, "ring": ring_size}
    ring = Ring(name, create=True, capacity=ring_size, prefault=True)
    buf = np.zeros(scratch_size(ring.params), dtype=np.uint8)
    try:
        fill(ring, 64)
        for phase in ("idle", "snapshotting", "snapshotting_nice10"):
            proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--producer",
                                     name, str(count), str(pace_ns)], cwd=HERE,
                                    stdout=subprocess.PIPE, text=True)
            if phase == "snapshotting_nice10":
                # a snapshot agent would run below the producer's priority: measure that
                # too (2 shared cores). After the spawn, so the producer keeps its own.
                os.nice(10)
            snaps = 0
            if phase != "idle":
                while proc.poll() is None:
                    snapshot(ring, img, overwrite=True, buffer=buf, sync=False)
                    snaps += 1
            stdout, _ = proc.communicate(timeout=300)
            res[phase] = json.loads(stdout)
            if phase != "idle":
                res[phase]["snapshots"] = snaps
        res["p99_ratio"] = round(res["snapshotting"]["p99_ns"] / res["idle"]["p99_ns"], 2)
        res["p99_ratio_nice10"] = round(res["snapshotting_nice10"]["p99_ns"] /
                                        res["idle"]["p99_ns"], 2)
    finally:
        ring.close()
        unlink(f"/dev/shm/{name}")
        unlink(img)
    return res


# ------------------------------------------------------------------ crash trials


def crash_payload(seq: int) -> bytes:
    size = (seq * 2654435761) % 200
    return (seq.to_bytes(8, "little") * (size // 8 + 1))[:size]


def crash_trials(trials: int, directory: str, seed: int = 1) -> dict:
    """The test suite's SIGKILL trials, many more of them: every image must restore to a
    consecutive run of committed, intact records."""
    import random
    import signal
    import threading

    from pyshm.errors import SnapshotError

    rng = random.Random(seed)
    base = f"bench-img-crash-{os.getpid()}"
    stats = {"trials": trials, "images": 0, "records": 0, "refused_lapped": 0,
             "bad": 0}
    t0 = time.perf_counter()
    for trial in range(trials):
        name = f"{base}-{trial}"
        cap = rng.choice([1 << 13, 1 << 14, 1 << 16, 1 << 20])
        paths = []
        with Ring(name, create=True, capacity=cap, partitions=rng.choice([4, 8, 16])) as ring:
            pid = os.fork()
            if pid == 0:
                try:
                    p = Ring(name).producer()
                    s = p.sequence
                    while True:
                        p.publish(crash_payload(s), type=s % 7)
                        s += 1
                finally:
                    os._exit(1)
            killer = threading.Timer(rng.uniform(0.001, 0.1),
                                     lambda p=pid: os.kill(p, signal.SIGKILL))
            killer.start()
            while killer.is_alive():
                path = os.path.join(directory, f"{base}-{trial}-{len(paths)}.pyimg")
                try:
                    snapshot(ring, path, sync=False, retries=4)
                    paths.append(path)
                except SnapshotError:
                    stats["refused_lapped"] += 1
            killer.join()
            os.waitpid(pid, 0)
            path = os.path.join(directory, f"{base}-{trial}-final.pyimg")
            snapshot(ring, path, sync=False)
            paths.append(path)
            committed = ring.next_sequence
        unlink(f"/dev/shm/{name}")
        for path in paths:
            restore(path, f"{name}-r")
            with Ring(f"{name}-r") as r:
                c = r.consumer()
                seqs = []
                while (m := c.read()) is not None:
                    if bytes(m.data) != crash_payload(m.sequence) or \
                            m.type != m.sequence % 7:
                        stats["bad"] += 1
                    seqs.append(m.sequence)
                c.close()
            unlink(f"/dev/shm/{name}-r")
            unlink(path)
            if seqs and (seqs != list(range(seqs[0], seqs[0] + len(seqs)))
                         or seqs[-1] >= committed):
                stats["bad"] += 1
            stats["images"] += 1
            stats["records"] += len(seqs)
    stats["seconds"] = round(time.perf_counter() - t0, 1)
    return stats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="64MiB,256MiB,1GiB")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--payload", type=int, default=1000, help="payload bytes per record")
    ap.add_argument("--dir", default="/tmp", help="where images and raw writes go")
    ap.add_argument("--latency-count", type=int, default=400_000)
    ap.add_argument("--pace-ns", type=int, default=2000)
    ap.add_argument("--quick", action="store_true", help="64 MiB, 3 repeats, short latency")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "snapshot.json"))
    ap.add_argument("--crash-trials", type=int, default=200,
                    help="SIGKILL-the-producer trials (0: skip)")
    ap.add_argument("--producer", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.producer:
        producer_main(args.producer[0], int(args.producer[1]), int(args.producer[2]))
        return 0
    if args.quick:
        args.sizes, args.repeats, args.latency_count = "64MiB", 3, 100_000
        args.crash_trials = min(args.crash_trials, 20)
    result = {
        "bench": "snapshot",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg": os.getloadavg()},
        "args": {k: v for k, v in vars(args).items() if k != "producer"},
        "sizes": [],
    }
    for s in args.sizes.split(","):
        r = bench_size(parse_size(s), args.repeats, args.dir, args.payload)
        print(json.dumps(r), flush=True)
        print(f"{s}: (c) replica snapshot from the CRC table "
              f"{r['replica_snapshot_table_s']:.3f} s = "
              f"{r['replica_snapshot_table_vs_raw_write']}x raw write+fsync (target <= 1.1x; "
              f"CPU CRCs: {r['replica_snapshot_cpu_crc_vs_raw_write']}x); (d) in-place "
              f"restore through the engine {r['restore_in_place_engine_s']:.3f} s = "
              f"{r['restore_in_place_engine_vs_memcpy']}x memcpy (target <= 1.5x; CPU path "
              f"{r['restore_in_place_cpu_vs_memcpy_interleaved']}x); load "
              f"{os.getloadavg()[0]:.2f}", flush=True)
        print(f"{s}: (a) restore into a new segment {r['restore_s']:.3f} s = "
              f"{r['restore_vs_memcpy_fresh_shm']}x memcpy into fresh shm, "
              f"{r['restore_vs_memcpy']}x warm memcpy; (b) in place "
              f"{r['restore_in_place_s']:.3f} s = {r['restore_in_place_vs_memcpy']}x warm "
              f"memcpy ({r['restore_in_place_by_name_vs_memcpy']}x by name); target <= 2x: "
              f"{'met' if r['target_in_place_le_2x_memcpy'] else 'NOT met'}", flush=True)
        result["sizes"].append(r)
    if args.crash_trials:
        crash = crash_trials(args.crash_trials, args.dir)
        print(json.dumps({"crash": crash}), flush=True)
        result["crash"] = crash
    lat = latency(args.dir, args.latency_count, args.pace_ns, 64 << 20)
    print(json.dumps(lat), flush=True)
    result["latency"] = lat
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
