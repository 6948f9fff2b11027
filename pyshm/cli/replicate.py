"""``pyshm replicate``: mirror a ring into a replica in the foreground."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import Any

from ..engine import DEFAULT_WAIT, WAIT_STRATEGIES, wait_strategy
from ..errors import InvalidParameterError
from . import _args

EXAMPLE = """\
example:
  pyshm replicate md --to md.replica --threads 1
  pyshm replicate md --to /var/lib/pyshm/md.replica --flush periodic:0.5 --gate

An existing compatible replica is resumed from its tail (nothing is recopied). With
--gate on a lossless ring the producer never passes the replica by more than the ring's
capacity; if this process is killed -9 the producer waits until `pyshm replicate` is
started again (it resumes where it stopped, losing nothing).
"""


def _wait(text: str) -> str:
    try:
        return wait_strategy(text)
    except InvalidParameterError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not one of {', '.join(WAIT_STRATEGIES)}") from None


def register(sub: Any) -> None:
    p = sub.add_parser("replicate", help="mirror a ring into a replica continuously",
                       description=__doc__, epilog=EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ring", help="ring name (/dev/shm) or path")
    p.add_argument("--to", required=True, metavar="TARGET",
                   help="replica name (/dev/shm) or file path; created if missing")
    p.add_argument("--engine", default="auto", help="auto, cpu, pynq or sim (default auto)")
    p.add_argument("--threads", type=_args.count, default=0,
                   help="copy threads besides the poll thread (cpu engine; default 0)")
    p.add_argument("--gate", action="store_true",
                   help="hold a lossless producer back at the replica's position")
    p.add_argument("--wait", type=_wait, default=DEFAULT_WAIT, metavar="STRATEGY",
                   help="what the poll thread does while the ring is idle: spin (lowest "
                        "lag, one core busy), yield, sleep (the default) or block (sleeps "
                        "until the producer's next commit wakes it: no CPU while idle)")
    p.add_argument("--flush", default="none",
                   help="file replicas: none | periodic[:SECONDS] | bytes[:SIZE]")
    p.add_argument("--numa-node", type=int, default=None,
                   help="bind a newly created replica's memory to this NUMA node")
    p.add_argument("--udmabuf", metavar="DEVICE",
                   help="create a missing replica in this u-dma-buf buffer (DMA-able memory "
                        "for the pynq engine); TARGET becomes a link to it")
    p.add_argument("--poll-cpu", type=int, default=None, help="pin the poll thread")
    p.add_argument("--poll-priority", type=int, default=0, metavar="PRIO",
                   help="cpu engine: run the poll thread SCHED_FIFO at this priority (1-99), "
                        "so ordinary work never preempts it (needs CAP_SYS_NICE; with "
                        "--wait spin it keeps a core busy)")
    p.add_argument("--interval", type=_args.seconds, default=1.0,
                   help="seconds between status lines (default 1)")
    p.add_argument("--duration", type=_args.seconds, default=None,
                   help="stop by itself after this many seconds")
    p.add_argument("--json", action="store_true", help="print the final summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no live status line")
    p.set_defaults(func=run)


def _human_rate(bps: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if bps < 1000:
            return f"{bps:6.1f} {unit}/s"
        bps /= 1000
    return f"{bps:6.1f} TB/s"


def run(args: argparse.Namespace) -> int:
    import os

    from ..engine import engine_class, open_engine
    from ..lock import SegmentLock
    from ..replica import Replica, source_params
    from ..segment import resolve_path

    if args.engine != "auto":
        engine_class(args.engine)  # an unknown engine is refused before anything is made
    params = source_params(args.ring)
    if params.is_replica:
        raise InvalidParameterError(f"{args.ring} is itself a replica; replicate its primary")
    existed = os.path.exists(resolve_path(args.to))
    if existed:
        # one writer per replica: refuse before touching it (the engine takes the lock
        # again for as long as it runs)
        SegmentLock.acquire(args.to, "engine").release()
    replica = Replica.create(args.to, params, flush=args.flush, numa_node=args.numa_node,
                             exist_ok=True, device=args.udmabuf)
    started = [False]
    try:
        return _run(args, replica, open_engine, started)
    except BaseException:
        if not existed and not started[0]:
            replica.close()
            replica.unlink()  # a replica this command created is not left half set up
        raise


def _run(args: argparse.Namespace, replica: Any, open_engine: Any,
         started: list[bool]) -> int:
    stop: dict[str, int | None] = {"sig": None}

    def on_signal(signum: int, _frame: Any) -> None:
        stop["sig"] = signum

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    tty = sys.stderr.isatty()
    options: dict[str, Any] = {"gate": args.gate}
    if args.engine in ("auto", "cpu"):
        options.update(threads=args.threads, wait=args.wait, poll_cpu=args.poll_cpu)
        if args.poll_priority:
            options["poll_priority"] = args.poll_priority
    try:
        eng = open_engine(args.engine, args.ring, replica,
                          announce=lambda m: print(m, file=sys.stderr), **options)
        try:
            eng.start()
            started[0] = True
            print(f"replicating {args.ring} -> {replica.path} from position "
                  f"{eng.mirrored:,d} ({eng.name} engine)", file=sys.stderr)
            t0 = last_t = time.monotonic()
            last_b = 0
            failed = False
            while stop["sig"] is None:
                if args.duration is not None and time.monotonic() - t0 >= args.duration:
                    break
                time.sleep(min(args.interval, 0.05))
                now = time.monotonic()
                if now - last_t < args.interval:
                    continue
                st = eng.stats()
                if st.state == "failed":
                    failed = True
                    break
                rate = (st.bytes_mirrored - last_b) / (now - last_t)
                last_b, last_t = st.bytes_mirrored, now
                if not args.quiet:
                    line = f"{_human_rate(rate)}  {st.line()}"
                    print(("\r" + line) if tty else line, end="" if tty else "\n",
                          file=sys.stderr, flush=True)
            eng.stop()
            st = eng.stats()
            elapsed = time.monotonic() - t0
        finally:
            eng.close()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        replica.close()
    if tty and not args.quiet:
        print(file=sys.stderr)
    summary = {**st.as_dict(), "replica": args.to, "seconds": round(elapsed, 3),
               "mean_rate_bps": st.bytes_mirrored / elapsed if elapsed else 0.0}
    e2e = (f"{st.e2e_lag_p50_ns / 1e3:.1f}/{st.e2e_lag_p99_ns / 1e3:.1f}/"
           f"{st.e2e_lag_p999_ns / 1e3:.1f}/{st.e2e_lag_max_ns / 1e3:.1f} us "
           f"({st.e2e_lag_samples:,} samples)") if st.e2e_lag_samples else "- (no samples)"
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"stopped ({'signal ' + str(stop['sig']) if stop['sig'] else 'done'}): "
              f"mirrored {st.bytes_mirrored:,d} bytes, {st.records_mirrored:,d} records in "
              f"{elapsed:.1f} s ({_human_rate(summary['mean_rate_bps']).strip()}); "
              f"replica tail {st.mirrored:,d}; replication lag (commit -> readable in the "
              f"replica) p50/p99/p99.9/max {e2e}; "
              f"overruns {st.overruns} ({st.bytes_lost:,d} bytes lost); errors {st.errors}")
    if failed:
        print(f"pyshm replicate: engine failed: {st.last_error}", file=sys.stderr)
        return 1
    return 0
