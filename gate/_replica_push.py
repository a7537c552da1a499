"""The push path's side of a ``Replica`` (issue 31; gate/_push_link.py feeds it).

A mixin of ``Replica`` (``gate/_replica.py``, where the attributes are set): applying a
pushed ``log/head`` only when it continues the log, and the follow loop's pause while the
push stream is up (a non-blocking read of the store every ``wait_s`` instead of a blocking
query that every commit wakes; ``kick`` ends the pause at once).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Callable

from ._consensus import Consensus, Versioned
from ._consensus_store import decode_head
from ._types import Epoch

if TYPE_CHECKING:
    from ._consensus_store import LogEntry


class ReplicaPush:
    """``on_push``, ``kick`` and the poll pause of a ``Replica``."""

    wait_s: float
    blocked: object
    stale_store: bool
    last_read: float | None
    seq: int
    _log_index: int
    _epoch: Epoch
    _lock: asyncio.Lock
    _kick: asyncio.Event
    _blocking: bool
    consensus: Consensus
    push_up: Callable[[], bool] | None
    pushed_epoch: Epoch
    _apply: Callable[["LogEntry", int], None]

    def _stop_blocking(self) -> None:
        """Entering the push pause: the long-poll connection is not needed while the stream
        is up, so it is closed (a participant then holds one HTTP connection to Consul and
        the stream; DESIGN §5). The next blocking query, after the stream goes down, dials."""
        if self._blocking:
            self._blocking = False
            drop = getattr(self.consensus, "drop_idle_watches", None)
            if drop is not None:
                drop()

    async def _poll_pause(self) -> None:
        try:
            async with asyncio.timeout(self.wait_s):
                await self._kick.wait()
        except asyncio.TimeoutError:
            pass
        self._kick.clear()

    def kick(self) -> None:
        """Read the store now (a push did not continue the log, or the link went down)."""
        self._kick.set()

    async def on_push(self, value: Versioned) -> bool:
        """Apply a pushed ``log/head`` (committed: the pusher read it from the store) when it
        continues the log applied so far. True: applied, or nothing new (a stale or duplicated
        push). False: it does not continue the log (a gap), does not parse, or the replica is
        stopped or stale — nothing applied; the caller makes the replica read the store.
        It never stamps ``last_read``: only the replica's own reads count as fresh (rule 3)."""
        async with self._lock:
            if self.blocked is not None or self.stale_store or self.last_read is None:
                return False
            if value.seqno <= self._log_index:
                return True
            try:
                batch = decode_head(value.value)
            except ValueError:
                return False   # the store read decides, and fails closed there (DESIGN §4.3)
            if batch[-1].seq <= self.seq:
                return True
            if batch[0].seq > self.seq + 1:
                return False   # a gap: never apply past an entry not applied
            for e in batch:    # no await between: an ack sees all of the batch or none
                if e.seq > self.seq:
                    self._apply(e, value.seqno)
            self.pushed_epoch = self._epoch
            return True

