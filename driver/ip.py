"""Driver of the ring-mirror IP, in the PYNQ way.

``RingMirror`` is a ``pynq.DefaultIP`` subclass bound to the IP's VLNV, so
``pynq.Overlay("ring_mirror_kv260.bit")`` hands it out. Every register access goes
through ``self.mmio`` (a ``pynq.MMIO``) with the named constants of ``regmap`` (generated
from hw/regmap.yaml); every wait has a timeout; a fault stops with a
:class:`MirrorFaultError` that names the fault code.

pynq is optional. Without it (the main environment has numpy 2, which pynq 4.0 refuses)
this module falls back to a minimal base class and an MMIO with pynq's REGISTER_RW
semantics (``device.read_registers``/``write_registers``), so the simulated engine runs
there too; the tests of the pynq environment drive the same class through the real
``pynq.MMIO`` and ``pynq.Device``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import EngineError, EngineTimeoutError, InvalidParameterError
from . import regmap as R

try:  # pragma: no cover - depends on the environment
    import pynq as _pynq
except ImportError:
    _pynq = None

HAVE_PYNQ = _pynq is not None


class _ShimMMIO:
    """The REGISTER_RW subset of ``pynq.MMIO``: 32-bit words through a device."""

    def __init__(self, base_addr: int, length: int, device: Any):
        if base_addr < 0 or length <= 0:
            raise ValueError(f"MMIO window 0x{base_addr:x}+{length} is invalid")
        if device is None or not device.has_capability("REGISTER_RW"):
            raise ValueError("without pynq, MMIO needs a device with REGISTER_RW capability")
        self.base_addr = base_addr
        self.length = length
        self.device = device

    def _check(self, offset: int) -> None:
        if offset % 4 or not 0 <= offset < self.length:
            raise MemoryError(f"MMIO offset 0x{offset:x} is unaligned or outside "
                              f"the {self.length}-byte window")

    def read(self, offset: int = 0, length: int = 4) -> int:
        """Read the 32-bit register at ``offset`` (4-byte accesses only)."""
        if length != 4:
            raise ValueError("only 4-byte register reads are supported")
        self._check(offset)
        return int.from_bytes(self.device.read_registers(self.base_addr + offset, 4), "little")

    def write(self, offset: int, data: int) -> None:
        """Write the 32-bit register at ``offset``."""
        self._check(offset)
        self.device.write_registers(self.base_addr + offset,
                                    (data & 0xFFFFFFFF).to_bytes(4, "little"))


class _ShimDevice:
    """Stands in for ``pynq.Device`` (register read/write capability only)."""

    capabilities: dict[str, bool] = {"REGISTER_RW": True}

    def __init__(self, tag: str, warn: bool = False):
        self.tag = tag

    def has_capability(self, cap: str) -> bool:
        """True for the capabilities this device declares (``REGISTER_RW``)."""
        return bool(self.capabilities.get(cap, False))

    def read_registers(self, address: int, length: int) -> bytes:
        """Read ``length`` bytes of registers at bus ``address`` (subclasses)."""
        raise NotImplementedError

    def write_registers(self, address: int, data: bytes) -> None:
        """Write ``data`` to the registers at bus ``address`` (subclasses)."""
        raise NotImplementedError


class _ShimIP:
    """Stands in for ``pynq.DefaultIP``: ``description`` gives the register window."""

    def __init__(self, description: dict[str, Any]):
        self.device = description.get("device")
        self.mmio = _ShimMMIO(description["phys_addr"], description["addr_range"],
                              self.device)

    def read(self, offset: int = 0) -> int:
        """Read the 32-bit register at ``offset``."""
        return self.mmio.read(offset)

    def write(self, offset: int, value: int) -> None:
        """Write the 32-bit register at ``offset``."""
        self.mmio.write(offset, value)


if _pynq is not None:  # pragma: no cover - depends on the environment
    DeviceBase: Any = _pynq.Device
    IPBase: Any = _pynq.DefaultIP
    MMIO: Any = _pynq.MMIO
else:
    DeviceBase = _ShimDevice
    IPBase = _ShimIP
    MMIO = _ShimMMIO


class MirrorFaultError(EngineError):
    """The IP stopped on a fault; ``code`` is STATUS.FAULT, ``fault`` its name,
    ``address`` the bus address involved (FAULT_ADDR) and ``position`` the ring position
    being copied (FAULT_POSITION), both None from an IP older than map 1.3."""

    def __init__(self, code: int, where: str = "ring-mirror IP", address: int | None = None,
                 position: int | None = None):
        self.code = code
        self.address = address
        self.position = position
        text = R.FAULT_NAMES.get(code, f"UNKNOWN: fault code {code} is not in the map")
        self.fault = text.split(":", 1)[0]
        detail = ""
        if address is not None and position is not None:
            detail = (f" (bus address 0x{address:x}, ring position {position})" if address
                      else f" (ring position {position})")
        super().__init__(f"{where}: stopped on fault {code} {text}{detail}")


class RefusedError(EngineError):
    """The IP ignored a register write because the engine was not stopped (STATUS bit)."""


class IPMismatchError(EngineError):
    """The register window does not hold a ring-mirror IP of a version this driver knows."""


@dataclass(frozen=True)
class HwConfig:
    data_bytes: int
    addr_width: int
    max_burst: int
    max_outstanding: int

    @classmethod
    def decode(cls, word: int) -> HwConfig:
        """Split a HW_CONFIG register value into its fields."""
        def f(mask: int, shift: int) -> int:
            return (word & mask) >> shift
        return cls(f(R.HW_CONFIG_DATA_BYTES_MASK, R.HW_CONFIG_DATA_BYTES_SHIFT),
                   f(R.HW_CONFIG_ADDR_WIDTH_MASK, R.HW_CONFIG_ADDR_WIDTH_SHIFT),
                   f(R.HW_CONFIG_MAX_BURST_M1_MASK, R.HW_CONFIG_MAX_BURST_M1_SHIFT) + 1,
                   f(R.HW_CONFIG_MAX_OUTSTANDING_MASK, R.HW_CONFIG_MAX_OUTSTANDING_SHIFT))


@dataclass(frozen=True)
class Status:
    word: int

    @property
    def busy(self) -> bool:
        """STATUS.BUSY: a copy round is in progress."""
        return bool(self.word & R.STATUS_BUSY_MASK)

    @property
    def idle(self) -> bool:
        """STATUS.IDLE: waiting for the next poll, nothing outstanding on the bus."""
        return bool(self.word & R.STATUS_IDLE_MASK)

    @property
    def error(self) -> bool:
        """STATUS.ERROR: stopped on a fault (only SOFT_RESET restarts it)."""
        return bool(self.word & R.STATUS_ERROR_MASK)

    @property
    def overrun(self) -> bool:
        """STATUS.OVERRUN: the producer lapped the engine since the bit was cleared."""
        return bool(self.word & R.STATUS_OVERRUN_MASK)

    @property
    def fault(self) -> int:
        """STATUS.FAULT: the fault code (0 when none; docs/regmap.md lists them)."""
        return (self.word & R.STATUS_FAULT_MASK) >> R.STATUS_FAULT_SHIFT

    @property
    def load_refused(self) -> bool:
        """A MIRRORED write was ignored because the engine was not stopped (w1c)."""
        return bool(self.word & R.STATUS_LOAD_REFUSED_MASK)

    @property
    def config_refused(self) -> bool:
        """An address or geometry write was ignored while the engine ran (w1c)."""
        return bool(self.word & R.STATUS_CONFIG_REFUSED_MASK)


@dataclass(frozen=True)
class MirrorConfig:
    """Bus addresses and geometry the IP needs (docs/design.md, ring segment layout)."""

    ring_data: int
    capacity: int
    partition_size: int
    replica_data: int
    ring_tail_addr: int
    ring_intent_addr: int
    ring_mirrored_addr: int
    replica_tail_addr: int

    def validate(self, addr_width: int = 64) -> MirrorConfig:
        """Refuse what the IP would fault on, with a message naming the field."""
        cap, ps = self.capacity, self.partition_size
        if cap < 4096 or cap & (cap - 1):
            raise InvalidParameterError(f"capacity {cap} is not a power of two >= 4096")
        if ps < 64 or ps > cap or ps & (ps - 1):
            raise InvalidParameterError(f"partition size {ps} is not a power of two "
                                        f"between 64 and the capacity")
        limit = 1 << addr_width
        for name in ("ring_data", "replica_data"):
            v = getattr(self, name)
            if v % 4096:
                raise InvalidParameterError(f"{name} 0x{v:x} is not 4 KiB aligned")
            if v < 0 or v + cap > limit:
                raise InvalidParameterError(f"{name} 0x{v:x}+{cap} does not fit the IP's "
                                            f"{addr_width}-bit address space")
        for name in ("ring_tail_addr", "ring_intent_addr", "ring_mirrored_addr",
                     "replica_tail_addr"):
            v = getattr(self, name)
            if v % 8 or v < 0 or v + 8 > limit:
                raise InvalidParameterError(f"{name} 0x{v:x} is not an 8-byte aligned "
                                            f"{addr_width}-bit bus address")
        return self


class RingMirror(IPBase):  # type: ignore[misc,valid-type]
    """The ring-mirror IP (``hw/rtl/ring_mirror.v``).

    Methods that wait take ``timeout`` (seconds) and raise :class:`EngineTimeoutError`
    when it runs out; any wait also ends at once with :class:`MirrorFaultError` when the
    IP reports a fault.
    """

    bindto = list(R.BINDTO)

    def __init__(self, description: dict[str, Any]):
        super().__init__(description)
        self.where = str(description.get("fullpath", "ring-mirror IP"))
        # 64-bit reads latch _HI on _LO: a second thread between the two would read
        # another value's high word, so compound accesses are serialised
        self._lock = threading.RLock()
        self._control = 0  # last value written, so single bits can be changed
        self.map_minor = R.IP_VERSION & 0xFFFF  # check_id reads the IP's own
        self.capabilities = R.CAPABILITIES_CRC_TABLE_MASK  # check_id reads the IP's own
        self.poll_sleep = 0.0005
        self.fault_interval = 0.02

    # ---- raw access --------------------------------------------------------------
    def read32(self, offset: int) -> int:
        """Read one 32-bit register."""
        return int(self.mmio.read(offset)) & 0xFFFFFFFF

    def write32(self, offset: int, value: int) -> None:
        """Write one 32-bit register (InvalidParameterError beyond 32 bits)."""
        if not 0 <= value <= 0xFFFFFFFF:
            raise InvalidParameterError(f"register value 0x{value:x} does not fit 32 bits")
        self.mmio.write(offset, value)

    def read64(self, name: str) -> int:
        """A latched 64-bit register: _LO first (captures _HI), then _HI."""
        lo_off, hi_off = getattr(R, name + "_LO"), getattr(R, name + "_HI")
        with self._lock:
            lo = self.read32(lo_off)
            hi = self.read32(hi_off)
        return hi << 32 | lo

    def write64(self, name: str, value: int) -> None:
        """_LO then _HI (the IP acts on the _HI write, e.g. MIRRORED's start position)."""
        if not 0 <= value < 1 << 64:
            raise InvalidParameterError(f"{name}: 0x{value:x} does not fit 64 bits")
        with self._lock:
            self.write32(getattr(R, name + "_LO"), value & 0xFFFFFFFF)
            self.write32(getattr(R, name + "_HI"), value >> 32)

    # ---- identification ----------------------------------------------------------
    def check_id(self) -> HwConfig:
        """Refuse a window that is not this IP, or a register map of another major version."""
        ident = self.read32(R.ID)
        if ident != R.IP_ID:
            raise IPMismatchError(f"{self.where}: ID register reads 0x{ident:08x}, expected "
                                  f"0x{R.IP_ID:08x}: not a ring-mirror IP at this address")
        version = self.read32(R.VERSION)
        if version >> 16 != R.IP_VERSION >> 16:
            raise IPMismatchError(f"{self.where}: register map version {version >> 16}."
                                  f"{version & 0xFFFF}, this driver speaks "
                                  f"{R.IP_VERSION >> 16}.x")
        self.map_minor = version & 0xFFFF
        # map 1.5 made the CRC table unit a build option and reports it in CAPABILITIES;
        # every 1.4 IP has it, older ones have none (and answer SLVERR at that offset)
        if self.map_minor >= 5:
            self.capabilities = self.read32(R.CAPABILITIES)
        else:
            self.capabilities = R.CAPABILITIES_CRC_TABLE_MASK if self.map_minor == 4 else 0
        return self.hw_config()

    def hw_config(self) -> HwConfig:
        """The IP's build parameters (HW_CONFIG)."""
        return HwConfig.decode(self.read32(R.HW_CONFIG))

    # ---- state -------------------------------------------------------------------
    def status(self) -> Status:
        """The STATUS register, decoded."""
        return Status(self.read32(R.STATUS))

    def check_fault(self, st: Status | None = None) -> Status:
        """STATUS, or MirrorFaultError when the IP stopped on a fault."""
        st = self.status() if st is None else st
        if st.error:
            raise self.fault_error(st)
        return st

    def fault_error(self, st: Status, where: str | None = None) -> MirrorFaultError:
        """The fault in ``st`` with its details (map 1.3 added FAULT_ADDR/POSITION)."""
        addr = pos = None
        if self.map_minor >= 3:
            addr, pos = self.read64("FAULT_ADDR"), self.read64("FAULT_POSITION")
        return MirrorFaultError(st.fault, where or self.where, addr, pos)

    def counters(self) -> dict[str, int]:
        """The 64-bit counters (mirrored, tail seen, bytes copied, bursts, overruns,
        busy cycles), each read ``_LO`` first.
        """
        return {name.lower(): self.read64(name)
                for name in ("MIRRORED", "TAIL_SEEN", "BYTES_COPIED", "BURSTS", "OVERRUNS",
                             "BUSY_CYCLES")}

    def consistent_progress(self, tries: int = 8) -> tuple[int, int]:
        """(MIRRORED, BYTES_COPIED) from the same publish: both change together, so a
        BYTES_COPIED that reads the same before and after MIRRORED pins MIRRORED to it."""
        with self._lock:
            for _ in range(tries):
                before = self.read64("BYTES_COPIED")
                mirrored = self.read64("MIRRORED")
                if self.read64("BYTES_COPIED") == before:
                    return mirrored, before
        raise EngineError(f"{self.where}: MIRRORED and BYTES_COPIED kept changing over "
                          f"{tries} attempts")

    # ---- waits -------------------------------------------------------------------
    def wait(self, pred: Callable[[], bool], timeout: float, what: str,
             fault_check: bool = True) -> None:
        """Poll ``pred`` until true; a fault or the timeout ends the wait with an error."""
        if timeout < 0:
            raise InvalidParameterError(f"timeout {timeout} must be >= 0")
        deadline = time.monotonic() + timeout
        next_check = 0.0
        while True:
            if pred():
                return
            now = time.monotonic()
            # STATUS at most every fault_interval: on a simulated bus every read costs
            # the simulator time, and a fault is rare
            if fault_check and now >= next_check:
                self.check_fault()
                next_check = now + self.fault_interval
            if now >= deadline:
                raise EngineTimeoutError(f"{self.where}: {what} did not happen within "
                                         f"{timeout:g} s (STATUS 0x{self.status().word:x})")
            time.sleep(self.poll_sleep)

    # ---- control -----------------------------------------------------------------
    def _set_control(self, value: int) -> None:
        with self._lock:
            self._control = value & (R.CONTROL_ENABLE_MASK | R.CONTROL_IRQ_ENABLE_MASK)
            self.write32(R.CONTROL, value)

    def configure(self, cfg: MirrorConfig, poll_interval: int = 16,
                  irq_progress: int = 0, watchdog: int | None = None) -> None:
        """Program addresses and geometry; only while stopped (the IP ignores address
        writes otherwise and says so in STATUS.CONFIG_REFUSED). ``watchdog``: clock cycles
        without any AXI4 handshake, while work is outstanding, before fault WATCHDOG
        (0: off; None: leave the IP's value, 2^20 after reset)."""
        if watchdog is not None and not 0 <= watchdog <= 0xFFFFFFFF:
            raise InvalidParameterError(f"watchdog {watchdog} must be 0..2^32-1 cycles")
        with self._lock:
            if self.read32(R.CONTROL) & R.CONTROL_ENABLE_MASK:
                raise EngineError(f"{self.where}: configure while ENABLE is set")
            cfg.validate(self.hw_config().addr_width)
            self.write64("RING_DATA_BASE", cfg.ring_data)
            self.write64("RING_CAPACITY", cfg.capacity)
            self.write64("PARTITION_SIZE", cfg.partition_size)
            self.write64("REPLICA_DATA_BASE", cfg.replica_data)
            self.write64("RING_TAIL_ADDR", cfg.ring_tail_addr)
            self.write64("RING_INTENT_ADDR", cfg.ring_intent_addr)
            self.write64("RING_MIRRORED_ADDR", cfg.ring_mirrored_addr)
            self.write64("REPLICA_TAIL_ADDR", cfg.replica_tail_addr)
            self.write32(R.POLL_INTERVAL, poll_interval)
            self.write32(R.IRQ_PROGRESS, irq_progress)
            if watchdog is not None:
                if self.map_minor < 3:
                    raise EngineError(f"{self.where}: register map 1.{self.map_minor} has no "
                                      f"WATCHDOG (1.3 or later)")
                self.write32(R.WATCHDOG, watchdog)
            if self.map_minor >= 3 and self.status().config_refused:
                self.write32(R.STATUS, R.STATUS_CONFIG_REFUSED_MASK)
                raise RefusedError(f"{self.where}: the IP refused the configuration "
                                   f"(STATUS.CONFIG_REFUSED): it was not stopped")

    def soft_reset(self, timeout: float) -> None:
        """Clear fault, counters, MIRRORED and interrupts (the IP waits until quiet)."""
        with self._lock:
            self._set_control(0)
            self.write32(R.CONTROL, R.CONTROL_SOFT_RESET_MASK)
        self.wait(lambda: not self.read32(R.CONTROL) & R.CONTROL_SOFT_RESET_MASK, timeout,
                  "SOFT_RESET", fault_check=False)
        st = self.status()
        if st.error:
            raise self.fault_error(st, self.where + " (still faulted after SOFT_RESET)")

    def set_start(self, position: int) -> None:
        """Where copying starts: everything below ``position`` counts as mirrored."""
        if position % 8:
            raise InvalidParameterError(f"start position {position} is not a multiple of 8")
        with self._lock:
            if self.read32(R.CONTROL) & R.CONTROL_ENABLE_MASK:
                raise EngineError(f"{self.where}: MIRRORED written while ENABLE is set")
            self.write64("MIRRORED", position)
            if self.map_minor >= 3 and self.status().load_refused:
                self.write32(R.STATUS, R.STATUS_LOAD_REFUSED_MASK)
                raise RefusedError(f"{self.where}: the IP refused the start position "
                                   f"{position} (STATUS.LOAD_REFUSED): it was not stopped")

    # ---- restore copy mode (map 1.6) ----------------------------------------------
    def has_restore_mode(self) -> bool:
        """Whether the IP has the restore copy mode (map 1.6 and CAPABILITIES.RESTORE;
        after check_id)."""
        return self.map_minor >= 6 and bool(self.capabilities & R.CAPABILITIES_RESTORE_MASK)

    def require_restore_mode(self) -> None:
        """IPMismatchError saying why, when the IP has no restore copy mode."""
        if not self.has_restore_mode():
            why = ("built without it (RESTORE=0)" if self.map_minor >= 6 else
                   "the mode came with map 1.6")
            raise IPMismatchError(f"{self.where}: this ring-mirror IP (register map "
                                  f"1.{self.map_minor}) has no restore copy mode ({why}); "
                                  f"restore with engine 'cpu' or 'none'")

    def restore_job(self, *, source: int, table: int, position: int, length: int,
                    chunk: int, verify: bool, timeout: float) -> None:
        """Run one job of the restore copy mode and wait for its end (docs/hw.md, "Restore
        copy mode"): ``length`` bytes at bus address ``source`` in chunks of ``chunk``
        bytes, each checked against its u32 at ``table + 4 * i``; copied into the ring
        configured by :meth:`configure` at ``position`` unless ``verify``. Mirroring must
        be stopped. A chunk whose CRC differs raises
        :class:`~pyshm.engine.CopyChecksumError` with its index; any other fault a
        :class:`MirrorFaultError`; a job that does not end in ``timeout`` is aborted and
        raises EngineTimeoutError."""
        from ..engine import CopyChecksumError

        self.require_restore_mode()
        with self._lock:
            st = self.read32(R.RESTORE_STATUS)
            if st & R.RESTORE_STATUS_BUSY_MASK:
                raise RefusedError(f"{self.where}: a restore job is already running")
            self.write32(R.RESTORE_STATUS, R.RESTORE_STATUS_REFUSED_MASK)
            self.write32(R.RESTORE_CHUNK_SIZE, chunk)
            self.write64("RESTORE_SOURCE", source)
            self.write64("RESTORE_TABLE", table)
            self.write64("RESTORE_POSITION", position)
            self.write64("RESTORE_LENGTH", length)
            if self.read32(R.RESTORE_STATUS) & R.RESTORE_STATUS_REFUSED_MASK:
                raise RefusedError(f"{self.where}: the restore job's registers were refused")
            self.write32(R.RESTORE_CONTROL, R.RESTORE_CONTROL_START_MASK
                         | (R.RESTORE_CONTROL_VERIFY_ONLY_MASK if verify else 0))

            def ended() -> bool:
                return not (self.read32(R.RESTORE_CONTROL) & R.RESTORE_CONTROL_START_MASK)

            try:
                self.wait(ended, timeout, "the restore job's end", fault_check=False)
            except EngineTimeoutError:
                self.write32(R.RESTORE_CONTROL, R.RESTORE_CONTROL_ABORT_MASK)
                raise
            st = self.read32(R.RESTORE_STATUS)
            if st & R.RESTORE_STATUS_DONE_MASK:
                return
            code = (st & R.RESTORE_STATUS_FAULT_MASK) >> R.RESTORE_STATUS_FAULT_SHIFT
            index = self.read32(R.RESTORE_FAULT_CHUNK)
            if code == R.FAULT_CRC_MISMATCH:
                raise CopyChecksumError(
                    f"{self.where}: chunk {index}: checksum mismatch (the engine computed "
                    f"0x{self.read32(R.RESTORE_CRC_SEEN):08x})", index)
            raise MirrorFaultError(code, f"{self.where} (restore copy mode, chunk {index})",
                                   self.read64("RESTORE_FAULT_ADDR"), position + index * chunk)

    # ---- replica CRC table (map 1.4) ----------------------------------------------
    @property
    def has_crc_unit(self) -> bool:
        """The IP keeps a replica CRC table: map 1.4, or 1.5 and later built with the unit
        (CAPABILITIES.CRC_TABLE; after check_id)."""
        return bool(self.capabilities & R.CAPABILITIES_CRC_TABLE_MASK)

    def crc_configure(self, enable: bool, seed: int = 0) -> None:
        """Keep the replica's CRC table while mirroring (CRC_CONFIG.ENABLE), the first
        round continuing ``seed``, the CRC of the start block's bytes below the start
        position. Only while stopped, like the addresses."""
        if not self.has_crc_unit:
            if enable:
                raise EngineError(f"{self.where}: the IP has no CRC table unit (register map "
                                  f"1.{self.map_minor}; built with CRC_TABLE=0, or older "
                                  f"than 1.4)")
            return
        if not 0 <= seed <= 0xFFFFFFFF:
            raise InvalidParameterError(f"CRC seed 0x{seed:x} does not fit 32 bits")
        with self._lock:
            if self.read32(R.CONTROL) & R.CONTROL_ENABLE_MASK:
                raise EngineError(f"{self.where}: CRC_CONFIG written while ENABLE is set")
            self.write32(R.CRC_CONFIG, R.CRC_CONFIG_ENABLE_MASK if enable else 0)
            self.write32(R.CRC_SEED, seed)
            if self.status().config_refused:
                self.write32(R.STATUS, R.STATUS_CONFIG_REFUSED_MASK)
                raise RefusedError(f"{self.where}: the IP refused CRC_CONFIG "
                                   f"(STATUS.CONFIG_REFUSED): it was not stopped")

    def crc_blocks(self) -> int:
        """CRC_BLOCKS: blocks checksummed since the last SOFT_RESET (wraps at 2^32)."""
        return self.read32(R.CRC_BLOCKS) if self.has_crc_unit else 0

    def enable(self) -> None:
        """Start continuous mirroring (CONTROL.ENABLE); refuses while a fault is latched."""
        self.check_fault()
        self._set_control(self._control | R.CONTROL_ENABLE_MASK)

    def disable(self, timeout: float) -> None:
        """Clear ENABLE and wait until the copy in progress is published and the IP idle."""
        self._set_control(self._control & ~R.CONTROL_ENABLE_MASK)
        self.wait(lambda: self._quiet(self.status()), timeout, "stop (STATUS.IDLE)")

    @staticmethod
    def _quiet(st: Status) -> bool:
        return st.idle and not st.busy

    def sync_once(self, timeout: float) -> None:
        """One copy round even while disabled; returns when CONTROL.SYNC reads 0."""
        with self._lock:
            self.write32(R.CONTROL, self._control | R.CONTROL_SYNC_MASK)
        self.wait(lambda: not self.read32(R.CONTROL) & R.CONTROL_SYNC_MASK, timeout,
                  "SYNC round")
        # map 1.3: a round that faulted ends SYNC too; say why instead of returning
        self.check_fault()

    @property
    def enabled(self) -> bool:
        """True while CONTROL.ENABLE is set by this driver."""
        return bool(self._control & R.CONTROL_ENABLE_MASK)

    def clear_overrun(self) -> None:
        """Clear STATUS.OVERRUN and the overrun interrupt."""
        self.write32(R.STATUS, R.STATUS_OVERRUN_MASK)
        self.write32(R.IRQ_STATUS, R.IRQ_STATUS_OVERRUN_MASK)
