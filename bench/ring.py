"""Ring benchmark: pyshm against its peers, one run, interleaved rounds, medians.

Measured for every peer, two processes pinned to two different CPUs, busy polling:

* one-way latency: a 64-byte ping-pong, one-way = round trip / 2, p50 / p99 / p99.9;
* one-way throughput at 64 B and 4 KiB: one producer, one consumer, one call per message;
* pyshm only: batched throughput at 64 B (``publish_batch`` / ``read_batch``).

Peers: the C floor (two C processes ping-ponging one cache line, bench/native_peers.py;
in the ``wake`` test, one C process asleep in FUTEX_WAIT woken by another),
a featureless native ring (C through cffi, wait loop in C: bench/native_peers.py), the
pyshm ring called the ways a program would (``read()`` polling, ``read(None)``,
``read_into``, ``read_copy``, ``wait="block"``, asyncio ``aread``), a pure-Python
busy-polling ring over ``multiprocessing.shared_memory`` (bench/naive_ring.py, the
baseline of every ratio), iceoryx2's Python binding, ``multiprocessing.Queue``,
``multiprocessing.Pipe``, pyzmq PUSH/PULL over ``ipc://`` and faster-fifo. Two more
measurements: the ``block`` wake-up (a consumer asleep in the kernel, records published
every 1-3 ms: latency and the consumer's CPU time, idle and busy) and the producer's
cost of the wake check (``pyshm-wake*`` peers: a ring whose consumers once blocked).
Results go to bench/results/ring.json; see bench/README.md.

Usage::

    python bench/ring.py            # 5 rounds, about two minutes
    python bench/ring.py --quick    # 2 short rounds, a smoke test of the whole matrix
    python bench/ring.py --peers pyshm-block,c-floor --tests wake   # one figure
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
from naive_ring import NaiveRing  # noqa: E402

# fork: the channels (queues, pipes, rings) are created in the parent and inherited; no
# pickling of endpoints, and children start in milliseconds instead of re-importing.
CTX = mp.get_context("fork")
SMALL = 64
LARGE = 4096
DEFAULT_OUT = os.path.join(C.RESULTS_DIR, "ring.json")

TARGETS = {
    "latency_p50_vs_naive": 0.5,      # pyshm p50 <= 0.5x naive
    "latency_p50_vs_native": 1.3,     # stretch: pyshm p50 <= 1.3x the featureless native ring
    "latency_p999_ns": 5000.0,        # pyshm p99.9 <= 5 us
    "throughput_64_vs_naive": 1.5,    # pyshm single-call >= 1.5x naive (read() and read(None))
    "read_copy_vs_read": 1.2,         # read_copy throughput within 1.2x of read
    "batched_64_msgs_per_s": 20e6,    # pyshm batched >= 20 M msgs/s
    "block_wakeup_p50_ns": 50_000.0,  # block wake-up p50 <= 50 us
    "block_idle_cpu": 0.01,           # a blocked consumer uses < 1 % of a CPU while idle
}


# --------------------------------------------------------------------------------------
# Peers. A Channel is one direction of transport, created in the parent; sender() and
# receiver() are called in the child that uses that end. A receiver is a non-blocking
# poll returning None when nothing is there (busy polling is the caller's loop).
# --------------------------------------------------------------------------------------

class Channel:
    payload_attr = False  # received objects carry the bytes in ``.data`` (pyshm Message)
    # how the sender says "full, try again": None (it blocks), "false" (returns a falsy
    # value) or "negative" (returns < 0, pyshm's FULL); the hot loop retries inline
    full = None

    def sender(self) -> Callable[[Any], Any]:
        raise NotImplementedError

    def receiver(self) -> Callable[[], Any]:
        raise NotImplementedError

    def close_end(self) -> None:
        """Called in a child when it is done with its end (flush, linger)."""

    def destroy(self) -> None:
        """Called in the parent after both children have exited."""


class NaiveChannel(Channel):
    full = "false"

    def __init__(self, size: int):
        self.ring = NaiveRing(capacity=1 << 20 if size <= 1024 else 1 << 23)

    def sender(self):
        return self.ring.try_publish

    def receiver(self):
        return self.ring.read

    def close_end(self) -> None:
        self.ring.close()

    def destroy(self) -> None:
        self.ring.close()
        self.ring.unlink()


class MpQueueChannel(Channel):
    def __init__(self, size: int):
        self.q = CTX.Queue()

    def sender(self):
        return self.q.put

    def receiver(self):
        get = self.q.get
        empty = queue.Empty

        def poll():
            try:
                return get(False)
            except empty:
                return None
        return poll

    def close_end(self) -> None:
        self.q.close()
        self.q.join_thread()  # the feeder thread must flush before the process exits

    def destroy(self) -> None:
        self.q.close()


class PipeChannel(Channel):
    def __init__(self, size: int):
        self.r, self.w = CTX.Pipe(duplex=False)

    def sender(self):
        return self.w.send_bytes

    def receiver(self):
        r = self.r
        ready = r.poll
        recv = r.recv_bytes

        def poll():
            return recv() if ready() else None
        return poll

    def destroy(self) -> None:
        self.r.close()
        self.w.close()


class ZmqChannel(Channel):
    _seq = 0

    def __init__(self, size: int):
        ZmqChannel._seq += 1
        self.path = os.path.join(tempfile.gettempdir(),
                                 f"pyshm-bench-{os.getpid()}-{ZmqChannel._seq}.ipc")
        self.addr = f"ipc://{self.path}"
        self.ctx: Any = None
        self.sock: Any = None

    def _open(self, kind: int, bind: bool) -> Any:
        import zmq
        # a context per child, created after fork: zmq contexts must not cross a fork
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(kind)
        (self.sock.bind if bind else self.sock.connect)(self.addr)
        return self.sock

    def sender(self):
        import zmq
        return self._open(zmq.PUSH, bind=False).send

    def receiver(self):
        import zmq
        recv = self._open(zmq.PULL, bind=True).recv
        again = zmq.Again
        noblock = zmq.NOBLOCK

        def poll():
            try:
                return recv(noblock)
            except again:
                return None
        return poll

    def close_end(self) -> None:
        # without a linger and term() queued messages are dropped at process exit
        if self.sock is not None:
            self.sock.close(linger=2000)
            self.ctx.term()

    def destroy(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class FasterFifoChannel(Channel):
    def __init__(self, size: int):
        import faster_fifo
        # bytes in, bytes out: its fastest use, no pickle (its default) in the way
        self.q = faster_fifo.Queue(max_size_bytes=1 << 22, loads=bytes, dumps=bytes)

    def sender(self):
        return self.q.put

    def receiver(self):
        get = self.q.get_nowait
        empty = queue.Empty

        def poll():
            try:
                return get()
            except empty:
                return None
        return poll

    def destroy(self) -> None:
        self.q.close()


class PyshmChannel(Channel):
    """The pyshm ring; created in the parent, attached by name in each child."""

    payload_attr = True
    full = "negative"
    _seq = 0

    def __init__(self, size: int, lossless: bool = True):
        import pyshm
        PyshmChannel._seq += 1
        self.name = f"pyshm-bench-{os.getpid()}-{PyshmChannel._seq}"
        self.capacity = 1 << 20 if size <= 1024 else 1 << 23
        # throughput runs lossless: without back-pressure the producer laps the consumer
        # and the figure would count dropped messages. Ping-pong has one message in
        # flight, so it uses the default overwrite mode, the market-data configuration.
        self.lossless = lossless
        self.ring = pyshm.Ring(self.name, create=True, capacity=self.capacity,
                               lossless=lossless, prefault=True)
        self.child_ring: Any = None
        self.end: Any = None

    def _attach(self) -> Any:
        import pyshm
        self.child_ring = pyshm.Ring(self.name)
        return self.child_ring

    def sender(self):
        self.end = self._attach().producer()
        return self.end.publish

    def receiver(self):
        self.end = self._attach().consumer(start="oldest", gating=self.lossless)
        return self.end.read

    def forward(self, m: Any) -> Any:
        return m  # publish(message) reads the payload through its buffer, no copy

    def batch_sender(self):
        self.end = self._attach().producer()
        return self.end.publish_batch

    def batch_receiver(self):
        self.end = self._attach().consumer(start="oldest", gating=True)
        return self.end.read_batch

    def close_end(self) -> None:
        if self.end is not None and hasattr(self.end, "close"):
            self.end.close()
        if self.child_ring is not None:
            self.child_ring.close()

    def destroy(self) -> None:
        self.ring.close()
        self.ring.unlink()


class PyshmWaitChannel(PyshmChannel):
    """read(timeout=None): the natural blocking loop, spin strategy, wait in C."""

    wait = "spin"
    set_wake_flag = False

    def __init__(self, size: int, lossless: bool = True):
        super().__init__(size, lossless)
        if self.set_wake_flag:
            # as on a ring used with wait="block" before: the producer acknowledges the
            # wake protocol when it opens (one that opened before the first blocking
            # consumer does so at its next publish; until then sleepers poll every 1 ms)
            c = self.ring.consumer()
            c.read(timeout=0.001, wait="block")
            c.close()

    def receiver(self):
        import functools
        super().receiver()
        return functools.partial(self.end.read, None, self.wait)


class PyshmBlockChannel(PyshmWaitChannel):
    """read(None, wait="block"): polls 10 us, then sleeps in the kernel."""

    wait = "block"
    set_wake_flag = True


class PyshmSleepChannel(PyshmWaitChannel):
    """read(None, wait="sleep"): the wake-up of the nanosleep strategy, for comparison."""

    wait = "sleep"


class PyshmIntoChannel(PyshmChannel):
    """read_into(buffer): the length, no object for the record (64 B messages here)."""

    def receiver(self):
        import functools
        super().receiver()
        self.buf = bytearray(SMALL)
        return functools.partial(self.end.read_into, self.buf)

    def forward(self, n: Any) -> Any:
        return self.buf


class PyshmCopyChannel(PyshmChannel):
    """read_copy(): a bytes copy proven intact."""

    def receiver(self):
        super().receiver()
        return self.end.read_copy


class PyshmWakeChannel(PyshmChannel):
    """pyshm on a ring whose consumers once blocked (flag WAKE set and acknowledged): the
    producer runs the wake check after every publish while nobody sleeps (membarrier
    mode where available, the normal case)."""

    force_fence = False

    def __init__(self, size: int, lossless: bool = True):
        super().__init__(size, lossless)
        c = self.ring.consumer()
        c.read(timeout=0.001, wait="block")  # sets the flag; nobody sleeps afterwards
        c.close()

    def sender(self):
        if self.force_fence:
            from pyshm._ring_c import lib
            lib.pyshm_wake_force_fence(1)
        return super().sender()


class PyshmWakeFenceChannel(PyshmWakeChannel):
    """The same with the fallback barrier (a seq_cst fence per publish) forced."""

    force_fence = True


class NativeChannel(Channel):
    """The featureless native ring: C through cffi, the wait loop in C."""

    full = "false"
    payload_attr = True  # the pong copies the received view: cffi takes bytes for char *

    def forward(self, m: Any) -> Any:
        return bytes(m)

    def __init__(self, size: int):
        from native_peers import FeaturelessRing
        self.ring = FeaturelessRing(capacity=1 << 20 if size <= 1024 else 1 << 23)

    def sender(self):
        return self.ring.try_publish

    def receiver(self):
        return self.ring.read_wait

    def close_end(self) -> None:
        self.ring.close()

    def destroy(self) -> None:
        self.ring.close()
        self.ring.unlink()


class IceoryxChannel(Channel):
    """iceoryx2's Python binding: a 64-byte ctypes payload, loan/write/send and receive.
    A subscriber counts as connected only after its first receive(), so the receiver
    polls once before it reports ready."""

    _seq = 0

    def __init__(self, size: int):
        IceoryxChannel._seq += 1
        self.service = f"pyshm-bench-{os.getpid()}-{IceoryxChannel._seq}"
        self.size = size
        self.port: Any = None

    def _service(self) -> Any:
        import ctypes

        import iceoryx2 as iox2
        iox2.set_log_level_from_env_or(iox2.LogLevel.Error)
        payload = ctypes.c_uint8 * self.size
        self.node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
        svc = (self.node.service_builder(iox2.ServiceName.new(self.service))
               .publish_subscribe(payload).open_or_create())
        return iox2, payload, svc

    def sender(self):
        iox2, payload, svc = self._service()
        pub = self.port = svc.publisher_builder().create()
        from_buffer_copy = payload.from_buffer_copy

        def send(data: Any) -> None:
            pub.loan_uninit().write_payload(from_buffer_copy(data)).send()
        return send

    def receiver(self):
        iox2, payload, svc = self._service()
        sub = self.port = svc.subscriber_builder().create()
        receive = sub.receive
        receive()

        def poll() -> Any:
            s = receive()
            return None if s is None else bytes(s.payload().contents)
        return poll

    def close_end(self) -> None:
        self.port = None
        self.node = None


PEERS: dict[str, type[Channel]] = {
    "pyshm": PyshmChannel,
    "pyshm-wait": PyshmWaitChannel,
    "pyshm-into": PyshmIntoChannel,
    "pyshm-copy": PyshmCopyChannel,
    "pyshm-block": PyshmBlockChannel,
    "pyshm-sleep": PyshmSleepChannel,
    "pyshm-wake": PyshmWakeChannel,
    "pyshm-wake-fence": PyshmWakeFenceChannel,
    "asyncio": PyshmChannel,  # lat64 only, by its own workloads (aread)
    "c-floor": Channel,       # C programs: lat64 (ping-pong), wake (futex wait/wake)
    "native": NativeChannel,
    "iceoryx2": IceoryxChannel,
    "naive": NaiveChannel,
    "mp.Queue": MpQueueChannel,
    "mp.Pipe": PipeChannel,
    "zmq-ipc": ZmqChannel,
    "faster-fifo": FasterFifoChannel,
}

# first-round guesses of the cost per operation (ns), refined from each measured round;
# they only size the runs, they are never reported
GUESS_RTT_NS = {"pyshm": 1500, "naive": 1500, "mp.Queue": 90_000, "mp.Pipe": 50_000,
                "zmq-ipc": 60_000, "faster-fifo": 20_000, "asyncio": 100_000, "c-floor": 400,
                "native": 1000, "iceoryx2": 6000}
GUESS_MSG_NS = {"pyshm": 300, "naive": 400, "mp.Queue": 5_000, "mp.Pipe": 3_000,
                "zmq-ipc": 2_000, "faster-fifo": 1_500, "native": 300, "iceoryx2": 2000}
# which tests each peer takes part in (default: lat64, thr64, thr4k)
PEER_TESTS = {"pyshm": ("lat64", "thr64", "thr4k", "batch64"),
              "pyshm-wait": ("lat64", "thr64"), "pyshm-into": ("lat64", "thr64"),
              "pyshm-copy": ("thr64",), "pyshm-block": ("lat64", "thr64", "wake"),
              "pyshm-wake": ("thr64",), "pyshm-wake-fence": ("thr64",),
              "pyshm-sleep": ("wake",),
              "asyncio": ("lat64", "wake"), "c-floor": ("lat64", "wake"),
              "native": ("lat64", "thr64"), "iceoryx2": ("lat64",)}
ALL_TESTS = ("lat64", "thr64", "thr4k", "batch64", "wake")


def peer_available(name: str) -> str | None:
    """None if usable here, else why not."""
    try:
        if name.startswith("pyshm") or name == "asyncio":
            import pyshm
            if not hasattr(pyshm, "Ring"):
                return "pyshm.Ring not available in the installed pyshm"
        elif name in ("c-floor", "native"):
            import native_peers
            try:
                if name == "c-floor":
                    native_peers._compile_floor()
                    native_peers._compile_futex_floor()
                else:
                    native_peers._native_lib()
            except Exception as e:  # noqa: BLE001 - reported, the peer is skipped
                return f"cannot build it here ({e})"
        elif name == "iceoryx2":
            import iceoryx2  # noqa: F401
        elif name == "zmq-ipc":
            import zmq  # noqa: F401
        elif name == "faster-fifo":
            import faster_fifo  # noqa: F401
    except ImportError as e:
        return f"not installed ({e}); pip install '.[bench]'"
    return None


# --------------------------------------------------------------------------------------
# Child-side workloads. Each gets ready() to call once its endpoints exist; ready() blocks
# until the parent says go, so both processes start together. Hot loops carry no timeout
# check (it would cost as much as what is measured): the parent's deadline kills a hung
# child instead.
# --------------------------------------------------------------------------------------

def w_ping(ready: Callable[[], None], out: Channel, inp: Channel, size: int, warm: int,
           n: int) -> dict[str, Any]:
    send = out.sender()
    recv = inp.receiver()
    msg = bytes(i & 0xFF for i in range(size))
    samples = [0] * n
    pc = time.perf_counter_ns
    # one message in flight per direction: a "full" answer from a ring sender cannot
    # happen here, so sends are not retried (a lost ping would show as a timeout)
    ready()
    for _ in range(warm):
        send(msg)
        while recv() is None:
            pass
    for i in range(n):
        t0 = pc()
        send(msg)
        while recv() is None:
            pass
        samples[i] = pc() - t0
    half = [s / 2 for s in samples]
    res: dict[str, Any] = C.percentiles(half, (50, 99, 99.9))
    res["min"] = min(half)
    res["mean"] = sum(half) / n
    res["n"] = n
    return res


def w_pong(ready: Callable[[], None], inp: Channel, out: Channel, total: int) -> dict[str, Any]:
    recv = inp.receiver()
    send = out.sender()
    ready()
    if inp.payload_attr:
        fwd = inp.forward  # type: ignore[attr-defined]
        for _ in range(total):
            while (m := recv()) is None:
                pass
            send(fwd(m))
    else:
        for _ in range(total):
            while (m := recv()) is None:
                pass
            send(m)
    del m  # a view into shared memory must be gone before the ring is unmapped
    return {}


def w_produce(ready: Callable[[], None], ch: Channel, size: int, n: int) -> dict[str, Any]:
    send = ch.sender()
    msg = bytes(size)
    ready()
    t0 = time.perf_counter_ns()
    if ch.full == "negative":
        for _ in range(n):
            while send(msg) < 0:
                pass
    elif ch.full == "false":
        for _ in range(n):
            while not send(msg):
                pass
    else:
        for _ in range(n):
            send(msg)
    return {"t_start": t0, "t_sent": time.perf_counter_ns()}


def w_consume(ready: Callable[[], None], ch: Channel, n: int) -> dict[str, Any]:
    recv = ch.receiver()
    ready()
    got = 0
    while got < n:
        if recv() is not None:
            got += 1
    return {"t_end": time.perf_counter_ns(), "got": got}


def w_produce_batch(ready: Callable[[], None], ch: PyshmChannel, size: int, n: int,
                    batch: int) -> dict[str, Any]:
    import numpy as np
    send = ch.batch_sender()
    block = np.zeros((batch, size), dtype=np.uint8)
    ready()
    t0 = time.perf_counter_ns()
    sent = 0
    while sent < n:
        k = send(block)
        sent += int(k) if k is not None else batch
    return {"t_start": t0, "t_sent": time.perf_counter_ns(), "sent": sent}


def w_consume_batch(ready: Callable[[], None], ch: PyshmChannel, n: int,
                    batch: int) -> dict[str, Any]:
    recv = ch.batch_receiver()
    ready()
    got = 0
    while got < n:
        got += len(recv(batch))
    return {"t_end": time.perf_counter_ns(), "got": got}


def w_ping_async(ready: Callable[[], None], out: PyshmChannel, inp: PyshmChannel, size: int,
                 warm: int, n: int) -> dict[str, Any]:
    """Ping-pong through asyncio: publish, then ``await consumer.aread()``."""
    import asyncio

    send = out.sender()
    inp.receiver()
    c = inp.end
    msg = bytes(size)
    pc = time.perf_counter_ns
    samples = [0] * n

    async def run() -> None:
        for _ in range(warm):
            send(msg)
            await c.aread()
        for i in range(n):
            t0 = pc()
            send(msg)
            await c.aread()
            samples[i] = pc() - t0
    ready()
    asyncio.run(run())
    half = [x / 2 for x in samples]
    res: dict[str, Any] = C.percentiles(half, (50, 99, 99.9))
    res.update(min=min(half), mean=sum(half) / n, n=n)
    return res


def w_pong_async(ready: Callable[[], None], inp: PyshmChannel, out: PyshmChannel,
                 total: int) -> dict[str, Any]:
    import asyncio

    inp.receiver()
    c = inp.end
    send = out.sender()

    async def run() -> None:
        got = 0
        async for m in c:
            send(m)
            got += 1
            if got == total:
                return
    ready()
    asyncio.run(run())
    return {}


def w_wake_produce(ready: Callable[[], None], ch: PyshmChannel, n: int, idle: float,
                   seed: int) -> dict[str, Any]:
    """Records carrying their publish time (CLOCK_MONOTONIC, shared by all processes),
    1-3 ms apart, after ``idle`` seconds of silence: the consumer is asleep each time."""
    import random
    import struct

    send = ch.sender()
    rng = random.Random(seed)
    pack = struct.Struct("<Q").pack
    ready()
    time.sleep(idle + 0.5)  # a loaded machine may start the consumer's idle wait late
    for _ in range(n):
        time.sleep(rng.uniform(0.001, 0.003))
        send(pack(time.monotonic_ns()))
    return {}


def w_wake_consume(ready: Callable[[], None], ch: PyshmChannel, n: int, idle: float,
                   mode: str) -> dict[str, Any]:
    import asyncio
    import struct

    ch.receiver()
    c = ch.end
    unpack = struct.Struct("<Q").unpack_from
    lat = [0] * n
    ready()
    cpu0, wall0 = time.process_time(), time.monotonic()
    if mode == "asyncio":
        async def run() -> float:
            first = await c.aread(timeout=idle)
            if first is not None:
                raise RuntimeError("a record came during the idle phase: the consumer "
                                   "started its wait too late, the idle CPU is not measured")
            t = time.process_time()
            for i in range(n):
                m = await c.aread()
                lat[i] = time.monotonic_ns() - unpack(m)[0]
            return t
        cpu_idle_end = asyncio.run(run())
    else:
        wait = ch.wait  # type: ignore[attr-defined]
        if c.read(idle, wait) is not None:
            raise RuntimeError("a record came during the idle phase: the consumer started "
                               "its wait too late, the idle CPU is not measured")
        cpu_idle_end = time.process_time()
        for i in range(n):
            m = c.read(None, wait)
            lat[i] = time.monotonic_ns() - unpack(m)[0]
    cpu1, wall1 = time.process_time(), time.monotonic()
    res: dict[str, Any] = C.percentiles(lat, (50, 99, 99.9))
    res["idle_cpu"] = (cpu_idle_end - cpu0) / idle
    res["busy_cpu"] = (cpu1 - cpu_idle_end) / max(wall1 - wall0 - idle, 1e-9)
    res["n"] = n
    return res


def _child(fn: Callable[..., dict[str, Any]], cpu: int | None, conn: Any, go: Any,
           finish: Any, closers: list[Channel], args: tuple[Any, ...]) -> None:
    try:
        C.pin(cpu)

        def ready() -> None:
            conn.send_bytes(b'{"ready": true}')
            if not go.wait(30):
                raise TimeoutError("parent never said go")
        res = fn(ready, *args)
        conn.send_bytes(json.dumps(res).encode())
        # keep this end open until the other process is done too: pyzmq loses the last
        # few hundred queued messages at close() even with a linger and term() (measured
        # here), so a producer must not close before its consumer has everything
        finish.wait(60)
        for ch in closers:
            ch.close_end()
    except BaseException:
        conn.send_bytes(json.dumps({"error": traceback.format_exc()}).encode())


class RunError(RuntimeError):
    pass


def run_pair(a: tuple[Any, ...], b: tuple[Any, ...], timeout: float,
             cpus: tuple[int | None, int | None]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run two workloads in two processes; a = (fn, closers, args). Returns both results."""
    go, finish = CTX.Event(), CTX.Event()
    procs, conns = [], []
    for (fn, closers, args), cpu in zip((a, b), cpus, strict=True):
        r, w = CTX.Pipe(duplex=False)
        p = CTX.Process(target=_child, args=(fn, cpu, w, go, finish, closers, args), daemon=True)
        p.start()
        w.close()
        procs.append(p)
        conns.append(r)
    deadline = time.monotonic() + timeout
    try:
        def recv(conn: Any) -> dict[str, Any]:
            left = deadline - time.monotonic()
            if left <= 0 or not conn.poll(left):
                raise RunError(f"timed out after {timeout:.0f} s")
            try:
                msg = json.loads(conn.recv_bytes())
            except EOFError:
                raise RunError("a benchmark process died without a result") from None
            if "error" in msg:
                raise RunError(msg["error"])
            return msg
        for c in conns:
            recv(c)          # both ready
        go.set()
        results = (recv(conns[0]), recv(conns[1]))
        finish.set()
        for p in procs:
            p.join(max(0.1, deadline - time.monotonic()))
        return results
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
        for c in conns:
            c.close()


