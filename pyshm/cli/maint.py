"""``pyshm ls | repair``: find segments left by crashed processes and fix their headers.

``pyshm rm --stale`` (in ring_cmds) removes the segments ``ls`` marks as stale.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from ..human import size as _size
from ..repair import SegmentInfo, list_segments, repair, stuck_claim
from ..ring import Ring
from ..segment import SHM_DIR

_RAW = argparse.RawDescriptionHelpFormatter


def register(sub: Any) -> None:
    p = sub.add_parser("ls", help="list pyshm rings and replicas in /dev/shm",
                       formatter_class=_RAW,
                       description="List the segments in /dev/shm that are pyshm rings or "
                                   "replicas (recognised by their magic), with the pids "
                                   "attached to them and whether those still run.",
                       epilog="example:\n  pyshm ls\n  pyshm ls --stale\n  pyshm ls --json")
    p.add_argument("--stale", action="store_true",
                   help="only the segments `rm --stale` would remove: declared ephemeral, "
                        "and every attached pid dead")
    p.add_argument("--dir", default=SHM_DIR, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("repair", help="clear what a dead producer/consumers left in a ring",
                       formatter_class=_RAW,
                       description="With the producer dead: discard its uncommitted claim "
                                   "(tail intent back to tail when that is safe), fix the "
                                   "next sequence number, clear the producer pid and free "
                                   "the consumer slots of dead processes.",
                       epilog="example:\n  pyshm repair md.eurusd\n"
                              "  pyshm repair md.eurusd --dry-run --wait 1")
    p.add_argument("name")
    p.add_argument("--force", action="store_true",
                   help="repair even though the producer pid is alive (it must be wedged "
                        "and must never publish again)")
    p.add_argument("--dry-run", "-n", action="store_true", help="only say what would change")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="first check that a pending claim stays pending this long")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_repair)


def _pid(pid: int, alive: bool) -> str:
    return "-" if not pid else f"{pid}{'' if alive else '(dead)'}"


def cmd_ls(args: argparse.Namespace) -> int:
    infos: list[SegmentInfo] = [i for i in list_segments(args.dir)
                                if i.stale or not args.stale]
    if args.json:
        print(json.dumps([i.as_dict() for i in infos], indent=2))
        return 0
    if not infos:
        print("no pyshm segments" + (" that are stale" if args.stale else ""))
        return 0
    print(f"{'NAME':<32} {'KIND':<8} {'CAPACITY':>8} {'MODE':>4} {'CREATOR':>13} "
          f"{'PRODUCER':>13} {'CONSUMERS':>10} {'AGE':>8}  STATE")
    now = time.time_ns()
    for i in infos:
        if i.error:
            what = "restore interrupted" if i.restoring else "damaged"
            print(f"{i.name:<32} {'?':<8} {_size(i.size):>8} {i.mode:04o}  {what}: {i.error}")
            continue
        live = sum(1 for c in i.consumers if c["alive"])
        age = f"{(now - i.created_ns) / 1e9:.0f}s" if i.created_ns else "?"
        state = "stale" if i.stale else "live" if i.live_pids else \
            "unused, persistent" if not i.ephemeral else "live"
        if i.claim_pending and not i.producer_alive:
            state += ", uncommitted claim (pyshm repair)"
        print(f"{i.name:<32} {i.kind:<8} {_size(i.capacity):>8} {i.mode:04o} "
              f"{_pid(i.creator_pid, i.creator_alive):>13} "
              f"{_pid(i.producer_pid, i.producer_alive):>13} "
              f"{f'{live}/{len(i.consumers)}':>10} {age:>8}  {state}")
    return 0


def cmd_repair(args: argparse.Namespace) -> int:
    if args.wait > 0:
        with Ring.attach(args.name, readonly=True) as r:
            if r.tail_intent > r.tail and not stuck_claim(r, args.wait):
                print(f"ring {args.name}: the pending claim moved or its producer is alive; "
                      f"not touching it")
                return 1
    rep = repair(args.name, force=args.force, dry_run=args.dry_run)
    if args.json:
        print(json.dumps(rep.as_dict(), indent=2))
    else:
        print("\n".join(rep.lines()))
    return 0
