"""The README's Python examples run as written (only the ring names are made unique)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_examples_run(shm_prefix, tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 2, "README lost its Python examples"
    # "md..." names -> unique shm names; the image file lands in tmp_path (the cwd)
    code = re.sub(r'"md(?!\.pyimg)', f'"{shm_prefix}md', "\n".join(blocks))
    script = tmp_path / "readme_examples.py"
    script.write_text(code)
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "0 1 b'hello'" in out.stdout
    assert "records_mirrored=1" in out.stdout and "overruns=0" in out.stdout
    assert (tmp_path / "md.pyimg").exists()
    left = sorted(n for n in os.listdir("/dev/shm") if n.startswith(shm_prefix))
    assert left == [f"{shm_prefix}md.restored"]  # the examples unlink everything else
