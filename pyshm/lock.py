"""One owner per segment (and per board IP): an exclusive ``flock`` on the segment's file.

Who takes it:

==========================  ============================================================
replication engine          the replica it writes (``open_engine``, ``pyshm replicate``)
``pyshm run``               every ring and replica it manages, for its whole life; its
                            engine children inherit the replica's lock
``restore --in-place``      the ring it rewrites
``replica.promote``         the replica it converts
``rm`` / ``rm --stale``     the segment it unlinks (refused while someone else holds it)
``PynqEngine``              the ring-mirror IP it drives, from construction to ``close``
``PynqCopier``              the ring-mirror IP it restores through, from construction to
                            ``close`` (so no engine starts between its verify and copy
                            passes, and no second restore interleaves its jobs)
==========================  ============================================================

The IP is not a file: its lock is a 0600 file named after the IP's physical register
address, ``/run/lock/pyshm-ip-<address>.lock`` (pyshm/driver/owner.py), locked the same
way; the ``sim`` engines' simulated IPs belong to one process and take none.

Why ``flock`` rather than a pid (and start time) stored in the header: the kernel
releases the lock when the last descriptor of its open file description closes, which
happens when the holder exits for any reason, ``kill -9`` included. There is nothing to
take over, no window in which two processes both see the owner dead, and no pid reuse
to guard against. A ``flock`` belongs to the open file description, not to the process
(unlike ``fcntl``/``lockf`` record locks, which a process loses when it closes *any*
descriptor of the file, e.g. an unrelated ``Segment`` of the same ring), and it is
inherited only through descriptors passed on purpose (``pass_fds``; every other
descriptor here is close-on-exec). Producers are not covered: a ring's producer is
recorded in its header (``producer_pid``), as before.

The holder is named from ``/proc/locks`` (the pid that took the lock), so the error
says who to stop.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Callable
from typing import Any

from .errors import FileAccessError, RingNotFoundError, SegmentLockedError
from .segment import display_name, resolve_path

__all__ = ["SegmentLock", "flock_or_refuse", "lock_holders", "holder_of", "describe_pid"]


def lock_holders() -> dict[tuple[int, int, int], int]:
    """{(major, minor, inode): pid} of every FLOCK write lock the kernel lists."""
    out: dict[tuple[int, int, int], int] = {}
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 12345 00:1b:7394 0 EOF"; "->" marks a waiter
        if len(parts) < 6 or parts[1] != "FLOCK" or parts[3] != "WRITE":
            continue
        try:
            pid = int(parts[4])
            major, minor, ino = parts[5].split(":")
            out[(int(major, 16), int(minor, 16), int(ino))] = pid
        except ValueError:
            continue
    return out


def _key(st: os.stat_result) -> tuple[int, int, int]:
    return (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)


def holder_of(path: str, holders: dict[tuple[int, int, int], int] | None = None) -> int | None:
    """The pid holding ``path``'s lock, or None (free, or not listed)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (lock_holders() if holders is None else holders).get(_key(st))


def describe_pid(pid: int | None) -> str:
    """'pid 1234 (pyshm replicate md --to md.r)' as well as /proc tells."""
    if not pid:
        return "another process"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return f"pid {pid}"
    if len(argv) >= 2 and os.path.basename(argv[0]).startswith("python") \
            and argv[1] == "-m" and len(argv) >= 3:
        argv = [f"python -m {argv[2]}", *argv[3:4]]
    elif argv:
        argv[0] = os.path.basename(argv[0])
    text = " ".join(argv)
    return f"pid {pid} ({text[:80]})" if text else f"pid {pid}"


def flock_or_refuse(fd: int, path: str, refusal: Callable[[int | None], Exception]) -> None:
    """Take an exclusive ``flock`` on ``fd`` (``path``'s open file description) without
    waiting, or close ``fd`` and raise ``refusal(holder pid)`` when another open file
    description holds it (any other error: :class:`FileAccessError`). ``refusal`` runs
    before the close, so it may read the file. The part of :meth:`SegmentLock.acquire`
    that other locks on other files share (the IP lock of the ``pynq`` engine,
    pyshm/driver/owner.py)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        try:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                # built while fd is open: a refusal may read what the holder wrote there
                raise refusal(holder_of(path)) from None
            raise FileAccessError(f"cannot lock {path}: {exc.strerror or exc}") from None
        finally:
            os.close(fd)


class SegmentLock:
    """An exclusive lock on one segment file. Use :meth:`acquire` or :meth:`adopt`."""

    def __init__(self, fd: int, path: str, role: str):
        self._fd = fd
        self.path = path
        self.name = display_name(path)
        self.role = role

    @classmethod
    def acquire(cls, target: Any, role: str) -> SegmentLock:
        """Lock ``target`` (a name, path, Segment, Ring or Replica) without waiting.

        Raises :class:`SegmentLockedError` naming the holder when another open file
        description holds it (another process, or another lock in this one).
        """
        path = _path_of(target)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise RingNotFoundError(f"no segment {display_name(path)!r} ({path} does not "
                                    f"exist)") from None
        except OSError as exc:
            raise FileAccessError(f"cannot open {path} to lock it: "
                                  f"{exc.strerror or exc}") from None
        flock_or_refuse(fd, path, lambda pid: SegmentLockedError(
            f"{display_name(path)} is locked by {describe_pid(pid)}: {_why(role)}", pid))
        return cls(fd, path, role)

    @classmethod
    def adopt(cls, fd: int, target: Any, role: str) -> SegmentLock:
        """Take over a lock held through an inherited descriptor ``fd`` (an engine child
        of ``pyshm run``), after checking that ``fd`` is ``target``'s file."""
        path = _path_of(target)
        try:
            mine, theirs = os.fstat(fd), os.stat(path)
        except OSError as exc:
            raise FileAccessError(f"inherited lock descriptor {fd} for {path}: "
                                  f"{exc.strerror or exc}") from None
        if _key(mine) != _key(theirs) or not stat.S_ISREG(mine.st_mode) and \
                not stat.S_ISCHR(mine.st_mode):
            raise FileAccessError(f"inherited descriptor {fd} is not {path}")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours already: a no-op
        os.set_inheritable(fd, False)
        return cls(fd, path, role)

    @property
    def fd(self) -> int:
        """The locked file descriptor (-1 once released)."""
        return self._fd

    @property
    def held(self) -> bool:
        """True until :meth:`release`."""
        return self._fd >= 0

    def release(self) -> None:
        """Drop the lock; safe to call twice."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)  # closing the last descriptor releases the flock

    close = release

    def __enter__(self) -> SegmentLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<SegmentLock {self.name!r} {self.role} {'held' if self.held else 'released'}>"


def _path_of(target: Any) -> str:
    seg = getattr(target, "segment", target)
    path = getattr(seg, "path", None)
    if isinstance(path, str):
        return path
    return resolve_path(target)


def _why(role: str) -> str:
    return {
        "engine": "a replica has exactly one writer; stop that engine first",
        "supervisor": "another `pyshm run` manages it; stop that one first",
        "restore": "it is being restored or written by that process",
        "promote": "its engine (or another tool) still writes it; stop it first",
        "rm": "it is in use; stop that process first (or pass --force)",
    }.get(role, "stop that process first")
