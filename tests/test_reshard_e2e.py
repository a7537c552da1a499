"""Resharding a fleet end to end (issue 29, DESIGN §12): real Consul, three example-app nodes that are
barrier participants, three sidecars with --hash-slots 8, writers on every slot through two of them,
two controller processes. All 8 slots split to 16 (the new halves of four of them onto a new node c),
then merged back, each a job submitted as ``reshard`` does and run by the leading controller. Mid-split
(node c stopped so the job holds in draining): once a sidecar is SIGKILLed and restarted, once the
leading controller is SIGKILLed and the other one takes the job over and finishes it. Then: no client
error, every acknowledged write is its key's value on exactly the node the final table names, under its
slot, no row is left anywhere else, the commit logs hold every acknowledged write, and every (node,
slot) the commit logs name that the final table does not place there was cleaned up after its last
commit (cleanups.jsonl). Run with ``-s`` for the write-unavailability window per split and merge."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import statistics
import time

import aiohttp
import pytest

from gate import ConsulHTTP, key_hash, provision_mover_token, resolve_slot
from gate._consul_consensus import open_consul
from sidecar.control.jobs import JobRecords
from sidecar.control.reshard_job import submit

from ._fleet import Fleet
from .test_migrations_e2e import _leader

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


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _orphans_by_logs(nodes, table):
    """(node, slot) pairs a node committed writes under that the final table does not place on it and
    that no clean-up on that node removed after the last such commit."""
    out = []
    for n, p in nodes.items():
        last: dict[str, float] = {}
        for c in _lines(p.info["data"] / "commits.jsonl"):
            last[c["partition"]] = max(last.get(c["partition"], 0.0), float(c["t"]))
        cleaned: dict[str, float] = {}
        for c in _lines(p.info["data"] / "cleanups.jsonl"):
            if not c.get("filter"):
                cleaned[c["partition"]] = max(cleaned.get(c["partition"], 0.0), float(c["t"]))
        for slot, t in last.items():
            if not (slot in table and str(table[slot][0].source) == n) and cleaned.get(slot, 0.0) < t:
                out.append((n, slot))
    return out


async def test_split_8_to_16_and_back_under_writers_a_sidecar_and_a_controller_sigkill(consul_agent, kv_prefix,
                                                                                       tmp_path):
    fleet = Fleet(consul_agent.url, kv_prefix, tmp_path)
    consensus, store, _ = await open_consul(consul_agent.url, kv_prefix)
    consul = ConsulHTTP(consul_agent.url)
    records = JobRecords(consul, kv_prefix)
    acked: dict[str, int] = {}
    errors: list[str] = []
    running = [True]
    paused, busy = asyncio.Event(), [0]
    tasks: list[asyncio.Task] = []
    try:
        await provision_mover_token(consul, kv_prefix)
        nodes = {n: await fleet.node(n) for n in ("a", "b", "c")}
        for n, p in nodes.items():
            await store.set_node(n, p.info["url"])
        for i in range(8):
            await store.set(f"slot-{i}", "a" if i % 2 == 0 else "b")
        sidecars = [await fleet.sidecar(f"sc{i}", extra=["--hash-slots", "8"]) for i in range(3)]
        ctls = list(await asyncio.gather(fleet.controller("c1", 20.0), fleet.controller("c2", 20.0)))

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

        async def job_until(job_id, statuses, timeout_s=90.0):
            end = time.monotonic() + timeout_s
            while time.monotonic() < end:
                job = await records.get(job_id)
                if job.status in statuses:
                    return job
                await asyncio.sleep(0.02)
            raise AssertionError(f"job {job_id} not {statuses} after {timeout_s}s: {job}")

        async def reshard(kind, slot, to, mid_split=None):
            if mid_split is not None:    # hold the job in draining: its first step on c blocks
                nodes["c"].signal(signal.SIGSTOP)
            job = await submit(store, records, await store.nodes(), kind, slot, to, 8, 20.0)
            if mid_split is not None:
                await job_until(job.id, ("draining",))
                await mid_split()
                nodes["c"].signal(signal.SIGCONT)
            job = await job_until(job.id, ("completed", "failed", "aborted"))
            assert job.status == "completed", (kind, slot, job.error)
            return job

        async def kill_sidecar():
            sidecars[2].kill()
            sidecars[2] = await fleet.sidecar("sc2", ports=sidecars[2].info["ports"], extra=["--hash-slots", "8"])

        owners = []

        async def kill_leader():
            lead = await _leader(ctls)
            owners.append((await records.list())[0][-1].owner)
            ctls[lead].kill()
            ctls.pop(lead)

        async def checked():   # writers paused, nothing in flight: the data matches the table now
            paused.set()
            while busy[0]:
                await asyncio.sleep(0.01)
            _check(nodes, await store.partitions(), acked)
            paused.clear()

        windows: dict[str, list[float]] = {"split": [], "merge": []}

        def window(job):
            return job.phase("flipped").at - job.phase("cutover").at

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=40)) as http:
            for i in range(4):
                tasks.append(asyncio.create_task(writer(http, sidecars[i % 2], KEYS[i::4])))
            while len(acked) < len(KEYS):
                await asyncio.sleep(0.02)
            for i in range(8):
                mid = {1: kill_sidecar, 3: kill_leader}.get(i)
                job = await reshard("split", f"slot-{i}", "c" if i < 4 else None, mid)
                windows["split"].append(window(job))
                if i == 3:   # the other controller took the job over (restarting it) and finished it
                    assert job.owner != owners[0] and len(job.phases) > 5, job
                await checked()
            assert len(await store.partitions()) == 16
            for i in range(8):
                job = await reshard("merge", f"slot-{i + 8}-of-16", "a" if i % 2 == 0 else "b")
                windows["merge"].append(window(job))
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
            for c in _lines(p.info["data"] / "commits.jsonl"):
                logged.add((c["key"], int(c["value"])))
        assert all((k, v) in logged for k, v in acked.items())
        assert any(c["partition"].endswith("-of-16") for c in _lines(nodes["c"].info["data"] / "commits.jsonl"))
        assert _orphans_by_logs(nodes, final) == []
        jobs, _ = await records.list()
        assert [(j.kind, j.status) for j in jobs] == [("split", "completed")] * 8 + [("merge", "completed")] * 8

        def fig(xs):
            xs = sorted(xs)
            return f"p50 {statistics.median(xs) * 1000:.0f} ms, max {xs[-1] * 1000:.0f} ms"
        print(f"\nwrite unavailability per slot (cutover → flip, from the job records): split {fig(windows['split'])}; "
              f"merge {fig(windows['merge'])}; acked writes {len(acked)} keys, client errors 0")
    finally:
        running[0] = False
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if "nodes" in locals():
            nodes["c"].signal(signal.SIGCONT)
        fleet.stop()
        await consul.close()
        await consensus.close()
