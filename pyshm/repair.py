"""Recovery of rings left behind by crashed processes, and stale-segment hygiene.

A producer killed between claim and commit leaves ``tail_intent > tail``. Nothing waits
on that: consumers, the engine and snapshots only read below ``tail``, and a new producer
takes over a dead producer's pid slot and continues at ``tail``. What the dead claim does
leave is cosmetic or slightly harmful state, which :func:`repair` clears:

* ``tail_intent`` above ``tail``: the uncommitted claim. It is rolled back to ``tail``
  only when that leaves the readable window unchanged; otherwise the claim's bytes have
  already overwritten the start of the oldest partition of the previous lap, and moving
  the intent back would let a reader start at those torn bytes. It is then kept (it is
  harmless: readers and the engine treat it as the producer's next write).
* ``next_sequence`` one ahead of the last committed record (the producer stores it just
  before releasing ``tail``): a restarted producer would leave a sequence gap that
  consumers count as a lost record, so it is set back to ``last + 1``.
* the producer pid of the dead process, and consumer slots of dead processes (a dead
  gating consumer holds a lossless producer back until a reap).

:func:`list_segments` reads headers with ``pread`` (no mapping, no slot taken) so that
``pyshm ls`` and ``pyshm rm --stale`` cannot disturb what they inspect.
"""

from __future__ import annotations

import os
import stat
import struct
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from . import layout as L
from .errors import (
    CorruptSegmentError,
    ProducerBusyError,
    PyshmError,
    RingNotFoundError,
    SegmentLockedError,
)
from .lock import SegmentLock, describe_pid, lock_holders
from .ring import Ring, pid_alive
from .segment import SHM_DIR, display_name, resolve_path

__all__ = ["RepairReport", "SegmentInfo", "repair", "stuck_claim", "list_segments",
           "remove_stale", "remove_segment", "process_start_ns"]

_C_INTENT, _C_NEXT_SEQ = 1, 3
# Linux never hands out pids above PID_MAX_LIMIT (2^22); a larger value in a header is
# damage, and os.kill would overflow on it
_PID_MAX = 1 << 22


def _alive(pid: int) -> bool:
    return 0 < pid <= _PID_MAX and pid_alive(pid)


def _slots(ring: Ring) -> list[tuple[int, int]]:
    """(index, pid) of every slot with a pid; read here rather than with Ring.slots(),
    which asks the OS about every pid, however absurd."""
    from ._ring_c import ffi, lib

    buf = ffi.new("int64_t[4]")
    out = []
    for i in range(L.MAX_CONSUMERS):
        lib.pyshm_slot_read(ring._h(), i, buf)
        if buf[1]:
            out.append((i, int(buf[1])))
    return out
_U64 = struct.Struct("<Q")
_SLOT = struct.Struct("<qqqQ")


