"""The job runner's steps and takeover reconciliation (DESIGN §6), on real Consul,
with a recording mover that moves nothing (the HTTP-hooks mover runs in the
end-to-end tests)."""

from __future__ import annotations

import asyncio

import pytest

from gate import AlreadyMigrating, ConfigError, NoOpMove, PartitionState, UnknownPartition
from gate._consul_consensus import open_consul
from gate._sessions import ConsulHTTP
from sidecar.control.barrier import Barrier
from sidecar.api.convert import job_to_dict, job_to_pb
from sidecar.control.jobs import Job, JobRecords
from sidecar._metrics import Metrics
from sidecar.control.runner import JobRunner

pytestmark = [pytest.mark.consul]


class RecordingMover:
    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.fences: list[int] = []
        self.block: asyncio.Event | None = None

    async def copy(self, partition, source_url, target_url, progress, check=None, *, fence=0):
        self.calls.append(("copy", partition, source_url, target_url))
        self.fences.append(fence)
        progress(1234)
        if self.block is not None:
            await self.block.wait()
        return "7"

    async def copy_delta(self, partition, source_url, target_url, since, progress, check=None, *, fence=0):
        self.calls.append(("delta", partition, since))
        self.fences.append(fence)
        progress(10)
        return "9"


@pytest.fixture
async def env(consul_agent, kv_prefix):
    consensus, store, _ = await open_consul(consul_agent.url, kv_prefix)
    consul = ConsulHTTP(consul_agent.url)
    await store.set_node("a", "http://127.0.0.1:1")
    await store.set_node("b", "http://127.0.0.1:2")
    await store.set("t1", "a")
    records = JobRecords(consul, kv_prefix)
    mover = RecordingMover()
    metrics = Metrics()

    async def nodes():
        return await store.nodes()

    runner = JobRunner(store, records, Barrier(consul, kv_prefix, poll_wait_s=0.2), mover, nodes, owner="me",
                       check=lambda: None, metrics=metrics, save_progress_every_s=0.05, abort_retry_s=2)
    try:
        yield store, records, runner, mover, metrics, consul, kv_prefix
    finally:
        await consul.close()
        await consensus.close()


def test_job_record_maps_onto_the_proto_message():
    job = Job.new("t1", "a", "b", 5.0).at_phase("draining", 11).with_(bytes_copied=42, cursor="3")
    data = job_to_dict(job_to_pb(job))
    assert data["id"] == job.id and data["from_node"] == "a" and data["to_node"] == "b"
    assert data["status"] == "draining" and data["bytes_copied"] == 42
    assert data["phases"] == [{"phase": "draining", "epoch": 11, "at": job.phases[0].at}]
    assert Job.from_dict(job.to_dict()) == job
    with pytest.raises(ValueError, match="status"):
        Job.new("t1", "a", "b", 5.0).with_(status="sideways")
    with pytest.raises(ValueError, match="cutover_deadline_s"):
        Job.new("t1", "a", "b", 0)


async def test_runs_a_job_to_completion(env):
    store, records, runner, mover, metrics, *_ = env
    job = await runner.run(await records.create(Job.new("t1", "a", "b", 5.0)))
    assert job.status == "completed", job.error
    assert [p.phase for p in job.phases] == ["draining", "cutover", "acked", "replaying", "completed"]
    assert mover.calls == [("copy", "t1", "http://127.0.0.1:1", "http://127.0.0.1:2"), ("delta", "t1", "7")]
    assert job.bytes_copied == 1244 and job.cursor == "9"
    assert (await store.state("t1"))[0] == PartitionState.active("b")
    assert (await records.get(job.id)).status == "completed"
    assert metrics.cutover_window._sum.get() > 0   # observed once


async def test_takeover_in_cutover_restarts_with_fresh_fencing_tokens(env):
    """A job taken over (here: in cutover, by a dead controller) is restarted as a fresh
    attempt — abort, begin, copy, cutover, delta — so every token it sends is above every
    token the old attempt may still have in flight (DESIGN §6 "Fencing")."""
    store, records, runner, mover, *_ = env
    e = await store.begin("t1", "b")
    job = await records.create(Job.new("t1", "a", "b", 5.0).at_phase("draining", e).with_(cursor="5", owner="dead"))
    old_cutover = await store.enter_cutover("t1")   # the dead controller committed the cutover, then died
    job = await runner.run(job)
    assert job.status == "completed", job.error
    assert [c[0] for c in mover.calls] == ["copy", "delta"]
    assert min(mover.fences) > old_cutover and mover.fences[0] < mover.fences[1]
    assert mover.fences == [job.phase("draining").epoch, job.phase("cutover").epoch]
    assert mover.calls[1][2] == "7"   # the delta since the new attempt's own cursor
    assert job.owner == "me"
    phases = [h.phase for h in await store.history("t1")]
    assert phases[-5:] == ["cutover", "active", "draining", "cutover", "active"], phases


async def test_pending_job_begun_by_a_dead_controller_restarts(env):
    store, records, runner, mover, *_ = env
    job = await records.create(Job.new("t1", "a", "b", 5.0))
    e = await store.begin("t1", "b")   # begun, then the controller died before recording it
    job = await runner.run(job)
    assert job.status == "completed", job.error
    assert min(mover.fences) > e


async def test_takeover_after_the_flip_records_completed(env):
    store, records, runner, mover, *_ = env
    await store.begin("t1", "b")
    job = Job.new("t1", "a", "b", 5.0).at_phase("draining", 0).at_phase("cutover", 0).at_phase("replaying", 0)
    job = await records.create(job.with_(cursor="5"))
    await store.enter_cutover("t1")
    await store.complete("t1")
    job = await runner.run(job)
    assert job.status == "completed" and mover.calls == []


