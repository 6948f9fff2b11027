"""Replicas of state regions, and the CPU engine that mirrors rows into them.

A state replica has the region's own layout with the replica flag set, so it is itself a
region readers can attach to (read-only) and image; its ``applied_seq`` is the sequence
it is consistent at: every replica row is exactly the source's row as of the source's
commit of that sequence. ``identity.source_id`` names the region it mirrors.

The CPU engine (:class:`CpuStateEngine`, C thread in ``_core/state_mirror.c``) runs
rounds: fix a cut of the source (the copy-on-write protocol snapshots use, so the source
writer waits at most one chunk copy), then copy the rows whose version differs from the
replica's, with their versions, skipping the chunks not written since the previous
round, inside one replica transaction committed at the cut's sequence.

Why a different path for hardware (see docs/state.md, "Replication"): the ring-mirror IP
copies byte ranges of a ring and takes no part in the cut's compare-and-swap protocol,
so a state region reaches an FPGA-mirrored replica as a journal of its transactions in
an ordinary ring, which the IP carries unchanged (:mod:`pyshm.state.journal`).
"""

from __future__ import annotations

import os
from typing import Any

from ..engine import DEFAULT_TIMEOUT, Engine, EngineStats
from ..errors import ClosedError, EngineError, EngineTimeoutError, InvalidParameterError
from . import layout as SL
from ._state_c import ffi, lib
from .errors import StateMismatchError, WriterBusyError
from .region import State

__all__ = ["create_replica", "open_replica", "CpuStateEngine", "open_state_engine"]

_STATES = {0: "created", 1: "running", 2: "paused", 3: "stopped", 4: "failed"}


def create_replica(target: str | os.PathLike[str], source: State | str | os.PathLike[str],
                   *, exist_ok: bool = True, mode: int = 0o600) -> State:
    """A replica of region ``source`` at ``target`` (same dtype and rows, replica flag).

    With ``exist_ok`` an existing replica of the same dtype and rows is reused, so a new
    engine resumes from what it holds; anything else there is refused."""
    src = source if isinstance(source, State) else State(source, readonly=True)
    try:
        if os.path.exists(_path(target)):
            if not exist_ok:
                raise InvalidParameterError(f"state replica {os.fspath(target)!r} already "
                                            f"exists")
            rep = State(target)
            try:
                _check_pair(src, rep)
            except BaseException:
                rep.close()
                raise
            return rep
        return State(target, create=True, dtype=src.dtype, rows=src.rows, mode=mode,
                     chunk_rows=src.params.chunk_rows, _replica_of=src)
    finally:
        if src is not source:
            src.close()


def open_replica(target: str | os.PathLike[str], **kw: Any) -> State:
    """Attach to a state replica (read-only by default: for readers)."""
    kw.setdefault("readonly", True)
    rep = State(target, **kw)
    if not rep.is_replica:
        rep.close()
        raise InvalidParameterError(f"{os.fspath(target)!r} is a state region, not a replica")
    return rep


def _path(name: str | os.PathLike[str]) -> str:
    from ..segment import resolve_path
    return resolve_path(name)


def _check_pair(src: State, rep: State) -> None:
    if not rep.is_replica:
        raise InvalidParameterError(f"{rep.name!r} is a state region, not a replica (its "
                                    f"replica flag is clear)")
    if src.is_replica:
        raise InvalidParameterError(f"{src.name!r} is itself a replica; mirror the region")
    if rep.description != src.description or rep.rows != src.rows:
        raise StateMismatchError(f"replica {rep.name!r} holds {rep.rows} rows of {rep.dtype}, "
                                 f"region {src.name!r} {src.rows} rows of {src.dtype}")


