"""epochgate's gate library: the placement table, its migration state machine,
the stores that hold it, and the write gate.

Implementation lives in private modules; this package re-exports the public
names (``__all__`` is checked by a test). Each name is imported on first use
(PEP 562): ``import gate`` costs only what is used, so an embedded-store sidecar
never loads aiohttp, py-consul or requests (~20 MiB resident, issue 20). The
``TYPE_CHECKING`` imports are what type checkers see; ``_LAZY`` is what runs;
tests/test_lazy_imports.py checks that they and ``__all__`` name the same things.
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

# gate's hot modules may run compiled (Cython) or as plain Python: decide which before any of
# them is imported (see _build: forced pure build, stale extension guard)
from . import _build

_build.install()

if _typing.TYPE_CHECKING:
    from ._admission import FAIL_CLOSED, fail_closed_admit, fail_closed_reject
    from ._admit import AdmitClient, Admitter, LocalAdmitter, SyncAdmitClient
    from ._app_participant import AppParticipant, make_participant, open_participant
    from ._aiohttp import aiohttp_middleware
    from ._blocking import next_blocking_index
    from ._build import capi_ready
    from ._build import describe as describe_build
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
        ConsulUnreachable,
        EpochgateError,
        GateUnavailable,
        MigrationError,
        MisdirectedWrite,
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
    from ._reachability import connect_failure, failure_level
    from ._inflight import InflightTracker
    from ._machine import Op, step
    from ._mover_auth import MOVER_TOKEN_ENV, MOVER_TOKEN_HEADER, MoverAuth, mover_token_from_env, provision_mover_token, read_mover_token
    from ._participant import Participant
    from ._push_hub import PushHub
    from ._push_link import PushLink
    from ._placement_file import PlacementConfig, load_placement_file, parse_placement, validate_url
    from ._problem import (
        PROBLEM_CONTENT_TYPE,
        PROBLEM_TYPE_PREFIX,
        ProblemDocument,
        is_stale_epoch_problem,
        misdirected_problem,
        problem_document,
        unstamped_problem,
    )
    from ._backoff import Backoff
    from ._replica import Replica
    from ._kv import KVEntry
    from ._sessions import ConsulHTTP, SessionLost
    from ._slots import FILTER_HEADER, Slot, SlotKey, filter_text, key_hash, parse_slot, resolve_slot, slot_filter, slot_name, tiling_problem
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

# private module -> the public names it provides, space-separated ("module.attr": "public"
# for a name re-exported under another name)
_LAZY = {
    "_admission": "FAIL_CLOSED fail_closed_admit fail_closed_reject",
    "_admit": "AdmitClient Admitter LocalAdmitter SyncAdmitClient",
    "_app_participant": "AppParticipant make_participant open_participant",
    "_aiohttp": "aiohttp_middleware",
    "_blocking": "next_blocking_index",
    "_build.describe": "describe_build",
    "_build.capi_ready": "capi_ready",
    "_asgi": "AsgiGateMiddleware",
    "_consensus": "Consensus MemoryConsensus TxnOp Versioned",
    "_ackwatch": "AckReader",
    "_ackwatch.parse_entry": "parse_ack_entry",
    "_consensus_store": "ConsensusStore HistoryEntry",
    "_group_commit": "GroupCommit",
    "_consul_consensus": "ConsulConsensus open_consul",
    "_exceptions": (
        "AlreadyMigrating BackendError ConfigError ConflictError ConsulUnreachable EpochgateError GateUnavailable "
        "MigrationError MisdirectedWrite NoOpMove NotCutover NotDraining NotMigrating PlacementFileError StaleEpoch "
        "UnknownPartition UnstampedWrite"),
    "_fence": "FENCE_HEADER STALE_MOVER_TYPE MoverFence StaleAttempt StaleMover check_fence sqlite_fence",
    "_grpc_interceptor": "grpc_interceptor",
    "_guard": "CommitGuard Stamp commit_point current_guard",
    "_ids": "key_segment",
    "_lease": "Lease",
    "_reachability": "connect_failure failure_level",
    "_inflight": "InflightTracker",
    "_machine": "Op step",
    "_mover_auth": (
        "MOVER_TOKEN_ENV MOVER_TOKEN_HEADER MoverAuth mover_token_from_env provision_mover_token "
        "read_mover_token"),
    "_participant": "Participant",
    "_push_hub": "PushHub",
    "_push_link": "PushLink",
    "_placement_file": "PlacementConfig load_placement_file parse_placement validate_url",
    "_problem": (
        "PROBLEM_CONTENT_TYPE PROBLEM_TYPE_PREFIX ProblemDocument is_stale_epoch_problem misdirected_problem "
        "problem_document unstamped_problem"),
    "_backoff": "Backoff",
    "_replica": "Replica",
    "_kv": "KVEntry",
    "_sessions": "ConsulHTTP SessionLost",
    "_slots": "FILTER_HEADER Slot SlotKey filter_text key_hash parse_slot resolve_slot slot_filter slot_name tiling_problem",
    "_store": "EmbeddedStore MigrationStore PlacementSource",
    "_table": "PlacementTable",
    "_types": (
        "ADMIT Admit Epoch PartitionId PartitionState Phase Placement PlacementAt Reject RejectReason "
        "WriteAdmission node_name partition_id"),
}
_WHERE: dict[str, tuple[str, str]] = {}
for _key, _names in _LAZY.items():
    _mod, _, _attr = _key.partition(".")
    for _name in _names.split():
        _WHERE[_name] = (_mod, _attr or _name)
del _key, _names, _mod, _attr, _name

# the public names: exactly the lazy table's (tests/test_lazy_imports.py checks the typed imports
# above name the same set)
__all__ = sorted(_WHERE)


if not _typing.TYPE_CHECKING:   # hidden from type checkers: a typo'd gate.Name stays an error for them

    def __getattr__(name: str) -> object:
        try:
            module, attr = _WHERE[name]
        except KeyError:
            raise AttributeError(f"module 'gate' has no attribute {name!r}") from None
        value = getattr(_importlib.import_module("." + module, __name__), attr)
        globals()[name] = value   # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(__all__))
