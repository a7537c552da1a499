"""``ConsensusStore``: the MigrationStore over a Consensus (DESIGN §4.2).

Key layout (relative to the Consensus's own prefix, ``epochgate/`` on Consul):

    partitions/<p>          current state {"phase","from","to"}; seqno = partition epoch
    log/head                the newest change-log entry (what replicas block on)
    log/e/<seq:016d>        the change log, one entry per transition, kept short
    history/<p>/<seq:016d>  the audit trail of p (epoch, op, phase, from, to, time, actor)
    nodes/<node>            a node's upstream URL

A transition reads ``partitions/<p>`` and ``log/head``, runs the pure
``step``, and commits ONE transaction: the new state (conditional on the
partition's seqno), the new head (conditional on the head's seqno), the log
entry, the history record, and the deletion of the log entry that fell off the
end. Consul stamps all of them with one raft index — that index is the
partition's epoch. A lost condition means someone else moved first: re-read
and step again, a bounded number of times, so of two controllers racing on one
partition exactly one wins and the other gets the state machine's refusal.

The head condition serialises every transition of the table. That is what
makes the log gap-free (``seq`` counts up by one), so a replica can tell it
missed an entry; a controller makes a handful of transitions a second, far
below what one Consul leader commits.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable

from ._consensus import Consensus, TxnOp, Versioned, delete, put
from ._exceptions import BackendError, ConfigError, ConflictError, UnknownPartition
from ._fence import stale_attempt
from ._log_entry import (  # re-exported: tests and older importers name this module
    HEAD as HEAD,
    HISTORY as HISTORY,
    LOG as LOG,
    NODES as NODES,
    PARTITIONS as PARTITIONS,
    REMOVED_BY as REMOVED_BY,
    LogEntry as LogEntry,
    decode_head as decode_head,
    decode_state as decode_state,
    encode_head as encode_head,
    encode_state as encode_state,
    log_key as log_key,
    seq_of as seq_of,
)
from ._machine import Op, step
from ._placement_file import validate_url
from ._reshard_txn import reshard_txn
from ._types import Epoch, PartitionState, node_name, partition_id


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One audited transition of a partition. ``epoch`` is the commit index."""

    epoch: Epoch
    op: str
    phase: str
    source: str
    target: str | None
    time: float
    actor: str
    seq: int

    def to_dict(self) -> dict[str, Any]:
        """The audit record as operators read it (``from``/``to`` as in DESIGN §4)."""
        return {"epoch": int(self.epoch), "op": self.op, "phase": self.phase, "from": self.source,
                "to": self.target, "time": self.time, "actor": self.actor}


