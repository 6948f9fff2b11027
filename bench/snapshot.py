"""Snapshot and restore benchmark, against the physical limits of the same machine.

In one run, for each ring size (default 64 MiB, 256 MiB and 1 GiB):
  * snapshot time (fresh copy buffer, reused buffer, zstd) vs a raw sequential write of
    the same bytes to the same directory (both fsynced);
  * (a) restore into a NEW segment (all-in: allocation + page faults + verify + copy +
    publish) vs memcpy into a fresh shm segment (same faults) and vs warm memcpy, through
    the engine (one pass: copy with the CRC check) and the CPU path, interleaved;
  * (b) restore IN PLACE over an existing, stopped, already-faulted ring (the recovery
    case: verify every chunk and record first, then one copy) vs warm memcpy, the
    target of docs/design.md (<= 1.5x; the check below still uses the earlier 2x);
  * (c) snapshot of a REPLICA kept by the CPU engine, its chunk CRCs taken from the
    replica's CRC table (no pass over the data but the write itself) vs a raw write of
    the same bytes with fsync (the target's baseline: write(2) 4 MiB at a time, fsync),
    interleaved round by round; and vs the same raw write done as the image writer does
    its I/O (writeback started after every 4 MiB, fsync, then the directory fsynced: a
    new file made durable), so that what the snapshot itself adds is visible apart from
    how the bytes are scheduled to the disk; the same snapshot with the CPU computing the
    CRCs (use_crc_table=False) alongside. Target: <= 1.1x;
  * (d) in-place restore into a ring held open THROUGH THE ENGINE (its copy mode: the
    engine verifies every chunk, then copies and checks again), with 2 threads and 1,
    vs the CPU path, vs warm memcpy of the same bytes (numpy.copyto, the target's
    baseline), and the floor of "verify, then copy" in the same rounds: one CRC pass over
    the image mapping (1 thread; and the engine's verify with its threads) plus one
    memcpy; a memcpy from the image mapping into the ring (the restore's own buffers,
    glibc's copy) is timed alongside for reference. The
    1-thread restore and memcpy are also timed in CPU seconds (the load of a shared
    machine stretches wall time, not CPU time). Target: <= 1.5x at 256 MiB and 1 GiB;
and the producer's publish latency (p50/p99/p99.9, 64 B, paced, separate process) with
and without snapshots running. Medians of --repeats; JSON in bench/results/.

    python bench/snapshot.py                 # full run
    python bench/snapshot.py --quick         # 64 MiB only, fewer repeats (smoke run)
    python bench/snapshot.py --sizes 256MiB,1GiB --parts inplace,replica --repeats 9

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

from pyshm import checksum
from pyshm.engine import open_copier, open_engine
from pyshm.images import format as image_format
from pyshm.images import restore, snapshot
from pyshm.images.records import MappedWindow
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


PARTS = ("write", "new", "inplace", "replica")


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def interleaved(variants: dict, rounds: int, after=None) -> tuple[dict, dict]:
    """Run each variant once per round, in turn; (wall seconds, CPU seconds of this
    process) per variant, lists in round order."""
    wall: dict = {k: [] for k in variants}
    cpu: dict = {k: [] for k in variants}
    for _ in range(rounds):
        for key, fn in variants.items():
            c0 = time.process_time()
            t0 = time.perf_counter()
            fn()
            wall[key].append(time.perf_counter() - t0)
            cpu[key].append(time.process_time() - c0)
            if after:
                after()
    return wall, cpu


def med(values) -> float:
    return statistics.median(values)


def bench_size(size: int, repeats: int, directory: str, payload_size: int,
               parts: set) -> dict:
    tag = f"bench-img-{os.getpid()}"
    name = f"{tag}-{size}"
    img = os.path.join(directory, f"{tag}.pyimg")
    raw = os.path.join(directory, f"{tag}.raw")
    out: dict = {"size": size, "payload": payload_size, "load_at_start": load1()}
    ring = Ring(name, create=True, capacity=size, prefault=True)
    try:
        fill(ring, payload_size)
        data = ring.data_array()
        buf = np.empty(scratch_size(ring.params), dtype=np.uint8)
        buf[:] = 0  # touched: the reused-buffer case has no page faults
        h = snapshot(ring, img, overwrite=True, buffer=buf)
        out["window_bytes"] = h.data_length
        out["records"] = h.record_count
        dst = np.empty(h.data_length, dtype=np.uint8)
        dst[:] = 1
        src = data[:h.data_length]
        out["memcpy_s"] = median_time(lambda: np.copyto(dst, src), max(3, repeats))
        if "write" in parts:
            out.update(write_figures(ring, img, raw, buf, data, h, repeats))
        if "new" in parts:
            out.update(new_segment_restore(img, tag, h, src, dst, repeats))
        if "inplace" in parts:
            out.update(in_place_restore(img, tag, size, h, src, dst, repeats))
        if "replica" in parts:
            out.update(replica_snapshot(ring, size, repeats, directory, tag))
        # warm memcpy again, right after: the machine is shared, take the fairer of two
        out["memcpy_s"] = min(out["memcpy_s"], median_time(lambda: np.copyto(dst, src),
                                                           max(3, repeats)))
        if "new" in parts:
            out["restore_vs_memcpy"] = round(out["restore_s"] / out["memcpy_s"], 2)
            out["target_new_segment_le_2x_memcpy"] = out["restore_vs_memcpy"] <= 2.0
        if "inplace" in parts:
            out["restore_in_place_by_name_vs_memcpy"] = round(
                out["restore_in_place_by_name_s"] / out["memcpy_s"], 2)
        out["load_at_end"] = load1()
    finally:
        ring.close()
        unlink(f"/dev/shm/{name}")
        unlink(img)
        unlink(raw)
    return out


def write_figures(ring: Ring, img: str, raw: str, buf: np.ndarray, data: np.ndarray,
                  h, repeats: int) -> dict:
    """Snapshot of a live ring (fresh and reused copy buffer, zstd) vs a raw write+fsync
    of the same bytes."""
    out: dict = {"load_write": load1()}
    out["snapshot_fresh_s"] = median_time(
        lambda: snapshot(ring, img, overwrite=True), repeats, teardown=lambda: unlink(img))
    out["snapshot_reused_s"] = median_time(
        lambda: snapshot(ring, img, overwrite=True, buffer=buf), repeats,
        teardown=lambda: unlink(img))
    t0 = time.perf_counter()
    hz = snapshot(ring, img + ".zst", overwrite=True, buffer=buf, compression="zstd")
    out["snapshot_zstd_s"] = time.perf_counter() - t0
    out["zstd_ratio"] = round(hz.data_length / max(1, hz.stored_length), 2)
    unlink(img + ".zst")
    snapshot(ring, img, overwrite=True, buffer=buf)  # the image the restores read

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
    return out


def new_segment_restore(img: str, tag: str, h, src: np.ndarray, dst: np.ndarray,
                        repeats: int) -> dict:
    """(a): a new ring from the image, through the engine (one pass: copy with the CRC
    check, pages allocated beside the record walk) and the CPU path (CRC + walk beside a
    pwrite of the window), interleaved with memcpy into a fresh shm segment (the same
    page allocation) and warm memcpy."""
    target = f"{tag}-restored"

    def memcpy_fresh() -> None:
        seg = Segment(f"{tag}-fresh", create=True, size=h.data_length)
        try:
            view = np.frombuffer(seg.mmap, dtype=np.uint8)
            np.copyto(view, src)
            del view
        finally:
            seg.close()
            seg.unlink()

    wall, _ = interleaved({
        "engine": lambda: restore(img, target, engine="cpu"),
        "cpu": lambda: restore(img, target, engine=None),
        "fresh": memcpy_fresh,
        "memcpy": lambda: np.copyto(dst, src),
    }, max(3, repeats), after=lambda: unlink(f"/dev/shm/{target}"))
    m = {k: med(v) for k, v in wall.items()}
    return {"load_new": load1(),
            "restore_s": m["engine"], "restore_engine_s": m["engine"],
            "restore_cpu_path_s": m["cpu"], "memcpy_fresh_shm_s": m["fresh"],
            "memcpy_new_interleaved_s": m["memcpy"],
            "restore_engine_vs_cpu_path": round(m["engine"] / m["cpu"], 2),
            "restore_vs_memcpy_fresh_shm": round(m["engine"] / m["fresh"], 2),
            "restore_cpu_path_vs_memcpy_fresh_shm": round(m["cpu"] / m["fresh"], 2),
            "restore_engine_vs_cpu_path_per_round": [
                round(a / b, 2) for a, b in zip(wall["engine"], wall["cpu"], strict=True)]}


def in_place_restore(img: str, tag: str, size: int, h, src: np.ndarray, dst: np.ndarray,
                     repeats: int) -> dict:
    """(b) and (d): in-place restores into a ring held open, interleaved round by round
    with the target's baseline (numpy.copyto of the same number of bytes) and what the
    floor of "verify everything, then copy" is made of: one CRC pass over the image
    mapping, plus that memcpy; and glibc's memcpy from the image mapping into the ring."""
    inplace = f"{tag}-inplace"
    held = Ring(inplace, create=True, capacity=size, prefault=True)
    out: dict = {"load_inplace": load1()}
    try:
        copier2 = open_copier("cpu", threads=2)
        copier1 = open_copier("cpu", threads=1)
        reader = image_format.ImageReader(img)
        win = MappedWindow(reader.fileno(), reader.data_offset, h.params, h.first_position,
                           h.end_position)
        # views of the ring and of the image mapping, dropped before either is unmapped
        views = [np.frombuffer(held.segment.mmap, np.uint8, size, 4096),
                 np.frombuffer(win.data, np.uint8)]
        off = h.first_position & (size - 1)
        first = min(h.data_length, size - off)
        job = [image_format_chunk(reader, i) for i in range(len(reader.chunks))]

        def memcpy_same() -> None:  # image mapping -> ring, as the restore copies
            ring_data, image = views
            np.copyto(ring_data[off:off + first], image[:first])
            np.copyto(ring_data[:h.data_length - first], image[first:])

        try:
            wall, cpu = interleaved({
                "memcpy": lambda: np.copyto(dst, src),
                "engine2": lambda: restore(img, held, in_place=True, engine=copier2),
                "engine1": lambda: restore(img, held, in_place=True, engine=copier1),
                "cpu": lambda: restore(img, held, in_place=True, engine=None),
                "crc1": lambda: checksum.crc32c(win.data),
                "verify2": lambda: copier2.verify(win.data, job),
                "memcpy_same": memcpy_same,
            }, max(5, repeats))
        finally:
            views.clear()
            win.close()
            reader.close()
        m = {k: med(v) for k, v in wall.items()}
        mc = m["memcpy"]
        per_round = [round(a / b, 2) for a, b in zip(wall["engine2"], wall["memcpy"],
                                                     strict=True)]
        out.update({
            "memcpy_interleaved_s": mc,
            "restore_in_place_engine_s": m["engine2"],
            "restore_in_place_engine_1thread_s": m["engine1"],
            "restore_in_place_s": m["cpu"],
            "crc_pass_1thread_s": m["crc1"], "crc_pass_engine_verify_s": m["verify2"],
            "memcpy_image_to_ring_s": m["memcpy_same"],
            "restore_in_place_engine_vs_memcpy": round(m["engine2"] / mc, 2),
            "restore_in_place_engine_vs_memcpy_per_round": per_round,
            "restore_in_place_engine_1thread_vs_memcpy": round(m["engine1"] / mc, 2),
            "restore_in_place_cpu_vs_memcpy_interleaved": round(m["cpu"] / mc, 2),
            "restore_in_place_vs_memcpy": round(m["cpu"] / mc, 2),
            "floor_crc_pass_vs_memcpy": round(m["crc1"] / mc, 2),
            "floor_engine_verify_vs_memcpy": round(m["verify2"] / mc, 2),
            "floor_memcpy_image_to_ring_vs_memcpy": round(m["memcpy_same"] / mc, 2),
            # the floor of "verify everything, then copy": one CRC pass plus one memcpy
            "floor_verify_then_copy_1thread_vs_memcpy": round(1 + m["crc1"] / mc, 2),
            "floor_verify_then_copy_engine_vs_memcpy": round(1 + m["verify2"] / mc, 2),
            # CPU seconds of this process: a loaded machine stretches wall time
            "cpu_seconds_memcpy": med(cpu["memcpy"]),
            "cpu_seconds_restore_engine_1thread": med(cpu["engine1"]),
            "restore_in_place_engine_1thread_vs_memcpy_cpu_seconds": round(
                med(cpu["engine1"]) / med(cpu["memcpy"]), 2),
            "restore_engine_threads": copier2.threads,
            "target_in_place_engine_le_1_5x_memcpy": m["engine2"] / mc <= 1.5,
            "target_in_place_le_2x_memcpy": m["cpu"] / mc <= 2.0,
            "load_inplace_end": load1(),
        })
        out["restore_in_place_by_name_s"] = median_time(
            lambda: restore(img, inplace, in_place=True), max(3, repeats))
    finally:
        held.close()
        unlink(f"/dev/shm/{inplace}")
    return out


