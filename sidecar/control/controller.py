"""``python -m sidecar controller``: the migration controller (DESIGN §6).

Any number may run; one leads, holding the Consul lock ``controller/leader``
with a TTL session. The leader watches ``jobs/`` and runs every unfinished
job (its own new ones, and any a dead leader left behind). Every controller
serves the control API — a standby accepts ``migrate`` too: the job record is
written to Consul as ``pending`` and the leader picks it up.

Like a participant, the leader stops acting once its last successful renewal
is older than its lease (< TTL): Consul cannot hand the lock to another
controller before TTL after that renewal, so two controllers never drive the
same job at once (job record writes are compare-and-sets as a second fence).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any, AsyncIterator


from gate import (
    AlreadyMigrating,
    BackendError,
    ConfigError,
    Lease,
    failure_level,
    Op,
    mover_token_from_env,
    next_blocking_index,
    node_name,
    partition_id,
    provision_mover_token,
    step,
)

from .barrier import Barrier
from .jobs import Job, JobConflict, JobRecords
from .._metrics import Metrics
from .operator import OperatorService
from .retention import RetentionConfig
from .mover import HttpHooksMover, Mover
from .retry import RetryingStore, retry_backend
from .runner import JobRunner, LostLeadership

if TYPE_CHECKING:
    from gate import ConsulHTTP

log = logging.getLogger("epochgate.controller")


class Leadership:
    """The ``controller/leader`` lock: a TTL session, renewed; ``held()`` within the lease."""

    def __init__(self, consul: ConsulHTTP, key: str, owner: str, *, ttl_s: float = 10.0,
                 clock=time.monotonic) -> None:
        self.consul, self.key, self.owner, self.ttl_s, self.clock = consul, key, owner, ttl_s, clock
        self.lease_s = ttl_s / 2
        self.session: str | None = None
        self._lease = Lease(self.lease_s, clock)
        self._lost = False
        self._holding = False

    def held(self) -> bool:
        """True while this controller holds the lock and renewed its session within the lease."""
        return (self._holding and self.session is not None and not self._lost
                and self._lease.held())

    def check(self) -> None:
        if not self.held():
            raise LostLeadership(f"controller {self.owner} no longer holds {self.key}")

    async def acquire(self) -> bool:
        if self.session is None:
            sent = self.clock()
            self.session = await self.consul.session_create(f"epochgate-controller-{self.owner}", self.ttl_s)
            self._lease.started(sent)
            self._lost = False
        self._holding = await self.consul.acquire(self.key, self.owner.encode(), self.session)
        return self._holding

    async def renew(self) -> None:
        from gate import SessionLost   # (Consul mode: py-consul is loaded already)

        try:
            await self._lease.renew(self.consul, self.session)
        except SessionLost:
            self._lost = True
            self._holding = False
            self.session = None

    async def release(self) -> None:
        self._holding = False
        sid, self.session = self.session, None
        if sid is not None:
            try:
                await self.consul.session_destroy(sid)
            except BackendError:
                pass


class Controller:
    """Leader election + job runner + ``JobService`` for the control API."""

    def __init__(self, consul_url: str, prefix: str = "epochgate/", *, token: str | None = None,
                 deadline_s: float = 10.0, extra_nodes: dict[str, str] | None = None, mover: Mover | None = None,
                 metrics: Metrics | None = None, owner: str | None = None, ttl_s: float = 10.0,
                 barrier_cls: type[Barrier] = Barrier, prebarrier_s: float = 30.0,
                 retention: RetentionConfig | None = None) -> None:
        if deadline_s <= 0:
            raise ConfigError("cutover_deadline", f"must be > 0 seconds, got {deadline_s!r}")
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.deadline_s = deadline_s
        self.prebarrier_s = prebarrier_s
        self.extra_nodes = dict(extra_nodes or {})
        self.owner = owner or f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        self.metrics = metrics or Metrics()
        self._consul_url, self._token, self._ttl = consul_url, token, ttl_s
        self.mover = mover
        self._barrier_cls = barrier_cls
        self.retention = retention
        self.ops: OperatorService | None = None
        self.runner: JobRunner | None = None
        self.job_tracer: Any = None   # sidecar/trace/jobs.py JobTracer: set before start() to trace jobs
        self._tasks: dict[str, asyncio.Task] = {}
        self._main: asyncio.Task | None = None
        self.hub: Any = None   # the push path's PushHub (Consul mode; the embedded controller has none)

    async def start(self) -> None:
        # imported here: the embedded controller (embedded.py) replaces this start and need not
        # carry py-consul, requests and aiohttp (~14 MiB resident, issue 20)
        from gate import ConsulHTTP, GroupCommit, PushHub, open_consul

        self.consul = ConsulHTTP(self._consul_url, token=self._token)
        self.consensus, store, self.replica = await open_consul(
            self._consul_url, self.prefix, self._token, wait_s=2.0)
        GroupCommit(store)   # concurrent jobs' transitions share commits (gate/_group_commit.py)
        # a Consul election is absorbed: control API calls and job steps retry BackendError (bounded)
        self.store = RetryingStore(store)
        self.records = JobRecords(self.consul, self.prefix)
        self.barrier = self._barrier_cls(self.consul, self.prefix)
        self.barrier.keep_connections = True         # per-key ack watches reuse their connections
        # The push path (issue 31, DESIGN §5): participants started with --push-from dial this
        # controller's control port; the rest are read from Consul as before. Its fence is
        # raised to the leader key's index each time this controller takes the lead.
        self.hub = PushHub(self.consensus, fence=1, wait_s=2.0, active=lambda: hasattr(self, "leadership") and self.leadership.held())
        await self.hub.start()
        self.barrier.hub = self.hub
        self.leadership = Leadership(self.consul, f"{self.prefix}controller/leader", self.owner, ttl_s=self._ttl)
        if self.mover is None:
            self.mover = HttpHooksMover()
        self.runner = JobRunner(self.store, self.records, self.barrier, self.mover, self.nodes, owner=self.owner,
                                check=self.leadership.check, metrics=self.metrics, prebarrier_s=self.prebarrier_s)
        if self.job_tracer is not None:
            self.job_tracer.install(self.runner, self.barrier)
        self.ops = OperatorService(self, self.retention)   # issue 17: history, dry runs, pause, drain
        self.ops.install(self.runner, self.mover)
        await self.ops.start()
        self._main = asyncio.create_task(self._lead(), name="controller")

    async def stop(self) -> None:
        await self._stop_work()
        await self.leadership.release()
        self.metrics.controller_leader.set(0)
        await self.replica.stop()
        if self.hub is not None:
            await self.hub.stop()
        await self.barrier.close()
        await self.consensus.close()
        await self.consul.close()

    async def _stop_work(self) -> None:
        """Stop the operator's loops, the main task and every job task, then the mover
        (shared with the embedded controller, which has no lock or replica to stop)."""
        if self.ops is not None:
            await self.ops.stop()
        if self._main is not None:
            self._main.cancel()
            await asyncio.gather(self._main, return_exceptions=True)
        await self._drop_jobs()
        if hasattr(self.mover, "close"):
            await self.mover.close()  # type: ignore[union-attr]

    async def nodes(self) -> dict[str, str]:
        nodes = dict(self.extra_nodes)
        nodes.update(await self.store.nodes())
        return nodes

    @property
    def leading(self) -> bool:
        return self.leadership.held()

    # ---- leading -------------------------------------------------------------

    async def _lead(self) -> None:
        while True:
            try:
                if not await self.leadership.acquire():
                    self.metrics.controller_leader.set(0)
                    await self._wait_lock_free()
                    continue
                log.info("controller %s: leading", self.owner)
                await self._raise_fence()
                await self._ensure_mover_token()
                self.metrics.controller_leader.set(1)
                await self._run_jobs()
            except BackendError as exc:
                log.log(failure_level(exc), "controller %s: %s", self.owner, exc)
                await asyncio.sleep(0.5)
            self.metrics.controller_leader.set(0)
            await self._drop_jobs()

    async def _raise_fence(self) -> None:
        """The push fence: the ModifyIndex of our write of the leader key — higher for every
        later leader, so participants refuse a deposed controller's pushes."""
        if self.hub is None:
            return
        entry = await self.consul.get(self.leadership.key)
        if entry is not None and entry.session == self.leadership.session and entry.modify_index > self.hub.fence:
            self.hub.fence = entry.modify_index

    async def _ensure_mover_token(self) -> None:
        """The hooks' credential (DESIGN §6): EPOCHGATE_MOVER_TOKEN, else the one under
        ``<prefix>mover/token``, created now if absent (applications with --consul read it)."""
        if not isinstance(self.mover, HttpHooksMover) or self.mover.token is not None:
            return
        self.mover.token = mover_token_from_env() or await provision_mover_token(self.consul, self.prefix)

    async def _wait_lock_free(self) -> None:
        entry, index = await self.consul.list(self.leadership.key)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            if not entry or entry[0].session is None:
                return
            entry, index = await self.consul.list(self.leadership.key, index=index, wait_s=2.0)
            if self.leadership.session is not None:
                await self.leadership.renew()

    async def _run_jobs(self) -> None:
        index = 0
        last_renew = 0.0
        while True:
            try:   # a store error (a Consul election) is not a lost lock: the lease decides
                if time.monotonic() - last_renew >= self.leadership.lease_s / 4:
                    last_renew = time.monotonic()
                    await self.leadership.renew()
                if not self.leadership.held():
                    log.warning("controller %s: lost the lock", self.owner)
                    return
                jobs, new_index = await self.records.list(index=index or None,
                                                          wait_s=self.leadership.lease_s / 4)
            except BackendError as exc:
                if not self.leadership.held():
                    raise
                log.log(failure_level(exc, logging.INFO), "controller %s: %s (retrying)", self.owner, exc)
                await asyncio.sleep(0.2)
                continue
            index = next_blocking_index(index, new_index)
            for job in jobs:
                if not job.terminal and job.id not in self._tasks:
                    self._tasks[job.id] = asyncio.create_task(self._run_one(job), name=f"job-{job.id}")

    async def _run_one(self, job: Job) -> None:
        try:
            await self.runner.run(job)   # type: ignore[union-attr]
        except (LostLeadership, JobConflict) as exc:
            log.info("job %s: %s", job.id, exc)
            await asyncio.sleep(0.1)
        except Exception:   # noqa: BLE001 - a job must not take the controller down
            log.exception("job %s crashed", job.id)
            await asyncio.sleep(0.5)
        finally:
            self._tasks.pop(job.id, None)
            if self.ops is not None:
                self.ops.job_finished(job)

    async def _drop_jobs(self) -> None:
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    # ---- JobService ------------------------------------------------------------

    async def migrate(self, partition: str, to: str, deadline_s: float | None = None, *, force: bool = False) -> Job:
        """Record a pending job (validated against the store now); the leader runs it.
        A store outage (a Consul election) is retried for up to 15 s. A cordoned
        target is refused unless ``force``."""
        partition = partition_id(partition)
        to = node_name(to, "to_node")
        if not force and (why := self.cordoned(to)):
            raise ConfigError("to_node", why)
        mine: list[Job] = []   # the record this call creates: a retry whose first create landed finds it
        return await retry_backend("migrate", lambda: self._migrate(partition, to, deadline_s, mine),
                                   self.store.retry_s, lambda exc: not isinstance(exc, JobConflict))

    def cordoned(self, node: str) -> str | None:
        """Why a move onto ``node`` is refused without ``--force`` (a drain cordoned it), or None."""
        controls = getattr(self.ops, "controls", None)
        if controls is None or node not in controls.cordoned:
            return None
        return (f"{node} is cordoned (a drain emptied it; balance leaves it alone): "
                f"`drain {node} --uncordon` first, or --force to move onto it anyway")

    async def _migrate(self, partition: str, to: str, deadline_s: float | None, mine: list[Job]) -> Job:
        jobs = await self.list()
        for job in jobs:
            if mine and job.id == mine[0].id:
                return job
        st = await self.store.state(partition)
        state = None if st is None else st[0]
        # Ask the state machine, as the store's begin will: UnknownPartition,
        # AlreadyMigrating or NoOpMove come from the one table, not a copy of it.
        step(partition, state, Op.BEGIN, to)
        assert state is not None  # (step refused an unknown partition)
        nodes = await self.nodes()
        if to not in nodes:
            raise ConfigError("to_node", f"unknown node {to!r} (known: {', '.join(sorted(nodes))})")
        for job in jobs:
            if partition in job.slots and not job.terminal:
                raise AlreadyMigrating(f"job {job.id} is already moving {partition}", partition)
        if not mine:
            mine.append(Job.new(partition, state.source, to, deadline_s or self.deadline_s))
        return await self.records.create(mine[0])

    async def reshard(self, kind: str, slot: str, to: str | None, hash_slots: int,
                      deadline_s: float | None = None) -> Job:
        """Record a pending split/merge job (validated against the table now); the leader runs it
        (DESIGN §12.6, ``reshard_job.py``)."""
        from .reshard_job import submit

        if not hasattr(getattr(self.store, "store", self.store), "begin_reshard"):
            raise ConfigError("kind", "this controller's store cannot reshard (the embedded table's job runs "
                                      "in-process: DESIGN §12.6)")
        if hash_slots < 1:
            raise ConfigError("hash_slots", f"must be the sidecars' --hash-slots (≥ 1), got {hash_slots!r}")
        return await submit(self.store, self.records, await self.nodes(), kind, slot, to, hash_slots,
                            deadline_s or self.deadline_s)

    async def get(self, job_id: str) -> Job | None:
        return await self.records.get(job_id)

    async def list(self) -> list[Job]:
        jobs, _ = await self.records.list()
        return jobs

    async def abort(self, job_id: str) -> Job | None:
        """Ask for an abort (the runner aborts at its next step or save)."""
        for _ in range(20):
            job = await self.records.get(job_id)
            if job is None or job.terminal:
                return job
            try:
                return await self.records.save(job.with_(abort_requested=True))
            except JobConflict:
                await asyncio.sleep(0.01)
        raise BackendError(f"could not record the abort of job {job_id}")

    def watch(self, job_id: str) -> AsyncIterator[Job]:
        """The job now, then on every change, until it is final."""
        return self.records.watch(job_id)
