"""The repository stands on its own: its docs point only inside it, and docs/design.md
describes the layout the code actually has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pyshm import layout as L

ROOT = Path(__file__).resolve().parent.parent
SKIP_DIRS = {".git", "build", "dist", "node_modules", "sim_build", "__pycache__"}
TEXT_SUFFIXES = {".py", ".md", ".c", ".h", ".v", ".vh", ".sv", ".yaml", ".yml", ".toml",
                 ".tcl", ".sh", ".txt", ".cfg", ".ini", ""}


def repo_text_files():
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if any(part in SKIP_DIRS or part.startswith(".venv") or part.endswith(".egg-info")
               for part in rel.parts):
            continue
        if path.is_file() and path.suffix in TEXT_SUFFIXES and path.stat().st_size < 2 << 20:
            yield rel, path


def test_nothing_points_outside_the_repository():
    offenders = []
    pattern = re.compile(r"\.\./shared|shared/DESIGN|\bDESIGN\.md|TOOLCHAIN\.md")
    for rel, path in repo_text_files():
        if rel == Path("tests/test_repo_docs.py"):
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, "references to files outside the repository:\n" + "\n".join(offenders)


MD_LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


@pytest.mark.parametrize("doc", ["README.md", *sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))])
def test_relative_links_resolve(doc):
    text = (ROOT / doc).read_text()
    broken = []
    for target, _anchor in MD_LINK.findall(text):
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        if not (ROOT / doc).parent.joinpath(target).exists():
            broken.append(target)
    assert not broken, f"{doc}: links to missing files: {broken}"


def test_design_doc_shows_every_header_offset_and_flag():
    text = (ROOT / "docs" / "design.md").read_text()
    offsets = {name: value for name, value in vars(L).items()
               if name.startswith("OFF_") and isinstance(value, int)}
    missing = [f"{n}=0x{v:03X}" for n, v in offsets.items() if f"0x{v:03X}" not in text]
    assert not missing, f"docs/design.md does not show header offsets {missing}"
    flags = {name: value for name, value in vars(L).items()
             if name.startswith("FLAG_") and isinstance(value, int)}
    for name, value in flags.items():
        row = f"| 0x{value:02x} | `{name.removeprefix('FLAG_')}`"
        assert row in text, f"docs/design.md's flag table lacks {name} ({row!r})"
    assert f"{L.MAX_CONSUMERS} slots" in text
    assert f"0x{L.HEADER_SIZE:X}" in text


def test_license_file_matches_pyproject():
    declared = re.search(r'^license\s*=\s*\{\s*text\s*=\s*"([^"]+)"',
                         (ROOT / "pyproject.toml").read_text(), re.M)
    assert declared and declared.group(1) == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
