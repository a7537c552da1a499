"""A partition never names a node the sidecar cannot resolve (issue 27, the README's by-hand block).

``nodes set a`` then ``partitions set tenant-1 a`` then a PUT: the node's log entry comes before
the partition's, and the replica applies both in order, so the first answer that knows the
partition must route it. Before the fix the proxy learnt node URLs from a once-a-second poll of
the replica and answered 502 "node 'a' has no upstream URL" for up to a second after the
partition was visible.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests._sidecar_util import Upstream, consul_config, running_sidecar

pytestmark = pytest.mark.consul


async def test_first_answer_for_a_new_partition_routes_to_its_new_node(consul_agent, kv_prefix):
    ups = [await Upstream(f"n{i}").start() for i in range(3)]
    cfg = consul_config(consul_agent.url, kv_prefix)
    try:
        async with running_sidecar(cfg) as sc, aiohttp.ClientSession() as s:
            # Three rounds, each a node nobody has seen and a partition on it: the 1 s poll
            # could only hide the race if it ticked inside each round's few milliseconds.
            for i, up in enumerate(ups):
                await sc.store.set_node(f"n{i}", up.url)
                await sc.store.set(f"t{i}", f"n{i}")
                url = f"http://127.0.0.1:{sc.port}/kv/k"
                end = asyncio.get_running_loop().time() + 10
                while True:
                    async with s.put(url, headers={"X-Partition-Key": f"t{i}"}, data=b"v") as r:
                        status, body = r.status, await r.read()
                    if status != 404:   # 404: the partition has not reached the replica yet
                        break
                    assert asyncio.get_running_loop().time() < end, "partition never became visible"
                    await asyncio.sleep(0.005)
                assert status == 200, (i, status, body)
                assert up.seen and up.seen[-1]["method"] == "PUT"
    finally:
        for up in ups:
            await up.stop()
