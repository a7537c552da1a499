"""Group commit: many partitions' transitions in one Consul transaction.

Why: every transition appends to one gap-free change log, conditional on
``log/head``'s seqno. Done one at a time, a balancer moving 20 partitions at
once gets one transition per (read + txn) round trip fleet-wide, and the
concurrent ones mostly lose the head's compare-and-set and retry.

Why not shard the log: a participant's ack "applied ≥ E" (DESIGN §5) means
"has applied every transition below E". That needs one total order a replica
follows without gaps; with S independently-sequenced shards the ack would
become a vector of S positions and each replica would hold S blocking
queries. Group commit keeps the one order and the one blocking query.

How: transitions submitted to one ``ConsensusStore`` while a commit is in
flight queue up; the next commit takes up to ``max_batch`` of them (at most
one per partition), steps each through the pure state machine, and writes ONE
transaction: each partition's state (conditional on its seqno), its log entry
and history record (consecutive seqs), the trimmed log entries, and
``log/head`` holding the whole batch (``encode_head``) conditional on the
head's seqno. All of them commit at one raft index, so partitions moved in
one batch share that epoch; each partition's own epochs still strictly
increase, and the log stays gap-free.

States and the head are cached from this store's own commits, so a steady
stream of transitions costs one round trip per batch. A stale cache is safe:
every write is conditional, a lost condition drops the cache and re-reads.
A refusal (``MigrationError``) is only ever given from a state read fresh
from the store, never from the cache.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._consensus import TxnOp, delete_tree, put
from ._exceptions import BackendError, ConflictError, MigrationError
from ._fence import stale_attempt
from ._log_entry import HEAD, HISTORY, PARTITIONS, LogEntry, encode_head, encode_state, log_key
from ._machine import Op, step
from ._types import Epoch, PartitionState

if TYPE_CHECKING:
    from ._consensus_store import ConsensusStore

_TXN_MAX_OPS = 64          # Consul's limit per transaction
# state, log entry and history per transition; the head; and the log trimmed ten
# entries at a time (one delete-tree of a block of ten seqs: at most 2 per batch)
MAX_BATCH = 20
assert 3 * MAX_BATCH + 1 + 2 <= _TXN_MAX_OPS
_CACHE_MAX = 100_000


@dataclass(eq=False, slots=True)
class _Req:
    p: str
    op: Op
    node: str | None
    fut: asyncio.Future[Epoch] = field(repr=False)
    at_epoch: int | None = None     # ConsensusStore's fencing of attempts: see _transition


class GroupCommit:
    """The commit queue of one ``ConsensusStore`` (see the module docstring)."""

    def __init__(self, store: "ConsensusStore", max_batch: int = MAX_BATCH) -> None:
        if not 1 <= max_batch <= MAX_BATCH:
            raise ValueError(f"max_batch must be in 1..{MAX_BATCH}, got {max_batch!r}")
        self.store = store
        store.group = self          # the store routes its transitions through us from now on
        self.max_batch = max_batch
        self._queue: deque[_Req] = deque()
        self._task: asyncio.Task[None] | None = None
        # p -> (seqno, state or None when unreadable/absent); head -> (seqno, last seq)
        self._states: dict[str, tuple[int, PartitionState | None]] = {}
        self._head: tuple[int, int] | None = None
        self.commits = 0        # transactions written
        self.transitions = 0    # transitions committed through them

    async def submit(self, p: str, op: Op, node: str | None, at_epoch: int | None = None) -> Epoch:
        fut: asyncio.Future[Epoch] = asyncio.get_running_loop().create_future()
        self._queue.append(_Req(p, op, node, fut, at_epoch))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="epochgate-group-commit")
        return await fut

    # ---- the queue ---------------------------------------------------------

    async def _drain(self) -> None:
        while self._queue:
            batch: list[_Req] = []
            seen: set[str] = set()
            later: deque[_Req] = deque()
            while self._queue and len(batch) < self.max_batch:
                r = self._queue.popleft()
                if r.fut.done():
                    continue            # the caller was cancelled
                if r.p in seen:
                    later.append(r)     # one transition per partition per commit
                else:
                    seen.add(r.p)
                    batch.append(r)
            later.extend(self._queue)
            self._queue = later
            try:
                await self._commit(batch)
                # Let the callers just answered submit their next transitions, so they
                # join the batch now waiting instead of forming a second one behind it.
                for _ in range(3):
                    await asyncio.sleep(0)
            except BaseException as exc:  # noqa: BLE001 - every waiter must get an answer
                self._forget(batch)
                for r in batch:
                    if not r.fut.done():
                        r.fut.set_exception(exc if isinstance(exc, Exception) else BackendError(repr(exc)))
                if not isinstance(exc, Exception):
                    raise

    async def _commit(self, batch: list[_Req]) -> None:
        store = self.store
        for attempt in range(store.max_attempts):
            live = [r for r in batch if not r.fut.done()]
            if not live:
                return
            fresh = await self._load([r.p for r in live if r.p not in self._states])
            assert self._head is not None
            head_seqno, seq = self._head
            stepped: list[tuple[_Req, int, PartitionState]] = []
            stale_refusal = False
            for r in live:
                seqno, state = self._states[r.p]
                try:
                    if state is None and seqno and r.op is not Op.SET:
                        raise BackendError(f"partitions/{r.p} holds an unreadable value", r.p)
                    # The same fence as the one-by-one path: the CAS below on this
                    # seqno makes "still at at_epoch" atomic with the write.
                    if r.at_epoch is not None and seqno != int(r.at_epoch):
                        raise stale_attempt(r.op.value, r.p, seqno, r.at_epoch)
                    new = step(r.p, state, r.op, r.node)
                except (MigrationError, BackendError) as exc:
                    if r.p in fresh:
                        r.fut.set_exception(exc)
                    else:                       # refused on a cached state: re-read first
                        self._states.pop(r.p, None)
                        stale_refusal = True
                    continue
                stepped.append((r, seqno, new))
            if stale_refusal:
                continue
            if not stepped:
                return
            ops: list[TxnOp] = []
            entries = []
            for r, seqno, new in stepped:
                seq += 1
                entry = LogEntry(seq, partition=r.p, state=new, op=r.op.value, time=store._clock(), actor=store.actor)
                raw = entry.encode()
                entries.append(entry)
                ops += [put(PARTITIONS + r.p, encode_state(new), seqno), put(log_key(seq), raw),
                        put(f"{HISTORY}{r.p}/{seq:016d}", raw)]
                old = seq - store.log_keep   # falls off the end; its block of ten goes once complete
                if old >= 9 and old % 10 == 9:
                    ops.append(delete_tree(log_key(old)[:-1]))
            ops.append(put(HEAD, encode_head(entries), head_seqno))
            index = await store.consensus.txn(ops)
            if index is not None:
                self.commits += 1
                self.transitions += len(stepped)
                self._head = (index, seq)
                if len(self._states) > _CACHE_MAX:
                    self._states.clear()
                for r, _, new in stepped:
                    self._states[r.p] = (index, new)
                    if not r.fut.done():
                        r.fut.set_result(Epoch(index))
                return
            store.conflicts += 1
            self._forget(live)
            await asyncio.sleep(random.uniform(0, 0.002 * min(attempt + 1, 10)))
        raise ConflictError(f"group commit of {len(batch)} transitions: lost {store.max_attempts} "
                            f"compare-and-sets in a row", batch[0].p)

    # ---- the cache ---------------------------------------------------------

    async def _load(self, parts: list[str]) -> set[str]:
        """Read the head (when not cached) and ``parts``; returns the partitions read."""
        c = self.store.consensus
        need_head = self._head is None
        reads: list[Any] = [c.head(PARTITIONS + p) for p in parts]
        if need_head:
            reads.append(c.head(HEAD))
        got = await asyncio.gather(*reads)
        if need_head:
            head = got.pop()
            seq = await self.store._next_seq(head) - 1
            self._head = (head.seqno if head is not None else 0, seq)
        for p, cur in zip(parts, got):
            if cur is None:
                self._states[p] = (0, None)
                continue
            try:
                self._states[p] = (cur.seqno, self.store._current(p, cur, Op.SET))
            except BackendError:
                self._states[p] = (cur.seqno, None)
        return set(parts)

    def _forget(self, reqs: list[_Req]) -> None:
        self._head = None
        for r in reqs:
            self._states.pop(r.p, None)
