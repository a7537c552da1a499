"""The participant's ack (DESIGN §5): publishing the applied epoch under the session.

On applying a transition into CUTOVER at epoch E the participant waits until
no write of that partition admitted at an epoch < E is in flight
(``tracker.wait_drained``), then publishes an epoch ≥ E. Transitions no
barrier waits for are coalesced (``_coalesce``).

A mixin of ``Participant`` (``gate/_participant.py``, where the attributes are
set and ``_on_change`` records what to ack).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Protocol

from ._exceptions import BackendError
from ._reachability import failure_level
from ._types import Epoch

log = logging.getLogger("epochgate.participant")


class Tracker(Protocol):
    async def wait_drained(self, partition: str, below_epoch: int, timeout: float | None = None) -> bool: ...


class ParticipantAck:
    """The ack loop of a ``Participant``."""

    id: str
    key: str
    ack_every_s: float
    tracker: Tracker | None
    replica: Any
    session: str | None
    _consul: Any
    _wake: asyncio.Event | None
    _seen: Epoch
    _published: Epoch
    _draining_seen: Epoch
    _pending_since: float | None
    _cutovers: dict[str, Epoch]
    _consul_published: Epoch
    _link: Any
    session_lost: Callable[[str], None]

    def _link_up(self) -> bool:
        return self._link is not None and self._link.up

    async def _ack_loop(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            target = self._seen
            urgent = self._published == 0      # the first publish after a join
            if self._published < self._draining_seen <= target:
                urgent = True                  # a pre-barrier waits for this one
            for p, e in sorted(self._cutovers.items(), key=lambda kv: kv[1]):
                if e <= target:
                    await self._drain(p, e)
                    urgent = True              # a barrier waits for this one
                    if self._cutovers.get(p) == e:
                        del self._cutovers[p]
            if self._link_up():
                urgent = True                  # a stream ack is no raft write: nothing to coalesce
            elif self._consul_published < self._published:
                await self._publish(self._published)   # the stream went down: the fallback key catches up
            if target > self._published and not urgent and await self._coalesce():
                continue                       # changed again meanwhile: look at it first
            if target > self._published:
                await self._publish(target)

    async def _coalesce(self) -> bool:
        """A transition no barrier waits for (not a cutover) is published ``ack_every_s``
        after the first unpublished one, with whatever came meanwhile — or at once with
        the next cutover. An ack is a raft write: publishing every transition made each
        one cost N writes fleet-wide (issue 19). True when woken by a new change."""
        assert self._wake is not None
        loop = asyncio.get_running_loop()   # loop time: a throttle, not a safety clock
        if self._pending_since is None:
            self._pending_since = loop.time()
        remaining = self._pending_since + self.ack_every_s - loop.time()
        if remaining <= 0:
            return False
        try:
            async with asyncio.timeout(remaining):  # not wait_for: see gate/_longpoll.py
                await self._wake.wait()
        except asyncio.TimeoutError:
            return False
        return True

    async def _drain(self, partition: str, epoch: Epoch) -> None:
        """Wait for writes of ``partition`` admitted below ``epoch`` — while the
        partition is still in that cutover (once it moved on, no barrier waits for it)."""
        if self.tracker is None:
            return
        while not await self.tracker.wait_drained(partition, epoch, timeout=0.5):
            st = self.replica.state(partition) if self.replica is not None else None
            if st is None or st[1] != epoch:
                return

    async def _publish(self, epoch: Epoch) -> None:
        """Ack ``epoch`` (applied and drained): on the push stream when it is up and the
        epoch arrived by push, else (also) in ``sidecars/<id>`` under the session."""
        link = self._link
        if link is not None and link.ack(epoch) and getattr(self.replica, "pushed_epoch", 0) >= epoch:
            self._published = max(self._published, epoch)
            self._pending_since = None
            return
        # Consul as well when the epoch came from the replica's own read, not a push: the
        # stream is not delivering (a frozen controller's half-open stream looks "up"), so
        # the barrier may be reading this participant's key.
        try:
            ok = await self._consul.acquire(self.key, str(int(epoch)).encode(), self.session)
        except BackendError as exc:
            log.log(failure_level(exc, logging.INFO), "participant %s: publish failed: %s", self.id, exc)
            await asyncio.sleep(0.05)
            assert self._wake is not None
            self._wake.set()   # try again
            return
        if not ok:
            self.session_lost("publish refused")
            return
        self._published = max(self._published, epoch)
        self._consul_published = epoch
        self._pending_since = None
