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

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Awaitable, Callable

from gate import AckReader, BackendError, MigrationStore

if TYPE_CHECKING:   # (importing it loads py-consul and requests: ~6 MiB the embedded controller need not carry)
    from gate import ConsulHTTP, PushHub


@dataclass(frozen=True, slots=True)
class Listed:
    """A participant as the barrier listed it: its session, published epoch and
    its key's ModifyIndex (where the per-key wait starts)."""

    id: str
    session: str
    epoch: int
    index: int = 0


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
    resolved_at: dict[str, float] = field(default_factory=dict)  # monotonic, when each participant acked/dropped

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


class Barrier:
    """Enter cutover and wait for the fleet (rule 2). Subclassable for tests.

    The wait reads O(N) bytes per cutover (gate/_ackwatch.py): the list
    after the commit, then one blocking query per participant still pending.
    ``poll_wait_s`` is kept for callers; the per-key waits run to the deadline.
    ``keep_connections``: keep the per-key connections for the next barrier
    (a long-lived controller; it calls ``close``) instead of closing them when
    each wait ends.
    """

    on_result: Callable[[BarrierResult], None] | None = None  # each wait's result (a job's trace: sidecar/trace/jobs.py)

    def __init__(self, consul: ConsulHTTP, prefix: str = "epochgate/", *, poll_wait_s: float = 1.0,
                 max_watches: int = 1024, keep_connections: bool = False, hub: PushHub | None = None,
                 fallback_after_s: float = 1.0) -> None:
        self.consul = consul
        # The push path (issue 31): a participant with a stream open under the listed session
        # is counted by its stream ack; one without (or still pending ``fallback_after_s`` after
        # the commit, or whose stream closes) by its key in Consul, as before.
        self.hub = hub
        self.fallback_after_s = fallback_after_s
        self.dir = f"{prefix}sidecars/"
        self.poll_wait_s = poll_wait_s
        self.keep_connections = keep_connections
        self.reader = AckReader(consul.url, getattr(consul, "_token", None), self.dir, max_watches=max_watches)

    @property
    def bytes_received(self) -> int:
        """Bytes Consul sent this barrier's reads (status line, headers, body)."""
        return self.reader.bytes_received

    @property
    def wire_bytes(self) -> int:
        """Everything the barrier's reads and the push path moved (Consul answers, pushes, acks)."""
        hub = self.hub
        return self.reader.bytes_received + (0 if hub is None else hub.bytes_sent + hub.bytes_received)

    async def close(self) -> None:
        await self.reader.close()

    async def list(self) -> tuple[dict[str, Listed], int]:
        keys, index = await self.reader.list()
        out = {pid: Listed(pid, k.session, k.epoch, k.index) for pid, k in keys.items()
               if k.session is not None}   # not held by a live session: not a participant
        return out, index

    async def cutover(self, store: MigrationStore, partition: str, deadline_s: float,
                      before_commit: Callable[[], Awaitable[None]] | None = None) -> BarrierResult:
        """``enter_cutover``, then list, then wait (raises ``BarrierTimeout``)."""
        if before_commit is not None:
            await before_commit()
        epoch = await store.enter_cutover(partition)
        committed = time.monotonic()
        try:
            listed, index = await self.list()
        except BaseException:
            if not self.keep_connections:
                await self.reader.close()
            raise
        return await self.wait(epoch, listed, index, committed, deadline_s)

    async def wait(self, epoch: int, listed: dict[str, Listed], index: int, committed_at: float,
                   deadline_s: float) -> BarrierResult:
        """Wait until each of ``listed`` acked ≥ ``epoch`` or lost its session
        (its key gone, or held by another session)."""
        res = BarrierResult(int(epoch), list(listed.values()), committed_at=committed_at)
        end = committed_at + deadline_s
        for pid, item in listed.items():
            (res.acked if item.epoch >= epoch else res.pending).add(pid)
            if item.epoch >= epoch:
                res.resolved_at[pid] = committed_at
        try:
            if res.pending:
                slots = asyncio.Semaphore(self.reader.max_watches)
                watchers = [asyncio.ensure_future(self._follow(listed[pid], int(epoch), end, res, slots))
                            for pid in sorted(res.pending)]
                try:
                    await asyncio.wait(watchers, timeout=max(0.0, end - time.monotonic()))
                finally:
                    for w in watchers:
                        w.cancel()
                    await asyncio.gather(*watchers, return_exceptions=True)
        finally:
            if not self.keep_connections:
                await self.reader.close()
        if self.on_result is not None:  # a job's trace: who acked, who dropped, who was late (sidecar/trace/jobs.py)
            self.on_result(res)
        if res.pending:
            raise BarrierTimeout(res)
        res.passed_at = time.monotonic()
        res.passed_wall = time.time()
        return res

    async def _follow(self, item: Listed, epoch: int, end: float, res: BarrierResult,
                      slots: asyncio.Semaphore) -> None:
        """One pending participant: its stream ack when it has a stream, and (without one,
        or after ``fallback_after_s``) its key in Consul, whichever answers first."""
        hub = self.hub
        if hub is None or not hub.connected(item.id, item.session):
            return await self._follow_key(item, epoch, end, res, slots)
        by_stream = hub.ack_future(item.id, item.session, epoch)
        grace = min(self.fallback_after_s, max(0.0, end - time.monotonic()))
        done, _ = await asyncio.wait({by_stream}, timeout=grace)
        if by_stream.done() and by_stream.result():
            self._resolve(res, item.id, res.acked)
            return
        by_key = asyncio.ensure_future(self._follow_key(item, epoch, end, res, slots))
        try:
            waiting = {by_key} if by_stream.done() else {by_key, by_stream}
            while waiting:
                done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if by_stream in done and by_stream.result():
                    self._resolve(res, item.id, res.acked)
                    return
                if by_key in done:
                    return
        finally:
            by_key.cancel()
            by_stream.cancel()

    @staticmethod
    def _resolve(res: BarrierResult, pid: str, into: set[str]) -> None:
        if pid in res.pending:
            res.pending.discard(pid)
            into.add(pid)
            res.resolved_at[pid] = time.monotonic()

    async def _follow_key(self, item: Listed, epoch: int, end: float, res: BarrierResult,
                          slots: asyncio.Semaphore) -> None:
        """Block on the participant's key until it acks or its session is gone."""
        index = item.index
        async with slots:
            while True:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return
                try:
                    now = await self.reader.watch(item.id, index, remaining)   # no answer per timeout
                except BackendError:
                    await asyncio.sleep(min(0.05, max(0.0, end - time.monotonic())))
                    continue
                if now is None or now.session != item.session:
                    self._resolve(res, item.id, res.dropped)
                    return
                if now.epoch >= epoch:
                    self._resolve(res, item.id, res.acked)
                    return
                # an index that went backwards (store reset) restarts the wait from there
                index = now.index
