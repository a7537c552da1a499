"""The upstream side of HTTP/2 streams: multiplexed connections per node.

``H2Pool.target(exchange, node)`` picks how a client stream reaches its node:

* ``h2c://`` — an ``H2UpstreamConn`` with room for another stream (below the
  node's ``SETTINGS_MAX_CONCURRENT_STREAMS``, no GOAWAY); one connection is
  dialled at a time per node, streams that arrive meanwhile wait on it;
* ``https://`` — the same over TLS offering ALPN ``h2, http/1.1``; a node that
  chooses ``http/1.1`` is remembered and reached through HTTP/1.1 from then on;
* ``http://`` — an HTTP/1.1 connection from the shared pool (``_h2_h1``).

It returns ``None`` while connecting (the exchange's ``route`` runs again once
connected, so admission stays right before the send) and reports connect
failures as 502 problems naming the reason (TLS verification included).
Streams the node refused unprocessed (``REFUSED_STREAM``, or above a GOAWAY's
last stream id) may be retried by the exchange. Idle connections close after
``--upstream-idle``.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from .conn import H2Base
from .engine import Code, ProtocolError, Setting, code_name
from .h1 import H1Target
from .response import H2ResponseMixin
from ..tls import tls_reason

SWEEP_S = 1.0


class _UseH1(Exception):
    """The TLS node chose http/1.1 by ALPN."""


def h2pool(ctx: Any) -> "H2Pool":
    pool = ctx.h2pool
    if pool is None:
        pool = ctx.h2pool = H2Pool(ctx)
    return pool


class H2Leg:
    """An exchange's stream on an upstream HTTP/2 connection. ``ex`` gets the stream's response:
    a client stream's exchange (then also ``rx``: typed in the Cython build, so each event is a C
    call, upstream.pxd), an HTTP/1.1 client's bridge stream (bridge.py) or an orphaned write's
    ``LegOrphan`` (orphan.py, which sets ``ex``): for those ``rx`` is None. Made by ``new_leg``."""

    __slots__ = ("conn", "sid", "_ex", "rx")

    @property
    def ex(self) -> Any:
        return self._ex

    @ex.setter
    def ex(self, ex: Any) -> None:  # (rx follows: an orphaned write's events must reach the orphan)
        _set_ex(self, ex)

    def send(self, data: bytes) -> None:
        self.conn.send_data(self.sid, data)

    def end(self, trailers: list[tuple[bytes, bytes]] | None) -> None:
        self.conn.send_end(self.sid, None)  # request trailers go to no node (H2Exchange.client_end)

    def ack_resp(self, n: int) -> None:
        self.conn.ack(self.sid, n)

    def cancel(self) -> None:
        c = self.conn
        if c.legs.pop(self.sid, None) is not None:
            c.reset(self.sid, Code.CANCEL)
            c.leg_done()


def new_leg(conn: "H2UpstreamConn", sid: int, ex: Any) -> H2Leg:
    """The one way an ``H2Leg`` is made (the maker pattern, docs/compiled-build.md "Object makers"):
    compiled, the type's allocation and C field stores, no ``__init__`` argument parsing."""
    leg = H2Leg.__new__(H2Leg)
    leg.conn = conn
    leg.sid = sid
    _set_ex(leg, ex)
    return leg


def _set_ex(leg: H2Leg, ex: Any) -> None:
    """``leg.ex = ex``, and ``rx`` with it: ``ex`` again when it is a client stream's exchange (its
    events then C calls), else None (the one rule for the maker and the ``ex`` setter)."""
    leg._ex = ex
    leg.rx = ex if isinstance(ex, H2ResponseMixin) else None


