"""A ring file truncated while processes have it mapped: readers, producers, snapshots
and engines get a SegmentTruncatedError instead of dying with SIGBUS (pyshm.guard).
Each scenario runs in a child process, since before the fix SIGBUS killed it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from pyshm import Ring

CAP = 256 * 1024

CHILD = r'''
import json, os, sys
from pyshm import Ring, images
from pyshm.errors import SegmentTruncatedError
name, role, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
ring = Ring.attach(name)
out = {"role": role}
if role == "consumer":
    c = ring.consumer()
    out["before"] = sum(1 for _ in zip(range(10), c))
elif role == "producer":
    p = ring.producer()
print("ready", flush=True)
sys.stdin.readline()                      # the parent truncates the file meanwhile
try:
    if role == "consumer":
        while c.read_copy() is not None:
            pass
        out["result"] = "no error"
    elif role == "producer":
        for i in range(100000):
            if p.publish(b"after %d" % i * 20, timeout=0.01) < 0:
                break
        out["result"] = "no error"
    elif role == "snapshot":
        images.snapshot(ring, sys.argv[4])
        out["result"] = "no error"
except SegmentTruncatedError as exc:
    out["result"] = "SegmentTruncatedError"
    out["message"] = str(exc)
out["truncated"] = ring.segment.truncated
print(json.dumps(out), flush=True)
ring.close()
'''


@pytest.mark.parametrize("role", ["consumer", "producer", "snapshot"])
@pytest.mark.parametrize("size", [0, 4096 + CAP // 2])
def test_truncation_under_a_process_is_an_error_not_sigbus(ring_name, tmp_path, role, size):
    with Ring.create(ring_name, CAP) as r, r.producer() as p:
        for i in range(3000):
            p.publish(b"%06d" % i * 12)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, ring_name, role, str(size),
                             str(tmp_path / "x.pyimg")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd="/")
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr
        os.truncate(f"/dev/shm/{ring_name}", size)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != -signal.SIGBUS, "killed by SIGBUS"
    assert proc.returncode == 0, err
    got = json.loads(out.strip().splitlines()[-1])
    assert got["result"] == "SegmentTruncatedError", got
    assert got["truncated"] and "was truncated" in got["message"]
    assert f"/dev/shm/{ring_name}" in got["message"]


def test_a_fault_outside_pyshm_mappings_still_kills(tmp_path, ring_name):
    # the handler only acts inside pyshm mappings: any other SIGBUS keeps its default
    code = r'''
import mmap, os, sys
from pyshm import Ring
Ring.attach(sys.argv[1]).close()          # the guard is installed
path = sys.argv[2]
with open(path, "wb") as f:
    f.write(b"x" * 8192)
fd = os.open(path, os.O_RDWR)
m = mmap.mmap(fd, 8192)
os.truncate(path, 0)
m[5000]                                    # not a pyshm mapping: SIGBUS as always
'''
    Ring.create(ring_name, CAP).close()
    r = subprocess.run([sys.executable, "-c", code, ring_name, str(tmp_path / "f")],
                       capture_output=True, cwd="/", timeout=60)
    # chained to the previous handler: the default (death by SIGBUS), or AddressSanitizer
    # under `make test-asan`, which reports the SIGBUS and aborts
    asan = b"AddressSanitizer" in r.stderr and b"BUS" in r.stderr
    assert r.returncode == -signal.SIGBUS or (r.returncode == -signal.SIGABRT and asan), \
        r.stderr[-500:]
