"""No `pyshm` command prints a traceback: every subcommand gets a battery of bad inputs and
must answer with a non-zero exit status and one message naming the problem, in the words of
the command line (options, not keyword arguments).

Most cases run `main()` in this process (an exception escaping it fails the test, as a
traceback would); closed pipes, missing extras and the console script run as processes.
"""

from __future__ import annotations

import argparse
import errno
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from pyshm import layout
from pyshm.cli import build_parser, main
from pyshm.images import snapshot
from pyshm.ring import Ring

PYSHM = os.path.join(os.path.dirname(sys.executable), "pyshm")
MISSING = "no-such-ring-or-file-for-the-cli-test"
# words that mean the user is reading Python internals instead of an answer
LEAKS = ("Traceback", "<lambda>", "_size", "invalid int value", "invalid float value",
         "overwrite=True", "in_place=True", "Errno")


def commands() -> dict[str, argparse.ArgumentParser]:
    """Every subcommand's parser by its full name ("info", "config check", ...)."""
    out: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    full = f"{prefix} {name}".strip()
                    out[full] = sub
                    walk(sub, full)
    walk(build_parser(), "")
    return out


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        rc = main(list(argv))
    except SystemExit as exc:  # argparse's usage errors and --help/--version
        rc = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return rc, out, err


def assert_clean_failure(rc: int, err: str, *phrases: str, status: int | None = None) -> None:
    assert rc != 0, f"exit status 0 for a bad input; stderr: {err!r}"
    if status is not None:
        assert rc == status, err
    for leak in LEAKS:
        assert leak not in err, f"{leak!r} in: {err}"
    assert "error" in err, err
    for phrase in phrases:
        assert phrase in err, f"{phrase!r} not in: {err}"


@pytest.fixture
def ring(ring_name):
    with Ring(ring_name, create=True, capacity=1 << 16) as r:
        p = r.producer()
        for i in range(50):
            p.publish(b"record %d" % i, type=i % 3)
        p.close()
        yield r


@pytest.fixture
def image(ring, tmp_path) -> str:
    path = str(tmp_path / "ring.pyimg")
    snapshot(ring, path)
    return path


# One invocation per command that names something that does not exist: it must fail
# cleanly and name what it looked for. A new command gets an entry here.
MISSING_TARGET = {
    "create": None,  # creates its argument; its bad inputs are below
    "info": ["info", MISSING],
    "tail": ["tail", MISSING],
    "rm": ["rm", MISSING],
    "publish": ["publish", MISSING, "x"],
    "run": ["run", MISSING + ".yaml"],
    "config": None,  # a group: `config check` is the command
    "config check": ["config", "check", MISSING + ".yaml"],
    "demo": ["demo", "--config", MISSING + ".yaml", "--quiet"],
    "stats": ["stats", MISSING, "--once"],
    "replicate": ["replicate", MISSING, "--to", MISSING + ".replica", "--duration", "0.1"],
    "snapshot": ["snapshot", MISSING, "-o", "{tmp}/x.pyimg"],
    "restore": ["restore", MISSING, "--to", MISSING + ".restored"],
    "inspect": ["inspect", MISSING],
    "export": ["export", MISSING],
    "diff": ["diff", MISSING, MISSING + "2"],
    "ls": None,  # takes no name
    "repair": ["repair", MISSING],
    "bridge": None,  # a group
    "bridge out": ["bridge", "out", MISSING, "--server", "nats://127.0.0.1:9", "--stream",
                   "S", "--connect-timeout", "0.5"],
    "bridge in": None,  # creates its ring; needs a server
    "bridge promote": ["bridge", "promote", MISSING],
    "state": None,  # a group
    "state create": None,  # creates its argument; bad --dtype cases in test_state_cli.py
    "state info": ["state", "info", MISSING],
    "state read": ["state", "read", MISSING, "0"],
    "state snapshot": ["state", "snapshot", MISSING, "-o", "{tmp}/x.pyimg"],
    "state recover": ["state", "recover", MISSING, "--image", MISSING + ".pyimg"],
    "state follow": ["state", "follow", MISSING, "--ring", MISSING + ".md", "--apply",
                     "os:getcwd"],
    "state ls": None,  # takes no name
    "state replicate": ["state", "replicate", MISSING, "--to", MISSING + ".replica",
                        "--duration", "0.1"],
    "state rm": ["state", "rm", MISSING],
    "handover": ["handover", MISSING, "--ring", MISSING + ".md", "--apply", "os:getcwd",
                 "--exit-after"],
}


def test_every_command_is_in_the_battery():
    missing = sorted(set(commands()) - set(MISSING_TARGET))
    assert not missing, (f"add the new command(s) {missing} to MISSING_TARGET in "
                         f"tests/test_cli_errors.py, with an invocation naming a missing ring "
                         f"or file (or None and a bad-input case of its own)")


