"""``pyshm bridge in``: a stream's records into a follower ring, exactly once, in order.

* The far ring is a follower ring (:mod:`pyshm.bridge.follower`): created with the
  source's capacity, max record, partitions and mode (from the stream's metadata) unless
  overridden; an existing one must match, and must follow the same source ring.
* A durable pull consumer (ack policy *all*) delivers the subject's messages. Each record
  is committed to the far ring with its source sequence number, and only then
  acknowledged: the acknowledgement covers exactly the messages whose effect is in the
  ring (the highest stream sequence below every message still held back).
* Order: a record whose predecessor has not arrived yet (JetStream redelivers
  unacknowledged messages after newer ones; a publish retried by ``bridge out`` lands
  after later ones) is held, unacknowledged, until the predecessor comes. A redelivery of
  a record the ring already holds is dropped by its sequence number.
* A hole (sequences absent from the stream although nothing else is pending) stops the
  bridge with the exact range, unless ``allow_gaps`` records them as gap records. A gap
  marker from ``bridge out`` (the source itself lost those records) is always recorded.
* Start: an empty far ring starts at the lowest sequence still to come, which is not
  always the first message's (see :meth:`BridgeIn._empty_start` and the ``Pyshm-Floor``
  header in :mod:`pyshm.bridge.protocol`).
* Restart: the far ring says where to continue (its last sequence); the durable consumer
  is moved back when it is ahead of the ring, and re-created at its acknowledgement floor
  when a crashed predecessor left deliveries unacknowledged, so they come again at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from ..errors import PyshmError
from ..ring import FULL, Ring
from ..segment import resolve_path
from . import protocol as P
from .connect import NatsOptions, attempt_timeout, connect, jetstream_call, scrub
from .follower import DUPLICATE, FollowerProducer, SequenceGapError, create_follower
from .protocol import BridgeError, Envelope

log = logging.getLogger("pyshm.bridge")

DEFAULT_FETCH = 256
DEFAULT_ACK_WAIT = 30.0
# longer than a killed bridge out takes to come back and resend (its guard's 30 s grace
# plus an ack timeout): before that, a missing sequence is on its way, not a hole
DEFAULT_HOLE_WAIT = 60.0


@dataclass
class InConfig:
    stream: str
    to: str
    nats: NatsOptions
    subject: str | None = None
    durable: str | None = None
    capacity: int | None = None
    max_record: int | None = None
    partitions: int | None = None
    lossless: bool | None = None
    batch: int = DEFAULT_FETCH
    ack_wait: float = DEFAULT_ACK_WAIT
    hole_wait: float = DEFAULT_HOLE_WAIT
    allow_gaps: bool = False
    stats_interval: float = 1.0
    api_timeout: float = 30.0
    wait_stream: float = 30.0


def _ack_fields(reply: str) -> tuple[int, int, int]:
    """(stream sequence, deliveries, pending) from a JetStream ack subject."""
    t = reply.split(".")
    # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>, or the v2 form
    # with <domain>.<account hash> after ACK (and an optional random token at the end)
    if len(t) == 9:
        return int(t[5]), int(t[4]), int(t[8])
    return int(t[7]), int(t[6]), int(t[10])


def durable_name(far: str) -> str:
    return "pyshm-in-" + P._TOKEN_BAD.sub("_", os.path.basename(far.rstrip("/")))[:200]


class BridgeIn:
    def __init__(self, cfg: InConfig):
        self.cfg = cfg
        self._stop = asyncio.Event()
        self.nc: Any = None
        self.js: Any = None
        self.fp: FollowerProducer | None = None
        self.subject = ""
        self.source: P.SourceInfo | None = None
        self._held: dict[int, tuple[Envelope, Any, int]] = {}   # ring seq -> (env, msg, sseq)
        self._done_max: tuple[int, Any] | None = None           # (sseq, msg) to ack
        self._connected = True
        self._connected_since = time.monotonic()
        self._held_since = time.monotonic()   # since when records wait for a predecessor
        self.stats: dict[str, Any] = {
            "kind": "in", "ring": cfg.to, "stream": cfg.stream, "received": 0,
            "committed": 0, "committed_bytes": 0, "duplicates": 0, "redeliveries": 0,
            "held": 0, "gap_records": 0, "gaps": 0, "reconnects": 0, "disconnects": 0,
            "in_flight": 0, "lag_records": 0, "lag_us": 0.0, "state": "starting",
            "servers": cfg.nats.public()["servers"]}

    def stop(self) -> None:
        self._stop.set()

    async def _api(self, what: str, fn: Any, *a: Any, **kw: Any) -> Any:
        """A JetStream API call retried while the cluster elects leaders (bounded)."""
        return await jetstream_call(what, fn, *a, timeout=self.cfg.api_timeout,
                                    display=self.cfg.nats.display, **kw)

    # ------------------------------------------------------------------ set-up
    async def _source(self) -> None:
        from nats.js.errors import NotFoundError

        cfg = self.cfg
        deadline = time.monotonic() + cfg.wait_stream
        while True:
            try:
                si = await self._api(f"stream info {cfg.stream}", self.js.stream_info,
                                     cfg.stream)
                break
            except NotFoundError:
                # bridge out creates the stream: started at the same time, it may come
                if time.monotonic() >= deadline or self._stop.is_set():
                    raise BridgeError(f"stream {cfg.stream!r} does not exist on "
                                      f"{cfg.nats.display} (waited {cfg.wait_stream:g} s; "
                                      f"start `pyshm bridge out` first)") from None
                await asyncio.sleep(0.2)
        meta = {k: v for k, v in (si.config.metadata or {}).items()
                if k.startswith(P.META_PREFIX)}
        if cfg.subject:
            self.subject = P.check_subject(cfg.subject)
        elif len(meta) == 1:
            self.subject = next(iter(meta))[len(P.META_PREFIX):]
        elif not meta:
            raise BridgeError(f"stream {cfg.stream!r} carries no pyshm ring (no "
                              f"'{P.META_PREFIX}<subject>' metadata): it was not created by "
                              f"`pyshm bridge out`")
        else:
            subs = sorted(k[len(P.META_PREFIX):] for k in meta)
            raise BridgeError(f"stream {cfg.stream!r} carries several rings ({', '.join(subs)}"
                              f"): pick one with --subject")
        key = P.meta_key(self.subject)
        if key not in meta:
            raise BridgeError(f"stream {cfg.stream!r} has no pyshm ring on subject "
                              f"{self.subject!r} (it has: "
                              f"{', '.join(k[len(P.META_PREFIX):] for k in meta) or 'none'})")
        self.source = P.SourceInfo.from_json(meta[key], f"stream {cfg.stream!r}")

    def _open_far(self) -> None:
        cfg, src = self.cfg, self.source
        assert src is not None
        want = {"capacity": cfg.capacity or src.capacity,
                "max_record": cfg.max_record or src.max_record,
                "partitions": cfg.partitions or src.partitions}
        lossless = src.lossless if cfg.lossless is None else cfg.lossless
        if want["max_record"] < src.max_record:
            raise BridgeError(f"far ring max record {want['max_record']} is smaller than the "
                              f"source's {src.max_record}: its largest records would not "
                              f"fit")
        path = resolve_path(cfg.to)
        if os.path.exists(path):
            ring = Ring(cfg.to)
            try:
                self._check_existing(ring, want, src)
            except BaseException:
                ring.close()
                raise
        else:
            ring = create_follower(cfg.to, src.ring_id, want["capacity"],
                                   max_record=want["max_record"],
                                   partitions=want["partitions"], lossless=lossless)
            log.info("bridge in: created follower ring %s (capacity %d, max record %d, %s) "
                     "of ring %s (%016x)", ring.name, ring.capacity, ring.max_record,
                     "lossless" if lossless else "overwrite", src.name, src.ring_id)
        try:
            self.fp = FollowerProducer(ring)
        except BaseException:
            ring.close()
            raise
        self.fp._own = True  # the follower producer closes the ring

    def _check_existing(self, ring: Ring, want: dict[str, int], src: P.SourceInfo) -> None:
        if not ring.is_follower:
            raise BridgeError(f"ring {ring.name!r} exists and is not a follower ring (an "
                              f"ordinary ring's records would be mixed with the stream's); "
                              f"give --to a new name, or remove it")
        have = {"capacity": ring.capacity, "max_record": ring.max_record,
                "partitions": ring.params.partition_count}
        wrong = [f"{k} {have[k]} (wanted {want[k]})" for k in want if have[k] != want[k]]
        if wrong:
            raise BridgeError(f"far ring {ring.name!r} exists with other parameters: "
                              f"{', '.join(wrong)}; the source ring {src.name!r} has capacity "
                              f"{src.capacity}, max record {src.max_record}, "
                              f"{src.partitions} partitions. Remove the far ring or pass "
                              f"matching --capacity/--max-record/--partitions")
        if ring.origin_id != src.ring_id:
            raise BridgeError(f"far ring {ring.name!r} follows ring identity "
                              f"{ring.origin_id:016x}, but stream {self.cfg.stream!r} now "
                              f"carries ring {src.name!r} with identity {src.ring_id:016x} "
                              f"(recreated?): give --to a new name, or remove the far ring")

    async def _consumer(self) -> Any:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError

        cfg = self.cfg
        assert self.fp is not None
        name = cfg.durable or durable_name(cfg.to)
        try:
            ci = await self._api("consumer info", self.js.consumer_info, cfg.stream, name)
        except NotFoundError:
            ci = None
        start: int | None = None   # stream sequence to (re)start the durable at
        if ci is not None:
            if (ci.config.filter_subject or "") != self.subject:
                raise BridgeError(f"durable consumer {name!r} of stream {cfg.stream!r} "
                                  f"follows subject {ci.config.filter_subject!r}, not "
                                  f"{self.subject!r}: pass another --durable")
            floor = ci.ack_floor.stream_seq if ci.ack_floor else 0
            if self.fp.empty:
                start = 1  # a new far ring: everything the stream still holds
            elif floor and await self._ring_seq_at(floor) >= self.fp.sequence:
                # the far ring is behind what the durable saw acknowledged (restored or
                # rebuilt): go back to the ring's next sequence
                start = await self._stream_seq_of(self.fp.sequence)
            elif ci.num_ack_pending:
                start = floor + 1  # a crashed predecessor's deliveries: redeliver now
            if start is not None:
                try:
                    await self._api("delete consumer", self.js.delete_consumer, cfg.stream,
                                    name)
                except NotFoundError:
                    pass  # an attempt whose answer was lost deleted it already
        config = ConsumerConfig(
            durable_name=name, filter_subject=self.subject, ack_policy=AckPolicy.ALL,
            ack_wait=cfg.ack_wait, max_ack_pending=max(4 * cfg.batch, 4096), max_deliver=-1,
            deliver_policy=DeliverPolicy.ALL if start in (None, 1) else
            DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=None if start in (None, 1) else start)
        if ci is None or start is not None:
            await self._api("create consumer", self.js.add_consumer, cfg.stream, config)
            if start is not None:
                log.info("bridge in %s: durable consumer %s restarted at stream sequence %d",
                         cfg.to, name, start)
        self.stats["durable"] = name
        return await self.js.pull_subscribe_bind(durable=name, stream=cfg.stream)

    async def _ring_seq_at(self, sseq: int) -> int:
        """Last ring sequence accounted for by stream message ``sseq`` (-1 if gone)."""
        from nats.js.errors import NotFoundError

        try:
            m = await self._api("get message", self.js.get_msg, self.cfg.stream, sseq)
        except NotFoundError:
            return -1
        try:
            return P.parse_envelope(m.headers, f"stream message {sseq}").last
        except P.ForeignMessageError:
            return -1

    async def _stream_seq_of(self, ring_seq: int) -> int:
        """A stream sequence at or before the message carrying ``ring_seq`` (bisection
        over the stream; redundant messages before it are dropped by sequence)."""
        si = await self._api("stream info", self.js.stream_info, self.cfg.stream)
        lo, hi = si.state.first_seq, si.state.last_seq
        while lo < hi:
            mid = (lo + hi + 1) // 2
            got = await self._ring_seq_at(mid)
            if 0 <= got < ring_seq:
                lo = mid
            else:
                hi = mid - 1
        # messages retried out of order lie within a publish window of their place
        return max(si.state.first_seq, lo - 65536)

    # ------------------------------------------------------------------ records
    async def _apply(self, env: Envelope, data: bytes) -> bool:
        """Commit one record (or gap marker) at the ring's next sequence; False if the
        bridge was asked to stop while a full lossless ring held it back."""
        fp = self.fp
        assert fp is not None
        while True:
            if env.is_gap:
                first = max(env.sequence, fp.sequence)
                nxt = fp.record_gap(first, env.last, timeout=0.1)
                if nxt > env.last:
                    self.stats["gap_records"] += env.last - first + 1
                    self.stats["gaps"] += 1
                    log.warning("bridge in %s: the source lost sequences %d..%d before they "
                                "reached the stream: recorded as gap records", self.cfg.to,
                                env.sequence, env.last)
                    return True
            else:
                rc = fp.publish_at(env.sequence, data, env.type, timeout=0.1)
                if rc != FULL:
                    if rc != DUPLICATE:
                        self.stats["committed"] += 1
                        self.stats["committed_bytes"] += len(data)
                        if env.ts_ns:
                            self.stats["lag_us"] = max(0.0, (time.time_ns() - env.ts_ns) / 1e3)
                    return True
            if self._stop.is_set():
                return False

    async def _take(self, msgs: list[Any]) -> bool:
        fp = self.fp
        assert fp is not None
        for m in msgs:
            sseq, delivered, pending = _ack_fields(m.reply)
            self.stats["received"] += 1
            self.stats["lag_records"] = pending
            if delivered > 1:
                self.stats["redeliveries"] += 1
            env = P.parse_envelope(m.headers, f"stream {self.cfg.stream!r} message {sseq}")
            if env.ring_id != fp.ring.origin_id:
                raise BridgeError(
                    f"stream {self.cfg.stream!r} message {sseq} comes from ring identity "
                    f"{env.ring_id:016x}, but far ring {fp.ring.name!r} follows "
                    f"{fp.ring.origin_id:016x}: the source ring was recreated. Follow it "
                    f"into a new far ring (--to NEW --durable NEW); this one stays as it is")
            if fp.empty and not self._held and env.sequence > fp.sequence:
                fp.start_at(self._empty_start(env, msgs))
            if env.last < fp.sequence:
                self.stats["duplicates"] += 1
                self._done(sseq, m)
                continue
            if env.sequence > fp.sequence:
                if not self._held:
                    self._held_since = time.monotonic()
                self._held[env.sequence] = (env, m, sseq)
                continue
            if not await self._apply(env, m.data):
                return False
            self._done(sseq, m)
            if not await self._drain_held():
                return False
        self.stats["held"] = len(self._held)
        return True

    def _empty_start(self, env: Envelope, msgs: list[Any]) -> int:
        """The sequence an empty far ring starts at, given the first message delivered.

        Not simply that message's: a batch bridge out had to send again lands after later
        ones, so the stream's first message is not always its lowest sequence, and a ring
        started above the lowest would drop the late ones as duplicates. The message's
        floor says which sequences were still unacknowledged when it was sent: they all
        come later (bridge out resends until they are stored, or publishes a gap marker).
        Below the floor, everything was stored ahead of this message, and the stream has
        dropped it (its limits) since, or there was nothing: the ring starts anywhere."""
        first = min(P.parse_envelope(x.headers, "message").sequence for x in msgs)
        if env.floor is None:  # a bridge out from before the floor header: its best guess
            return first
        return min(first, env.floor)

    async def _drain_held(self) -> bool:
        """Commit the held records that are now next in sequence."""
        fp = self.fp
        assert fp is not None
        while fp.sequence in self._held:
            env2, m2, s2 = self._held.pop(fp.sequence)
            if not await self._apply(env2, m2.data):
                self._held[env2.sequence] = (env2, m2, s2)
                return False
            self._done(s2, m2)
        # a held message may already be covered (a gap marker overlapping it)
        for s in [s for s in self._held if self._held[s][0].last < fp.sequence]:
            _, m3, s3 = self._held.pop(s)
            self.stats["duplicates"] += 1
            self._done(s3, m3)
        self.stats["held"] = len(self._held)
        self._held_since = time.monotonic()  # what is still held waits afresh
        return True

    def _done(self, sseq: int, msg: Any) -> None:
        if self._done_max is None or sseq > self._done_max[0]:
            self._done_max = (sseq, msg)

    async def _ack(self) -> None:
        """Acknowledge (ack policy all) up to the highest committed stream sequence that
        lies below every held one: nothing held back is acknowledged."""
        if self._done_max is None:
            return
        sseq, msg = self._done_max
        if self._held and min(h[2] for h in self._held.values()) < sseq:
            return  # acked later, once the held messages below it are committed
        self._done_max = None
        try:
            await msg.ack()
        except Exception as exc:  # a lost ack is redelivered and dropped by sequence
            log.debug("bridge in %s: ack failed: %s", self.cfg.to, exc)

    async def _check_hole(self, psub: Any) -> None:
        """Held records wait for a sequence no message carries: stop, or record a gap."""
        fp = self.fp
        assert fp is not None
        now = time.monotonic()
        if not self._held or not self._connected or \
                now - max(self._held_since, self._connected_since) < self.cfg.hole_wait:
            return
        ci = await self._api("consumer info", psub.consumer_info)
        if ci.num_pending:
            return
        first, last = fp.sequence, min(self._held) - 1
        if fp.empty:
            # the floor of the first message named sequences the stream no longer holds
            # (limits set on the stream dropped its head): a far ring may start anywhere
            log.warning("bridge in %s: stream %r no longer holds sequences %d..%d: the far "
                        "ring starts at %d", self.cfg.to, self.cfg.stream, first, last,
                        last + 1)
            fp.start_at(last + 1)
            await self._drain_held()
            return
        if not self.cfg.allow_gaps:
            raise SequenceGapError(fp.ring.name, first, last)
        log.error("bridge in %s: stream %r has no message for sequences %d..%d: recorded "
                  "as gap records (--allow-gaps)", self.cfg.to, self.cfg.stream, first, last)
        await self._apply(Envelope(fp.ring.origin_id, first, 0, 0, last), b"")
        await self._drain_held()

    # ------------------------------------------------------------------ main loop
    async def run(self) -> int:
        try:
            return await self._run()
        finally:
            await self._close()

    async def _run(self) -> int:
        import nats.errors
        import nats.js.errors

        cfg = self.cfg

        async def disconnected() -> None:
            if not self._stop.is_set():
                self._connected = False
                self.stats["disconnects"] += 1
                log.warning("bridge in %s: disconnected from NATS", cfg.to)

        async def reconnected() -> None:
            self._connected = True
            self._connected_since = time.monotonic()
            self.stats["reconnects"] += 1
            log.warning("bridge in %s: reconnected to NATS", cfg.to)

        self.nc = await connect(cfg.nats, disconnected_cb=disconnected,
                                reconnected_cb=reconnected)
        self.js = self.nc.jetstream(timeout=attempt_timeout(cfg.api_timeout))
        await self._source()
        self._open_far()
        assert self.fp is not None and self.source is not None
        psub = await self._consumer()
        log.info("bridge in %s <- stream %s subject %s on %s (ring %s, next sequence %d)",
                 cfg.to, cfg.stream, self.subject, cfg.nats.display, self.source.name,
                 self.fp.sequence)
        self.stats["state"] = "running"
        self.stats["subject"] = self.subject
        next_stats = 0.0
        draining = False
        while not self._stop.is_set():
            # Latency vs throughput: a pull for N messages waits until N arrived (or its
            # timeout), so a caught-up bridge asks for one message (answered as soon as
            # it exists) and then drains what else is there with short pulls of N.
            want, wait = (cfg.batch, 0.005) if draining else (1, 0.25)
            try:
                msgs = await psub.fetch(want, timeout=wait)
            except (asyncio.TimeoutError, nats.errors.TimeoutError):
                msgs = []
            except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError,
                    nats.errors.NoRespondersError):
                await asyncio.sleep(0.1)
                continue
            except nats.js.errors.APIError as exc:
                log.warning("bridge in %s: fetch refused (%s); retrying", cfg.to,
                            scrub(str(exc)))
                await asyncio.sleep(0.2)
                continue
            draining = bool(msgs)
            if msgs:
                if not await self._take(msgs):
                    break
                await self._ack()
            else:
                await self._ack()
                try:
                    await self._check_hole(psub)
                except BridgeError as exc:
                    # the cluster is electing leaders (a node died): ask again later
                    log.warning("bridge in %s: %s; retrying", cfg.to, exc)
            self.stats["in_flight"] = len(self._held)
            now = time.monotonic()
            if now >= next_stats:
                self.stats["next_sequence"] = self.fp.sequence
                self.stats["time"] = time.time()
                next_stats = now + cfg.stats_interval
        await self._ack()
        self.stats["state"] = "stopped"
        self.stats["next_sequence"] = self.fp.sequence
        log.info("bridge in %s: stopped at sequence %d (%d committed)", cfg.to,
                 self.fp.sequence, self.stats["committed"])
        return 0

    async def _close(self) -> None:
        self._stop.set()
        if self.nc is not None:
            try:
                await asyncio.wait_for(self.nc.close(), 5)
            except Exception:
                pass
        if self.fp is not None:
            self.fp.close()
            self.fp = None


def run_in(cfg: InConfig, on_stats: Any = None) -> int:
    from .outbound import _main

    return asyncio.run(_main(BridgeIn(cfg), on_stats))


__all__ = ["BridgeIn", "InConfig", "run_in", "PyshmError"]
