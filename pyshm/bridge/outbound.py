"""``pyshm bridge out``: a ring's records into a JetStream stream, nothing lost.

Pipeline (one asyncio task, one ack subscription)::

    ring --read_batch--> frames (HPUB, headers, reply inbox.<token>) --> NATS
      ^                                                                  |
      | gating slot = start of the oldest batch not fully acknowledged   |
      +-------------------------- acks (inbox.<token>) <-----------------+

* Reading: a slotless reader on a read-only mapping; the gating slot (held by the guard
  process of :mod:`pyshm.bridge.slot`) only moves past a batch once JetStream acknowledged
  every message of it, so a lossless producer never overwrites what the stream lacks.
* Publishing: up to ``window`` records in flight. A batch's frames are built once
  (``Nats-Msg-Id`` = ring identity + sequence) and kept until acknowledged; a batch whose
  ack is an error, times out, or was in flight across a reconnect is sent again as is,
  and JetStream drops what it already stored (duplicate window).
* Loss: on an overwrite ring the reader may be lapped; the lost sequences are logged
  exactly and published as a gap marker (see :mod:`pyshm.bridge.protocol`).
* Restart: from the guard's slot if the guard still holds it (nothing lost), else from
  the stream's last message for this ring identity; sequences the ring no longer holds
  are reported exactly.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from .. import layout
from ..errors import PyshmError
from ..ring import Consumer, Ring, _sequence_at
from . import protocol as P
from . import slot as S
from .connect import NatsOptions, attempt_timeout, connect, jetstream_call, scrub
from .protocol import BridgeError

log = logging.getLogger("pyshm.bridge")

DEFAULT_WINDOW = 4096
DEFAULT_WINDOW_BYTES = 64 << 20
DEFAULT_BATCH = 512
DEFAULT_GRACE = 30.0
DEFAULT_ACK_TIMEOUT = 5.0
DEFAULT_DUPLICATE_WINDOW = 120.0


@dataclass
class OutConfig:
    ring: str
    nats: NatsOptions
    stream: str
    subject: str | None = None
    replicas: int | None = None        # None: 1 for a new stream, any for an existing one
    window: int = DEFAULT_WINDOW
    window_bytes: int = DEFAULT_WINDOW_BYTES
    batch: int = DEFAULT_BATCH
    grace: float = DEFAULT_GRACE
    ack_timeout: float = DEFAULT_ACK_TIMEOUT
    start: str = "oldest"              # where a ring new to the stream starts
    drain_timeout: float = 10.0
    stats_interval: float = 1.0
    api_timeout: float = 30.0          # JetStream API calls (stream info, creation)


@dataclass
class _Batch:
    tokens: range
    frames: bytes
    nbytes: int                        # payload bytes (window accounting)
    start_pos: int                     # ring position of the batch's first record
    end_pos: int
    first_seq: int                     # first sequence it accounts for (a gap marker's)
    last_seq: int
    read_ns: int
    sent: float = 0.0
    acked: int = 0
    done: bytearray = field(default_factory=bytearray)
    failed: bool = False
    sends: int = 1

    @property
    def complete(self) -> bool:
        return self.acked >= len(self.tokens)


class BridgeOut:
    """One ring -> one stream subject. ``await run()`` until :meth:`stop`."""

    def __init__(self, cfg: OutConfig):
        self.cfg = cfg
        self._stop = asyncio.Event()
        self.nc: Any = None
        self.js: Any = None
        self.rw: Ring | None = None
        self.ro: Ring | None = None
        self.reader: Consumer | None = None
        self.guard: S.Guard | None = None
        self.slot = -1
        self.subject = ""
        self._inflight: collections.deque[_Batch] = collections.deque()
        self._by_token: dict[int, _Batch] = {}
        self._next_token = 0
        self._inflight_records = 0
        self._inflight_bytes = 0
        self._expect: int | None = None   # next ring sequence the stream should get
        self._start_seq: int | None = None
        self._last_acked: int | None = None
        self._slot_pos = -1
        self._connected = True
        self._fast = False
        self.stats: dict[str, Any] = {
            "kind": "out", "ring": cfg.ring, "stream": cfg.stream, "published": 0,
            "published_bytes": 0, "acked": 0, "in_flight": 0, "redeliveries": 0,
            "reconnects": 0, "disconnects": 0, "lost": 0, "gaps": 0, "errors": 0,
            "lag_records": 0, "lag_us": 0.0, "state": "starting",
            "servers": cfg.nats.public()["servers"]}

    # ------------------------------------------------------------------ set-up
    def stop(self) -> None:
        self._stop.set()

    async def _api(self, what: str, fn: Any, *a: Any, **kw: Any) -> Any:
        """A JetStream API call retried while the cluster elects leaders (bounded)."""
        return await jetstream_call(what, fn, *a, timeout=self.cfg.api_timeout,
                                    display=self.cfg.nats.display, **kw)

    async def _connect(self) -> None:
        async def disconnected() -> None:
            if self._stop.is_set():
                return  # our own close
            self._connected = False
            self.stats["disconnects"] += 1
            log.warning("bridge out %s: disconnected from NATS", self.cfg.ring)

        async def reconnected() -> None:
            self._connected = True
            self.stats["reconnects"] += 1
            # acks of what was in flight may be lost: send it all again (deduplicated)
            for b in self._inflight:
                if not b.complete:
                    b.failed = True
            log.warning("bridge out %s: reconnected to NATS", self.cfg.ring)

        self.nc = await connect(self.cfg.nats, disconnected_cb=disconnected,
                                reconnected_cb=reconnected)
        self.js = self.nc.jetstream(timeout=attempt_timeout(self.cfg.api_timeout))
        self._fast = hasattr(self.nc, "_send_command") and hasattr(self.nc, "_flush_pending")

    async def _ensure_stream(self, ring: Ring) -> None:
        from nats.js.api import StorageType, StreamConfig
        from nats.js.errors import NotFoundError

        cfg = self.cfg
        info = P.SourceInfo(ring.ring_id, ring.name, ring.capacity, ring.max_record,
                            ring.params.partition_count, ring.lossless)
        key = P.meta_key(self.subject)
        try:
            si = await self._api(f"stream info {cfg.stream}", self.js.stream_info, cfg.stream)
        except NotFoundError:
            si = None
        if si is None:
            replicas = cfg.replicas or 1
            sc = StreamConfig(name=cfg.stream, subjects=[self.subject],
                              num_replicas=replicas, storage=StorageType.FILE,
                              duplicate_window=DEFAULT_DUPLICATE_WINDOW,
                              metadata={key: info.to_json()})
            try:
                await self._api(f"create stream {cfg.stream}", self.js.add_stream, sc)
            except BridgeError:
                raise
            except Exception as exc:
                raise BridgeError(f"cannot create stream {cfg.stream!r}: "
                                  f"{scrub(str(exc))}") from None
            log.info("bridge out %s: created stream %s (subject %s, %d replica(s))",
                     ring.name, cfg.stream, self.subject, replicas)
            return
        subjects = list(si.config.subjects or [])
        if not any(P.subject_matches(s, self.subject) for s in subjects):
            raise BridgeError(f"stream {cfg.stream!r} exists but does not take subject "
                              f"{self.subject!r} (its subjects: {', '.join(subjects)}); "
                              f"pass --subject with one of them, or use another stream")
        actual = si.config.num_replicas or 1
        if cfg.replicas is not None and cfg.replicas != actual:
            # the stream is what protects the records: never run on fewer copies than
            # asked, and never change the replication of a stream others may use
            raise BridgeError(f"stream {cfg.stream!r} exists with {actual} replica(s), not "
                              f"the {cfg.replicas} asked (--replicas): the bridge does not "
                              f"change an existing stream; change it with your NATS tools "
                              f"(nats stream edit {cfg.stream} --replicas {cfg.replicas}), "
                              f"or leave out --replicas to use it as it is")
        # the subject's messages must be ours before the stream is labelled as a ring's
        await self._last_in_stream(ring)
        meta = dict(si.config.metadata or {})
        if meta.get(key) != info.to_json():
            meta[key] = info.to_json()
            si.config.metadata = meta
            await self._api(f"update stream {cfg.stream}", self.js.update_stream, si.config)

    async def _last_in_stream(self, ring: Ring) -> P.Envelope | None:
        """The stream's last message for this ring identity on our subject."""
        from nats.js.errors import NotFoundError

        try:
            msg = await self._api("last message", self.js.get_last_msg, self.cfg.stream,
                                  self.subject)
        except NotFoundError:
            return None
        env = P.parse_envelope(msg.headers, f"stream {self.cfg.stream!r} message "
                                            f"{msg.seq} on {self.subject!r}")
        if env.ring_id != ring.ring_id:
            log.info("bridge out %s: the stream's last message on %s comes from another "
                     "ring identity (%016x): this ring (%016x) starts fresh", ring.name,
                     self.subject, env.ring_id, ring.ring_id)
            return None
        return env

    def _open_ring(self) -> tuple[Ring, Ring]:
        rw = Ring(self.cfg.ring)
        try:
            if rw.is_replica:
                raise BridgeError(f"ring {rw.name!r} is a replica: bridge its primary, or "
                                  f"promote it first")
            if rw.ring_id == 0:
                # a ring made before identities existed: give it one (bytes reserved for
                # it, zero until now); every later bridge of this ring reads it back
                import struct

                buf = rw.segment.buf
                try:
                    struct.pack_into("<Q", buf, layout.OFF_RING_ID, layout.new_ring_id())
                finally:
                    buf.release()
                rw.close()
                rw = Ring(self.cfg.ring)
            ro = Ring(self.cfg.ring, readonly=True)
        except BaseException:
            rw.close()
            raise
        return rw, ro

    def _position_reader(self, ro: Ring, last_msg: P.Envelope | None,
                         held: tuple[int, int, int] | None) -> Consumer:
        ring_next = ro.next_sequence
        last = last_msg.last if last_msg is not None else None
        if last is not None and last >= ring_next:
            raise BridgeError(f"stream {self.cfg.stream!r} already holds sequence {last} of "
                              f"ring {ro.name!r} (identity {ro.ring_id:016x}) but the ring's "
                              f"next sequence is {ring_next}: the ring went back in time "
                              f"(rewritten in place?); recreate it, or use another stream")
        if held is not None:
            # the guard kept the oldest unacknowledged batch: start exactly there
            c = ro.consumer(0)
            pos = held[2]
            at_guard = None
            if ro.tail_intent <= pos + ro.capacity and pos <= ro.tail and \
                    pos % layout.RECORD_ALIGN == 0:
                c._c.pos = pos
                at_guard = _sequence_at(ro, c._c)
            # Everything below the guard was acknowledged, so the stream holds it. The
            # stream's last message can still lie below the guard's record: a batch
            # sent again after later ones were stored. Expecting last + 1 then would
            # mark the acknowledged records in between as lost in a gap message.
            self._expect = None if last is None else \
                last + 1 if at_guard is None else max(last + 1, at_guard)
            return c
        if last_msg is not None:
            start = self._resend_from(ro, last_msg)
            self._expect = start
            return ro.consumer(start)
        self._expect = self._start_seq
        return ro.consumer(self.cfg.start)

    def _resend_from(self, ro: Ring, last_msg: P.Envelope) -> int:
        """Where a bridge without a guard resumes: after the stream's last message, or
        from that message's floor while the ring still holds it. The sequences from the
        floor were unacknowledged when the message was sent; when the previous bridge
        died with its guard (or after the grace), a batch JetStream had refused may not
        have been sent again, leaving a hole below the last message. Sending them again
        fills it; JetStream drops the copies it already holds (same message id) and
        bridge in drops any it stored twice."""
        after = last_msg.last + 1
        if last_msg.floor is None or last_msg.floor >= after:
            return after
        start = max(last_msg.floor, self._first_seq(ro, "oldest"))
        if start >= after:
            return after
        log.info("bridge out %s: the stream's last message (sequence %d) was sent while "
                 "sequences from %d were unacknowledged: sending from %d again (JetStream "
                 "drops the copies it holds)", ro.name, last_msg.last, last_msg.floor, start)
        return start

    @staticmethod
    def _first_seq(ro: Ring, start: str) -> int:
        """The sequence a new bridge starts from: the oldest record the ring holds now
        (``oldest``), or the next one (``latest``, or an empty ring)."""
        if start == "oldest":
            c = ro.consumer("oldest")
            try:
                m = c.read()
                if m is not None:
                    return int(m.sequence)
            finally:
                c.close()
        return ro.next_sequence

    # ------------------------------------------------------------------ publishing
    def _frames(self, batch: Any, read_ns: int) -> tuple[bytes, range, int, int, int]:
        """HPUB frames for a batch; returns (frames, tokens, payload bytes, first and last
        sequence accounted for)."""
        rid = self.rw.ring_id if self.rw is not None else 0
        rid_hex = f"{rid:016x}".encode()
        subj = self.subject.encode()
        inbox = self._inbox
        ts = str(read_ns).encode()
        data = batch.data
        ends = batch.ends.tolist()
        seqs = batch.sequences.tolist()
        types = batch.types.tolist()
        out = bytearray()
        token = self._next_token
        first_token = token
        start = 0
        nbytes = 0
        first = seqs[0] if self._expect is None else min(seqs[0], self._expect)
        # the floor: nothing below it is still unacknowledged (see protocol.H_FLOOR); a
        # batch sent again keeps its frames, and an older floor is still a true one
        floor = str(min(first, self._inflight[0].first_seq) if self._inflight
                    else first).encode()
        for i, seq in enumerate(seqs):
            end = ends[i]
            if self._expect is not None and seq > self._expect:
                token = self._gap_frame(out, token, self._expect, seq - 1, rid_hex, ts,
                                        floor)
            if self._expect is None or seq >= self._expect:
                self._expect = seq + 1
            hdr = (b"NATS/1.0\r\nNats-Msg-Id: %s.%d\r\nPyshm-Ring: %s\r\nPyshm-Seq: %d\r\n"
                   b"Pyshm-Type: %d\r\nPyshm-Ts: %s\r\nPyshm-Floor: %s\r\n\r\n"
                   % (rid_hex, seq, rid_hex, seq, types[i], ts, floor))
            plen = end - start
            out += b"HPUB %s %s%d %d %d\r\n" % (subj, inbox, token, len(hdr), len(hdr) + plen)
            out += hdr
            out += data[start:end].data
            out += b"\r\n"
            nbytes += plen
            start = end
            token += 1
        self._next_token = token
        return bytes(out), range(first_token, token), nbytes, first, seqs[-1]

    def _gap_frame(self, out: bytearray, token: int, first: int, last: int,
                   rid_hex: bytes, ts: bytes, floor: bytes) -> int:
        n = last - first + 1
        self.stats["lost"] += n
        self.stats["gaps"] += 1
        log.error("bridge out %s: sequences %d..%d (%d records) were overwritten in the ring "
                  "before the bridge could read them; published as a gap marker",
                  self.cfg.ring, first, last, n)
        hdr = (b"NATS/1.0\r\nNats-Msg-Id: %s.gap.%d\r\nPyshm-Ring: %s\r\nPyshm-Seq: %d\r\n"
               b"Pyshm-Gap-Last: %d\r\nPyshm-Ts: %s\r\nPyshm-Floor: %s\r\n\r\n"
               % (rid_hex, first, rid_hex, first, last, ts, floor))
        out += b"HPUB %s %s%d %d %d\r\n" % (self.subject.encode(), self._inbox, token,
                                            len(hdr), len(hdr))
        out += hdr
        out += b"\r\n"
        return token + 1

    async def _send(self, b: _Batch) -> None:
        b.sent = time.monotonic()
        nc = self.nc
        if self._fast:
            await nc._send_command(b.frames)
            if nc._flush_queue is not None and nc._flush_queue.empty():
                await nc._flush_pending()
        else:  # pragma: no cover - only if nats-py's internals change
            await self._send_slow(b)

    async def _send_slow(self, b: _Batch) -> None:
        """The same frames through nats-py's public publish (parsed back)."""
        view = memoryview(b.frames)
        pos = 0
        while pos < len(view):
            eol = b.frames.index(b"\r\n", pos)
            _, subj, reply, hlen, total = b.frames[pos:eol].split(b" ")
            body = eol + 2
            hdr_raw = bytes(view[body:body + int(hlen)]).decode()
            headers = dict(line.split(": ", 1) for line in hdr_raw.split("\r\n")[1:] if line)
            payload = bytes(view[body + int(hlen):body + int(total)])
            await self.nc.publish(subj.decode(), payload, reply=reply.decode(),
                                  headers=headers)
            pos = body + int(total) + 2

    async def _on_ack(self, msg: Any) -> None:
        try:
            token = int(msg.subject[len(self._inbox):])
        except ValueError:
            return
        b = self._by_token.get(token)
        if b is None:
            return
        i = token - b.tokens.start
        data = msg.data
        status = msg.headers.get("Status") if msg.headers else None
        if status or not data or b'"error"' in data:
            if not b.done[i]:
                b.failed = True
                self.stats["errors"] += 1
                if self.stats["errors"] <= 5 or self.stats["errors"] % 1000 == 0:
                    log.warning("bridge out %s: JetStream refused a message (%s); sending "
                                "its batch again", self.cfg.ring,
                                status or scrub(data[:200].decode(errors="replace")))
            return
        if not b.done[i]:
            b.done[i] = 1
            b.acked += 1

    def _collect(self) -> None:
        """Retire fully acknowledged batches from the head; move the gating slot."""
        q = self._inflight
        moved = False
        while q and q[0].complete:
            b = q.popleft()
            for t in b.tokens:
                self._by_token.pop(t, None)
            self._inflight_records -= len(b.tokens)
            self._inflight_bytes -= b.nbytes
            self.stats["acked"] += len(b.tokens)
            if b.last_seq >= 0:
                self._last_acked = b.last_seq
            moved = True
        if moved or not q:
            self._move_slot(q[0].start_pos if q else self._reader_pos())

    def _reader_pos(self) -> int:
        return self.reader.position if self.reader is not None else 0

    def _move_slot(self, pos: int) -> None:
        if pos != self._slot_pos and self.rw is not None and self.slot >= 0:
            S.move_slot(self.rw, self.slot, pos)
            self._slot_pos = pos

    async def _resend_due(self) -> None:
        now = time.monotonic()
        for b in self._inflight:
            if b.complete:
                continue
            # a refused batch is sent again after a short pause (a stream without a
            # leader answers at once: no busy loop), an unanswered one after ack_timeout
            if (b.failed and now - b.sent > 0.2) or now - b.sent > self.cfg.ack_timeout:
                b.failed = False
                b.sends += 1
                self.stats["redeliveries"] += len(b.tokens) - b.acked
                await self._send(b)

    # ------------------------------------------------------------------ main loop
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.rw, self.ro = self._open_ring()
        try:
            return await self._run(loop)
        finally:
            await self._close()

    async def _run(self, loop: Any) -> int:
        cfg = self.cfg
        assert self.rw is not None and self.ro is not None
        self.subject = P.check_subject(cfg.subject or P.default_subject(self.rw.name))
        key = S.guard_key(self.rw.ring_id, cfg.stream, self.subject)
        held = S.find_guard(self.rw, key)
        # gate at once, before NATS answers: from the moment the bridge runs, a lossless
        # producer keeps everything the ring holds (the slot moves up once the resume
        # point is known), except what lies below the floor of the gate limit it cached
        # before this slot appeared (docs/design.md, "Joining a lossless ring"): lapped
        # there, records the bridge is answerable for are reported lost, never skipped
        early = min(self.ro.oldest(), self.ro.tail) if held is None else held[2]
        self.guard = S.Guard(self.rw, key, cfg.grace)
        self.slot = self.guard.start(early)
        self._slot_pos = early
        # what the bridge is answerable for from now on: on an overwrite ring, records
        # lapped while it connects are reported as lost, not silently skipped
        self._start_seq = self._first_seq(self.ro, cfg.start)
        await self._connect()
        await self._ensure_stream(self.rw)
        last_msg = await self._last_in_stream(self.rw)
        last = last_msg.last if last_msg is not None else None
        self.reader = self._position_reader(self.ro, last_msg, held)
        # the first sequence the stream still needs, to report what the ring lost since
        resume_at = self._expect if last is not None else None
        self._move_slot(min(self._reader_pos(), early) if held is not None
                        else self._reader_pos())
        if held is not None:
            S.adopt(self.rw, held)
            log.info("bridge out %s: resumed at position %d held by the previous bridge's "
                     "guard (pid %d)", self.rw.name, held[2], held[1])
        inbox = f"_INBOX.pyshm.{os.urandom(8).hex()}."
        self._inbox = inbox.encode()
        await self.nc.subscribe(inbox + "*", cb=self._on_ack)
        log.info("bridge out %s -> stream %s subject %s on %s (window %d records; resume: "
                 "%s)", self.rw.name, cfg.stream, self.subject, cfg.nats.display, cfg.window,
                 f"after sequence {last}" if last is not None else cfg.start)
        self.stats["state"] = "running"
        self.stats["subject"] = self.subject
        first = True
        idle = 0
        next_stats = time.monotonic()
        while not self._stop.is_set():
            progressed = False
            if self._connected:
                await self._resend_due()
                room = cfg.window - self._inflight_records
                room_bytes = cfg.window_bytes - self._inflight_bytes
                if room > 0 and room_bytes > self.ro.max_payload:
                    read_ns = time.time_ns()
                    start_pos = self._reader_pos()
                    batch = self.reader.read_batch(min(room, cfg.batch), timeout=0.0,
                                                   max_bytes=room_bytes)
                    if first and len(batch):
                        first = False
                        self._report_resume_gap(int(batch.sequences[0]), resume_at)
                    if len(batch):
                        frames, tokens, nbytes, first_seq, last_seq = self._frames(batch,
                                                                                   read_ns)
                        b = _Batch(tokens, frames, nbytes, start_pos, self._reader_pos(),
                                   first_seq, last_seq, read_ns,
                                   done=bytearray(len(tokens)))
                        for t in tokens:
                            self._by_token[t] = b
                        self._inflight.append(b)
                        self._inflight_records += len(tokens)
                        self._inflight_bytes += nbytes
                        self.stats["published"] += len(batch)
                        self.stats["published_bytes"] += nbytes
                        await self._send(b)
                        progressed = True
            self._collect()
            now = time.monotonic()
            if now >= next_stats:
                self._update_stats()
                next_stats = now + cfg.stats_interval
            if progressed:
                idle = 0
                await asyncio.sleep(0)
            else:
                idle += 1
                await asyncio.sleep(0 if idle < 200 else 0.0005 if idle < 2000 else 0.002)
        return await self._drain()

    def _report_resume_gap(self, first_seq: int, resume_at: int | None) -> None:
        if resume_at is not None and first_seq > resume_at:
            log.error("bridge out %s: the ring no longer holds sequences %d..%d (%d "
                      "records): they were overwritten while no bridge ran (or after the "
                      "guard's %g s grace); the stream gets a gap marker for them",
                      self.cfg.ring, resume_at, first_seq - 1, first_seq - resume_at,
                      self.cfg.grace)

    def _update_stats(self) -> None:
        st = self.stats
        st["in_flight"] = self._inflight_records
        st["connected"] = self._connected
        if self.ro is not None and not self.ro.closed:
            nxt = self.ro.next_sequence
            done = (self._last_acked + 1) if self._last_acked is not None else \
                (self._expect if self._expect is not None else nxt)
            st["lag_records"] = max(0, nxt - done)
            st["last_acked"] = self._last_acked
            st["next_sequence"] = nxt
        oldest = self._inflight[0].read_ns if self._inflight else None
        st["lag_us"] = max(0.0, (time.time_ns() - oldest) / 1e3) if oldest else 0.0
        st["time"] = time.time()

    async def _drain(self) -> int:
        """Stop reading; wait (bounded) until everything in flight is acknowledged."""
        self.stats["state"] = "draining"
        deadline = time.monotonic() + self.cfg.drain_timeout
        while self._inflight and time.monotonic() < deadline:
            if self._connected:
                await self._resend_due()
            self._collect()
            await asyncio.sleep(0.002)
        self._collect()
        self._update_stats()
        left = self._inflight_records
        if self.guard is not None:
            self.guard.finish(release_slot=left == 0)
            self.guard = None
        if left:
            log.error("bridge out %s: %d records still unacknowledged after %g s; the slot "
                      "keeps them in the ring for %g s: restart the bridge to publish them",
                      self.cfg.ring, left, self.cfg.drain_timeout, self.cfg.grace)
            self.stats["state"] = "stopped (unflushed)"
            return 1
        self.stats["state"] = "stopped"
        log.info("bridge out %s: stopped; %d records acknowledged", self.cfg.ring,
                 self.stats["acked"])
        return 0

    async def _close(self) -> None:
        if self.guard is not None:
            # an error (NATS unreachable, a refused stream...) before everything was
            # acknowledged: the guard keeps the records for the grace period
            self.guard.finish(release_slot=False)
            self.guard = None
        if self.nc is not None:
            try:
                await asyncio.wait_for(self.nc.close(), 5)
            except Exception:  # closing a broken connection: nothing left to save
                pass
        if self.reader is not None:
            self.reader.close()
        for r in (self.ro, self.rw):
            if r is not None:
                r.close()


def run_out(cfg: OutConfig, on_stats: Any = None) -> int:
    """Run a bridge until SIGTERM/SIGINT; returns the exit status (0: all flushed)."""
    return asyncio.run(_main(BridgeOut(cfg), on_stats))


async def _main(bridge: Any, on_stats: Any) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, bridge.stop)
    reporter = None
    if on_stats is not None:
        async def report() -> None:
            while True:
                on_stats(dict(bridge.stats))
                await asyncio.sleep(bridge.cfg.stats_interval)
        reporter = asyncio.ensure_future(report())
    try:
        return int(await bridge.run())
    except PyshmError:
        raise
    finally:
        if reporter is not None:
            reporter.cancel()
        if on_stats is not None:
            on_stats(dict(bridge.stats))


def stats_line(stats: dict[str, Any]) -> str:
    return json.dumps(stats, default=str)