class CpuStateEngine(Engine):
    """Mirror a state region into a state replica with a C thread (see module doc).

    ``max_sleep``: the idle poll's back-off ceiling in seconds. The engine holds the
    replica's writer role while it lives. ``mirrored`` is the sequence the replica is
    consistent at (None before the first round)."""

    name = "cpu"

    def __init__(self, source: Any, replica: Any, *, max_sleep: float = 50e-6):
        self._m: Any = None
        self._own: list[State] = []
        self.source = source if isinstance(source, State) else self._keep(State(source))
        self.replica = replica if isinstance(replica, State) else self._keep(State(replica))
        try:
            if self.source.readonly or self.replica.readonly:
                raise InvalidParameterError("the state engine needs the region and the "
                                            "replica writable (cuts write the region's "
                                            "chunk flags)")
            _check_pair(self.source, self.replica)
            try:
                self.replica._claim_writer()
            except WriterBusyError as exc:
                raise EngineError(f"state replica {self.replica.name!r} is already "
                                  f"mirrored: {exc}") from None
            self._claimed = True
            if self.replica.epoch & 1:
                # a mirror died inside a round: adopt its transaction; the first round
                # is then a full resync that closes it
                lib.pyshm_state_reset_dead_writer(self.replica._c)
            # private core structs: the engine's thread must not share a State's
            self._src_c = ffi.new("pyshm_state_t *")
            self._rep_c = ffi.new("pyshm_state_t *")
            for c, st in ((self._src_c, self.source), (self._rep_c, self.replica)):
                p = st.params
                rc = lib.pyshm_state_open(c, st._ptr, st.segment.size, p.row_count,
                                          p.itemsize, p.desc_length, p.chunk_rows)
                if rc:
                    raise EngineError(f"state engine: cannot open {st.name!r} (code {rc})")
            self._rep_c.in_tx = self.replica._c.in_tx
            self._rep_c.epoch = self.replica._c.epoch
            out = ffi.new("pyshm_mirror_t **")
            rc = lib.pyshm_mirror_create(self._src_c, self._rep_c, os.getpid(),
                                         max(1000, int(max_sleep * 1e9)), out)
            if rc:
                raise EngineError(f"state engine: cannot mirror {self.source.name!r} into "
                                  f"{self.replica.name!r} (code {rc})")
            self._m = out[0]
            self._stats = ffi.new("pyshm_mirror_stats_t *")
        except BaseException:
            self._release()
            raise

    def _keep(self, st: State) -> State:
        self._own.append(st)
        return st

    def _check(self, rc: int, what: str) -> None:
        if rc == 0:
            return
        where = f"state engine {what} ({self.source.name} -> {self.replica.name})"
        if rc == lib.PYSHM_MIRROR_E_TIMEOUT:
            raise EngineTimeoutError(f"{where}: timed out")
        if rc == lib.PYSHM_MIRROR_E_STATE:
            raise EngineError(f"{where}: not valid in state {self.state}")
        raise EngineError(f"{where}: failed (code {rc})")

    def _live(self) -> Any:
        if self._m is None:
            raise ClosedError("the state engine is closed")
        return self._m

    @staticmethod
    def _ns(timeout: float) -> int:
        if timeout < 0:
            raise InvalidParameterError(f"timeout {timeout} must be >= 0")
        return int(min(timeout, 1e9) * 1e9)

    def start(self) -> None:
        """Start the mirror thread (a first round copies what changed, or everything)."""
        self._check(lib.pyshm_mirror_start(self._live()), "start")

    def stop(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Finish the round in progress and stop. Idempotent."""
        if self._m is not None:
            self._check(lib.pyshm_mirror_stop(self._m, self._ns(timeout)), "stop")

    def pause(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Stop after the current round (the replica stays consistent)."""
        self._check(lib.pyshm_mirror_pause(self._live(), self._ns(timeout)), "pause")

    def resume(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Continue after :meth:`pause`."""
        self._check(lib.pyshm_mirror_resume(self._live(), self._ns(timeout)), "resume")

    def sync(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until the replica holds every commit made before the call (rounds run
        here when the thread is not running)."""
        self._check(lib.pyshm_mirror_sync(self._live(), self._ns(timeout)), "sync")

    def round(self) -> bool:
        """One round now, in this thread (the engine must not be running): True if it
        copied (or checked) something, False if nothing had changed or it was busy."""
        rc = int(lib.pyshm_mirror_round(self._live()))
        if rc < 0:
            self._check(rc, "round")
        return rc == 2

    def _read(self) -> Any:
        lib.pyshm_mirror_stats(self._live(), self._stats)
        return self._stats

    @property
    def state(self) -> str:
        """created, running, paused, stopped or failed."""
        return _STATES.get(int(self._read().state), "?")

    @property
    def mirrored(self) -> int:
        """The sequence the replica is consistent at (-1: nothing applied yet)."""
        seq = int(self._read().consistent_seq)
        return -1 if seq == SL.NO_SEQUENCE else seq

    @property
    def consistent_seq(self) -> int | None:
        """The sequence every replica row reflects exactly (None: none applied)."""
        seq = int(self._read().consistent_seq)
        return None if seq == SL.NO_SEQUENCE else seq

    def stats(self) -> EngineStats:
        """Counters: rounds, rows and bytes copied, full resyncs, lag of the last round."""
        s = self._read()
        return EngineStats(
            engine="cpu-state", state=_STATES.get(int(s.state), "?"),
            mirrored=self.mirrored, bytes_mirrored=int(s.bytes_copied),
            records_mirrored=int(s.rows_copied), copies=int(s.rounds),
            errors=1 if s.last_error else 0,
            last_error=f"code {int(s.last_error)}" if s.last_error else "",
            lag_ns=int(s.lag_ns), lag_max_ns=int(s.max_round_ns),
            elapsed_ns=int(s.elapsed_ns),
            utilisation=int(s.busy_ns) / int(s.elapsed_ns) if s.elapsed_ns else 0.0,
            extra={"full_resyncs": int(s.full_resyncs),
                   "chunks_scanned": int(s.chunks_scanned),
                   "busy_retries": int(s.busy_retries),
                   "last_round_ns": int(s.last_round_ns),
                   "consistent_seq": self.consistent_seq})

    def _release(self) -> None:
        if getattr(self, "_claimed", False):
            self.replica._cas("W_PID", os.getpid(), 0)
            self._claimed = False
        for st in self._own:
            st.close()
        self._own.clear()

    def close(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Stop, free the C state and give up the replica's writer role."""
        if self._m is not None:
            self.stop(timeout)
            self._check(lib.pyshm_mirror_destroy(self._m), "close")
            self._m = None
        self._release()

    def __del__(self) -> None:
        if getattr(self, "_m", None) is not None:
            try:
                self.close()
            except Exception:
                pass


def open_state_engine(name: str, source: Any, replica: Any, **options: Any) -> Engine:
    """The engine that mirrors a state region: ``cpu`` (or ``auto``) is the row mirror
    above; the hardware engines carry state regions as a journal ring instead
    (:mod:`pyshm.state.journal`)."""
    if name in ("cpu", "auto"):
        return CpuStateEngine(source, replica, **options)
    raise InvalidParameterError(f"state engine {name!r}: state regions are mirrored by the "
                                f"cpu engine; for pynq/sim, journal the region into a ring "
                                f"(pyshm.state.journal) and mirror that ring")
