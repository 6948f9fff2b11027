"""The README's Python examples run as written (only the ring names are made unique), leave
nothing behind, and so run a second time just as well."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_examples_run_twice_and_clean_up(shm_prefix, tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 2, "README lost its Python examples"
    # "md..." names -> unique shm names; the image file lands in tmp_path (the cwd)
    code = re.sub(r'"md(?!\.pyimg)', f'"{shm_prefix}md', "\n".join(blocks))
    script = tmp_path / "readme_examples.py"
    script.write_text(code)
    for attempt in (1, 2):
        out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, f"run {attempt}: {out.stderr}"
        assert "0 1 b'hello'" in out.stdout
        assert re.search(r"records +1 .*overruns 0", out.stdout), out.stdout
        assert "\n1 1\n" in out.stdout  # one record restored; the next publish is sequence 1
        assert "auto picked" in out.stderr
        assert sorted(os.listdir(tmp_path)) == ["readme_examples.py"]
        assert [n for n in os.listdir("/dev/shm") if n.startswith(shm_prefix)] == []
