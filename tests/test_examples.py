"""Every Python example in examples/ runs as a user would run it, and leaves nothing behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def leftovers(prefix: str) -> list[str]:
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(prefix))


def test_every_example_is_tested():
    tested = {"producer.py", "consumer.py", "replicate_snapshot_restore.py", "supervisor.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested
    for p in EXAMPLES.glob("*.py"):
        assert p.read_text().startswith('"""'), f"{p.name}: say what it shows, how to run it"


def test_producer_and_consumer_side_by_side(shm_prefix, tmp_path):
    ring = f"{shm_prefix}.ticks"
    producer = subprocess.Popen([sys.executable, str(EXAMPLES / "producer.py"), ring,
                                 "--count", "3000", "--rate", "20000"], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(f"/dev/shm/{ring}") and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)  # the header is written right after the file appears
        consumer = run("consumer.py", ring, "--count", "3000", cwd=tmp_path)
        out, err = producer.communicate(timeout=60)
    finally:
        producer.kill()
        producer.wait()
    assert producer.returncode == 0, err
    assert "published 3000 ticks" in out and "last sequence 2999" in out
    assert consumer.returncode == 0, consumer.stderr
    assert re.search(r"read 3000 ticks .* lost 0 to overruns", consumer.stdout), consumer.stdout
    # run again: the producer attaches to the ring it made and continues the sequence
    again = run("producer.py", ring, "--count", "10", "--rate", "1e6", cwd=tmp_path)
    assert again.returncode == 0 and "last sequence 3009" in again.stdout, again.stderr


def test_replicate_snapshot_restore(shm_prefix, tmp_path):
    for _ in range(2):  # runs again: it removed everything it made
        r = run("replicate_snapshot_restore.py", shm_prefix, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert "replica holds 1000 records" in r.stdout
        assert "the next publish got sequence 1000" in r.stdout
        assert "auto picked" in r.stderr  # auto says which engine, no logging set up
        assert leftovers(shm_prefix) == []


def test_supervisor(shm_prefix, tmp_path):
    r = run("supervisor.py", shm_prefix, "--seconds", "2.5", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    m = re.search(r"engine cpu running, (\d+) records mirrored, restarts 0; snapshots taken "
                  r"(\d+)", r.stdout)
    assert m and int(m.group(1)) > 0 and int(m.group(2)) >= 1, r.stdout
    assert "images kept: 2" in r.stdout or "images kept: 1" in r.stdout, r.stdout
    assert leftovers(shm_prefix) == []
