"""Debugging and analysis of images: inspect, export (JSON lines / npz), diff."""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from .. import layout
from . import format as fmt
from .records import UNWRAPPED, iter_records

Rec = tuple[int, int, int, "bytes | memoryview"]  # position, type, sequence, payload


def inspect(path: str | os.PathLike[str], *, verify: bool = True,
            progress: fmt.ProgressFn | None = None) -> dict[str, Any]:
    """Everything a person debugging an image wants, as plain data (JSON-ready)."""
    with fmt.ImageReader(path) as r:
        h = r.header
        if verify:
            r.verify(progress)
        p = h.params
        stored = sum(e.stored_length for e in r.chunks)
        return {
            "path": os.fspath(path),
            "format_version": fmt.VERSION,
            "file_size": r.file_size,
            "created_ns": h.created_ns,
            "from_replica": h.from_replica,
            "ring": {"name": p.name, "capacity": p.capacity, "max_record": p.max_record,
                     "partitions": p.partition_count, "partition_size": p.partition_size,
                     "lossless": p.lossless, "flags": p.flags, "created_ns": p.created_ns},
            "window": {"first_position": h.first_position, "end_position": h.end_position,
                       "bytes": h.data_length},
            "sequences": {"first": h.first_sequence, "last": h.last_sequence,
                          "next": h.next_sequence, "records": h.record_count},
            "compression": h.compression_name,
            "chunk_size": h.chunk_size,
            "chunks": len(r.chunks),
            "stored_bytes": stored,
            "ratio": round(h.data_length / stored, 3) if stored else None,
            "checksums": "verified" if verify else "header, table and trailer only",
        }


def image_records(path: str | os.PathLike[str]) -> tuple[fmt.ImageHeader, Iterator[Rec]]:
    """The verified records of an image, in sequence order."""
    with fmt.ImageReader(path) as r:
        h = r.header
        data = r.read_data()
    recs = iter_records(data, h.first_position, UNWRAPPED, h.first_position, h.end_position,
                        h.params.partition_size, h.params.max_record, where=os.fspath(path))
    return h, recs


def ring_records(source: Any) -> tuple[fmt.ImageHeader, Iterator[Rec]]:
    """The intact committed records of a live ring or replica (a snapshot in memory)."""
    from .snapshot import capture
    cap = capture(source)
    h = cap.header()
    recs = iter_records(cap.data, cap.start, UNWRAPPED, cap.start, cap.end,
                        h.params.partition_size, h.params.max_record, where=str(source))
    return h, recs


def open_records(spec: str) -> tuple[fmt.ImageHeader, Iterator[Rec]]:
    """An image file if ``spec`` is one, else a ring name or path."""
    if fmt.is_image(spec):
        return image_records(spec)
    if "/" in spec and os.path.isfile(spec):
        fd = fmt.open_regular(spec)
        try:
            is_ring = os.pread(fd, len(layout.MAGIC), 0) == layout.MAGIC
        finally:
            os.close(fd)
        if not is_ring:
            return image_records(spec)  # neither: the image reader says what is wrong
    return ring_records(spec)


