"""A Consul leader election is absorbed, not reported (issue 22): with three Consul
servers, the raft leader SIGKILLed while a migration runs, the migration in flight and
the ones asked for during the election all complete — ``Migrate``, ``SetPartition`` and
every job step retry ``BackendError`` for a bounded time (sidecar/control/retry.py) instead of
failing with the first ``No cluster leader`` / ``rpc error``."""

from __future__ import annotations

import asyncio
import time

import pytest

from gate import PartitionState
from gate._consul_consensus import open_consul
from sidecar.control.controller import Controller

from ._barrier_harness import Pod
from .test_barrier_cluster import NullMover

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


async def _final(ctl: Controller, job_id: str, timeout_s: float):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        job = await ctl.get(job_id)   # retried by nobody: this is the test's own read
        if job is not None and job.terminal:
            return job
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} not final after {timeout_s}s")


async def test_leader_killed_mid_migration_every_asked_migration_completes(consul_cluster, kv_prefix):
    leader = consul_cluster.leader_server()
    follower = next(s for s in consul_cluster.servers if s is not leader)
    consensus, store, _ = await open_consul(follower.url, kv_prefix)
    await store.set_node("a", "http://127.0.0.1:1")
    await store.set_node("b", "http://127.0.0.1:2")
    await store.set("p1", "a")
    pods = [Pod(s.url, kv_prefix, f"sc{i}") for i, s in enumerate(consul_cluster.servers) if s is not leader]
    await asyncio.gather(*(p.start() for p in pods))
    ctl = Controller(follower.url, kv_prefix, deadline_s=5.0, mover=NullMover(), owner="ctl-election")
    await ctl.start()
    try:
        for _ in range(100):
            if ctl.leading:
                break
            await asyncio.sleep(0.1)
        assert ctl.leading
        first = await ctl.migrate("p1", "b")
        leader.kill()                                   # the raft leader dies while `first` runs
        epoch = await ctl.store.set("p2", "a")          # SetPartition during the election: retried
        assert epoch > 0
        assert (await _final(ctl, first.id, 60)).status == "completed"
        second = await ctl.migrate("p1", "a")           # asked for during (or just after) the election
        third = await ctl.migrate("p2", "b")
        for job in (second, third):
            done = await _final(ctl, job.id, 60)
            assert done.status == "completed", done.error
        assert (await ctl.store.state("p1"))[0] == PartitionState.active("a")
        assert (await ctl.store.state("p2"))[0] == PartitionState.active("b")
    finally:
        await ctl.stop()
        await asyncio.gather(*(p.stop() for p in pods))
        await consensus.close()
