"""Instructions per hot call of the ring's C extension, counted by callgrind (noise-free).

Timings on a shared machine are noisy; instruction counts are not, so they show whether
a change made a hot call cheaper or dearer. Each call (publish of 64 bytes, read, read
with ``timeout=None`` and a record waiting, read_into, read_copy) runs N times in a child
under ``valgrind --tool=callgrind``; the inclusive count of the extension function behind
it (``Writer_publish``, ``Reader_read``, ...), divided by N, is the figure: the call's
cost from its vectorcall entry to its return, Python's loop around it not included.
``--baseline DIR`` counts another build in the same run (DIR holds a ``pyshm`` package,
made with ``pip install --target DIR <checkout>``): a before/after comparison.

Usage::

    python bench/ring_instr.py [--n 20000] [--baseline DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import RESULTS_DIR, table, write_json  # noqa: E402

CHILD = r'''
import os, sys
from pyshm import Ring

op, n = sys.argv[1], int(sys.argv[2])
ring = Ring(f"pyshm-instr-{os.getpid()}", create=True, capacity=1 << 25)
ring.unlink()
p, c = ring.producer(), ring.consumer("oldest")
payload, buf, pub = b"x" * 64, bytearray(256), p.publish
for _ in range(n):  # reads need records waiting; publish counts these calls
    pub(payload)
if op == "read":
    rd = c.read
    for _ in range(n):
        rd()
elif op == "read_wait":
    rd = c.read
    for _ in range(n):
        rd(None)
elif op == "read_into":
    rd = c.read_into
    for _ in range(n):
        rd(buf)
elif op == "read_copy":
    rd = c.read_copy
    for _ in range(n):
        rd()
ring.close()
'''

# the call -> the extension function whose inclusive count is its cost
CALLS = {"publish": "Writer_publish", "read": "Reader_read", "read_wait": "Reader_read",
         "read_into": "Reader_read_into", "read_copy": "Reader_read_copy"}


def count(op: str, n: int, pythonpath: str | None, workdir: str) -> float:
    out = os.path.join(workdir, f"callgrind.{op}.{os.getpid()}")
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    run = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                          sys.executable, "-c", CHILD, op, str(n)],
                         env=env, cwd=workdir, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"{op}: the child under callgrind failed:\n{run.stderr[-2000:]}")
    ann = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", out],
                         capture_output=True, text=True, check=True).stdout
    fn = CALLS[op]
    m = re.search(r"^\s*([\d,]+) .*:" + fn + r" \[", ann, re.M)
    if not m:
        raise RuntimeError(f"{op}: no {fn} in the profile (a build without symbols?)")
    return int(m.group(1).replace(",", "")) / n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000, help="calls per count (default 20000)")
    ap.add_argument("--baseline", metavar="DIR",
                    help="also count the build in DIR (a pip --target directory)")
    ap.add_argument("--json", default=os.path.join(RESULTS_DIR, "ring_instr.json"))
    a = ap.parse_args(argv)
    for tool in ("valgrind", "callgrind_annotate"):
        if shutil.which(tool) is None:
            ap.error(f"{tool} is not installed (apt-get install valgrind)")
    builds = {"this": None}
    if a.baseline:
        if not os.path.isdir(os.path.join(a.baseline, "pyshm")):
            ap.error(f"--baseline {a.baseline}: no pyshm package in that directory")
        builds["baseline"] = os.path.abspath(a.baseline)
    res: dict[str, dict[str, float]] = {b: {} for b in builds}
    with tempfile.TemporaryDirectory(prefix="pyshm_instr_") as work:
        for op in CALLS:
            for b, path in builds.items():
                res[b][op] = count(op, a.n, path, work)
    rows = [[op] + [f"{res[b][op]:.1f}" for b in builds] +
            ([f"{res['this'][op] / res['baseline'][op]:.3f}"] if a.baseline else [])
            for op in CALLS]
    print(table(["call (instructions per call)"] + list(builds) +
                (["this / baseline"] if a.baseline else []), rows))
    write_json(a.json, {"benchmark": "ring_instr", "n": a.n, "unit": "instructions/call",
                        "builds": {b: ("the installed pyshm" if p is None else
                                       "the --baseline directory") for b, p in builds.items()},
                        "results": res})
    print(f"load average {os.getloadavg()[0]:.2f} (instruction counts do not depend on it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
