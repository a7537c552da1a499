from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Phase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PHASE_UNSPECIFIED: _ClassVar[Phase]
    PHASE_ACTIVE: _ClassVar[Phase]
    PHASE_DRAINING: _ClassVar[Phase]
    PHASE_CUTOVER: _ClassVar[Phase]
PHASE_UNSPECIFIED: Phase
PHASE_ACTIVE: Phase
PHASE_DRAINING: Phase
PHASE_CUTOVER: Phase

class PartitionState(_message.Message):
    __slots__ = ("partition", "phase", "from_node", "to_node", "epoch")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    partition: str
    phase: Phase
    from_node: str
    to_node: str
    epoch: int
    def __init__(self, partition: _Optional[str] = ..., phase: _Optional[_Union[Phase, str]] = ..., from_node: _Optional[str] = ..., to_node: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...

class AdmitWriteRequest(_message.Message):
    __slots__ = ("partition", "epoch")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    partition: str
    epoch: int
    def __init__(self, partition: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...

class AdmitWriteResponse(_message.Message):
    __slots__ = ("admitted", "reason", "current")
    ADMITTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    admitted: bool
    reason: str
    current: PartitionState
    def __init__(self, admitted: _Optional[bool] = ..., reason: _Optional[str] = ..., current: _Optional[_Union[PartitionState, _Mapping]] = ...) -> None: ...

class ResolveRequest(_message.Message):
    __slots__ = ("partition",)
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    partition: str
    def __init__(self, partition: _Optional[str] = ...) -> None: ...

class ResolveResponse(_message.Message):
    __slots__ = ("partition", "placement", "upstream", "epoch", "phase")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    partition: str
    placement: str
    upstream: str
    epoch: int
    phase: Phase
    def __init__(self, partition: _Optional[str] = ..., placement: _Optional[str] = ..., upstream: _Optional[str] = ..., epoch: _Optional[int] = ..., phase: _Optional[_Union[Phase, str]] = ...) -> None: ...

class PartitionRequest(_message.Message):
    __slots__ = ("partition",)
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    partition: str
    def __init__(self, partition: _Optional[str] = ...) -> None: ...

class BeginRequest(_message.Message):
    __slots__ = ("partition", "to_node")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    partition: str
    to_node: str
    def __init__(self, partition: _Optional[str] = ..., to_node: _Optional[str] = ...) -> None: ...

class TransitionResponse(_message.Message):
    __slots__ = ("state", "epoch")
    STATE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    state: PartitionState
    epoch: int
    def __init__(self, state: _Optional[_Union[PartitionState, _Mapping]] = ..., epoch: _Optional[int] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListResponse(_message.Message):
    __slots__ = ("partitions", "table_epoch")
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    TABLE_EPOCH_FIELD_NUMBER: _ClassVar[int]
    partitions: _containers.RepeatedCompositeFieldContainer[PartitionState]
    table_epoch: int
    def __init__(self, partitions: _Optional[_Iterable[_Union[PartitionState, _Mapping]]] = ..., table_epoch: _Optional[int] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("after_epoch",)
    AFTER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    after_epoch: int
    def __init__(self, after_epoch: _Optional[int] = ...) -> None: ...

class SetPartitionRequest(_message.Message):
    __slots__ = ("partition", "node")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    partition: str
    node: str
    def __init__(self, partition: _Optional[str] = ..., node: _Optional[str] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("name", "url")
    NAME_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    name: str
    url: str
    def __init__(self, name: _Optional[str] = ..., url: _Optional[str] = ...) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    def __init__(self, nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ...) -> None: ...

class SetNodeRequest(_message.Message):
    __slots__ = ("name", "url")
    NAME_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    name: str
    url: str
    def __init__(self, name: _Optional[str] = ..., url: _Optional[str] = ...) -> None: ...

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PhaseRecord(_message.Message):
    __slots__ = ("phase", "epoch", "at")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    phase: str
    epoch: int
    at: float
    def __init__(self, phase: _Optional[str] = ..., epoch: _Optional[int] = ..., at: _Optional[float] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "partition", "from_node", "to_node", "status", "error", "bytes_copied", "started", "finished", "phases", "kind")
    ID_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    BYTES_COPIED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    PHASES_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    id: str
    partition: str
    from_node: str
    to_node: str
    status: str
    error: str
    bytes_copied: int
    started: float
    finished: float
    phases: _containers.RepeatedCompositeFieldContainer[PhaseRecord]
    kind: str
    def __init__(self, id: _Optional[str] = ..., partition: _Optional[str] = ..., from_node: _Optional[str] = ..., to_node: _Optional[str] = ..., status: _Optional[str] = ..., error: _Optional[str] = ..., bytes_copied: _Optional[int] = ..., started: _Optional[float] = ..., finished: _Optional[float] = ..., phases: _Optional[_Iterable[_Union[PhaseRecord, _Mapping]]] = ..., kind: _Optional[str] = ...) -> None: ...

class MigrateRequest(_message.Message):
    __slots__ = ("partition", "to_node", "cutover_deadline_s", "force")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    CUTOVER_DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    partition: str
    to_node: str
    cutover_deadline_s: float
    force: bool
    def __init__(self, partition: _Optional[str] = ..., to_node: _Optional[str] = ..., cutover_deadline_s: _Optional[float] = ..., force: _Optional[bool] = ...) -> None: ...

class ReshardRequest(_message.Message):
    __slots__ = ("kind", "slot", "to_node", "hash_slots", "cutover_deadline_s")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    HASH_SLOTS_FIELD_NUMBER: _ClassVar[int]
    CUTOVER_DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    kind: str
    slot: str
    to_node: str
    hash_slots: int
    cutover_deadline_s: float
    def __init__(self, kind: _Optional[str] = ..., slot: _Optional[str] = ..., to_node: _Optional[str] = ..., hash_slots: _Optional[int] = ..., cutover_deadline_s: _Optional[float] = ...) -> None: ...

class JobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class Transition(_message.Message):
    __slots__ = ("epoch", "op", "phase", "from_node", "to_node", "time", "actor", "job_id")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    op: str
    phase: str
    from_node: str
    to_node: str
    time: float
    actor: str
    job_id: str
    def __init__(self, epoch: _Optional[int] = ..., op: _Optional[str] = ..., phase: _Optional[str] = ..., from_node: _Optional[str] = ..., to_node: _Optional[str] = ..., time: _Optional[float] = ..., actor: _Optional[str] = ..., job_id: _Optional[str] = ...) -> None: ...

class HistoryRequest(_message.Message):
    __slots__ = ("partition",)
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    partition: str
    def __init__(self, partition: _Optional[str] = ...) -> None: ...

class HistoryResponse(_message.Message):
    __slots__ = ("partition", "current_epoch", "transitions")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    CURRENT_EPOCH_FIELD_NUMBER: _ClassVar[int]
    TRANSITIONS_FIELD_NUMBER: _ClassVar[int]
    partition: str
    current_epoch: int
    transitions: _containers.RepeatedCompositeFieldContainer[Transition]
    def __init__(self, partition: _Optional[str] = ..., current_epoch: _Optional[int] = ..., transitions: _Optional[_Iterable[_Union[Transition, _Mapping]]] = ...) -> None: ...

class CompactHistoryRequest(_message.Message):
    __slots__ = ("partition", "before_epoch")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    BEFORE_EPOCH_FIELD_NUMBER: _ClassVar[int]
    partition: str
    before_epoch: int
    def __init__(self, partition: _Optional[str] = ..., before_epoch: _Optional[int] = ...) -> None: ...

class CompactHistoryResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: int
    def __init__(self, removed: _Optional[int] = ...) -> None: ...

class Participant(_message.Message):
    __slots__ = ("id", "applied_epoch", "behind", "behind_s")
    ID_FIELD_NUMBER: _ClassVar[int]
    APPLIED_EPOCH_FIELD_NUMBER: _ClassVar[int]
    BEHIND_FIELD_NUMBER: _ClassVar[int]
    BEHIND_S_FIELD_NUMBER: _ClassVar[int]
    id: str
    applied_epoch: int
    behind: int
    behind_s: float
    def __init__(self, id: _Optional[str] = ..., applied_epoch: _Optional[int] = ..., behind: _Optional[int] = ..., behind_s: _Optional[float] = ...) -> None: ...

class MigrationPlan(_message.Message):
    __slots__ = ("partition", "from_node", "to_node", "source_url", "target_url", "size_bytes", "size_keys", "size_error", "participants", "table_epoch", "expected_cutover_s", "expected_cutover_max_s", "cutover_samples", "refusals", "would_go", "warnings")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_URL_FIELD_NUMBER: _ClassVar[int]
    TARGET_URL_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SIZE_KEYS_FIELD_NUMBER: _ClassVar[int]
    SIZE_ERROR_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    TABLE_EPOCH_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_CUTOVER_S_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_CUTOVER_MAX_S_FIELD_NUMBER: _ClassVar[int]
    CUTOVER_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    REFUSALS_FIELD_NUMBER: _ClassVar[int]
    WOULD_GO_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    partition: str
    from_node: str
    to_node: str
    source_url: str
    target_url: str
    size_bytes: int
    size_keys: int
    size_error: str
    participants: _containers.RepeatedCompositeFieldContainer[Participant]
    table_epoch: int
    expected_cutover_s: float
    expected_cutover_max_s: float
    cutover_samples: int
    refusals: _containers.RepeatedScalarFieldContainer[str]
    would_go: bool
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, partition: _Optional[str] = ..., from_node: _Optional[str] = ..., to_node: _Optional[str] = ..., source_url: _Optional[str] = ..., target_url: _Optional[str] = ..., size_bytes: _Optional[int] = ..., size_keys: _Optional[int] = ..., size_error: _Optional[str] = ..., participants: _Optional[_Iterable[_Union[Participant, _Mapping]]] = ..., table_epoch: _Optional[int] = ..., expected_cutover_s: _Optional[float] = ..., expected_cutover_max_s: _Optional[float] = ..., cutover_samples: _Optional[int] = ..., refusals: _Optional[_Iterable[str]] = ..., would_go: _Optional[bool] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class JobControlRequest(_message.Message):
    __slots__ = ("id", "set_paused", "paused", "set_rate", "rate_bytes_per_s")
    ID_FIELD_NUMBER: _ClassVar[int]
    SET_PAUSED_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    SET_RATE_FIELD_NUMBER: _ClassVar[int]
    RATE_BYTES_PER_S_FIELD_NUMBER: _ClassVar[int]
    id: str
    set_paused: bool
    paused: bool
    set_rate: bool
    rate_bytes_per_s: float
    def __init__(self, id: _Optional[str] = ..., set_paused: _Optional[bool] = ..., paused: _Optional[bool] = ..., set_rate: _Optional[bool] = ..., rate_bytes_per_s: _Optional[float] = ...) -> None: ...

class JobControl(_message.Message):
    __slots__ = ("id", "paused", "rate_bytes_per_s")
    ID_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    RATE_BYTES_PER_S_FIELD_NUMBER: _ClassVar[int]
    id: str
    paused: bool
    rate_bytes_per_s: float
    def __init__(self, id: _Optional[str] = ..., paused: _Optional[bool] = ..., rate_bytes_per_s: _Optional[float] = ...) -> None: ...

class JobControlState(_message.Message):
    __slots__ = ("fleet", "jobs")
    FLEET_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    fleet: JobControl
    jobs: _containers.RepeatedCompositeFieldContainer[JobControl]
    def __init__(self, fleet: _Optional[_Union[JobControl, _Mapping]] = ..., jobs: _Optional[_Iterable[_Union[JobControl, _Mapping]]] = ...) -> None: ...

class Move(_message.Message):
    __slots__ = ("partition", "from_node", "to_node", "weight", "job_id", "status")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    partition: str
    from_node: str
    to_node: str
    weight: float
    job_id: str
    status: str
    def __init__(self, partition: _Optional[str] = ..., from_node: _Optional[str] = ..., to_node: _Optional[str] = ..., weight: _Optional[float] = ..., job_id: _Optional[str] = ..., status: _Optional[str] = ...) -> None: ...

class Operation(_message.Message):
    __slots__ = ("id", "kind", "node", "status", "parallel", "moves", "error", "started", "finished", "dry_run")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PARALLEL_FIELD_NUMBER: _ClassVar[int]
    MOVES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    node: str
    status: str
    parallel: int
    moves: _containers.RepeatedCompositeFieldContainer[Move]
    error: str
    started: float
    finished: float
    dry_run: bool
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., node: _Optional[str] = ..., status: _Optional[str] = ..., parallel: _Optional[int] = ..., moves: _Optional[_Iterable[_Union[Move, _Mapping]]] = ..., error: _Optional[str] = ..., started: _Optional[float] = ..., finished: _Optional[float] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class DrainRequest(_message.Message):
    __slots__ = ("node", "parallel", "by_size", "dry_run", "cutover_deadline_s", "uncordon")
    NODE_FIELD_NUMBER: _ClassVar[int]
    PARALLEL_FIELD_NUMBER: _ClassVar[int]
    BY_SIZE_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    CUTOVER_DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    UNCORDON_FIELD_NUMBER: _ClassVar[int]
    node: str
    parallel: int
    by_size: bool
    dry_run: bool
    cutover_deadline_s: float
    uncordon: bool
    def __init__(self, node: _Optional[str] = ..., parallel: _Optional[int] = ..., by_size: _Optional[bool] = ..., dry_run: _Optional[bool] = ..., cutover_deadline_s: _Optional[float] = ..., uncordon: _Optional[bool] = ...) -> None: ...

class BalanceRequest(_message.Message):
    __slots__ = ("parallel", "by_size", "threshold", "dry_run", "cutover_deadline_s")
    PARALLEL_FIELD_NUMBER: _ClassVar[int]
    BY_SIZE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    CUTOVER_DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    parallel: int
    by_size: bool
    threshold: float
    dry_run: bool
    cutover_deadline_s: float
    def __init__(self, parallel: _Optional[int] = ..., by_size: _Optional[bool] = ..., threshold: _Optional[float] = ..., dry_run: _Optional[bool] = ..., cutover_deadline_s: _Optional[float] = ...) -> None: ...

class OperationRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListOperationsResponse(_message.Message):
    __slots__ = ("operations",)
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    operations: _containers.RepeatedCompositeFieldContainer[Operation]
    def __init__(self, operations: _Optional[_Iterable[_Union[Operation, _Mapping]]] = ...) -> None: ...

class FleetAck(_message.Message):
    __slots__ = ("participant", "session", "epoch", "fence")
    PARTICIPANT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    FENCE_FIELD_NUMBER: _ClassVar[int]
    participant: str
    session: str
    epoch: int
    fence: int
    def __init__(self, participant: _Optional[str] = ..., session: _Optional[str] = ..., epoch: _Optional[int] = ..., fence: _Optional[int] = ...) -> None: ...

class FleetPush(_message.Message):
    __slots__ = ("fence", "index", "head")
    FENCE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    fence: int
    index: int
    head: bytes
    def __init__(self, fence: _Optional[int] = ..., index: _Optional[int] = ..., head: _Optional[bytes] = ...) -> None: ...
