"""pyshm run: the supervisor with real processes (engine children, kill -9, signals)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pyshm import images
from pyshm.replica import Replica
from pyshm.ring import Ring


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def read_status(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_config(tmp_path, max_restarts=10, extra_ring="", interval="1h"):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"""\
name: sup
state_dir: state
rings:
  - name: {tmp_path}/md
    capacity: 256K
    max_record: 1K
    existing: fail
    replica: {{name: {tmp_path}/md.replica, engine: cpu, sync_timeout: 5s}}
    snapshots: {{directory: images, interval: {interval}, keep: 3}}
{extra_ring}
supervisor: {{restart_delay: 100ms, max_restarts: {max_restarts}, check_interval: 50ms}}
metrics: {{status_interval: 100ms, listen: "127.0.0.1:0"}}
""")
    return cfg


def start(cfg, tmp_path):
    log = open(tmp_path / "supervisor.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "pyshm", "run", str(cfg)], cwd=tmp_path,
                            stdout=log, stderr=subprocess.STDOUT)
    return proc, tmp_path / "supervisor.log"


def engine_state(status_path, ring):
    st = read_status(status_path)
    if not st:
        return None
    return st["rings"][ring]["engine"]


def publish(ring, first, count):
    prod = ring.producer()
    for i in range(first, first + count):
        assert prod.publish(f"tick {i}".encode() * 3, type=7) == i
    prod.close()


@pytest.fixture
def stop_on_exit():
    procs = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def test_restarts_a_killed_engine_and_replication_continues(tmp_path, stop_on_exit):
    cfg = write_config(tmp_path, interval="300ms")
    ring_name = f"{tmp_path}/md"
    proc, log = start(cfg, tmp_path)
    stop_on_exit.append(proc)
    status = tmp_path / "state" / "sup.status.json"
    first = wait_for(lambda: (e := engine_state(status, ring_name)) and e["state"] == "running"
                     and e["stats"] and e, 30, "the engine to run and report")
    pid1 = first["pid"]
    assert first["name"] == "cpu" and first["restarts"] == 0

    ring = Ring(ring_name)
    publish(ring, 0, 500)
    wait_for(lambda: ring.mirrored == ring.tail, 20, "the first 500 records to be mirrored")

    os.kill(pid1, signal.SIGKILL)
    again = wait_for(lambda: (e := engine_state(status, ring_name)) and e["pid"] != pid1
                     and e["state"] == "running" and e["stats"] and e, 30, "a new engine")
    assert again["restarts"] == 1 and again["last_exit"] == -signal.SIGKILL
    with pytest.raises(ProcessLookupError):
        os.kill(pid1, 0)
    # the endpoint shows the restart (port 0: the status file names the real one)
    url = read_status(status)["metrics"]
    fams = {f.name: f for f in text_string_to_metric_families(
        urllib.request.urlopen(url, timeout=10).read().decode())}
    restarts = [x.value for x in fams["pyshm_engine_restarts"].samples
                if x.labels["ring"] == ring_name and x.name.endswith("_total")]
    assert restarts == [1.0]

    publish(ring, 500, 700)
    wait_for(lambda: ring.mirrored == ring.tail, 20, "records after the restart to be mirrored")
    # scheduled snapshots of the live replica go through the engine child (paused copy)
    snaps = wait_for(lambda: (st := read_status(status)) and
                     st["rings"][ring_name]["snapshots"]["count"] >= 2 and
                     st["rings"][ring_name]["snapshots"], 30, "two scheduled snapshots")
    assert snaps["failures"] == 0, snaps["last_error"]
    with Replica.open(f"{tmp_path}/md.replica") as rep:
        recs = rep.records()
        assert [r.sequence for r in recs] == list(range(1200))
        assert recs[1100].payload == b"tick 1100" * 3 and recs[1100].type == 7

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    text = log.read_text()
    assert "killed by signal 9; restarting" in text and "final snapshot" in text
    imgs = sorted((tmp_path / "images").iterdir())
    assert 1 <= len(imgs) <= 3  # retention: keep 3
    with images.ImageReader(str(imgs[-1])) as reader:  # the final one, after the last sync
        assert reader.header.next_sequence == 1200
    assert not status.exists()  # a clean stop removes the status file
    ring.close()


def test_gives_up_after_the_restart_budget(tmp_path, stop_on_exit):
    cfg = write_config(tmp_path, max_restarts=0)
    proc, log = start(cfg, tmp_path)
    stop_on_exit.append(proc)
    status = tmp_path / "state" / "sup.status.json"
    eng = wait_for(lambda: (e := engine_state(status, f"{tmp_path}/md")) and e["stats"] and e,
                   30, "the engine")
    os.kill(eng["pid"], signal.SIGKILL)
    assert proc.wait(30) == 1
    assert "0 restarts in 60 s, giving up" in log.read_text()


def test_existing_ring_with_other_parameters_is_refused(tmp_path):
    with Ring(f"{tmp_path}/md", create=True, capacity=64 << 10):
        pass
    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text().replace("existing: fail", "existing: attach"))
    r = subprocess.run([sys.executable, "-m", "pyshm", "run", str(cfg)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "exists with other parameters: capacity 65536 (config 262144)" in r.stderr


def test_existing_fail_policy(tmp_path):
    with Ring(f"{tmp_path}/md", create=True, capacity=256 << 10, max_record=1024):
        pass
    r = subprocess.run([sys.executable, "-m", "pyshm", "run", str(write_config(tmp_path))],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "already exists and existing: fail" in r.stderr


def test_invalid_config_does_not_start(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("rings: [{name: x, capacity: 5K}]\n")
    r = subprocess.run([sys.executable, "-m", "pyshm", "run", str(cfg)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "rings[0].capacity" in r.stderr
    assert "example:" in subprocess.run([sys.executable, "-m", "pyshm", "run", "--help"],
                                        cwd=tmp_path, capture_output=True, text=True,
                                        timeout=60).stdout


def test_engine_stops_when_the_supervisor_is_killed(tmp_path, stop_on_exit):
    cfg = write_config(tmp_path)
    proc, _ = start(cfg, tmp_path)
    stop_on_exit.append(proc)
    status = tmp_path / "state" / "sup.status.json"
    eng = wait_for(lambda: (e := engine_state(status, f"{tmp_path}/md")) and e["stats"] and e,
                   30, "the engine")
    proc.kill()
    proc.wait(10)

    def gone():
        try:
            os.kill(eng["pid"], 0)
        except ProcessLookupError:
            return True
        try:  # a zombie (not yet reaped by init) counts as gone
            with open(f"/proc/{eng['pid']}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    wait_for(gone, 20, "the orphaned engine to stop")


def test_unchanged_ring_is_not_snapshotted_again(tmp_path, caplog):
    from pyshm.config import loads
    from pyshm.supervisor import Supervisor

    (tmp_path / "images").mkdir()
    cfg = loads(f"""
name: idle
state_dir: {tmp_path}/state
rings:
  - name: {tmp_path}/md
    capacity: 64K
    unlink_on_exit: true
    snapshots: {{directory: {tmp_path}/images, interval: 1h, keep: 5}}
""", source="test")
    sup = Supervisor(cfg)
    sup.start()
    try:
        sched = sup.snapshots[f"{tmp_path}/md"]
        first = sched.take()
        assert first is not None
        with caplog.at_level("DEBUG", logger="pyshm"):
            assert sched.take() is None and sched.take() is None
        assert sched.status()["skipped_unchanged"] == 2 and sched.count == 1
        notes = [r.getMessage() for r in caplog.records if "unchanged since" in r.getMessage()]
        assert len(notes) == 2 and [r.levelname for r in caplog.records
                                    if "unchanged since" in r.getMessage()] == ["INFO", "DEBUG"]
        ring = Ring(f"{tmp_path}/md")
        publish(ring, 0, 3)
        ring.close()
        second = sched.take()
        assert second is not None and second != first and sched.count == 2
    finally:
        sup.shutdown()
    imgs = sorted((tmp_path / "images").iterdir())
    assert len(imgs) == 2  # the final snapshot on shutdown found nothing new either
