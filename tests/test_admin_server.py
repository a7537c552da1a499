"""The admin port's own HTTP server (sidecar/_admin.py, httptools on asyncio; it replaced
aiohttp): routes, status codes and content types, HEAD, keep-alive and pipelining in
order, a half-closing client, and bad input answered with a status, never a traceback."""

from __future__ import annotations

import asyncio

import pytest

from sidecar._admin import MAX_HEAD, AdminServer

TEXT = b"text/plain; charset=utf-8"


@pytest.fixture
async def admin():
    state = {"ready": True, "scrapes": 0, "slow": 0.0}

    async def metrics() -> bytes:
        state["scrapes"] += 1
        await asyncio.sleep(state["slow"])
        return b"# metrics %d\n" % state["scrapes"]

    srv = AdminServer(metrics, lambda: state["ready"], lambda: "because")
    port = await srv.start("127.0.0.1", 0)
    yield port, state
    await srv.stop()


async def _exchange(port: int, raw: bytes, half_close: bool = False) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    if half_close:
        writer.write_eof()
    try:
        return await asyncio.wait_for(reader.read(), 5)   # every case here ends with the server closing
    finally:
        writer.close()


def _parts(resp: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head, _, body = resp.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    return status, {k.lower(): v for k, v in (ln.split(b": ", 1) for ln in lines)}, body


async def test_routes_status_and_content_types(admin):
    port, state = admin
    status, h, body = _parts(await _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"))
    assert (status, h[b"content-type"], body) == (b"HTTP/1.1 200 OK", TEXT, b"ok\n")
    assert h[b"connection"] == b"close"
    status, h, body = _parts(await _exchange(port, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"))
    assert status == b"HTTP/1.1 200 OK" and body == b"# metrics 1\n"
    assert h[b"content-type"].startswith(b"text/plain; version=") and h[b"content-length"] == b"12"
    assert _parts(await _exchange(port, b"GET /readyz HTTP/1.0\r\n\r\n"))[2] == b"ready\n"
    state["ready"] = False
    status, h, body = _parts(await _exchange(port, b"GET /readyz HTTP/1.0\r\n\r\n"))
    assert (status, body) == (b"HTTP/1.1 503 Service Unavailable", b"not ready: because\n")
    status, h, body = _parts(await _exchange(port, b"GET /nope HTTP/1.0\r\n\r\n"))
    assert (status, h[b"content-type"]) == (b"HTTP/1.1 404 Not Found", TEXT)
    status, h, _ = _parts(await _exchange(port, b"POST /metrics HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc"))
    assert (status, h[b"allow"]) == (b"HTTP/1.1 405 Method Not Allowed", b"GET, HEAD")
    status, h, body = _parts(await _exchange(port, b"HEAD /healthz HTTP/1.0\r\n\r\n"))
    assert (status, h[b"content-length"], body) == (b"HTTP/1.1 200 OK", b"3", b"")


async def test_keep_alive_pipelined_answers_in_order(admin):
    port, state = admin
    state["slow"] = 0.1   # the first answer is the slow one: the second must still come after it
    out = await _exchange(port, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n"
                                b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    first, second = out.split(b"HTTP/1.1 200 OK")[1:]
    assert first.endswith(b"# metrics 1\n") and second.endswith(b"ok\n")


async def test_a_half_closing_client_gets_its_answer(admin):
    port, state = admin
    state["slow"] = 0.1
    out = await _exchange(port, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", half_close=True)
    assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"# metrics 1\n")


@pytest.mark.parametrize("raw, status", [
    (b"GARBAGE\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
    (b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
    (b"GET /healthz HTTP/1.1\r\nX: " + b"a" * (MAX_HEAD + 1) + b"\r\n\r\n",
     b"HTTP/1.1 431 Request Header Fields Too Large"),
    (b"GET /" + b"a" * (MAX_HEAD + 1) + b" HTTP/1.1\r\n\r\n", b"HTTP/1.1 431 Request Header Fields Too Large"),
])
async def test_bad_input_gets_a_status_and_the_connection_closes(admin, raw, status):
    port, _ = admin
    got, h, _ = _parts(await _exchange(port, raw))
    assert got == status and h[b"connection"] == b"close"


async def test_an_upgrade_request_is_answered_then_closed(admin):
    port, _ = admin
    out = await _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: ws\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"ok\n")
