"""Recovery of a state region: a state image at sequence S, then the ring's records after S.

``recover(state_name, image, ring, apply)``:

1. reads and verifies the image (every chunk's CRC32C, the dtype description);
2. opens the region (or plans to create it) and checks that its dtype and row count are
   the image's;
3. opens the record source (a live ring, its replica, or a ring image) and checks that it
   holds S+1 onwards: an image ahead of the ring, or records the ring no longer holds,
   are refused naming the sequences;
4. only then takes the writer role (a dead writer's is taken over; a live one refuses)
   and restores the rows in one transaction, ``applied_seq = S``;
5. replays every record after S through ``apply(writer, record)``, one transaction per
   record committed at its sequence, until the source has nothing more (or ``until``).

Steps 1-3 write nothing: a damaged image, a dtype mismatch, an image whose S is ahead of
the ring or a ring that lost S+1 leave the region exactly as it was.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import (
    CorruptSegmentError,
    ImageError,
    InvalidParameterError,
    PyshmError,
    RingNotFoundError,
)
from ..images import format as fmt
from . import layout as SL
from .errors import ApplyError, MissingSequencesError, StateMismatchError
from .images import StateImage, read_state_image
from .region import State, StateWriter

__all__ = ["Record", "RecordBatch", "Recovery", "recover", "restore_image", "latest_image",
           "image_name", "list_images", "RecordSource", "open_source"]

IMAGE_SUFFIX = fmt.IMAGE_SUFFIX


class Record:
    """One ring record handed to ``apply``: ``sequence``, ``type`` and ``data`` (a
    memoryview valid during the call; copy it to keep it)."""

    __slots__ = ("sequence", "type", "data")

    def __init__(self, sequence: int, type: int, data: Any):
        self.sequence = sequence
        self.type = type
        self.data = data

    def __repr__(self) -> str:
        return f"<Record seq={self.sequence} type={self.type} len={len(self.data)}>"


class RecordBatch:
    """Consecutive records handed to ``apply_batch`` (and read from a source): arrays
    ``sequences`` (uint64), ``types`` (int32), ``data`` (the payloads end to end, uint8)
    and ``ends`` (where each payload ends in ``data``). Iterating yields :class:`Record`
    objects; :meth:`array` views equal-sized payloads as one numpy array of a dtype. The
    arrays may be views of a buffer the source reuses: valid during the call."""

    __slots__ = ("sequences", "types", "data", "ends")

    def __init__(self, sequences: np.ndarray, types: np.ndarray, data: np.ndarray,
                 ends: np.ndarray):
        self.sequences = sequences
        self.types = types
        self.data = data
        self.ends = ends

    @classmethod
    def empty(cls) -> RecordBatch:
        return cls(np.empty(0, np.uint64), np.empty(0, np.int32), np.empty(0, np.uint8),
                   np.empty(0, np.uint64))

    @classmethod
    def from_records(cls, records: list[tuple[int, int, bytes]]) -> RecordBatch:
        """(sequence, type, payload) tuples -> a batch (copies the payloads)."""
        if not records:
            return cls.empty()
        lens = np.fromiter((len(r[2]) for r in records), np.uint64, len(records))
        return cls(np.fromiter((r[0] for r in records), np.uint64, len(records)),
                   np.fromiter((r[1] for r in records), np.int32, len(records)),
                   np.frombuffer(b"".join(r[2] for r in records), np.uint8),
                   np.cumsum(lens, dtype=np.uint64))

    def __len__(self) -> int:
        return len(self.sequences)

    def __bool__(self) -> bool:
        return len(self.sequences) > 0

    @property
    def first(self) -> int:
        """The first record's sequence."""
        return int(self.sequences[0])

    @property
    def last(self) -> int:
        """The last record's sequence."""
        return int(self.sequences[-1])

    def __iter__(self) -> Iterator[Record]:
        mv = memoryview(self.data)  # type: ignore[arg-type]
        start = 0
        for seq, type_, end in zip(self.sequences.tolist(), self.types.tolist(),
                                   self.ends.tolist(), strict=True):
            yield Record(seq, type_, mv[start:end])
            start = end

    def __getitem__(self, i: int) -> Record:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"record {i} of a batch of {n}")
        start = int(self.ends[i - 1]) if i else 0
        mv = memoryview(self.data)  # type: ignore[arg-type]
        return Record(int(self.sequences[i]), int(self.types[i]),
                      mv[start:int(self.ends[i])])

    def array(self, dtype: Any) -> np.ndarray:
        """The payloads as one array of ``dtype`` (every payload must have its size)."""
        dt = np.dtype(dtype)
        n = len(self)
        if not n:
            return np.empty(0, dt)
        lengths = np.diff(self.ends, prepend=np.uint64(0))
        if (lengths != dt.itemsize).any():
            raise InvalidParameterError(f"records are not all {dt.itemsize} bytes (dtype "
                                        f"{dt}): cannot view them as one array")
        return self.data[:n * dt.itemsize].view(dt)

    def split(self, until: int) -> tuple[RecordBatch, RecordBatch]:
        """(records <= ``until``, the rest copied: they outlive the source's buffer)."""
        k = int(np.searchsorted(self.sequences, np.uint64(until), side="right"))
        if k >= len(self):
            return self, RecordBatch.empty()
        cut = int(self.ends[k - 1]) if k else 0
        head = RecordBatch(self.sequences[:k], self.types[:k], self.data[:cut],
                           self.ends[:k])
        tail = RecordBatch(self.sequences[k:].copy(), self.types[k:].copy(),
                           self.data[cut:int(self.ends[-1])].copy(),
                           self.ends[k:] - np.uint64(cut))
        return head, tail

    def copy(self) -> RecordBatch:
        """A batch that owns its arrays."""
        return RecordBatch(self.sequences.copy(), self.types.copy(),
                           self.data[:int(self.ends[-1]) if len(self) else 0].copy(),
                           self.ends.copy())

    def __repr__(self) -> str:
        if not self:
            return "<RecordBatch empty>"
        return f"<RecordBatch {len(self)} records {self.first}..{self.last}>"


