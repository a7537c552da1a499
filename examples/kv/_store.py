"""The example's SQLite storage: one file per node, ``DIR/kv.sqlite``.

Every change (a client commit or a mover import) takes the next value of one
per-node counter, ``seq``, in the same transaction, and each row remembers the
``seq`` of its last change. So a mover's cursor is exact: an export reads the
rows and the counter in one read transaction (a snapshot, WAL mode), and
"the delta since cursor C" is every row of the partition with ``seq > C``.

There are no client deletes in this API, so the latest value per key is the whole
delta; the only deletes are the mover's clean-ups (DESIGN §12.4), which run on a
partition no client writes to (a resharded slot's source after the flip, a
destination before its bulk import). Writes go through one connection guarded by an ``asyncio.Lock`` (the
commit-point admit is awaited inside the open transaction, so concurrent
client writes are group-committed: one round of admits per transaction);
reads and exports use a second connection and only ever see committed data.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterable

from gate import Slot, StaleMover, key_hash, sqlite_fence

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    partition TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    PRIMARY KEY (partition, key)
);
CREATE INDEX IF NOT EXISTS kv_seq ON kv (partition, seq);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (name, value) VALUES ('seq', 0);
"""

_UPSERT = (
    "INSERT INTO kv (partition, key, value, seq) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (partition, key) DO UPDATE SET value = excluded.value, seq = excluded.seq"
)


