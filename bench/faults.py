"""Fault injection with real processes: kill -9 of the producer (also between claim and
commit), of a gating consumer, of the replication engine and of the snapshot writer, at
random moments, followed by the documented recovery and a check that what the system
then holds is exactly the committed prefix.

    python bench/faults.py --trials 200                   # every kind, ~10 min
    python bench/faults.py --kinds producer --trials 50 --seed 7

Each trial: a lossless ring, a producer publishing deterministic records (payload and
type are functions of the sequence number, so any torn or invented byte is visible), a
gating consumer verifying every record in another process, plus the engine or the
snapshot writer for those kinds. The target is killed with SIGKILL after a random delay,
recovered, the run finishes, and the counters are compared:

  lost   records of the committed prefix that a reader / the replica / the image is
         missing (lossless mode: must be 0),
  torn   records returned whose bytes differ from what was published (always 0),
  extra  records returned that were never committed (always 0).

Recovery per kind (what docs/guarantees.md documents):
  producer  `pyshm repair` (dead pid: discard the claim, fix next_sequence), then a new
            producer resumes at next_sequence;
  consumer  a keeper gating consumer is registered at once (the dead slot still gates
            until then), the consumer is restarted from its checkpoint, the keeper leaves;
  engine    the engine's gate keeps the producer from passing the replica while no
            engine runs; a new engine reopens the same replica and resumes at its tail;
  snapshot  the image path holds the previous complete image or none (temp name + rename);
            the writer's temp file is removed; the next snapshot restores exactly.

The module is also imported by tests/test_fault_inject.py for a bounded run.
"""

from __future__ import annotations

import argparse
import glob
import json
import multiprocessing as mp
import os
import random
import signal
import struct
import sys
import tempfile
import time
import uuid
from typing import Any

from pyshm import Ring

CTX = mp.get_context("fork")
KINDS = ("producer", "consumer", "engine", "snapshot")
CAP = 256 * 1024
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
# shared counters of the verifying consumer
NEXT, VERIFIED, TORN, GAPS, DUPES, STOP, CLAIMS, READY = range(8)


def payload(seq: int) -> bytes:
    size = 8 + (seq * 2654435761) % 120
    return (seq.to_bytes(8, "little") * (size // 8 + 1))[:size]


def rtype(seq: int) -> int:
    return seq % 7


# ------------------------------------------------------------------ children

def producer_main(name: str, counters: Any, limit: int, claim_share: float, seed: int) -> None:
    rng = random.Random(seed)
    # a dead gating consumer keeps gating for 2 s: the supervisor pins and restarts it
    ring = Ring.attach(name, reap_grace=2.0)
    p = ring.producer()
    seq = p.sequence
    while not counters[STOP] and seq < limit:
        data = payload(seq)
        if rng.random() < claim_share:
            view = p.claim(len(data), timeout=10.0)
            counters[CLAIMS] += 1
            # write in pieces so that a kill often lands between claim and commit
            half = len(data) // 2
            view[:half] = data[:half]
            for _ in range(rng.randrange(200)):
                pass
            view[half:] = data[half:]
            got = p.commit(rtype(seq))
        else:
            got = p.publish(data, rtype(seq), timeout=10.0)
            if got < 0:
                continue
        assert got == seq, (got, seq)
        seq += 1
    p.close()
    os._exit(0)


def consumer_main(name: str, counters: Any, start: int, position: int = -1) -> None:
    from pyshm.repair import resume_consumer

    ring = Ring.attach(name)
    c = resume_consumer(ring, position, start) if position >= 0 else \
        ring.consumer(start if start else "oldest", gating=True)
    counters[READY] = 1
    expect = start
    while True:
        m = c.read_copy(timeout=0.05, wait="yield")
        if m is None:
            # STOP == 2: the producer has exited, so the tail cannot move any more (at 1
            # its last publish may still be in flight: leaving then lost that record)
            if counters[STOP] == 2 and c.position >= ring.tail:
                break
            continue
        s = m.sequence
        if s < expect:
            counters[DUPES] += 1
            continue
        if s > expect:
            counters[GAPS] += s - expect
        if m.data != payload(s) or m.type != rtype(s):
            counters[TORN] += 1
        counters[VERIFIED] += 1
        expect = s + 1
        counters[NEXT] = expect  # the checkpoint a restarted consumer resumes from
    c.close()
    os._exit(0)


def engine_main(name: str, replica: str) -> None:
    from pyshm.engine import open_engine
    from pyshm.replica import Replica

    ring = Ring.attach(name)
    rep = Replica.open(replica)
    eng = open_engine("cpu", ring, rep, gate=True, keep_gate=True)
    eng.start()
    while True:
        time.sleep(1)


def snapshot_main(name: str, image: str) -> None:
    from pyshm.errors import SnapshotError
    from pyshm.images import snapshot

    while True:
        try:
            snapshot(name, image, overwrite=True, sync=False)
        except SnapshotError:
            pass


# ------------------------------------------------------------------ checks

def check_records(recs: list[Any], upto: int, where: str) -> dict[str, int]:
    """recs: records (sequence/type/payload). Contiguous, intact, none beyond ``upto``."""
    out = {"records": len(recs), "lost": 0, "torn": 0, "extra": 0}
    prev = None
    for r in recs:
        data = r.payload if hasattr(r, "payload") else bytes(r.data)
        if r.sequence >= upto:
            out["extra"] += 1
        if data != payload(r.sequence) or r.type != rtype(r.sequence):
            out["torn"] += 1
        if prev is not None and r.sequence != prev + 1:
            out["lost"] += max(0, r.sequence - prev - 1)
        prev = r.sequence
    return out


def _kill(proc: Any) -> None:
    if proc is not None and proc.is_alive():
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)


def _wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.001)


