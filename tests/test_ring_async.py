"""asyncio and selectors: ``await consumer.aread()``, ``async for``, ``fileno()``, with
producers in other processes."""

from __future__ import annotations

import asyncio
import json
import selectors
import struct
import subprocess
import sys

import pytest

from pyshm import Ring
from pyshm.errors import ClosedError, ConcurrentUseError

PRODUCER = r'''
import json, random, struct, sys, time
from pyshm import Ring

name, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = Ring.attach(name)
p = r.producer()
print(json.dumps({"ready": True}), flush=True)
sys.stdin.readline()  # go
rng = random.Random(seed)
for i in range(count):
    p.publish(struct.pack("<Q", i), type=i % 7)
    if rng.random() < 0.2:  # pauses long enough for the readers to fall asleep
        time.sleep(rng.choice([0.0001, 0.001, 0.003]))
print(json.dumps({"done": count}), flush=True)
sys.stdin.readline()  # stay attached until told
'''


@pytest.fixture
def producer(tmp_path):
    script = tmp_path / "producer.py"
    script.write_text(PRODUCER)
    procs: list[subprocess.Popen] = []

    def start(name: str, count: int, seed: int = 0) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, str(script), name, str(count), str(seed)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(p)
        assert json.loads(p.stdout.readline())["ready"]
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
        for f in (p.stdin, p.stdout):
            if f:
                f.close()


def go(proc: subprocess.Popen) -> None:
    proc.stdin.write("go\n")
    proc.stdin.flush()


def check(seqs_payloads: list[tuple[int, int]], count: int) -> None:
    assert [s for s, _ in seqs_payloads] == list(range(count))
    assert all(s == v for s, v in seqs_payloads)


def test_async_for_receives_every_record_from_another_process(ring_name, producer):
    count = 3000
    with Ring.create(ring_name, 1 << 16, lossless=True) as r:
        consumers = [r.consumer(gating=True) for _ in range(3)]
        prod = producer(ring_name, count, seed=1)

        async def drain(c) -> list[tuple[int, int]]:
            got = []
            async for m in c:
                got.append((m.sequence, struct.unpack("<Q", m)[0]))
                if len(got) == count:
                    return got
            return got

        async def main() -> list[list[tuple[int, int]]]:
            go(prod)
            return await asyncio.gather(*(drain(c) for c in consumers))

        results = asyncio.run(main())
        for got in results:
            check(got, count)
        # the readers did wait (the waker slept in the futex), and not by polling
        assert all(c._fast.waker_stats["sleeps"] > 0 for c in consumers)
        for c in consumers:
            c.close()  # stops the waker thread


def test_aread_does_not_poll_the_event_loop(ring_name, producer):
    with Ring.create(ring_name, 1 << 16) as r:
        c = r.consumer()

        async def main() -> tuple[object, int]:
            loop = asyncio.get_running_loop()
            selects = 0
            real = loop._selector.select  # type: ignore[attr-defined]

            def counting(timeout=None):
                nonlocal selects
                selects += 1
                return real(timeout)
            loop._selector.select = counting  # type: ignore[attr-defined]
            got = await c.aread(timeout=0.3)
            return got, selects

        got, selects = asyncio.run(main())
        # 0.3 s without a record: the loop slept in select, woken only by its timer
        assert got is None and selects < 10, selects
        c.close()


def test_aread_timeout_then_record_and_one_waiter_at_a_time(ring_name, producer):
    with Ring.create(ring_name, 1 << 16) as r:
        c = r.consumer()
        prod = producer(ring_name, 5)

        async def main() -> list:
            assert await c.aread(timeout=0.01) is None
            first = asyncio.ensure_future(c.aread())
            await asyncio.sleep(0.01)
            with pytest.raises(ConcurrentUseError, match="another aread"):
                await c.aread()
            go(prod)
            m = await first
            rest = [await c.aread(timeout=5) for _ in range(4)]
            return [m, *rest]

        msgs = asyncio.run(main())
        assert [m.sequence for m in msgs] == list(range(5))
        assert [m.type for m in msgs] == [i % 7 for i in range(5)]
        c.close()


def test_fileno_with_a_selector(ring_name, producer):
    count = 2000
    with Ring.create(ring_name, 1 << 16, lossless=True) as r:
        c = r.consumer(gating=True)
        fd = c.fileno()
        assert fd == c.fileno()  # one eventfd per consumer
        prod = producer(ring_name, count, seed=2)
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        go(prod)
        got: list[tuple[int, int]] = []
        rounds = 0
        while len(got) < count:
            assert sel.select(timeout=10), "no readiness within 10 s"
            rounds += 1
            while (m := c.read()) is not None:  # an empty read re-arms the fd
                got.append((m.sequence, struct.unpack("<Q", m)[0]))
        check(got, count)
        assert rounds < count  # readiness covered batches, not one record each
        sel.close()
        c.close()
        with pytest.raises(ClosedError):
            c.fileno()


@pytest.mark.parametrize("closer", ["task", "thread", "ring"])
def test_closing_the_consumer_ends_a_waiting_async_for(ring_name, producer, closer):
    """``async for msg in consumer`` ends when the consumer is closed, by another task,
    by another thread, or by closing the ring. Before the fix it waited for ever: the
    eventfd it slept on was closed under the event loop, which never woke it."""
    import threading

    with Ring.create(ring_name, 1 << 16) as r:
        c = r.consumer("latest")
        prod = producer(ring_name, 3)

        async def consume() -> list[int]:
            return [m.sequence async for m in c]

        async def main() -> list[int]:
            task = asyncio.ensure_future(consume())
            go(prod)
            for _ in range(1000):  # the three records read
                if c.next_sequence == 3:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)  # ... and the loop asleep on the fd again
            if closer == "task":
                c.close()
            elif closer == "ring":
                r.close()
            else:
                t = threading.Thread(target=c.close)
                t.start()
                t.join()
            return await asyncio.wait_for(task, 5)

        assert asyncio.run(main()) == [0, 1, 2]

        async def after() -> None:
            with pytest.raises(ClosedError):
                await c.aread(timeout=1)

        asyncio.run(after())


def test_closing_the_consumer_ends_a_waiting_aread_with_closed_error(ring_name):
    with Ring.create(ring_name, 1 << 16) as r:
        c = r.consumer("latest")

        async def main() -> None:
            waiting = asyncio.ensure_future(c.aread(timeout=30))
            await asyncio.sleep(0.05)
            c.close()
            with pytest.raises(ClosedError):
                await asyncio.wait_for(waiting, 5)

        asyncio.run(main())
