"""A split and a merge back, online, on one sidecar's embedded table (DESIGN §12): a real in-process
sidecar with --hash-slots 2, two real example-app nodes (commit-point admit through the sidecar's Gate
API), writers on every slot the whole time. slot-1 splits into slot-1-of-4 (stays on a) and
slot-3-of-4 (on b), then the two merge back into slot-1 on a. Checked from the apps' commit logs and
SQLite files: no client error, every acknowledged write is its key's value on exactly the node the
final table names, and no row is left under a slot its node does not hold.

Not the fleet test the issue names (3 sidecars on Consul, a SIGKILL mid-split): DESIGN §12.6."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import aiohttp
from aiohttp import web

from examples.kv import build_app
from gate import AdmitClient, MoverAuth, key_hash, resolve_slot
from sidecar.control.mover import HttpHooksMover
from sidecar.control.reshard import TableStore, drain_barrier, plan_merge, plan_split, run_reshard
from tests._consul import free_ports
from tests._sidecar_util import config, running_sidecar, write_placement

TOKEN = "test-mover-credential-0123456789"
KEYS = [f"user-{i}" for i in range(40)]


async def _node(name, data, admitter):
    runner = web.AppRunner(build_app(name, data, admitter, mover_auth=MoverAuth(TOKEN)))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, "http://127.0.0.1:%d" % runner.addresses[0][1]


def _rows(path):
    with sqlite3.connect(path) as c:
        return c.execute("SELECT partition, key, value FROM kv").fetchall()


async def test_split_then_merge_under_writers_loses_nothing_and_leaves_nothing(tmp_path):
    (control_port,) = free_ports(1)
    admitter = AdmitClient(f"127.0.0.1:{control_port}")
    (ra, url_a), (rb, url_b) = [await _node(n, tmp_path / n, admitter) for n in ("a", "b")]
    placement = write_placement(tmp_path / "p.toml", {"a": url_a, "b": url_b}, {"slot-0": "a", "slot-1": "a"})
    acked: dict[str, int] = {}
    errors: list[str] = []
    stop, go = asyncio.Event(), asyncio.Event()
    busy = [0]
    go.set()
    try:
        async with running_sidecar(config(placement, hash_slots=2, hold_seconds=20,
                                          control=f"127.0.0.1:{control_port}")) as sc, \
                aiohttp.ClientSession() as http:
            async def writer(keys):
                v = 0
                while not stop.is_set():
                    for k in keys:
                        await go.wait()
                        v += 1
                        busy[0] += 1
                        try:
                            async with http.put(f"http://127.0.0.1:{sc.port}/kv/{k}", data=str(v),
                                                headers={"X-Partition-Key": k}) as r:
                                if r.status == 200:
                                    acked[k] = v
                                else:
                                    errors.append(f"{k}={v}: {r.status} {await r.text()}")
                        finally:
                            busy[0] -= 1

            async def rewritten():   # every key written again since now
                mid = dict(acked)
                while sum(acked.get(k, 0) > mid.get(k, 0) for k in KEYS) < len(KEYS):
                    await asyncio.sleep(0.02)

            async def checked():     # writers paused, nothing in flight: the data must match the table now
                go.clear()
                while busy[0]:
                    await asyncio.sleep(0.01)
                _check(tmp_path, sc.table.partitions(), acked)
                go.set()

            tasks = [asyncio.create_task(writer(KEYS[i::4])) for i in range(4)]
            mover = HttpHooksMover(token=TOKEN)
            urls = {"a": url_a, "b": url_b}

            table, drained = TableStore(sc.table), drain_barrier(sc.tracker)
            try:
                await rewritten()
                split = await run_reshard(plan_split(sc.table.partitions(), 2, "slot-1", to="b"), table, mover,
                                          urls, drained)
                assert split.status == "completed", split.error
                assert sorted(sc.table.partitions()) == ["slot-0", "slot-1-of-4", "slot-3-of-4"]
                await checked()
                await rewritten()
                merge = await run_reshard(plan_merge(sc.table.partitions(), 2, "slot-3-of-4"), table, mover,
                                          urls, drained)
                assert merge.status == "completed", merge.error
                assert sorted(sc.table.partitions()) == ["slot-0", "slot-1"]
                await checked()
                await rewritten()
                await checked()
            finally:
                stop.set()
                go.set()
                await asyncio.gather(*tasks)
                await mover.close()
    finally:
        await ra.cleanup()
        await rb.cleanup()
        await admitter.close()
    assert errors == []
    logged = set()
    for n in ("a", "b"):
        for line in (tmp_path / n / "commits.jsonl").read_text().splitlines():
            c = json.loads(line)
            logged.add((c["key"], int(c["value"])))
    assert all((k, v) in logged for k, v in acked.items())
    assert (tmp_path / "b" / "commits.jsonl").read_text()   # b served the half while it was split


def _check(tmp_path, table, acked):
    """Every key's last acknowledged write is its value under its slot on the slot's node, and no row is
    under a slot its node does not hold (nothing left behind)."""
    where = {}
    for node in ("a", "b"):
        for slot, key, value in _rows(tmp_path / node / "kv.sqlite"):
            assert slot in table and str(table[slot][0].source) == node, f"left behind: {key} under {slot} on {node}"
            assert key not in where, f"{key} on two nodes or under two slots"
            where[key] = (node, slot, int(value))
    for k in KEYS:
        slot, (st, _) = resolve_slot(key_hash(k), 2, table.get)
        assert where[k] == (str(st.source), slot, acked[k]), k
