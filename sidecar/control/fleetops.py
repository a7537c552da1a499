"""``drain NODE`` and ``balance``: a plan of moves executed as jobs (issue 17).

An *operation* is stored under ``<prefix>ops/<id>`` (JSON, every write a
compare-and-set like a job record): its kind, the moves planned
(``_planner``), each move's job id and status, the concurrency limit K, and
an abort request. The leading controller drives every running operation
(``OperationRunner.step`` in a loop): it refreshes each move from its job,
starts planned moves as jobs while fewer than K of its jobs are unfinished,
and finishes the operation when no move is left. A paused fleet starts no
new move. Everything it needs is in Consul, so a new leader after a
fail-over carries on where the old one stopped.

A job created but not yet recorded in the operation (the leader died in
between) is adopted on resume: a job for the same partition and target that
started after the operation did. Aborting the operation skips the moves not
started and asks every unfinished job to abort (each goes back to its source).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from gate import BackendError, ConfigError, EpochgateError

from .jobs import TERMINAL as JOB_TERMINAL
from gate.pb.epochgate.v1 import epochgate_pb2 as pb
from .planner import PlannedMove

log = logging.getLogger("epochgate.controller")

OP_TERMINAL = frozenset({"completed", "failed", "aborted"})
MOVE_DONE = JOB_TERMINAL | {"skipped"}


class OpConflict(BackendError):
    """The operation record changed under us."""


@dataclass(frozen=True, slots=True)
class MoveRec:
    partition: str
    source: str
    target: str
    weight: float = 1.0
    job_id: str = ""
    status: str = "planned"   # planned, a job status, or skipped
    note: str = ""

    @property
    def done(self) -> bool:
        return self.status in MOVE_DONE


@dataclass(frozen=True, slots=True)
class Operation:
    id: str
    kind: str
    node: str = ""
    status: str = "running"
    parallel: int = 1
    moves: tuple[MoveRec, ...] = ()
    error: str = ""
    started: float = 0.0
    finished: float = 0.0
    deadline_s: float = 0.0
    abort_requested: bool = False
    max_running: int = 0      # the most jobs of this operation seen unfinished at once
    version: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in ("drain", "balance"):
            raise ConfigError("kind", f"unknown operation kind {self.kind!r}")
        if self.parallel < 1:
            raise ConfigError("parallel", f"must be ≥ 1, got {self.parallel!r}")

    @classmethod
    def new(cls, kind: str, moves: list[PlannedMove], *, node: str = "", parallel: int = 1,
            deadline_s: float = 0.0) -> "Operation":
        recs = tuple(MoveRec(m.partition, m.source, m.target, m.weight) for m in moves)
        op = cls(uuid.uuid4().hex[:12], kind, node, parallel=parallel, moves=recs, started=time.time(),
                 deadline_s=deadline_s)
        return op if recs else op.with_(status="completed", finished=op.started)

    @property
    def terminal(self) -> bool:
        return self.status in OP_TERMINAL

    def with_(self, **changes: Any) -> "Operation":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("version")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], version: int = 0) -> "Operation":
        try:
            moves = tuple(MoveRec(**m) for m in d.get("moves", ()))
            return cls(**{**{k: v for k, v in d.items() if k != "moves"}, "moves": moves, "version": version})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"malformed operation record: {exc}") from exc

    def encode(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    def to_pb(self) -> pb.Operation:
        return pb.Operation(id=self.id, kind=self.kind, node=self.node, status=self.status, parallel=self.parallel,
                            error=self.error, started=self.started, finished=self.finished,
                            moves=[pb.Move(partition=m.partition, from_node=m.source, to_node=m.target,
                                           weight=m.weight, job_id=m.job_id, status=m.status)
                                   for m in self.moves])


class OperationRecords:
    """``ops/<id>`` in Consul."""

    def __init__(self, consul: Any, prefix: str = "epochgate/") -> None:
        self.consul = consul
        self.dir = f"{prefix}ops/"

    async def create(self, op: Operation) -> Operation:
        if not await self.consul.put(self.dir + op.id, op.encode(), cas=0):
            raise OpConflict(f"operation {op.id} already exists")
        return await self.get(op.id) or op

    async def save(self, op: Operation) -> Operation:
        if not await self.consul.put(self.dir + op.id, op.encode(), cas=op.version):
            raise OpConflict(f"operation {op.id} changed concurrently")
        latest = await self.get(op.id)
        if latest is None:
            raise OpConflict(f"operation {op.id} vanished")
        return latest

    async def get(self, op_id: str) -> Operation | None:
        e = await self.consul.get(self.dir + op_id)
        return None if e is None else Operation.from_dict(json.loads(e.value), e.modify_index)

    async def list(self, *, index: int | None = None, wait_s: float = 1.0) -> tuple[list[Operation], int]:
        entries, idx = await self.consul.list(self.dir, index=index, wait_s=wait_s)
        ops = []
        for e in entries:
            try:
                ops.append(Operation.from_dict(json.loads(e.value), e.modify_index))
            except ValueError:
                continue
        ops.sort(key=lambda o: o.started)
        return ops, idx


class OperationRunner:
    """Drives one operation a step at a time; the controller calls ``run`` on its leader."""

    def __init__(self, ops: OperationRecords, jobs: Any, *, check: Callable[[], None],
                 paused: Callable[[], bool], poll_s: float = 0.3) -> None:
        self.ops, self.jobs, self.check, self.paused, self.poll_s = ops, jobs, check, paused, poll_s

    async def run(self, op: Operation) -> Operation:
        while not op.terminal:
            try:
                op = await self.step(op)
            except OpConflict:   # an abort request landed between our read and write: re-read
                await asyncio.sleep(0.05)
                continue
            if not op.terminal:
                await asyncio.sleep(self.poll_s)
        return op

    async def step(self, op: Operation) -> Operation:
        """Refresh the moves from their jobs, start what K allows, finish when nothing is left."""
        self.check()
        latest = await self.ops.get(op.id)
        if latest is None:
            raise OpConflict(f"operation {op.id} vanished")
        op = latest
        if op.terminal:
            return op
        all_jobs = await self.jobs.list()
        by_id = {j.id: j for j in all_jobs}
        moves = []
        for m in op.moves:
            if not m.job_id and m.status == "planned":
                adopted = next((j for j in all_jobs if j.partition == m.partition and j.target == m.target
                                and j.started >= op.started), None)
                if adopted is not None:
                    m = dataclasses.replace(m, job_id=adopted.id)
            if m.job_id:
                job = by_id.get(m.job_id)
                if job is not None:
                    m = dataclasses.replace(m, status=job.status, note=job.error)
                elif not m.done:   # the job record was compacted: it finished long ago
                    m = dataclasses.replace(m, status="skipped", note="job record gone")
            moves.append(m)
        running = [m for m in moves if m.job_id and not m.done]
        if op.abort_requested:
            for m in running:
                try:
                    await self.jobs.abort(m.job_id)
                except EpochgateError as exc:
                    log.warning("operation %s: abort of job %s: %s", op.id, m.job_id, exc)
            moves = [dataclasses.replace(m, status="skipped", note="operation aborted")
                     if m.status == "planned" else m for m in moves]
        elif not self.paused():
            for i, m in enumerate(moves):
                if len(running) >= op.parallel:
                    break
                if m.status != "planned" or m.job_id:
                    continue
                try:
                    job = await self.jobs.migrate(m.partition, m.target, op.deadline_s or None)
                except BackendError:
                    raise
                except (EpochgateError, ValueError) as exc:   # moved meanwhile, node gone, ...
                    moves[i] = dataclasses.replace(m, status="skipped", note=str(exc))
                    continue
                moves[i] = dataclasses.replace(m, job_id=job.id, status=job.status)
                running.append(moves[i])
                # record each start at once: a fail-over must not lose which job runs which move
                op = await self._save(op.with_(moves=tuple(moves), max_running=max(op.max_running, len(running))))
        op = op.with_(moves=tuple(moves), max_running=max(op.max_running, len(running)))
        if all(m.done for m in moves):
            bad = [m for m in moves if m.status in ("failed", "aborted")
                   or (m.status == "skipped" and not op.abort_requested and m.note != "")]
            status = "aborted" if op.abort_requested else ("failed" if bad else "completed")
            error = "; ".join(f"{m.partition}: {m.status}{': ' + m.note if m.note else ''}" for m in bad[:10])
            op = op.with_(status=status, finished=time.time(), error=error)
            log.info("operation %s (%s): %s", op.id, op.kind, status)
        return await self._save(op)

    async def _save(self, op: Operation) -> Operation:
        self.check()
        return await self.ops.save(op)
