"""``PlacementTable``: the in-process placement table (DESIGN §3, §4.1).

Writers (transitions) serialise on a lock and replace a partition's entry with
a new immutable ``_Entry``; readers (``get``, ``admit_write``) take no lock: a
single dict lookup returns one entry, and an entry never changes after it is
published, so a reader always decides against one consistent (state, epoch).
That is what makes ``get`` + ``admit_write`` cost about two dict lookups.

The same class is the local copy a replica keeps (``apply`` takes a state and
epoch decided elsewhere and applies it only if newer), so the embedded store
and the Consul replica answer reads with literally the same code.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterable, Mapping

from ._exceptions import UnknownPartition
from ._machine import Op, step
from ._types import (
    ADMIT,
    Epoch,
    Into,
    Phase,
    PartitionState,
    PlacementAt,
    Reject,
    RejectReason,
    WriteAdmission,
    node_name,
    partition_id,
)

Subscriber = Callable[[str, "PartitionState | None", Epoch], None]
"""Called as ``fn(partition, new_state_or_None_if_removed, epoch)`` after a change."""


class _Entry:
    """One partition's published state. Immutable once built; prebuilt answers."""

    __slots__ = ("state", "epoch", "at", "cutover", "reject_stale", "reject_cutover")

    def __init__(self, state: PartitionState, epoch: Epoch) -> None:
        self.state = state
        self.epoch = epoch
        self.at = PlacementAt(state.read_placement, epoch)
        self.cutover = state.phase is Phase.CUTOVER
        self.reject_stale = Reject(RejectReason.STALE_EPOCH, self.at, state.phase)
        self.reject_cutover = Reject(RejectReason.CUTOVER, self.at, state.phase)


_REJECT_UNKNOWN = Reject(RejectReason.UNKNOWN_PARTITION, None, None)


