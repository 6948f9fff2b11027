"""The ring-mirror RTL under both simulators and both bus widths (cocotb testbench in
tb_ring_mirror.py), plus lint and synthesis checks. Never skipped: a missing simulator
is a failure that says how to install it."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import rtl_sim

pytestmark = pytest.mark.rtl


@pytest.fixture(scope="module")
def build_root(tmp_path_factory):
    return tmp_path_factory.mktemp("rtl_build")


# Long mirroring runs (tens of thousands of cycles each): every simulator at 64 and 128
# bits; at 256 bits the hostile-input, control and protocol cases run (they exercise the
# width-dependent strobe, lane and burst arithmetic) while these are left to 64/128.
SLOW = {"test_mirror_no_latency", "test_mirror_latency_backpressure", "test_throughput",
        "test_restore_throughput",
        "test_fast_producer_laps_every_copy", "test_overrun_detected_and_recovered"}


# benchmarks (bench/ runs them and holds their targets), not suite cases
BENCH_ONLY = {"test_throughput", "test_restore_throughput"}
# long cases: 64 bits only (CI time; the other restore tests run at every width)
WIDTH_64_ONLY = {"test_restore_chunk_overlap"}


def cocotb_tests() -> list[str]:
    text = (rtl_sim.TB_DIR / "tb_ring_mirror.py").read_text()
    return re.findall(r"@rtl_test\nasync def (test_\w+)", text)


@pytest.mark.timeout(900)   # a Verilator build plus ~20 tests; on a loaded 2-core machine
@pytest.mark.parametrize("width", [64, 128, 256])
@pytest.mark.parametrize("sim", rtl_sim.SIMULATORS)
def test_ring_mirror(sim, width, build_root):
    """Every cocotb test of tb_ring_mirror.py (the AXI4 checker watching each one)."""
    # RUN_LOG 8: runs of 256 beats, so a round of the 4 KiB test rings crosses run
    # boundaries at 64 bits (the default, 2^16 beats, is what bench/rtl_throughput.py runs)
    params = {"DATA_WIDTH": width, "ADDR_WIDTH": 32, "MAX_BURST_LEN": 16,
              "MAX_OUTSTANDING": 4, "FIFO_DEPTH": 64, "RUN_LOG": 8}
    tests = cocotb_tests()
    assert len(tests) >= 15 and SLOW <= set(tests)
    tests = [t for t in tests if t not in BENCH_ONLY and (width == 64 or t not in WIDTH_64_ONLY)]
    if width == 256:
        tests = [t for t in tests if t not in SLOW]
    rtl_sim.run(sim, build_root / f"{sim}_{width}", params, testcase=tests,
                extra_env={"RTL_SEED": str(width)})


# the cocotb tests of the CRC table unit itself and of the restore copy mode; a build
# without both (CRC_TABLE=0, RESTORE=0) runs all the others
CRC_UNIT = {"test_crc_table_small_blocks", "test_crc_table_write_error"}
RESTORE_MODE = {"test_restore_copy", "test_restore_verify_only_and_damage",
                "test_restore_chunk_overlap", "test_restore_refusals",
                "test_restore_abort_reset_watchdog", "test_restore_throughput"}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("sim", rtl_sim.SIMULATORS)
def test_ring_mirror_without_crc_table(sim, build_root):
    """The IP built without the CRC table unit and the restore copy mode (CRC_TABLE=0,
    RESTORE=0) at 64 bits: every cocotb test but theirs, the AXI4 checker watching each;
    test_crc_unit_build_option and test_restore_build_option check that CAPABILITIES
    reports them missing and that their registers do nothing."""
    params = {"DATA_WIDTH": 64, "ADDR_WIDTH": 32, "MAX_BURST_LEN": 16,
              "MAX_OUTSTANDING": 4, "FIFO_DEPTH": 64, "RUN_LOG": 8, "CRC_TABLE": 0,
              "RESTORE": 0}
    tests = [t for t in cocotb_tests() if t not in CRC_UNIT | RESTORE_MODE | BENCH_ONLY]
    assert CRC_UNIT < set(cocotb_tests()) and "test_crc_unit_build_option" in tests
    assert RESTORE_MODE < set(cocotb_tests()) and "test_restore_build_option" in tests
    rtl_sim.run(sim, build_root / f"{sim}_64_nocrc", params, testcase=tests,
                extra_env={"RTL_SEED": "65", "RTL_CRC": "0"})


def test_verilator_lint_wall():
    rtl_sim.require("verilator")
    exe = shutil.which("verilator", path=rtl_sim.tool_path())
    for params in (["-GDATA_WIDTH=64"], ["-GDATA_WIDTH=64", "-GCRC_TABLE=0", "-GRESTORE=0"],
                   ["-GDATA_WIDTH=128", "-GADDR_WIDTH=64"],
                   ["-GDATA_WIDTH=256", "-GMAX_BURST_LEN=8", "-GFIFO_DEPTH=32"]):
        res = subprocess.run([exe, "--lint-only", "-Wall", f"-I{rtl_sim.RTL}",
                              "--top-module", "ring_mirror", *params,
                              *map(str, rtl_sim.SOURCES)],
                             capture_output=True, text=True, timeout=120,
                             cwd=rtl_sim.TB_DIR)
        assert res.returncode == 0 and "%Warning" not in res.stderr, res.stderr


def test_icarus_rejects_bad_parameters(tmp_path):
    """Out-of-range parameters stop elaboration with $error instead of building nonsense."""
    rtl_sim.require("icarus")
    out = tmp_path / "bad.vvp"
    res = subprocess.run(["iverilog", "-g2012", f"-I{rtl_sim.RTL}", "-s", "ring_mirror",
                          "-P", "ring_mirror.MAX_BURST_LEN=12", "-o", str(out),
                          *map(str, rtl_sim.SOURCES)],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    run = subprocess.run(["vvp", "-n", str(out)], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path)
    assert "MAX_BURST_LEN (12) must be a power of two" in run.stdout + run.stderr


@pytest.mark.timeout(900)   # ~55 s of CPU with the CRC table (Debian's Yosys 0.23); it took
# over 300 s of wall time on this 2-core machine shared with other runs
def test_yosys_synth_xilinx(tmp_path):
    """The RTL synthesises for a Xilinx part; the resource figures are in docs/hw.md."""
    if shutil.which("yosys") is None:
        raise AssertionError("yosys not found: apt-get install yosys (make tools does it)")
    script = rtl_sim.ROOT / "hw" / "synth_yosys.sh"
    res = subprocess.run(["sh", str(script), "64"], capture_output=True, text=True,
                         timeout=850, cwd=tmp_path, env={"OUT_DIR": str(tmp_path),
                                                         "PATH": rtl_sim.tool_path()})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = (tmp_path / "ring_mirror_64.stat").read_text()
    luts = sum(int(n) for n in re.findall(r"LUT\d\s+(\d+)", report))
    ffs = sum(int(n) for n in re.findall(r"FD\w+\s+(\d+)", report))
    assert 200 < luts < 20000 and 200 < ffs < 20000, report


# Deliberately broken copies of the RTL: (file, exact text, replacement, what the AXI4
# protocol checker must report). Each mutation models a real class of master bug.
MUTATIONS = {
    "wlast-early": ("rm_mover.v",
                    "wire w_group_end = w_low_reg == MAX_BURST_LEN[MBW-1:0] - 1'b1",
                    "wire w_group_end = w_low_reg == MAX_BURST_LEN[MBW-1:0] - 2'd2",
                    "WLAST"),
    "awvalid-dropped": ("rm_mover.v", "aw_valid_next = aw_valid_reg && !m_axi_awready;",
                        "aw_valid_next = 1'b0;", "AWVALID dropped before AWREADY"),
    "araddr-unstable": ("rm_mover.v", "wire ar_free = !ar_valid_reg || m_axi_arready;",
                        "wire ar_free = 1'b1;", "AR payload changed while stalled"),
    "4k-crossing": ("rm_mover.v", "ar_addr_next = src_base + ar_off_reg;",
                    "ar_addr_next = src_base + ar_off_reg + 'h40;",
                    "crosses a 4 KiB boundary"),
    "arsize-too-wide": ("rm_mover.v", "ar_size_next = FULL_SIZE;",
                        "ar_size_next = FULL_SIZE + 3'd1;", "wider than the"),
    "outside-window": ("rm_mover.v", "ar_addr_next = src_base + ar_off_reg;",
                       "ar_addr_next = src_base - 'h1000 + ar_off_reg;",
                       "outside the read windows"),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_checker_catches_broken_rtl(name, tmp_path):
    """The protocol checker is not vacuous: on a copy of the RTL with one bug planted it
    reports that bug (the run itself may fail too: the memory model trips over some)."""
    fname, old, new, expect = MUTATIONS[name]
    rtl = tmp_path / "rtl"
    shutil.copytree(rtl_sim.RTL, rtl)
    text = (rtl / fname).read_text()
    assert text.count(old) == 1, f"mutation {name}: {old!r} not found once in {fname}"
    (rtl / fname).write_text(text.replace(old, new))
    log = tmp_path / "violations.txt"
    log.touch()
    params = {"DATA_WIDTH": 64, "ADDR_WIDTH": 32, "MAX_BURST_LEN": 16,
              "MAX_OUTSTANDING": 4, "FIFO_DEPTH": 64}
    try:
        rtl_sim.run("icarus", tmp_path / "build", params, testcase="test_checker_selftest",
                    extra_env={"RTL_EXPECT_VIOLATION": expect, "RTL_CHECKER_LOG": str(log)},
                    rtl_dir=rtl)
    except (Exception, SystemExit):  # the runner exits 1 on a failed test; the verdict
        pass  # is the checker's log, read below
    found = log.read_text()
    assert expect in found, f"mutation {name}: checker reported {found[:2000]!r}"
