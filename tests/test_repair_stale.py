"""``pyshm ls`` and ``pyshm rm --stale`` with real processes, alive and killed.

Only names made by this test are ever passed to ``rm --stale``: /dev/shm is shared with
whatever else runs on the machine, and a test must not remove other people's rings.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from pyshm import Ring
from pyshm.cli import main as cli_main
from pyshm.repair import list_segments, read_segment_info, remove_stale

WORKER = r'''
import json, sys, time
from pyshm import Ring
from pyshm.replica import Replica
role, name = sys.argv[1], sys.argv[2]
if role == "create":
    Ring.create(name, 16 * 1024, ephemeral=True).close()
elif role == "create-persistent":
    Ring.create(name, 16 * 1024).close()
elif role == "create-stay":
    r = Ring.create(name, 16 * 1024, ephemeral=True)
elif role == "producer":
    r = Ring.attach(name); p = r.producer(); p.publish(b"x")
elif role == "consumer":
    r = Ring.attach(name); c = r.consumer()
elif role == "replica":
    Replica.create(name, Ring.attach(sys.argv[3]), ephemeral=True).close()
print(json.dumps({"ok": True}), flush=True)
if role not in ("create", "create-persistent", "replica"):
    time.sleep(120)
'''


@pytest.fixture
def run(tmp_path):
    path = tmp_path / "w.py"
    path.write_text(WORKER)
    procs: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, str(path), *args], cwd=tmp_path,
                             stdout=subprocess.PIPE, text=True)
        procs.append(p)
        assert p.stdout is not None and p.stdout.readline(), "worker failed"
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)


def kill9(p: subprocess.Popen) -> None:
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=10)


def test_ls_and_rm_stale(shm_prefix, run, capsys):
    n = {k: f"{shm_prefix}_{k}" for k in
         ("dead", "creator", "producer", "consumer", "killed", "replica", "other",
          "kept")}
    run("create", n["dead"]).wait(timeout=10)                # everybody gone
    run("create-persistent", n["kept"]).wait(timeout=10)     # gone, but persistent
    run("create-stay", n["creator"])                         # creator alive
    run("create", n["producer"]).wait(timeout=10)
    run("producer", n["producer"])                           # producer alive
    run("create", n["consumer"]).wait(timeout=10)
    run("consumer", n["consumer"])                           # consumer alive
    run("create", n["killed"]).wait(timeout=10)
    kill9(run("producer", n["killed"]))                      # producer killed -9
    run("replica", n["replica"], n["dead"]).wait(timeout=10)  # replica, creator exited
    with open(f"/dev/shm/{n['other']}", "wb") as f:          # not a pyshm segment
        f.write(b"\0" * 8192)

    infos = {i.name: i for i in list_segments() if i.name.startswith(shm_prefix)}
    assert set(infos) == {n[k] for k in n if k != "other"}
    assert infos[n["replica"]].kind == "replica"
    assert {k for k in n if k != "other" and infos[n[k]].stale} == {"dead", "killed",
                                                                      "replica"}
    assert infos[n["killed"]].producer_pid and not infos[n["killed"]].producer_alive
    assert infos[n["consumer"]].consumers[0]["alive"]
    assert all(i.mode == 0o600 for i in infos.values())

    assert cli_main(["ls", "--json"]) == 0
    listed = {d["name"]: d for d in json.loads(capsys.readouterr().out)}
    assert listed[n["killed"]]["stale"] and not listed[n["creator"]]["stale"]
    assert cli_main(["ls"]) == 0
    table = capsys.readouterr().out
    assert n["other"] not in table and f"{n['producer']} " in table

    names = list(n.values())
    assert cli_main(["rm", "--stale", "--dry-run", *names]) == 0
    assert "would remove" in capsys.readouterr().out
    assert all(os.path.exists(f"/dev/shm/{x}") for x in names)
    assert cli_main(["rm", "--stale", *names]) == 0
    left = {x for x in names if os.path.exists(f"/dev/shm/{x}")}
    assert left == {n["creator"], n["producer"], n["consumer"], n["other"], n["kept"]}
    # the live rings still work
    with Ring.attach(n["producer"]) as r:
        assert r.tail > 0


def test_reused_creator_pid_does_not_keep_a_ring_alive(ring_name):
    # A ring whose creator pid now belongs to a process that started after the ring was
    # created: pid reuse, not the creator. Our own pid with a creation time in the past.
    with Ring.create(ring_name, 16 * 1024, ephemeral=True) as r:
        r.segment.buf[0x20:0x28] = (10**9).to_bytes(8, "little")  # created in 1970
    info = read_segment_info(f"/dev/shm/{ring_name}")
    assert info is not None and info.creator_pid == os.getpid()
    assert not info.creator_alive and info.stale
    assert [i.name for i in remove_stale([ring_name])] == [ring_name]
    assert not os.path.exists(f"/dev/shm/{ring_name}")


def test_damaged_header_is_listed_not_removed(ring_name):
    with Ring.create(ring_name, 16 * 1024) as r:
        r.segment.buf[0x10:0x18] = (12345).to_bytes(8, "little")  # capacity not a power of 2
    info = read_segment_info(f"/dev/shm/{ring_name}")
    assert info is not None and "capacity" in info.error and not info.stale
    assert remove_stale([ring_name]) == []
    assert os.path.exists(f"/dev/shm/{ring_name}")


def test_symlink_in_shm_is_not_followed(shm_prefix, tmp_path):
    target = tmp_path / "ring"
    with Ring.create(str(target), 16 * 1024):
        pass
    link = f"/dev/shm/{shm_prefix}_link"
    os.symlink(target, link)
    assert read_segment_info(link) is None
    assert remove_stale([f"{shm_prefix}_link"]) == []
    assert target.exists()
