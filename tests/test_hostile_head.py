"""Hostile input — heads, connections and framing (issue 15, High/Low).

Raw-socket clients against a real sidecar and an h11 upstream: a header that
never ends, a head trickled a byte at a time, more connections than allowed,
a second Host, trailers on a request whose upstream was not connected yet.
"""

from __future__ import annotations

import asyncio

from tests._hostile import h11_nodes, hostile_sidecar, send_endless_header, send_raw, statuses  # noqa: F401

HEAD = b"Host: app\r\nX-Partition-Key: t2\r\n"


async def _read_response(reader: asyncio.StreamReader, timeout: float) -> bytes:
    out = b""
    while b"\r\n\r\n" not in out:
        chunk = await asyncio.wait_for(reader.read(65536), timeout)
        if not chunk:
            break
        out += chunk
    return out


async def test_a_huge_header_is_answered_431_before_it_is_buffered(tmp_path, h11_nodes):
    """The header never ends; the 431 must come once about --max-header-bytes arrived, not
    after the whole value was read (it never is)."""
    async with hostile_sidecar(tmp_path, h11_nodes, max_header_bytes=16384) as sc:
        reader, writer = await asyncio.open_connection("127.0.0.1", sc.port)
        answer = asyncio.ensure_future(_read_response(reader, 30))
        sent = await send_endless_header(writer, answer, b"GET / HTTP/1.1\r\n" + HEAD + b"X-Big: ")
        out = await asyncio.wait_for(answer, 10)
        writer.close()
        assert statuses(out) == [431], out
        assert sent < 1 << 20, f"{sent} bytes of one header were accepted before the 431"
        assert h11_nodes[1].seen == []


async def test_a_head_trickled_slowly_times_out_with_408(tmp_path, h11_nodes):
    async with hostile_sidecar(tmp_path, h11_nodes, head_timeout=0.5) as sc:
        reader, writer = await asyncio.open_connection("127.0.0.1", sc.port)
        answer = asyncio.ensure_future(_read_response(reader, 30))
        head = b"GET / HTTP/1.1\r\n" + HEAD + b"X-Slow: " + b"a" * 10000
        for i in range(len(head)):
            if answer.done():
                break
            try:
                writer.write(head[i:i + 1])
                await writer.drain()
            except ConnectionError:
                break
            await asyncio.sleep(0.02)  # the client's pace (the sidecar's clock decides)
        out = await asyncio.wait_for(answer, 10)
        writer.close()
        assert statuses(out) == [408], out
        assert sc.metrics.head_timeouts._value.get() == 1


async def test_connections_beyond_the_limit_are_refused_and_counted(tmp_path, h11_nodes):
    async with hostile_sidecar(tmp_path, h11_nodes, max_connections=3) as sc:
        held = [await asyncio.open_connection("127.0.0.1", sc.port) for _ in range(3)]
        # the three are established on the sidecar's side before the fourth arrives
        for r, w in held:
            w.write(b"GET /ping HTTP/1.1\r\n" + HEAD + b"\r\n")
            await w.drain()
            assert statuses(await _read_response(r, 5)) == [200]
        out = await send_raw(sc.port, b"GET / HTTP/1.1\r\n" + HEAD + b"\r\n")
        assert statuses(out) == [503], out
        assert b"too-many-connections" in out
        assert sc.metrics.connections_refused._value.get() == 1
        text = (await sc._own_metrics()).decode()
        assert "epochgate_client_connections 3.0" in text
        for _, w in held:
            w.close()


async def test_a_second_host_header_is_refused(tmp_path, h11_nodes):
    async with hostile_sidecar(tmp_path, h11_nodes, partition_from=("host",)) as sc:
        out = await send_raw(sc.port, b"GET / HTTP/1.1\r\nHost: t2\r\nHost: t1\r\n\r\n")
        assert statuses(out) == [400], out
        assert b"duplicate Host" in out
        for up in h11_nodes:
            assert up.seen == []


async def test_trailers_never_become_request_headers(tmp_path, h11_nodes):
    """The whole request arrives before the first upstream connection is ready, so the
    head is built after the trailers were parsed."""
    async with hostile_sidecar(tmp_path, h11_nodes) as sc:
        raw = (b"POST /kv/x HTTP/1.1\r\n" + HEAD + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
               b"5\r\nhello\r\n0\r\nX-Trailer: evil\r\nX-Partition-Key: t1\r\nHost: other\r\n"
               b"X-Request-Id: forged\r\n\r\n")
        out = await send_raw(sc.port, raw)
        assert statuses(out) == [200], out
        b = h11_nodes[1]
        await b.wait_requests(1)
        [post] = b.seen
        assert post.body == b"hello"
        assert post.header("x-trailer") == [] and post.header("x-request-id") != ["forged"]
        assert post.header("x-forwarded-host") == ["app"] and post.header("x-partition") == ["t2"]
        assert h11_nodes[0].seen == []


async def test_a_huge_trailer_is_cut_before_it_is_buffered(tmp_path, h11_nodes):
    """Trailer fields are buffered by the parser like a head: the same arrival-time bound."""
    async with hostile_sidecar(tmp_path, h11_nodes, max_header_bytes=16384) as sc:
        reader, writer = await asyncio.open_connection("127.0.0.1", sc.port)
        closed = asyncio.ensure_future(reader.read())  # until EOF: the request was already forwarded
        writer.write(b"POST /kv/x HTTP/1.1\r\n" + HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n" + b"3\r\nabc\r\n" * 100 + b"0\r\nX-Big: ")
        sent = 0
        try:
            while not closed.done() and sent < 8 << 20:
                writer.write(b"a" * 8192)
                await writer.drain()
                sent += 8192
                await asyncio.sleep(0)
        except ConnectionError:
            pass
        try:
            await asyncio.wait_for(closed, 10)  # EOF, or a reset (the forwarded request is aborted)
        except ConnectionError:
            pass
        writer.close()
        assert sent < 1 << 20, f"{sent} bytes of one trailer were accepted"


async def test_chunked_bodies_in_many_small_reads_are_not_mistaken_for_trailers(tmp_path, h11_nodes):
    async with hostile_sidecar(tmp_path, h11_nodes, max_header_bytes=2048) as sc:
        reader, writer = await asyncio.open_connection("127.0.0.1", sc.port)
        writer.write(b"POST /kv/x HTTP/1.1\r\n" + HEAD + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        body = b""
        for i in range(200):  # each read ends right after a chunk-size line; its data comes next
            data = bytes([97 + i % 26]) * 3000
            body += data
            writer.write(b"%x\r\n" % len(data))
            await writer.drain()
            await asyncio.sleep(0.001)
            writer.write(data + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        out = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert statuses(out) == [200], out
        [post] = h11_nodes[1].seen
        assert post.body == body
