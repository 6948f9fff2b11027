"""Configuration schema: valid files load, bad ones name the key path and the problem."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from pyshm import config
from pyshm.errors import ConfigError

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "pyshm.yaml")


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        config.loads(textwrap.dedent(text), source="c.yaml", base_dir="/base")
    return ei.value.problems


def test_example_config_is_valid_and_complete():
    cfg = config.load_config(EXAMPLE)
    assert cfg.name == "example"
    md = cfg.ring("md.eurex")
    assert md.capacity == 64 << 20 and md.max_record == 4096 and md.partitions == 8
    assert md.replica is not None and md.replica.engine == "auto" and md.replica.threads == 1
    assert md.snapshots is not None and md.snapshots.interval == 30.0 and md.snapshots.keep == 10
    orders = cfg.ring("orders")
    assert orders.lossless and orders.replica is not None and orders.replica.gate
    assert orders.replica.name == "orders.replica"  # the default replica name
    assert orders.max_record == (4 << 20) // 8 // 4  # default: partition size / 4
    assert cfg.metrics.address == ("127.0.0.1", 9464)
    assert cfg.supervisor.restart_delay == 0.5
    (book,) = cfg.states
    assert book.ring == "md.eurex" and book.rows == 64 and book.upgrade == "handover"
    assert book.replica is not None and book.snapshots is not None


@pytest.mark.parametrize("text,value", [
    ("4096", 4096), ("4K", 4096), ("16M", 16 << 20), ("1G", 1 << 30), ("64KiB", 65536),
    ("2 MiB", 2 << 20), ("8kb", 8192)])
def test_sizes(text, value):
    assert config.parse_size(text) == value


@pytest.mark.parametrize("bad", ["16Q", "-4K", "1.5M", "", True, 2.5, [1]])
def test_bad_sizes(bad):
    with pytest.raises(ValueError):
        config.parse_size(bad)


@pytest.mark.parametrize("text,value", [
    (2, 2.0), (0.25, 0.25), ("250ms", 0.25), ("10s", 10.0), ("5m", 300.0), ("1h", 3600.0),
    ("100us", 1e-4)])
def test_durations(text, value):
    assert config.parse_duration(text) == pytest.approx(value)


def test_unknown_key_names_path_line_and_suggestion():
    p = problems("""\
        rings:
          - name: md
            capacity: 1M
            maxrecord: 1K
        """)
    assert len(p) == 1
    assert p[0].startswith("c.yaml:4: rings[0].maxrecord: unknown key")
    assert "did you mean 'max_record'" in p[0]


def test_unknown_top_level_and_nested_keys():
    p = problems("""\
        rings:
          - name: md
            capacity: 1M
            replica: {engin: cpu}
        metric: {}
        """)
    assert any(s.startswith("c.yaml:5: metric: unknown key") for s in p)
    assert any("rings[0].replica.engin: unknown key" in s for s in p)


def test_wrong_types():
    p = problems("""\
        rings:
          - name: md
            capacity: [1]
            lossless: "yes"
            partitions: eight
        supervisor: {max_restarts: 1.5}
        """)
    text = "\n".join(p)
    assert "rings[0].capacity: expected a size, got a list" in text
    assert "rings[0].lossless: expected true or false, got the string 'yes'" in text
    assert "rings[0].partitions: expected an integer, got the string 'eight'" in text
    assert "supervisor.max_restarts: expected an integer" in text


@pytest.mark.parametrize("ring,key,words", [
    ("capacity: 3M", "capacity", "impossible size"),
    ("capacity: 2K", "capacity", "impossible size"),
    ("{capacity: 4K, max_record: 4K}", "max_record", "partition size / 4 = 128"),
    ("{capacity: 1M, partitions: 3}", "partitions", "power of two"),
    ("{capacity: 4K, partitions: 128}", "partitions", ">= 512 bytes"),
    ("{capacity: 4K, partitions: 16}", "partitions", ">= 512 bytes"),
    ("{capacity: 1M, max_record: 8}", "max_record", "between 16"),
])
def test_impossible_sizes(ring, key, words):
    body = ring.strip("{}")
    p = problems(f"rings:\n  - {{name: r, {body}}}\n")
    assert len(p) == 1, p
    assert f"rings[0].{key}:" in p[0] and words in p[0]


def test_duplicate_ring_names_and_replica_collisions():
    p = problems("""\
        rings:
          - {name: md, capacity: 1M, replica: {}}
          - {name: md, capacity: 1M}
          - {name: md.replica, capacity: 1M}
        """)
    text = "\n".join(p)
    assert "c.yaml:3: rings[1].name: duplicate name 'md': already used by rings[0].name" in text
    assert "rings[2].name: duplicate name 'md.replica': already used by " \
           "rings[0].replica.name" in text


def test_duplicate_yaml_key_is_reported():
    p = problems("""\
        rings:
          - name: a
            capacity: 1M
            capacity: 2M
        """)
    assert p == ["c.yaml:4: rings[0].capacity: key appears twice in one mapping"]


def test_all_problems_are_reported_at_once():
    p = problems("""\
        rings:
          - {name: a, capacity: 3M}
          - {name: 'bad/../', capacity: 1M, snapshots: {interval: 0}}
        log_level: loud
        """)
    assert len(p) >= 4
    assert any("log_level" in s and "not one of" in s for s in p)
    assert any("snapshots.directory: required key is missing" in s for s in p)
    assert any("snapshots.interval: duration 0 must be greater than zero" in s for s in p)


def test_semantic_cross_checks():
    p = problems("""\
        rings:
          - {name: a, capacity: 1M, replica: {gate: true}}
          - {name: b, capacity: 1M, snapshots: {directory: x, interval: 1s, source: replica}}
        """)
    text = "\n".join(p)
    assert "rings[0].replica.gate: gating on the mirror needs a lossless ring" in text
    assert "rings[1].snapshots.source: source is replica but this ring has no replica" in text


def test_structure_errors():
    assert problems("- 1\n") == ["c.yaml:1: (top level): the configuration must be a mapping "
                                 "at the top level, got a list"]
    assert "declare at least one ring" in problems("name: x\n")[0]
    assert "not valid YAML" in problems("rings: [\n")[0]
    assert "expected a list of rings" in problems("rings: {a: 1}\n")[0]


def test_relative_snapshot_directory_is_relative_to_the_file():
    cfg = config.loads("rings: [{name: a, capacity: 64K, snapshots: {directory: img, "
                       "interval: 1}}]\n", source="/etc/x/c.yaml", base_dir="/etc/x")
    assert cfg.rings[0].snapshots is not None
    assert cfg.rings[0].snapshots.directory == "/etc/x/img"
    assert cfg.name == "c"


def test_missing_file():
    with pytest.raises(ConfigError, match="configuration file not found"):
        config.load_config("/nonexistent/pyshm.yaml")


def test_resources_check_flags_an_impossible_total(tmp_path):
    cfg = config.loads(f"rings: [{{name: {tmp_path}/big, capacity: 64T}}]\n", "c.yaml")
    probs = config.check_resources(cfg)
    assert len(probs) == 1 and "need 67108864 MiB" in probs[0] and "free" in probs[0]


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "pyshm", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_cli_config_check(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("rings: [{name: pyshm-test-cfg, capacity: 64K}]\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rings:\n  - {name: a, capacity: 3M}\n  - {name: a, capacity: 1M}\n")
    r = _cli("config", "check", str(good), cwd=tmp_path)
    assert r.returncode == 0 and "valid" in r.stdout
    r = _cli("config", "check", str(bad), cwd=tmp_path)
    assert r.returncode == 1
    assert f"{bad}:2: rings[0].capacity" in r.stderr and "duplicate name 'a'" in r.stderr
    r = _cli("config", "check", "--json", str(bad), cwd=tmp_path)
    out = json.loads(r.stdout)
    assert r.returncode == 1 and out["valid"] is False and len(out["problems"]) == 2
    r = _cli("config", "check", "--help", cwd=tmp_path)
    assert "example:" in r.stdout


def test_replica_engine_wait_and_priority():
    base = """
        rings:
          - name: r
            capacity: 64K
            replica: {%s}
    """
    cfg = config.loads(textwrap.dedent(base % "wait: block, poll_priority: 10"),
                       source="c.yaml", base_dir="/base")
    rep = cfg.ring("r").replica
    assert rep is not None and (rep.wait, rep.poll_priority) == ("block", 10)
    old = config.loads(textwrap.dedent(base % "wait: backoff"), source="c.yaml",
                       base_dir="/base")
    assert old.ring("r").replica.wait == "sleep"  # the engine's earlier name, still accepted
    (msg,) = problems(base % "wait: nap")
    assert "replica.wait" in msg and "spin, yield, sleep, block" in msg
    (msg,) = problems(base % "poll_priority: 100")
    assert "replica.poll_priority" in msg and "0..99" in msg
