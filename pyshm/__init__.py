"""pyshm: lock-free shared-memory rings, replication and memory imaging.

See README.md for a tour and docs/design.md for the layout contract.
"""

from . import layout
from .errors import *  # noqa: F401,F403
from .errors import PyshmError
from .ring import FULL, Batch, Consumer, Message, Producer, Ring
from .state import State, recover

__version__ = "0.1.0"

__all__ = ["layout", "PyshmError", "__version__",
           "Ring", "Producer", "Consumer", "Message", "Batch", "FULL", "State", "recover"]
