"""State regions: process state in shared memory, imaged, recovered and handed over.

* :class:`State` / :class:`StateWriter`: N rows of a numpy structured dtype, one writer,
  many readers, per-row seqlocks and a region epoch (``pyshm.state.region``);
* state images: consistent cuts at a ring sequence in the image file format
  (``pyshm.state.images``);
* :func:`recover`: state image + replay of the ring after it (``pyshm.state.recovery``);
* hot handover of the writer role between two versions of a consumer
  (``pyshm.state.handover``);
* replication into state replicas (``pyshm.state.replica``).

See docs/state.md.
"""

from .errors import (
    ApplyError,
    HandoverError,
    MissingSequencesError,
    StateBusyError,
    StateInconsistentError,
    StateMismatchError,
    WriterBusyError,
)
from .recovery import Record, Recovery, recover
from .region import Capture, State, StateWriter

__all__ = ["State", "StateWriter", "Capture", "Record", "Recovery", "recover",
           "ApplyError", "HandoverError", "MissingSequencesError", "StateBusyError",
           "StateInconsistentError",
           "StateMismatchError", "WriterBusyError"]
