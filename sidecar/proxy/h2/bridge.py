"""HTTP/1.1 clients to ``h2c://`` nodes: a virtual HTTP/1.1 upstream connection
that carries each request as one stream on the node's shared HTTP/2 connection.

The HTTP/1.1 ``Request`` (``_exchange``) is left as it is: it gets an
``H2Bridge`` from the pool where it would get an ``UpstreamConn`` and writes
its request bytes to ``bridge.transport`` (the bridge itself). Those bytes —
already gated, stamped and framed by the HTTP/1.1 path — are parsed back with
httptools into HEADERS and DATA on an ``H2Leg``; the stream's response comes
back as ``on_response_head``/``on_response_body``/``on_response_end``, the
calls an ``UpstreamConn`` makes. The parse costs one pass over the head; this
path is for HTTP/1.1 clients of HTTP/2-only nodes, not the hot path.

Not carried: upgrades (WebSocket over HTTP/2 needs extended CONNECT: 502) and
response trailers (HTTP/1.1 responses here are not chunked-with-trailers).
Back-pressure: request bytes beyond ``HIGH`` waiting for the node's window
pause the client; response bytes are acknowledged to the node as they are
handed to the client, and not while the client's side is paused.
"""

from __future__ import annotations

from typing import Any

import httptools

from ..upstream import RespHead

HIGH = 256 * 1024
_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"host",
                  b"te", b"trailer"})


class H2Bridge:
    """Looks like an ``UpstreamConn`` to the HTTP/1.1 path (and is its own transport)."""

    def __init__(self, pool: Any, h2pool: Any, key: tuple[str, int], node: Any) -> None:
        self.pool = pool
        self.h2pool = h2pool
        self.key = key
        self.node = node
        self.transport = self
        self.exchange: Any = None
        self.closed = False
        self.served = 0
        self.idle_since = 0.0
        self.paused = False
        self.conn: Any = None
        self._reset()

    def _reset(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.stream: _Stream | None = None
        self.leg: Any = None
        self.method_b = b"GET"
        self.path = b""
        self.fwd: list[tuple[bytes, bytes]] = []
        self.authority = b""
        self.queued = 0
        self.unacked = 0
        self.rpaused = False
        self.got_head = False
        self.ended = False

    # -- transport side (what Request writes to) ----------------------------------
    def write(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail("an upgrade cannot cross to an HTTP/2 node")
        except httptools.HttpParserError as exc:
            self._fail(f"cannot carry the request over HTTP/2: {exc}")

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        self.rpaused = True

    def resume_reading(self) -> None:
        self.rpaused = False
        if self.unacked and self.leg is not None:
            n, self.unacked = self.unacked, 0
            self.leg.ack_resp(n)

    # -- httptools callbacks (the request the HTTP/1.1 path framed) ----------------
    def on_url(self, url: bytes) -> None:
        self.path += url

    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        if lname == b"host":
            self.authority = value
        elif lname not in _HOP:
            self.fwd.append((lname, value))

    def on_headers_complete(self) -> None:
        self.method_b = self.parser.get_method()
        conn = self.conn
        if conn is None or not conn.capacity():
            conn = self.conn = next((c for c in self.h2pool.conns.get(self.key, ()) if c.capacity()), None)
        if conn is None:
            return self._fail("no HTTP/2 connection to the node has room for another stream")
        self.stream = _Stream(self)
        self.leg = conn.start(self.stream, [], False)

    def on_body(self, body: bytes) -> None:
        if self.leg is not None:
            self.queued += len(body)
            self.leg.send(body)
            if self.queued > HIGH and not self.paused and self.exchange is not None:
                self.paused = True
                self.exchange.upstream_paused(True)

    def on_message_complete(self) -> None:
        if self.leg is not None:
            self.leg.end(None)

    def req_sent(self, n: int) -> None:
        if self.leg is None:
            return
        self.queued -= n
        if self.paused and self.queued <= HIGH // 2 and self.exchange is not None:
            self.paused = False
            self.exchange.upstream_paused(False)

    # -- the stream's response (H2Leg → here → Request) -----------------------------
    def resp_head(self, headers: list[tuple[bytes, bytes]], ended: bool) -> None:
        ex = self.exchange
        if ex is None:
            return
        head = RespHead()
        for k, v in headers:
            if k == b":status":
                head.status = int(v)
            elif k[:1] == b":":
                continue
            elif k == b"content-length":
                head.clen = v
            else:
                if k == b"content-type":
                    head.ctype = v
                head.lines += (k, b": ", v, b"\r\n")
        if head.status < 200:
            return
        self.got_head = True
        if ended and head.clen is None:
            head.clen = b"0"
        ex.on_response_head(head)
        if ended:
            self.resp_end()

    def resp_data(self, data: bytes) -> None:
        ex = self.exchange
        if ex is not None:
            ex.on_response_body(data)
        if self.rpaused:
            self.unacked += len(data)
        elif self.leg is not None:
            self.leg.ack_resp(len(data))

    def resp_trailers(self, trailers: list[tuple[bytes, bytes]]) -> None:
        self.resp_end()

    def resp_end(self) -> None:
        if self.ended:
            return
        self.ended = True
        ex = self.exchange
        if ex is not None:
            ex.on_response_end()

    def up_lost(self, never_processed: bool, msg: str) -> None:
        self.leg = None
        ex = self.exchange
        if ex is None:
            return
        if self.got_head:
            self.exchange = None
            ex.upstream_lost(self)
        else:
            ex.upstream_failed(f"node {self.node.name!r}: {msg}")

    def _fail(self, msg: str) -> None:
        ex = self.exchange
        if ex is not None:
            ex.upstream_failed(msg)

    # -- pool side ---------------------------------------------------------------
    def release(self, reusable: bool) -> None:
        self.exchange = None
        if reusable and self.ended and not self.closed:
            self.served += 1
            self._reset()
            self.pool.put(self)
        else:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        leg, self.leg = self.leg, None
        if leg is not None and not self.ended:
            leg.cancel()
        self.pool.forget(self)


class _Stream:
    """The leg's view of one request on the bridge: events of a finished stream (a late
    StreamEnded after the trailers, say) must not reach the bridge's next request."""

    __slots__ = ("bridge", "method_b", "path", "fwd", "node", "clen")

    def __init__(self, bridge: H2Bridge) -> None:
        self.bridge = bridge
        self.method_b, self.path, self.fwd = bridge.method_b, bridge.path, bridge.fwd
        self.node = bridge.node
        self.clen = None  # (a Content-Length the HTTP/1.1 path checked travels in fwd)

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self.bridge, name)
        if self.bridge.stream is not self:
            return _ignore
        return fn


def _ignore(*args: Any) -> None:
    return None


async def open_bridge(ctx: Any, key: tuple[str, int]) -> H2Bridge:
    """``UpstreamPool.connect`` for an ``h2c://`` node: make sure an HTTP/2 connection exists."""
    from .upstream import h2pool

    node = next((n for n in ctx.nodes.values() if n.key == key), None)
    if node is None:
        raise OSError(0, "the node is no longer configured")
    pool = h2pool(ctx)
    conn = next((c for c in pool.conns.get(key, ()) if c.capacity()), None)
    if conn is None:
        conn = await pool.connect(node)
    bridge = H2Bridge(ctx.pool, pool, key, node)
    bridge.conn = conn
    return bridge
