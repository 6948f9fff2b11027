"""Native baselines for bench/ring.py, compiled on the spot with the system C compiler.

* ``c_floor(cpus, n)``: the physical floor. Two processes ping-pong a counter through one
  shared cache line, busy polling, no Python anywhere; one-way = round trip / 2.
* ``futex_wake_floor(cpus, n, idle, seed)``: the floor of a wake-up. One process sleeps
  in FUTEX_WAIT on a word of a shared mapping; the other, every 1-3 ms, stamps the time,
  bumps the word and FUTEX_WAKEs it; latency = the sleeper's time after the wait - the
  stamp. What the ``block`` wait strategy cannot beat on this kernel and VM.
* ``FeaturelessRing``: the best a Python program can expect from a native ring: a
  single-producer single-consumer byte ring in C (length-prefixed records, a wrap
  marker, two counters on their own cache lines, nothing validated), called through
  cffi, with the wait loop in C. What pyshm adds on top of this is the price of its
  features (sequences, seqlock check, validation of every shared value, slots).

Both are built into a private temporary directory the first time they are used.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from multiprocessing import shared_memory
from typing import Any

_BUILD = os.path.join(tempfile.gettempdir(), f"pyshm-bench-native-{os.getuid()}")

PINGPONG_C = r"""
#define _GNU_SOURCE
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int64_t now(void) {
    struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}
static void pin(int cpu) {
    if (cpu < 0) return;
    cpu_set_t s; CPU_ZERO(&s); CPU_SET(cpu, &s); sched_setaffinity(0, sizeof s, &s);
}
static int cmp(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b; return (x > y) - (x < y);
}
int main(int argc, char **argv) {
    int a = atoi(argv[1]), b = atoi(argv[2]);
    long n = atol(argv[3]), warm = n / 10 + 1000;
    volatile uint64_t *line = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (line == MAP_FAILED) return 1;
    *line = 0;
    pid_t child = fork();
    if (child == 0) {
        pin(b);
        for (uint64_t i = 0; i < (uint64_t)(n + warm); i++) {
            while (__atomic_load_n(line, __ATOMIC_ACQUIRE) != 2 * i + 1) __builtin_ia32_pause();
            __atomic_store_n(line, 2 * i + 2, __ATOMIC_RELEASE);
        }
        _exit(0);
    }
    pin(a);
    int64_t *lat = malloc(sizeof(int64_t) * n);
    for (uint64_t i = 0; i < (uint64_t)(n + warm); i++) {
        int64_t t0 = now();
        __atomic_store_n(line, 2 * i + 1, __ATOMIC_RELEASE);
        while (__atomic_load_n(line, __ATOMIC_ACQUIRE) != 2 * i + 2) __builtin_ia32_pause();
        int64_t t1 = now();
        if (i >= (uint64_t)warm) lat[i - warm] = t1 - t0;
    }
    waitpid(child, NULL, 0);
    qsort(lat, n, sizeof *lat, cmp);
    double sum = 0;
    for (long i = 0; i < n; i++) sum += lat[i];
    #define RANK(q) ((long)((q) / 100.0 * n + 0.999999) - 1)
    #define PCT(q) (lat[RANK(q) < 0 ? 0 : RANK(q)] / 2.0)
    printf("{\"p50\": %.1f, \"p99\": %.1f, \"p99.9\": %.1f, \"min\": %.1f, "
           "\"mean\": %.1f, \"n\": %ld}\n",
           PCT(50), PCT(99), PCT(99.9), lat[0] / 2.0, sum / n / 2.0, n);
    return 0;
}
"""

FUTEX_WAKE_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* one shared mapping (shmem, like a /dev/shm ring: a shared futex keyed by its page) */
typedef struct {
    uint32_t seq;            /* the futex word: records published so far */
    uint32_t failed;         /* the sleeper saw a record during its idle phase */
    int64_t idle_cpu_ns, busy_cpu_ns, busy_wall_ns;
    int64_t stamp[];         /* CLOCK_MONOTONIC of each publish, then the latencies */
} shared_t;

static int64_t clk(clockid_t id) {
    struct timespec t; clock_gettime(id, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}
static void pin(int cpu) {
    if (cpu < 0) return;
    cpu_set_t s; CPU_ZERO(&s); CPU_SET(cpu, &s); sched_setaffinity(0, sizeof s, &s);
}
static void sleep_ns(int64_t ns) {
    struct timespec t = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {}
}
static long fwait(uint32_t *w, uint32_t v, int64_t ns) {
    struct timespec t = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    return syscall(SYS_futex, w, FUTEX_WAIT, v, ns > 0 ? &t : NULL, NULL, 0);
}
static long fwake(uint32_t *w) {
    return syscall(SYS_futex, w, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}
int main(int argc, char **argv) {
    int a = atoi(argv[1]), b = atoi(argv[2]);
    long n = atol(argv[3]);
    int64_t idle = atoll(argv[4]);
    uint32_t rng = (uint32_t)atol(argv[5]) * 2654435761u + 1u;
    shared_t *s = mmap(NULL, sizeof(shared_t) + 2 * n * sizeof(int64_t),
                       PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (s == MAP_FAILED) return 1;
    int64_t *lat = s->stamp + n;
    pid_t child = fork();
    if (child == 0) { /* the sleeper: the consumer's side */
        pin(b);
        int64_t c0 = clk(CLOCK_PROCESS_CPUTIME_ID), w0 = clk(CLOCK_MONOTONIC);
        for (int64_t now = w0; now < w0 + idle; now = clk(CLOCK_MONOTONIC))
            fwait(&s->seq, 0, w0 + idle - now);
        if (__atomic_load_n(&s->seq, __ATOMIC_ACQUIRE) != 0) s->failed = 1;
        int64_t c1 = clk(CLOCK_PROCESS_CPUTIME_ID), w1 = clk(CLOCK_MONOTONIC);
        for (long i = 0; i < n; i++) {
            while (__atomic_load_n(&s->seq, __ATOMIC_ACQUIRE) == (uint32_t)i)
                fwait(&s->seq, (uint32_t)i, 0);
            lat[i] = clk(CLOCK_MONOTONIC) - s->stamp[i];
        }
        s->idle_cpu_ns = c1 - c0;
        s->busy_cpu_ns = clk(CLOCK_PROCESS_CPUTIME_ID) - c1;
        s->busy_wall_ns = clk(CLOCK_MONOTONIC) - w1;
        _exit(0);
    }
    pin(a); /* the waker: the producer's side */
    sleep_ns(idle + 500000000);
    for (long i = 0; i < n; i++) {
        rng ^= rng << 13; rng ^= rng >> 17; rng ^= rng << 5;
        sleep_ns(1000000 + rng % 2000000);
        s->stamp[i] = clk(CLOCK_MONOTONIC);
        __atomic_store_n(&s->seq, (uint32_t)(i + 1), __ATOMIC_RELEASE);
        fwake(&s->seq);
    }
    int status;
    waitpid(child, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || s->failed) return 2;
    printf("{\"idle_cpu_ns\": %lld, \"busy_cpu_ns\": %lld, \"busy_wall_ns\": %lld, \"lat\": [",
           (long long)s->idle_cpu_ns, (long long)s->busy_cpu_ns, (long long)s->busy_wall_ns);
    for (long i = 0; i < n; i++) printf("%s%lld", i ? ", " : "", (long long)lat[i]);
    printf("]}\n");
    return 0;
}
"""

