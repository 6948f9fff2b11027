"""The ``states:`` section of a ``pyshm run`` configuration (checked by pyshm.config).

::

    states:
      - name: book                    # the state region (/dev/shm name or path)
        ring: md.eurex                # the ring its writer folds
        dtype: "bid:<f8[4],ask:<f8[4],position:<i8"   # or py:MODULE:ATTR, or a list
        rows: 64
        apply: mybook.fold:apply      # or apply_batch: mybook.fold:apply_batch
        restart: auto                 # auto | image: how a restarted writer starts
        upgrade: handover             # SIGHUP / `pyshm handover --run`: hot handover
        snapshots: {directory: /var/lib/book, interval: 5s, every_records: 100000, keep: 5}
        replica: {name: book.replica} # CPU state engine in the supervisor

The supervisor creates the region, runs its writer (a :class:`~pyshm.state.Follower`)
in a child process, restarts it when it dies (it then resumes the region, or restores
the newest image and replays the ring), images the region on schedule from its own
process (cuts: the writer waits at most one chunk copy) and keeps the replica.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..errors import PyshmError

STATE_KEYS = {
    "name": "state region name in /dev/shm, or a path containing '/' (required)",
    "ring": "the ring (or replica) its writer folds (required)",
    "dtype": "row dtype: 'NAME:FORMAT[SHAPE],...', py:MODULE:ATTR, or a list of "
             "[name, format, shape] (required)",
    "rows": "number of rows (required)",
    "apply": "MODULE:FUNCTION or FILE.py:FUNCTION, apply(writer, record) (this or "
             "apply_batch is required)",
    "apply_batch": "MODULE:FUNCTION, apply_batch(writer, batch): one transaction per batch",
    "batch": "records read per batch (default 256)",
    "gating": "read a lossless ring with a gating consumer (default: when it is lossless)",
    "restart": "how a restarted writer starts: auto (resume a consistent region, else the "
               "newest image + replay; default) or image (always the image)",
    "upgrade": "what SIGHUP or `pyshm handover --run` does: handover (hot, default) or "
               "restart",
    "handover_timeout": "how long a handover may take (default 30s)",
    "sync": "handover: diff (copy the rows that differ; default) or trust",
    "snapshots": "scheduled state images of the region",
    "replica": "a state replica kept by the CPU state engine",
}
STATE_SNAPSHOT_KEYS = {
    "directory": "where the images go (required)",
    "interval": "time between images",
    "every_records": "an image after this many records applied",
    "keep": "how many images to keep (default 5)",
    "compress": "none (default) or zstd",
    "on_shutdown": "a final image on a clean stop (default true)",
}
STATE_REPLICA_KEYS = {
    "name": "replica name (default STATE.replica)",
    "engine": "cpu (the row mirror; default)",
}

_CALL_RE = re.compile(r"^[^:\s]+:[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class StateSnapshotsConfig:
    directory: str
    interval: float | None = None
    every_records: int | None = None
    keep: int = 5
    compress: str = "none"
    on_shutdown: bool = True


@dataclass(frozen=True)
class StateReplicaConfig:
    name: str
    engine: str = "cpu"


@dataclass(frozen=True)
class StateConfig:
    """One state region and its writer, as ``pyshm run`` keeps them."""

    name: str
    ring: str
    description: str                 # the dtype, as its canonical description
    rows: int
    apply: str | None = None
    apply_batch: str | None = None
    batch: int = 256
    gating: bool | None = None
    restart: str = "auto"
    upgrade: str = "handover"
    handover_timeout: float = 30.0
    sync: str = "diff"
    snapshots: StateSnapshotsConfig | None = None
    replica: StateReplicaConfig | None = None

    @property
    def path(self) -> str:
        """The region's file."""
        from ..segment import resolve_path
        return resolve_path(self.name)


def _description(v: Any) -> str:
    import numpy as np

    from . import dtypes
    try:
        if isinstance(v, str):
            from ..cli.state import dtype_from_spec
            dt = dtype_from_spec(v)
        elif isinstance(v, list):
            dt = np.dtype([tuple(x) if isinstance(x, list) else x for x in v])
        else:
            raise ValueError(f"expected a dtype string or a list of [name, format(, shape)], "
                             f"got {type(v).__name__}")
        return dtypes.describe(dt)
    except (PyshmError, TypeError) as exc:
        raise ValueError(str(exc)) from None


def _callable_spec(v: Any) -> str:
    if not isinstance(v, str) or not _CALL_RE.match(v):
        raise ValueError(f"{v!r} is not MODULE:FUNCTION (e.g. mybook.fold:apply or "
                         f"./fold.py:apply)")
    return v


