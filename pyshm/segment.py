"""Named shared-memory segments: the file and mapping under every ring and replica.

A *name* without a slash, or with only a leading one as ``shm_open`` spells it
(``/NAME``), lives in POSIX shared memory (``/dev/shm/NAME``); any other name with a slash
is a file path, so a ring can live on hugetlbfs, a DMA-able device file (u-dma-buf)
or a regular disk file.

Like ``multiprocessing.shared_memory``, one constructor creates or attaches, ``close()``
(unmap) is separate from ``unlink()`` (remove the name), and closing is safe after a
half-finished setup. Segments are created owner-only (0600) unless a mode is given.
"""

from __future__ import annotations

import errno
import mmap
import os
import re
import stat
from typing import Any

from . import guard
from .errors import (
    ClosedError,
    CorruptSegmentError,
    FileAccessError,
    InvalidNameError,
    InvalidParameterError,
    PermissionDeniedError,
    RingExistsError,
    RingNotFoundError,
    SegmentTruncatedError,
)

SHM_DIR = "/dev/shm"
DEFAULT_MODE = 0o600
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}")


def resolve_path(name: str | os.PathLike[str]) -> str:
    """Map a ring name to its file. Names may not escape /dev/shm (no '..', no '/')."""
    name = os.fspath(name)
    if name.startswith("/") and name.count("/") == 1:
        # shm_open's spelling ("/md", as in multiprocessing.shared_memory): a shm name
        name = name[1:]
    elif "/" in name:
        if "\0" in name:
            raise InvalidNameError(f"ring path {name!r} contains a NUL byte")
        return os.path.abspath(name)
    if not _NAME_RE.fullmatch(name) or ".." in name:
        raise InvalidNameError(
            f"invalid ring name {name!r}: use 1-200 characters from [A-Za-z0-9_.-], not "
            f"starting with '.' or '-' and without '..' (or give a path containing '/')")
    return os.path.join(SHM_DIR, name)


def access_error(path: str, exc: OSError, what: str = "open") -> FileAccessError:
    """A FileAccessError naming ``path`` and the OS error (errno kept)."""
    cls = PermissionDeniedError if isinstance(exc, PermissionError) else FileAccessError
    reason = exc.strerror or str(exc)
    err = cls(f"cannot {what} {path}: {reason[:1].lower()}{reason[1:]}")
    err.errno = exc.errno
    return err


def check_room(path: str, size: int, what: str = "segment") -> None:
    """Refuse a ``size``-byte file in ``path``'s file system when it cannot hold it:
    a sparse segment larger than the free space is created without complaint and then
    kills its first writer with SIGBUS when a page cannot be allocated."""
    directory = os.path.dirname(path) or "."
    try:
        vfs = os.statvfs(directory)
    except OSError:
        return  # the create itself will say what is wrong with the directory
    free = vfs.f_bavail * vfs.f_frsize
    if vfs.f_blocks and size > free:
        raise InvalidParameterError(
            f"cannot create {path}: a {what} of {size} bytes does not fit, the file "
            f"system of {directory} has {free} bytes free")


def display_name(path: str) -> str:
    """The short name for a segment under /dev/shm, else the path."""
    if os.path.dirname(path) == SHM_DIR:
        return os.path.basename(path)
    return path


