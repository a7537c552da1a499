"""An HTTP/2 client stream forwarded to an HTTP/1.1 node (``http://``, or
``https://`` that chose ``http/1.1`` by ALPN), over the shared keep-alive pool.

``H1Leg`` stands where the HTTP/1.1 ``Request`` stands for an ``UpstreamConn``
(it receives the parser callbacks) and turns them into the exchange's
``resp_*`` calls. The request is framed with its checked ``content-length`` (the
exchange refuses a stream whose DATA does not add up to it; this leg never
writes past it, and a connection whose node still waits for declared bytes is
never pooled) or chunked; request trailers are dropped (the exchange's rule).
Back-pressure: request bytes are acknowledged to the client only while the
upstream socket accepts them; upstream reading pauses while more than
``RESP_HIGH`` response bytes wait for the client's window.
"""

from __future__ import annotations

from typing import Any

from .. import httpmsg as H
from ..router import SAFE_METHODS

RESP_HIGH = 256 * 1024
RESP_LOW = 64 * 1024
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_NO_BODY = frozenset({204, 304})


class H1Target:
    """A pooled (or new) HTTP/1.1 connection about to carry one HTTP/2 stream."""

    __slots__ = ("up", "pool")

    def __init__(self, up: Any, pool: Any) -> None:
        self.up = up
        self.pool = pool

    @classmethod
    def get(cls, ex: Any, node: Any, spare: Any, h2pool: Any) -> "H1Target | None":
        pool = ex.ctx.pool
        if isinstance(spare, H1Target):
            if spare.up.key == node.key and not spare.up.closed:
                return spare
            spare.unused()
        elif spare is not None:
            spare.unused()
        up = pool.get_idle(node.key)
        if up is not None:
            return cls(up, pool)
        ex.ctx.loop.create_task(cls._connect(ex, node, h2pool))
        return None

    @classmethod
    async def _connect(cls, ex: Any, node: Any, h2pool: Any) -> None:
        try:
            up = await ex.ctx.pool.connect(node.key)
        except Exception as exc:  # noqa: BLE001 - every failure becomes the client's 502
            return h2pool.connect_failed(ex, node, exc)
        if ex.done:
            ex.ctx.pool.put(up)
            return
        ex.spare = cls(up, ex.ctx.pool)
        ex.route()

    def unused(self) -> None:
        self.pool.put(self.up)

    def start(self, ex: Any, extra: list[tuple[bytes, bytes]], ends: bool) -> "H1Leg":
        # ex.method_b, ex.path and every field were checked by the exchange (fields.py): no
        # byte here can end a line or the head early.
        parts = [ex.method_b, b" ", ex.path, b" HTTP/1.1\r\nHost: ", ex.node.netloc, b"\r\n"]
        cookies = []
        for k, v in ex.fwd:
            if k == b"cookie":
                cookies.append(v)
                continue
            if k == b"te":
                continue
            parts += (k, b": ", v, b"\r\n")
        if cookies:
            parts += (b"cookie: ", b"; ".join(cookies), b"\r\n")
        for k, v in extra:
            parts += (k, b": ", v, b"\r\n")
        # The framing is written once, here, from the checked number (the client's lines are
        # not forwarded): the node is told exactly the bytes this leg will write.
        clen = ex.clen
        chunked = False
        left = 0
        if ends:
            if clen is not None or ex.method not in SAFE_METHODS:
                parts.append(b"content-length: 0\r\n")  # (a declared length is 0 here: fields.py)
        elif clen is None:
            chunked = True
            parts.append(b"transfer-encoding: chunked\r\n")
        else:
            left = clen
            parts.append(b"content-length: %d\r\n" % clen)
        parts.append(b"\r\n")
        leg = H1Leg(ex, self.up, chunked, ends, left)
        self.up.transport.write(b"".join(parts))
        return leg


