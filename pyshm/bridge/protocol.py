"""What the bridge puts on the wire: subjects, headers, message ids, stream metadata.

One JetStream message per ring record, on the ring's subject (default ``pyshm.<ring>``):

=================  ==========================================================
``Nats-Msg-Id``    ``<ring_id as 16 hex digits>.<sequence>``: JetStream drops a
                   resend within the stream's duplicate window, and a ring
                   recreated under the same name (a new ``ring_id``) never
                   collides with the old one
``Pyshm-Ring``     ``ring_id`` (16 hex digits)
``Pyshm-Seq``      the record's ring sequence number (decimal)
``Pyshm-Type``     the record's type (decimal int32)
``Pyshm-Ts``       wall-clock ns when the bridge read the record (lag figures)
``Pyshm-Floor``    the lowest sequence the bridge still awaited JetStream's
                   acknowledgement for when it sent this message (or this
                   message's own): every sequence below it is stored in the
                   stream ahead of this message
=================  ==========================================================

The payload is the record's payload, byte for byte (empty payloads included).

A loss on the source (an overwrite ring lapped the bridge) is published as a *gap
marker*: no payload, ``Pyshm-Seq`` = first lost sequence, ``Pyshm-Gap-Last`` = last
lost sequence, ``Nats-Msg-Id`` = ``<ring_id>.gap.<first>``. ``bridge in`` records it as
gap records, so the far ring says exactly what the source lost.

Messages can be stored out of ring order: a batch that JetStream refused or did not
acknowledge in time is sent again after later ones were stored. The floor is what lets
``bridge in`` start an empty far ring at the right record anyway: the first message of a
stream is not always the lowest sequence it holds, but the sequences from its floor up
are all still to come.

The source ring's parameters are kept in the stream's metadata under
``pyshm.ring.<subject>`` (JSON), so ``bridge in`` creates a far ring like the source.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..errors import PyshmError

H_MSG_ID = "Nats-Msg-Id"
H_RING = "Pyshm-Ring"
H_SEQ = "Pyshm-Seq"
H_TYPE = "Pyshm-Type"
H_TS = "Pyshm-Ts"
H_GAP_LAST = "Pyshm-Gap-Last"
H_FLOOR = "Pyshm-Floor"
META_PREFIX = "pyshm.ring."

_TOKEN_BAD = re.compile(r"[^A-Za-z0-9_\-]")


class BridgeError(PyshmError):
    """A bridge cannot go on: unreachable servers, a foreign stream, mismatched rings..."""


class ForeignMessageError(BridgeError):
    """A message on the bridge's subject that no pyshm bridge wrote."""


def default_subject(ring_name: str) -> str:
    """``pyshm.<ring>``, with characters a subject token cannot hold replaced by ``_``."""
    base = ring_name.rstrip("/").rsplit("/", 1)[-1] or "ring"
    return "pyshm." + _TOKEN_BAD.sub("_", base)


def check_subject(subject: str) -> str:
    if not subject or any(c in subject for c in " \t\r\n*>") or subject.startswith(".") \
            or subject.endswith(".") or ".." in subject:
        raise BridgeError(f"subject {subject!r} is not a valid NATS subject for publishing "
                          f"(dot-separated tokens, no spaces or wildcards)")
    return subject


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching: ``*`` one token, ``>`` one or more trailing tokens."""
    p, s = pattern.split("."), subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(p) == len(s)


def msg_id(ring_id: int, sequence: int) -> str:
    return f"{ring_id:016x}.{sequence}"


def gap_msg_id(ring_id: int, first: int) -> str:
    return f"{ring_id:016x}.gap.{first}"


@dataclass(frozen=True)
class Envelope:
    """The pyshm headers of one stream message, validated."""

    ring_id: int
    sequence: int
    type: int
    ts_ns: int
    gap_last: int | None = None
    floor: int | None = None   # None: written by a bridge from before the header existed

    @property
    def is_gap(self) -> bool:
        return self.gap_last is not None

    @property
    def last(self) -> int:
        """Last sequence this message accounts for."""
        return self.gap_last if self.gap_last is not None else self.sequence


def parse_envelope(headers: dict[str, str] | None, where: str) -> Envelope:
    """The envelope of a message, or :class:`ForeignMessageError` naming ``where``."""
    if not headers or H_SEQ not in headers or H_RING not in headers:
        raise ForeignMessageError(f"{where} has no pyshm headers ({H_RING}, {H_SEQ}): it "
                                  f"was not written by `pyshm bridge out`")
    try:
        ring_id = int(headers[H_RING], 16)
        seq = int(headers[H_SEQ])
        type_ = int(headers.get(H_TYPE, "0"))
        ts = int(headers.get(H_TS, "0"))
        gap = int(headers[H_GAP_LAST]) if H_GAP_LAST in headers else None
        floor = int(headers[H_FLOOR]) if H_FLOOR in headers else None
    except ValueError:
        raise ForeignMessageError(f"{where} has malformed pyshm headers "
                                  f"{ {k: v for k, v in headers.items() if k.startswith('Pyshm')} }"
                                  ) from None
    if not (0 < ring_id < 1 << 64 and 0 <= seq < 1 << 64 and -(1 << 31) <= type_ < 1 << 31) \
            or (gap is not None and not seq <= gap < 1 << 64) \
            or (floor is not None and not 0 <= floor <= seq):
        raise ForeignMessageError(f"{where} has out-of-range pyshm headers")
    return Envelope(ring_id, seq, type_, ts, gap, floor)


@dataclass(frozen=True)
class SourceInfo:
    """The source ring as recorded in the stream's metadata."""

    ring_id: int
    name: str
    capacity: int
    max_record: int
    partitions: int
    lossless: bool

    def to_json(self) -> str:
        return json.dumps({"ring_id": f"{self.ring_id:016x}", "name": self.name,
                           "capacity": self.capacity, "max_record": self.max_record,
                           "partitions": self.partitions, "lossless": self.lossless},
                          sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str) -> SourceInfo:
        try:
            d: Any = json.loads(text)
            return cls(int(d["ring_id"], 16), str(d["name"]), int(d["capacity"]),
                       int(d["max_record"]), int(d["partitions"]), bool(d["lossless"]))
        except (ValueError, KeyError, TypeError):
            raise BridgeError(f"{where}: stream metadata is not a pyshm ring description: "
                              f"{text[:200]!r}") from None


def meta_key(subject: str) -> str:
    return META_PREFIX + subject
