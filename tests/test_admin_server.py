"""The admin port's own HTTP server (sidecar/_admin.py, httptools on asyncio; it replaced
aiohttp): routes, status codes and content types, HEAD, keep-alive and pipelining in
order, a half-closing client, and bad input answered with a status, never a traceback."""

from __future__ import annotations

import asyncio

import pytest

from sidecar._admin import MAX_HEAD, AdminServer
from tests._hostile import send_endless_header
from tests._sidecar_util import until

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


# ---- bounded memory (issue 26, finding 6) --------------------------------------------------------


async def test_a_huge_header_is_answered_431_before_it_is_buffered(admin):
    """The value never ends: the 431 must come once about MAX_HEAD arrived (on main it came
    only after the parser had buffered the whole value)."""
    port, _ = admin
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = asyncio.ensure_future(reader.read())
    sent = await send_endless_header(writer, answer, b"GET /metrics HTTP/1.1\r\nHost: a\r\nX-Big: ")
    out = await asyncio.wait_for(answer, 10)
    writer.close()
    assert out.startswith(b"HTTP/1.1 431"), out[:100]
    assert sent < 1 << 20, f"{sent} bytes of one header were read before the 431"


async def test_unread_pipelined_answers_stop_the_reading(admin):
    """A client that pipelines scrapes and never reads: the server stops reading (and making
    answers) instead of queueing them all; once the client reads, every answer comes, in order.
    Observed at each scrape: the answers waiting in the server's write buffer and the requests
    read ahead of their answers stay bounded (on main: every answer made and buffered)."""
    from sidecar._admin import FEED, MAX_PIPELINE

    big = b"# " + b"m" * 65536 + b"\n"
    seen = {"scrapes": 0, "buffered": 0, "ahead": 0}

    async def metrics() -> bytes:
        seen["scrapes"] += 1
        conn = next(iter(srv.conns))
        seen["buffered"] = max(seen["buffered"], conn.transport.get_write_buffer_size())
        seen["ahead"] = max(seen["ahead"], conn.queued)
        return big

    srv = AdminServer(metrics, lambda: True)
    port = await srv.start("127.0.0.1", 0)
    try:
        n = 500
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.transport.set_write_buffer_limits(high=64 << 20)  # the client keeps writing, never reads
        one = b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n"
        writer.write(one * (n - 1) + b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        await until(lambda: srv.conns and not next(iter(srv.conns)).writable.is_set())  # the client's buffers are full
        assert seen["scrapes"] < n // 4, f"{seen['scrapes']} answers of {n} made for a client that reads none"
        out = await asyncio.wait_for(reader.read(), 60)  # now it reads: nothing was lost
        assert out.count(b"HTTP/1.1 200 OK") == n
        assert seen["buffered"] <= 256 << 10, f"{seen['buffered']} bytes of answers waited in the write buffer"
        assert seen["ahead"] <= MAX_PIPELINE + FEED // len(one) + 1, f"{seen['ahead']} requests read ahead"
        writer.close()
    finally:
        await srv.stop()


async def test_connections_beyond_the_bound_are_refused(admin):
    from sidecar._admin import MAX_CONNS

    port, _ = admin
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(MAX_CONNS)]
    for r, w in held:  # each one answered: all are open on the server's side
        w.write(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (await asyncio.wait_for(r.readuntil(b"ok\n"), 5)).startswith(b"HTTP/1.1 200")
    out = await _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 503"), out
    for _, w in held:
        w.close()
    for _ in range(200):  # served again once the server has seen the closes
        out = await _exchange(port, b"GET /healthz HTTP/1.0\r\n\r\n")
        if out.endswith(b"ok\n"):
            break
        await asyncio.sleep(0.02)
    assert out.endswith(b"ok\n"), out


async def test_a_trickled_head_times_out(admin, monkeypatch):
    import sidecar._admin as admin_mod

    monkeypatch.setattr(admin_mod, "HEAD_S", 0.3)
    port, _ = admin
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = asyncio.ensure_future(reader.read())
    head = b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"a" * 1000
    for i in range(len(head)):
        if answer.done():
            break
        writer.write(head[i:i + 1])
        await asyncio.sleep(0.01)   # (the client's pace; the server's deadline decides)
    out = await asyncio.wait_for(answer, 10)
    writer.close()
    assert out.startswith(b"HTTP/1.1 408"), out
