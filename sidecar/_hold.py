"""The hold: rejected writes that never reached the application wait here for
their partition's next transition, then are re-resolved and re-admitted
(DESIGN §7). Bounded in count (``max_held``) and in time (``seconds``); when a
bound runs out the client gets the 503 stale-epoch problem after all.

Wake-ups come from the placement source's ``subscribe`` callback, which may run
on another thread (a replica's or the gRPC server's); it is marshalled onto
the loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable

from gate._store import PlacementSource


class Hold:
    """Held requests per partition. A request must offer ``hold_wake()`` and
    ``hold_expired()`` and carry the attributes ``partition``, ``hold_timer``
    and ``held_at``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, source: PlacementSource, *, max_held: int, seconds: float,
                 on_count: Callable[[int], None] | None = None,
                 on_released: Callable[[float], None] | None = None) -> None:
        self.loop = loop
        self.max_held = max_held
        self.seconds = seconds
        self.count = 0
        self._waiters: dict[str, list[Any]] = {}
        self._thread = threading.get_ident()
        self._on_count = on_count
        self._on_released = on_released
        self._unsubscribe = source.subscribe(self._changed)

    def close(self) -> None:
        self._unsubscribe()

    def _changed(self, partition: str, state: object, epoch: int) -> None:
        if partition not in self._waiters:
            return
        if threading.get_ident() == self._thread:
            # Run after the transition's caller returns, never inside it.
            self.loop.call_soon(self._wake, partition)
        else:
            self.loop.call_soon_threadsafe(self._wake, partition)

    def _wake(self, partition: str) -> None:
        for req in self._waiters.pop(partition, ()):
            req.hold_wake()

    def try_hold(self, req: Any) -> bool:
        """Park ``req`` until its partition changes; False when the bound is exhausted."""
        if req.hold_timer is None:
            if self.count >= self.max_held or self.seconds <= 0:
                return False
            self.count += 1
            req.held_at = self.loop.time()
            req.hold_timer = self.loop.call_later(self.seconds, self._expire, req)
            if self._on_count is not None:
                self._on_count(self.count)
        self._waiters.setdefault(req.partition, []).append(req)
        return True

    def _expire(self, req: Any) -> None:
        self._unpark(req)
        req.hold_timer = None
        self._count_down(req)
        req.hold_expired()

    def release(self, req: Any) -> None:
        """``req`` leaves the hold (admitted, refused for another reason, or its client left)."""
        self._unpark(req)
        if req.hold_timer is not None:
            req.hold_timer.cancel()
            req.hold_timer = None
            self._count_down(req)

    def _unpark(self, req: Any) -> None:
        lst = self._waiters.get(req.partition)
        if lst and req in lst:
            lst.remove(req)
            if not lst:
                del self._waiters[req.partition]

    def _count_down(self, req: Any) -> None:
        self.count -= 1
        if self._on_count is not None:
            self._on_count(self.count)
        if self._on_released is not None:
            self._on_released(self.loop.time() - req.held_at)
