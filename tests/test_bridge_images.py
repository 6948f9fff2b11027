"""Images in the JetStream object store: snapshot to nats://HOST:PORT/BUCKET/NAME,
inspect, restore (every chunk's CRC32C verified on the way back), keep-K retention of
remote schedules, and clear errors for missing or damaged objects."""

from __future__ import annotations

import json
import os

from natsfix import records
from ringdata import fill

from pyshm import Ring
from pyshm.bridge import objstore


def test_snapshot_inspect_restore_through_the_object_store(nats_server, procs, new_name,
                                                           tmp_path):
    src, dst = new_name(), new_name()
    with Ring.create(src, 1 << 16) as ring:
        fill(ring, 700)
    url = f"{nats_server.url}/imgs/{src}.pyimg"
    r = procs.run("snapshot", src, "-o", url)
    assert r.returncode == 0, r.stderr
    assert "700 records, sequences 0..699" in r.stdout
    r = procs.run("snapshot", src, "-o", url)
    assert r.returncode == 1 and "already exists" in r.stderr
    r = procs.run("inspect", url)
    assert r.returncode == 0 and "records     700, sequences 0..699" in r.stdout
    assert url in r.stdout and "checksums   verified" in r.stdout
    info = json.loads(procs.run("inspect", url, "--json").stdout)
    assert info["sequences"]["records"] == 700
    listing = procs.run("inspect", f"{nats_server.url}/imgs/")
    assert f"{src}.pyimg" in listing.stdout and "700 records" in listing.stdout
    r = procs.run("restore", url, "--to", dst)
    assert r.returncode == 0, r.stderr
    assert records(dst) == records(src)


def test_a_damaged_remote_image_is_refused_naming_the_chunk(nats_server, new_name, tmp_path):
    import pytest

    from pyshm.errors import ImageChecksumError, RingNotFoundError
    from pyshm.images import snapshot

    src, dst = new_name(), new_name()
    with Ring.create(src, 1 << 16) as ring:
        fill(ring, 500)
    path = tmp_path / "x.pyimg"
    snapshot(src, path, chunk_size=8192)
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0xFF  # inside the last chunk (the trailer is the last 32 bytes)
    path.write_bytes(bytes(raw))
    url = f"{nats_server.url}/imgs/damaged.pyimg"
    objstore.upload_file(str(path), objstore.parse_url(url), overwrite=True)
    with pytest.raises(ImageChecksumError, match="chunk"):
        objstore.restore(url, dst)
    assert not os.path.exists(f"/dev/shm/{dst}")
    with pytest.raises(RingNotFoundError, match="no such object"):
        objstore.restore(f"{nats_server.url}/imgs/absent.pyimg", dst)


def test_remote_schedule_keeps_the_last_k(nats_server, procs, new_name):
    src = new_name()
    with Ring.create(src, 1 << 14) as ring:
        fill(ring, 50)
    bucket = f"{nats_server.url}/keep{src[-8:]}/"
    r = procs.run("snapshot", src, "-o", bucket + "md", "--every", "0.2", "--keep", "2",
                  "--duration", "1.5", timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("50 records") >= 3
    names = [d["name"] for d in objstore.list_images(bucket)]
    assert len(names) == 2 and all(n.startswith("md-") for n in names)
