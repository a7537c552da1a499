"""epochgate's gate library: the placement table, its migration state machine,
the stores that hold it, and the write gate.

Implementation lives in private modules; this package re-exports the public
names (``__all__`` is checked by a test).
"""

from ._exceptions import (
    AlreadyMigrating,
    BackendError,
    ConfigError,
    ConflictError,
    EpochgateError,
    GateUnavailable,
    MigrationError,
    NoOpMove,
    NotCutover,
    NotDraining,
    NotMigrating,
    PlacementFileError,
    UnknownPartition,
)
from ._machine import Op, step
from ._placement_file import PlacementConfig, load_placement_file, parse_placement
from ._store import EmbeddedStore, MigrationStore, PlacementSource
from ._table import PlacementTable
from ._types import (
    ADMIT,
    Admit,
    Epoch,
    PartitionId,
    PartitionState,
    Phase,
    Placement,
    PlacementAt,
    Reject,
    RejectReason,
    WriteAdmission,
)

__all__ = [
    "ADMIT",
    "Admit",
    "AlreadyMigrating",
    "BackendError",
    "ConfigError",
    "ConflictError",
    "EmbeddedStore",
    "Epoch",
    "EpochgateError",
    "GateUnavailable",
    "MigrationError",
    "MigrationStore",
    "NoOpMove",
    "NotCutover",
    "NotDraining",
    "NotMigrating",
    "Op",
    "PartitionId",
    "PartitionState",
    "Phase",
    "Placement",
    "PlacementAt",
    "PlacementConfig",
    "PlacementFileError",
    "PlacementSource",
    "PlacementTable",
    "Reject",
    "RejectReason",
    "UnknownPartition",
    "WriteAdmission",
    "load_placement_file",
    "parse_placement",
    "step",
]
