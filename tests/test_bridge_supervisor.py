"""pyshm run with bridges: (out and in) and a remote snapshot target; pyshm stats and the
Prometheus endpoint report bridge lag, in-flight, redeliveries and reconnects, and no
secret appears in logs, status files or metrics."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request

from natsfix import next_seq, records, wait_for

from pyshm import Ring
from pyshm.bridge import objstore
from pyshm.bridge.localserver import free_port
from pyshm.config import loads


def test_config_accepts_bridges_and_refuses_bad_ones():
    cfg = loads("""
nats: {servers: "nats://127.0.0.1:4222,nats://127.0.0.1:4223", creds: /etc/u.creds}
rings: [{name: md, capacity: 64K}]
bridges:
  - {out: md, stream: MD, replicas: 3, grace: 45s}
  - {in: md-far, stream: MD, capacity: 1M, nats: {servers: [nats://10.0.0.9:4222]}}
""")
    out, inn = cfg.bridges
    assert (out.kind, out.ring, out.options) == ("out", "md", {"replicas": 3, "grace": 45.0})
    assert out.nats["servers"] == ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"]
    assert (inn.kind, inn.options["capacity"], inn.nats["servers"]) == \
        ("in", 1 << 20, ["nats://10.0.0.9:4222"])
    assert loads("bridges: [{in: far, stream: S, nats: {servers: [nats://h:1]}}]").rings == ()
    import pytest

    from pyshm.errors import ConfigError
    with pytest.raises(ConfigError) as err:
        loads("rings: [{name: md, capacity: 64K}]\n"
              "bridges: [{out: md, in: x, stream: S}, {out: md, stream: S, durable: d},"
              " {out: md, stream: 'a b'}]")
    text = str(err.value)
    assert "exactly one of out" in text and "durable is a setting of `in` bridges" in text
    assert "no NATS servers" in text and "a stream name is letters" in text


def test_run_keeps_bridges_and_uploads_images(procs, new_name, tmp_path):
    # the server requires the nats section's user and password: the bridges (which get
    # them on stdin) and the supervisor's uploads must both pass them on
    from pyshm.bridge.localserver import LocalNats

    auth = 'authorization {\n  users: [{user: alice, password: "hunter2-secret"}]\n}\n'
    with LocalNats(1, workdir=str(tmp_path / "nats"), extra_conf=auth) as nats_server:
        _run_with_bridges(nats_server, procs, new_name, tmp_path)


def _run_with_bridges(nats_server, procs, new_name, tmp_path):
    src, far = new_name(), new_name()
    stream = "RUN" + src[-8:].replace("_", "")
    bucket = "run" + src[-8:].replace("_", "")
    port = free_port()
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"""
name: bridged
state_dir: {tmp_path}/state
nats: {{servers: ["{nats_server.url}"], user: alice, password: hunter2-secret}}
rings:
  - name: {src}
    capacity: 64K
    lossless: true
    snapshots:
      directory: {tmp_path}/images
      interval: 300ms
      keep: 3
      source: ring
      remote: {nats_server.url}/{bucket}/md
      remote_keep: 2
bridges:
  - {{out: {src}, stream: {stream}}}
  - {{in: {far}, stream: {stream}, capacity: 1M}}
metrics: {{listen: "127.0.0.1:{port}", status_interval: 200ms}}
""")
    log = open(tmp_path / "run.log", "wb")
    run = subprocess.Popen([sys.executable, "-m", "pyshm", "run", str(cfg)], cwd=tmp_path,
                           env=procs.env, stderr=log, stdout=log)
    procs.procs.append(run)
    try:
        def gating() -> bool:
            try:
                with Ring(src) as r:
                    return any(s["gating"] and s["alive"] for s in r.slots())
            except Exception:
                return False
        wait_for(gating, 30, "the bridge's gating slot")
        with Ring(src) as ring, ring.producer() as p:
            for s in range(3000):
                assert p.publish(s.to_bytes(4, "little") * (s % 9), type=s % 3,
                                 timeout=20.0) == s
        wait_for(lambda: next_seq(far) == 3000, 60, "the far ring to catch up")
        assert [(s, t) for s, t, _ in records(far)] == [(s, s % 3) for s in range(3000)]

        def bridged() -> dict | None:
            r = procs.run("stats", "--json", src, far, "--state-dir", f"{tmp_path}/state")
            sample = json.loads(r.stdout)
            rings = sample["rings"]
            if rings[src].get("bridges") and rings[far].get("bridges") and \
                    rings[src]["bridges"][0].get("acked") == 3000:
                return sample
            return None
        sample = wait_for(bridged, 30, "bridge statistics", every=0.3)
        b_out, b_in = sample["rings"][src]["bridges"][0], sample["rings"][far]["bridges"][0]
        assert (b_out["kind"], b_in["kind"]) == ("out", "in")
        for b in (b_out, b_in):
            for key in ("lag_records", "lag_us", "in_flight", "redeliveries", "reconnects"):
                assert key in b, key
        text = procs.run("stats", "--once", src, "--state-dir", f"{tmp_path}/state").stdout
        assert f"bridge out -> stream {stream}" in text
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10
                                         ).read().decode()
        assert "pyshm_bridge_lag_records" in metrics and "pyshm_bridge_in_flight" in metrics
        listing = nats_server.url.replace("nats://", "nats://alice:hunter2-secret@")
        wait_for(lambda: len(objstore.list_images(f"{listing}/{bucket}/")) == 2,
                 30, "two remote images (remote_keep 2)")
        run.send_signal(signal.SIGTERM)
        assert run.wait(60) == 0
    finally:
        if run.poll() is None:
            run.kill()
        log.close()
    everything = (tmp_path / "run.log").read_text() + (tmp_path / "state").as_posix()
    assert "hunter2-secret" not in everything
    assert "hunter2-secret" not in json.dumps(sample) and "hunter2-secret" not in metrics