def check_states(ck: Any, raw: Any, base: str, taken: dict[str, Any]) -> list[StateConfig]:
    """Check the ``states`` list with pyshm.config's checker ``ck``; ``taken`` maps the
    paths of rings and replicas already declared (names share one namespace)."""
    from .. import config as C
    from ..segment import resolve_path

    if raw is None:
        return []
    if not isinstance(raw, list):
        ck.error(("states",), f"expected a list of state regions, got {C._kind(raw)}")
        return []
    out: list[StateConfig] = []
    for i, item in enumerate(raw):
        path: tuple[Any, ...] = ("states", i)
        m = ck.mapping(item, path, STATE_KEYS)
        if not isinstance(item, dict):
            continue
        name = ck.get(m, "name", path, C._ring_name, required=True)
        ring = ck.get(m, "ring", path, C._ring_name, required=True)
        desc = ck.get(m, "dtype", path, _description, required=True)
        rows = ck.get(m, "rows", path, C._int(1, 1 << 40), required=True)
        apply = ck.get(m, "apply", path, _callable_spec)
        apply_batch = ck.get(m, "apply_batch", path, _callable_spec)
        if (apply is None) == (apply_batch is None) and "apply" not in m \
                and "apply_batch" not in m:
            ck.error(path + ("apply",), "required key is missing: give apply (or "
                     "apply_batch)")
        elif apply is not None and apply_batch is not None:
            ck.error(path + ("apply_batch",), "give apply or apply_batch, not both")
        snaps = None
        if "snapshots" in m:
            sp = path + ("snapshots",)
            sm = ck.mapping(m["snapshots"], sp, STATE_SNAPSHOT_KEYS)
            snaps = StateSnapshotsConfig(
                directory=ck.get(sm, "directory", sp, C._dir(base), "", required=True),
                interval=ck.get(sm, "interval", sp, C._positive_duration),
                every_records=ck.get(sm, "every_records", sp, C._int(1)),
                keep=ck.get(sm, "keep", sp, C._int(1, 100000), 5),
                compress=ck.get(sm, "compress", sp, C._choice(C.COMPRESSIONS), "none"),
                on_shutdown=ck.get(sm, "on_shutdown", sp, C._bool, True))
            if snaps.interval is None and snaps.every_records is None:
                ck.error(sp, "give interval and/or every_records")
        replica = None
        if "replica" in m:
            rp = path + ("replica",)
            rm = ck.mapping(m["replica"], rp, STATE_REPLICA_KEYS)
            replica = StateReplicaConfig(
                name=ck.get(rm, "name", rp, C._ring_name,
                            f"{name}.replica" if name else None) or "",
                engine=ck.get(rm, "engine", rp, C._choice(("cpu", "auto")), "cpu"))
        for key, value in (("name", name), ("replica", replica.name if replica else None)):
            if not value:
                continue
            try:
                p = resolve_path(value)
            except PyshmError:
                continue
            if p in taken:
                ck.error(path + (key,), f"duplicate name {value!r}: already used by "
                         f"{C.format_path(taken[p])}")
            else:
                taken[p] = path + (key,)
        extra = dict(
            batch=ck.get(m, "batch", path, C._int(1, 1 << 20), 256),
            gating=ck.get(m, "gating", path, C._bool, None),
            restart=ck.get(m, "restart", path, C._choice(("auto", "image")), "auto"),
            upgrade=ck.get(m, "upgrade", path, C._choice(("handover", "restart")),
                           "handover"),
            handover_timeout=ck.get(m, "handover_timeout", path, C._positive_duration, 30.0),
            sync=ck.get(m, "sync", path, C._choice(("diff", "trust")), "diff"))
        if name is None or ring is None or desc is None or rows is None:
            continue
        out.append(StateConfig(name=name, ring=ring, description=desc, rows=rows, apply=apply,
                               apply_batch=apply_batch, snapshots=snaps, replica=replica,
                               **extra))
    return out


def segment_sizes(states: Any) -> list[tuple[str, int]]:
    """(path, bytes) of every region and replica the states would create."""
    import json

    from ..segment import resolve_path
    from . import layout

    out = []
    for sc in states:
        itemsize = json.loads(sc.description)["itemsize"]
        geo = layout.check_geometry(sc.rows, itemsize, len(sc.description),
                                    layout.default_chunk_rows(itemsize))
        for name in [sc.name] + ([sc.replica.name] if sc.replica else []):
            out.append((resolve_path(name), geo.segment_size))
    return out


__all__ = ["StateConfig", "StateSnapshotsConfig", "StateReplicaConfig", "check_states",
           "STATE_KEYS"]
