"""The client side of HTTP/2: ``H2ServerConn``, which the listener's
``DetectConn`` (``sidecar/proxy/detect.py``) hands a connection to on ALPN
``h2`` or the HTTP/2 preface.

``H2ServerConn`` runs one ``H2Exchange`` (``_h2_stream``) per stream. Limits:
``--h2-max-streams`` concurrent streams (a peer opening more is a protocol
error: GOAWAY), ``--max-header-bytes`` for a header list (larger: 431 on that
stream; over four times that: GOAWAY ENHANCE_YOUR_CALM, from the engine), a rapid-reset guard (more than
``RESET_LIMIT`` streams reset by the peer within ``RESET_WINDOW_S`` seconds:
GOAWAY ENHANCE_YOUR_CALM), and a write buffer bound (``_h2_conn``). A broken
preface or a malformed frame gets GOAWAY PROTOCOL_ERROR and the connection
closes; nothing else is affected.

Drain: on SIGTERM the sidecar calls ``close_idle`` on every client: here that
sends GOAWAY (no new streams) and closes once the open streams have ended.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..context import ProxyContext
from ..limits import H2_BLOCK_FACTOR, admit_connection
from .conn import H2Base
from .engine import Code, ProtocolError, Setting
from .stream import MAKER

RESET_LIMIT = 200
RESET_WINDOW_S = 1.0


#: stream.py's template: ``_MAKER.make`` is ``new_stream`` (compiled, a C call through server.pxd's
#: type; this module cannot cimport stream.py: docs/compiled-build.md "Object makers")
_MAKER = MAKER

#: the engine's own inbound header checks (tests turn them off to see fields.py's alone)
VALIDATE_INBOUND = True


class H2ServerConn(H2Base):
    """One downstream HTTP/2 connection."""

    def __init__(self, ctx: ProxyContext) -> None:
        cfg = ctx.cfg
        # Inbound headers are validated (the engine's checks, then fields.py's); outbound ones
        # are built here or were validated inbound.
        super().__init__(ctx.loop, {
            Setting.MAX_CONCURRENT_STREAMS: cfg.h2_max_streams,
            Setting.INITIAL_WINDOW_SIZE: cfg.h2_window,
            Setting.MAX_HEADER_LIST_SIZE: ctx.max_header,
            Setting.ENABLE_PUSH: 0,
        }, False, validate_inbound=VALIDATE_INBOUND)
        self.ctx = ctx
        self.streams: dict[int, Any] = {}
        self.current = None            # never "busy" for the idle sweep: close_idle is graceful here
        self.last_active = ctx.now
        self.head_since = 0.0          # a header block in progress since (limits: the head deadline)
        self.peer_s = "unknown"
        self.peer = b"unknown"
        self.goaway = False
        self.resets = 0
        self.reset_t0 = 0.0
        self.window = cfg.h2_window
        self.max_streams = cfg.h2_max_streams
        self.tls = False
        self.head_memo: Any = None     # the last good request head and what was read from it (stream.py)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_s = str(peer[0])
            self.peer = self.peer_s.encode()
        self.tls = transport.get_extra_info("ssl_object") is not None
        if not admit_connection(self.ctx, self, transport, h2=True):  # (DetectConn counted it already)
            self.transport = None
            return
        self.set_nodelay()
        # (a header list over 4× --max-header-bytes is GOAWAY ENHANCE_YOUR_CALM at once, from
        # the engine; over the limit, that stream alone gets 431, from the exchange)
        self.initiate(self.max_streams * self.window)
        if self.ctx.closing:
            self.close_idle()
        self.flush()

    def read_started(self) -> None:
        self.last_active = self.ctx.now

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return
        H2Base.data_received(self, data)  # (cpdef: no super() cell in the compiled build)
        if self.transport is not None:
            self._watch_head()

    def _watch_head(self) -> None:
        """A header block still arriving (HEADERS without END_HEADERS and its CONTINUATIONs,
        or a HEADERS/CONTINUATION frame cut short) is a head in progress: bounded in size as
        it arrives and in time by the head deadline (``limits``). The engines say nothing
        of a block before it ends: ``head_pending`` looks at the frames (``engine.py``)."""
        size = self.h2.head_pending()
        if not size:
            self.head_since = 0.0
            return
        if not self.head_since:
            self.head_since = self.ctx.now
        if size > H2_BLOCK_FACTOR * self.ctx.max_header:
            self.h2.close_connection(Code.ENHANCE_YOUR_CALM, b"header block too large")
            self._fail()

    def head_timed_out(self) -> None:
        """A header block unfinished past ``--head-timeout``: GOAWAY and close (its open
        streams end as on any connection loss)."""
        if self.transport is None:
            return
        self.head_since = 0.0
        self.h2.close_connection(Code.ENHANCE_YOUR_CALM, b"request head timeout")
        self._fail()

    def protocol_error(self, exc: ProtocolError) -> None:
        self._fail()

    # -- events (engine.py) ---------------------------------------------------------
    def on_data(self, sid: int, data: bytes, flow_len: int) -> None:
        ex = self.streams.get(sid)
        if self.deliver(sid, data, flow_len, ex is not None):
            ex.client_data(data)

    def on_head(self, sid: int, headers: Any, ended: bool) -> None:
        if self.goaway:
            self.h2.reset_stream(sid, Code.REFUSED_STREAM)
            return
        ex = _MAKER.make(self.ctx, self, sid, headers, ended)
        self.streams[sid] = ex
        ex.dispatch()

    def on_end(self, sid: int) -> None:
        ex = self.streams.get(sid)
        if ex is not None:
            ex.client_end(None)  # (idempotent: also after trailers or an ended HEADERS)

    def on_trailers(self, sid: int, headers: Any) -> None:
        ex = self.streams.get(sid)
        if ex is not None:
            ex.client_end(headers)

    def on_reset(self, sid: int, code: int, by_peer: bool) -> None:
        self.out.pop(sid, None)
        ex = self.streams.pop(sid, None)
        if ex is not None:
            ex.client_reset()
        if by_peer:
            self._count_reset()

    def on_goaway(self, last_sid: int) -> None:
        self.goaway = True
        if not self.streams and self.transport is not None:
            self.transport.close()

    def _count_reset(self) -> None:
        now = self.ctx.now
        if now - self.reset_t0 > RESET_WINDOW_S:
            self.reset_t0 = now
            self.resets = 0
        self.resets += 1
        if self.resets > RESET_LIMIT:  # rapid reset (CVE-2023-44487): stop serving this peer
            self.h2.close_connection(Code.ENHANCE_YOUR_CALM, b"too many stream resets")
            self._fail()

    def _fail(self) -> None:
        self.flush()
        if self.transport is not None:
            self.transport.close()

    def exchanges(self) -> list:
        """Every open stream's exchange (``limits.ClientFace``)."""
        return list(self.streams.values())

    def stream_done(self, sid: int) -> None:
        self.streams.pop(sid, None)
        if self.goaway and not self.streams and self.transport is not None:
            self.flush()
            self.transport.close()

    def close_idle(self) -> None:
        """Graceful: GOAWAY (no new streams), close once the open ones end. From the idle
        sweep, a connection with open streams (a quiet long gRPC stream) is not idle."""
        if self.transport is None:
            return
        if self.streams and not self.ctx.closing:
            self.last_active = self.ctx.now
            return
        if not self.goaway:
            self.goaway = True
            # not close_connection(): the open streams must still finish
            self.flush()
            raw = self.h2.shutdown()
            if raw:
                self.transport.write(raw)
            else:
                self.flush()
        if not self.streams:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.ctx.clients.discard(self)
        streams, self.streams = self.streams, {}
        self.out.clear()
        for ex in streams.values():
            ex.client_reset()