@dataclass
class RepairReport:
    name: str
    producer_pid: int
    producer_alive: bool
    tail: int
    intent_before: int
    intent_after: int
    next_sequence_before: int
    next_sequence_after: int
    discarded_bytes: int = 0
    reaped_slots: list[tuple[int, int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dry_run: bool = False

    @property
    def changed(self) -> bool:
        """True when the repair changed (or, dry run, would change) anything."""
        return (self.intent_before != self.intent_after
                or self.next_sequence_before != self.next_sequence_after
                or bool(self.reaped_slots) or (self.producer_pid != 0 and not self.dry_run))

    def as_dict(self) -> dict[str, Any]:
        """Every field as plain data (for JSON)."""
        return asdict(self)

    def lines(self) -> list[str]:
        """The report as lines for a terminal."""
        verb = "would " if self.dry_run else ""
        out = [f"ring {self.name}: tail {self.tail}"]
        if self.producer_pid:
            state = "alive" if self.producer_alive else "dead"
            out.append(f"  producer pid {self.producer_pid} ({state}): {verb}clear it")
        if self.intent_before != self.intent_after:
            out.append(f"  tail intent {self.intent_before} -> {self.intent_after}: "
                       f"{verb}discard {self.discarded_bytes} uncommitted bytes")
        if self.next_sequence_before != self.next_sequence_after:
            out.append(f"  next sequence {self.next_sequence_before} -> "
                       f"{self.next_sequence_after}")
        for idx, pid in self.reaped_slots:
            out.append(f"  consumer slot {idx} of dead pid {pid}: {verb}free it")
        out.extend(f"  note: {n}" for n in self.notes)
        if len(out) == 1:
            out.append("  nothing to repair")
        return out


def _partition_floor(pos: int, psize: int) -> int:
    return pos // psize * psize


def last_committed_sequence(ring: Ring) -> int | None:
    """Sequence of the last committed record, or None if the readable window has none.

    Walks back one partition at a time from the one holding ``tail - 1``: every partition
    start is a record boundary, so only the last non-empty partition is read, not the
    whole ring. The window must be quiescent (producer dead or stopped).
    """
    tail = ring.tail
    psize = ring.partition_size
    oldest = ring.oldest()
    end = tail
    while end > oldest:
        start = max(oldest, _partition_floor(end - 1, psize))
        last = None
        for rec in ring.records(start, end):
            last = rec.sequence
        if last is not None:
            return last
        end = start
    return None


def stuck_claim(ring: Ring, timeout: float = 0.5, poll: float = 0.01) -> bool:
    """True if ``tail_intent > tail`` stays so, with ``tail`` unchanged, for ``timeout``
    seconds while the producer pid is dead or absent: a claim nobody will commit.

    A live producer between claim and commit is not "stuck" here, however slow: only its
    owner can commit, and :func:`repair` refuses to touch a live producer anyway.
    """
    deadline = time.monotonic() + timeout
    tail0 = ring.tail
    while True:
        tail, intent = ring.tail, ring.tail_intent
        if intent <= tail or tail != tail0 or _alive(ring.producer_pid):
            return False
        if time.monotonic() >= deadline:
            return True
        time.sleep(poll)


def repair(target: str | os.PathLike[str] | Ring, *, force: bool = False,
           dry_run: bool = False) -> RepairReport:
    """Clear what a dead producer and dead consumers left in a ring's header.

    Refuses (:class:`ProducerBusyError`) when the producer pid is alive, unless ``force``
    (for a producer known to be wedged: the caller takes responsibility for stopping it,
    since a live producer would keep writing from its private positions).
    """
    if isinstance(target, Ring):
        return _repair(target, force, dry_run)
    with Ring.attach(target, readonly=dry_run) as ring:
        return _repair(ring, force, dry_run)


def _repair(ring: Ring, force: bool, dry_run: bool) -> RepairReport:
    from ._ring_c import lib

    if ring.is_replica:
        raise PyshmError(f"ring {ring.name!r} is a replica (its engine writes it): promote "
                         f"it rather than repair it")
    hdr = ring._h()
    pid = ring.producer_pid
    alive = _alive(pid)
    if alive and not force:
        raise ProducerBusyError(
            f"ring {ring.name!r}: producer pid {pid} is alive; stop it first or pass "
            f"--force if it is wedged (it must not publish again after the repair)")
    tail, intent = ring.tail, ring.tail_intent
    if tail % L.RECORD_ALIGN:
        raise CorruptSegmentError(f"ring {ring.name!r}: tail {tail} is not 8-byte aligned")
    rep = RepairReport(name=ring.name, producer_pid=pid, producer_alive=alive, tail=tail,
                       intent_before=intent, intent_after=intent,
                       next_sequence_before=ring.next_sequence,
                       next_sequence_after=ring.next_sequence, dry_run=dry_run)
    cap, psize = ring.capacity, ring.partition_size
    if intent > tail:
        if intent - tail > cap:
            rep.notes.append(f"tail intent {intent} is more than a capacity ahead of tail: "
                             f"header damaged, intent left alone")
        elif L.oldest_boundary(intent, cap, psize) == L.oldest_boundary(tail, cap, psize):
            rep.intent_after = tail
            rep.discarded_bytes = intent - tail
        else:
            rep.notes.append(
                f"uncommitted claim [{tail}, {intent}) already overwrote the start of the "
                f"oldest partition of the previous lap: tail intent kept so that no reader "
                f"starts on those bytes (the next publish moves past it)")
    try:
        last = last_committed_sequence(ring)
    except CorruptSegmentError as exc:
        last = None
        rep.notes.append(f"records could not be walked, next sequence left alone: {exc}")
    if last is not None and rep.next_sequence_before != last + 1:
        rep.next_sequence_after = last + 1
    rep.reaped_slots = [(i, p) for i, p in _slots(ring) if not _alive(p)]
    if dry_run:
        return rep
    # intent first: from here on no reader can take the discarded claim for data
    if rep.intent_after != intent:
        lib.pyshm_set_counter(hdr, _C_INTENT, rep.intent_after)
    if rep.next_sequence_after != rep.next_sequence_before:
        lib.pyshm_set_counter(hdr, _C_NEXT_SEQ, rep.next_sequence_after)
    if pid and not lib.pyshm_producer_pid_cas(hdr, pid, 0):
        rep.notes.append("producer pid changed during the repair (a new producer attached)")
    rep.reaped_slots = [(i, p) for i, p in rep.reaped_slots
                        if lib.pyshm_slot_release(hdr, i, p) > 0]
    return rep


# ------------------------------------------------------------------ stale segments

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _boot_ns() -> int:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("btime "):
                return int(line.split()[1]) * 1_000_000_000
    raise OSError("no btime in /proc/stat")


def process_start_ns(pid: int) -> int | None:
    """Wall-clock start time of ``pid`` (ns), or None if it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
        fields = raw[raw.rindex(b")") + 2:].split()
        ticks = int(fields[19])  # field 22 of proc(5), counted after "comm"
        return _boot_ns() + ticks * 1_000_000_000 // _CLK_TCK
    except (OSError, ValueError, IndexError):
        return None


def _creator_alive(pid: int, created_ns: int) -> bool:
    """The creator pid runs *and* is the same process: a pid recycled by a process that
    started after the ring was created is not its creator (2 s of slack for clock
    granularity)."""
    if not _alive(pid):
        return False
    start = process_start_ns(pid)
    return start is None or created_ns == 0 or start <= created_ns + 2_000_000_000


@dataclass
class SegmentInfo:
    name: str
    path: str
    kind: str                    # "ring" or "replica"
    size: int
    mode: int
    uid: int
    capacity: int = 0
    lossless: bool = False
    creator_pid: int = 0
    creator_alive: bool = False
    producer_pid: int = 0
    producer_alive: bool = False
    consumers: list[dict[str, Any]] = field(default_factory=list)
    tail: int = 0
    tail_intent: int = 0
    next_sequence: int = 0
    created_ns: int = 0
    ephemeral: bool = False
    lock_pid: int = 0            # holder of the segment's lock (engine, pyshm run, restore)
    restoring: bool = False      # an in-place restore was interrupted: run it again
    error: str = ""

    @property
    def live_pids(self) -> list[int]:
        """The creator, producer and consumer pids that still run."""
        pids = []
        if self.creator_alive:
            pids.append(self.creator_pid)
        if self.producer_alive:
            pids.append(self.producer_pid)
        pids.extend(c["pid"] for c in self.consumers if c["alive"])
        if self.lock_pid:
            pids.append(self.lock_pid)
        return pids

    @property
    def users(self) -> list[str]:
        """Live processes using the segment (the creator alone does not count)."""
        out = []
        if self.producer_alive:
            out.append(f"producer {describe_pid(self.producer_pid)}")
        out.extend(f"consumer {describe_pid(c['pid'])}" for c in self.consumers
                   if c["alive"])
        if self.lock_pid:
            out.append(f"lock held by {describe_pid(self.lock_pid)}")
        return out

    @property
    def stale(self) -> bool:
        """Declared ephemeral by its creator, and every pid attached to it (creator,
        producer, consumer slots, lock holder) is dead. A persistent segment (the
        default: ``pyshm create``, ``pyshm run`` without unlink_on_exit) is never
        stale, whoever died."""
        return not self.error and self.ephemeral and not self.live_pids

    @property
    def claim_pending(self) -> bool:
        """True when the producer reserved space it has not committed (intent > tail)."""
        return self.tail_intent > self.tail

    def as_dict(self) -> dict[str, Any]:
        """Every field, plus ``stale``, ``live_pids`` and ``claim_pending``."""
        d = asdict(self)
        d.update(stale=self.stale, live_pids=self.live_pids, claim_pending=self.claim_pending)
        return d


def read_segment_info(path: str,
                      holders: dict[tuple[int, int, int], int] | None = None
                      ) -> SegmentInfo | None:
    """Header of a pyshm segment read with pread, or None if ``path`` is not one.

    Neither maps the file nor takes a slot, and opens with O_NOFOLLOW so a symlink in
    /dev/shm cannot redirect the scan. ``holders`` is :func:`lock_holders` (read once
    for a whole directory).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size < L.HEADER_SIZE:
            return None
        raw = os.pread(fd, L.HEADER_SIZE, 0)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(raw) < L.HEADER_SIZE or raw[:8] not in (L.MAGIC, L.MAGIC_RESTORING):
        return None
    info = SegmentInfo(name=display_name(path), path=path, kind="ring", size=st.st_size,
                       mode=stat.S_IMODE(st.st_mode), uid=st.st_uid)
    info.lock_pid = (lock_holders() if holders is None else holders).get(
        (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino), 0)
    if raw[:8] == L.MAGIC_RESTORING:
        info.restoring = True
        info.error = ("an in-place restore into it was interrupted: run that restore "
                      "again, or remove it")
        raw = L.MAGIC + raw[8:]
    try:
        p = L.unpack_static_header(raw[:0x80], where=info.name, size=st.st_size)
    except PyshmError as exc:
        info.error = info.error or str(exc)
        return info
    info.kind = "replica" if p.is_replica else "ring"
    info.capacity, info.lossless, info.ephemeral = p.capacity, p.lossless, p.ephemeral
    info.creator_pid, info.producer_pid, info.created_ns = \
        p.creator_pid, p.producer_pid, p.created_ns
    info.creator_alive = _creator_alive(p.creator_pid, p.created_ns)
    info.producer_alive = _alive(p.producer_pid)
    info.tail = _U64.unpack_from(raw, L.OFF_TAIL)[0]
    info.tail_intent = _U64.unpack_from(raw, L.OFF_TAIL_INTENT)[0]
    info.next_sequence = _U64.unpack_from(raw, L.OFF_NEXT_SEQUENCE)[0]
    for i in range(L.MAX_CONSUMERS):
        pos, pid, hb, flags = _SLOT.unpack_from(raw, L.slot_offset(i))
        if pid == 0 and flags == 0:
            continue
        info.consumers.append({"index": i, "pid": pid, "alive": _alive(pid), "position": pos,
                               "gating": bool(flags & L.SLOT_GATING)})
    return info


def list_segments(directory: str = SHM_DIR) -> Iterator[SegmentInfo]:
    """Every pyshm ring or replica directly under ``directory``, by magic, sorted."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return
    holders = lock_holders()
    for n in names:
        info = read_segment_info(os.path.join(directory, n), holders)
        if info is not None:
            yield info


def remove_stale(names: list[str] | None = None, *, directory: str = SHM_DIR,
                 dry_run: bool = False) -> list[SegmentInfo]:
    """Unlink the stale rings/replicas among ``names`` (default: all in ``directory``):
    those declared ephemeral whose creator and attached processes are all dead.

    Each candidate is locked (so no engine, supervisor or restore can start on it
    meanwhile) and re-read right before its unlink, so a process that attached while
    the scan ran keeps its ring. (A producer or consumer that attaches between that
    re-read and the unlink keeps its mapping but loses the name: the same window as
    ``rm`` on any file.)
    """
    if names is None:
        candidates = [i.path for i in list_segments(directory) if i.stale]
    else:
        candidates = [resolve_path(n) for n in names]
    removed = []
    for path in candidates:
        info = read_segment_info(path)
        if info is None or not info.stale:
            continue
        try:
            lock = SegmentLock.acquire(path, "rm")
        except PyshmError:
            continue  # locked meanwhile (in use), or gone
        try:
            info = _reread_locked(path)
            if info is None or not info.stale:
                continue
            if not dry_run:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    continue
            removed.append(info)
        finally:
            lock.release()
    return removed


def _reread_locked(path: str) -> SegmentInfo | None:
    """The segment's info while this process holds its lock (not counted as a user)."""
    info = read_segment_info(path)
    if info is not None and info.lock_pid == os.getpid():
        info.lock_pid = 0
    return info


def remove_segment(name: str | os.PathLike[str], *, force: bool = False,
                   dry_run: bool = False) -> SegmentInfo:
    """``pyshm rm NAME``: unlink one pyshm segment; refuses a file that is not one.

    Unless ``force``, a segment in use is refused: a live producer or consumer, or a
    lock held by another process (an engine writing the replica, ``pyshm run``, a
    restore). The segment is locked while it is checked and unlinked. A segment whose
    header is damaged, or whose in-place restore was interrupted, can be removed.
    ``dry_run`` checks everything and removes nothing.
    """
    path = resolve_path(name)
    if not os.path.lexists(path):
        raise RingNotFoundError(f"no ring named {display_name(path)!r} ({path} does not "
                                f"exist)")
    info = read_segment_info(path)
    if info is None:
        raise CorruptSegmentError(f"{display_name(path)}: not a pyshm ring (no ring magic "
                                  f"in a regular file of at least {L.HEADER_SIZE} bytes); "
                                  f"not removed")
    lock = None
    if not force:
        try:
            lock = SegmentLock.acquire(path, "rm")
        except SegmentLockedError as exc:
            raise SegmentLockedError(f"{info.name} is in use: {exc}; not removed "
                                     f"(--force removes it anyway)", exc.pid) from None
    try:
        if not force:
            info = _reread_locked(path) or info
            users = info.users
            if users:
                raise ProducerBusyError(f"{info.name} is in use by {', '.join(users)}; not "
                                        f"removed (stop them first, or pass --force)")
        if not dry_run:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                from .segment import access_error
                raise access_error(path, exc, "remove") from None
        return info
    finally:
        if lock is not None:
            lock.release()


# ------------------------------------------------------------------ consumer restart

def slot_position(ring: Ring, pid: int) -> int | None:
    """The position held by ``pid``'s consumer slot (dead or alive), or None.

    A slot's position is where its consumer will read next, or the record it handed out
    last and has not released: a record boundary the dead consumer left behind.
    """
    from ._ring_c import ffi, lib

    buf = ffi.new("int64_t[4]")
    for i in range(L.MAX_CONSUMERS):
        lib.pyshm_slot_read(ring._h(), i, buf)
        if buf[1] == pid:
            return int(buf[0])
    return None


def resume_consumer(ring: Ring, position: int, next_sequence: int,
                    gating: bool = True) -> Any:
    """A consumer that continues exactly where a dead one stopped.

    ``ring.consumer(sequence)`` can only start at a partition start (the only positions
    known to be record boundaries), so records between a dead consumer's position and
    the next partition start would be skipped. This starts at ``position`` instead (from
    :func:`slot_position` of the dead pid) and skips records below ``next_sequence`` (the
    consumer's own checkpoint). The C reader still validates every record and detects a
    lap, so a bad position yields an error or a counted loss, never a torn record.
    Lossless protection of a dead gating consumer's records lasts only until a producer
    reaps its slot: what was overwritten by then is counted in the consumer's ``lost``.
    """
    from ._ring_c import lib

    if position % L.RECORD_ALIGN or position < 0:
        raise CorruptSegmentError(f"ring {ring.name!r}: cannot resume at position "
                                  f"{position}: not a record boundary")
    if position > ring.tail:
        raise CorruptSegmentError(f"ring {ring.name!r}: cannot resume at position "
                                  f"{position}: beyond the ring's tail {ring.tail}")
    c = ring.consumer(next_sequence, gating=gating)
    # Start at ``position`` whichever side of it the partition start c.position lies:
    # - after it: the records in between would be skipped;
    # - before it: the bytes in between are not protected. The pinned slot guards only
    #   from ``position`` on, and a producer whose gate limit was cached from that slot
    #   overwrites them without rescanning the slots, so this consumer's own slot does not
    #   hold it back. The first read would be lapped and jump to the next partition start
    #   beyond ``position``: records lost.
    # Once the producer has reaped the dead slot (after Ring.reap_grace), it may
    # overwrite what that slot protected: then the records are gone and the consumer
    # starts at its partition start, counting them in ``lost``.
    if position != c.position and ring.tail_intent <= position + ring.capacity:
        raw = c._c
        raw.pos = position
        raw.expect = next_sequence
        raw.have_expect = 1
        raw.skip_below = next_sequence
        # publish that position; if the producer passed it meanwhile, the reader's
        # lap check reports the loss instead of returning overwritten bytes
        lib.pyshm_consumer_touch(raw)
    return c


def pin_dead_slot(ring: Ring, dead_pid: int) -> tuple[int, int] | None:
    """Take over a dead consumer's slot in place: (index, position), or None if the
    slot is gone (already reaped) or its process still runs.

    Only the pid changes (compare-and-swap from the dead pid to ours), so the slot keeps
    gating at the same position without a gap: a lossless producer that reaps dead slots
    no longer sees a dead one. Hold it until the restarted consumer has registered (see
    :func:`resume_consumer`), then free it with :func:`unpin_slot`.
    """
    from ._ring_c import ffi, lib

    if _alive(dead_pid):
        return None
    buf = ffi.new("int64_t[4]")
    for i in range(L.MAX_CONSUMERS):
        lib.pyshm_slot_read(ring._h(), i, buf)
        flags = buf[3]
        if buf[1] != dead_pid or not flags & L.SLOT_ACTIVE:
            continue
        if lib.pyshm_slot_claim(ring._h(), i, dead_pid, os.getpid()) == 1:
            lib.pyshm_slot_read(ring._h(), i, buf)
            if buf[3] != flags:
                # a reaper cleared the flags before its pid swap (which now fails): the
                # slot stopped gating, so it protects nothing any more; give it back
                lib.pyshm_slot_release(ring._h(), i, os.getpid())
                return None
            return i, int(buf[0])
    return None


def unpin_slot(ring: Ring, index: int) -> bool:
    from ._ring_c import lib

    return bool(lib.pyshm_slot_release(ring._h(), index, os.getpid()) > 0)
