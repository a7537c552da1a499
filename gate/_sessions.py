"""A small Consul client for sessions, locks and plain KV (DESIGN §5, §6).

The barrier participant and the controller need a handful of Consul calls that
the consensus seam does not cover: sessions (create / renew / destroy), keys
acquired by a session (``sidecars/<id>``, ``controller/leader``), plain keys
(``jobs/<id>``) and a blocking list of a prefix. They go through py-consul's
``consul.aio.Consul`` (one pooled aiohttp session per ``ConsulHTTP``), built
lazily inside the running loop on the first call. Every request has an
explicit total timeout; blocking queries always pass ``wait`` and get a
timeout longer than it (aiohttp's default total timeout is 300 s).

``await close()`` when done. Every transport or protocol failure is raised as
``BackendError`` (``SessionLost`` when a renew finds the session gone).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import consul.aio
import consul.base
from consul.exceptions import ConsulException, NotFound

from ._exceptions import BackendError, ConfigError
from ._ids import check_store_key
from ._kv import KVEntry
from ._reachability import reached, unreachable
from ._placement_file import validate_url

_T = TypeVar("_T")


class SessionLost(BackendError):
    """The Consul session this process held no longer exists (expired or destroyed)."""


class _HTTPClient(consul.aio.HTTPClient):  # type: ignore[misc]  # py-consul is untyped
    """``consul.aio.HTTPClient`` with our own aiohttp session.

    py-consul 1.8 builds its ``TCPConnector`` with ``verify_ssl=`` and
    ``ssl_context=``, both deprecated in aiohttp 3.x: every construction emits a
    DeprecationWarning (an error under ``filterwarnings = error``). Its request
    path (``_request``/``get``/``put``/``delete``) is reused unchanged; only the
    session is built here, with a default total timeout. ``base_uri`` is the
    configured URL itself, so a path prefix or an IPv6 host survives (py-consul
    would rebuild ``scheme://host:port`` and drop both).
    """

    def __init__(self, url: str, *, timeout_s: float, session: aiohttp.ClientSession | None = None) -> None:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        consul.base.HTTPClient.__init__(self, parts.hostname or "", port, parts.scheme, verify=True)
        self.base_uri = url
        self.loop = None
        self._timeout_s = timeout_s
        # A shared session (a participant's one pool, ConsulConsensus.http_session) is not ours to close.
        self._owned = session is None
        self._session = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))

    def _request(self, callback: Any, method: str, uri: str, headers: Any, data: Any = None,
                 connections_timeout: float | None = None, raw: bool = False) -> Any:
        # every request timed by us, whoever's session it runs on (a shared one has its own default)
        return super()._request(callback, method, uri, headers, data=data,
                                connections_timeout=connections_timeout or self._timeout_s, raw=raw)

    def close(self) -> Any:
        if self._owned:
            return self._session.close()
        return _nothing()


async def _nothing() -> None:
    return None


class _Consul(consul.aio.Consul):  # type: ignore[misc]  # py-consul is untyped
    """``consul.aio.Consul`` over ``_HTTPClient``, with exactly the token given."""

    def __init__(self, url: str, *, token: str | None, timeout_s: float,
                 session: aiohttp.ClientSession | None = None) -> None:
        self._url, self._timeout_s, self._shared = url, timeout_s, session
        parts = urlsplit(url)
        # host, port, scheme and verify are all passed so no CONSUL_HTTP_* variable is consulted
        super().__init__(host=parts.hostname, port=parts.port or 0, scheme=parts.scheme, verify=True, token=token)
        # base.Consul lets CONSUL_HTTP_TOKEN override an explicit token; the token we were given wins.
        self.token = token

    def http_connect(self, host: str, port: int, scheme: Any, verify: bool | str = True,
                     cert: Any = None) -> _HTTPClient:
        return _HTTPClient(self._url, timeout_s=self._timeout_s, session=self._shared)


class ConsulHTTP:
    """Sessions, session-held keys and plain KV over Consul's HTTP API (via py-consul).

    ``session``: an aiohttp session to send the non-blocking calls over (a participant
    passes its ``ConsulConsensus.http_session``, a one-connection pool, so its reads,
    renewals and acks share one keep-alive connection: DESIGN §5 "The push path"). A
    blocking ``list`` never goes over it: it has a pool of its own, opened on first use,
    so a renewal never waits behind a long-poll.
    """

    def __init__(self, url: str, *, token: str | None = None, request_timeout_s: float = 5.0,
                 session: aiohttp.ClientSession | None = None) -> None:
        self.url = validate_url(url, "consul").rstrip("/")
        if request_timeout_s <= 0:
            raise ConfigError("request_timeout_s", f"must be > 0, got {request_timeout_s!r}")
        self._timeout = request_timeout_s
        self._token = token
        self._shared = session
        self._client: _Consul | None = None
        self._blocking: _Consul | None = None   # blocking lists, when sharing a pool
        self._closed = False

    def _consul(self, what: str, *, blocking: bool = False) -> _Consul:
        """The py-consul client, built on first use (so inside the running loop)."""
        if self._closed:
            raise BackendError(f"consul {what}: this ConsulHTTP is closed")
        if blocking and self._shared is not None:
            if self._blocking is None:
                self._blocking = _Consul(self.url, token=self._token, timeout_s=self._timeout)
            return self._blocking
        if self._client is None:
            self._client = _Consul(self.url, token=self._token, timeout_s=self._timeout, session=self._shared)
        return self._client

    async def close(self) -> None:
        """Close the pooled connections (not a shared session); idempotent. Later calls
        raise ``BackendError``."""
        self._closed = True
        clients, self._client, self._blocking = (self._client, self._blocking), None, None
        for client in clients:
            if client is not None:
                await client.close()

    async def _do(self, what: str, call: Callable[[_Consul], Awaitable[_T]], *,
                  lost: str | None = None, blocking: bool = False) -> _T:
        """Run one py-consul call, every failure re-raised as ours.

        ``lost``: a session id whose 404 (py-consul's ``NotFound``) means ``SessionLost``.
        AssertionError is included because py-consul validates arguments with
        ``assert`` (TTL range, behavior, key shape); Consul itself rejects the
        same input when asserts are off, so either way it is a ``BackendError``.
        """
        client = self._consul(what, blocking=blocking)
        try:
            out = await call(client)
        except NotFound as exc:
            reached(self.url)
            if lost is not None:
                raise SessionLost(f"session {lost} is gone") from exc
            raise BackendError(f"consul {what}: {exc}") from exc
        except (ConsulException, aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError,
                AssertionError) as exc:
            raise (unreachable(self.url, what, exc)
                   or BackendError(f"consul {what}: {type(exc).__name__}: {exc}")) from exc
        reached(self.url)
        return out

    # ---- sessions ----------------------------------------------------------

    async def session_create(self, name: str, ttl_s: float, *, behavior: str = "delete") -> str:
        """A TTL-only session (no node health checks: only the TTL or a destroy
        ends it) with no lock-delay, so a restarted holder can re-acquire at once."""
        # py-consul formats the TTL as f"{ttl}s": an integral float goes as int so it reads "10s".
        ttl: float = int(ttl_s) if float(ttl_s).is_integer() else ttl_s
        # checks=[] sends "checks": [] — Consul then attaches no serfHealth check
        # (checks=None would keep the default serfHealth; a frozen agent must not end it).
        sid = await self._do("session create", lambda c: c.session.create(
            name=name, ttl=ttl, behavior=behavior, lock_delay=0, checks=[]))
        if not isinstance(sid, str) or not sid:
            raise BackendError(f"consul session create: unexpected answer {sid!r}")
        return sid

    async def session_renew(self, sid: str) -> None:
        """Renew; raise ``SessionLost`` if Consul no longer knows the session."""
        out = await self._do(f"session renew {sid}", lambda c: c.session.renew(sid), lost=sid)
        if not out:
            raise SessionLost(f"session {sid} is gone")

    async def session_destroy(self, sid: str) -> None:
        if not await self._do(f"session destroy {sid}", lambda c: c.session.destroy(sid)):
            raise BackendError(f"consul session destroy {sid}: not destroyed (HTTP 404)")

    async def session_exists(self, sid: str) -> bool:
        _, out = await self._do(f"session info {sid}", lambda c: c.session.info(sid))
        return bool(out)

    # ---- KV ----------------------------------------------------------------

    async def acquire(self, key: str, value: bytes, sid: str) -> bool:
        """Write ``value`` under ``key`` held by session ``sid`` (re-acquiring a
        key the session already holds just updates the value)."""
        check_store_key(key)
        out = await self._do(f"acquire {key}", lambda c: c.kv.put(key, value, acquire=sid))
        return out is True

    async def release(self, key: str, sid: str) -> bool:
        check_store_key(key)
        out = await self._do(f"release {key}", lambda c: c.kv.put(key, None, release=sid))
        return out is True

    async def put(self, key: str, value: bytes, *, cas: int | None = None) -> bool:
        check_store_key(key)
        out = await self._do(f"put {key}", lambda c: c.kv.put(key, value, cas=cas))
        return out is True

    async def delete(self, key: str, *, recurse: bool = False) -> None:
        check_store_key(key)
        await self._do(f"delete {key}", lambda c: c.kv.delete(key, recurse=recurse))

    async def get(self, key: str) -> KVEntry | None:
        check_store_key(key)
        _, out = await self._do(f"get {key}", lambda c: c.kv.get(key))
        return None if not out else _entry(key, out)

    async def list(self, prefix: str, *, index: int | None = None, wait_s: float = 1.0,
                   consistent: bool = False) -> tuple[list[KVEntry], int]:
        """Every key under ``prefix`` and the index; with ``index`` this is a
        blocking query that returns on a change or after ``wait_s``."""
        check_store_key(prefix)
        wait = timeout = None
        if index is not None:
            # py-consul sends index and wait only for a truthy index; index 0 is
            # a non-blocking read in Consul anyway.
            wait = f"{max(wait_s, 0.001):.3f}s"
            timeout = wait_s + wait_s / 16 + self._timeout  # Consul adds up to wait/16 of jitter
        idx, out = await self._do(f"list {prefix}", lambda c: c.kv.get(
            prefix, index=index, wait=wait, recurse=True, consistency="consistent" if consistent else None,
            connections_timeout=timeout), blocking=index is not None)
        try:
            return ([] if not out else [_entry(prefix, raw) for raw in out]), int(idx)
        except (TypeError, ValueError) as exc:
            raise BackendError(f"consul list {prefix}: unreadable index {idx!r}") from exc


def _entry(key: str, raw: Any) -> KVEntry:
    try:
        return KVEntry.from_decoded(raw)
    except (TypeError, KeyError, AttributeError, ValueError) as exc:
        raise BackendError(f"consul {key}: unexpected KV answer {raw!r}") from exc
