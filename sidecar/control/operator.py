"""The operator's day on the controller (issue 17): one object the control API calls.

``OperatorService`` hangs off a ``Controller`` (``ctl.ops``) and owns the
parts that are not the job runner: history and its compaction, dry runs,
pause/resume and the throttle, drain/balance operations. It hooks into the
runner (``runner.hold``: pause before a phase) and the mover (``mover.pace``:
the copy throttle) and runs three background loops for the controller's
lifetime: following the pause/rate switches, compacting on a schedule, and
driving operations — the last two only while this controller leads.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, AsyncIterator

from gate import BackendError, ConfigError, failure_level, node_name

from .dryrun import plan_migration, source_size
from .fleetops import Operation, OperationRecords, OperationRunner
from .history import partition_history
from .jobctl import FLEET, JobControls
from gate.pb.epochgate.v1 import epochgate_pb2 as pb
from .planner import DEFAULT_THRESHOLD, plan_balance, plan_drain
from .retention import Compactor, RetentionConfig

log = logging.getLogger("epochgate.controller")


class NotFoundOp(KeyError):
    pass


class OperatorService:
    def __init__(self, ctl: Any, retention: RetentionConfig | None = None) -> None:
        self.ctl = ctl
        self.controls = JobControls(ctl.consul, ctl.prefix)
        self.ops = OperationRecords(ctl.consul, ctl.prefix)
        self.compactor = Compactor(ctl.store, ctl.records, ctl.consensus, retention or RetentionConfig(),
                                   ctl.metrics.registry, ops=self.ops)
        self.op_runner = OperationRunner(self.ops, ctl, check=ctl.leadership.check,
                                         paused=lambda: self.controls.fleet.paused)
        self._loops: list[asyncio.Task] = []
        self._op_tasks: dict[str, asyncio.Task] = {}

    def install(self, runner: Any, mover: Any) -> None:
        async def hold(job: Any, phase: str) -> None:
            await self.controls.hold(job, runner.check, self.ctl.records, phase)

        runner.hold = hold
        if hasattr(mover, "pace"):
            mover.pace = self.controls.pacer.pace

    async def start(self, *, compaction: bool = True) -> None:
        try:
            await self.controls.refresh()
        except BackendError as exc:
            log.log(failure_level(exc), "job controls not read yet: %s", exc)
        self._loops = [asyncio.create_task(self.controls.follow(), name="job-controls"),
                       asyncio.create_task(self._drive_ops(), name="operations")]
        if compaction:
            self._loops.append(asyncio.create_task(self.compactor.loop(lambda: self.ctl.leading), name="compaction"))

    async def stop(self) -> None:
        tasks = self._loops + list(self._op_tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loops, self._op_tasks = [], {}

    def job_finished(self, job: Any) -> None:
        for partition in getattr(job, "copied", (job.partition,)):
            self.controls.pacer.stop(partition)

    # ---- operations on the leader -------------------------------------------

    async def _drive_ops(self) -> None:
        while True:
            try:
                if self.ctl.leading:
                    ops, _ = await self.ops.list()
                    for op in ops:
                        if not op.terminal and op.id not in self._op_tasks:
                            self._op_tasks[op.id] = asyncio.create_task(self._run_op(op), name=f"op-{op.id}")
                else:
                    for t in list(self._op_tasks.values()):
                        t.cancel()
            except BackendError as exc:
                log.warning("operations: %s", exc)
            await asyncio.sleep(0.5)

    async def _run_op(self, op: Operation) -> None:
        try:
            await self.op_runner.run(op)
        except asyncio.CancelledError:
            raise
        except Exception as exc:   # noqa: BLE001 - LostLeadership, a store outage: the next pass retries
            log.info("operation %s: %s: %s", op.id, type(exc).__name__, exc)
            await asyncio.sleep(0.5)
        finally:
            self._op_tasks.pop(op.id, None)

    # ---- the control API's calls ---------------------------------------------

    async def history(self, partition: str) -> pb.HistoryResponse:
        return await partition_history(self.ctl.store, await self.ctl.list(), partition)

    async def compact_history(self, partition: str, before_epoch: int) -> int:
        return await self.compactor.compact_history(partition, before_epoch)

    async def plan(self, partition: str, to: str, *, force: bool = False) -> pb.MigrationPlan:
        return await plan_migration(self.ctl, partition, to, force=force)

    async def set_control(self, job_id: str, *, paused: bool | None, rate: float | None) -> pb.JobControl:
        if job_id != FLEET:
            job = await self.ctl.get(job_id)
            if job is None:
                raise NotFoundOp(f"unknown job {job_id!r}")
        c = await self.controls.set(job_id, paused=paused, rate=rate)
        return pb.JobControl(id=job_id, paused=c.paused, rate_bytes_per_s=c.rate)

    def get_controls(self) -> pb.JobControlState:
        f = self.controls.fleet
        return pb.JobControlState(fleet=pb.JobControl(id="", paused=f.paused, rate_bytes_per_s=f.rate),
                                  jobs=[pb.JobControl(id=k, paused=v.paused, rate_bytes_per_s=v.rate)
                                        for k, v in sorted(self.controls.jobs.items())])

    async def _placement(self, by_size: bool) -> tuple[dict[str, str], list[str], dict[str, int]]:
        parts = await self.ctl.store.partitions()
        nodes = await self.ctl.nodes()
        placement = {p: s.source for p, (s, _) in parts.items() if not s.migrating}
        sizes: dict[str, int] = {}
        if by_size:
            sem = asyncio.Semaphore(8)

            async def one(p: str, node: str) -> None:
                async with sem:
                    url = nodes.get(node)
                    sizes[p] = (await source_size(url, p))[0] if url else -1

            await asyncio.gather(*(one(p, n) for p, n in placement.items()))
        return placement, sorted(nodes), sizes

    @staticmethod
    def _parallel(value: int) -> int:
        if value < 0 or value > 1000:
            raise ConfigError("parallel", f"must be 1..1000 (0 = 1), got {value}")
        return value or 1

    async def drain(self, node: str, *, parallel: int, by_size: bool, dry_run: bool,
                    deadline_s: float, uncordon: bool = False) -> pb.Operation:
        node = node_name(node, "node")
        parallel = self._parallel(parallel)
        placement, nodes, sizes = await self._placement(by_size)
        if node not in nodes:
            raise ConfigError("node", f"unknown node {node!r} (known: {', '.join(nodes)})")
        if uncordon:
            await self.controls.cordon(node, False)
            return Operation.new("drain", [], node=node).with_(error="uncordoned").to_pb()
        # a cordoned node other than this one takes nothing either
        targets = [n for n in nodes if n == node or n not in self.controls.cordoned]
        placement = {p: n for p, n in placement.items() if n in targets}
        moves = plan_drain(placement, targets, node, sizes=sizes, by_size=by_size)
        op = await self._submit(Operation.new("drain", moves, node=node, parallel=parallel, deadline_s=deadline_s),
                                dry_run)
        if not dry_run:
            await self.controls.cordon(node, True)
        return op

    async def balance(self, *, parallel: int, by_size: bool, threshold: float, dry_run: bool,
                      deadline_s: float) -> pb.Operation:
        parallel = self._parallel(parallel)
        placement, nodes, sizes = await self._placement(by_size)
        nodes = [n for n in nodes if n not in self.controls.cordoned]   # drained nodes stay empty
        placement = {p: n for p, n in placement.items() if n in nodes}
        moves = plan_balance(placement, nodes, sizes=sizes, by_size=by_size, threshold=threshold or DEFAULT_THRESHOLD)
        return await self._submit(Operation.new("balance", moves, parallel=parallel, deadline_s=deadline_s), dry_run)

    async def _submit(self, op: Operation, dry_run: bool) -> pb.Operation:
        if dry_run:
            msg = op.to_pb()
            msg.dry_run = True
            return msg
        if not op.terminal:
            for other in (await self.ops.list())[0]:
                if not other.terminal:
                    raise ConfigError("operation", f"operation {other.id} ({other.kind}) is still running; "
                                                   f"wait for it or `ops abort {other.id}`")
        return (await self.ops.create(op)).to_pb()

    async def get_op(self, op_id: str) -> pb.Operation:
        op = await self.ops.get(_op_id(op_id))
        if op is None:
            raise NotFoundOp(f"unknown operation {op_id!r}")
        return op.to_pb()

    async def list_ops(self) -> list[pb.Operation]:
        return [op.to_pb() for op in (await self.ops.list())[0]]

    async def abort_op(self, op_id: str) -> pb.Operation:
        for _ in range(20):
            op = await self.ops.get(_op_id(op_id))
            if op is None:
                raise NotFoundOp(f"unknown operation {op_id!r}")
            if op.terminal:
                return op.to_pb()
            if await self.ctl.consul.put(self.ops.dir + op.id, op.with_(abort_requested=True).encode(),
                                         cas=op.version):
                return (await self.ops.get(op.id) or op).to_pb()
            await asyncio.sleep(0.01)
        raise BackendError(f"could not record the abort of operation {op_id}")

    async def watch_op(self, op_id: str) -> AsyncIterator[pb.Operation]:
        key = self.ops.dir + _op_id(op_id)
        index, last = 0, None
        while True:
            entries, new_index = await self.ctl.consul.list(key, index=index or None, wait_s=5.0)
            index = new_index if new_index >= index else 0
            e = next((e for e in entries if e.key == key), None)
            if e is None:
                raise NotFoundOp(f"unknown operation {op_id!r}")
            if e.modify_index != last:
                last = e.modify_index
                op = Operation.from_dict(json.loads(e.value), e.modify_index)
                yield op.to_pb()
                if op.terminal:
                    return


def _op_id(value: str) -> str:
    if not value or "/" in value:
        raise ConfigError("id", f"an operation id is required, got {value!r}")
    return value
