"""Running one migration job (DESIGN §6): draining → cutover → replaying → completed.

Each step is a store transition (a compare-and-set the state machine decides)
followed by a record update (a compare-and-set on ``jobs/<id>``). A controller
that dies between the two leaves a record one step behind the store; the next
controller reconciles from the store's state before acting (``_reconcile``),
so a job is always finished or aborted, never stranded:

    store says              record says              the next controller
    Active(from)            pending                  begins
    Draining(from→to)       pending/draining         copies again (imports are upserts)
    Cutover(from→to)        draining/cutover/replay  waits for the fleet again (listing
                                                     after the commit still holds), then
                                                     replays from the saved cursor —
                                                     or aborts when no cursor was saved
    Active(to)              anything not final       completed
    Active(from), later     draining or later        aborted (someone aborted it)

Every step first checks the controller still holds its lock (``check``),
including before each import batch of a copy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

from gate._exceptions import BackendError, EpochgateError, MigrationError, UnknownPartition
from gate._store import MigrationStore
from gate._types import Phase, PartitionState

from ._barrier import Barrier, BarrierTimeout
from ._jobs import Job, JobConflict, JobRecords, PhaseRecord
from ._metrics import Metrics
from ._mover import Mover

log = logging.getLogger("epochgate.controller")


class LostLeadership(EpochgateError):
    """This controller no longer holds the lock: stop without touching the job."""


class AbortRequested(EpochgateError):
    """An operator asked to abort the job."""


class JobRunner:
    """Drives jobs to a final status. One instance per leading controller."""

    def __init__(self, store: MigrationStore, records: JobRecords, barrier: Barrier, mover: Mover,
                 nodes: Callable[[], Any], *, owner: str, check: Callable[[], None],
                 metrics: Metrics | None = None, save_progress_every_s: float = 0.5,
                 abort_retry_s: float = 30.0) -> None:
        self.store, self.records, self.barrier, self.mover = store, records, barrier, mover
        self._nodes = nodes
        self.owner = owner
        self.check = check          # raises LostLeadership
        self.metrics = metrics
        self.save_every = save_progress_every_s
        self.abort_retry_s = abort_retry_s
        self.last_barrier = None    # BarrierResult of the last cutover (benchmarks read it)
        self.hold: Callable[[Job, str], Awaitable[None]] | None = None   # pause/throttle hook (_jobctl)

    async def run(self, job: Job) -> Job:
        try:
            job = await self._save(job.with_(owner=self.owner))
            job = await self._reconcile(job)
            if job.terminal:
                return job
            if job.status == "pending":
                self._abort_if_asked(job)
                await self._held(job, "begin")
                epoch = await self.store.begin(job.partition, job.target)
                job = await self._save(job.at_phase("draining", epoch))
            if job.status == "draining" and job.cursor is None:
                await self._held(job, "copy")
                job = await self._bulk_copy(job)
            res = None
            if job.status == "draining":
                self._abort_if_asked(job)
                await self._held(job, "cutover")
                res = await self.barrier.cutover(self.store, job.partition, job.deadline_s,
                                                 before_commit=self._async_check)
                job = await self._after_barrier(job, res)
            elif job.status in ("cutover", "replaying"):
                # taken over mid-cutover: the commit happened; list now (still after it) and wait
                st = await self.store.state(job.partition)
                assert st is not None
                listed, index = await self.barrier.list()
                res = await self.barrier.wait(st[1], listed, index, time.monotonic(), job.deadline_s)
                job = await self._after_barrier(job, res)
            return await self._replay_and_complete(job, None if res is None else res.committed_at)
        except LostLeadership:
            log.warning("job %s: lost the controller lock; leaving it to the next controller", job.id)
            raise
        except JobConflict as exc:
            log.warning("job %s: record changed under us (%s); re-reading", job.id, exc)
            raise
        except BarrierTimeout as exc:
            return await self._fail(job, "aborted", f"cutover deadline {job.deadline_s:g}s passed: {exc}")
        except AbortRequested:
            return await self._fail(job, "aborted", "aborted by operator")
        except (MigrationError, BackendError, OSError, ValueError) as exc:
            return await self._fail(job, "failed", f"{type(exc).__name__}: {exc}")

    # ---- steps -------------------------------------------------------------------

    async def _bulk_copy(self, job: Job) -> Job:
        src, dst = await self._urls(job)
        t0 = time.monotonic()
        state = {"job": job}

        def progress(n: int) -> None:
            state["job"] = state["job"].with_(bytes_copied=n)

        def check() -> None:
            self.check()

        async def save_progress() -> None:   # bytes for `migrate`'s progress; picks up abort requests
            saved = job.bytes_copied
            while True:
                await asyncio.sleep(self.save_every)
                if state["job"].bytes_copied != saved:
                    saved = state["job"].bytes_copied
                    state["job"] = await self._save(state["job"])
                else:   # a stuck copy still notices an abort request
                    latest = await self.records.get(job.id)
                    if latest is not None and latest.abort_requested:
                        raise AbortRequested(job.id)

        saver = asyncio.create_task(save_progress())
        try:
            copy = asyncio.create_task(self.mover.copy(job.partition, src, dst, progress, check))
            done, _ = await asyncio.wait({copy, saver}, return_when=asyncio.FIRST_COMPLETED)
            if saver in done:          # AbortRequested / LostLeadership from a progress save
                copy.cancel()
                await asyncio.gather(copy, return_exceptions=True)
                saver.result()
            cursor = copy.result()
        finally:
            saver.cancel()
            await asyncio.gather(saver, return_exceptions=True)
        job = await self._save(state["job"].with_(cursor=cursor))
        self._observe("draining", t0)
        return job

    async def _after_barrier(self, job: Job, res: Any) -> Job:
        self.last_barrier = res
        if self.metrics is not None:
            self.metrics.ack_lag.observe(max(0.0, res.ack_lag))
            self.metrics.participants.set(len(res.listed))
        committed_wall = res.passed_wall - (res.passed_at - res.committed_at)
        phases = job.phases
        if job.phase("cutover") is None:
            phases += (PhaseRecord("cutover", res.epoch, committed_wall),)
        # "acked": the barrier passed (INV-M1 is checked from here to the flip)
        phases += (PhaseRecord("acked", res.epoch, res.passed_wall),)
        return await self._save(job.with_(phases=phases, status="cutover").at_phase("replaying", res.epoch))

    async def _replay_and_complete(self, job: Job, cutover_started: float | None) -> Job:
        if job.cursor is None:
            raise MigrationError(f"job {job.id}: no export cursor recorded; cannot replay the delta")
        src, dst = await self._urls(job)
        t0 = time.monotonic()
        base = job.bytes_copied
        state = {"job": job}

        def progress(n: int) -> None:
            state["job"] = state["job"].with_(bytes_copied=base + n)

        self.check()
        cursor = await self.mover.copy_delta(job.partition, src, dst, job.cursor, progress, self.check)
        self.check()
        epoch = await self.store.complete(job.partition)
        done = time.monotonic()
        self._observe("replaying", t0)
        if self.metrics is not None and cutover_started is not None:
            self.metrics.cutover_window.observe(done - cutover_started)
            self.metrics.migration_phase_duration.labels("cutover").observe(done - cutover_started)
        job = await self._save(state["job"].with_(cursor=cursor).at_phase("completed", epoch))
        if self.metrics is not None:
            self.metrics.migration_jobs.labels("completed").inc()
        return job

    async def _fail(self, job: Job, status: str, error: str) -> Job:
        """Abort the store back to ``from`` (when it is still this job's move) and record."""
        log.warning("job %s: %s: %s", job.id, status, error)
        epoch = 0
        # A partition left in draining/cutover blocks its writes (cutover) or the next
        # move: keep trying the store abort through a store outage (e.g. a leader election).
        end = time.monotonic() + self.abort_retry_s
        while True:
            try:
                st = await self.store.state(job.partition)
                if st is not None and st[0].migrating and st[0].source == job.source and st[0].target == job.target:
                    self.check()
                    epoch = await self.store.abort(job.partition)
                elif st is not None and st[0] == PartitionState.active(job.target) and job.status in ("replaying",):
                    return await self._save(job.at_phase("completed", st[1]))
                break
            except BackendError as exc:
                if time.monotonic() >= end:
                    error += f"; store abort failed: {exc}"
                    break
                await asyncio.sleep(0.2)
            except MigrationError as exc:
                error += f"; store abort failed: {exc}"
                break
        try:
            latest = await self.records.get(job.id)
            job = (latest or job).at_phase(status, epoch, error=error)
            job = await self._save(job)
        except BackendError as exc:
            log.warning("job %s: could not record %s: %s", job.id, status, exc)
        if self.metrics is not None:
            self.metrics.migration_jobs.labels(status).inc()
        return job

    async def _reconcile(self, job: Job) -> Job:
        st = await self.store.state(job.partition)
        if st is None:
            raise UnknownPartition(f"unknown partition {job.partition!r}", job.partition)
        state, epoch = st
        moving = state.migrating and state.source == job.source and state.target == job.target
        if job.status == "pending":
            if moving and state.phase is Phase.DRAINING:
                # the last controller died between begin and recording it: ours (one unfinished
                # job per partition), so carry on as draining and copy (imports are upserts)
                return await self._save(job.at_phase("draining", epoch))
            if state != PartitionState.active(job.source):
                raise MigrationError(f"partition {job.partition} is {state}, not Active({job.source})")
            return job
        if state == PartitionState.active(job.target):
            return await self._save(job.at_phase("completed", epoch))
        if not moving:
            return await self._save(job.at_phase("aborted", epoch, error=f"found the partition {state} on takeover"))
        if state.phase is Phase.CUTOVER and job.status == "draining":
            if job.cursor is None:
                raise MigrationError("taken over in cutover before the export cursor was saved")
            return job.with_(status="cutover")
        if state.phase is Phase.DRAINING and job.status != "draining":
            return job.with_(status="draining", cursor=None)
        return job

    # ---- helpers -----------------------------------------------------------------

    async def _urls(self, job: Job) -> tuple[str, str]:
        nodes = await self._nodes()
        try:
            return nodes[job.source], nodes[job.target]
        except KeyError as exc:
            raise MigrationError(f"no URL known for node {exc.args[0]!r}", job.partition) from exc

    async def _save(self, job: Job) -> Job:
        """CAS the record. A conflict is an operator's abort request (→ AbortRequested)
        or another controller's claim (→ LostLeadership)."""
        self.check()
        try:
            return await self.records.save(job)
        except JobConflict:
            latest = await self.records.get(job.id)
            if latest is None or (latest.owner and latest.owner != self.owner):
                raise LostLeadership(f"job {job.id} claimed by {latest.owner if latest else 'nobody'}") from None
            if latest.abort_requested and not job.terminal:
                self._abort_version = latest.version
                raise AbortRequested(job.id) from None
            raise

    async def _held(self, job: Job, phase: str) -> None:
        if self.hold is not None:
            await self.hold(job, phase)

    async def _async_check(self) -> None:
        self.check()

    def _abort_if_asked(self, job: Job) -> None:
        if job.abort_requested:
            raise AbortRequested(job.id)

    def _observe(self, phase: str, t0: float) -> None:
        if self.metrics is not None:
            self.metrics.migration_phase_duration.labels(phase).observe(time.monotonic() - t0)
