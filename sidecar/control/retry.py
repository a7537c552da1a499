"""A store outage is absorbed, not reported (DESIGN §3: ``BackendError`` is retryable).

During a Consul leader election every KV call fails for a few seconds
(``rpc error getting client``, ``No cluster leader``). ``RetryingStore`` wraps a
``MigrationStore`` and retries ``BackendError`` with backoff (50 ms doubling to
1 s) for a bounded time — ``retry_s``, 15 s by default, longer than an election
— and only then raises the last error. The controller puts it under its
control API (``Migrate``, ``SetPartition``, …) and its job runner.

A transition whose answer was lost may have committed: its retry is then
refused by the state machine (``AlreadyMigrating``, ``NotDraining``, …). So
after a retried transition is refused, the store is read again and, when it
shows exactly what the transition would have produced, that epoch is the
answer (for ``complete``/``abort`` the state before the first try tells what
that is).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

from gate import BackendError, Epoch, MigrationError, PartitionState, Phase

log = logging.getLogger("epochgate.controller")


async def retry_backend(what: str, fn: Callable[[], Awaitable[Any]], retry_s: float = 15.0,
                        retry_if: Callable[[BaseException], bool] = lambda exc: True) -> Any:
    """``fn()``, retried on ``BackendError`` (for which ``retry_if`` holds) with backoff
    for up to ``retry_s``; then the last error is raised."""
    end = time.monotonic() + retry_s
    delay, warned = 0.05, False
    while True:
        try:
            return await fn()
        except BackendError as exc:
            if not retry_if(exc) or time.monotonic() + delay >= end:
                raise
            if not warned:
                log.warning("%s: %s; retrying for up to %.0fs", what, exc, retry_s)
                warned = True
        await asyncio.sleep(delay)
        delay = min(1.0, delay * 2)


class RetryingStore:
    """``MigrationStore`` with bounded retries of ``BackendError`` (see module doc)."""

    def __init__(self, store: Any, *, retry_s: float = 15.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.store, self.retry_s, self.clock, self.sleep = store, retry_s, clock, sleep

    def __getattr__(self, name: str) -> Any:   # history, compact_history, … pass through
        return getattr(self.store, name)

    async def _retry(self, what: str, fn: Callable[[], Awaitable[Any]], budget_s: float | None,
                     applied: Callable[[PartitionState], bool] | None = None, partition: str | None = None) -> Any:
        budget = self.retry_s if budget_s is None else max(0.0, min(self.retry_s, budget_s))
        end = self.clock() + budget
        delay, retried = 0.05, False
        while True:
            try:
                return await fn()
            except BackendError as exc:
                if self.clock() + delay >= end:
                    raise
                if not retried:
                    log.warning("store %s: %s; retrying for up to %.0fs", what, exc, budget)
                retried = True
            except MigrationError:
                if not retried or applied is None or partition is None:
                    raise
                st = await self.store.state(partition)
                if st is not None and applied(st[0]):
                    return st[1]
                raise
            await self.sleep(delay)
            delay = min(1.0, delay * 2)

    # ---- reads and idempotent writes --------------------------------------------------

    async def state(self, partition: str, *, budget_s: float | None = None) -> tuple[PartitionState, Epoch] | None:
        return await self._retry("state", lambda: self.store.state(partition), budget_s)

    async def partitions(self) -> dict[str, tuple[PartitionState, Epoch]]:
        return await self._retry("partitions", self.store.partitions, None)

    async def nodes(self) -> dict[str, str]:
        return await self._retry("nodes", self.store.nodes, None)

    async def set_node(self, name: str, url: str) -> None:
        return await self._retry("set_node", lambda: self.store.set_node(name, url), None)

    async def set(self, partition: str, node: str) -> Epoch:
        return await self._retry("set", lambda: self.store.set(partition, node), None,
                                 lambda st: st == PartitionState.active(node), partition)

    # ---- transitions --------------------------------------------------------------------

    def _call(self, name: str, *args: Any, at_epoch: int | None) -> Awaitable[Any]:
        fn = getattr(self.store, name)
        return fn(*args) if at_epoch is None else fn(*args, at_epoch=at_epoch)

    async def begin(self, partition: str, target: str, *, budget_s: float | None = None) -> Epoch:
        return await self._retry("begin", lambda: self.store.begin(partition, target), budget_s,
                                 lambda st: st.phase is Phase.DRAINING and st.target == target, partition)

    async def enter_cutover(self, partition: str, *, budget_s: float | None = None,
                            at_epoch: int | None = None) -> Epoch:
        return await self._retry("enter_cutover", lambda: self._call("enter_cutover", partition, at_epoch=at_epoch),
                                 budget_s,
                                 lambda st: st.phase is Phase.CUTOVER, partition)

    async def complete(self, partition: str, *, budget_s: float | None = None, at_epoch: int | None = None) -> Epoch:
        before = await self.state(partition, budget_s=budget_s)
        target = None if before is None or not before[0].migrating else before[0].target
        return await self._retry("complete", lambda: self._call("complete", partition, at_epoch=at_epoch), budget_s,
                                 lambda st: target is not None and st == PartitionState.active(target), partition)

    async def abort(self, partition: str, *, budget_s: float | None = None) -> Epoch:
        before = await self.state(partition, budget_s=budget_s)
        source = None if before is None or not before[0].migrating else before[0].source
        return await self._retry("abort", lambda: self.store.abort(partition), budget_s,
                                 lambda st: source is not None and st == PartitionState.active(source), partition)

    # ---- resharding (DESIGN §12.2): each step one transaction for every source -----------

    async def begin_reshard(self, sources: list[str], into: Any, *, at_epoch: int | None = None) -> Epoch:
        want = tuple(tuple(p) for p in into)
        return await self._retry("begin_reshard",
                                 lambda: self._call("begin_reshard", sources, into, at_epoch=at_epoch), None,
                                 lambda st: st.phase is Phase.DRAINING and st.into == want, sources[0])

    async def enter_cutover_all(self, sources: list[str], *, at_epoch: int | None = None) -> Epoch:
        return await self._retry("enter_cutover_all", lambda: self._call("enter_cutover_all", sources,
                                                                         at_epoch=at_epoch), None,
                                 lambda st: st.phase is Phase.CUTOVER and st.into is not None, sources[0])

    async def abort_all(self, sources: list[str], *, at_epoch: int | None = None) -> Epoch:
        return await self._retry("abort_all", lambda: self._call("abort_all", sources, at_epoch=at_epoch), None,
                                 lambda st: st.phase is Phase.ACTIVE, sources[0])

    async def complete_reshard(self, sources: list[str], *, at_epoch: int | None = None) -> Epoch:
        before = await self.state(sources[0])
        dest = None if before is None or before[0].into is None else before[0].into[0][0]
        return await self._retry("complete_reshard", lambda: self._call("complete_reshard", sources,
                                                                        at_epoch=at_epoch), None,
                                 lambda st: st.phase is Phase.ACTIVE, dest)