class Segment:
    """A mapped file. ``size`` is required to create, and checked when attaching.

    ``device`` (with ``create``): make the segment in an existing u-dma-buf buffer
    instead of a new file; the name becomes a link to the device (see pyshm.udmabuf) and
    :attr:`bus_address` is the buffer's bus address (0 for ordinary segments).
    """

    def __init__(self, name: str | os.PathLike[str], *, create: bool = False,
                 size: int | None = None, mode: int = DEFAULT_MODE, exist_ok: bool = False,
                 readonly: bool = False, prefault: bool = False,
                 device: str | os.PathLike[str] | None = None):
        self._fd = -1
        self._mmap: mmap.mmap | None = None
        self._guard = -1
        self.path = resolve_path(name)
        self.name = display_name(self.path)
        self.readonly = readonly
        self.created = False
        self.bus_address = 0
        try:
            if device is not None:
                if not create:
                    raise InvalidParameterError("device= is for creating a segment; attach "
                                                "to it by its name")
                self._create_in_device(os.fspath(device), size, exist_ok)
            else:
                self._open(create, size, mode, exist_ok, readonly)
            if prefault:
                self.prefault()
        except BaseException:
            self.close()
            if self.created:
                self.unlink()
            raise

    def _open(self, create: bool, size: int | None, mode: int, exist_ok: bool,
              readonly: bool) -> None:
        # O_NONBLOCK: opening a FIFO read-only would otherwise wait for a writer forever
        # (it is refused below as not a regular file); it changes nothing for a mapping
        cloexec = getattr(os, "O_CLOEXEC", 0) | os.O_NONBLOCK
        if create:
            if size is None or size <= 0:
                raise ValueError("creating a segment needs a positive size")
            check_room(self.path, size)
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | cloexec
            try:
                self._fd = os.open(self.path, flags, mode)
                self.created = True
            except FileExistsError:
                if not exist_ok:
                    raise RingExistsError(f"segment {self.name!r} already exists "
                                          f"({self.path}); attach to it or remove it "
                                          f"with `pyshm rm {self.name}`") from None
            except FileNotFoundError:
                raise RingNotFoundError(f"cannot create {self.path}: its directory does "
                                        f"not exist") from None
            except OSError as exc:
                raise access_error(self.path, exc, "create") from None
            if self.created:
                try:
                    os.fchmod(self._fd, mode)  # umask must not widen or narrow the request
                    os.ftruncate(self._fd, size)
                except OSError as exc:
                    raise access_error(self.path, exc, f"size to {size} bytes") from None
        if self._fd < 0:
            flags = (os.O_RDONLY if readonly else os.O_RDWR) | cloexec
            try:
                self._fd = os.open(self.path, flags)
            except FileNotFoundError:
                raise RingNotFoundError(f"no ring named {self.name!r} ({self.path} does "
                                        f"not exist)") from None
            except OSError as exc:
                raise access_error(self.path, exc) from None
        st = os.fstat(self._fd)
        if not stat.S_ISREG(st.st_mode) and not stat.S_ISCHR(st.st_mode):
            raise CorruptSegmentError(f"{self.path} is not a regular file or device")
        if stat.S_ISREG(st.st_mode):
            actual = st.st_size
        else:  # a device: a u-dma-buf buffer says its size in sysfs
            from .udmabuf import device_size
            actual = size or device_size(self.path) or 0
        if actual == 0:
            raise CorruptSegmentError(f"segment {self.name!r} is empty (0 bytes): not a ring")
        if size is not None and actual < size:
            raise CorruptSegmentError(f"segment {self.name!r} is {actual} bytes, "
                                      f"expected at least {size}")
        prot = mmap.PROT_READ | (0 if readonly else mmap.PROT_WRITE)
        try:
            self._mmap = mmap.mmap(self._fd, actual, mmap.MAP_SHARED, prot)
        except OSError as exc:
            raise access_error(self.path, exc, "map") from None
        self.size = actual
        # a truncated file must not kill this process with SIGBUS (pyshm.guard)
        self._guard = guard.register(self._mmap, readonly)

    @property
    def truncated(self) -> bool:
        """True once an access found the file shorter than this mapping (SIGBUS caught
        by pyshm.guard; the mapping now holds poisoned private pages)."""
        return guard.faulted(self._guard)

    def check_intact(self) -> None:
        """Raise :class:`SegmentTruncatedError` if the file was truncated under this
        mapping. Error paths call it, so the error names the cause."""
        if not self.truncated:
            return
        try:
            now = f"{os.stat(self.path).st_size} bytes"
        except OSError:
            now = "removed"
        raise SegmentTruncatedError(
            f"segment {self.name!r}: its file {self.path} was truncated while mapped "
            f"here (mapped {self.size} bytes, the file is now {now}); this process "
            f"stopped using it instead of dying with SIGBUS. Recreate or restore the "
            f"ring, then reattach")

    def _create_in_device(self, device: str, size: int | None, exist_ok: bool) -> None:
        from . import udmabuf

        if size is None or size <= 0:
            raise ValueError("creating a segment needs a positive size")
        dev = udmabuf.info(device)
        if size > dev.size:
            raise InvalidParameterError(f"a segment of {size} bytes does not fit the "
                                        f"u-dma-buf buffer {dev.device} ({dev.size} bytes)")
        if os.path.lexists(self.path):
            if exist_ok and os.path.realpath(self.path) == dev.device:
                self._open(False, size, DEFAULT_MODE, False, False)
                self.bus_address = dev.phys_addr
                return
            raise RingExistsError(f"segment {self.name!r} already exists ({self.path}); "
                                  f"remove it with `pyshm rm {self.name}`")
        try:
            self._fd = os.open(dev.device, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise access_error(dev.device, exc) from None
        self._mmap = mmap.mmap(self._fd, size, mmap.MAP_SHARED,
                               mmap.PROT_READ | mmap.PROT_WRITE)
        self.size = size
        from .layout import MAGIC, MAGIC_RESTORING, OFF_DATA
        head = bytes(self._mmap[:len(MAGIC)])
        if head == MAGIC:
            raise RingExistsError(f"{dev.device} already holds a ring; remove it by its name "
                                  f"with `pyshm rm NAME` (which clears the buffer's header) "
                                  f"before making another one there")
        if head == MAGIC_RESTORING:
            # a restore was interrupted there. In place, the ring keeps its name and
            # running the restore again is its recovery; a new ring's restore leaves at
            # most its temporary name. With no name left, the buffer is free
            names = udmabuf.names_linking_to(dev.device, os.path.dirname(self.path))
            if names:
                raise RingExistsError(
                    f"{dev.device} holds a ring whose restore was interrupted, still named "
                    f"{names[0]!r}: run that restore again (in place: `pyshm restore "
                    f"IMAGE --to {names[0]} --in-place`), or free the buffer with `pyshm "
                    f"rm --force {names[0]}`")
        self._mmap[:OFF_DATA] = bytes(OFF_DATA)  # no counter or slot of a previous use
        try:
            os.symlink(dev.device, self.path)
        except FileExistsError:
            raise RingExistsError(f"segment {self.name!r} already exists ({self.path})") \
                from None
        except OSError as exc:
            raise access_error(self.path, exc, "create") from None
        self.created = True
        self.bus_address = dev.phys_addr

    @property
    def buf(self) -> memoryview:
        """A memoryview of the whole mapping (ClosedError once closed)."""
        if self._mmap is None:
            raise ClosedError(f"segment {self.name!r} is closed")
        return memoryview(self._mmap)

    @property
    def mmap(self) -> mmap.mmap:
        """The mmap object itself."""
        if self._mmap is None:
            raise ClosedError(f"segment {self.name!r} is closed")
        return self._mmap

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._mmap is None

    def prefault(self, start: int = 0, end: int | None = None) -> None:
        """Touch every page now so that first-touch faults (~1 GB/s) never hit a copy."""
        m = self.mmap
        end = self.size if end is None else end
        if hasattr(m, "madvise") and hasattr(mmap, "MADV_POPULATE_WRITE") and not self.readonly:
            try:
                pg = mmap.PAGESIZE
                s = start // pg * pg
                m.madvise(mmap.MADV_POPULATE_WRITE, s, end - s)
                return
            except OSError as exc:
                if exc.errno in (errno.ENOMEM, errno.EFAULT, errno.ENOSPC):
                    # the pages cannot be allocated (file system full): touching them
                    # one by one would end in SIGBUS
                    raise access_error(self.path, exc, "allocate the pages of") from None
        if hasattr(m, "madvise") and hasattr(mmap, "MADV_WILLNEED"):
            try:
                m.madvise(mmap.MADV_WILLNEED)
            except OSError:
                pass
        view = memoryview(m)
        step = mmap.PAGESIZE
        if self.readonly:
            for off in range(start, end, step):
                view[off]
        else:
            for off in range(start, end, step):
                view[off] = view[off]  # a write fault maps the page writable
        view.release()

    def close(self) -> None:
        """Unmap and close; safe to call twice and after a failed constructor."""
        guard.unregister(self._guard)  # before unmapping: the range may be reused
        self._guard = -1
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:
                # a numpy array or memoryview still points into the mapping: leave the
                # mapping to be freed with it rather than crash the caller
                pass
            self._mmap = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def unlink(self) -> None:
        """Remove the name; processes that still map the segment keep their mapping.

        A name that links to a u-dma-buf buffer loses its link and the buffer its ring
        magic (so that a new ring can be made there); the device itself stays."""
        if os.path.islink(self.path):
            from .udmabuf import clear_ring_magic, sysfs_entry
            if sysfs_entry(self.path) is not None:
                clear_ring_magic(self.path)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> Segment:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"size={self.size}"
        return f"<Segment {self.name!r} {state}>"
