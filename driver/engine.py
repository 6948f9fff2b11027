"""Engines over the ring-mirror IP: the shared logic, and ``pynq`` (the board).

The IP copies bytes and publishes ``mirrored`` (ring), ``tail`` and ``tail_intent``
(replica) itself. What it does not do is done here, in a monitor thread, from the two
segments and the IP's counters: count records, store the replica's ``next_sequence``
(restarted producers and promotion read it), account bytes lost, and sample the lag.

``SimEngine`` (driver/sim.py) is this same class over a simulated bus; only where the
register window and the bus addresses come from differs.
"""

from __future__ import annotations

import os
import stat
import struct
import threading
import time
from collections import deque
from typing import Any

from .. import layout as L
from ..checksum import crc32c
from ..engine import DEFAULT_TIMEOUT, Copier, Engine, EngineStats, claim_replica
from ..errors import (
    ClosedError,
    CorruptSegmentError,
    EngineError,
    InvalidParameterError,
)
from ..replica import CrcTable, Replica
from ..segment import Segment
from . import regmap as R
from .ip import MirrorConfig, MirrorFaultError, RingMirror
from .owner import claim_ip

LAG_SAMPLES = 4096


def open_segment(obj: Any, what: str) -> tuple[Segment, bool]:
    """(segment, owned) for a Ring/Replica/Segment/name/path, u-dma-buf devices included."""
    if isinstance(obj, Segment):
        return obj, False
    seg = getattr(obj, "segment", None)
    if isinstance(seg, Segment):
        return seg, False
    if isinstance(obj, (str, os.PathLike)):
        path = os.fspath(obj)
        if _is_device(path):
            return Segment(path, size=udmabuf_info(path)[1]), True
        return Segment(obj), True
    raise InvalidParameterError(f"{what}: expected a Ring, Replica, Segment or name, got "
                                f"{type(obj).__name__}")


def _is_device(obj: Any) -> bool:
    path = os.fspath(obj)
    return path.startswith("/dev/") and os.path.exists(path) \
        and stat.S_ISCHR(os.stat(path).st_mode)


def udmabuf_info(path: str) -> tuple[int, int]:
    """(physical address, size) of a u-dma-buf device file, or a link to one, from its
    sysfs attributes (:func:`pyshm.udmabuf.info`; ``$PYSHM_SYSFS`` replaces /sys)."""
    from .. import udmabuf

    if udmabuf.sysfs_entry(path) is None:
        name = os.path.basename(os.path.realpath(path))
        raise EngineError(f"{path} is a device file but no u-dma-buf sysfs entry "
                          f"({os.path.join(udmabuf.sysfs_root(), udmabuf.CLASS_DIRS[0], name)})"
                          f" describes it")
    try:
        dev = udmabuf.info(path)
    except InvalidParameterError as exc:
        raise EngineError(str(exc)) from None
    return dev.phys_addr, dev.size


def segment_bus_address(seg: Segment) -> int:
    """Bus address of the segment's first byte, for the IP.

    The ring header's ``data_phys_addr`` (0x60) wins when set (whoever put the ring in
    DMA-able memory published it there); then the address the segment was created at
    (``Segment(..., device=)``, e.g. a ring a restore is building); otherwise a u-dma-buf
    device file is asked.
    Ordinary /dev/shm memory is scattered pages the IP cannot address: refused.
    """
    (data_phys,) = struct.unpack_from("<Q", seg.buf, L.OFF_DATA_PHYS)
    if data_phys:
        if data_phys % 4096 or data_phys < L.OFF_DATA:
            raise CorruptSegmentError(f"{seg.name}: data_phys_addr 0x{data_phys:x} in the "
                                      f"header is not a 4 KiB aligned bus address")
        return int(data_phys) - L.OFF_DATA
    if seg.bus_address:  # made in a u-dma-buf buffer by this process, header not yet written
        return int(seg.bus_address)
    from ..udmabuf import sysfs_entry

    if sysfs_entry(seg.path) is not None:  # the device, or a ring name linking to it
        return udmabuf_info(seg.path)[0]
    raise EngineError(f"{seg.name}: not in DMA-able memory (data_phys_addr is 0 and "
                      f"{seg.path} is not a u-dma-buf device); see docs/driver.md")


