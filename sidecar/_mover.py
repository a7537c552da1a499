"""Data movement for migration jobs (DESIGN §6): the ``Mover`` seam and the
default mover that speaks the application's HTTP hooks.

The hook contract (served by the application on each node):

* ``GET  /_epochgate/export?partition=P`` → ``application/x-ndjson`` lines
  ``{"key": …, "value": …}``; header ``X-Epochgate-Cursor: <int>`` = the node's
  commit-sequence position when the export started.
* ``POST /_epochgate/import?partition=P`` (ndjson body, upsert) → ``{"imported": n}``.
* ``GET  /_epochgate/delta?partition=P&since=CURSOR`` → ndjson of the changes
  after ``CURSOR`` (same line shape), header ``X-Epochgate-Cursor``.

The bulk copy runs while writes still go to ``from`` and remembers the export
cursor; after the barrier (no more writes anywhere) the delta since that
cursor is the rest. Imports are upserts, so a copy repeated after a controller
takeover is harmless. ``progress(bytes)`` is called with the running total.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Protocol, runtime_checkable

import aiohttp

from gate._exceptions import BackendError

Progress = Callable[[int], None]
Check = Callable[[], None]
"""Called before each import batch; raises to stop (e.g. the controller lost its lock)."""

CURSOR_HEADER = "X-Epochgate-Cursor"


@runtime_checkable
class Mover(Protocol):
    async def copy(self, partition: str, source_url: str, target_url: str, progress: Progress,
                   check: Check | None = None) -> str:
        """Copy the whole partition; return the source's cursor at export start."""
        ...

    async def copy_delta(self, partition: str, source_url: str, target_url: str, since: str,
                         progress: Progress, check: Check | None = None) -> str:
        """Copy the changes after ``since``; return the new cursor."""
        ...


class HttpHooksMover:
    """The default ``Mover``: the application's ``/_epochgate/*`` hooks over HTTP."""

    def __init__(self, *, batch_bytes: int = 256 * 1024, timeout_s: float = 60.0) -> None:
        self.batch_bytes = batch_bytes
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, sock_read=timeout_s)
        self._http: aiohttp.ClientSession | None = None
        # awaited with (partition, bytes) before each import batch: the copy throttle (_throttle.Pacer)
        self.pace: Callable[[str, int], Awaitable[None]] | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=self.timeout)
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def copy(self, partition: str, source_url: str, target_url: str, progress: Progress,
                   check: Check | None = None) -> str:
        return await self._stream(f"{source_url.rstrip('/')}/_epochgate/export", {"partition": partition},
                                  partition, target_url, progress, check)

    async def copy_delta(self, partition: str, source_url: str, target_url: str, since: str,
                         progress: Progress, check: Check | None = None) -> str:
        return await self._stream(f"{source_url.rstrip('/')}/_epochgate/delta",
                                  {"partition": partition, "since": str(since)}, partition, target_url,
                                  progress, check)

    async def _stream(self, url: str, params: dict[str, str], partition: str, target_url: str,
                      progress: Progress, check: Check | None) -> str:
        http = self._session()
        total = 0
        try:
            async with http.get(url, params=params) as resp:
                if resp.status != 200:
                    raise BackendError(f"mover: GET {url}: HTTP {resp.status}: {(await resp.read())[:200]!r}")
                cursor = resp.headers.get(CURSOR_HEADER)
                if cursor is None or not cursor.strip().lstrip("-").isdigit():
                    raise BackendError(f"mover: GET {url}: missing or bad {CURSOR_HEADER} header {cursor!r}")
                batch: list[bytes] = []
                size = 0
                async for line in resp.content:
                    if not line.strip():
                        continue
                    if not line.endswith(b"\n"):
                        line += b"\n"
                    batch.append(line)
                    size += len(line)
                    if size >= self.batch_bytes:
                        total += await self._import(partition, target_url, batch, check)
                        progress(total)
                        batch, size = [], 0
                if batch:
                    total += await self._import(partition, target_url, batch, check)
                progress(total)
                return cursor.strip()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise BackendError(f"mover: {url}: {type(exc).__name__}: {exc}") from exc

    async def _import(self, partition: str, target_url: str, lines: list[bytes], check: Check | None) -> int:
        if check is not None:
            check()
        body = b"".join(lines)
        if self.pace is not None:
            await self.pace(partition, len(body))
        url = f"{target_url.rstrip('/')}/_epochgate/import"
        async with self._session().post(url, params={"partition": partition}, data=body,
                                        headers={"Content-Type": "application/x-ndjson"}) as resp:
            text = await resp.read()
            if resp.status != 200:
                raise BackendError(f"mover: POST {url}: HTTP {resp.status}: {text[:200]!r}")
        return len(body)

