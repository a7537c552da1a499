"""The gRPC control API (DESIGN §9): ``epochgate.v1.Gate`` and ``epochgate.v1.Migration``.

``Gate.AdmitWrite`` is the commit-point admit applications call (DESIGN §5
rule 6, §7): it answers from this process's placement source behind the
write gate's guards (barrier participant, lease) and does *not* count the
write in flight — the request that carries it is already counted by the
proxy until its response ends, and there is no "done" call to balance a
second count.

Errors map onto status codes as the proto header says; the mapping lives in
``_status_for`` so every RPC answers the same way.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping

import grpc

from gate import (
    BackendError,
    ConfigError,
    ConflictError,
    Epoch,
    EpochgateError,
    MigrationError,
    MigrationStore,
    PartitionState,
    PlacementSource,
    UnknownPartition,
    fail_closed_admit,
    key_segment,
    node_name,
    partition_id,
    validate_url,
)
from gate.pb.epochgate.v1 import epochgate_pb2 as pb
from gate.pb.epochgate.v1 import epochgate_pb2_grpc as pb_grpc

from . import convert as conv

log = logging.getLogger("epochgate.control")

DEFAULT_CONTROL = "127.0.0.1:50051"
_WATCH_BACKLOG = 10_000  # queued changes per Watch stream before it resyncs from a snapshot


class NotFound(EpochgateError):
    """An unknown job or node (partitions use ``UnknownPartition``)."""


def _status_for(exc: BaseException) -> grpc.StatusCode:
    if isinstance(exc, (UnknownPartition, NotFound, KeyError)):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, ConflictError):
        return grpc.StatusCode.ABORTED
    if isinstance(exc, BackendError):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(exc, MigrationError):
        return grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(exc, (ConfigError, ValueError)):
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL


async def _abort_with(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    code = _status_for(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.exception("control API: unexpected error", exc_info=exc)
        await context.abort(code, f"internal error: {type(exc).__name__}: {exc}")
    detail = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    await context.abort(code, str(detail))


def _errors(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Map our exceptions (and validation errors) onto status codes for a unary RPC."""

    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(self, request, context)
        except (EpochgateError, KeyError, ValueError) as exc:
            await _abort_with(context, exc)

    wrapper.__name__ = fn.__name__
    return wrapper


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class GateServicer(pb_grpc.GateServicer):
    """AdmitWrite and Resolve against the local placement source."""

    def __init__(self, store: MigrationStore, source: PlacementSource, gate: Any | None) -> None:
        self._store = store
        self._source = source
        self._gate = gate

    @_errors
    async def AdmitWrite(self, request: pb.AdmitWriteRequest, context: Any) -> pb.AdmitWriteResponse:
        p = partition_id(request.partition)
        state = self._source.state(p)
        # Fail closed when the barrier participant or the lease says no write may commit.
        decision = fail_closed_admit(self._source, p, request.epoch, self._gate is None or self._gate.writable())
        # Report the state the decision was made against when it did not change
        # meanwhile; a concurrent transition only makes ``current`` newer.
        return conv.admission_to_pb(p, decision, self._source.state(p) or state)

    @_errors
    async def Resolve(self, request: pb.ResolveRequest, context: Any) -> pb.ResolveResponse:
        p = partition_id(request.partition)
        st = self._source.state(p)
        if st is None:
            raise UnknownPartition(f"unknown partition {p!r}", p)
        state, epoch = st
        local = getattr(self._source, "nodes", None)  # a replica's copy: no store round trip per Resolve
        upstream = local.get(state.read_placement) if isinstance(local, Mapping) else None
        if upstream is None:
            upstream = (await _known_nodes(self._store, self._source, required=False)).get(state.read_placement, "")
        return pb.ResolveResponse(
            partition=p,
            placement=state.read_placement,
            upstream=upstream,
            epoch=int(epoch),
            phase=conv.phase_to_pb(state.phase),
        )


async def _known_nodes(store: MigrationStore, source: Any, *, required: bool = True) -> dict[str, str]:
    """Node → URL from the source's copy (a replica keeps one) merged over the store's."""
    nodes: dict[str, str] = {}
    try:
        nodes.update(await store.nodes())
    except BackendError:
        if required:
            raise
    local = getattr(source, "nodes", None)
    if isinstance(local, Mapping):
        nodes.update(local)
    return nodes


