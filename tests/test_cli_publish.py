"""`pyshm publish`: records from arguments, stdin lines or a file, with a type."""

from __future__ import annotations

import os
import subprocess
import sys

from pyshm.cli import main
from pyshm.ring import Ring

PYSHM = os.path.join(os.path.dirname(sys.executable), "pyshm")


def records(name: str) -> list[tuple[int, int, bytes]]:
    with Ring(name, readonly=True) as r:
        c = r.consumer("oldest")
        out = []
        while (m := c.read_copy()) is not None:
            out.append((m.sequence, m.type, bytes(m.data)))
        return out


def test_arguments_file_and_stdin(ring_name, tmp_path, capsys):
    Ring(ring_name, create=True, capacity=1 << 16).close()
    assert main(["publish", ring_name, "hello", "world", "--type", "3"]) == 0
    assert "published 2 record(s)" in capsys.readouterr().out
    assert main(["publish", ring_name, "--hex", "00ff10", "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    lines = tmp_path / "orders.txt"
    lines.write_bytes(b"buy 10\r\n\nsell 5")
    assert main(["publish", ring_name, "--file", str(lines), "-t", "7"]) == 0
    r = subprocess.run([PYSHM, "publish", ring_name, "--type", "0x10"], input=b"a\nbb\n",
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert b"(sequences 6..7)" in r.stdout
    assert records(ring_name) == [
        (0, 3, b"hello"), (1, 3, b"world"), (2, 0, b"\x00\xff\x10"),
        (3, 7, b"buy 10"), (4, 7, b""), (5, 7, b"sell 5"), (6, 16, b"a"), (7, 16, b"bb")]


def test_a_full_lossless_ring_stops_and_says_how_far_it_got(ring_name, capsys):
    with Ring(ring_name, create=True, capacity=4096, lossless=True) as r:
        r.consumer(gating=True)  # never reads: holds the producer back
        data = ["x" * 100] * 40  # 40 x 120 bytes > 4096
        assert main(["publish", ring_name, *data, "--timeout", "0.05"]) == 1
        err = capsys.readouterr().err
        assert "stayed full for 0.05 s" in err and "published" in err and "before argument" in err
        assert r.next_sequence > 0


def test_a_live_producer_is_not_taken_over(ring_name, capsys):
    with Ring(ring_name, create=True, capacity=1 << 16) as r:
        p = r.producer()
        p.publish(b"mine")
        child = subprocess.run([PYSHM, "publish", ring_name, "theirs"], capture_output=True,
                               text=True, timeout=60)
        assert child.returncode == 1 and "Traceback" not in child.stderr
        assert "producer" in child.stderr, child.stderr
        assert r.next_sequence == 1


def test_no_input_is_a_usage_error(ring_name):
    Ring(ring_name, create=True, capacity=1 << 16).close()
    # stdin is a terminal-less empty pipe here: nothing to publish is zero records, fine
    r = subprocess.run([PYSHM, "publish", ring_name], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "published 0 record(s)" in r.stdout
