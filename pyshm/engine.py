"""The replication engine interface: one API, several implementations chosen by name.

An engine mirrors every committed byte of a ring into a replica (see pyshm.replica) and
publishes how far it got in the ring's ``mirrored`` word and the replica's ``tail``.
Implementations: ``cpu`` (C memcpy threads, pyshm.fallback.cpu), ``pynq`` (the FPGA
ring-mirror IP) and ``sim`` (that RTL in a simulator), both in pyshm.driver.

    from pyshm.engine import open_engine
    with open_engine("auto", ring, replica, threads=2) as eng:
        eng.start()
        ...
        eng.sync(timeout=1.0)
        print(eng.stats())

Every blocking call takes a timeout and raises :class:`EngineTimeoutError` when it runs
out; none can hang on hardware that does not answer.
"""

from __future__ import annotations

import abc
import importlib
import logging
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from . import layout as L
from .errors import EngineError, InvalidParameterError

log = logging.getLogger("pyshm.engine")

DEFAULT_TIMEOUT = 5.0

# What an engine's poll loop does while the ring is idle: the ring's wait-strategy names.
# ``spin`` polls (lowest lag, one core busy); ``yield`` spins a while, then calls
# sched_yield; ``sleep`` spins a while, then sleeps with a doubling back-off (default);
# ``block`` spins a while, then sleeps until the producer's next commit wakes it (the
# ring's wake-up protocol: no CPU at all while idle).
WAIT_STRATEGIES = ("spin", "yield", "sleep", "block")
DEFAULT_WAIT = "sleep"
# names of earlier releases, still accepted but not advertised
WAIT_ALIASES = {"spin-yield": "yield", "backoff": "sleep"}


def wait_strategy(name: object) -> str:
    """The canonical name of an engine wait strategy (aliases mapped); anything else is
    refused with :class:`InvalidParameterError`."""
    canon = WAIT_ALIASES.get(name, name) if isinstance(name, str) else name
    if canon not in WAIT_STRATEGIES:
        raise InvalidParameterError(f"engine wait strategy {name!r}: use one of "
                                    f"{', '.join(WAIT_STRATEGIES)}")
    return str(canon)


@dataclass(frozen=True)
class EngineStats:
    """A consistent-enough snapshot of an engine's counters (each field read atomically)."""

    engine: str
    state: str
    mirrored: int = 0
    tail: int = 0
    start_position: int = 0
    bytes_mirrored: int = 0
    records_mirrored: int = 0
    copies: int = 0
    overruns: int = 0
    bytes_lost: int = 0
    errors: int = 0
    last_error: str = ""
    lag_bytes: int = 0
    lag_ns: int = 0
    # engine-internal lag: from the engine seeing a new tail to publishing it
    lag_p50_ns: int = 0
    lag_p99_ns: int = 0
    lag_p999_ns: int = 0
    lag_max_ns: int = 0
    lag_samples: int = 0
    # end-to-end lag, the headline figure: from the producer's commit of a record to a
    # replica tail covering it being published (sampled by the producer's lag probes;
    # 0 samples for an engine or a producer that does not take part)
    e2e_lag_p50_ns: int = 0
    e2e_lag_p99_ns: int = 0
    e2e_lag_p999_ns: int = 0
    e2e_lag_max_ns: int = 0
    e2e_lag_samples: int = 0
    elapsed_ns: int = 0
    utilisation: float = 0.0
    """Fraction of elapsed time the engine spent copying (poll thread + workers, each
    counted against its own time: 1.0 means every thread busy all the time)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Every field as plain data (for JSON)."""
        return asdict(self)

    def line(self) -> str:
        """One status line for a terminal, end-to-end lag first."""
        if self.e2e_lag_samples:
            e2e = (f"lag p50 {self.e2e_lag_p50_ns / 1e3:6.1f} p99 "
                   f"{self.e2e_lag_p99_ns / 1e3:7.1f} us")
        else:
            e2e = "lag p50      - p99       - us"
        return (f"{self.state:<7} {e2e}  mirrored {self.mirrored:>14,d} B  "
                f"records {self.records_mirrored:>11,d}  behind {self.lag_bytes:>10,d} B  "
                f"overruns {self.overruns} (lost {self.bytes_lost:,d} B)")


@dataclass(frozen=True)
class CopyChunk:
    """One checksummed piece of a copy-mode job: ``length`` bytes at ``source_offset`` of
    the source buffer, destined for ring position ``position`` onwards (wrapping at the
    capacity), whose CRC32C must be ``crc``. An image chunk is one."""

    source_offset: int
    position: int
    length: int
    crc: int


