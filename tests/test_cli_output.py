"""What the CLI prints: sizes people can read, one image suffix everywhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pyshm import human
from pyshm.cli import build_parser, main
from pyshm.images.format import IMAGE_SUFFIX
from pyshm.ring import Ring

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("n,text", [
    (0, "0"), (512, "512"), (4096, "4K"), (65536, "64K"), (16 << 20, "16M"),
    ((16 << 20) + 4096, "16.0M"), (1 << 30, "1G"), (3 << 40, "3T"), (1536, "1.5K")])
def test_human_sizes(n, text):
    assert human.size(n) == text


@pytest.mark.parametrize("n,text", [(896, "896 B"), (12700, "12.4 KiB"), (1 << 20, "1 MiB")])
def test_human_sizes_for_reading(n, text):
    assert human.size(n, "B") == text


@pytest.mark.parametrize("ns,text", [(240, "240 ns"), (12_345, "12.3 us"), (266_720_000, "267 ms"),
                                     (1_640_000, "1.64 ms"), (2.5e9, "2.50 s")])
def test_human_durations(ns, text):
    assert human.duration_ns(ns) == text


def test_ls_shows_the_capacity_in_the_units_create_takes(ring_name, capsys):
    with Ring(ring_name, create=True, capacity="16M"):
        assert main(["ls"]) == 0
    out = capsys.readouterr().out
    (line,) = [x for x in out.splitlines() if x.startswith(ring_name)]
    assert line.split()[2] == "16M", line  # was "16.0K": 1024x too small


def test_one_image_suffix_everywhere():
    assert IMAGE_SUFFIX == ".pyimg"
    from pyshm import supervisor
    from pyshm.images import schedule
    assert supervisor.IMAGE_SUFFIX == schedule.SUFFIX == IMAGE_SUFFIX
    texts = {"README.md": (ROOT / "README.md").read_text()}
    for doc in (ROOT / "docs").glob("*.md"):
        texts[f"docs/{doc.name}"] = doc.read_text()
    for example in (ROOT / "examples").iterdir():
        if example.is_file():
            texts[f"examples/{example.name}"] = example.read_text()
    parser = build_parser()
    for action in parser._actions:
        for name, sub in getattr(action, "choices", None) and action.choices.items() or []:
            texts[f"pyshm {name} --help"] = sub.format_help()
    other = re.compile(r"\w\.(img|pyshmimg|image|pyshm)\b")
    bad = {where: other.findall(text) for where, text in texts.items() if other.search(text)}
    assert not bad, f"image files named with another suffix than {IMAGE_SUFFIX}: {bad}"
