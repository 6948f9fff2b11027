"""The YAML configuration of ``pyshm run``: schema, parsing and validation.

A configuration declares rings (with their parameters), at most one replica per ring
with the engine that keeps it, snapshot schedules with retention, and the supervisor and
metrics settings. ``load_config`` returns frozen dataclasses or raises
:class:`ConfigError`, which lists *every* problem found, each naming the file, line and
key path (``rings[1].capacity``) and what is wrong with it, so that an operator fixes a
file in one round instead of one error per run.

Sizes accept an integer or a string with a binary suffix (``4K``, ``16M``, ``1G``,
``64KiB``); durations accept seconds or a string with a unit (``250ms``, ``10s``,
``5m``, ``1h``). Relative paths are taken relative to the configuration file.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from . import layout, segment
from .errors import ConfigError, InvalidNameError, InvalidParameterError

ENGINES = ("auto", "cpu", "pynq", "sim")
COMPRESSIONS = ("none", "zstd")
SNAPSHOT_SOURCES = ("replica", "ring")
EXISTING = ("attach", "recreate", "fail")
LOG_LEVELS = ("debug", "info", "warning", "error")

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|us|s|m|h)?\s*$")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_DURATION_UNITS = {None: 1.0, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_size(value: Any) -> int:
    """``4096``, ``"4K"``, ``"16 MiB"`` -> bytes; ValueError with the reason otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size, got the boolean {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size {value} is negative")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            return int(m.group(1)) * _UNITS[m.group(2).upper()]
        raise ValueError(f"{value!r} is not a size (use bytes or a number with K, M, G or "
                         f"T, e.g. 16M)")
    raise ValueError(f"expected a size, got {_kind(value)}")


def parse_duration(value: Any) -> float:
    """``2``, ``0.5``, ``"250ms"``, ``"5m"`` -> seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got the boolean {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"duration {value} is negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        raise ValueError(f"{value!r} is not a duration (use seconds or a number with ms, s, "
                         f"m or h, e.g. 10s)")
    raise ValueError(f"expected a duration, got {_kind(value)}")


def format_size(n: int) -> str:
    """Bytes as the configuration writes them: ``16M`` when exact, else the number."""
    for unit in ("T", "G", "M", "K"):
        mult = _UNITS[unit]
        if n >= mult and n % mult == 0:
            return f"{n // mult}{unit}"
    return str(n)


# ----------------------------------------------------------------------------------
# The result


@dataclass(frozen=True)
class ReplicaConfig:
    name: str
    engine: str = "auto"
    threads: int = 0
    gate: bool = False
    sync_timeout: float = 5.0
    wait: str = "sleep"
    poll_priority: int = 0


@dataclass(frozen=True)
class SnapshotConfig:
    directory: str
    interval: float
    keep: int = 5
    source: str = "replica"
    compress: str = "none"
    on_shutdown: bool = True
    remote: str | None = None
    remote_keep: int | None = None


@dataclass(frozen=True)
class RingConfig:
    name: str
    capacity: int
    max_record: int
    partitions: int = layout.DEFAULT_PARTITIONS
    lossless: bool = False
    existing: str = "attach"
    unlink_on_exit: bool = False
    replica: ReplicaConfig | None = None
    snapshots: SnapshotConfig | None = None

    @property
    def path(self) -> str:
        """The file that holds the ring."""
        return segment.resolve_path(self.name)


@dataclass(frozen=True)
class SupervisorConfig:
    restart_delay: float = 0.5
    max_restarts: int = 10
    restart_window: float = 60.0
    check_interval: float = 0.2
    shutdown_timeout: float = 10.0


@dataclass(frozen=True)
class MetricsConfig:
    listen: str | None = None
    status_interval: float = 1.0

    @property
    def address(self) -> tuple[str, int] | None:
        """``(host, port)`` of ``listen``, or None."""
        return None if self.listen is None else split_listen(self.listen)


@dataclass(frozen=True)
class BridgeConfig:
    """One NATS JetStream bridge run by the supervisor (``pyshm bridge out`` / ``in``).

    ``options`` are the bridge's own settings (window, grace, durable...); ``nats`` the
    connection (servers, credentials, TLS). Secrets in ``nats`` reach the bridge process
    on its standard input, never its command line, a log line or a status file."""

    kind: str                       # "out" or "in"
    ring: str                       # out: the ring published; in: the follower ring built
    stream: str
    nats: dict[str, Any] = field(default_factory=dict, repr=False)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``out:RING->STREAM`` or ``in:STREAM->RING``."""
        return (f"out:{self.ring}->{self.stream}" if self.kind == "out"
                else f"in:{self.stream}->{self.ring}")


@dataclass(frozen=True)
class Config:
    name: str
    state_dir: str
    log_level: str = "info"
    rings: tuple[RingConfig, ...] = ()
    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    source: str = "<string>"
    bridges: tuple[BridgeConfig, ...] = ()
    nats: dict[str, Any] = field(default_factory=dict, repr=False)
    states: tuple[Any, ...] = ()  # pyshm.state.config.StateConfig

    def ring(self, name: str) -> RingConfig:
        """The ring configured as ``name`` (KeyError if none)."""
        for r in self.rings:
            if r.name == name:
                return r
        raise KeyError(name)

    @property
    def status_path(self) -> str:
        """The status file ``pyshm stats`` reads: ``STATE_DIR/NAME.status.json``."""
        return os.path.join(self.state_dir, f"{self.name}.status.json")


def default_state_dir() -> str:
    """``$PYSHM_STATE_DIR``, else ``/tmp/pyshm-UID``."""
    return os.environ.get("PYSHM_STATE_DIR") or f"/tmp/pyshm-{os.getuid()}"


def split_listen(text: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"`` or ``":9464"`` or ``"9464"`` -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT with a port in 0..65535")
    return host, int(port)


# ----------------------------------------------------------------------------------
# Validation machinery: a path-aware checker that collects problems.

Path = tuple[Any, ...]


def format_path(path: Path) -> str:
    """A key path as messages show it: ``rings[1].replica.engine``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


class _Checker:
    def __init__(self, source: str, lines: dict[Path, int]):
        self.source = source
        self.lines = lines
        self.problems: list[str] = []

    def error(self, path: Path, message: str) -> None:
        line = None
        for n in range(len(path), -1, -1):  # nearest enclosing node that has a line
            line = self.lines.get(path[:n])
            if line is not None:
                break
        where = f"{self.source}:{line}" if line is not None else self.source
        self.problems.append(f"{where}: {format_path(path)}: {message}")

    def mapping(self, value: Any, path: Path, allowed: dict[str, str]) -> dict[str, Any]:
        """Check that ``value`` is a mapping with only ``allowed`` keys (key -> help)."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(path, f"expected a mapping, got {_kind(value)}")
            return {}
        out: dict[str, Any] = {}
        for key, v in value.items():
            if not isinstance(key, str):
                self.error(path, f"key {key!r} is not a string")
                continue
            if key not in allowed:
                hint = _close_match(key, allowed)
                self.error(path + (key,), "unknown key" + (f" (did you mean {hint!r}?)"
                                                           if hint else "")
                           + f"; allowed here: {', '.join(sorted(allowed))}")
                continue
            out[key] = v
        return out

    def get(self, m: dict[str, Any], key: str, path: Path, conv: Callable[[Any], Any],
            default: Any = None, required: bool = False) -> Any:
        if key not in m or m[key] is None:
            if required:
                self.error(path + (key,), "required key is missing")
            return default
        try:
            return conv(m[key])
        except (ValueError, TypeError) as exc:
            self.error(path + (key,), str(exc))
            return default


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    shown = repr(value)
    if len(shown) > 60:  # a whole wrong file read as one string: say what it starts with
        shown = shown[:50] + "..." + shown[-1]
    return {dict: "a mapping", list: "a list", str: f"the string {shown}",
            bool: f"the boolean {shown}"}.get(type(value), f"{type(value).__name__} {shown}")


def _close_match(key: str, allowed: dict[str, str]) -> str | None:
    import difflib

    hits = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    return hits[0] if hits else None


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {_kind(v)}")
    return v


def _int(lo: int, hi: int | None = None) -> Callable[[Any], int]:
    def conv(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"expected an integer, got {_kind(v)}")
        if v < lo or (hi is not None and v > hi):
            raise ValueError(f"{v} is out of range: must be " + (f"{lo}..{hi}" if hi is not None
                                                                   else f">= {lo}"))
        return v
    return conv


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError(f"expected a non-empty string, got {_kind(v)}")
    return v


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def conv(v: Any) -> str:
        if v not in options:
            raise ValueError(f"{_kind(v)} is not one of: {', '.join(options)}")
        return str(v)
    return conv


def _engine_wait(v: Any) -> str:
    from .engine import WAIT_STRATEGIES, wait_strategy
    from .errors import InvalidParameterError

    try:
        return wait_strategy(v)
    except InvalidParameterError:
        raise ValueError(f"{_kind(v)} is not one of: {', '.join(WAIT_STRATEGIES)}") from None


def _positive_duration(v: Any) -> float:
    d = parse_duration(v)
    if d <= 0:
        raise ValueError(f"duration {v!r} must be greater than zero")
    return d


def _ring_name(v: Any) -> str:
    name = _str(v)
    try:
        segment.resolve_path(name)
    except InvalidNameError as exc:
        raise ValueError(str(exc)) from None
    return name


def _listen(v: Any) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    text = _str(v)
    split_listen(text)
    return text


# ----------------------------------------------------------------------------------
# The schema. Each allowed-keys table doubles as the reference printed by `config check
# --schema` and documented in docs/operations.md.

TOP_KEYS = {
    "name": "run name: names the status file and log lines (default: file name stem)",
    "state_dir": "where status files live (default $PYSHM_STATE_DIR or /tmp/pyshm-UID)",
    "log_level": "debug, info, warning or error (default info)",
    "rings": "list of rings to create or attach",
    "supervisor": "restart and shutdown policy",
    "metrics": "status refresh and the Prometheus endpoint",
    "bridges": "NATS JetStream bridges: {out: RING, stream: S} publishes a ring, "
               "{in: RING, stream: S} builds a follower ring from a stream",
    "nats": "default NATS connection of bridges and remote snapshots",
    "states": "state regions: process state folded from a ring by a writer this run keeps "
              "(see pyshm/state/config.py)",
}
NATS_KEYS = {
    "servers": "server URL(s): a list, or one string with commas (required)",
    "creds": "user credentials file (JWT + nkey seed)",
    "nkey": "nkey seed file",
    "user": "user name",
    "password": "password (never logged; prefer a credentials file)",
    "token": "authentication token (never logged)",
    "tls_ca": "CA certificate file: connect with TLS",
    "tls_cert": "client certificate file (mutual TLS)",
    "tls_key": "client key file (mutual TLS)",
    "connect_timeout": "seconds per connection attempt (default 5s)",
}
BRIDGE_KEYS = {
    "out": "ring to publish (one of out / in is required)",
    "in": "follower ring to create or continue from the stream",
    "stream": "JetStream stream name (required)",
    "subject": "subject (default pyshm.<ring>; in: needed when a stream carries several)",
    "nats": "connection of this bridge (default: the top-level nats section)",
    "replicas": "out: replicas of a stream it creates (default 1); an existing stream "
                "with another count is refused",
    "window": "out: records in flight (default 4096)",
    "grace": "out: how long its slot keeps gating after it died (default 30s)",
    "ack_timeout": "out: resend what stays unacknowledged this long (default 5s)",
    "start": "out: oldest (default) or latest, for a ring new to the stream",
    "durable": "in: durable consumer name (default pyshm-in-<ring>)",
    "capacity": "in: far ring capacity (default: the source's)",
    "max_record": "in: far ring max record (default: the source's)",
    "lossless": "in: far ring mode (default: the source's)",
    "allow_gaps": "in: record sequences missing from the stream as gap records "
                  "(default false: stop)",
}
RING_KEYS = {
    "name": "ring name in /dev/shm, or a path containing '/' (required)",
    "capacity": "data bytes, a power of two >= 4K (required)",
    "max_record": "largest record, header included (default partition size / 4)",
    "partitions": "partition count, a power of two (default 8)",
    "lossless": "producer waits for gating consumers instead of overwriting (default false)",
    "existing": "if the ring already exists: attach (default), recreate or fail",
    "unlink_on_exit": "remove the ring when the supervisor stops (default false)",
    "replica": "continuous replication of this ring",
    "snapshots": "scheduled snapshots of this ring or its replica",
}
REPLICA_KEYS = {
    "name": "replica segment name (default RING.replica)",
    "engine": "auto, cpu, pynq or sim (default auto)",
    "threads": "cpu engine: extra copy threads that split large backlogs; 0 = the poll "
               "thread copies alone (default 0)",
    "gate": "lossless ring: the producer also waits for the mirror (default false)",
    "sync_timeout": "how long the final sync may take on shutdown (default 5s)",
    "wait": "cpu engine: what the poll thread does while the ring is idle: spin (lowest "
            "lag, a core busy), yield, sleep (default) or block",
    "poll_priority": "cpu engine: run the poll thread SCHED_FIFO at this priority 1-99 "
                     "(needs CAP_SYS_NICE; default 0, ordinary scheduling)",
}
SNAPSHOT_KEYS = {
    "directory": "where image files go (required)",
    "interval": "time between snapshots (required)",
    "keep": "how many recent images to keep (default 5)",
    "source": "replica (default when there is one) or ring",
    "compress": "none (default) or zstd",
    "on_shutdown": "take a final snapshot on a clean stop (default true)",
    "remote": "nats://HOST:PORT/BUCKET[/PREFIX]: upload every image to this object store "
              "bucket too (connection settings from the top-level nats section)",
    "remote_keep": "how many images the bucket keeps (default: keep)",
}
SUPERVISOR_KEYS = {
    "restart_delay": "wait before restarting a dead engine (default 0.5s)",
    "max_restarts": "give up on an engine after this many restarts in restart_window "
                    "(default 10)",
    "restart_window": "see max_restarts (default 60s)",
    "check_interval": "how often children are checked (default 0.2s)",
    "shutdown_timeout": "how long children get to stop before SIGKILL (default 10s)",
}
METRICS_KEYS = {
    "listen": "HOST:PORT of the Prometheus endpoint (default: no endpoint)",
    "status_interval": "how often engines and the supervisor refresh status (default 1s)",
}


def _dir(base: str) -> Callable[[Any], str]:
    def conv(v: Any) -> str:
        return os.path.normpath(os.path.join(base, os.path.expanduser(_str(v))))
    return conv


def _check_ring(ck: _Checker, raw: Any, path: Path, base: str) -> RingConfig | None:
    m = ck.mapping(raw, path, RING_KEYS)
    if not isinstance(raw, dict):
        return None
    name = ck.get(m, "name", path, _ring_name, required=True)
    capacity = ck.get(m, "capacity", path, parse_size, required=True)
    partitions = ck.get(m, "partitions", path, _int(1), layout.DEFAULT_PARTITIONS)
    max_record = ck.get(m, "max_record", path, parse_size)
    lossless = ck.get(m, "lossless", path, _bool, False)
    existing = ck.get(m, "existing", path, _choice(EXISTING), "attach")
    unlink = ck.get(m, "unlink_on_exit", path, _bool, False)
    ok = name is not None and capacity is not None and partitions is not None

    if capacity is not None:
        try:
            layout.check_params(capacity, 16, 1, where="capacity")
        except InvalidParameterError:
            ck.error(path + ("capacity",), f"{m['capacity']!r} ({capacity} bytes) is an "
                     f"impossible size: capacity must be a power of two between 4K and 64T")
            ok = False
    if ok and partitions is not None:
        if not layout.is_power_of_two(partitions) or capacity // partitions < layout.MIN_PARTITION:
            ck.error(path + ("partitions",), f"{partitions} partitions of a {format_size(capacity)}"
                     f" ring is impossible: need a power of two leaving "
                     f">= {layout.MIN_PARTITION} bytes each")
            ok = False
    if ok:
        psize = capacity // partitions
        if max_record is None:
            max_record = psize // 4
        elif not layout.RECORD_HEADER <= max_record <= psize // 4:
            ck.error(path + ("max_record",), f"{max_record} bytes is impossible: must be "
                     f"between {layout.RECORD_HEADER} and partition size / 4 = {psize // 4} "
                     f"(capacity {format_size(capacity)} / {partitions} partitions / 4)")
            ok = False

    replica = None
    if "replica" in m:
        rpath = path + ("replica",)
        rm = ck.mapping(m["replica"], rpath, REPLICA_KEYS)
        rname = ck.get(rm, "name", rpath, _ring_name, f"{name}.replica" if name else None)
        replica = ReplicaConfig(
            name=rname or "",
            engine=ck.get(rm, "engine", rpath, _choice(ENGINES), "auto"),
            threads=ck.get(rm, "threads", rpath, _int(0, 16), 0),
            gate=ck.get(rm, "gate", rpath, _bool, False),
            sync_timeout=ck.get(rm, "sync_timeout", rpath, _positive_duration, 5.0),
            wait=ck.get(rm, "wait", rpath, _engine_wait, "sleep"),
            poll_priority=ck.get(rm, "poll_priority", rpath, _int(0, 99), 0),
        )
        if replica.gate and not lossless:
            ck.error(rpath + ("gate",), "gating on the mirror needs a lossless ring "
                     "(set lossless: true on the ring)")

    snaps = None
    if "snapshots" in m:
        spath = path + ("snapshots",)
        sm = ck.mapping(m["snapshots"], spath, SNAPSHOT_KEYS)
        snaps = SnapshotConfig(
            directory=ck.get(sm, "directory", spath, _dir(base), "", required=True),
            interval=ck.get(sm, "interval", spath, _positive_duration, 60.0, required=True),
            keep=ck.get(sm, "keep", spath, _int(1, 100000), 5),
            source=ck.get(sm, "source", spath, _choice(SNAPSHOT_SOURCES),
                          "replica" if replica else "ring"),
            compress=ck.get(sm, "compress", spath, _choice(COMPRESSIONS), "none"),
            on_shutdown=ck.get(sm, "on_shutdown", spath, _bool, True),
            remote=ck.get(sm, "remote", spath, _nats_url),
            remote_keep=ck.get(sm, "remote_keep", spath, _int(1, 100000)),
        )
        if snaps.source == "replica" and replica is None:
            ck.error(spath + ("source",), "source is replica but this ring has no replica "
                     "section")
    if not ok:
        return None
    return RingConfig(name=name, capacity=capacity, max_record=max_record,
                      partitions=partitions, lossless=lossless, existing=existing,
                      unlink_on_exit=unlink, replica=replica, snapshots=snaps)


def validate(data: Any, source: str = "<string>", lines: dict[Path, int] | None = None,
             base_dir: str | None = None) -> Config:
    """Validate already-parsed YAML data; raises :class:`ConfigError` listing all problems."""
    ck = _Checker(source, lines or {})
    base = base_dir or os.getcwd()
    if not isinstance(data, dict):
        ck.error((), f"the configuration must be a mapping at the top level, got {_kind(data)}")
        raise ConfigError(ck.problems)
    top = ck.mapping(data, (), TOP_KEYS)
    stem = os.path.splitext(os.path.basename(source))[0] if source != "<string>" else "pyshm"
    name = ck.get(top, "name", (), _str, stem)
    if name is not None and not re.match(r"^[A-Za-z0-9_.\-]+$", name):
        ck.error(("name",), f"{name!r} may only contain letters, digits, '_', '.' and '-'")
    state_dir = ck.get(top, "state_dir", (), _dir(base), default_state_dir())
    log_level = ck.get(top, "log_level", (), _choice(LOG_LEVELS), "info")

    rings: list[RingConfig] = []
    raw_rings = top.get("rings")
    nats = _check_nats(ck, top.get("nats"), ("nats",)) if "nats" in top else {}
    bridges = _check_bridges(ck, top.get("bridges"), nats) if "bridges" in top else []
    if raw_rings is None and bridges:
        raw_rings = None  # a far host may only run bridges in
    elif raw_rings is None:
        ck.error(("rings",), "required key is missing: declare at least one ring")
    elif not isinstance(raw_rings, list):
        ck.error(("rings",), f"expected a list of rings, got {_kind(raw_rings)}")
    elif not raw_rings:
        ck.error(("rings",), "the list is empty: declare at least one ring")
    else:
        for i, raw in enumerate(raw_rings):
            r = _check_ring(ck, raw, ("rings", i), base)
            if r is not None:
                rings.append(r)
        _check_unique(ck, raw_rings)

    sm = ck.mapping(top.get("supervisor"), ("supervisor",), SUPERVISOR_KEYS)
    sp = ("supervisor",)
    sup = SupervisorConfig(
        restart_delay=ck.get(sm, "restart_delay", sp, parse_duration, 0.5),
        max_restarts=ck.get(sm, "max_restarts", sp, _int(0), 10),
        restart_window=ck.get(sm, "restart_window", sp, _positive_duration, 60.0),
        check_interval=ck.get(sm, "check_interval", sp, _positive_duration, 0.2),
        shutdown_timeout=ck.get(sm, "shutdown_timeout", sp, _positive_duration, 10.0),
    )
    mm = ck.mapping(top.get("metrics"), ("metrics",), METRICS_KEYS)
    mp = ("metrics",)
    met = MetricsConfig(listen=ck.get(mm, "listen", mp, _listen, None),
                        status_interval=ck.get(mm, "status_interval", mp,
                                               _positive_duration, 1.0))
    states = []
    if "states" in top:
        from .state.config import check_states
        taken = {segment.resolve_path(n): ("rings",) for r in rings
                 for n in [r.name] + ([r.replica.name] if r.replica else [])}
        states = check_states(ck, top.get("states"), base, taken)
    if ck.problems:
        raise ConfigError(ck.problems)
    return Config(name=name, state_dir=state_dir, log_level=log_level, rings=tuple(rings),
                  supervisor=sup, metrics=met, source=source, bridges=tuple(bridges),
                  nats=nats, states=tuple(states))


def _nats_url(v: Any) -> str:
    from .bridge.connect import redact

    if not isinstance(v, str) or not v:
        raise ValueError(f"expected a non-empty string, got {type(v).__name__}")
    text = v
    if not text.startswith("nats://") or len(text.split("/")) < 4 or not text.split("/")[3]:
        raise ValueError(f"{redact(text)!r} is not nats://HOST:PORT/BUCKET[/PREFIX]")
    return text


def _secret(v: Any) -> str:
    """A password or token: text, and never quoted back in an error."""
    if not isinstance(v, str) or not v:
        raise ValueError(f"expected a non-empty string, got {type(v).__name__} (value not "
                         f"shown); write it in quotes, e.g. \"...\", so YAML keeps it as text")
    return v


def _check_nats(ck: _Checker, raw: Any, path: Path) -> dict[str, Any]:
    m = ck.mapping(raw, path, NATS_KEYS)
    out: dict[str, Any] = {}
    servers = m.get("servers")
    if isinstance(servers, str):
        servers = [s.strip() for s in servers.split(",") if s.strip()]
    if not servers or not isinstance(servers, list) or \
            not all(isinstance(s, str) and s for s in servers):
        ck.error(path + ("servers",), "expected one or more NATS server URLs "
                 "(nats://HOST:PORT)")
    else:
        out["servers"] = servers
    for key in ("creds", "nkey", "user", "password", "token", "tls_ca", "tls_cert", "tls_key"):
        v = ck.get(m, key, path, _secret if key in ("password", "token") else _str)
        if v is not None:
            out[key] = v
    ct = ck.get(m, "connect_timeout", path, _positive_duration)
    if ct is not None:
        out["connect_timeout"] = ct
    return out


def _check_bridges(ck: _Checker, raw: Any, default_nats: dict[str, Any]) -> list[BridgeConfig]:
    if not isinstance(raw, list):
        ck.error(("bridges",), f"expected a list of bridges, got {_kind(raw)}")
        return []
    out = []
    for i, item in enumerate(raw):
        path: Path = ("bridges", i)
        m = ck.mapping(item, path, BRIDGE_KEYS)
        if not isinstance(item, dict):
            continue
        kinds = [k for k in ("out", "in") if k in m]
        if len(kinds) != 1:
            ck.error(path, "give exactly one of out: RING (publish a ring) or in: RING "
                     "(build a follower ring)")
            continue
        kind = kinds[0]
        ring = ck.get(m, kind, path, _ring_name, required=True)
        stream = ck.get(m, "stream", path, _str, required=True)
        if stream is not None and not re.match(r"^[A-Za-z0-9_\-]+$", stream):
            ck.error(path + ("stream",), f"{stream!r}: a stream name is letters, digits, "
                     f"'_' and '-'")
        nats = _check_nats(ck, m["nats"], path + ("nats",)) if "nats" in m else default_nats
        if not nats.get("servers"):
            ck.error(path, "no NATS servers: give this bridge a nats section or add a "
                     "top-level nats section")
        opts: dict[str, Any] = {}
        only = {"replicas": "out", "window": "out", "grace": "out", "ack_timeout": "out",
                "start": "out", "durable": "in", "capacity": "in", "max_record": "in",
                "lossless": "in", "allow_gaps": "in"}
        conv: dict[str, Callable[[Any], Any]] = {
            "subject": _str, "replicas": _int(1, 5), "window": _int(1), "grace":
            parse_duration, "ack_timeout": _positive_duration, "start":
            _choice(("oldest", "latest")), "durable": _str, "capacity": parse_size,
            "max_record": parse_size, "lossless": _bool, "allow_gaps": _bool}
        for key, fn in conv.items():
            if key in m and only.get(key, kind) != kind:
                ck.error(path + (key,), f"{key} is a setting of `{only[key]}` bridges")
                continue
            v = ck.get(m, key, path, fn)
            if v is not None:
                opts[key] = v
        if ring is not None and stream is not None:
            out.append(BridgeConfig(kind=kind, ring=ring, stream=stream, nats=nats,
                                    options=opts))
    return out


def _check_unique(ck: _Checker, raw_rings: list[Any]) -> None:
    """Rings and replicas share one namespace (/dev/shm): every name must be unique."""
    seen: dict[str, Path] = {}

    def claim(name: Any, path: Path) -> None:
        if not isinstance(name, str):
            return
        try:
            key = segment.resolve_path(name)
        except InvalidNameError:
            return
        if key in seen:
            ck.error(path, f"duplicate name {name!r}: already used by "
                     f"{format_path(seen[key])}")
        else:
            seen[key] = path

    for i, raw in enumerate(raw_rings):
        if not isinstance(raw, dict):
            continue
        claim(raw.get("name"), ("rings", i, "name"))
        rep = raw.get("replica")
        if isinstance(rep, dict) or rep is None and "replica" in raw:
            rname = (rep or {}).get("name") or (f"{raw['name']}.replica"
                                               if isinstance(raw.get("name"), str) else None)
            claim(rname, ("rings", i, "replica", "name"))


# ----------------------------------------------------------------------------------
# YAML with line numbers and duplicate-key detection (PyYAML silently keeps the last).


def _line_map(node: yaml.Node, path: Path, lines: dict[Path, int], dupes: list[str],
              source: str) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for knode, vnode in node.value:
            key = knode.value
            if key in seen:
                dupes.append(f"{source}:{knode.start_mark.line + 1}: "
                             f"{format_path(path + (key,))}: key appears twice in one mapping")
            seen.add(key)
            lines[path + (key,)] = knode.start_mark.line + 1
            _line_map(vnode, path + (key,), lines, dupes, source)
            lines[path + (key,)] = knode.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, path + (i,), lines, dupes, source)


