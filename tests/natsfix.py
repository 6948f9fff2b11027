"""NATS JetStream servers for the bridge tests: real nats-server processes on 127.0.0.1
(free ports, temporary store directories, removed afterwards), started once per session
(a single server and a 3-node cluster), plus helpers that run the bridge commands as
real processes and compare rings record by record."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from pyshm import Ring
from pyshm.bridge.localserver import LocalNats


@pytest.fixture(scope="session")
def nats_server() -> Iterator[LocalNats]:
    srv = LocalNats(1)
    try:
        srv.start()
        yield srv
    finally:
        srv.close()


@pytest.fixture(scope="session")
def nats_cluster() -> Iterator[LocalNats]:
    srv = LocalNats(3)
    try:
        srv.start()
        yield srv
    finally:
        srv.close()


def pyshm_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pyshm", *args]


class Procs:
    """Processes a test started; every one is killed at teardown."""

    def __init__(self, cwd: str, state_dir: str):
        self.cwd = cwd
        self.env = dict(os.environ, PYSHM_STATE_DIR=state_dir)
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, log: str | None = None) -> subprocess.Popen[bytes]:
        out = open(os.path.join(self.cwd, log), "ab") if log else subprocess.DEVNULL
        p = subprocess.Popen(pyshm_cmd(*args), cwd=self.cwd, env=self.env,
                             stdout=subprocess.DEVNULL, stderr=out, stdin=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(pyshm_cmd(*args), cwd=self.cwd, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(10)
        # guards of killed bridges outlive them by design: end the ones this test made
        for pid in _guards_of(self.cwd):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _guards_of(_cwd: str) -> list[int]:
    out = []
    me = str(os.getpid())
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{d}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if b"pyshm.bridge.slot" in argv and f"PYSHM_TEST_OWNER={me}".encode() in env:
            out.append(int(d))
    return out


@pytest.fixture
def procs(tmp_path: Any) -> Iterator[Procs]:
    p = Procs(str(tmp_path), str(tmp_path / "state"))
    p.env["PYSHM_TEST_OWNER"] = str(os.getpid())
    try:
        yield p
    finally:
        p.close()


def records(name: str) -> list[tuple[int, int, bytes]]:
    """(sequence, type, payload) of every record a ring holds, oldest first."""
    with Ring(name, readonly=True) as ring:
        return [(r.sequence, r.type, r.payload) for r in ring.records()]


def wait_for(pred: Any, timeout: float, what: str, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def next_seq(name: str) -> int:
    try:
        with Ring(name, readonly=True) as r:
            return r.next_sequence
    except Exception:
        return -1


def _ranges(seqs: list[int]) -> str:
    out: list[str] = []
    for s in sorted(seqs):
        if out and out[-1].endswith(f"..{s - 1}"):
            out[-1] = out[-1].rsplit("..", 1)[0] + f"..{s}"
        else:
            out.append(f"{s}..{s}")
    return ", ".join(out[:20]) + (" ..." if len(out) > 20 else "")


def assert_same_records(got: list[tuple[int, int, bytes]], want: list[tuple[int, int, bytes]],
                        logs: Any = None) -> None:
    """``got == want``, or an AssertionError that says briefly how they differ (lengths,
    the first differing record, missing, extra and repeated sequences) followed by the
    ends of the bridge logs in ``logs`` (a directory): pytest's own diff of two lists of
    thousands of records is hundreds of thousands of lines under CI=1 and names nothing."""
    if got == want:
        return
    def brief(x: tuple[int, int, bytes] | None) -> str:
        return "none" if x is None else f"(seq {x[0]}, type {x[1]}, {len(x[2])} bytes)"
    first = next(i for i in range(max(len(got), len(want)))
                 if i >= len(got) or i >= len(want) or got[i] != want[i])
    gs, ws = [x[0] for x in got], [x[0] for x in want]
    by_seq = {x[0]: x for x in want}
    lines = [f"{len(got)} records, {len(want)} expected; first difference at index {first}: "
             f"got {brief(got[first] if first < len(got) else None)}, expected "
             f"{brief(want[first] if first < len(want) else None)}",
             f"missing sequences: {_ranges(sorted(set(ws) - set(gs))) or 'none'}",
             f"extra sequences: {_ranges(sorted(set(gs) - set(ws))) or 'none'}",
             "repeated sequences: " + (_ranges([s for s, n in Counter(gs).items() if n > 1])
                                       or "none"),
             "records with an expected sequence but other contents: " + (_ranges(
                 [g[0] for g in got if g[0] in by_seq and g != by_seq[g[0]]]) or "none")]
    if logs is not None:
        for name in sorted(os.listdir(logs)):
            if name.endswith(".log"):
                with open(os.path.join(logs, name), errors="replace") as f:
                    tail = f.read().splitlines()[-40:]
                lines += [f"--- the last {len(tail)} lines of {name}:", *tail]
    raise AssertionError("\n".join(lines))


def stream_envelopes(url: str, stream: str) -> list[Any]:
    """The pyshm envelope of every message a stream holds, in stream order (an ephemeral
    pull consumer without acknowledgements: the bridges' durables are not touched)."""
    import asyncio

    import nats
    from nats.js.api import AckPolicy, ConsumerConfig

    from pyshm.bridge.protocol import parse_envelope

    async def read() -> list[Any]:
        from nats.errors import TimeoutError as NatsTimeout

        from pyshm.bridge.connect import jetstream_call

        nc = await nats.connect(url.split(","))
        try:
            js = nc.jetstream()
            # right after a server node was killed the cluster may still be electing
            # leaders: each API call is retried as the bridges retry theirs
            info = await jetstream_call("stream info", js.stream_info, stream, timeout=60,
                                        display=url)
            total = info.state.messages
            sub = await jetstream_call("ephemeral consumer", js.pull_subscribe, "",
                                       stream=stream, timeout=60, display=url,
                                       config=ConsumerConfig(ack_policy=AckPolicy.NONE))
            out: list[Any] = []
            deadline = time.monotonic() + 120
            while len(out) < total:
                try:
                    batch = await sub.fetch(min(1000, total - len(out)), timeout=10)
                except NatsTimeout:
                    if time.monotonic() > deadline:
                        raise
                    continue
                for m in batch:
                    out.append(parse_envelope(m.headers, f"message {m.metadata.sequence.stream}"))
            return out
        finally:
            await nc.close()

    return asyncio.run(read())


def assert_floors_hold(envs: list[Any]) -> None:
    """Every message's Pyshm-Floor is true: each sequence below it (from the stream's
    lowest on) was stored ahead of the message."""
    assert envs and all(e.floor is not None for e in envs)
    seen: set[int] = set()
    done = min(e.sequence for e in envs)   # every sequence below it seen so far
    for i, e in enumerate(envs):
        assert e.floor <= done, (f"message {i + 1} (sequence {e.sequence}) has floor "
                                 f"{e.floor}, but sequence {done} was not stored ahead of it")
        seen.update(range(e.sequence, e.last + 1))
        while done in seen:
            done += 1
