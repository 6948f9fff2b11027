"""``pyshm create | info | tail | rm``: ring management from the shell."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from .. import layout
from ..errors import CorruptSegmentError, InvalidParameterError, PyshmError
from ..ring import Ring, pid_alive
from . import _args

_RAW = argparse.RawDescriptionHelpFormatter


def register(sub: Any) -> None:
    p = sub.add_parser("create", help="create a ring", formatter_class=_RAW,
                       description="Create a ring segment (owner-only permissions). With "
                                   "--udmabuf the ring is made in a u-dma-buf buffer (DMA-able "
                                   "memory for the FPGA engine) and NAME links to it.",
                       epilog="example:\n  pyshm create md.eurusd --capacity 4M --lossless\n"
                              "  pyshm create /mnt/huge/ring --capacity 1G --max-record 64K\n"
                              "  pyshm create md --capacity 16M --udmabuf /dev/udmabuf0")
    p.add_argument("name", help="/dev/shm name, or a file path containing '/'")
    p.add_argument("--capacity", required=True, type=_args.size,
                   help="data bytes, power of two (K/M/G)")
    p.add_argument("--max-record", type=_args.size,
                   help="largest record, header included (default: partition size / 4)")
    p.add_argument("--partitions", type=_args.positive_int, default=layout.DEFAULT_PARTITIONS,
                   help=f"partition count, a power of two (default "
                        f"{layout.DEFAULT_PARTITIONS})")
    p.add_argument("--lossless", action="store_true",
                   help="gating consumers hold the producer back")
    p.add_argument("--gate-on-mirror", action="store_true",
                   help="lossless: the producer also waits for the replication engine")
    p.add_argument("--mode", type=_args.octal_mode, default=0o600,
                   help="permissions in octal (default 600; a u-dma-buf device keeps its own)")
    p.add_argument("--udmabuf", metavar="DEVICE",
                   help="make the ring in this u-dma-buf buffer (e.g. /dev/udmabuf0): its bus "
                        "address goes into the header, NAME becomes a link to the device")
    p.add_argument("--force", action="store_true",
                   help="with --udmabuf: reuse a buffer that still holds a ring no live "
                        "process uses (or a damaged one, or one whose restore was "
                        "interrupted)")
    p.set_defaults(func=cmd_create)

    p = sub.add_parser("info", help="show a ring's layout, positions and consumers",
                       formatter_class=_RAW,
                       epilog="example:\n  pyshm info md.eurusd\n  pyshm info md.eurusd --json")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("tail", help="print records as they arrive", formatter_class=_RAW,
                       epilog="example:\n  pyshm tail md.eurusd -n 5\n"
                              "  pyshm tail md.eurusd --from latest --follow")
    p.add_argument("name")
    p.add_argument("-n", type=_args.count, default=10, help="print at most the last N records "
                                                    "before following (default 10)")
    p.add_argument("--from", dest="start", default=None, type=_args.start,
                   help="oldest, latest or a sequence number (overrides -n)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new records")
    p.add_argument("--max-bytes", type=_args.count, default=64,
                   help="payload bytes shown per record")
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser("rm", help="remove rings", formatter_class=_RAW,
                       description="Remove ring and replica segments. A segment still in "
                                   "use (a live producer or consumer, or a lock held by an "
                                   "engine, `pyshm run` or a restore) is refused unless "
                                   "--force. --stale removes only segments their creator "
                                   "declared ephemeral (`pyshm run` rings with "
                                   "unlink_on_exit, Ring(..., ephemeral=True)) once every "
                                   "process attached to them is dead; rings made by "
                                   "`pyshm create` are persistent and never stale.",
                       epilog="example:\n  pyshm rm md.eurusd md.gbpusd\n"
                              "  pyshm rm --dry-run md.eurusd   (only say what would go)\n"
                              "  pyshm rm --stale        (ephemeral segments whose "
                              "processes are all dead)")
    p.add_argument("names", nargs="*")
    p.add_argument("--stale", action="store_true",
                   help="remove only ephemeral rings/replicas whose creator and every "
                        "attached pid (producer, consumers, lock holder) is dead; all of "
                        "/dev/shm if no name is given")
    p.add_argument("--dry-run", "-n", action="store_true",
                   help="only list what would be removed; nothing is deleted")
    p.add_argument("--force", action="store_true",
                   help="remove even a segment that live processes still use (they keep "
                        "their mapping; nobody new can attach)")
    p.set_defaults(func=cmd_rm)


def cmd_create(args: argparse.Namespace) -> int:
    if args.force and not args.udmabuf:
        raise InvalidParameterError("--force is for --udmabuf (reusing a device buffer); a "
                                    "ring in a file is removed with `pyshm rm NAME`")
    if args.udmabuf and args.force:
        _release_device(args.udmabuf)
    with Ring.create(args.name, args.capacity, max_record=args.max_record,
                     partitions=args.partitions, lossless=args.lossless,
                     gate_on_mirror=args.gate_on_mirror, mode=args.mode,
                     device=args.udmabuf) as r:
        where = r.path if not args.udmabuf else \
            f"{r.path} -> {args.udmabuf} (data at bus address 0x{r.params.data_phys_addr:x})"
        print(f"created {r!r} at {where}")
    return 0


def _release_device(device: str) -> None:
    """--force: clear the ring a u-dma-buf buffer still holds, if nobody uses it."""
    from ..udmabuf import clear_ring_magic, info

    dev = info(device)
    try:
        old = Ring.attach(dev.device, readonly=True)
    except PyshmError:
        # no ring a process can use there (a damaged one, or a restore's that was
        # interrupted): nothing to protect, and --force asked for the buffer
        clear_ring_magic(dev.device)
        return
    with old:
        # who uses it, as `pyshm rm` counts: its producer and consumers (not its creator)
        pids = {old.producer_pid} | {s["pid"] for s in old.slots()}
        live = sorted(p for p in pids if p and pid_alive(p))
    if live:
        raise PyshmError(f"{dev.device} holds ring {old.name!r}, still used by pid(s) "
                         f"{', '.join(map(str, live))}; stop them first")
    clear_ring_magic(dev.device)


def info_dict(r: Ring) -> dict[str, Any]:
    mirrored = r.mirrored  # before tail: both only grow, so mirrored <= tail holds
    tail = r.tail
    problem = layout.counter_problem(tail, r.tail_intent)
    if problem:
        raise CorruptSegmentError(f"ring {r.name!r}: corrupt segment: {problem}")
    now = time.time_ns()
    consumers = []
    for s in r.slots():
        consumers.append({**s, "lag_bytes": max(0, tail - s["position"]),
                          "heartbeat_age_s": (now - s["heartbeat_ns"]) / 1e9
                          if s["heartbeat_ns"] else None})
    prod = r.producer_pid
    return {
        "name": r.name, "path": r.path, "version": r.params.version,
        "capacity": r.capacity, "max_record": r.max_record,
        "partitions": r.params.partition_count, "partition_size": r.partition_size,
        "mode": "lossless" if r.lossless else "overwrite", "replica": r.is_replica,
        "gate_on_mirror": bool(r.flags & layout.FLAG_GATE_ON_MIRROR),
        "created_ns": r.params.created_ns, "creator_pid": r.params.creator_pid,
        "producer_pid": prod, "producer_alive": pid_alive(prod) if prod else False,
        "tail": tail, "tail_intent": r.tail_intent, "mirrored": mirrored,
        "mirror_lag_bytes": max(0, tail - mirrored) if mirrored else 0,
        "next_sequence": r.next_sequence, "oldest": r.oldest(),
        "consumers": consumers,
    }


def cmd_info(args: argparse.Namespace) -> int:
    with Ring.attach(args.name, readonly=True) as r:
        d = info_dict(r)
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    print(f"ring {d['name']} ({d['path']})  layout v{d['version']}  {d['mode']}"
          f"{'  replica' if d['replica'] else ''}")
    print(f"  capacity {d['capacity']}  max record {d['max_record']}  "
          f"{d['partitions']} partitions of {d['partition_size']}")
    alive = "alive" if d["producer_alive"] else "dead" if d["producer_pid"] else "none"
    print(f"  producer pid {d['producer_pid']} ({alive})")
    print(f"  tail {d['tail']}  intent {d['tail_intent']}  oldest {d['oldest']}  "
          f"next seq {d['next_sequence']}")
    print(f"  mirrored {d['mirrored']}  (lag {d['mirror_lag_bytes']} bytes)")
    print(f"  consumers: {len(d['consumers'])}")
    for c in d["consumers"]:
        print(f"    slot {c['index']:2d} pid {c['pid']} "
              f"{'alive' if c['alive'] else 'DEAD'} {'gating ' if c['gating'] else ''}"
              f"position {c['position']} lag {c['lag_bytes']} bytes")
    return 0


def _show(m: Any, limit: int) -> str:
    data = bytes(m.data[:limit])
    more = "..." if len(m.data) > limit else ""
    return f"{m.sequence}\ttype={m.type}\tlen={len(m.data)}\t{data!r}{more}"


def cmd_tail(args: argparse.Namespace) -> int:
    with Ring.attach(args.name, readonly=True) as r:
        if args.start is not None:
            start: str | int = args.start
        else:
            start = max(0, r.next_sequence - args.n) if args.n > 0 else "latest"
        c = r.consumer(start)
        while True:
            m = c.read_copy(timeout=0.2 if args.follow else 0.0, wait="sleep")
            if m is None:
                if not args.follow:
                    break
                continue
            print(_show(m, args.max_bytes), flush=args.follow)
        if c.lost:
            print(f"# {c.lost} records lost to overruns", file=sys.stderr)
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    if args.stale:
        from ..repair import remove_stale
        for info in remove_stale(args.names or None, dry_run=args.dry_run):
            print(f"{'would remove' if args.dry_run else 'removed'} {info.name} "
                  f"({info.kind}, creator pid {info.creator_pid})")
        return 0
    if not args.names:
        print("pyshm rm: error: give ring names, or --stale", file=sys.stderr)
        return 2
    from ..repair import remove_segment
    rc = 0
    from ..segment import resolve_path
    from ..udmabuf import is_device_link
    from ..udmabuf import remove as remove_device_ring
    for name in args.names:
        try:
            if is_device_link(resolve_path(name)):  # a ring made with --udmabuf
                device = remove_device_ring(name, force=args.force, dry_run=args.dry_run)
                print(f"{'would remove' if args.dry_run else 'removed'} {name} (its "
                      f"u-dma-buf buffer {device} is free again)")
                continue
            info = remove_segment(name, force=args.force, dry_run=args.dry_run)
            if args.dry_run:
                print(f"would remove {info.name} ({info.kind})")
        except PyshmError as exc:
            print(f"pyshm rm: error: {exc}", file=sys.stderr)
            rc = 1
    return rc
