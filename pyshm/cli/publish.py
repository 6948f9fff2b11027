"""``pyshm publish``: feed a ring from the shell."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import IO, Any

from . import _args

EXAMPLE = """\
examples:
  pyshm publish md hello world              # two records, "hello" and "world"
  printf 'a\\nb\\n' | pyshm publish md        # one record per line of stdin
  pyshm publish md --file orders.txt --type 7
  pyshm publish md --hex 00ff10 --type 2    # payload given in hexadecimal

Lines lose their line ending; an empty line is an empty record. The command attaches as
the ring's producer, so it fails while another live producer is attached. In a lossless
ring that stays full for --timeout seconds it stops and says how many records it wrote.
"""


def register(sub: Any) -> None:
    p = sub.add_parser("publish", help="publish records from arguments, stdin or a file",
                       description="Publish records into RING: one per DATA argument, or "
                                   "one per line of --file, or of stdin when no DATA is "
                                   "given (or DATA is '-').",
                       epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ring", help="ring name (/dev/shm) or path")
    p.add_argument("data", nargs="*", metavar="DATA", help="payloads, one record each")
    p.add_argument("--file", "-f", metavar="PATH", help="publish every line of PATH")
    p.add_argument("--type", "-t", type=_args.record_type, default=0,
                   help="record type of every record (default 0)")
    p.add_argument("--hex", action="store_true",
                   help="payloads are hexadecimal (e.g. 00ff10), not text")
    p.add_argument("--timeout", type=_args.seconds, default=1.0, metavar="SECONDS",
                   help="lossless ring: how long to wait while it is full (default 1)")
    p.add_argument("--quiet", "-q", action="store_true", help="print nothing on success")
    p.set_defaults(func=cmd_publish, trailing_positionals="data")


def _lines(stream: IO[bytes]) -> Iterator[bytes]:
    for line in stream:
        if line.endswith(b"\n"):
            line = line[:-1]
            if line.endswith(b"\r"):
                line = line[:-1]
        yield line


def _payloads(args: argparse.Namespace) -> Iterator[tuple[str, bytes]]:
    """(where it came from, raw payload) for every record to publish."""
    if args.file is not None:
        if args.data:
            raise _usage("give either DATA arguments or --file, not both")
        with open(args.file, "rb") as f:
            for n, line in enumerate(_lines(f), 1):
                yield f"{args.file}:{n}", line
    elif not args.data or args.data == ["-"]:
        if sys.stdin is None or sys.stdin.isatty():
            raise _usage("nothing to publish: give DATA arguments, --file PATH, or pipe "
                         "lines into stdin")
        for n, line in enumerate(_lines(sys.stdin.buffer), 1):
            yield f"stdin line {n}", line
    else:
        for n, text in enumerate(args.data, 1):
            yield f"argument {n}", text.encode()


def _usage(message: str) -> Exception:
    from ..errors import InvalidParameterError
    return InvalidParameterError(message)


def _decode(where: str, raw: bytes, hex_payload: bool) -> bytes:
    if not hex_payload:
        return raw
    try:
        return bytes.fromhex(raw.decode("ascii"))
    except ValueError:
        raise _usage(f"{where}: {raw[:40]!r} is not hexadecimal") from None


def cmd_publish(args: argparse.Namespace) -> int:
    from ..errors import PyshmError, RecordTooLargeError
    from ..ring import FULL, Ring

    first = last = None
    count = 0
    with Ring.attach(args.ring) as ring:
        producer = ring.producer()
        try:
            for where, raw in _payloads(args):
                payload = _decode(where, raw, args.hex)
                if len(payload) > ring.max_payload:
                    raise RecordTooLargeError(
                        f"{where}: {len(payload)} bytes is more than ring {ring.name!r} "
                        f"takes in one record ({ring.max_payload} bytes of payload)")
                seq = producer.publish(payload, type=args.type, timeout=args.timeout)
                if seq == FULL:
                    raise PyshmError(
                        f"ring {ring.name!r} stayed full for {args.timeout} s (lossless: a "
                        f"gating consumer or the replica is a whole ring behind); published "
                        f"{count} record(s) before {where}")
                first = seq if first is None else first
                last = seq
                count += 1
        finally:
            producer.close()
    if not args.quiet:
        seqs = f" (sequences {first}..{last})" if count else ""
        print(f"published {count} record(s) to {args.ring}{seqs}")
    return 0
