"""State images: the rows of a state region at one ring sequence S, in the image format.

A state image is a cut: every row reflects exactly the records up to S (the region's
``applied_seq`` at the commit the cut was fixed at). It is framed and checksummed like a
ring image (kind ``state``, format version 2, see pyshm/images/format.py): the data is
the dtype description followed by the rows.

* :func:`snapshot_state` takes one without stopping the writer for longer than one
  chunk copy (see :meth:`pyshm.state.State.capture`);
* :func:`read_state_image` verifies every checksum and the description and returns the
  rows; :func:`inspect_state_image`, :func:`export_state_image` (npz) and
  :func:`diff_states` are the tools behind ``pyshm inspect|export|diff``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ImageError, InvalidParameterError
from ..images import format as fmt
from . import dtypes
from .region import Capture, State

__all__ = ["StateImage", "snapshot_state", "read_state_image", "inspect_state_image",
           "export_state_image", "diff_states", "StateDiff", "write_state_image"]


@dataclass
class StateImage:
    """A verified state image: header, dtype and rows (a private array)."""

    path: str
    header: fmt.StateImageHeader
    dtype: np.dtype
    description: str
    rows: np.ndarray

    @property
    def applied_seq(self) -> int | None:
        return self.header.applied_seq


@dataclass
class SnapshotResult:
    """What :func:`snapshot_state` did: the header written and how long each part took."""

    path: str
    header: fmt.StateImageHeader
    capture: Capture
    capture_s: float
    write_s: float


def _pieces(description: str, rows: np.ndarray) -> list[memoryview]:
    raw = description.encode("ascii")
    pad = (-len(raw)) % 8
    flat: Any = rows.view(np.uint8).reshape(-1)
    return [memoryview(raw + bytes(pad)), memoryview(flat)]


def write_state_image(path: str | os.PathLike[str], state: State, cap: Capture, *,
                      compression: str = "none", level: int = 3,
                      chunk_size: int = fmt.DEFAULT_CHUNK, overwrite: bool = False,
                      mode: int = 0o600, sync: bool = True,
                      progress: fmt.ProgressFn | None = None) -> fmt.StateImageHeader:
    """Write a capture of ``state`` as a state image (atomically: temp file + rename)."""
    p = state.params
    header = fmt.StateImageHeader(
        row_count=p.row_count, itemsize=p.itemsize, desc_length=p.desc_length,
        desc_crc=p.desc_crc, applied_seq=cap.seq, region_id=state.region_id,
        cut_epoch=cap.epoch, name=state.name, region_created_ns=p.created_ns,
        created_ns=fmt.now_ns(), flags=fmt.IMAGE_FLAG_FROM_REPLICA if state.is_replica
        else 0)
    out: fmt.StateImageHeader = fmt.write_image(
        path, header, _pieces(state.description, cap.rows), compression=compression,
        level=level, chunk_size=chunk_size, overwrite=overwrite, mode=mode, sync=sync,
        progress=progress)
    return out


def snapshot_state(source: State | str | os.PathLike[str], path: str | os.PathLike[str], *,
                   compression: str = "none", level: int = 3,
                   chunk_size: int = fmt.DEFAULT_CHUNK, overwrite: bool = False,
                   mode: int = 0o600, sync: bool = True, timeout: float | None = None,
                   buffer: np.ndarray | None = None, method: str = "auto",
                   progress: fmt.ProgressFn | None = None) -> SnapshotResult:
    """Image the region ``source`` (a State or its name) at its current commit.

    The cut is fixed at a commit boundary and copied with the writer's copy-on-write
    help (the writer waits at most one 16 KiB chunk copy); the file is then written
    from that private copy. ``buffer``: a rows array to reuse between snapshots.
    """
    own = not isinstance(source, State)
    st = source if isinstance(source, State) else State(source)
    try:
        t0 = time.perf_counter()
        cap = st.capture(method=method, timeout=timeout, out=buffer)
        t1 = time.perf_counter()
        header = write_state_image(path, st, cap, compression=compression, level=level,
                                   chunk_size=chunk_size, overwrite=overwrite, mode=mode,
                                   sync=sync, progress=progress)
        return SnapshotResult(os.path.abspath(os.fspath(path)), header, cap, t1 - t0,
                              time.perf_counter() - t1)
    finally:
        if own:
            st.close()


def read_state_image(path: str | os.PathLike[str],
                     progress: fmt.ProgressFn | None = None) -> StateImage:
    """Open, verify (every chunk's CRC32C, the description's CRC and validator) and load
    a state image. A damaged or lying image raises :class:`ImageError` naming the part."""
    where = os.fspath(path)
    with fmt.ImageReader(path, kind="state") as r:
        h: fmt.StateImageHeader = r.header
        data = r.read_data(progress)
    raw = bytes(data[:h.desc_length])
    if fmt.crc(raw) != h.desc_crc:
        raise ImageError(f"{where}: dtype description checksum mismatch")
    if any(data[h.desc_length:h.desc_area]):
        raise ImageError(f"{where}: description padding is not zero")
    dt = dtypes.parse(raw, where=f"image {where}", error=ImageError)
    if dt.itemsize != h.itemsize:
        raise ImageError(f"{where}: header says rows of {h.itemsize} bytes, the dtype has "
                         f"{dt.itemsize}")
    rows = data[h.desc_area:].view(dt)
    if len(rows) != h.row_count:
        raise ImageError(f"{where}: {len(rows)} rows in the data, header says {h.row_count}")
    return StateImage(where, h, dt, raw.decode("ascii"), rows)


def inspect_state_image(path: str | os.PathLike[str], *, verify: bool = True,
                        progress: fmt.ProgressFn | None = None) -> dict[str, Any]:
    """dtype, rows and S of a state image, as plain data (JSON-ready)."""
    with fmt.ImageReader(path, kind="state") as r:
        h: fmt.StateImageHeader = r.header
        file_size = r.file_size
        stored = sum(e.stored_length for e in r.chunks)
        chunks = len(r.chunks)
        if not verify:
            desc = bytes(r.read_data()[:h.desc_length]) if h.data_length < 1 << 20 else None
    dt: np.dtype | None
    desc_text: str | None
    if verify:
        img = read_state_image(path, progress)
        dt, desc_text = img.dtype, img.description
    else:
        dt = dtypes.parse(desc, error=ImageError) if desc is not None else None
        desc_text = desc.decode("ascii") if desc is not None else None
    return {
        "path": os.fspath(path), "kind": "state", "format_version": fmt.VERSION_KIND,
        "file_size": file_size, "created_ns": h.created_ns,
        "from_replica": h.from_replica,
        "region": {"name": h.name, "rows": h.row_count, "itemsize": h.itemsize,
                   "region_id": f"{h.region_id:016x}", "created_ns": h.region_created_ns},
        "dtype": dtypes.fields_summary(dt) if dt is not None else None,
        "description": desc_text,
        "applied_seq": h.applied_seq, "cut_epoch": h.cut_epoch,
        "compression": h.compression_name, "chunk_size": h.chunk_size, "chunks": chunks,
        "data_bytes": h.data_length, "stored_bytes": stored,
        "ratio": round(h.data_length / stored, 3) if stored else None,
        "checksums": "verified" if verify else "header, table and trailer only",
    }


def _flat_fields(rows: np.ndarray) -> dict[str, np.ndarray]:
    """Every leaf field as its own plain array: "book.bid_px" -> shape (rows, 4)."""
    out: dict[str, np.ndarray] = {}

    def walk(arr: np.ndarray, prefix: str) -> None:
        names = arr.dtype.names
        if names is None:
            out[prefix] = np.ascontiguousarray(arr)
            return
        for n in names:
            walk(arr[n], f"{prefix}.{n}" if prefix else n)

    walk(rows, "")
    return out


def export_state_image(path: str | os.PathLike[str], out: str | os.PathLike[str]) -> int:
    """Write the image's rows to an ``.npz``: ``rows`` (the structured array), one plain
    array per field (nested names joined with '.'), ``applied_seq`` (int64, -1: none)
    and ``description`` (the dtype description, uint8). ``np.load(out,
    allow_pickle=False)`` reads it. Returns the number of rows."""
    img = read_state_image(path)
    arrays: dict[str, np.ndarray] = {f"field.{k}": v for k, v in _flat_fields(img.rows).items()}
    arrays["rows"] = img.rows
    seq = img.applied_seq
    arrays["applied_seq"] = np.array([-1 if seq is None else seq], dtype=np.int64)
    arrays["description"] = np.frombuffer(img.description.encode("ascii"), np.uint8)
    np.savez(out, **arrays)  # type: ignore[arg-type]
    return len(img.rows)


@dataclass
class StateDiff:
    a_seq: int | None
    b_seq: int | None
    rows_a: int
    rows_b: int
    dtype_differs: str | None = None
    differing_rows: int = 0
    compared_rows: int = 0
    examples: list[str] = field(default_factory=list)
    field_counts: dict[str, int] = field(default_factory=dict)

    @property
    def identical(self) -> bool:
        return (self.dtype_differs is None and self.rows_a == self.rows_b
                and self.differing_rows == 0)

    def lines(self) -> list[str]:
        def seq(s: int | None) -> str:
            return "no sequence applied" if s is None else f"sequence {s}"

        out = [f"A: {self.rows_a} rows at {seq(self.a_seq)}",
               f"B: {self.rows_b} rows at {seq(self.b_seq)}"]
        if self.dtype_differs:
            out.append(f"dtype differs: {self.dtype_differs}")
        else:
            if self.rows_a != self.rows_b:
                out.append(f"row count differs: {self.rows_a} != {self.rows_b} (first "
                           f"{self.compared_rows} compared)")
            out.append(f"rows compared {self.compared_rows}, differing "
                       f"{self.differing_rows}")
            if self.field_counts:
                out.append("differing fields: " + ", ".join(
                    f"{k} ({v} rows)" for k, v in self.field_counts.items()))
            out += self.examples
        out.append("identical" if self.identical else "different")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"a_seq": self.a_seq, "b_seq": self.b_seq, "rows_a": self.rows_a,
                "rows_b": self.rows_b, "dtype_differs": self.dtype_differs,
                "compared_rows": self.compared_rows, "differing_rows": self.differing_rows,
                "field_counts": self.field_counts, "examples": self.examples,
                "identical": self.identical}


def _open_rows(spec: str) -> tuple[np.ndarray, str, int | None]:
    """(rows, description, applied_seq) of a state image or a live state region."""
    if fmt.image_kind(spec) == "state":
        img = read_state_image(spec)
        return img.rows, img.description, img.applied_seq
    if fmt.is_image(spec):
        raise InvalidParameterError(f"{spec} is a ring image; compare it with another ring "
                                    f"image or ring")
    with State(spec) as st:
        cap = st.capture()
        return cap.rows, st.description, cap.seq


def diff_states(a: str, b: str, max_examples: int = 10) -> StateDiff:
    """Compare two state images (or an image and a live region) row by row."""
    ra, da, sa = _open_rows(a)
    rb, db, sb = _open_rows(b)
    d = StateDiff(sa, sb, len(ra), len(rb))
    if da != db:
        d.dtype_differs = f"A {ra.dtype} vs B {rb.dtype}"
        return d
    n = min(len(ra), len(rb))
    d.compared_rows = n
    if not n:
        return d
    bytes_a = ra[:n].view(np.uint8).reshape(n, -1)
    bytes_b = rb[:n].view(np.uint8).reshape(n, -1)
    diff_rows = np.nonzero((bytes_a != bytes_b).any(axis=1))[0]
    d.differing_rows = int(len(diff_rows))
    if not len(diff_rows):
        return d
    fa, fb = _flat_fields(ra[:n]), _flat_fields(rb[:n])
    per_field: dict[str, np.ndarray] = {}
    for name in fa:
        x, y = fa[name], fb[name]
        xb = x.view(np.uint8).reshape(n, -1)
        yb = y.view(np.uint8).reshape(n, -1)
        per_field[name] = (xb != yb).any(axis=1)
        cnt = int(per_field[name].sum())
        if cnt:
            d.field_counts[name] = cnt
    for i in diff_rows[:max_examples]:
        fields = [k for k, m in per_field.items() if m[i]]
        parts = []
        for k in fields[:4]:
            parts.append(f"{k}: {fa[k][i].tolist()!r} != {fb[k][i].tolist()!r}")
        more = f" (+{len(fields) - 4} fields)" if len(fields) > 4 else ""
        d.examples.append(f"row {int(i)}: " + "; ".join(parts) + more)
    return d
