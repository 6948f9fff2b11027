"""Image commands: ``snapshot``, ``restore``, ``inspect``, ``export`` and ``diff``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from ..errors import InvalidParameterError, PyshmError
from ..images.format import IMAGE_SUFFIX
from . import _args

RAW = argparse.RawDescriptionHelpFormatter
PROGRESS_THRESHOLD = 256 << 20  # below this an image is written or read in well under 1 s


class Progress:
    """A one-line progress bar on stderr, drawn at most 10 times a second."""

    def __init__(self, label: str, enabled: bool):
        self.label = label
        self.enabled = enabled
        self._last = 0.0
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total < PROGRESS_THRESHOLD:
            return
        now = time.monotonic()
        if done < total and now - self._last < 0.1:
            return
        self._last = now
        frac = done / total if total else 1.0
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\r{self.label} [{bar:<30}] {frac * 100:5.1f}% "
                         f"{done >> 20}/{total >> 20} MiB")
        self._drawn = True
        if done >= total:
            sys.stderr.write("\n")
            self._drawn = False
        sys.stderr.flush()

    def finish(self) -> None:
        if self._drawn:
            sys.stderr.write("\n")
            self._drawn = False


def register(sub: Any) -> None:
    p = sub.add_parser(
        "snapshot", formatter_class=RAW,
        help="write a crash-consistent image of a live ring (or replica) to a file",
        description="Copy the intact committed records of RING into an image file without "
                    "pausing its producer. With --every/--every-bytes, keep taking "
                    "snapshots into the directory OUTPUT, keeping the last --keep; while "
                    "RING is unchanged since the last image no new one is written "
                    "(--even-if-unchanged writes them regardless).",
        epilog="examples:\n  pyshm snapshot md -o md.pyimg --compress zstd\n"
               "  pyshm snapshot md -o /var/snap --every 10 --keep 6")
    p.add_argument("ring", help="ring name (/dev/shm) or path; a replica works too")
    p.add_argument("-o", "--output", required=True,
                   help="image file (or directory with --every/--every-bytes)")
    p.add_argument("--compress", choices=("none", "zstd"), default="none")
    p.add_argument("--level", type=int, default=3, help="zstd level (default 3)")
    p.add_argument("--chunk-size", type=_args.size, default="4MiB",
                   help="bytes per checksummed chunk (default 4MiB)")
    p.add_argument("--force", action="store_true", help="replace an existing image file")
    p.add_argument("--every", type=_args.seconds, metavar="SECONDS",
                   help="snapshot every SECONDS")
    p.add_argument("--every-bytes", type=_args.size, metavar="SIZE",
                   help="snapshot whenever SIZE more bytes were published")
    p.add_argument("--keep", type=_args.positive_int, default=5,
                   help="images a schedule keeps (default 5)")
    p.add_argument("--duration", type=_args.seconds,
                   help="stop a schedule after this many seconds")
    p.add_argument("--even-if-unchanged", action="store_true",
                   help="with --every: write an image even when nothing changed")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_snapshot, keyword_flags={"overwrite": "--force"})

    p = sub.add_parser(
        "restore", formatter_class=RAW, help="build a ring from an image, verified first",
        description="Verify every checksum of IMAGE and build the ring --to from it. The "
                    "target name appears only once the ring is complete; an existing ring "
                    "is replaced only with --overwrite and only when no live process uses "
                    "it. With --in-place an existing, stopped ring of the same capacity and "
                    "partitions is overwritten in its own pages instead (the fast recovery "
                    "path; the ring is untouched unless the whole image verifies). "
                    "Producers continue with the next sequence, consumers resume at it.\n\n"
                    "--engine: an uncompressed image is copied by a replication engine's "
                    "copy mode, which checks every chunk's CRC32C from the bytes it "
                    "writes. Into a new ring that is one pass over the data (the ring gets "
                    "its name only if every chunk checks out); --in-place it is two (every "
                    "chunk verified before the first byte of the ring changes, then copied "
                    "and checked again). auto (default): the engine `pyshm replicate` would "
                    "pick, when it has a copy mode that can write the target (today the "
                    "cpu engine's threads); cpu (or another engine's name): that engine's "
                    "copy mode, or an error saying why not; none: the CPU path without an "
                    "engine (checksums by the crc32c package while the "
                    "file is written). Compressed images and replicas are always copied by "
                    "the CPU.\n\n"
                    "--engine pynq (on a board): the ring-mirror IP restores into a ring "
                    "in a u-dma-buf buffer (a new one built with --udmabuf DEVICE, or one "
                    "made by pyshm create --udmabuf, --in-place), reading the image's "
                    "bytes from a second buffer, the staging buffer, named by "
                    "$PYSHM_RESTORE_UDMABUF (the image's data + 72 KiB); a ring "
                    "in ordinary shared memory is refused (auto takes the CPU path for it).",
        epilog="examples:\n  pyshm restore md.pyimg --to md\n"
               "  pyshm restore md.pyimg --to md --in-place   # overwrite the stopped ring md\n"
               "  pyshm restore md.pyimg --to md --engine none   # no engine: the CPU path\n"
               "  PYSHM_RESTORE_UDMABUF=/dev/udmabuf2 \\\n"
               "    pyshm restore md.pyimg --to md --udmabuf /dev/udmabuf0 --engine pynq\n"
               "  pyshm restore md-replica --to md   # a stopped replica -> new primary")
    p.add_argument("image", help="image file, or a replica (or ring) to copy from")
    p.add_argument("--to", required=True, dest="target", help="ring name or path to create")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing, stopped ring (new segment, renamed over it)")
    p.add_argument("--in-place", action="store_true",
                   help="overwrite the existing, stopped ring --to in its own pages, after "
                        "the whole image is verified (same capacity and partitions)")
    p.add_argument("--engine", default="auto", metavar="{auto,cpu,none,...}",
                   help="which engine copies and checks an uncompressed image: auto "
                        "(default), an engine name, or none (the CPU path); see above")
    p.add_argument("--udmabuf", metavar="DEVICE",
                   help="build the new ring in this u-dma-buf buffer (e.g. /dev/udmabuf0, "
                        "as pyshm create --udmabuf), so that the FPGA engine can mirror it "
                        "and --engine pynq can restore it; not with --in-place")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_restore,
                   keyword_flags={"overwrite": "--overwrite", "in_place": "--in-place",
                                  "engine": "--engine"})

    p = sub.add_parser(
        "inspect", formatter_class=RAW,
        help="show an image's parameters and sequence range, verifying its checksums",
        description="Print an image's ring parameters, window, sequence range, chunk and "
                    "compression figures; every chunk checksum is verified unless "
                    "--no-verify. Exit status 1 if the image is damaged.",
        epilog="example:\n  pyshm inspect md.pyimg --json")
    p.add_argument("image")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-verify", action="store_true", help="skip reading the chunks")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "export", formatter_class=RAW, help="write an image's records as JSON lines or npz",
        description="Export every record (sequence, type, position, payload) of IMAGE. "
                    "jsonl: one JSON object a line, payload in base64 (or --payload hex); "
                    "npz: arrays sequence, type, position, offsets and a flat payload "
                    "(np.load(..., allow_pickle=False) reads it).",
        epilog="example:\n  pyshm export md.pyimg --format npz -o md.npz")
    p.add_argument("image")
    p.add_argument("--format", choices=("jsonl", "npz"), default="jsonl")
    p.add_argument("-o", "--output", help="output file (default: IMAGE with the format's "
                                          "suffix; '-' for stdout with jsonl)")
    p.add_argument("--payload", choices=("base64", "hex"), default="base64")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "diff", formatter_class=RAW, help="compare two images, or an image and a ring",
        description="Compare the records of A and B (each an image file or a ring name) "
                    "by sequence number. Exit status 0 if identical, 1 if different.",
        epilog="example:\n  pyshm diff before.pyimg after.pyimg\n  pyshm diff md.pyimg md")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_diff)


def cmd_snapshot(args: argparse.Namespace) -> int:
    from ..images.schedule import SnapshotSchedule
    from ..images.snapshot import snapshot
    if args.output.startswith("nats://"):  # the JetStream object store (pyshm.bridge)
        from .bridge import remote_snapshot
        return remote_snapshot(args)
    if args.every is not None or args.every_bytes is not None:
        streak = {"skipping": False}

        def on_image(path: str, h: Any) -> None:
            streak["skipping"] = False
            print(f"{path}: {h.record_count} records", flush=True)

        def on_skip(last: str) -> None:
            if not streak["skipping"]:  # once per idle stretch, not every interval
                print(f"{args.ring} unchanged since {last}: no new image until it changes",
                      flush=True)
            streak["skipping"] = True

        sched = SnapshotSchedule(args.ring, args.output, every_seconds=args.every,
                                 every_bytes=args.every_bytes, keep=args.keep,
                                 compression=args.compress, on_image=on_image,
                                 on_skip=on_skip, skip_unchanged=not args.even_if_unchanged,
                                 on_error=lambda e: print(f"snapshot failed: {e}",
                                                          file=sys.stderr, flush=True))
        end = None if args.duration is None else time.monotonic() + args.duration
        with sched:
            sched.start()
            try:
                while end is None or time.monotonic() < end:
                    time.sleep(min(0.2, max(0.0, (end or 1e18) - time.monotonic())))
            except KeyboardInterrupt:
                pass
        return 1 if sched.errors and not sched.taken else 0
    if os.path.isdir(args.output):
        raise InvalidParameterError(
            f"{args.output} is a directory: give an image file name (e.g. "
            f"{os.path.join(args.output, os.path.basename(args.ring) + IMAGE_SUFFIX)}), or "
            f"--every SECONDS to keep taking images into that directory")
    bar = Progress("snapshot", not args.no_progress)
    t0 = time.perf_counter()
    h = snapshot(args.ring, args.output, compression=args.compress, level=args.level,
                 chunk_size=args.chunk_size, overwrite=args.force, progress=bar)
    bar.finish()
    seqs = f"sequences {h.first_sequence}..{h.next_sequence - 1}" if h.record_count \
        else "no records"
    print(f"{args.output}: {h.record_count} records, {seqs}, {h.data_length} bytes "
          f"({h.stored_length} stored, {h.compression_name}) in "
          f"{time.perf_counter() - t0:.3f} s")
    return 0


def _is_ring(spec: str) -> bool:
    from .. import layout
    from ..errors import InvalidNameError
    from ..images.format import open_regular
    from ..segment import resolve_path
    try:
        # never waits on a FIFO; a u-dma-buf ring is a character device
        fd = open_regular(resolve_path(spec), devices=True)
    except (PyshmError, InvalidNameError):
        return False
    try:
        return os.pread(fd, len(layout.MAGIC), 0) == layout.MAGIC
    except OSError:
        return False
    finally:
        os.close(fd)


def _require_image(spec: str, command: str) -> None:
    """Refuse a ring or a directory given where an image file is expected."""
    if os.path.isdir(spec):
        raise InvalidParameterError(f"{spec} is a directory, not an image file "
                                    f"(images end in {IMAGE_SUFFIX})")
    if (not os.path.isfile(spec) or not _has_image_magic(spec)) and _is_ring(spec):
        raise InvalidParameterError(
            f"{spec!r} is a ring, not an image file: `pyshm {command}` reads images. "
            f"Take one first: pyshm snapshot {spec} -o {os.path.basename(spec)}.pyimg")


def _has_image_magic(path: str) -> bool:
    from ..images.format import is_image
    return is_image(path)  # never waits on a FIFO


def cmd_restore(args: argparse.Namespace) -> int:
    if args.image.startswith("nats://"):  # the JetStream object store (pyshm.bridge)
        from .bridge import remote_restore
        return remote_restore(args)
    from ..images.format import is_image
    from ..images.restore import restore, restore_capture
    from ..images.snapshot import capture
    bar = Progress("restore", not args.no_progress)
    t0 = time.perf_counter()
    if args.in_place and args.overwrite:
        raise InvalidParameterError("--in-place and --overwrite are exclusive: --in-place "
                                    "already overwrites the existing ring")
    if os.path.isdir(args.image):
        raise InvalidParameterError(f"{args.image} is a directory, not an image file or a "
                                    f"replica")
    if args.in_place:
        _require_image(args.image, "restore --in-place")
        if not is_image(args.image):
            raise InvalidParameterError(f"--in-place restores from an image file; "
                                        f"{args.image!r} is not one")
        if args.udmabuf:
            raise InvalidParameterError("--udmabuf is for a new ring; --in-place writes the "
                                        "ring where it already lives")
        info = restore(args.image, args.target, in_place=True, progress=bar,
                       engine=args.engine)
    elif not is_image(args.image) and _is_ring(args.image):
        # a replica (or a ring) as the source: copied as a snapshot would, then built
        info = restore_capture(capture(args.image), args.target, overwrite=args.overwrite,
                               device=args.udmabuf)
    else:
        info = restore(args.image, args.target, overwrite=args.overwrite, progress=bar,
                       engine=args.engine, device=args.udmabuf)
    bar.finish()
    how = f"the {info.engine} engine's copy mode" if info.engine else "the CPU path"
    print(f"restored {info.record_count} records into ring {info.name!r} in "
          f"{time.perf_counter() - t0:.3f} s through {how}; producers continue at sequence "
          f"{info.next_sequence}, consumers resume with start={info.next_sequence}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    if args.image.startswith("nats://"):  # the JetStream object store (pyshm.bridge)
        from .bridge import remote_inspect
        return remote_inspect(args)
    from ..images.inspect import inspect
    _require_image(args.image, "inspect")
    if _state_kind(args.image):  # a state region's rows: dtype, rows, sequence
        from .state import inspect_state_cmd
        return inspect_state_cmd(args)
    bar = Progress("verify", not args.no_progress and not args.json)
    info = inspect(args.image, verify=not args.no_verify, progress=bar)
    bar.finish()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    r, w, s = info["ring"], info["window"], info["sequences"]
    last = s["last"] if s["last"] is not None else "-"
    print(f"image       {info['path']} (format v{info['format_version']}, "
          f"{info['file_size']} bytes)")
    print(f"ring        {r['name'] or '-'}: capacity {r['capacity']}, {r['partitions']} "
          f"partitions, max record {r['max_record']}"
          f"{', lossless' if r['lossless'] else ''}"
          f"{' (taken from a replica)' if info['from_replica'] else ''}")
    print(f"window      positions [{w['first_position']}, {w['end_position']}), "
          f"{w['bytes']} bytes")
    print(f"records     {s['records']}, sequences {s['first']}..{last}, next {s['next']}")
    print(f"chunks      {info['chunks']} x {info['chunk_size']} bytes, {info['compression']}"
          f", {info['stored_bytes']} stored"
          + (f" (ratio {info['ratio']})" if info["ratio"] else ""))
    print(f"created     {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(info['created_ns'] / 1e9))}"
          f" UTC")
    print(f"checksums   {info['checksums']}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..images.inspect import export
    _require_image(args.image, "export")
    if _state_kind(args.image):
        from .state import export_state_cmd
        return export_state_cmd(args)
    out = args.output or os.path.splitext(args.image)[0] + "." + args.format
    if out == "-":
        if args.format != "jsonl":
            print("pyshm export: error: only jsonl can go to stdout", file=sys.stderr)
            return 2
    try:
        n = export(args.image, sys.stdout if out == "-" else out, format=args.format,
                   payload=args.payload)
    except BrokenPipeError:
        # `pyshm export X -o - | head`: the reader left; that is not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    if out != "-":
        print(f"{out}: {n} records")
    return 0


def _state_kind(spec: str) -> bool:
    """A state image file, or a state region (pyshm/cli/state.py handles those)."""
    from ..state.region import is_region
    if _has_image_magic(spec):
        from ..images.format import image_kind
        return image_kind(spec) == "state"
    return is_region(spec)


def cmd_diff(args: argparse.Namespace) -> int:
    from ..images.inspect import diff
    for spec in (args.a, args.b):
        if os.path.isdir(spec):
            raise InvalidParameterError(f"{spec} is a directory, not an image file or a ring")
    if _state_kind(args.a) or _state_kind(args.b):  # row by row
        from .state import diff_state_cmd
        return diff_state_cmd(args)
    d = diff(args.a, args.b)
    if args.json:
        print(json.dumps({"a": list(d.a), "b": list(d.b), "common": d.common,
                          "only_a": d.only_a, "only_b": d.only_b, "differing": d.differing,
                          "examples": d.examples, "params_differ": d.params_differ,
                          "identical": d.identical}, indent=2))
    else:
        print("\n".join(d.lines()))
    return 0 if d.identical else 1
