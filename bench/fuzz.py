"""Long fuzzing of what pyshm parses: segment headers, records under a live consumer,
images (checksums valid, contents lying).

Two engines:
  atheris  coverage-guided (libFuzzer) over the Python code, with the C core running in
           process: libFuzzer's -timeout catches hangs in C, its signal handlers crashes.
  random   structured random mutations (the same ones tests/test_fuzz.py draws), each
           input in a forked child with a deadline; works without atheris.

    python bench/fuzz.py --seconds 600                  # atheris if installed, else random
    python bench/fuzz.py --engine random --seconds 60 --target records

Writes bench/results/fuzz.json: executions per target, crashes, hangs, unexpected
exceptions; failing inputs go to bench/results/fuzz-failures/.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from _common import isolated

from pyshm import Ring, layout
from pyshm.errors import PyshmError

CAP = 16 * 1024
PARTS = 8
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
INTERESTING = [0, 1, 7, 8, 15, 16, 17, 64, 255, 256, 512, 513, CAP // PARTS, CAP, CAP + 8,
               2 * CAP, 1 << 31, 1 << 32, 1 << 46, (1 << 63) - 1, 1 << 63, (1 << 64) - 1]
# the atheris child (ended by libFuzzer's exit(), past any cleanup) works in its parent's
# directory, which the parent removes
WORK = os.environ.get("PYSHM_FUZZ_WORK") or tempfile.mkdtemp(prefix="pyshm_fuzz_")
if "PYSHM_FUZZ_WORK" not in os.environ:
    atexit.register(shutil.rmtree, WORK, True)


def template() -> tuple[bytes, list[int]]:
    path = os.path.join(WORK, "template")
    with Ring.create(path, CAP, partitions=PARTS) as r, r.producer() as p:
        for i in range(700):
            p.publish(bytes([i % 256]) * (i * 37 % (r.max_payload + 1)), type=i % 5)
        starts = [rec.position & (CAP - 1) for rec in r.records()]
        raw = bytes(r.segment.buf)
    os.unlink(path)
    return raw, starts


TEMPLATE, STARTS = template()


def drain(ring: Ring, c) -> None:
    for _ in range(200):
        b = c.read_batch(64)
        if not len(b):
            break
        assert all(0 <= int(x) <= ring.max_payload for x in b.lengths), "payload length"
    for _ in range(50):
        if c.read_copy() is None:
            break


# ------------------------------------------------------------------ targets
# Each takes the bytes to apply and raises only PyshmError for a refused input.

def t_header(raw: bytes) -> None:
    from pyshm.images import capture
    from pyshm.repair import read_segment_info, repair

    path = os.path.join(WORK, f"h{os.getpid()}")
    with open(path, "wb") as f:
        f.write(raw)
    try:
        read_segment_info(path)
        with Ring.attach(path) as ring:
            with ring.consumer("oldest") as c:
                try:
                    drain(ring, c)
                except PyshmError:
                    pass
            try:
                capture(ring, retries=1)
            except PyshmError:
                pass
            repair(ring, dry_run=True)
            with ring.producer() as p:
                for i in range(40):
                    if p.publish(b"z" * (i * 13 % 100)) < 0:
                        break
    finally:
        os.unlink(path)


def t_records(patches: list[tuple[int, bytes]], mid: int) -> None:
    path = os.path.join(WORK, f"r{os.getpid()}")
    with open(path, "wb") as f:
        f.write(TEMPLATE)
    try:
        with Ring.attach(path) as ring, ring.consumer("oldest") as c:
            for _ in range(mid):
                if c.read() is None:
                    break
            buf = ring.segment.buf
            for off, data in patches:
                buf[off:off + len(data)] = data
            try:
                drain(ring, c)
            except PyshmError:
                pass
            with ring.consumer("oldest") as c2:
                drain(ring, c2)
    finally:
        os.unlink(path)


def t_image(data: bytes, first: int, seq_shift: int, count_shift: int) -> None:
    from pyshm.images import format as fmt
    from pyshm.images import restore

    src = os.path.join(WORK, f"s{os.getpid()}")
    with open(src, "wb") as f:
        f.write(TEMPLATE)
    with Ring.attach(src) as ring:
        tail, oldest, nseq, params = ring.tail, ring.oldest(), ring.next_sequence, ring.params
        n = sum(1 for _ in ring.records())
    os.unlink(src)
    start = max(oldest, tail - CAP + first) // 8 * 8
    window = (data * (CAP // max(len(data), 1) + 2))[:tail - start]
    header = fmt.ImageHeader(params, start, tail, nseq - n + seq_shift, nseq + seq_shift,
                             max(0, n + count_shift), fmt.now_ns())
    image = os.path.join(WORK, f"i{os.getpid()}.img")
    target = os.path.join(WORK, f"t{os.getpid()}")
    try:
        fmt.write_image(image, header, [memoryview(window)], chunk_size=4096, sync=False)
        restore(image, target, prefault=False, overwrite=True)
        with Ring.attach(target) as r2, r2.consumer("oldest") as c:
            drain(r2, c)
    finally:
        for p in (image, target):
            if os.path.exists(p):
                os.unlink(p)


# ------------------------------------------------------------------ random engine

def mutate_header(rng: random.Random) -> bytes:
    raw = bytearray(TEMPLATE)
    for _ in range(rng.randint(1, 6)):
        kind = rng.random()
        if kind < 0.5:
            off = rng.randrange(0, 0x280, 8)
            raw[off:off + 8] = (rng.choice(INTERESTING) & (2**64 - 1)).to_bytes(8, "little")
        elif kind < 0.8:
            off = rng.randrange(0, 0x80, 4)
            raw[off:off + 4] = (rng.choice(INTERESTING) & 0xFFFFFFFF).to_bytes(4, "little")
        else:
            raw[rng.randrange(0x1000)] = rng.randrange(256)
    if rng.random() < 0.1:
        raw = raw[:rng.choice([0x80, 0x1000, 0x1000 + CAP // 2])]
    return bytes(raw)


def mutate_records(rng: random.Random) -> tuple[list[tuple[int, bytes]], int]:
    patches = []
    for _ in range(rng.randint(1, 6)):
        if rng.random() < 0.6:
            off = layout.OFF_DATA + rng.choice(STARTS) + rng.choice([0, 4, 8])
            patches.append((off, struct.pack("<I", rng.choice(INTERESTING) & 0xFFFFFFFF)))
        else:
            off = layout.OFF_DATA + rng.randrange(CAP - 16)
            patches.append((off, rng.randbytes(rng.randint(1, 16))))
    if rng.random() < 0.3:
        off = rng.choice([layout.OFF_TAIL, layout.OFF_TAIL_INTENT])
        patches.append((off, (rng.choice(INTERESTING + [3 * CAP, 5 * CAP - 8])
                              & (2**64 - 1)).to_bytes(8, "little")))
    return patches, rng.randint(0, 300)


def run_random(targets: list[str], seconds: float, seed: int) -> dict:
    rng = random.Random(seed)
    stats = {t: {"executions": 0, "crash": 0, "hang": 0, "exception": 0} for t in targets}
    fail_dir = os.path.join(RESULTS, "fuzz-failures")
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        t = targets[i % len(targets)]
        i += 1
        if t == "header":
            raw = mutate_header(rng)
            fn: Callable[[], None] = lambda raw=raw: t_header(raw)  # noqa: E731
            blob = raw
        elif t == "records":
            patches, mid = mutate_records(rng)
            fn = lambda p=patches, m=mid: t_records(p, m)  # noqa: E731
            blob = json.dumps([[o, d.hex()] for o, d in patches] + [mid]).encode()
        else:
            data = rng.randbytes(rng.choice([8, 64, 4096]))
            args = (rng.choice([0, 8, CAP // PARTS, CAP]), rng.choice([0, 1, -1, 1 << 40]),
                    rng.choice([0, 1, -1]))
            fn = lambda d=data, a=args: t_image(d, *a)  # noqa: E731
            blob = data + json.dumps(args).encode()
        outcome, detail = isolated(fn, 5.0)
        s = stats[t]
        s["executions"] += 1
        if outcome != "ok":
            s[outcome] += 1
            os.makedirs(fail_dir, exist_ok=True)
            base = os.path.join(fail_dir, f"{t}-{outcome}-{s[outcome]}")
            with open(base + ".bin", "wb") as f:
                f.write(blob)
            if detail:
                with open(base + ".txt", "w") as f:
                    f.write(detail)
    return stats


# ------------------------------------------------------------------ atheris engine

def atheris_child(seconds: float) -> None:
    """Runs in its own process: libFuzzer ends it with exit(), past any Python code."""
    import atheris

    def one(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        which = fdp.ConsumeIntInRange(0, 2)
        try:
            if which == 0:
                raw = bytearray(TEMPLATE)
                for _ in range(fdp.ConsumeIntInRange(0, 8)):
                    off = fdp.ConsumeIntInRange(0, 0xFF8)
                    raw[off:off + 8] = fdp.ConsumeBytes(8).ljust(8, b"\0")
                t_header(bytes(raw))
            elif which == 1:
                patches = []
                for _ in range(fdp.ConsumeIntInRange(1, 8)):
                    if fdp.ConsumeBool():
                        off = layout.OFF_DATA + STARTS[fdp.ConsumeIntInRange(
                            0, len(STARTS) - 1)] + 4 * fdp.ConsumeIntInRange(0, 2)
                    else:
                        off = fdp.ConsumeIntInRange(layout.OFF_TAIL, layout.OFF_DATA + CAP - 16)
                    patches.append((off, fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 8))))
                t_records(patches, fdp.ConsumeIntInRange(0, 300))
            else:
                t_image(fdp.ConsumeBytes(fdp.ConsumeIntInRange(8, 4096)) or b"\0" * 8,
                        fdp.ConsumeIntInRange(0, CAP), fdp.ConsumeIntInRange(-1, 1),
                        fdp.ConsumeIntInRange(-1, 1))
        except PyshmError:
            pass

    with atheris.instrument_imports():
        import pyshm.images  # noqa: F401
        import pyshm.repair  # noqa: F401
    fail_dir = os.path.join(RESULTS, "fuzz-failures")
    os.makedirs(fail_dir, exist_ok=True)
    atheris.Setup([sys.argv[0], f"-max_total_time={int(seconds)}", "-timeout=10",
                   "-rss_limit_mb=2048", f"-artifact_prefix={fail_dir}/"], one)
    atheris.Fuzz()


def run_atheris(seconds: float) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--atheris-child",
           "--seconds", str(seconds)]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=WORK,
                          timeout=seconds + 120, env={**os.environ, "PYSHM_FUZZ_WORK": WORK})
    log = proc.stderr
    fail_dir = os.path.join(RESULTS, "fuzz-failures")
    if os.path.isdir(fail_dir) and not os.listdir(fail_dir):
        os.rmdir(fail_dir)  # made for libFuzzer's artifacts; none were written
    m = re.search(r"Done (\d+) runs in (\d+) second", log)
    finding = re.search(r"^\w*(Error|Exception): .*$|==\d+== ERROR: libFuzzer: .*", log,
                        re.M)
    return {"all": {"executions": int(m.group(1)) if m else None,
                    "seconds": round(time.monotonic() - t0, 1),
                    "coverage": (re.findall(r"cov: (\d+)", log) or [None])[-1],
                    "exit_code": proc.returncode,
                    "finding": finding.group(0) if finding else None,
                    "log_tail": log.splitlines()[-20:] if proc.returncode else []}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--engine", choices=["auto", "atheris", "random"], default="auto")
    ap.add_argument("--target", choices=["all", "header", "records", "image"], default="all")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", default=os.path.join(RESULTS, "fuzz.json"))
    ap.add_argument("--atheris-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.atheris_child:
        atheris_child(args.seconds)
        return 0
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401
            engine = "atheris"
        except ImportError:
            engine = "random"
    targets = ["header", "records", "image"] if args.target == "all" else [args.target]
    t0 = time.monotonic()
    if engine == "atheris":
        stats = run_atheris(args.seconds)
    else:
        stats = run_random(targets, args.seconds, args.seed)
    out = {"engine": engine, "seconds": round(time.monotonic() - t0, 1), "seed": args.seed,
           "targets": stats,
           "load": os.getloadavg()[0]}
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(out, f, indent=2)
    print(json.dumps(out, indent=2))
    bad = sum(v.get("crash", 0) + v.get("hang", 0) + v.get("exception", 0)
              + (1 if v.get("exit_code") else 0) for v in stats.values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
