"""The controller on the embedded store (issue 17): one sidecar on a placement file,
two example KV nodes admitting through its Gate API, writers on through the proxy,
and ``migrate`` from the CLI — no Consul anywhere. The data lands on the new node,
every acknowledged write reads back, and the dry run lists the sidecar itself as
the one participant."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from tests._consul import free_ports

from ._operator_util import cli
from .test_control_e2e import _spawn, _stop


async def _ready(url: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            try:
                async with http.get(url) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"{url} never became ready")


def embedded_fleet(tmp_path, monkeypatch) -> tuple[int, int, int, int, str, tuple[str, ...]]:
    """Ports of nodes a and b, the proxy and admin, the control address, and the sidecar's
    ``-m`` arguments on a placement file (tenant-1 on a, tenant-2 on b)."""
    # the hooks' credential, shared by the sidecar's controller and the nodes (DESIGN §6)
    monkeypatch.setenv("EPOCHGATE_MOVER_TOKEN", "embedded-test-mover-token-0123")
    pa, pb_, listen, admin, control_port = free_ports(5)
    control = f"127.0.0.1:{control_port}"
    placement = tmp_path / "placement.toml"
    placement.write_text(f'[nodes]\na = "http://127.0.0.1:{pa}"\nb = "http://127.0.0.1:{pb_}"\n\n'
                         '[partitions]\ntenant-1 = "a"\ntenant-2 = "b"\n')
    return pa, pb_, listen, admin, control, ("sidecar", "--placement", str(placement), "--listen",
                                             f"127.0.0.1:{listen}", "--admin", f"127.0.0.1:{admin}",
                                             "--control", control, "--no-access-log")


async def spawn_nodes(tmp_path, control: str, *ports: int) -> list[asyncio.subprocess.Process]:
    """Example KV nodes a, b, … admitting through the sidecar's Gate API at ``control``."""
    return [await _spawn("examples.kv", "--node", name, "--listen", f"127.0.0.1:{port}",
                         "--data", str(tmp_path / name), "--gate", control) for name, port in zip("abc", ports)]


async def test_embedded_sidecar_migrates_with_a_copy_under_writes(tmp_path, monkeypatch):
    pa, pb_, listen, admin, control, sidecar_args = embedded_fleet(tmp_path, monkeypatch)
    procs = []
    try:
        procs += await spawn_nodes(tmp_path, control, pa, pb_)
        procs.append(await _spawn(*sidecar_args))
        await _ready(f"http://127.0.0.1:{admin}/readyz")
        for port in (pa, pb_):
            await _ready(f"http://127.0.0.1:{port}/healthz")
        proxy = f"http://127.0.0.1:{listen}"
        acked: dict[str, str] = {}
        stop = asyncio.Event()

        async def writer(w: int) -> None:
            async with aiohttp.ClientSession() as http:
                i = 0
                while not stop.is_set():
                    key, value = f"w{w}-{i % 50}", f"v{i}"
                    async with http.put(f"{proxy}/kv/{key}", data=value,
                                        headers={"X-Partition-Key": "tenant-1"}) as r:
                        if r.status == 200:
                            acked[key] = value
                    i += 1

        writers = [asyncio.create_task(writer(w)) for w in range(3)]
        while len(acked) < 100:
            await asyncio.sleep(0.05)
        rc, out, err = await cli(control, "migrate", "--partition", "tenant-1", "--to", "b", "--dry-run", "--json")
        plan = json.loads(out)
        assert rc == 0 and plan["would_go"], out + err
        assert [p["id"] for p in plan["participants"]] == ["local-sidecar"] and plan["size_bytes"] > 0
        rc, out, err = await cli(control, "migrate", "--partition", "tenant-1", "--to", "b")
        stop.set()
        await asyncio.gather(*writers)
        assert rc == 0, out + err
        assert " completed: tenant-1 a→b" in out
        rc, out, _ = await cli(control, "jobs", "list", "--json")
        (job,) = json.loads(out)
        assert job["bytes_copied"] > 0 and {"cutover", "acked", "completed"} <= {p["phase"] for p in job["phases"]}
        async with aiohttp.ClientSession() as http:
            for key, value in acked.items():   # 0 acknowledged writes lost: each reads back, from b itself too
                async with http.get(f"{proxy}/kv/{key}", headers={"X-Partition-Key": "tenant-1"}) as r:
                    assert (r.status, await r.text()) == (200, value), key
                async with http.get(f"http://127.0.0.1:{pb_}/kv/{key}", headers={"X-Partition": "tenant-1"}) as r:
                    assert (r.status, await r.text()) == (200, value), key
            async with http.get(f"http://127.0.0.1:{pb_}/_epochgate/size?partition=tenant-1") as r:
                assert (await r.json())["keys"] == len(acked)
    finally:
        logs = [await _stop(p) for p in reversed(procs)]
    assert all("Traceback" not in log for log in logs), "\n".join(logs)


