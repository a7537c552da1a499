"""The example key-value app (DESIGN §11) against a real control server's Gate API:
PUT/GET, the commit log, a refused commit-point admit (rollback + problem + no log
line), and the mover hooks round trip including the delta since a cursor."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from examples.kv import CURSOR_HEADER, build_app
from gate import AdmitClient, EmbeddedStore, MoverAuth, PlacementTable, open_consul
from sidecar.api.start import start_control_server

ROOT = Path(__file__).resolve().parent.parent
MOVER_TOKEN = "test-mover-credential-0123456789"
HOOK = {"X-Epochgate-Mover-Token": MOVER_TOKEN}


def fenced(token: int) -> dict[str, str]:
    return {**HOOK, "X-Epochgate-Fence": str(token)}


class Node:
    def __init__(self, name: str, data: Path, url: str) -> None:
        self.name, self.data, self.url = name, data, url

    def commits(self) -> list[dict]:
        path = self.data / "commits.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
async def world(tmp_path):
    table = PlacementTable({"t1": "a", "t2": "a"})
    store = EmbeddedStore(table, {"a": "http://127.0.0.1:1", "b": "http://127.0.0.1:2"})
    server = await start_control_server("127.0.0.1:0", store=store, source=table)
    gate_addr = f"127.0.0.1:{server.epochgate_port}"
    runners, clients = [], []

    async def node(name: str, target: str = gate_addr) -> Node:
        client = AdmitClient(target, timeout_s=1.0)
        clients.append(client)
        runner = web.AppRunner(build_app(name, tmp_path / name, client, mover_auth=MoverAuth(MOVER_TOKEN)))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        host, port = runner.addresses[0][:2]
        return Node(name, tmp_path / name, f"http://{host}:{port}")

    node.gate_addr = gate_addr
    async with aiohttp.ClientSession() as http:
        yield table, node, http
    for r in runners:
        await r.cleanup()
    for c in clients:
        await c.close()
    await server.stop(0)


def stamp(partition: str, epoch: int) -> dict[str, str]:
    return {"X-Partition": partition, "X-Placement-Epoch": str(int(epoch))}


async def test_put_get_and_the_commit_log(world):
    table, node, http = world
    a = await node("a")
    async with http.put(f"{a.url}/kv/k1", data="hello", headers=stamp("t1", 1)) as r:
        assert r.status == 200 and (await r.json())["seq"] == 1
    async with http.put(f"{a.url}/kv/k1", data="héllo 2", headers=stamp("t1", 1)) as r:
        assert r.status == 200
    async with http.get(f"{a.url}/kv/k1", headers={"X-Partition": "t1"}) as r:
        assert r.status == 200 and await r.text() == "héllo 2" and r.headers["X-Node"] == "a"
    async with http.get(f"{a.url}/kv/k1", headers={"X-Partition": "t2"}) as r:
        assert r.status == 404  # keys live in their partition
    lines = a.commits()
    assert [(c["partition"], c["key"], c["value"], c["node"], c["epoch"]) for c in lines] == [
        ("t1", "k1", "hello", "a", 1), ("t1", "k1", "héllo 2", "a", 1)]
    assert set(lines[0]) == {"partition", "key", "value", "node", "epoch", "t"} and isinstance(lines[0]["t"], float)
    assert lines[0]["t"] <= lines[1]["t"]

    async with http.put(f"{a.url}/kv/k2", data="x") as r:  # not through a sidecar: refused, not retryable
        assert r.status == 428 and (await r.json())["field"] == "X-Partition"
    async with http.get(f"{a.url}/kv/k2") as r:
        assert r.status == 400 and (await r.json())["field"] == "X-Partition"
    async with http.put(f"{a.url}/kv/k2", data=b"\xff\xfe", headers=stamp("t1", 1)) as r:
        assert r.status == 400 and (await r.json())["field"] == "body"
    assert len(a.commits()) == 2


@pytest.mark.parametrize("case", ["stale_epoch", "cutover", "unknown_partition"])
async def test_refused_admit_rolls_back_and_answers_the_problem(world, case):
    table, node, http = world
    a = await node("a")
    async with http.put(f"{a.url}/kv/k", data="v1", headers=stamp("t1", 1)) as r:
        assert r.status == 200
    partition, epoch = "t1", 1
    if case == "stale_epoch":
        table.set("t1", "a")  # the partition's epoch moves on (3): epoch 1 is superseded
    elif case == "cutover":
        table.begin_migration("t1", "b")
        epoch = table.enter_cutover("t1")
    else:
        partition = "t9"
    async with http.put(f"{a.url}/kv/k", data="v2", headers=stamp(partition, epoch)) as r:
        assert r.status == 503 and r.headers["Retry-After"]
        assert r.headers["Content-Type"].startswith("application/problem+json")
        doc = await r.json()
    assert doc["type"].endswith("stale-epoch") and doc["reason"] == case and doc["partition"] == partition
    if case != "unknown_partition":
        assert doc["epoch"] == table.get("t1").epoch and doc["placement"] == "a"
        assert doc["phase"] == ("cutover" if case == "cutover" else "active")
    async with http.get(f"{a.url}/kv/k", headers={"X-Partition": "t1"}) as r:
        assert await r.text() == "v1"  # rolled back
    async with http.get(f"{a.url}/_epochgate/export?partition=t1", headers=HOOK) as r:
        assert r.headers[CURSOR_HEADER] == "1"  # the refused write took no sequence number
    assert [c["value"] for c in a.commits()] == ["v1"]


async def test_concurrent_writes_group_commit_only_the_admitted(world):
    table, node, http = world
    a = await node("a")
    table.set("t2", "a")  # t2 moves to epoch 3: writes stamped 2 are stale

    async def put(i: int):
        partition, epoch = ("t1", 1) if i % 2 == 0 else ("t2", 2)
        async with http.put(f"{a.url}/kv/k{i}", data=f"v{i}", headers=stamp(partition, epoch)) as r:
            return i, r.status, await r.json()

    results = await asyncio.gather(*(put(i) for i in range(40)))
    assert {i for i, status, _ in results if status == 200} == set(range(0, 40, 2))
    assert all(doc["reason"] == "stale_epoch" and doc["epoch"] == 3 for i, status, doc in results if status != 200)
    seqs = sorted(doc["seq"] for _, status, doc in results if status == 200)
    assert seqs == list(range(1, 21))  # refused writes took no sequence number
    logged = a.commits()
    assert sorted(c["key"] for c in logged) == sorted(f"k{i}" for i in range(0, 40, 2))
    assert {(c["partition"], c["epoch"]) for c in logged} == {("t1", 1)}
    for i in (1, 2):
        async with http.get(f"{a.url}/kv/k{i}", headers={"X-Partition": "t1" if i == 2 else "t2"}) as r:
            assert r.status == (200 if i == 2 else 404)


async def test_unreachable_gate_fails_closed(world, tmp_path):
    table, node, http = world
    a = await node("a", target="127.0.0.1:1")
    async with http.put(f"{a.url}/kv/k", data="v", headers=stamp("t1", 1)) as r:
        assert r.status == 503 and (await r.json())["reason"] == "fail_closed"
    assert a.commits() == []


async def _ndjson(resp: aiohttp.ClientResponse) -> list[dict]:
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in (await resp.read()).splitlines()]


async def test_mover_hooks_round_trip_with_delta_since_cursor(world):
    table, node, http = world
    a, b = await node("a"), await node("b")
    for i in range(5):
        async with http.put(f"{a.url}/kv/k{i}", data=f"v{i}", headers=stamp("t1", 1)) as r:
            assert r.status == 200
    async with http.put(f"{a.url}/kv/other", data="t2's", headers=stamp("t2", 2)) as r:
        assert r.status == 200

    async with http.get(f"{a.url}/_epochgate/export?partition=t1", headers=HOOK) as r:
        rows = await _ndjson(r)
        cursor = int(r.headers[CURSOR_HEADER])
    assert cursor == 6 and rows == [{"key": f"k{i}", "value": f"v{i}"} for i in range(5)]

    body = b"".join(json.dumps(row).encode() + b"\n" for row in rows)
    async with http.post(f"{b.url}/_epochgate/import?partition=t1", data=body, headers=fenced(3)) as r:
        assert r.status == 200 and await r.json() == {"imported": 5}

    # Writes keep landing on `from` while draining; the delta carries exactly them.
    for key, value in (("k1", "v1-new"), ("k9", "v9"), ("k1", "v1-newer")):
        async with http.put(f"{a.url}/kv/{key}", data=value, headers=stamp("t1", 1)) as r:
            assert r.status == 200
    async with http.get(f"{a.url}/_epochgate/delta?partition=t1&since={cursor}", headers=HOOK) as r:
        delta = await _ndjson(r)
        cursor2 = int(r.headers[CURSOR_HEADER])
    assert delta == [{"key": "k9", "value": "v9"}, {"key": "k1", "value": "v1-newer"}] and cursor2 == 9
    async with http.get(f"{a.url}/_epochgate/delta?partition=t1&since={cursor2}", headers=HOOK) as r:
        assert await _ndjson(r) == [] and r.headers[CURSOR_HEADER] == "9"

    body = b"".join(json.dumps(row).encode() + b"\n" for row in delta)
    async with http.post(f"{b.url}/_epochgate/import?partition=t1", data=body, headers=fenced(4)) as r:
        assert await r.json() == {"imported": 2}
    async with http.get(f"{a.url}/_epochgate/export?partition=t1", headers=HOOK) as ra, \
            http.get(f"{b.url}/_epochgate/export?partition=t1", headers=HOOK) as rb:
        assert await _ndjson(ra) == await _ndjson(rb)
    async with http.get(f"{b.url}/_epochgate/export?partition=t2", headers=HOOK) as r:
        assert await _ndjson(r) == []  # only the asked partition moved
    assert b.commits() == []  # imports are copies, not client commits (INV-M3 reads this log)

    async with http.post(f"{b.url}/_epochgate/import?partition=t1", data=b'{"key": 1}\n', headers=fenced(4)) as r:
        assert r.status == 400 and (await r.json())["field"] == "line 1"
    async with http.get(f"{a.url}/_epochgate/delta?partition=t1&since=x", headers=HOOK) as r:
        assert r.status == 400 and (await r.json())["field"] == "since"
    async with http.get(f"{a.url}/_epochgate/export", headers=HOOK) as r:
        assert r.status == 400 and (await r.json())["field"] == "partition"


async def test_mover_hooks_need_the_credential_and_a_current_fence(world):
    """DESIGN §6: the hooks are the controller's — no credential, no data; and an import
    whose fencing token is below the highest the node recorded for the partition is
    refused with 409 stale-mover and changes nothing (counted in /metrics)."""
    table, node, http = world
    b = await node("b")
    row = b'{"key": "k", "value": "new"}\n'
    for headers in ({}, {"X-Epochgate-Mover-Token": "wrong-credential-0123456789"}):
        for method, path in (("GET", "export?partition=t1"), ("GET", "delta?partition=t1&since=0"),
                             ("POST", "import?partition=t1")):
            async with http.request(method, f"{b.url}/_epochgate/{path}", data=row, headers=headers) as r:
                assert r.status == 401 and (await r.json())["field"] == "X-Epochgate-Mover-Token", path
    async with http.post(f"{b.url}/_epochgate/import?partition=t1", data=row, headers=HOOK) as r:
        assert r.status == 400 and (await r.json())["field"] == "X-Epochgate-Fence"
    async with http.post(f"{b.url}/_epochgate/import?partition=t1", data=row, headers=fenced(7)) as r:
        assert r.status == 200
    old = b'{"key": "k", "value": "old"}\n'
    async with http.post(f"{b.url}/_epochgate/import?partition=t1", data=old, headers=fenced(6)) as r:
        body = await r.json()
        assert r.status == 409 and r.headers["Content-Type"] == "application/problem+json"
        assert body["type"].endswith("stale-mover") and body["token"] == 6 and body["highest"] == 7
    async with http.post(f"{b.url}/_epochgate/import?partition=t2", data=old, headers=fenced(6)) as r:
        assert r.status == 200   # the fence is per partition
    async with http.post(f"{b.url}/_epochgate/import?partition=t1", data=row, headers=fenced(7)) as r:
        assert r.status == 200   # equal tokens: the batches of one phase
    async with http.get(f"{b.url}/_epochgate/export?partition=t1", headers=HOOK) as r:
        assert await _ndjson(r) == [{"key": "k", "value": "new"}]
    async with http.get(f"{b.url}/metrics") as r:
        text = await r.text()
    assert 'epochgate_mover_imports_total{outcome="stale"} 1.0' in text
    assert 'epochgate_mover_imports_total{outcome="ok"} 3.0' in text


async def test_command_line_entry_point(world, tmp_path):
    table, node, http = world
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "examples.kv", "--node", "a", "--listen", "127.0.0.1:0", "--data", str(tmp_path / "cli"),
        "--gate", node.gate_addr, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("EPOCHGATE_")},
    )
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert line.startswith("examples.kv node a listening on http://127.0.0.1:"), line
        url = line.split()[-1]
        async with http.get(f"{url}/healthz") as r:
            assert await r.text() == "ok"
        async with http.put(f"{url}/kv/k", data="v", headers=stamp("t1", 1)) as r:
            assert r.status == 200
        async with http.put(f"{url}/kv/k", data="w", headers=stamp("t1", 0)) as r:
            assert r.status == 503
        async with http.get(f"{url}/kv/k", headers={"X-Partition": "t1"}) as r:
            assert await r.text() == "v"
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    log = [json.loads(x) for x in (tmp_path / "cli" / "commits.jsonl").read_text().splitlines()]
    assert [(c["key"], c["value"], c["epoch"]) for c in log] == [("k", "v", 1)]

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "examples.kv", "--node", "a b", "--listen", "127.0.0.1:0", "--data", str(tmp_path / "x"),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2 and err.decode().strip().startswith("error: --node:") and b"Traceback" not in err


@pytest.mark.consul
async def test_consul_mode_admits_through_an_embedded_participant(consul_agent, kv_prefix, tmp_path):
    consensus, store, _ = await open_consul(consul_agent.url, kv_prefix)
    proc = None
    try:
        epoch = await store.set("t1", "a")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "examples.kv", "--node", "a", "--listen", "127.0.0.1:0", "--data", str(tmp_path),
            "--consul", consul_agent.url, "--prefix", kv_prefix, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        assert "listening on" in line, line + (await proc.stderr.read()).decode()
        url = line.split()[-1]
        # Rule 1: the app registered itself as a barrier participant before admitting.
        assert any(k.endswith("sidecars/kv-a") for k in await consensus.list_keys("sidecars/"))
        async with aiohttp.ClientSession() as http:
            async with http.put(f"{url}/kv/k", data="v", headers=stamp("t1", epoch)) as r:
                assert r.status == 200, await r.text()
            await store.begin("t1", "b")
            cut = await store.enter_cutover("t1")
            for _ in range(200):  # the embedded replica follows Consul's change log
                async with http.put(f"{url}/kv/k", data="w", headers=stamp("t1", cut)) as r:
                    doc = await r.json()
                if r.status == 503 and doc["reason"] == "cutover":
                    break
                await asyncio.sleep(0.05)
            assert r.status == 503 and doc["reason"] == "cutover"
        assert [(c["value"], c["epoch"]) for c in Node("a", tmp_path, url).commits()] == [("v", epoch)]
    finally:
        if proc is not None and proc.returncode is None:
            proc.terminate()
            assert await asyncio.wait_for(proc.wait(), 30) == 0
        await consensus.close()
