"""``pyshm run``: bring up what a configuration declares and keep it running.

Process model. The supervisor creates (or attaches) every ring and replica itself, then
runs each replication engine in a child process of its own (``python -m
pyshm.supervisor engine SPEC``): an engine that crashes, or is killed, takes nothing else
with it, and the supervisor starts a new one, which resumes from the replica's tail.
Snapshots run in supervisor threads (one per ring with a schedule), so a slow disk never
delays the engines. The children report their statistics as JSON lines on a pipe; the
supervisor folds them into ``STATE_DIR/RUN.status.json`` (atomically replaced), which
``pyshm stats`` and the Prometheus endpoint read.

Shutdown (SIGINT or SIGTERM): each engine child gets SIGTERM, does a final ``sync`` and
stops; then each ring with ``on_shutdown`` snapshots gets its final image; rings marked
``unlink_on_exit`` are removed. Children ignore SIGINT (a terminal's Ctrl-C reaches the
whole process group) so the order above is the supervisor's, and they ask the kernel to
SIGTERM them if the supervisor dies without stopping them.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Any

from . import layout
from .config import Config, RingConfig
from .errors import ConfigError, EngineError, PyshmError
from .images.format import IMAGE_SUFFIX

log = logging.getLogger("pyshm.run")



def _atomic_write_json(path: str, data: Any) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, default=str)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------
# Engine children


class EngineChild:
    """One engine process for one ring: start, watch, restart within a budget."""

    def __init__(self, sup: Supervisor, ring: RingConfig):
        assert ring.replica is not None
        self.sup = sup
        self.ring = ring
        self.replica = ring.replica
        self.proc: subprocess.Popen[bytes] | None = None
        self.state = "starting"
        self.restarts = 0
        self.restart_times: collections.deque[float] = collections.deque()
        self.next_start = 0.0
        self.stats: dict[str, Any] = {}
        self.engine_name = self.replica.engine
        self.last_exit: int | None = None
        self._lock = threading.Lock()
        self._requests = 0
        # request id -> (answered, reply, pid of the child asked)
        self._pending: dict[int, tuple[threading.Event, dict[str, Any], int]] = {}

    @property
    def pid(self) -> int | None:
        """The engine process's pid, None while none runs."""
        return self.proc.pid if self.proc else None

    def spec(self) -> dict[str, Any]:
        """What the engine process is started with (JSON on its command line)."""
        return {"ring": self.ring.path, "replica": self.replica.name, "engine":
                self.replica.engine, "threads": self.replica.threads, "gate": self.replica.gate,
                "wait": self.replica.wait, "poll_priority": self.replica.poll_priority,
                "sync_timeout": self.replica.sync_timeout,
                "status_interval": self.sup.cfg.metrics.status_interval,
                "log_level": self.sup.log_level, "writer_fd": self._lock_fd()}

    def _lock_fd(self) -> int | None:
        lock = self.sup.locks.get(self.replica.name)
        return lock.fd if lock is not None and lock.held else None

    def start(self) -> None:
        """Start the engine process."""
        cmd = [sys.executable, "-m", "pyshm.supervisor", "engine", json.dumps(self.spec())]
        fd = self._lock_fd()
        # cwd: the state directory, never the caller's: `-m` puts cwd first on sys.path
        # stdin carries requests (snapshots of the replica, which need the engine paused),
        # stdout the child's reports. The child inherits the replica's writer lock, which
        # this process holds for its whole life: no other engine can take the replica
        # between two children.
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.PIPE,
                                     cwd=self.sup.cfg.state_dir, close_fds=True,
                                     pass_fds=() if fd is None else (fd,))
        self.state = "running"
        self.stats = {}
        threading.Thread(target=self._read, args=(self.proc.stdout, self.proc.pid), daemon=True,
                         name=f"engine-{self.ring.name}").start()
        log.info("ring %s: engine %s started (pid %d) -> replica %s", self.ring.name,
                 self.replica.engine, self.proc.pid, self.replica.name)

    def _read(self, stream: IO[bytes] | None, pid: int) -> None:
        if stream is None:
            return
        for line in stream:
            try:
                msg = json.loads(line)
            except ValueError:
                log.warning("ring %s: engine said %r", self.ring.name, line[:200])
                continue
            if not isinstance(msg, dict):
                continue
            with self._lock:
                if msg.get("event") == "started":
                    self.engine_name = str(msg.get("engine", self.engine_name))
                    if msg.get("note"):
                        log.info("ring %s: %s", self.ring.name, msg["note"])
                elif msg.get("event") in ("stats", "stopped"):
                    self.stats = msg.get("stats") or {}
                if msg.get("event") == "reply" and msg.get("id") in self._pending:
                    event, out, _ = self._pending[msg["id"]]
                    out.update(msg)
                    event.set()
                if msg.get("event") == "stopped":
                    log.info("ring %s: engine stopped cleanly (final sync %s)", self.ring.name,
                             "done" if msg.get("synced") else "FAILED: " + str(msg.get("error")))
        # end of the pipe: the child is gone, so no reply will come to what is pending
        with self._lock:
            for event, out, asked in self._pending.values():
                if asked == pid:
                    out.update(ok=False, skipped=True, error="the engine exited meanwhile")
                    event.set()
        stream.close()

    def request(self, timeout: float, **cmd: Any) -> dict[str, Any] | None:
        """Ask the running child to do something; None if it is not running or silent."""
        with self._lock:
            proc = self.proc
            if self.state != "running" or proc is None or proc.stdin is None:
                return None
            self._requests += 1
            rid = self._requests
            done, out = threading.Event(), dict[str, Any]()
            self._pending[rid] = (done, out, proc.pid)
        try:
            proc.stdin.write((json.dumps({**cmd, "id": rid}) + "\n").encode())
            proc.stdin.flush()
            if not done.wait(timeout):
                return {"ok": False, "error": f"the engine (pid {proc.pid}) did not answer "
                                              f"in {timeout:.0f} s"}
            return out
        except (OSError, ValueError):  # the child died: its pipe is closed
            return {"ok": False, "skipped": True, "error": "the engine exited meanwhile"}
        finally:
            with self._lock:
                self._pending.pop(rid, None)

    def check(self, now: float) -> None:
        """Notice a dead child and restart it, within the restart budget."""
        if self.state == "running" and self.proc is not None:
            rc = self.proc.poll()
            if rc is None:
                return
            self.last_exit = rc
            how = f"killed by signal {-rc}" if rc < 0 else f"exited with status {rc}"
            window = self.sup.cfg.supervisor.restart_window
            while self.restart_times and now - self.restart_times[0] > window:
                self.restart_times.popleft()
            if len(self.restart_times) >= self.sup.cfg.supervisor.max_restarts:
                self.state = "failed"
                log.error("ring %s: engine (pid %d) %s; %d restarts in %.0f s, giving up",
                          self.ring.name, self.proc.pid, how, len(self.restart_times), window)
                return
            self.state = "restarting"
            self.next_start = now + self.sup.cfg.supervisor.restart_delay
            log.warning("ring %s: engine (pid %d) %s; restarting in %.1f s", self.ring.name,
                        self.proc.pid, how, self.sup.cfg.supervisor.restart_delay)
        if self.state == "restarting" and now >= self.next_start:
            self.restart_times.append(now)
            self.restarts += 1
            self.start()

    def stop(self, timeout: float) -> None:
        """SIGTERM (the child syncs and stops), then SIGKILL after ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            self.state = "stopped"
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout + self.replica.sync_timeout)
        except subprocess.TimeoutExpired:
            log.error("ring %s: engine (pid %d) did not stop in time; killing it",
                      self.ring.name, self.proc.pid)
            self.proc.kill()
            self.proc.wait(5)
        self.state = "stopped"

    def status(self) -> dict[str, Any]:
        """Name, pid, state, restarts, last exit status and the engine's statistics."""
        with self._lock:
            return {"name": self.engine_name, "requested": self.replica.engine,
                    "pid": self.pid, "state": self.state, "restarts": self.restarts,
                    "last_exit": self.last_exit, "stats": dict(self.stats)}