@pytest.mark.parametrize("command", sorted(commands()))
def test_misspelled_option_shows_the_commands_usage(capsys, command):
    parser = commands()[command]
    required = [a for a in parser._actions if a.required or (
        not a.option_strings and a.nargs not in ("?", "*", argparse.REMAINDER)
        and not isinstance(a, argparse._SubParsersAction))]
    filler = []
    for a in required:
        filler += ([a.option_strings[0]] if a.option_strings else []) + ["x"]
    rc, _, err = cli(capsys, *command.split(), *filler, "--no-such-option")
    assert rc == 2
    assert f"usage: pyshm {command}" in err, err


@pytest.mark.parametrize("command", sorted(c for c, v in MISSING_TARGET.items() if v))
def test_missing_target_is_named(capsys, tmp_path, shm_prefix, command):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in MISSING_TARGET[command]]
    rc, _, err = cli(capsys, *argv)
    if command == "config check":  # a linter: FILE: problem lines, then a count
        assert rc == 1 and f"{MISSING}.yaml: configuration file not found" in err, err
        return
    assert_clean_failure(rc, err, MISSING)
    assert err.startswith(f"pyshm {command}: error: "), err


BAD_VALUES = [
    # (argv, phrases the message must contain, exit status)
    (["create", "{new}", "--capacity", "foo"], ["--capacity", "'foo' is not a size"], 2),
    (["create", "{new}", "--capacity", "3000"], ["capacity 3000", "power of two"], 1),
    (["create", "{new}", "--capacity", "64K", "--mode", "abc"], ["--mode", "octal"], 2),
    (["create", "{new}", "--capacity", "64K", "--partitions", "0"], ["--partitions"], 2),
    (["create", "{ring}", "--capacity", "64K"], ["already exists"], 1),
    (["tail", "{ring}", "--from", "foo"], ["--from", "oldest, latest or a sequence"], 2),
    (["tail", "{ring}", "-n", "-3"], ["-n", "whole number"], 2),
    (["stats", "--serve", "HOST"], ["--serve", "HOST:PORT"], 2),
    (["stats", "--interval", "0"], ["--interval", "seconds > 0"], 2),
    (["snapshot", "{ring}", "-o", "{tmp}/no/such/dir/x.pyimg"], ["does not exist"], 1),
    (["snapshot", "{ring}", "-o", "{tmp}/x.pyimg", "--chunk-size", "4X"],
     ["--chunk-size", "'4X' is not a size"], 2),
    (["snapshot", "{ring}", "-o", "{tmp}/x.pyimg", "--chunk-size", "3000"],
     ["chunk size 3000"], 1),
    (["snapshot", "{ring}", "-o", "{image}"], ["already exists", "--force"], 1),
    (["restore", "{image}", "--to", "{ring}"], ["already exists", "--overwrite"], 1),
    (["restore", "{image}", "--to", "{new}", "--in-place"], ["no ring named"], 1),
    (["export", "{ring}"], ["is a ring, not an image", "pyshm snapshot"], 1),
    (["inspect", "{ring}"], ["is a ring, not an image"], 1),
    (["export", "{image}", "-o", "{tmp}/no/such/dir/x.jsonl"], ["no/such/dir"], 1),
    (["replicate", "{ring}", "--to", "{new}", "--engine", "bogus"], ["unknown engine"], 1),
    (["replicate", "{ring}", "--to", "{new}", "--interval", "0"], ["--interval"], 2),
    (["publish", "{ring}", "--type", "-1", "x"], ["--type", "padding"], 2),
    (["publish", "{ring}", "--hex", "zz"], ["not hexadecimal"], 1),
    (["publish", "{ring}", "--file", "{tmp}/no-such-file"], ["no-such-file"], 1),
    (["publish", "{ring}", "x" * 70000], ["argument 1", "more than ring"], 1),
    (["repair", "{image}"], ["not a pyshm ring"], 1),
    (["rm", "{image}"], ["not a pyshm ring"], 1),
    (["config", "check", "{image}"], [], 1),
    (["snapshot", "{ring}", "-o", "{tmp}"], ["is a directory", "--every"], 1),
    (["export", "{tmp}"], ["is a directory"], 1),
    (["inspect", "{tmp}"], ["is a directory"], 1),
    (["restore", "{tmp}", "--to", "{new}"], ["is a directory"], 1),
    (["diff", "{tmp}", "{image}"], ["is a directory"], 1),
    (["run", "{text}"], ["configuration must be a mapping", "..."], 1),
]


@pytest.mark.parametrize("argv,phrases,status", BAD_VALUES,
                         ids=[" ".join(a[:2] + a[3:5]) for a, _, _ in BAD_VALUES])
