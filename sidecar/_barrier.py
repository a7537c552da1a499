"""The controller's side of the fleet-wide cutover barrier (DESIGN §5 rule 2).

``Barrier.cutover`` fixes the order: commit ``enter_cutover`` at epoch E,
*then* list ``sidecars/`` (a consistent read), then wait until every
participant listed has published an epoch ≥ E under the session it was
listed with, or lost that session (key gone, or held by a newer session of a
restarted process — which registered after the list, so after the commit,
so its own read already shows the cutover). A participant that registers
after the list needs no waiting for the same reason.

Listing first would miss a participant that registers between the list and
the commit while reading the table before the commit: it would admit at the
draining epoch with nobody waiting for it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from gate import BackendError, ConsulHTTP, KVEntry, MigrationStore


@dataclass(frozen=True, slots=True)
class Listed:
    """A participant as the barrier listed it: its session and published epoch."""

    id: str
    session: str
    epoch: int


@dataclass
class BarrierResult:
    epoch: int
    listed: list[Listed]
    acked: set[str] = field(default_factory=set)
    dropped: set[str] = field(default_factory=set)
    pending: set[str] = field(default_factory=set)
    committed_at: float = 0.0   # monotonic, when enter_cutover returned
    passed_at: float = 0.0      # monotonic, when the last listed participant resolved
    passed_wall: float = 0.0    # wall clock of the same moment (for commit-log checks)

    @property
    def passed(self) -> bool:
        return not self.pending

    @property
    def ack_lag(self) -> float:
        return self.passed_at - self.committed_at


class BarrierTimeout(BackendError):
    """Some listed participants neither acked nor lost their session in time."""

    def __init__(self, result: BarrierResult) -> None:
        super().__init__(f"cutover barrier at epoch {result.epoch}: no ack from {sorted(result.pending)}")
        self.result = result


def _parse(entry: KVEntry, dirlen: int) -> Listed | None:
    if entry.session is None:
        return None   # not held by a live session: not a participant
    try:
        epoch = int(entry.value.decode() or 0)
    except ValueError:
        epoch = 0
    return Listed(entry.key[dirlen:], entry.session, epoch)


class Barrier:
    """Enter cutover and wait for the fleet (rule 2). Subclassable for tests."""

    def __init__(self, consul: ConsulHTTP, prefix: str = "epochgate/", *, poll_wait_s: float = 1.0) -> None:
        self.consul = consul
        self.dir = f"{prefix}sidecars/"
        self.poll_wait_s = poll_wait_s

    async def list(self) -> tuple[dict[str, Listed], int]:
        entries, index = await self.consul.list(self.dir, consistent=True)
        out = {}
        for e in entries:
            item = _parse(e, len(self.dir))
            if item is not None:
                out[item.id] = item
        return out, index

    async def cutover(self, store: MigrationStore, partition: str, deadline_s: float,
                      before_commit: Callable[[], Awaitable[None]] | None = None) -> BarrierResult:
        """``enter_cutover``, then list, then wait (raises ``BarrierTimeout``)."""
        if before_commit is not None:
            await before_commit()
        epoch = await store.enter_cutover(partition)
        committed = time.monotonic()
        listed, index = await self.list()
        return await self.wait(epoch, listed, index, committed, deadline_s)

    async def wait(self, epoch: int, listed: dict[str, Listed], index: int, committed_at: float,
                   deadline_s: float) -> BarrierResult:
        """Wait until each of ``listed`` acked ≥ ``epoch`` or lost its session."""
        res = BarrierResult(int(epoch), list(listed.values()), committed_at=committed_at)
        end = committed_at + deadline_s
        current = {k: v for k, v in listed.items()}
        while True:
            res.acked.clear()
            res.dropped.clear()
            res.pending.clear()
            for pid, item in listed.items():
                now = current.get(pid)
                if now is None or now.session != item.session:
                    res.dropped.add(pid)
                elif now.epoch >= epoch:
                    res.acked.add(pid)
                else:
                    res.pending.add(pid)
            if not res.pending:
                res.passed_at = time.monotonic()
                res.passed_wall = time.time()
                return res
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise BarrierTimeout(res)
            entries, index = await self.consul.list(self.dir, index=index,
                                                    wait_s=max(0.01, min(self.poll_wait_s, remaining)))
            current = {}
            for e in entries:
                item = _parse(e, len(self.dir))
                if item is not None:
                    current[item.id] = item