class Copier(abc.ABC):
    """An engine's copy mode: restore through the engine.

    The engine reads checksummed chunks from a source buffer and either only checks their
    CRCs (:meth:`verify`) or copies them into a ring's data area and checks the CRCs on
    the way (:meth:`copy`), the CRC being that of the bytes written. ``restore`` verifies
    every chunk first (nothing in the target changes before), then copies with the
    check, so the bytes that land are proven to be the verified ones.

    Into a new segment (nobody can attach to it before it is published) there is nothing
    to protect, so ``restore`` only copies: one pass, every chunk's CRC checked from the
    bytes written, the segment discarded if one differs.

    The source must be readable by the engine: the CPU engine reads any buffer (an
    image's mapping, with no copy); an engine that reads by DMA asks for a buffer of its
    own with :meth:`staging_buffer` (the image's data is read into it once), and sets
    :attr:`dma_only`: it then writes only rings that live in DMA-able memory (a segment
    with a bus address, ``pyshm create --udmabuf``), and ``restore`` takes the CPU path
    for any other target. ``restore`` names the target's segment with
    :meth:`attach_target` before the first :meth:`copy` (for a ring restored in place,
    before :meth:`verify` too).
    """

    name: str = "?"
    #: the engine writes only DMA-able memory (a ring in a u-dma-buf buffer)
    dma_only: bool = False
    #: with dma_only: the engine maps any file-backed target segment itself (the ``sim``
    #: engine's simulator), so every ring restore can write is DMA-able for it
    maps_segments: bool = False

    def staging_buffer(self, size: int, position: int = 0) -> Any:
        """A buffer of ``size`` bytes the engine can read, or None if it reads any
        buffer (then the caller passes the image's own mapping). ``position``: the ring
        position its first byte is destined for (a DMA engine whose source and
        destination must agree modulo a page places the buffer accordingly)."""
        return None

    def attach_target(self, segment: Any) -> None:  # noqa: B027 - most copiers need nothing
        """The :class:`~pyshm.segment.Segment` whose data area :meth:`copy` will write
        (a DMA engine maps it or checks its bus address)."""

    @abc.abstractmethod
    def verify(self, source: Any, chunks: list[CopyChunk]) -> None:
        """Check every chunk's CRC over ``source``; raise :class:`CopyChecksumError`
        naming the first chunk that differs."""

    @abc.abstractmethod
    def copy(self, source: Any, target: Any, capacity: int, chunks: list[CopyChunk]) -> None:
        """Copy every chunk into ``target`` (a ring's data area, ``capacity`` bytes) at
        its position and check its CRC from the bytes written; raise
        :class:`CopyChecksumError` naming the first chunk that differs."""

    def close(self) -> None:  # noqa: B027 - most copiers hold nothing
        """Release what the copier holds (threads, buffers)."""

    def __enter__(self) -> Copier:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class CopyChecksumError(EngineError):
    """A chunk's bytes do not have its CRC; ``chunk`` is its index in the job."""

    def __init__(self, message: str, chunk: int):
        super().__init__(message)
        self.chunk = chunk


