"""The supervisor (``pyshm run``) driven from Python for a few seconds.

    python examples/supervisor.py [PREFIX] [--seconds S]

A configuration like examples/pyshm.yaml, written here so that it is self-contained: one
ring with a replica kept by an engine process, snapshots every second into a temporary
directory, everything unlinked on exit. While the supervisor runs, this script publishes
into the ring as an application would; at the end it prints the supervisor's status and
the images the schedule kept. In production the same file runs with
``pyshm run FILE`` and is watched with ``pyshm stats``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time

from pyshm import Ring
from pyshm.config import loads
from pyshm.supervisor import Supervisor

CONFIG = """
name: {prefix}-example
state_dir: {work}/state
log_level: warning
rings:
  - name: {prefix}.md
    capacity: 1M
    unlink_on_exit: true          # an example leaves nothing behind
    replica:
      engine: cpu
    snapshots:
      directory: {work}/images
      interval: 1s
      keep: 2
      on_shutdown: true
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefix", nargs="?", default="example")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        os.makedirs(os.path.join(work, "images"))
        cfg = loads(CONFIG.format(prefix=args.prefix, work=work), source="example")
        supervisor = Supervisor(cfg)
        supervisor.start()      # creates the ring and replica, starts the engine process
        try:
            stop = threading.Event()

            def application() -> None:
                with Ring(f"{args.prefix}.md") as ring:
                    producer = ring.producer()
                    i = 0
                    while not stop.wait(0.001):
                        producer.publish(b"tick %d" % i)
                        i += 1
                    producer.close()

            app = threading.Thread(target=application)
            app.start()
            supervisor.loop(until=time.monotonic() + args.seconds)
            stop.set()
            app.join()
            status = supervisor.status()["rings"][f"{args.prefix}.md"]
        finally:
            supervisor.shutdown()   # final sync and snapshot, then unlink_on_exit
        engine, snaps = status["engine"], status["snapshots"]
        mirrored = engine["stats"].get("records_mirrored", 0)
        print(f"engine {engine['name']} {engine['state']}, {mirrored} records mirrored, "
              f"restarts {engine['restarts']}; snapshots taken {snaps['count']}")
        images = sorted(os.listdir(os.path.join(work, "images")))
        print(f"images kept: {len(images)} ({', '.join(images)})")


if __name__ == "__main__":
    main()
