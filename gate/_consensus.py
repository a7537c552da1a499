"""The Consensus seam (DESIGN §4.2) and its in-memory implementation.

A Consensus holds versioned values under keys. Every write gets a sequence
number (``seqno``) from one counter that only grows, and every key remembers
the seqno of its last write — on Consul that is the raft index, exposed as the
key's ``ModifyIndex``. Writes are conditional on a key's seqno, so a
read → decide → write cycle can never overwrite a change it did not see.

A *log* is a key prefix whose entries are written once each: ``scan`` reads the
entries written at or after a seqno, in seqno order, and ``truncate`` drops the
ones written before one.

``txn`` is the multi-key conditional write a transition needs: the new
partition state, the change-log append and the history record commit in one
step (or none of them does), all stamped with the same seqno.

``MemoryConsensus`` is a supported implementation with the same semantics as
the Consul one (one process, no durability): the in-process fleet, the unit
tests, and anything that wants the consensus store without a Consul agent.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

from ._exceptions import ConfigError
from ._truncate import check_truncate

PUT = "put"
DELETE = "delete"
CHECK = "check"
DELETE_TREE = "delete-tree"   # every key under the prefix ``key``; unconditional


@dataclass(frozen=True, slots=True)
class Versioned:
    """A key's value and the seqno (Consul: ModifyIndex) of its last write."""

    key: str
    value: bytes
    seqno: int


@dataclass(frozen=True, slots=True)
class TxnOp:
    """One operation of a ``txn``.

    ``expected`` is the condition: None = none, 0 = the key must not exist,
    n > 0 = the key's seqno must be n. ``kind`` is ``put``, ``delete`` or
    ``check`` (condition only, no write).
    """

    kind: str
    key: str
    value: bytes | None = None
    expected: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in (PUT, DELETE, CHECK, DELETE_TREE):
            raise ConfigError("kind", f"unknown txn op {self.kind!r}")
        if not isinstance(self.key, str) or not self.key:
            raise ConfigError("key", "a txn op needs a non-empty key")
        if (self.kind == PUT) != isinstance(self.value, bytes):
            raise ConfigError("value", "put needs bytes; delete/check take none")
        if self.expected is not None and (isinstance(self.expected, bool) or self.expected < 0):
            raise ConfigError("expected", f"expected seqno must be ≥ 0, got {self.expected!r}")
        if self.kind == CHECK and self.expected is None:
            raise ConfigError("expected", "a check op needs an expected seqno")
        if self.kind == DELETE_TREE and self.expected is not None:
            raise ConfigError("expected", "a delete-tree op takes no condition")


def put(key: str, value: bytes, expected: int | None = None) -> TxnOp:
    return TxnOp(PUT, key, value, expected)


def delete(key: str, expected: int | None = None) -> TxnOp:
    return TxnOp(DELETE, key, None, expected)


def check(key: str, expected: int) -> TxnOp:
    return TxnOp(CHECK, key, None, expected)


def delete_tree(prefix: str) -> TxnOp:
    return TxnOp(DELETE_TREE, prefix)