class MirrorEngine(Engine):
    """The engine interface over a :class:`RingMirror`. Subclasses call :meth:`_bind`.

    Options common to ``pynq`` and ``sim``: ``gate`` (hold a lossless producer back at
    ``mirrored``), ``keep_gate`` (leave the gate set after stop), ``poll_interval`` (IP
    clock cycles between idle tail polls), ``watchdog`` (IP clock cycles without any bus
    handshake, while work is outstanding, before the IP stops with fault WATCHDOG; 0 off,
    None keeps the IP's reset value 2^20), ``monitor_interval`` (seconds between monitor
    passes), ``count_records``.
    """

    name = "mirror"

    def __init__(self, ring: Any, replica: Any, *, gate: bool = False,
                 keep_gate: bool = False, poll_interval: int = 16,
                 watchdog: int | None = None, monitor_interval: float = 0.001,
                 count_records: bool = True, writer_lock: Any = None):
        self._owned: list[Any] = []
        self.ip: RingMirror | None = None
        self._state = "created"
        self._closed = False
        try:
            self.ring_seg, own = open_segment(ring, "ring")
            if own:
                self._owned.append(self.ring_seg)
            if isinstance(replica, (str, os.PathLike)) and not _is_device(replica):
                replica = Replica.open(replica, prefault=True)
                self._owned.append(replica)
            self.rep_seg, own = open_segment(replica, "replica")
            if own:
                self._owned.append(self.rep_seg)
            self.params = L.unpack_static_header(self.ring_seg.buf[:0x80], self.ring_seg.name,
                                                 self.ring_seg.size)
            rparams = L.unpack_static_header(self.rep_seg.buf[:0x80], self.rep_seg.name,
                                             self.rep_seg.size)
        except BaseException:
            self._release()
            raise
        if self.params.is_replica:
            raise InvalidParameterError(f"{self.ring_seg.name} is a replica; mirror its primary")
        if not rparams.is_replica:
            raise InvalidParameterError(f"{self.rep_seg.name} is not a replica (flag "
                                        f"0x{L.FLAG_REPLICA:x} clear)")
        for field in ("capacity", "max_record", "partition_count"):
            a, b = getattr(rparams, field), getattr(self.params, field)
            if a != b:
                raise InvalidParameterError(f"replica {self.rep_seg.name}: {field} {a} differs "
                                            f"from the ring's {b}")
        if self.ring_seg.readonly or self.rep_seg.readonly:
            raise InvalidParameterError("the engine needs the ring and the replica writable")
        if gate and not self.params.lossless:
            raise InvalidParameterError(f"gate=True needs a lossless ring; {self.ring_seg.name} "
                                        f"is in overwrite mode")
        if poll_interval < 1 or poll_interval > 0xFFFFFFFF:
            raise InvalidParameterError(f"poll_interval {poll_interval} must be 1..2^32-1")
        if monitor_interval <= 0:
            raise InvalidParameterError("monitor_interval must be positive")
        if watchdog is not None and not 0 <= watchdog <= 0xFFFFFFFF:
            raise InvalidParameterError(f"watchdog {watchdog} must be 0..2^32-1 cycles")
        self.watchdog = watchdog
        self._rep_params = rparams
        try:
            # one writer per replica (pyshm.lock), released with the segments
            self._owned.append(claim_replica(self.rep_seg, writer_lock))
        except BaseException:
            self._release()
            raise
        self.gate, self.keep_gate = gate, keep_gate
        self.poll_interval = poll_interval
        self.monitor_interval = monitor_interval
        self.count_records = count_records
        self._rq = self.ring_seg.buf[:L.HEADER_SIZE].cast("Q")
        self._pq = self.rep_seg.buf[:L.HEADER_SIZE].cast("Q")
        cap = self.params.capacity
        self._rep_data = self.rep_seg.buf[L.OFF_DATA:L.OFF_DATA + cap]
        self._mon_lock = threading.RLock()
        self._has_bytes_lost = False
        self._mon_stop = threading.Event()
        self._mon_thread: threading.Thread | None = None
        self._reset_counts(0)
        self._crc: CrcTable | None = None  # the replica's CRC table, while the IP keeps it
        self._crc_blocks = 0
        self._crc_word = 0
        self.options: dict[str, Any] = {"gate": gate, "poll_interval": poll_interval}

    # ---- set-up by subclasses ----------------------------------------------------
    def _bind(self, ip: RingMirror, ring_bus: int, replica_bus: int) -> None:
        self.ip = ip
        self.ring_bus, self.replica_bus = ring_bus, replica_bus
        self.config = MirrorConfig(
            ring_data=ring_bus + L.OFF_DATA, capacity=self.params.capacity,
            partition_size=self.params.partition_size,
            replica_data=replica_bus + L.OFF_DATA,
            ring_tail_addr=ring_bus + L.OFF_TAIL, ring_intent_addr=ring_bus + L.OFF_TAIL_INTENT,
            ring_mirrored_addr=ring_bus + L.OFF_MIRRORED,
            replica_tail_addr=replica_bus + L.OFF_TAIL)
        self.config.validate()

    def _reset_counts(self, start: int) -> None:
        self._start = start
        self._counted = start  # records counted in the replica up to here
        self._mirrored = start
        self._lost = 0
        self._lost_reg = 0  # BYTES_LOST: also counts losses of rounds not yet published
        self._bytes = 0
        self._overruns = 0
        self._records = 0
        self._copies = 0
        self._errors = 0
        self._last_error = ""
        self._uncounted = 0
        self._prev_seq: int | None = None
        self._lags: deque[int] = deque(maxlen=LAG_SAMPLES)
        self._lag_max = 0
        self._pending: tuple[int, int] | None = None  # (tail, first seen ns)
        self._t0 = time.monotonic_ns()
        self._t1 = 0

    def _live(self) -> RingMirror:
        if self._closed or self.ip is None:
            raise ClosedError(f"the {self.name} engine is closed")
        return self.ip

    # ---- header words (aligned 8-byte accesses, atomic on the platforms we run) ----
    def _ring(self, off: int) -> int:
        return int(self._rq[off // 8])

    def _rep(self, off: int) -> int:
        return int(self._pq[off // 8])

    def _set_flags(self, set_bits: int, clear_bits: int) -> None:
        buf = self.ring_seg.buf
        (flags,) = struct.unpack_from("<I", buf, L.OFF_FLAGS)
        struct.pack_into("<I", buf, L.OFF_FLAGS, (flags | set_bits) & ~clear_bits)

    # ---- engine interface ----------------------------------------------------------
    def start(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        ip = self._live()
        if self._state in ("running", "paused"):
            raise EngineError(f"the {self.name} engine is already started")
        ip.check_id()
        # map 1.2 added BYTES_LOST; an older bitstream answers SLVERR there
        self._has_bytes_lost = (ip.read32(R.VERSION) & 0xFFFF) >= 2
        ip.soft_reset(timeout)
        ip.configure(self.config, poll_interval=self.poll_interval, watchdog=self.watchdog)
        start = self._rep(L.OFF_TAIL)
        tail = self._ring(L.OFF_TAIL)
        if start % 8 or start > tail:
            raise CorruptSegmentError(f"replica {self.rep_seg.name}: tail {start} is not a "
                                      f"position of ring {self.ring_seg.name} (tail {tail})")
        with self._mon_lock:
            self._reset_counts(start)
            try:
                self._prev_seq = self._last_seq(start)
            except CorruptSegmentError:
                self._prev_seq = None  # counted by walking once copying starts
        self._crc_start(ip, start)
        ip.set_start(start)
        # a crash between the replica's tail and the ring's mirrored leaves mirrored behind
        if self._ring(L.OFF_MIRRORED) < start:
            self._rq[L.OFF_MIRRORED // 8] = start
        if self.gate:
            self._set_flags(L.FLAG_GATE_ON_MIRROR, 0)
        ip.enable()
        self._state = "running"
        self._mon_stop.clear()
        self._mon_thread = threading.Thread(target=self._monitor, name=f"{self.name}-monitor",
                                            daemon=True)
        self._mon_thread.start()

    def _crc_start(self, ip: RingMirror, t: int) -> None:
        """Make the replica's CRC table agree with its tail ``t`` and let the IP keep it
        (docs/design.md, "Replica CRC table", start after a crash or another writer).

        With ``table_tail == t`` the last engine stopped cleanly and the IP continues the
        entry of ``t``'s block; otherwise nothing below that block is trusted: valid_from
        moves up to its start and its bytes below ``t`` are checksummed from the replica
        (under one block). An IP without a CRC unit, or a table whose blocks are not the
        layout's, is left alone (the table then stops being used, safely).
        """
        self._crc = None
        self._crc_blocks = self._crc_word = 0
        rp = self._rep_params
        keep = rp.has_crc_table and ip.has_crc_unit
        if keep:
            table = CrcTable(self.rep_seg, rp)
            keep = table.block_shift == L.crc_block_shift(rp.capacity, rp.partition_count)
        if not keep:
            ip.crc_configure(False)
            return
        b = table.block_size
        bstart = t & ~(b - 1)
        at = L.crc_table_offset(rp.capacity)
        entry = at + L.CRC_HEADER_SIZE + 4 * ((t >> table.block_shift) % table.count)
        buf = self.rep_seg.buf
        vfrom = table.valid_from
        if table.table_tail != t or vfrom > t or vfrom % b:
            if t > bstart:
                off = bstart & (rp.capacity - 1)
                struct.pack_into("<I", buf, entry, crc32c(self._rep_data[off:off + t - bstart]))
            struct.pack_into("<Q", buf, at + L.CRC_OFF_VALID_FROM, bstart)
            struct.pack_into("<Q", buf, at + L.CRC_OFF_TABLE_TAIL, t)
        (seed,) = struct.unpack_from("<I", buf, entry) if t > bstart else (0,)
        ip.crc_configure(True, seed)
        self._crc = table

    def stop(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        if self._closed or self.ip is None or self._state not in ("running", "paused",
                                                                    "failed"):
            return
        try:
            if self._state != "failed":
                self.ip.disable(timeout)
        except MirrorFaultError as exc:
            self._fail(str(exc))  # stopped already: the fault stays in stats()
        finally:
            self._stop_monitor(timeout)
            try:
                self._update()
                if self._state != "failed":
                    try:
                        self._read_losses()  # the counters of the last rounds
                    except EngineError:
                        pass
            finally:
                self._state = "stopped" if self._state != "failed" else "failed"
                self._t1 = time.monotonic_ns()
                if self.gate and not self.keep_gate:
                    self._set_flags(0, L.FLAG_GATE_ON_MIRROR)

    def pause(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        ip = self._live()
        if self._state != "running":
            raise EngineError(f"pause: the {self.name} engine is {self._state}")
        ip.disable(timeout)
        self._state = "paused"
        self._update()
        self._read_losses()

    def resume(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        ip = self._live()
        if self._state != "paused":
            raise EngineError(f"resume: the {self.name} engine is {self._state}")
        ip.enable()
        self._state = "running"

    def sync(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until the ring's ``mirrored`` reaches the tail committed at the call.

        The word is read from memory (cheap); STATUS is read between polls so that a
        fault ends the wait at once instead of at the timeout.
        """
        ip = self._live()
        target = self._ring(L.OFF_TAIL)
        try:
            ip.wait(lambda: self._ring(L.OFF_MIRRORED) >= target, timeout,
                    f"sync to position {target} (mirrored {self._ring(L.OFF_MIRRORED)}, "
                    f"engine {self._state})")
        except MirrorFaultError as exc:
            self._fail(str(exc))
            raise
        self._update()

    @property
    def mirrored(self) -> int:
        return self._live().read64("MIRRORED")

    @property
    def state(self) -> str:
        """``created``, ``running``, ``paused``, ``stopped`` or ``failed``."""
        return self._state

    # ---- monitor -------------------------------------------------------------------
    def _monitor(self) -> None:
        next_status = 0.0
        while not self._mon_stop.wait(self.monitor_interval):
            try:
                self._update()
                now = time.monotonic()
                if now >= next_status and self.ip is not None:
                    next_status = now + 0.05
                    self.ip.check_fault()
                    self._read_losses()
            except MirrorFaultError as exc:
                self._fail(str(exc))
                return
            except EngineError as exc:  # e.g. the simulator went away
                self._fail(str(exc))
                return

    def _fail(self, message: str) -> None:
        with self._mon_lock:
            self._state = "failed"
            self._errors += 1
            self._last_error = message
            self._t1 = time.monotonic_ns()

    def _stop_monitor(self, timeout: float) -> None:
        t = self._mon_thread
        if t is not None and t is not threading.current_thread():
            self._mon_stop.set()
            t.join(max(timeout, 1.0))
        self._mon_thread = None

    def _update(self) -> None:
        """One monitor pass: lag sample, and bookkeeping when ``mirrored`` moved."""
        if self.ip is None:
            return
        with self._mon_lock:
            now = time.monotonic_ns()
            word = self._ring(L.OFF_MIRRORED)
            tail = self._ring(L.OFF_TAIL)
            pend = self._pending
            if pend is not None and word >= pend[0]:
                lag = now - pend[1]
                self._lags.append(lag)
                self._lag_max = max(self._lag_max, lag)
                pend = None
            if pend is None and tail > word:
                pend = (tail, now)
            self._pending = pend
            if word == self._mirrored:
                return
            m, copied = self.ip.consistent_progress()
            if m <= self._mirrored:
                return
            lost = (m - self._start) - copied
            gap = lost > self._lost
            self._copies += 1
            self._bytes = copied
            self._lost = max(self._lost, lost)
            self._overruns = self.ip.read64("OVERRUNS")
            self._book(m, gap)
            self._mirrored = m

    def _read_losses(self) -> None:
        """Overrun counters straight from the IP: a producer that laps every round leaves
        ``mirrored`` still, and _update books counters only when it moves."""
        ip = self.ip
        if ip is None:
            return
        overruns = ip.read64("OVERRUNS")
        lost = ip.read64("BYTES_LOST") if self._has_bytes_lost else 0
        word = ip.crc_blocks() if self._crc is not None else 0
        with self._mon_lock:
            self._overruns = max(self._overruns, overruns)
            self._lost_reg = max(self._lost_reg, lost)
            self._crc_blocks += (word - self._crc_word) & 0xFFFFFFFF
            self._crc_word = word

    def _last_seq(self, m: int) -> int | None:
        """Sequence of the last record before ``m`` in the replica, from the partition
        holding position m - 1 (published, and below any resynchronisation point)."""
        p = self.params
        if m <= 0:
            return None
        begin = (m - 1) & ~(p.partition_size - 1)
        last = None
        for rec in L.walk_records(self._rep_data, p.capacity, p.partition_size, p.max_record,
                                  begin, m, f"replica {self.rep_seg.name}"):
            last = rec.sequence
        return last

    def _book(self, m: int, gap: bool) -> None:
        """Count the records of [counted, m) and store the replica's next sequence.

        Without a gap the count is the difference of the last sequence numbers, which
        needs only the newest partition: exact even when the replica was lapped between
        two passes. After a gap (or before the first known sequence) the records still
        intact in the replica are walked; the IP itself raised the replica's tail intent
        so that its oldest boundary is the resynchronisation point.
        """
        p = self.params
        cap, ps = p.capacity, p.partition_size
        if not self.count_records:
            self._counted = m
            return
        try:
            last = self._last_seq(m)
            if not gap and self._prev_seq is not None and last is not None:
                self._records += last - self._prev_seq
            else:
                oldest = max(L.oldest_boundary(self._rep(L.OFF_TAIL_INTENT), cap, ps),
                             L.oldest_boundary(m, cap, ps))
                begin = min(m, max(self._counted, oldest))
                self._uncounted += begin - self._counted
                self._records += sum(1 for _ in L.walk_records(
                    self._rep_data, cap, ps, p.max_record, begin, m,
                    f"replica {self.rep_seg.name}"))
            if last is not None:
                self._prev_seq = last
                self._pq[L.OFF_NEXT_SEQUENCE // 8] = last + 1
        except CorruptSegmentError as exc:
            self._errors += 1
            self._last_error = f"record count: {exc}"
        self._counted = m

    # ---- statistics ----------------------------------------------------------------
    def stats(self) -> EngineStats:
        ip = self._live()
        if self._state in ("running", "paused"):
            try:
                self._update()
                self._read_losses()
            except EngineError as exc:
                self._fail(str(exc))
        with self._mon_lock:
            lags = sorted(self._lags)

            def pct(q: float) -> int:
                return lags[min(len(lags) - 1, int(q * len(lags)))] if lags else 0

            now = time.monotonic_ns()
            pend = self._pending
            tail = self._ring(L.OFF_TAIL)
            mirrored = self._mirrored
            end = self._t1 if self._state in ("stopped", "failed") and self._t1 else now
            extra: dict[str, Any] = {"uncounted_gap_bytes": self._uncounted,
                                     "crc_table": self._crc is not None}
            if self._crc is not None:
                extra.update(crc_block=self._crc.block_size, crc_blocks=self._crc_blocks,
                             crc_valid_from=self._crc.valid_from)
            if self._state not in ("failed",):
                try:
                    c = ip.counters()
                    extra.update(bursts=c["bursts"], busy_cycles=c["busy_cycles"],
                                 tail_seen=c["tail_seen"])
                except EngineError:
                    pass
            return EngineStats(
                engine=self.name, state=self._state, mirrored=mirrored, tail=tail,
                start_position=self._start, bytes_mirrored=self._bytes,
                records_mirrored=self._records, copies=self._copies,
                overruns=self._overruns, bytes_lost=max(self._lost, self._lost_reg),
                errors=self._errors, last_error=self._last_error, lag_bytes=max(0, tail - mirrored),
                lag_ns=(now - pend[1]) if pend else 0, lag_p50_ns=pct(0.5),
                lag_p99_ns=pct(0.99), lag_p999_ns=pct(0.999), lag_max_ns=self._lag_max,
                lag_samples=len(lags), elapsed_ns=end - self._t0, extra=extra)

    # ---- teardown ------------------------------------------------------------------
    def close(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        if self._closed:
            return
        try:
            self.stop(timeout)
        finally:
            self._closed = True
            self._shutdown()
            self._release()

    def _shutdown(self) -> None:
        """Subclass hook: release the transport (after the IP is stopped)."""

    def _release(self) -> None:
        self._crc = None  # its arrays view the replica's mapping
        for name in ("_rq", "_pq", "_rep_data"):
            mv = getattr(self, name, None)
            if mv is not None:
                mv.release()
                setattr(self, name, None)
        for obj in reversed(self._owned):
            obj.close()
        self._owned.clear()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            try:
                self.close()
            except Exception:
                pass


# LPD_SLCR.LPD_APU on Zynq UltraScale+ (UG1087): bit 0 brdc_inner makes the APU broadcast
# inner-shareable transactions to the CCI, which HPC coherency needs (hw/README.md).
LPD_APU_ADDR = 0xFF41A040
LPD_APU_BRDC_INNER = 0x1


class PynqEngine(MirrorEngine):
    """The ring-mirror IP on a PYNQ board (KV260 block design in hw/vivado/).

    ``overlay``: a loaded ``pynq.Overlay``, a bitstream path, or None for the overlay
    already loaded; ``ip_name``: the IP's name in it (default: the only instance bound to
    :class:`RingMirror`). The ring and the replica must be in DMA-able memory (see
    :func:`segment_bus_address`); ``check_coherency`` refuses to run when HPC coherency
    is off, because the IP would read stale cache lines (hw/README.md). The engine holds
    the IP from construction to :meth:`close` (:mod:`pyshm.driver.owner`): another engine
    or a restore through the same IP is refused meanwhile (``IPBusyError``).
    """

    name = "pynq"

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import pynq  # noqa: F401
        except ImportError:
            return False, "pynq is not installed (pip install 'pyshm[pynq]')"
        try:
            names = _loaded_mirror_ips()
        except Exception as exc:  # off-board pynq raises various errors here
            return False, f"no PYNQ overlay loaded ({type(exc).__name__}: {exc})"
        if not names:
            return False, "the loaded overlay has no ring-mirror IP"
        return True, f"ring-mirror IP {names[0]} in the loaded overlay"

    def __init__(self, ring: Any, replica: Any, *, overlay: Any = None,
                 ip_name: str | None = None, check_coherency: bool = True, **options: Any):
        super().__init__(ring, replica, **options)
        try:
            import pynq
        except ImportError as exc:
            self._release()
            raise EngineError("the pynq engine needs pynq (pip install 'pyshm[pynq]')") from exc
        try:
            ip = find_mirror_ip(overlay, ip_name, pynq)
            # the IP is this engine's until close(), before any register access
            # (pyshm.driver.owner); released with the segments by _release
            self._owned.append(claim_ip(
                ip, "mirror with engine 'cpu' instead",
                f"mirroring ring {self.ring_seg.name} into replica {self.rep_seg.name}"))
            if check_coherency:
                check_hpc_coherency(pynq)
            ring_bus = segment_bus_address(self.ring_seg)
            rep_bus = segment_bus_address(self.rep_seg)
            self._publish_phys(self.ring_seg, ring_bus)
            self._publish_phys(self.rep_seg, rep_bus)
            self._bind(ip, ring_bus, rep_bus)
        except BaseException:
            self._release()
            raise

    @classmethod
    def copier(cls, **options: Any) -> Copier | None:
        """Copy mode: :class:`~pyshm.driver.copier.PynqCopier` (the IP's restore copy mode;
        options ``staging`` (else $PYSHM_RESTORE_UDMABUF), ``overlay``, ``ip_name``,
        ``check_coherency``, ``job_timeout``)."""
        from .copier import PynqCopier

        return PynqCopier(**options)

    @staticmethod
    def _publish_phys(seg: Segment, bus: int) -> None:
        """Other processes (tools, a restarted engine) find the address in the header."""
        struct.pack_into("<Q", seg.buf, L.OFF_DATA_PHYS, bus + L.OFF_DATA)


def _import_pynq() -> Any:
    try:
        import pynq
    except ImportError as exc:
        raise EngineError("the pynq engine needs pynq (pip install 'pyshm[pynq]')") from exc
    return pynq


def find_mirror_ip(overlay: Any = None, ip_name: str | None = None, pynq: Any = None) -> RingMirror:
    """The ring-mirror IP of ``overlay`` (a loaded ``pynq.Overlay``, a bitstream path, or
    None for the overlay already loaded), by ``ip_name`` or as its only instance."""
    pynq = pynq or _import_pynq()
    try:
        if isinstance(overlay, (str, os.PathLike)):
            overlay = pynq.Overlay(os.fspath(overlay))
        if overlay is None:
            overlay = pynq.Overlay(pynq.PL.bitfile_name, download=False)
    except EngineError:
        raise
    except Exception as exc:  # off-board pynq raises various errors here
        raise EngineError(f"no PYNQ overlay with the ring-mirror IP is loaded "
                          f"({type(exc).__name__}: {exc})") from exc
    names = [k for k, v in overlay.ip_dict.items() if v.get("type") in RingMirror.bindto]
    if ip_name is None:
        if len(names) != 1:
            raise EngineError(f"overlay has {len(names)} ring-mirror IPs ({names}); "
                              f"pass ip_name")
        ip_name = names[0]
    ip = getattr(overlay, ip_name)
    if not isinstance(ip, RingMirror):
        raise EngineError(f"{ip_name} is bound to {type(ip).__name__}, not RingMirror")
    return ip


def check_hpc_coherency(pynq: Any = None) -> None:
    """Refuse to run when the APU does not broadcast inner-shareable transactions: the IP
    on the HPC port would then read stale cache lines (hw/README.md)."""
    pynq = pynq or _import_pynq()
    word = int(pynq.MMIO(LPD_APU_ADDR, 4).read(0))
    if not word & LPD_APU_BRDC_INNER:
        raise EngineError(
            f"HPC coherency is off (LPD_APU 0x{word:x}, brdc_inner clear): the IP "
            f"would read stale cache lines; enable it in the PS configuration "
            f"or pass check_coherency=False only for a non-cacheable ring")


def _loaded_mirror_ips() -> list[str]:
    import pynq

    ip_dict = pynq.PL.ip_dict
    return [k for k, v in ip_dict.items() if v.get("type") in RingMirror.bindto]
