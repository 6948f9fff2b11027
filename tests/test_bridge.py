"""pyshm bridge out / in against a real nats-server: records, types, sequence numbers and
empty payloads arrive in a follower ring; SIGTERM flushes and exits 0; restarts resume
exactly; bad input (unreachable server, foreign messages, mismatched far ring) is a clear
error with nothing lost."""

from __future__ import annotations

import asyncio
import signal

from natsfix import assert_floors_hold, next_seq, records, stream_envelopes, wait_for
from ringdata import payload

from pyshm import Ring
from pyshm.bridge import create_follower


def gating(name: str) -> bool:
    with Ring(name) as ring:
        return any(s["gating"] and s["alive"] for s in ring.slots())


def publish(name: str, start: int, n: int) -> None:
    with Ring(name) as ring, ring.producer() as p:
        for s in range(start, start + n):
            assert p.publish(payload(s, s % 97), type=s % 5, timeout=10.0) == s


def test_out_and_in_copy_every_record_with_its_sequence(nats_server, procs, new_name):
    src, far = new_name(), new_name()
    stream = f"T{src[-12:]}".replace("_", "")
    Ring.create(src, 1 << 16, lossless=True).close()
    publish(src, 0, 300)
    out = procs.start("bridge", "out", src, "--server", nats_server.url, "--stream", stream,
                      log="out.log")
    inn = procs.start("bridge", "in", "--server", nats_server.url, "--stream", stream,
                      "--to", far, log="in.log")
    wait_for(lambda: gating(src), 30, "bridge out's gating slot")
    publish(src, 300, 2000)
    wait_for(lambda: next_seq(far) == 2300, 60, "the far ring to catch up")
    assert records(far) == records(src)
    with Ring(far) as f, Ring(src) as s:
        assert f.is_follower and f.origin_id == s.ring_id
        assert (f.capacity, f.max_record, f.lossless) == (s.capacity, s.max_record, s.lossless)
    for p in (out, inn):
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
    # restarted, both resume exactly: no gap, no duplicate
    publish(src, 2300, 500)
    out = procs.start("bridge", "out", src, "--server", nats_server.url, "--stream", stream,
                      log="out.log")
    inn = procs.start("bridge", "in", "--server", nats_server.url, "--stream", stream,
                      "--to", far, log="in.log")
    publish(src, 2800, 200)
    wait_for(lambda: next_seq(far) == 3000, 60, "the far ring to catch up after restarts")
    assert records(far) == records(src)
    envs = stream_envelopes(nats_server.url, stream)
    assert [e.sequence for e in envs] == list(range(3000)) and envs[0].floor == 0
    assert_floors_hold(envs)
    for p in (out, inn):
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0


def test_unreachable_server_is_a_clear_error(procs, ring_name):
    from pyshm.bridge.localserver import free_port

    Ring.create(ring_name, 1 << 14).close()
    url = f"nats://127.0.0.1:{free_port()}"
    r = procs.run("bridge", "out", ring_name, "--server", url, "--stream", "X",
                  "--connect-timeout", "1")
    assert r.returncode == 1
    assert "cannot connect to NATS at" in r.stderr and url in r.stderr
    assert "Traceback" not in r.stderr
    r = procs.run("bridge", "in", "--server", url, "--stream", "X", "--to", ring_name + "f",
                  "--connect-timeout", "1")
    assert r.returncode == 1 and "cannot connect to NATS" in r.stderr


async def _publish_foreign(url: str, stream: str, subject: str) -> None:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[subject])
    await js.publish(subject, b"not a pyshm record")
    await nc.close()


def test_stream_with_foreign_messages_is_refused(nats_server, procs, new_name):
    src, far = new_name(), new_name()
    stream = "F" + src[-10:].replace("_", "")
    subject = f"pyshm.{src}"
    asyncio.run(_publish_foreign(nats_server.url, stream, subject))
    Ring.create(src, 1 << 14, lossless=True).close()
    publish(src, 0, 10)
    r = procs.run("bridge", "out", src, "--server", nats_server.url, "--stream", stream)
    assert r.returncode == 1 and "not written by `pyshm bridge out`" in r.stderr
    assert "Traceback" not in r.stderr
    r = procs.run("bridge", "in", "--server", nats_server.url, "--stream", stream,
                  "--to", far)
    assert r.returncode == 1 and "carries no pyshm ring" in r.stderr
    assert len(records(src)) == 10  # nothing consumed from the source


def test_far_ring_of_another_size_is_refused(nats_server, procs, new_name):
    src, far, plain = new_name(), new_name(), new_name()
    stream = "M" + src[-10:].replace("_", "")
    Ring.create(src, 1 << 15, max_record=1024).close()
    publish(src, 0, 50)
    out = procs.start("bridge", "out", src, "--server", nats_server.url, "--stream", stream)
    wait_for(lambda: gating(src), 30, "bridge out's gating slot")
    r = procs.run("bridge", "in", "--server", nats_server.url, "--stream", stream,
                  "--to", far, "--max-record", "512")
    assert r.returncode == 1 and "would not fit" in r.stderr
    with Ring(src) as s:
        create_follower(far, s.ring_id, 1 << 16).close()
    r = procs.run("bridge", "in", "--server", nats_server.url, "--stream", stream,
                  "--to", far)
    assert r.returncode == 1
    assert "exists with other parameters: capacity 65536 (wanted 32768)" in r.stderr
    Ring.create(plain, 1 << 15, max_record=1024).close()
    r = procs.run("bridge", "in", "--server", nats_server.url, "--stream", stream,
                  "--to", plain)
    assert r.returncode == 1 and "is not a follower ring" in r.stderr
    assert records(far) == [] and records(plain) == []
    out.send_signal(signal.SIGTERM)
    assert out.wait(30) == 0


async def _make_stream(url: str, stream: str, subjects: list[str]) -> None:
    import nats

    nc = await nats.connect(url)
    await nc.jetstream().add_stream(name=stream, subjects=subjects, num_replicas=1)
    await nc.close()


def test_existing_stream_with_other_replicas_or_subjects_is_refused(nats_server, procs,
                                                                    new_name):
    src = new_name()
    Ring.create(src, 1 << 14, lossless=True).close()
    publish(src, 0, 10)
    ours, other = "R" + src[-10:].replace("_", ""), "O" + src[-10:].replace("_", "")
    asyncio.run(_make_stream(nats_server.url, ours, [f"pyshm.{src}"]))
    asyncio.run(_make_stream(nats_server.url, other, ["elsewhere.>"]))
    cmd = ["bridge", "out", src, "--server", nats_server.url, "--grace", "1"]
    asked_three = procs.start(*cmd, "--stream", ours, "--replicas", "3", log="r3.log")
    wrong_subject = procs.start(*cmd, "--stream", other, log="subj.log")
    assert asked_three.wait(60) == 1 and wrong_subject.wait(60) == 1
    err = (procs.cwd + "/r3.log", procs.cwd + "/subj.log")
    r3, subj = (open(p, encoding="utf-8").read() for p in err)
    assert f"stream '{ours}' exists with 1 replica(s), not the 3 asked (--replicas)" in r3
    assert f"stream '{other}' exists but does not take subject 'pyshm.{src}' (its " \
           f"subjects: elsewhere.>)" in subj
    assert "Traceback" not in r3 + subj
    r = procs.run("bridge", "out", src, "--server", nats_server.url, "--stream", ours,
                  "--replicas", "0")
    assert r.returncode == 1 and "--replicas 0: must be at least 1" in r.stderr
    assert len(records(src)) == 10