@runtime_checkable
class Consensus(Protocol):
    """Versioned keys, conditionally written by seqno. Transport failures raise
    ``BackendError``; a failed condition is a normal answer (None), not an error."""

    async def head(self, key: str) -> Versioned | None:
        """The key's current value and seqno, or None when absent."""

    async def compare_and_set(self, key: str, expected_seqno: int, new: bytes) -> int | None:
        """Write ``new`` if the key's seqno is ``expected_seqno`` (0 = absent).
        Returns the new seqno, or None when the condition failed."""

    async def txn(self, ops: Sequence[TxnOp]) -> int | None:
        """All ops or none: None when any condition failed, else the seqno the
        writes committed at (0 if the txn wrote nothing)."""

    async def scan(self, key: str, from_seqno: int = 0, limit: int | None = None) -> list[Versioned]:
        """Entries under prefix ``key`` written at seqno ≥ ``from_seqno``, oldest first."""

    async def truncate(self, key: str, seqno: int) -> int:
        """Delete entries under prefix ``key`` written before ``seqno``; returns how many were
        deleted. Refuses (``ConfigError``) an empty ``key`` and a ``seqno`` past the newest
        entry under it (``gate._truncate``)."""

    async def list_keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix``, sorted."""

    async def read_prefix(self, prefix: str) -> tuple[list[Versioned], int]:
        """Every entry under ``prefix`` and the store index the read saw."""

    async def watch(self, key: str, index: int, wait_s: float) -> tuple[Versioned | None, int]:
        """Blocking read of one key: returns once the key may have changed past
        ``index`` or after about ``wait_s``. The index returned is the key's
        seqno when it exists (the store's index otherwise); it may go backwards
        when the store was reset — callers must handle that."""

    async def close(self) -> None:
        """Release connections. Idempotent."""


class _Cell:
    __slots__ = ("value", "seqno")

    def __init__(self, value: bytes, seqno: int) -> None:
        self.value = value
        self.seqno = seqno


class MemoryConsensus:
    """In-process Consensus with Consul KV's index semantics.

    One counter stamps every write (a txn's writes share one seqno); deletes
    bump it too, so a watcher of a missing key still sees the store move.
    Single event loop; every method is atomic because none awaits mid-update.
    """

    def __init__(self) -> None:
        self._cells: dict[str, _Cell] = {}
        self._index = 0
        self._changed = asyncio.Event()

    @property
    def index(self) -> int:
        """The store's current index (seqno of the last write)."""
        return self._index

    async def head(self, key: str) -> Versioned | None:
        cell = self._cells.get(key)
        return None if cell is None else Versioned(key, cell.value, cell.seqno)

    async def compare_and_set(self, key: str, expected_seqno: int, new: bytes) -> int | None:
        return await self.txn([put(key, new, expected_seqno)])

    async def txn(self, ops: Sequence[TxnOp]) -> int | None:
        for op in ops:
            if op.expected is None:
                continue
            cell = self._cells.get(op.key)
            have = 0 if cell is None else cell.seqno
            if have != op.expected:
                return None
        writes = [op for op in ops if op.kind != CHECK]
        if not writes:
            return 0
        self._index += 1
        seqno = self._index
        for op in writes:
            if op.kind == PUT:
                assert op.value is not None
                self._cells[op.key] = _Cell(op.value, seqno)
            elif op.kind == DELETE_TREE:
                for k in [k for k in self._cells if k.startswith(op.key)]:
                    del self._cells[k]
            else:
                self._cells.pop(op.key, None)
        self._wake()
        return seqno

    async def scan(self, key: str, from_seqno: int = 0, limit: int | None = None) -> list[Versioned]:
        found = sorted((c.seqno, k) for k, c in self._cells.items() if k.startswith(key) and c.seqno >= from_seqno)
        if limit is not None:
            found = found[:limit]
        return [Versioned(k, self._cells[k].value, s) for s, k in found]

    async def truncate(self, key: str, seqno: int) -> int:
        check_truncate(key, seqno, [Versioned(k, c.value, c.seqno) for k, c in self._cells.items()
                                    if key and k.startswith(key)])
        doomed = [k for k, c in self._cells.items() if k.startswith(key) and c.seqno < seqno]
        if doomed:
            await self.txn([delete(k) for k in doomed])
        return len(doomed)

    async def list_keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self._cells if k.startswith(prefix))

    async def read_prefix(self, prefix: str) -> tuple[list[Versioned], int]:
        items = [Versioned(k, c.value, c.seqno) for k, c in sorted(self._cells.items()) if k.startswith(prefix)]
        return items, max(self._index, 1)

    async def watch(self, key: str, index: int, wait_s: float) -> tuple[Versioned | None, int]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, wait_s)
        while True:
            cell = self._cells.get(key)
            now_index = cell.seqno if cell is not None else max(self._index, 1)
            remaining = deadline - loop.time()
            # Like Consul: block while the index has not moved past ``index``
            # (so an index that went backwards shows only when the wait ends).
            if now_index > index or remaining <= 0:
                return (None if cell is None else Versioned(key, cell.value, cell.seqno)), now_index
            event = self._changed
            try:
                async with asyncio.timeout(remaining):  # not wait_for: see gate/_longpoll.py
                    await event.wait()
            except asyncio.TimeoutError:
                pass

    async def close(self) -> None:
        self._wake()

    def _wake(self) -> None:
        # Swap in a fresh event so waiters that wake re-check and wait on the new one.
        event, self._changed = self._changed, asyncio.Event()
        event.set()