class H2UpstreamConn(H2Base):
    """One HTTP/2 connection to a node, shared by many client streams."""

    def __init__(self, pool: "H2Pool", key: tuple[str, int], tls: bool) -> None:
        # Outbound headers are built by the exchange from validated client headers; inbound
        # ones come from the node (configured, trusted like an HTTP/1.1 node's bytes).
        super().__init__(pool.loop, {Setting.INITIAL_WINDOW_SIZE: pool.window, Setting.ENABLE_PUSH: 0,
                                     Setting.MAX_CONCURRENT_STREAMS: 100}, True)
        self.pool = pool
        self.key = key
        self.tls = tls
        self.legs: dict[int, H2Leg] = {}
        self.goaway = False
        self.closed = False
        self.heard = False  # any byte from the node yet
        self.idle_since = pool.loop.time()
        self.head_memo: Any = None  # the last request head built before its added fields (start)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.set_nodelay()
        if self.tls:
            sslobj = transport.get_extra_info("ssl_object")
            if sslobj is None or sslobj.selected_alpn_protocol() != "h2":
                return  # the node chose http/1.1: no preface; _dial hands the node to HTTP/1.1
        self.initiate(self.pool.conn_window)
        self.flush()

    def capacity(self) -> bool:  # (a C call from H2Pool.target: upstream.pxd)
        # (len(legs), not h2's open_outbound_streams: that walks every stream per call)
        return (self.transport is not None and not self.goaway and not self.closed
                and len(self.legs) < self.h2.peer_max_streams())

    # -- as a target of H2Exchange.route ------------------------------------------
    def start(self, ex: Any, extra: list[tuple[bytes, bytes]], ends: bool) -> H2Leg:
        rx = ex if isinstance(ex, H2ResponseMixin) else None
        if rx is not None:  # (compiled: C field reads; a bridge's stream is read by attribute)
            fwd, path, method_b, netloc, clen = rx.fwd, rx.path, rx.method_b, rx.node.netloc, rx.clen
        else:
            fwd, path, method_b, netloc, clen = ex.fwd, ex.path, ex.method_b, ex.node.netloc, ex.clen
        m = self.head_memo
        if m is None or m[0] is not fwd or m[1] is not path or m[2] is not method_b or m[3] is not netloc or m[4] != clen:
            # the head before the added fields: the same for every stream of a client's remembered
            # head (stream.py: the same objects) on this connection (bench_grpc_instr: see the commit)
            head = [(b":method", method_b), (b":scheme", b"https" if self.tls else b"http"),
                    (b":authority", netloc), (b":path", path)]
            head += fwd
            if clen is not None:  # (the client's copies are not in fwd: one checked value)
                head.append((b"content-length", b"%d" % clen))
            m = self.head_memo = (fwd, path, method_b, netloc, clen, head)
        headers = m[5] + extra
        sid = self.h2.request(headers, ends)
        leg = new_leg(self, sid, ex)
        self.legs[sid] = leg
        if not ends:
            self.open_outbox(sid, ex.req_sent)
        self.mark()
        return leg

    def unused(self) -> None:
        pass

    # -- events -------------------------------------------------------------------
    def read_started(self) -> None:
        self.heard = True

    def protocol_error(self, exc: ProtocolError) -> None:
        self.flush()
        self._lose_all(False, f"HTTP/2 protocol error from the upstream: {exc}")
        self.close()

    # -- events (engine.py): to a client stream's exchange as C calls (``rx``, upstream.pxd: no
    # attribute look-up and Python call per event, ~700 instructions each), to a bridge's stream
    # by attribute (bridge.py)
    def on_data(self, sid: int, data: bytes, flow_len: int) -> None:
        leg = self.legs.get(sid)
        if self.deliver(sid, data, flow_len, leg is not None):
            rx = leg.rx
            if rx is not None:
                rx.resp_data(data)
            else:
                leg._ex.resp_data(data)

    def on_head(self, sid: int, headers: Any, ended: bool) -> None:
        leg = self.legs.get(sid)
        if leg is not None:
            rx = leg.rx
            if rx is not None:
                rx.resp_head(headers, ended)
            else:
                leg._ex.resp_head(headers, ended)

    def on_trailers(self, sid: int, headers: Any) -> None:
        leg = self.legs.get(sid)
        if leg is not None:
            rx = leg.rx
            if rx is not None:
                rx.resp_trailers(headers)
            else:
                leg._ex.resp_trailers(headers)

    def on_end(self, sid: int) -> None:
        leg = self.legs.pop(sid, None)
        if leg is not None:
            # (exchange ↔ leg: a cycle left for the garbage collector otherwise)
            ex, leg._ex = leg._ex, None
            rx, leg.rx = leg.rx, None
            if rx is not None:
                rx.resp_end()
            else:
                ex.resp_end()
            self.leg_done()

    def on_reset(self, sid: int, code: int, by_peer: bool) -> None:
        self.out.pop(sid, None)
        leg = self.legs.pop(sid, None)
        if leg is not None:
            why = "the upstream reset the stream" if by_peer else "the upstream's response was malformed"
            leg.ex.up_lost(code == Code.REFUSED_STREAM, f"{why} ({code_name(code)})")
            self.leg_done()

    def on_goaway(self, last_sid: int) -> None:
        self.goaway = True
        for sid in [s for s in self.legs if s > last_sid]:
            leg = self.legs.pop(sid)
            self.out.pop(sid, None)
            leg.ex.up_lost(True, "the upstream sent GOAWAY before this stream")
        if not self.legs:
            self.close()

    def leg_done(self) -> None:
        if not self.legs:
            self.idle_since = self.loop.time()
            if self.goaway:
                self.close()

    def _lose_all(self, never_processed: bool, msg: str) -> None:
        legs, self.legs = self.legs, {}
        self.out.clear()
        for leg in legs.values():
            leg.ex.up_lost(never_processed, msg)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        self.pool.forget(self)
        refused = self.tls and not self.heard and (exc is None or isinstance(exc, ConnectionResetError))
        if refused:
            # A TLS 1.3 server checks our client certificate after our side of the handshake is
            # done: its refusal reaches us as a close, or — when our first frames crossed it — a
            # reset, depending only on timing. Either way, name the likely reason.
            msg = "the node closed the TLS connection right after the handshake (client certificate refused?)"
        elif self.h2.closed:
            msg = "HTTP/2 protocol error from the upstream (GOAWAY sent)"
        elif exc is not None:
            msg = tls_reason(exc)
        else:
            msg = "the upstream closed the connection"
        self._lose_all(False, msg)


