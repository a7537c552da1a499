"""The sidecar on a real Consul agent: replica + barrier participant, fail closed when Consul is frozen,
no fail-closed during a long quiet spell, recovery when Consul answers again."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests._sidecar_util import Upstream, consul_config, running_sidecar

pytestmark = pytest.mark.consul
KEY = {"X-Partition-Key": "t1"}
LEASE = 3.0


async def until(pred, timeout):
    end = asyncio.get_running_loop().time() + timeout
    while not await pred():
        if asyncio.get_running_loop().time() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.1)


async def test_consul_mode_quiet_then_frozen_then_recovers(fresh_consul_agent, kv_prefix):
    agent = fresh_consul_agent
    up = await Upstream("a").start()
    cfg = consul_config(agent.url, kv_prefix, node=(f"a={up.url}",), lease_seconds=LEASE)
    try:
        async with running_sidecar(cfg) as sc, aiohttp.ClientSession() as s:
            epoch = await sc.store.set("t1", "a")
            base = f"http://127.0.0.1:{sc.port}/kv/k"
            admin = f"http://127.0.0.1:{sc.admin_port}"

            async def write_status():
                async with s.put(base, headers=KEY, data=b"v") as r:
                    return r.status, await r.read()

            async def write_ok():
                return (await write_status())[0] == 200

            await until(write_ok, 15)
            assert up.seen[-1]["headers"]["X-Placement-Epoch"] == str(int(epoch))

            # a quiet store (no changes for longer than the lease) is not a stale one
            await asyncio.sleep(LEASE + 1.5)
            assert await write_ok()
            async with s.get(f"{admin}/metrics") as r:
                assert "epochgate_fail_closed 0.0" in await r.text()

            agent.freeze()
            try:
                async def refused():
                    status, body = await write_status()
                    return status == 503 and b'"reason":"fail_closed"' in body

                await until(refused, LEASE * 3)
                async with s.get(base, headers=KEY) as r:  # reads go on from the last table
                    assert r.status == 200
                async with s.get(f"{admin}/readyz") as r:
                    assert r.status == 503
                async with s.get(f"{admin}/metrics") as r:
                    assert "epochgate_fail_closed 1.0" in await r.text()
            finally:
                agent.thaw()
            await until(write_ok, 30)

            async def ready():
                async with s.get(f"{admin}/readyz") as r:
                    return r.status == 200

            await until(ready, 10)
    finally:
        await up.stop()
