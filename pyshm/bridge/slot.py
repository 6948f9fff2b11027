"""The bridge's gating slot and the guard process that keeps it through a crash.

``bridge out`` must never let a lossless producer overwrite a record that JetStream has
not acknowledged, even when the bridge is killed with SIGKILL. Its gating slot therefore
belongs to a tiny *guard* process (``python -m pyshm.bridge.slot``), not to the bridge:
the guard claims the slot in its own name as the bridge starts, so producers, ``pyshm
repair`` and new consumers, which free the slots of dead pids, always see a live owner.
The bridge moves the slot's position (the start of the oldest unacknowledged batch); the
guard only holds it.

* Clean stop: the bridge releases the slot and tells the guard, which exits.
* Crash of the bridge: the guard sees its stdin close without that word, keeps the slot
  gating for ``grace`` seconds, and exits early if a restarted bridge adopted the slot
  (found by the guard's command line, which names the ring identity and the stream);
  after the grace it releases the slot, and the next bridge reports what was overwritten.
* Crash of the guard too (``kill -9`` of both): the slot's pid is dead, it is freed as
  any dead consumer's, and the restarted bridge reports exactly which sequences are gone.

The slot primitives are the ones :mod:`pyshm.repair` uses to pin dead consumers' slots.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from .. import layout
from ..errors import NoConsumerSlotError
from ..ring import Ring, pid_alive

GUARD_MODULE = "pyshm.bridge.slot"
_FLAGS = layout.SLOT_ACTIVE | layout.SLOT_GATING


def _lib() -> Any:
    from .._ring_c import ffi, lib

    return ffi, lib


def read_slot(ring: Ring, index: int) -> tuple[int, int, int, int]:
    """(position, pid, heartbeat_ns, flags) of slot ``index``."""
    ffi, lib = _lib()
    buf = ffi.new("int64_t[4]")
    lib.pyshm_slot_read(ring._h(), index, buf)
    return int(buf[0]), int(buf[1]), int(buf[2]), int(buf[3])


def claim_gating_slot(ring: Ring, position: int) -> int:
    """A free slot taken for this process, gating at ``position``; returns its index."""
    _, lib = _lib()
    me = os.getpid()
    for i in range(layout.MAX_CONSUMERS):
        if read_slot(ring, i)[1] == 0 and lib.pyshm_slot_claim(ring._h(), i, 0, me) == 1:
            lib.pyshm_slot_activate(ring._h(), i, position, _FLAGS, time.time_ns())
            return i
    raise NoConsumerSlotError(f"ring {ring.name!r}: no free consumer slot for the bridge "
                              f"(all {layout.MAX_CONSUMERS} are held)")


def move_slot(ring: Ring, index: int, position: int) -> None:
    """Release-store the slot's position (and stamp its heartbeat)."""
    _, lib = _lib()
    lib.pyshm_slot_activate(ring._h(), index, position, _FLAGS, time.time_ns())


def release(ring: Ring, index: int, pid: int) -> bool:
    _, lib = _lib()
    return bool(lib.pyshm_slot_release(ring._h(), index, pid) > 0)


def guard_key(ring_id: int, stream: str, subject: str) -> str:
    import hashlib

    digest = hashlib.sha256(f"{stream}\0{subject}".encode()).hexdigest()[:16]
    return f"{ring_id:016x}-{digest}"


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0")]
    except OSError:
        return []


def find_guard(ring: Ring, key: str) -> tuple[int, int, int] | None:
    """(slot index, guard pid, position) of a live guard holding a slot for ``key``."""
    for i in range(layout.MAX_CONSUMERS):
        pos, pid, _, flags = read_slot(ring, i)
        if pid <= 0 or not flags & layout.SLOT_ACTIVE or not pid_alive(pid):
            continue
        argv = _cmdline(pid)
        if GUARD_MODULE in argv and f"--key={key}" in argv:
            return i, pid, pos
    return None


