"""One user of a board's ring-mirror IP at a time, across processes.

The IP is one set of registers at a physical address: a ``pynq`` engine mirroring
through it and a restore through its copy mode (or two of either) would program the
same registers. The registers themselves cannot arbitrate (two processes can both read
CONTROL.ENABLE clear, then both write), so every user takes an exclusive, non-blocking
``flock`` on a lock file named after the IP's physical register address before its
first register access, and keeps it until it closes: :class:`PynqEngine` from
construction to ``close``, :class:`PynqCopier` likewise (a restore's verify and copy
passes are one use). This is the design of :mod:`pyshm.lock`: the kernel releases the
lock with the last descriptor of its open file description, so a holder killed by
``kill -9`` leaves nothing to clean up, and the refusal names the holder from
``/proc/locks``.

Where the file lives: ``/run/lock`` (the FHS directory for lock files: a tmpfs emptied
at boot, like the IP's own state, world-writable with the sticky bit on the Ubuntu of
PYNQ images), not ``/dev/shm``, whose entries ``pyshm ls`` and ``pyshm stats`` read as
rings. Without ``/run/lock``: ``/dev/shm``. ``$PYSHM_IP_LOCK_DIR`` overrides both (the
tests use it; every user of one board must see the same directory). The file is created
owner-only (0600), opened without following a symlink (the directory is shared), and
never unlinked: unlinking a lock file lets a newcomer lock a new inode while the holder
keeps the old one. While it holds the lock, the holder keeps its pid and what it does
with the IP in the file ("mirroring ring md into replica md.r", "a restore through its
copy mode"); a refusal shows that text only when the pid is the one ``/proc/locks`` names
as the holder (so a previous holder's text, or a new holder's before it wrote, is not
shown as this one's).
"""

from __future__ import annotations

import operator
import os
import stat
from typing import Any

from ..errors import EngineError, FileAccessError, SegmentLockedError
from ..lock import SegmentLock, describe_pid, flock_or_refuse

__all__ = ["IPBusyError", "LOCK_DIR_ENV", "claim_ip", "ip_address", "ip_lock_path"]

LOCK_DIR_ENV = "PYSHM_IP_LOCK_DIR"
DEFAULT_LOCK_DIRS = ("/run/lock", "/dev/shm")


class IPBusyError(SegmentLockedError, EngineError):
    """Another live process drives the IP (``pid`` names it, None when the kernel does
    not say). An :class:`EngineError`, so ``engine='auto'`` takes the CPU path."""


def lock_dir() -> str:
    given = os.environ.get(LOCK_DIR_ENV, "")
    if given:
        return given
    for d in DEFAULT_LOCK_DIRS:
        if os.path.isdir(d):
            return d
    return DEFAULT_LOCK_DIRS[-1]


def ip_address(ip: Any) -> int:
    """The IP's physical register address (its MMIO window's base, as pynq maps it)."""
    base = getattr(getattr(ip, "mmio", None), "base_addr", None)
    try:
        phys = operator.index(base)  # type: ignore[arg-type]
    except TypeError:
        phys = -1
    if phys < 0:
        where = getattr(ip, "where", type(ip).__name__)
        raise EngineError(f"{where}: no physical register address (mmio.base_addr is "
                          f"{base!r}) to lock the IP by")
    return phys


def ip_lock_path(phys: int) -> str:
    return os.path.join(lock_dir(), f"pyshm-ip-{phys:x}.lock")


USE_MAX = 200  # bytes of the holder's description a refusal reads back


def _record_use(fd: int, use: str) -> None:
    """Write what this holder does into its lock file, for the refusals of others. Best
    effort: the lock is what arbitrates, the text only explains."""
    data = f"{os.getpid()} {use}".encode("ascii", "replace")[:USE_MAX]
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    except OSError:
        pass


def _recorded_use(fd: int, pid: int | None) -> str:
    """What holder ``pid`` wrote into its lock file, or "" (nothing yet, a previous
    holder's text, unreadable, or not plain printable ASCII: the file is in a shared
    directory, so its text is only shown, and only for the pid the kernel names)."""
    if not pid:
        return ""
    try:
        data = os.pread(fd, USE_MAX + 1, 0)
    except OSError:
        return ""
    if len(data) > USE_MAX:
        return ""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return ""
    writer, _, use = text.partition(" ")
    return use if writer == str(pid) and use and use.isprintable() else ""


def claim_ip(ip: Any, hint: str, use: str) -> SegmentLock:
    """Lock ``ip`` for this user until the returned lock is released (or its holder
    dies). ``hint``: what the refused caller can do instead (e.g. use engine 'cpu');
    ``use``: what this user does with the IP (e.g. "mirroring ring md into replica
    md.r"), kept in the lock file while it holds it, so a refusal can say it.

    Raises :class:`IPBusyError` naming the holder (and its use) when another process
    (or another user in this one) has it, :class:`FileAccessError` when the lock file
    cannot be opened.
    """
    phys = ip_address(ip)
    where = getattr(ip, "where", "ring-mirror IP")
    path = ip_lock_path(phys)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                     | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise FileAccessError(f"cannot open {path}, the lock of the ring-mirror IP at "
                              f"0x{phys:x}: {exc.strerror or exc} (it must be a regular "
                              f"file this user may open; set {LOCK_DIR_ENV} to a directory "
                              f"every user of the board shares)") from None
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise FileAccessError(f"{path}, the lock of the ring-mirror IP at 0x{phys:x}, is "
                              f"not a regular file")

    def refusal(pid: int | None) -> IPBusyError:
        held_for = _recorded_use(fd, pid)
        return IPBusyError(
            f"the ring-mirror IP at 0x{phys:x} ({where}) is in use by {describe_pid(pid)}"
            f"{f', {held_for}' if held_for else ''}: one process drives it at a time (a "
            f"pynq engine from start to close, a restore through it until it ends); stop "
            f"that engine or wait for that restore, or {hint}", pid)

    flock_or_refuse(fd, path, refusal)
    _record_use(fd, use)
    return SegmentLock(fd, path, "ip")
