"""The pre-barrier (sidecar/control/prebarrier.py): a participant that stopped answering is
waited out while the partition is still draining — writes flowing — so the cutover
only waits for participants that acked moments ago. Real Consul, the real runner,
a mover that moves nothing."""

from __future__ import annotations

import asyncio

import pytest

from gate import PartitionState
from gate._consul_consensus import open_consul
from gate._sessions import ConsulHTTP
from sidecar.control.barrier import Barrier, BarrierTimeout
from sidecar.control.jobs import Job, JobRecords
from sidecar.control.runner import JobRunner

from .test_controller_jobs import RecordingMover

pytestmark = [pytest.mark.consul]


@pytest.fixture
async def env(consul_agent, kv_prefix):
    consensus, store, _ = await open_consul(consul_agent.url, kv_prefix)
    consul = ConsulHTTP(consul_agent.url)
    await store.set_node("a", "http://127.0.0.1:1")
    await store.set_node("b", "http://127.0.0.1:2")
    await store.set("t1", "a")
    records = JobRecords(consul, kv_prefix)

    async def nodes():
        return await store.nodes()

    def runner(prebarrier_s: float) -> JobRunner:
        return JobRunner(store, records, _LastCutover(consul, kv_prefix, poll_wait_s=0.2), RecordingMover(), nodes,
                         owner="me", check=lambda: None, save_progress_every_s=0.05, abort_retry_s=2,
                         prebarrier_s=prebarrier_s)
    try:
        yield store, records, runner, consul, kv_prefix
    finally:
        await consul.close()
        await consensus.close()


class _LastCutover(Barrier):
    """Keeps the last cutover's result (whom it listed) and the outcome of every wait
    (the pre-barrier's slices included): (epoch, participants still pending)."""
    last = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.waits: list[tuple[int, set[str]]] = []

    async def cutover(self, *args, **kwargs):
        self.last = await super().cutover(*args, **kwargs)
        return self.last

    async def wait(self, epoch, *args, **kwargs):
        try:
            res = await super().wait(epoch, *args, **kwargs)
        except BarrierTimeout as exc:
            self.waits.append((epoch, set(exc.result.pending)))
            raise
        self.waits.append((epoch, set(res.pending)))
        return res


async def test_a_silent_participant_is_waited_out_before_the_cutover(env):
    """A participant that never acks (a SIGKILLed sidecar whose session Consul has not
    expired yet) holds the pre-barrier, not the cutover: once its session ends, the job
    enters cutover and completes, and the cutover barrier never listed it."""
    store, records, runner, consul, prefix = env
    sid = await consul.session_create("dead", 10)
    await consul.acquire(f"{prefix}sidecars/dead", b"0", sid)
    r = runner(prebarrier_s=20)
    job = await records.create(Job.new("t1", "a", "b", 0.5))   # a cutover deadline it could never wait out
    task = asyncio.create_task(r.run(job))
    for _ in range(200):   # draining, and no cutover committed while the dead one is listed
        if (await records.get(job.id)).status == "draining" and r.mover.calls:
            break
        await asyncio.sleep(0.02)
    # the event that matters: a pre-barrier slice ended with the dead one still pending
    for _ in range(500):
        if any(pending == {"dead"} for _, pending in r.barrier.waits):
            break
        await asyncio.sleep(0.02)
    assert any(pending == {"dead"} for _, pending in r.barrier.waits), r.barrier.waits
    st, _ = await store.state("t1")
    assert st == PartitionState.draining("a", "b") and not task.done()
    await consul.session_destroy(sid)   # what Consul does when the TTL runs out
    done = await asyncio.wait_for(task, 10)
    assert done.status == "completed", done.error
    assert "dead" not in {p.id for p in r.barrier.last.listed}
    assert [h.phase for h in await store.history("t1")][-3:] == ["draining", "cutover", "active"]


async def test_pre_barrier_deadline_aborts_while_writes_still_flow(env):
    store, records, runner, consul, prefix = env
    sid = await consul.session_create("silent", 10)
    await consul.acquire(f"{prefix}sidecars/silent", b"0", sid)
    try:
        job = await runner(prebarrier_s=0.5).run(await records.create(Job.new("t1", "a", "b", 5.0)))
    finally:
        await consul.session_destroy(sid)
    assert job.status == "aborted" and "pre-barrier" in job.error and "silent" in job.error
    assert (await store.state("t1"))[0] == PartitionState.active("a")
    # never entered cutover: no write was ever held for it
    assert "cutover" not in [h.phase for h in await store.history("t1")]


async def test_abort_request_is_noticed_during_the_pre_barrier(env):
    store, records, runner, consul, prefix = env
    sid = await consul.session_create("silent", 10)
    await consul.acquire(f"{prefix}sidecars/silent", b"0", sid)
    try:
        job = await records.create(Job.new("t1", "a", "b", 5.0))
        task = asyncio.create_task(runner(prebarrier_s=30).run(job))
        for _ in range(200):
            if (await records.get(job.id)).cursor is not None:
                break
            await asyncio.sleep(0.02)
        await records.save((await records.get(job.id)).with_(abort_requested=True))
        done = await asyncio.wait_for(task, 10)
    finally:
        await consul.session_destroy(sid)
    assert done.status == "aborted" and "operator" in done.error
