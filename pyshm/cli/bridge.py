"""``pyshm bridge``: rings across machines over NATS JetStream (out, in, promote)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from typing import Any

RAW = argparse.RawDescriptionHelpFormatter


def _size(text: str) -> int:
    from ..ring import parse_size
    return parse_size(text)


def _nats_args(p: argparse.ArgumentParser, many: bool = True) -> None:
    g = p.add_argument_group("NATS connection (secrets: prefer files, or the environment "
                             "variables PYSHM_NATS_PASSWORD / PYSHM_NATS_TOKEN)")
    g.add_argument("--server", "-s", required=True, metavar="URL[,URL...]",
                   help="NATS server(s), e.g. nats://10.0.0.1:4222,nats://10.0.0.2:4222")
    g.add_argument("--creds", help="user credentials file (JWT + nkey seed)")
    g.add_argument("--nkey", help="nkey seed file")
    g.add_argument("--user", help="user name (password from PYSHM_NATS_PASSWORD)")
    g.add_argument("--tls-ca", help="CA certificate file: connect with TLS")
    g.add_argument("--tls-cert", help="client certificate file (mutual TLS)")
    g.add_argument("--tls-key", help="client key file (mutual TLS)")
    g.add_argument("--connect-timeout", type=float, default=5.0,
                   help="seconds per connection attempt (default 5)")


def _common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", help="where the status file for `pyshm stats` goes "
                                        "(default $PYSHM_STATE_DIR or /tmp/pyshm-UID)")
    p.add_argument("--stats-json", action="store_true",
                   help="print statistics as one JSON line per --stats-interval on stdout")
    p.add_argument("--stats-interval", type=float, default=1.0, metavar="SECONDS")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                   default="info")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "bridge", formatter_class=RAW,
        help="replicate a ring to other machines through NATS JetStream",
        description="Ship a ring's records into a JetStream stream (out), build a follower "
                    "ring with the same sequence numbers from it on another host (in), and "
                    "turn a follower into an ordinary ring (promote). See "
                    "docs/distributed.md.",
        epilog="examples:\n"
               "  pyshm bridge out md --server nats://10.0.0.1:4222 --stream MD\n"
               "  pyshm bridge in --server nats://10.0.0.1:4222 --stream MD --to md\n"
               "  pyshm bridge promote md      # fail over: md becomes a normal ring")
    bsub = p.add_subparsers(dest="bridge_command", metavar="SUBCOMMAND")
    bridge_parser = p
    p.set_defaults(func=lambda _a: (bridge_parser.print_help(), 2)[1])

    o = bsub.add_parser(
        "out", formatter_class=RAW, help="publish a ring's records to a JetStream stream",
        description="Follow RING with a gating consumer and publish every record to the "
                    "stream (type and sequence in headers, Nats-Msg-Id = ring identity + "
                    "sequence, so a resend is deduplicated), with up to --window records "
                    "in flight. The stream is created if missing. A restart, even after "
                    "kill -9, resumes without gap or duplicate: the bridge's slot is held "
                    "by a guard process for --grace seconds. Losses of an overwrite ring "
                    "are reported exactly. SIGTERM: flush what is in flight, exit 0.",
        epilog="examples:\n"
               "  pyshm bridge out md --server nats://127.0.0.1:4222 --stream MD\n"
               "  pyshm bridge out md -s nats://a:4222,nats://b:4222,nats://c:4222 "
               "--stream MD --replicas 3")
    o.add_argument("ring", help="ring name (/dev/shm) or path")
    _nats_args(o)
    o.add_argument("--stream", required=True, help="JetStream stream name")
    o.add_argument("--subject", help="subject to publish on (default pyshm.<ring>)")
    o.add_argument("--replicas", type=int, metavar="N",
                   help="replicas of the stream when the bridge creates it (default 1); "
                        "if the stream exists with another replica count the bridge "
                        "refuses to start (it never changes an existing stream); without "
                        "--replicas any count is accepted")
    o.add_argument("--window", type=int, default=4096,
                   help="records in flight (published, not yet acknowledged; default 4096)")
    o.add_argument("--window-bytes", type=_size, default="64M",
                   help="payload bytes in flight (default 64M)")
    o.add_argument("--batch", type=int, default=512, help="records read per batch (512)")
    o.add_argument("--grace", type=float, default=30.0, metavar="SECONDS",
                   help="how long the slot keeps gating after the bridge died (default 30)")
    o.add_argument("--ack-timeout", type=float, default=5.0, metavar="SECONDS",
                   help="send a batch again when unacknowledged this long (default 5)")
    o.add_argument("--start", choices=("oldest", "latest"), default="oldest",
                   help="where a ring new to the stream starts (default oldest)")
    o.add_argument("--drain-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="on SIGTERM, how long to wait for acknowledgements (default 10)")
    _common_args(o)
    o.set_defaults(func=cmd_out)

    i = bsub.add_parser(
        "in", formatter_class=RAW, help="build a follower ring from a JetStream stream",
        description="Read the stream with a durable pull consumer and commit each record "
                    "into the follower ring --to with its source sequence number, then "
                    "acknowledge it. Redeliveries are dropped by sequence (exactly once) and "
                    "records always enter in sequence order. The far ring gets the "
                    "source's capacity, max record and mode unless overridden; an existing "
                    "one must match. SIGTERM: commit what was fetched, exit 0.",
        epilog="examples:\n"
               "  pyshm bridge in --server nats://10.0.0.1:4222 --stream MD --to md\n"
               "  pyshm bridge in -s nats://a:4222 --stream MD --to md-far --capacity 64M")
    _nats_args(i)
    i.add_argument("--stream", required=True, help="JetStream stream name")
    i.add_argument("--to", required=True, help="follower ring to create or continue")
    i.add_argument("--subject", help="the ring's subject, when the stream carries several")
    i.add_argument("--durable", help="durable consumer name (default pyshm-in-<ring>)")
    i.add_argument("--capacity", type=_size, help="far ring capacity (default: the source's)")
    i.add_argument("--max-record", type=_size, help="far ring max record (default: source's)")
    i.add_argument("--partitions", type=int, help="far ring partitions (default: source's)")
    mode = i.add_mutually_exclusive_group()
    mode.add_argument("--lossless", dest="lossless", action="store_true", default=None,
                      help="far ring waits for its gating consumers (default: source's mode)")
    mode.add_argument("--overwrite", dest="lossless", action="store_false",
                      help="far ring overwrites (default: the source's mode)")
    i.add_argument("--batch", type=int, default=256, help="messages per fetch (default 256)")
    i.add_argument("--ack-wait", type=float, default=30.0, metavar="SECONDS",
                   help="JetStream redelivers what stays unacknowledged this long (30)")
    i.add_argument("--allow-gaps", action="store_true",
                   help="record sequences the stream lacks as gap records instead of "
                        "stopping")
    i.add_argument("--wait-stream", type=float, default=30.0, metavar="SECONDS",
                   help="how long to wait for the stream to appear (default 30)")
    i.add_argument("--hole-wait", type=float, default=60.0, metavar="SECONDS",
                   help="how long held records wait for a missing one, with nothing else "
                        "pending, before it counts as a hole (default 60: longer than a "
                        "killed bridge out takes to come back within its grace)")
    _common_args(i)
    i.set_defaults(func=cmd_in)

    pr = bsub.add_parser(
        "promote", formatter_class=RAW, help="turn a follower ring into an ordinary ring",
        description="Fail over: RING stops being a follower, keeps its records and "
                    "sequence numbers, and an ordinary producer continues at its next "
                    "sequence. Refused while its `bridge in` still runs (unless --force).",
        epilog="example:\n  pyshm bridge promote md")
    pr.add_argument("ring")
    pr.add_argument("--force", action="store_true",
                    help="promote even though the recorded bridge pid is alive")
    pr.set_defaults(func=cmd_promote)


def _options(args: argparse.Namespace) -> Any:
    from ..bridge.connect import NatsOptions, parse_servers

    return NatsOptions(servers=parse_servers(args.server), creds=args.creds, nkey=args.nkey,
                       user=args.user, tls_ca=args.tls_ca, tls_cert=args.tls_cert,
                       tls_key=args.tls_key, connect_timeout=args.connect_timeout,
                       name=f"pyshm-bridge-{os.getpid()}").with_env_secrets()


def _setup_logging(level: str, label: str) -> None:
    root = logging.getLogger("pyshm")
    if not root.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter(f"%(asctime)s pyshm bridge {label}[{os.getpid()}] "
                                         f"%(levelname)s %(message)s"))
        root.addHandler(h)
    root.setLevel(level.upper())


class _Status:
    """Statistics out: JSON lines on stdout and/or a status file for `pyshm stats`."""

    def __init__(self, args: argparse.Namespace, ring: str, label: str):
        from ..config import default_state_dir

        self.lines = args.stats_json
        self.ring = ring
        d = args.state_dir or default_state_dir()
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
        self.path = os.path.join(d, f"bridge-{safe}.status.json")
        self.started = time.time()
        self._lock = threading.Lock()
        try:
            os.makedirs(d, mode=0o700, exist_ok=True)
        except OSError:
            self.path = ""

    def __call__(self, stats: dict[str, Any]) -> None:
        with self._lock:
            if self.lines:
                sys.stdout.write(json.dumps(stats, default=str) + "\n")
                sys.stdout.flush()
            if self.path:
                from ..supervisor import _atomic_write_json

                try:
                    _atomic_write_json(self.path, {
                        "run": os.path.basename(self.path)[:-len(".status.json")],
                        "pid": os.getpid(), "started": self.started, "updated": time.time(),
                        "rings": {self.ring: {"bridges": [stats]}}})
                except OSError:
                    pass

    def remove(self) -> None:
        if self.path:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


def _run(args: argparse.Namespace, kind: str, ring: str, label: str, runner: Any,
         cfg: Any) -> int:
    from ..bridge.protocol import BridgeError
    from ..errors import PyshmError

    _setup_logging(args.log_level, kind)
    status = _Status(args, ring, label)
    try:
        return int(runner(cfg, status))
    except PyshmError:
        raise
    except Exception as exc:  # the client library's own errors: say it, no traceback
        from ..bridge.connect import explain

        raise BridgeError(explain(exc)) from None
    finally:
        status.remove()


def cmd_out(args: argparse.Namespace) -> int:
    from ..bridge.outbound import OutConfig, run_out

    cfg = OutConfig(ring=args.ring, nats=_options(args), stream=args.stream,
                    subject=args.subject, replicas=args.replicas, window=args.window,
                    window_bytes=args.window_bytes, batch=args.batch, grace=args.grace,
                    ack_timeout=args.ack_timeout, start=args.start,
                    drain_timeout=args.drain_timeout, stats_interval=args.stats_interval)
    _check_positive(window=args.window, batch=args.batch,
                    **({"replicas": args.replicas} if args.replicas is not None else {}))
    return _run(args, "out", args.ring, f"out-{args.ring}-{args.stream}", run_out, cfg)


def cmd_in(args: argparse.Namespace) -> int:
    from ..bridge.inbound import InConfig, run_in

    cfg = InConfig(stream=args.stream, to=args.to, nats=_options(args), subject=args.subject,
                   durable=args.durable, capacity=args.capacity, max_record=args.max_record,
                   partitions=args.partitions, lossless=args.lossless, batch=args.batch,
                   ack_wait=args.ack_wait, allow_gaps=args.allow_gaps,
                   hole_wait=args.hole_wait, stats_interval=args.stats_interval,
                   wait_stream=args.wait_stream)
    _check_positive(batch=args.batch)
    return _run(args, "in", args.to, f"in-{args.to}-{args.stream}", run_in, cfg)


def _check_positive(**values: int) -> None:
    from ..errors import InvalidParameterError

    for k, v in values.items():
        if v < 1:
            raise InvalidParameterError(f"--{k} {v}: must be at least 1")


def cmd_promote(args: argparse.Namespace) -> int:
    from ..bridge.follower import promote

    nxt = promote(args.ring, force=args.force)
    print(f"ring {args.ring!r} is now an ordinary ring; producers continue at sequence {nxt}")
    return 0


# ----------------------------------------------------------------------------------
# remote images: `pyshm snapshot/restore/inspect` with nats://HOST:PORT/BUCKET/NAME


def remote_snapshot(args: argparse.Namespace) -> int:
    from ..bridge import objstore

    if args.every_bytes is not None:
        from ..errors import InvalidParameterError
        raise InvalidParameterError("--every-bytes is for local schedules; remote ones take "
                                    "--every SECONDS")
    if args.every is not None:
        sched = objstore.RemoteSnapshotSchedule(
            args.ring, args.output, every_seconds=args.every, keep=args.keep,
            compression=args.compress,
            on_image=lambda u, h: print(f"{objstore.redact(u)}: {h.record_count} records",
                                        flush=True),
            on_error=lambda e: print(f"snapshot failed: {e}", file=sys.stderr, flush=True))
        end = None if args.duration is None else time.monotonic() + args.duration
        with sched:
            sched.start()
            try:
                while end is None or time.monotonic() < end:
                    time.sleep(min(0.2, max(0.0, (end or 1e18) - time.monotonic())))
            except KeyboardInterrupt:
                pass
        return 1 if sched.errors and not sched.taken else 0
    t0 = time.perf_counter()
    h = objstore.snapshot(args.ring, args.output, compression=args.compress, level=args.level,
                          chunk_size=args.chunk_size, overwrite=args.force)
    seqs = f"sequences {h.first_sequence}..{h.next_sequence - 1}" if h.record_count \
        else "no records"
    print(f"{objstore.redact(args.output)}: {h.record_count} records, {seqs}, "
          f"{h.data_length} bytes ({h.stored_length} stored, {h.compression_name}) in "
          f"{time.perf_counter() - t0:.3f} s")
    return 0


def remote_restore(args: argparse.Namespace) -> int:
    import copy

    from ..bridge import objstore
    from .images import cmd_restore

    with objstore.downloaded(objstore.parse_url(args.image)) as path:
        local = copy.copy(args)
        local.image = path
        return cmd_restore(local)


def remote_inspect(args: argparse.Namespace) -> int:
    import contextlib
    import copy
    import io

    from ..bridge import objstore
    from .images import cmd_inspect

    t = objstore.parse_url(args.image, need_name=False)
    shown = objstore.redact(args.image)
    if not t.name or t.name.endswith("/"):
        items = objstore.list_images(args.image)
        if args.json:
            print(json.dumps(items, indent=2))
            return 0
        if not items:
            print(f"{shown}: no images")
        for d in items:
            h = d["headers"]
            nxt = h.get("Pyshm-Next-Seq")
            print(f"{d['name']}  {d['size']} bytes  ring {h.get('Pyshm-Ring', '-')}  "
                  f"{h.get('Pyshm-Records', '?')} records"
                  + (f", next sequence {nxt}" if nxt else ""))
        return 0
    with objstore.downloaded(t) as path:
        local = copy.copy(args)
        local.image = path
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = cmd_inspect(local)
    sys.stdout.write(out.getvalue().replace(path, shown))
    return rc