# --------------------------------------------------------------------------------------
# Tests: one measurement of one peer, in fresh processes on fresh channels
# --------------------------------------------------------------------------------------

def measure_latency(peer: str, n: int, timeout: float, cpus: Any) -> dict[str, Any]:
    if peer == "c-floor":
        import native_peers
        return native_peers.c_floor(cpus, n)
    cls = PEERS[peer]
    if issubclass(cls, PyshmChannel):
        ab, ba = cls(SMALL, lossless=False), cls(SMALL, lossless=False)
    else:
        ab, ba = cls(SMALL), cls(SMALL)
    warm = max(200, n // 20)
    ping_fn, pong_fn = (w_ping_async, w_pong_async) if peer == "asyncio" else (w_ping, w_pong)
    try:
        ping, _ = run_pair((ping_fn, [ab, ba], (ab, ba, SMALL, warm, n)),
                           (pong_fn, [ba, ab], (ab, ba, warm + n)), timeout, cpus)
    finally:
        ab.destroy()
        ba.destroy()
    return ping


def measure_throughput(peer: str, size: int, n: int, timeout: float, cpus: Any) -> dict[str, Any]:
    ch = PEERS[peer](size)
    try:
        prod, cons = run_pair((w_produce, [ch], (ch, size, n)),
                              (w_consume, [ch], (ch, n)), timeout, cpus)
    finally:
        ch.destroy()
    secs = (cons["t_end"] - prod["t_start"]) / 1e9
    return {"msgs_per_s": n / secs, "bytes_per_s": n * size / secs, "n": n, "seconds": secs}


def measure_wake(peer: str, n: int, timeout: float, cpus: Any, seed: int) -> dict[str, Any]:
    """Wake-up of a consumer asleep in ``peer``'s wait, and its CPU time idle and busy."""
    idle = 1.0
    if peer == "c-floor":
        import native_peers
        try:
            f = native_peers.futex_wake_floor(cpus, n, idle, seed)
        except (RuntimeError, OSError, ValueError) as e:
            raise RunError(str(e)) from None
        res: dict[str, Any] = C.percentiles(f["lat"], (50, 99, 99.9))
        res.update(idle_cpu=f["idle_cpu_ns"] / (idle * 1e9),
                   busy_cpu=f["busy_cpu_ns"] / max(f["busy_wall_ns"], 1), n=n)
        return res
    cls = PyshmBlockChannel if peer == "asyncio" else PEERS[peer]
    ch = cls(SMALL, lossless=False)
    try:
        _, cons = run_pair((w_wake_produce, [ch], (ch, n, idle, seed)),
                           (w_wake_consume, [ch], (ch, n, idle, peer)), timeout, cpus)
    finally:
        ch.destroy()
    return cons


def measure_batched(n: int, batch: int, timeout: float, cpus: Any) -> dict[str, Any]:
    ch = PyshmChannel(SMALL)
    try:
        prod, cons = run_pair((w_produce_batch, [ch], (ch, SMALL, n, batch)),
                              (w_consume_batch, [ch], (ch, n, batch)), timeout, cpus)
    finally:
        ch.destroy()
    secs = (cons["t_end"] - prod["t_start"]) / 1e9
    got = cons["got"]
    return {"msgs_per_s": got / secs, "bytes_per_s": got * SMALL / secs, "n": got,
            "seconds": secs, "batch": batch}


# --------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="2 short rounds: checks the whole matrix runs, figures are rough")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 5, quick 2)")
    ap.add_argument("--seconds", type=float,
                    help="target duration of one measurement (default 0.6, quick 0.12)")
    ap.add_argument("--peers", help="comma-separated subset of: " + ",".join(PEERS))
    ap.add_argument("--tests", help="comma-separated subset of the tests to run: "
                    + ",".join(ALL_TESTS) + " (default: all of each peer's)")
    ap.add_argument("--batch", type=int, default=1024, help="records per publish_batch call")
    ap.add_argument("--out", default=DEFAULT_OUT, help="JSON output (default %(default)s)")
    args = ap.parse_args(argv)

    rounds = args.rounds or (2 if args.quick else 5)
    target_s = args.seconds or (0.12 if args.quick else 0.6)
    if rounds < 1 or target_s <= 0:
        ap.error("--rounds and --seconds must be positive")
    wanted = args.peers.split(",") if args.peers else list(PEERS)
    unknown = [p for p in wanted if p not in PEERS]
    if unknown:
        ap.error(f"unknown peer(s) {', '.join(unknown)}; choose from {', '.join(PEERS)}")
    skipped = {p: why for p in wanted if (why := peer_available(p))}
    peers = [p for p in wanted if p not in skipped]
    for p, why in skipped.items():
        print(f"skipping {p}: {why}", file=sys.stderr)
    cpus = C.pair_cpus()
    if cpus == (None, None):
        print("warning: one CPU available, processes are not pinned", file=sys.stderr)

    only = args.tests.split(",") if args.tests else list(ALL_TESTS)
    if bad := [t for t in only if t not in ALL_TESTS]:
        ap.error(f"unknown test(s) {', '.join(bad)}; choose from {', '.join(ALL_TESTS)}")
    tests: list[tuple[str, str]] = []
    for p in peers:
        tests += [(p, t) for t in PEER_TESTS.get(p, ("lat64", "thr64", "thr4k")) if t in only]
    if not tests:
        ap.error("no peer takes part in the tests asked for")
    # seconds per operation, refined after each measurement to size the next one
    cost = {}
    for p in peers:
        base = p if p in GUESS_RTT_NS else "pyshm"
        cost[(p, "lat64")] = GUESS_RTT_NS[base] / 1e9
        cost[(p, "thr64")] = GUESS_MSG_NS.get(base, 300) / 1e9
        cost[(p, "thr4k")] = GUESS_MSG_NS.get(base, 300) * 3 / 1e9
        cost[(p, "batch64")] = 50e-9
        cost[(p, "wake")] = 2e-3
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {p: {} for p in peers}
    errors: list[dict[str, Any]] = []
    loads = [list(os.getloadavg())]
    t_begin = time.monotonic()

    for rnd, (peer, test) in C.interleaved(rounds, tests):
        if rnd and (peer, test) == tests[rnd % len(tests)]:
            loads.append(list(os.getloadavg()))
        n = int(target_s / cost[(peer, test)])
        timeout = 20 * target_s + 30
        try:
            if test == "lat64":
                n = min(max(n, 2000), 2_000_000)
                res = measure_latency(peer, n, timeout, cpus)
                cost[(peer, test)] = 2 * res["mean"] / 1e9
            elif test == "wake":
                n = 100 if args.quick else 300
                res = measure_wake(peer, n, timeout, cpus, rnd)
            elif test == "batch64":
                n = min(max(n, 100 * args.batch), 200_000_000)
                res = measure_batched(n, args.batch, timeout, cpus)
                cost[(peer, test)] = 1 / res["msgs_per_s"]
            else:
                size = SMALL if test == "thr64" else LARGE
                n = min(max(n, 5000), 50_000_000)
                res = measure_throughput(peer, size, n, timeout, cpus)
                cost[(peer, test)] = 1 / res["msgs_per_s"]
        except RunError as e:
            errors.append({"peer": peer, "test": test, "round": rnd, "error": str(e)})
            print(f"round {rnd} {peer} {test}: FAILED\n{e}", file=sys.stderr)
            continue
        res["round"] = rnd
        raw[peer].setdefault(test, []).append(res)
        shown = (C.fmt_ns(res["p50"]) + " p50" if test in ("lat64", "wake")
                 else C.fmt_rate(res["msgs_per_s"]))
        if test == "wake":
            shown += f", idle CPU {100 * res['idle_cpu']:.2f} %"
        print(f"round {rnd + 1}/{rounds}  {peer:<12} {test:<8} {shown}", file=sys.stderr)
    loads.append(list(os.getloadavg()))

    summary = summarise(raw)
    ratios, verdicts = compare(summary)
    print()
    print(render(summary, ratios, peers))
    print()
    for v in verdicts:
        print(f"target {v['target']}: measured {v['measured']} -> "
              f"{'PASS' if v['ok'] else 'FAIL'}")
    loads_1m = [x[0] for x in loads]
    print(f"\n{rounds} rounds in {time.monotonic() - t_begin:.0f} s; load average (1 min) "
          f"{min(loads_1m):.2f}-{max(loads_1m):.2f} on {os.cpu_count()} CPUs; pinned to "
          f"CPUs {cpus}")
    path = C.write_json(args.out, {
        "benchmark": "ring",
        "config": {"rounds": rounds, "target_seconds": target_s, "quick": args.quick,
                   "batch": args.batch, "cpus": list(cpus), "start_method": "fork",
                   "sizes": [SMALL, LARGE], "latency": "64 B ping-pong, one-way = RTT/2",
                   "pyshm_modes": {"latency": "overwrite", "throughput": "lossless, gating "
                                   "consumer"}},
        "loadavg_samples": loads,
        "skipped": skipped,
        "errors": errors,
        "summary": summary,
        "ratios_vs_naive": ratios,
        "targets": verdicts,
        "rounds": raw,
    })
    print(f"wrote {path}")
    return 1 if errors else 0


def summarise(raw: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, dict[str, Any]]:
    """Median over rounds of each figure (never a single run's number)."""
    out: dict[str, dict[str, Any]] = {}
    for peer, tests in raw.items():
        s: dict[str, Any] = {}
        for test, runs in tests.items():
            if test == "lat64":
                for k in ("p50", "p99", "p99.9", "min"):
                    s[f"lat64_{k}_ns"] = C.median([r[k] for r in runs])
            elif test == "wake":
                for k in ("p50", "p99", "p99.9"):
                    s[f"wake_{k}_ns"] = C.median([r[k] for r in runs])
                s["wake_idle_cpu"] = C.median([r["idle_cpu"] for r in runs])
                s["wake_busy_cpu"] = C.median([r["busy_cpu"] for r in runs])
            else:
                s[f"{test}_msgs_per_s"] = C.median([r["msgs_per_s"] for r in runs])
                s[f"{test}_bytes_per_s"] = C.median([r["bytes_per_s"] for r in runs])
            s[f"{test}_rounds"] = len(runs)
        out[peer] = s
    return out


def compare(summary: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    naive = summary.get("naive", {})
    ratios: dict[str, Any] = {}
    for peer, s in summary.items():
        r: dict[str, Any] = {}
        for k in ("lat64_p50_ns", "lat64_p99_ns", "lat64_p99.9_ns"):
            if k in s and naive.get(k):
                r[k.replace("_ns", "")] = s[k] / naive[k]
        for k in ("thr64_msgs_per_s", "thr4k_msgs_per_s"):
            if k in s and naive.get(k):
                r[k.replace("_msgs_per_s", "")] = s[k] / naive[k]
        ratios[peer] = r
    verdicts = []
    p = summary.get("pyshm", {})
    rp = ratios.get("pyshm", {})
    if "lat64_p50" in rp:
        verdicts.append({"target": "latency p50 <= 0.5x naive",
                         "measured": f"{rp['lat64_p50']:.2f}x",
                         "value": rp["lat64_p50"],
                         "ok": rp["lat64_p50"] <= TARGETS["latency_p50_vs_naive"]})
    if "lat64_p99.9_ns" in p:
        verdicts.append({"target": "latency p99.9 <= 5 us",
                         "measured": C.fmt_ns(p["lat64_p99.9_ns"]),
                         "value": p["lat64_p99.9_ns"],
                         "ok": p["lat64_p99.9_ns"] <= TARGETS["latency_p999_ns"]})
    native = summary.get("native", {})
    if p.get("lat64_p50_ns") and native.get("lat64_p50_ns"):
        v = p["lat64_p50_ns"] / native["lat64_p50_ns"]
        verdicts.append({"target": "stretch: latency p50 <= 1.3x the featureless native ring",
                         "measured": f"{v:.2f}x", "value": v,
                         "ok": v <= TARGETS["latency_p50_vs_native"]})
    for peer, how in (("pyshm", "polling read()"), ("pyshm-wait", "read(timeout=None)")):
        rr = ratios.get(peer, {})
        if "thr64" in rr:
            verdicts.append({"target": f"throughput 64 B single-call, {how}, >= 1.5x naive",
                             "measured": f"{rr['thr64']:.2f}x", "value": rr["thr64"],
                             "ok": rr["thr64"] >= TARGETS["throughput_64_vs_naive"]})
    cp = summary.get("pyshm-copy", {})
    if cp.get("thr64_msgs_per_s") and p.get("thr64_msgs_per_s"):
        v = p["thr64_msgs_per_s"] / cp["thr64_msgs_per_s"]
        verdicts.append({"target": "read_copy within 1.2x of read (64 B throughput)",
                         "measured": f"{v:.2f}x", "value": v,
                         "ok": v <= TARGETS["read_copy_vs_read"]})
    b = summary.get("pyshm-block", {})
    if "wake_p50_ns" in b:
        verdicts.append({"target": "block wake-up p50 <= 50 us",
                         "measured": C.fmt_ns(b["wake_p50_ns"]), "value": b["wake_p50_ns"],
                         "ok": b["wake_p50_ns"] <= TARGETS["block_wakeup_p50_ns"]})
        verdicts.append({"target": "block idle CPU < 1 %",
                         "measured": f"{100 * b['wake_idle_cpu']:.3f} %",
                         "value": b["wake_idle_cpu"],
                         "ok": b["wake_idle_cpu"] < TARGETS["block_idle_cpu"]})
        floor = summary.get("c-floor", {}).get("wake_p50_ns")
        if floor:
            v = b["wake_p50_ns"] / floor
            verdicts.append({"target": "block wake-up p50 vs the futex floor (C wait/wake, "
                             "same run; report)",
                             "measured": f"{v:.2f}x ({C.fmt_ns(floor)} floor)", "value": v,
                             "ok": True})
    for peer in ("pyshm-wake", "pyshm-wake-fence"):
        w = summary.get(peer, {})
        if w.get("thr64_msgs_per_s") and p.get("thr64_msgs_per_s"):
            v = w["thr64_msgs_per_s"] / p["thr64_msgs_per_s"]
            verdicts.append({"target": f"wake check cost, nobody asleep ({peer} vs pyshm "
                             f"64 B throughput; report)", "measured": f"{v:.2f}x",
                             "value": v, "ok": True})
    if "batch64_msgs_per_s" in p:
        verdicts.append({"target": "batched throughput 64 B >= 20 M msgs/s",
                         "measured": C.fmt_rate(p["batch64_msgs_per_s"]),
                         "value": p["batch64_msgs_per_s"],
                         "ok": p["batch64_msgs_per_s"] >= TARGETS["batched_64_msgs_per_s"]})
    return ratios, verdicts


def render(summary: dict[str, dict[str, Any]], ratios: dict[str, Any], peers: list[str]) -> str:
    def ratio(peer: str, key: str) -> str:
        v = ratios.get(peer, {}).get(key)
        return "-" if v is None else f"{v:.2f}x"

    headers = ["peer", "p50", "p99", "p99.9", "p50/naive", "64 B msgs/s", "/naive",
               "4 KiB msgs/s", "4 KiB GB/s", "/naive"]
    rows = []
    for peer in peers:
        s = summary.get(peer, {})
        gbs = s.get("thr4k_bytes_per_s")
        rows.append([peer, C.fmt_ns(s.get("lat64_p50_ns")), C.fmt_ns(s.get("lat64_p99_ns")),
                     C.fmt_ns(s.get("lat64_p99.9_ns")), ratio(peer, "lat64_p50"),
                     C.fmt_rate(s.get("thr64_msgs_per_s")), ratio(peer, "thr64"),
                     C.fmt_rate(s.get("thr4k_msgs_per_s")),
                     "-" if gbs is None else f"{gbs / 1e9:.2f}", ratio(peer, "thr4k")])
        if "batch64_msgs_per_s" in s:
            rows.append([f"{peer} batched", "", "", "", "",
                         C.fmt_rate(s["batch64_msgs_per_s"]),
                         f"{s['batch64_msgs_per_s'] / summary['naive']['thr64_msgs_per_s']:.1f}x"
                         if summary.get("naive", {}).get("thr64_msgs_per_s") else "-",
                         "", "", ""])
    text = ("one-way latency (64 B ping-pong, RTT/2) and one-way throughput; medians of "
            "rounds\n" + C.table(headers, rows))
    wake_rows = [[peer, C.fmt_ns(s["wake_p50_ns"]), C.fmt_ns(s["wake_p99_ns"]),
                  f"{100 * s['wake_idle_cpu']:.3f} %", f"{100 * s['wake_busy_cpu']:.1f} %"]
                 for peer in peers if "wake_p50_ns" in (s := summary.get(peer, {}))]
    if wake_rows:
        text += ("\n\nwake-up of a sleeping consumer (records 1-3 ms apart), and its CPU "
                 "time idle (1 s, nothing published) and while woken\n" +
                 C.table(["wait", "p50", "p99", "CPU idle", "CPU busy"], wake_rows))
    return text


if __name__ == "__main__":
    sys.exit(main())
