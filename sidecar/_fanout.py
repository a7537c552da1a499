"""The embedded store with an in-process barrier (DESIGN §5, §10 "Workers").

On the embedded store a transition is decided by the process that owns the
``PlacementTable``. It *counts* — the ``MigrationStore`` call returns, so a
controller may go on to copy the delta — only after every member that serves
requests has applied it, and, for a transition into cutover, has let the
writes it admitted at older epochs of that partition finish:

* a single sidecar process is its own member (``LocalMember``: waits on its
  ``InflightTracker``);
* with ``--workers N`` the parent owns the table and every worker is a member
  (``_supervisor.WorkerLink``): the parent pushes each change to each worker
  and waits for the worker's ack, which the worker sends after its own drain.

So no worker admits a write against an epoch the store has moved past once
the transition has been acknowledged, and workers never disagree about a
partition for longer than a transition is in flight.

A member that cannot drain within ``--drain-seconds`` does not acknowledge a
cutover (``NotDrained``): ``enter_cutover`` then aborts the migration back to
``from`` and fails with ``CutoverNotAcknowledged`` — a write still in flight
may commit on ``from`` after the delta was copied, so the cutover must not count.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from gate import EmbeddedStore, Epoch, InflightTracker, MigrationError, Phase, PartitionState


log = logging.getLogger("epochgate.sidecar")


class NotDrained(Exception):
    """A member still has writes admitted before the cutover in flight after its drain bound."""


class CutoverNotAcknowledged(MigrationError):
    """A member could not drain: the cutover was aborted back to ``from``."""


class Member(Protocol):
    async def applied(self, partition: str, epoch: int) -> None:
        """Return once this member has applied ``epoch`` (and drained, for a cutover)."""


class LocalMember:
    """The sidecar process itself: the table is shared, so only the drain is waited for."""

    def __init__(self, store: EmbeddedStore, tracker: InflightTracker, drain_s: float) -> None:
        self.store = store
        self.tracker = tracker
        self.drain_s = drain_s

    async def applied(self, partition: str, epoch: int) -> None:
        st = self.store.table.state(partition)
        if st is not None and st[0].phase is Phase.CUTOVER and st[1] == epoch:
            if not await self.tracker.wait_drained(partition, epoch, self.drain_s):
                raise NotDrained(f"writes of {partition} admitted before epoch {epoch} still in flight "
                                 f"after {self.drain_s:g}s")


class FanoutStore(EmbeddedStore):
    """``EmbeddedStore`` whose transitions return after every member applied them."""

    def __init__(self, inner: EmbeddedStore, members: list[Member], timeout_s: float = 60.0) -> None:
        super().__init__(inner.table, {})
        self._nodes = inner._nodes  # share the node map
        self.members = members
        self.timeout_s = timeout_s

    async def _applied(self, partition: str, epoch: Epoch) -> list[str]:
        """Why members did not apply ``epoch`` of ``partition`` in time (empty: every one did)."""
        if not self.members:
            return []
        done, pending = await asyncio.wait([asyncio.ensure_future(m.applied(partition, epoch))
                                            for m in list(self.members)], timeout=self.timeout_s)
        for t in pending:
            t.cancel()
        failed = [str(t.exception()) for t in done if not t.cancelled() and t.exception() is not None]
        if pending:
            failed.append(f"{len(pending)} member(s) did not acknowledge within {self.timeout_s:g}s")
        return failed

    def _in_cutover(self, partition: str, epoch: Epoch) -> bool:
        st = self.table.state(partition)
        return st is not None and st[0].phase is Phase.CUTOVER and st[1] == epoch

    async def _settle(self, partition: str, epoch: Epoch, *, cutover: bool = False) -> Epoch:
        failed = await self._applied(partition, epoch)
        if failed and cutover:
            # Not acknowledged: a write admitted before the cutover may still commit on
            # `from`. Abort (writes resume on `from`), and say so.
            if self._in_cutover(partition, epoch):
                await self._settle(partition, self.table.abort_migration(partition))
            raise CutoverNotAcknowledged(f"cutover of {partition} at epoch {int(epoch)} not acknowledged "
                                         f"({'; '.join(failed)}); migration aborted", partition)
        if failed:
            log.warning("transition of %s at epoch %d: %s", partition, epoch, "; ".join(failed))
        return epoch

    async def _settle_all(self, sources: list[str], epoch: Epoch, *, cutover: bool = False) -> Epoch:
        """``_settle`` for a reshard's sources, which move together at one epoch (DESIGN §12): a
        cutover not acknowledged for any of them is aborted back for all of them."""
        failed = [f for name in sources for f in await self._applied(name, epoch)]
        if failed and cutover:
            if all(self._in_cutover(name, epoch) for name in sources):
                await self._settle_all(sources, self.table.abort_all(sources))
            raise CutoverNotAcknowledged(f"cutover of {', '.join(sources)} at epoch {int(epoch)} not "
                                         f"acknowledged ({'; '.join(failed)}); reshard aborted", sources[0])
        if failed:
            log.warning("transition of %s at epoch %d: %s", ", ".join(sources), epoch, "; ".join(failed))
        return epoch

    async def set(self, partition: str, node: str) -> Epoch:
        return await self._settle(partition, self.table.set(partition, node))

    async def begin(self, partition: str, target: str) -> Epoch:
        return await self._settle(partition, self.table.begin_migration(partition, target))

    async def enter_cutover(self, partition: str) -> Epoch:
        return await self._settle(partition, self.table.enter_cutover(partition), cutover=True)

    async def complete(self, partition: str) -> Epoch:
        return await self._settle(partition, self.table.complete_migration(partition))

    async def abort(self, partition: str) -> Epoch:
        return await self._settle(partition, self.table.abort_migration(partition))

    async def begin_reshard(self, sources: list[str], into: Any) -> Epoch:
        return await self._settle_all(sources, self.table.begin_reshard(sources, into))

    async def enter_cutover_all(self, sources: list[str]) -> Epoch:
        return await self._settle_all(sources, self.table.enter_cutover_all(sources), cutover=True)

    async def abort_all(self, sources: list[str]) -> Epoch:
        return await self._settle_all(sources, self.table.abort_all(sources))

    async def complete_reshard(self, sources: list[str]) -> Epoch:
        return await self._settle_all(sources, self.table.complete_reshard(sources))


def state_to_wire(state: PartitionState | None) -> dict | None:
    return None if state is None else state.to_dict()


def state_from_wire(data: dict | None) -> PartitionState | None:
    return None if data is None else PartitionState.from_dict(data)
