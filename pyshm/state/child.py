"""The writer process of a state region under ``pyshm run`` (``python -m pyshm.state.child``).

Its spec (JSON) comes on stdin; it reports on stdout, one JSON object a line:
``{"event": "started", "start": ...}`` (how it started: resumed, recovered, handover),
``{"event": "stats", ...}`` every status interval, and at the end ``{"event":
"stopped", "result": ...}`` (``reason`` ``handed_over`` when a newer process took the
region over: the supervisor then does not restart this one). SIGTERM finishes the
batch in progress and stops; the kernel sends SIGTERM if the supervisor dies.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any


def _say(**msg: Any) -> None:
    sys.stdout.write(json.dumps(msg, default=str) + "\n")
    sys.stdout.flush()


def child_main(spec: dict[str, Any]) -> int:
    """Run one state writer per its spec until SIGTERM or a handover."""
    logging.basicConfig(level=str(spec.get("log_level", "info")).upper(), stream=sys.stderr,
                        format=f"%(asctime)s state[{os.getpid()}] %(levelname)s %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    from ..supervisor import _die_with_parent

    _die_with_parent()
    from . import dtypes
    from .follower import Follower, load_callable

    apply = load_callable(spec["apply"]) if spec.get("apply") else None
    apply_batch = load_callable(spec["apply_batch"]) if spec.get("apply_batch") else None
    f = Follower(spec["name"], spec["ring"], apply, apply_batch=apply_batch,
                 dtype=dtypes.parse(spec["description"]), rows=int(spec["rows"]),
                 images=spec.get("images"), batch=int(spec.get("batch", 256)),
                 gating=spec.get("gating"), restart=spec.get("restart", "auto"),
                 handover=bool(spec.get("handover")),
                 handover_timeout=float(spec.get("handover_timeout", 30.0)),
                 sync=spec.get("sync", "diff"))
    interval = float(spec.get("status_interval", 1.0))
    parent = os.getppid()
    with f:
        info = f.start()
        _say(event="started", pid=os.getpid(), start=info)
        result = None
        reported_catch_up = False
        next_stats = time.monotonic() + interval
        while result is None:
            step = max(0.05, next_stats - time.monotonic())
            res = f.run(stop=stop, max_seconds=step)
            if res.reason != "max_seconds":
                result = res
                break
            st = f.state
            if f.caught_up is not None and not reported_catch_up:
                _say(event="caught_up", caught_up=f.caught_up)
                reported_catch_up = True
            _say(event="stats", applied=f.applied,
                 applied_seq=st.applied_seq if st is not None else None,
                 writer=f.writer.stats() if f.writer is not None else {})
            next_stats = time.monotonic() + interval
            if os.getppid() != parent:  # orphaned: stop as on SIGTERM
                stop.set()
        _say(event="stopped", result=result.as_dict(), applied=f.applied)
    return 0


def main() -> int:
    """Entry point: ``python -m pyshm.state.child`` with the spec on stdin."""
    from ..errors import PyshmError

    try:
        spec = json.loads(sys.stdin.readline())
        return child_main(spec)
    except PyshmError as exc:
        _say(event="error", error=str(exc))
        print(f"pyshm state writer: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
