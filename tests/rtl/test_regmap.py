"""The register map has one source (hw/regmap.yaml); the committed RTL include, driver
constants and documentation table must be exactly what the generator makes of it."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_generator():
    spec = importlib.util.spec_from_file_location("gen_regmap", ROOT / "hw" / "gen_regmap.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_generated_files_match_source():
    gen = load_generator()
    for path, text in gen.generate().items():
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.relative_to(ROOT)} is stale: run python3 hw/gen_regmap.py")


def test_installed_driver_constants_match_source():
    from pyshm.driver import regmap

    spec = load_generator().load()
    assert regmap.VLNV == spec["vlnv"] and regmap.BINDTO == [spec["vlnv"]]
    for reg in spec["registers"]:
        assert regmap.REGISTERS[reg["name"]][0] == reg["offset"]
    assert set(regmap.FAULT_NAMES) == {f["code"] for f in spec["faults"]}


def test_rtl_decodes_every_register():
    """Each generated offset is used by the register file's decode (or rm_restore's, for
    the RESTORE_* registers): a case label, or one
    of the eight 64-bit address/geometry registers decoded as one block from CFG_BASE,
    whose places in the block the RTL checks at elaboration ($error otherwise)."""
    gen = load_generator()
    spec = gen.load()
    rtl = (ROOT / "hw" / "rtl" / "ring_mirror_regs.v").read_text()
    # the restore copy mode's registers are decoded by rm_restore (forwarded by the regs)
    rtl += (ROOT / "hw" / "rtl" / "rm_restore.v").read_text()
    block = set(re.findall(r"RM_REG_(\w+)_LO != CFG_BASE \+ \d+", rtl))
    block |= set(re.findall(r"CFG_BASE = RM_REG_(\w+)_LO;", rtl))
    assert len(block) == 8, block
    for reg in spec["registers"]:
        for name, _off in gen.words(reg):
            in_block = name.endswith(("_LO", "_HI")) and name[:-3] in block
            assert f"RM_REG_{name}:" in rtl or f"RM_REG_{name}," in rtl or in_block, name


@pytest.mark.parametrize("bad, message", [
    ({"offset": 0x02}, "not aligned"),
    ({"offset": 0x100}, "outside"),
    ({"offset": 0x04}, "overlaps"),
    ({"access": "rx"}, "unknown access"),
])
def test_generator_rejects_inconsistent_source(bad, message):
    gen = load_generator()
    spec = gen.load()
    reg = dict(spec["registers"][2], **bad)
    spec["registers"] = spec["registers"][:2] + [reg] + spec["registers"][3:]
    with pytest.raises(gen.RegmapError, match=message):
        gen.validate(spec)


def test_vivado_scripts_use_the_map_vlnv_and_rtl_ports():
    """The block design names the IP by the map's VLNV and only ports the RTL has."""
    spec = load_generator().load()
    top = (ROOT / "hw" / "rtl" / "ring_mirror.v").read_text()
    for name in ("package_ip.tcl", "bd_kv260.tcl"):
        tcl = (ROOT / "hw" / "vivado" / name).read_text()
        assert f'set vlnv "{spec["vlnv"]}"' in tcl, name
    bd = (ROOT / "hw" / "vivado" / "bd_kv260.tcl").read_text()
    # a bus interface pin (m_axi, s_axil) is the prefix of its ports
    for pin in set(re.findall(r"\$rm/(\w+)", bd)):
        assert re.search(rf"wire\s+(\[[^\]]*\]\s*)?{pin}(_\w+)?\s*,", top), (
            f"bd_kv260.tcl uses ring_mirror port {pin}, which the RTL does not have")
    rm_block = bd.split("ring_mirror_0]")[1].split("] $rm")[0]
    params = re.findall(r"CONFIG\.([A-Z_]+) \{", rm_block)
    assert params
    for param in params:
        assert re.search(rf"parameter\s+(\[[^\]]*\]\s*)?{param}\b", top), param


def test_one_list_of_rtl_sources():
    """The testbench, the sim engine and the synthesis script name the same RTL files,
    and hw/rtl holds no Verilog outside that list."""
    import rtl_sim
    from pyshm.driver import sim

    assert tuple(rtl_sim.RTL_FILES) == tuple(sim.RTL_FILES)
    on_disk = {p.name for p in (ROOT / "hw" / "rtl").glob("*.v")}
    assert on_disk == set(sim.RTL_FILES)
    synth = (ROOT / "hw" / "synth_yosys.sh").read_text()
    assert all(f"$RTL/{f}" in synth for f in sim.RTL_FILES)
