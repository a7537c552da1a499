"""The push path end to end (issue 31, DESIGN §5 "The push path"): real Consul, two example
KV nodes, three sidecars started with ``--push-from`` the controller's control port, writers
through two of them, migrations back and forth; then one sidecar is SIGKILLed (not
restarted) and the controller SIGSTOPped past its lock's TTL while a second controller
(which the sidecars do not dial) takes the lead. Every job the second controller runs
passes its barrier through the fallback (the sidecars' own Consul reads and ``sidecars/<id>``),
no client sees an error, every acknowledged write is on its final owner, and the commit logs
satisfy INV-M1/M2/M3. While the first controller leads, its barriers pass on stream acks: the
sidecars' keys in Consul stay behind the cutover epochs.
"""

from __future__ import annotations

import asyncio
import signal

import aiohttp
import pytest

from gate import ConsulHTTP
from tests._consul import free_ports

from ._fleet import ControlClient, Fleet, check_invariants, job_dicts
from .test_migrations_e2e import Writers
from gate._consul_consensus import open_consul

pytestmark = [pytest.mark.consul, pytest.mark.slow]


async def _until_pushing(http: aiohttp.ClientSession, sidecars, timeout_s: float = 30.0) -> None:
    end = asyncio.get_running_loop().time() + timeout_s
    while True:
        ups = []
        for sc in sidecars:
            async with http.get(sc.info["admin"] + "/metrics") as r:
                ups.append("\nepochgate_push_stream_up 1.0\n" in await r.text())
        if all(ups):
            return
        assert asyncio.get_running_loop().time() < end, f"push streams up: {ups}"
        await asyncio.sleep(0.1)


async def test_push_fleet_survives_a_killed_sidecar_and_a_frozen_controller(consul_agent, kv_prefix, tmp_path):
    fleet = Fleet(consul_agent.url, kv_prefix, tmp_path)
    consensus, store, _ = await open_consul(consul_agent.url, kv_prefix)
    kv = ConsulHTTP(consul_agent.url)
    (c1_port,) = free_ports(1)
    push = ["--push-from", f"127.0.0.1:{c1_port}", "--session-ttl", "10"]
    writers, tasks = Writers(), []
    try:
        nodes = await asyncio.gather(fleet.node("a"), fleet.node("b"))
        for n, name in zip(nodes, "ab"):
            await store.set_node(name, n.info["url"])
        initial = {"t1": ("a", int(await store.set("t1", "a"))), "t2": ("b", int(await store.set("t2", "b")))}
        sidecars = list(await asyncio.gather(*(fleet.sidecar(f"sc{i}", extra=push) for i in range(3))))
        c1 = await fleet.controller("c1", deadline_s=10.0, control=c1_port)
        client = ControlClient(c1.info["control"])
        where = {"t1": "a", "t2": "b"}

        async def move(client: ControlClient, p: str):
            to = "b" if where[p] == "a" else "a"
            job = await client.migrate(p, to, timeout_s=90)
            assert job.status == "completed", (p, job.status, job.error)
            where[p] = to
            return job

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=40)) as http:
            for i in (0, 1):
                for k in range(2):
                    tasks.append(asyncio.create_task(
                        writers.run(f"w{i}{k}", lambda i=i: sidecars[i], ["t1", "t2"], http)))
            await _until_pushing(http, sidecars)
            first = [await move(client, "t1" if i % 2 else "t2") for i in range(2)]
            cut = max(next(ph.epoch for ph in j.phases if ph.phase == "cutover") for j in first)
            keys, _ = await kv.list(f"{kv_prefix}sidecars/")
            behind = {e.key.rsplit("/", 1)[1]: int(e.value or b"0") for e in keys
                      if e.key.rsplit("/", 1)[1].startswith("sc")}   # kv-a/kv-b: the nodes' own participants
            assert len(behind) == 3 and all(v < cut for v in behind.values()), (behind, cut)   # acked by stream

            c2 = await fleet.controller("c2", deadline_s=10.0)   # the sidecars do not dial it
            sidecars[2].kill()                                   # SIGKILL, not restarted
            c1.signal(signal.SIGSTOP)                            # c1's streams stay open, silent
            client2 = ControlClient(c2.info["control"])
            try:
                for i in range(2):
                    await move(client2, "t1" if i % 2 else "t2")
            finally:
                c1.signal(signal.SIGCONT)
                await client2.close()
                await client.close()
            await asyncio.sleep(0.5)
            await writers.stop_and_check(tasks, http, sidecars[0])
        problems = check_invariants(fleet.commits(*nodes), await job_dicts(consul_agent.url, kv_prefix), initial)
        assert not problems, problems
    finally:
        writers.running = False
        for t in tasks:
            t.cancel()
        fleet.stop()
        await kv.close()
        await consensus.close()