RING_CDEF = """
int64_t fr_publish(char *base, uint64_t cap, uint64_t *pos, const char *buf, uint32_t len);
int64_t fr_read(char *base, uint64_t cap, uint64_t *pos, uint64_t spins);
"""

RING_C = r"""
#include <stdint.h>
#include <string.h>
#define TAIL 0
#define HEAD 128
#define DATA 256
#define WRAP 0xFFFFFFFFu
/* pos[0]: my position, pos[1]: the other side's counter as last seen */
int64_t fr_publish(char *base, uint64_t cap, uint64_t *pos, const char *buf, uint32_t len)
{
    uint64_t tail = pos[0], size = (len + 11u) & ~7ull, off = tail & (cap - 1), pad = 0;
    if (cap - off < size) pad = cap - off;
    uint64_t end = tail + pad + size;
    if (end - pos[1] > cap) {
        pos[1] = __atomic_load_n((uint64_t *)(base + HEAD), __ATOMIC_ACQUIRE);
        if (end - pos[1] > cap) return -1;
    }
    char *data = base + DATA;
    if (pad) { *(uint32_t *)(data + off) = WRAP; off = 0; }
    *(uint32_t *)(data + off) = len;
    memcpy(data + off + 4, buf, len);
    pos[0] = end;
    __atomic_store_n((uint64_t *)(base + TAIL), end, __ATOMIC_RELEASE);
    return 0;
}
/* (payload offset << 32) | length, or -1; spins in C up to `spins` polls */
int64_t fr_read(char *base, uint64_t cap, uint64_t *pos, uint64_t spins)
{
    uint64_t head = pos[0];
    __atomic_store_n((uint64_t *)(base + HEAD), head, __ATOMIC_RELEASE);
    for (uint64_t i = 0; head == pos[1]; i++) {
        pos[1] = __atomic_load_n((uint64_t *)(base + TAIL), __ATOMIC_ACQUIRE);
        if (head != pos[1]) break;
        if (i >= spins) return -1;
        __builtin_ia32_pause();
    }
    char *data = base + DATA;
    uint64_t off = head & (cap - 1);
    uint32_t n = *(uint32_t *)(data + off);
    if (n == WRAP) { head += cap - off; off = 0; n = *(uint32_t *)data; }
    pos[0] = head + ((n + 11u) & ~7ull);
    return (int64_t)(((uint64_t)(DATA + off + 4) << 32) | n);
}
"""


