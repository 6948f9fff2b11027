"""``pyshm demo --far``: a far ring fed over a local NATS JetStream server, verified.

Everything real: a ``nats-server`` with JetStream on 127.0.0.1 (temporary store), a tick
producer on a lossless ring, ``pyshm bridge out`` and ``pyshm bridge in`` as processes.
Midway, both bridges are killed with SIGKILL and restarted (the guard keeps the ring's
records, the far ring continues after its last one). At the end the far ring must hold
every record of the source, byte for byte, with the same sequence numbers; then it is
promoted (fail over) and an ordinary producer continues it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from ..errors import PyshmError


def run_far_demo(duration: float = 6.0, rate: float = 20_000.0, quiet: bool = False,
                 workdir: str | None = None) -> dict[str, Any]:
    """Run the far-ring demo; returns a summary (``verified`` True when exact)."""
    import numpy as np

    from ..ring import Ring
    from .localserver import LocalNats

    def say(msg: str) -> None:
        if not quiet:
            print(f"[far demo] {msg}", file=sys.stderr, flush=True)

    own = workdir is None
    work = workdir or tempfile.mkdtemp(prefix="pyshm-far-demo-")
    tag = f"{os.getpid()}"
    src, far = f"demo.far.src.{tag}", f"demo.far.dst.{tag}"
    stream = f"DEMOFAR{tag}"
    procs: list[subprocess.Popen[bytes]] = []
    env = dict(os.environ, PYSHM_STATE_DIR=os.path.join(work, "state"))
    summary: dict[str, Any] = {"verified": False}
    srv = LocalNats(1, workdir=os.path.join(work, "nats"))
    try:
        t0 = time.monotonic()
        srv.start()
        say(f"nats-server with JetStream on {srv.url} (store in {work}/nats)")
        Ring.create(src, "4M", lossless=True, max_record=256).close()

        def bridge(kind: str) -> subprocess.Popen[bytes]:
            args = ["out", src, "--stream", stream, "--grace", "30"] if kind == "out" else \
                ["in", "--stream", stream, "--to", far, "--capacity", "64M"]
            log = open(os.path.join(work, f"bridge-{kind}.log"), "ab")
            p = subprocess.Popen([sys.executable, "-m", "pyshm", "bridge", *args, "--server",
                                  srv.url], cwd=work, env=env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=log)
            log.close()
            procs.append(p)
            return p

        out, inn = bridge("out"), bridge("in")
        deadline = time.monotonic() + 30
        with Ring(src) as ring:
            while not any(s["gating"] and s["alive"] for s in ring.slots()):
                if time.monotonic() > deadline or out.poll() is not None:
                    raise PyshmError(f"demo: bridge out did not start (see "
                                     f"{work}/bridge-out.log)")
                time.sleep(0.05)
        say(f"bridge out {src} -> stream {stream}; bridge in -> follower ring {far}")
        tick = np.dtype([("ts_ns", "<i8"), ("instrument", "<u4"), ("qty", "<u4"),
                         ("price", "<f8")])
        published = [0]
        stop = threading.Event()

        def produce() -> None:
            rng = np.random.default_rng(7)
            with Ring(src) as ring, ring.producer() as p:
                start = time.monotonic()
                while not stop.is_set():
                    due = int((time.monotonic() - start) * rate) - published[0]
                    if due <= 0:
                        time.sleep(0.001)
                        continue
                    batch = np.zeros(min(due, 512), dtype=tick)
                    batch["ts_ns"] = time.time_ns()
                    batch["instrument"] = rng.integers(0, 64, len(batch))
                    batch["qty"] = rng.integers(1, 100, len(batch))
                    batch["price"] = 100 + rng.random(len(batch))
                    published[0] += p.publish_batch(batch, type=1, timeout=10.0)

        th = threading.Thread(target=produce, daemon=True)
        th.start()
        time.sleep(duration / 3)
        say(f"kill -9 bridge out (pid {out.pid}) at {published[0]} ticks; its guard keeps "
            f"the ring's records; restarting it")
        out.send_signal(signal.SIGKILL)
        out.wait(10)
        out = bridge("out")
        time.sleep(duration / 3)
        say(f"kill -9 bridge in (pid {inn.pid}); restarting it: it continues after the far "
            f"ring's last sequence")
        inn.send_signal(signal.SIGKILL)
        inn.wait(10)
        inn = bridge("in")
        time.sleep(duration / 3)
        stop.set()
        th.join(30)
        total = published[0]
        say(f"producer stopped after {total} ticks; waiting for the far ring")
        deadline = time.monotonic() + 60
        while True:
            try:
                with Ring(far, readonly=True) as f:
                    if f.next_sequence >= total:
                        break
            except PyshmError:
                pass
            if time.monotonic() > deadline:
                raise PyshmError("demo: the far ring did not catch up within 60 s (see "
                                 f"{work}/bridge-*.log)")
            time.sleep(0.1)
        for p in (out, inn):
            p.send_signal(signal.SIGTERM)
            p.wait(30)
        with Ring(src, readonly=True) as s, Ring(far, readonly=True) as f:
            a = [(r.sequence, r.type, r.payload) for r in s.records()]
            b = [(r.sequence, r.type, r.payload) for r in f.records()]
            tail = b[-len(a):] if a else []
            exact = bool(a) and tail == a and [x[0] for x in b] == list(range(len(b))) \
                and len(b) == total
            origin_ok = f.origin_id == s.ring_id
        from .follower import promote

        nxt = promote(far)
        with Ring(far) as f, f.producer() as prod:
            after = prod.publish(b"after failover", type=2)
        summary = {"verified": exact and origin_ok and after == nxt, "ticks": total,
                   "far_records": len(b), "compared_with_source": len(a),
                   "seconds": round(time.monotonic() - t0, 1), "promoted_next": nxt}
        say(f"far ring holds sequences 0..{len(b) - 1}: {len(a)} still in the source ring "
            f"compared byte for byte: {'identical' if tail == a else 'DIFFERENT'}; promoted "
            f"to an ordinary ring, the next producer wrote sequence {after}")
        say("VERIFIED: nothing lost, nothing duplicated, same sequences" if
            summary["verified"] else "NOT VERIFIED: see the logs in " + work)
        return summary
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        _kill_guards(env)
        srv.close()
        for n in (src, far):
            try:
                os.unlink(f"/dev/shm/{n}")
            except FileNotFoundError:
                pass
        if own and summary.get("verified"):
            import shutil

            shutil.rmtree(work, ignore_errors=True)


def _kill_guards(env: dict[str, str]) -> None:
    """Guards outlive killed bridges by design; end this demo's (found by its state dir)."""
    want = f"PYSHM_STATE_DIR={env['PYSHM_STATE_DIR']}".encode()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{d}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:
            continue
        if b"pyshm.bridge.slot" in argv and want in environ:
            try:
                os.kill(int(d), signal.SIGKILL)
            except ProcessLookupError:
                pass
