"""Credentials, nkeys, JWT credentials and TLS against nats-servers that require them.

Four real servers (session-private keys and certificates, made in a temporary directory):
user/password plus an nkey user, a token, operator mode with JWT credentials (.creds), and
mutual TLS with a private CA. For each kind of authentication, `bridge out`/`bridge in`
carry a ring into a follower ring and `snapshot -o nats://...`/`restore nats://...` move an
image through the object store; a refused password, token or nkey, a malformed seed or
credentials file, a missing CA or client certificate each end in one clear error line;
and no secret (password, token, nkey seed) appears in any output, log, status file,
`pyshm stats` sample, Prometheus scrape or error message, servers given as
nats://user:password@host URLs included."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import signal
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from natsauth import Pki, make_pki, new_nkey, operator_setup, tls_conf
from natsfix import next_seq, pyshm_cmd, records, wait_for
from ringdata import payload

from pyshm import Ring
from pyshm.bridge.connect import NatsOptions, redact, scrub
from pyshm.bridge.localserver import LocalNats

PASSWORD = "pw-" + secrets.token_hex(12)
TOKEN = "tok" + secrets.token_hex(12)
WRONG = "wrong-" + secrets.token_hex(8)


@dataclasses.dataclass
class Secured:
    """The four servers and the key material the tests authenticate with."""

    users: LocalNats         # alice/PASSWORD, and the nkey user
    token: LocalNats         # TOKEN
    jwt: LocalNats           # operator mode: .creds files
    tls: LocalNats           # mutual TLS
    pki: Pki
    nkey_seed: str
    nkey_file: str
    creds_file: str
    creds_seed: str
    dir: str

    @property
    def secrets(self) -> list[str]:
        return [PASSWORD, TOKEN, WRONG, self.nkey_seed, self.creds_seed]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: Any) -> Iterator[Secured]:
    d = str(tmp_path_factory.mktemp("natsauth"))
    pki = make_pki(d)
    nk = new_nkey("user")
    op = operator_setup()

    def private(name: str, text: str) -> str:
        path = os.path.join(d, name)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(text)
        return path

    servers = [
        LocalNats(1, extra_conf='authorization {\n  users: [\n'
                                f'    {{user: alice, password: "{PASSWORD}"}}\n'
                                f'    {{nkey: {nk.public}}}\n  ]\n}}\n'),
        LocalNats(1, extra_conf=f'authorization {{\n  token: "{TOKEN}"\n}}\n'),
        LocalNats(1, extra_conf=op.conf),
        LocalNats(1, extra_conf=tls_conf(pki)),
    ]
    try:
        for s in servers:  # all four start at once, then each is waited for
            s.start_node(0, wait=False)
        for s in servers:
            s.wait_ready()
        yield Secured(*servers, pki=pki, nkey_seed=nk.seed,
                      nkey_file=private("user.nk", nk.seed + "\n"),
                      creds_file=private("user.creds", op.creds_text),
                      creds_seed=op.user_seed, dir=d)
    finally:
        for s in servers:
            s.close()


def _with_userinfo(url: str, userinfo: str) -> str:
    return url.replace("nats://", f"nats://{userinfo}@", 1)


@dataclasses.dataclass
class Way:
    """How one kind of authentication is given: to `bridge out`, to `bridge in`, and to
    the image commands (URL and environment)."""

    server: LocalNats
    out_args: list[str]
    in_args: list[str]
    env: dict[str, str]
    image_base: str          # nats://[userinfo@]HOST:PORT
    image_env: dict[str, str]


def way(sec: Secured, kind: str) -> Way:
    p = sec.pki
    if kind == "password":
        # out: --user and the password in the environment; in and the images: in the URL
        url = sec.users.url
        return Way(sec.users, ["--server", url, "--user", "alice"],
                   ["--server", _with_userinfo(url, f"alice:{PASSWORD}")],
                   {"PYSHM_NATS_PASSWORD": PASSWORD}, _with_userinfo(url, f"alice:{PASSWORD}"),
                   {})
    if kind == "token":
        url = sec.token.url
        return Way(sec.token, ["--server", url], ["--server", _with_userinfo(url, TOKEN)],
                   {"PYSHM_NATS_TOKEN": TOKEN}, _with_userinfo(url, TOKEN), {})
    if kind == "nkey":
        url = sec.users.url
        return Way(sec.users, ["--server", url, "--nkey", sec.nkey_file],
                   ["--server", url, "--nkey", sec.nkey_file], {}, url,
                   {"PYSHM_NATS_NKEY": sec.nkey_file})
    if kind == "creds":
        url = sec.jwt.url
        return Way(sec.jwt, ["--server", url, "--creds", sec.creds_file],
                   ["--server", url, "--creds", sec.creds_file], {}, url,
                   {"PYSHM_NATS_CREDS": sec.creds_file})
    assert kind == "tls"
    url = sec.tls.url
    tls = ["--tls-ca", p.ca, "--tls-cert", p.client_cert, "--tls-key", p.client_key]
    return Way(sec.tls, ["--server", url, *tls], ["--server", url, *tls], {}, url,
               {"PYSHM_NATS_TLS_CA": p.ca, "PYSHM_NATS_TLS_CERT": p.client_cert,
                "PYSHM_NATS_TLS_KEY": p.client_key})


def _publish(name: str, start: int, n: int) -> None:
    with Ring(name) as ring, ring.producer() as prod:
        for s in range(start, start + n):
            assert prod.publish(payload(s, s % 97), type=s % 5, timeout=10.0) == s


def _prometheus(state_dir: str, names: list[str]) -> str:
    from prometheus_client import CollectorRegistry, generate_latest

    from pyshm.stats import PyshmCollector

    reg = CollectorRegistry(auto_describe=False)
    reg.register(PyshmCollector(names, state_dir))
    return generate_latest(reg).decode()


@pytest.mark.parametrize("kind", ["password", "token", "nkey", "creds", "tls"])
def test_bridges_and_remote_images_work_with_each_kind_of_authentication(
        secured, procs, new_name, tmp_path, capsys, monkeypatch, kind):
    from pyshm.cli import main

    w = way(secured, kind)
    src, far, back = new_name(), new_name(), new_name()
    stream = "AUTH" + uuid.uuid4().hex[:10]
    state = str(tmp_path / "state")
    Ring.create(src, 1 << 16, lossless=True).close()
    _publish(src, 0, 150)
    procs.env.update(w.env)
    common = ["--stream", stream, "--stats-interval", "0.2", "--connect-timeout", "10"]
    out = procs.start("bridge", "out", src, *w.out_args, *common, log="out.log")
    inn = procs.start("bridge", "in", *w.in_args, *common, "--to", far, log="in.log")
    _publish(src, 150, 150)
    wait_for(lambda: next_seq(far) == 300, 60, f"the far ring to catch up ({kind})")
    assert records(far) == records(src)

    def reported() -> str | None:
        rc = main(["stats", "--json", src, far, "--state-dir", state, "--interval", "0.05"])
        text = capsys.readouterr().out
        rings = json.loads(text)["rings"]
        b_out, b_in = rings[src].get("bridges"), rings[far].get("bridges")
        done = b_out and b_in and b_out[0].get("acked") == 300 and \
            b_in[0].get("committed") == 300
        return text if rc == 0 and done else None
    seen = [wait_for(reported, 30, "both bridges in pyshm stats", every=0.2)]
    seen.append(_prometheus(state, [src, far]))
    assert "pyshm_bridge_records" in seen[-1]
    for name in os.listdir(state):
        with open(os.path.join(state, name), encoding="utf-8") as f:
            seen.append(f.read())
    for p in (out, inn):
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0

    # the same server through the object store (the CLI in this process: no start-up)
    for k, v in w.image_env.items():
        monkeypatch.setenv(k, v)
    url = f"{w.image_base}/img{kind}/{src}.pyimg"
    for args in (["snapshot", src, "-o", url], ["restore", url, "--to", back]):
        assert main(args) == 0, f"{args[0]} ({kind})"
        seen += list(capsys.readouterr())
    assert "300 records, sequences 0..299" in seen[-4]
    assert records(back) == records(src)
    for log in ("out.log", "in.log"):
        seen.append((tmp_path / log).read_text())
    everything = "\n".join(seen)
    assert redact(url) in everything  # the image's URL is shown, with its secret hidden
    for secret in secured.secrets:
        assert secret not in everything, f"a secret leaked ({kind})"


def _run_all(procs: Any, cases: list[tuple[list[str], dict[str, str]]]
             ) -> list[subprocess.CompletedProcess[str]]:
    """Run the commands side by side (each is a short-lived process that fails)."""
    started = []
    for args, env in cases:
        started.append((args, subprocess.Popen(
            pyshm_cmd(*args), cwd=procs.cwd, env={**procs.env, **env}, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)))
        procs.procs.append(started[-1][1])
    done = []
    for args, p in started:
        out, err = p.communicate(timeout=90)
        done.append(subprocess.CompletedProcess(args, p.returncode, out, err))
    return done


def test_refused_or_malformed_credentials_are_one_clear_line_without_secrets(
        secured, procs, new_name, tmp_path):
    p = secured.pki
    src, far = new_name(), new_name()
    Ring.create(src, 1 << 14, lossless=True).close()
    _publish(src, 0, 20)
    garbage = tmp_path / "garbage.nk"
    garbage.write_text(f"not-a-seed {WRONG}\n")
    other_user = tmp_path / "other.nk"
    other_user.write_text(new_nkey("user").seed + "\n")
    users, token, tls = secured.users.url, secured.token.url, secured.tls.url
    inn = ["bridge", "in", "--stream", "S", "--to", far, "--server"]
    image = "/refused/x.pyimg"
    cases: list[tuple[list[str], dict[str, str], str]] = [
        (["bridge", "out", src, "--stream", "S", "--server",
          _with_userinfo(users, f"alice:{WRONG}")], {},
         "authorization violation: the server refused user 'alice' and its password"),
        ([*inn, users, "--user", "alice"], {"PYSHM_NATS_PASSWORD": WRONG},
         "authorization violation: the server refused user 'alice' and its password"),
        ([*inn, users], {},
         "authorization violation: the server requires authentication and none was given"),
        (["snapshot", src, "-o", _with_userinfo(token, WRONG) + image], {},
         "authorization violation: the server refused the token in the server URL"),
        ([*inn, users, "--nkey", str(other_user)], {},
         f"authorization violation: the server refused the nkey of seed file {other_user}"),
        ([*inn, users, "--nkey", str(garbage)], {},
         f"nkey seed file {garbage} does not hold a user nkey seed"),
        ([*inn, tls], {}, "TLS: the server's certificate was not verified"),
        ([*inn, tls, "--tls-ca", p.ca], {}, "TLS: the server requires a client certificate"),
        (["restore", tls + image, "--to", far], {"PYSHM_NATS_TLS_CA": p.ca},
         "TLS: the server requires a client certificate"),
    ]
    results = _run_all(procs, [(args, env) for args, env, _ in cases])
    for (args, _env, phrase), r in zip(cases, results, strict=True):
        what = " ".join(redact(a) for a in args[:3])
        assert r.returncode == 1, f"{what}: status {r.returncode}: {r.stderr}"
        errors = [line for line in r.stderr.splitlines() if ": error: " in line]
        assert len(errors) == 1, f"{what}: {r.stderr}"
        assert phrase in errors[0], f"{what}: {errors[0]}"
        assert "Traceback" not in r.stderr
        for secret in secured.secrets:
            assert secret not in r.stdout + r.stderr, f"{what}: a secret leaked"
        if "connect" in phrase or "authorization" in phrase or "TLS: the" in phrase:
            assert "cannot connect to NATS at" in errors[0]
    assert len(records(src)) == 20  # nothing consumed or lost
    assert not os.path.exists(f"/dev/shm/{far}")


def test_secrets_are_hidden_wherever_a_server_url_or_option_is_shown():
    assert redact(f"nats://alice:{PASSWORD}@h:4222") == "nats://alice:***@h:4222"
    assert redact(f"nats://{TOKEN}@h:4222") == "nats://***@h:4222"
    assert redact(f"nats://a:{PASSWORD}@h1:1,b:{WRONG}@h2:2/BUCKET/name.pyimg") == \
        "nats://a:***@h1:1,b:***@h2:2/BUCKET/name.pyimg"
    assert redact("nats://127.0.0.1:4222,10.0.0.2:4222") == \
        "nats://127.0.0.1:4222,10.0.0.2:4222"
    assert scrub(f"error at nats://u:{PASSWORD}@h:1 and tls://{TOKEN}@h:2: boom") == \
        "error at nats://u:***@h:1 and tls://***@h:2: boom"
    opts = NatsOptions(servers=[f"nats://alice:{PASSWORD}@h:1"], password=WRONG,
                       token=TOKEN)
    shown = repr(opts) + repr(opts.public()) + opts.display
    assert "alice" in shown
    for secret in (PASSWORD, WRONG, TOKEN):
        assert secret not in shown
        assert secret not in opts.scrub(f"the client said {secret!r}")


def test_malformed_credential_and_certificate_files_are_named_before_connecting(
        secured, tmp_path):
    from pyshm.bridge.protocol import BridgeError

    p = secured.pki
    seed_as_creds = tmp_path / "seed.creds"
    seed_as_creds.write_text(secured.nkey_seed + "\n")
    not_a_ca = tmp_path / "ca.pem"
    not_a_ca.write_text(f"{WRONG}\n")
    url = ["nats://127.0.0.1:1"]
    cases = [
        (NatsOptions(url, creds=str(seed_as_creds)),
         f"credentials file {seed_as_creds} is not a NATS .creds file"),
        (NatsOptions(url, creds=str(tmp_path / "absent.creds")),
         f"credentials file {tmp_path / 'absent.creds'} does not exist"),
        (NatsOptions(url, nkey=secured.creds_file),
         f"nkey seed file {secured.creds_file} does not hold a user nkey seed"),
        (NatsOptions(url, tls_ca=str(not_a_ca)),
         f"TLS CA file {not_a_ca}: not a usable CA certificate"),
        (NatsOptions(url, tls_ca=p.ca, tls_cert=str(tmp_path / "absent.pem")),
         f"TLS certificate {tmp_path / 'absent.pem'} does not exist"),
        (NatsOptions(url, tls_ca=p.ca, tls_cert=p.client_cert),
         f"TLS certificate {p.client_cert} (no --tls-key: the key must then be in the "
         f"same file): cannot be loaded"),
        (NatsOptions(url, tls_ca=p.ca, tls_cert=p.client_cert, tls_key=p.ca),
         f"TLS certificate {p.client_cert} with key {p.ca}: cannot be loaded"),
    ]
    for opts, phrase in cases:
        with pytest.raises(BridgeError) as err:
            opts.connect_kwargs()
        assert phrase in str(err.value)
        for secret in secured.secrets:
            assert secret not in str(err.value)
    kw = NatsOptions(url, creds=secured.creds_file, tls_ca=p.ca, tls_cert=p.client_cert,
                     tls_key=p.client_key).connect_kwargs()
    assert kw["user_credentials"] == secured.creds_file and kw["tls"] is not None


def test_configuration_errors_never_quote_a_secret():
    from pyshm.config import loads
    from pyshm.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        loads(f"nats: {{servers: 'nats://h:1', password: 98765432123, token: [{TOKEN}]}}\n"
              f"rings:\n  - name: md\n    capacity: 64K\n    snapshots:\n"
              f"      directory: /tmp\n      remote: nats://alice:{PASSWORD}@h:1\n")
    text = str(err.value)
    assert "nats.password: expected a non-empty string, got int (value not shown)" in text
    assert "nats.token: expected a non-empty string, got list" in text
    assert "'nats://alice:***@h:1' is not nats://HOST:PORT/BUCKET" in text
    for secret in ("98765432123", TOKEN, PASSWORD):
        assert secret not in text


def test_a_bridge_whose_credentials_stop_working_says_why(procs, new_name, tmp_path):
    import json as _json
    import urllib.request

    rotated = "pw2-" + secrets.token_hex(8)
    auth = f'authorization {{\n  users: [{{user: alice, password: "{PASSWORD}"}}]\n}}\n'
    with LocalNats(1, workdir=str(tmp_path / "nats"), extra_conf=auth) as srv:
        node = srv.nodes[0]
        with open(node.conf, encoding="utf-8") as f:
            conf = f.read()

        def server_password(password: str) -> None:
            with open(node.conf, "w", encoding="utf-8") as f:
                f.write(conf.replace(PASSWORD, password))

        def asking() -> bool:
            """One client connected and publishing (its stream info requests): past
            nats.connect, whose own failure reads "cannot connect" instead."""
            url = f"http://127.0.0.1:{node.http_port}/connz"
            with urllib.request.urlopen(url, timeout=2) as r:
                conns = _json.load(r)["connections"] or []
            return len(conns) == 1 and int(conns[0]["in_msgs"]) > 0
        procs.env["PYSHM_NATS_PASSWORD"] = PASSWORD
        inn = procs.start("bridge", "in", "--server", srv.url, "--user", "alice",
                          "--stream", "NOTYET", "--to", new_name(), "--wait-stream", "60",
                          log="in.log")
        log = tmp_path / "in.log"
        wait_for(asking, 30, "bridge in connected and asking for its stream")
        # the password changes on the server (configuration reload): nats-py closes the
        # live connection for good, and the bridge stops with the reason
        server_password(rotated)
        assert node.proc is not None
        node.proc.send_signal(signal.SIGHUP)
        assert inn.wait(30) == 1
    text = log.read_text()
    refused = "authorization violation: the server refused user 'alice' and its password"
    assert f"closed the connection: {refused}" in text
    assert text.splitlines()[-1] == \
        f"pyshm bridge in: error: the NATS connection was closed: {refused}"
    assert PASSWORD not in text and rotated not in text
