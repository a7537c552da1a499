"""epochgate's gate library: the placement table, its migration state machine,
the stores that hold it, and the write gate.

Implementation lives in private modules; this package re-exports the public
names (``__all__`` is checked by a test).
"""

from ._admit import AdmitClient, Admitter, LocalAdmitter, SyncAdmitClient
from ._aiohttp import aiohttp_middleware
from ._asgi import AsgiGateMiddleware
from ._consensus import Consensus, MemoryConsensus, TxnOp, Versioned
from ._consensus_store import ConsensusStore, HistoryEntry
from ._consul_consensus import ConsulConsensus, open_consul
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
from ._ids import key_segment
from ._machine import Op, step
from ._participant import Participant
from ._placement_file import PlacementConfig, load_placement_file, parse_placement
from ._problem import ProblemDocument, is_stale_epoch_problem, problem_document, unstamped_problem
from ._replica import Backoff, Replica
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
    "Backoff",
    "CommitGuard",
    "ConfigError",
    "ConflictError",
    "Consensus",
    "ConsensusStore",
    "ConsulConsensus",
    "EmbeddedStore",
    "Epoch",
    "EpochgateError",
    "GateUnavailable",
    "HistoryEntry",
    "LocalAdmitter",
    "MemoryConsensus",
    "MigrationError",
    "MigrationStore",
    "NoOpMove",
    "NotCutover",
    "NotDraining",
    "NotMigrating",
    "Op",
    "Participant",
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
    "Replica",
    "StaleEpoch",
    "Stamp",
    "SyncAdmitClient",
    "TxnOp",
    "UnknownPartition",
    "UnstampedWrite",
    "Versioned",
    "WriteAdmission",
    "aiohttp_middleware",
    "commit_point",
    "current_guard",
    "grpc_interceptor",
    "is_stale_epoch_problem",
    "key_segment",
    "load_placement_file",
    "open_consul",
    "parse_placement",
    "problem_document",
    "step",
    "unstamped_problem",
]
