"""epochgate's gate library: the placement table, its migration state machine,
the stores that hold it, and the write gate.

Implementation lives in private modules; this package re-exports the public
names (``__all__`` is checked by a test).
"""

from ._admission import FAIL_CLOSED, fail_closed_admit, fail_closed_reject
from ._admit import AdmitClient, Admitter, LocalAdmitter, SyncAdmitClient
from ._app_participant import AppParticipant, make_participant, open_participant
from ._aiohttp import aiohttp_middleware
from ._blocking import next_blocking_index
from ._asgi import AsgiGateMiddleware
from ._consensus import Consensus, MemoryConsensus, TxnOp, Versioned
from ._ackwatch import AckReader
from ._ackwatch import parse_entry as parse_ack_entry
from ._consensus_store import ConsensusStore, HistoryEntry
from ._group_commit import GroupCommit
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
from ._ids import key_segment
from ._lease import Lease
from ._inflight import InflightTracker
from ._machine import Op, step
from ._mover_auth import MOVER_TOKEN_ENV, MOVER_TOKEN_HEADER, MoverAuth, mover_token_from_env, provision_mover_token, read_mover_token
from ._participant import Participant
from ._placement_file import PlacementConfig, load_placement_file, parse_placement, validate_url
from ._problem import (
    PROBLEM_CONTENT_TYPE,
    PROBLEM_TYPE_PREFIX,
    ProblemDocument,
    is_stale_epoch_problem,
    problem_document,
    unstamped_problem,
)
from ._replica import Backoff, Replica
from ._sessions import ConsulHTTP, KVEntry, SessionLost
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
    node_name,
    partition_id,
)

__all__ = [
    "ADMIT",
    "AckReader",
    "Admit",
    "AdmitClient",
    "Admitter",
    "AlreadyMigrating",
    "AppParticipant",
    "AsgiGateMiddleware",
    "BackendError",
    "Backoff",
    "CommitGuard",
    "ConfigError",
    "ConflictError",
    "Consensus",
    "ConsensusStore",
    "ConsulConsensus",
    "ConsulHTTP",
    "EmbeddedStore",
    "Epoch",
    "EpochgateError",
    "FAIL_CLOSED",
    "FENCE_HEADER",
    "GateUnavailable",
    "GroupCommit",
    "HistoryEntry",
    "InflightTracker",
    "KVEntry",
    "Lease",
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
    "PROBLEM_CONTENT_TYPE",
    "PROBLEM_TYPE_PREFIX",
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
    "SessionLost",
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
    "fail_closed_admit",
    "fail_closed_reject",
    "grpc_interceptor",
    "is_stale_epoch_problem",
    "key_segment",
    "load_placement_file",
    "make_participant",
    "mover_token_from_env",
    "next_blocking_index",
    "node_name",
    "open_consul",
    "open_participant",
    "parse_ack_entry",
    "parse_placement",
    "partition_id",
    "problem_document",
    "provision_mover_token",
    "read_mover_token",
    "sqlite_fence",
    "step",
    "unstamped_problem",
    "validate_url",
]
