"""Secured nats-server set-ups for the bridge tests, made from scratch in a temporary
directory: a private CA with a server and a client certificate (the ``openssl`` command,
installed by ``make tools``), user nkeys, and operator-mode JWTs signed with nkeys (the
same claims `nsc` would write, built by hand so that no extra tool is needed).

Everything here is test material: the keys are random per test session and never leave
the temporary directory."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass

# ------------------------------------------------------------------ TLS


@dataclass
class Pki:
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


def make_pki(directory: str) -> Pki:
    """A CA (EC P-256, valid two days) and two certificates it signs: the server's for
    IP 127.0.0.1, and a client certificate for mutual TLS."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the TLS tests need the openssl command (make tools installs it)")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True,
                       timeout=30)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=pyshm test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for who, usage in (("server", "serverAuth"), ("client", "clientAuth")):
        with open(os.path.join(directory, f"{who}.ext"), "w", encoding="ascii") as f:
            f.write(f"subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                    f"extendedKeyUsage={usage}\nkeyUsage=critical,digitalSignature\n")
        run("req", *ec, "-keyout", f"{who}.key", "-out", f"{who}.csr",
            "-subj", f"/CN=pyshm test {who}")
        run("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{who}.pem", "-days", "2",
            "-extfile", f"{who}.ext")
    p = lambda name: os.path.join(directory, name)  # noqa: E731
    return Pki(p("ca.pem"), p("server.pem"), p("server.key"), p("client.pem"),
               p("client.key"))


def tls_conf(pki: Pki) -> str:
    """Client connections must use TLS and present a certificate the CA signed."""
    return (f'tls {{\n  cert_file: "{pki.server_cert}"\n  key_file: "{pki.server_key}"\n'
            f'  ca_file: "{pki.ca}"\n  verify: true\n  timeout: 5\n}}\n')


# ------------------------------------------------------------------ nkeys and JWTs


@dataclass
class Nkey:
    seed: str
    public: str

    def sign(self, data: bytes) -> bytes:
        import nkeys

        kp = nkeys.from_seed(bytearray(self.seed.encode()))
        try:
            return bytes(kp.sign(data))
        finally:
            kp.wipe()


def new_nkey(kind: str) -> Nkey:
    """A fresh nkey: kind is 'user', 'account' or 'operator'."""
    import nkeys

    prefix = {"user": nkeys.PREFIX_BYTE_USER, "account": nkeys.PREFIX_BYTE_ACCOUNT,
              "operator": nkeys.PREFIX_BYTE_OPERATOR}[kind]
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    kp = nkeys.from_seed(bytearray(seed))
    try:
        return Nkey(seed.decode(), kp.public_key.decode())
    finally:
        kp.wipe()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(issuer: Nkey, subject: str, name: str, nats: dict) -> str:
    """A NATS JWT (ed25519-nkey) with the given ``nats`` claims, signed by ``issuer``."""
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    claims = {"jti": uuid.uuid4().hex.upper(), "iat": int(time.time()) - 60,
              "iss": issuer.public, "name": name, "sub": subject,
              "nats": {**nats, "version": 2}}
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{header}.{body}.{_b64(issuer.sign(f'{header}.{body}'.encode()))}"


_UNLIMITED = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
              "wildcards": True, "conn": -1, "leaf": -1}
_JETSTREAM = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}


@dataclass
class Operator:
    conf: str          # the server configuration (operator, resolver, accounts)
    creds_text: str    # a user's .creds file (user JWT + user nkey seed)
    user_seed: str


def operator_setup() -> Operator:
    """Operator mode with a memory resolver: an operator, a system account, an account
    with JetStream enabled, and one user of that account, with its .creds file."""
    op, sys_acc, acc, user = (new_nkey("operator"), new_nkey("account"),
                              new_nkey("account"), new_nkey("user"))
    op_jwt = jwt(op, op.public, "pyshm-test-operator",
                 {"type": "operator", "system_account": sys_acc.public})
    sys_jwt = jwt(op, sys_acc.public, "SYS", {"type": "account", "limits": _UNLIMITED})
    acc_jwt = jwt(op, acc.public, "pyshm", {"type": "account",
                                           "limits": {**_UNLIMITED, **_JETSTREAM}})
    user_jwt = jwt(acc, user.public, "bridge", {"type": "user", "pub": {}, "sub": {},
                                                "subs": -1, "data": -1, "payload": -1})
    conf = (f"operator: {op_jwt}\nsystem_account: {sys_acc.public}\nresolver: MEMORY\n"
            f"resolver_preload: {{\n  {sys_acc.public}: {sys_jwt}\n"
            f"  {acc.public}: {acc_jwt}\n}}\n")
    creds = (f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
             f"************************* IMPORTANT *************************\n"
             f"NKEY Seed printed below can be used to sign and prove identity.\n"
             f"NKEYs are sensitive and should be treated as secrets.\n\n"
             f"-----BEGIN USER NKEY SEED-----\n{user.seed}\n------END USER NKEY SEED------\n"
             f"\n*************************************************************\n")
    return Operator(conf, creds, user.seed)
