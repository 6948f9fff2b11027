"""Scheduled state images: every N seconds and/or every N records applied, keeping K.

Runs in a thread of any process (the writer's own, or a supervisor's): it attaches the
region itself, so its cuts go through the shared copy-on-write protocol and the writer
never waits for more than one chunk copy. Images are named by ``recovery.image_name``
(``REGION-SEQ-NS.pyimg``), so name order is sequence order and rotation only ever
deletes this region's own images.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import PyshmError
from .images import SnapshotResult, snapshot_state
from .recovery import image_name, list_images
from .region import State

log = logging.getLogger("pyshm.state")


class StateSnapshotSchedule:
    """Take state images of region ``state`` into ``directory``.

    ``every_seconds`` / ``every_records`` (records applied since the last image) are
    triggers; at least one is required. An image whose sequence equals the previous
    one's is not taken (nothing changed). A failed image is reported to ``on_error``
    and retried at the next trigger, never fatal to the thread.
    """

    def __init__(self, state: str | os.PathLike[str], directory: str | os.PathLike[str], *,
                 every_seconds: float | None = None, every_records: int | None = None,
                 keep: int = 3, compression: str = "none", poll: float = 0.05,
                 timeout: float = 10.0,
                 on_image: Callable[[SnapshotResult], None] | None = None,
                 on_error: Callable[[Exception], None] | None = None):
        if every_seconds is None and every_records is None:
            raise ValueError("a state snapshot schedule needs every_seconds and/or "
                             "every_records")
        if (every_seconds is not None and every_seconds <= 0) or \
                (every_records is not None and every_records <= 0):
            raise ValueError("snapshot intervals must be positive")
        if keep < 1:
            raise ValueError(f"keep={keep}: a schedule keeps at least one image")
        self.directory = os.fspath(directory)
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self.state_name = os.fspath(state)
        self.every_seconds = every_seconds
        self.every_records = every_records
        self.keep = keep
        self.compression = compression
        self.poll = poll
        self.timeout = timeout
        self.on_image = on_image
        self.on_error = on_error
        self.taken = 0
        self.failures = 0
        self.last: SnapshotResult | None = None
        self.last_error: str | None = None
        self._st: State | None = None
        self._buffer: np.ndarray | None = None
        self._last_time: float | None = None
        self._last_seq: int | None = None
        self._last_seq_known = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _state(self) -> State:
        if self._st is None or self._st.closed:
            self._st = State(self.state_name, timeout=self.timeout)
            self._buffer = np.empty(self._st.rows, self._st.dtype)
        return self._st

    def images(self) -> list[str]:
        return list_images(self.directory, self.state_name)

    def due(self, now: float | None = None) -> bool:
        st = self._state()
        seq = st.applied_seq
        if self._last_seq_known and seq == self._last_seq:
            return False  # nothing applied since the last image
        if self._last_time is None:
            return True
        now = time.monotonic() if now is None else now
        if self.every_seconds is not None and now - self._last_time >= self.every_seconds:
            return True
        if self.every_records is not None and seq is not None:
            return seq - (self._last_seq if self._last_seq is not None else -1) \
                >= self.every_records
        return False

    def run_once(self) -> SnapshotResult:
        """Take one image now and rotate."""
        with self._lock:
            st = self._state()
            seq = st.applied_seq
            path = os.path.join(self.directory, image_name(self.state_name, seq))
            res = snapshot_state(st, path, compression=self.compression, buffer=self._buffer,
                                 timeout=self.timeout)
            if res.header.applied_seq != seq:
                # the name carries the sequence it was planned at: rename to the real one
                final = os.path.join(self.directory,
                                     image_name(self.state_name, res.header.applied_seq))
                os.replace(path, final)
                res.path = final
            self._last_time = time.monotonic()
            self._last_seq = res.header.applied_seq
            self._last_seq_known = True
            self.taken += 1
            self.last = res
            self.rotate()
        if self.on_image is not None:
            self.on_image(res)
        return res

    def rotate(self) -> list[str]:
        images = self.images()
        removed = images[:max(0, len(images) - self.keep)]
        for p in removed:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        return removed

    def _loop(self) -> None:
        retry_at = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() >= retry_at and self.due():
                    self.run_once()
                    self.last_error = None
            except (PyshmError, OSError, ValueError) as exc:
                # a region being recovered refuses cuts for a while: retry within a
                # second, and say each different problem once
                retry_at = time.monotonic() + min(1.0, self.every_seconds or 1.0)
                self.failures += 1
                if str(exc) != self.last_error:
                    log.warning("state %s: snapshot failed: %s", self.state_name, exc)
                self.last_error = str(exc)
                if self.on_error is not None:
                    self.on_error(exc)
            self._stop.wait(self.poll)

    def start(self) -> StateSnapshotSchedule:
        if self._thread is not None:
            raise RuntimeError("schedule already started")
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"pyshm-state-snapshots-{self.state_name}")
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"state snapshot thread did not stop within {timeout} s")
            self._thread = None

    def close(self) -> None:
        self.stop()
        if self._st is not None:
            self._st.close()
            self._st = None

    def status(self) -> dict[str, Any]:
        last = self.last
        return {"directory": self.directory, "count": self.taken, "failures": self.failures,
                "last_path": last.path if last else None,
                "last_seq": last.header.applied_seq if last else None,
                "last_capture_s": round(last.capture_s, 6) if last else None,
                "last_write_s": round(last.write_s, 6) if last else None,
                "last_error": self.last_error}

    def __enter__(self) -> StateSnapshotSchedule:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
