"""Rings and replicas in u-dma-buf buffers: physically contiguous memory an FPGA can reach.

The ring-mirror IP needs bus addresses, and memory that consumers in other processes can
still map; the u-dma-buf kernel module gives both: ``/dev/udmabufN`` is a character
device whose mapping is a contiguous buffer, described in sysfs::

    /sys/class/u-dma-buf/udmabufN/phys_addr    bus address of the buffer (hex)
    /sys/class/u-dma-buf/udmabufN/size         its size in bytes

A ring is *created in* such a buffer (``pyshm create md --udmabuf /dev/udmabuf0``,
``Ring("md", create=True, capacity=..., device="/dev/udmabuf0")``): its header is
written at the start of the buffer, with the data area's bus address in
``data_phys_addr`` (0x060) so that engines and tools find it without sysfs, and the name
``md`` becomes a symbolic link ``/dev/shm/md -> /dev/udmabuf0``, so that every command
and ``Ring("md")`` attach to it by name. ``pyshm rm md`` removes the link, never the
device. ``PYSHM_SYSFS`` replaces ``/sys`` (tests use a fake tree).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from .errors import InvalidParameterError

CLASS_DIRS = ("class/u-dma-buf", "class/udmabuf")  # module versions spell it both ways
PAGE = 4096


def sysfs_root() -> str:
    """``$PYSHM_SYSFS`` or ``/sys``."""
    return os.environ.get("PYSHM_SYSFS", "/sys")


@dataclass(frozen=True)
class UdmabufInfo:
    """What sysfs says about one u-dma-buf device."""

    device: str      # the device file, symlinks resolved
    phys_addr: int   # bus address of the buffer's first byte
    size: int        # bytes


def sysfs_entry(device: str) -> str | None:
    """The sysfs directory describing ``device`` (by its file name), or None."""
    name = os.path.basename(os.path.realpath(device))
    for cls in CLASS_DIRS:
        entry = os.path.join(sysfs_root(), cls, name)
        if os.path.isdir(entry):
            return entry
    return None


def info(device: str | os.PathLike[str]) -> UdmabufInfo:
    """Bus address and size of a u-dma-buf device; a clear error if it is not one."""
    path = os.path.realpath(os.fspath(device))
    if not os.path.exists(path):
        raise InvalidParameterError(f"u-dma-buf device {os.fspath(device)} does not exist "
                                    f"(is the u-dma-buf module loaded with a buffer of that "
                                    f"name? see docs/driver.md)")
    mode = os.stat(path).st_mode
    if not (stat.S_ISCHR(mode) or stat.S_ISREG(mode)):
        raise InvalidParameterError(f"{path} is not a device file")
    entry = sysfs_entry(path)
    if entry is None:
        raise InvalidParameterError(
            f"{path} is not a u-dma-buf device: no "
            f"{os.path.join(sysfs_root(), CLASS_DIRS[0], os.path.basename(path))} in sysfs")
    values = {}
    for attr in ("phys_addr", "size"):
        try:
            with open(os.path.join(entry, attr)) as f:
                values[attr] = int(f.read().strip(), 0)
        except (OSError, ValueError) as exc:
            raise InvalidParameterError(f"{path}: cannot read the u-dma-buf attribute "
                                        f"{os.path.join(entry, attr)} ({exc})") from None
    phys, size = values["phys_addr"], values["size"]
    if phys % PAGE or phys <= 0:
        raise InvalidParameterError(f"{path}: bus address 0x{phys:x} is not 4 KiB aligned; "
                                    f"the ring-mirror IP needs page-aligned buffers")
    if size <= 0:
        raise InvalidParameterError(f"{path}: u-dma-buf size {size} is not positive")
    return UdmabufInfo(path, phys, size)


def dma_coherent(device: str) -> bool | None:
    """The u-dma-buf ``dma_coherent`` attribute of ``device`` (set by the device tree's
    ``dma-coherent`` property), or None when the module does not report it."""
    entry = sysfs_entry(device)
    if entry is None:
        return None
    try:
        with open(os.path.join(entry, "dma_coherent")) as f:
            return bool(int(f.read().strip() or "0", 16))
    except (OSError, ValueError):
        return None


def device_size(path: str) -> int | None:
    """The size of the u-dma-buf buffer behind ``path`` (a device or a link to one), or
    None when sysfs does not describe it."""
    if sysfs_entry(path) is None:
        return None
    try:
        return info(path).size
    except InvalidParameterError:
        return None


def clear_ring_magic(link: str) -> None:
    """Zero the ring magic (or an interrupted restore's) at the start of the buffer
    ``link`` points to (best effort: a buffer that cannot be opened keeps it, and `pyshm
    create` will then say so)."""
    import mmap

    from .layout import MAGIC, MAGIC_RESTORING

    try:
        fd = os.open(os.path.realpath(link), os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return
    try:
        with mmap.mmap(fd, PAGE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as m:
            if m[:len(MAGIC)] in (MAGIC, MAGIC_RESTORING):
                m[:len(MAGIC)] = bytes(len(MAGIC))
    except (OSError, ValueError):
        pass
    finally:
        os.close(fd)


def is_device_link(path: str) -> bool:
    """True for a ring name made with ``device=`` (a link to a u-dma-buf buffer)."""
    return os.path.islink(path) and sysfs_entry(path) is not None


def names_linking_to(device: str, directory: str) -> list[str]:
    """The ring names in ``directory`` that are links to the buffer ``device``."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    return sorted(e.name for e in entries
                  if e.is_symlink() and os.path.realpath(e.path) == device)


def remove(name: str | os.PathLike[str], *, force: bool = False, dry_run: bool = False) -> str:
    """``pyshm rm NAME`` for a ring in a u-dma-buf buffer: refuse while a live producer
    or consumer uses it (unless ``force``), then clear the buffer's ring magic and remove
    the link. The device stays. Returns the device path."""
    from .errors import ProducerBusyError
    from .ring import Ring, pid_alive
    from .segment import resolve_path

    path = resolve_path(name)
    device = os.path.realpath(path)
    if not force:
        with Ring(path, readonly=True) as ring:
            users = [f"producer pid {ring.producer_pid}"] if ring.producer_pid and \
                pid_alive(ring.producer_pid) else []
            users += [f"consumer pid {s['pid']}" for s in ring.slots() if s["alive"]]
        if users:
            raise ProducerBusyError(f"{os.fspath(name)} (in {device}) is in use by "
                                    f"{', '.join(users)}; not removed (stop them first, or "
                                    f"pass --force)")
    if not dry_run:
        clear_ring_magic(path)
        os.unlink(path)
    return device
