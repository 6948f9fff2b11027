"""Images in the JetStream object store: ``nats://HOST:PORT[,HOST:PORT]/BUCKET/NAME``.

A remote image is an ordinary image file (format v1, per-chunk CRC32C) stored as one
object: ``snapshot`` writes the image to a private temporary file and uploads it;
``restore`` and ``inspect`` download it to a private temporary file and hand it to the
local code, which verifies every chunk's CRC32C before anything is built from it (on top
of the object store's own SHA-256 digest). The bucket is created on first use. Object
headers carry a summary (ring, sequences, records) so a listing needs no download.

Names of scheduled snapshots are ``PREFIX-<ns since epoch>-<next sequence>.pyimg``, as
for local schedules, so keep-K retention deletes only a schedule's own objects.

Credentials: user and password in the URL, or the environment (PYSHM_NATS_CREDS,
PYSHM_NATS_NKEY, PYSHM_NATS_USER / PYSHM_NATS_PASSWORD, PYSHM_NATS_TOKEN, PYSHM_NATS_TLS_CA,
PYSHM_NATS_TLS_CERT, PYSHM_NATS_TLS_KEY); no secret is ever printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from ..errors import ImageError, RingExistsError, RingNotFoundError
from .connect import NatsOptions, connect, redact, scrub
from .protocol import BridgeError

SUFFIX = ".pyimg"
CHUNK = 512 << 10  # object chunks: below the server's 1 MiB default max payload
_BUCKET_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


def is_nats_url(text: Any) -> bool:
    return isinstance(text, str) and text.startswith("nats://")


@dataclass(frozen=True)
class RemoteTarget:
    options: NatsOptions
    bucket: str
    name: str            # object name ('' for the bucket itself, or a schedule prefix)

    @property
    def display(self) -> str:
        return f"{self.options.display.split(',')[0]}/{self.bucket}/{self.name}"


def parse_url(url: str, need_name: bool = True) -> RemoteTarget:
    """``nats://[user:pass@]host:port[,host:port...]/BUCKET/NAME``."""
    if not is_nats_url(url):
        raise BridgeError(f"{redact(url)!r} is not a nats:// URL")
    rest = url[len("nats://"):]
    hosts, _, path = rest.partition("/")
    bucket, _, name = path.partition("/")
    name = unquote(name)
    if not hosts:
        raise BridgeError(f"{redact(url)}: no server in the URL (nats://HOST:PORT/BUCKET/NAME)")
    if not bucket or not _BUCKET_RE.match(bucket):
        raise BridgeError(f"{redact(url)}: bucket {bucket!r} must be letters, digits, '_' "
                          f"or '-' (nats://HOST:PORT/BUCKET/NAME)")
    if need_name and not name:
        raise BridgeError(f"{redact(url)}: no object name (nats://HOST:PORT/BUCKET/NAME)")
    servers = []
    for h in hosts.split(","):
        parts = urlsplit("nats://" + h)
        if not parts.hostname:
            raise BridgeError(f"{redact(url)}: bad server {redact(h)!r}")
        servers.append("nats://" + h)
    opts = NatsOptions(servers=servers).with_env_secrets()
    env = os.environ
    opts.creds = opts.creds or env.get("PYSHM_NATS_CREDS")
    opts.nkey = opts.nkey or env.get("PYSHM_NATS_NKEY")
    opts.user = opts.user or env.get("PYSHM_NATS_USER")
    opts.tls_ca = env.get("PYSHM_NATS_TLS_CA")
    opts.tls_cert = env.get("PYSHM_NATS_TLS_CERT")
    opts.tls_key = env.get("PYSHM_NATS_TLS_KEY")
    return RemoteTarget(opts, bucket, name)


