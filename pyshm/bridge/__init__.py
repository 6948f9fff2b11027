"""Beyond one machine: rings replicated over NATS JetStream, images in its object store.

* :mod:`pyshm.bridge.follower`: follower rings and :class:`FollowerProducer`, the
  producer API that publishes with a given sequence number (no NATS needed);
* ``pyshm bridge out`` / ``pyshm bridge in`` (:mod:`pyshm.bridge.outbound`,
  :mod:`pyshm.bridge.inbound`): a ring's records into a JetStream stream, and from the
  stream into a follower ring on another host, exactly once and in sequence order;
* :mod:`pyshm.bridge.objstore`: snapshots to and restores from ``nats://HOST:PORT/BUCKET/NAME``.

The NATS parts need the ``nats`` extra (``pip install 'pyshm[nats]'``). See
docs/distributed.md.
"""

from .follower import (
    DUPLICATE,
    FULL,
    GAP_TYPE,
    FollowerProducer,
    SequenceGapError,
    create_follower,
    promote,
)

__all__ = ["FollowerProducer", "SequenceGapError", "GAP_TYPE", "DUPLICATE", "FULL",
           "create_follower", "promote"]
