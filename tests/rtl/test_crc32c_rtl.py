"""The CRC32C unit of the ring-mirror IP (hw/rtl/rm_crc32c.v) on its own, under both
simulators at every bus width the IP supports, against the `crc32c` package
(tb_crc32c.py). Never skipped: a missing simulator is a failure that says how to install it."""

from __future__ import annotations

import subprocess

import pytest
import rtl_sim

pytestmark = pytest.mark.rtl


@pytest.mark.timeout(600)
@pytest.mark.parametrize("width", [64, 128, 256])
@pytest.mark.parametrize("sim", rtl_sim.SIMULATORS)
def test_crc32c_unit(sim, width, tmp_path):
    """Every cocotb test of tb_crc32c.py: all byte counts and lanes, random packets with
    idle cycles and empty beats, continued CRCs, resets with results in flight."""
    rtl_sim.run(sim, tmp_path / "build", {"DATA_WIDTH": width, "USER_WIDTH": 3},
                test_module="tb_crc32c", toplevel="rm_crc32c", files=("rm_crc32c.v",),
                extra_env={"RTL_SEED": str(width)})


@pytest.mark.parametrize("width", [16, 48])
def test_crc32c_rejects_bad_width(width, tmp_path):
    """A width that is not a power of two in 32..512 stops elaboration with $error."""
    rtl_sim.require("icarus")
    out = tmp_path / "bad.vvp"
    res = subprocess.run(["iverilog", "-g2012", "-s", "rm_crc32c", "-P",
                          f"rm_crc32c.DATA_WIDTH={width}", "-o", str(out),
                          str(rtl_sim.RTL / "rm_crc32c.v")],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    if res.returncode == 0:
        run = subprocess.run(["vvp", "-n", str(out)], capture_output=True, text=True,
                             timeout=60, cwd=tmp_path)
        text = run.stdout + run.stderr
    else:
        text = res.stdout + res.stderr
    assert f"DATA_WIDTH ({width}) must be a power of two" in text, text[-2000:]
