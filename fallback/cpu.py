"""CpuEngine: the engine interface over the C memcpy threads of fallback/engine.c."""

from __future__ import annotations

import os
from typing import Any

from ..engine import (
    DEFAULT_TIMEOUT,
    Copier,
    CopyChecksumError,
    CopyChunk,
    Engine,
    EngineStats,
    claim_replica,
    wait_strategy,
)
from ..errors import (
    ClosedError,
    CorruptSegmentError,
    EngineError,
    EngineTimeoutError,
    InvalidParameterError,
)
from ..replica import FlushPolicy, Replica
from ..segment import Segment

try:
    from ._engine_c import ffi, lib  # type: ignore[import-not-found,unused-ignore]
except ImportError as _exc:  # pragma: no cover - built at install time
    ffi = lib = None
    _IMPORT_ERROR: Exception | None = _exc
else:
    _IMPORT_ERROR = None

# the poll thread's idle strategies (engine.h PYSHM_ENGINE_WAIT_*), by their ring names
WAIT_STRATEGIES = {"spin": 0, "yield": 1, "sleep": 2, "block": 3}
_STATES = {0: "created", 1: "running", 2: "paused", 3: "stopped", 4: "failed"}


def _segment(obj: Any, what: str) -> tuple[Segment, bool]:
    """(segment, owned) for a Ring/Replica/Segment/name."""
    if isinstance(obj, Segment):
        return obj, False
    seg = getattr(obj, "segment", None)
    if isinstance(seg, Segment):
        return seg, False
    if isinstance(obj, (str, os.PathLike)):
        return Segment(obj), True
    raise InvalidParameterError(f"{what}: expected a Ring, Replica, Segment or name, got "
                                f"{type(obj).__name__}")


def _ns(timeout: float) -> int:
    if timeout < 0:
        raise InvalidParameterError(f"timeout {timeout} must be >= 0")
    return int(min(timeout, 1e9) * 1e9)


class CpuCopier(Copier):
    """Copy mode of the CPU engine: ``threads`` threads (the caller's included) share the
    chunks, cut into 4 MiB pieces; copies use the fused copy+CRC loop."""

    name = "cpu"

    def __init__(self, threads: int | None = None):
        if lib is None:
            raise EngineError(f"the CPU engine's C extension is missing: {_IMPORT_ERROR}")
        if threads is None:
            threads = min(4, os.cpu_count() or 1)
        if not 1 <= threads <= 17:
            raise InvalidParameterError(f"copy threads={threads}: use 1..17")
        self.threads = threads

    def _run(self, source: Any, target: Any, capacity: int, chunks: list[CopyChunk]) -> None:
        src = memoryview(source).cast("B")
        table = ffi.new("pyshm_copy_chunk_t[]", max(1, len(chunks)))
        for i, c in enumerate(chunks):
            table[i].src_off = c.source_offset
            table[i].position = c.position
            table[i].len = c.length
            table[i].crc = c.crc
        bad = ffi.new("uint64_t *")
        src_p = ffi.from_buffer(src)
        dst_p = ffi.NULL if target is None else ffi.from_buffer(target, require_writable=True)
        try:
            rc = lib.pyshm_copy_chunks(src_p, len(src), dst_p, capacity, table, len(chunks),
                                       self.threads, bad)
        finally:
            ffi.release(src_p)
            if target is not None:
                ffi.release(dst_p)
        if rc == lib.PYSHM_ECHECKSUM:
            i = int(bad[0])
            raise CopyChecksumError(f"chunk {i} of {len(chunks)}: checksum mismatch", i)
        if rc != 0:
            msg = ffi.string(lib.pyshm_engine_strerror(rc)).decode()
            raise InvalidParameterError(f"cpu engine copy: {msg} (code {rc})")

    def verify(self, source: Any, chunks: list[CopyChunk]) -> None:
        self._run(source, None, 0, chunks)

    def copy(self, source: Any, target: Any, capacity: int, chunks: list[CopyChunk]) -> None:
        if len(memoryview(target).cast("B")) < capacity:
            raise InvalidParameterError(f"copy target is smaller than its capacity {capacity}")
        self._run(source, target, capacity, chunks)