def test_bad_values_are_refused_in_the_users_words(capsys, tmp_path, ring, image, new_name,
                                                   argv, phrases, status):
    text = tmp_path / "notes.txt"  # a long text that is not a configuration
    text.write_text("word " * 2000)
    subst = {"{ring}": ring.name, "{image}": image, "{tmp}": str(tmp_path), "{new}": new_name(),
             "{text}": str(text)}
    args = []
    for a in argv:
        for k, v in subst.items():
            a = a.replace(k, v)
        args.append(a)
    rc, _, err = cli(capsys, *args)
    if argv[:2] == ["config", "check"]:  # reports problems its own way, on stderr
        assert rc == 1 and "Traceback" not in err and err
        return
    assert_clean_failure(rc, err, *phrases, status=status)
    assert len(err) < 600, f"a message for people, not a dump: {err[:300]}..."


def test_stats_exits_non_zero_on_a_missing_or_damaged_ring_like_info(capsys, ring, new_name):
    rc, _, err = cli(capsys, "info", MISSING)
    assert rc == 1
    for extra in (["--once"], ["--json"], []):
        rc, out, _ = cli(capsys, "stats", MISSING, *extra)
        assert rc == 1, extra
    damaged = new_name()
    with Ring(damaged, create=True, capacity=1 << 16) as r:
        struct.pack_into("<Q", r.segment.buf, layout.OFF_TAIL, (1 << 63) + 12)
    for cmd in (["info", damaged], ["stats", damaged, "--once"], ["stats", damaged]):
        rc, out, err = cli(capsys, *cmd)
        assert rc == 1, cmd
        text = out + err
        # the field that is damaged is the tail, and the message says so
        assert "header field tail = " in text and "tail_intent" not in text, text
    rc, _, _ = cli(capsys, "stats", ring.name, "--once")
    assert rc == 0


def test_os_errors_name_the_path(capsys, ring, monkeypatch):
    import pyshm.segment as segment

    real_open = os.open

    def deny(path, *a, **kw):
        if ring.name in os.fsdecode(path):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, *a, **kw)

    monkeypatch.setattr(segment.os, "open", deny)
    for argv in (["info", ring.name], ["tail", ring.name], ["publish", ring.name, "x"]):
        rc, _, err = cli(capsys, *argv)
        assert_clean_failure(rc, err, ring.name, "permission denied", status=1)


def test_unexpected_errors_are_one_line_not_a_traceback(capsys, ring, monkeypatch):
    import pyshm.cli.ring_cmds as ring_cmds

    def broken(args):
        raise KeyError("surprise")

    monkeypatch.setattr(ring_cmds, "cmd_info", broken)
    monkeypatch.delenv("PYSHM_DEBUG", raising=False)
    rc, _, err = cli(capsys, "info", ring.name)
    assert rc == 70 and "internal error" in err and "KeyError" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_version(capsys):
    from pyshm import __version__
    rc, out, _ = cli(capsys, "--version")
    assert rc == 0 and out.strip() == f"pyshm {__version__}"


def run(*argv: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([PYSHM, *argv], capture_output=True, text=True, timeout=120, **kw)


def test_a_closed_pipe_ends_quietly(new_name, tmp_path):
    name = new_name()
    image = str(tmp_path / "big.pyimg")
    with Ring(name, create=True, capacity=1 << 20) as r:
        p = r.producer()
        for i in range(500):  # several pipe buffers of output
            p.publish(b"%d " % i + b"x" * 1000)
        p.close()
        snapshot(r, image)
    for argv in ([PYSHM, "tail", name, "-n", "100000", "--max-bytes", "2000"],
                 [PYSHM, "export", image, "-o", "-"],
                 [PYSHM, "tail", name, "--from", "oldest", "--follow", "--max-bytes", "2000"]):
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.readline()
        proc.stdout.close()  # what `| head -1` does
        try:
            err = proc.stderr.read().decode()
            rc = proc.wait(timeout=30)
        finally:
            proc.kill()
            proc.wait()
        assert rc == 0 and err == "", (argv, rc, err)


def test_missing_extra_says_what_to_install(ring, new_name, tmp_path):
    # a cocotb that cannot be imported, ahead of the installed one on the path
    fake = tmp_path / "no_hwsim"
    fake.mkdir()
    (fake / "cocotb.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'cocotb'\", name='cocotb')\n")
    env = {**os.environ, "PYTHONPATH": str(fake)}
    r = run("replicate", ring.name, "--to", new_name(), "--engine", "sim", "--duration", "0.1",
            env=env)
    assert r.returncode == 1, r.stderr
    assert "pip install 'pyshm[hwsim]'" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_auto_says_which_engine_it_picked_without_logging_setup(ring, new_name):
    code = ("import sys\nfrom pyshm.engine import open_engine\nfrom pyshm.replica import "
            "Replica\nrep = Replica.create(sys.argv[2], sys.argv[1])\n"
            "with open_engine('auto', sys.argv[1], rep) as e:\n    pass\nrep.close()\n")
    r = subprocess.run([sys.executable, "-c", code, ring.name, new_name()],
                       capture_output=True, text=True, timeout=60, cwd=Path("/"))
    assert r.returncode == 0, r.stderr
    assert "auto picked 'cpu'" in r.stderr, r.stderr
