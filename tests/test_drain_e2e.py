"""Draining a node under writes, with real processes (issue 17): real Consul, three
example KV nodes (participants), two sidecars with writers through both, two
controllers. 30 partitions; ``drain c --parallel 3``; the fleet is paused mid-drain,
the leading controller is killed (SIGKILL), the other takes over, the fleet is
resumed, and the drain completes: c empty, 0 acknowledged writes lost (each reads
back through a sidecar), never more than 3 jobs at once, DESIGN §3 invariants hold
on the nodes' commit logs. ``balance`` then plans nothing (c is cordoned)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import grpc
import pytest

from gate._consul_consensus import open_consul
from sidecar.api.convert import job_to_dict
from gate.pb.epochgate.v1 import epochgate_pb2 as pb
from gate.pb.epochgate.v1 import epochgate_pb2_grpc as pb_grpc

from ._fleet import Fleet, check_invariants, end_leader_session, stop_writers
from .test_migrations_e2e import Writers

pytestmark = [pytest.mark.consul, pytest.mark.slow]

K = 3


def _max_overlap(jobs: list[pb.Job]) -> int:
    events = []
    for j in jobs:
        begin = next((r.at for r in j.phases if r.phase == "draining"), None)
        if begin is not None:
            events += [(begin, 1), (j.finished or time.time(), -1)]
    cur = peak = 0
    for _, d in sorted(events):
        cur += d
        peak = max(peak, cur)
    return peak


async def _leader(ctls) -> int:
    async with aiohttp.ClientSession() as http:
        for i, c in enumerate(ctls):
            if c.popen.poll() is not None:
                continue
            try:
                async with http.get(c.info["admin"] + "/readyz") as r:
                    if (await r.text()).strip() == "leader":
                        return i
            except aiohttp.ClientError:
                pass
    return -1


async def _until(pred, timeout_s: float, what: str):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        v = await pred()
        if v:
            return v
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_drain_under_writes_paused_and_resumed_across_a_controller_failover(consul_agent, kv_prefix,
                                                                                tmp_path):
    fleet = Fleet(consul_agent.url, kv_prefix, tmp_path)
    consensus, store, _ = await open_consul(consul_agent.url, kv_prefix)
    writers = Writers()
    tasks: list[asyncio.Task] = []
    channels = []
    try:
        nodes = await asyncio.gather(*(fleet.node(n) for n in "abc"))
        for n, name in zip(nodes, "abc"):
            await store.set_node(name, n.info["url"])
        parts = [f"p{i:02d}" for i in range(30)]
        initial = {p: ("abc"[i % 3], int(await store.set(p, "abc"[i % 3]))) for i, p in enumerate(parts)}
        sidecars = list(await asyncio.gather(fleet.sidecar("sc0"), fleet.sidecar("sc1")))
        ctls = [await fleet.controller("c1", deadline_s=5.0), await fleet.controller("c2", deadline_s=5.0)]
        stubs = []
        for c in ctls:
            ch = grpc.aio.insecure_channel(c.info["control"])
            channels.append(ch)
            stubs.append(pb_grpc.MigrationStub(ch))

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=40)) as http:
            for i in range(2):
                for k in range(2):
                    tasks.append(asyncio.create_task(
                        writers.run(f"w{i}{k}", lambda i=i: sidecars[i], parts, http)))
            await _until(lambda: _ready_count(writers, 100), 30, "writes flowing")
            leader = await _until(lambda: _leader_plus_one(ctls), 30, "a leading controller") - 1
            other = 1 - leader
            plan = await stubs[other].Drain(pb.DrainRequest(node="c", parallel=K, dry_run=True), timeout=10)
            assert len(plan.moves) == 10 and {m.to_node for m in plan.moves} == {"a", "b"}
            op = await stubs[other].Drain(pb.DrainRequest(node="c", parallel=K), timeout=10)

            async def some_done():
                o = await stubs[other].GetOperation(pb.OperationRequest(id=op.id), timeout=10)
                return sum(m.status == "completed" for m in o.moves) >= 3
            await _until(some_done, 60, "three moves done")
            await stubs[other].SetJobControl(pb.JobControlRequest(set_paused=True, paused=True), timeout=10)
            ctls[leader].kill()                                    # the leader dies mid-drain, fleet paused
            await end_leader_session(consul_agent.url, kv_prefix)  # its TTL running out, 10-20 s sooner
            await _until(lambda: _is_leader(ctls, other), 60, "the other controller to lead")
            o = await stubs[other].GetOperation(pb.OperationRequest(id=op.id), timeout=10)
            assert o.status == "running"
            await stubs[other].SetJobControl(pb.JobControlRequest(set_paused=True, paused=False), timeout=10)

            async def final():
                o = await stubs[other].GetOperation(pb.OperationRequest(id=op.id), timeout=10)
                return o if o.status != "running" else None
            o = await _until(final, 120, "the drain to finish")
            writers.running = False
            await asyncio.gather(*tasks)
            assert o.status == "completed", o.error

            placement = {p: s.source for p, (s, _) in (await store.partitions()).items()}
            assert "c" not in placement.values() and len(placement) == 30
            jobs = list((await stubs[other].ListJobs(pb.ListJobsRequest(), timeout=10)).jobs)
            assert _max_overlap(jobs) <= K, [(j.id, j.status) for j in jobs]
            lost = []
            for key, (p, value) in writers.acked.items():
                async with http.get(f"{sidecars[0].info['url']}/kv/{key}", headers={"X-Partition-Key": p}) as r:
                    if (r.status, await r.text()) != (200, value):
                        lost.append(key)
            assert lost == [], f"{len(lost)} acknowledged writes lost of {len(writers.acked)}"
            errors = check_invariants(fleet.commits(*nodes), [job_to_dict(j) for j in jobs], initial)
            assert errors == []
            bal = await stubs[other].Balance(pb.BalanceRequest(dry_run=True), timeout=10)
            assert list(bal.moves) == []
            print(f"drain: {len(jobs)} jobs, max {_max_overlap(jobs)} at once, {len(writers.acked)} writes acked, "
                  f"{len(writers.errors)} client errors")
    finally:
        await stop_writers(writers, tasks)
        for ch in channels:
            await ch.close()
        fleet.stop()
        await consensus.close()


async def _ready_count(writers: Writers, n: int) -> bool:
    return len(writers.acked) >= n


async def _leader_plus_one(ctls) -> int:
    return await _leader(ctls) + 1


async def _is_leader(ctls, i: int) -> bool:
    return await _leader(ctls) == i
