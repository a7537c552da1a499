"""Hostile input — request smuggling through Upgrade (issue 15, High).

Each test drives a real sidecar with raw sockets against an h11 upstream that
refuses upgrades with a 200 and then parses whatever follows as the next
request. On the sidecar before these guards each of them delivered a second,
never-admitted request (``PUT /kv/greet`` stamped for t1) to t2's node.
"""

from __future__ import annotations

from tests._hostile import SMUGGLED_T1, h11_nodes, hostile_sidecar, send_raw, statuses  # noqa: F401

HEAD = b"Host: app\r\nX-Partition-Key: t2\r\n"


def no_smuggled(nodes) -> None:
    for up in nodes:
        assert not up.errors, up.errors
        assert [s.method for s in up.seen if s.method == "PUT"] == [], [(s.method, s.target) for s in up.seen]
        assert all(s.target != "/kv/greet" for s in up.seen)


async def test_upgrade_with_a_content_length_body_is_refused(tmp_path, h11_nodes):
    async with hostile_sidecar(tmp_path, h11_nodes) as sc:
        raw = (b"GET /chat HTTP/1.1\r\n" + HEAD + b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
               b"Content-Length: %d\r\n\r\n" % len(SMUGGLED_T1) + SMUGGLED_T1)
        out = await send_raw(sc.port, raw)
        assert statuses(out) == [400], out
        assert b"upgrade with a body" in out
        for up in h11_nodes:
            await up.quiet()
        no_smuggled(h11_nodes)
        assert h11_nodes[1].seen == []  # refused before anything went upstream


async def test_upgrade_with_a_chunked_body_is_refused(tmp_path, h11_nodes):
    async with hostile_sidecar(tmp_path, h11_nodes) as sc:
        raw = (b"GET /chat HTTP/1.1\r\n" + HEAD + b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(SMUGGLED_T1) + SMUGGLED_T1 + b"\r\n0\r\n\r\n")
        out = await send_raw(sc.port, raw)
        assert statuses(out) == [400], out
        for up in h11_nodes:
            await up.quiet()
        no_smuggled(h11_nodes)


async def test_a_trailer_saying_upgrade_changes_nothing(tmp_path, h11_nodes):
    """Trailers reach the parser's header callback after the head was checked: they must
    neither turn the request into an upgrade nor become request headers."""
    async with hostile_sidecar(tmp_path, h11_nodes) as sc:
        raw = (b"POST /kv/x HTTP/1.1\r\n" + HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
               b"%x\r\n" % len(SMUGGLED_T1) + SMUGGLED_T1 + b"\r\n0\r\nUpgrade: foo\r\nConnection: upgrade\r\n"
               b"X-Partition-Key: t1\r\nX-Trailer: evil\r\n\r\n")
        out = await send_raw(sc.port, raw, timeout=2.0)
        assert statuses(out) == [200], out
        for up in h11_nodes:
            await up.quiet()
        no_smuggled(h11_nodes)
        a, b = h11_nodes
        assert a.seen == []
        [post] = b.seen
        assert post.method == "POST" and post.body == SMUGGLED_T1  # the body stays a body
        assert post.header("upgrade") == [] and post.header("x-trailer") == []
        assert post.header("x-partition") == ["t2"]


async def test_bytes_after_an_upgrade_head_wait_for_the_101(tmp_path, h11_nodes):
    """A bodyless upgrade followed at once by more bytes: the upstream refuses the upgrade;
    the bytes must never reach it (they were meant for the other protocol)."""
    async with hostile_sidecar(tmp_path, h11_nodes) as sc:
        raw = b"GET /chat HTTP/1.1\r\n" + HEAD + b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n" + SMUGGLED_T1
        out = await send_raw(sc.port, raw)
        assert statuses(out) == [200], out
        assert b"Connection: close" in out  # the client connection was given to the upgrade: closed
        for up in h11_nodes:
            await up.quiet()
        no_smuggled(h11_nodes)
        assert [s.target for s in h11_nodes[1].seen] == ["/chat"]


async def test_an_upstream_connection_that_refused_an_upgrade_is_not_reused(tmp_path, h11_nodes):
    async with hostile_sidecar(tmp_path, h11_nodes, upstream_idle=30.0) as sc:
        first = await send_raw(sc.port, b"GET /chat HTTP/1.1\r\n" + HEAD +
                               b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        assert statuses(first) == [200]
        second = await send_raw(sc.port, b"GET /after HTTP/1.1\r\n" + HEAD + b"Connection: close\r\n\r\n")
        assert statuses(second) == [200]
        b = h11_nodes[1]
        await b.wait_requests(2)
        chat, after = b.seen
        assert (chat.target, after.target) == ("/chat", "/after")
        assert chat.conn != after.conn, "the connection that saw a refused upgrade was pooled and reused"


async def test_an_accepted_upgrade_still_tunnels_the_early_bytes(tmp_path, h11_nodes):
    async with hostile_sidecar(tmp_path, h11_nodes) as sc:
        import asyncio

        reader, writer = await asyncio.open_connection("127.0.0.1", sc.port)
        writer.write(b"GET /accept-upgrade HTTP/1.1\r\n" + HEAD + b"Connection: Upgrade\r\nUpgrade: echo\r\n\r\nping")
        await writer.drain()
        got = b""
        while b"echo:ping" not in got:
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            assert chunk, got
            got += chunk
        assert got.startswith(b"HTTP/1.1 101 ")
        writer.write(b"pong")
        while b"echo:pong" not in got:
            got += await asyncio.wait_for(reader.read(65536), 5)
        writer.close()


async def test_h2c_among_other_upgrade_tokens_is_refused(tmp_path, h11_nodes):
    """Issue 26 finding 7: every ``Upgrade`` token counts (the node picks among them), also
    across several ``Upgrade`` lines; before, only the first token of the last line was checked."""
    async with hostile_sidecar(tmp_path, h11_nodes) as sc:
        for upg in (b"Upgrade: websocket, h2c\r\n", b"Upgrade: websocket,H2C/1.0\r\n",
                    b"Upgrade: h2c\r\nUpgrade: websocket\r\n", b"Upgrade: websocket\r\nUpgrade: h2\r\n"):
            out = await send_raw(sc.port, b"GET /chat HTTP/1.1\r\n" + HEAD + b"Connection: Upgrade, HTTP2-Settings\r\n"
                                 + upg + b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
            assert statuses(out) == [400], (upg, out)
            assert b"h2c upgrade not proxied" in out
        for up in h11_nodes:
            await up.quiet()
        assert h11_nodes[1].seen == []  # refused before anything went upstream
