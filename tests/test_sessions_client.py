"""gate._sessions.ConsulHTTP (py-consul underneath) on a real Consul agent: the
session shape the barrier relies on, blocking lists outliving the per-request
timeout, the token that goes on the wire, and failures raised as ours."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest
from aiohttp import web

from gate._exceptions import BackendError
from gate._sessions import ConsulHTTP, SessionLost


async def _node_registered(url: str) -> None:
    """Sessions need the agent's node in the catalog, which can lag the fixture's
    readiness (leader + KV write) on a fresh agent: block on the node list until then."""
    index = "0"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        for _ in range(20):
            async with http.get(f"{url}/v1/catalog/nodes", params={"index": index, "wait": "2s"}) as resp:
                if await resp.json():
                    return
                index = resp.headers["X-Consul-Index"]
    raise AssertionError("the agent never registered its node")


@pytest.mark.consul
async def test_session_is_ttl_only_without_lock_delay(consul_agent):
    await _node_registered(consul_agent.url)
    c = ConsulHTTP(consul_agent.url)
    try:
        sid = await c.session_create("t-shape", 10.0, behavior="delete")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{consul_agent.url}/v1/session/info/{sid}") as resp:
                info = (await resp.json())[0]
        # no serfHealth: only the TTL or a destroy may end it (tests SIGSTOP agents)
        assert info["NodeChecks"] == [] and not info.get("ServiceChecks")
        assert (info["TTL"], info["LockDelay"], info["Behavior"]) == ("10s", 0, "delete")
        assert await c.session_exists(sid)
        await c.session_destroy(sid)
        assert not await c.session_exists(sid)
        with pytest.raises(SessionLost):
            await c.session_renew(sid)
    finally:
        await c.close()


@pytest.mark.consul
async def test_kv_acquire_put_cas_list_and_blocking_past_request_timeout(consul_agent, kv_prefix):
    await _node_registered(consul_agent.url)
    c = ConsulHTTP(consul_agent.url, request_timeout_s=0.5)
    try:
        sid = await c.session_create("t-kv", 10.0)
        assert await c.acquire(kv_prefix + "held", b"1", sid)
        assert await c.put(kv_prefix + "job", b"a", cas=0)
        assert not await c.put(kv_prefix + "job", b"b", cas=0)
        entry = await c.get(kv_prefix + "held")
        assert entry is not None and (entry.value, entry.session) == (b"1", sid)
        entries, index = await c.list(kv_prefix)
        assert sorted(e.key for e in entries) == [kv_prefix + "held", kv_prefix + "job"]
        # a blocking query waits past request_timeout_s without timing out
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        same, index2 = await c.list(kv_prefix, index=index, wait_s=1.2)
        assert loop.time() - t0 > 0.5 and index2 == index and len(same) == 2
        assert await c.release(kv_prefix + "held", sid)
        await c.delete(kv_prefix, recurse=True)
        assert await c.get(kv_prefix + "job") is None
        assert (await c.list(kv_prefix))[0] == []
    finally:
        await c.close()
    with pytest.raises(BackendError, match="closed"):
        await c.get(kv_prefix + "job")


async def test_unreachable_consul_raises_backend_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connection refused
        c = ConsulHTTP(f"http://127.0.0.1:{port}", request_timeout_s=1.0)
        try:
            with pytest.raises(BackendError) as info:
                await c.session_create("t", 10.0)
            assert isinstance(info.value.__cause__, OSError)
        finally:
            await c.close()


async def test_given_token_is_sent_even_with_consul_http_token_set(monkeypatch):
    """py-consul lets CONSUL_HTTP_TOKEN override an explicit token; ours wins."""
    seen: list[str | None] = []

    async def kv(request: web.Request) -> web.Response:
        seen.append(request.headers.get("X-Consul-Token"))
        return web.json_response(True)

    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "from-env")
    app = web.Application()
    app.router.add_put("/prefix/v1/kv/{key:.*}", kv)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        for token in ("mine", None):
            c = ConsulHTTP(f"http://127.0.0.1:{port}/prefix", token=token)
            try:
                assert await c.put("k", b"v")
            finally:
                await c.close()
    finally:
        await runner.cleanup()
    assert seen == ["mine", None]
