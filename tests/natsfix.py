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
