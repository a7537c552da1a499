"""The sidecar's write gate: guards + lease, then the table's ``admit_write``.

``admit`` is what the data path calls immediately before forwarding a write
(DESIGN §7). It refuses with ``fail_closed`` when

* a registered guard says no (the barrier participant registers one: no live
  session, not registered yet, or starting over — DESIGN §5 rules 1, 4, 5), or
* the source's last successful table read (``source.last_read``, on the
  Consul replica) is older than the lease: a replica that cannot hear from
  Consul must not admit writes against a table that may have moved (rule 3).
  The replica's blocking queries return at least every ``wait`` seconds even
  when nothing changes, so a quiet but healthy store keeps ``last_read``
  fresh and never trips this.

Otherwise it asks the source and, on ``Admit``, counts the write in flight
until ``done`` is called (the barrier waits on that count).

Compiled, ``WriteGate`` is an extension type (``writegate.pxd``): the exchange calls
``admit``/``done`` as C methods, and the guards/lease test reads C fields. The decision
stays the gate's one ``fail_closed_admit`` and its ``InflightTracker`` (``gate/``), which
the compiled build calls in C through gate's public cimport surface (``gate/capi.pxd``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

from gate import PlacementSource, WriteAdmission, fail_closed_admit

if TYPE_CHECKING:  # (not ``from gate import InflightTracker``: compiled, that name is the type
    import gate      # writegate.pxd cimports through gate/capi.pxd, which an import may not rebind)


class WriteGate:
    """Admission for writes on one sidecar (or one worker)."""

    def __init__(self, source: PlacementSource, tracker: gate.InflightTracker, *, lease_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if tracker is None:  # compiled, a None tracker would be called through a NULL vtable
            raise TypeError("WriteGate needs an InflightTracker, not None")
        self.source = source
        self.tracker = tracker
        self.lease_s = lease_s
        self.clock = clock
        self._guards: list[Callable[[], bool]] = []
        self._has_last_read = hasattr(source, "last_read")
        self._closing = False

    def add_guard(self, fn: Callable[[], bool]) -> Callable[[], None]:
        """Register ``fn() -> bool`` (True = writes may be admitted). Returns a remover."""
        self._guards.append(fn)
        return lambda: self._guards.remove(fn) if fn in self._guards else None

    def lease_ok(self) -> bool:
        """False when the source's last successful read is older than the lease."""
        if self.lease_s is None or not self._has_last_read:
            return True
        last = self.source.last_read  # type: ignore[attr-defined]
        return last is not None and self.clock() - last <= self.lease_s

    def writable(self) -> bool:
        """True when writes may be admitted at all (guards and lease)."""
        for g in self._guards:
            if not g():
                return False
        return self.lease_ok()

    def ready(self) -> bool:
        """For ``/readyz``: writable and not shutting down."""
        return not self._closing and self.writable()

    def close(self) -> None:
        """Shutting down: ``ready()`` turns False at once (writes still gate normally)."""
        self._closing = True

    def admit(self, p: str, epoch: int) -> WriteAdmission:
        """Admit a write of ``p`` resolved at ``epoch``; on Admit it is counted in flight."""
        r = fail_closed_admit(self.source, p, epoch, not (self._guards or self.lease_s is not None) or self.writable())
        if r.admitted:  # (an attribute, not ``bool(r)``: Admit/Reject define __bool__ in Python)
            self.tracker.begin(p, epoch)
        return r

    def done(self, p: str, epoch: int) -> None:
        """The admitted write of ``p`` at ``epoch`` has finished upstream."""
        self.tracker.end(p, epoch)
