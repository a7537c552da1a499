"""A trace per migration job (issue 28): the real JobRunner and Barrier over real Consul,
two real barrier participants, one of them late; exported to a real OTLP receiver."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("opentelemetry.sdk")

from gate._consul_consensus import open_consul  # noqa: E402
from gate._sessions import ConsulHTTP  # noqa: E402
from sidecar.control.barrier import Barrier  # noqa: E402
from sidecar.control.jobs import Job, JobRecords  # noqa: E402
from sidecar.control.runner import JobRunner  # noqa: E402
from sidecar.trace.jobs import open_job_tracing  # noqa: E402
from tests._barrier_harness import Pod, wait_until  # noqa: E402
from tests._otlp_receiver import OtlpReceiver  # noqa: E402

pytestmark = [pytest.mark.consul]


class Mover:  # the hooks are not what this test is about: it copies nothing, when told to
    def __init__(self) -> None:
        self.go = asyncio.Event()

    async def copy(self, partition, source_url, target_url, progress, check=None, *, fence=0):
        await self.go.wait()
        return "7"

    async def copy_delta(self, partition, source_url, target_url, since, progress, check=None, *, fence=0):
        return "9"


async def test_job_trace_has_its_phases_and_the_late_participant(consul_agent, kv_prefix):
    consensus, store, _ = await open_consul(consul_agent.url, kv_prefix)
    consul = ConsulHTTP(consul_agent.url)
    pods = []
    with OtlpReceiver() as rcv:
        tracer, processor = open_job_tracing(rcv.url, "ctl-test")
        try:
            await store.set_node("a", "http://127.0.0.1:1")
            await store.set_node("b", "http://127.0.0.1:2")
            await store.set("t1", "a")
            pods = [await Pod(consul_agent.url, kv_prefix, pid).start() for pid in ("early", "late")]
            barrier = Barrier(consul, kv_prefix, poll_wait_s=0.2)
            mover = Mover()
            runner = JobRunner(store, JobRecords(consul, kv_prefix), barrier, mover, store.nodes, owner="me",
                               check=lambda: None, save_progress_every_s=0.05, prebarrier_s=5)
            tracer.install(runner, barrier)
            early, late = pods
            # "late" keeps a write in flight at the draining epoch: it cannot ack the cutover until it ends
            await wait_until(lambda: all(p.participant.lookup("t1") is not None for p in pods), 10)
            records = JobRecords(consul, kv_prefix)
            task = asyncio.create_task(runner.run(await records.create(Job.new("t1", "a", "b", 10.0))))
            assert await wait_until(lambda: (st := late.participant.state("t1")) is not None
                                    and st[0].phase.value == "draining", 10)
            held = late.write("t1", keep_inflight=True)   # (the copy waits for this)
            assert held.admitted
            mover.go.set()
            assert await wait_until(lambda: int(early.participant.published) > int(held.epoch), 10)
            late.gate.done("t1", held.epoch)   # now "late" may ack
            job = await task
            assert job.status == "completed", job.error
        finally:
            for p in pods:
                await p.stop()
            await asyncio.to_thread(processor.shutdown)
            await consul.close()
            await consensus.close()
    root = [s for s in rcv.spans if s["name"] == "migrate t1"]
    assert len(root) == 1 and root[0]["attributes"]["epochgate.status"] == "completed"
    assert root[0]["attributes"]["epochgate.job"] == job.id and root[0]["service"] == "epochgate-controller"
    phases = sorted((s for s in rcv.spans if s["trace_id"] == root[0]["trace_id"] and s is not root[0]),
                    key=lambda s: s["start"])
    assert [s["name"] for s in phases] == ["begin", "copy", "pre-barrier", "barrier", "delta", "flip"]
    assert all(s["parent_span_id"] == root[0]["span_id"] for s in phases)
    barrier_span = phases[3]
    acks = {e[1]["epochgate.participant"]: e for e in barrier_span["events"]}
    assert set(acks) == {"early", "late"} and all(e[0] == "ack" for e in acks.values())
    assert acks["late"][2] > acks["early"][2]   # who was late, and by how much, is on the trace
    assert acks["late"][1]["epochgate.epoch"] == acks["early"][1]["epochgate.epoch"]
