"""How the barrier reads the fleet: one list, then one blocking query per key
still pending (DESIGN §5 rule 2; issue 19).

The old wait re-read the whole ``sidecars/`` prefix on every change of it,
and every ack changes it: N acks × N entries, O(N²) bytes from Consul per
cutover. Here the controller lists ``sidecars/`` once (consistent, after the
cutover commit: that list is rule 2) and then, for each listed participant
that has not acked yet, blocks on its own key ``sidecars/<id>`` from the
ModifyIndex it was listed at. A single-key blocking query answers only when
that key changes, with that one key: each participant costs one list entry
and about one answer, O(N) bytes per barrier.

The price is one connection per pending participant while a barrier waits
(capped by ``max_watches``; a participant past the cap is watched when a slot
frees, and its first query returns at once if it acked meanwhile). Consul's
``limits.http_max_conns_per_client`` (default 200) must allow that many from
the controller's address.

Requests go over ``LongPollClient`` (a lean keep-alive GET) so thousands of
small answers cost little controller CPU, and so every byte Consul sends is
counted (``bytes_received``) for bench/bench_fleet.py.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from ._exceptions import BackendError
from ._longpoll import LongPollClient


@dataclass(frozen=True, slots=True)
class KeyState:
    """One ``sidecars/<id>`` as Consul answered it."""

    session: str | None
    epoch: int
    index: int


def parse_entry(raw: dict[str, Any]) -> KeyState:
    value = raw.get("Value")
    try:
        epoch = int((base64.b64decode(value) if value else b"").decode() or 0)
    except ValueError:
        epoch = 0
    return KeyState(raw.get("Session") or None, epoch, int(raw.get("ModifyIndex", 0)))


class AckReader:
    """The controller's reads of ``<prefix>sidecars/``: list once, then per-key waits."""

    def __init__(self, url: str, token: str | None, directory: str, *, max_watches: int = 1024,
                 timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.dir = directory
        self.max_watches = max_watches
        self.timeout_s = timeout_s
        self._headers = {"X-Consul-Token": token} if token else {}
        self._path = urlsplit(self.url).path
        self._poll: LongPollClient | None = None
        self.bytes_received = 0
        self.requests = 0

    def _client(self) -> LongPollClient:
        if self._poll is None:
            self._poll = LongPollClient(self.url, self._headers, max_idle=self.max_watches)
        return self._poll

    async def close(self) -> None:
        poll, self._poll = self._poll, None
        if poll is not None:
            await poll.close()

    async def _get(self, target: str, timeout_s: float, *, gzip: bool = False) -> tuple[int, dict[str, str], bytes]:
        resp = await self._client().get(target, timeout_s, gzip=gzip)
        self.requests += 1
        self.bytes_received += resp.wire_bytes
        if resp.status not in (200, 404):
            raise BackendError(f"consul GET {target}: HTTP {resp.status}: {resp.body[:200]!r}")
        return resp.status, resp.headers, resp.body

    def _target(self, key: str) -> str:
        return f"{self._path}/v1/kv/{quote(key, safe='/')}"

    async def list(self) -> tuple[dict[str, KeyState], int]:
        """Every key under the directory (a consistent read) and the index."""
        # compressed: N entries that repeat the prefix, the key names' shape and session-id
        # format gzip ~9x (179 → 19 B per entry): the list is most of a push barrier's bytes
        status, headers, body = await self._get(self._target(self.dir) + "?recurse&consistent", self.timeout_s,
                                                gzip=True)
        try:
            rows = json.loads(body) if status == 200 and body else []
            index = int(headers.get("x-consul-index", "0"))
            return {r["Key"][len(self.dir):]: parse_entry(r) for r in rows}, index
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BackendError(f"consul list {self.dir}: unreadable answer: {exc}") from exc

    async def watch(self, pid: str, index: int, wait_s: float) -> KeyState | None:
        """Block until ``sidecars/<pid>`` changes past ``index`` (or ``wait_s``);
        None when the key is gone."""
        target = self._target(self.dir + pid)
        if index > 0:
            target += f"?index={index}&wait={max(1, int(wait_s * 1000))}ms"
        status, headers, body = await self._get(target, wait_s * 1.1 + self.timeout_s)
        if status == 404:
            return None
        try:
            rows = json.loads(body)
            return parse_entry(rows[0]) if rows else None
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise BackendError(f"consul GET {target}: unreadable answer: {exc}") from exc