class MigrationServicer(pb_grpc.MigrationServicer):
    """Transitions over the MigrationStore; job calls delegate to a JobService."""

    def __init__(
        self, store: MigrationStore, source: PlacementSource, jobs: Any | None, extra_nodes: Mapping[str, str]
    ) -> None:
        self._store = store
        self._source = source
        self._jobs = jobs
        self._extra_nodes = dict(extra_nodes)

    async def _transition(self, p: str, epoch: Epoch) -> pb.TransitionResponse:
        st = await self._store.state(p)
        state = None if st is None else conv.state_to_pb(p, st[0], st[1])
        return pb.TransitionResponse(state=state, epoch=int(epoch))

    async def _check_node(self, name: str, field: str) -> str:
        """Refuse a placement on a node nobody can route to (when any node is registered)."""
        name = node_name(name, field)
        known = {**self._extra_nodes, **await _known_nodes(self._store, self._source)}
        if known and name not in known:
            raise NotFound(f"{field}: unknown node {name!r} (known: {', '.join(sorted(known))})")
        return name

    @_errors
    async def Begin(self, request: pb.BeginRequest, context: Any) -> pb.TransitionResponse:
        p = partition_id(request.partition)
        to = await self._check_node(request.to_node, "to_node")
        return await self._transition(p, await self._store.begin(p, to))

    @_errors
    async def EnterCutover(self, request: pb.PartitionRequest, context: Any) -> pb.TransitionResponse:
        p = partition_id(request.partition)
        return await self._transition(p, await self._store.enter_cutover(p))

    @_errors
    async def Complete(self, request: pb.PartitionRequest, context: Any) -> pb.TransitionResponse:
        p = partition_id(request.partition)
        return await self._transition(p, await self._store.complete(p))

    @_errors
    async def Abort(self, request: pb.PartitionRequest, context: Any) -> pb.TransitionResponse:
        p = partition_id(request.partition)
        return await self._transition(p, await self._store.abort(p))

    @_errors
    async def State(self, request: pb.PartitionRequest, context: Any) -> pb.PartitionState:
        p = partition_id(request.partition)
        st = await self._store.state(p)
        if st is None:
            raise UnknownPartition(f"unknown partition {p!r}", p)
        return conv.state_to_pb(p, st[0], st[1])

    @_errors
    async def List(self, request: pb.ListRequest, context: Any) -> pb.ListResponse:
        parts = await self._store.partitions()
        items = [conv.state_to_pb(p, s, e) for p, (s, e) in sorted(parts.items())]
        table_epoch = max([int(e) for _, e in parts.values()] + [int(self._source.current_epoch())])
        return pb.ListResponse(partitions=items, table_epoch=table_epoch)

    async def Watch(self, request: pb.WatchRequest, context: Any) -> AsyncIterator[pb.PartitionState]:
        """Every change with epoch > after_epoch: first what the table holds now, then
        changes as this process applies them (a removed partition is PHASE_UNSPECIFIED)."""
        loop = asyncio.get_running_loop()
        queue: deque[tuple[str, PartitionState | None, Epoch]] = deque()
        wake = asyncio.Event()
        overflow = False

        def on_change(p: str, state: PartitionState | None, epoch: Epoch) -> None:
            loop.call_soon_threadsafe(_push, p, state, epoch)

        def _push(p: str, state: PartitionState | None, epoch: Epoch) -> None:
            nonlocal overflow
            if len(queue) >= _WATCH_BACKLOG:
                queue.clear()
                overflow = True
            queue.append((p, state, epoch))
            wake.set()

        unsubscribe = self._source.subscribe(on_change)  # before the snapshot: nothing falls in between
        sent: dict[str, int] = {}
        after = int(request.after_epoch)

        def snapshot() -> list[pb.PartitionState]:
            items = sorted(self._source.partitions().items(), key=lambda kv: kv[1][1])
            out = []
            for p, (s, e) in items:
                if e > after and e > sent.get(p, -1):
                    sent[p] = int(e)
                    out.append(conv.state_to_pb(p, s, e))
            return out

        try:
            for msg in snapshot():
                yield msg
            while True:
                await wake.wait()
                wake.clear()
                if overflow:  # a slow reader: catch up from the table rather than grow without bound
                    overflow = False
                    queue.clear()
                    for msg in snapshot():
                        yield msg
                    continue
                while queue:
                    p, s, e = queue.popleft()
                    if e <= after or (s is not None and e <= sent.get(p, -1)):
                        continue
                    sent[p] = int(e)
                    yield conv.state_to_pb(p, s, e)
        finally:
            unsubscribe()

    @_errors
    async def SetPartition(self, request: pb.SetPartitionRequest, context: Any) -> pb.TransitionResponse:
        p = partition_id(request.partition)
        node = await self._check_node(request.node, "node")
        return await self._transition(p, await self._store.set(p, node))

    @_errors
    async def ListNodes(self, request: pb.Empty, context: Any) -> pb.ListNodesResponse:
        nodes = {**self._extra_nodes, **await _known_nodes(self._store, self._source)}
        return pb.ListNodesResponse(nodes=[pb.Node(name=n, url=u) for n, u in sorted(nodes.items())])

    @_errors
    async def SetNode(self, request: pb.SetNodeRequest, context: Any) -> pb.Node:
        name = node_name(request.name, "name")
        url = validate_url(request.url, "url")
        await self._store.set_node(name, url)
        return pb.Node(name=name, url=url)

    # ---- jobs ----------------------------------------------------------------

    async def _need_jobs(self, context: Any) -> Any:
        if self._jobs is None:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                "migration jobs are served by the controller (python -m sidecar controller), not a sidecar",
            )
        return self._jobs

    async def _job(self, value: Any, job_id: str) -> pb.Job:
        job = await _maybe_await(value)
        if job is None:
            raise NotFound(f"unknown job {job_id!r}")
        return conv.job_to_pb(job)

    @_errors
    async def Migrate(self, request: pb.MigrateRequest, context: Any) -> pb.Job:
        jobs = await self._need_jobs(context)
        p = partition_id(request.partition)
        to = node_name(request.to_node, "to_node")
        if request.cutover_deadline_s < 0:
            raise ConfigError("cutover_deadline_s", f"must be ≥ 0 (0 = the controller's default), got {request.cutover_deadline_s}")
        deadline = request.cutover_deadline_s or None
        return await self._job(jobs.migrate(p, to, deadline, force=request.force), "")

    @_errors
    async def Reshard(self, request: pb.ReshardRequest, context: Any) -> pb.Job:
        jobs = await self._need_jobs(context)
        if request.cutover_deadline_s < 0:
            raise ConfigError("cutover_deadline_s", f"must be ≥ 0 (0 = the controller's default), got {request.cutover_deadline_s}")
        if not hasattr(jobs, "reshard"):
            raise ConfigError("kind", "this control API runs no reshard jobs")
        return await self._job(jobs.reshard(request.kind, request.slot, request.to_node or None,
                                            int(request.hash_slots), request.cutover_deadline_s or None), "")

    @_errors
    async def GetJob(self, request: pb.JobRequest, context: Any) -> pb.Job:
        jobs = await self._need_jobs(context)
        return await self._job(jobs.get(_job_id(request.id)), request.id)

    @_errors
    async def ListJobs(self, request: pb.ListJobsRequest, context: Any) -> pb.ListJobsResponse:
        jobs = await self._need_jobs(context)
        return pb.ListJobsResponse(jobs=[conv.job_to_pb(j) for j in await _maybe_await(jobs.list())])

    @_errors
    async def AbortJob(self, request: pb.JobRequest, context: Any) -> pb.Job:
        jobs = await self._need_jobs(context)
        return await self._job(jobs.abort(_job_id(request.id)), request.id)

    async def WatchJob(self, request: pb.JobRequest, context: Any) -> AsyncIterator[pb.Job]:
        jobs = await self._need_jobs(context)
        try:
            job_id = _job_id(request.id)
            if await _maybe_await(jobs.get(job_id)) is None:
                raise NotFound(f"unknown job {job_id!r}")
            async for job in jobs.watch(job_id):
                yield conv.job_to_pb(job)
        except (EpochgateError, KeyError, ValueError) as exc:
            await _abort_with(context, exc)


def _job_id(value: str) -> str:
    if not value:
        raise ConfigError("id", "a job id is required")
    return key_segment(value, "id")
