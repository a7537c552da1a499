"""A split or merge as a controller job (DESIGN §12.6, §6): submitted as a ``jobs/<id>`` record
(``kind`` split|merge, ``sources``, ``into``, ``hash_slots``) and run by the leading controller's
``JobRunner`` with its own fencing, retries, pause, throttle and abort requests — the steps are
``reshard.run_reshard``'s, the record, lock and pause checks between them are the runner's
(``JobSteps``).

A controller taking a reshard job over reconciles it from the table before acting, as a move's
(``runner.py``), and never reuses the old attempt's fencing tokens:

    table says                                   the next controller
    sources draining/cutover into this job's      abort, then a fresh attempt (new E1 > old tokens)
    sources gone, destinations active             clean up the sources at the flip's epoch; completed
    sources active (an abort), job not pending    clean up the destinations at the abort's epoch; aborted
    sources active, job pending                   begins

so a clean-up the old leader did not finish is finished by the next one (DESIGN §12.4).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Mapping

from gate import AlreadyMigrating, BackendError, ConfigError, MigrationError, PartitionState

from .jobs import Job, JobKind
from .prebarrier import pre_barrier
from .reshard import ReshardPlan, Steps, cleanup, fleet_barrier, plan_merge, plan_of, plan_split, run_reshard

JobRunner = Any   # runner.JobRunner (which imports this module when it meets a reshard job)

log = logging.getLogger("epochgate.controller")


async def submit(store: Any, records: Any, nodes: Mapping[str, str], kind: str, slot: str, to: str | None,
                 hash_slots: int, deadline_s: float) -> Job:
    """Validate a split/merge of ``slot`` against the table now and record it ``pending``; the
    leading controller runs it (``ConfigError`` naming the field, ``AlreadyMigrating``)."""
    make = {JobKind.SPLIT.value: plan_split, JobKind.MERGE.value: plan_merge}.get(kind)
    if make is None:
        raise ConfigError("kind", f"expected split or merge, got {kind!r}")
    plan = make(await store.partitions(), hash_slots, slot, to)
    for _, node in plan.into:
        if node not in nodes:
            raise ConfigError("to", f"unknown node {node!r} (known: {', '.join(sorted(nodes))})")
    touched = {p for p, _ in plan.sources + plan.into}
    jobs, _ = await records.list()
    for j in jobs:
        if not j.terminal and touched & set(j.slots):
            raise AlreadyMigrating(f"job {j.id} is already moving {sorted(touched & set(j.slots))[0]}", slot)
    return await records.create(job_of(plan, slot, hash_slots, deadline_s))


def job_of(plan: ReshardPlan, slot: str, hash_slots: int, deadline_s: float) -> Job:
    source = plan.sources[0][1]
    target = next((n for _, n in plan.into if n != source), source)
    return Job.new(slot, source, target, deadline_s, kind=plan.kind, sources=plan.sources, into=plan.into,
                   hash_slots=hash_slots)


class JobSteps(Steps):
    """The runner's hooks between a reshard's steps: the record saved at each status, the lock
    checked before each import batch and transition, pause and abort requests before each phase."""

    reraise = True   # the runner records the outcome

    def __init__(self, runner: JobRunner, job: Job) -> None:
        self.runner, self.job = runner, job
        self.leave = runner.LEAVE   # the next controller's job, as for a move

    def check(self) -> None:
        self.runner.check()

    def progress(self, n: int) -> None:
        self.job = self.job.with_(bytes_copied=n)

    async def before(self, phase: str) -> None:
        await self.runner._between(self.job)
        await self.runner._held(self.job, phase)
        self.runner._trace(self.job, phase)

    async def at(self, status: str, epoch: int) -> None:
        self.job = await self.runner._save(self.job.at_phase(status, epoch))


async def run_job(runner: JobRunner, job: Job) -> Job:
    """Run (or take over) a reshard job to a final status; exceptions as ``JobRunner.run`` maps them."""
    plan = plan_of(job.kind, job.sources, job.into, job.hash_slots)
    urls = await runner._nodes()
    for _, node in plan.sources + plan.into:
        if node not in urls:
            raise MigrationError(f"no URL known for node {node!r}", job.partition)
    job = await _reconcile(runner, job, plan, urls)
    if job.terminal:
        return job
    steps = JobSteps(runner, job)
    prebarrier = None
    if runner.prebarrier_s > 0:   # a dead participant drops out now, while writes still flow
        async def prebarrier(sources: list[str], epoch: int) -> None:
            await pre_barrier(runner.barrier, epoch, runner.prebarrier_s, lambda: runner._between(steps.job))
    res = await run_reshard(plan, runner.store, runner.mover, urls, fleet_barrier(runner.barrier, job.deadline_s),
                            prebarrier, steps)
    if runner.metrics is not None:
        runner.metrics.cutover_window.observe(res.window_s)
        runner.metrics.migration_jobs.labels("completed").inc()
        runner.metrics.reshard_jobs.labels(job.kind, "completed").inc()
    return await runner._save(steps.job.at_phase("completed", res.epochs["flip"]))


def _where(table: Mapping[str, Any], pairs: Any) -> list[Any]:
    return [table.get(p) for p, _ in pairs]


def _active(got: list[Any], pairs: Any) -> bool:
    return all(g is not None and g[0] == PartitionState.active(n) for g, (_, n) in zip(got, pairs))


async def _reconcile(runner: JobRunner, job: Job, plan: ReshardPlan, urls: Mapping[str, str]) -> Job:
    table = await runner.store.partitions()
    srcs, dests = _where(table, plan.sources), _where(table, plan.into)
    if all(g is not None and g[0].into == plan.into for g in srcs):
        # this job's attempt (ours before the lock was lost, or a dead leader's): its imports may be
        # in flight, so abort it and begin afresh (tokens above all of its)
        runner.check()
        await runner.store.abort_all([p for p, _ in plan.sources])
        log.info("job %s: resumed from %s; restarting the %s as a fresh attempt", job.id, job.status, job.kind)
        return job
    if job.status != "pending" and all(g is None for g in srcs) and _active(dests, plan.into):
        fence = max(int(g[1]) for g in dests)   # the flip's epoch (or later): above every token of S
        await cleanup(runner.mover, plan.sources, urls, fence, best_effort=False)
        return await runner._save(job.at_phase("completed", fence))
    if _active(srcs, plan.sources):
        if job.status == "pending":
            return job
        fence = max(int(g[1]) for g in srcs)
        await cleanup(runner.mover, plan.into, urls, fence)
        return await runner._save(job.at_phase("aborted", fence, error="found the slots active on takeover"))
    raise MigrationError(f"job {job.id}: the table holds neither {[p for p, _ in plan.sources]} nor "
                         f"{[p for p, _ in plan.into]} as this {job.kind} left them", job.partition)


async def abort_store(runner: JobRunner, job: Job, error: str) -> tuple[int, str, Job | None]:
    """``JobRunner._fail``'s store part for a reshard: abort this job's attempt if the table still
    shows it (and clean up its destinations), or finish a flipped one. ``(epoch, error, done)``."""
    plan = plan_of(job.kind, job.sources, job.into, job.hash_slots)
    job = await runner.records.get(job.id) or job
    end = time.monotonic() + runner.abort_retry_s
    while True:
        try:
            urls = await runner._nodes()
            table = await runner.store.partitions()
            srcs = _where(table, plan.sources)
            if all(g is not None and g[0].into == plan.into for g in srcs):
                runner.check()
                epoch = await runner.store.abort_all([p for p, _ in plan.sources])
                await cleanup(runner.mover, plan.into, urls, int(epoch))
                return int(epoch), error, None
            if job.status == "replaying" and all(g is None for g in srcs):
                return 0, error, await _reconcile(runner, job, plan, urls)
            if job.status != "pending" and _active(srcs, plan.sources):   # run_reshard aborted it: that epoch
                return max(int(g[1]) for g in srcs), error, None
            return 0, error, None
        except BackendError as exc:
            if time.monotonic() >= end:
                return 0, f"{error}; store abort failed: {exc}", None
            await asyncio.sleep(0.2)
        except MigrationError as exc:
            return 0, f"{error}; store abort failed: {exc}", None
