"""An AXI4 protocol checker for the master side of a bus, written for the ring-mirror IP.

It watches every RTL test (tests/rtl/tb_ring_mirror.py) and every run of the ``sim``
engine (pyshm.driver.sim_tb), so it ships with the driver; it needs cocotb (the ``hwsim``
extra), like the sim engine.

It watches the signals of one AXI4 master port every clock cycle (cocotb ReadOnly phase,
after the rising edge: the values the slave samples at the next edge) and records every
rule the master breaks, with the cycle and the offending values:

* VALID, once raised, stays high until READY (AW, W, AR); VALID low during reset (from
  the first clock edge that samples it: the IP's reset is synchronous);
* the payload of AW, W and AR does not change while VALID is high and READY low;
* WLAST exactly on beat AWLEN+1 of each write burst (W may lead AW: bursts are matched in
  order once both are known);
* no burst crosses a 4 KiB boundary; AxBURST is INCR, AxLOCK normal, AxSIZE at most the
  bus width, the address aligned to AxSIZE, AxLEN+1 at most the master's burst limit;
* a narrow write enables only the byte lanes its address and size select;
* every byte a read or write burst touches lies inside the windows the test allows (read
  windows for AR, write windows for AW): the IP must never touch memory outside them;
* no X or Z on VALID/READY after reset, nor on a payload while VALID is high;
* the slave side is checked too, so that a broken memory model cannot hide behind the
  checker: RLAST on the last beat of each read burst, no R or B without a request.

``violations`` lists what was found (at most ``limit``); ``assert_clean()`` raises
AssertionError naming the first ones. ``counts`` counts handshakes per channel, so a test
can prove the checker actually saw traffic.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge
from cocotb.utils import get_sim_time

Windows = Callable[[], list[tuple[int, int]]]

# payload signals of the master-driven channels, in the order they are reported
PAYLOAD = {
    "aw": ("addr", "len", "size", "burst", "lock", "cache", "prot"),
    "w": ("data", "strb", "last"),
    "ar": ("addr", "len", "size", "burst", "lock", "cache", "prot"),
}


class Axi4Checker:
    def __init__(self, dut, clk, resetn, prefix: str = "m_axi", *, data_bytes: int,
                 max_burst: int, read_windows: Windows, write_windows: Windows,
                 clk_ns: int = 10, limit: int = 50, log_path: str | None = None,
                 on_violation: Callable[[str], None] | None = None):
        self.dut = dut
        self.clk = clk
        self.resetn = resetn
        self.data_bytes = data_bytes
        self.max_size = data_bytes.bit_length() - 1
        self.max_burst = max_burst
        self.read_windows = read_windows
        self.write_windows = write_windows
        self.clk_ns = clk_ns
        self.limit = limit
        # each violation is also appended here at once: a test that then dies on an
        # assertion of the memory model still leaves the checker's verdict behind
        self.log_path = log_path
        self.on_violation = on_violation   # called with each violation as it is found
        self.violations: list[str] = []
        self.counts: Counter[str] = Counter()
        self.enabled = True
        self.in_reset = False
        sig = lambda name: getattr(dut, f"{prefix}_{name}")  # noqa: E731
        self.valid = {c: sig(f"{c}valid") for c in ("aw", "w", "b", "ar", "r")}
        self.ready = {c: sig(f"{c}ready") for c in ("aw", "w", "b", "ar", "r")}
        self.payload = {c: [sig(c + n) for n in PAYLOAD[c]] for c in PAYLOAD}
        self.rlast = sig("rlast")
        self._reset_state()
        cocotb.start_soon(self._run())

    # ------------------------------------------------------------------ state
    def _reset_state(self) -> None:
        self.held: dict[str, tuple | None] = {c: None for c in PAYLOAD}  # stalled payload
        self.aw_bursts: deque[tuple[int, int, int]] = deque()   # (addr, beats, size)
        self.w_bursts: deque[list[int]] = deque()               # strobes of finished bursts
        self.w_cur: list[int] = []
        self.ar_beats: deque[int] = deque()
        self.r_beat = 0
        self.b_owed = 0

    def cycle(self) -> int:
        return int(get_sim_time("ns")) // self.clk_ns

    def fail(self, msg: str) -> None:
        if len(self.violations) < self.limit:
            line = f"cycle {self.cycle()}: {msg}"
            self.violations.append(line)
            if self.log_path:
                with open(self.log_path, "a", encoding="utf-8") as f:
                    f.write(line + "\n")
            if self.on_violation is not None:
                self.on_violation(line)

    def assert_clean(self) -> None:
        assert not self.violations, ("AXI4 protocol checker: " + str(len(self.violations))
                                     + " violation(s):\n" + "\n".join(self.violations[:10]))

    # ------------------------------------------------------------------ sampling
    @staticmethod
    def _bit(handle) -> int | None:
        v = handle.value
        return int(v) if v.is_resolvable else None

    def _read_payload(self, chan: str) -> tuple | None:
        vals = []
        for h in self.payload[chan]:
            v = h.value
            if not v.is_resolvable:
                return None
            vals.append(int(v))
        return tuple(vals)

    async def _run(self) -> None:
        while True:
            await RisingEdge(self.clk)
            await ReadOnly()
            if not self.enabled:
                continue
            if self._bit(self.resetn) != 1:
                # a synchronous reset clears VALID at the first edge that samples it
                if self.in_reset:
                    for c in PAYLOAD:
                        if self._bit(self.valid[c]) != 0:
                            self.fail(f"{c.upper()}VALID not low during reset")
                self.in_reset = True
                self._reset_state()
                continue
            self.in_reset = False
            for c in ("aw", "w", "ar"):
                self._master_channel(c)
            self._slave_channels()

    def _master_channel(self, c: str) -> None:
        valid, ready = self._bit(self.valid[c]), self._bit(self.ready[c])
        name = c.upper()
        if valid is None or ready is None:
            self.fail(f"{name}VALID/{name}READY is X or Z")
            return
        held = self.held[c]
        if held is not None and not valid:
            self.fail(f"{name}VALID dropped before {name}READY "
                      f"(payload {self._fmt(c, held)})")
        if not valid:
            self.held[c] = None
            return
        payload = self._read_payload(c)
        if payload is None:
            self.fail(f"{name} payload has X or Z bits while {name}VALID is high")
            return
        if held is not None and payload != held:
            self.fail(f"{name} payload changed while stalled: {self._fmt(c, held)} -> "
                      f"{self._fmt(c, payload)}")
        if held is None:
            # a new request: check it once, when it appears
            if c in ("aw", "ar"):
                self._check_request(c, payload)
        if ready:
            self.held[c] = None
            self.counts[c] += 1
            self._handshake(c, payload)
        else:
            self.held[c] = payload

    def _fmt(self, c: str, payload: tuple) -> str:
        return ", ".join(f"{n}=0x{v:x}" for n, v in zip(PAYLOAD[c], payload, strict=True))

    def _check_request(self, c: str, p: tuple) -> None:
        addr, alen, size, burst, lock, _cache, _prot = p
        name = "write" if c == "aw" else "read"
        beats = alen + 1
        nbytes = beats << size
        if burst != 1:
            self.fail(f"{c.upper()}BURST {burst} at 0x{addr:x}: the IP issues INCR bursts only")
        if lock:
            self.fail(f"{c.upper()}LOCK set at 0x{addr:x}")
        if size > self.max_size:
            self.fail(f"{c.upper()}SIZE {size} ({1 << size} bytes) wider than the "
                      f"{self.data_bytes}-byte bus at 0x{addr:x}")
        if addr % (1 << size):
            self.fail(f"{name} burst address 0x{addr:x} not aligned to AxSIZE {size}")
        if beats > self.max_burst:
            self.fail(f"{name} burst of {beats} beats at 0x{addr:x} exceeds the "
                      f"{self.max_burst}-beat limit")
        if (addr & 0xFFF) + nbytes > 0x1000:
            self.fail(f"{name} burst at 0x{addr:x} of {nbytes} bytes crosses a 4 KiB boundary")
        windows = self.write_windows() if c == "aw" else self.read_windows()
        if not any(base <= addr and addr + nbytes <= base + size_
                   for base, size_ in windows):
            self.fail(f"{name} of [0x{addr:x}, 0x{addr + nbytes:x}) outside the {name} "
                      f"windows " + ", ".join(f"[0x{b:x}, 0x{b + s:x})" for b, s in windows))

    def _handshake(self, c: str, p: tuple) -> None:
        if c == "aw":
            self.aw_bursts.append((p[0], p[1] + 1, p[2]))
            self.b_owed += 1
        elif c == "ar":
            self.ar_beats.append(p[1] + 1)
        else:
            _data, strb, last = p
            self.w_cur.append(strb)
            if last:
                self.w_bursts.append(self.w_cur)
                self.w_cur = []
            elif self.aw_bursts and len(self.w_bursts) < len(self.aw_bursts):
                beats = self.aw_bursts[len(self.w_bursts)][1]
                if len(self.w_cur) >= beats:
                    self.fail(f"WLAST missing on beat {len(self.w_cur)} of a {beats}-beat "
                              f"burst (AWLEN {beats - 1})")
                    self.w_bursts.append(self.w_cur)
                    self.w_cur = []
        self._match_writes()

    def _match_writes(self) -> None:
        while self.aw_bursts and self.w_bursts:
            addr, beats, size = self.aw_bursts.popleft()
            strbs = self.w_bursts.popleft()
            if len(strbs) != beats:
                self.fail(f"write burst at 0x{addr:x}: WLAST on beat {len(strbs)}, AWLEN+1 is "
                          f"{beats}")
            if size < self.max_size:
                # narrow transfer: only the lanes of the addressed bytes may be enabled
                for i, strb in enumerate(strbs):
                    lane = ((addr + (i << size)) % self.data_bytes) & ~((1 << size) - 1)
                    allowed = ((1 << (1 << size)) - 1) << lane
                    if strb & ~allowed:
                        self.fail(f"narrow write at 0x{addr:x} beat {i}: WSTRB 0x{strb:x} "
                                  f"enables lanes outside 0x{allowed:x}")

    def _slave_channels(self) -> None:
        for c in ("r", "b"):
            valid, ready = self._bit(self.valid[c]), self._bit(self.ready[c])
            if valid is None or ready is None:
                self.fail(f"{c.upper()}VALID/{c.upper()}READY is X or Z")
                continue
            if not (valid and ready):
                continue
            self.counts[c] += 1
            if c == "b":
                if self.b_owed <= 0:
                    self.fail("B response without an outstanding write")
                self.b_owed -= 1
                continue
            if not self.ar_beats:
                self.fail("R beat without an outstanding read")
                continue
            self.r_beat += 1
            last = self._bit(self.rlast)
            want = self.r_beat == self.ar_beats[0]
            if last != int(want):
                self.fail(f"RLAST={last} on beat {self.r_beat} of a {self.ar_beats[0]}-beat "
                          f"read burst")
            if last or want:
                self.ar_beats.popleft()
                self.r_beat = 0