def export(path: str | os.PathLike[str], out: str | os.PathLike[str] | IO[str], *,
           format: str = "jsonl", payload: str = "base64", mode: int = 0o600) -> int:
    """Write the image's records to ``out``; returns the number of records.

    ``out`` is a file path, written atomically (a temporary in the same directory,
    created ``mode``, fsynced and renamed: a failure such as a full disk leaves no
    partial file and the previous ``out``, if any, untouched), or an open text stream
    (jsonl only) written as it goes.
    """
    if format not in ("jsonl", "npz"):
        raise ValueError(f"export format {format!r}: use jsonl or npz")
    enc = {"base64": lambda b: base64.b64encode(b).decode(),
           "hex": lambda b: b.hex()}.get(payload)
    if enc is None:
        raise ValueError(f"payload encoding {payload!r}: use base64 or hex")
    if not isinstance(out, (str, os.PathLike)):
        if format != "jsonl":
            raise ValueError("only jsonl can be written to a stream")
        h, recs = image_records(path)
        return _write_jsonl(recs, out, enc)
    h, recs = image_records(path)
    with fmt.atomic_output(out, mode, source=path) as f:
        if format == "jsonl":
            text = io.TextIOWrapper(f, encoding="utf-8")
            n = _write_jsonl(recs, text, enc)
            text.detach()  # the binary file stays open for atomic_output to fsync, rename
            return n
        seqs, types, poss, lens, chunks = [], [], [], [], []
        for pos, type_, seq, data in recs:
            seqs.append(seq)
            types.append(type_)
            poss.append(pos)
            lens.append(len(data))
            chunks.append(data)
        offsets = np.zeros(len(lens) + 1, dtype=np.uint64)
        np.cumsum(np.asarray(lens, dtype=np.uint64), out=offsets[1:])
        # plain numeric arrays only: np.load(..., allow_pickle=False) reads them; a file
        # object, so numpy does not append ".npz" to a name that lacks it
        np.savez(f, sequence=np.asarray(seqs, dtype=np.uint64),
                 type=np.asarray(types, dtype=np.int32),
                 position=np.asarray(poss, dtype=np.uint64), offsets=offsets,
                 payload=np.frombuffer(b"".join(chunks), dtype=np.uint8))
        return len(seqs)


def _write_jsonl(recs: Iterator[Rec], f: IO[str], enc: Any) -> int:
    n = 0
    for pos, type_, seq, data in recs:
        f.write(json.dumps({"sequence": seq, "type": type_, "position": pos,
                            "length": len(data), "payload": enc(data)}) + "\n")
        n += 1
    f.flush()
    return n


@dataclass
class Diff:
    a: tuple[int, int]  # (first sequence, next sequence)
    b: tuple[int, int]
    common: int = 0
    only_a: int = 0
    only_b: int = 0
    differing: int = 0
    examples: list[str] = field(default_factory=list)
    params_differ: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not (self.only_a or self.only_b or self.differing or self.params_differ)

    def lines(self) -> list[str]:
        out = [f"A: sequences {self.a[0]}..{self.a[1] - 1}" if self.a[1] > self.a[0]
               else "A: no records",
               f"B: sequences {self.b[0]}..{self.b[1] - 1}" if self.b[1] > self.b[0]
               else "B: no records",
               f"common {self.common}, only in A {self.only_a}, only in B {self.only_b}, "
               f"differing {self.differing}"]
        out += [f"parameter {p}" for p in self.params_differ]
        out += self.examples
        out.append("identical" if self.identical else "different")
        return out


def diff(a: str, b: str, max_examples: int = 10) -> Diff:
    """Compare the records of two images, or an image and a ring, by sequence number."""
    ha, ra = open_records(a)
    hb, rb = open_records(b)
    d = Diff((ha.first_sequence, ha.next_sequence), (hb.first_sequence, hb.next_sequence))
    for attr in ("capacity", "max_record", "partition_count"):
        va, vb = getattr(ha.params, attr), getattr(hb.params, attr)
        if va != vb:
            d.params_differ.append(f"{attr}: {va} != {vb}")
    x, y = next(ra, None), next(rb, None)
    while x is not None or y is not None:
        if y is None or (x is not None and x[2] < y[2]):
            d.only_a += 1
            x = next(ra, None)
        elif x is None or y[2] < x[2]:
            d.only_b += 1
            y = next(rb, None)
        else:
            d.common += 1
            if x[1] != y[1] or x[3] != y[3]:
                d.differing += 1
                if len(d.examples) < max_examples:
                    what = "type" if x[1] != y[1] else "payload"
                    d.examples.append(f"sequence {x[2]}: {what} differs (A {len(x[3])} "
                                      f"bytes, B {len(y[3])} bytes)")
            x, y = next(ra, None), next(rb, None)
    return d
