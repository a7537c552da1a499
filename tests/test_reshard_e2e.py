"""Resharding a fleet end to end (issue 29, DESIGN §12): real Consul, three example-app nodes that are
barrier participants, three sidecars with --hash-slots 8, writers on every slot through two of them.
All 8 slots split to 16 (the new halves of four of them onto a new node c), then merged back; a
sidecar is SIGKILLed mid-split (after begin, before the cutover) and restarted. Then: no client error,
every acknowledged write is its key's value on exactly the node the final table names, under its slot,
no row is left anywhere else, and the commit logs hold every acknowledged write.

The jobs are driven from the test with ``sidecar.control.reshard.run_reshard`` on the Consul store
and the fleet barrier — not yet by the controller process (DESIGN §12.6). Run with ``-s`` for the
write-unavailability window per split and merge."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import statistics

import aiohttp
import pytest

from gate import ConsulHTTP, key_hash, provision_mover_token, resolve_slot
from gate._consul_consensus import open_consul
from sidecar.control.barrier import Barrier
from sidecar.control.mover import HttpHooksMover
from sidecar.control.reshard import fleet_barrier, plan_merge, plan_split, run_reshard

from ._fleet import Fleet

pytestmark = [pytest.mark.consul, pytest.mark.slow]
KEYS = [f"k{i}" for i in range(64)]


def _rows(path):
    with sqlite3.connect(path) as c:
        return c.execute("SELECT partition, key, value FROM kv").fetchall()


def _check(nodes, table, acked):
    """Each key's last acknowledged write is its value under its slot on exactly the node the table
    names; no row is under a slot its node does not hold (nothing left behind)."""
    where = {}
    for n, p in nodes.items():
        for slot, key, value in _rows(p.info["data"] / "kv.sqlite"):
            assert slot in table and str(table[slot][0].source) == n, f"left behind: {key} under {slot} on {n}"
            assert key not in where, f"{key} twice"
            where[key] = (n, slot, int(value))
    for k in KEYS:
        slot, (st, _) = resolve_slot(key_hash(k), 8, table.get)
        assert where[k] == (str(st.source), slot, acked[k]), k


async def test_split_8_to_16_and_back_under_writers_and_a_sigkill(consul_agent, kv_prefix, tmp_path):
    fleet = Fleet(consul_agent.url, kv_prefix, tmp_path)
    consensus, store, _ = await open_consul(consul_agent.url, kv_prefix)
    consul = ConsulHTTP(consul_agent.url)
    acked: dict[str, int] = {}
    errors: list[str] = []
    running = [True]
    paused, busy = asyncio.Event(), [0]
    tasks: list[asyncio.Task] = []
    mover = None
    try:
        token = await provision_mover_token(consul, kv_prefix)
        nodes = {n: await fleet.node(n) for n in ("a", "b", "c")}
        for n, p in nodes.items():
            await store.set_node(n, p.info["url"])
        for i in range(8):
            await store.set(f"slot-{i}", "a" if i % 2 == 0 else "b")
        sidecars = [await fleet.sidecar(f"sc{i}", extra=["--hash-slots", "8"]) for i in range(3)]
        urls = {n: p.info["url"] for n, p in nodes.items()}
        mover = HttpHooksMover(token=token)
        barrier = fleet_barrier(Barrier(consul, kv_prefix), deadline_s=20.0)

        async def writer(http, sc, keys):
            v = 0
            while running[0]:
                for k in keys:
                    while paused.is_set() and running[0]:
                        await asyncio.sleep(0.01)
                    v += 1
                    busy[0] += 1
                    try:
                        async with http.put(f"{sc.info['url']}/kv/{k}", data=str(v),
                                            headers={"X-Partition-Key": k}) as r:
                            if r.status == 200:
                                acked[k] = v
                            else:
                                errors.append(f"{k}={v}: {r.status} {(await r.read())[:200]!r}")
                    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                        errors.append(f"{k}={v}: {type(exc).__name__}")
                    finally:
                        busy[0] -= 1
                    if not running[0]:
                        return

        async def killed_mid_split(sources, epoch):
            sidecars[2].kill()
            sidecars[2] = await fleet.sidecar("sc2", ports=sidecars[2].info["ports"], extra=["--hash-slots", "8"])
            await barrier(sources, epoch)

        async def checked():   # writers paused, nothing in flight: the data matches the table now
            paused.set()
            while busy[0]:
                await asyncio.sleep(0.01)
            _check(nodes, await store.partitions(), acked)
            paused.clear()

        windows: dict[str, list[float]] = {"split": [], "merge": []}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=40)) as http:
            for i in range(4):
                tasks.append(asyncio.create_task(writer(http, sidecars[i % 2], KEYS[i::4])))
            while len(acked) < len(KEYS):
                await asyncio.sleep(0.02)
            for i in range(8):
                plan = plan_split(await store.partitions(), 8, f"slot-{i}", to="c" if i < 4 else None)
                res = await run_reshard(plan, store, mover, urls, barrier,
                                        prebarrier=killed_mid_split if i == 2 else barrier)
                assert res.status == "completed", (i, res.error)
                windows["split"].append(res.window_s)
                await checked()
            assert len(await store.partitions()) == 16
            for i in range(8):
                plan = plan_merge(await store.partitions(), 8, f"slot-{i + 8}-of-16", to="a" if i % 2 == 0 else "b")
                res = await run_reshard(plan, store, mover, urls, barrier, prebarrier=barrier)
                assert res.status == "completed", (i, res.error)
                windows["merge"].append(res.window_s)
                await checked()
            await asyncio.sleep(0.3)
            running[0] = False
            await asyncio.gather(*tasks)
        final = await store.partitions()
        assert sorted(final) == sorted(f"slot-{i}" for i in range(8))
        assert errors == [], errors[:10]
        _check(nodes, final, acked)
        logged = set()
        for p in nodes.values():
            for line in (p.info["data"] / "commits.jsonl").read_text().splitlines():
                c = json.loads(line)
                logged.add((c["key"], int(c["value"])))
        assert all((k, v) in logged for k, v in acked.items())
        assert any(json.loads(line)["partition"].endswith("-of-16")
                   for line in (nodes["c"].info["data"] / "commits.jsonl").read_text().splitlines())

        def fig(xs):
            xs = sorted(xs)
            return f"p50 {statistics.median(xs) * 1000:.0f} ms, max {xs[-1] * 1000:.0f} ms"
        print(f"\nwrite unavailability per slot (cutover → flip): split {fig(windows['split'])}; "
              f"merge {fig(windows['merge'])}; acked writes {len(acked)} keys, client errors 0")
    finally:
        running[0] = False
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if mover is not None:
            await mover.close()
        fleet.stop()
        await consul.close()
        await consensus.close()
