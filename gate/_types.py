"""Value types shared by every part of epochgate (DESIGN §2–§3).

Everything here is immutable. The hot path (``get`` + ``admit_write``) returns
objects that were built when the transition happened, so a lookup allocates
nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple, NewType, Union

from ._exceptions import ConfigError
from ._ids import key_segment

PartitionId = NewType("PartitionId", str)
"""A partition's id: a non-empty string."""

Placement = NewType("Placement", str)
"""Where a partition lives: a node name (resolved to an upstream URL elsewhere)."""

_MAX_ID = 256


def partition_id(value: object, field: str = "partition") -> PartitionId:
    """Validate ``value`` as a partition id (one key segment, see ``gate.key_segment``);
    raise ``ConfigError`` naming ``field``."""
    return PartitionId(key_segment(value, field, max_len=_MAX_ID))


def node_name(value: object, field: str = "node") -> Placement:
    """Validate ``value`` as a node name; raise ``ConfigError`` naming ``field``."""
    if not isinstance(value, str) or not value:
        raise ConfigError(field, f"a node name must be a non-empty string, got {value!r}")
    if len(value) > 128 or not all(c.isalnum() or c in "-_." for c in value) or not value.isascii():
        raise ConfigError(field, f"invalid node name {value!r} (letters, digits, '-', '_', '.')")
    return Placement(key_segment(value, field, max_len=128))  # refuses "." and ".."


class Epoch(int):
    """A transition's epoch: a non-negative integer, strictly increasing per table.

    ``Epoch.ZERO`` is the epoch of an empty table. It is an ``int`` so that
    comparing two epochs on the hot path costs what comparing two ints costs.
    """

    __slots__ = ()
    ZERO: "Epoch"

    def __new__(cls, value: int = 0) -> "Epoch":
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"epoch must be an int, got {value!r}")
        if value < 0:
            raise ValueError(f"epoch must be ≥ 0, got {value}")
        return int.__new__(cls, value)

    def __repr__(self) -> str:
        return f"Epoch({int(self)})"

    @classmethod
    def parse(cls, text: str | bytes) -> "Epoch":
        """Parse a header value; raise ``ValueError`` on anything but decimal digits."""
        if isinstance(text, bytes):
            text = text.decode("ascii", "replace")
        text = text.strip()
        if not text.isdigit() or len(text) > 20:
            raise ValueError(f"invalid epoch {text!r}")
        return cls(int(text))


Epoch.ZERO = Epoch(0)


class Phase(str, enum.Enum):
    """A partition's phase. ``value`` is the lower-case label used in metrics."""

    ACTIVE = "active"
    DRAINING = "draining"
    CUTOVER = "cutover"

    def __str__(self) -> str:  # metric labels and log lines
        return self.value


Into = tuple[tuple[str, str], ...]
"""A reshard's destinations: ``((slot, node), …)`` (DESIGN §12.2)."""


@dataclass(frozen=True, slots=True)
class PartitionState:
    """Phase plus placements: ``Active(source)`` or ``Draining/Cutover(source→target)``.

    A slot being resharded (DESIGN §12.2) also carries ``into``, its destinations; its
    ``target`` is the node of the destination that is not on the source's node (a split's
    ``--to``), or the source itself for a reshard that stays on one node."""

    phase: Phase
    source: Placement
    target: Placement | None = None
    into: Into | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.phase, Phase):
            raise TypeError(f"phase must be a Phase, got {self.phase!r}")
        if (self.phase is Phase.ACTIVE) != (self.target is None):
            raise ValueError(f"{self.phase.value} state needs target {'None' if self.phase is Phase.ACTIVE else 'set'}")
        if self.target is not None and self.target == self.source and self.into is None:
            raise ValueError("a migration's target must differ from its source")
        if self.into is not None and (self.phase is Phase.ACTIVE or not self.into):
            raise ValueError("only a draining or cutover slot has reshard destinations, and at least one")

    @classmethod
    def active(cls, node: str) -> "PartitionState":
        return cls(Phase.ACTIVE, Placement(node))

    @classmethod
    def draining(cls, source: str, target: str) -> "PartitionState":
        return cls(Phase.DRAINING, Placement(source), Placement(target))

    @classmethod
    def cutover(cls, source: str, target: str) -> "PartitionState":
        return cls(Phase.CUTOVER, Placement(source), Placement(target))

    @property
    def migrating(self) -> bool:
        return self.phase is not Phase.ACTIVE

    @property
    def read_placement(self) -> Placement:
        """The one placement reads and writes go to: ``source`` until the flip (INV-M4)."""
        return self.source

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"phase": self.phase.value, "from": self.source, "to": self.target}
        if self.into is not None:
            d["into"] = [list(pair) for pair in self.into]
        return d

    @classmethod
    def from_dict(cls, data: object) -> "PartitionState":
        """Inverse of ``to_dict``; raise ``ValueError`` on anything malformed."""
        if not isinstance(data, dict):
            raise ValueError(f"state must be an object, got {type(data).__name__}")
        try:
            phase = Phase(data["phase"])
            source = node_name(data["from"], "from")
            target = data.get("to")
            target = None if target is None else node_name(target, "to")
            raw = data.get("into")
            into = None if raw is None else tuple(
                (partition_id(p, "into"), node_name(n, "into")) for p, n in raw)
            return cls(phase, source, target, into)
        except (KeyError, TypeError, ConfigError) as exc:
            raise ValueError(f"malformed state {data!r}: {exc}") from exc

    def __str__(self) -> str:
        if self.target is None:
            return f"Active({self.source})"
        if self.into is not None:
            dests = ", ".join(f"{p}@{n}" for p, n in self.into)
            return f"{self.phase.value.capitalize()}({self.source}→{dests})"
        return f"{self.phase.value.capitalize()}({self.source}→{self.target})"


class PlacementAt(NamedTuple):
    """The read placement of a partition and the partition's epoch."""

    placement: Placement
    epoch: Epoch


class RejectReason(str, enum.Enum):
    """Why a write was refused. Values are the wire/metric labels."""

    STALE_EPOCH = "stale_epoch"
    CUTOVER = "cutover"
    UNKNOWN_PARTITION = "unknown_partition"
    FAIL_CLOSED = "fail_closed"

    def __str__(self) -> str:
        return self.value


class Admit:
    """The write may commit. A singleton: ``ADMIT``."""

    __slots__ = ()
    admitted = True

    def __repr__(self) -> str:
        return "ADMIT"

    def __bool__(self) -> bool:
        return True


ADMIT = Admit()


@dataclass(frozen=True, slots=True)
class Reject:
    """The write must not commit. ``current`` is the placement now (None if unknown)."""

    reason: RejectReason
    current: PlacementAt | None
    phase: Phase | None = None
    admitted = False  # class attribute (not a field): mirrors Admit.admitted

    def __bool__(self) -> bool:
        return False


WriteAdmission = Union[Admit, Reject]
