"""Replication, a snapshot and a recovery, end to end, in one process.

    python examples/replicate_snapshot_restore.py [PREFIX]

1. create a ring and publish 1,000 orders into it;
2. mirror it into a replica with the replication engine (``auto`` picks the FPGA engine
   when a board overlay is loaded, else the CPU engine, and says which);
3. write a checksummed snapshot image of the live ring;
4. lose the ring (it is unlinked, as if its machine had been rebooted);
5. restore it from the image, verify every record, and let a new producer continue
   exactly after the last committed sequence.

Everything it creates (PREFIX.orders, PREFIX.orders.replica, PREFIX.orders.pyimg) is
removed at the end, so it can be run again.
"""

from __future__ import annotations

import os
import sys
import tempfile

from pyshm import Ring
from pyshm.engine import open_engine
from pyshm.images import restore, snapshot
from pyshm.replica import Replica


def order(i: int) -> bytes:
    return f"order {i:05d} buy 100 @ {99.5 + i / 1000:.3f}".encode()


def main() -> None:
    prefix = sys.argv[1] if len(sys.argv) > 1 else "example"
    name, replica_name = f"{prefix}.orders", f"{prefix}.orders.replica"
    image = os.path.join(tempfile.gettempdir(), f"{prefix}.orders.pyimg")
    made: list[Ring | Replica] = []
    try:
        ring = Ring(name, create=True, capacity="1M")       # /dev/shm, mode 0600
        made.append(ring)
        producer = ring.producer()
        for i in range(1000):
            producer.publish(order(i), type=1)
        producer.close()

        replica = Replica.create(replica_name, ring)       # the ring's layout, replica flag
        made.append(replica)
        with open_engine("auto", ring, replica) as engine:  # prints which engine it picked
            engine.start()
            engine.sync(timeout=5.0)   # everything committed before the call is mirrored
            stats = engine.stats()
        print(f"replica holds {stats.records_mirrored} records "
              f"({stats.bytes_mirrored} bytes, {stats.overruns} overruns)")

        header = snapshot(ring, image, overwrite=True)     # the producer is never paused
        print(f"snapshot {image}: sequences {header.first_sequence}.."
              f"{header.next_sequence - 1}, {header.data_length} bytes")

        ring.close()
        ring.unlink()                                      # the ring is gone
        made.remove(ring)

        info = restore(image, name)                        # verified before it appears
        ring = Ring(name)
        made.append(ring)
        consumer = ring.consumer(start="oldest")
        records = list(iter(lambda: consumer.read_copy(), None))
        assert [bytes(m.data) for m in records] == [order(i) for i in range(1000)]
        producer = ring.producer()                         # continues the sequence
        sequence = producer.publish(order(1000), type=1)
        producer.close()
        consumer.close()
        print(f"restored {info.record_count} records; all verified; the next publish got "
              f"sequence {sequence}")
    finally:
        for segment in made:
            segment.close()
            segment.unlink()
        if os.path.exists(image):
            os.unlink(image)


if __name__ == "__main__":
    main()
