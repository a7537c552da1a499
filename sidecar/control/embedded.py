"""The migration controller on the embedded store (issue 17): one process, no Consul.

A single sidecar on a placement file runs the same ``Controller`` the Consul
fleet runs — the same ``JobRunner``, hooks mover, pause/throttle and dry runs —
over three in-process stand-ins:

* ``MemKV``: the few Consul KV calls the job, operation and control records
  use (get, compare-and-set put, delete, blocking list), in memory, written
  through to the state file (``statefile.py``, ``--state``) so a restarted
  sidecar still has its jobs; the file also records the table's transitions,
  which ``history`` reads (issue 27).
* ``LocalBarrier``: the sidecar is the only participant. The embedded store's
  ``enter_cutover`` already returns after the sidecar applied the cutover and
  let the writes it admitted at older epochs finish (``_fanout.LocalMember``),
  but it gives up waiting after ``--drain-seconds``; the barrier then checks
  the in-flight tracker itself and refuses to pass (the job aborts, back to
  ``from``) rather than copy a delta a write may still land behind.
* ``AlwaysLeader``: one process, so it always holds the lock.

Only with ``--workers 1``: with more workers the parent cannot see their
in-flight writes, so the job calls stay unimplemented there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from gate import KVEntry, StaleAttempt, mover_token_from_env

from .barrier import BarrierResult, BarrierTimeout, Listed
from .controller import Controller
from .jobs import JobRecords
from .mover import HttpHooksMover
from .operator import OperatorService
from .retry import RetryingStore

LOCAL = "local-sidecar"
log = logging.getLogger("epochgate.controller")


class MemKV:
    """An in-memory stand-in for the ``ConsulHTTP`` KV calls (one process)."""

    def __init__(self, state: Any = None) -> None:
        self.data: dict[str, KVEntry] = {}
        self.index = 1
        self.changed = asyncio.Condition()
        self.statefile = state   # a StateFile: loaded from now, written through on every change
        if state is not None:
            rows, index = state.load_kv()
            self.data = {k: KVEntry(k, v, None, mi) for k, v, mi in rows}
            self.index = max([index, 1] + [mi for _, _, mi in rows])

    def _next(self) -> int:
        self.index += 1   # synchronous: no two writes share an index
        return self.index

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def get(self, key: str) -> KVEntry | None:
        return self.data.get(key)

    def _persist(self, keys: list[str]) -> None:
        """Called after a change, before anyone is told of it (the state file's write-through)."""
        if self.statefile is not None:
            self.statefile.save_kv([(k, e.value if (e := self.data.get(k)) else None, e.modify_index if e else 0)
                                for k in keys], self.index)

    async def put(self, key: str, value: bytes, *, cas: int | None = None) -> bool:
        cur = self.data.get(key)
        if cas is not None and (cur.modify_index if cur is not None else 0) != cas:
            return False
        self.data[key] = KVEntry(key, bytes(value), None, self._next())
        self._persist([key])
        await self._notify()
        return True

    async def delete(self, key: str, *, recurse: bool = False) -> None:
        doomed = [k for k in self.data if k == key or (recurse and k.startswith(key))]
        for k in doomed:
            del self.data[k]
        self._next()
        self._persist(doomed)
        await self._notify()

    async def list(self, prefix: str, *, index: int | None = None, wait_s: float = 1.0,
                   consistent: bool = False) -> tuple[list[KVEntry], int]:
        if index:
            async with self.changed:
                try:
                    async with asyncio.timeout(wait_s):  # not wait_for: it can lose a cancel on 3.11
                        await self.changed.wait_for(lambda: self.index > index)
                except asyncio.TimeoutError:
                    pass
        return sorted((e for k, e in self.data.items() if k.startswith(prefix)), key=lambda e: e.key), self.index

    async def close(self) -> None:
        return None


class AlwaysLeader:
    lease_s = 2.0
    key = "local"

    def held(self) -> bool:
        return True

    def check(self) -> None:
        return None

    async def renew(self) -> None:
        return None

    async def release(self) -> None:
        return None


class LocalBarrier:
    """The sidecar itself is the fleet: cutover counts once its older writes finished."""

    def __init__(self, table: Any, tracker: Any) -> None:
        self.table, self.tracker = table, tracker
        self._partition: str | None = None   # the partition whose cutover is being waited for

    async def list(self) -> tuple[dict[str, Listed], int]:
        return {LOCAL: Listed(LOCAL, "", int(self.table.current_epoch()))}, 0

    async def cutover(self, store: Any, partition: str, deadline_s: float, before_commit: Any = None) -> BarrierResult:
        if before_commit is not None:
            await before_commit()
        epoch = await store.enter_cutover(partition)
        committed = time.monotonic()
        self._partition = partition
        try:
            return await self.wait(epoch, (await self.list())[0], 0, committed, deadline_s)
        finally:
            # Only this cutover's wait drains it. A later wait (a reshard's, whose store call drained
            # every source already: ``_fanout.FanoutStore.enter_cutover_all``) must not wait on an
            # unrelated partition still taking writes at an epoch below its own.
            self._partition = None

    async def wait(self, epoch: int, listed: dict, index: int, committed_at: float,
                   deadline_s: float) -> BarrierResult:
        res = BarrierResult(int(epoch), list(listed.values()), committed_at=committed_at)
        partition = self._partition
        remaining = max(0.0, committed_at + deadline_s - time.monotonic())
        if partition is not None and not await self.tracker.wait_drained(partition, int(epoch), remaining):
            res.pending.add(LOCAL)
            raise BarrierTimeout(res)
        res.acked.add(LOCAL)
        res.passed_at, res.passed_wall = time.monotonic(), time.time()
        return res


class _AtEpoch:
    """The embedded store with ``at_epoch`` on the fenced transitions: refused with
    ``StaleAttempt`` unless the partition is still at the attempt's epoch. This is
    a read then an act, not one compare-and-set as on Consul: enough here, where
    one process runs one controller, so no second attempt exists to race with (an
    operator override between the two is the only interleaving, and the state
    machine still refuses an inapplicable transition)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def _check(self, partition: str, at_epoch: int | None) -> None:
        if at_epoch is None:
            return
        st = await self.store.state(partition)
        if st is None or int(st[1]) != int(at_epoch):
            raise StaleAttempt(f"{partition!r} is at epoch {st and int(st[1])}, not {int(at_epoch)}", partition)

    async def _check_all(self, sources: list[str], at_epoch: int | None) -> None:
        for name in sources:
            await self._check(name, at_epoch)

    async def enter_cutover(self, partition: str, *, at_epoch: int | None = None) -> Any:
        await self._check(partition, at_epoch)
        return await self.store.enter_cutover(partition)

    async def complete(self, partition: str, *, at_epoch: int | None = None) -> Any:
        await self._check(partition, at_epoch)
        return await self.store.complete(partition)

    # a reshard's sources (DESIGN §12.6): every one at the attempt's epoch
    async def begin_reshard(self, sources: list[str], into: Any, *, at_epoch: int | None = None) -> Any:
        await self._check_all(sources, at_epoch)
        return await self.store.begin_reshard(sources, into)

    async def enter_cutover_all(self, sources: list[str], *, at_epoch: int | None = None) -> Any:
        await self._check_all(sources, at_epoch)
        return await self.store.enter_cutover_all(sources)

    async def abort_all(self, sources: list[str], *, at_epoch: int | None = None) -> Any:
        await self._check_all(sources, at_epoch)
        return await self.store.abort_all(sources)

    async def complete_reshard(self, sources: list[str], *, at_epoch: int | None = None) -> Any:
        await self._check_all(sources, at_epoch)
        return await self.store.complete_reshard(sources)


class _Audited(_AtEpoch):
    """``_AtEpoch`` plus the history the state file recorded (``history P``, compaction)."""

    def __init__(self, store: Any, state: Any) -> None:
        super().__init__(store)
        self.statefile = state

    async def history(self, partition: str) -> list[Any]:
        return self.statefile.history(partition)   # type: ignore[no-any-return]

    async def compact_history(self, partition: str, before_epoch: int) -> int:
        return self.statefile.compact_history(partition, before_epoch)   # type: ignore[no-any-return]


class EmbeddedController(Controller):
    """``Controller`` over the sidecar's own table: same job service, no Consul."""

    def __init__(self, store: Any, table: Any, tracker: Any, *, extra_nodes: dict[str, str] | None = None,
                 deadline_s: float = 10.0, mover: Any = None, metrics: Any = None, state_path: str | None = None) -> None:
        super().__init__("http://127.0.0.1:1", "epochgate/", deadline_s=deadline_s, extra_nodes=extra_nodes,
                         mover=mover, metrics=metrics, owner="embedded")
        self._embedded = (store, table, tracker)
        self.state_path = state_path   # None: memory only (jobs and history end with the process)
        self.statefile: Any = None
        self._recording: Any = None

    def _open_state(self, table: Any) -> None:
        if self.state_path is None:
            return
        import sqlite3

        from .statefile import RecordingTable, StateFile

        try:
            self.statefile = StateFile(self.state_path)
        except (OSError, sqlite3.Error) as exc:
            log.warning("embedded controller: cannot use the state file %s (%s); jobs and history are kept in "
                        "memory only and lost on restart — give a writable path with --state", self.state_path, exc)
            return
        self._recording = RecordingTable(table, self.statefile, self.owner)

    async def start(self) -> None:
        from .runner import JobRunner

        store, table, tracker = self._embedded
        self._open_state(table)
        self.consul = MemKV(self.statefile)
        self.consensus = None
        # The runner's store interface: bounded retries (none needed in-process) and the
        # at_epoch fence of each attempt's transitions (DESIGN §6), checked here.
        inner = _AtEpoch(store) if self.statefile is None else _Audited(store, self.statefile)
        self.store, self.replica = RetryingStore(inner, retry_s=0.0), table
        self.records = JobRecords(self.consul, self.prefix)   # type: ignore[arg-type]
        self.barrier = LocalBarrier(table, tracker)            # type: ignore[assignment]
        self.leadership = AlwaysLeader()                       # type: ignore[assignment]
        if self.mover is None:
            # No Consul to provision the hooks' credential through: it comes from
            # EPOCHGATE_MOVER_TOKEN, set for this sidecar and its applications alike
            # (DESIGN §6); without it the applications answer the hooks 401.
            self.mover = HttpHooksMover(token=mover_token_from_env())
        self.runner = JobRunner(self.store, self.records, self.barrier, self.mover, self.nodes,  # type: ignore[arg-type]
                                owner=self.owner, check=self.leadership.check, metrics=self.metrics)
        self.ops = OperatorService(self, self.retention)
        self.ops.install(self.runner, self.mover)
        await self.ops.start(compaction=False)   # history (in the state file) is compacted on request only
        self._main = asyncio.create_task(self._run_jobs(), name="embedded-controller")

    async def stop(self) -> None:
        await self._stop_work()
        if self._recording is not None:
            self._recording.close()
        if self.statefile is not None:
            self.statefile.close()
