"""The read side of a barrier participant: a ``PlacementSource`` over whichever
replica is current (DESIGN §5).

A participant replaces its replica on every (re)join — a fresh read, never the
old view — so a ``WriteGate`` or hold built on the participant must not keep a
reference to one replica. ``CurrentReplica`` delegates every read to
``self.replica`` (the old, stopped replica keeps answering reads until the new
one has read: reads continue from the last applied table) and fails writes
closed unless ``writable()``.
"""

from __future__ import annotations

from typing import Any, Callable

from ._admission import fail_closed_admit
from ._exceptions import UnknownPartition
from ._types import Epoch, PartitionState, PlacementAt, WriteAdmission


def read_at(replica: Any) -> float:
    """The replica's ``last_read`` (−inf before its first read)."""
    last = replica.last_read
    return float("-inf") if last is None else last


class CurrentReplica:
    """Mixin: ``PlacementSource`` over ``self.replica``; needs ``writable()`` and ``_subs``."""

    replica: Any
    _subs: list[Callable[..., None]]

    def writable(self) -> bool:  # pragma: no cover - provided by the participant
        raise NotImplementedError

    def get(self, partition: str) -> PlacementAt | None:
        """``None`` for an unknown partition (or before the first table read)."""
        r = self.replica
        if r is None:
            return None
        at: PlacementAt | None = r.get(partition)
        return at

    lookup = get   # the older name, kept for callers

    def get_or_raise(self, partition: str) -> PlacementAt:
        at = self.get(partition)
        if at is None:
            raise UnknownPartition(f"unknown partition {partition!r}", partition)
        return at

    def admit_write(self, partition: str, epoch: int) -> WriteAdmission:
        """The replica's answer, but fail closed unless ``writable()``."""
        r = self.replica
        return fail_closed_admit(r, partition, epoch, r is not None and self.writable())

    def state(self, partition: str) -> tuple[PartitionState, Epoch] | None:
        r = self.replica
        return None if r is None else r.state(partition)

    def current_epoch(self) -> Epoch:
        r = self.replica
        return Epoch.ZERO if r is None else r.current_epoch()

    def partitions(self) -> dict[str, tuple[PartitionState, Epoch]]:
        r = self.replica
        return {} if r is None else r.partitions()

    @property
    def last_read(self) -> float:
        r = self.replica
        return float("-inf") if r is None else read_at(r)

    @property
    def nodes(self) -> dict[str, str]:
        r = self.replica
        return {} if r is None else dict(getattr(r, "nodes", {}) or {})

    def subscribe(self, fn: Callable[..., None]) -> Callable[[], None]:
        """Changes of whichever replica is current (re-attached across rejoins)."""
        self._subs.append(fn)
        return lambda: self._subs.remove(fn) if fn in self._subs else None