def loads(text: str, source: str = "<string>", base_dir: str | None = None) -> Config:
    """Parse and validate YAML text."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}: not valid YAML: {problem}"]) from None
    lines: dict[Path, int] = {}
    dupes: list[str] = []
    if node is not None:
        _line_map(node, (), lines, dupes, source)
    try:
        cfg = validate(data, source, lines, base_dir)
    except ConfigError as exc:
        raise ConfigError(dupes + exc.problems) from None
    if dupes:
        raise ConfigError(dupes)
    return cfg


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a configuration file."""
    path = os.fspath(path)
    try:
        # non-blocking open: a FIFO given by mistake is refused instead of waited on
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ConfigError([f"{path}: not a regular file (a configuration is a "
                                   f"YAML file)"])
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        with open(fd, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError([f"{path}: configuration file not found"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {(exc.strerror or str(exc)).lower()}"]) \
            from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: cannot read: not UTF-8 text"]) from None
    return loads(text, source=path, base_dir=os.path.dirname(os.path.abspath(path)))


def check_resources(cfg: Config) -> list[str]:
    """Problems the machine (not the file) has with a valid configuration.

    Sums every segment that would be created in each filesystem and compares with its
    free space, so that an impossible total fails before anything is created.
    """
    need: dict[str, int] = {}
    for r in cfg.rings:
        for name in [r.name] + ([r.replica.name] if r.replica else []):
            p = segment.resolve_path(name)
            if os.path.exists(p):
                continue
            d = os.path.dirname(p)
            need[d] = need.get(d, 0) + layout.segment_size(r.capacity)
    if cfg.states:
        from .state.config import segment_sizes
        for p, size in segment_sizes(cfg.states):
            if not os.path.exists(p):
                d = os.path.dirname(p)
                need[d] = need.get(d, 0) + size
    problems = []
    for d, n in need.items():
        try:
            st = os.statvfs(d)
        except OSError as exc:
            problems.append(f"{cfg.source}: cannot use directory {d}: {exc}")
            continue
        free = st.f_bavail * st.f_frsize
        if n > free:
            problems.append(f"{cfg.source}: rings and replicas need {n / (1 << 20):.0f} MiB in {d} "
                            f"but only {free / (1 << 20):.0f} MiB is free")
    return problems
