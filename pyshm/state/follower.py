"""The consumer that keeps a state region: read the ring, apply, commit, image, hand over.

:class:`Follower` is the loop a strategy runs around its ``apply(writer, record)``:

* **start**: a region that survived (its writer died between records) is resumed at its
  ``applied_seq``; one whose writer died inside a transaction, or is missing, is
  recovered from the newest state image plus the ring after it (:func:`recover`); a
  region that has never been imaged is folded from the ring's first record;
* **run**: records are applied one transaction each, committed at their sequence;
  optional state images on a schedule (a thread with its own mapping, so the loop never
  waits for more than one chunk copy);
* **hot handover** (``handover=True``): a new version starts from the newest image (or a
  cut of the live region), catches up in a private staging region while the old one
  keeps running and never overtakes it, asks the old one to stop at its next record
  boundary, applies exactly up to that sequence, then takes the writer role, copies the
  rows that differ into the live region (none, if both versions fold alike) and goes
  on at the next sequence: nothing applied twice, nothing skipped. The old Follower
  answers such a request between two batches and returns ``handed_over``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidParameterError, PyshmError, RingNotFoundError
from ..ring import pid_alive
from ..segment import resolve_path
from . import layout as SL
from .errors import HandoverError, WriterBusyError
from .images import read_state_image
from .recovery import (
    ApplyBatchFn,
    ApplyFn,
    RecordBatch,
    _check_coverage,
    apply_records,
    latest_image,
    open_source,
    recover,
    restore_rows,
)
from .region import State, StateWriter
from .schedule import StateSnapshotSchedule

log = logging.getLogger("pyshm.state")

__all__ = ["Follower", "FollowerResult", "load_callable"]


class _AnotherHandover(Exception):
    """Another process is taking the region over: wait for it, then try again."""

    def __init__(self, pid: int):
        super().__init__(pid)
        self.pid = pid


def _signed_pid(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def load_callable(spec: str) -> Callable[..., Any]:
    """``"package.module:function"`` or ``"path/to/file.py:function"`` -> the function."""
    mod_name, sep, attr = spec.rpartition(":")
    if not sep or not mod_name or not attr:
        raise InvalidParameterError(f"{spec!r}: give MODULE:FUNCTION, e.g. "
                                    f"mybook.fold:apply or ./fold.py:apply")
    try:
        if mod_name.endswith(".py") or os.sep in mod_name:
            path = os.path.abspath(mod_name)
            if not os.path.isfile(path):
                raise InvalidParameterError(f"{spec!r}: no file {path}")
            modname = f"pyshm_user_{abs(hash(path))}"
            loader = importlib.util.spec_from_file_location(modname, path)
            if loader is None or loader.loader is None:
                raise InvalidParameterError(f"{spec!r}: cannot load {path}")
            mod = importlib.util.module_from_spec(loader)
            sys.modules[modname] = mod
            loader.loader.exec_module(mod)
        else:
            mod = importlib.import_module(mod_name)
    except InvalidParameterError:
        raise
    except Exception as exc:  # the user's module failed to import: say so, no traceback
        raise InvalidParameterError(f"{spec!r}: importing {mod_name} failed: {exc!r}") from None
    fn = getattr(mod, attr, None)
    if fn is None:
        raise InvalidParameterError(f"{spec!r}: {mod_name} has no attribute {attr!r}")
    return fn


@dataclass
class FollowerResult:
    reason: str                      # stopped | until | max_seconds | handed_over
    applied: int = 0                 # records this run applied to the live region
    last_applied: int | None = None
    start: dict[str, Any] = field(default_factory=dict)
    handover: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "applied": self.applied,
                "last_applied": self.last_applied, "start": self.start,
                "handover": self.handover}


class Follower:
    """Keep state region ``state`` folded over ``ring`` with ``apply`` (see module doc).

    ``dtype``/``rows`` create the region when it does not exist. ``images``: directory
    of this region's state images (recovery reads the newest that verifies; with
    ``snapshot_every`` seconds and/or ``snapshot_records`` records the follower writes
    new ones, keeping ``keep``). ``restart``: ``auto`` resumes a consistent surviving
    region, ``image`` always restores from the newest image. ``gating``: read a lossless
    ring with a gating consumer (default: when the ring is lossless).
    """

    def __init__(self, state: str | os.PathLike[str], ring: Any,
                 apply: ApplyFn | None = None, *, apply_batch: ApplyBatchFn | None = None,
                 dtype: Any = None, rows: int | None = None,
                 images: str | os.PathLike[str] | None = None,
                 snapshot_every: float | None = None, snapshot_records: int | None = None,
                 keep: int = 3, batch: int = 256, gating: bool | None = None,
                 restart: str = "auto", handover: bool = False, image: Any = None,
                 handover_timeout: float = 30.0, sync: str = "diff",
                 idle_sleep: float = 0.0005, snapshot_poll: float = 0.05):
        if (apply is None) == (apply_batch is None):
            raise InvalidParameterError("a Follower needs apply or apply_batch (one of them)")
        if restart not in ("auto", "image"):
            raise InvalidParameterError(f"restart {restart!r}: use auto or image")
        if sync not in ("diff", "trust"):
            raise InvalidParameterError(f"sync {sync!r}: use diff or trust")
        if batch < 1:
            raise InvalidParameterError(f"batch {batch} must be positive")
        self.name = os.fspath(state)
        self.ring = ring
        self.apply = apply
        self.apply_batch = apply_batch
        self.dtype = dtype
        self.rows = rows
        self.images = os.fspath(images) if images is not None else None
        self.snapshot_every = snapshot_every
        self.snapshot_records = snapshot_records
        self.keep = keep
        self.batch = batch
        self.gating = gating
        self.restart = restart
        self.handover = handover
        self.image = image
        self.handover_timeout = handover_timeout
        self.sync = sync
        self.idle_sleep = idle_sleep
        self.snapshot_poll = snapshot_poll
        self.state: State | None = None
        self.writer: StateWriter | None = None
        self.source: Any = None
        self.expect = 0
        self.pending = RecordBatch.empty()
        self.applied = 0
        self._run_mark = 0
        self.last_applied: int | None = None
        self.start_info: dict[str, Any] = {}
        self.handover_info: dict[str, Any] = {}
        self.schedule: StateSnapshotSchedule | None = None
        self.caught_up: dict[str, Any] | None = None
        self._started_at = 0.0
        self._me = os.getpid()

    # ------------------------------------------------------------ start
    def start(self) -> dict[str, Any]:
        """Recover, resume or take over; returns what was done (also ``start_info``)."""
        if self.state is not None:
            return self.start_info
        t0 = time.perf_counter()
        note = None
        exists = os.path.exists(resolve_path(self.name))
        if self.handover and exists:
            old = self._wait_for_other_handover()
            deadline = time.monotonic() + self.handover_timeout
            while old and old != self._me and pid_alive(old):
                try:
                    self._take_over(old)
                    break
                except _AnotherHandover as exc:
                    # two upgrades at once: let the other finish, then take over from it
                    if time.monotonic() > deadline:
                        raise HandoverError(f"handover {self.name!r}: pid {exc.pid} kept "
                                            f"taking the region over") from None
                    old = self._wait_for_other_handover()
            if self.state is not None:
                self.start_info["seconds"] = round(time.perf_counter() - t0, 6)
                self._after_start()
                self._started_at = t0
                self.caught_up = None
                return self.start_info
            note = "no live writer to hand over from: started normally"
        if exists:
            st = State(self.name)
            wpid = st.writer_pid
            if wpid and wpid != self._me and pid_alive(wpid):
                st.close()
                raise WriterBusyError(f"state region {self.name!r}: its writer (pid {wpid}) "
                                      f"is alive; to replace it use handover "
                                      f"(`pyshm handover`, Follower(handover=True))")
            if not (st.epoch & 1) and self.restart == "auto":
                self._resume(st, wpid)
            else:
                why = ("its writer (pid %s) died inside a transaction" % (wpid or "?")
                       if st.epoch & 1 else "restart=image")
                st.close()
                self._recover(why, wpid)
        else:
            if self.dtype is None or self.rows is None:
                img = self._latest_image()
                if img is None:
                    raise RingNotFoundError(f"state region {self.name!r} does not exist: give "
                                            f"dtype and rows to create it, or an image")
                self._recover("the region did not exist", 0, img)
            else:
                img = self._latest_image()
                if img is None:
                    State(self.name, create=True, dtype=self.dtype, rows=self.rows).close()
                self._recover("the region did not exist", 0, img)
        if note:
            self.start_info["note"] = note
        self.start_info["seconds"] = round(time.perf_counter() - t0, 6)
        self._after_start()
        self._started_at = t0
        self.caught_up = None
        return self.start_info

    def _note_caught_up(self) -> None:
        """The first time the source has nothing more after start: how many records the
        start (recovery replay included) took to reach the live end, and how long."""
        if self.caught_up is None and self.state is not None:
            self.caught_up = {"records": self.applied, "last_applied": self.last_applied,
                              "seconds": round(time.perf_counter() - self._started_at, 6)}
            self.start_info["caught_up"] = self.caught_up

    def _wait_for_other_handover(self) -> int:
        """The current writer's pid, once no other process is in the middle of taking
        the region over (two upgrades asked for at once run one after the other)."""
        deadline = time.monotonic() + self.handover_timeout
        with State(self.name) as probe:
            while True:
                other = _signed_pid(probe._load("H_CLAIM"))
                if not other or other == self._me or not pid_alive(other):
                    return probe.writer_pid
                if time.monotonic() > deadline:
                    raise HandoverError(f"handover {self.name!r}: pid {other} has been "
                                        f"taking the region over for "
                                        f"{self.handover_timeout} s")
                time.sleep(0.005)

    def _latest_image(self) -> Any:
        if self.image is not None:
            return read_state_image(self.image) if not os.path.isdir(self.image) \
                else latest_image(self.image, self.name)
        if self.images is not None:
            skipped: list[str] = []
            img = latest_image(self.images, self.name, skipped)
            if skipped:
                self.start_info["skipped_images"] = skipped
            return img
        return None

    def _resume(self, st: State, dead_pid: int) -> None:
        seq = st.applied_seq
        start = 0 if seq is None else seq + 1
        old_slot = st._load("W_SLOT")
        source = open_source(self.ring, start, self.gating, state=self.name)
        try:
            first = source.read(self.batch)
            _check_coverage(source, first, start, f"resume {self.name!r}")
            w = st.writer()
        except BaseException:
            source.close()
            st.close()
            raise
        self.state, self.writer, self.source = st, w, source
        self.expect, self.pending = start, first
        self.last_applied = seq
        self.start_info = {"how": "resumed", "applied_seq": seq,
                           "previous_writer": dead_pid or None}
        self._release_dead_slot(dead_pid, old_slot)

    def _recover(self, why: str, dead_pid: int, img: Any = None) -> None:
        old_slot = -1
        if os.path.exists(resolve_path(self.name)):
            with State(self.name) as probe:
                old_slot = probe._load("W_SLOT")
        t_load = time.perf_counter()
        if img is None:
            img = self._latest_image()
        load_s = time.perf_counter() - t_load
        # max_seconds=0: restore and apply the first batch only; the catch-up goes on in
        # run(), where state images are already being taken
        rec = recover(self.name, img, self.ring, self.apply, apply_batch=self.apply_batch,
                      gating=self.gating, batch=self.batch, max_seconds=0.0)
        self.state, self.writer, self.source = rec.state, rec.writer, rec.source
        self.last_applied = rec.last_applied
        self.expect = 0 if rec.last_applied is None else rec.last_applied + 1
        self.pending = rec.pending
        self.applied += rec.replayed
        rec.image_load_s += load_s  # found and verified here, before recover() ran
        self.start_info = {"how": "recovered", "why": why, **rec.summary()}
        self._release_dead_slot(dead_pid, old_slot)

    def _release_dead_slot(self, dead_pid: int, slot: int) -> None:
        """The dead writer's gating slot protects nothing we still need (our own slot
        starts at or before it): free it so a lossless producer is not held back."""
        ring = getattr(self.source, "ring", None)
        if not dead_pid or ring is None or ring.readonly or pid_alive(dead_pid):
            return
        from ..repair import pin_dead_slot, unpin_slot

        try:
            pinned = pin_dead_slot(ring, dead_pid)
            if pinned is not None:
                unpin_slot(ring, pinned[0])
        except PyshmError as exc:
            log.warning("state %s: could not free the dead writer's slot: %s", self.name, exc)

    def _after_start(self) -> None:
        st = self.state
        assert st is not None
        cons = getattr(self.source, "consumer", None)
        ring = getattr(self.source, "ring", None)
        st._store("W_SLOT", cons.slot if cons is not None else -1)
        st._store("W_RING_ID", ring.params.created_ns if ring is not None else 0)
        st._store("W_HEARTBEAT", time.time_ns())
        if self.images is not None and (self.snapshot_every or self.snapshot_records):
            self.schedule = StateSnapshotSchedule(
                self.name, self.images, every_seconds=self.snapshot_every,
                every_records=self.snapshot_records, keep=self.keep,
                poll=self.snapshot_poll).start()

    # ------------------------------------------------------------ handover: new side
    def _take_over(self, old: int) -> None:
        R: State | None = State(self.name)
        assert R is not None
        claimed: State | None = None
        staging: State | None = None
        source: Any = None
        me = self._me
        t_start = time.perf_counter()
        try:
            img = self._latest_image()
            if img is not None:
                rows, seq, origin = img.rows, img.applied_seq, img.path
            else:
                cap = R.capture()
                rows, seq, origin = cap.rows, cap.seq, "a cut of the live region"
            sname = f"{self.name}.handover-{me}"
            staging = State(sname, create=True, dtype=R.dtype, rows=R.rows)
            sw = staging.writer()
            restore_rows(staging, sw, rows, seq)
            start = 0 if seq is None else seq + 1
            source = open_source(self.ring, start, self.gating)
            pending = source.read(self.batch)
            _check_coverage(source, pending, start, f"handover {self.name!r}")
            expect = start
            deadline = time.monotonic() + self.handover_timeout

            def catch_up(limit: int | None) -> None:
                """Apply staging records up to ``limit`` (inclusive), never beyond."""
                nonlocal pending, expect
                while limit is not None and expect <= limit:
                    recs = pending if pending else source.read(self.batch)
                    pending = RecordBatch.empty()
                    if not recs:
                        return
                    head, tail = recs.split(limit)
                    n, last = apply_records(sw, head, self.apply, self.apply_batch, expect)
                    if last is not None:
                        expect = last + 1
                    if tail:
                        pending = tail
                        return

            # catch up while the old writer runs, trailing it (never past its sequence)
            while True:
                a_seq = R.applied_seq
                catch_up(a_seq)
                if a_seq is None or expect > a_seq - self.batch:
                    break
                if not pid_alive(old):
                    raise HandoverError(f"handover {self.name!r}: the old writer (pid {old}) "
                                        f"died while this one caught up; recover instead")
                if time.monotonic() > deadline:
                    raise HandoverError(f"handover {self.name!r}: could not catch up with "
                                        f"the old writer within {self.handover_timeout} s "
                                        f"(at {expect - 1}, it at {a_seq})")
            t_caught = time.perf_counter()
            # ask it to stop at its next record boundary
            # one handover at a time: the claim word (a dead claimer's is taken over)
            holder = _signed_pid(R._load("H_CLAIM"))
            if holder and holder != me and pid_alive(holder):
                raise _AnotherHandover(holder)  # start() waits for it, then retries
            ok, seen = R._cas("H_CLAIM", holder, me)
            if not ok:
                raise _AnotherHandover(_signed_pid(seen))
            claimed = R
            if R.writer_pid != old:
                # another handover finished meanwhile: start again from its new writer
                raise _AnotherHandover(R.writer_pid)
            cur = R._load("H_STATE")
            R._store("H_FINAL", SL.NO_SEQUENCE)
            R._store("H_OLD_PID", old)
            R._store("H_NEW_PID", me)  # before the request: the old writer reads it
            ok, cur = R._cas("H_STATE", cur, SL.HO_REQUESTED)
            if not ok:
                raise HandoverError(f"handover {self.name!r}: the handover state changed "
                                    f"under this request ({SL.HO_STATE_NAMES.get(cur, cur)})")
            polls = 0
            while True:
                h = R._load("H_STATE")
                if h == SL.HO_RELEASED:
                    break
                catch_up(R.applied_seq)
                polls += 1
                if polls % 256 and h == SL.HO_REQUESTED:
                    # the gap runs from the old writer's release until we notice it:
                    # yield rather than sleep (a sleep is milliseconds on a busy box)
                    os.sched_yield()
                    continue
                if h != SL.HO_REQUESTED or not pid_alive(old) or time.monotonic() > deadline:
                    R._cas("H_STATE", SL.HO_REQUESTED, SL.HO_ABORTED)
                    why = ("it died" if not pid_alive(old) else
                           f"it did not answer within {self.handover_timeout} s (does it run "
                           f"a pyshm Follower?)" if h == SL.HO_REQUESTED else
                           f"the request was {SL.HO_STATE_NAMES.get(h, h)}")
                    raise HandoverError(f"handover {self.name!r}: the old writer (pid {old}) "
                                        f"did not release the region: {why}")
                time.sleep(50e-6)
            t_seen = time.monotonic_ns()
            final_raw = R._load("H_FINAL")
            final = None if final_raw == SL.NO_SEQUENCE else final_raw
            released_ns = R._load("H_NS")
            catch_up(final)
            t_applied = time.monotonic_ns()
            if (final is None and expect != start) or (final is not None and expect != final + 1):
                R._cas("H_STATE", SL.HO_RELEASED, SL.HO_ABORTED)
                raise HandoverError(f"handover {self.name!r}: staging reached {expect - 1}, "
                                    f"the old writer stopped at {final}")
            # the writer role first, so that no third process ever sees the old (about
            # to exit) writer's pid on a region already handed over; then the commit
            # point (released -> done), after which the old writer never writes again
            ok, cur = R._cas("W_PID", old, me)
            if not ok:
                R._cas("H_STATE", SL.HO_RELEASED, SL.HO_ABORTED)
                raise HandoverError(f"handover {self.name!r}: the writer role moved to pid "
                                    f"{cur} meanwhile")
            ok, cur = R._cas("H_STATE", SL.HO_RELEASED, SL.HO_DONE)
            if not ok:
                R._cas("W_PID", me, old)  # the old writer took the region back: its role
                raise HandoverError(f"handover {self.name!r}: the old writer took the region "
                                    f"back ({SL.HO_STATE_NAMES.get(cur, cur)})")
            w = R.writer(_taken=True)
            differ = 0
            if self.sync == "diff":
                # compare row by row in C and write only what differs (none when both
                # versions fold alike), in one transaction at the handover sequence
                w.begin()
                differ = w.sync_rows(staging.raw_rows())
                if final is None:
                    w.commit_applied(SL.NO_SEQUENCE)
                else:
                    w.commit(final)
            t_ready_ns = time.monotonic_ns()
            self.state, self.writer, self.source = R, w, source
            R = None
            self.expect, self.pending = expect, pending
            self.last_applied = final
            gap_ns = t_ready_ns - released_ns if released_ns else None
            self.handover_info = {
                "role": "new", "old_pid": old, "final_seq": final, "image": origin,
                "image_seq": seq, "rows_differing": differ,
                "catch_up_s": round(t_caught - t_start, 6),
                "gap_ns": gap_ns,
                # where the gap goes: noticing the release, applying up to its sequence,
                # taking the role and copying the rows that differ
                "gap_parts_ns": {"notice": t_seen - released_ns if released_ns else None,
                                 "apply_to_final": t_applied - t_seen,
                                 "take_and_sync": t_ready_ns - t_applied}}
            self.start_info = {"how": "handover", **self.handover_info}
            # the old process releases its own gating slot when it sees DONE (its
            # Follower returns handed_over and is closed); if it dies instead, the slot
            # is reaped as any dead consumer's is
        except BaseException:
            if source is not None and self.source is not source:
                source.close()
            if R is not None:
                R.close()
            raise
        finally:
            if claimed is not None and not claimed.closed:
                claimed._cas("H_CLAIM", me, 0)
            elif claimed is not None:
                with State(self.name) as again:
                    again._cas("H_CLAIM", me, 0)
            if staging is not None:
                staging.close()
                staging.unlink()

    # ------------------------------------------------------------ handover: old side
    def _answer_handover(self) -> bool:
        """Called between batches: True if the region was handed over (stop now)."""
        st = self.state
        assert st is not None
        if st._load("H_STATE") != SL.HO_REQUESTED:
            return False
        new = st._load("H_NEW_PID")
        if not new or new == self._me or not pid_alive(new):
            st._cas("H_STATE", SL.HO_REQUESTED, SL.HO_ABORTED)
            return False
        final = st.applied_seq
        st._store("H_FINAL", SL.NO_SEQUENCE if final is None else final)
        st._store("H_OLD_PID", self._me)
        st._store("H_NS", time.monotonic_ns())
        ok, _ = st._cas("H_STATE", SL.HO_REQUESTED, SL.HO_RELEASED)
        if not ok:
            return False
        deadline = time.monotonic() + self.handover_timeout
        while True:
            h = st._load("H_STATE")
            if h == SL.HO_DONE:
                self.handover_info = {"role": "old", "new_pid": new, "final_seq": final}
                return True
            if h != SL.HO_RELEASED:
                return False  # aborted by the new process: carry on
            if not pid_alive(new) or time.monotonic() > deadline:
                ok, h = st._cas("H_STATE", SL.HO_RELEASED, SL.HO_ABORTED)
                if ok:
                    # the new process may have taken the writer pid before it died
                    st._cas("W_PID", new, self._me)
                    log.warning("state %s: handover to pid %d abandoned; carrying on",
                                self.name, new)
                    return False
                continue  # it committed (DONE) just now
            time.sleep(50e-6)

    # ------------------------------------------------------------ run
    def step(self) -> int:
        """Apply the next batch of records (0 if none arrived)."""
        if self.state is None:
            self.start()
        recs = self.pending if self.pending else self.source.read(self.batch)
        self.pending = RecordBatch.empty()
        if not recs:
            self._note_caught_up()
            return 0
        assert self.writer is not None
        n, last = apply_records(self.writer, recs, self.apply, self.apply_batch, self.expect)
        if last is not None:
            self.expect = last + 1
            self.last_applied = last
        self.applied += n
        return n

    def run(self, stop: threading.Event | None = None, until: int | None = None,
            max_seconds: float | None = None) -> FollowerResult:
        """Apply records until ``stop`` is set, sequence ``until`` is applied,
        ``max_seconds`` pass, or the region is handed over to a new process."""
        # counted since the previous run (the first one includes start's replay)
        applied_before = self._run_mark
        self.start()
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        reason = "stopped"
        while True:
            if stop is not None and stop.is_set():
                break
            if until is not None and self.last_applied is not None \
                    and self.last_applied >= until:
                reason = "until"
                break
            if deadline is not None and time.monotonic() > deadline:
                reason = "max_seconds"
                break
            if until is not None:
                recs = self.pending if self.pending else self.source.read(self.batch)
                recs, self.pending = recs.split(until)
                if recs:
                    assert self.writer is not None
                    n, last = apply_records(self.writer, recs, self.apply, self.apply_batch,
                                            self.expect)
                    if last is not None:
                        self.expect = last + 1
                        self.last_applied = last
                    self.applied += n
                else:
                    n = 0
                    self._note_caught_up()
            else:
                n = self.step()
            if self._answer_handover():
                reason = "handed_over"
                break
            if not n:
                time.sleep(self.idle_sleep)
        self._run_mark = self.applied
        return FollowerResult(reason, self.applied - applied_before, self.last_applied,
                              dict(self.start_info), dict(self.handover_info))

    def close(self) -> None:
        """Stop the schedule, release the consumer slot and the writer role."""
        if self.schedule is not None:
            try:
                self.schedule.close()
            finally:
                self.schedule = None
        if self.source is not None:
            self.source.close()
            self.source = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.state is not None:
            self.state.close()
            self.state = None

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