async def test_local_barrier_refuses_to_pass_with_an_older_write_in_flight():
    """A cutover with a write admitted before it still in flight is never acknowledged:
    the embedded store gives up waiting after --drain-seconds and aborts the cutover
    (CutoverNotAcknowledged) and the barrier reports no ack; once the write has
    finished, the next cutover passes."""
    from gate import EmbeddedStore, InflightTracker, PartitionState, PlacementTable
    from sidecar.control.barrier import BarrierTimeout
    from sidecar.control.embedded import LocalBarrier
    from sidecar._fanout import CutoverNotAcknowledged, FanoutStore, LocalMember

    table = PlacementTable({"t1": "a"})
    inner = EmbeddedStore(table, {"a": "http://127.0.0.1:1", "b": "http://127.0.0.1:2"})
    tracker = InflightTracker()
    store = FanoutStore(inner, [LocalMember(inner, tracker, drain_s=0.05)])
    await store.begin("t1", "b")
    tracker.begin("t1", int(table.state("t1")[1]))      # a write admitted while draining, still in flight
    barrier = LocalBarrier(table, tracker)
    with pytest.raises((BarrierTimeout, CutoverNotAcknowledged)):
        await barrier.cutover(store, "t1", deadline_s=0.2)
    assert tracker.count("t1") == 1
    assert table.state("t1")[0] == PartitionState.active("a")   # aborted back to the source
    # once the write finishes, the next cutover passes
    tracker.end("t1", 2)
    await store.begin("t1", "b")
    res = await barrier.cutover(store, "t1", deadline_s=0.2)
    assert res.acked == {"local-sidecar"}


async def test_memkv_compare_and_set_and_blocking_list():
    from sidecar.control.embedded import MemKV

    kv = MemKV()
    assert await kv.put("p/a", b"1", cas=0)
    assert not await kv.put("p/a", b"2", cas=0)                 # exists: a create CAS fails
    e = await kv.get("p/a")
    assert await kv.put("p/a", b"2", cas=e.modify_index)
    assert not await kv.put("p/a", b"3", cas=e.modify_index)    # stale version
    entries, index = await kv.list("p/")
    assert [(x.key, x.value) for x in entries] == [("p/a", b"2")]

    async def later():
        await asyncio.sleep(0.05)
        await kv.put("p/b", b"x")
    task = asyncio.create_task(later())
    entries, new_index = await kv.list("p/", index=index, wait_s=5)   # returns on the change
    await task
    assert new_index > index and [x.key for x in entries] == ["p/a", "p/b"]
    await kv.delete("p/", recurse=True)
    assert (await kv.list("p/"))[0] == []