ApplyFn = Callable[[StateWriter, Record], Any]
ApplyBatchFn = Callable[[StateWriter, RecordBatch], Any]


# ----------------------------------------------------------------------------------
# image files of a region: NAME-SEQ-NS.pyimg


_NAME_SAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def image_prefix(state_name: str) -> str:
    return _NAME_SAFE.sub("_", os.path.basename(os.fspath(state_name)))


def image_name(state_name: str, seq: int | None) -> str:
    """``book-00000000000000012345-<ns>.pyimg``: name order is sequence order."""
    s = "none" if seq is None else f"{seq:020d}"
    return f"{image_prefix(state_name)}-{s}-{time.time_ns()}{IMAGE_SUFFIX}"


def list_images(directory: str | os.PathLike[str], state_name: str) -> list[str]:
    """This region's image files in ``directory``, oldest sequence first."""
    pat = re.compile(re.escape(image_prefix(state_name)) + r"-(none|\d{20})-(\d+)" +
                     re.escape(IMAGE_SUFFIX) + "$")
    found = []
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return []
    for e in entries:
        m = pat.match(e)
        if m:
            seq = -1 if m.group(1) == "none" else int(m.group(1))
            found.append((seq, int(m.group(2)), e))
    return [os.path.join(os.fspath(directory), e) for _, _, e in sorted(found)]


def latest_image(directory: str | os.PathLike[str], state_name: str,
                 skipped: list[str] | None = None) -> StateImage | None:
    """The newest image of the region in ``directory`` that verifies; damaged ones are
    skipped (and named in ``skipped``). None if there is none."""
    for path in reversed(list_images(directory, state_name)):
        try:
            return read_state_image(path)
        except (ImageError, CorruptSegmentError) as exc:
            if skipped is not None:
                skipped.append(f"{path}: {exc}")
    return None


# ----------------------------------------------------------------------------------
# record sources


