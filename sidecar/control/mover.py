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

Every hook call carries the mover credential (``X-Epochgate-Mover-Token``) and
every import the fencing token of its attempt's phase (``X-Epochgate-Fence``,
DESIGN §6; ``gate._fence``). Two rules make a delayed import harmless:

* the delta copy always sends at least one import (an empty one when nothing
  changed), so the target has seen the cutover epoch before the flip and
  refuses every bulk-copy import of this or an older attempt still in the
  network;
* a bulk import whose answer was lost is retried at the same token (its twin
  landing later is refused once the delta's token arrived, or is overwritten by
  the delta), but a delta import is never retried: an unanswered delta import
  fails the attempt, and a new attempt has higher tokens.

A 409 ``stale-mover`` answer raises ``gate.StaleMover``: a newer attempt owns
the partition's data movement, this one must stop.

Resharding (DESIGN §12.4): ``copy``/``copy_delta`` take ``only`` (a ``gate.Slot``: the key
filter ``slot=I&of=M`` on the export and the delta) and ``into`` (the destination slot the
rows are imported under). An answer that does not echo the filter in ``X-Epochgate-Filter``
is refused — an application that ignored it would copy every row to both halves.
``cleanup`` calls ``POST /_epochgate/cleanup``, fenced like an import and idempotent.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol, runtime_checkable

from gate import FENCE_HEADER, FILTER_HEADER, MOVER_TOKEN_HEADER, BackendError, Slot, StaleMover, filter_text

Progress = Callable[[int], None]
Check = Callable[[], None]
"""Called before each import batch; raises to stop (e.g. the controller lost its lock)."""

CURSOR_HEADER = "X-Epochgate-Cursor"

if TYPE_CHECKING:
    import aiohttp


def _aiohttp() -> Any:
    """aiohttp, imported by the first transfer: a sidecar whose embedded controller never
    moves data does not carry it (~8 MiB resident, issue 20)."""
    import aiohttp

    return aiohttp


@runtime_checkable
class Mover(Protocol):
    async def copy(self, partition: str, source_url: str, target_url: str, progress: Progress,
                   check: Check | None = None, *, fence: int) -> str:
        """Copy the whole partition; return the source's cursor at export start.
        ``fence``: the token every write on the target carries (the draining epoch)."""
        ...

    async def copy_delta(self, partition: str, source_url: str, target_url: str, since: str,
                         progress: Progress, check: Check | None = None, *, fence: int) -> str:
        """Copy the changes after ``since`` (at least one import call, even if empty);
        return the new cursor. ``fence``: the cutover epoch."""
        ...