def engine_child_main(spec_text: str) -> int:
    """Body of an engine process: mirror one ring until SIGTERM, reporting on stdout."""
    spec = json.loads(spec_text)
    logging.basicConfig(level=spec.get("log_level", "info").upper(), stream=sys.stderr,
                        format=f"%(asctime)s engine[{os.getpid()}] %(levelname)s %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    parent = os.getppid()
    _die_with_parent()

    def say(**msg: Any) -> None:
        sys.stdout.write(json.dumps(msg, default=str) + "\n")
        sys.stdout.flush()

    from .engine import open_engine

    notes: list[str] = []
    options: dict[str, Any] = {}
    if spec.get("threads"):
        options["threads"] = spec["threads"]
    if spec.get("gate"):
        options["gate"] = True
    # cpu engine options, passed only when asked for (other engines do not take them)
    if spec.get("wait") not in (None, "sleep"):
        options["wait"] = spec["wait"]
    if spec.get("poll_priority"):
        options["poll_priority"] = spec["poll_priority"]
    if spec.get("writer_fd") is not None:
        options["writer_lock"] = int(spec["writer_fd"])
    # names, not objects: the engine maps both segments itself and owns the mappings
    eng = open_engine(spec["engine"], spec["ring"], spec["replica"], announce=notes.append,
                      **options)
    eng.start()
    say(event="started", engine=eng.name, pid=os.getpid(), note="; ".join(notes))
    interval = float(spec.get("status_interval", 1.0))
    commands: queue.Queue[dict[str, Any]] = queue.Queue()
    threading.Thread(target=_read_commands, args=(commands,), daemon=True).start()
    next_stats = time.monotonic() + interval
    while not stop.is_set():
        try:
            cmd = commands.get(timeout=max(0.0, min(0.05, next_stats - time.monotonic())))
        except queue.Empty:
            cmd = None
        if cmd is not None:
            say(event="reply", id=cmd.get("id"), **_command(cmd, eng, spec))
        if time.monotonic() >= next_stats:
            say(event="stats", stats=_stats_dict(eng))
            next_stats = time.monotonic() + interval
            if os.getppid() != parent:  # orphaned (no prctl): stop as on SIGTERM
                break
    synced, error = True, None
    try:
        eng.sync(timeout=float(spec.get("sync_timeout", 5.0)))
    except PyshmError as exc:
        synced, error = False, str(exc)
    eng.stop()
    say(event="stopped", synced=synced, error=error, stats=_stats_dict(eng))
    eng.close()
    return 0 if synced else 1


def _read_commands(out: queue.Queue[dict[str, Any]]) -> None:
    for line in sys.stdin:
        try:
            cmd = json.loads(line)
        except ValueError:
            continue
        if isinstance(cmd, dict):
            out.put(cmd)


def _command(cmd: dict[str, Any], eng: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """Run one supervisor request in the engine's own thread."""
    if cmd.get("cmd") != "snapshot":
        return {"ok": False, "error": f"unknown command {cmd.get('cmd')!r}"}
    from . import images

    t0 = time.perf_counter()
    try:
        # the engine is synced and paused only while the window is copied to memory
        images.snapshot(spec["replica"], cmd["path"], compression=cmd.get("compression",
                                                                           "none"), engine=eng)
    except (PyshmError, OSError, ValueError) as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": True, "seconds": time.perf_counter() - t0}


def _stats_dict(eng: Any) -> dict[str, Any]:
    st = eng.stats()
    d: dict[str, Any] = st.as_dict() if hasattr(st, "as_dict") else dict(st)
    d["lag_percentiles_ns"] = {q: d.get(k) for q, k in (("0.5", "lag_p50_ns"),
                                                        ("0.99", "lag_p99_ns"),
                                                        ("0.999", "lag_p999_ns"),
                                                        ("1", "lag_max_ns"))
                               if d.get(k) is not None}
    return d


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG: the kernel sends SIGTERM if the supervisor dies (Linux only)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


# ----------------------------------------------------------------------------------
# Snapshots


class SnapshotSchedule:
    """Periodic images of one ring (or its replica), keeping the newest ``keep``.

    An interval that finds the source unchanged since the last image (same identity, tail
    and next sequence), while that image still exists, writes nothing: it is counted in
    ``skipped`` and logged once per idle stretch, so an idle ring does not rotate its
    history away with identical copies.
    """

    def __init__(self, sup: Supervisor, ring: RingConfig):
        assert ring.snapshots is not None
        self.sup = sup
        self.ring = ring
        self.cfg = ring.snapshots
        self.source = (ring.replica.name if self.cfg.source == "replica" and ring.replica
                       else ring.name)
        self.count = 0
        self.failures = 0
        self.remote_count = 0
        self.remote_failures = 0
        self.skipped = 0
        self.skipped_streak = 0
        self._last_fingerprint: tuple[int, ...] | None = None
        self.last_time: float | None = None
        self.last_duration: float | None = None
        self.last_path: str | None = None
        self.last_error: str | None = None
        self.thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one snapshot at a time (schedule vs final)

    def start(self) -> None:
        """Start the schedule's thread (one image every ``interval``)."""
        os.makedirs(self.cfg.directory, mode=0o700, exist_ok=True)
        self.thread = threading.Thread(target=self._loop, daemon=True,
                                       name=f"snapshot-{self.ring.name}")
        self.thread.start()

    def _loop(self) -> None:
        while not self.sup.stopping.wait(self.cfg.interval):
            self.take()

    def image_path(self) -> str:
        """A new image name: ``RING-YYYYmmddTHHMMSS-NS.pyimg`` in the directory."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        base = os.path.basename(self.ring.name)
        return os.path.join(self.cfg.directory,
                            f"{base}-{stamp}-{time.time_ns() % 10**9:09d}{IMAGE_SUFFIX}")

    def _fingerprint(self) -> tuple[int, ...] | None:
        from .segment import Segment

        try:
            with Segment(self.source, readonly=True) as seg:
                buf = seg.buf
                try:
                    return layout.content_fingerprint(buf[:layout.OFF_SLOTS])
                finally:
                    buf.release()
        except (PyshmError, OSError):
            return None  # let the snapshot itself report what is wrong

    def _skip_unchanged(self, fingerprint: tuple[int, ...] | None, final: bool) -> bool:
        if (fingerprint is None or fingerprint != self._last_fingerprint
                or self.last_path is None or not os.path.exists(self.last_path)):
            return False
        self.skipped += 1
        if final:
            log.info("ring %s: final snapshot: unchanged since %s, which stays the latest",
                     self.ring.name, self.last_path)
        else:
            log.log(logging.INFO if self.skipped_streak == 0 else logging.DEBUG,
                    "ring %s: unchanged since %s; no new snapshot until it changes",
                    self.ring.name, self.last_path)
        self.skipped_streak += 1
        return True

    def take(self, final: bool = False) -> str | None:
        """Take one image now (through the engine process for a live replica); returns its
        path, or None when it failed or the source was unchanged.
        """
        from . import images

        with self._lock:
            fingerprint = self._fingerprint()
            if self._skip_unchanged(fingerprint, final):
                return None
            path = self.image_path()
            t0 = time.perf_counter()
            child = self.sup.engines.get(self.ring.name)
            reply = None
            if self.source != self.ring.name and child is not None and not final:
                # a replica being mirrored is only quiescent with its engine paused, and
                # only the engine's process can pause it
                reply = child.request(self.cfg.interval + 30.0, cmd="snapshot", path=path,
                                      compression=self.cfg.compress)
            error = None
            if reply is not None and reply.get("skipped"):
                # the engine died while copying; the next interval takes the next image
                log.warning("ring %s: snapshot skipped: %s", self.ring.name, reply["error"])
                return None
            if reply is not None:
                error = None if reply.get("ok") else str(reply.get("error"))
            else:
                # no engine running (stopped, or being restarted): the replica is still,
                # so it can be copied from here
                try:
                    images.snapshot(self.source, path, compression=self.cfg.compress)
                except (PyshmError, OSError) as exc:
                    error = str(exc)
            if error is not None:
                self.failures += 1
                self.last_error = error
                log.error("ring %s: snapshot of %s failed: %s", self.ring.name, self.source,
                          error)
                return None
            dt = time.perf_counter() - t0
            self.count += 1
            self._last_fingerprint = fingerprint
            self.skipped_streak = 0
            self.last_time, self.last_duration, self.last_path = time.time(), dt, path
            log.log(logging.INFO if final else logging.DEBUG,
                    "ring %s: %ssnapshot %s in %.3f s", self.ring.name,
                    "final " if final else "", path, dt)
            self.prune()
            if self.cfg.remote:
                self.upload(path)
            return path

    def upload(self, path: str) -> None:
        """Copy an image to the remote bucket (nats://) and keep its newest remote_keep;
        a failure is counted and logged, the local image stays."""
        from .bridge import objstore

        t = objstore.parse_url(self.cfg.remote or "", need_name=False)
        if self.sup.cfg.nats:
            opts = objstore.NatsOptions.from_mapping({**self.sup.cfg.nats,
                                                      "servers": t.options.servers})
            t = objstore.RemoteTarget(opts, t.bucket, t.name)
        prefix = t.name.rstrip("/") or os.path.basename(self.ring.name)
        base = os.path.basename(path)
        name = f"{prefix}-{time.time_ns():020d}-{base}"
        keep = self.cfg.remote_keep or self.cfg.keep
        try:
            from .images.format import ImageReader

            with ImageReader(path) as r:
                headers = objstore._summary(r.header)
            objstore.upload_file(path, objstore.RemoteTarget(t.options, t.bucket, name),
                                 headers=headers)
            names = [d["name"] for d in objstore.list_images_at(t, prefix + "-")]
            if len(names) > keep:
                objstore.delete_at(t, names[:len(names) - keep])
            self.remote_count += 1
        except (PyshmError, OSError) as exc:
            self.remote_failures += 1
            log.error("ring %s: upload of %s to %s failed: %s", self.ring.name, base,
                      objstore.redact(self.cfg.remote or ""), exc)

    def prune(self) -> None:
        """Delete this ring's oldest images beyond ``keep`` (never other files)."""
        base = os.path.basename(self.ring.name)
        # exactly this ring's names (image_path): a glob "md-*" would also match, and
        # delete, the images of a ring named "md-2" sharing the directory
        own = re.compile(re.escape(base) + r"-\d{8}T\d{6}-\d{9}" + re.escape(IMAGE_SUFFIX) + "$")
        files = sorted(os.path.join(self.cfg.directory, f)
                       for f in os.listdir(self.cfg.directory) if own.match(f))
        for old in files[: max(0, len(files) - self.cfg.keep)]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(old)
                log.debug("ring %s: removed old image %s", self.ring.name, old)

    def status(self) -> dict[str, Any]:
        """Counts, last image, last error: what the status file shows."""
        from .bridge.connect import redact

        return {"source": self.source, "directory": self.cfg.directory, "count": self.count,
                "failures": self.failures, "skipped_unchanged": self.skipped,
                "last_time": self.last_time,
                "last_duration_s": self.last_duration, "last_path": self.last_path,
                "last_error": self.last_error,
                "remote": redact(self.cfg.remote) if self.cfg.remote else None,
                "remote_count": self.remote_count, "remote_failures": self.remote_failures}


# ----------------------------------------------------------------------------------
# The supervisor


class BridgeChild:
    """One NATS bridge process (``python -m pyshm.bridge.child``): its spec, secrets
    included, goes in on stdin; its statistics come back as JSON lines. A bridge that
    dies is restarted (``bridge out`` resumes from its guard's slot, ``bridge in`` after
    the far ring's last record), within the supervisor's restart budget."""

    def __init__(self, sup: Supervisor, bc: Any):
        self.sup = sup
        self.bc = bc
        self.proc: subprocess.Popen[bytes] | None = None
        self.state = "starting"
        self.restarts = 0
        self.restart_times: collections.deque[float] = collections.deque()
        self.next_start = 0.0
        self.stats: dict[str, Any] = {}
        self.last_exit: int | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start (or restart) the bridge process."""
        spec = {"kind": self.bc.kind, "ring": self.bc.ring, "stream": self.bc.stream,
                "nats": self.bc.nats, "options": self.bc.options,
                "status_interval": self.sup.cfg.metrics.status_interval,
                "log_level": self.sup.log_level}
        self.proc = subprocess.Popen([sys.executable, "-m", "pyshm.bridge.child"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     cwd=self.sup.cfg.state_dir, close_fds=True)
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(spec) + "\n").encode())
            self.proc.stdin.close()
        except OSError:
            pass  # it died at once: check() sees it
        self.state = "running"
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True,
                         name=f"bridge-{self.bc.label}").start()
        log.info("bridge %s started (pid %d)", self.bc.label, self.proc.pid)

    def _read(self, stream: IO[bytes] | None) -> None:
        if stream is None:
            return
        for line in stream:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if isinstance(msg, dict) and isinstance(msg.get("stats"), dict):
                with self._lock:
                    self.stats = msg["stats"]
        stream.close()

    def check(self, now: float) -> None:
        """Restart a dead bridge after restart_delay, within the restart budget."""
        if self.state == "running" and self.proc is not None:
            rc = self.proc.poll()
            if rc is None:
                return
            self.last_exit = rc
            window = self.sup.cfg.supervisor.restart_window
            while self.restart_times and now - self.restart_times[0] > window:
                self.restart_times.popleft()
            if len(self.restart_times) >= self.sup.cfg.supervisor.max_restarts:
                self.state = "failed"
                log.error("bridge %s (pid %d) exited with %s; %d restarts in %.0f s, "
                          "giving up", self.bc.label, self.proc.pid, rc,
                          len(self.restart_times), window)
                return
            self.state = "restarting"
            self.next_start = now + self.sup.cfg.supervisor.restart_delay
            log.warning("bridge %s (pid %d) exited with %s; restarting", self.bc.label,
                        self.proc.pid, rc)
        if self.state == "restarting" and now >= self.next_start:
            self.restart_times.append(now)
            self.restarts += 1
            self.start()

    def stop(self, timeout: float) -> None:
        """SIGTERM (the bridge flushes what is in flight), SIGKILL after ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            self.state = "stopped"
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout + 10)
        except subprocess.TimeoutExpired:
            log.error("bridge %s (pid %d) did not stop in time; killing it", self.bc.label,
                      self.proc.pid)
            self.proc.kill()
            self.proc.wait(5)
        self.state = "stopped"

    def status(self) -> dict[str, Any]:
        """Statistics as `pyshm stats` shows them (no secret: servers are redacted)."""
        with self._lock:
            st = dict(self.stats)
        st.update(kind=self.bc.kind, ring=self.bc.ring, stream=self.bc.stream,
                  pid=self.proc.pid if self.proc else None, state=self.state,
                  restarts=self.restarts, last_exit=self.last_exit)
        return st


class Supervisor:
    """``pyshm run``: brings up what a :class:`~pyshm.config.Config` declares and keeps it
    running. :meth:`run` does it all (start, watch, stop on SIGINT/SIGTERM); from Python,
    :meth:`start`, :meth:`loop` and :meth:`shutdown` do the same in steps (see
    examples/supervisor.py)."""

    def __init__(self, cfg: Config, log_level: str | None = None):
        self.cfg = cfg
        self.log_level = log_level or cfg.log_level
        self.stopping = threading.Event()
        self.engines: dict[str, EngineChild] = {}
        self.bridges: list[BridgeChild] = []
        self.snapshots: dict[str, SnapshotSchedule] = {}
        self.rings: dict[str, Any] = {}
        self.started = time.time()
        self.metrics_server: Any = None
        self.metrics_url: str | None = None
        self.failed = False
        # segment name -> its lock (pyshm.lock), held while this supervisor runs: a second
        # `pyshm run` naming the same ring or replica is refused, and so is any other
        # engine on the replica
        self.locks: dict[str, Any] = {}
        self._created: list[str] = []  # paths this start created: removed if it fails
        self.states: list[Any] = []  # pyshm.state.supervise.StateService, per states: entry
        self.upgrade_requested = threading.Event()  # SIGHUP: hand state writers over

    # -- set-up ---------------------------------------------------------------------

    def _setup_logging(self) -> None:
        root = logging.getLogger("pyshm")
        if not root.handlers:
            h = logging.StreamHandler(sys.stderr)
            h.setFormatter(logging.Formatter(
                f"%(asctime)s pyshm run[{self.cfg.name}] %(levelname)s %(message)s"))
            root.addHandler(h)
        root.setLevel(self.log_level.upper())

    def _lock(self, name: str) -> None:
        from .lock import SegmentLock

        if name not in self.locks:
            self.locks[name] = SegmentLock.acquire(name, "supervisor")

    def _open_ring(self, rc: RingConfig) -> Any:
        from .repair import read_segment_info
        from .ring import Ring

        exists = os.path.exists(rc.path)
        if exists and rc.existing == "fail":
            raise ConfigError(f"{self.cfg.source}: ring {rc.name!r} already exists and "
                              f"existing: fail was asked")
        if exists:
            self._lock(rc.name)  # refused while another supervisor (or restore) has it
        if exists and rc.existing == "recreate":
            info = read_segment_info(rc.path)
            users = [u for u in (info.users if info else []) if "lock held" not in u]
            if users:
                raise PyshmError(f"ring {rc.name!r}: existing: recreate refused, the ring "
                                 f"is in use by {', '.join(users)}; stop them first")
            log.info("ring %s: exists, recreating it (existing: recreate)", rc.name)
            os.unlink(rc.path)
            self.locks.pop(rc.name).release()
            exists = False
        if exists:
            ring = Ring(rc.name)
            p = ring.params
            wrong = [f"{k} {getattr(p, a)} (config {v})" for k, a, v in (
                ("capacity", "capacity", rc.capacity), ("max_record", "max_record",
                                                        rc.max_record),
                ("partitions", "partition_count", rc.partitions),
                ("lossless", "lossless", rc.lossless)) if getattr(p, a) != v]
            if wrong:
                ring.close()
                raise ConfigError(f"{self.cfg.source}: ring {rc.name!r} exists with other "
                                  f"parameters: {', '.join(wrong)}; remove it or set "
                                  f"existing: recreate")
            log.info("ring %s: attached (tail %d, next sequence %d)", rc.name, ring.tail,
                     ring.next_sequence)
            return ring
        ring = Ring(rc.name, create=True, capacity=rc.capacity, max_record=rc.max_record,
                    partitions=rc.partitions, lossless=rc.lossless,
                    ephemeral=rc.unlink_on_exit)
        self._created.append(ring.path)
        self._lock(rc.name)
        log.info("ring %s: created (%d bytes, max record %d, %d partitions, %s)", rc.name,
                 rc.capacity, rc.max_record, rc.partitions,
                 "lossless" if rc.lossless else "overwrite")
        return ring

    def _open_replica(self, rc: RingConfig, ring: Any) -> None:
        from .replica import Replica
        from .segment import resolve_path

        assert rc.replica is not None
        if os.path.exists(resolve_path(rc.replica.name)):
            self._lock(rc.replica.name)  # refused while another engine writes it
        rep = Replica.create(rc.replica.name, ring, exist_ok=True,
                             ephemeral=rc.unlink_on_exit)
        if rc.replica.name not in self.locks:
            self._created.append(rep.path)
            self._lock(rc.replica.name)
        log.info("ring %s: replica %s ready (tail %d)", rc.name, rep.name, rep.tail)
        rep.close()

    def start(self) -> None:
        """Create or attach every ring and replica, start engines, schedules and metrics."""
        self._setup_logging()
        os.makedirs(self.cfg.state_dir, mode=0o700, exist_ok=True)
        log.info("starting from %s (pid %d)", self.cfg.source, os.getpid())
        try:
            for rc in self.cfg.rings:
                ring = self._open_ring(rc)
                self.rings[rc.name] = ring
                if rc.replica is not None:
                    self._open_replica(rc, ring)
                    self.engines[rc.name] = EngineChild(self, rc)
                if rc.snapshots is not None:
                    self.snapshots[rc.name] = SnapshotSchedule(self, rc)
            if self.cfg.states:
                from .state.supervise import StateService

                for sc in self.cfg.states:
                    svc = StateService(self, sc)
                    svc.prepare()
                    self.states.append(svc)
        except BaseException:
            # a failed start leaves nothing it made behind, and holds nothing
            for ring in self.rings.values():
                ring.close()
            self.rings.clear()
            for path in self._created:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                    log.info("removed %s (created by this failed start)", path)
            self._created.clear()
            self._release_locks()
            raise
        for child in self.engines.values():
            child.start()
        for bc in self.cfg.bridges:
            self.bridges.append(BridgeChild(self, bc))
            self.bridges[-1].start()
        for sched in self.snapshots.values():
            sched.start()
        for svc in self.states:
            svc.start()
        if self.cfg.metrics.listen:
            from .stats import serve_metrics

            names = [r.name for r in self.cfg.rings] + [
                r.replica.name for r in self.cfg.rings if r.replica]
            self.metrics_server = serve_metrics(self.cfg.metrics.listen, names,
                                                self.cfg.state_dir)
            host, port = self.metrics_server.server_address[:2]
            self.metrics_url = f"http://{host}:{port}/metrics"
            log.info("metrics on %s", self.metrics_url)
        self.write_status()

    # -- running ----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The whole run's status: what ``STATE_DIR/NAME.status.json`` holds."""
        rings: dict[str, Any] = {}
        for rc in self.cfg.rings:
            entry: dict[str, Any] = {"replica": rc.replica.name if rc.replica else None}
            if rc.name in self.engines:
                entry["engine"] = self.engines[rc.name].status()
            if rc.name in self.snapshots:
                entry["snapshots"] = self.snapshots[rc.name].status()
            rings[rc.name] = entry
        for b in self.bridges:
            rings.setdefault(b.bc.ring, {}).setdefault("bridges", []).append(b.status())
        out = {"run": self.cfg.name, "pid": os.getpid(), "config": self.cfg.source,
               "started": self.started, "updated": time.time(),
               "state": "stopping" if self.stopping.is_set() else "running",
               "metrics": self.metrics_url, "rings": rings}
        if self.states:
            out["states"] = {svc.sc.name: svc.status() for svc in self.states}
        return out

    def write_status(self) -> None:
        """Replace the status file atomically."""
        try:
            _atomic_write_json(self.cfg.status_path, self.status())
        except OSError as exc:
            log.warning("cannot write %s: %s", self.cfg.status_path, exc)

    def request_stop(self, signum: int | None = None, _frame: Any = None) -> None:
        """Ask :meth:`loop` to return (also the SIGINT/SIGTERM handler)."""
        if signum is not None and not self.stopping.is_set():
            log.info("received %s: stopping", signal.Signals(signum).name)
        self.stopping.set()

    def loop(self, until: float | None = None) -> None:
        """Watch the children until a stop is requested (or ``until``, a monotonic time)."""
        sc = self.cfg.supervisor
        next_status = 0.0
        while not self.stopping.is_set():
            now = time.monotonic()
            if until is not None and now >= until:
                break
            for child in self.engines.values():
                child.check(now)
                if child.state == "failed":
                    self.failed = True
            for bridge in self.bridges:
                bridge.check(now)
                if bridge.state == "failed":
                    self.failed = True
            if self.states:
                self._check_states(now)
            if self.failed:
                log.error("an engine could not be kept running; stopping")
                break
            if now >= next_status:
                self.write_status()
                next_status = now + self.cfg.metrics.status_interval
            self.stopping.wait(sc.check_interval)

    def _check_states(self, now: float) -> None:
        """State writers: handover requests (SIGHUP, ``pyshm handover --run``) and
        restarts of dead writers (which recover their region)."""
        from .state.supervise import request_file, take_requests

        asked = take_requests(request_file(self.cfg.state_dir, self.cfg.name))
        if self.upgrade_requested.is_set():
            self.upgrade_requested.clear()
            asked += [svc.sc.name for svc in self.states]
        for svc in self.states:
            if svc.sc.name in asked:
                log.info("state %s: upgrade asked: %s", svc.sc.name, svc.sc.upgrade)
                svc.upgrade()
            svc.check(now)
            if svc.state == "failed":
                self.failed = True

    def shutdown(self) -> None:
        """Stop engines (final sync), take final snapshots, unlink ``unlink_on_exit`` rings,
        remove the status file.
        """
        self.stopping.set()
        timeout = self.cfg.supervisor.shutdown_timeout
        for svc in self.states:  # writers first: the rings they read stay up meanwhile
            svc.stop(timeout)
        for bridge in self.bridges:
            bridge.stop(timeout)
        for child in self.engines.values():
            child.stop(timeout)
        for sched in self.snapshots.values():
            if sched.thread is not None:
                sched.thread.join(timeout)
            if sched.cfg.on_shutdown:
                sched.take(final=True)
        self.write_status()
        from .segment import resolve_path

        for rc in self.cfg.rings:
            ring = self.rings.pop(rc.name, None)
            if ring is not None:
                ring.close()
            if rc.unlink_on_exit:
                for n in [rc.name] + ([rc.replica.name] if rc.replica else []):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(resolve_path(n))
                log.info("ring %s: unlinked (unlink_on_exit)", rc.name)
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
        self._release_locks()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.cfg.status_path)
        log.info("stopped")

    def _release_locks(self) -> None:
        for lock in self.locks.values():
            lock.release()
        self.locks.clear()

    def run(self) -> int:
        """Start, watch until SIGINT/SIGTERM, shut down. Returns the exit status."""
        old = {s: signal.signal(s, self.request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        old[signal.SIGHUP] = signal.signal(signal.SIGHUP,
                                           lambda *_: self.upgrade_requested.set())
        try:
            try:
                self.start()
            except BaseException:
                self.shutdown()
                raise
            try:
                self.loop()
            finally:
                self.shutdown()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        return 1 if self.failed else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the engine processes (``python -m pyshm.supervisor engine SPEC``)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "engine":
        try:
            return engine_child_main(argv[1])
        except (PyshmError, EngineError) as exc:
            print(f"pyshm engine: error: {exc}", file=sys.stderr)
            return 1
    print("usage: python -m pyshm.supervisor engine SPEC (started by pyshm run)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
