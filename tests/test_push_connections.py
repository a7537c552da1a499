"""Connections per participant, counted (issue 31: ≤ 2 on the push path; DESIGN §5 "The push path").

A sidecar started with ``--push-from`` holds one keep-alive connection to Consul (its replica's
non-blocking reads, the session's renewals and acks, serialised on one pool) and the stream: 2,
once its stream is up and its last blocking query answered. A sidecar on the Consul-only path
holds 3 (the replica's blocking query, the own-key watch, the shared pool). Counted from
/proc as ``ss -tnp`` would: the ESTABLISHED sockets the sidecar's process holds.

And the bound that sharing rests on: a blocking query never goes over the shared pool, so a
renewal is answered while a long-poll on the same client is still waiting.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import aiohttp
import pytest

from bench._sockets import established
from gate import ConsulConsensus, ConsulHTTP
from gate._consul_consensus import open_consul
from tests._consul import free_ports

from ._fleet import Fleet

pytestmark = [pytest.mark.consul]


async def _metric(http: aiohttp.ClientSession, sidecar, name: str) -> float:
    async with http.get(sidecar.info["admin"] + "/metrics") as r:
        for line in (await r.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return float("nan")


async def _until(pred, what: str, timeout_s: float = 20.0):
    end = asyncio.get_running_loop().time() + timeout_s
    while True:
        got = await pred()
        if got[0]:
            return got[1]
        assert asyncio.get_running_loop().time() < end, f"{what}: {got[1]}"
        await asyncio.sleep(0.1)


def _count(sidecar, consul_port: int, hub_port: int) -> tuple[int, int, int]:
    """(to Consul, to the controller, every connection the sidecar opened): the
    connections accepted on its own ports (this test's scrapes) are not its."""
    conns = [c for c in established([sidecar.popen.pid]) if c.local_port not in sidecar.info["ports"]]
    to_consul = sum(c.remote_port == consul_port for c in conns)
    to_hub = sum(c.remote_port == hub_port for c in conns)
    return to_consul, to_hub, len(conns)


async def test_a_pushing_sidecar_holds_two_connections_and_a_consul_one_three(consul_agent, kv_prefix, tmp_path):
    fleet = Fleet(consul_agent.url, kv_prefix, tmp_path)
    consensus, store, _ = await open_consul(consul_agent.url, kv_prefix)
    consul_port = urlsplit(consul_agent.url).port
    (hub_port,) = free_ports(1)
    try:
        await store.set_node("a", "http://127.0.0.1:1")
        await fleet.controller("c1", control=hub_port)
        pushing, plain = await asyncio.gather(
            fleet.sidecar("push", extra=["--push-from", f"127.0.0.1:{hub_port}", "--session-ttl", "10"]),
            fleet.sidecar("plain", extra=["--session-ttl", "10"]))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            async def up():
                v = await _metric(http, pushing, "epochgate_push_stream_up")
                return v == 1.0, v
            await _until(up, "push stream up")

            async def transition(k: int) -> None:
                epoch = int(await store.set(f"p{k}", "a"))

                async def applied():
                    got = [await _metric(http, s, "epochgate_table_epoch") for s in (pushing, plain)]
                    return all(g >= epoch for g in got), got
                await _until(applied, f"epoch {epoch} applied")

            # a commit after the stream came up answers the blocking query held from before it
            await transition(0)

            async def two():
                got = _count(pushing, consul_port, hub_port)
                return got[:2] == (1, 1) and got[2] == 2, got
            await _until(two, "the pushing sidecar: (to Consul, to the controller, all)")
            for k in (1, 2):   # steady: transitions by push keep it at 2
                await transition(k)
                assert _count(pushing, consul_port, hub_port) == (1, 1, 2)

            async def three():
                got = _count(plain, consul_port, hub_port)
                return got == (3, 0, 3), got
            await _until(three, "the Consul-only sidecar: (to Consul, to the controller, all)")
    finally:
        fleet.stop()
        await consensus.close()


async def test_a_renewal_is_answered_while_a_blocking_list_waits_on_the_same_client(consul_agent, kv_prefix):
    """The shared pool holds one connection; a blocking list goes over a pool of its own,
    so the renewal does not queue behind it (it would wait the list's 5 s)."""
    c = ConsulConsensus(consul_agent.url, kv_prefix, connections=1)
    kv = ConsulHTTP(consul_agent.url, session=c.http_session)
    try:
        sid = await kv.session_create("conn-test", 10)
        await kv.put(f"{kv_prefix}w/k", b"1")
        _, index = await kv.list(f"{kv_prefix}w/")
        blocking = asyncio.create_task(kv.list(f"{kv_prefix}w/", index=index, wait_s=5.0))
        await asyncio.sleep(0)   # let it start its request
        for _ in range(3):
            await kv.session_renew(sid)
            await c.head("w/k")   # and the pool's reads
        assert not blocking.done(), "the renewal waited behind the blocking list"
        await kv.put(f"{kv_prefix}w/k", b"2")   # answers the list: its own event, no fixed sleep
        entries, _ = await blocking
        assert [e.value for e in entries] == [b"2"]
        await kv.session_destroy(sid)
    finally:
        await kv.close()
        await c.close()
