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
    __slots__ = ("id", "partition", "from_node", "to_node", "status", "error", "bytes_copied", "started", "finished", "phases")
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
    def __init__(self, id: _Optional[str] = ..., partition: _Optional[str] = ..., from_node: _Optional[str] = ..., to_node: _Optional[str] = ..., status: _Optional[str] = ..., error: _Optional[str] = ..., bytes_copied: _Optional[int] = ..., started: _Optional[float] = ..., finished: _Optional[float] = ..., phases: _Optional[_Iterable[_Union[PhaseRecord, _Mapping]]] = ...) -> None: ...

class MigrateRequest(_message.Message):
    __slots__ = ("partition", "to_node", "cutover_deadline_s")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    CUTOVER_DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    partition: str
    to_node: str
    cutover_deadline_s: float
    def __init__(self, partition: _Optional[str] = ..., to_node: _Optional[str] = ..., cutover_deadline_s: _Optional[float] = ...) -> None: ...

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