def default_actor() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class ConsensusStore:
    """``MigrationStore`` over any ``Consensus`` (Consul in a fleet, memory in-process).

    ``log_keep`` bounds the change log; ``max_attempts`` bounds the CAS retries
    before ``ConflictError``. ``actor`` is recorded in history (default host:pid).
    """

    def __init__(self, consensus: Consensus, *, actor: str | None = None, log_keep: int = 256,
                 max_attempts: int = 32, clock: Callable[[], float] = time.time) -> None:
        if not isinstance(log_keep, int) or not 1 <= log_keep <= 100_000:
            raise ConfigError("log_keep", f"must be an int in 1..100000, got {log_keep!r}")
        if not isinstance(max_attempts, int) or max_attempts < 1:
            raise ConfigError("max_attempts", f"must be a positive int, got {max_attempts!r}")
        self.consensus = consensus
        self.actor = actor or default_actor()
        self.log_keep = log_keep
        self.max_attempts = max_attempts
        self._clock = clock
        self.conflicts = 0  # lost compare-and-sets (retried)
        # Set by GroupCommit(store) (gate/_group_commit.py): concurrent transitions
        # of this store then share transactions instead of serialising on
        # log/head one by one. Attached from outside so this module does not
        # import the one that builds on it.
        self.group: Any = None

    # ---- transitions -------------------------------------------------------

    async def set(self, partition: str, node: str) -> Epoch:
        return await self._transition(partition_id(partition), Op.SET, node_name(node))

    # ``at_epoch``: apply only while the partition is still at that epoch — checked in the
    # same compare-and-set, so a paused controller cannot move a newer attempt along
    # (``StaleAttempt``; DESIGN §6 "Fencing").

    async def begin(self, partition: str, target: str, *, at_epoch: int | None = None) -> Epoch:
        return await self._transition(self._known_id(partition), Op.BEGIN, node_name(target, "target"), at_epoch)

    async def enter_cutover(self, partition: str, *, at_epoch: int | None = None) -> Epoch:
        return await self._transition(self._known_id(partition), Op.ENTER_CUTOVER, at_epoch=at_epoch)

    async def complete(self, partition: str, *, at_epoch: int | None = None) -> Epoch:
        return await self._transition(self._known_id(partition), Op.COMPLETE, at_epoch=at_epoch)

    async def abort(self, partition: str, *, at_epoch: int | None = None) -> Epoch:
        return await self._transition(self._known_id(partition), Op.ABORT, at_epoch=at_epoch)

    # Resharding (DESIGN §12.2): every source in one transaction, at one epoch (gate/_reshard_txn.py).

    async def begin_reshard(self, sources: list[str], into: Any, *, at_epoch: int | None = None) -> Epoch:
        return await reshard_txn(self, sources, Op.BEGIN_RESHARD, tuple(into), at_epoch)

    async def enter_cutover_all(self, sources: list[str], *, at_epoch: int | None = None) -> Epoch:
        return await reshard_txn(self, sources, Op.ENTER_CUTOVER, None, at_epoch)

    async def abort_all(self, sources: list[str], *, at_epoch: int | None = None) -> Epoch:
        return await reshard_txn(self, sources, Op.ABORT, None, at_epoch)

    async def complete_reshard(self, sources: list[str], *, at_epoch: int | None = None) -> Epoch:
        return await reshard_txn(self, sources, Op.COMPLETE_RESHARD, None, at_epoch)

    @staticmethod
    def _known_id(partition: str) -> str:
        # An id that could never have been stored is simply unknown (same answer as the table).
        try:
            return partition_id(partition)
        except ConfigError as exc:
            raise UnknownPartition(f"unknown partition {partition!r}", str(partition)) from exc

    async def _transition(self, p: str, op: Op, node: str | None = None, at_epoch: int | None = None) -> Epoch:
        if self.group is not None:
            epoch: Epoch = await self.group.submit(p, op, node, at_epoch)
            return epoch
        for attempt in range(self.max_attempts):
            cur, head = await asyncio.gather(self.consensus.head(PARTITIONS + p), self.consensus.head(HEAD))
            state = self._current(p, cur, op)
            if at_epoch is not None and (cur is None or cur.seqno != int(at_epoch)):
                raise stale_attempt(op.value, p, cur.seqno if cur else 0, at_epoch)
            new = step(p, state, op, node)  # MigrationError: refused, nothing written
            seq = await self._next_seq(head)
            entry = LogEntry(seq, partition=p, state=new, op=op.value, time=self._clock(), actor=self.actor)
            raw = entry.encode()
            ops = [put(PARTITIONS + p, encode_state(new), cur.seqno if cur else 0),
                   put(HEAD, raw, head.seqno if head else 0),
                   put(log_key(seq), raw),
                   put(f"{HISTORY}{p}/{seq:016d}", raw)]
            ops += self._trim(seq)
            index = await self.consensus.txn(ops)
            if index is not None:
                return Epoch(index)
            self.conflicts += 1
            await asyncio.sleep(random.uniform(0, 0.002 * min(attempt + 1, 10)))
        raise ConflictError(f"{op.value} {p!r}: lost {self.max_attempts} compare-and-sets in a row", p)

    def _trim(self, seq: int) -> list[TxnOp]:
        # Drop the entry that falls off the end in the same txn: the log stays at log_keep.
        old = seq - self.log_keep
        return [delete(log_key(old))] if old >= 1 else []

    def _current(self, p: str, cur: Versioned | None, op: Op) -> PartitionState | None:
        if cur is None:
            return None
        try:
            return decode_state(cur.value)
        except ValueError as exc:
            if op is Op.SET:
                return None  # an operator override may replace a corrupt value
            raise BackendError(f"partitions/{p} holds an unreadable value: {exc}", p) from exc

    async def _next_seq(self, head: Versioned | None) -> int:
        if head is not None:
            try:
                return decode_head(head.value)[-1].seq + 1
            except ValueError:
                pass
        # No (readable) head: continue after the highest entry still in the log.
        seqs = [s for s in map(seq_of, await self.consensus.list_keys(LOG)) if s is not None]
        return max(seqs, default=0) + 1

    # ---- reads -------------------------------------------------------------

    async def state(self, partition: str) -> tuple[PartitionState, Epoch] | None:
        try:
            p = partition_id(partition)
        except ConfigError:
            return None
        cur = await self.consensus.head(PARTITIONS + p)
        if cur is None:
            return None
        return self._current(p, cur, Op.BEGIN), Epoch(cur.seqno)  # type: ignore[return-value]

    async def partitions(self) -> dict[str, tuple[PartitionState, Epoch]]:
        """Every readable partition (unreadable values are left out)."""
        items, _ = await self.consensus.read_prefix(PARTITIONS)
        out: dict[str, tuple[PartitionState, Epoch]] = {}
        for v in items:
            try:
                out[v.key[len(PARTITIONS):]] = (decode_state(v.value), Epoch(v.seqno))
            except ValueError:
                continue
        return out

    async def nodes(self) -> dict[str, str]:
        items, _ = await self.consensus.read_prefix(NODES)
        out: dict[str, str] = {}
        for v in items:
            try:
                out[node_name(v.key[len(NODES):])] = validate_url(v.value.decode(), v.key)
            except (ConfigError, UnicodeDecodeError):
                continue
        return out

    async def set_node(self, name: str, url: str) -> None:
        """Register a node's upstream URL; replicas learn it from the change log."""
        name = node_name(name)
        url = validate_url(url, f"nodes.{name}")
        for attempt in range(self.max_attempts):
            head = await self.consensus.head(HEAD)
            seq = await self._next_seq(head)
            raw = LogEntry(seq, node=name, url=url, time=self._clock(), actor=self.actor).encode()
            ops = [put(NODES + name, url.encode()), put(HEAD, raw, head.seqno if head else 0), put(log_key(seq), raw)]
            if await self.consensus.txn(ops + self._trim(seq)) is not None:
                return
            self.conflicts += 1
            await asyncio.sleep(random.uniform(0, 0.002 * min(attempt + 1, 10)))
        raise ConflictError(f"set_node {name!r}: lost {self.max_attempts} compare-and-sets in a row")

    # ---- audit and compaction ---------------------------------------------

    async def history(self, partition: str) -> list[HistoryEntry]:
        """Every kept transition of ``partition``, oldest first."""
        p = partition_id(partition)
        out = []
        for v in await self.consensus.scan(f"{HISTORY}{p}/"):
            try:
                e = LogEntry.decode(v.value)
            except ValueError:
                continue
            if e.state is None:   # removed by a reshard's flip (DESIGN §12.2)
                out.append(HistoryEntry(Epoch(v.seqno), e.op or "", "removed", "", None, e.time, e.actor, e.seq))
                continue
            out.append(HistoryEntry(Epoch(v.seqno), e.op or "", e.state.phase.value, e.state.source,
                                    e.state.target, e.time, e.actor, e.seq))
        return out

    async def transition_times(self, after_epoch: int) -> list[tuple[int, float]]:
        """(epoch, wall time) of each partition transition the change log still keeps
        after ``after_epoch``, oldest first: how long a participant that applied
        ``after_epoch`` has been behind, in seconds (the dry run's freshness)."""
        out = []
        for v in await self.consensus.scan(LOG, int(after_epoch) + 1):
            if seq_of(v.key) is None:
                continue
            try:
                e = LogEntry.decode(v.value)
            except ValueError:
                continue
            if e.partition is not None:
                out.append((v.seqno, e.time))
        return out

    async def compact_history(self, partition: str, before_epoch: int) -> int:
        """Drop ``partition``'s history older than ``before_epoch``; returns how many."""
        return await self.consensus.truncate(f"{HISTORY}{partition_id(partition)}/", int(before_epoch))

    async def compact_log(self) -> int:
        """Trim the change log to ``log_keep`` entries (transitions already do this
        one entry at a time; this catches up after ``log_keep`` was lowered)."""
        entries = await self.consensus.scan(LOG)
        if len(entries) <= self.log_keep:
            return 0
        return await self.consensus.truncate(LOG, entries[-self.log_keep].seqno)