async def test_takeover_draining_copies_again(env):
    store, records, runner, mover, *_ = env
    e = await store.begin("t1", "b")
    job = await records.create(Job.new("t1", "a", "b", 5.0).at_phase("draining", e))
    job = await runner.run(job)
    assert job.status == "completed" and mover.calls[0][0] == "copy"


async def test_pending_job_on_a_moved_partition_fails_without_touching_it(env):
    store, records, runner, mover, *_ = env
    await store.set("t1", "b")
    job = await runner.run(await records.create(Job.new("t1", "a", "b", 5.0)))
    assert job.status == "failed"
    assert (await store.state("t1"))[0] == PartitionState.active("b")


async def test_abort_request_during_the_copy(env):
    store, records, runner, mover, *_ = env
    mover.block = asyncio.Event()
    job = await records.create(Job.new("t1", "a", "b", 5.0))
    task = asyncio.create_task(runner.run(job))
    for _ in range(100):
        cur = await records.get(job.id)
        if cur.status == "draining":
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)   # the copy is stuck now: no progress, no saves
    await records.save((await records.get(job.id)).with_(abort_requested=True))
    done = await asyncio.wait_for(task, 10)
    assert done.status == "aborted" and "operator" in done.error
    assert (await store.state("t1"))[0] == PartitionState.active("a")


async def test_barrier_deadline_aborts(env):
    store, records, runner, mover, metrics, consul, prefix = env
    runner.prebarrier_s = 0   # the cutover barrier's own deadline (tests/test_prebarrier.py has the other)
    sid = await consul.session_create("silent", 10)
    await consul.acquire(f"{prefix}sidecars/silent", b"0", sid)   # a live participant that never acks
    try:
        job = await runner.run(await records.create(Job.new("t1", "a", "b", 0.5)))
    finally:
        await consul.session_destroy(sid)
    assert job.status == "aborted" and "silent" in job.error
    assert (await store.state("t1"))[0] == PartitionState.active("a")
    assert [p.phase for p in job.phases][-1] == "aborted"
    assert mover.calls[-1][0] == "copy"                  # never replayed onto `to`


async def test_controller_service_validates_runs_watches_and_aborts(consul_agent, kv_prefix):
    from sidecar.control.controller import Controller

    mover = RecordingMover()
    ctl = Controller(consul_agent.url, kv_prefix, deadline_s=3.0, mover=mover, owner="solo")
    await ctl.start()
    try:
        await ctl.store.set_node("a", "http://127.0.0.1:1")
        await ctl.store.set_node("b", "http://127.0.0.1:2")
        await ctl.store.set("t1", "a")
        with pytest.raises(UnknownPartition):
            await ctl.migrate("nope", "b")
        with pytest.raises(NoOpMove):
            await ctl.migrate("t1", "a")
        with pytest.raises(ConfigError, match="to_node"):
            await ctl.migrate("t1", "zz")
        mover.block = asyncio.Event()
        job = await ctl.migrate("t1", "b")
        with pytest.raises(AlreadyMigrating):
            await ctl.migrate("t1", "b")
        seen = []

        async def follow():
            async for j in ctl.watch(job.id):
                seen.append(j.status)

        watcher = asyncio.create_task(follow())
        for _ in range(200):
            if ctl.leading and (await ctl.get(job.id)).status == "draining":
                break
            await asyncio.sleep(0.02)
        mover.block.set()
        await asyncio.wait_for(watcher, 15)
        assert seen[0] in ("pending", "draining") and seen[-1] == "completed"
        assert [j.id for j in await ctl.list()] == [job.id]
        mover.block = asyncio.Event()
        job2 = await ctl.migrate("t1", "a")
        await asyncio.sleep(0.2)
        await ctl.abort(job2.id)
        mover.block.set()
        for _ in range(200):
            j2 = await ctl.get(job2.id)
            if j2.terminal:
                break
            await asyncio.sleep(0.02)
        assert j2.status == "aborted"
        assert (await ctl.store.state("t1"))[0] == PartitionState.active("b")
    finally:
        await ctl.stop()


async def test_controller_process_token_and_gate_fails_closed(consul_agent, kv_prefix, tmp_path):
    import grpc

    from gate.pb.epochgate.v1 import epochgate_pb2 as pb
    from gate.pb.epochgate.v1 import epochgate_pb2_grpc as pb_grpc

    from ._fleet import Fleet

    consensus, store, _ = await open_consul(consul_agent.url, kv_prefix)
    await store.set("t1", "a")
    fleet = Fleet(consul_agent.url, kv_prefix, tmp_path)
    try:
        ctl = await fleet.controller("c", extra=["--token", "s3cret"])
        async with grpc.aio.insecure_channel(ctl.info["control"]) as ch:
            mig, gate = pb_grpc.MigrationStub(ch), pb_grpc.GateStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await mig.ListJobs(pb.ListJobsRequest(), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            md = (("authorization", "Bearer s3cret"),)
            assert list((await mig.ListJobs(pb.ListJobsRequest(), metadata=md, timeout=5)).jobs) == []
            for _ in range(50):   # its replica reads the table
                r = await gate.AdmitWrite(pb.AdmitWriteRequest(partition="t1", epoch=1), metadata=md, timeout=5)
                if r.reason:
                    break
                await asyncio.sleep(0.1)
            assert not r.admitted and r.reason == "fail_closed"   # not a barrier participant (rule 6)
    finally:
        fleet.stop()
        await consensus.close()
