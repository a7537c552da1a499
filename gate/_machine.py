"""The migration state machine: one pure, table-driven function (DESIGN §3).

Every store — the in-process table, the consensus store, the replica — calls
``step`` and nothing else to decide a transition, so they cannot disagree.

    set(p, a)                any / unknown        → Active(a)
    begin_migration(p, b)    Active(a), b ≠ a     → Draining(a→b)
    enter_cutover(p)         Draining(a→b)        → Cutover(a→b)
    complete_migration(p)    Cutover(a→b)         → Active(b)
    abort_migration(p)       Draining/Cutover     → Active(a)
    begin_reshard(p, into)   Active(a)            → Draining(a→into)      (DESIGN §12.2)
    complete_reshard(p)      Cutover(a→into)      → p removed, its destinations added (by the store)

``enter_cutover`` and ``abort_migration`` serve a reshard as they serve a move;
``complete_migration`` refuses a reshard's cutover and ``complete_reshard`` a move's.
"""

from __future__ import annotations

import enum
from typing import Callable

from ._exceptions import (
    AlreadyMigrating,
    MigrationError,
    NoOpMove,
    NotCutover,
    NotDraining,
    NotMigrating,
    UnknownPartition,
)
from ._types import Into, Phase, PartitionState, Placement


class Op(str, enum.Enum):
    """A transition's name, as recorded in history and the change log."""

    SET = "set"
    BEGIN = "begin_migration"
    ENTER_CUTOVER = "enter_cutover"
    COMPLETE = "complete_migration"
    ABORT = "abort_migration"
    BEGIN_RESHARD = "begin_reshard"
    COMPLETE_RESHARD = "complete_reshard"

    def __str__(self) -> str:
        return self.value


_State = PartitionState | None
_Rule = Callable[[str, _State, "Placement | None"], PartitionState]


def _set(p: str, s: _State, node: Placement | None) -> PartitionState:
    return PartitionState(Phase.ACTIVE, _need(node, p))


def _begin(p: str, s: _State, node: Placement | None) -> PartitionState:
    assert s is not None
    target = _need(node, p)
    if target == s.source:
        raise NoOpMove(f"partition {p!r} already lives on {target}", p)
    return PartitionState(Phase.DRAINING, s.source, target)


def _cutover(p: str, s: _State, node: Placement | None) -> PartitionState:
    assert s is not None and s.target is not None
    return PartitionState(Phase.CUTOVER, s.source, s.target, s.into)


def _complete(p: str, s: _State, node: Placement | None) -> PartitionState:
    assert s is not None and s.target is not None
    if s.into is not None:
        raise NotMigrating(f"cannot complete migration of partition {p!r}: it is being resharded "
                           "(complete_reshard)", p)
    return PartitionState(Phase.ACTIVE, s.target)


def _begin_reshard(p: str, s: _State, into: object) -> PartitionState:
    assert s is not None
    if not isinstance(into, tuple) or not into:
        raise ValueError(f"begin_reshard of {p!r} needs its destinations ((slot, node), …)")
    away = [n for _, n in into if n != s.source]
    return PartitionState(Phase.DRAINING, s.source, Placement(away[0] if away else s.source), into)


def _complete_reshard(p: str, s: _State, node: object) -> PartitionState:
    """Decides only whether the flip applies; the store then removes ``p`` and writes its
    destinations ``Active`` at the same epoch (DESIGN §12.2). Returns ``s`` unchanged."""
    assert s is not None
    if s.into is None:
        raise NotMigrating(f"cannot complete reshard of partition {p!r}: it is being moved, not resharded", p)
    return s


def _abort(p: str, s: _State, node: Placement | None) -> PartitionState:
    assert s is not None
    return PartitionState(Phase.ACTIVE, s.source)


def _refuse(exc: type[MigrationError], why: str) -> _Rule:
    def rule(p: str, s: _State, node: Placement | None) -> PartitionState:
        raise exc(f"{Op_label[exc]} partition {p!r}: {why}", p)

    return rule


