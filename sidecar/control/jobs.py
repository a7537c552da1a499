"""Migration jobs: the record, its Consul persistence, and the service seam (DESIGN §6).

A job moves one partition ``pending → draining → cutover → replaying →
completed`` (or ``failed`` / ``aborted``), or reshards hash slots (``kind`` split or merge,
DESIGN §12: ``sources`` replaced by ``into``, both ``(slot, node)`` pairs, with the same
statuses; ``partition`` is the slot the operator named). The record lives under
``<prefix>jobs/<id>`` as JSON; every update is a compare-and-set on the key's
ModifyIndex, so a controller that lost the lock (and a newer controller that
claimed the job) cannot both write it: the loser's CAS fails and it stops.

``Job.to_dict()`` is keyed like the ``epochgate.v1.Job`` message (``from_node``,
``to_node``, ``bytes_copied``, ``phases`` of ``{phase, epoch, at}``) plus a few
controller-only keys (``deadline_s``, ``cursor``, ``abort_requested``,
``owner``, and a reshard's ``sources``, ``into`` and ``hash_slots``) the wire ignores.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator, Protocol, runtime_checkable

from gate import BackendError, ConfigError, key_segment, node_name, partition_id

from .jobstatus import FINAL, JobStatus, event_between

if TYPE_CHECKING:   # (importing it loads py-consul and requests: ~6 MiB the embedded controller need not carry)
    from gate import ConsulHTTP

# The record keeps the status as its plain string value (JSON, the wire, metric
# labels); the names below are derived from the enum, never written out again.
STATUSES = tuple(s.value for s in JobStatus)
TERMINAL = frozenset(s.value for s in FINAL)
Pairs = tuple[tuple[str, str], ...]   # (slot, node)


class JobKind(str, enum.Enum):
    """What a job does; ``value`` is the record's (and the wire's) ``kind``."""

    MOVE = "move"
    SPLIT = "split"
    MERGE = "merge"

    def __str__(self) -> str:
        return self.value


def _pairs(raw: Any, field: str) -> Pairs:
    return tuple((partition_id(str(p), field), node_name(str(n), field)) for p, n in raw or ())


@dataclass(frozen=True, slots=True)
class PhaseRecord:
    """When a job reached a phase, and the store epoch that phase's transition stamped
    (0 for phases without a transition, e.g. ``acked``: the barrier passed)."""

    phase: str
    epoch: int
    at: float

    def to_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "epoch": int(self.epoch), "at": float(self.at)}


@dataclass(frozen=True, slots=True)
class Job:
    """One migration job. Immutable: ``with_(...)`` returns an updated copy."""

    id: str
    partition: str
    source: str
    target: str
    status: str = "pending"
    error: str = ""
    bytes_copied: int = 0
    started: float = 0.0
    finished: float = 0.0
    phases: tuple[PhaseRecord, ...] = ()
    deadline_s: float = 10.0
    cursor: str | None = None
    abort_requested: bool = False
    owner: str = ""
    kind: str = "move"
    sources: Pairs = ()      # a reshard's slots it replaces, (slot, node)
    into: Pairs = ()         # a reshard's destinations, (slot, node)
    hash_slots: int = 0      # a reshard's N (the sidecars' --hash-slots)
    version: int = field(default=0, compare=False)   # the Consul ModifyIndex it was read at

    def __post_init__(self) -> None:
        key_segment(self.id, "id")  # becomes the key jobs/<id>: one segment, never "." or ".."
        partition_id(self.partition)
        node_name(self.source, "from_node")
        node_name(self.target, "to_node")
        if self.status not in STATUSES:
            raise ConfigError("status", f"unknown job status {self.status!r}")
        if self.deadline_s <= 0:
            raise ConfigError("cutover_deadline_s", f"must be > 0, got {self.deadline_s!r}")
        try:
            kind = JobKind(self.kind)
        except ValueError:
            raise ConfigError("kind", f"unknown job kind {self.kind!r}") from None
        if (kind is JobKind.MOVE) != (not self.sources and not self.into):
            raise ConfigError("kind", "a move has no sources/into; a split or merge has both")

    @property
    def resharding(self) -> bool:
        return self.kind != JobKind.MOVE.value

    @property
    def slots(self) -> tuple[str, ...]:
        """Every partition the job's transitions touch (``history`` joins on these)."""
        return (self.partition,) + tuple(p for p, _ in self.sources + self.into if p != self.partition)

    @property
    def copied(self) -> tuple[str, ...]:
        """The partitions whose bulk copies run (the throttle paces each)."""
        return tuple(p for p, _ in self.sources) if self.resharding else (self.partition,)

    @classmethod
    def new(cls, partition: str, source: str, target: str, deadline_s: float, **more: Any) -> "Job":
        return cls(uuid.uuid4().hex[:12], partition, source, target, started=time.time(), deadline_s=deadline_s,
                   **more)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def with_(self, **changes: Any) -> "Job":
        """An updated copy. A status change must be a transition of the job table
        (``sidecar.control.jobstatus``); otherwise ``JobTransitionError`` and nothing changes."""
        status = changes.get("status")
        if status is not None and status != self.status:
            if status not in STATUSES:
                raise ConfigError("status", f"unknown job status {status!r}")
            event_between(self.status, status)
            changes["status"] = JobStatus(status).value
        return dataclasses.replace(self, **changes)

    def at_phase(self, phase: str, epoch: int = 0, **changes: Any) -> "Job":
        """Record reaching ``phase`` now; a job status phase also becomes the status."""
        rec = PhaseRecord(phase, int(epoch), time.time())
        if phase in STATUSES:
            changes.setdefault("status", phase)
        if phase in TERMINAL:
            changes.setdefault("finished", rec.at)
        return self.with_(phases=self.phases + (rec,), **changes)

    def phase(self, name: str) -> PhaseRecord | None:
        for rec in reversed(self.phases):
            if rec.phase == name:
                return rec
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "partition": self.partition, "from_node": self.source, "to_node": self.target,
            "status": self.status, "error": self.error, "bytes_copied": int(self.bytes_copied),
            "started": self.started, "finished": self.finished, "phases": [p.to_dict() for p in self.phases],
            "deadline_s": self.deadline_s, "cursor": self.cursor, "abort_requested": self.abort_requested,
            "owner": self.owner, "kind": self.kind, "sources": [list(p) for p in self.sources],
            "into": [list(p) for p in self.into], "hash_slots": self.hash_slots,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], version: int = 0) -> "Job":
        try:
            return cls(
                id=data["id"], partition=data["partition"], source=data["from_node"], target=data["to_node"],
                status=data.get("status", "pending"), error=data.get("error") or "",
                bytes_copied=int(data.get("bytes_copied") or 0), started=float(data.get("started") or 0),
                finished=float(data.get("finished") or 0),
                phases=tuple(PhaseRecord(p["phase"], int(p["epoch"]), float(p["at"])) for p in data.get("phases", ())),
                deadline_s=float(data.get("deadline_s") or 10.0), cursor=data.get("cursor"),
                abort_requested=bool(data.get("abort_requested")), owner=data.get("owner") or "",
                kind=data.get("kind") or "move", sources=_pairs(data.get("sources"), "sources"),
                into=_pairs(data.get("into"), "into"), hash_slots=int(data.get("hash_slots") or 0), version=version,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed job record: {exc}") from exc

    def encode(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()


class JobConflict(BackendError):
    """The job record changed under us (another controller, or an abort request)."""


class JobRecords:
    """``jobs/<id>`` in Consul, every write a compare-and-set."""

    def __init__(self, consul: ConsulHTTP, prefix: str = "epochgate/") -> None:
        self.consul = consul
        self.dir = f"{prefix}jobs/"

    async def create(self, job: Job) -> Job:
        if not await self.consul.put(self.dir + job.id, job.encode(), cas=0):
            raise JobConflict(f"job {job.id} already exists")
        return await self._reread(job.id)

    async def save(self, job: Job) -> Job:
        """Write ``job`` if the record is still at ``job.version``; else ``JobConflict``."""
        if not await self.consul.put(self.dir + job.id, job.encode(), cas=job.version):
            raise JobConflict(f"job {job.id} changed concurrently")
        return await self._reread(job.id)

    async def _reread(self, job_id: str) -> Job:
        job = await self.get(job_id)
        if job is None:
            raise JobConflict(f"job {job_id} vanished")
        return job

    async def get(self, job_id: str) -> Job | None:
        entry = await self.consul.get(self.dir + job_id)
        if entry is None:
            return None
        return Job.from_dict(json.loads(entry.value), entry.modify_index)

    async def list(self, *, index: int | None = None, wait_s: float = 1.0) -> tuple[list[Job], int]:
        entries, idx = await self.consul.list(self.dir, index=index, wait_s=wait_s)
        jobs = []
        for e in entries:
            try:
                jobs.append(Job.from_dict(json.loads(e.value), e.modify_index))
            except ValueError:
                continue   # a malformed record is skipped, not fatal (logged by the runner)
        jobs.sort(key=lambda j: j.started)
        return jobs, idx

    async def watch(self, job_id: str) -> AsyncIterator[Job]:
        """The job now, then on every change, until it is final (or gone)."""
        from gate import next_blocking_index

        key = self.dir + job_id
        index, last = 0, None
        while True:
            entries, new_index = await self.consul.list(key, index=index or None, wait_s=5.0)
            index = next_blocking_index(index, new_index)
            job = next((Job.from_dict(json.loads(e.value), e.modify_index) for e in entries if e.key == key), None)
            if job is None:
                return
            if last is None or job.version != last:
                last = job.version
                yield job
            if job.terminal:
                return


@runtime_checkable
class JobService(Protocol):
    """What the control API serves for jobs (the controller implements it)."""

    async def migrate(self, partition: str, to: str, deadline_s: float | None = None, *,
                      force: bool = False) -> Job: ...

    async def get(self, job_id: str) -> Job | None: ...

    async def list(self) -> list[Job]: ...

    async def abort(self, job_id: str) -> Job | None: ...

    def watch(self, job_id: str) -> AsyncIterator[Job]: ...
