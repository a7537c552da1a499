"""The pre-barrier: find a dead participant *before* writes stop (DESIGN §5, §6).

The cutover barrier waits for every participant listed after the cutover
commit to ack or lose its session. A participant that died (SIGKILL, node
gone) keeps its key until Consul expires its session — up to about 2×TTL —
and if that happens during a cutover, the cutover waits on it while every
write of the partition is held: it hits its deadline and aborts, and held
writes time out.

So while the partition is still *draining* (writes flow to ``from``) the
controller lists ``sidecars/`` and waits until each participant listed has
published an epoch ≥ the draining epoch, or lost its session. Live
participants publish every applied epoch within milliseconds; a dead one
drops out when Consul expires it, and the only cost is a later cutover, not
a client error. ``enter_cutover`` is committed only after that, so the
cutover barrier waits only for participants that answered moments ago.

Nothing of §5's order changes: the cutover barrier still lists *after* its
commit (rule 2) — the pre-barrier only comes in front of it. Its deadline
(default 30 s, above Consul's worst-case expiry of a 10 s session) failing
aborts the job while writes still flow: no client sees it.
"""

from __future__ import annotations

import time
from typing import Awaitable, Callable

from .barrier import Barrier, BarrierResult, BarrierTimeout


class PreBarrierTimeout(BarrierTimeout):
    """Some participants neither acked the draining epoch nor lost their session in time."""

    def __init__(self, result: BarrierResult, deadline_s: float) -> None:
        super().__init__(result)
        self.args = (f"pre-barrier at draining epoch {result.epoch}: no ack from {sorted(result.pending)} "
                     f"within {deadline_s:g}s",)


async def pre_barrier(barrier: Barrier, epoch: int, deadline_s: float,
                      between: Callable[[], Awaitable[None]] | None = None, *, slice_s: float = 1.0) -> BarrierResult:
    """List, then wait (in slices of ``slice_s``, calling ``between`` after each to notice
    a lost lock or an abort request) until every participant listed acked ≥ ``epoch`` or
    lost its session; ``PreBarrierTimeout`` after ``deadline_s``."""
    listed, index = await barrier.list()
    end = time.monotonic() + deadline_s
    while True:
        now = time.monotonic()
        try:
            return await barrier.wait(epoch, listed, index, now, max(0.0, min(slice_s, end - now)))
        except BarrierTimeout as exc:
            if time.monotonic() >= end:
                raise PreBarrierTimeout(exc.result, deadline_s) from None
        if between is not None:
            await between()