def image_format_chunk(reader, i: int):
    """Image chunk ``i`` as a copy-mode chunk (what restore hands the engine)."""
    from pyshm.engine import CopyChunk

    h, e = reader.header, reader.chunks[i]
    return CopyChunk(i * h.chunk_size, h.first_position + i * h.chunk_size, e.raw_length,
                     e.raw_crc)


def replica_snapshot(ring: Ring, size: int, repeats: int, directory: str, tag: str) -> dict:
    """(c): a replica of ``ring`` kept by the CPU engine (running, producer idle), its
    snapshot from the CRC table, the same with CPU CRCs, and raw writes of the same bytes
    from the replica with fsync: one of each per round, interleaved."""
    rep = Replica.create(f"{tag}-rep-{size}", ring)
    img = os.path.join(directory, f"{tag}-rep.pyimg")
    raw = os.path.join(directory, f"{tag}-rep.raw")
    out: dict = {"load_replica": load1()}
    try:
        with open_engine("cpu", ring, rep) as eng:
            eng.start()
            eng.sync(60)
            # a view of the replica's data, dropped before the replica is unmapped
            views = [np.frombuffer(rep.segment.mmap, np.uint8, size, 4096)]
            h = snapshot(rep, img, engine=eng, overwrite=True)  # warm-up, and the window
            unlink(img)
            off = h.first_position & (size - 1)

            def raw_write(like_images: bool = False) -> None:
                fd = os.open(raw, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    pos, left, at = off, h.data_length, 0
                    while left:
                        n = min(left, 4 << 20, size - pos)
                        os.write(fd, views[0][pos:pos + n])
                        if like_images:
                            image_format._start_writeback(fd, at, n)
                        pos, left, at = (pos + n) & (size - 1), left - n, at + n
                    os.fsync(fd)
                finally:
                    os.close(fd)
                if like_images:
                    image_format._fsync_dir(raw)

            def cleanup() -> None:
                unlink(img)
                unlink(raw)

            wall, _ = interleaved({
                "raw": raw_write,
                "raw_like_images": lambda: raw_write(True),
                "table": lambda: snapshot(rep, img, engine=eng, overwrite=True),
                "cpu": lambda: snapshot(rep, img, engine=eng, overwrite=True,
                                        use_crc_table=False),
            }, max(5, repeats), after=cleanup)
            views.clear()
            m = {k: med(v) for k, v in wall.items()}
            ratios = [t / r for t, r in zip(wall["table"], wall["raw"], strict=True)]
            ratios_same = [t / r for t, r in zip(wall["table"], wall["raw_like_images"],
                                                 strict=True)]
            out.update({
                "replica_window_bytes": h.data_length,
                "replica_raw_write_s": m["raw"],
                "replica_raw_write_like_images_s": m["raw_like_images"],
                "replica_snapshot_table_s": m["table"],
                "replica_snapshot_cpu_crc_s": m["cpu"],
                "replica_snapshot_table_vs_raw_write": round(m["table"] / m["raw"], 2),
                "replica_snapshot_table_vs_raw_write_per_round": [round(x, 2)
                                                                  for x in ratios],
                "replica_snapshot_table_vs_raw_write_like_images": round(
                    m["table"] / m["raw_like_images"], 2),
                "replica_snapshot_table_vs_raw_write_like_images_per_round": [
                    round(x, 2) for x in ratios_same],
                "replica_snapshot_cpu_crc_vs_raw_write": round(m["cpu"] / m["raw"], 2),
                "target_replica_snapshot_le_1_1x_raw_write": m["table"] / m["raw"] <= 1.1,
                "load_avg_after_replica": os.getloadavg()})
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
    ap.add_argument("--parts", default=",".join(PARTS + ("crash", "latency")),
                    help="which figures: write (ring snapshots), new (restore into a new "
                         "ring), inplace, replica (snapshot from the CRC table), crash, "
                         "latency (default: all)")
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
        "args": {k: (os.path.relpath(v) if k == "out" else v)
                 for k, v in vars(args).items() if k != "producer"},
        "sizes": [],
    }
    parts = {x.strip() for x in args.parts.split(",") if x.strip()}
    unknown = parts - set(PARTS) - {"crash", "latency"}
    if unknown:
        ap.error(f"unknown parts {', '.join(sorted(unknown))}")
    for s in args.sizes.split(","):
        r = bench_size(parse_size(s), args.repeats, args.dir, args.payload, parts)
        print(json.dumps(r), flush=True)
        if "replica" in parts:
            print(f"{s}: (c) replica snapshot from the CRC table "
                  f"{r['replica_snapshot_table_s']:.3f} s = "
                  f"{r['replica_snapshot_table_vs_raw_write']}x raw write+fsync (target "
                  f"<= 1.1x), {r['replica_snapshot_table_vs_raw_write_like_images']}x a raw "
                  f"write with the image writer's I/O; CPU CRCs: "
                  f"{r['replica_snapshot_cpu_crc_vs_raw_write']}x; load {r['load_replica']}",
                  flush=True)
        if "inplace" in parts:
            print(f"{s}: (d) in-place restore through the engine "
                  f"{r['restore_in_place_engine_s']:.3f} s = "
                  f"{r['restore_in_place_engine_vs_memcpy']}x memcpy (target <= 1.5x; "
                  f"1 thread {r['restore_in_place_engine_1thread_vs_memcpy']}x, in CPU "
                  f"seconds {r['restore_in_place_engine_1thread_vs_memcpy_cpu_seconds']}x; "
                  f"CPU path {r['restore_in_place_cpu_vs_memcpy_interleaved']}x); floor "
                  f"verify+copy {r['floor_verify_then_copy_1thread_vs_memcpy']}x (1 thread) / "
                  f"{r['floor_verify_then_copy_engine_vs_memcpy']}x (engine threads); "
                  f"load {r['load_inplace']}-{r['load_inplace_end']}", flush=True)
        if "new" in parts:
            print(f"{s}: (a) restore into a new segment through the engine "
                  f"{r['restore_engine_s']:.3f} s, CPU path {r['restore_cpu_path_s']:.3f} s "
                  f"({r['restore_engine_vs_cpu_path']}x); memcpy into fresh shm "
                  f"{r['memcpy_fresh_shm_s']:.3f} s; load {r['load_new']}", flush=True)
        result["sizes"].append(r)
    if args.crash_trials and "crash" in parts:
        crash = crash_trials(args.crash_trials, args.dir)
        print(json.dumps({"crash": crash}), flush=True)
        result["crash"] = crash
    if "latency" in parts:
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