class KvStore:
    """The node's key-value table with an exact change cursor."""

    def __init__(self, path: str | Path, *, on_commit: Callable[[list[tuple], float], None] | None = None) -> None:
        """``on_commit(rows, t)`` runs right after each COMMIT of client writes with
        ``(partition, key, value, epoch, seq)`` rows (the app's commit log)."""
        self.path = Path(path)
        self.on_commit = on_commit
        self._w = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._w.execute("PRAGMA journal_mode=WAL")
        self._w.execute("PRAGMA synchronous=NORMAL")
        self._w.executescript(_SCHEMA)
        self._r = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        for conn in (self._w, self._r):   # the hooks' key filter (DESIGN §12.4): the key is the partition key
            conn.create_function("epochgate_hash", 1, key_hash, deterministic=True)
        self.write_lock = asyncio.Lock()
        self._pending: list = []
        self._flusher: asyncio.Future | None = None

    def close(self) -> None:
        self._w.close()
        self._r.close()

    # ---- writes ------------------------------------------------------------

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator["_Txn"]:
        """An open write transaction: the body stages changes and calls
        ``txn.commit()``; leaving without committing (or by an exception) rolls back."""
        async with self.write_lock:
            self._w.execute("BEGIN IMMEDIATE")
            txn = _Txn(self._w)
            try:
                yield txn
            finally:
                if not txn.committed:
                    self._w.execute("ROLLBACK")

    async def put_admitted(self, partition: str, key: str, value: str, guard: Any) -> tuple[int, float]:
        """Commit one client write, admitted by ``guard`` at the commit point.

        Concurrent writes are group-committed: one transaction holds a batch,
        every write's admit is asked inside it (concurrently, right before
        COMMIT), only the admitted ones are applied, then COMMIT. A refused
        write raises the guard's exception (``StaleEpoch``) and is in no
        transaction that commits. Returns (seq, commit time).
        """
        fut: asyncio.Future[tuple[int, float]] = asyncio.get_running_loop().create_future()
        self._pending.append((partition, key, value, guard, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())
        return await fut

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            async with self.write_lock:
                await self._commit_batch(batch)

    async def _commit_batch(self, batch: list) -> None:
        admitted: list = []  # (item, seq)
        try:
            self._w.execute("BEGIN IMMEDIATE")
            try:
                answers = await asyncio.gather(*(g.__aenter__() for _, _, _, g, _ in batch), return_exceptions=True)
                txn = _Txn(self._w)
                for item, answer in zip(batch, answers):
                    if isinstance(answer, BaseException):
                        if not item[4].done():
                            item[4].set_exception(answer)
                    else:
                        admitted.append((item, txn.put(item[0], item[1], item[2])))
                txn.commit()
            except BaseException:
                self._w.execute("ROLLBACK")
                raise
            t = time.time()  # before the guards let an in-process participant ack a cutover
            if self.on_commit is not None and admitted:
                self.on_commit([(p, k, v, g.epoch, seq) for (p, k, v, g, _), seq in admitted], t)
            for item, seq in admitted:
                if not item[4].done():
                    item[4].set_result((seq, t))
        except BaseException as exc:
            for item in batch:
                if not item[4].done():
                    item[4].set_exception(exc) if isinstance(exc, Exception) else item[4].cancel()
            if not isinstance(exc, Exception):
                raise
        finally:
            for item, _ in admitted:
                await item[3].__aexit__(None, None, None)

    async def import_rows(self, partition: str, rows: Iterable[tuple[str, str]], *, fence: int,
                          unfenced: bool = False) -> int:
        """Upsert ``rows`` of a partition in one transaction (the mover's import), fenced:
        ``fence`` is checked against and recorded as the partition's highest mover token
        in the same transaction (``StaleMover`` → nothing applied). ``unfenced`` (tests
        only) records the token but never refuses."""
        async with self.transaction() as txn:
            try:
                sqlite_fence(self._w, partition, fence)
            except StaleMover:
                if not unfenced:
                    raise
            n = 0
            for key, value in rows:
                txn.put(partition, key, value)
                n += 1
            txn.commit()
        return n

    async def cleanup(self, partition: str, *, fence: int, only: Slot | None = None) -> int:
        """Delete the partition's rows on this node (or those ``only`` holds), fenced like an
        import (DESIGN §12.4): ``StaleMover`` → nothing deleted. Idempotent. Returns the count."""
        where, params = _filtered("partition = ?", (partition,), only)
        async with self.transaction() as txn:
            sqlite_fence(self._w, partition, fence)
            n = self._w.execute(f"DELETE FROM kv WHERE {where}", params).rowcount
            txn.commit()
        return n

    # ---- reads -------------------------------------------------------------

    def get(self, partition: str, key: str) -> str | None:
        row = self._r.execute("SELECT value FROM kv WHERE partition = ? AND key = ?", (partition, key)).fetchone()
        return None if row is None else row[0]

    def export(self, partition: str, only: Slot | None = None) -> tuple[int, list[tuple[str, str]]]:
        """(cursor, every key/value of the partition — or of those ``only`` holds) from one snapshot."""
        where, params = _filtered("partition = ?", (partition,), only)
        return self._snapshot(f"SELECT key, value FROM kv WHERE {where} ORDER BY key", params)

    def delta(self, partition: str, since: int, only: Slot | None = None) -> tuple[int, list[tuple[str, str]]]:
        """(cursor, the latest value of every key changed after ``since``) from one snapshot."""
        where, params = _filtered("partition = ? AND seq > ?", (partition, since), only)
        return self._snapshot(f"SELECT key, value FROM kv WHERE {where} ORDER BY seq", params)

    def size(self, partition: str) -> tuple[int, int]:
        """(keys, bytes of the ndjson an export sends: ``{"key": …, "value": …}`` lines, before JSON escaping)."""
        row = self._r.execute("SELECT count(*), coalesce(sum(length(CAST(key AS BLOB)) + length(CAST(value AS BLOB))"
                              " + 25), 0) FROM kv WHERE partition = ?", (partition,)).fetchone()
        return int(row[0]), int(row[1])

    def _snapshot(self, sql: str, params: tuple) -> tuple[int, list[tuple[str, str]]]:
        r = self._r
        r.execute("BEGIN")
        try:
            cursor = r.execute("SELECT value FROM meta WHERE name = 'seq'").fetchone()[0]
            rows = r.execute(sql, params).fetchall()
        finally:
            r.execute("COMMIT")
        return cursor, rows

    def cursor(self) -> int:
        return self._r.execute("SELECT value FROM meta WHERE name = 'seq'").fetchone()[0]


def _filtered(where: str, params: tuple, only: Slot | None) -> tuple[str, tuple]:
    if only is None:
        return where, params
    return f"{where} AND epochgate_hash(key) % ? = ?", params + (only.modulus, only.number)


class _Txn:
    __slots__ = ("_c", "committed", "last_seq")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._c = conn
        self.committed = False
        self.last_seq = 0

    def put(self, partition: str, key: str, value: str) -> int:
        seq = self._c.execute("UPDATE meta SET value = value + 1 WHERE name = 'seq' RETURNING value").fetchone()[0]
        self._c.execute(_UPSERT, (partition, key, value, seq))
        self.last_seq = seq
        return seq

    def commit(self) -> None:
        self._c.execute("COMMIT")
        self.committed = True