async def test_embedded_reshard_cutover_not_drained_aborts_every_source():
    """A reshard's cutover with a write of one source still in flight past --drain-seconds is not
    acknowledged: every source goes back to Active together (never one half cut over)."""
    from gate import EmbeddedStore, InflightTracker, PartitionState, PlacementTable
    from sidecar._fanout import CutoverNotAcknowledged, FanoutStore, LocalMember

    table = PlacementTable({"slot-0": "a", "slot-1": "a"})
    inner = EmbeddedStore(table, {"a": "http://127.0.0.1:1", "b": "http://127.0.0.1:2"})
    tracker = InflightTracker()
    store = FanoutStore(inner, [LocalMember(inner, tracker, drain_s=0.05)])
    e1 = await store.begin_reshard(["slot-1"], [("slot-1-of-4", "a"), ("slot-3-of-4", "b")])
    tracker.begin("slot-1", int(e1))      # a write admitted while draining, still in flight
    with pytest.raises(CutoverNotAcknowledged, match="reshard aborted"):
        await store.enter_cutover_all(["slot-1"])
    assert table.state("slot-1")[0] == PartitionState.active("a")
    tracker.end("slot-1", int(e1))
    await store.begin_reshard(["slot-1"], [("slot-1-of-4", "a"), ("slot-3-of-4", "b")])
    await store.enter_cutover_all(["slot-1"])
    await store.complete_reshard(["slot-1"])
    assert sorted(table.partitions()) == ["slot-0", "slot-1-of-4", "slot-3-of-4"]


async def test_embedded_sidecar_splits_and_merges_through_its_control_api(tmp_path, monkeypatch):
    """``reshard split``/``merge`` against one sidecar on a placement file (--hash-slots 2): the
    embedded controller runs them as jobs like a move, under writers on every slot, and every
    acknowledged write reads back through the proxy after each."""
    monkeypatch.setenv("EPOCHGATE_MOVER_TOKEN", "embedded-test-mover-token-0123")
    pa, pb_, listen, admin, control_port = free_ports(5)
    control = f"127.0.0.1:{control_port}"
    placement = tmp_path / "placement.toml"
    placement.write_text(f'[nodes]\na = "http://127.0.0.1:{pa}"\nb = "http://127.0.0.1:{pb_}"\n\n'
                         '[partitions]\nslot-0 = "a"\nslot-1 = "a"\n')
    procs = []
    try:
        procs += await spawn_nodes(tmp_path, control, pa, pb_)
        procs.append(await _spawn("sidecar", "--placement", str(placement), "--listen", f"127.0.0.1:{listen}",
                                  "--admin", f"127.0.0.1:{admin}", "--control", control, "--hash-slots", "2",
                                  "--no-access-log"))
        await _ready(f"http://127.0.0.1:{admin}/readyz")
        for port in (pa, pb_):
            await _ready(f"http://127.0.0.1:{port}/healthz")
        proxy = f"http://127.0.0.1:{listen}"
        acked: dict[str, str] = {}
        errors: list[str] = []
        stop = asyncio.Event()

        async def writer(w: int) -> None:
            async with aiohttp.ClientSession() as http:
                i = 0
                while not stop.is_set():
                    key, value = f"w{w}-{i % 20}", f"v{i}"
                    async with http.put(f"{proxy}/kv/{key}", data=value, headers={"X-Partition-Key": key}) as r:
                        if r.status == 200:
                            acked[key] = value
                        else:
                            errors.append(f"{key}: {r.status} {await r.text()}")
                    i += 1

        writers = [asyncio.create_task(writer(w)) for w in range(3)]
        while len(acked) < 60:
            await asyncio.sleep(0.05)
        rc, out, err = await cli(control, "reshard", "split", "slot-1", "--to", "b", "--hash-slots", "2")
        assert rc == 0, out + err
        assert "completed" in out, out
        rc, out, err = await cli(control, "reshard", "merge", "slot-3-of-4", "--to", "a", "--hash-slots", "2")
        assert rc == 0, out + err
        stop.set()
        await asyncio.gather(*writers)
        assert errors == [], errors[:5]
        rc, out, _ = await cli(control, "jobs", "list", "--json")
        jobs = json.loads(out)
        assert sorted(j["kind"] for j in jobs) == ["merge", "split"], out
        assert all(j["status"] == "completed" for j in jobs), out
        assert (tmp_path / "b" / "commits.jsonl").read_text()   # b served the new half while it was split
        async with aiohttp.ClientSession() as http:
            for key, value in acked.items():   # 0 acknowledged writes lost
                async with http.get(f"{proxy}/kv/{key}", headers={"X-Partition-Key": key}) as r:
                    assert (r.status, await r.text()) == (200, value), key
    finally:
        logs = [await _stop(p) for p in reversed(procs)]
    assert all("Traceback" not in log for log in logs), "\n".join(logs)