def trial(kind: str, rng: random.Random, workdir: str, limit: int = 1 << 62) -> dict[str, Any]:
    """One fault of ``kind``, its recovery and the verification; returns the counters."""
    from pyshm.images import ImageReader, restore
    from pyshm.repair import repair
    from pyshm.replica import Replica

    tag = uuid.uuid4().hex[:8]
    name = f"pyshmfault_{os.getpid()}_{tag}"
    rep_name = name + "_rep"
    image = os.path.join(workdir, f"{tag}.img")
    counters = CTX.Array("q", 8, lock=False)
    res: dict[str, Any] = {"kind": kind, "fault": False, "survived": False, "lost": 0,
                           "torn": 0, "extra": 0, "dupes": 0, "mid_claim": False,
                           "records": 0}
    procs: list[Any] = []

    def spawn(target: Any, *args: Any) -> Any:
        p = CTX.Process(target=target, args=args, daemon=True)
        p.start()
        procs.append(p)
        return p

    ring = Ring.create(name, CAP, lossless=True)
    try:
        if kind == "engine":
            Replica.create(rep_name, ring).close()
        cons = spawn(consumer_main, name, counters, 0)
        _wait(lambda: counters[READY], 10, "the consumer")
        other = None
        if kind == "engine":
            # before the producer: a producer reads the gate flags once, when it opens
            other = spawn(engine_main, name, rep_name)
            _wait(lambda: struct.unpack_from("<I", ring.segment.buf, 0x0C)[0] & 0x4, 30,
                  "the engine's gate")
        prod = spawn(producer_main, name, counters, limit,
                     0.5 if kind == "producer" else 0.1, rng.randrange(1 << 30))
        if kind == "engine":
            pass
        elif kind == "snapshot":
            other = spawn(snapshot_main, name, image)
        time.sleep(rng.uniform(0.01, 0.25))
        target = {"producer": prod, "consumer": cons, "engine": other,
                  "snapshot": other}[kind]
        if not target.is_alive():
            res["note"] = "target had already finished"
        else:
            if kind == "producer":
                os.kill(prod.pid, signal.SIGSTOP)  # freeze it to look at the claim state
                res["mid_claim"] = ring.tail_intent > ring.tail
            if kind == "consumer":
                # a supervisor that learns of the death at once (SIGCHLD, pidfd) pins the
                # dead slot before joining: the pin races the producer's reaping
                from pyshm.repair import pin_dead_slot
                from pyshm.ring import pid_alive

                os.kill(cons.pid, signal.SIGKILL)
                give_up = time.monotonic() + 10
                while pid_alive(cons.pid) and time.monotonic() < give_up:
                    pass  # no sleep: every microsecond here is a chance for a reap
                res["pinned"] = pin_dead_slot(ring, cons.pid)
            _kill(target)
            res["fault"] = True

        # ---- recovery
        if kind == "producer":
            repair(ring)
            prod = spawn(producer_main, name, counters, ring.next_sequence + 2000, 0.5,
                         rng.randrange(1 << 30))
        elif kind == "consumer":
            from pyshm.repair import unpin_slot

            pinned = res.pop("pinned", None)
            res["slot_pinned"] = pinned is not None
            counters[READY] = 0
            cons = spawn(consumer_main, name, counters, int(counters[NEXT]),
                         pinned[1] if pinned else -1)
            _wait(lambda: counters[READY] or not cons.is_alive(), 10, "the new consumer")
            if pinned:
                unpin_slot(ring, pinned[0])
        elif kind == "engine":
            other = spawn(engine_main, name, rep_name)
        elif kind == "snapshot":
            temps = glob.glob(os.path.join(workdir, f".{tag}.img.tmp-*"))
            res["temp_files_left"] = len(temps)
            for t in temps:
                os.unlink(t)
            if os.path.exists(image):
                with ImageReader(image) as r:
                    r.verify()  # the name only ever holds a complete image

        # ---- finish the run: the producer stops, the consumer drains
        time.sleep(rng.uniform(0.01, 0.1))
        counters[STOP] = 1
        prod.join(30)
        if prod.exitcode != 0:
            raise RuntimeError(f"producer exited with {prod.exitcode}")
        counters[STOP] = 2
        committed = ring.next_sequence
        cons.join(30)
        if cons.exitcode != 0:
            raise RuntimeError(f"consumer exited with {cons.exitcode}")
        res["committed"] = committed
        res["records"] = int(counters[VERIFIED])
        res["torn"] += int(counters[TORN])
        res["lost"] += int(counters[GAPS])
        res["dupes"] = int(counters[DUPES])
        if int(counters[NEXT]) != committed:
            res["lost"] += committed - int(counters[NEXT])

        if kind == "engine":
            from pyshm.engine import open_engine

            _kill(other)
            with Replica.open(rep_name) as rep, \
                    open_engine("cpu", ring, rep, gate=True) as eng:
                eng.start()
                eng.sync(timeout=10)
                eng.stop()
                rrecs = rep.records()
                got = check_records(rrecs, committed, "replica")
                res["replica_tail_ok"] = rep.tail == ring.tail
                # the replica must end where the ring ends and reach back as far
                ring_recs = list(ring.records())
                if not rrecs or rrecs[-1].sequence != ring_recs[-1].sequence:
                    res["lost"] += 1
                elif rrecs[0].sequence > ring_recs[0].sequence:
                    res["lost"] += rrecs[0].sequence - ring_recs[0].sequence
            res["lost"] += got["lost"]
            res["torn"] += got["torn"]
            res["extra"] += got["extra"]
        if kind == "snapshot":
            _kill(other)
            from pyshm.images import snapshot

            snapshot(ring, image, overwrite=True)
            target_name = name + "_restored"
            restore(image, target_name)
            try:
                with Ring.attach(target_name) as r2:
                    got = check_records(list(r2.records()), committed, "restored")
                    res["lost"] += got["lost"] + (committed - r2.next_sequence)
                    res["torn"] += got["torn"]
                    res["extra"] += got["extra"]
            finally:
                os.unlink(f"/dev/shm/{target_name}")
        res["survived"] = res["lost"] == 0 and res["torn"] == 0 and res["extra"] == 0
    finally:
        for p in procs:
            _kill(p)
        ring.close()
        for n in (name, rep_name):
            try:
                os.unlink(f"/dev/shm/{n}")
            except FileNotFoundError:
                pass
        for f in glob.glob(os.path.join(workdir, f"*{tag}*")):
            os.unlink(f)
    return res