class HttpHooksMover:
    """The default ``Mover``: the application's ``/_epochgate/*`` hooks over HTTP."""

    def __init__(self, *, batch_bytes: int = 256 * 1024, timeout_s: float = 60.0, token: str | None = None,
                 retry_s: float = 15.0) -> None:
        self.batch_bytes = batch_bytes
        self.token = token            # the mover credential (set by the controller)
        self.retry_s = retry_s        # how long a bulk import is retried through transient errors
        self.timeout_s = timeout_s
        self._http: aiohttp.ClientSession | None = None
        # awaited with (partition, bytes) before each import batch: the copy throttle (_throttle.Pacer)
        self.pace: Callable[[str, int], Awaitable[None]] | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            aiohttp = _aiohttp()
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s,
                                                                             sock_read=self.timeout_s))
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _headers(self) -> dict[str, str]:
        return {} if self.token is None else {MOVER_TOKEN_HEADER: self.token}

    async def copy(self, partition: str, source_url: str, target_url: str, progress: Progress,
                   check: Check | None = None, *, fence: int, only: Slot | None = None,
                   into: str | None = None) -> str:
        return await self._stream(f"{source_url.rstrip('/')}/_epochgate/export", {"partition": partition},
                                  into or partition, target_url, progress, check, fence, retry=True, only=only)

    async def copy_delta(self, partition: str, source_url: str, target_url: str, since: str,
                         progress: Progress, check: Check | None = None, *, fence: int, only: Slot | None = None,
                         into: str | None = None) -> str:
        return await self._stream(f"{source_url.rstrip('/')}/_epochgate/delta",
                                  {"partition": partition, "since": str(since)}, into or partition, target_url,
                                  progress, check, fence, retry=False, only=only)

    async def cleanup(self, partition: str, url: str, *, fence: int, only: Slot | None = None) -> int:
        """Delete ``partition``'s rows (or those ``only`` holds) on the node at ``url``; the count."""
        params = {"partition": partition}
        if only is not None:
            params.update(slot=str(only.number), of=str(only.modulus))
        hook = f"{url.rstrip('/')}/_epochgate/cleanup"
        try:
            async with self._session().post(hook, params=params,
                                            headers={FENCE_HEADER: str(int(fence)), **self._headers()}) as resp:
                text = await resp.read()
                if resp.status == 409:
                    _raise_stale(partition, fence, text)
                if resp.status != 200:
                    raise BackendError(f"mover: POST {hook}: HTTP {resp.status}: {text[:200]!r}")
                return int(json.loads(text).get("deleted", 0))
        except (_aiohttp().ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
            raise BackendError(f"mover: {hook}: {type(exc).__name__}: {exc}") from exc

    async def _stream(self, url: str, params: dict[str, str], partition: str, target_url: str,
                      progress: Progress, check: Check | None, fence: int, *, retry: bool,
                      only: Slot | None = None) -> str:
        http = self._session()
        if only is not None:
            params = {**params, "slot": str(only.number), "of": str(only.modulus)}
        total = 0
        sent = False

        async def flush(batch: list[bytes]) -> int:
            nonlocal sent
            sent = True
            return await self._import(partition, target_url, batch, check, fence, retry)

        try:
            async with http.get(url, params=params, headers=self._headers()) as resp:
                if resp.status != 200:
                    raise BackendError(f"mover: GET {url}: HTTP {resp.status}: {(await resp.read())[:200]!r}")
                if only is not None and resp.headers.get(FILTER_HEADER) != filter_text(only):
                    raise BackendError(f"mover: GET {url}: the application did not apply the key filter "
                                       f"{filter_text(only)!r} (no {FILTER_HEADER} echo): it would copy every row")
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
                        total += await flush(batch)
                        progress(total)
                        batch, size = [], 0
                if batch or (not sent and not retry):   # the delta stamps its token even when empty
                    total += await flush(batch)
                progress(total)
                return cursor.strip()
        except (_aiohttp().ClientError, asyncio.TimeoutError, OSError) as exc:
            raise BackendError(f"mover: {url}: {type(exc).__name__}: {exc}") from exc

    async def _import(self, partition: str, target_url: str, lines: list[bytes], check: Check | None,
                      fence: int, retry: bool) -> int:
        body = b"".join(lines)
        if self.pace is not None:
            await self.pace(partition, len(body))
        url = f"{target_url.rstrip('/')}/_epochgate/import"
        end = time.monotonic() + (self.retry_s if retry else 0.0)
        delay = 0.05
        while True:
            if check is not None:
                check()
            try:
                status, text = await self._post_import(url, partition, body, fence)
            except (_aiohttp().ClientError, asyncio.TimeoutError, OSError) as exc:
                status, text = 0, f"{type(exc).__name__}: {exc}".encode()
            if status == 200:
                return len(body)
            if status == 409:
                _raise_stale(partition, fence, text)
            if not (retry and (status == 0 or status >= 500) and time.monotonic() + delay < end):
                raise BackendError(f"mover: POST {url}: " + (f"HTTP {status}: " if status else "") + f"{text[:200]!r}")
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)

    async def _post_import(self, url: str, partition: str, body: bytes, fence: int) -> tuple[int, bytes]:
        """One import call: (status, body). Separate so a test can pause right before the send."""
        headers = {"Content-Type": "application/x-ndjson", FENCE_HEADER: str(int(fence)), **self._headers()}
        async with self._session().post(url, params={"partition": partition}, data=body, headers=headers) as resp:
            return resp.status, await resp.read()


def _raise_stale(partition: str, fence: int, text: bytes) -> None:
    try:
        doc = json.loads(text)
    except ValueError:
        doc = {}
    if isinstance(doc, dict) and str(doc.get("type", "")).endswith("stale-mover"):
        highest = doc.get("highest")
        raise StaleMover(partition, int(fence), int(highest) if isinstance(highest, int) else -1)
    raise BackendError(f"mover: import of {partition!r}: HTTP 409: {text[:200]!r}")