class PlacementTable:
    """Thread-safe in-process placement table with the migration state machine.

    Share it by reference. Transitions return the epoch they stamped.
    """

    def __init__(self, partitions: Mapping[str, str] | None = None) -> None:
        self._entries: dict[str, _Entry] = {}
        self._epoch = Epoch.ZERO
        self._lock = threading.Lock()
        self._subscribers: list[Subscriber] = []
        for p, node in (partitions or {}).items():
            self.set(p, node)

    # ---- reads (lock-free) -------------------------------------------------

    def get(self, partition: str) -> PlacementAt | None:
        """The read placement and the partition epoch; ``None`` for an unknown partition
        (seed 001's ``Option<PlacementAt>``, Python's ``dict.get``)."""
        entry = self._entries.get(partition)
        return None if entry is None else entry.at

    lookup = get   # the older name, kept for callers

    def get_or_raise(self, partition: str) -> PlacementAt:
        """Like ``get``, but ``UnknownPartition`` for an unknown partition."""
        entry = self._entries.get(partition)
        if entry is None:
            raise UnknownPartition(f"unknown partition {partition!r}", partition)
        return entry.at

    def admit_write(self, partition: str, epoch: int) -> WriteAdmission:
        """Admit a write resolved at ``epoch``, or say why not (DESIGN §3)."""
        entry = self._entries.get(partition)
        if entry is None:
            return _REJECT_UNKNOWN
        if entry.cutover:
            return entry.reject_cutover
        if entry.epoch != epoch:
            return entry.reject_stale
        return ADMIT

    def state(self, partition: str) -> tuple[PartitionState, Epoch] | None:
        entry = self._entries.get(partition)
        return None if entry is None else (entry.state, entry.epoch)

    def current_epoch(self) -> Epoch:
        """The epoch the most recent change produced (``Epoch.ZERO`` when empty)."""
        return self._epoch

    def partitions(self) -> dict[str, tuple[PartitionState, Epoch]]:
        """A snapshot of every partition's state and epoch."""
        return {p: (e.state, e.epoch) for p, e in list(self._entries.items())}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, partition: object) -> bool:
        return partition in self._entries

    # ---- transitions -------------------------------------------------------

    def set(self, partition: str, node: str) -> Epoch:
        """Register or override: ``Active(node)`` from any state. Never refused."""
        return self._transition(partition_id(partition), Op.SET, node_name(node))

    def begin_migration(self, partition: str, target: str) -> Epoch:
        return self._transition(partition, Op.BEGIN, node_name(target, "target"))

    def enter_cutover(self, partition: str) -> Epoch:
        return self._transition(partition, Op.ENTER_CUTOVER)

    def complete_migration(self, partition: str) -> Epoch:
        return self._transition(partition, Op.COMPLETE)

    def abort_migration(self, partition: str) -> Epoch:
        return self._transition(partition, Op.ABORT)

    def remove(self, partition: str) -> Epoch:
        """Forget a partition (operator action; its writes then get ``unknown_partition``).

        Deliberately *outside* the state machine (``step``): removal is not a
        migration transition and no store other than this in-process table has
        it. It exists for the embedded store's SIGHUP reload, where a partition
        that left the placement file is forgotten whatever its phase (like
        ``set``, an operator override). It still stamps a fresh epoch and
        notifies subscribers with ``state=None``, so a replica, the worker
        fan-out and ``Watch`` streams see it as a change like any other.
        """
        with self._lock:
            if partition not in self._entries:
                raise UnknownPartition(f"unknown partition {partition!r}", partition)
            del self._entries[partition]
            self._epoch = epoch = Epoch(self._epoch + 1)
        self._notify(partition, None, epoch)
        return epoch

    # ---- resharding (DESIGN §12.2): every source in one step, at one epoch ----

    def begin_reshard(self, sources: Iterable[str], into: Into) -> Epoch:
        """Sources ``Active`` → ``Draining(→into)``; the destinations hold the same keys
        (the caller checks it with ``gate.tiling_problem``)."""
        return self._many(list(sources), Op.BEGIN_RESHARD, tuple((str(p), str(n)) for p, n in into))

    def enter_cutover_all(self, sources: Iterable[str]) -> Epoch:
        return self._many(list(sources), Op.ENTER_CUTOVER)

    def abort_all(self, sources: Iterable[str]) -> Epoch:
        return self._many(list(sources), Op.ABORT)

    def complete_reshard(self, sources: Iterable[str]) -> Epoch:
        """The flip: the sources (all in cutover toward the same destinations) are removed and
        each destination written ``Active`` at one fresh epoch. The destinations are published
        before the sources go, so a lock-free reader walking the slots (§12.1) always finds one."""
        gone = list(sources)
        with self._lock:
            states = [self._state_of(name) for name in gone]
            checked = [step(name, st, Op.COMPLETE_RESHARD) for name, st in zip(gone, states)]
            intos = {st.into for st in checked}
            if len(intos) != 1:
                raise ValueError(f"the sources {gone} are not one reshard (destinations differ)")
            into = intos.pop() or ()
            new = {str(partition_id(name)): PartitionState.active(node_name(n)) for name, n in into}
            epoch = Epoch(self._epoch + 1)
            for name, st in new.items():
                self._entries[name] = _Entry(st, epoch)
            for name in gone:
                if name not in new:
                    del self._entries[name]
            self._epoch = epoch
        for name in gone:
            if name not in new:
                self._notify(name, None, epoch)
        for name, st in new.items():
            self._notify(name, st, epoch)
        return epoch

    def _state_of(self, partition: str) -> PartitionState | None:
        entry = self._entries.get(partition)
        return None if entry is None else entry.state

    def _many(self, sources: list[str], op: Op, into: Into | None = None) -> Epoch:
        """``op`` on every source or on none (the first refusal raises), at one epoch."""
        with self._lock:
            new = [(name, step(name, self._state_of(name), op, into=into)) for name in sources]
            epoch = Epoch(self._epoch + 1)
            for name, st in new:
                self._entries[name] = _Entry(st, epoch)
            self._epoch = epoch
        for name, st in new:
            self._notify(name, st, epoch)
        return epoch

    def _transition(self, partition: str, op: Op, node: str | None = None) -> Epoch:
        with self._lock:
            entry = self._entries.get(partition)
            new = step(partition, None if entry is None else entry.state, op, node)
            epoch = Epoch(self._epoch + 1)
            # Publish the entry before the table epoch: a reader that sees
            # current_epoch() ≥ E is guaranteed to see the entry stamped E.
            self._entries[partition] = _Entry(new, epoch)
            self._epoch = epoch
        self._notify(partition, new, epoch)
        return epoch

    # ---- replica side ------------------------------------------------------

    def apply(self, partition: str, state: PartitionState | None, epoch: int) -> bool:
        """Apply a change decided elsewhere if ``epoch`` is newer than what we hold.

        ``state=None`` removes the partition. Returns True if anything changed.
        The table epoch becomes the highest epoch applied.
        """
        epoch = Epoch(epoch)
        with self._lock:
            entry = self._entries.get(partition)
            if entry is not None and entry.epoch >= epoch:
                return False
            if state is None:
                if entry is None:
                    return False
                del self._entries[partition]
            else:
                self._entries[partition] = _Entry(state, epoch)
            if epoch > self._epoch:
                self._epoch = epoch
        self._notify(partition, state, epoch)
        return True

    def replace(self, snapshot: Mapping[str, tuple[PartitionState, int]], epoch: int | None = None) -> list[str]:
        """Make the table equal to ``snapshot`` (a fresh read of the whole store).

        Partitions whose (state, epoch) differ are replaced, missing ones removed.
        Returns the changed partitions. ``epoch`` raises the table epoch (e.g. the
        store index the snapshot was read at).
        """
        changed: list[tuple[str, PartitionState | None, Epoch]] = []
        with self._lock:
            for p in [p for p in self._entries if p not in snapshot]:
                del self._entries[p]
                changed.append((p, None, self._epoch))
            for p, (state, e) in snapshot.items():
                e = Epoch(e)
                old = self._entries.get(p)
                if old is None or old.epoch != e or old.state != state:
                    self._entries[p] = _Entry(state, e)
                    changed.append((p, state, e))
                if e > self._epoch:
                    self._epoch = e
            if epoch is not None and epoch > self._epoch:
                self._epoch = Epoch(epoch)
        for p, s, e in changed:
            self._notify(p, s, e)
        return [c[0] for c in changed]

    # ---- subscribers -------------------------------------------------------

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Call ``fn`` after every change; returns an unsubscribe function.

        Subscribers run on the thread that made the change, after the lock is
        released; they must be quick (e.g. ``loop.call_soon_threadsafe``).
        """
        self._subscribers.append(fn)
        return lambda: self._subscribers.remove(fn) if fn in self._subscribers else None

    def _notify(self, partition: str, state: PartitionState | None, epoch: Epoch) -> None:
        for fn in list(self._subscribers):
            fn(partition, state, epoch)