class H2Pool:
    """HTTP/2 upstream connections per node, and the way to each node."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.loop = ctx.loop
        self.window = ctx.cfg.h2_window
        self.conn_window = 100 * ctx.cfg.h2_window
        self.conns: dict[tuple[str, int], list[H2UpstreamConn]] = {}
        self.connecting: dict[tuple[str, int], asyncio.Future[H2UpstreamConn]] = {}
        self.alpn_h1: set[tuple[str, int]] = set()   # https nodes that chose http/1.1
        self._sweeper: asyncio.TimerHandle | None = None

    def target(self, ex: Any, node: Any) -> Any:
        # (compiled: a C call from the stream's route, h2pool() being typed; each connection's
        # capacity a C call too — upstream.pxd)
        spare = ex.spare
        if spare is not None:
            ex.spare = None
        proto = node.proto
        if proto == "http" or (proto == "https" and node.key in self.alpn_h1):
            return H1Target.get(ex, node, spare, self)
        if spare is not None:
            if isinstance(spare, H2UpstreamConn) and spare.key == node.key and spare.capacity():
                return spare
            spare.unused()
        for conn in self.conns.get(node.key, ()):
            if conn.capacity():
                return conn
        self.loop.create_task(self._connect_for(ex, node))
        return None

    async def _connect_for(self, ex: Any, node: Any) -> None:
        try:
            conn: Any = await self.connect(node)
        except _UseH1:
            conn = None
        except Exception as exc:  # noqa: BLE001 - every failure becomes the client's 502
            return self.connect_failed(ex, node, exc)
        if ex.done:
            return
        ex.spare = conn
        ex.route()

    def connect_failed(self, ex: Any, node: Any, exc: BaseException) -> None:
        if isinstance(exc, asyncio.TimeoutError):
            ex.connect_failed("upstream-connect-timeout", "upstream connect timed out",
                              f"no connection to node {node.name!r} within {self.ctx.pool.connect_timeout:g}s",
                              "timeout")
        elif isinstance(exc, ssl.SSLError):
            ex.connect_failed("upstream-tls", "TLS to the upstream failed",
                              f"TLS to node {node.name!r} failed: {tls_reason(exc)}", "upstream_error")
        else:
            ex.connect_failed("upstream-unavailable", "upstream unavailable",
                              f"cannot connect to node {node.name!r}: {tls_reason(exc)}", "upstream_error")

    async def connect(self, node: Any) -> H2UpstreamConn:
        key = node.key
        fut = self.connecting.get(key)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = self.connecting[key] = self.loop.create_future()
        try:
            conn = await self._dial(node)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # (retrieved: waiters, if any, get it too)
            raise
        finally:
            self.connecting.pop(key, None)
        fut.set_result(conn)
        return conn

    async def _dial(self, node: Any) -> H2UpstreamConn:
        tls = node.proto == "https"
        kw: dict[str, Any] = {}
        if tls:
            kw = {"ssl": self.ctx.tls.upstream_h2, "server_hostname": node.host}
        async with asyncio.timeout(self.ctx.pool.connect_timeout):  # not wait_for: it can lose a cancel on 3.11
            _, conn = await self.loop.create_connection(lambda: H2UpstreamConn(self, node.key, tls), node.key[0],
                                                        node.key[1], **kw)
        if tls:
            sslobj = conn.transport.get_extra_info("ssl_object")
            if sslobj is None or sslobj.selected_alpn_protocol() != "h2":
                self.alpn_h1.add(node.key)
                conn.close()
                raise _UseH1
        self.conns.setdefault(node.key, []).append(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(SWEEP_S, self._sweep)
        return conn

    def forget(self, conn: H2UpstreamConn) -> None:
        lst = self.conns.get(conn.key)
        if lst and conn in lst:
            lst.remove(conn)
            if not lst:
                del self.conns[conn.key]

    def _sweep(self) -> None:
        self._sweeper = None
        now = self.loop.time()
        idle = self.ctx.cfg.upstream_idle
        for lst in list(self.conns.values()):
            for conn in list(lst):
                if not conn.legs and now - conn.idle_since > idle:
                    conn.close()
        if self.conns:
            self._sweeper = self.loop.call_later(SWEEP_S, self._sweep)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for lst in list(self.conns.values()):
            for conn in list(lst):
                conn.close()
