"""Running one migration job (DESIGN §6): draining → cutover → replaying → completed.

Each step is a store transition (a compare-and-set the state machine decides)
followed by a record update (a compare-and-set on ``jobs/<id>``). A controller
that dies between the two leaves a record one step behind the store; the next
controller reconciles from the store's state before acting (``_reconcile``),
so a job is always finished or aborted, never stranded:

    store says              record says              the next controller
    Active(from)            pending                  begins
    Draining/Cutover        pending/draining/        restarts the attempt: abort, begin
      (from→to)               cutover/replaying        again, copy again (see below)
    Active(to)              anything not final       completed
    Active(from), later     draining or later        aborted (someone aborted it)

Why restart rather than continue: the old attempt (a paused controller, or an
import delayed in the network) may still land imports on ``to``. A fresh
``begin`` gives the new attempt draining and cutover epochs above every token
the old one used, and the target refuses lower tokens (DESIGN §6 "Fencing";
``gate._fence``). The abort in between is harmless: writes keep going to
``from``, held cutover writes are released to ``from``.

Every step first checks the controller still holds its lock (``check``),
including before each import batch of a copy, and before ``enter_cutover`` and
``complete`` that the partition is still at this attempt's epoch. Store errors
(a Consul election) are retried for a bounded time (``sidecar/control/retry.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

from gate import (
    BackendError,
    EpochgateError,
    MigrationError,
    MigrationStore,
    PartitionState,
    StaleAttempt,
    StaleMover,
    UnknownPartition,
)

from .barrier import Barrier, BarrierTimeout
from .jobs import Job, JobConflict, JobRecords, PhaseRecord
from .._metrics import Metrics
from .mover import Mover
from .prebarrier import PreBarrierTimeout, pre_barrier
from .retry import RetryingStore, retry_backend

log = logging.getLogger("epochgate.controller")


class LostLeadership(EpochgateError):
    """This controller no longer holds the lock: stop without touching the job."""


class AbortRequested(EpochgateError):
    """An operator asked to abort the job."""


class JobRunner:
    """Drives jobs to a final status. One instance per leading controller."""

    # raised on without touching the job: the next controller's (a lost lock, a newer attempt)
    LEAVE: tuple[type[BaseException], ...] = (LostLeadership, StaleMover, StaleAttempt)

    def __init__(self, store: MigrationStore, records: JobRecords, barrier: Barrier, mover: Mover,
                 nodes: Callable[[], Any], *, owner: str, check: Callable[[], None],
                 metrics: Metrics | None = None, save_progress_every_s: float = 0.5,
                 abort_retry_s: float = 30.0, prebarrier_s: float = 30.0) -> None:
        # store errors during a Consul election are retried, bounded (sidecar/control/retry.py)
        self.store = store if isinstance(store, RetryingStore) else RetryingStore(store)
        self.records, self.barrier, self.mover = records, barrier, mover
        self._nodes = nodes
        self.owner = owner
        self.check = check          # raises LostLeadership
        self.metrics = metrics
        self.save_every = save_progress_every_s
        self.abort_retry_s = abort_retry_s
        self.prebarrier_s = prebarrier_s   # 0 turns the pre-barrier off (sidecar/control/prebarrier.py)
        self.retry_s = self.store.retry_s  # how long a store/record error is retried (a Consul election)
        self.hold: Callable[[Job, str], Awaitable[None]] | None = None   # pause/throttle hook (_jobctl)
        self.tracer: Any = None   # sidecar/trace/jobs.py JobTracer when tracing is on: .phase(job, name)

    async def run(self, job: Job) -> Job:
        try:
            job = await self._save(job.with_(owner=self.owner))
            if job.resharding:   # a split or merge (DESIGN §12): its steps, these hooks and outcomes
                from .reshard_job import run_job

                return await run_job(self, job)
            job = await self._reconcile(job)
            if job.terminal:
                return job
            if job.status != "pending":
                # Resumed (another controller's attempt, or ours before the lock was lost):
                # its imports may still be in flight, so never reuse its fencing tokens.
                job = await self._restart(job)
            if job.status == "pending":
                self._abort_if_asked(job)
                await self._held(job, "begin")
                self._trace(job, "begin")
                epoch = await self.store.begin(job.partition, job.target)
                job = await self._save(job.at_phase("draining", epoch))
            draining = self._epoch(job, "draining")
            await self._held(job, "copy")
            self._trace(job, "copy")
            job = await self._bulk_copy(job, draining)
            self._abort_if_asked(job)
            await self._held(job, "cutover")
            if self.prebarrier_s > 0:   # a dead participant drops out now, while writes still flow
                self._trace(job, "pre-barrier")
                await pre_barrier(self.barrier, draining, self.prebarrier_s, lambda: self._between(job))
            self._trace(job, "barrier")
            res = await self.barrier.cutover(_Cutover(self.store, job.deadline_s, draining), job.partition,
                                             job.deadline_s,
                                             before_commit=lambda: self._expect(job, draining))
            job = await self._after_barrier(job, res)
            return await self._replay_and_complete(job, res.committed_at, res.epoch)
        except self.LEAVE as exc:
            log.warning("job %s: %s; leaving it to the next controller", job.id, exc)
            raise LostLeadership(str(exc)) from exc
        except JobConflict as exc:
            log.warning("job %s: record changed under us (%s); re-reading", job.id, exc)
            raise
        except PreBarrierTimeout as exc:
            return await self._fail(job, "aborted", str(exc))
        except BarrierTimeout as exc:
            return await self._fail(job, "aborted", f"cutover deadline {job.deadline_s:g}s passed: {exc}")
        except AbortRequested:
            return await self._fail(job, "aborted", "aborted by operator")
        except (MigrationError, BackendError, OSError, ValueError) as exc:
            return await self._fail(job, "failed", f"{type(exc).__name__}: {exc}")

    async def _restart(self, job: Job) -> Job:
        """A fresh attempt of a resumed job: abort the old attempt's transition and begin
        again. The new draining and cutover epochs — the tokens this attempt's imports
        carry — are above every token the old attempt used, so whatever it still has in
        the network is refused by the target (DESIGN §6 "Fencing")."""
        self._abort_if_asked(job)
        self.check()
        await self.store.abort(job.partition)
        self._abort_if_asked(job)
        epoch = await self.store.begin(job.partition, job.target)
        log.info("job %s: resumed from %s; restarted as a fresh attempt at epoch %s", job.id, job.status, epoch)
        return await self._save(job.with_(cursor=None).at_phase("draining", epoch))

    # ---- steps -------------------------------------------------------------------

    async def _bulk_copy(self, job: Job, fence: int) -> Job:
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
            copy = asyncio.create_task(self.mover.copy(job.partition, src, dst, progress, check, fence=fence))
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
        if self.metrics is not None:
            self.metrics.ack_lag.observe(max(0.0, res.ack_lag))
            self.metrics.participants.set(len(res.listed))
        committed_wall = res.passed_wall - (res.passed_at - res.committed_at)
        phases = job.phases + (PhaseRecord("cutover", res.epoch, committed_wall),)
        # "acked": the barrier passed (INV-M1 is checked from here to the flip)
        phases += (PhaseRecord("acked", res.epoch, res.passed_wall),)
        return await self._save(job.with_(phases=phases, status="cutover").at_phase("replaying", res.epoch))

    async def _replay_and_complete(self, job: Job, cutover_started: float | None, cutover_epoch: int) -> Job:
        if job.cursor is None:
            raise MigrationError(f"job {job.id}: no export cursor recorded; cannot replay the delta")
        src, dst = await self._urls(job)
        t0 = time.monotonic()
        base = job.bytes_copied
        state = {"job": job}

        def progress(n: int) -> None:
            state["job"] = state["job"].with_(bytes_copied=base + n)

        self.check()
        self._trace(job, "delta")
        cursor = await self.mover.copy_delta(job.partition, src, dst, job.cursor, progress, self.check,
                                             fence=cutover_epoch)
        await self._expect(job, cutover_epoch)
        self.check()
        self._trace(job, "flip")
        epoch = await self.store.complete(
            job.partition, budget_s=job.deadline_s - (time.monotonic() - (cutover_started or time.monotonic())),
            at_epoch=cutover_epoch)
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
        if job.resharding:
            from .reshard_job import abort_store

            epoch, error, done = await abort_store(self, job, error)
        else:
            epoch, error, done = await self._abort_move(job, error)
        if done is not None:
            return done
        try:
            latest = await self.records.get(job.id)
            if latest is not None and latest.terminal:   # a final status is never overwritten
                log.warning("job %s: already %s; not recording %s", job.id, latest.status, status)
                return latest
            job = (latest or job).at_phase(status, epoch, error=error)
            job = await self._save(job)
        except BackendError as exc:
            log.warning("job %s: could not record %s: %s", job.id, status, exc)
        if self.metrics is not None:
            self.metrics.migration_jobs.labels(status).inc()
            if job.resharding:
                self.metrics.reshard_jobs.labels(job.kind, status).inc()
        return job

    async def _abort_move(self, job: Job, error: str) -> tuple[int, str, Job | None]:
        """``_fail``'s store part for a move: ``(epoch, error, the job if it had completed)``."""
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
                    return 0, error, await self._save(job.at_phase("completed", st[1]))
                break
            except BackendError as exc:
                if time.monotonic() >= end:
                    error += f"; store abort failed: {exc}"
                    break
                await asyncio.sleep(0.2)
            except MigrationError as exc:
                error += f"; store abort failed: {exc}"
                break
        return epoch, error, None

    async def _reconcile(self, job: Job) -> Job:
        st = await self.store.state(job.partition)
        if st is None:
            raise UnknownPartition(f"unknown partition {job.partition!r}", job.partition)
        state, epoch = st
        moving = state.migrating and state.source == job.source and state.target == job.target
        if job.status == "pending":
            if moving:   # begun, then the controller died before recording it: restart
                return job.with_(status="draining")
            if state != PartitionState.active(job.source):
                raise MigrationError(f"partition {job.partition} is {state}, not Active({job.source})")
            return job
        if state == PartitionState.active(job.target):
            return await self._save(job.at_phase("completed", epoch))
        if not moving:
            return await self._save(job.at_phase("aborted", epoch, error=f"found the partition {state} on takeover"))
        return job   # still this job's move: run() restarts it as a fresh attempt

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
            return await retry_backend(f"job {job.id}: save", lambda: self.records.save(job), self.retry_s,
                                       lambda exc: not isinstance(exc, JobConflict))
        except JobConflict:
            latest = await retry_backend(f"job {job.id}: read", lambda: self.records.get(job.id), self.retry_s)
            if latest is not None and latest.to_dict() == job.to_dict():
                return latest   # a retried save whose first try had landed
            if latest is None or (latest.owner and latest.owner != self.owner):
                raise LostLeadership(f"job {job.id} claimed by {latest.owner if latest else 'nobody'}") from None
            if latest.abort_requested and not job.terminal:
                raise AbortRequested(job.id) from None
            if latest.owner == self.owner and not latest.terminal:
                # Only the owner writes its record (besides an abort request or a takeover,
                # both handled above): this is our own earlier write whose answer we never
                # saw (a progress save cancelled in flight). Write ours on top of it.
                try:
                    return await self.records.save(job.with_(version=latest.version))
                except JobConflict:
                    pass
            raise

    def _trace(self, job: Job, phase: str) -> None:
        if self.tracer is not None:
            self.tracer.phase(job, phase)

    async def _held(self, job: Job, phase: str) -> None:
        """The pause/throttle hook (sidecar/control/jobctl.py): waits while the job or fleet is paused."""
        if self.hold is not None:
            await self.hold(job, phase)

    async def _between(self, job: Job) -> None:
        """During a long wait: still leading, and no abort asked for (re-read the record)."""
        self.check()
        latest = await self.records.get(job.id)
        self.check()
        if latest is not None and latest.abort_requested:
            raise AbortRequested(job.id)

    async def _expect(self, job: Job, epoch: int) -> None:
        """Before a transition: the partition must still be at this attempt's epoch (a
        resumed controller whose lock lapsed must not move a newer attempt along)."""
        self.check()
        st = await self.store.state(job.partition)
        self.check()
        if st is None or int(st[1]) != int(epoch):
            raise LostLeadership(f"partition {job.partition} moved on to epoch {st and int(st[1])}; "
                                 f"this attempt's is {int(epoch)}")

    @staticmethod
    def _epoch(job: Job, phase: str) -> int:
        rec = job.phase(phase)
        if rec is None or rec.epoch <= 0:
            raise MigrationError(f"job {job.id}: no {phase} epoch recorded", job.partition)
        return rec.epoch

    def _abort_if_asked(self, job: Job) -> None:
        if job.abort_requested:
            raise AbortRequested(job.id)

    def _observe(self, phase: str, t0: float) -> None:
        if self.metrics is not None:
            self.metrics.migration_phase_duration.labels(phase).observe(time.monotonic() - t0)


class _Cutover:
    """What ``Barrier.cutover`` needs of the store: ``enter_cutover``, retried through an
    outage no longer than the cutover deadline."""

    def __init__(self, store: RetryingStore, deadline_s: float, draining_epoch: int) -> None:
        self.store, self.deadline_s, self.draining_epoch = store, deadline_s, draining_epoch

    async def enter_cutover(self, partition: str) -> Any:
        # at_epoch: only this attempt's draining phase may enter cutover (a paused
        # controller's enter_cutover cannot land on a newer attempt)
        return await self.store.enter_cutover(partition, budget_s=self.deadline_s, at_epoch=self.draining_epoch)
