"""A scripted stand-in for the controller's JobService (sidecar/control/jobs.py) so the
control API and the CLI can be exercised without Consul or a mover.

It drives the real store's transitions (begin → enter_cutover → complete, or
abort) and records every status as a snapshot, so ``watch`` yields each status
exactly once, in order. The outcome is scripted per partition via
``outcomes`` (default: completed).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import AsyncIterator

from gate import EmbeddedStore, UnknownPartition

TERMINAL = ("completed", "failed", "aborted")


@dataclass
class FakeJob:
    id: str
    partition: str
    from_node: str
    to_node: str
    status: str = "pending"
    error: str = ""
    bytes_copied: int = 0
    started: float = field(default_factory=time.time)
    finished: float | None = None
    phases: list = field(default_factory=list)

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        d["phases"] = [dict(p) for p in self.phases]
        d["extra_field_the_wire_ignores"] = 1
        return d


class Snapshot:
    def __init__(self, data: dict) -> None:
        self._data = data

    def to_dict(self) -> dict:
        return self._data


class FakeJobs:
    def __init__(self, store: EmbeddedStore, outcomes: dict[str, str] | None = None, auto: bool = True) -> None:
        self.store = store
        self.outcomes = outcomes or {}
        self.auto = auto
        self.jobs: dict[str, FakeJob] = {}
        self.history: dict[str, list[dict]] = {}
        self.watchers: dict[str, int] = {}
        self.changed = asyncio.Condition()
        self.tasks: list[asyncio.Task] = []

    async def migrate(self, partition: str, to: str, deadline_s: float | None, *, force: bool = False) -> FakeJob:
        st = await self.store.state(partition)
        if st is None:
            raise UnknownPartition(f"unknown partition {partition!r}", partition)
        job = FakeJob(f"j{len(self.jobs) + 1}", partition, st[0].source, to, error=f"deadline={deadline_s}")
        self.jobs[job.id] = job
        self.history[job.id] = [job.to_dict()]
        if self.auto:
            self.tasks.append(asyncio.create_task(self._run(job)))
        return job

    async def _run(self, job: FakeJob) -> None:
        # Wait for a follower so every status is observable (the CLI test checks each line).
        async with self.changed:
            await self.changed.wait_for(lambda: self.watchers.get(job.id, 0) > 0 or job.status in TERMINAL)
        if job.status in TERMINAL:  # aborted before anyone followed it
            return
        outcome = self.outcomes.get(job.partition, "completed")
        await self.store.begin(job.partition, job.to_node)
        await self.advance(job.id, "draining")
        if outcome == "failed":
            await self.store.abort(job.partition)
            job.error = "mover: export from a failed: connection refused"
            await self.advance(job.id, "failed")
            return
        await self.store.enter_cutover(job.partition)
        await self.advance(job.id, "cutover")
        if outcome == "aborted":
            await self.store.abort(job.partition)
            job.error = "cutover deadline passed: 1 participant did not ack"
            await self.advance(job.id, "aborted")
            return
        await self.advance(job.id, "replaying")
        await self.store.complete(job.partition)
        job.error = ""
        await self.advance(job.id, "completed")

    async def get(self, job_id: str) -> FakeJob | None:
        return self.jobs.get(job_id)

    async def list(self) -> list[FakeJob]:
        return list(self.jobs.values())

    async def abort(self, job_id: str) -> FakeJob | None:
        job = self.jobs.get(job_id)
        if job is not None and job.status not in TERMINAL:
            st = await self.store.state(job.partition)
            if st is not None and st[0].migrating:
                await self.store.abort(job.partition)
            await self.advance(job_id, "aborted")
        return job

    async def advance(self, job_id: str, status: str) -> None:
        async with self.changed:
            job = self.jobs[job_id]
            job.status = status
            job.bytes_copied += 1000
            st = await self.store.state(job.partition)
            job.phases.append({"phase": status, "epoch": int(st[1]) if st else 0, "at": time.time()})
            if status in TERMINAL:
                job.finished = time.time()
            self.history[job_id].append(job.to_dict())
            self.changed.notify_all()

    async def watch(self, job_id: str) -> AsyncIterator[Snapshot]:
        async with self.changed:
            i = len(self.history[job_id]) - 1  # start from the latest record, then every change in order
            self.watchers[job_id] = self.watchers.get(job_id, 0) + 1
            self.changed.notify_all()
        try:
            while True:
                async with self.changed:
                    await self.changed.wait_for(lambda: len(self.history[job_id]) > i)
                    snap = self.history[job_id][i]
                i += 1
                yield Snapshot(snap)
                if snap["status"] in TERMINAL:
                    return
        finally:
            self.watchers[job_id] -= 1

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
