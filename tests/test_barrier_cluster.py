"""The barrier across a Consul leader failure (3-server cluster, raft_multiplier=1),
on the Consul path and on the push path (issue 31: the sidecars follow the controller's
Fleet/Follow stream; the hub's own log watch rides out the election).

Three in-process sidecars (participant + write gate), one per server, write
continuously; an in-process controller (on a follower) runs migrations back
and forth with a mover that moves nothing (data movement is not what this
checks). The leader server is SIGKILLed mid-run. Every job ends completed,
aborted or failed with the store back at a settled placement, and no write
was admitted at an epoch older than a completed job's cutover after its
barrier passed (what would commit on ``from`` after the delta was copied).
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from gate import PushHub
from gate._consul_consensus import open_consul
from sidecar.control.controller import Controller

from ._barrier_harness import Pod

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

P = "p1"


class NullMover:
    async def copy(self, partition, source_url, target_url, progress, check=None, *, fence=0):
        progress(0)
        return "0"

    async def copy_delta(self, partition, source_url, target_url, since, progress, check=None, *, fence=0):
        return since

    async def close(self):
        pass


async def _settled(ctl: Controller, job_id: str, timeout_s: float):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            job = await ctl.get(job_id)
            if job is not None and job.terminal:
                return job
        except Exception:  # noqa: BLE001 - the store may be electing a leader
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} not final after {timeout_s}s")


@pytest.mark.parametrize("push", [False, True], ids=["consul", "push"])
async def test_consul_leader_killed_mid_migrations(consul_cluster, kv_prefix, push):
    leader = consul_cluster.leader_server()
    follower = next(s for s in consul_cluster.servers if s is not leader)
    consensus, store, _ = await open_consul(follower.url, kv_prefix)
    await store.set_node("a", "http://127.0.0.1:1")
    await store.set_node("b", "http://127.0.0.1:2")
    await store.set(P, "a")
    ctl = Controller(follower.url, kv_prefix, deadline_s=4.0, mover=NullMover(), owner="ctl-test")
    await ctl.start()
    server, target = None, None
    if push:   # the controller's hub on a loopback port, as its control API serves it
        server = grpc.aio.server(options=PushHub.server_options())
        ctl.hub.add_to(server)
        target = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
        await server.start()
    pods = [Pod(s.url, kv_prefix, f"sc{i}", push_target=target) for i, s in enumerate(consul_cluster.servers)]
    await asyncio.gather(*(p.start() for p in pods))
    running = True

    async def write(pod: Pod) -> None:
        while running:
            pod.write(P)
            await asyncio.sleep(0.003)

    writers = [asyncio.create_task(write(p)) for p in pods]
    jobs = []
    try:
        for _ in range(100):
            if ctl.leading and (not push or all(p.participant.push_up for p in pods)):
                break
            await asyncio.sleep(0.1)
        assert not push or all(p.participant.push_up for p in pods), "the streams never came up"
        where = "a"
        for i in range(8):
            if i == 3:
                leader.kill()          # the Consul leader dies mid-run
            to = "b" if where == "a" else "a"
            for _ in range(100):       # a migrate may fail while the cluster elects
                try:
                    job = await ctl.migrate(P, to)
                    break
                except Exception:  # noqa: BLE001
                    await asyncio.sleep(0.2)
            job = await _settled(ctl, job.id, 60)
            jobs.append(job)
            st = await store.state(P)
            assert st is not None and not st[0].migrating, (job, st)
            where = st[0].source
    finally:
        running = False
        await asyncio.gather(*writers)
        await asyncio.gather(*(p.stop() for p in pods))
        await ctl.stop()
        if server is not None:
            await server.stop(None)
        await consensus.close()
    print([(j.status, j.error[:80]) for j in jobs])
    assert sum(j.status == "completed" for j in jobs) >= 4, [(j.status, j.error) for j in jobs]
    for j in jobs:
        if j.status != "completed":
            continue
        cut, acked = j.phase("cutover"), j.phase("acked")
        lost = [a for p in pods for a in p.log if a.admitted and a.epoch < cut.epoch and a.t > acked.at]
        assert not lost, (j, lost[:3])
    assert sum(a.admitted for p in pods for a in p.log) > 100
    if push:   # the barrier was passed on stream acks (else this tested the fallback only)
        assert ctl.hub.pushes > 0 and ctl.hub.acks >= 3, (ctl.hub.pushes, ctl.hub.acks)
