"""NATS JetStream bridge and remote images, against the plain client on the same server.

1. Throughput, 64 B and 4 KiB records: ``bridge out`` (ring -> stream, acknowledged) vs
   the raw nats-py loop (``js.publish_async`` per message, then
   ``publish_async_completed``), with and without a ``Nats-Msg-Id`` header, interleaved
   rounds on one single-node server; the target is >= 0.8x the raw loop (no header).
2. End-to-end latency, ring publish -> record readable in the far ring (``bridge out`` and
   ``bridge in`` as processes), p50/p99, single server and a 3-node cluster (R3 stream).
3. Images of a 256 MiB ring (32 MiB with --quick): upload (``pyshm snapshot -o nats://``)
   and download+verify (restore's fetch) vs a plain object-store put/get of the same bytes.

    python bench/run_all.py --only bridge        # or: python bench/bridge.py [--quick]

Writes bench/results/bridge.json (load average included: figures on a loaded machine are
noisy; ratios are measured in the same run).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS_DIR, percentiles, write_json  # noqa: E402

from pyshm import Ring  # noqa: E402
from pyshm.bridge.connect import NatsOptions  # noqa: E402
from pyshm.bridge.localserver import LocalNats  # noqa: E402
from pyshm.bridge.outbound import BridgeOut, OutConfig  # noqa: E402


def _unlink(name: str) -> None:
    try:
        os.unlink(f"/dev/shm/{name}")
    except FileNotFoundError:
        pass


# ---------------------------------------------------------------------- throughput
async def raw_round(url: str, n: int, size: int, msg_id: bool, tag: str) -> float:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream(publish_async_max_pending=4096)
    stream = f"RAW{tag}"
    await js.add_stream(name=stream, subjects=[f"raw.{tag}"])
    payload = bytes(size)
    t0 = time.perf_counter()
    for i in range(n):
        h = {"Nats-Msg-Id": f"0123456789abcdef.{i}"} if msg_id else None
        await js.publish_async(f"raw.{tag}", payload, headers=h)
    await js.publish_async_completed()
    dt = time.perf_counter() - t0
    await js.delete_stream(stream)
    await nc.close()
    return n / dt


async def bridge_round(url: str, n: int, size: int, tag: str) -> float:
    import nats

    name = f"bench_bridge_{os.getpid()}_{tag}"
    _unlink(name)
    cap = 1 << max(22, (n * (size + 24) * 2 - 1).bit_length())
    ring = Ring.create(name, cap, lossless=True, max_record=max(size + 16, 1024))
    stream = f"BR{tag}"
    bridge = BridgeOut(OutConfig(ring=name, nats=NatsOptions([url]), stream=stream,
                                 grace=5.0))
    task = asyncio.ensure_future(bridge.run())
    try:
        while bridge.stats["state"] != "running":
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        import numpy as np

        with ring.producer() as p:
            data = np.zeros((n, size), dtype=np.uint8) if size else np.zeros((n, 0), np.uint8)
            t0 = time.perf_counter()
            assert p.publish_batch(data, timeout=5.0) == n
        while bridge.stats["acked"] < n:
            await asyncio.sleep(0.0005)
        dt = time.perf_counter() - t0
    finally:
        bridge.stop()
        await task
        ring.close()
        _unlink(name)
    nc = await nats.connect(url)
    await nc.jetstream().delete_stream(stream)
    await nc.close()
    return n / dt


def throughput(url: str, quick: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rounds = 3 if quick else 5
    for size, n in ((64, 20_000 if quick else 60_000), (4096, 5_000 if quick else 20_000)):
        res: dict[str, list[float]] = {"bridge": [], "raw": [], "raw_msg_id": []}
        for r in range(rounds):
            order = ["bridge", "raw", "raw_msg_id"]
            order = order[r % 3:] + order[:r % 3]  # interleave, rotate the order
            for what in order:
                tag = f"{size}{r}{what[-2:]}".replace("_", "")
                if what == "bridge":
                    res[what].append(asyncio.run(bridge_round(url, n, size, tag)))
                else:
                    res[what].append(asyncio.run(raw_round(url, n, size, what != "raw",
                                                           tag)))
        med = {k: statistics.median(v) for k, v in res.items()}
        out[f"{size}B"] = {"records": n, "rounds": rounds, "msgs_per_s": res,
                           "median_msgs_per_s": med,
                           "ratio_vs_raw": med["bridge"] / med["raw"],
                           "ratio_vs_raw_msg_id": med["bridge"] / med["raw_msg_id"],
                           "target_ratio": 0.8, "target_met": med["bridge"] / med["raw"] >= 0.8}
        print(f"throughput {size:5d} B: bridge {med['bridge']:,.0f}/s, raw {med['raw']:,.0f}/s"
              f" ({med['bridge'] / med['raw']:.2f}x), raw+msg-id {med['raw_msg_id']:,.0f}/s "
              f"({med['bridge'] / med['raw_msg_id']:.2f}x)  load {os.getloadavg()[0]:.1f}",
              flush=True)
    return out


# ---------------------------------------------------------------------- latency
def latency(srv: LocalNats, label: str, replicas: int, quick: bool) -> dict[str, Any]:
    tag = f"{os.getpid()}{label}"
    src, far = f"bench_lat_src_{tag}", f"bench_lat_far_{tag}"
    for n in (src, far):
        _unlink(n)
    Ring.create(src, "16M", lossless=True).close()
    stream = f"LAT{tag}".upper()
    py = [sys.executable, "-m", "pyshm", "bridge"]
    logs = open(os.path.join(RESULTS_DIR, "logs", f"bridge_latency_{label}.log"), "wb")
    # cwd: not the source tree, whose pyshm/ would shadow the installed package
    cwd = srv.workdir
    procs = [subprocess.Popen(py + ["out", src, "--server", srv.url, "--stream", stream,
                                    "--replicas", str(replicas), "--grace", "2"],
                              stderr=logs, stdout=subprocess.DEVNULL, cwd=cwd),
             subprocess.Popen(py + ["in", "--server", srv.url, "--stream", stream,
                                    "--to", far], stderr=logs, stdout=subprocess.DEVNULL,
                              cwd=cwd)]
    samples: list[float] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with Ring(far, readonly=True):
                    break
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError("the far ring never appeared") from None
                time.sleep(0.05)
        total = 2000 if quick else 6000
        rate = 1000.0
        done = threading.Event()

        def read() -> None:
            with Ring(far, readonly=True) as f:
                c = f.consumer()
                got = 0
                while got < total and not done.is_set():
                    m = c.read(timeout=0.5, wait="yield")
                    if m is None:
                        continue
                    now = time.time_ns()
                    samples.append((now - int.from_bytes(bytes(m.data[:8]), "little")) / 1e3)
                    got += 1
        th = threading.Thread(target=read)
        th.start()
        time.sleep(0.5)
        with Ring(src) as ring, ring.producer() as p:
            t0 = time.monotonic()
            for i in range(total):
                # sleep, never spin: the reader thread needs the GIL to take its time stamp
                ahead = i / rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
                p.publish(time.time_ns().to_bytes(8, "little") + bytes(56), timeout=5.0)
        th.join(60)
        done.set()
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        logs.close()
        for n in (src, far):
            _unlink(n)
    warm = samples[len(samples) // 10:]  # the first records pay connection set-up
    pct = percentiles(warm, (50, 99))
    print(f"latency {label}: p50 {pct['p50']:.0f} us, p99 {pct['p99']:.0f} us "
          f"({len(warm)} records at 1000/s)  load {os.getloadavg()[0]:.1f}", flush=True)
    return {"records": len(warm), "rate_per_s": 1000, "replicas": replicas,
            "us": pct, "mean_us": statistics.fmean(warm)}


# ---------------------------------------------------------------------- images
def images(url: str, quick: bool) -> dict[str, Any]:
    from pyshm.bridge import objstore

    size = (32 if quick else 256) << 20
    name = f"bench_img_{os.getpid()}"
    _unlink(name)
    with Ring.create(name, size, prefault=True) as ring, ring.producer() as p:
        import numpy as np

        rec = np.random.default_rng(1).integers(0, 255, (size // 4096, 4000), np.uint8)
        p.publish_batch(rec)
    res: dict[str, list[float]] = {"upload": [], "put": [], "download": [], "get": []}
    rounds = 2 if quick else 3
    tmp = f"/dev/shm/bench_img_{os.getpid()}.pyimg"
    try:
        from pyshm.images import snapshot as local_snapshot

        local_snapshot(name, tmp, sync=False, overwrite=True)
        nbytes = os.path.getsize(tmp)
        for r in range(rounds):
            obj = f"{url}/benchimg/x{r}.pyimg"
            t0 = time.perf_counter()
            objstore.snapshot(name, obj, overwrite=True)
            res["upload"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            # the baseline: the client's own put of the same bytes
            objstore.upload_file(tmp, objstore.parse_url(f"{url}/benchimg/plain{r}"),
                                 overwrite=True, pipelined=False)
            res["put"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            with objstore.downloaded(objstore.parse_url(obj)) as path:
                from pyshm.images.format import ImageReader

                with ImageReader(path) as rd:
                    rd.verify()  # the per-chunk CRC32C check restore does
            res["download"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            with objstore.downloaded(objstore.parse_url(f"{url}/benchimg/plain{r}")):
                pass
            res["get"].append(time.perf_counter() - t0)
    finally:
        _unlink(name)
        if os.path.exists(tmp):
            os.unlink(tmp)
    med = {k: statistics.median(v) for k, v in res.items()}
    mb = nbytes / (1 << 20)
    print(f"images {mb:.0f} MiB: upload {mb / med['upload']:.0f} MiB/s (plain put "
          f"{mb / med['put']:.0f}), download+verify {mb / med['download']:.0f} MiB/s (plain "
          f"get {mb / med['get']:.0f})  load {os.getloadavg()[0]:.1f}", flush=True)
    return {"ring_bytes": size, "image_bytes": nbytes, "rounds": rounds, "seconds": res,
            "median_s": med, "upload_vs_put": med["upload"] / med["put"],
            "download_verify_vs_get": med["download"] / med["get"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    os.makedirs(os.path.join(RESULTS_DIR, "logs"), exist_ok=True)
    result: dict[str, Any] = {"benchmark": "bridge", "quick": args.quick}
    with LocalNats(1) as one:
        result["throughput"] = throughput(one.url, args.quick)
        result["latency_single"] = latency(one, "single", 1, args.quick)
        result["images"] = images(one.url, args.quick)
    with LocalNats(3) as three:
        result["latency_cluster3"] = latency(three, "cluster3", 3, args.quick)
    write_json(os.path.join(RESULTS_DIR, "bridge.json"), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
