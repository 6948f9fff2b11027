"""What ``pyshm run`` does for each configured state region (``states:``).

:class:`StateService`: creates the region (when missing), runs its writer in a child
process (``pyshm.state.child``), restarts it when it dies (the new one resumes a
consistent region or restores the newest image and replays the ring: recovery on
restart), images the region on schedule from the supervisor's own process, keeps its
state replica with the CPU state engine, and upgrades the writer by hot handover when
asked (SIGHUP, or ``pyshm handover --run CONFIG NAME``): a new child takes the region
over at an exact sequence and the old one exits on its own.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from typing import IO, Any

from ..errors import PyshmError

log = logging.getLogger("pyshm.run")


class _Child:
    """One writer process and what it reported."""

    def __init__(self, proc: subprocess.Popen[bytes], handover: bool):
        self.proc = proc
        self.handover = handover
        self.started: dict[str, Any] | None = None
        self.stats: dict[str, Any] = {}
        self.stopped: dict[str, Any] | None = None
        self.error: str | None = None
        self.lock = threading.Lock()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read(self, stream: IO[bytes] | None) -> None:
        if stream is None:
            return
        for line in stream:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if not isinstance(msg, dict):
                continue
            with self.lock:
                ev = msg.get("event")
                if ev == "started":
                    self.started = msg.get("start") or {}
                elif ev == "stats":
                    self.stats = msg
                elif ev == "caught_up" and self.started is not None:
                    self.started = {**self.started, "caught_up": msg.get("caught_up")}
                elif ev == "stopped":
                    self.stopped = msg.get("result") or {}
                elif ev == "error":
                    self.error = str(msg.get("error"))
        stream.close()

    @property
    def handed_over(self) -> bool:
        with self.lock:
            return bool(self.stopped and self.stopped.get("reason") == "handed_over")


class StateService:
    """One ``states:`` entry under the supervisor ``sup`` (see module doc)."""

    def __init__(self, sup: Any, sc: Any):
        self.sup = sup
        self.sc = sc
        self.child: _Child | None = None
        self.incoming: _Child | None = None   # a handover in progress
        self.retired: list[_Child] = []
        self.state = "starting"
        self.restarts = 0
        self.restart_times: collections.deque[float] = collections.deque()
        self.next_start = 0.0
        self.last_exit: int | None = None
        self.handovers: list[dict[str, Any]] = []
        self.schedule: Any = None
        self.engine: Any = None
        self._replica: Any = None
        self._retention: Any = None      # (ring, gating consumer) at the last image's S+1
        self._retention_lock = threading.Lock()

    # -- set-up -------------------------------------------------------------------
    def prepare(self) -> None:
        """Create the region (and replica) when missing, before any child runs."""
        from . import dtypes
        from .region import State

        sc = self.sc
        created = not os.path.exists(sc.path)
        with State(sc.name, create=True, dtype=dtypes.parse(sc.description), rows=sc.rows,
                   exist_ok=True) as st:
            if created:
                self.sup._created.append(st.path)
            log.info("state %s: %s (%d rows of %d bytes, applied_seq %s)", sc.name,
                     "created" if created else "attached", st.rows, st.itemsize,
                     st.applied_seq)
        if sc.snapshots is not None:
            os.makedirs(sc.snapshots.directory, mode=0o700, exist_ok=True)

    def start(self) -> None:
        """Start the writer child, the image schedule and the replica engine."""
        self.child = self._spawn(handover=False)
        self.state = "running"
        sn = self.sc.snapshots
        if sn is not None:
            from .schedule import StateSnapshotSchedule

            self._open_retention()
            self.schedule = StateSnapshotSchedule(
                self.sc.name, sn.directory, every_seconds=sn.interval,
                every_records=sn.every_records, keep=sn.keep, compression=sn.compress,
                on_image=lambda res: self._retain_after(res.header.applied_seq))
            self.schedule.start()
        if self.sc.replica is not None:
            from .replica import CpuStateEngine, create_replica

            self._replica = create_replica(self.sc.replica.name, self.sc.name)
            self.engine = CpuStateEngine(self.sc.name, self._replica)
            self.engine.start()
            log.info("state %s: replica %s mirrored by the cpu state engine", self.sc.name,
                     self.sc.replica.name)

    # -- retention: what recovery replays stays in a lossless ring -------------------
    def _open_retention(self) -> None:
        """On a lossless ring, hold a gating slot at the sequence after the newest state
        image: the producer then never overwrites a record that recovering the region
        (image + replay) needs, even while its writer is dead and being restarted (the
        writer's own slot is reaped with it). A ring must hold one image interval of
        records, or the producer waits (FULL) for the next image."""
        from ..ring import Ring
        from .images import read_state_image
        from .recovery import list_images

        try:
            ring = Ring(self.sc.ring)
        except PyshmError as exc:
            log.warning("state %s: no retention slot on ring %s: %s", self.sc.name,
                        self.sc.ring, exc)
            return
        if not ring.lossless or ring.is_replica:
            ring.close()
            return
        assert self.sc.snapshots is not None
        seq = None
        for path in reversed(list_images(self.sc.snapshots.directory, self.sc.name)):
            with contextlib.suppress(PyshmError):
                seq = read_state_image(path).applied_seq
                break
        if seq is None:
            from .region import State
            with State(self.sc.name, readonly=True) as st:
                seq = None if st.epoch & 1 else st.applied_seq
        cons = ring.consumer(start=0 if seq is None else seq + 1, gating=True)
        self._retention = (ring, cons)
        self._publish_retention(0 if seq is None else seq + 1)
        log.info("state %s: holding ring %s from sequence %s for recovery", self.sc.name,
                 self.sc.ring, 0 if seq is None else seq + 1)

    def _retain_after(self, seq: int | None) -> None:
        """A new image at ``seq``: let the ring reuse what came before seq + 1."""
        if seq is None or self._retention is None:
            return
        with self._retention_lock:
            _, cons = self._retention
            while True:
                nxt = cons.next_sequence
                if nxt is not None and nxt > seq:
                    break
                want = seq + 1 - (nxt if nxt is not None else 0)
                b = cons.read_batch(max(1, min(want, 65536)))
                if not len(b):
                    break
            # read_batch published the position after the last record it returned
            self._publish_retention(seq + 1)

    def _publish_retention(self, seq: int) -> None:
        """Tell the region's recovery where the held records start: a writer restored
        from an image at seq - 1 starts reading there (a record boundary), not at the
        next partition start a seek by sequence would find."""
        from .region import State

        ring, cons = self._retention
        with State(self.sc.name) as st:
            st._store("I_RETAIN_RING", ring.params.created_ns)
            st._store("I_RETAIN_POS", cons.position)
            st._store("I_RETAIN_SEQ", seq)

    def _close_retention(self) -> None:
        with self._retention_lock:
            if self._retention is not None:
                ring, cons = self._retention
                cons.close()
                ring.close()
                self._retention = None

    def _spawn(self, handover: bool) -> _Child:
        sc = self.sc
        spec = {"name": sc.name, "ring": sc.ring, "description": sc.description,
                "rows": sc.rows, "apply": sc.apply, "apply_batch": sc.apply_batch,
                "batch": sc.batch, "gating": sc.gating, "restart": sc.restart,
                "images": sc.snapshots.directory if sc.snapshots else None,
                "handover": handover, "handover_timeout": sc.handover_timeout,
                "sync": sc.sync, "status_interval": self.sup.cfg.metrics.status_interval,
                "log_level": self.sup.log_level}
        proc = subprocess.Popen([sys.executable, "-m", "pyshm.state.child"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                cwd=self.sup.cfg.state_dir, close_fds=True)
        assert proc.stdin is not None
        try:
            proc.stdin.write((json.dumps(spec) + "\n").encode())
            proc.stdin.close()
        except OSError:
            pass  # it died at once: check() sees it
        child = _Child(proc, handover)
        threading.Thread(target=child.read, args=(proc.stdout,), daemon=True,
                         name=f"state-{sc.name}-{proc.pid}").start()
        log.info("state %s: writer started (pid %d)%s", sc.name, proc.pid,
                 " to take over by handover" if handover else "")
        return child

    # -- running ------------------------------------------------------------------
    def upgrade(self) -> bool:
        """Replace the writer: by hot handover (``upgrade: handover``) or by a stop and
        a restart that recovers. Returns False when one is already in progress."""
        if self.incoming is not None or self.child is None:
            return False
        if self.sc.upgrade == "handover":
            self.incoming = self._spawn(handover=True)
            return True
        self.child.proc.send_signal(signal.SIGTERM)  # check() restarts it
        return True

    def check(self, now: float) -> None:
        """Follow handovers, restart a dead writer within the restart budget."""
        inc = self.incoming
        if inc is not None:
            rc = inc.proc.poll()
            started = inc.started
            if started is not None and started.get("how") == "handover":
                self.handovers.append({k: started.get(k) for k in (
                    "old_pid", "final_seq", "gap_ns", "rows_differing", "catch_up_s")})
                log.info("state %s: handed over from pid %s to pid %d at sequence %s "
                         "(gap %.3f ms)", self.sc.name, started.get("old_pid"), inc.pid,
                         started.get("final_seq"), (started.get("gap_ns") or 0) / 1e6)
                if self.child is not None:
                    self.retired.append(self.child)
                self.child, self.incoming = inc, None
            elif started is not None or rc is not None:
                # it started some other way (no live writer) or failed: keep the old one
                why = inc.error or (f"exited with {rc}" if rc is not None else
                                    f"started as {started.get('how') if started else '?'}")
                log.error("state %s: handover to pid %d failed: %s", self.sc.name, inc.pid,
                          why)
                self.handovers.append({"failed": why, "pid": inc.pid})
                if rc is None and started is not None and self.child is not None \
                        and self.child.proc.poll() is not None:
                    self.child, self.incoming = inc, None  # the old one had died
                else:
                    if rc is None:
                        inc.proc.send_signal(signal.SIGTERM)
                        self.retired.append(inc)
                    self.incoming = None
        for old in list(self.retired):
            if old.proc.poll() is not None:
                self.retired.remove(old)
        child = self.child
        if self.state == "running" and child is not None:
            rc = child.proc.poll()
            if rc is None:
                return
            self.last_exit = rc
            window = self.sup.cfg.supervisor.restart_window
            while self.restart_times and now - self.restart_times[0] > window:
                self.restart_times.popleft()
            how = f"killed by signal {-rc}" if rc < 0 else f"exited with status {rc}"
            if child.error:
                how += f": {child.error}"
            if len(self.restart_times) >= self.sup.cfg.supervisor.max_restarts:
                self.state = "failed"
                log.error("state %s: writer (pid %d) %s; %d restarts in %.0f s, giving up",
                          self.sc.name, child.pid, how, len(self.restart_times), window)
                return
            self.state = "restarting"
            self.next_start = now + self.sup.cfg.supervisor.restart_delay
            log.warning("state %s: writer (pid %d) %s; restarting it (it recovers the "
                        "region)", self.sc.name, child.pid, how)
        if self.state == "restarting" and now >= self.next_start:
            self.restart_times.append(now)
            self.restarts += 1
            self.child = self._spawn(handover=False)
            self.state = "running"

    def stop(self, timeout: float) -> None:
        """Stop the writer(s), then the schedule (with a final image) and the replica
        engine (after a final sync)."""
        for c in [self.incoming, self.child, *self.retired]:
            if c is None or c.proc.poll() is not None:
                continue
            c.proc.send_signal(signal.SIGTERM)
        for c in [self.incoming, self.child, *self.retired]:
            if c is None:
                continue
            try:
                c.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.error("state %s: writer (pid %d) did not stop in time; killing it",
                          self.sc.name, c.pid)
                c.proc.kill()
                c.proc.wait(5)
        self.state = "stopped"
        if self.schedule is not None:
            self.schedule.stop(timeout)
            if self.sc.snapshots.on_shutdown:
                with contextlib.suppress(Exception):
                    self.schedule.run_once()
            self.schedule.close()
        self._close_retention()
        if self.engine is not None:
            with contextlib.suppress(Exception):
                self.engine.sync(self.sup.cfg.supervisor.shutdown_timeout)
            self.engine.close()
            self.engine = None
        if self._replica is not None:
            self._replica.close()
            self._replica = None

    def status(self) -> dict[str, Any]:
        """What the status file shows for this region."""
        c = self.child
        out: dict[str, Any] = {"state": self.state, "ring": self.sc.ring,
                               "pid": c.pid if c else None, "restarts": self.restarts,
                               "last_exit": self.last_exit,
                               "handovers": self.handovers[-5:],
                               "handover_in_progress": self.incoming is not None}
        if c is not None:
            with c.lock:
                out["started"] = c.started
                out["applied_seq"] = c.stats.get("applied_seq")
                out["applied"] = c.stats.get("applied")
        if self.schedule is not None:
            out["snapshots"] = self.schedule.status()
        if self.engine is not None:
            with contextlib.suppress(Exception):
                out["replica"] = {"name": self.sc.replica.name,
                                  "consistent_seq": self.engine.consistent_seq,
                                  **{k: v for k, v in self.engine.stats().as_dict().items()
                                     if k in ("state", "copies", "records_mirrored",
                                              "lag_ns")}}
        return out


def request_file(state_dir: str, run: str) -> str:
    """The prefix of the files ``pyshm handover --run`` leaves for the supervisor (one
    file per request, ``PREFIX-RANDOM``, renamed into place complete)."""
    return os.path.join(state_dir, f"{run}.handover")


def take_requests(prefix: str) -> list[str]:
    """The region names asked for, removing the request files."""
    directory, base = os.path.split(prefix)
    names: list[str] = []
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return names
    for e in entries:
        if not e.startswith(base + "-") or e.endswith(".tmp"):
            continue
        path = os.path.join(directory, e)
        try:
            with open(path, encoding="utf-8") as f:
                names += [ln.strip() for ln in f if ln.strip()]
            os.unlink(path)
        except FileNotFoundError:
            continue
    return names


def write_request(prefix: str, name: str) -> None:
    """Leave a handover request for the supervisor (written aside, then renamed, so the
    supervisor never reads half of it)."""
    import secrets

    path = f"{prefix}-{secrets.token_hex(6)}"
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(name + "\n")
    os.replace(path + ".tmp", path)


__all__ = ["StateService", "request_file", "take_requests", "write_request"]