class Engine(abc.ABC):
    """What every replication engine implements. Subclasses set ``name``."""

    name: str = "?"

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """(usable on this machine?, why or why not) for auto selection."""
        return True, "always available"

    @classmethod
    def copier(cls, **options: Any) -> Copier | None:
        """The engine's copy mode (restore through the engine), or None if it has none."""
        return None

    @abc.abstractmethod
    def start(self) -> None:
        """Begin continuous mirroring from the replica's tail."""

    @abc.abstractmethod
    def stop(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Finish the copy in progress, publish it, and stop. Idempotent."""

    @abc.abstractmethod
    def pause(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Stop copying after the current copy (state stays attached)."""

    @abc.abstractmethod
    def resume(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Continue after :meth:`pause`."""

    @abc.abstractmethod
    def sync(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until the replica holds everything committed when the call began."""

    @abc.abstractmethod
    def stats(self) -> EngineStats:
        """Counters and lag figures."""

    @property
    @abc.abstractmethod
    def mirrored(self) -> int:
        """The position published so far."""

    def close(self) -> None:
        """Stop (if running) and release resources."""
        self.stop()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---- registry ---------------------------------------------------------------------

@dataclass(frozen=True)
class _Entry:
    target: str  # "module:Class", imported on first use
    priority: int  # auto tries higher first


_REGISTRY: dict[str, _Entry] = {}


def register_engine(name: str, target: str, priority: int = 0) -> None:
    """Register an engine class by import path, e.g. ``("sim", "pyshm.driver.sim:SimEngine")``.

    Import is deferred so that a missing optional dependency (pynq, cocotb) only
    matters when that engine is asked for.
    """
    _REGISTRY[name] = _Entry(target, priority)


def engine_names() -> list[str]:
    """Registered engine names, in the order ``auto`` tries them."""
    return sorted(_REGISTRY, key=lambda n: -_REGISTRY[n].priority)


def engine_class(name: str) -> type[Engine]:
    """The class registered as ``name``, imported now; EngineError names what is
    missing when its optional dependency is not installed.
    """
    try:
        entry = _REGISTRY[name]
    except KeyError:
        raise InvalidParameterError(f"unknown engine {name!r}; known: "
                                    f"{', '.join(engine_names())} or auto") from None
    module, _, attr = entry.target.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise EngineError(f"engine {name!r} is not installed ({entry.target}: {exc})") from exc
    if not (isinstance(cls, type) and issubclass(cls, Engine)):
        raise EngineError(f"engine {name!r}: {entry.target} is not an Engine subclass")
    return cls


def pick_engine(exclude: tuple[str, ...] = ("sim",)) -> tuple[str, str]:
    """The engine ``auto`` would choose and why. Simulators are never chosen: too slow."""
    reasons: list[str] = []
    for name in engine_names():
        if name in exclude:
            continue
        try:
            ok, why = engine_class(name).available()
        except EngineError as exc:
            ok, why = False, str(exc)
        if ok:
            return name, f"auto picked {name!r}: {why}" + (
                f" (skipped: {'; '.join(reasons)})" if reasons else "")
        reasons.append(f"{name}: {why}")
    raise EngineError("no replication engine is available: " + "; ".join(reasons))


def open_engine(name: str = "auto", ring: Any = None, replica: Any = None,
                *, announce: Callable[[str], None] | None = None,
                **options: Any) -> Engine:
    """Create an engine by name (``auto``, ``cpu``, ``sim``, ``pynq``).

    ``ring`` is a Ring, a Segment or a ring name; ``replica`` a Replica, a Segment or
    a replica name/path. ``auto`` says what it picked and why: to ``announce`` when given,
    else to the ``pyshm.engine`` logger when logging is configured to show it, else on
    stderr (a silent choice of engine would hide why replication is slow).
    """
    if ring is None or replica is None:
        raise InvalidParameterError("open_engine needs a ring and a replica")
    if name == "auto":
        name, why = pick_engine()
        (announce or _announce)(why)
    cls = engine_class(name)
    return cls(ring, replica, **options)  # type: ignore[call-arg]


def _announce(message: str) -> None:
    if log.isEnabledFor(logging.INFO) and log.hasHandlers():
        log.info(message)
    else:
        print(f"pyshm: {message}", file=sys.stderr, flush=True)


def claim_replica(replica: Any, writer_lock: Any = None) -> Any:
    """The replica's writer lock for an engine: one writer per replica.

    ``writer_lock`` is a lock the caller already holds for this replica (a
    :class:`~pyshm.lock.SegmentLock`, or the number of an inherited descriptor holding
    it, as ``pyshm run`` passes to its engine children); otherwise it is taken now, and
    :class:`~pyshm.errors.SegmentLockedError` names the process that holds it. The
    kernel releases it when the engine's process exits, ``kill -9`` included.
    """
    from .lock import SegmentLock

    if isinstance(writer_lock, SegmentLock):
        return writer_lock
    if isinstance(writer_lock, int):
        return SegmentLock.adopt(writer_lock, replica, "engine")
    if writer_lock is not None:
        raise InvalidParameterError(f"writer_lock: expected a SegmentLock or a descriptor, "
                                    f"got {type(writer_lock).__name__}")
    return SegmentLock.acquire(replica, "engine")


def open_copier(name: str | None = "auto", **options: Any) -> Copier | None:
    """The copy mode of engine ``name`` (``auto`` as :func:`open_engine` picks), or None
    when that engine offers none (or ``name`` is None or ``"none"``)."""
    if name is None or name == "none":
        return None
    if name == "auto":
        name, _ = pick_engine()
    return engine_class(name).copier(**options)


def clear_gate(ring: Any) -> bool:
    """Clear FLAG_GATE_ON_MIRROR left set by an engine that crashed.

    While the flag is set a lossless producer never passes ``mirrored`` by more than
    the capacity, so after an engine crash it stalls until an engine resumes (the
    intended, lossless behaviour) or until this is called (accepting that the next
    replica will start with a gap). Returns whether the flag was set.
    """
    from .segment import Segment

    seg = ring.segment if hasattr(ring, "segment") else ring
    own = not isinstance(seg, Segment)
    if own:
        seg = Segment(seg)
    try:
        import struct

        buf = seg.buf
        flags = struct.unpack_from("<I", buf, L.OFF_FLAGS)[0]
        struct.pack_into("<I", buf, L.OFF_FLAGS, flags & ~L.FLAG_GATE_ON_MIRROR)
        del buf
        return bool(flags & L.FLAG_GATE_ON_MIRROR)
    finally:
        if own:
            seg.close()


register_engine("cpu", "pyshm.fallback.cpu:CpuEngine", priority=0)
register_engine("pynq", "pyshm.driver.engine:PynqEngine", priority=10)
register_engine("sim", "pyshm.driver.sim:SimEngine", priority=-10)
