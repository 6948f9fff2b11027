"""Security: owner-only files, another user cannot attach, ring names cannot escape
/dev/shm, and no code path evaluates or unpickles data."""

from __future__ import annotations

import ast
import os
import pwd
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import pytest

from pyshm import Ring
from pyshm.cli import main as cli_main
from pyshm.errors import InvalidNameError
from pyshm.segment import SHM_DIR, resolve_path

ROOT = Path(__file__).resolve().parent.parent
TEST_USER = "pyshm-sectest"


def mode_of(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def wide_umask():
    # a umask of 0 must not widen what pyshm creates (and 077 must not be what saves us)
    old = os.umask(0)
    yield
    os.umask(old)


def test_rings_replicas_images_are_owner_only(wide_umask, ring_name, replica_name,
                                              shm_prefix, tmp_path):
    from pyshm.images import restore, snapshot
    from pyshm.replica import Replica

    with Ring.create(ring_name, 16 * 1024) as ring:
        with ring.producer() as p:
            for i in range(50):
                p.publish(b"%d" % i)
        assert mode_of(ring.path) == 0o600
        with Replica.create(replica_name, ring) as rep:
            assert mode_of(rep.path) == 0o600
        img = tmp_path / "snap.img"
        snapshot(ring, img)
        assert mode_of(str(img)) == 0o600
    restored = f"{shm_prefix}_restored"
    restore(img, restored)
    assert mode_of(resolve_path(restored)) == 0o600
    file_ring = tmp_path / "file.ring"
    Ring.create(str(file_ring), 16 * 1024).close()
    assert mode_of(str(file_ring)) == 0o600
    cli = f"{shm_prefix}_cli"
    assert cli_main(["create", cli, "--capacity", "16K"]) == 0
    assert mode_of(resolve_path(cli)) == 0o600


def test_wider_mode_only_when_asked(wide_umask, ring_name):
    with Ring.create(ring_name, 16 * 1024, mode=0o640) as ring:
        assert mode_of(ring.path) == 0o640


ATTACH = r'''
import json, os, sys
name, path = sys.argv[1], sys.argv[2]
out = {"uid": os.getuid()}
try:
    from pyshm import Ring
    out["pyshm"] = True
    try:
        Ring.attach(name, readonly=sys.argv[3] == "ro").close()
        out["result"] = "attached"
    except Exception as e:  # pyshm's PermissionDeniedError is a PermissionError
        out["result"] = "PermissionError" if isinstance(e, PermissionError) \
            else type(e).__name__
except ImportError:
    out["pyshm"] = False   # the installed package is not readable by this user
    try:
        os.close(os.open(path, os.O_RDONLY))
        out["result"] = "attached"
    except Exception as e:
        out["result"] = type(e).__name__
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def other_user():
    """(uid, gid) of an unprivileged second user: a dedicated one made with useradd when
    running as root, else nobody; skipped only when no such user can be switched to."""
    def unavailable(why: str) -> NoReturn:
        # CI runs as root with util-linux: there a missing second user is a failure
        if os.environ.get("CI"):
            pytest.fail(f"{why} (required in CI)")
        pytest.skip(why)

    if os.geteuid() != 0 or not shutil.which("setpriv"):
        unavailable("switching users needs root and setpriv (util-linux)")
    created = False
    try:
        pw = pwd.getpwnam(TEST_USER)
    except KeyError:
        useradd = shutil.which("useradd")
        rc = subprocess.run([useradd, "--system", "--no-create-home", "--shell",
                             "/usr/sbin/nologin", TEST_USER], capture_output=True).returncode \
            if useradd else 1
        if rc == 0:
            created = True
            pw = pwd.getpwnam(TEST_USER)
        else:
            try:
                pw = pwd.getpwnam("nobody")
            except KeyError:
                unavailable("useradd failed and there is no 'nobody' user")
    yield pw.pw_uid, pw.pw_gid
    if created and shutil.which("userdel"):
        subprocess.run(["userdel", TEST_USER], capture_output=True)


def run_as(user: tuple[int, int], *args: str) -> dict:
    import json

    # -c, not a script file: pytest's tmp directories are owner-only; cwd "/" keeps the
    # source tree off sys.path
    uid, gid = user
    out = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                          sys.executable, "-c", ATTACH, *args], cwd="/", capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_another_user_cannot_attach(other_user, ring_name):
    with Ring.create(ring_name, 16 * 1024) as ring:
        for ro in ("rw", "ro"):
            got = run_as(other_user, ring_name, ring.path, ro)
            assert got["uid"] == other_user[0] != 0
            assert got["result"] == "PermissionError", got


def test_another_user_can_read_when_configured(other_user, ring_name):
    with Ring.create(ring_name, 16 * 1024, mode=0o644) as ring:
        got = run_as(other_user, ring_name, ring.path, "ro")
        assert got["result"] == "attached", got
        if got["pyshm"]:
            assert run_as(other_user, ring_name, ring.path, "rw")["result"] == \
                "PermissionError"


BAD_NAMES = ["..", ".", "..hidden", ".hidden", "-rf", "a..b", "", "a b", "a\0b", "x" * 201,
             "é", "name;rm", "$(id)", "a*", "a?b", "a\\b", "ring\n"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_ring_names_are_rejected(name):
    with pytest.raises(InvalidNameError):
        resolve_path(name)
    with pytest.raises(InvalidNameError):
        Ring.create(name, 16 * 1024)
    with pytest.raises(InvalidNameError):
        Ring.attach(name)


def test_names_stay_in_dev_shm_and_paths_are_explicit(tmp_path):
    assert resolve_path("md.eurusd") == os.path.join(SHM_DIR, "md.eurusd")
    # shm_open's spelling with one leading slash is the same shm name, not a root path
    assert resolve_path("/md.eurusd") == os.path.join(SHM_DIR, "md.eurusd")
    for bad in ("/..", "/.hidden", "/"):
        with pytest.raises(InvalidNameError):
            resolve_path(bad)
    # with a slash it is a path the caller chose, normalised, never joined onto /dev/shm
    assert resolve_path(str(tmp_path / "a/../r")) == str(tmp_path / "r")
    with pytest.raises(InvalidNameError):
        resolve_path(str(tmp_path) + "/r\0")


def test_cli_rejects_bad_names(capsys):
    before = set(os.listdir(SHM_DIR))
    for bad in ("..", "..escape", ".hidden"):
        assert cli_main(["create", bad, "--capacity", "16K"]) == 1
        assert "invalid ring name" in capsys.readouterr().err
        assert cli_main(["rm", bad]) == 1
        assert "invalid ring name" in capsys.readouterr().err
    assert not {"..escape", ".hidden"} & (set(os.listdir(SHM_DIR)) - before)


# ------------------------------------------------------------------ no eval / pickle

FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill",
                     "cloudpickle", "jsonpickle"}
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}


def _python_sources() -> list[Path]:
    out = []
    for top in ("pyshm", "fallback", "driver"):
        out += sorted((ROOT / top).rglob("*.py"))
    return out


def _problems(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    bad = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            bad += [f"{where} imports {a.name}" for a in node.names
                    if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module and \
                node.module.split(".")[0] in FORBIDDEN_MODULES:
            bad.append(f"{where} imports from {node.module}")
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(
                f, ast.Attribute) else ""
            if isinstance(f, ast.Name) and name in FORBIDDEN_CALLS:
                bad.append(f"{where} calls {name}()")
            if name in ("unsafe_load", "full_load") or (
                    name == "load" and isinstance(f, ast.Attribute)
                    and isinstance(f.value, ast.Name) and f.value.id == "yaml"
                    and not any(k.arg == "Loader" for k in node.keywords)):
                bad.append(f"{where} calls yaml.{name} (use yaml.safe_load)")
            for k in node.keywords:
                if k.arg == "allow_pickle" and not (isinstance(k.value, ast.Constant)
                                                    and k.value.value is False):
                    bad.append(f"{where} passes allow_pickle={ast.unparse(k.value)}")
                if k.arg == "shell" and not (isinstance(k.value, ast.Constant)
                                             and k.value.value is False):
                    bad.append(f"{where} runs a shell (shell={ast.unparse(k.value)})")
    return bad


def test_no_code_path_evaluates_or_unpickles_data():
    sources = _python_sources()
    assert len(sources) > 20 and any(p.name == "ring.py" for p in sources)
    problems = [p for src in sources for p in _problems(src)]
    assert problems == []


def test_checker_catches_what_it_looks_for(tmp_path):
    # the scanner itself can fail: each construct it forbids is found in a sample
    code = ("import pickle\nfrom marshal import loads\nimport yaml\nimport numpy as np\n"
            "eval('1')\nexec('x=1')\nyaml.load(s)\nnp.load(f, allow_pickle=True)\n"
            "subprocess.run(c, shell=True)\nyaml.load(s, Loader=yaml.SafeLoader)\n")
    bad = tmp_path / "bad.py"
    bad.write_text(code)
    found = _problems_at(bad)
    assert len(found) == 7, found  # the SafeLoader call on the last line is fine


def _problems_at(path: Path) -> list[str]:
    global ROOT
    saved, ROOT = ROOT, path.parent
    try:
        return _problems(path)
    finally:
        ROOT = saved


def test_c_sources_do_not_run_commands():
    for src in list((ROOT / "pyshm" / "_core").glob("*.[ch]")) + \
            list((ROOT / "fallback").glob("*.[ch]")):
        text = src.read_text()
        for call in ("system(", "popen(", "execv", "dlopen("):
            assert call not in text, f"{src.name} uses {call}"
