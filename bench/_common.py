"""Helpers shared by the benchmark scripts in bench/.

The machine these run on is small and shared (2 cores, other people's jobs), so every
figure is a median over several interleaved rounds, the load average is written next to
it, and results are ratios against a baseline measured in the same run rather than
absolute times compared across runs.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from typing import Any

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def percentiles(samples: Sequence[float], qs: Iterable[float]) -> dict[str, float]:
    """Nearest-rank percentiles, keyed "p50", "p99", "p99.9", ... (samples need not be sorted).

    Nearest rank (not interpolation) so a reported tail value is one that really happened.
    """
    if not samples:
        raise ValueError("percentiles of an empty sample")
    ordered = sorted(samples)
    n = len(ordered)
    out: dict[str, float] = {}
    for q in qs:
        if not 0 <= q <= 100:
            raise ValueError(f"percentile {q} outside [0, 100]")
        rank = max(1, -(-q * n // 100))  # ceil(q/100 * n), at least the first sample
        key = f"p{q:g}"
        out[key] = ordered[int(rank) - 1]
    return out


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def cpus() -> list[int]:
    """The CPUs this process may run on, sorted."""
    return sorted(os.sched_getaffinity(0))


def pin(cpu: int | None) -> None:
    """Pin the calling process to one CPU (None: leave it alone)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def pair_cpus() -> tuple[int | None, int | None]:
    """Two different CPUs for a two-process benchmark, or (None, None) on one CPU."""
    avail = cpus()
    if len(avail) < 2:
        return None, None
    return avail[0], avail[1]


def interleaved(rounds: int, items: Sequence[Any]) -> Iterable[tuple[int, Any]]:
    """Yield (round, item) with every item once per round, in a rotated order.

    Rotating the start point means no peer is always measured first (cold) or always right
    after the same noisy neighbour, so drift in machine load spreads over all of them.
    """
    n = len(items)
    for r in range(rounds):
        for i in range(n):
            yield r, items[(i + r) % n]


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=os.path.dirname(os.path.abspath(__file__)))
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def machine_info() -> dict[str, Any]:
    """What a reader needs to judge a figure: CPU, cores, load, versions."""
    model = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "cpus_allowed": cpus(),
        "loadavg": list(os.getloadavg()),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git_commit": _git_commit(),
        "time_unix": time.time(),
    }


def write_json(path: str, payload: dict[str, Any]) -> str:
    """Write results with machine info (load sampled at the end, too) atomically."""
    doc = {"machine": machine_info(), **payload}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)
    return path


def spin_until(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    """Busy-poll ``pred`` until it returns something truthy; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        for _ in range(1024):
            v = pred()
            if v:
                return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def fmt_ns(ns: float | None) -> str:
    if ns is None:
        return "-"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} us"
    return f"{ns:.0f} ns"


def fmt_rate(per_s: float | None) -> str:
    if per_s is None:
        return "-"
    if per_s >= 1e6:
        return f"{per_s / 1e6:.2f} M/s"
    return f"{per_s / 1e3:.0f} k/s"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain aligned text table (first column left, others right)."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]
    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
    out = [line(headers), line(["-" * w for w in widths])]
    out.extend(line(r) for r in rows)
    return "\n".join(out)


def isolated(fn: Callable[[], None], deadline: float) -> tuple[str, str]:
    """("ok"|"crash"|"hang"|"exception", detail) of fn in a forked child.

    A pyshm error is "ok" (bad input refused by name); any other exception, a signal or
    no answer within ``deadline`` seconds is the finding. Shared by bench/fuzz.py and
    tests/test_fuzz.py.
    """
    from pyshm.errors import PyshmError

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 0
        try:
            fn()
        except PyshmError:  # a clear, named refusal is the right answer
            pass
        except BaseException:
            os.write(w, traceback.format_exc().encode()[-4000:])
            code = 3
        os._exit(code)
    os.close(w)
    end = time.monotonic() + deadline
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > end:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(r)
            return "hang", ""
        time.sleep(0.0005)
    msg = os.read(r, 8000).decode(errors="replace")
    os.close(r)
    if os.WIFSIGNALED(status):
        return "crash", f"signal {os.WTERMSIG(status)}"
    return ("ok", "") if os.WEXITSTATUS(status) == 0 else ("exception", msg)