def campaign(kinds: list[str], trials: int, seed: int = 1,
             seconds: float | None = None) -> dict[str, Any]:
    """``trials`` per kind (or as many as fit in ``seconds``), summed per kind."""
    rng = random.Random(seed)
    summary: dict[str, Any] = {}
    workdir = tempfile.mkdtemp(prefix="pyshm_faults_")
    deadline = None if seconds is None else time.monotonic() + seconds
    t0 = time.monotonic()
    i = 0
    try:
        while True:
            kind = kinds[i % len(kinds)]
            s = summary.setdefault(kind, {"trials": 0, "faults": 0, "survived": 0,
                                          "mid_claim": 0, "lost": 0, "torn": 0, "extra": 0,
                                          "dupes": 0, "records": 0, "temp_files_left": 0,
                                          "failures": []})
            if deadline is None and s["trials"] >= trials:
                if all(summary.get(k, {}).get("trials", 0) >= trials for k in kinds):
                    break
                i += 1
                continue
            if deadline is not None and time.monotonic() > deadline:
                break
            r = trial(kind, rng, workdir)
            s["trials"] += 1
            s["faults"] += int(r["fault"])
            s["survived"] += int(r["survived"])
            s["mid_claim"] += int(r["mid_claim"])
            for k in ("lost", "torn", "extra", "dupes", "records"):
                s[k] += r[k]
            s["temp_files_left"] += r.get("temp_files_left", 0)
            if not r["survived"]:
                s["failures"].append(r)
            i += 1
    finally:
        os.rmdir(workdir) if not os.listdir(workdir) else None
    return {"seconds": round(time.monotonic() - t0, 1), "seed": seed, "capacity": CAP,
            "kinds": summary, "load": os.getloadavg()[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--trials", type=int, default=50, help="per kind")
    ap.add_argument("--seconds", type=float, default=None,
                    help="run for this long instead of a trial count")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", default=os.path.join(RESULTS, "faults.json"))
    args = ap.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    bad = set(kinds) - set(KINDS)
    if bad:
        ap.error(f"unknown kinds {sorted(bad)}: use {', '.join(KINDS)}")
    out = campaign(kinds, args.trials, args.seed, args.seconds)
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(out, f, indent=2)
    print(json.dumps(out, indent=2))
    return 0 if all(k["survived"] == k["trials"] for k in out["kinds"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
