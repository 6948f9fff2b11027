"""State regions: N rows of a numpy structured dtype in shared memory.

One process writes (:meth:`State.writer` returns the role, like ``Ring.producer``), any
number read. Every row is guarded by a seqlock and the region by an epoch that is odd
while a transaction (the rows one record changes) is in progress, so

* :meth:`State.read` returns a row as it was between two writes of it, never torn;
* :meth:`State.to_numpy` returns every row as of one commit, with the ring sequence
  (``applied_seq``) that commit applied;
* a snapshot fixes a cut at a commit and copies the region while the writer goes on:
  the writer saves a chunk's pre-image before its first write into it (copy-on-write,
  16 KiB chunks), so it waits at most one chunk copy, never for the whole snapshot.

The hot paths are single calls into the C core (``pyshm.state._state_c``) on pointers
taken once when the region is mapped. See docs/state.md.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import (
    ClosedError,
    CorruptSegmentError,
    InvalidParameterError,
    PyshmError,
    RingExistsError,
)
from ..ring import pid_alive
from ..segment import Segment, resolve_path
from . import dtypes
from . import layout as SL
from ._state_c import ffi, lib
from .errors import (
    StateBusyError,
    StateInconsistentError,
    StateMismatchError,
    WriterBusyError,
)

__all__ = ["State", "StateWriter", "Capture", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = 10.0
_NO_SEQ = SL.NO_SEQUENCE

W = {name: getattr(lib, f"PYSHM_SW_{name}") for name in (
    "EPOCH", "APPLIED", "W_PID", "W_SLOT", "W_RING_ID", "W_HEARTBEAT", "C_PID", "C_GEN",
    "C_ACTIVE", "C_SEQ", "C_EPOCH", "C_STARTED", "H_STATE", "H_NEW_PID", "H_OLD_PID",
    "H_CLAIM", "H_FINAL", "H_NS", "I_REGION", "I_SOURCE", "I_SOURCE_SEQ",
    "I_RETAIN_SEQ", "I_RETAIN_POS", "I_RETAIN_RING")}


def _seq_or_none(v: int) -> int | None:
    return None if v == _NO_SEQ else int(v)


def _new_region_id() -> int:
    return secrets.randbits(63) | 1


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


@dataclass
class Capture:
    """Every row of a region as of one commit (``seq`` = its applied_seq, None if the
    writer never committed a sequence)."""

    rows: np.ndarray
    versions: np.ndarray | None
    seq: int | None
    epoch: int
    method: str               # "optimistic" (no writer active) or "cut" (copy-on-write)
    seconds: float            # the whole capture
    hold_ns: int = 0          # how long fixing the cut took (the epoch's cut bit was set)
    copied_live: int = 0      # chunks copied from the live rows ...
    copied_shadow: int = 0    # ... and from pre-images the writer saved


def _remove_dead_temps(path: str) -> None:
    """Remove ``NAME.creating-PID-*`` temporaries whose creator no longer runs."""
    directory, base = os.path.dirname(path), os.path.basename(path)
    prefix = f"{base}.creating-"
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for entry in names:
        if entry.startswith(prefix):
            pid = entry[len(prefix):].split("-", 1)[0]
            if pid.isdigit() and not pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(directory, entry))


def is_region(spec: str | os.PathLike[str]) -> bool:
    """True when ``spec`` names a segment (or file) starting with the state magic."""
    from ..errors import InvalidNameError, PyshmError
    from ..images.format import open_regular
    try:
        fd = open_regular(resolve_path(spec))  # never waits on a FIFO
    except (PyshmError, InvalidNameError):
        return False
    try:
        return os.pread(fd, len(SL.MAGIC), 0) == SL.MAGIC
    except OSError:
        return False
    finally:
        os.close(fd)


def list_regions(directory: str = "/dev/shm") -> list[dict[str, Any]]:
    """The state regions in ``directory`` (recognised by their magic, headers read with
    ``pread``: nothing is mapped, no role is taken)."""
    import struct

    out: list[dict[str, Any]] = []
    try:
        entries = sorted(os.listdir(directory))
    except OSError:
        return out
    for entry in entries:
        path = os.path.join(directory, entry)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            continue
        try:
            head = os.pread(fd, SL.HEADER_SIZE, 0)
            size = os.fstat(fd).st_size
        except OSError:
            continue
        finally:
            os.close(fd)
        if head[:8] != SL.MAGIC:
            continue
        try:
            p = SL.unpack_static_header(head, f"state region {entry!r}", size)
        except PyshmError as exc:
            out.append({"name": entry, "error": str(exc)})
            continue
        if len(head) < SL.HEADER_SIZE:
            continue
        seq, = struct.unpack_from("<Q", head, SL.OFF_APPLIED_SEQ)
        wpid, = struct.unpack_from("<q", head, SL.OFF_WRITER + SL.W_PID)
        out.append({"name": entry, "rows": p.row_count, "itemsize": p.itemsize,
                    "replica": p.is_replica, "applied_seq": _seq_or_none(seq),
                    "writer_pid": wpid or None,
                    "writer_alive": pid_alive(wpid) if wpid else None,
                    "bytes": size})
    return out


class State:
    """A state region, created or attached by name (``/dev/shm`` name or file path).

    ``State(name, create=True, dtype=..., rows=N)`` creates it (owner-only, 0600);
    ``State(name)`` attaches. With ``exist_ok`` an existing region with the same dtype
    and row count is attached instead of refused.
    """

    def __init__(self, name: str | os.PathLike[str], *, create: bool = False,
                 dtype: Any = None, rows: int | None = None, mode: int = 0o600,
                 exist_ok: bool = False, readonly: bool = False, prefault: bool = False,
                 chunk_rows: int | None = None, timeout: float = DEFAULT_TIMEOUT,
                 _replica_of: State | None = None):
        self._seg: Segment | None = None
        self._ptr: Any = None
        self._c: Any = None
        self._writer: StateWriter | None = None
        self._views: list[Any] = []
        self.timeout = float(timeout)
        where = f"state region {os.fspath(name)!r}"
        if create:
            if dtype is None or rows is None:
                raise InvalidParameterError(f"{where}: creating a region needs a dtype and "
                                            f"a row count")
            desc = dtypes.describe(dtype)
            if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)):
                raise InvalidParameterError(f"{where}: rows must be an integer, got {rows!r}")
            itemsize = np.dtype(dtypes.parse(desc)).itemsize
            cr = int(chunk_rows) if chunk_rows is not None else SL.default_chunk_rows(itemsize)
            geo = SL.check_geometry(int(rows), itemsize, len(desc), cr, where)
            self._seg = self._create(name, desc, int(rows), itemsize, cr, geo.segment_size,
                                     mode, exist_ok, prefault, _replica_of, where)
        else:
            self._seg = Segment(name, readonly=readonly, prefault=prefault)
        try:
            self._attach()
            if create and not self._seg.created:
                self._check_same(desc, int(rows or 0))
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------ set-up
    @classmethod
    def _create(cls, name: str | os.PathLike[str], desc: str, rows: int, itemsize: int,
                chunk_rows: int, size: int, mode: int, exist_ok: bool, prefault: bool,
                replica_of: State | None, where: str) -> Segment:
        """Build the region under a temporary name and link it into place, so that a
        creator killed half-way leaves no half-initialised region under the real name
        (only a temporary that the next creation in the directory removes)."""
        path = resolve_path(name)
        if os.path.exists(path):
            if exist_ok:
                seg = Segment(name, prefault=prefault)
                return seg
            raise RingExistsError(f"{where} already exists; attach to it, or remove it "
                                  f"with `pyshm state rm {os.fspath(name)}`")
        _remove_dead_temps(path)
        tmp = f"{path}.creating-{os.getpid()}-{secrets.token_hex(4)}"
        seg = Segment(tmp, create=True, size=size, mode=mode)
        try:
            cls._initialise(seg, desc, rows, itemsize, chunk_rows, replica_of)
            seg.close()
            try:
                os.link(tmp, path)  # unlike rename, refuses a name that appeared meanwhile
            except FileExistsError:
                if not exist_ok:
                    raise RingExistsError(f"{where} already exists (created meanwhile by "
                                          f"another process)") from None
                return Segment(name, prefault=prefault)
            out = Segment(name, prefault=prefault)
            out.created = True
            return out
        finally:
            seg.close()
            seg.unlink()

    @staticmethod
    def _initialise(seg: Segment, desc: str, rows: int, itemsize: int, chunk_rows: int,
                    replica_of: State | None) -> None:
        from ..images.format import crc

        raw = desc.encode("ascii")
        flags = SL.FLAG_REPLICA if replica_of is not None else 0
        params = SL.StateParams(rows, itemsize, len(raw), chunk_rows, crc(raw), flags,
                                time.time_ns(), os.getpid(), seg.name)
        buf = seg.buf
        try:
            buf[SL.OFF_DESC:SL.OFF_DESC + len(raw)] = raw
            words = np.frombuffer(buf, dtype="<u8", count=SL.HEADER_SIZE // 8)
            words[SL.OFF_APPLIED_SEQ // 8] = _NO_SEQ
            words[(SL.OFF_WRITER + SL.W_SLOT) // 8] = (1 << 64) - 1  # -1: no ring slot
            words[(SL.OFF_IDENTITY + SL.I_REGION_ID) // 8] = _new_region_id()
            del words
            head = SL.pack_static_header(params)
            # magic last: an attacher racing the creator sees "not a state region yet"
            buf[8:SL.STATIC_SIZE] = head[8:]
            buf[0:8] = head[:8]
        finally:
            buf.release()

    def _attach(self) -> None:
        seg = self._seg
        assert seg is not None
        where = f"state region {seg.name!r}"
        head = seg.buf[:SL.STATIC_SIZE]
        try:
            p = SL.unpack_static_header(head, where, seg.size)
        finally:
            head.release()
        self.params = p
        geo = p.geometry
        raw = bytes(seg.buf[SL.OFF_DESC:SL.OFF_DESC + p.desc_length])
        from ..images.format import crc
        if crc(raw) != p.desc_crc:
            raise CorruptSegmentError(f"{where}: dtype description checksum mismatch (the "
                                      f"description is damaged)")
        self.dtype = dtypes.parse(raw, where=where)
        self.description = raw.decode("ascii")
        if self.dtype.itemsize != p.itemsize:
            raise CorruptSegmentError(f"{where}: the header says rows of {p.itemsize} "
                                      f"bytes, its dtype has {self.dtype.itemsize}")
        self._ptr = ffi.from_buffer(seg.mmap)
        self._c = ffi.new("pyshm_state_t *")
        rc = lib.pyshm_state_open(self._c, self._ptr, seg.size, p.row_count, p.itemsize,
                                  p.desc_length, p.chunk_rows)
        if rc != 0:
            raise CorruptSegmentError(f"{where}: the region's sizing fields disagree with "
                                      f"the mapping (code {rc})")
        self._spin_ns = int(self._c.spin_ns)
        # unguarded views, for the writer's own reads and for tests/benchmarks
        self._rows = np.frombuffer(seg.mmap, dtype=self.dtype, count=p.row_count,
                                   offset=geo.off_rows)
        self._versions = np.frombuffer(seg.mmap, dtype="<u8", count=p.row_count,
                                       offset=geo.off_versions)
        self._views += [self._rows, self._versions]
        # one-row scratch buffer with its pointer taken once (no per-call from_buffer)
        self._scratch = np.zeros(1, self.dtype)
        self._scratch_ptr = ffi.cast("uint8_t *", ffi.from_buffer(self._scratch))

    def _check_same(self, desc: str, rows: int) -> None:
        if self.description != desc or self.params.row_count != rows:
            raise StateMismatchError(
                f"state region {self.name!r} exists with {self.params.row_count} rows of "
                f"{self.dtype}, not the {rows} rows of {dtypes.parse(desc)} asked for")

    @classmethod
    def create(cls, name: str | os.PathLike[str], dtype: Any, rows: int, **kw: Any) -> State:
        """Make a new region of ``rows`` rows of ``dtype`` (``State(name, create=True, ...)``)."""
        return cls(name, create=True, dtype=dtype, rows=rows, **kw)

    @classmethod
    def attach(cls, name: str | os.PathLike[str], **kw: Any) -> State:
        """Attach to an existing region (``State(name, **kw)``)."""
        return cls(name, **kw)

    # ------------------------------------------------------------ properties
    def _h(self) -> Any:
        if self._c is None:
            raise ClosedError(f"state region {self.name!r} is closed")
        return self._c

    @property
    def segment(self) -> Segment:
        """The mapped :class:`~pyshm.segment.Segment` under the region."""
        if self._seg is None:
            raise ClosedError("state region is closed")
        return self._seg

    @property
    def name(self) -> str:
        """The region's name (a /dev/shm name, or its path)."""
        return self._seg.name if self._seg is not None else "?"

    @property
    def path(self) -> str:
        """The file that holds the region."""
        return self.segment.path

    @property
    def rows(self) -> int:
        """Number of rows."""
        return self.params.row_count

    def __len__(self) -> int:
        return self.params.row_count

    @property
    def itemsize(self) -> int:
        """Bytes per row (the dtype's size)."""
        return self.params.itemsize

    @property
    def readonly(self) -> bool:
        """True when mapped read-only."""
        return self.segment.readonly

    @property
    def is_replica(self) -> bool:
        """True for a replica of another region."""
        return self.params.is_replica

    def _load(self, which: str) -> int:
        return int(lib.pyshm_state_load(self._h(), W[which]))

    def _store(self, which: str, value: int) -> None:
        lib.pyshm_state_store(self._h(), W[which], value & ((1 << 64) - 1))

    def _cas(self, which: str, expected: int, desired: int) -> tuple[bool, int]:
        exp = ffi.new("uint64_t *", expected & ((1 << 64) - 1))
        ok = bool(lib.pyshm_state_cas(self._h(), W[which], exp,
                                      desired & ((1 << 64) - 1)))
        return ok, int(exp[0])

    @property
    def applied_seq(self) -> int | None:
        """The last ring sequence the writer committed (None before the first)."""
        return _seq_or_none(self._load("APPLIED"))

    @property
    def epoch(self) -> int:
        """The region epoch: odd while a transaction is in progress."""
        return self._load("EPOCH") & ~SL.EPOCH_CUT

    @property
    def writer_pid(self) -> int:
        """Pid of the attached writer, 0 when none."""
        return _signed(self._load("W_PID"))

    @property
    def region_id(self) -> int:
        """The region's identity (random, written at creation)."""
        return self._load("I_REGION")

    @property
    def source_id(self) -> int:
        """For a replica: the region_id of the region it mirrors (0 if none yet)."""
        return self._load("I_SOURCE")

    def info(self) -> dict[str, Any]:
        """Everything ``pyshm state info`` shows, as plain data."""
        wpid = self.writer_pid
        cut_pid = _signed(self._load("C_PID"))
        ho = self._load("H_STATE")
        out: dict[str, Any] = {
            "name": self.name, "path": self.path, "rows": self.rows,
            "itemsize": self.itemsize, "dtype": dtypes.fields_summary(self.dtype),
            "description": self.description, "replica": self.is_replica,
            "segment_bytes": self.segment.size, "applied_seq": self.applied_seq,
            "epoch": self.epoch, "in_transaction": bool(self.epoch & 1),
            "writer_pid": wpid or None, "writer_alive": pid_alive(wpid) if wpid else None,
            "region_id": f"{self.region_id:016x}",
            "created_ns": self.params.created_ns, "creator_pid": self.params.creator_pid,
            "chunk_rows": self.params.chunk_rows,
            "cut": {"pid": cut_pid or None, "active": bool(self._load("C_ACTIVE")),
                    "generation": self._load("C_GEN"),
                    "last_seq": _seq_or_none(self._load("C_SEQ"))
                    if self._load("C_GEN") else None},
            "handover": {"state": SL.HO_STATE_NAMES.get(ho, str(ho)),
                         "new_pid": _signed(self._load("H_NEW_PID")) or None,
                         "old_pid": _signed(self._load("H_OLD_PID")) or None,
                         "final_seq": _seq_or_none(self._load("H_FINAL"))
                         if ho >= SL.HO_RELEASED else None},
        }
        if self.is_replica:
            out["source_id"] = f"{self.source_id:016x}"
            out["consistent_seq"] = self.applied_seq
        return out

    # ------------------------------------------------------------ readers
    def _error(self, rc: int, what: str) -> PyshmError:
        c = self._c
        where = f"state region {self.name!r} {what}"
        if rc == lib.PYSHM_STATE_E_PARAM:
            return InvalidParameterError(f"{where}: row {int(c.last_error_row)} is out of "
                                         f"range 0..{self.rows - 1}")
        if rc == lib.PYSHM_STATE_E_BUSY:
            wpid = self.writer_pid
            if wpid and not pid_alive(wpid):
                return StateInconsistentError(
                    f"{where}: row {int(c.last_error_row)} was being written when its "
                    f"writer (pid {wpid}) died; recover the region (pyshm.recover)")
            return StateBusyError(f"{where}: row {int(c.last_error_row)} stayed locked by "
                                  f"its writer (pid {wpid}) for {self.timeout:.0f} s")
        if rc == lib.PYSHM_STATE_E_CORRUPT:
            return CorruptSegmentError(f"{where}: the region is corrupt")
        return PyshmError(f"{where}: state core error {rc}")

    def _retry(self, call: Any, what: str) -> int:
        """Run a C call that spins at most ~2 ms; repeat it while the other party lives,
        up to ``timeout``."""
        deadline = time.monotonic() + self.timeout
        while True:
            rc = int(call())
            if rc != lib.PYSHM_STATE_E_BUSY:
                return rc
            wpid = self.writer_pid
            if (wpid and not pid_alive(wpid)) or time.monotonic() > deadline:
                raise self._error(rc, what)

    def read(self, i: int) -> np.void:
        """Row ``i``, copied intact (read-only ``np.void``; write with the writer)."""
        rc = lib.pyshm_state_read(self._h(), i, self._scratch_ptr) if 0 <= i else -1
        if rc != 0:
            if i < 0:
                i += self.rows
                if i < 0:
                    raise InvalidParameterError(f"state region {self.name!r}: row {i - self.rows}"
                                                f" is out of range")
                return self.read(i)
            rc = self._retry(lambda: lib.pyshm_state_read(self._c, i, self._scratch_ptr),
                             f"read of row {i}")
            if rc != 0:
                raise self._error(rc, f"read of row {i}")
        return np.frombuffer(ffi.buffer(self._scratch_ptr, self.itemsize)[:], self.dtype)[0]

    def read_batch(self, indices: Any) -> np.ndarray:
        """Rows ``indices`` (an integer array or sequence), each copied intact."""
        idx = np.ascontiguousarray(indices, dtype=np.int64).ravel()
        if len(idx) and (idx.min() < 0 or idx.max() >= self.rows):
            bad = int(idx[(idx < 0) | (idx >= self.rows)][0])
            raise InvalidParameterError(f"state region {self.name!r}: row {bad} is out of "
                                        f"range 0..{self.rows - 1}")
        out = np.empty(len(idx), self.dtype)
        if not len(idx):
            return out
        ip = ffi.cast("uint64_t *", ffi.from_buffer(idx))
        op = ffi.cast("uint8_t *", ffi.from_buffer(out))
        rc = self._retry(lambda: lib.pyshm_state_read_many(self._h(), ip, op, len(idx)),
                         "read_batch")
        if rc < 0:
            raise self._error(rc, "read_batch")
        return out

    def capture(self, *, method: str = "auto", versions: bool = False,
                timeout: float | None = None, out: np.ndarray | None = None) -> Capture:
        """All rows as of one commit.

        ``method``: ``optimistic`` copies while no transaction is open and retries if one
        began (only reads the region: works on a read-only attach); ``cut`` fixes a cut
        and copies with the writer's copy-on-write help (the writer waits at most one
        chunk copy); ``auto`` tries optimistic for ~2 ms, then cuts (if the mapping is
        writable). ``out``: an array of ``rows`` rows of the dtype to fill (reused
        between captures, no page faults).
        """
        if method not in ("auto", "optimistic", "cut"):
            raise InvalidParameterError(f"capture method {method!r}: use auto, optimistic "
                                        f"or cut")
        c = self._h()
        timeout = self.timeout if timeout is None else timeout
        if out is None:
            out = np.empty(self.rows, self.dtype)
        elif out.dtype != self.dtype or out.shape != (self.rows,) \
                or not out.flags.c_contiguous:
            raise InvalidParameterError(f"capture buffer must be a contiguous array of "
                                        f"{self.rows} rows of the region's dtype")
        vers = np.empty(self.rows, np.uint64) if versions else None
        op = ffi.cast("uint8_t *", ffi.from_buffer(out))
        vp = ffi.cast("uint64_t *", ffi.from_buffer(vers)) if vers is not None else ffi.NULL
        t0 = time.perf_counter()
        deadline = time.monotonic() + timeout
        if method in ("auto", "optimistic"):
            seq_p = ffi.new("uint64_t *")
            ep_p = ffi.new("uint64_t *")
            while True:
                rc = lib.pyshm_state_read_all(c, op, vp, seq_p, ep_p)
                if rc == 0:
                    return Capture(out, vers, _seq_or_none(int(seq_p[0])), int(ep_p[0]),
                                   "optimistic", time.perf_counter() - t0)
                if method == "auto" and not self.readonly:
                    break
                self._check_writer_alive("consistent read")
                if time.monotonic() > deadline:
                    raise StateBusyError(f"state region {self.name!r}: the writer kept "
                                         f"committing for {timeout:.0f} s; no consistent "
                                         f"read without a cut (attach writable)")
        if self.readonly:
            raise InvalidParameterError(f"state region {self.name!r} is attached read-only: "
                                        f"a cut needs a writable mapping")
        return self._cut(out, vers, op, vp, deadline, t0)

    def _check_writer_alive(self, what: str) -> None:
        wpid = self.writer_pid
        if self.epoch & 1 and (not wpid or not pid_alive(wpid)):
            raise StateInconsistentError(
                f"state region {self.name!r}: {what}: the writer (pid {wpid or '?'}) died inside "
                f"a transaction at epoch {self.epoch}; the region is inconsistent: recover "
                f"it (pyshm.recover / `pyshm state recover`)")

    def _begin_cut(self, deadline: float) -> None:
        c = self._c
        me = os.getpid()
        while True:
            rc = lib.pyshm_state_cut_begin(c, me)
            if rc == 0:
                return
            if rc == lib.PYSHM_STATE_E_CUT:
                owner = _signed(int(c.last_error_value))
                if owner != me and not pid_alive(owner):
                    lib.pyshm_state_cut_abandon(c, owner)
                    continue
                why = f"a snapshot by pid {owner} is in progress"
            elif rc == lib.PYSHM_STATE_E_TX:
                self._check_writer_alive("snapshot")
                why = "the writer stayed inside one transaction"
            else:
                raise self._error(rc, "snapshot")
            if time.monotonic() > deadline:
                raise StateBusyError(f"state region {self.name!r}: no cut within the "
                                     f"timeout: {why}")
            time.sleep(50e-6)

    def _cut(self, out: np.ndarray, vers: np.ndarray | None, op: Any, vp: Any,
             deadline: float, t0: float) -> Capture:
        c = self._c
        me = os.getpid()
        self._begin_cut(deadline)
        try:
            rc = lib.pyshm_state_cut_copy(c, op, vp)  # the GIL is released meanwhile
            if rc < 0:
                raise self._error(rc, "snapshot copy")
            return Capture(out, vers, _seq_or_none(int(c.cut_seq)), int(c.cut_epoch), "cut",
                           time.perf_counter() - t0, int(c.hold_ns), int(c.copied_live),
                           int(c.copied_shadow))
        finally:
            lib.pyshm_state_cut_end(c, me)

    def to_numpy(self, timeout: float | None = None) -> np.ndarray:
        """A copy of every row as of one commit (see :meth:`capture`)."""
        return self.capture(timeout=timeout).rows

    def raw_rows(self) -> np.ndarray:
        """The rows as an unguarded numpy view of the mapping: no seqlock, no copy (a
        row may be read while it is written). For the writer's own process, tests and
        benchmarks."""
        return self._rows

    # ------------------------------------------------------------ writer role
    def writer(self, *, force: bool = False, _taken: bool = False) -> StateWriter:
        """Take the writer role (one live process at a time; a dead writer's role is
        taken over). ``force`` also takes over a region whose dead writer left a
        transaction open, accepting its half-written rows."""
        if self.readonly:
            raise InvalidParameterError(f"state region {self.name!r} is attached read-only: "
                                        f"cannot write")
        if self.is_replica:
            raise InvalidParameterError(f"state region {self.name!r} is a replica (written "
                                        f"by its mirror); promote it before writing")
        if self._writer is not None and not self._writer.closed:
            return self._writer
        w = StateWriter(self, force=force, taken=_taken)
        self._writer = w
        return w

    def _claim_writer(self, adopt: bool = False) -> int:
        """CAS the writer pid to ours; returns the previous (dead) writer's pid or 0."""
        me = os.getpid()
        for _ in range(100):
            cur = self.writer_pid
            if cur == me:
                raise WriterBusyError(f"state region {self.name!r} already has a writer in "
                                      f"this process (pid {me}); use that one")
            if cur and pid_alive(cur):
                raise WriterBusyError(f"state region {self.name!r} already has a writer "
                                      f"(pid {cur}, alive)")
            ok, _seen = self._cas("W_PID", cur, me)
            if ok:
                return cur
        raise WriterBusyError(f"state region {self.name!r}: the writer role keeps changing")

    # ------------------------------------------------------------ lifetime
    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._c is None

    def close(self) -> None:
        """Give up the writer role (if held) and unmap. Idempotent."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._views.clear()
        self._rows = self._versions = None  # type: ignore[assignment]
        self._scratch_ptr = None
        if self._ptr is not None:
            ffi.release(self._ptr)
            self._ptr = None
        self._c = None
        if self._seg is not None:
            self._seg.close()

    def unlink(self) -> None:
        """Remove the region's name; processes that have it mapped keep working."""
        if self._seg is not None:
            self._seg.unlink()

    def __enter__(self) -> State:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return f"<State {self.name!r} closed>"
        return (f"<State {self.name!r} rows={self.rows} itemsize={self.itemsize}"
                f"{' replica' if self.is_replica else ''} applied_seq={self.applied_seq}>")


