"""``--workers 2`` in Consul mode, as a process on a real agent: every worker is its own
barrier participant (its own ``sidecars/<id>``), both serve, and after a transition
commits and the fleet has acked it, no worker routes to the old node."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import urllib.error
import urllib.request

import aiohttp
import pytest

from gate import open_consul
from tests._sidecar_util import KEY, free_port, nodes, spawn_sidecar, wait_http  # noqa: F401 (nodes: fixture)

pytestmark = pytest.mark.consul


def participants(url: str, prefix: str) -> dict[str, int]:
    """sidecars/<id> → published applied epoch, for keys held by a live session."""
    try:
        with urllib.request.urlopen(f"{url}/v1/kv/{prefix}sidecars/?recurse=true", timeout=2) as r:
            entries = json.loads(r.read())
    except urllib.error.HTTPError:
        return {}
    return {e["Key"].rsplit("/", 1)[1]: int(base64.b64decode(e["Value"]))
            for e in entries if e.get("Session")}


async def test_two_consul_workers_are_participants_and_agree(consul_agent, kv_prefix, nodes):
    a, b = nodes
    consensus, store, _ = await open_consul(consul_agent.url, prefix=kv_prefix)
    try:
        await store.set_node("a", a.url)
        await store.set_node("b", b.url)
        await store.set("t1", "a")
        listen, admin, control = free_port(), free_port(), free_port()
        proc = spawn_sidecar(["--consul", consul_agent.url, "--prefix", kv_prefix, "--workers", "2",
                              "--listen", f"127.0.0.1:{listen}", "--admin", f"127.0.0.1:{admin}",
                              "--control", f"127.0.0.1:{control}", "--no-access-log"])
        try:
            await asyncio.to_thread(wait_http, f"http://127.0.0.1:{admin}/readyz", 30.0)
            # both workers registered under their own ids (the parent may be one more)
            ids = await asyncio.to_thread(participants, consul_agent.url, kv_prefix)
            assert len(ids) >= 2, ids
            base = f"http://127.0.0.1:{listen}/kv/k"
            rids = set()
            for _ in range(40):  # fresh connections: SO_REUSEPORT spreads them over both workers
                async with aiohttp.ClientSession() as s:
                    async with s.put(base, headers=KEY, data=b"v") as r:
                        assert r.status == 200, await r.text()
                        rids.add((await r.json())["headers"]["X-Request-ID"].split("-")[0])
            assert len(rids) == 2, "both workers served writes"
            epoch = await store.set("t1", "b")

            def all_acked() -> bool:
                got = participants(consul_agent.url, kv_prefix)
                return len(got) >= 2 and all(e >= epoch for e in got.values())

            for _ in range(200):
                if await asyncio.to_thread(all_acked):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"participants never acked {epoch}: {participants(consul_agent.url, kv_prefix)}")
            for _ in range(40):
                async with aiohttp.ClientSession() as s:
                    async with s.put(base, headers=KEY, data=b"v") as r:
                        body = await r.json()
                        assert r.status == 200 and body["node"] == "b"
                        assert body["headers"]["X-Placement-Epoch"] == str(int(epoch))
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.communicate, timeout=30)
        assert proc.returncode == 0
    finally:
        await consensus.close()
