"""epochgate's gate library: the placement table, its migration state machine,
the stores that hold it, and the write gate.

Implementation lives in private modules; this package re-exports the public
names (``__all__`` is checked by a test).
"""

from ._admit import AdmitClient, Admitter, LocalAdmitter, SyncAdmitClient
from ._aiohttp import aiohttp_middleware
from ._asgi import AsgiGateMiddleware
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
    StaleEpoch,
    UnknownPartition,
    UnstampedWrite,
)
from ._grpc_interceptor import grpc_interceptor
from ._guard import CommitGuard, Stamp, commit_point, current_guard
from ._machine import Op, step
from ._placement_file import PlacementConfig, load_placement_file, parse_placement
from ._problem import ProblemDocument, is_stale_epoch_problem, problem_document, unstamped_problem
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
    "AdmitClient",
    "Admitter",
    "AlreadyMigrating",
    "AsgiGateMiddleware",
    "BackendError",
    "CommitGuard",
    "ConfigError",
    "ConflictError",
    "EmbeddedStore",
    "Epoch",
    "EpochgateError",
    "GateUnavailable",
    "LocalAdmitter",
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
    "ProblemDocument",
    "Reject",
    "RejectReason",
    "StaleEpoch",
    "Stamp",
    "SyncAdmitClient",
    "UnknownPartition",
    "UnstampedWrite",
    "WriteAdmission",
    "aiohttp_middleware",
    "commit_point",
    "current_guard",
    "grpc_interceptor",
    "is_stale_epoch_problem",
    "load_placement_file",
    "parse_placement",
    "problem_document",
    "step",
    "unstamped_problem",
]
