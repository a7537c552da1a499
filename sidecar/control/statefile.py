"""The embedded controller's state file (issue 27): jobs and history survive a restart.

A sidecar on the embedded store runs its own migration controller
(``embedded.py``). Its job, operation and control records used to live in
memory and the embedded table kept no transition history, so a restarted
sidecar had forgotten every job and ``history P`` answered "this store keeps
no transition history". They now live in one small SQLite file (``--state``,
default next to the placement file: ``placement.toml`` → ``placement.state.sqlite``;
``:memory:`` keeps the old behaviour):

* ``kv``: the records ``MemKV`` held (key, value, modify index), written
  through on every put and delete, read back at start;
* ``history``: every change of the sidecar's table (the store's transitions,
  operator overrides, placement reloads), recorded from the table's subscription
  as the Consul store records ``history/<p>/`` — epoch, op, phase, from, to,
  time, actor;
* ``meta``: the KV index and the highest table epoch recorded.

Epochs continue across restarts: the table reloaded from the placement file
starts again at epoch 1, so at start the controller raises it past the highest
epoch recorded (one ``set`` per partition in the history, actor "… (restart:
placement file)"); a job's phase epochs and the history then never
name the same epoch twice, and a write stamped before the restart is refused as
stale rather than matched to an unrelated epoch. The placement itself still
comes from the placement file on restart (DESIGN §10): the file records what
happened, it does not replace the file.

One sidecar per file (an exclusive lock: a second process fails to open it). A
file that cannot be opened (a read-only config mount, another sidecar holding
it) leaves the controller on memory, with one warning naming the path and
``--state``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from gate import Epoch, HistoryEntry, PartitionState, Phase

MEMORY = ":memory:"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, modify_index INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS history (
    partition TEXT NOT NULL, epoch INTEGER NOT NULL, op TEXT NOT NULL, phase TEXT NOT NULL,
    source TEXT NOT NULL, target TEXT, time REAL NOT NULL, actor TEXT NOT NULL,
    PRIMARY KEY (partition, epoch));
"""


def default_path(placement: str | None) -> str:
    """``dir/name.toml`` → ``dir/name.state.sqlite``; no placement file: memory."""
    if not placement:
        return MEMORY
    p = Path(placement)
    return str(p.with_name(p.stem + ".state.sqlite"))


def infer_op(before: PartitionState | None, after: PartitionState) -> str:
    """The state machine's op that turns ``before`` into ``after`` (history's ``op``)."""
    if after.phase is Phase.DRAINING:
        return "begin_migration"
    if after.phase is Phase.CUTOVER:
        return "enter_cutover"
    if before is not None and before.phase is not Phase.ACTIVE:
        return "complete_migration" if after.source == before.target else "abort_migration"
    return "set"


class StateFile:
    """One SQLite file; every call is short and synchronous (a handful of rows).

    The table's subscribers run on whichever thread changed it, hence the lock and
    ``check_same_thread=False``."""

    def __init__(self, path: str) -> None:
        self.path = path
        if path != MEMORY:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=0.5)
        self._lock = threading.Lock()
        with self._lock:
            try:
                # One sidecar per file: the records are cached in memory (MemKV), so a second
                # process on the same file would see none of the first's changes. The
                # exclusive lock, taken by the first write and held, makes it fail here.
                self._db.execute("PRAGMA locking_mode=EXCLUSIVE")
                if path != MEMORY:
                    self._db.execute("PRAGMA journal_mode=WAL")   # a write is one fsync'd append
                self._db.executescript(_SCHEMA)
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("COMMIT")
            except sqlite3.Error:
                self._db.close()
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---- meta ------------------------------------------------------------------

    def meta(self, name: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def _set_meta(self, name: str, value: int) -> None:
        self._db.execute("INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET "
                         "value = max(value, excluded.value)", (name, int(value)))

    # ---- the records (MemKV's write-through) -----------------------------------

    def load_kv(self) -> tuple[list[tuple[str, bytes, int]], int]:
        with self._lock:
            rows = self._db.execute("SELECT key, value, modify_index FROM kv").fetchall()
        return [(k, bytes(v), int(i)) for k, v, i in rows], self.meta("index")

    def save_kv(self, rows: list[tuple[str, bytes | None, int]], index: int) -> None:
        """Upsert each (key, value, modify_index); a None value deletes the key. One transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for key, value, mi in rows:
                    if value is None:
                        self._db.execute("DELETE FROM kv WHERE key = ?", (key,))
                    else:
                        self._db.execute("INSERT OR REPLACE INTO kv (key, value, modify_index) VALUES (?, ?, ?)",
                                         (key, value, mi))
                self._set_meta("index", index)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # ---- history ---------------------------------------------------------------

    def record(self, partition: str, before: PartitionState | None, after: PartitionState, epoch: int,
               actor: str, at: float | None = None) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO history VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (partition, int(epoch), infer_op(before, after), after.phase.value, after.source, after.target,
                     time.time() if at is None else at, actor))
                self._set_meta("epoch", epoch)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def history(self, partition: str) -> list[HistoryEntry]:
        with self._lock:
            rows = self._db.execute("SELECT epoch, op, phase, source, target, time, actor FROM history "
                                    "WHERE partition = ? ORDER BY epoch", (partition,)).fetchall()
        return [HistoryEntry(Epoch(e), op, ph, src, tgt, t, actor, e) for e, op, ph, src, tgt, t, actor in rows]

    def compact_history(self, partition: str, before_epoch: int) -> int:
        with self._lock:
            cur = self._db.execute("DELETE FROM history WHERE partition = ? AND epoch < ?",
                                   (partition, int(before_epoch)))
        return int(cur.rowcount)


class RecordingTable:
    """Records every change of ``table`` into ``state`` (its subscription), after raising
    the table's epochs past the highest one recorded before a restart."""

    def __init__(self, table: Any, state: StateFile, actor: str) -> None:
        self.table, self.state, self.actor = table, state, actor
        base = state.meta("epoch")
        if base and int(table.current_epoch()) <= base:
            bumped = {p: (st, base + 1) for p, (st, _) in table.partitions().items()}
            table.replace(bumped, base + 1)
            # Recorded as a "set" by the placement file: the history then shows where each
            # partition went on restart, and its current record is in it like any other.
            for p, (st, e) in bumped.items():
                state.record(p, None, st, e, f"{actor} (restart: placement file)")
        self._last: dict[str, PartitionState] = {p: st for p, (st, _) in table.partitions().items()}
        self._unsub = table.subscribe(self._changed)

    def _changed(self, partition: str, state: PartitionState | None, epoch: int) -> None:
        if state is None:
            self._last.pop(partition, None)
            return
        self.state.record(partition, self._last.get(partition), state, int(epoch), self.actor)
        self._last[partition] = state

    def close(self) -> None:
        self._unsub()