class H1Leg:
    """Parser callbacks of an ``UpstreamConn`` → the HTTP/2 exchange."""

    __slots__ = ("ex", "up", "chunked", "left", "sent_all", "unacked", "outstanding", "rpaused", "interim",
                 "got_head", "keep", "cout", "tunnel")

    def __init__(self, ex: Any, up: Any, chunked: bool, ends: bool, left: int) -> None:
        self.ex = ex
        self.up = up
        up.exchange = self
        self.chunked = chunked
        self.left = left       # content-length bytes still owed to the node
        self.sent_all = ends   # the node read the whole request: only then is the connection reusable
        self.unacked = 0
        self.outstanding = 0
        self.rpaused = False
        self.interim = False
        self.got_head = False
        self.keep = False
        self.cout = None     # (UpstreamConn batches client writes through these two)
        self.tunnel = False

    def flush_client(self) -> None:
        pass

    # -- request → upstream -----------------------------------------------------
    def send(self, data: bytes) -> None:
        up = self.up
        if up is None or up.transport is None:
            return
        if not self.chunked:
            if len(data) > self.left:  # never past the declared length: the node would take it as a request
                return self.upstream_failed("the request body is longer than its content-length")
            self.left -= len(data)
        up.transport.write(H.chunk(data) if self.chunked else data)
        if up.paused:
            self.unacked += len(data)
        else:
            self.ex.req_sent(len(data))

    def end(self, trailers: Any) -> None:
        up = self.up
        if up is not None and up.transport is not None and self.chunked:
            up.transport.write(H.LAST_CHUNK)
        # A body short of its content-length leaves the node waiting for bytes: the connection
        # must then never be pooled (the exchange refuses such a stream before this).
        self.sent_all = self.chunked or self.left == 0

    def upstream_paused(self, paused: bool) -> None:
        if not paused and self.unacked:
            n, self.unacked = self.unacked, 0
            self.ex.req_sent(n)

    # -- upstream → client ----------------------------------------------------
    def on_response_head(self, head: Any) -> None:
        status = head.status
        if status < 200:
            self.interim = status != 101
            if status == 101:
                self.upstream_failed("upstream switched protocols without an upgrade request")
            return
        self.interim = False
        self.got_head = True
        self.keep = head.keep
        out = [(b":status", b"%d" % status)]
        drop = head.ctoks or ()
        for name, value in head.fields():
            name = name.lower()
            if name not in drop:
                out.append((name, value))
        if head.clen is not None and status not in _NO_BODY:
            out.append((b"content-length", head.clen))
        ex = self.ex
        if ex.method == "HEAD" or status in _NO_BODY:  # no body follows (httptools cannot be told for HEAD)
            ex.resp_head(out, True)
            self._release(ex.method != "HEAD")
            return
        ex.resp_head(out, False)

    def on_response_body(self, data: bytes) -> None:
        if self.interim or self.up is None:
            return
        self.outstanding += len(data)
        self.ex.resp_data(data)
        if self.outstanding > RESP_HIGH and not self.rpaused and self.up is not None:
            self.rpaused = True
            self.up.transport.pause_reading()

    def ack_resp(self, n: int) -> None:
        self.outstanding -= n
        if self.rpaused and self.outstanding <= RESP_LOW and self.up is not None:
            self.rpaused = False
            self.up.transport.resume_reading()

    def on_response_end(self) -> None:
        if self.interim:
            self.interim = False
            return
        if self.up is None:
            return
        self._release(self.keep and self.sent_all)
        self.ex.resp_end()

    def _release(self, reusable: bool) -> None:
        up, self.up = self.up, None
        if up is None:
            return
        if self.rpaused and up.transport is not None:
            self.rpaused = False
            up.transport.resume_reading()
        up.release(reusable)

    def upstream_upgraded(self, rest: bytes) -> None:
        self.upstream_failed("upstream switched protocols")

    def upstream_failed(self, msg: str) -> None:
        up, self.up = self.up, None
        if up is not None:
            up.exchange = None
            up.close()
        self.ex.up_lost(False, msg)

    def upstream_lost(self, up: Any) -> None:
        self.up = None
        retry = not self.got_head and up.served > 0 and self.ex.method in _IDEMPOTENT
        self.ex.up_lost(retry, "closed the connection before responding")

    def cancel(self) -> None:
        up, self.up = self.up, None
        if up is not None:
            up.exchange = None
            up.close()
