"""The Migration service's operator calls (issue 17): history, dry runs, pause and
throttle, drain and balance. Same error mapping as every other RPC
(``_grpc_server._errors``); served in full by the controller. A sidecar on a
Consul store answers ``History`` (its store keeps the audit trail) and
UNIMPLEMENTED for the rest, like the job calls.
"""

from __future__ import annotations

import math
from typing import Any, AsyncIterator

import grpc

from gate import ConfigError, EpochgateError

from .server import MigrationServicer, _abort_with, _errors
from ..control.history import partition_history
from gate.pb.epochgate.v1 import epochgate_pb2 as pb


def _deadline(value: float) -> float:
    if value < 0 or math.isnan(value):
        raise ConfigError("cutover_deadline_s", f"must be ≥ 0 (0 = the controller's default), got {value}")
    return value


class OpsMigrationServicer(MigrationServicer):
    async def _ops(self, context: Any) -> Any:
        ops = getattr(self._jobs, "ops", None)
        if ops is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                                "this call is served by the controller (python -m sidecar controller), not a sidecar")
        return ops

    @_errors
    async def History(self, request: pb.HistoryRequest, context: Any) -> pb.HistoryResponse:
        ops = getattr(self._jobs, "ops", None)
        if ops is not None:
            return await ops.history(request.partition)
        return await partition_history(self._store, [], request.partition)

    @_errors
    async def CompactHistory(self, request: pb.CompactHistoryRequest, context: Any) -> pb.CompactHistoryResponse:
        ops = await self._ops(context)
        return pb.CompactHistoryResponse(removed=await ops.compact_history(request.partition, request.before_epoch))

    @_errors
    async def PlanMigration(self, request: pb.MigrateRequest, context: Any) -> pb.MigrationPlan:
        ops = await self._ops(context)
        return await ops.plan(request.partition, request.to_node, force=request.force)

    @_errors
    async def SetJobControl(self, request: pb.JobControlRequest, context: Any) -> pb.JobControl:
        ops = await self._ops(context)
        if not (request.set_paused or request.set_rate):
            raise ConfigError("set_paused", "nothing to change: set set_paused and/or set_rate")
        rate = None
        if request.set_rate:
            if not request.rate_bytes_per_s >= 0 or math.isinf(request.rate_bytes_per_s):
                raise ConfigError("rate_bytes_per_s", f"must be ≥ 0 (0 = unlimited), got {request.rate_bytes_per_s}")
            rate = request.rate_bytes_per_s
        return await ops.set_control(request.id, paused=request.paused if request.set_paused else None, rate=rate)

    @_errors
    async def GetJobControl(self, request: pb.Empty, context: Any) -> pb.JobControlState:
        return (await self._ops(context)).get_controls()

    @_errors
    async def Drain(self, request: pb.DrainRequest, context: Any) -> pb.Operation:
        ops = await self._ops(context)
        return await ops.drain(request.node, parallel=request.parallel, by_size=request.by_size,
                               dry_run=request.dry_run, deadline_s=_deadline(request.cutover_deadline_s),
                               uncordon=request.uncordon)

    @_errors
    async def Balance(self, request: pb.BalanceRequest, context: Any) -> pb.Operation:
        ops = await self._ops(context)
        if request.threshold < 0 or math.isnan(request.threshold):
            raise ConfigError("threshold", f"must be ≥ 0 (a fraction of the mean load), got {request.threshold}")
        return await ops.balance(parallel=request.parallel, by_size=request.by_size, threshold=request.threshold,
                                 dry_run=request.dry_run, deadline_s=_deadline(request.cutover_deadline_s))

    @_errors
    async def GetOperation(self, request: pb.OperationRequest, context: Any) -> pb.Operation:
        return await (await self._ops(context)).get_op(request.id)

    @_errors
    async def ListOperations(self, request: pb.Empty, context: Any) -> pb.ListOperationsResponse:
        return pb.ListOperationsResponse(operations=await (await self._ops(context)).list_ops())

    @_errors
    async def AbortOperation(self, request: pb.OperationRequest, context: Any) -> pb.Operation:
        return await (await self._ops(context)).abort_op(request.id)

    async def WatchOperation(self, request: pb.OperationRequest, context: Any) -> AsyncIterator[pb.Operation]:
        ops = await self._ops(context)
        try:
            async for op in ops.watch_op(request.id):
                yield op
        except (EpochgateError, KeyError, ValueError) as exc:
            await _abort_with(context, exc)
