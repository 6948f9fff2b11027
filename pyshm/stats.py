"""Read-only observation of rings, engines and snapshots: ``pyshm stats`` and metrics.

Everything here reads, never writes: a ring header is mapped read-only and parsed with
:mod:`pyshm.layout`, so watching a ring cannot disturb its producer, and a corrupt or
foreign segment gives a :class:`CorruptSegmentError` for that ring only. Engine and
snapshot figures come from the status files a ``pyshm run`` supervisor keeps in its state
directory (``STATE_DIR/RUN.status.json``).

The Prometheus names are listed in :data:`METRICS` (and in docs/operations.md); the
collector reads the shared memory at scrape time, so a scrape is always current.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import time
from collections.abc import Iterable, Iterator
from typing import Any

from . import layout
from .errors import CorruptSegmentError, PyshmError, RingNotFoundError
from .ring import pid_alive
from .segment import SHM_DIR, Segment

_U64 = struct.Struct("<Q")
_SLOT = struct.Struct("<QQQQ")
HEARTBEAT_STALE_S = 5.0

# name -> (type, help). Counters are exposed with the ``_total`` suffix.
METRICS: dict[str, tuple[str, str]] = {
    "pyshm_ring_info": ("gauge", "Static ring parameters as labels (value 1)"),
    "pyshm_ring_capacity_bytes": ("gauge", "Data capacity of the ring"),
    "pyshm_ring_published_bytes": ("counter", "Ring tail: bytes committed since creation"),
    "pyshm_ring_published_records": ("counter", "Next sequence number: records published"),
    "pyshm_ring_mirrored_bytes": ("counter", "Position up to which the replica is complete"),
    "pyshm_ring_mirror_lag_bytes": ("gauge", "tail - mirrored (0 when nothing mirrors)"),
    "pyshm_ring_producer_alive": ("gauge", "1 when the recorded producer process exists"),
    "pyshm_ring_consumers": ("gauge", "Registered consumer slots in use"),
    "pyshm_consumer_lag_bytes": ("gauge", "tail - consumer position"),
    "pyshm_consumer_alive": ("gauge", "1 when the consumer's process exists"),
    "pyshm_consumer_heartbeat_age_seconds": ("gauge", "Time since the consumer's heartbeat"),
    "pyshm_ring_replication_lag_seconds": ("gauge", "End-to-end replication lag, producer "
                                           "commit to readable in the replica (label "
                                           "quantile; the engine's figures in the ring)"),
    "pyshm_engine_up": ("gauge", "1 when the ring's engine process is running"),
    "pyshm_engine_restarts": ("counter", "Engine restarts by the supervisor"),
    "pyshm_engine_lag_bytes": ("gauge", "Replication lag in bytes (engine's last report)"),
    "pyshm_engine_lag_seconds": ("gauge", "Replication lag percentiles (label quantile)"),
    "pyshm_engine_overruns": ("counter", "Times the mirror was lapped by the producer"),
    "pyshm_engine_errors": ("counter", "Engine errors"),
    "pyshm_snapshots": ("counter", "Snapshots taken by the supervisor"),
    "pyshm_snapshot_failures": ("counter", "Snapshots that failed"),
    "pyshm_snapshot_last_timestamp_seconds": ("gauge", "Unix time of the last snapshot"),
    "pyshm_snapshot_last_duration_seconds": ("gauge", "Duration of the last snapshot"),
    "pyshm_bridge_up": ("gauge", "1 when the NATS bridge process runs"),
    "pyshm_bridge_lag_records": ("gauge", "Records the bridge is behind (out: ring "
                                          "records not yet acknowledged by JetStream; in: "
                                          "stream messages not yet in the far ring)"),
    "pyshm_bridge_lag_seconds": ("gauge", "Age of the oldest unacknowledged record (out) "
                                          "or of the last committed one (in)"),
    "pyshm_bridge_in_flight": ("gauge", "Records published and not yet acknowledged (out), "
                                        "or held back for order (in)"),
    "pyshm_bridge_records": ("counter", "Records acknowledged by JetStream (out) or "
                                        "committed to the far ring (in)"),
    "pyshm_bridge_redeliveries": ("counter", "Records sent again (out) or delivered again "
                                             "by JetStream (in)"),
    "pyshm_bridge_reconnects": ("counter", "Reconnections to NATS"),
    "pyshm_bridge_lost": ("counter", "Records the source lost before the bridge read them"),
}



def read_ring(name: str) -> dict[str, Any]:
    """One consistent-enough sample of a ring's header, validated, as plain data.

    The counters are read without locks: each is an aligned 8-byte word, so a read is
    never torn; the sample may mix instants a few nanoseconds apart, which is why a
    position beyond tail is clamped and reported rather than trusted.
    """
    with Segment(name, readonly=True) as seg:
        buf = seg.buf
        try:
            params = layout.unpack_static_header(buf, where=seg.name, size=seg.size)
            u64 = lambda off: _U64.unpack_from(buf, off)[0]  # noqa: E731
            # mirrored before tail: each only grows, so the sample never shows a replica
            # ahead of its ring
            mirrored = u64(layout.OFF_MIRRORED)
            tail = u64(layout.OFF_TAIL)
            intent = u64(layout.OFF_TAIL_INTENT)
            next_seq = u64(layout.OFF_NEXT_SEQUENCE)
            # the engine's end-to-end lag summary (docs/design.md, "End-to-end lag")
            e2e = {key: u64(off) for key, off in (
                ("samples", layout.OFF_LAG_SAMPLES), ("last_ns", layout.OFF_LAG_LAST_NS),
                ("p50_ns", layout.OFF_LAG_P50_NS), ("p99_ns", layout.OFF_LAG_P99_NS),
                ("p999_ns", layout.OFF_LAG_P999_NS), ("max_ns", layout.OFF_LAG_MAX_NS),
                ("updated_ns", layout.OFF_LAG_UPDATED_NS))}
            slots = [_SLOT.unpack_from(buf, layout.slot_offset(i))
                     for i in range(layout.MAX_CONSUMERS)]
        finally:
            buf.release()
        path = seg.path
    problem = layout.counter_problem(tail, intent)
    if problem:
        raise CorruptSegmentError(f"{name}: corrupt segment: {problem}")
    if not params.is_replica:
        # a replica's intent may run ahead after an overrun; a producer's never does
        if intent > tail + params.capacity:
            raise CorruptSegmentError(
                f"{name}: corrupt segment: header fields tail = {tail} and tail_intent = "
                f"{intent} disagree (a producer never claims more than the capacity, "
                f"{params.capacity}, beyond its tail)")
        if mirrored > tail:
            raise CorruptSegmentError(f"{name}: corrupt segment: header field mirrored = "
                                      f"{mirrored} is beyond tail = {tail}")
    now_ns = time.time_ns()
    consumers = []
    for i, (pos, pid, hb, flags) in enumerate(slots):
        if not flags & layout.SLOT_ACTIVE:
            continue
        consumers.append({
            "slot": i, "pid": pid, "position": pos,
            "lag_bytes": max(0, tail - pos),
            "ahead_of_tail": pos > tail,
            "gating": bool(flags & layout.SLOT_GATING),
            "alive": pid_alive(pid),
            "heartbeat_age_s": max(0.0, (now_ns - hb) / 1e9) if hb else None,
        })
    return {
        "name": name, "path": path, "time": now_ns / 1e9,
        "capacity": params.capacity, "max_record": params.max_record,
        "partitions": params.partition_count, "lossless": params.lossless,
        "replica": params.is_replica,
        "created": params.created_ns / 1e9, "creator_pid": params.creator_pid,
        "producer_pid": params.producer_pid,
        "producer_alive": pid_alive(params.producer_pid) if params.producer_pid else None,
        "tail": tail, "tail_intent": intent, "mirrored": mirrored,
        "mirror_lag_bytes": max(0, tail - mirrored) if mirrored else 0,
        "next_sequence": next_seq, "consumers": consumers,
        "replication_lag": e2e if e2e["samples"] and e2e["updated_ns"] else None,
    }


def _device_link(path: str) -> bool:
    """A name linking to a u-dma-buf buffer: a ring made with --udmabuf."""
    from .udmabuf import sysfs_entry
    return os.path.islink(path) and sysfs_entry(path) is not None


def list_rings(directory: str = SHM_DIR) -> list[str]:
    """Names of the pyshm segments in ``directory`` (files that start with the magic)."""
    out = []
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError:
        return []
    for e in entries:
        try:
            if not e.is_file(follow_symlinks=False) and not _device_link(e.path):
                continue
            with open(e.path, "rb") as f:
                if f.read(len(layout.MAGIC)) == layout.MAGIC:
                    out.append(e.name if directory == SHM_DIR else e.path)
        except OSError:
            continue
    return out


def read_status_files(state_dir: str) -> list[dict[str, Any]]:
    """The supervisors' status files; a stale one (its supervisor is gone) is marked."""
    out = []
    try:
        names = sorted(n for n in os.listdir(state_dir) if n.endswith(".status.json"))
    except OSError:
        return []
    for n in names:
        try:
            fd = os.open(os.path.join(state_dir, n), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO must not hang `stats`
                os.close(fd)
                continue
            with open(fd, encoding="utf-8") as f:
                st = json.load(f)
        except (OSError, ValueError):
            continue
        if not isinstance(st, dict):
            continue
        pid = st.get("pid")
        st["supervisor_alive"] = isinstance(pid, int) and pid_alive(pid)
        out.append(st)
    return out


def collect(names: Iterable[str] | None = None, state_dir: str | None = None,
            previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """A full sample: every ring (or ``names``), engines and snapshots from status files.

    With ``previous`` (an earlier sample) the rates between the two samples are added.
    """
    from .config import default_state_dir

    state_dir = state_dir or default_state_dir()
    ring_names = list(names) if names else list_rings()
    rings: dict[str, Any] = {}
    for n in ring_names:
        try:
            rings[n] = read_ring(n)
        except RingNotFoundError as exc:
            rings[n] = {"name": n, "error": str(exc)}
        except PyshmError as exc:
            rings[n] = {"name": n, "error": str(exc)}
    runs = read_status_files(state_dir)
    states: dict[str, Any] = {}
    for run in runs:
        if not run.get("supervisor_alive"):
            continue
        for sname, sst in (run.get("states") or {}).items():  # pyshm run's state regions
            if isinstance(sst, dict):
                states[sname] = {**sst, "run": run.get("run")}
        for rname, rst in (run.get("rings") or {}).items():
            if rname in rings and isinstance(rst, dict):
                if not str(run.get("run", "")).startswith("bridge-"):
                    rings[rname]["engine"] = rst.get("engine")
                    rings[rname]["snapshots"] = rst.get("snapshots")
                    rings[rname]["run"] = run.get("run")
                # NATS bridges: from pyshm run, or a standalone `pyshm bridge` process
                bridges = [b for b in rst.get("bridges") or [] if isinstance(b, dict)]
                if bridges:
                    rings[rname].setdefault("bridges", []).extend(bridges)
    if previous:
        for n, r in rings.items():
            p = (previous.get("rings") or {}).get(n)
            if not p or "error" in r or "error" in p:
                continue
            dt = r["time"] - p["time"]
            if dt > 0:
                r["rate_bytes_s"] = (r["tail"] - p["tail"]) / dt
                r["rate_records_s"] = (r["next_sequence"] - p["next_sequence"]) / dt
    return {"time": time.time(), "state_dir": state_dir, "rings": rings, "states": states,
            "runs": [{k: run.get(k) for k in ("run", "pid", "config", "started", "updated",
                                              "supervisor_alive")} for run in runs]}


# ----------------------------------------------------------------------------------
# Human view


def _fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, mult in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if abs(n) >= mult:
            return f"{n / mult:.1f}{unit}"
    return f"{n:.0f}"


def _fmt_rate(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, mult in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= mult:
            return f"{n / mult:.2f}{unit}"
    return f"{n:.0f}"


def _fmt_ns(ns: int) -> str:
    if ns < 1000:
        return f"{ns} ns"
    if ns < 1_000_000:
        return f"{ns / 1e3:.1f} us"
    return f"{ns / 1e6:.2f} ms"


def _fmt_us(us: Any) -> str:
    if not isinstance(us, (int, float)):
        return "-"
    if us >= 1e6:
        return f"{us / 1e6:.1f} s"
    if us >= 1e3:
        return f"{us / 1e3:.1f} ms"
    return f"{us:.0f} us"


def render(sample: dict[str, Any]) -> str:
    """The text table ``pyshm stats`` prints (one block per ring)."""
    lines = []
    if not sample["rings"]:
        lines.append(f"no pyshm rings in {SHM_DIR}")
    for name, r in sample["rings"].items():
        if "error" in r:
            lines.append(f"{name}: ERROR {r['error']}")
            continue
        kind = "replica" if r["replica"] else ("lossless" if r["lossless"] else "overwrite")
        prod = r["producer_pid"] or "-"
        if r["producer_pid"]:
            prod = f"{prod}{'' if r['producer_alive'] else ' (dead)'}"
        lines.append(f"{name}  [{kind}, {_fmt_bytes(r['capacity'])}]  producer {prod}")
        e2e = r.get("replication_lag")
        if e2e:
            age = max(0.0, time.time() - e2e["updated_ns"] / 1e9)
            lines.append(f"  replication lag, commit -> readable in the replica: p50 "
                         f"{_fmt_ns(e2e['p50_ns'])}  p99 {_fmt_ns(e2e['p99_ns'])}  p99.9 "
                         f"{_fmt_ns(e2e['p999_ns'])}  max {_fmt_ns(e2e['max_ns'])}  "
                         f"({e2e['samples']:,} samples, {age:.0f}s ago)")
        lines.append(f"  tail {r['tail']}  seq {r['next_sequence']}  "
                     f"rate {_fmt_rate(r.get('rate_records_s'))} rec/s "
                     f"{_fmt_bytes(r.get('rate_bytes_s'))}B/s  "
                     f"mirrored {r['mirrored']} (lag {_fmt_bytes(r['mirror_lag_bytes'])}B)")
        for c in r["consumers"]:
            hb = c["heartbeat_age_s"]
            lines.append(f"  consumer slot {c['slot']:2d} pid {c['pid']}"
                         f"{'' if c['alive'] else ' (dead)'}"
                         f"{' gating' if c['gating'] else ''}  position {c['position']}  "
                         f"lag {_fmt_bytes(c['lag_bytes'])}B  heartbeat "
                         f"{'-' if hb is None else f'{hb:.1f}s ago'}")
        eng = r.get("engine")
        if eng:
            est = eng.get("stats") or {}
            lines.append(f"  engine {eng.get('name')} pid {eng.get('pid')} {eng.get('state')}"
                         f"  restarts {eng.get('restarts', 0)}  lag "
                         f"{_fmt_bytes(est.get('lag_bytes'))}B  overruns "
                         f"{est.get('overruns', '-')}")
        for b in r.get("bridges") or []:
            arrow = f"-> stream {b.get('stream')}" if b.get("kind") == "out" else \
                f"<- stream {b.get('stream')}"
            lines.append(f"  bridge {b.get('kind')} {arrow} pid {b.get('pid', '-')} "
                         f"{b.get('state', '?')}  lag {b.get('lag_records', '-')} records / "
                         f"{_fmt_us(b.get('lag_us'))}  in flight {b.get('in_flight', '-')}  "
                         f"redeliveries {b.get('redeliveries', 0)}  reconnects "
                         f"{b.get('reconnects', 0)}"
                         + (f"  lost {b['lost']}" if b.get("lost") else ""))
        snaps = r.get("snapshots")
        if snaps and snaps.get("count"):
            age = time.time() - snaps["last_time"]
            lines.append(f"  last snapshot {age:.0f}s ago ({snaps.get('last_duration_s', 0):.3f}"
                         f" s) {snaps.get('last_path')}  count {snaps['count']}  failures "
                         f"{snaps.get('failures', 0)}")
    for name, st in (sample.get("states") or {}).items():
        seq = st.get("applied_seq")
        lines.append(f"state {name}  [folds {st.get('ring')}]  writer pid {st.get('pid')} "
                     f"{st.get('state')}  applied_seq {'-' if seq is None else seq}  "
                     f"restarts {st.get('restarts', 0)}")
        sn = st.get("snapshots") or {}
        if sn.get("count"):
            lines.append(f"  last state image at sequence {sn.get('last_seq')}  count "
                         f"{sn['count']}  failures {sn.get('failures', 0)}")
        rep = st.get("replica") or {}
        if rep:
            lines.append(f"  replica {rep.get('name')} consistent at sequence "
                         f"{rep.get('consistent_seq')}")
        done = [h for h in st.get("handovers") or [] if h.get("gap_ns") is not None]
        if done:
            h = done[-1]
            lines.append(f"  last handover at sequence {h.get('final_seq')}: gap "
                         f"{_fmt_ns(int(h['gap_ns']))} with no process applying")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------
# Prometheus


class PyshmCollector:
    """A prometheus_client collector that samples the rings at every scrape."""

    def __init__(self, names: list[str] | None = None, state_dir: str | None = None):
        self.names = names
        self.state_dir = state_dir

    def describe(self) -> list[Any]:
        """Nothing at registration: the label sets are only known at scrape time."""
        return []  # unknown label sets until the first scrape; skip registration-time collect

    def collect(self) -> Iterator[Any]:
        """One sample of every ring, engine and snapshot schedule, as metric families."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        sample = collect(self.names, self.state_dir)
        fams: dict[str, Any] = {}

        def fam(name: str, labels: list[str]) -> Any:
            if name not in fams:
                kind, doc = METRICS[name]
                cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                fams[name] = cls(name, doc, labels=labels)
            return fams[name]

        for name, r in sample["rings"].items():
            if "error" in r:
                continue
            lbl = [name]
            fam("pyshm_ring_info", ["ring", "lossless", "replica", "partitions"]).add_metric(
                [name, str(r["lossless"]).lower(), str(r["replica"]).lower(),
                 str(r["partitions"])], 1)
            fam("pyshm_ring_capacity_bytes", ["ring"]).add_metric(lbl, r["capacity"])
            fam("pyshm_ring_published_bytes", ["ring"]).add_metric(lbl, r["tail"])
            fam("pyshm_ring_published_records", ["ring"]).add_metric(lbl, r["next_sequence"])
            fam("pyshm_ring_mirrored_bytes", ["ring"]).add_metric(lbl, r["mirrored"])
            fam("pyshm_ring_mirror_lag_bytes", ["ring"]).add_metric(lbl, r["mirror_lag_bytes"])
            e2e = r.get("replication_lag")
            if e2e:
                for q, key in (("0.5", "p50_ns"), ("0.99", "p99_ns"), ("0.999", "p999_ns"),
                               ("1", "max_ns")):
                    fam("pyshm_ring_replication_lag_seconds", ["ring", "quantile"]).add_metric(
                        [name, q], e2e[key] / 1e9)
            fam("pyshm_ring_producer_alive", ["ring"]).add_metric(
                lbl, 1 if r["producer_alive"] else 0)
            fam("pyshm_ring_consumers", ["ring"]).add_metric(lbl, len(r["consumers"]))
            for c in r["consumers"]:
                cl = [name, str(c["slot"]), str(c["pid"])]
                fam("pyshm_consumer_lag_bytes", ["ring", "slot", "pid"]).add_metric(
                    cl, c["lag_bytes"])
                fam("pyshm_consumer_alive", ["ring", "slot", "pid"]).add_metric(
                    cl, 1 if c["alive"] else 0)
                if c["heartbeat_age_s"] is not None:
                    fam("pyshm_consumer_heartbeat_age_seconds", ["ring", "slot", "pid"]
                        ).add_metric(cl, c["heartbeat_age_s"])
            eng = r.get("engine")
            if isinstance(eng, dict):
                el = [name, str(eng.get("name"))]
                est = eng.get("stats") or {}
                fam("pyshm_engine_up", ["ring", "engine"]).add_metric(
                    el, 1 if eng.get("state") == "running" else 0)
                fam("pyshm_engine_restarts", ["ring", "engine"]).add_metric(
                    el, eng.get("restarts", 0))
                for key, metric in (("lag_bytes", "pyshm_engine_lag_bytes"),
                                    ("overruns", "pyshm_engine_overruns"),
                                    ("errors", "pyshm_engine_errors")):
                    if isinstance(est.get(key), (int, float)):
                        fam(metric, ["ring", "engine"]).add_metric(el, est[key])
                for q, v in (est.get("lag_percentiles_ns") or {}).items():
                    if isinstance(v, (int, float)):
                        fam("pyshm_engine_lag_seconds", ["ring", "engine", "quantile"]
                            ).add_metric(el + [str(q)], v / 1e9)
            for b in r.get("bridges") or []:
                bl = [name, str(b.get("kind")), str(b.get("stream"))]
                labels = ["ring", "kind", "stream"]
                fam("pyshm_bridge_up", labels).add_metric(
                    bl, 1 if b.get("state") == "running" else 0)
                done = b.get("acked") if b.get("kind") == "out" else b.get("committed")
                for key, metric, scale in (
                        ("lag_records", "pyshm_bridge_lag_records", 1.0),
                        ("lag_us", "pyshm_bridge_lag_seconds", 1e-6),
                        ("in_flight", "pyshm_bridge_in_flight", 1.0),
                        ("redeliveries", "pyshm_bridge_redeliveries", 1.0),
                        ("reconnects", "pyshm_bridge_reconnects", 1.0),
                        ("lost", "pyshm_bridge_lost", 1.0)):
                    if isinstance(b.get(key), (int, float)):
                        fam(metric, labels).add_metric(bl, b[key] * scale)
                if isinstance(done, (int, float)):
                    fam("pyshm_bridge_records", labels).add_metric(bl, done)
            snaps = r.get("snapshots")
            if isinstance(snaps, dict):
                fam("pyshm_snapshots", ["ring"]).add_metric(lbl, snaps.get("count", 0))
                fam("pyshm_snapshot_failures", ["ring"]).add_metric(lbl, snaps.get("failures", 0))
                if snaps.get("last_time"):
                    fam("pyshm_snapshot_last_timestamp_seconds", ["ring"]).add_metric(
                        lbl, snaps["last_time"])
                    fam("pyshm_snapshot_last_duration_seconds", ["ring"]).add_metric(
                        lbl, snaps.get("last_duration_s", 0.0))
        yield from fams.values()


def serve_metrics(listen: str, names: list[str] | None = None,
                  state_dir: str | None = None) -> Any:
    """Start the /metrics endpoint in a daemon thread; returns the HTTP server.

    Only pyshm's own metrics are exported (a private registry), so two supervisors on
    one host never mix their process metrics.
    """
    try:
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError:  # pragma: no cover - a dependency, but say what to do
        raise PyshmError("the metrics endpoint needs prometheus-client: "
                         "pip install prometheus-client") from None
    from .config import split_listen

    host, port = split_listen(listen)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PyshmCollector(names, state_dir))
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise PyshmError(f"cannot serve metrics on {listen}: {exc}") from None
    return server
