"""Scheduled snapshots: every N seconds and/or every N bytes published, keeping the last K.

Images are named ``PREFIX-<ns since epoch>-<next sequence>.pyimg`` so that name order is
time order; rotation only ever deletes files matching this schedule's own prefix.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import layout
from ..errors import PyshmError
from . import format as fmt
from .snapshot import _Source, scratch_size, snapshot

SUFFIX = fmt.IMAGE_SUFFIX


class SnapshotSchedule:
    """Take snapshots of ``source`` into ``directory``; :meth:`start` runs it in a thread.

    ``every_seconds`` and ``every_bytes`` are triggers (either one fires a snapshot);
    at least one is required. A failed snapshot is reported to ``on_error`` (default:
    kept in :attr:`errors`) and retried at the next trigger, never fatal to the thread.

    A trigger that finds the source unchanged since the last image (same tail, next
    sequence and identity), while that image still exists, takes no new one: it counts
    in :attr:`skipped` and calls ``on_skip(last image path)``, so an idle ring does not
    fill the directory with identical files. ``skip_unchanged=False`` takes them anyway.
    """

    def __init__(self, source: Any, directory: str | os.PathLike[str], *,
                 every_seconds: float | None = None, every_bytes: int | None = None,
                 keep: int = 5, prefix: str = "snapshot", compression: str = "none",
                 engine: Any = None, poll: float = 0.05,
                 on_error: Callable[[Exception], None] | None = None,
                 on_image: Callable[[str, fmt.ImageHeader], None] | None = None,
                 on_skip: Callable[[str], None] | None = None,
                 skip_unchanged: bool = True):
        if every_seconds is None and every_bytes is None:
            raise ValueError("a snapshot schedule needs every_seconds and/or every_bytes")
        if every_seconds is not None and every_seconds <= 0 or \
                every_bytes is not None and every_bytes <= 0:
            raise ValueError("snapshot intervals must be positive")
        if keep < 1:
            raise ValueError(f"keep={keep}: a schedule keeps at least one image")
        if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,100}", prefix):
            raise ValueError(f"snapshot prefix {prefix!r}: use [A-Za-z0-9_.-]")
        self.directory = os.fspath(directory)
        if not os.path.isdir(self.directory):
            raise FileNotFoundError(f"snapshot directory {self.directory} does not exist")
        self.every_seconds = every_seconds
        self.every_bytes = every_bytes
        self.keep = keep
        self.prefix = prefix
        self.compression = compression
        self.engine = engine
        self.poll = poll
        self.on_error = on_error
        self.on_image = on_image
        self.on_skip = on_skip
        self.skip_unchanged = skip_unchanged
        self.errors: list[Exception] = []
        self.taken = 0
        self.skipped = 0
        self.last_path: str | None = None
        self._last_fingerprint: tuple[int, ...] | None = None
        self._source_arg = source
        self._src = _Source(source)
        self._buffer = np.empty(scratch_size(self._src.params), dtype=np.uint8)
        self._last_time: float | None = None
        self._last_tail = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pattern = re.compile(re.escape(prefix) + r"-(\d{19,20})-(\d+)" +
                                   re.escape(SUFFIX) + "$")

    def images(self) -> list[str]:
        """This schedule's images, oldest first."""
        found = []
        for entry in os.listdir(self.directory):
            m = self._pattern.match(entry)
            if m:
                found.append((int(m.group(1)), entry))
        return [os.path.join(self.directory, e) for _, e in sorted(found)]

    def due(self, now: float | None = None) -> bool:
        """True when a trigger fired since the last image (always before the first)."""
        if self._last_time is None:
            return True
        now = time.monotonic() if now is None else now
        if self.every_seconds is not None and now - self._last_time >= self.every_seconds:
            return True
        return self.every_bytes is not None and \
            self._src.tail - self._last_tail >= self.every_bytes

    def _fingerprint(self) -> tuple[int, ...]:
        return layout.content_fingerprint(self._src.segment.buf[:layout.OFF_SLOTS])

    def unchanged(self) -> bool:
        """True when the last image still exists and holds what an image now would."""
        return (self._last_fingerprint is not None and self.last_path is not None
                and self._fingerprint() == self._last_fingerprint
                and os.path.exists(self.last_path))

    def run_once(self) -> str:
        """Take one snapshot now and rotate; returns the image path."""
        fingerprint = self._fingerprint()
        tail = self._src.tail
        stamp = time.time_ns()
        path = None
        for _ in range(3):  # two snapshots in one ns tick would collide: move on
            candidate = os.path.join(self.directory, f"{self.prefix}-{stamp:020d}-"
                                     f"{self._src.next_sequence}{SUFFIX}")
            if not os.path.exists(candidate):
                path = candidate
                break
            stamp += 1
        if path is None:
            raise PyshmError(f"cannot name a new snapshot in {self.directory}")
        header = snapshot(self._src.segment, path, compression=self.compression,
                          engine=self.engine, buffer=self._buffer)
        self._last_time = time.monotonic()
        self._last_tail = tail
        # taken before the copy: if a record was committed meanwhile the next trigger
        # sees a change and takes another image, never the other way round
        self._last_fingerprint = fingerprint
        self.last_path = path
        self.taken += 1
        if self.on_image is not None:
            self.on_image(path, header)
        self.rotate()
        return path

    def rotate(self) -> list[str]:
        """Delete this schedule's oldest images beyond ``keep``; returns those removed."""
        images = self.images()
        removed = images[:max(0, len(images) - self.keep)]
        for p in removed:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        return removed

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self.due():
                try:
                    if self.skip_unchanged and self.unchanged():
                        self._last_time = time.monotonic()
                        self.skipped += 1
                        if self.on_skip is not None:
                            assert self.last_path is not None
                            self.on_skip(self.last_path)
                        self._stop.wait(self.poll)
                        continue
                    self.run_once()
                except Exception as exc:  # keep the schedule alive; report, retry later
                    self._last_time = time.monotonic()
                    self.errors.append(exc)
                    if self.on_error is not None:
                        self.on_error(exc)
            self._stop.wait(self.poll)

    def start(self) -> SnapshotSchedule:
        """Run the schedule in a daemon thread; returns self."""
        if self._thread is not None:
            raise RuntimeError("schedule already started")
        self._thread = threading.Thread(target=self._loop, name="pyshm-snapshots",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread after the snapshot in progress (TimeoutError after ``timeout``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"snapshot thread did not stop within {timeout} s")
            self._thread = None

    def close(self) -> None:
        """Stop and release the source."""
        self.stop()
        self._src.close()

    def __enter__(self) -> SnapshotSchedule:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