Op_label: dict[type[MigrationError], str] = {
    UnknownPartition: "unknown",
    AlreadyMigrating: "cannot begin migration of",
    NotMigrating: "no migration in progress for",
    NotDraining: "cannot enter cutover of",
    NotCutover: "cannot complete migration of",
}
_STATE_ARG = frozenset({Op.BEGIN_RESHARD})

_unknown = _refuse(UnknownPartition, "not in the table")

# (phase or None for an unknown partition, op) → rule. Every pair is present;
# tests/test_machine.py checks the table is total.
TABLE: dict[tuple[Phase | None, Op], _Rule] = {
    (None, Op.SET): _set,
    (None, Op.BEGIN): _unknown,
    (None, Op.ENTER_CUTOVER): _unknown,
    (None, Op.COMPLETE): _unknown,
    (None, Op.ABORT): _unknown,
    (Phase.ACTIVE, Op.SET): _set,
    (Phase.ACTIVE, Op.BEGIN): _begin,
    (Phase.ACTIVE, Op.ENTER_CUTOVER): _refuse(NotMigrating, "it is active"),
    (Phase.ACTIVE, Op.COMPLETE): _refuse(NotMigrating, "it is active"),
    (Phase.ACTIVE, Op.ABORT): _refuse(NotMigrating, "it is active"),
    (Phase.DRAINING, Op.SET): _set,
    (Phase.DRAINING, Op.BEGIN): _refuse(AlreadyMigrating, "it is already draining"),
    (Phase.DRAINING, Op.ENTER_CUTOVER): _cutover,
    (Phase.DRAINING, Op.COMPLETE): _refuse(NotCutover, "it is draining, not in cutover"),
    (Phase.DRAINING, Op.ABORT): _abort,
    (Phase.CUTOVER, Op.SET): _set,
    (Phase.CUTOVER, Op.BEGIN): _refuse(AlreadyMigrating, "it is already in cutover"),
    (Phase.CUTOVER, Op.ENTER_CUTOVER): _refuse(NotDraining, "it is already in cutover"),
    (Phase.CUTOVER, Op.COMPLETE): _complete,
    (Phase.CUTOVER, Op.ABORT): _abort,
    (None, Op.BEGIN_RESHARD): _unknown,
    (None, Op.COMPLETE_RESHARD): _unknown,
    (Phase.ACTIVE, Op.BEGIN_RESHARD): _begin_reshard,
    (Phase.ACTIVE, Op.COMPLETE_RESHARD): _refuse(NotMigrating, "it is active"),
    (Phase.DRAINING, Op.BEGIN_RESHARD): _refuse(AlreadyMigrating, "it is already draining"),
    (Phase.DRAINING, Op.COMPLETE_RESHARD): _refuse(NotCutover, "it is draining, not in cutover"),
    (Phase.CUTOVER, Op.BEGIN_RESHARD): _refuse(AlreadyMigrating, "it is already in cutover"),
    (Phase.CUTOVER, Op.COMPLETE_RESHARD): _complete_reshard,
}


def step(partition: str, state: PartitionState | None, op: Op, node: str | None = None,
         into: Into | None = None) -> PartitionState:
    """Apply ``op`` to ``state`` (None = unknown partition) and return the new state.

    Raises a ``MigrationError`` subclass when the operation does not apply; the
    caller then changes nothing. ``node`` is the target for SET and BEGIN; ``into``
    the destinations for BEGIN_RESHARD.
    """
    phase = None if state is None else state.phase
    op = Op(op)
    arg = into if op in _STATE_ARG else (None if node is None else Placement(node))
    return TABLE[(phase, op)](partition, state, arg)  # type: ignore[arg-type]


def _need(node: Placement | None, p: str) -> Placement:
    if not node:
        raise ValueError(f"operation on {p!r} needs a target node")
    return node
