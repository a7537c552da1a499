"""A small Consul HTTP client for sessions, locks and plain KV (DESIGN §5, §6).

The barrier participant and the controller need a handful of Consul calls that
the consensus seam does not cover: sessions (create / renew / destroy), keys
acquired by a session (``sidecars/<id>``, ``controller/leader``), plain keys
(``jobs/<id>``) and a blocking list of a prefix. This speaks the HTTP API with
aiohttp directly so every request has an explicit timeout (blocking queries
always pass ``wait``; aiohttp's default total timeout is 300 s).

Build it inside the running event loop; ``await close()`` when done. Every
transport or protocol failure is raised as ``BackendError``.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass
from typing import Any

import aiohttp

from ._exceptions import BackendError, ConfigError
from ._placement_file import validate_url


@dataclass(frozen=True, slots=True)
class KVEntry:
    """One key as Consul returns it (value decoded from base64)."""

    key: str
    value: bytes
    session: str | None
    modify_index: int

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "KVEntry":
        value = raw.get("Value")
        return cls(raw["Key"], base64.b64decode(value) if value else b"", raw.get("Session") or None,
                   int(raw.get("ModifyIndex", 0)))


class SessionLost(BackendError):
    """The Consul session this process held no longer exists (expired or destroyed)."""


class ConsulHTTP:
    """Sessions, session-held keys and plain KV over Consul's HTTP API."""

    def __init__(self, url: str, *, token: str | None = None, request_timeout_s: float = 5.0) -> None:
        self.url = validate_url(url, "consul").rstrip("/")
        if request_timeout_s <= 0:
            raise ConfigError("request_timeout_s", f"must be > 0, got {request_timeout_s!r}")
        self._timeout = request_timeout_s
        headers = {"X-Consul-Token": token} if token else {}
        self._http = aiohttp.ClientSession(headers=headers)

    async def close(self) -> None:
        await self._http.close()

    async def _call(self, method: str, path: str, *, params: dict[str, str] | None = None,
                    data: bytes | None = None, body: Any = None, timeout_s: float | None = None,
                    ok404: bool = False) -> tuple[int, Any, int]:
        """One request; returns (status, decoded JSON or None, X-Consul-Index)."""
        if body is not None:
            data = json.dumps(body).encode()
        timeout = aiohttp.ClientTimeout(total=timeout_s or self._timeout)
        try:
            async with self._http.request(method, self.url + path, params=params, data=data,
                                          timeout=timeout) as resp:
                text = await resp.read()
                index = int(resp.headers.get("X-Consul-Index", "0") or 0)
                if resp.status == 404 and ok404:
                    return 404, None, index
                if resp.status >= 400:
                    raise BackendError(f"consul {method} {path}: HTTP {resp.status}: {text[:200]!r}")
                return resp.status, (json.loads(text) if text else None), index
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, OSError) as exc:
            raise BackendError(f"consul {method} {path}: {type(exc).__name__}: {exc}") from exc

    # ---- sessions ----------------------------------------------------------

    async def session_create(self, name: str, ttl_s: float, *, behavior: str = "delete") -> str:
        """A TTL-only session (no node health checks: only the TTL or a destroy
        ends it) with no lock-delay, so a restarted holder can re-acquire at once."""
        body = {"Name": name, "TTL": f"{ttl_s:g}s", "Behavior": behavior, "LockDelay": "0s", "Checks": []}
        _, out, _ = await self._call("PUT", "/v1/session/create", body=body)
        try:
            return str(out["ID"])
        except (TypeError, KeyError) as exc:
            raise BackendError(f"consul session create: unexpected answer {out!r}") from exc

    async def session_renew(self, sid: str) -> None:
        """Renew; raise ``SessionLost`` if Consul no longer knows the session."""
        status, out, _ = await self._call("PUT", f"/v1/session/renew/{sid}", ok404=True)
        if status == 404 or not out:
            raise SessionLost(f"session {sid} is gone")

    async def session_destroy(self, sid: str) -> None:
        await self._call("PUT", f"/v1/session/destroy/{sid}")

    async def session_exists(self, sid: str) -> bool:
        status, out, _ = await self._call("GET", f"/v1/session/info/{sid}", ok404=True)
        return status != 404 and bool(out)

    # ---- KV ----------------------------------------------------------------

    async def acquire(self, key: str, value: bytes, sid: str) -> bool:
        """Write ``value`` under ``key`` held by session ``sid`` (re-acquiring a
        key the session already holds just updates the value)."""
        _, out, _ = await self._call("PUT", f"/v1/kv/{key}", params={"acquire": sid}, data=value)
        return out is True

    async def release(self, key: str, sid: str) -> bool:
        _, out, _ = await self._call("PUT", f"/v1/kv/{key}", params={"release": sid})
        return out is True

    async def put(self, key: str, value: bytes, *, cas: int | None = None) -> bool:
        params = {"cas": str(cas)} if cas is not None else None
        _, out, _ = await self._call("PUT", f"/v1/kv/{key}", params=params, data=value)
        return out is True

    async def delete(self, key: str, *, recurse: bool = False) -> None:
        await self._call("DELETE", f"/v1/kv/{key}", params={"recurse": "true"} if recurse else None)

    async def get(self, key: str) -> KVEntry | None:
        status, out, _ = await self._call("GET", f"/v1/kv/{key}", ok404=True)
        return None if status == 404 or not out else KVEntry.from_json(out[0])

    async def list(self, prefix: str, *, index: int | None = None, wait_s: float = 1.0,
                   consistent: bool = False) -> tuple[list[KVEntry], int]:
        """Every key under ``prefix`` and the index; with ``index`` this is a
        blocking query that returns on a change or after ``wait_s``."""
        params = {"recurse": "true"}
        timeout = None
        if index is not None:
            params.update(index=str(index), wait=f"{max(wait_s, 0.001):.3f}s")
            timeout = wait_s + wait_s / 16 + self._timeout  # Consul adds up to wait/16 of jitter
        if consistent:
            params["consistent"] = ""
        status, out, idx = await self._call("GET", f"/v1/kv/{prefix}", params=params, timeout_s=timeout,
                                            ok404=True)
        entries = [] if status == 404 or not out else [KVEntry.from_json(raw) for raw in out]
        return entries, idx
