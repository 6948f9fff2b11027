"""`pyshm state ...`, and `pyshm inspect|export|diff` on state images: every command does
what its --help says, and bad input is one clean line."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from statekit import BOOK, make_orders, reference_book

from pyshm import Ring, State
from pyshm.cli import main
from pyshm.state.recovery import list_images

STATEKIT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "statekit.py")
APPLY = f"{STATEKIT}:apply_order"
BOOK_SPEC = ("bid_px:<f8[4],bid_qty:<i8[4],ask_px:<f8[4],ask_qty:<i8[4],last_seq:<u8,"
             "updates:<u8,position:<i8,cash:<f8")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        rc = main(list(argv))
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


@pytest.fixture
def md(new_name):
    orders = make_orders(3000, seed=5)
    with Ring(new_name(), create=True, capacity=1 << 20) as r:
        r.producer().publish_batch(orders)
        yield r, orders
        r.unlink()


def test_create_info_read_rm(capsys, new_name):
    name = new_name()
    rc, out, _ = run(capsys, "state", "create", name, "--dtype", BOOK_SPEC, "--rows", "64")
    assert rc == 0 and f"64 rows of {BOOK.itemsize} bytes" in out
    with State(name) as st:
        assert st.dtype == BOOK
        w = st.writer()
        w.write(3, np.ones(1, BOOK))
        w.commit(41)
        w.close()
    rc, out, _ = run(capsys, "state", "info", name)
    assert rc == 0 and "applied_seq 41" in out and "bid_px: <f8[4] @ 0" in out
    rc, out, _ = run(capsys, "state", "info", name, "--json")
    assert json.loads(out)["applied_seq"] == 41
    rc, out, _ = run(capsys, "state", "read", name, "3", "--json")
    assert json.loads(out)["rows"]["3"]["bid_px"] == [1.0] * 4
    rc, out, _ = run(capsys, "state", "read", name, "--all")
    assert rc == 0 and out.startswith("# applied_seq 41") and len(out.splitlines()) == 65
    rc, out, _ = run(capsys, "state", "ls")
    assert name in out
    rc, out, _ = run(capsys, "state", "rm", name)
    assert rc == 0 and not os.path.exists(f"/dev/shm/{name}")


@pytest.mark.parametrize("spec,phrase", [
    ("price", "is not NAME:FORMAT"), ("p:<q9", "not a numpy format"),
    ("@/no/such/file.json", "cannot read"), ("o:O", "objects cannot live"),
])
def test_bad_dtype_specs(capsys, new_name, spec, phrase):
    rc, _, err = run(capsys, "state", "create", new_name(), "--dtype", spec, "--rows", "4")
    assert rc == 1 and phrase in err and err.startswith("pyshm state create: error:")


def test_snapshot_inspect_export_diff_recover(capsys, md, new_name, tmp_path):
    ring, orders = md
    name = new_name()
    rc, out, _ = run(capsys, "state", "follow", name, "--ring", ring.name, "--apply", APPLY,
                     "--dtype", BOOK_SPEC, "--rows", "64", "--duration", "1")
    assert rc == 0 and "applied 3000 records, last sequence 2999" in out
    img = str(tmp_path / "b.pyimg")
    rc, out, _ = run(capsys, "state", "snapshot", name, "-o", img)
    assert rc == 0 and "64 rows at sequence 2999" in out
    rc, out, _ = run(capsys, "inspect", img)
    assert rc == 0 and "S = 2999" in out and f"64 rows of {BOOK.itemsize} bytes" in out
    assert "position: <i8 @" in out
    rc, out, _ = run(capsys, "inspect", img, "--json")
    assert json.loads(out)["applied_seq"] == 2999
    rc, out, _ = run(capsys, "export", img, "--format", "npz", "-o", str(tmp_path / "b.npz"))
    assert rc == 0 and "64 rows" in out
    with np.load(tmp_path / "b.npz", allow_pickle=False) as z:
        assert z["rows"].tobytes() == reference_book(orders).tobytes()
    rc, out, _ = run(capsys, "export", img, "-o", str(tmp_path / "b.jsonl"))
    assert rc == 0
    lines = (tmp_path / "b.jsonl").read_text().splitlines()
    assert len(lines) == 64 and json.loads(lines[5])["row"] == 5
    rc, out, _ = run(capsys, "diff", img, name)
    assert rc == 0 and out.strip().endswith("identical")
    # change the region, diff again, then put the image back and replay the ring
    with State(name) as st:
        w = st.writer()
        w.write(7, np.zeros(1, BOOK))
        w.close()
    rc, out, _ = run(capsys, "diff", img, name)
    assert rc == 1 and "row 7:" in out and "different" in out
    rc, out, _ = run(capsys, "state", "recover", name, "--image", img)
    assert rc == 0 and "at sequence 2999" in out
    rc, out, _ = run(capsys, "diff", img, name)
    assert rc == 0
    rc, out, _ = run(capsys, "state", "recover", name, "--image", img, "--ring", ring.name,
                     "--apply", APPLY, "--json")
    assert rc == 0 and json.loads(out)["replayed"] == 0
    os.unlink(f"/dev/shm/{name}")


def test_follow_images_on_schedule_and_recover_from_the_directory(capsys, md, new_name,
                                                                   tmp_path):
    ring, orders = md
    name = new_name()
    images = str(tmp_path / "imgs")
    rc, out, _ = run(capsys, "state", "follow", name, "--ring", ring.name, "--apply", APPLY,
                     "--dtype", BOOK_SPEC, "--rows", "64", "--images", images,
                     "--every-records", "500", "--keep", "2", "--duration", "1")
    assert rc == 0
    files = list_images(images, name)
    assert 1 <= len(files) <= 2
    os.unlink(f"/dev/shm/{name}")
    rc, out, _ = run(capsys, "state", "recover", name, "--image", images, "--ring",
                     ring.name, "--apply", APPLY)
    assert rc == 0 and "up to sequence 2999" in out
    with State(name) as st:
        assert st.to_numpy().tobytes() == reference_book(orders).tobytes()
    os.unlink(f"/dev/shm/{name}")


def test_recover_errors_are_one_line(capsys, md, new_name, tmp_path):
    ring, _ = md
    name = new_name()
    State(name, create=True, dtype=[("x", "<f8")], rows=4).close()
    rc, _, err = run(capsys, "state", "recover", name, "--image", str(tmp_path))
    assert rc == 1 and "no state image of this region" in err
    rc, _, err = run(capsys, "state", "recover", name, "--image", "x", "--ring", ring.name)
    assert rc == 1 and "--ring needs --apply" in err
    rc, _, err = run(capsys, "state", "follow", name, "--ring", ring.name, "--apply",
                     "no_such_module_xyz:f")
    assert rc == 1 and "importing no_such_module_xyz failed" in err
    rc, _, err = run(capsys, "state", "follow", name, "--ring", ring.name, "--apply", "nocolon")
    assert rc == 1 and "MODULE:FUNCTION" in err
    rc, _, err = run(capsys, "state", "read", name)
    assert rc == 1 and "give ROW numbers, or --all" in err
    rc, _, err = run(capsys, "inspect", name)
    assert rc == 1 and "is a state region, not an image file" in err
    assert "pyshm state snapshot" in err
    os.unlink(f"/dev/shm/{name}")


def test_replicate_command(capsys, md, new_name):
    ring, orders = md
    name, rep = new_name(), new_name()
    run(capsys, "state", "follow", name, "--ring", ring.name, "--apply", APPLY, "--dtype",
        BOOK_SPEC, "--rows", "64", "--duration", "0.5")
    rc, out, _ = run(capsys, "state", "replicate", name, "--to", rep, "--duration", "0.3",
                     "--interval", "0.1")
    assert rc == 0 and "consistent at 2999" in out.splitlines()[-1]
    with State(rep, readonly=True) as r:
        assert r.is_replica and r.to_numpy().tobytes() == reference_book(orders).tobytes()
    rc, out, _ = run(capsys, "state", "info", rep)
    assert "replica of region" in out and "consistent at sequence 2999" in out
    for n in (name, rep):
        os.unlink(f"/dev/shm/{n}")
