"""The bridge process ``pyshm run`` starts for each entry of ``bridges:``.

``python -m pyshm.bridge.child``: the spec (JSON, credentials included) arrives as the
first line of standard input, so no secret appears on a command line; statistics leave
as JSON lines on standard output, which the supervisor folds into its status file.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from typing import Any

from ..errors import PyshmError


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def run_spec(spec: dict[str, Any]) -> int:
    from .connect import NatsOptions

    opts = NatsOptions.from_mapping(spec["nats"])
    o = dict(spec.get("options") or {})

    def say(stats: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps({"event": "stats", "stats": stats}, default=str) + "\n")
        sys.stdout.flush()

    interval = float(spec.get("status_interval", 1.0))
    if spec["kind"] == "out":
        from .outbound import OutConfig, run_out

        cfg = OutConfig(ring=spec["ring"], nats=opts, stream=spec["stream"],
                        subject=o.get("subject"), replicas=o.get("replicas"),
                        window=o.get("window", 4096), grace=o.get("grace", 30.0),
                        ack_timeout=o.get("ack_timeout", 5.0), start=o.get("start", "oldest"),
                        stats_interval=interval)
        return run_out(cfg, say)
    from .inbound import InConfig, run_in

    icfg = InConfig(stream=spec["stream"], to=spec["ring"], nats=opts,
                    subject=o.get("subject"), durable=o.get("durable"),
                    capacity=o.get("capacity"), max_record=o.get("max_record"),
                    lossless=o.get("lossless"), allow_gaps=o.get("allow_gaps", False),
                    stats_interval=interval)
    return run_in(icfg, say)


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides the order
    _die_with_parent()
    try:
        spec = json.loads(sys.stdin.readline())
    except ValueError:
        print("pyshm bridge child: no spec on stdin (started by pyshm run)", file=sys.stderr)
        return 2
    logging.basicConfig(level=str(spec.get("log_level", "info")).upper(), stream=sys.stderr,
                        format=f"%(asctime)s bridge {spec.get('kind')}[{os.getpid()}] "
                               f"%(levelname)s %(message)s")
    try:
        return run_spec(spec)
    except PyshmError as exc:
        print(f"pyshm bridge {spec.get('kind')}: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # the client library's own errors: one line, no secret
        from .connect import explain

        print(f"pyshm bridge {spec.get('kind')}: error: {explain(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
