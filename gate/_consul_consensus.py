"""``ConsulConsensus``: the Consensus seam over Consul's KV HTTP API.

A key's seqno is its ``ModifyIndex`` (the raft index of its last write);
``txn`` is ``PUT /v1/txn`` (one raft entry: every write in it gets the same
index); conditions are ``cas`` / ``delete-cas`` / ``check-index`` /
``check-not-exists``. Blocking reads use ``?index=&wait=`` and ``?raw`` so a
watcher receives the value bytes and the index header, nothing else; those go
over ``LongPollClient`` (a lean keep-alive GET), the rest over aiohttp.

It talks HTTP with aiohttp directly rather than through py-consul: the token
must go on every request (py-consul's ``txn.put`` drops it), and counting the
bytes each request receives is how the benchmark measures fleet cost. No
aiohttp exception leaves this module: transport failures and unexpected
answers become ``BackendError``.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any, Sequence
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from ._consensus import CHECK, DELETE, DELETE_TREE, PUT, TxnOp, Versioned, put
from ._consensus_store import ConsensusStore
from ._exceptions import BackendError, ConfigError
from ._ids import check_store_key, quote_key
from ._longpoll import LongPollClient
from ._placement_file import validate_url
from ._reachability import reached, unreachable
from ._replica import Replica
from ._truncate import check_truncate

_TXN_MAX_OPS = 64  # Consul's limit per transaction


class ConsulConsensus:
    """Consensus over Consul KV under ``prefix``. Build it inside the running loop.

    ``bytes_received`` / ``requests`` count what came back over HTTP (status
    line and headers approximated from the parsed header list, plus the body).
    """

    def __init__(self, url: str, prefix: str = "epochgate/", token: str | None = None, *,
                 timeout_s: float = 10.0, connections: int = 64) -> None:
        self.url = validate_url(url, "consul").rstrip("/")
        if not isinstance(prefix, str) or not prefix.endswith("/") or prefix.startswith("/"):
            raise ConfigError("prefix", f"a KV prefix must end with '/' and not start with one, got {prefix!r}")
        self.prefix = prefix
        self.timeout_s = timeout_s
        if not isinstance(connections, int) or connections < 1:
            raise ConfigError("connections", f"must be an integer ≥ 1, got {connections!r}")
        self.token = token
        headers = {"X-Consul-Token": token} if token else {}
        # One keep-alive pool for every non-blocking request. A participant's process passes
        # connections=1 and shares this pool with its session client (``http_session``): one
        # connection carries its reads, renewals and acks, serialised (no blocking query ever
        # goes on it, so a renewal waits behind a round trip, never behind a long-poll:
        # DESIGN §5 "The push path").
        self.connections = connections
        self._session = aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=connections))
        # Blocking queries (a replica's steady-state traffic) go over a leaner client, never
        # over the pool above.
        self._poll = LongPollClient(self.url, headers)
        self._path = urlsplit(self.url).path
        self.bytes_received = 0
        self.requests = 0

    # ---- HTTP ----------------------------------------------------------------

    def _kv(self, key: str) -> URL:
        # Each segment quoted on its own and the URL marked encoded: neither yarl nor
        # Consul may re-read a segment (no dot-segment folding, no '%2F' becoming '/').
        return URL(f"{self.url}/v1/kv/{quote_key(self.prefix + key)}", encoded=True)

    async def _call(self, method: str, url: str | URL, *, params: dict[str, str] | None = None,
                    data: bytes | None = None, timeout_s: float | None = None,
                    ok: tuple[int, ...] = (200,)) -> tuple[int, Any, bytes]:
        timeout = aiohttp.ClientTimeout(total=timeout_s or self.timeout_s)
        if self._session.closed:
            raise BackendError(f"consul {method} {url}: this ConsulConsensus is closed")
        try:
            async with self._session.request(method, url, params=params, data=data, timeout=timeout) as resp:
                body = await resp.read()
                reached(self.url)
                self.requests += 1
                self.bytes_received += len(body) + 17 + sum(len(k) + len(v) + 4 for k, v in resp.raw_headers)
                if resp.status not in ok:
                    raise BackendError(f"consul {method} {url}: HTTP {resp.status}: {body[:200]!r}")
                return resp.status, resp.headers, body
        except BackendError:
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
            raise (unreachable(self.url, f"{method} {url}", exc)
                   or BackendError(f"consul {method} {url}: {type(exc).__name__}: {exc}")) from exc

    @property
    def http_session(self) -> aiohttp.ClientSession:
        """The pool of non-blocking requests, for a ``ConsulHTTP`` to share (same token)."""
        return self._session

    def drop_idle_watches(self) -> None:
        """Close the long-poll client's idle connections (a replica that stops blocking:
        its push stream is up, so its reads are non-blocking and go over the pool)."""
        self._poll.close_idle()

    @staticmethod
    def _index(headers: Any) -> int:
        raw = headers.get("X-Consul-Index") or headers.get("x-consul-index") or "0"
        try:
            return int(raw)
        except ValueError as exc:
            raise BackendError(f"bad X-Consul-Index {raw!r}") from exc

    def _entries(self, body: bytes) -> list[Versioned]:
        try:
            rows = json.loads(body) if body else []
            return [Versioned(r["Key"][len(self.prefix):], base64.b64decode(r["Value"] or b""), int(r["ModifyIndex"]))
                    for r in rows]
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendError(f"consul answered an unreadable KV listing: {exc}") from exc

    # ---- the seam ----------------------------------------------------------

    async def head(self, key: str) -> Versioned | None:
        status, _, body = await self._call("GET", self._kv(key), ok=(200, 404))
        if status == 404:
            return None
        found = self._entries(body)
        return found[0] if found else None

    async def compare_and_set(self, key: str, expected_seqno: int, new: bytes) -> int | None:
        return await self.txn([put(key, new, expected_seqno)])

    async def txn(self, ops: Sequence[TxnOp]) -> int | None:
        if len(ops) > _TXN_MAX_OPS:
            raise ConfigError("ops", f"a transaction takes at most {_TXN_MAX_OPS} operations, got {len(ops)}")
        payload = json.dumps([{"KV": self._op(op)} for op in ops]).encode()
        status, _, body = await self._call("PUT", f"{self.url}/v1/txn", data=payload, ok=(200, 409))
        if status == 409:
            return None  # a condition failed: nothing was written
        try:
            results = json.loads(body).get("Results") or []
            indexes = [int(r["KV"]["ModifyIndex"]) for r in results if r.get("KV")]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BackendError(f"consul answered an unreadable txn result: {exc}") from exc
        return max(indexes, default=0)

    def _op(self, op: TxnOp) -> dict[str, Any]:
        key = check_store_key(self.prefix + op.key)
        if op.kind == PUT:
            assert op.value is not None
            out: dict[str, Any] = {"Key": key, "Value": base64.b64encode(op.value).decode()}
            if op.expected is None:
                out["Verb"] = "set"
            else:
                out.update(Verb="cas", Index=op.expected)
            return out
        if op.kind == DELETE_TREE:
            return {"Verb": "delete-tree", "Key": key}
        if op.kind == DELETE:
            if op.expected is None:
                return {"Verb": "delete", "Key": key}
            if op.expected == 0:
                return {"Verb": "check-not-exists", "Key": key}
            return {"Verb": "delete-cas", "Key": key, "Index": op.expected}
        assert op.kind == CHECK and op.expected is not None
        if op.expected == 0:
            return {"Verb": "check-not-exists", "Key": key}
        return {"Verb": "check-index", "Key": key, "Index": op.expected}

    async def scan(self, key: str, from_seqno: int = 0, limit: int | None = None) -> list[Versioned]:
        # The log is kept short, so one recursive read of it is cheap; filter here.
        items, _ = await self.read_prefix(key)
        found = sorted((v for v in items if v.seqno >= from_seqno), key=lambda v: (v.seqno, v.key))
        return found if limit is None else found[:limit]

    async def truncate(self, key: str, seqno: int) -> int:
        items, _ = await self.read_prefix(key) if key else ([], 0)
        check_truncate(key, seqno, items)
        doomed = [v for v in items if v.seqno < seqno]
        deleted = 0
        for i in range(0, len(doomed), _TXN_MAX_OPS):
            # delete-cas: an entry rewritten meanwhile is newer than the cut; keep it.
            chunk = [TxnOp(DELETE, v.key, None, v.seqno) for v in doomed[i:i + _TXN_MAX_OPS]]
            if await self.txn(chunk) is not None:
                deleted += len(chunk)
                continue
            for op in chunk:   # one condition failed, so none was applied: one by one, counting
                if await self.txn([op]) is not None:
                    deleted += 1
        return deleted

    async def list_keys(self, prefix: str) -> list[str]:
        status, _, body = await self._call("GET", self._kv(prefix), params={"keys": ""}, ok=(200, 404))
        if status == 404:
            return []
        try:
            return sorted(k[len(self.prefix):] for k in json.loads(body))
        except (ValueError, TypeError) as exc:
            raise BackendError(f"consul answered an unreadable key list: {exc}") from exc

    async def read_prefix(self, prefix: str) -> tuple[list[Versioned], int]:
        status, headers, body = await self._call("GET", self._kv(prefix), params={"recurse": ""}, ok=(200, 404))
        return ([] if status == 404 else self._entries(body)), self._index(headers)

    async def watch(self, key: str, index: int, wait_s: float) -> tuple[Versioned | None, int]:
        if index <= 0:
            # Non-blocking: over the pool (one connection in a participant's process), never
            # holding it longer than a round trip.
            status, headers, body = await self._call("GET", self._kv(key), params={"raw": ""}, ok=(200, 404))
            got = self._index(headers)
            return (Versioned(key, body, got) if status == 200 else None), got
        target = f"{self._path}/v1/kv/{quote_key(self.prefix + key)}?raw&index={index}&wait={max(1, int(wait_s * 1000))}ms"
        if self._session.closed:
            raise BackendError(f"consul GET {target}: this ConsulConsensus is closed")
        # Consul adds up to wait/16 of jitter; leave room for it and a slow answer.
        resp = await self._poll.get(target, wait_s * 1.1 + self.timeout_s)
        self.requests += 1
        self.bytes_received += resp.wire_bytes
        if resp.status not in (200, 404):
            raise BackendError(f"consul GET {target}: HTTP {resp.status}: {resp.body[:200]!r}")
        got = self._index(resp.headers)
        return (Versioned(key, resp.body, got) if resp.status == 200 else None), got

    async def close(self) -> None:
        await self._poll.close()
        if not self._session.closed:
            await self._session.close()


async def open_consul(url: str, prefix: str = "epochgate/", token: str | None = None,
                      wait_s: float = 5.0) -> tuple[ConsulConsensus, ConsensusStore, Replica]:
    """Build the Consul trio for a sidecar or controller: ``(consensus, store, replica)``.

    The replica is not started (``await replica.start()``); close the consensus
    with ``await consensus.close()`` when done.
    """
    consensus = ConsulConsensus(url, prefix, token)
    return consensus, ConsensusStore(consensus), Replica(consensus, wait_s=wait_s)
