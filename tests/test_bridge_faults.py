"""The bridge under faults, with real processes and a real 3-node JetStream cluster
(stream replicas 3): kill -9 of bridge out and bridge in at random moments and of one
server node mid-stream, the whole cluster stopped and restarted while the producer keeps
publishing to a lossless ring, the slot grace running out, and JetStream delivering out
of order, twice, or not at all. In every case the far ring ends with exactly the records
the source published (bytes, types, sequence numbers) or names exactly what is missing."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys

import pytest
from natsfix import (
    assert_floors_hold,
    assert_same_records,
    next_seq,
    records,
    stream_envelopes,
    wait_for,
)

from pyshm import Ring
from pyshm.bridge import GAP_TYPE

PRODUCER = r'''
import sys, time
from pyshm import Ring
def payload(seq, size):
    return (seq.to_bytes(8, "little") * (size // 8 + 1))[:size]
name, start, n, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
with Ring(name) as ring, ring.producer() as p:
    t0 = time.monotonic()
    for s in range(start, start + n):
        if p.publish(payload(s, s % 97), type=s % 5, timeout=120.0) != s:
            sys.exit(f"publish {s} failed")
        if rate and s % 50 == 0:
            ahead = (s - start) / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
print("done", flush=True)
'''


def expected(start: int, n: int) -> list[tuple[int, int, bytes]]:
    def payload(seq: int, size: int) -> bytes:
        return (seq.to_bytes(8, "little") * (size // 8 + 1))[:size]
    return [(s, s % 5, payload(s, s % 97)) for s in range(start, start + n)]


def running(procs, pid: int) -> bool:
    """The bridge ``pid`` reports state running in its status file."""
    import glob
    import os

    for path in glob.glob(os.path.join(procs.env["PYSHM_STATE_DIR"], "bridge-*.status.json")):
        try:
            with open(path) as f:
                st = json.load(f)
        except (OSError, ValueError):
            continue
        if st.get("pid") == pid:
            return any(b.get("state") == "running" for r in st["rings"].values()
                       for b in r["bridges"])
    return False


def gating(name: str) -> bool:
    with Ring(name) as ring:
        return any(s["gating"] and s["alive"] for s in ring.slots())


def start_producer(tmp_path, name: str, start: int, n: int, rate: float):
    script = tmp_path / "producer.py"
    script.write_text(PRODUCER)
    return subprocess.Popen([sys.executable, str(script), name, str(start), str(n), str(rate)],
                            cwd=tmp_path, stdout=subprocess.PIPE)


def out_cmd(src: str, url: str, stream: str, *extra: str) -> list[str]:
    return ["bridge", "out", src, "--server", url, "--stream", stream, "--replicas", "3",
            "--ack-timeout", "2", *extra]


def in_cmd(far: str, url: str, stream: str, *extra: str) -> list[str]:
    return ["bridge", "in", "--server", url, "--stream", stream, "--to", far,
            "--capacity", "4M", "--max-record", "64K", "--ack-wait", "5", *extra]


def stream_name(tag: str) -> str:
    return tag.replace("_", "")[-16:].upper()


def test_kill_bridges_and_a_server_node_at_random_moments(nats_cluster, procs, new_name,
                                                          tmp_path):
    src, far = new_name(), new_name()
    stream = stream_name("K" + src)
    total = 12000
    Ring.create(src, 1 << 16, lossless=True).close()  # small: the gate is exercised
    url = nats_cluster.url
    out = procs.start(*out_cmd(src, url, stream), log="out.log")
    inn = procs.start(*in_cmd(far, url, stream), log="in.log")
    wait_for(lambda: gating(src), 30, "bridge out's gating slot")
    prod = start_producer(tmp_path, src, 0, total, 1500.0)
    rng = random.Random(16)
    killed_node = False
    try:
        kills = {"out": 0, "in": 0}
        while prod.poll() is None:
            subprocess.run(["sleep", str(rng.uniform(0.4, 1.6))])
            if not killed_node and next_seq(far) > total // 3:
                nats_cluster.kill_node(1)  # the stream (R3) keeps a quorum of two
                killed_node = True
                continue
            what = "out" if sum(kills.values()) % 2 == 0 else "in"
            kills[what] += 1
            if what == "out":
                out.send_signal(signal.SIGKILL)
                out.wait(10)
                out = procs.start(*out_cmd(src, url, stream), log="out.log")
            elif what == "in":
                inn.send_signal(signal.SIGKILL)
                inn.wait(10)
                inn = procs.start(*in_cmd(far, url, stream), log="in.log")
        assert prod.wait(120) == 0
        assert killed_node and kills["out"] >= 2 and kills["in"] >= 2, kills

        def caught_up() -> bool:
            # a bridge started while the cluster elected leaders may have given up (its
            # start-up waits are bounded): restart it, as `pyshm run` would
            nonlocal out, inn
            if out.poll() is not None:
                out = procs.start(*out_cmd(src, url, stream), log="out.log")
            if inn.poll() is not None:
                inn = procs.start(*in_cmd(far, url, stream), log="in.log")
            return next_seq(far) >= total
        wait_for(caught_up, 90, "the far ring to catch up", every=0.5)
        assert_same_records(records(far), expected(0, total), tmp_path)
        # the floors an empty far ring starts by are true even across kills and resends
        assert_floors_hold(stream_envelopes(url, stream))
        for p in (out, inn):
            wait_for(lambda: running(procs, p.pid), 30, "the bridge to run")  # noqa: B023
            p.send_signal(signal.SIGTERM)
            assert p.wait(30) == 0
    finally:
        if prod.poll() is None:
            prod.kill()
        nats_cluster.start_node(1)
        nats_cluster.wait_ready()


def test_whole_cluster_restart_while_the_producer_keeps_publishing(nats_cluster, procs,
                                                                   new_name, tmp_path):
    src, far = new_name(), new_name()
    stream = stream_name("C" + src)
    total = 6000
    Ring.create(src, 1 << 16, lossless=True).close()
    url = nats_cluster.url
    out = procs.start(*out_cmd(src, url, stream), log="out.log")
    inn = procs.start(*in_cmd(far, url, stream), log="in.log")
    wait_for(lambda: gating(src), 30, "bridge out's gating slot")
    prod = start_producer(tmp_path, src, 0, total, 1000.0)
    try:
        wait_for(lambda: next_seq(far) > 1000, 60, "records to flow")
        nats_cluster.stop()
        # the producer fills the ring and then waits on the bridge's gate
        subprocess.run(["sleep", "3"])
        held = next_seq(src)
        subprocess.run(["sleep", "1"])
        assert next_seq(src) == held < total
        nats_cluster.start()
        assert prod.wait(120) == 0
        wait_for(lambda: next_seq(far) >= total, 120, "the far ring to catch up")
        assert_same_records(records(far), expected(0, total), tmp_path)
        assert out.poll() is None and inn.poll() is None  # they rode the outage out
        for p in (out, inn):
            p.send_signal(signal.SIGTERM)
            assert p.wait(30) == 0
    finally:
        if prod.poll() is None:
            prod.kill()
        nats_cluster.start()


def test_past_the_grace_the_loss_is_reported_exactly(nats_server, procs, new_name, tmp_path):
    src, far = new_name(), new_name()
    stream = stream_name("G" + src)
    Ring.create(src, 1 << 14, lossless=True).close()
    url = nats_server.url
    out = procs.start("bridge", "out", src, "--server", url, "--stream", stream,
                      "--grace", "1", log="out.log")
    procs.start(*in_cmd(far, url, stream), log="in.log")
    wait_for(lambda: gating(src), 30, "bridge out's gating slot")
    prod = start_producer(tmp_path, src, 0, 500, 0.0)
    assert prod.wait(60) == 0
    wait_for(lambda: next_seq(far) == 500, 60, "the first records")
    out.send_signal(signal.SIGKILL)
    out.wait(10)
    # while the guard holds the slot, a lossless producer waits instead of overwriting
    prod = start_producer(tmp_path, src, 500, 3000, 0.0)
    with pytest.raises(subprocess.TimeoutExpired):
        prod.wait(0.5)
    assert prod.wait(60) == 0  # the grace ran out: the slot is gone, the ring laps
    with Ring(src) as ring:
        oldest = next(iter(ring.records())).sequence
    assert oldest > 500
    r = procs.start("bridge", "out", src, "--server", url, "--stream", stream,
                    log="out2.log")
    wait_for(lambda: next_seq(far) == 3500, 60, "the far ring to catch up")
    got = records(far)
    lost = [s for s, t, d in got if t == GAP_TYPE]
    assert lost == list(range(500, oldest))  # exactly the overwritten sequences
    assert [x for x in got if x[1] != GAP_TYPE] == expected(0, 500) + expected(oldest,
                                                                              3500 - oldest)
    log = (tmp_path / "out2.log").read_text()
    assert f"no longer holds sequences 500..{oldest - 1}" in log
    r.send_signal(signal.SIGTERM)
    assert r.wait(30) == 0


def test_resume_from_the_guard_below_a_late_resend_publishes_no_gap(nats_server, procs,
                                                                   new_name, tmp_path):
    """The stream's last message is a batch sent again after later ones were stored, so
    its sequence lies below the record the dead bridge's guard holds. The restarted
    bridge expected the sequence after that message and published the acknowledged
    records in between as lost in a gap message."""
    import nats

    from pyshm.bridge.protocol import default_subject

    src, far = new_name(), new_name()
    stream = stream_name("R" + src)
    Ring.create(src, 1 << 14, lossless=True).close()
    url = nats_server.url
    out = procs.start("bridge", "out", src, "--server", url, "--stream", stream,
                      log="out.log")
    inn = procs.start(*in_cmd(far, url, stream), log="in.log")
    wait_for(lambda: gating(src), 30, "bridge out's gating slot")
    assert start_producer(tmp_path, src, 0, 500, 0.0).wait(60) == 0
    wait_for(lambda: next_seq(far) == 500, 60, "the first records")
    with Ring(src) as ring:
        wait_for(lambda: any(s["position"] == ring.tail for s in ring.slots()), 30,
                 "every record acknowledged (the guard at the tail)")
        rid = ring.ring_id
    out.send_signal(signal.SIGKILL)
    out.wait(10)

    async def resend_late(seq: int) -> None:
        nc = await nats.connect(url)
        (s, t, d), = expected(seq, 1)
        await nc.jetstream().publish(default_subject(src), d, headers={
            # a message id of its own: JetStream would drop a copy of the first one
            "Nats-Msg-Id": f"{rid:016x}.{seq}.late", "Pyshm-Ring": f"{rid:016x}",
            "Pyshm-Seq": str(s), "Pyshm-Type": str(t), "Pyshm-Floor": str(s)})
        await nc.close()

    asyncio.run(resend_late(100))
    procs.start("bridge", "out", src, "--server", url, "--stream", stream, log="out2.log")
    assert start_producer(tmp_path, src, 500, 500, 0.0).wait(60) == 0
    wait_for(lambda: next_seq(far) == 1000, 60, "the far ring to catch up")
    envs = stream_envelopes(url, stream)
    assert not [e for e in envs if e.is_gap], [(e.sequence, e.last) for e in envs
                                               if e.is_gap]
    assert "were overwritten" not in (tmp_path / "out2.log").read_text()
    assert_same_records(records(far), expected(0, 1000), tmp_path)
    inn.send_signal(signal.SIGTERM)
    assert inn.wait(30) == 0


def test_without_a_guard_the_last_message_floor_fills_a_hole(nats_server, procs, new_name,
                                                              tmp_path):
    """The previous bridge and its guard died while a batch JetStream had refused (3, 4)
    waited to be sent again: the stream holds 0-2 and 5-6, and 6's floor says 3 was
    unacknowledged when 6 was sent. A new bridge resumes from that floor (the ring still
    holds it), so the far ring gets every record instead of stopping at the hole."""
    import nats

    from pyshm.bridge.protocol import SourceInfo, default_subject, meta_key

    src, far = new_name(), new_name()
    stream = stream_name("F" + src)
    Ring.create(src, 1 << 14, lossless=True).close()
    assert start_producer(tmp_path, src, 0, 10, 0.0).wait(60) == 0
    with Ring(src) as ring:
        rid = ring.ring_id
        info = SourceInfo(rid, src, ring.capacity, ring.max_record,
                          ring.params.partition_count, True)
    subject = default_subject(src)

    async def dead_bridge() -> None:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[subject],
                            metadata={meta_key(subject): info.to_json()})
        for s, t, d in expected(0, 3) + expected(5, 2):
            await js.publish(subject, d, headers={
                "Nats-Msg-Id": f"{rid:016x}.{s}", "Pyshm-Ring": f"{rid:016x}",
                "Pyshm-Seq": str(s), "Pyshm-Type": str(t),
                "Pyshm-Floor": str(s if s < 3 else 3)})
        await nc.close()

    asyncio.run(dead_bridge())
    out = procs.start("bridge", "out", src, "--server", nats_server.url, "--stream", stream,
                      log="out.log")
    inn = procs.start(*in_cmd(far, nats_server.url, stream), log="in.log")
    assert start_producer(tmp_path, src, 10, 10, 0.0).wait(60) == 0
    wait_for(lambda: next_seq(far) == 20, 60, "the far ring to get every record")
    assert_same_records(records(far), expected(0, 20), tmp_path)
    assert "sending from 3 again" in (tmp_path / "out.log").read_text()
    # 5 and 6 were sent again with their message ids: JetStream kept one copy of each
    seqs = sorted(e.sequence for e in stream_envelopes(nats_server.url, stream))
    assert seqs == list(range(20))
    for p in (out, inn):
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0


# ----------------------------------------------------------------------------------
# JetStream misbehaving on purpose: messages published by hand, out of order


async def _hand_publish(url: str, stream: str, subject: str, order: list[int],
                        ring_id: int, floors: dict[int, int] | None = None) -> None:
    import nats

    from pyshm.bridge.protocol import SourceInfo, meta_key

    nc = await nats.connect(url)
    js = nc.jetstream()
    info = SourceInfo(ring_id, "hand", 1 << 14, 512, 8, False)
    await js.add_stream(name=stream, subjects=[subject],
                        metadata={meta_key(subject): info.to_json()})
    for s in order:
        headers = {"Nats-Msg-Id": f"{ring_id:016x}.{s}", "Pyshm-Ring": f"{ring_id:016x}",
                   "Pyshm-Seq": str(s), "Pyshm-Type": str(s % 3)}
        if floors and s in floors:
            headers["Pyshm-Floor"] = str(floors[s])
        await js.publish(subject, bytes([s]) * s, headers=headers)
    await nc.close()


@pytest.mark.parametrize("order,floors,allow_gaps,want,error", [
    ([0, 1, 3, 4, 2, 5, 3, 1], None, False, [0, 1, 2, 3, 4, 5], None),
    ([0, 1, 3, 4], None, False, [0, 1], "sequences 2..2 (1 records) are missing"),
    ([0, 1, 3, 4], None, True, [0, 1, 2, 3, 4], None),
    # a batch (0, 1) sent again after later ones were stored: the stream's first message
    # is 2, whose floor says 0 and 1 were still unacknowledged; an empty far ring must
    # start at 0, not drop them as duplicates
    ([2, 3, 0, 1, 4], {2: 0, 3: 0, 0: 0, 1: 0, 4: 2}, False, [0, 1, 2, 3, 4], None),
    # the floor names sequences the stream no longer holds (its limits dropped them): the
    # far ring starts at the first it holds, after --hole-wait
    ([5, 6, 7], {5: 3, 6: 3, 7: 5}, False, [5, 6, 7], None),
])
def test_bridge_in_orders_drops_duplicates_and_stops_on_holes(nats_server, procs, new_name,
                                                              order, floors, allow_gaps,
                                                              want, error):
    far = new_name()
    stream = stream_name("H" + far)
    subject = f"hand.{stream.lower()}"
    asyncio.run(_hand_publish(nats_server.url, stream, subject, order, 0xABCDEF, floors))
    args = ["bridge", "in", "--server", nats_server.url, "--stream", stream, "--to", far,
            "--hole-wait", "1"] + (["--allow-gaps"] if allow_gaps else [])
    if error:
        r = procs.run(*args, timeout=60)
        assert r.returncode == 1 and error in r.stderr, r.stderr
    else:
        p = procs.start(*args, log="in.log")
        wait_for(lambda: next_seq(far) == want[-1] + 1, 30, "the far ring")
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
        if floors and min(floors.values()) < min(order):
            log = open(f"{procs.cwd}/in.log").read()
            gone = f"{min(floors.values())}..{min(order) - 1}"
            assert f"no longer holds sequences {gone}: the far ring starts at" in log, log
    got = records(far)
    assert [s for s, _, _ in got] == want
    for s, t, d in got:
        if s in order:
            assert (t, d) == (s % 3, bytes([s]) * s)
        else:
            assert (t, d) == (GAP_TYPE, b"")


def test_stats_lines_name_no_secret(nats_server, procs, new_name):
    src = new_name()
    Ring.create(src, 1 << 14).close()
    stream = stream_name("S" + src)
    url = nats_server.url.replace("nats://", "nats://alice:s3cret@")
    p = subprocess.Popen([sys.executable, "-m", "pyshm", "bridge", "out", src, "--server",
                          url, "--stream", stream, "--stats-json", "--stats-interval", "0.2"],
                         cwd=procs.cwd, env=procs.env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    procs.procs.append(p)
    assert p.stdout is not None
    line = json.loads(p.stdout.readline())
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=30)
    assert "s3cret" not in json.dumps(line) and b"s3cret" not in err
    assert line["servers"] == [url.replace("s3cret", "***")]
    for key in ("in_flight", "redeliveries", "reconnects", "lag_records", "lag_us"):
        assert key in line


# ----------------------------------------------------------------------------------
# a private server: stopped while an overwrite ring laps the bridge


def test_overwrite_ring_loss_while_the_server_is_down_is_reported_exactly(procs, new_name,
                                                                          tmp_path):
    from pyshm.bridge.localserver import LocalNats

    src, far = new_name(), new_name()
    Ring.create(src, 1 << 14).close()  # overwrite: the producer never waits
    with LocalNats(1, workdir=str(tmp_path / "nats")) as srv:
        out = procs.start("bridge", "out", src, "--server", srv.url, "--stream", "OW",
                          "--ack-timeout", "1", log="out.log")
        procs.start(*in_cmd(far, srv.url, "OW"), log="in.log")
        wait_for(lambda: gating(src), 30, "bridge out's gating slot")
        prod = start_producer(tmp_path, src, 0, 300, 0.0)
        assert prod.wait(60) == 0
        wait_for(lambda: next_seq(far) == 300, 60, "the first records")
        srv.stop()
        prod = start_producer(tmp_path, src, 300, 3000, 0.0)  # laps the ring many times
        assert prod.wait(60) == 0
        srv.start()
        wait_for(lambda: next_seq(far) == 3300, 90, "the far ring to catch up")
        got = records(far)
        lost = [s for s, t, _ in got if t == GAP_TYPE]
        kept = [x for x in got if x[1] != GAP_TYPE]
        assert [s for s, _, _ in got] == list(range(3300))
        assert lost and kept == [x for x in expected(0, 3300) if x[0] not in set(lost)]
        log = (tmp_path / "out.log").read_text()
        # every lost range is named in the log as it was found
        import re
        named = [(int(a), int(b)) for a, b in
                 re.findall(r"sequences (\d+)\.\.(\d+) \(\d+ records\) were overwritten", log)]
        assert sorted(s for a, b in named for s in range(a, b + 1)) == lost
        out.send_signal(signal.SIGTERM)
        assert out.wait(30) == 0


def test_jetstream_call_retries_while_no_leader_then_names_the_call():
    # the retry both bridges use for JetStream API calls: transient "no leader" answers
    # are retried, a call that never succeeds ends in a BridgeError naming it
    from nats.errors import NoRespondersError

    from pyshm.bridge.connect import jetstream_call
    from pyshm.bridge.protocol import BridgeError

    calls = []

    async def flaky(value, fail_times):
        calls.append(value)
        if len(calls) <= fail_times:
            raise NoRespondersError
        return value

    assert asyncio.run(jetstream_call("stream info", flaky, "ok", 2, timeout=5,
                                      display="nats://x:4222")) == "ok"
    assert calls == ["ok"] * 3
    calls.clear()
    with pytest.raises(BridgeError, match=r"did not answer stream info within 0.3 s "
                       r"\(NoRespondersError\): is JetStream enabled on nats://x:4222\?"):
        asyncio.run(jetstream_call("stream info", flaky, "never", 10 ** 6, timeout=0.3,
                                   display="nats://x:4222"))
    assert len(calls) >= 2
    # a request the cluster never answers (sent while it elected a leader) is given up
    # after one attempt's wait and sent again, not waited for with the whole budget
    calls.clear()

    async def lost_once(value):
        calls.append(value)
        if len(calls) == 1:
            await asyncio.sleep(3600)
        return value

    assert asyncio.run(jetstream_call("consumer info", lost_once, "ok", timeout=30,
                                      display="nats://x:4222", attempt=0.2)) == "ok"
    assert calls == ["ok", "ok"]