def _compile(name: str, source: str) -> str:
    """The executable of ``source``, built once (named after its hash: an edited source
    is never served by a stale binary)."""
    os.makedirs(_BUILD, exist_ok=True)
    exe = os.path.join(_BUILD, f"{name}-{hashlib.sha256(source.encode()).hexdigest()[:12]}")
    if not os.path.exists(exe):
        src = exe + ".c"
        with open(src, "w") as f:
            f.write(source)
        subprocess.run(["cc", "-O2", "-o", exe + ".tmp", src], check=True)
        os.replace(exe + ".tmp", exe)
    return exe


def _compile_floor() -> str:
    return _compile("pingpong", PINGPONG_C)


def _compile_futex_floor() -> str:
    return _compile("futexwake", FUTEX_WAKE_C)


def c_floor(cpus: tuple[int | None, int | None], n: int) -> dict[str, Any]:
    """One-way latency percentiles (ns) of two C processes ping-ponging one cache line."""
    a, b = (-1 if c is None else c for c in cpus)
    out = subprocess.run([_compile_floor(), str(a), str(b), str(n)], capture_output=True,
                         text=True, check=True, timeout=120)
    return json.loads(out.stdout)


def futex_wake_floor(cpus: tuple[int | None, int | None], n: int, idle: float,
                     seed: int) -> dict[str, Any]:
    """Wake-up latencies (ns) of a C process asleep in FUTEX_WAIT, woken by another every
    1-3 ms (after ``idle`` s + 0.5 s of silence), with the sleeper's CPU time: the same
    shape as bench/ring.py's ``wake`` test, pinned the same way (waker on cpus[0])."""
    a, b = (-1 if c is None else c for c in cpus)
    out = subprocess.run([_compile_futex_floor(), str(a), str(b), str(n),
                          str(int(idle * 1e9)), str(seed)],
                         capture_output=True, text=True, timeout=60 + idle + n * 0.01)
    if out.returncode != 0:
        raise RuntimeError(f"futex floor failed (exit {out.returncode}): {out.stderr[-500:]}")
    return json.loads(out.stdout)


_lib: Any = None


def _native_lib() -> Any:
    global _lib
    if _lib is None:
        from cffi import FFI

        os.makedirs(_BUILD, exist_ok=True)
        ffi = FFI()
        ffi.cdef(RING_CDEF)
        ffi.set_source("_pyshm_bench_featureless", RING_C, extra_compile_args=["-O2"])
        path = ffi.compile(tmpdir=_BUILD, verbose=False)
        spec = importlib.util.spec_from_file_location("_pyshm_bench_featureless", path)
        assert spec and spec.loader
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        sys.modules["_pyshm_bench_featureless"] = mod
        _lib = mod
    return _lib


class FeaturelessRing:
    """SPSC ring in C through cffi; create in the parent, inherit through fork."""

    def __init__(self, capacity: int = 1 << 20):
        mod = _native_lib()
        self._ffi, lib = mod.ffi, mod.lib
        self._shm = shared_memory.SharedMemory(create=True, size=256 + capacity)
        self._shm.buf[:] = bytes(256 + capacity)  # touch every page now
        self.capacity = capacity
        self._base = self._ffi.from_buffer(self._shm.buf)
        self._buf = self._shm.buf
        pub, rd, base, cap, buf = lib.fr_publish, lib.fr_read, self._base, capacity, self._buf
        ppos, rpos = self._ffi.new("uint64_t[2]"), self._ffi.new("uint64_t[2]")

        def try_publish(data: Any) -> bool:
            return pub(base, cap, ppos, data, len(data)) == 0

        def read(spins: int = 0) -> memoryview | None:
            v = rd(base, cap, rpos, spins)
            if v < 0:
                return None
            off = v >> 32
            return buf[off:off + (v & 0xFFFFFFFF)]

        def read_wait() -> memoryview | None:
            return read(1 << 20)  # the wait loop in C (~a millisecond of polls at most)

        self.try_publish, self.read, self.read_wait = try_publish, read, read_wait

    def close(self) -> None:
        self.try_publish = self.read = self.read_wait = None  # type: ignore[assignment]
        self._ffi.release(self._base)
        self._buf = None  # type: ignore[assignment]
        self._shm.close()

    def unlink(self) -> None:
        self._shm.unlink()
