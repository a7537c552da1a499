"""The hold: rejected writes that never reached the application wait here for
their partition's next transition — or, when they were refused because the
sidecar fails closed, for writes to be admitted again — then are re-resolved
and re-admitted against the table as it is then (DESIGN §7). Bounded in count
(``max_held``) and in time (``seconds``); when a bound runs out the client gets
the 503 stale-epoch problem after all.

Partition wake-ups come from the placement source's ``subscribe`` callback,
which may run on another thread (a replica's or the gRPC server's); it is
marshalled onto the loop with ``call_soon_threadsafe``.

Fail-closed wake-ups: "writable again" has no event to wait on (the lease is
a clock comparison, the participant's guard flips inside its own run loop), so
while a request is parked because the gate was not writable, a timer re-checks
``writable()`` every ``recheck_s`` and wakes those requests when it is True.
A woken request goes through ``route`` again: fresh ``state``, fresh epoch,
``admit`` — the epoch it was refused at is never reused.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable

from gate import PlacementSource

RECHECK_S = 0.02   # fail-closed waiters see the gate open again within this (cost: one writable() per tick)


class Hold:
    """Held requests per partition (and those waiting for the gate to open). A
    request must offer ``hold_wake()`` and ``hold_expired()`` and carry the
    attributes ``partition``, ``hold_timer`` and ``held_at``.

    ``writable`` is the write gate's ``writable``: a request parked while it is
    False waits for it to turn True, not for a transition. Without it every
    request waits for a transition (the old behaviour)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, source: PlacementSource, *, max_held: int, seconds: float,
                 on_count: Callable[[int], None] | None = None,
                 on_released: Callable[[float], None] | None = None,
                 writable: Callable[[], bool] | None = None, recheck_s: float = RECHECK_S) -> None:
        if not recheck_s > 0:
            raise ValueError(f"recheck_s must be > 0, got {recheck_s!r}")
        self.loop = loop
        self.max_held = max_held
        self.seconds = seconds
        self.count = 0
        self.writable = writable
        self.recheck_s = recheck_s
        self._waiters: dict[str, list[Any]] = {}
        self._closed: dict[Any, None] = {}       # parked while not writable (insertion-ordered set)
        self._timed: dict[Any, asyncio.TimerHandle] = {}  # parked with a retry timer (retry_in)
        self._recheck: asyncio.TimerHandle | None = None
        self._thread = threading.get_ident()
        self._on_count = on_count
        self._on_released = on_released
        self._unsubscribe = source.subscribe(self._changed)
        self.tracer: Any = None  # the request tracer (sidecar/trace) when tracing is on

    def close(self) -> None:
        self._unsubscribe()
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None

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
            timer = self._timed.pop(req, None)
            if timer is not None:
                timer.cancel()
            req.hold_wake()

    def _check_open(self) -> None:
        self._recheck = None
        if not self._closed:
            return
        if self.writable is not None and not self.writable():
            self._recheck = self.loop.call_later(self.recheck_s, self._check_open)
            return
        woken, self._closed = self._closed, {}
        for req in woken:
            timer = self._timed.pop(req, None)
            if timer is not None:
                timer.cancel()
            req.hold_wake()   # re-resolves and re-admits; refused again → parked again

    def try_hold(self, req: Any, retry_in: float | None = None) -> bool:
        """Park ``req`` until its partition changes (or, while the gate is not
        writable, until it is); False when the bound is exhausted.

        ``retry_in`` also wakes it after that many seconds even if nothing
        changes here: the application refused at its commit point while this
        sidecar's table already stands at the request's epoch, i.e. the
        application's own view is behind ours, and no transition of ours will
        ever come to wake it."""
        if req.hold_timer is None:
            if self.count >= self.max_held or self.seconds <= 0:
                return False
            self.count += 1
            req.held_at = self.loop.time()
            req.hold_timer = self.loop.call_later(self.seconds, self._expire, req)
            if self._on_count is not None:
                self._on_count(self.count)
        if self.writable is not None and not self.writable():
            # Refused fail_closed (the gate checks writable() first): a transition would
            # not help; the gate opening does.
            self._closed[req] = None
            if self._recheck is None:
                self._recheck = self.loop.call_later(self.recheck_s, self._check_open)
        else:
            self._waiters.setdefault(req.partition, []).append(req)
        if retry_in is not None:
            self._timed[req] = self.loop.call_later(retry_in, self._retry, req)
        if self.tracer is not None:
            self.tracer.held(req)
        return True

    def _retry(self, req: Any) -> None:
        self._timed.pop(req, None)
        if req not in self._closed and req not in self._waiters.get(req.partition, ()):
            return  # already woken by something else: never route a request twice
        self._unpark(req)
        req.hold_wake()   # re-resolves and re-admits; refused again → parked again

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
        self._closed.pop(req, None)
        timer = self._timed.pop(req, None)
        if timer is not None:
            timer.cancel()
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
