"""Upstream side of the data path: keep-alive connections and their pool.

An ``UpstreamConn`` is an ``asyncio.Protocol`` with an httptools response
parser. It serves one exchange at a time (``conn.exchange``, the client-side
request object) and forwards parser callbacks to it; the exchange decides what
reaches the client. When a response ends cleanly on a keep-alive connection
with the request fully sent, the connection goes back to the pool.

The pool is per upstream ``(host, port)``: a LIFO stack of idle connections
(the most recently used one is the least likely to have been closed by the
upstream's idle timeout), bounded, with idle connections older than
``idle_s`` closed by the periodic sweep.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools

from .._build import native_parser
from . import httpmsg as H
from .httpmsg import RespHead  # (its home: re-exported for the HTTP/2 bridge)
from .response import ResponseMixin


# response headers the proxy must look at (lower-case) → kind; the rest are forwarded as ready-made lines
_DROP, _CONN, _CLEN, _TE, _UPG, _CTYPE = range(6)
_RESP_SPECIAL = {b"connection": _CONN, b"content-length": _CLEN, b"transfer-encoding": _TE, b"upgrade": _UPG,
                 b"content-type": _CTYPE, b"keep-alive": _DROP, b"proxy-connection": _DROP, b"te": _DROP,
                 b"trailer": _DROP}


_CONN_OPTIONS = frozenset({b"keep-alive", b"close", b"upgrade"})
_PLAIN_CONN = frozenset({b"keep-alive", b"close", b"Keep-Alive", b"Close", b"upgrade", b"Upgrade"})
_KINDS: dict[bytes, int | None] = {}  # header name as spelled → kind (names repeat: no lower() per header)


def _kind(name: bytes) -> int | None:
    kind = _RESP_SPECIAL.get(name.lower())
    if len(_KINDS) < 4096:
        _KINDS[name] = kind
    return kind


class UpstreamConn:
    """One connection to an upstream node: an ``asyncio.Protocol`` by duck typing (no base
    class, so the Cython build can make it an extension type, see ``_upstream.pxd``)."""

    __slots__ = ("pool", "key", "transport", "parser", "exchange", "closed", "served", "idle_since",
                 "paused", "head", "in_body")

    def __init__(self, pool: "UpstreamPool", key: tuple[str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = _new_parser(self)
        self.exchange: Any = None
        self.closed = False
        self.served = 0          # responses completed on this connection
        self.idle_since = 0.0
        self.paused = False      # the upstream's write buffer is full: client reading paused
        self.head = RespHead()
        self.in_body = False     # between a head's end and its message's end: header fields there are trailers

    # -- asyncio.Protocol ----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        H.set_nodelay(transport)

    def data_received(self, data: bytes) -> None:
        ex = self.exchange
        if ex is None:  # bytes on an idle connection: protocol error, do not reuse
            self.close()
            return
        if isinstance(ex, ResponseMixin):
            # the usual exchange (an HTTP/1.1 client's), typed: compiled, its fields are C reads and
            # writes, not look-ups on an untyped object (bench_exchange_instr: -0.6k per request);
            # the same steps as the untyped path below, which an Orphan or an HTTP/2 leg takes
            rx = ex
            if rx.tunnel:
                rx.ctransport.write(data)
                return
            rx.cout = []  # batch this read's output to the client into one send
            try:
                self.parser.feed_data(data)
            except (httptools.HttpParserUpgrade, httptools.HttpParserError) as exc:
                self._feed_failed(rx, exc, data)
            finally:
                if rx.cout:
                    rx.flush_client()
                rx.cout = None
            return
        if ex.tunnel:
            ex.ctransport.write(data)
            return
        ex.cout = []
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserUpgrade, httptools.HttpParserError) as exc:
            self._feed_failed(ex, exc, data)
        finally:  # (the one flush: ``ex`` is untyped, each attribute is a look-up, ~150 instructions)
            if ex.cout:
                ex.flush_client()
            ex.cout = None

    def _feed_failed(self, ex: Any, exc: Exception, data: bytes) -> None:
        if isinstance(exc, httptools.HttpParserUpgrade):
            ex.upstream_upgraded(data[exc.args[0]:])
            return
        if self.exchange is not None:
            self.exchange.upstream_failed(f"invalid response from upstream: {exc}")
        self.close()

    def eof_received(self) -> bool | None:
        return None  # the transport closes itself (asyncio.Protocol's default)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        ex = self.exchange
        if ex is not None:
            self.exchange = None
            ex.upstream_lost(self)

    def pause_writing(self) -> None:
        ex = self.exchange
        if ex is not None:
            self.paused = True
            ex.upstream_paused(True)

    def resume_writing(self) -> None:
        ex = self.exchange
        self.paused = False
        if ex is not None:
            ex.upstream_paused(False)

    # -- httptools callbacks ---------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        if self.in_body:
            # a trailer field: dropped. It arrives after this head went out, and httptools would
            # otherwise file it into the NEXT response's head (another client's, on a pooled connection)
            return
        kind = _KINDS.get(name, -1)
        if kind is None:  # the usual case: forwarded as is
            self.head.lines += (name, b": ", value, b"\r\n")
            return
        if kind == -1:
            kind = _kind(name)
            if kind is None:
                self.head.lines += (name, b": ", value, b"\r\n")
                return
        h = self.head
        if kind == _CTYPE:
            h.ctype = value
            h.lines += (name, b": ", value, b"\r\n")
        elif kind == _CLEN:
            h.clen = value
        elif kind == _TE:
            h.te = value if h.te is None else h.te + b", " + value
        elif kind == _CONN:
            if value not in _PLAIN_CONN:
                toks = {t.strip().lower() for t in value.split(b",") if t.strip()} - _CONN_OPTIONS
                if toks:
                    h.ctoks = toks if h.ctoks is None else h.ctoks | toks
        elif kind == _UPG:
            h.upg = value

    def on_headers_complete(self) -> None:
        p = self.parser
        self.head_done(p.get_status_code(), p.should_keep_alive())

    def head_done(self, status: int, keep: bool) -> None:
        """The head is complete (httptools' callback above; llresp calls it directly, in C)."""
        # the next message's head starts empty (done here: no on_message_begin callback per response)
        h = self.head
        self.in_body = True
        ex = self.exchange
        if ex is not None:
            h.status = status
            h.keep = keep
            if isinstance(ex, ResponseMixin):  # typed: a C call (compiled), see data_received
                rx = ex
                try:
                    rx.on_response_head(h)
                finally:
                    # this head, emptied, is the next one's, unless the exchange kept it (a held 503):
                    # the usual exchange only reads it (no RespHead made and freed per response)
                    if rx.resp_held is h:
                        self.head = RespHead()
                    else:
                        h.reason = b""
                        h.lines = []
                        h.ctoks = h.clen = h.te = h.upg = h.ctype = None
                        h.status = 0
                        h.keep = True
                return
            self.head = RespHead()  # (another exchange may keep the head it is given)
            ex.on_response_head(h)
            return
        self.head = RespHead()

    def on_body(self, body: bytes) -> None:
        ex = self.exchange
        if isinstance(ex, ResponseMixin):  # typed: a C call (compiled), see data_received
            rx = ex
            rx.on_response_body(body)
        elif ex is not None:
            ex.on_response_body(body)

    def on_message_complete(self) -> None:
        self.in_body = False
        ex = self.exchange
        if isinstance(ex, ResponseMixin):  # typed: a C call (compiled), see data_received
            rx = ex
            rx.on_response_end()
        elif ex is not None:
            ex.on_response_end()

    # -- pool side -----------------------------------------------------------
    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def release(self, reusable: bool) -> None:
        """The exchange is done with this connection."""
        self.exchange = None
        if self.paused:
            reusable = False
        if reusable and not self.closed:
            self.served += 1
            pool = self.pool
            stack = pool.idle.get(self.key)
            if stack is not None and len(stack) < pool.max_idle:  # pool.put(self), inlined for the usual case
                self.idle_since = pool.now
                stack.append(self)
            else:
                pool.put(self)
        else:
            self.close()


# the response parser: llresp.pyx from C when this module runs compiled, httptools otherwise
_new_parser = native_parser(__file__, "llresp", "RespParser", (_RESP_SPECIAL, _PLAIN_CONN, _DROP, _CONN, _CLEN, _CTYPE),
                            httptools.HttpResponseParser)


class UpstreamPool:
    """Idle keep-alive connections per upstream ``(host, port)``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, max_idle: int = 256, idle_s: float = 30.0,
                 connect_timeout: float = 5.0) -> None:
        self.loop = loop
        self.max_idle = max_idle
        self.idle_s = idle_s
        self.connect_timeout = connect_timeout
        self.idle: dict[tuple[str, int], list[UpstreamConn]] = {}
        self.now = loop.time()
        self._open: set[UpstreamConn] = set()
        self.tls_hosts: dict[tuple[str, int], str] = {}  # https:// nodes → server name (set by the context)
        self.h2_only: set[tuple[str, int]] = set()       # h2c:// nodes: reached through open_h2 (_h2_bridge)
        self.open_h2: Any = None                         # async (key) → a bridge connection (set by the context)
        self.ssl_context: Any = None                     # () → ssl.SSLContext offering http/1.1 (the context's)

    def get_idle(self, key: tuple[str, int]) -> UpstreamConn | None:
        stack = self.idle.get(key)
        while stack:
            conn = stack.pop()
            if not conn.closed and not conn.transport.is_closing():  # type: ignore[union-attr]
                return conn
        return None

    async def connect(self, key: tuple[str, int]) -> UpstreamConn:
        """A new connection; raises ``OSError``/``asyncio.TimeoutError``."""
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can lose a cancel (gate/_longpoll.py)
        async with asyncio.timeout(self.connect_timeout):
            if key in self.h2_only:
                return await self.open_h2(key)
            host = self.tls_hosts.get(key)
            kw = {} if host is None else {"ssl": self.ssl_context(), "server_hostname": host}
            _, conn = await self.loop.create_connection(lambda: UpstreamConn(self, key), key[0], key[1], **kw)
        self._open.add(conn)
        return conn

    def put(self, conn: UpstreamConn) -> None:
        if conn.closed:
            return
        stack = self.idle.get(conn.key)
        if stack is None:
            stack = self.idle[conn.key] = []
        if len(stack) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = self.now
        stack.append(conn)

    def forget(self, conn: UpstreamConn) -> None:
        self._open.discard(conn)
        stack = self.idle.get(conn.key)
        if stack and conn in stack:
            stack.remove(conn)

    def sweep(self, now: float) -> None:
        """Close connections idle for longer than ``idle_s`` (called periodically)."""
        self.now = now
        for stack in self.idle.values():
            while stack and now - stack[0].idle_since > self.idle_s:
                stack.pop(0).close()

    def close(self) -> None:
        for conn in list(self._open):
            conn.close()
        self.idle.clear()
