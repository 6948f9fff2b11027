"""Shared fixtures: a unique ring name per test, and /dev/shm left clean afterwards."""

from __future__ import annotations

import glob
import os
import uuid
from collections.abc import Iterator

import pytest
from natsfix import nats_cluster, nats_server, procs  # noqa: F401  (NATS servers, bridges)

SHM_DIR = "/dev/shm"


@pytest.fixture(autouse=True, scope="session")
def ip_lock_dir(tmp_path_factory) -> Iterator[str]:
    """The board IP locks (pyshm.driver.owner) of this run, in a directory of its own: the
    simulated IPs of every test run on the machine share their register addresses, and
    a run must not find another run's copier holding them. Children inherit it."""
    path = str(tmp_path_factory.mktemp("iplocks"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYSHM_IP_LOCK_DIR", path)
        yield path


@pytest.fixture
def shm_prefix() -> Iterator[str]:
    """A prefix unique to this test; every /dev/shm entry starting with it is removed
    at teardown (rings, replicas, anything a subprocess created under that prefix)."""
    prefix = f"pyshmtest_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    yield prefix
    for path in glob.glob(os.path.join(SHM_DIR, prefix + "*")):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


@pytest.fixture
def ring_name(shm_prefix: str) -> str:
    """A /dev/shm name no other test uses; removed after the test."""
    return shm_prefix + "_ring"


@pytest.fixture
def replica_name(shm_prefix: str) -> str:
    return shm_prefix + "_replica"


@pytest.fixture
def names(ring_name: str, replica_name: str) -> list[str]:
    """[ring name, replica name], both removed after the test."""
    return [ring_name, replica_name]


@pytest.fixture
def new_name(shm_prefix: str):
    """A factory of /dev/shm names unique to this test, all removed after it."""
    count = iter(range(1 << 30))
    return lambda: f"{shm_prefix}_{next(count)}"


@pytest.fixture
def fake_udmabuf(tmp_path, monkeypatch):
    """make(name, size, phys, dma_coherent=None) -> device path: a plain file standing for
    /dev/<name>, described under a fake /sys (PYSHM_SYSFS) as a u-dma-buf buffer of that
    size at bus address ``phys`` (with a ``dma_coherent`` attribute when given), since no
    u-dma-buf module runs on the CI machine."""
    sysfs = tmp_path / "sys"
    monkeypatch.setenv("PYSHM_SYSFS", str(sysfs))

    def make(name: str, size: int, phys: int, dma_coherent: int | None = None) -> str:
        dev = tmp_path / name
        with open(dev, "wb") as f:
            f.truncate(size)
        entry = sysfs / "class" / "u-dma-buf" / name
        entry.mkdir(parents=True)
        (entry / "phys_addr").write_text(f"0x{phys:x}\n")
        (entry / "size").write_text(f"{size}\n")
        if dma_coherent is not None:
            (entry / "dma_coherent").write_text(f"{dma_coherent}\n")
        return str(dev)
    return make