class StateWriter:
    """The region's single writer. Obtain with ``state.writer()``.

    Row writes go into the open transaction (one is opened by the first write);
    :meth:`commit` closes it and records the ring sequence it applied. Outside an
    explicit :meth:`begin`/:meth:`transaction`, :meth:`write` and the batch writes commit
    by themselves (each is one transaction) unless ``autocommit=False``.
    """

    def __init__(self, state: State, force: bool = False, taken: bool = False):
        self.state = state
        self.dtype = state.dtype
        self._c = state._h()
        self._pid = os.getpid()
        self._closed = False
        self._explicit = False
        # taken: a handover already swapped the writer pid to ours
        prev = 0 if taken else state._claim_writer()
        try:
            if state.epoch & 1:
                # a transaction left open: by a dead writer (we took its role), never
                # by a live one (the role CAS above would have refused)
                if not force:
                    raise StateInconsistentError(
                        f"state region {state.name!r}: the previous writer "
                        f"(pid {prev or 'unknown'}) died inside a transaction at epoch "
                        f"{state.epoch}: rows may hold half of a record. Recover the region "
                        f"(pyshm.recover, `pyshm state recover`), or take it over with "
                        f"force=True to keep the rows as they are")
                lib.pyshm_state_reset_dead_writer(self._c)
                self._commit_raw(0, False)
        except BaseException:
            state._cas("W_PID", self._pid, prev)  # keep naming the writer that died
            raise
        self._pool: list[tuple[np.ndarray, Any]] = []

    # ------------------------------------------------------------ helpers
    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    def _live(self) -> Any:
        if self._closed:
            raise ClosedError(f"the writer of state region {self.state.name!r} is closed")
        return self._c

    def _run(self, call: Any, what: str) -> int:
        """A C write/commit: they never wait (a cut in progress is helped, not waited
        for), so a negative code is an error to name."""
        rc = int(call())
        if rc >= 0:
            return rc
        st = self.state
        if rc == lib.PYSHM_STATE_E_TX:
            raise StateInconsistentError(
                f"state region {st.name!r} {what}: the epoch is odd ({st.epoch}): another "
                f"writer's transaction is open")
        raise st._error(rc, what)

    def _row_ptr(self, row: Any) -> Any:
        """A pointer to ``row``'s bytes (np.void of the dtype, tuple, or bytes-like)."""
        st = self.state
        sc = st._scratch
        if isinstance(row, np.void) or isinstance(row, tuple):
            try:
                sc[0] = row
            except (TypeError, ValueError) as exc:
                raise InvalidParameterError(f"state region {st.name!r}: cannot store "
                                            f"{row!r} as a row of {self.dtype}: {exc}") from None
            return st._scratch_ptr
        if isinstance(row, np.ndarray) and row.dtype == self.dtype and row.size == 1:
            sc[0] = row.reshape(())
            return st._scratch_ptr
        try:
            mv = memoryview(row).cast("B")
        except TypeError:
            raise InvalidParameterError(f"state region {st.name!r}: a row must be an "
                                        f"np.void/1-element array of the region's dtype, a "
                                        f"tuple or {st.itemsize} bytes, got "
                                        f"{type(row).__name__}") from None
        if mv.nbytes != st.itemsize:
            raise InvalidParameterError(f"state region {st.name!r}: {mv.nbytes} bytes given,"
                                        f" a row has {st.itemsize}")
        st._scratch.view(np.uint8)[:] = np.frombuffer(mv, np.uint8)
        return st._scratch_ptr

    def _rows_arg(self, rows: Any, n: int | None) -> tuple[np.ndarray, Any]:
        arr = np.asarray(rows)
        if arr.dtype != self.dtype:
            if arr.dtype == np.uint8 and arr.ndim == 2 and arr.shape[1] == self.state.itemsize:
                arr = np.ascontiguousarray(arr).view(self.dtype).reshape(-1)
            else:
                raise StateMismatchError(f"state region {self.state.name!r}: rows of dtype "
                                         f"{arr.dtype} given, the region holds {self.dtype}")
        arr = np.ascontiguousarray(arr).reshape(-1)
        if n is not None and len(arr) != n:
            raise InvalidParameterError(f"{n} row indices but {len(arr)} rows")
        return arr, ffi.cast("uint8_t *", ffi.from_buffer(arr))

    def _commit_raw(self, seq: int, set_seq: bool) -> None:
        self._run(lambda: lib.pyshm_state_commit(self._c, seq, set_seq), "commit")

    # ------------------------------------------------------------ API
    def write(self, i: int, row: Any) -> None:
        """Write row ``i`` (an ``np.void`` of the dtype, a tuple, or bytes)."""
        c = self._live()
        if i < 0:
            i += self.state.rows
        p = self._row_ptr(row)
        auto = 0 if self._explicit else 1
        rc = lib.pyshm_state_write(c, i, p, auto) if i >= 0 else lib.PYSHM_STATE_E_PARAM
        if rc != 0:
            if rc == lib.PYSHM_STATE_E_PARAM:
                c.last_error_row = i
            self._run(lambda: lib.pyshm_state_write(c, i, p, auto), f"write of row {i}")

    def write_batch(self, indices: Any, rows: Any) -> int:
        """Write ``rows[k]`` into row ``indices[k]`` for every k (one C call; a bad index
        writes nothing). ``rows``: an array of the dtype (or of uint8, one row per line).
        Later entries win when an index repeats."""
        c = self._live()
        idx = np.ascontiguousarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) and idx.min() < 0:
            raise InvalidParameterError(f"state region {self.state.name!r}: row "
                                        f"{int(idx.min())} is out of range")
        arr, p = self._rows_arg(rows, len(idx))
        ip = ffi.cast("uint64_t *", ffi.from_buffer(idx))
        auto = 0 if self._explicit else 1
        return self._run(lambda: lib.pyshm_state_write_many(c, ip, p, len(idx), auto),
                         "write_batch")

    def write_range(self, start: int, rows: Any) -> int:
        """Write ``rows`` into rows ``start, start + 1, ...`` (one C call)."""
        c = self._live()
        arr, p = self._rows_arg(rows, None)
        if start < 0:
            raise InvalidParameterError(f"state region {self.state.name!r}: start row "
                                        f"{start} is out of range")
        auto = 0 if self._explicit else 1
        return self._run(lambda: lib.pyshm_state_write_range(c, start, p, len(arr), auto),
                         "write_range")

    def sync_rows(self, rows: np.ndarray) -> int:
        """Make the region's rows equal to ``rows`` (an array of every row), writing only
        the rows that differ, inside the open transaction (or one of its own); returns
        how many rows were written."""
        c = self._live()
        arr, p = self._rows_arg(rows, self.state.rows)
        n = self._run(lambda: lib.pyshm_state_sync_rows(c, p), "sync_rows")
        if not self._explicit:
            self._commit_raw(0, False)
        return n

    def read(self, i: int) -> np.void:
        """Row ``i`` as this writer last wrote it (a copy)."""
        return self.state.read(i)

    def read_batch(self, indices: Any) -> np.ndarray:
        """Consistent copies of the rows at ``indices`` (as :meth:`State.read_batch`)."""
        return self.state.read_batch(indices)

    def to_numpy(self) -> np.ndarray:
        """Every row (a copy; nobody else writes, so no cut is needed)."""
        return self.state._rows.copy()

    @contextlib.contextmanager
    def update(self, i: int) -> Iterator[np.void]:
        """``with w.update(i) as row: row["qty"] += 5``: a copy of row ``i`` to modify,
        written back (with the seqlock) when the block ends without an exception."""
        self._live()
        st = self.state
        if i < 0:
            i += st.rows
        if not 0 <= i < st.rows:
            raise InvalidParameterError(f"state region {st.name!r}: row {i} is out of "
                                        f"range 0..{st.rows - 1}")
        if self._pool:
            buf, ptr = self._pool.pop()
        else:
            buf = np.zeros(1, self.dtype)
            ptr = ffi.cast("uint8_t *", ffi.from_buffer(buf))
        try:
            buf[0] = st._rows[i]  # our own rows: nobody else writes them
            yield buf[0]
            c = self._c
            auto = 0 if self._explicit else 1
            self._run(lambda: lib.pyshm_state_write(c, i, ptr, auto), f"update of row {i}")
        finally:
            self._pool.append((buf, ptr))

    def begin(self) -> None:
        """Open a transaction explicitly: writes are grouped until :meth:`commit`."""
        c = self._live()
        if not c.in_tx:
            self._run(lambda: lib.pyshm_state_begin(c), "begin")
        self._explicit = True

    def commit(self, seq: int | None = None) -> None:
        """Close the transaction; ``seq`` (if given) becomes ``applied_seq``."""
        c = self._live()
        self._explicit = False
        if seq is None:
            self._commit_raw(0, False)
        else:
            if not 0 <= seq < _NO_SEQ:
                raise InvalidParameterError(f"sequence {seq} is out of range")
            self._run(lambda: lib.pyshm_state_commit(c, seq, 1), "commit")

    def commit_applied(self, value: int) -> None:
        """Commit with ``applied_seq = value`` exactly (``layout.NO_SEQUENCE``: none), for
        restores that put a region back to an image's state."""
        c = self._live()
        self._explicit = False
        self._run(lambda: lib.pyshm_state_commit(c, value, 1), "commit")

    @contextlib.contextmanager
    def transaction(self, seq: int | None = None) -> Iterator[StateWriter]:
        """``with w.transaction(seq): ...`` groups the writes and commits them with
        ``applied_seq = seq``. If the block raises, what it wrote is committed without a
        new sequence (a record half applied is the application's error to handle)."""
        self.begin()
        try:
            yield self
        except BaseException:
            self.commit(None)
            raise
        self.commit(seq)

    @property
    def in_transaction(self) -> bool:
        """True between the start and the commit of a transaction."""
        return bool(self._c.in_tx) if not self._closed else False

    @property
    def applied_seq(self) -> int | None:
        """The region's applied sequence (see :attr:`State.applied_seq`)."""
        return self.state.applied_seq

    def stats(self) -> dict[str, int]:
        """This writer's counters: writes, commits, copy-on-write saves (and how many of
        them took a chunk from under a cut), cuts it finished fixing, its longest save."""
        c = self._c
        return {"writes": int(c.writes), "commits": int(c.commits),
                "cow_chunks": int(c.cow_chunks), "cow_ns": int(c.cow_ns),
                "chunks_taken": int(c.chunks_taken), "cuts_fixed": int(c.cuts_fixed),
                "max_stall_ns": int(c.max_stall_ns), "cow_cpu_ns": int(c.cow_cpu_ns),
                "max_stall_cpu_ns": int(c.max_stall_cpu_ns)}

    def close(self) -> None:
        """Commit an open transaction (without a sequence) and give up the role."""
        if self._closed:
            return
        try:
            if not self.state.closed and self._c.in_tx:
                self._commit_raw(0, False)
        finally:
            if not self.state.closed:
                self.state._cas("W_PID", self._pid, 0)
            self._closed = True

    def __enter__(self) -> StateWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<StateWriter {self.state.name!r} pid={self._pid} closed={self._closed}>"