class Guard:
    """The guard child of one bridge: started by :meth:`start`, told by :meth:`finish`."""

    def __init__(self, ring: Ring, key: str, grace: float):
        self.ring = ring
        self.index = -1
        self.key = key
        self.grace = grace
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, position: int, timeout: float = 20.0) -> int:
        """Start the guard, which claims a free slot gating at ``position`` in its own
        name (so there is no moment when the bridge's protection hangs on the bridge's
        pid); returns the slot index."""
        cmd = [sys.executable, "-m", GUARD_MODULE, f"--key={self.key}",
               f"--ring={self.ring.path}", f"--position={position}",
               f"--parent={os.getpid()}", f"--grace={self.grace}"]
        # cwd /: `-m` puts the cwd first on sys.path, and a source tree there would
        # shadow the installed package; stdin is the lifeline (EOF: the bridge is gone)
        # its notices go to our stderr when that is a file or a terminal; not into a pipe,
        # which the guard would keep open through the grace period (a `| tee` would hang)
        import stat

        try:
            mode = os.fstat(2).st_mode
            quiet = stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)
        except OSError:
            quiet = True
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL if quiet else None,
                                     cwd="/", close_fds=True)
        assert self.proc.stdout is not None
        line = _readline(self.proc, timeout)
        if not line.startswith(b"ready "):
            self.proc.kill()
            self.proc.wait(5)
            raise NoConsumerSlotError(f"ring {self.ring.name!r}: the slot guard did not "
                                      f"start ({line.decode(errors='replace').strip()!r})")
        self.index = int(line.split()[1])
        return self.index

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    def finish(self, release_slot: bool) -> None:
        """Stop the guard. ``release_slot``: everything was acknowledged, free the slot;
        otherwise the guard keeps it for the grace period, as after a crash."""
        if self.proc is None:
            return
        if release_slot:
            release(self.ring, self.index, self.proc.pid)
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(b"done\n" if release_slot else b"keep\n")
            self.proc.stdin.close()
        except OSError:
            pass
        if release_slot:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


def _readline(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    import selectors

    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            return b""
        return proc.stdout.readline()
    finally:
        sel.close()


def adopt(ring: Ring, found: tuple[int, int, int]) -> None:
    """Take over from an orphaned guard: free its slot (once ours gates) and stop it."""
    index, pid, _ = found
    release(ring, index, pid)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


# ----------------------------------------------------------------------------------
# the guard process


def guard_main(argv: list[str]) -> int:
    opts = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    ring_path, position = opts["ring"], int(opts["position"])
    parent, grace = int(opts["parent"]), float(opts["grace"])
    # only the bridge decides when the slot goes: a terminal's Ctrl-C or a SIGTERM to
    # the process group must not free it while the bridge still flushes
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    with Ring(ring_path) as ring:
        try:
            index = claim_gating_slot(ring, position)
        except NoConsumerSlotError as exc:
            sys.stdout.write(f"error {exc}\n")
            sys.stdout.flush()
            return 1
    sys.stdout.write(f"ready {index}\n")
    sys.stdout.flush()
    word = sys.stdin.readline().strip()
    if word == "done":
        return 0
    me = os.getpid()
    log = sys.stderr
    # the bridge died (or stopped with records unacknowledged): hold the slot; a
    # SIGTERM now means "a new bridge adopted the slot", checked below
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    with Ring(ring_path) as ring:
        if read_slot(ring, index)[1] != me:
            return 0
        if word != "keep":
            log.write(f"pyshm bridge guard: bridge pid {parent} is gone; slot {index} of "
                      f"{ring.name} keeps gating for {grace:g} s so that a restarted "
                      f"bridge loses nothing\n")
            log.flush()
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if read_slot(ring, index)[1] != me:
                return 0  # adopted by a restarted bridge
            if stop[0] and read_slot(ring, index)[1] != me:
                return 0
            time.sleep(0.1)
        pos = read_slot(ring, index)[0]
        if release(ring, index, me):
            log.write(f"pyshm bridge guard: no bridge came back within {grace:g} s; slot "
                      f"{index} of {ring.name} released at position {pos}: the producer "
                      f"may now overwrite records the stream does not have (a restarted "
                      f"bridge reports which)\n")
            log.flush()
    return 0


def _main() -> int:
    from ..errors import PyshmError

    try:
        return guard_main(sys.argv[1:])
    except PyshmError as exc:  # the ring was removed meanwhile: nothing left to guard
        sys.stderr.write(f"pyshm bridge guard: {exc}\n")
        return 0
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(_main())