class CpuEngine(Engine):
    """Mirror a ring into a replica with C threads (one poll thread + ``threads`` workers).

    Options: ``threads`` (copy workers, 0-16), ``split_bytes`` (backlog size from which
    the workers share a copy), ``wait`` (when idle: ``spin``; ``yield`` = spin
    ``spin_count`` polls, then sched_yield; ``sleep`` = spin, then nanosleep doubling up to
    ``max_sleep`` seconds, the default; ``block`` = spin, then sleep until the producer's
    next commit wakes it, the ring's wake-up protocol), ``spin_count``, ``gate`` (hold a
    lossless producer back at ``mirrored``), ``keep_gate`` (leave the gate set after
    stop), ``count_records``,
    ``poll_cpu`` / ``copy_cpus`` (pinning), ``poll_priority`` (1..99: the poll thread
    runs SCHED_FIFO at that priority, so ordinary work never preempts it; needs
    CAP_SYS_NICE), ``flush`` (a FlushPolicy or its spec; the
    replica's own policy by default).
    """

    name = "cpu"

    @classmethod
    def copier(cls, threads: int | None = None, **_: Any) -> Copier | None:
        """Copy mode: :class:`CpuCopier` (restore through the engine's threads)."""
        if lib is None:
            return None
        return CpuCopier(threads)

    @classmethod
    def available(cls) -> tuple[bool, str]:
        if lib is None:
            return False, f"C extension not built ({_IMPORT_ERROR})"
        return True, f"CPU memcpy threads ({os.cpu_count()} CPUs)"

    def __init__(self, ring: Any, replica: Any, *, threads: int = 0,
                 split_bytes: int = 1 << 20, wait: str = "sleep", spin_count: int = 2000,
                 max_sleep: float = 50e-6, gate: bool = False, keep_gate: bool = False,
                 count_records: bool = True, poll_cpu: int | None = None,
                 poll_priority: int = 0,
                 copy_cpus: list[int] | None = None,
                 flush: str | FlushPolicy | None = None, writer_lock: Any = None):
        if lib is None:
            raise EngineError(f"the CPU engine's C extension is missing: {_IMPORT_ERROR}")
        wait = wait_strategy(wait)
        if not 0 <= threads <= 16:
            raise InvalidParameterError(f"threads={threads}: use 0..16 copy threads")
        if split_bytes < 4096:
            raise InvalidParameterError(f"split_bytes={split_bytes}: must be >= 4096")
        cpus = os.cpu_count() or 1
        for c in ([poll_cpu] if poll_cpu is not None else []) + list(copy_cpus or []):
            if not 0 <= c < cpus:
                raise InvalidParameterError(f"CPU {c} does not exist (0..{cpus - 1})")
        if copy_cpus is not None and len(copy_cpus) > threads:
            raise InvalidParameterError(f"{len(copy_cpus)} copy CPUs for {threads} threads")
        self._e: Any = None
        self._owned: list[Segment] = []
        self._ring_seg, own = _segment(ring, "ring")
        if own:
            self._owned.append(self._ring_seg)
        if isinstance(replica, (str, os.PathLike)):
            replica = Replica.open(replica, prefault=True)
            self._owned.append(replica.segment)
        self._rep_seg, own = _segment(replica, "replica")
        if own:
            self._owned.append(self._rep_seg)
        if flush is None and isinstance(replica, Replica):
            policy = replica.flush
        else:
            policy = FlushPolicy.parse(flush)
        if self._ring_seg.readonly or self._rep_seg.readonly:
            raise InvalidParameterError("the engine needs the ring and the replica writable")

        cfg = ffi.new("pyshm_engine_config_t *")
        lib.pyshm_engine_default_config(cfg)
        cfg.threads = threads
        cfg.split_bytes = split_bytes
        cfg.wait = WAIT_STRATEGIES[wait]
        cfg.spin_count = spin_count
        cfg.max_sleep_ns = max(1000, int(max_sleep * 1e9))
        cfg.gate = int(gate)
        cfg.keep_gate = int(keep_gate)
        cfg.count_records = int(count_records)
        cfg.poll_cpu = -1 if poll_cpu is None else poll_cpu
        if not 0 <= poll_priority <= 99:
            raise InvalidParameterError(f"poll_priority={poll_priority}: 0 (ordinary "
                                        f"scheduling) or a SCHED_FIFO priority 1..99")
        cfg.poll_priority = poll_priority
        for i, c in enumerate(copy_cpus or []):
            cfg.copy_cpus[i] = c
        cfg.flush_bytes = policy.flush_bytes
        cfg.flush_interval_ns = policy.interval_ns
        # keep the buffers exported for the engine's lifetime: a closed mapping under a
        # running C thread would be a crash, and an exported mmap refuses to close
        self._ring_buf = ffi.from_buffer(self._ring_seg.mmap)
        self._rep_buf = ffi.from_buffer(self._rep_seg.mmap)
        # one writer per replica (pyshm.lock): held until close(), or process exit
        self._writer = claim_replica(self._rep_seg, writer_lock)
        out = ffi.new("pyshm_engine_t **")
        rc = lib.pyshm_engine_create(self._ring_buf, self._ring_seg.size, self._rep_buf,
                                     self._rep_seg.size, cfg, out)
        if rc != 0:
            self._writer.release()
        self._check(rc, "create")
        self._e = out[0]
        self._stats = ffi.new("pyshm_engine_stats_t *")
        self.options = {"threads": threads, "wait": wait, "gate": gate,
                        "flush": policy.kind}

    def _check(self, rc: int, what: str) -> None:
        if rc == 0:
            return
        for seg in (self._ring_seg, self._rep_seg):
            seg.check_intact()  # a file truncated under the engine (pyshm.guard)
        msg = ffi.string(lib.pyshm_engine_strerror(rc)).decode()
        where = f"cpu engine {what} ({self._ring_seg.name} -> {self._rep_seg.name})"
        if rc == lib.PYSHM_ETIMEDOUT:
            raise EngineTimeoutError(f"{where}: {msg}")
        if rc in (lib.PYSHM_EBADRING, lib.PYSHM_EBADREPLICA, lib.PYSHM_ETOOSMALL,
                  lib.PYSHM_EBADTABLE):
            raise CorruptSegmentError(f"{where}: {msg}")
        if rc in (lib.PYSHM_EINVAL, lib.PYSHM_EMISMATCH, lib.PYSHM_ENOTLOSSLESS,
                  lib.PYSHM_EPRIORITY):
            raise InvalidParameterError(f"{where}: {msg}")
        if rc == lib.PYSHM_EFAILED:
            self._read_stats()
            err = self._stats.last_error
            msg += f": {ffi.string(lib.pyshm_engine_strerror(err)).decode()}"
        raise EngineError(f"{where}: {msg} (code {rc})")

    def _live(self) -> Any:
        if self._e is None:
            raise ClosedError("the cpu engine is closed")
        return self._e

    def start(self) -> None:
        self._check(lib.pyshm_engine_start(self._live()), "start")

    def stop(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        if self._e is not None:
            self._check(lib.pyshm_engine_stop(self._e, _ns(timeout)), "stop")

    def pause(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._check(lib.pyshm_engine_pause(self._live(), _ns(timeout)), "pause")

    def resume(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._check(lib.pyshm_engine_resume(self._live(), _ns(timeout)), "resume")

    def sync(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._check(lib.pyshm_engine_sync(self._live(), _ns(timeout)), "sync")

    def _read_stats(self) -> Any:
        lib.pyshm_engine_stats(self._live(), self._stats)
        return self._stats

    @property
    def mirrored(self) -> int:
        return int(self._read_stats().mirrored)

    @property
    def state(self) -> str:
        """``created``, ``running``, ``paused``, ``stopped`` or ``failed``, as the C engine
        reports it.
        """
        return _STATES.get(self._read_stats().state, "?")

    def thread_ids(self) -> list[int]:
        """Kernel thread ids of the poll thread and the workers (for pinning checks)."""
        s = self._read_stats()
        return [s.poll_tid] + [s.worker_tids[i] for i in range(s.threads)]

    def stats(self) -> EngineStats:
        s = self._read_stats()
        elapsed = int(s.elapsed_ns)
        busy = int(s.poll_busy_ns) + int(s.copy_busy_ns)
        util = busy / (elapsed * (1 + s.threads)) if elapsed else 0.0
        tail = int(s.tail)
        mirrored = int(s.mirrored)
        last = ffi.string(lib.pyshm_engine_strerror(s.last_error)).decode() \
            if s.last_error else ""
        return EngineStats(
            engine=self.name, state=_STATES.get(s.state, "?"), mirrored=mirrored,
            tail=tail, start_position=int(s.start_position),
            bytes_mirrored=int(s.bytes_mirrored), records_mirrored=int(s.records_mirrored),
            copies=int(s.copies), overruns=int(s.overruns), bytes_lost=int(s.bytes_lost),
            errors=int(s.errors), last_error=last, lag_bytes=max(0, tail - mirrored),
            lag_ns=int(s.lag_ns), lag_p50_ns=int(s.lag_p50_ns), lag_p99_ns=int(s.lag_p99_ns),
            lag_p999_ns=int(s.lag_p999_ns), lag_max_ns=int(s.lag_max_ns),
            lag_samples=int(s.lag_samples), e2e_lag_p50_ns=int(s.e2e_p50_ns),
            e2e_lag_p99_ns=int(s.e2e_p99_ns), e2e_lag_p999_ns=int(s.e2e_p999_ns),
            e2e_lag_max_ns=int(s.e2e_max_ns), e2e_lag_samples=int(s.e2e_samples),
            elapsed_ns=elapsed, utilisation=util,
            extra={"split_copies": int(s.split_copies), "flushes": int(s.flushes),
                   "last_copy_bytes": int(s.last_copy_bytes),
                   "last_copy_ns": int(s.last_copy_ns),
                   "poll_busy_ns": int(s.poll_busy_ns), "copy_busy_ns": int(s.copy_busy_ns),
                   "threads": int(s.threads), "crc_table": bool(s.crc_table),
                   "crc_block": int(s.crc_block), "crc_blocks": int(s.crc_blocks),
                   "crc_valid_from": int(s.crc_valid_from),
                   "e2e_after_sleep": int(s.e2e_after_sleep),
                   "poll_stalls": int(s.poll_stalls),
                   "poll_stall_ns": int(s.poll_stall_ns)})

    def close(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        if self._e is None:
            return
        self.stop(timeout)
        rc = lib.pyshm_engine_destroy(self._e)
        self._check(rc, "close")
        self._e = None
        self._writer.release()
        self._ring_buf = self._rep_buf = None
        for seg in self._owned:
            seg.close()
        self._owned.clear()

    def __del__(self) -> None:
        # a forgotten engine must not leave C threads running into unmapped memory
        if getattr(self, "_e", None) is not None:
            try:
                self.close()
            except Exception:
                pass