def _run(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except BridgeError:
        raise
    except (ImageError, RingExistsError, RingNotFoundError):
        raise
    except Exception as exc:  # nats-py's own errors: name them, no traceback
        raise BridgeError(f"object store: {type(exc).__name__}: {scrub(str(exc))}") from None


async def _store(t: RemoteTarget, create: bool, replicas: int = 1) -> tuple[Any, Any]:
    from nats.js.errors import BucketNotFoundError, NotFoundError

    nc = await connect(t.options)
    js = nc.jetstream(timeout=30)
    try:
        try:
            return nc, await js.object_store(t.bucket)
        except (BucketNotFoundError, NotFoundError):
            if not create:
                raise RingNotFoundError(f"{t.display}: no bucket {t.bucket!r} on "
                                        f"{t.options.display}") from None
            from nats.js.api import ObjectStoreConfig

            return nc, await js.create_object_store(
                t.bucket, config=ObjectStoreConfig(bucket=t.bucket, replicas=replicas))
    except BaseException:
        await nc.close()
        raise


def _temp_dir(size: int) -> str:
    """A private directory for an image of ``size`` bytes: /dev/shm when it has room
    (no disk write on the way), else the system's temporary directory."""
    base = None
    with contextlib.suppress(OSError):
        st = os.statvfs("/dev/shm")
        if st.f_bavail * st.f_frsize > 2 * size + (256 << 20):
            base = "/dev/shm"
    return tempfile.mkdtemp(prefix="pyshm-img-", dir=base)


def _summary(h: Any) -> dict[str, str]:
    return {"Pyshm-Ring": h.params.name, "Pyshm-First-Seq": str(h.first_sequence),
            "Pyshm-Next-Seq": str(h.next_sequence), "Pyshm-Records": str(h.record_count),
            "Pyshm-Capacity": str(h.params.capacity), "Pyshm-Created-Ns": str(h.created_ns)}


def upload_file(path: str, t: RemoteTarget, *, headers: dict[str, str] | None = None,
                overwrite: bool = False, replicas: int = 1, pipelined: bool = True) -> Any:
    """Put the file at ``path`` as object ``t.name`` (the bucket is created if missing).
    ``pipelined=False``: the client's own put, one chunk acknowledged at a time."""
    async def go() -> Any:
        from nats.js.api import ObjectMeta, ObjectMetaOptions
        from nats.js.errors import NotFoundError, ObjectNotFoundError

        nc, obs = await _store(t, create=True, replicas=replicas)
        try:
            if not overwrite:
                with contextlib.suppress(ObjectNotFoundError, NotFoundError):
                    await obs.get_info(t.name)
                    raise RingExistsError(f"{t.display} already exists (pass --force to "
                                          f"replace it)")
            if not pipelined:
                meta = ObjectMeta(name=t.name, headers=headers,
                                  options=ObjectMetaOptions(max_chunk_size=CHUNK))
                with open(path, "rb") as f:
                    return await obs.put(t.name, f, meta=meta)
            return await _put_pipelined(nc.jetstream(timeout=30), obs, t, path, headers)
        finally:
            await nc.close()
    return _run(go())


async def _put_pipelined(js: Any, obs: Any, t: RemoteTarget, path: str,
                         headers: dict[str, str] | None, window: int = 16) -> Any:
    """An object store put that keeps ``window`` chunks in flight (the client's put
    waits for each chunk's acknowledgement in turn). Same layout on the wire: chunks on
    ``$O.<bucket>.C.<nuid>``, then the object's info (SHA-256 digest) on its meta
    subject with a rollup, so any client's get reads it; on any error the new chunks
    are purged and nothing changes."""
    import base64
    import hashlib
    import json
    import uuid
    from datetime import datetime, timezone

    from nats.js import api
    from nats.js.errors import NotFoundError, ObjectNotFoundError

    old = None
    with contextlib.suppress(ObjectNotFoundError, NotFoundError):
        old = await obs.get_info(t.name)
    nuid = uuid.uuid4().hex
    chunk_subj = f"$O.{t.bucket}.C.{nuid}"
    stream = f"OBJ_{t.bucket}"
    digest = hashlib.sha256()
    total = chunks = 0
    pending: list[Any] = []
    try:
        with open(path, "rb") as f:
            while True:
                data = f.read(CHUNK)
                if not data:
                    break
                digest.update(data)
                pending.append(await js.publish_async(chunk_subj, data))
                total += len(data)
                chunks += 1
                if len(pending) >= window:
                    await pending.pop(0)
        for fut in pending:
            await fut
        info = api.ObjectInfo(
            name=t.name, bucket=t.bucket, nuid=nuid, size=total, chunks=chunks,
            digest="SHA-256=" + base64.urlsafe_b64encode(digest.digest()).decode(),
            headers=headers, options=api.ObjectMetaOptions(max_chunk_size=CHUNK),
            mtime=datetime.now(timezone.utc).isoformat())
        meta = f"$O.{t.bucket}.M.{base64.urlsafe_b64encode(t.name.encode()).decode()}"
        await js.publish(meta, json.dumps(info.as_dict()).encode(),
                         headers={"Nats-Rollup": "sub"})
    except BaseException:
        with contextlib.suppress(Exception):
            await js.purge_stream(stream, subject=chunk_subj)
        raise
    if old is not None and not old.deleted and old.nuid:
        await js.purge_stream(stream, subject=f"$O.{t.bucket}.C.{old.nuid}")
    return info


@contextlib.contextmanager
def downloaded(t: RemoteTarget) -> Iterator[str]:
    """The object downloaded into a private temporary file (removed afterwards)."""
    async def size() -> int:
        from nats.js.errors import NotFoundError, ObjectNotFoundError

        nc, obs = await _store(t, create=False)
        try:
            try:
                info = await obs.get_info(t.name)
            except (ObjectNotFoundError, NotFoundError):
                raise RingNotFoundError(f"{t.display}: no such object in bucket "
                                        f"{t.bucket!r}") from None
            return int(info.size or 0)
        finally:
            await nc.close()

    d = _temp_dir(_run(size()))
    try:
        path = os.path.join(d, "image" + SUFFIX)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

        async def get() -> None:
            nc, obs = await _store(t, create=False)
            try:
                with os.fdopen(fd, "wb") as f:
                    await obs.get(t.name, writeinto=f)
            finally:
                await nc.close()
        _run(get())
        yield path
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ----------------------------------------------------------------------------------
# the image commands


def snapshot(source: Any, url: str, *, overwrite: bool = False, replicas: int = 1,
             **kw: Any) -> Any:
    """Snapshot ``source`` into object ``url``; returns the image header."""
    from ..images.snapshot import _Source
    from ..images.snapshot import snapshot as local_snapshot

    t = parse_url(url)
    with _Source(source) as src:
        cap = src.params.capacity
    d = _temp_dir(cap)
    try:
        path = os.path.join(d, "image" + SUFFIX)
        # the temporary copy needs no fsync: the object store holds the durable one
        h = local_snapshot(source, path, sync=False, **kw)
        upload_file(path, t, headers=_summary(h), overwrite=overwrite, replicas=replicas)
        return h
    finally:
        shutil.rmtree(d, ignore_errors=True)


def restore(url: str, target: Any, **kw: Any) -> Any:
    """Restore ring ``target`` from object ``url`` (every chunk's CRC32C verified)."""
    from ..images.restore import restore as local_restore

    with downloaded(parse_url(url)) as path:
        return local_restore(path, target, **kw)


def inspect(url: str, **kw: Any) -> dict[str, Any]:
    from ..images.inspect import inspect as local_inspect

    t = parse_url(url)
    with downloaded(t) as path:
        info = local_inspect(path, **kw)
    info["path"] = redact(url)
    return info


def list_images(url: str, prefix: str | None = None) -> list[dict[str, Any]]:
    """Objects of the bucket (name, size, summary headers), oldest name first."""
    t = parse_url(url, need_name=False)
    return list_images_at(t, t.name if prefix is None else prefix)


def list_images_at(t: RemoteTarget, pre: str) -> list[dict[str, Any]]:
    """Objects of ``t``'s bucket whose names start with ``pre``, by name."""

    async def go() -> list[dict[str, Any]]:
        from nats.js.errors import NotFoundError

        nc, obs = await _store(t, create=False)
        try:
            try:
                infos = await obs.list(ignore_deletes=True)
            except NotFoundError:
                return []
            return sorted(({"name": i.name, "size": i.size, "headers": dict(i.headers or {})}
                           for i in infos if not i.deleted and i.name.startswith(pre)),
                          key=lambda d: d["name"])
        finally:
            await nc.close()
    return list(_run(go()))


def delete(url: str, names: list[str]) -> None:
    """Delete objects ``names`` of the URL's bucket."""
    delete_at(parse_url(url, need_name=False), names)


def delete_at(t: RemoteTarget, names: list[str]) -> None:
    """Delete objects ``names`` of ``t``'s bucket."""
    async def go() -> None:
        nc, obs = await _store(t, create=False)
        try:
            for n in names:
                await obs.delete(n)
        finally:
            await nc.close()
    _run(go())


class RemoteSnapshotSchedule:
    """Snapshots of ``source`` every ``every_seconds`` into objects ``PREFIX-<ns>-<seq>``
    of the URL's bucket (the URL's name is the prefix), keeping the newest ``keep``."""

    def __init__(self, source: Any, url: str, *, every_seconds: float, keep: int = 5,
                 compression: str = "none",
                 on_image: Callable[[str, Any], None] | None = None,
                 on_error: Callable[[Exception], None] | None = None):
        if every_seconds <= 0 or keep < 1:
            raise ValueError("a remote schedule needs every_seconds > 0 and keep >= 1")
        t = parse_url(url, need_name=False)
        self.prefix = t.name or "snapshot"
        if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,100}", self.prefix):
            raise ValueError(f"snapshot prefix {self.prefix!r}: use [A-Za-z0-9_.-]")
        self.source, self.url, self.keep = source, url, keep
        self.bucket_url = url[:len(url) - len(t.name)] if t.name else url.rstrip("/") + "/"
        self.every = every_seconds
        self.compression = compression
        self.on_image, self.on_error = on_image, on_error
        self.taken = 0
        self.errors: list[Exception] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pattern = re.compile(re.escape(self.prefix) + r"-(\d{19,20})-(\d+)" +
                                   re.escape(SUFFIX) + "$")

    def images(self) -> list[str]:
        found = [(int(m.group(1)), d["name"]) for d in
                 list_images(self.bucket_url, prefix=self.prefix + "-")
                 if (m := self._pattern.match(d["name"]))]
        return [n for _, n in sorted(found)]

    def run_once(self) -> str:
        from ..images.snapshot import _Source

        with _Source(self.source) as src:
            nxt = src.next_sequence
        name = f"{self.prefix}-{time.time_ns():020d}-{nxt}{SUFFIX}"
        h = snapshot(self.source, self.bucket_url + name, compression=self.compression)
        self.taken += 1
        if self.on_image is not None:
            self.on_image(self.bucket_url + name, h)
        self.rotate()
        return name

    def rotate(self) -> list[str]:
        names = self.images()
        old = names[:max(0, len(names) - self.keep)]
        if old:
            delete(self.bucket_url, old)
        return old

    def _loop(self) -> None:
        while True:
            try:
                self.run_once()
            except Exception as exc:  # keep the schedule alive; report, retry later
                self.errors.append(exc)
                if self.on_error is not None:
                    self.on_error(exc)
            if self._stop.wait(self.every):
                return

    def start(self) -> RemoteSnapshotSchedule:
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name="pyshm-remote-snapshots")
        self._thread.start()
        return self

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> RemoteSnapshotSchedule:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
