"""bench/_ch1_forwarder.pyx (``ch1`` in bench_latency / bench_proxy: llhttp driven from C, docs/figures-peers.md
stop 38) is a real HTTP/1.1 forwarder, so its figure is not cheaper for the wrong reason: a real aiohttp
server behind it, a real aiohttp client (and a raw socket for pipelining) in front; bodies by
Content-Length and chunked, a 1 MB one, HEAD, keep-alive reuse on both sides, a pipelined pair, and an
upstream that closes. Skipped where Cython or a C compiler is missing."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bench._compiled_copy import CH1, ROOT, ch1_argv
from bench.bench_proxy import wait_port
from tests._sidecar_util import free_port

pytest.importorskip("uvloop")
pytest.importorskip("Cython")


async def _upstream() -> tuple[web.AppRunner, int]:
    async def hello(request: web.Request) -> web.Response:
        # the upstream connection's port on the forwarder's side: says whether the forwarder reused it
        return web.Response(body=b"hello", headers={"X-Peer": str(request.transport.get_extra_info("peername")[1])})

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read(), headers={"X-Chunked": str(request.headers.get(
            "Transfer-Encoding", "") == "chunked")})

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(5):
            await resp.write(b"part%d;" % i)
        await resp.write_eof()
        return resp

    async def close(request: web.Request) -> web.Response:
        resp = web.Response(body=b"bye", headers={"X-Peer": str(request.transport.get_extra_info("peername")[1])})
        resp.force_close()  # "Connection: close", then the upstream closes
        return resp

    async def cut(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": "1000"})
        await resp.prepare(request)
        await resp.write(b"only ten b")
        await resp.drain()  # (write may buffer; drain so the ten bytes leave before the close)
        request.transport.close()  # closes mid-response
        return resp

    app = web.Application(client_max_size=4 << 20)
    app.router.add_get("/hello", hello)  # (and HEAD)
    app.router.add_post("/echo", echo)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/close", close)
    app.router.add_get("/cut", cut)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


async def _read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    return head, await reader.readexactly(length)


async def test_requests_bodies_keepalive_pipelining_and_closing_upstream_pass_through_the_c_driven_forwarder():
    # built once per source (Cython + cc take ~5 s of CPU), then reused by later runs
    key = hashlib.sha256(CH1.read_bytes() + (ROOT / "sidecar/proxy/_llhttp.pxi").read_bytes()
                         + sys.implementation.cache_tag.encode()).hexdigest()[:16]
    argv = await asyncio.to_thread(ch1_argv, Path(tempfile.gettempdir()) / f"epochgate-ch1-{key}")
    if argv is None:
        pytest.skip("bench/_ch1_forwarder.pyx could not be built (said on stderr)")
    runner, up = await _upstream()
    port = free_port()
    proc = subprocess.Popen([*argv, str(port), str(up)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        await asyncio.to_thread(wait_port, port)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1),  # one client connection
                                         timeout=aiohttp.ClientTimeout(total=10)) as s:
            async def get(path: str) -> aiohttp.ClientResponse:
                async with s.get(base + path) as r:
                    await r.read()
                    return r

            peers = {(await get("/hello")).headers["X-Peer"] for _ in range(5)}
            assert len(peers) == 1  # keep-alive both sides: one upstream connection, reused from the pool
            async with s.head(base + "/hello") as r:  # no body follows a HEAD's response, whatever its length says
                assert r.status == 200 and r.headers["Content-Length"] == "5"
            async with s.get(base + "/hello") as r:
                assert await r.read() == b"hello"
            async with s.post(base + "/echo", data=b"k=v" * 100) as r:
                assert (await r.read(), r.headers["X-Chunked"]) == (b"k=v" * 100, "False")

            async def parts():
                for i in range(4):
                    yield b"chunk%d|" % i

            async with s.post(base + "/echo", data=parts()) as r:  # a chunked request body, framing passed as read
                assert (await r.read(), r.headers["X-Chunked"]) == (b"chunk0|chunk1|chunk2|chunk3|", "True")
            async with s.get(base + "/chunked") as r:
                assert await r.read() == b"part0;part1;part2;part3;part4;"
            big = bytes(range(256)) * 4096  # 1 MB: many reads each way
            async with s.post(base + "/echo", data=big) as r:
                assert await r.read() == big
            async with s.get(base + "/cut") as r:  # the upstream closes mid-response: the client sees it end
                with pytest.raises(aiohttp.ClientPayloadError):
                    await r.read()
            assert await (await get("/hello")).text() == "hello"  # and the forwarder carries on

        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        try:  # a pipelined pair in one write: answered in order on the one client connection
            writer.write(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
            assert (await asyncio.wait_for(_read_response(reader), 5))[1] == b"hello"
            assert (await asyncio.wait_for(_read_response(reader), 5))[1] == b"abc"
            # a response that says the upstream closes: that connection is not pooled, so the request pipelined
            # behind it (sent on at once, before the upstream's close arrives) goes to another one and is answered
            writer.write(b"GET /close HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            head, body = await asyncio.wait_for(_read_response(reader), 5)
            assert body == b"bye"
            closed_peer = next(line for line in head.split(b"\r\n") if line.lower().startswith(b"x-peer:"))
            head, body = await asyncio.wait_for(_read_response(reader), 5)
            assert body == b"hello"
            assert next(line for line in head.split(b"\r\n") if line.lower().startswith(b"x-peer:")) != closed_peer
        finally:
            writer.close()
    finally:
        proc.kill()
        proc.wait()
        print(proc.stdout.read())
        proc.stdout.close()
        await runner.cleanup()
