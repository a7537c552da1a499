"""A reshard's transitions on the consensus store (DESIGN §12.2, §12.3): every source of the
reshard in one transaction, so they share its epoch; the flip also deletes the sources and
writes the destinations ``Active`` in that transaction.

The transaction holds, for each source, its new state (or its deletion, at the flip),
conditional on the state's index; for each destination at the flip, its state, conditional on
the key not existing; the log head (conditional) as a batch of entries — destinations first,
so a replica applying the batch publishes them before it drops the sources — with a removed
source's entry carrying ``"state": null``; each entry under ``log/e/`` and ``history/<p>/``; the
trim. Of two controllers racing, one transaction commits.
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING, Any

from ._consensus import delete, put
from ._log_entry import HEAD, HISTORY, PARTITIONS, LogEntry, encode_head, encode_state, log_key
from ._exceptions import ConflictError
from ._fence import stale_attempt
from ._machine import Op, step
from ._types import Epoch, PartitionState, partition_id

if TYPE_CHECKING:
    from ._consensus_store import ConsensusStore


async def reshard_txn(store: "ConsensusStore", sources: list[str], op: Op, into: Any = None,
                      at_epoch: int | None = None) -> Epoch:
    """``op`` on every source (or none: the first refusal raises), in one transaction; its epoch."""
    names = [store._known_id(p) for p in sources]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"a reshard needs distinct sources, got {sources!r}")
    for attempt in range(store.max_attempts):
        heads = await asyncio.gather(*(store.consensus.head(PARTITIONS + p) for p in names),
                                     store.consensus.head(HEAD))
        curs, head = list(heads[:-1]), heads[-1]
        if at_epoch is not None:
            for p, cur in zip(names, curs):
                if cur is None or cur.seqno != int(at_epoch):
                    raise stale_attempt(op.value, p, cur.seqno if cur else 0, at_epoch)
        new = [step(p, store._current(p, cur, op), op, into=into) for p, cur in zip(names, curs)]
        now, seq = store._clock(), await store._next_seq(head)
        ops = []
        entries: list[LogEntry] = []
        if op is Op.COMPLETE_RESHARD:
            dests = {st.into for st in new}
            if len(dests) != 1:
                raise ValueError(f"the sources {names} are not one reshard (their destinations differ)")
            for d, node in dests.pop() or ():
                d = partition_id(d)
                state = PartitionState.active(node)
                entries.append(LogEntry(seq + len(entries), partition=d, state=state, op=op.value, time=now,
                                        actor=store.actor))
                ops.append(put(PARTITIONS + d, encode_state(state), 0))   # must not exist yet
            for p, cur in zip(names, curs):
                entries.append(LogEntry(seq + len(entries), partition=p, state=None, op=op.value, time=now,
                                        actor=store.actor))
                ops.append(delete(PARTITIONS + p, cur.seqno if cur else 0))
        else:
            for p, cur, state in zip(names, curs, new):
                entries.append(LogEntry(seq + len(entries), partition=p, state=state, op=op.value, time=now,
                                        actor=store.actor))
                ops.append(put(PARTITIONS + p, encode_state(state), cur.seqno if cur else 0))
        ops.append(put(HEAD, encode_head(entries) if len(entries) > 1 else entries[0].encode(),
                       head.seqno if head else 0))
        for e in entries:
            raw = e.encode()
            ops += [put(log_key(e.seq), raw), put(f"{HISTORY}{e.partition}/{e.seq:016d}", raw)]
        for e in entries:
            ops += store._trim(e.seq)
        index = await store.consensus.txn(ops)
        if index is not None:
            return Epoch(index)
        store.conflicts += 1
        await asyncio.sleep(random.uniform(0, 0.002 * min(attempt + 1, 10)))
    raise ConflictError(f"{op.value} {names!r}: lost {store.max_attempts} compare-and-sets in a row", names[0])
