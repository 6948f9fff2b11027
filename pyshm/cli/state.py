"""State region commands: ``pyshm state ...`` and ``pyshm handover``.

The apply functions a follower, a recovery or a handover runs are the user's code, named
``MODULE:FUNCTION`` (``mybook.fold:apply``) or ``FILE.py:FUNCTION``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
import time
from typing import Any

from ..errors import InvalidParameterError, PyshmError
from . import _args

RAW = argparse.RawDescriptionHelpFormatter

_FIELD_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*([<>|=]?[a-zA-Z]\w*(?:\[[a-zA-Z]+\])?)"
                       r"\s*(?:\[\s*(\d+(?:\s*,\s*\d+)*)\s*\])?\s*$")


def dtype_from_spec(spec: str) -> Any:
    """A row dtype from the command line:

    * ``"bid:<f8[4],qty:<i8[4],position:<i8"``: fields ``NAME:FORMAT[SHAPE]``;
    * ``@file.json``: a canonical description, or a list of ``[name, format(, shape)]``;
    * ``py:MODULE:ATTR``: a dtype (or anything numpy takes) in a module.
    """
    import numpy as np

    from ..state import dtypes

    if spec.startswith("py:"):
        from ..state.follower import load_callable
        obj = load_callable(spec[3:])
        return np.dtype(obj)  # type: ignore[call-overload]
    if spec.startswith("@"):
        path = spec[1:]
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read().strip()
        except OSError as exc:
            raise InvalidParameterError(f"--dtype {spec}: cannot read {path}: "
                                        f"{exc.strerror}") from None
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise InvalidParameterError(f"--dtype {spec}: not JSON ({exc})") from None
        if isinstance(obj, dict):
            return dtypes.parse(text, where=f"--dtype {spec}", error=InvalidParameterError)
        try:
            return np.dtype([tuple(x) for x in obj])
        except (TypeError, ValueError) as exc:
            raise InvalidParameterError(f"--dtype {spec}: {exc}") from None
    fields: list[Any] = []
    for part in re.split(r",(?![^\[]*\])", spec):  # commas outside [shape]
        m = _FIELD_RE.match(part)
        if not m:
            raise InvalidParameterError(
                f"--dtype: {part.strip()!r} is not NAME:FORMAT[SHAPE] (e.g. price:<f8, "
                f"levels:<f8[5], sym:S8)")
        name, fmt, shape = m.groups()
        try:
            base = np.dtype(fmt)
        except TypeError:
            raise InvalidParameterError(f"--dtype: {fmt!r} is not a numpy format (e.g. "
                                        f"<f8, <i8, u4, S8)") from None
        if shape:
            fields.append((name, base, tuple(int(x) for x in shape.split(","))))
        else:
            fields.append((name, base))
    try:
        return np.dtype(fields)
    except (TypeError, ValueError) as exc:
        raise InvalidParameterError(f"--dtype {spec!r}: {exc}") from None


def _value(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.rstrip(b"\0").decode("utf-8", errors="replace")
    if isinstance(v, list):
        return [_value(x) for x in v]
    if isinstance(v, tuple):
        return [_value(x) for x in v]
    if isinstance(v, float) and v != v:
        return None
    return v


def row_dict(row: Any) -> dict[str, Any]:
    """A row (np.void) as plain, JSON-ready data."""
    out = {}
    for name in row.dtype.names:
        out[name] = _value(row[name].tolist())
    return out


def _stop_event() -> threading.Event:
    """Set on SIGINT/SIGTERM, so a follower finishes its batch and closes cleanly."""
    stop = threading.Event()

    def handler(*_: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def register(sub: Any) -> None:
    p = sub.add_parser(
        "state", formatter_class=RAW,
        help="state regions: rows of process state in shared memory, imaged and recovered",
        description="A state region holds N rows of a numpy structured dtype in shared "
                    "memory: one writer, any number of readers, a seqlock per row and an "
                    "epoch for consistent reads of all rows, and applied_seq, the last ring "
                    "sequence the writer applied. State images are cuts at such a sequence; "
                    "recovery restores one and replays the ring after it.",
        epilog="examples:\n"
               "  pyshm state create book --dtype 'bid:<f8[4],ask:<f8[4],position:<i8' "
               "--rows 64\n"
               "  pyshm state follow book --ring md --apply mybook.fold:apply "
               "--images /var/lib/book --every 5\n"
               "  pyshm state info book\n"
               "  pyshm state recover book --image /var/lib/book --ring md "
               "--apply mybook.fold:apply")
    ssub = p.add_subparsers(dest="state_command", metavar="SUBCOMMAND")
    state_parser = p
    p.set_defaults(func=lambda _a: (state_parser.print_help(), 2)[1])

    c = ssub.add_parser(
        "create", formatter_class=RAW, help="create a state region",
        description="Create a region of ROWS rows of the given dtype (zero-filled, mode "
                    "0600 unless --mode). --dtype takes NAME:FORMAT[SHAPE] fields separated "
                    "by commas, @FILE.json (a description or a list of [name, format, "
                    "shape]), or py:MODULE:ATTR.",
        epilog="examples:\n"
               "  pyshm state create book --dtype 'bid:<f8[4],ask:<f8[4],position:<i8' "
               "--rows 64\n"
               "  pyshm state create risk --dtype py:myrisk.schema:ROW --rows 1000000")
    c.add_argument("name", help="region name (/dev/shm) or path")
    c.add_argument("--dtype", required=True, help="row dtype (see above)")
    c.add_argument("--rows", required=True, type=_args.positive_int, help="number of rows")
    c.add_argument("--mode", type=_args.octal_mode, default=0o600,
                   help="file permissions in octal (default 600)")
    c.add_argument("--exist-ok", action="store_true",
                   help="attach to an existing region with the same dtype and rows")
    c.set_defaults(func=cmd_create)

    c = ssub.add_parser(
        "info", formatter_class=RAW, help="dtype, rows, applied sequence, writer, cuts",
        description="Show a region's dtype, size, applied_seq, writer (and whether it is "
                    "alive), snapshot cut and handover state. Exit status 1 if the region "
                    "is missing or damaged.",
        epilog="example:\n  pyshm state info book --json")
    c.add_argument("name")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.set_defaults(func=cmd_info)

    c = ssub.add_parser(
        "read", formatter_class=RAW, help="print rows (each read intact; --all at one commit)",
        description="Print the ROWs given (each read with its seqlock), or with --all every "
                    "row as of one commit, with the applied sequence.",
        epilog="examples:\n  pyshm state read book 3 7\n  pyshm state read book --all --json")
    c.add_argument("name")
    c.add_argument("rows", nargs="*", type=_args.count, metavar="ROW")
    c.add_argument("--all", action="store_true", help="every row, consistent")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.set_defaults(func=cmd_read)

    c = ssub.add_parser(
        "snapshot", formatter_class=RAW, help="write a state image (a cut at the applied sequence)",
        description="Image the region at its current commit: every row as of one applied "
                    "sequence S, without stopping its writer for longer than one 16 KiB "
                    "chunk copy. With --every / --every-records, keep imaging into the "
                    "directory OUTPUT (REGION-SEQ-NS.pyimg), keeping the last --keep.",
        epilog="examples:\n  pyshm state snapshot book -o book.pyimg\n"
               "  pyshm state snapshot book -o /var/lib/book --every 5 --keep 10")
    c.add_argument("name")
    c.add_argument("-o", "--output", required=True,
                   help="image file (a directory with --every/--every-records)")
    c.add_argument("--compress", choices=("none", "zstd"), default="none")
    c.add_argument("--force", action="store_true", help="replace an existing image file")
    c.add_argument("--every", type=_args.seconds, metavar="SECONDS")
    c.add_argument("--every-records", type=_args.positive_int, metavar="N",
                   help="image whenever N more records were applied")
    c.add_argument("--keep", type=_args.positive_int, default=5,
                   help="images a schedule keeps (default 5)")
    c.add_argument("--duration", type=_args.seconds, help="stop a schedule after SECONDS")
    c.set_defaults(func=cmd_snapshot, keyword_flags={"overwrite": "--force"})

    c = ssub.add_parser(
        "recover", formatter_class=RAW, help="restore a region from an image, replay the ring",
        description="Restore region NAME from --image (a state image, or a directory: the "
                    "newest image of the region there that verifies) and replay every "
                    "record of --ring after the image's sequence through --apply. --ring "
                    "may be a live ring, its replica or a ring image. Nothing is written "
                    "unless the image verifies, its dtype and rows are the region's, and "
                    "the ring still holds the next sequence (the missing ones are named). "
                    "Without --ring only the image is restored.",
        epilog="examples:\n"
               "  pyshm state recover book --image /var/lib/book --ring md "
               "--apply mybook.fold:apply\n"
               "  pyshm state recover book --image book.pyimg --ring md.pyimg "
               "--apply ./fold.py:apply\n"
               "  pyshm state recover book --image book.pyimg   # the image only")
    c.add_argument("name")
    c.add_argument("--image", required=True, help="state image file or directory")
    c.add_argument("--ring", help="live ring, replica or ring image to replay from")
    c.add_argument("--apply", help="MODULE:FUNCTION or FILE.py:FUNCTION, "
                   "called as apply(writer, record)")
    c.add_argument("--until", type=_args.count, metavar="SEQ",
                   help="stop after applying sequence SEQ")
    c.add_argument("--json", action="store_true", help="machine-readable summary")
    c.set_defaults(func=cmd_recover)

    c = ssub.add_parser(
        "follow", formatter_class=RAW,
        help="keep a region folded over a ring (recovering it first if needed)",
        description="Run the region's writer: resume a region whose writer died between "
                    "two records, recover one it left inside a transaction (newest image + "
                    "replay), create a missing one (--dtype, --rows) and fold the ring from "
                    "its first record; then apply every new record, imaging the region on "
                    "schedule. Stops on SIGINT/SIGTERM or after --duration; answers a "
                    "`pyshm handover` by handing the region over and exiting.",
        epilog="example:\n  pyshm state follow book --ring md --apply mybook.fold:apply "
               "--dtype 'bid:<f8[4],position:<i8' --rows 64 --images /var/lib/book --every 5")
    _follow_args(c)
    c.add_argument("--dtype", help="row dtype, to create the region when it is missing")
    c.add_argument("--rows", type=_args.positive_int, help="rows, to create the region")
    c.add_argument("--restart", choices=("auto", "image"), default="auto",
                   help="auto: resume a consistent region; image: always restore the newest "
                        "image (default auto)")
    c.set_defaults(func=cmd_follow)

    c = ssub.add_parser(
        "replicate", formatter_class=RAW,
        help="mirror a region into a state replica (changed rows, with their versions)",
        description="Create (or reuse) the state replica --to and keep it a copy of region "
                    "NAME: each round fixes a cut of the region (its writer waits at most "
                    "one chunk copy) and copies the rows whose version changed. The "
                    "replica's applied_seq is the sequence it is consistent at. A status "
                    "line every --interval; stops on SIGINT/SIGTERM or after --duration "
                    "(after a final sync).",
        epilog="example:\n  pyshm state replicate book --to book.replica --duration 60")
    c.add_argument("name")
    c.add_argument("--to", required=True, dest="target", help="replica name or path")
    c.add_argument("--duration", type=_args.seconds, help="stop after SECONDS")
    c.add_argument("--interval", type=_args.seconds, default=1.0,
                   help="seconds between status lines (default 1)")
    c.add_argument("--json", action="store_true", help="status lines as JSON")
    c.set_defaults(func=cmd_replicate)

    c = ssub.add_parser(
        "ls", formatter_class=RAW, help="list the state regions in /dev/shm",
        description="List the state regions in /dev/shm (recognised by their magic, read "
                    "without mapping them): rows, row size, applied sequence, writer.",
        epilog="example:\n  pyshm state ls --json")
    c.add_argument("--json", action="store_true")
    c.add_argument("--dir", default="/dev/shm", help=argparse.SUPPRESS)
    c.set_defaults(func=cmd_ls)

    c = ssub.add_parser(
        "rm", formatter_class=RAW, help="remove a state region",
        description="Remove the region's name (processes that map it keep their mapping). "
                    "Refused while its writer is alive, unless --force.",
        epilog="example:\n  pyshm state rm book")
    c.add_argument("name")
    c.add_argument("--force", action="store_true", help="remove even with a live writer")
    c.set_defaults(func=cmd_rm)

    p = sub.add_parser(
        "handover", formatter_class=RAW,
        help="replace a region's running writer with this process, at an exact sequence",
        description="Hot handover for upgrades: this process (the new version of the "
                    "region's writer, with its --apply) starts from the newest state image "
                    "(--images/--image; else a cut of the live region), catches up on --ring "
                    "while the old writer keeps running, asks it to stop at its next record "
                    "boundary, applies exactly up to there, takes the writer role (and its "
                    "place as the ring's gating consumer) and goes on from the next record: "
                    "nothing applied twice, nothing skipped. The old process must run a "
                    "pyshm Follower (`pyshm state follow`, `pyshm run`). Prints the gap with "
                    "no process applying, then keeps following until SIGINT/SIGTERM "
                    "(--exit-after: return once the handover is done). With no live writer "
                    "it simply starts (recovering the region if needed).",
        epilog="examples:\n  pyshm handover book --ring md --apply mybook.fold_v2:apply "
               "--images /var/lib/book\n"
               "  pyshm handover book --run pyshm.yaml   # ask `pyshm run` to do it")
    _follow_args(p, required=False)
    p.add_argument("--run", metavar="CONFIG",
                   help="ask the `pyshm run CONFIG` that keeps region NAME to hand it over "
                        "to a new writer process (new code: it imports apply afresh), and "
                        "wait for the outcome")
    p.add_argument("--image", help="start from this state image instead of the newest one")
    p.add_argument("--sync", choices=("diff", "trust"), default="diff",
                   help="diff: copy the rows where this version's state differs from the "
                        "old one's at the handover sequence (default); trust: assume equal")
    p.add_argument("--timeout", type=_args.seconds, default=30.0,
                   help="how long catching up and the old writer's answer may take")
    p.add_argument("--exit-after", action="store_true",
                   help="exit once the handover is done (for tests and scripts)")
    p.set_defaults(func=cmd_handover)


def _follow_args(c: argparse.ArgumentParser, required: bool = True) -> None:
    c.add_argument("name", help="region name (/dev/shm) or path")
    c.add_argument("--ring", required=required, help="the ring (or replica) to fold")
    c.add_argument("--apply", required=required,
                   help="MODULE:FUNCTION or FILE.py:FUNCTION, called as apply(writer, record)")
    c.add_argument("--images", help="directory of this region's state images")
    c.add_argument("--every", type=_args.seconds, metavar="SECONDS",
                   help="image the region every SECONDS (needs --images)")
    c.add_argument("--every-records", type=_args.positive_int, metavar="N",
                   help="image after every N records (needs --images)")
    c.add_argument("--keep", type=_args.positive_int, default=5,
                   help="images to keep (default 5)")
    c.add_argument("--batch", type=_args.positive_int, default=256,
                   help="records read per batch (default 256)")
    c.add_argument("--duration", type=_args.seconds, help="stop after SECONDS")
    c.add_argument("--json", action="store_true", help="print the summary as JSON")


# ----------------------------------------------------------------------------------


def cmd_create(args: argparse.Namespace) -> int:
    from ..state import State

    dt = dtype_from_spec(args.dtype)
    with State(args.name, create=True, dtype=dt, rows=args.rows, mode=args.mode,
               exist_ok=args.exist_ok) as st:
        print(f"state region {st.name}: {st.rows} rows of {st.itemsize} bytes "
              f"({st.segment.size} bytes mapped)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from ..state import State

    with State(args.name, readonly=True) as st:
        info = st.info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    w = info["writer_pid"]
    writer = "-" if w is None else f"pid {w} ({'alive' if info['writer_alive'] else 'dead'})"
    seq = info["applied_seq"]
    print(f"state region {info['name']}{' (replica)' if info['replica'] else ''}: "
          f"{info['rows']} rows of {info['itemsize']} bytes, {info['segment_bytes']} bytes "
          f"mapped")
    print(f"applied_seq {'-' if seq is None else seq}   epoch {info['epoch']}"
          f"{' (transaction open)' if info['in_transaction'] else ''}   writer {writer}")
    if info["replica"]:
        print(f"replica of region {info['source_id']}, consistent at sequence "
              f"{'-' if seq is None else seq}")
    cut = info["cut"]
    if cut["pid"]:
        print(f"snapshot cut in progress by pid {cut['pid']}")
    ho = info["handover"]
    if ho["state"] != "none":
        print(f"handover {ho['state']}: old pid {ho['old_pid']}, new pid {ho['new_pid']}"
              + (f", at sequence {ho['final_seq']}" if ho["final_seq"] is not None else ""))
    print("dtype:")
    for line in info["dtype"]:
        print(f"  {line}")
    return 0


def cmd_read(args: argparse.Namespace) -> int:
    from ..state import State

    if not args.all and not args.rows:
        raise InvalidParameterError("give ROW numbers, or --all")
    with State(args.name, readonly=True) as st:
        if args.all:
            cap = st.capture(method="optimistic")
            rows = list(enumerate(cap.rows))
            seq = cap.seq
        else:
            rows = [(i, st.read(i)) for i in args.rows]
            seq = st.applied_seq
    if args.json:
        print(json.dumps({"applied_seq": seq,
                          "rows": {str(i): row_dict(r) for i, r in rows}}, indent=1))
        return 0
    print(f"# applied_seq {'-' if seq is None else seq}")
    for i, r in rows:
        fields = ", ".join(f"{k}={v!r}" for k, v in row_dict(r).items())
        print(f"{i}: {fields}")
    return 0


def cmd_snapshot(args: argparse.Namespace) -> int:
    from ..state.images import snapshot_state
    from ..state.schedule import StateSnapshotSchedule

    if args.every is not None or args.every_records is not None:
        sched = StateSnapshotSchedule(
            args.name, args.output, every_seconds=args.every,
            every_records=args.every_records, keep=args.keep, compression=args.compress,
            on_image=lambda r: print(f"{r.path}: sequence {r.header.applied_seq}, cut in "
                                     f"{r.capture_s * 1e3:.2f} ms", flush=True),
            on_error=lambda e: print(f"state snapshot failed: {e}", file=sys.stderr,
                                     flush=True))
        stop = _stop_event()
        with sched:
            sched.start()
            stop.wait(args.duration)
        return 1 if sched.failures and not sched.taken else 0
    res = snapshot_state(args.name, args.output, compression=args.compress,
                         overwrite=args.force)
    h = res.header
    seq = "-" if h.applied_seq is None else h.applied_seq
    print(f"{args.output}: {h.row_count} rows at sequence {seq} ({h.data_length} bytes, "
          f"{h.compression_name}); cut {res.capture.method} in {res.capture_s * 1e3:.2f} ms, "
          f"written in {res.write_s * 1e3:.2f} ms")
    return 0


def cmd_recover(args: argparse.Namespace) -> int:
    from ..state.follower import load_callable
    from ..state.recovery import recover, restore_image

    if args.ring is None:
        if args.apply or args.until is not None:
            raise InvalidParameterError("--apply and --until need --ring")
        info = restore_image(args.name, args.image)
        out = info
    else:
        if not args.apply:
            raise InvalidParameterError("--ring needs --apply (the function that folds a "
                                        "record into the region)")
        apply = load_callable(args.apply)
        rec = recover(args.name, args.image, args.ring, apply, until=args.until)
        out = rec.summary()
        rec.close()
    if args.json:
        print(json.dumps(out, indent=2))
    elif args.ring is None:
        print(f"restored {out['state']} from {out['image']} at sequence "
              f"{'-' if out['image_seq'] is None else out['image_seq']}")
    else:
        print(f"recovered {out['state']}: image {out['image']} at sequence "
              f"{out['image_seq']}, replayed {out['replayed']} records from {out['source']} "
              f"up to sequence {out['last_applied']}; image load {out['image_load_s']:.3f} s, "
              f"replay {out['replay_s']:.3f} s ({out['records_per_s']:,} records/s)")
    return 0


def _follower(args: argparse.Namespace, **extra: Any) -> Any:
    from ..state.follower import Follower, load_callable

    if (args.every or args.every_records) and not args.images:
        raise InvalidParameterError("--every/--every-records need --images DIR")
    apply = load_callable(args.apply)
    return Follower(args.name, args.ring, apply, images=args.images,
                    snapshot_every=args.every, snapshot_records=args.every_records,
                    keep=args.keep, batch=args.batch, **extra)


def _report(args: argparse.Namespace, res: Any) -> None:
    d = res.as_dict()
    if args.json:
        print(json.dumps(d, indent=2))
        return
    print(f"stopped ({res.reason}): applied {res.applied} records, last sequence "
          f"{'-' if res.last_applied is None else res.last_applied}")


def cmd_follow(args: argparse.Namespace) -> int:
    dtype = dtype_from_spec(args.dtype) if args.dtype else None
    if (dtype is None) != (args.rows is None):
        raise InvalidParameterError("--dtype and --rows go together (to create the region)")
    f = _follower(args, dtype=dtype, rows=args.rows, restart=args.restart)
    stop = _stop_event()
    with f:
        info = f.start()
        if not args.json:
            print(_start_line(info), flush=True)
        res = f.run(stop=stop, max_seconds=args.duration)
    _report(args, res)
    return 0


def _start_line(info: dict[str, Any]) -> str:
    how = info.get("how")
    if how == "resumed":
        return f"resumed at sequence {info.get('applied_seq')}"
    if how == "recovered":
        if info.get("image") is None:
            return (f"no state image ({info.get('why')}): folding {info.get('source')} from "
                    f"its first record")
        return (f"recovered ({info.get('why')}): image {info.get('image')} at sequence "
                f"{info.get('image_seq')}, then {info.get('source')}")
    if how == "handover":
        gap = info.get("gap_ns")
        return (f"took over from pid {info.get('old_pid')} at sequence "
                f"{info.get('final_seq')}: gap {gap / 1e6:.3f} ms with no process "
                f"applying, {info.get('rows_differing')} rows differed"
                if gap is not None else f"took over from pid {info.get('old_pid')}")
    return str(info)


def cmd_handover(args: argparse.Namespace) -> int:
    if args.run:
        return _handover_by_supervisor(args)
    if not args.ring or not args.apply:
        raise InvalidParameterError("--ring and --apply are required (or --run CONFIG to "
                                    "ask a running `pyshm run`)")
    f = _follower(args, handover=True, image=args.image, sync=args.sync,
                  handover_timeout=args.timeout)
    stop = _stop_event()
    with f:
        info = f.start()
        if args.json and args.exit_after:
            print(json.dumps(info, indent=2))
            return 0
        print(_start_line(info), flush=True)
        if args.exit_after:
            return 0
        res = f.run(stop=stop, max_seconds=args.duration)
    _report(args, res)
    return 0


def cmd_replicate(args: argparse.Namespace) -> int:
    from ..state import State
    from ..state.replica import CpuStateEngine, create_replica

    stop = _stop_event()
    with State(args.name) as src:
        rep = create_replica(args.target, src)
        try:
            with CpuStateEngine(src, rep) as eng:
                eng.start()
                end = None if args.duration is None else time.monotonic() + args.duration
                while not stop.is_set():
                    left = args.interval if end is None else min(args.interval,
                                                                  end - time.monotonic())
                    if left <= 0 or stop.wait(left):
                        break
                    _status(args, eng)
                eng.sync(10.0)
                _status(args, eng)
        finally:
            rep.close()
    return 0


def _status(args: argparse.Namespace, eng: Any) -> None:
    st = eng.stats()
    seq = st.extra["consistent_seq"]
    if args.json:
        print(json.dumps(st.as_dict()), flush=True)
        return
    print(f"{st.state:<8} consistent at {'-' if seq is None else seq}  rounds {st.copies}  "
          f"rows copied {st.records_mirrored}  last round {st.extra['last_round_ns'] / 1e3:.1f}"
          f" us  lag {st.lag_ns / 1e3:.1f} us  resyncs {st.extra['full_resyncs']}", flush=True)


def _handover_by_supervisor(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..state.supervise import request_file, write_request

    cfg = load_config(args.run)
    if args.name not in [s.name for s in cfg.states]:
        raise InvalidParameterError(f"{args.run} declares no state region {args.name!r} "
                                    f"(states: {', '.join(s.name for s in cfg.states) or '-'})")

    def status() -> dict[str, Any]:
        try:
            with open(cfg.status_path, encoding="utf-8") as f:
                st = json.load(f)
            return (st.get("states") or {}).get(args.name) or {}
        except (OSError, ValueError):
            return {}

    before = status()
    if not before:
        raise PyshmError(f"no running `pyshm run {args.run}` (no status in "
                         f"{cfg.status_path})")
    seen = len(before.get("handovers") or [])
    write_request(request_file(cfg.state_dir, cfg.name), args.name)
    deadline = time.monotonic() + args.timeout + 10
    while time.monotonic() < deadline:
        time.sleep(0.1)
        st = status()
        done = st.get("handovers") or []
        if len(done) > seen or (done and done[-1] != (before.get("handovers") or [None])[-1]
                                and not st.get("handover_in_progress")):
            last = done[-1]
            if args.json:
                print(json.dumps(last, indent=2))
            elif "failed" in last:
                raise PyshmError(f"handover of {args.name} failed: {last['failed']}")
            else:
                print(f"state {args.name}: handed over from pid {last['old_pid']} at "
                      f"sequence {last['final_seq']}, gap {last['gap_ns'] / 1e6:.3f} ms with "
                      f"no process applying, {last['rows_differing']} rows differed")
            return 1 if "failed" in last else 0
    raise PyshmError(f"the supervisor did not report a handover of {args.name} within "
                     f"{args.timeout + 10:.0f} s")


def cmd_ls(args: argparse.Namespace) -> int:
    from ..state.region import list_regions

    regions = list_regions(args.dir)
    if args.json:
        print(json.dumps(regions, indent=2))
        return 0
    if not regions:
        print("no state regions")
        return 0
    print(f"{'NAME':<32} {'ROWS':>9} {'ROWSIZE':>8} {'APPLIED':>12} {'WRITER':>14}  KIND")
    for r in regions:
        if r.get("error"):
            print(f"{r['name']:<32} damaged: {r['error']}")
            continue
        seq = "-" if r["applied_seq"] is None else str(r["applied_seq"])
        w = r["writer_pid"]
        writer = "-" if not w else f"{w}{'' if r['writer_alive'] else '(dead)'}"
        print(f"{r['name']:<32} {r['rows']:>9} {r['itemsize']:>8} {seq:>12} {writer:>14}  "
              f"{'replica' if r['replica'] else 'region'}")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    from ..ring import pid_alive
    from ..segment import resolve_path
    from ..state import State

    with State(args.name, readonly=True) as st:
        w = st.writer_pid
        if w and pid_alive(w) and not args.force:
            raise PyshmError(f"state region {st.name!r} has a live writer (pid {w}); stop it "
                             f"first or use --force")
        path = st.path
    os.unlink(resolve_path(path))
    print(f"removed state region {args.name}")
    return 0



# ---------------------------------------------------------------- inspect/export/diff
# (`pyshm inspect|export|diff` hand state images and regions to these)


def _require_state_image(spec: str, command: str) -> None:
    from ..images.format import is_image
    from ..state.region import is_region

    if is_region(spec) and not is_image(spec):
        raise InvalidParameterError(
            f"{spec!r} is a state region, not an image file: `pyshm {command}` reads "
            f"images. Take one first: pyshm state snapshot {spec} -o "
            f"{os.path.basename(spec)}.pyimg")


def inspect_state_cmd(args: argparse.Namespace) -> int:
    from ..state.images import inspect_state_image

    _require_state_image(args.image, "inspect")

    info = inspect_state_image(args.image, verify=not args.no_verify)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    r = info["region"]
    seq = info["applied_seq"]
    print(f"image       {info['path']} (state image, format v{info['format_version']}, "
          f"{info['file_size']} bytes)")
    print(f"region      {r['name'] or '-'}: {r['rows']} rows of {r['itemsize']} bytes"
          f"{' (taken from a replica)' if info['from_replica'] else ''}")
    print(f"sequence    S = {'- (nothing applied)' if seq is None else seq}: every row "
          f"reflects exactly the records up to S")
    print(f"chunks      {info['chunks']} x {info['chunk_size']} bytes, {info['compression']}, "
          f"{info['stored_bytes']} stored")
    print(f"checksums   {info['checksums']}")
    if info["dtype"] is not None:
        print("dtype:")
        for line in info["dtype"]:
            print(f"  {line}")
    return 0


def export_state_cmd(args: argparse.Namespace) -> int:
    from ..state.images import export_state_image, read_state_image

    _require_state_image(args.image, "export")

    out = args.output or os.path.splitext(args.image)[0] + "." + args.format
    if args.format == "npz":
        n = export_state_image(args.image, out)
    else:
        img = read_state_image(args.image)
        target = sys.stdout if out == "-" else open(out, "w", encoding="utf-8")
        try:
            for i, row in enumerate(img.rows):
                target.write(json.dumps({"row": i, **row_dict(row)}) + "\n")
        finally:
            if target is not sys.stdout:
                target.close()
        n = len(img.rows)
    if out != "-":
        print(f"{out}: {n} rows")
    return 0


def diff_state_cmd(args: argparse.Namespace) -> int:
    from ..state.images import diff_states

    d = diff_states(args.a, args.b)
    if args.json:
        print(json.dumps(d.as_dict(), indent=2))
    else:
        print("\n".join(d.lines()))
    return 0 if d.identical else 1
