"""Restore through the ring-mirror IP: the copy mode of the ``sim`` and ``pynq`` engines.

:class:`IPCopier` is what both share: the staging buffer's layout (the image's bytes
placed so that each chunk's bus address agrees with its ring offset modulo 4096, as the
IP's restore copy mode requires, and the expected-CRC table after them), the cutting of
a job list into IP jobs, and the jobs themselves through
:meth:`~pyshm.driver.ip.RingMirror.restore_job`. Where the staging memory and the IP
come from is the subclass's business: a temporary file mapped by a simulator
(:class:`~pyshm.driver.sim.SimCopier`), or a u-dma-buf buffer and the board's IP
(:class:`PynqCopier`).
"""

from __future__ import annotations

import mmap
import os
import stat
from typing import Any

from .. import layout as L
from .. import udmabuf
from ..engine import Copier, CopyChecksumError, CopyChunk
from ..errors import EngineError, InvalidParameterError
from ..lock import SegmentLock
from . import regmap as R
from .ip import RefusedError, RingMirror
from .owner import claim_ip

PAGE = 4096
# the staging buffer's layout: [phase][data ... ][pad to a page][table: u32 per chunk of
# one IP job]. The table is rewritten for each job, so it needs room for one job's
# chunks only: at most TABLE_ENTRIES (64 KiB), a longer run of chunks is cut into more
# jobs. A board's staging buffer is contiguous memory set aside at boot: it should not
# grow with the image by more than that (a table for every 64-byte chunk of a 1 GiB
# image would be 64 MiB).
MIN_CHUNK = 64
TABLE_ENTRIES = 16384


