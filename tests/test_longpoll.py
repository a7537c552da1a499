"""The lean long-poll GET client against a real loopback HTTP server that
answers with each framing Consul (Go net/http) may use, and with junk."""

from __future__ import annotations

import asyncio
import gzip

import pytest

from gate import BackendError
from gate._longpoll import LongPollClient

_LIST = b'[{"Key":"epochgate/sidecars/f00001","Session":"0b6f1b6e","ModifyIndex":1234}]' * 40
_GZ = gzip.compress(_LIST)
ANSWERS = {
    b"/cl": b"HTTP/1.1 200 OK\r\nX-Consul-Index: 7\r\nContent-Length: 5\r\n\r\nhello",
    b"/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Consul-Index: 9\r\n\r\n"
                 b"3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\n\r\n",
    b"/close": b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nX-Consul-Index: 3\r\n\r\ngone",
    b"/junk": b"NOT HTTP AT ALL\r\n\r\n",
    b"/gz": b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(_GZ), _GZ),
    b"/br": b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 2\r\n\r\nxx",
}


@pytest.fixture
async def server():
    seen = {"connections": 0, "token": []}

    async def handle(reader, writer):
        seen["connections"] += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ")[1]
                seen["token"].append(b"X-Consul-Token: tok" in head)
                seen.setdefault("gzip", []).append(b"Accept-Encoding: gzip" in head)
                if path == b"/hang":
                    await asyncio.sleep(30)
                writer.write(ANSWERS[path])
                await writer.drain()
                if path == b"/close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", seen
    srv.close()


async def test_framings_and_keep_alive(server):
    url, seen = server
    c = LongPollClient(url, {"X-Consul-Token": "tok"})
    try:
        r = await c.get("/cl", 5)
        assert (r.status, r.body, r.headers["x-consul-index"]) == (200, b"hello", "7")
        r = await c.get("/chunked", 5)
        assert (r.status, r.body, r.headers["x-consul-index"]) == (200, b"abcdefg", "9")
        assert seen["connections"] == 1  # both on one kept-alive connection
        r = await c.get("/close", 5)
        assert (r.status, r.body) == (404, b"gone")
        await c.get("/cl", 5)
        assert seen["connections"] == 2  # the server closed it, so a new one
        assert all(seen["token"]) and r.wire_bytes > len(r.body)
    finally:
        await c.close()


async def test_failures_are_backend_errors(server):
    url, _ = server
    c = LongPollClient(url)
    try:
        with pytest.raises(BackendError):
            await c.get("/junk", 5)
        with pytest.raises(BackendError, match="TimeoutError"):
            await c.get("/hang", 0.2)
        assert (await c.get("/cl", 5)).body == b"hello"  # recovers on a fresh connection
    finally:
        await c.close()
    with pytest.raises(BackendError, match="closed"):
        await c.get("/cl", 5)
    dead = LongPollClient("http://127.0.0.1:1")
    with pytest.raises(BackendError):
        await dead.get("/cl", 2)


async def test_a_gzip_answer_is_asked_for_decompressed_and_counted_compressed(server):
    url, seen = server
    c = LongPollClient(url)
    try:
        r = await c.get("/gz", 5, gzip=True)
        assert r.body == _LIST and seen["gzip"] == [True]
        assert r.wire_bytes < len(_LIST) / 5   # what came over the socket
        await c.get("/cl", 5)
        assert seen["gzip"] == [True, False]   # only when asked
        with pytest.raises(BackendError, match="Content-Encoding"):
            await c.get("/br", 5)
    finally:
        await c.close()
