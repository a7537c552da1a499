"""The client side of HTTP/2: ``H2ServerConn``, which the listener's
``DetectConn`` (``sidecar/proxy/detect.py``) hands a connection to on ALPN
``h2`` or the HTTP/2 preface.

``H2ServerConn`` runs one ``H2Exchange`` (``_h2_stream``) per stream. Limits:
``--h2-max-streams`` concurrent streams (a peer opening more is a protocol
error: GOAWAY), ``--max-header-bytes`` for a header list (larger: 431 on that
stream; over four times that: GOAWAY ENHANCE_YOUR_CALM, from ``h2``), a rapid-reset guard (more than
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

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import ConnectionTerminated, DataReceived, RequestReceived, StreamEnded, StreamReset, TrailersReceived
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes
from hyperframe.frame import GoAwayFrame

from ..context import ProxyContext
from ..limits import H2_BLOCK_FACTOR, admit_connection
from .conn import H2Base
from .stream import H2Exchange

RESET_LIMIT = 200
RESET_WINDOW_S = 1.0


class H2ServerConn(H2Base):
    """One downstream HTTP/2 connection."""

    def __init__(self, ctx: ProxyContext) -> None:
        cfg = ctx.cfg
        # Inbound headers are validated (h2's checks: pseudo-headers, connection-specific
        # fields, case); outbound ones are built here or were validated inbound, so their
        # re-validation (a third of h2's send cost) is skipped.
        h2 = H2Connection(H2Configuration(client_side=False, header_encoding=None, validate_outbound_headers=False,
                                          normalize_outbound_headers=False))
        super().__init__(ctx.loop, h2)
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
        self.initiate({
            SettingCodes.MAX_CONCURRENT_STREAMS: self.max_streams,
            SettingCodes.INITIAL_WINDOW_SIZE: self.window,
            SettingCodes.MAX_HEADER_LIST_SIZE: self.ctx.max_header,
            SettingCodes.ENABLE_PUSH: 0,
        }, self.max_streams * self.window)
        # hard cap at once (SETTINGS apply only when acknowledged): a list over 4× the limit is
        # GOAWAY ENHANCE_YOUR_CALM; over the limit, that stream alone gets 431
        self.h2.decoder.max_header_list_size = 4 * self.ctx.max_header
        if self.ctx.closing:
            self.close_idle()
        self.flush()

    def read_started(self) -> None:
        self.last_active = self.ctx.now

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return
        super().data_received(data)
        if self.transport is not None:
            self._watch_head()

    def _watch_head(self) -> None:
        """A header block still arriving (HEADERS without END_HEADERS and its CONTINUATIONs,
        or a HEADERS/CONTINUATION frame cut short) is a head in progress: bounded in size as
        it arrives and in time by the head deadline (``limits``). ``h2`` keeps the block
        until it ends (up to 64 frames, ~1 MiB) and says nothing before."""
        buf = self.h2.incoming_buffer
        block = getattr(buf, "_headers_buffer", None)
        raw = buf._data if hasattr(buf, "_data") else b""
        partial = len(raw) >= 9 and raw[3] in (0x1, 0x9)  # frame type HEADERS / CONTINUATION
        if not block and not partial:
            self.head_since = 0.0
            return
        if not self.head_since:
            self.head_since = self.ctx.now
        size = sum(len(f.data) for f in block) if block else 0
        if size > H2_BLOCK_FACTOR * self.ctx.max_header:
            self.h2.close_connection(ErrorCodes.ENHANCE_YOUR_CALM, b"header block too large")
            self._fail()

    def head_timed_out(self) -> None:
        """A header block unfinished past ``--head-timeout``: GOAWAY and close (its open
        streams end as on any connection loss)."""
        if self.transport is None:
            return
        self.head_since = 0.0
        try:
            self.h2.close_connection(ErrorCodes.ENHANCE_YOUR_CALM, b"request head timeout")
        except Exception:  # noqa: BLE001 - h2 already closed: just close
            pass
        self._fail()

    def protocol_error(self, exc: ProtocolError) -> None:
        self._fail()

    def _event(self, ev: Any) -> None:
        t = type(ev)
        if t is DataReceived:
            ex = self.streams.get(ev.stream_id)
            self.deliver(ev, None if ex is None else ex.client_data)
        elif t is RequestReceived:
            sid = ev.stream_id
            if self.goaway:
                self.h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
                return
            ex = self.streams[sid] = H2Exchange(self.ctx, self, sid, ev.headers, ev.stream_ended is not None)
            ex.dispatch()
        elif t is StreamEnded:
            ex = self.streams.get(ev.stream_id)
            if ex is not None:
                ex.client_end(None)  # (idempotent: also after trailers or an ended HEADERS)
        elif t is TrailersReceived:
            ex = self.streams.get(ev.stream_id)
            if ex is not None:
                ex.client_end(ev.headers)
        elif t is StreamReset:
            self.out.pop(ev.stream_id, None)
            ex = self.streams.pop(ev.stream_id, None)
            if ex is not None:
                ex.client_reset()
            self._count_reset()
        elif t is ConnectionTerminated:
            self.goaway = True
            if not self.streams and self.transport is not None:
                self.transport.close()
        else:
            self.flow_event(ev)

    def _count_reset(self) -> None:
        now = self.ctx.now
        if now - self.reset_t0 > RESET_WINDOW_S:
            self.reset_t0 = now
            self.resets = 0
        self.resets += 1
        if self.resets > RESET_LIMIT:  # rapid reset (CVE-2023-44487): stop serving this peer
            self.h2.close_connection(ErrorCodes.ENHANCE_YOUR_CALM, b"too many stream resets")
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
            # Written beside h2, not through close_connection(): h2 stops sending anything
            # after its own GOAWAY, and the open streams must still finish.
            self.flush()
            self.transport.write(GoAwayFrame(0, last_stream_id=self.h2.highest_inbound_stream_id,
                                             error_code=ErrorCodes.NO_ERROR).serialize())
        if not self.streams:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.ctx.clients.discard(self)
        streams, self.streams = self.streams, {}
        self.out.clear()
        for ex in streams.values():
            ex.client_reset()