class RecordSource:
    """Records from a live ring or replica (a consumer) or from a ring image."""

    kind = "?"
    name = "?"

    def next_sequence(self) -> int:
        """The sequence the source's next new record will get (what it has reached)."""
        raise NotImplementedError

    def read(self, max_records: int) -> RecordBatch:
        """Up to ``max_records`` records, oldest first; an empty batch when nothing more
        is there (the batch's arrays are valid until the next read)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class RingSource(RecordSource):
    """A live ring (or a replica): a consumer starting at a sequence."""

    kind = "ring"

    def __init__(self, ring: Any, start: int, gating: bool | None,
                 held: tuple[int, int, int] | None = None):
        from ..ring import Ring

        self._own = not isinstance(ring, Ring)
        self.ring = Ring(ring) if self._own else ring
        try:
            r = self.ring
            self.name = r.name
            if r.is_replica:
                self.kind = "replica"
                if not r.readonly:
                    self.ring.close()
                    self.ring = Ring(ring if self._own else r.path, readonly=True)
                    self._own = True
                    r = self.ring
            if gating is None:
                gating = r.lossless and not r.readonly
            gate = bool(gating) and not r.readonly
            if held is not None and held[0] <= start and held[2] == r.params.created_ns \
                    and not r.is_replica:
                # the ring is held for us from a known record boundary (pyshm run's
                # retention slot): start there; a seek by sequence could only start at
                # the next partition start and would miss the records before it
                from ..repair import resume_consumer
                self.consumer = resume_consumer(r, held[1], start, gating=gate)
            else:
                self.consumer = r.consumer(start=start, gating=gate)
            self.start = start
        except BaseException:
            if self._own:
                self.ring.close()
            raise
        self._first: list[Record] | None = None

    def next_sequence(self) -> int:
        return self.ring.next_sequence

    def read(self, max_records: int) -> RecordBatch:
        b = self.consumer.read_batch(max_records)
        return RecordBatch(b.sequences, b.types, b.data, b.ends)

    def close(self) -> None:
        try:
            self.consumer.close()
        finally:
            if self._own:
                self.ring.close()


class ImageSource(RecordSource):
    """The records of a ring image (verified when opened)."""

    kind = "ring image"

    def __init__(self, path: str | os.PathLike[str], start: int):
        from ..images.inspect import image_records

        self.name = os.fspath(path)
        self.header, recs = image_records(path)
        self._it = (r for r in recs if r[2] >= start)

    def next_sequence(self) -> int:
        return int(self.header.next_sequence)

    def read(self, max_records: int) -> RecordBatch:
        out: list[tuple[int, int, bytes]] = []
        for _pos, type_, seq, payload in self._it:
            out.append((seq, type_, bytes(payload)))
            if len(out) >= max_records:
                break
        return RecordBatch.from_records(out)


def open_source(ring: Any, start: int, gating: bool | None = None,
                state: str | os.PathLike[str] | None = None) -> Any:
    """A live ring, a replica (name, path or Ring) or a ring image path. With ``state``
    (a region's name), a retention point recorded in the region is used when it covers
    ``start`` (see :class:`RingSource`)."""
    if isinstance(ring, (str, os.PathLike)) and fmt.is_image(ring):
        return ImageSource(ring, start)
    return RingSource(ring, start, gating, _held(state) if state is not None else None)


def _held(state: str | os.PathLike[str]) -> tuple[int, int, int] | None:
    """(sequence, ring position, ring created_ns) the region's supervisor holds the ring
    from, or None."""
    try:
        with State(state, readonly=True) as st:
            ring_id = st._load("I_RETAIN_RING")
            if not ring_id:
                return None
            return st._load("I_RETAIN_SEQ"), st._load("I_RETAIN_POS"), ring_id
    except PyshmError:
        return None


# ----------------------------------------------------------------------------------
# recover


@dataclass
class Recovery:
    """The result of :func:`recover`: the region (writer role held), the record source
    positioned after the last record applied, and the figures."""

    state: State
    writer: StateWriter
    source: Any
    image_path: str | None
    image_seq: int | None
    last_applied: int | None
    replayed: int = 0
    image_load_s: float = 0.0
    restore_s: float = 0.0
    replay_s: float = 0.0
    created: bool = False
    skipped_images: list[str] = field(default_factory=list)
    pending: RecordBatch = field(default_factory=RecordBatch.empty)

    @property
    def records_per_s(self) -> float:
        """Replay rate: records applied per second of replay."""
        return self.replayed / self.replay_s if self.replay_s > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """The figures as plain data: image, sequences, timings split in image load,
        restore and replay."""
        return {"state": self.state.name, "image": self.image_path,
                "image_seq": self.image_seq, "last_applied": self.last_applied,
                "replayed": self.replayed, "source": f"{self.source.kind} {self.source.name}",
                "image_load_s": round(self.image_load_s, 6),
                "restore_s": round(self.restore_s, 6), "replay_s": round(self.replay_s, 6),
                "records_per_s": round(self.records_per_s), "created": self.created,
                "skipped_images": self.skipped_images}

    def close(self, unlink: bool = False) -> None:
        """Release the record source (its consumer slot), the writer role and the
        mapping; ``unlink`` also removes the region."""
        self.source.close()
        self.writer.close()
        self.state.close()
        if unlink:
            self.state.unlink()


def _check_coverage(source: Any, first: RecordBatch, start: int, where: str) -> None:
    """The source must hold ``start`` (= S+1) unless it has not reached it yet, and
    must not be behind the image."""
    reached = source.next_sequence()
    if reached < start:
        raise InvalidParameterError(
            f"{where}: the image is at sequence {start - 1} but {source.kind} "
            f"{source.name!r} has only reached sequence {reached - 1} (next {reached}): the "
            f"image is ahead of the ring (taken from another ring, or the ring was reset); "
            f"nothing was changed")
    if first and first.first > start:
        raise MissingSequencesError(
            f"{where}: {source.kind} {source.name!r} no longer holds sequences "
            f"{start}..{first.first - 1} (its oldest record is "
            f"{first.first}): the image at sequence {start - 1} is too old to "
            f"replay from; use a newer image or a ring image that holds them; nothing was "
            f"changed", start, first.first - 1, first.first)
    if not first and reached > start:
        raise MissingSequencesError(
            f"{where}: {source.kind} {source.name!r} no longer holds sequences "
            f"{start}..{reached - 1}: nothing was changed", start, reached - 1, None)


def apply_records(writer: StateWriter, records: RecordBatch, apply: ApplyFn | None,
                  apply_batch: ApplyBatchFn | None, expect: int | None,
                  until: int | None = None) -> tuple[int, int | None]:
    """Apply a batch (one transaction per record committed at its sequence, or one per
    batch with ``apply_batch``) and return (how many, last sequence). Records after
    ``until`` are not applied. Refuses a gap or a repeat against ``expect``."""
    if until is not None:
        records, _ = records.split(until)
    if not records:
        return 0, None
    first = records.first
    if expect is not None and first != expect:
        if first > expect:
            raise MissingSequencesError(
                f"state region {writer.state.name!r}: records {expect}..{first - 1} were "
                f"lost before they could be applied (the producer lapped this consumer)",
                expect, first - 1, first)
        raise PyshmError(f"state region {writer.state.name!r}: record {first} arrived "
                         f"again (expected {expect})")
    last = records.last
    if last - first + 1 != len(records):
        raise PyshmError(f"state region {writer.state.name!r}: records {first}..{last} are "
                         f"not consecutive")
    if apply_batch is not None:
        writer.begin()
        try:
            apply_batch(writer, records)
        except Exception as exc:
            writer.commit(None)
            raise ApplyError(f"apply_batch raised on records {first}..{last}: {exc!r}",
                             first) from exc
        writer.commit(last)
        return len(records), last
    assert apply is not None
    commit = writer.commit
    begin = writer.begin
    for rec in records:
        begin()
        try:
            apply(writer, rec)
        except Exception as exc:
            commit(None)
            raise ApplyError(f"apply raised on record {rec.sequence}: {exc!r}",
                             rec.sequence) from exc
        commit(rec.sequence)
    return len(records), last


def restore_rows(st: State, w: StateWriter, rows: np.ndarray, seq: int | None) -> None:
    """Every row from ``rows`` and applied_seq = ``seq``, in one transaction."""
    w.begin()
    w.write_range(0, rows)
    w.commit_applied(SL.NO_SEQUENCE if seq is None else seq)


def restore_image(state_name: str | os.PathLike[str], image: Any, *,
                  create: bool = True) -> dict[str, Any]:
    """Put region ``state_name`` back to a state image (no replay): the rows and
    ``applied_seq = S``. Checked like :func:`recover` before anything is written."""
    name = os.fspath(state_name)
    where = f"restore {name!r}"
    skipped: list[str] = []
    if isinstance(image, StateImage):
        img = image
    elif os.path.isdir(image):
        found = latest_image(image, name, skipped)
        if found is None:
            raise RingNotFoundError(f"{where}: no state image of this region in {image}")
        img = found
    else:
        img = read_state_image(image)
    try:
        st = State(name)
    except RingNotFoundError:
        if not create:
            raise
        st = State(name, create=True, dtype=img.dtype, rows=img.header.row_count)
    with st:
        if st.description != img.description or st.rows != img.header.row_count:
            raise StateMismatchError(
                f"{where}: the region holds {st.rows} rows of {st.dtype}, the image "
                f"{img.header.row_count} rows of {img.dtype}; nothing was changed")
        w = st.writer(force=True)
        restore_rows(st, w, img.rows, img.applied_seq)
        w.close()
    return {"state": name, "image": img.path, "image_seq": img.applied_seq,
            "skipped_images": skipped}


def recover(state_name: str | os.PathLike[str], image: Any, ring: Any,
            apply: ApplyFn | None = None, *, apply_batch: ApplyBatchFn | None = None,
            until: int | None = None, create: bool = True, gating: bool | None = None,
            batch: int = 1024, max_seconds: float | None = None,
            progress: fmt.ProgressFn | None = None) -> Recovery:
    """Restore region ``state_name`` from ``image`` and replay ``ring`` after it.

    ``image``: a state image path, a directory (the newest image of this region that
    verifies), a :class:`StateImage`, or None to rebuild from an empty region (the ring
    must then hold every record from sequence 0). ``ring``: a live ring or a replica
    (name, path or Ring; a live lossless ring is read by a gating consumer) or a ring
    image path. ``apply(writer, record)`` is called for every record after S, in order;
    ``apply_batch(writer, records)`` instead takes a list per batch (one transaction per
    batch). Replay stops when the source has nothing more, at ``until`` (a sequence,
    inclusive), or after ``max_seconds``. The region is created when missing if
    ``create``. The returned :class:`Recovery` holds the writer role and the record
    source positioned after the last record applied; close it (or keep applying).
    """
    if (apply is None) == (apply_batch is None):
        raise InvalidParameterError("recover needs apply or apply_batch (one of them)")
    name = os.fspath(state_name)
    where = f"recover {name!r}"
    t0 = time.perf_counter()
    skipped: list[str] = []
    img: StateImage | None
    image_path: str | None = None
    if image is None:
        img = None
    elif isinstance(image, StateImage):
        img = image
        image_path = img.path
    elif os.path.isdir(image):
        img = latest_image(image, name, skipped)
        if img is None:
            raise RingNotFoundError(f"{where}: no state image of this region in {image}"
                                    + (f" that verifies ({'; '.join(skipped)})" if skipped
                                       else ""))
        image_path = img.path
    else:
        img = read_state_image(image, progress)
        image_path = img.path
    seq = img.applied_seq if img is not None else None
    start = 0 if seq is None else seq + 1
    t_loaded = time.perf_counter()

    # the region: existing (checked against the image) or to be created
    st: State | None = None
    created = False
    try:
        try:
            st = State(name)
        except RingNotFoundError:
            if not create:
                raise
            st = None
        if st is not None and img is not None:
            if st.description != img.description or st.rows != img.header.row_count:
                raise StateMismatchError(
                    f"{where}: the region holds {st.rows} rows of {st.dtype}, the image "
                    f"{img.header.row_count} rows of {img.dtype}; nothing was changed")
        if st is None and img is None:
            raise InvalidParameterError(f"{where}: the region does not exist and there is "
                                        f"no image to create it from")
        if st is not None:
            # refuse a live writer before anything else is touched
            wpid = st.writer_pid
            from ..ring import pid_alive
            if wpid and wpid != os.getpid() and pid_alive(wpid):
                from .errors import WriterBusyError
                raise WriterBusyError(f"{where}: the region's writer (pid {wpid}) is alive; "
                                      f"stop it first (or hand over with `pyshm handover`)")

        source = open_source(ring, start, gating, state=name if st is not None else None)
        try:
            first = source.read(batch)
            _check_coverage(source, first, start, where)
            if st is None:
                assert img is not None
                st = State(name, create=True, dtype=img.dtype, rows=img.header.row_count)
                created = True
            w = st.writer(force=True)
            t_restore = time.perf_counter()
            # no image: fold from an empty region
            restore_rows(st, w, img.rows if img is not None else np.zeros(st.rows, st.dtype),
                         seq)
            t_replay = time.perf_counter()
            rec = Recovery(st, w, source, image_path, seq, seq, image_load_s=t_loaded - t0,
                           restore_s=t_replay - t_restore, created=created,
                           skipped_images=skipped)
            _replay(rec, first, apply, apply_batch, until, batch, max_seconds, start)
            rec.replay_s = time.perf_counter() - t_replay
            return rec
        except BaseException:
            source.close()
            raise
    except BaseException:
        if st is not None:
            st.close()
            if created:
                st.unlink()
        raise


def _replay(rec: Recovery, first: RecordBatch, apply: ApplyFn | None,
            apply_batch: ApplyBatchFn | None, until: int | None, batch: int,
            max_seconds: float | None, start: int) -> None:
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    expect = start
    recs = first
    while recs:
        n, last = apply_records(rec.writer, recs, apply, apply_batch, expect, until)
        rec.replayed += n
        if last is not None:
            rec.last_applied = last
            expect = last + 1
        if until is not None and (last is None or last >= until):
            rec.pending = recs.split(until)[1]  # copied: the buffer is reused
            return
        if deadline is not None and time.monotonic() > deadline:
            return
        recs = rec.source.read(batch)
