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
from ._fence import FENCE_HEADER, STALE_MOVER_TYPE, MoverFence, StaleAttempt, StaleMover, check_fence, sqlite_fence
from ._grpc_interceptor import grpc_interceptor
from ._guard import CommitGuard, Stamp, commit_point, current_guard
from ._machine import Op, step
from ._mover_auth import MOVER_TOKEN_ENV, MOVER_TOKEN_HEADER, MoverAuth, mover_token_from_env
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
    "FENCE_HEADER",
    "GateUnavailable",
    "HistoryEntry",
    "LocalAdmitter",
    "MOVER_TOKEN_ENV",
    "MOVER_TOKEN_HEADER",
    "MemoryConsensus",
    "MigrationError",
    "MigrationStore",
    "MoverAuth",
    "MoverFence",
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
    "STALE_MOVER_TYPE",
    "StaleAttempt",
    "StaleEpoch",
    "StaleMover",
    "Stamp",
    "SyncAdmitClient",
    "TxnOp",
    "UnknownPartition",
    "UnstampedWrite",
    "Versioned",
    "WriteAdmission",
    "aiohttp_middleware",
    "check_fence",
    "commit_point",
    "current_guard",
    "grpc_interceptor",
    "is_stale_epoch_problem",
    "load_placement_file",
    "mover_token_from_env",
    "open_consul",
    "parse_placement",
    "problem_document",
    "sqlite_fence",
    "step",
    "unstamped_problem",
]