def staging_layout(size: int, position: int,
                   table_entries: int = TABLE_ENTRIES) -> tuple[int, int, int, int]:
    """(phase, table offset, table entries, total bytes) of a staging buffer for
    ``size`` bytes destined for ring position ``position`` onwards."""
    if size < 0:
        raise InvalidParameterError(f"staging buffer size {size} must be >= 0")
    if table_entries < 1:
        raise InvalidParameterError(f"table_entries {table_entries} must be >= 1")
    phase = position % PAGE
    table_off = -(-(phase + size) // PAGE) * PAGE
    table_cap = min(size // MIN_CHUNK + 16, table_entries)
    return phase, table_off, table_cap, table_off + 4 * table_cap


def ring_capacity(seg: Any) -> int:
    """The capacity field of a ring segment's header."""
    return int.from_bytes(bytes(seg.buf[L.OFF_CAPACITY:L.OFF_CAPACITY + 8]), "little")


class IPCopier(Copier):
    """A :class:`~pyshm.engine.Copier` over the IP's restore copy mode (map 1.6).

    The IP reads only the staging buffer (:meth:`staging_buffer`) and writes only the
    ring :meth:`attach_target` named. Consecutive chunks of one size, contiguous in the
    source and in ring positions, form one IP job (the IP iterates the chunks itself);
    a job ends at :attr:`table_entries` chunks and a copy job at a ring capacity.
    Subclasses provide the memory
    (:meth:`_stage_map`, :meth:`_stage_unmap`) and the IP (:meth:`_ip_for`).
    """

    dma_only = True
    #: chunks per IP job at most (the expected-CRC table's room, see TABLE_ENTRIES)
    table_entries = TABLE_ENTRIES

    def __init__(self, job_timeout: float = 600.0):
        if not job_timeout > 0:
            raise InvalidParameterError(f"job_timeout {job_timeout} must be > 0 seconds")
        self.job_timeout = job_timeout
        self._stage: Any = None                 # mapping: data, then the table
        self._stage_bus = 0                     # bus address of its first byte
        self._view: memoryview | None = None    # what staging_buffer handed out
        self._phase = 0                         # the view's offset in the mapping
        self._table_off = 0
        self._table_cap = 0                     # entries the table area holds
        self._target: Any = None                # Segment attached for copy()

    # ---- what subclasses provide ---------------------------------------------------
    def _stage_map(self, total: int) -> tuple[Any, int]:
        """(writable mapping of ``total`` bytes, its bus address)."""
        raise NotImplementedError

    def _stage_unmap(self) -> None:  # noqa: B027 - a temporary file has nothing more
        """Release what backs the mapping (after the mapping is closed)."""

    def _ip_for(self, ring: Any) -> RingMirror:
        """The IP, ready for jobs on ``ring`` (a Segment, or None for verify only)."""
        raise NotImplementedError

    # ---- buffers -------------------------------------------------------------------
    def staging_buffer(self, size: int, position: int = 0) -> Any:
        """A ``size``-byte buffer the IP reads, for data that goes to ring position
        ``position`` onwards (its bus address then agrees with the ring offset modulo
        4096), with room after it for the expected-CRC table."""
        phase, table_off, table_cap, total = staging_layout(size, position,
                                                            self.table_entries)
        self._release_stage()
        self._stage, self._stage_bus = self._stage_map(total)
        self._phase, self._table_off, self._table_cap = phase, table_off, table_cap
        self._view = memoryview(self._stage)[phase:phase + size]
        return self._view

    def attach_target(self, segment: Any) -> None:
        """The ring segment :meth:`copy` writes."""
        self._target = segment

    # ---- jobs ----------------------------------------------------------------------
    def verify(self, source: Any, chunks: list[CopyChunk]) -> None:
        self._run(source, None, chunks)

    def copy(self, source: Any, target: Any, capacity: int, chunks: list[CopyChunk]) -> None:
        seg = self._target
        if seg is None:
            raise InvalidParameterError(f"the {self.name} engine writes only a ring it was "
                                        f"given: attach_target(segment) before copy()")
        cap = ring_capacity(seg)
        if cap != capacity or len(memoryview(target).cast("B")) != capacity:
            raise InvalidParameterError(f"copy target ({capacity} bytes) is not the data "
                                        f"area of the attached ring {seg.name!r} ({cap})")
        for c in chunks:
            if c.length > capacity:
                raise InvalidParameterError(f"chunk of {c.length} bytes is longer than the "
                                            f"ring ({capacity})")
        self._run(source, seg, chunks)

    def _run(self, source: Any, ring: Any, chunks: list[CopyChunk]) -> None:
        view = self._view
        if view is None or memoryview(source).cast("B").obj is not view.obj:
            raise InvalidParameterError(f"the {self.name} engine reads only its staging "
                                        f"buffer: pass what staging_buffer() returned as "
                                        f"the source")
        size = len(view)
        for c in chunks:
            if c.source_offset < 0 or c.length < 0 or c.source_offset + c.length > size:
                raise InvalidParameterError(f"chunk [{c.source_offset}, "
                                            f"{c.source_offset + c.length}) is outside the "
                                            f"{size}-byte staging buffer")
        # (verify with a target attached: the IP gets the ring now, so a restore in place
        # sets it up once for its verify and copy passes)
        ip = self._ip_for(ring if ring is not None else self._target)
        i = 0
        while i < len(chunks):
            if chunks[i].length == 0:   # an empty chunk: its CRC is that of no bytes
                if chunks[i].crc != 0:
                    raise CopyChecksumError(f"chunk {i} of {len(chunks)}: checksum mismatch", i)
                i += 1
                continue
            j = self._regular_end(chunks, i, None if ring is None else ring_capacity(ring))
            self._job(ip, ring is None, chunks, i, j)
            i = j

    def _regular_end(self, chunks: list[CopyChunk], i: int, capacity: int | None) -> int:
        """End of the run of chunks from ``i`` that is one IP job: contiguous in the source
        and in positions, all of the first one's length but the last, within the table's
        room and, for a copy, at most a capacity long (the IP's rule)."""
        first = chunks[i]
        j, so, pos = i + 1, first.source_offset + first.length, first.position + first.length
        while (j < len(chunks) and j - i < self._table_cap and chunks[j - 1].length == first.length
               and chunks[j].length > 0 and chunks[j].source_offset == so
               and chunks[j].position == pos
               and (capacity is None or pos + chunks[j].length - first.position <= capacity)):
            so += chunks[j].length
            pos += chunks[j].length
            j += 1
        return j

    def _job(self, ip: RingMirror, verify: bool, chunks: list[CopyChunk], i: int,
             j: int) -> None:
        first = chunks[i]
        source = self._stage_bus + self._phase + first.source_offset
        if not verify and (source - first.position) % PAGE:
            raise InvalidParameterError(
                f"chunk {i}: source offset {first.source_offset} and ring position "
                f"{first.position} differ modulo 4096 from the staging buffer's placement "
                f"(staging_buffer(size, position) places it for one job)")
        table = b"".join(c.crc.to_bytes(4, "little") for c in chunks[i:j])
        self._stage[self._table_off:self._table_off + len(table)] = table
        try:
            ip.restore_job(source=source, table=self._stage_bus + self._table_off,
                           position=first.position, length=sum(c.length for c in chunks[i:j]),
                           chunk=first.length, verify=verify, timeout=self.job_timeout)
        except CopyChecksumError as exc:
            k = i + exc.chunk
            raise CopyChecksumError(f"chunk {k} of {len(chunks)}: checksum mismatch "
                                    f"({self.name} engine)", k) from None

    # ---- cleanup -------------------------------------------------------------------
    def _release_stage(self) -> None:
        if self._view is not None:
            try:
                self._view.release()
            except BufferError:
                pass  # the caller still holds a view of it: it goes with the mapping
            self._view = None
        if self._stage is not None:
            try:
                self._stage.close()
            except BufferError:
                pass  # the caller still holds a view: the mapping goes with it
            self._stage = None
        self._stage_unmap()

    def close(self) -> None:
        """Drop the staging buffer."""
        self._release_stage()


# ---- the board ----------------------------------------------------------------------

STAGING_ENV = "PYSHM_RESTORE_UDMABUF"
CPU_HINT = "restore with engine 'cpu' or 'none' instead (the CPU path needs no board)"


def require_coherent(device: str, what: str) -> None:
    """Refuse a u-dma-buf buffer its module reports as not DMA-coherent: the IP would
    read stale cache lines of it, and the CPU stale lines of what the IP wrote (the
    project does no cache maintenance: docs/driver.md, "memory and coherence")."""
    if udmabuf.dma_coherent(device) is False:
        raise EngineError(f"{what} {device} is not DMA-coherent (its u-dma-buf "
                          f"dma_coherent attribute reads 0): give the buffer the "
                          f"device-tree property dma-coherent, with the IP on the "
                          f"coherent S_AXI_HPC port (docs/driver.md); "
                          f"{CPU_HINT}")


class PynqCopier(IPCopier):
    """The ``pynq`` engine's copy mode: the board's ring-mirror IP restores an image.

    The staging buffer is a u-dma-buf buffer (``staging=`` or ``$PYSHM_RESTORE_UDMABUF``,
    e.g. ``/dev/udmabuf2``) that holds no ring: the image's bytes are read into it once,
    placed by the job's first ring position, with the expected-CRC table after them, so
    it must hold the image's data + 72 KiB (the error says how much). The
    target must be a ring in DMA-able memory (``pyshm create --udmabuf``): its bus
    address comes from the header's ``data_phys_addr`` or its u-dma-buf device;
    :meth:`attach_target` refuses any other before anything is written.

    ``ip``: a :class:`RingMirror` to use (the tests pass the simulated one); otherwise
    ``overlay``/``ip_name`` find it as :class:`~pyshm.driver.engine.PynqEngine` does,
    and ``check_coherency`` refuses to run with HPC coherency off. ``job_timeout``: one
    IP job, seconds (it is aborted then). The copier holds the IP from construction to
    :meth:`close` (:mod:`pyshm.driver.owner`): a second copier, or a ``pynq`` engine, on
    the same IP is refused meanwhile with :class:`~pyshm.driver.owner.IPBusyError`.
    """

    name = "pynq"

    def __init__(self, *, staging: str | os.PathLike[str] | None = None, ip: Any = None,
                 overlay: Any = None, ip_name: str | None = None,
                 check_coherency: bool = True, job_timeout: float = 600.0, **_: Any):
        super().__init__(job_timeout)
        self._fd = -1
        self._target_bus = 0
        self._ip_lock: SegmentLock | None = None
        if ip is None:
            from .engine import check_hpc_coherency, find_mirror_ip

            try:
                ip = find_mirror_ip(overlay, ip_name)
                if check_coherency:
                    check_hpc_coherency()
            except EngineError as exc:
                raise EngineError(f"the pynq engine's copy mode: {exc}; {CPU_HINT}") from None
        if not isinstance(ip, RingMirror):
            raise InvalidParameterError(f"ip: expected a RingMirror, got {type(ip).__name__}")
        self.ip = ip
        self.check_coherency = check_coherency
        # this restore's IP until close(), before its first register access: no engine
        # starts between the verify and copy passes, no other restore interleaves jobs
        self._ip_lock = claim_ip(ip, CPU_HINT, "restoring an image through its copy mode")
        try:
            # refused now, before a restore touches anything: an IP without the mode
            # (IPMismatchError, no RESTORE_* register read), no staging buffer configured
            ip.check_id()
            ip.require_restore_mode()
            self.staging = self._staging_device(staging)
        except BaseException:
            self.close()
            raise

    def _staging_device(self, staging: str | os.PathLike[str] | None) -> udmabuf.UdmabufInfo:
        given = os.fspath(staging) if staging is not None else os.environ.get(STAGING_ENV, "")
        if not given:
            raise EngineError(f"the pynq engine restores through a u-dma-buf staging buffer "
                              f"and none is configured: set {STAGING_ENV}=/dev/udmabufN (a "
                              f"buffer that holds no ring, the image's data + 72 KiB), or "
                              f"pass staging= to the copier; "
                              f"{CPU_HINT}")
        try:
            dev = udmabuf.info(given)
        except InvalidParameterError as exc:
            raise EngineError(f"the pynq engine's staging buffer ({STAGING_ENV} or staging=): "
                              f"{exc}; {CPU_HINT}") from None
        if self.check_coherency:
            require_coherent(dev.device, "the staging buffer")
        return dev

    # ---- memory --------------------------------------------------------------------
    def _stage_map(self, total: int) -> tuple[Any, int]:
        dev = self.staging
        if total > dev.size:
            raise EngineError(f"the staging buffer {dev.device} holds {dev.size:,d} bytes; "
                              f"this restore needs {total:,d} (the image's data, its place "
                              f"in a page and the CRC table): load u-dma-buf with a larger "
                              f"buffer, or {CPU_HINT}")
        try:
            self._fd = os.open(dev.device, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
            st = os.fstat(self._fd)
            if stat.S_ISREG(st.st_mode) and st.st_size < total:  # (a test's stand-in)
                raise EngineError(f"{dev.device} is {st.st_size} bytes, shorter than its "
                                  f"sysfs size {dev.size}")
            m = mmap.mmap(self._fd, total, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as exc:
            self._stage_unmap()
            raise EngineError(f"cannot map the staging buffer {dev.device}: {exc}") from None
        except BaseException:
            self._stage_unmap()
            raise
        head = m[:len(L.MAGIC)]
        if head in (L.MAGIC, L.MAGIC_RESTORING):
            m.close()
            self._stage_unmap()
            raise EngineError(f"the staging buffer {dev.device} holds a ring; use a buffer "
                              f"of its own for {STAGING_ENV}, or {CPU_HINT}")
        return m, dev.phys_addr

    def _stage_unmap(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def attach_target(self, segment: Any) -> None:
        """The ring :meth:`copy` writes: refused unless it lives in DMA-able memory
        (another buffer than the staging one, DMA-coherent)."""
        from .engine import segment_bus_address

        bus = segment_bus_address(segment)
        if bus % PAGE:
            raise EngineError(f"{segment.name}: bus address 0x{bus:x} is not 4 KiB aligned")
        real = os.path.realpath(segment.path)
        if real == self.staging.device:
            raise EngineError(f"{segment.name} lives in the staging buffer {real}: give "
                              f"{STAGING_ENV} another u-dma-buf buffer")
        if self.check_coherency and udmabuf.sysfs_entry(real) is not None:
            require_coherent(real, f"ring {segment.name}'s buffer")
        self._target = segment
        self._target_bus = bus

    def close(self) -> None:
        """Drop the staging buffer and the IP (another process may use it then)."""
        try:
            super().close()
        finally:
            if self._ip_lock is not None:
                self._ip_lock.release()

    def _ip_for(self, ring: Any) -> RingMirror:
        ip = self.ip
        if self._ip_lock is None or not self._ip_lock.held:
            raise EngineError(f"the {self.name} copier is closed: {ip.where} may belong to "
                              f"another process now")
        if ip.read32(R.CONTROL) & R.CONTROL_ENABLE_MASK:
            raise EngineError(f"{ip.where} is mirroring (CONTROL.ENABLE set: a pynq engine "
                              f"runs on it); stop that engine first, or {CPU_HINT}")
        if ring is not None:
            if ring is not self._target:
                self.attach_target(ring)
            # every call, not once: the registers are the IP's, not this process's (an
            # engine or another restore may have used it meanwhile)
            ip.write64("RING_DATA_BASE", self._target_bus + L.OFF_DATA)
            ip.write64("RING_CAPACITY", ring_capacity(ring))
            if ip.status().config_refused:  # a job of another process is running
                ip.write32(R.STATUS, R.STATUS_CONFIG_REFUSED_MASK)
                raise RefusedError(f"{ip.where} refused the target ring's address "
                                   f"(STATUS.CONFIG_REFUSED): another restore job is "
                                   f"running on it")
        return ip
