"""The pure-Python HTTP/2 engine: ``h2`` (and its ``hpack``/``hyperframe``) behind the
engine interface (``engine.py``). The fallback when the compiled engine is absent or
``EPOCHGATE_PURE_PYTHON`` forces it; it is what the sidecar ran before issue 30.

``h2`` raises on a malformed frame or header block, with GOAWAY queued: that becomes
``engine.ProtocolError``. Responses and trailers are ``send_headers`` calls here; outbound
HPACK is ``hpack.CachingEncoder`` (no dynamic table, cached per header; the request id's fields,
``engine.NEVER_INDEXED``, never-indexed literals as on the libnghttp2 engines).
"""

from __future__ import annotations

from typing import Any

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (ConnectionTerminated, DataReceived, RemoteSettingsChanged, RequestReceived, ResponseReceived,
                       StreamEnded, StreamReset, TrailersReceived, WindowUpdated)
from h2.exceptions import H2Error
from h2.exceptions import ProtocolError as _H2ProtocolError
from h2.settings import Settings
from hyperframe.frame import GoAwayFrame

from ..limits import H2_BLOCK_FACTOR
from .conn import Engine
from .engine import ProtocolError, Setting
from .hpack import CachingEncoder

NAME = "h2"
#: what a send on a stream the peer already closed or reset raises (the caller drops the stream)
Error = H2Error



class H2Conn(Engine):
    """One connection's ``h2`` state machine; ``h`` gets the events (``H2Base``'s ``on_*``)."""

    __slots__ = ("c", "h")
    closed = False  # (h2 raises ProtocolError instead: engine.py)

    def __init__(self, h: Any, client: bool, settings: dict[int, int], validate_inbound: bool = True) -> None:
        # Outbound headers are built here or were validated inbound, so their re-validation
        # (a third of h2's send cost) is skipped. Inbound: the client side validates (h2's
        # checks, then fields.py's); a node's response is trusted like an HTTP/1.1 node's
        # bytes (about a fifth of the per-call CPU).
        self.c = c = H2Connection(H2Configuration(
            client_side=client, header_encoding=None, validate_outbound_headers=False,
            normalize_outbound_headers=False, validate_inbound_headers=validate_inbound and not client))
        c.encoder = CachingEncoder()
        c.local_settings = Settings(client=client, initial_values=settings)
        self.h = h
        max_header = settings.get(Setting.MAX_HEADER_LIST_SIZE)
        if max_header:
            # hard cap at once (SETTINGS apply only when acknowledged): a list over 4× the limit is
            # GOAWAY ENHANCE_YOUR_CALM; over the limit, that stream alone gets 431 (the exchange)
            c.decoder.max_header_list_size = H2_BLOCK_FACTOR * max_header

    def initiate(self, conn_window: int) -> None:
        self.c.initiate_connection()
        self.c.increment_flow_control_window(conn_window)

    def receive(self, data: bytes) -> None:
        try:
            events = self.c.receive_data(data)
        except _H2ProtocolError as exc:  # h2 has queued GOAWAY with the error code
            raise ProtocolError(str(exc)) from exc
        h = self.h
        for ev in events:
            t = type(ev)
            if t is DataReceived:
                h.on_data(ev.stream_id, ev.data, ev.flow_controlled_length)
            elif t is RequestReceived or t is ResponseReceived:
                h.on_head(ev.stream_id, ev.headers, ev.stream_ended is not None)
            elif t is StreamEnded:
                h.on_end(ev.stream_id)
            elif t is TrailersReceived:
                h.on_trailers(ev.stream_id, ev.headers)
            elif t is StreamReset:
                h.on_reset(ev.stream_id, int(ev.error_code), True)
            elif t is ConnectionTerminated:
                h.on_goaway(ev.last_stream_id or 0)
            elif t is WindowUpdated:
                h.on_window(ev.stream_id)
            elif t is RemoteSettingsChanged:
                h.on_window(0)

    def head_pending(self) -> int:
        """Bytes of a header block still arriving (HEADERS without END_HEADERS and its
        CONTINUATIONs), 1 for a HEADERS/CONTINUATION frame cut short, 0 when none.
        ``h2`` keeps the block until it ends (up to 64 frames, ~1 MiB) and says nothing before."""
        buf = self.c.incoming_buffer
        block = getattr(buf, "_headers_buffer", None)
        raw = buf._data if hasattr(buf, "_data") else b""
        if block:
            return max(1, sum(len(f.data) for f in block))
        return 1 if len(raw) >= 9 and raw[3] in (0x1, 0x9) else 0  # frame type HEADERS / CONTINUATION

    def data_to_send(self) -> bytes:
        return self.c.data_to_send()

    # ------------------------------------------------------------ sending
    def request(self, headers: list[tuple[bytes, bytes]], end: bool) -> int:
        sid = self.c.get_next_available_stream_id()
        self.c.send_headers(sid, headers, end_stream=end)
        return sid

    def respond(self, sid: int, headers: Any, end: bool) -> None:
        self.c.send_headers(sid, headers, end_stream=end)

    def trailers(self, sid: int, headers: Any) -> None:
        self.c.send_headers(sid, headers, end_stream=True)

    def send_data(self, sid: int, data: Any, end: bool = False) -> None:
        self.c.send_data(sid, data, end_stream=end)

    def end_stream(self, sid: int) -> None:
        self.c.end_stream(sid)

    def window(self, sid: int) -> int:
        """Bytes ``send_data`` may take for ``sid`` now, at most one frame."""
        c = self.c
        return min(c.local_flow_control_window(sid), c.max_outbound_frame_size)

    def reset_stream(self, sid: int, code: int) -> None:
        self.c.reset_stream(sid, code)

    def ack(self, n: int, sid: int) -> bool:
        self.c.acknowledge_received_data(n, sid)
        return True   # (h2 does not say whether a WINDOW_UPDATE was queued: flush to see)

    def close_connection(self, code: int, debug: bytes) -> None:
        try:
            self.c.close_connection(code, debug)
        except H2Error:  # already closed: nothing more to say
            pass

    def shutdown(self) -> bytes:
        """GOAWAY NO_ERROR for a graceful close, as bytes written beside ``h2``: ``h2`` sends
        nothing after its own GOAWAY, and the open streams must still finish."""
        return GoAwayFrame(0, last_stream_id=self.c.highest_inbound_stream_id, error_code=0).serialize()

    def peer_max_streams(self) -> int:
        return self.c.remote_settings.max_concurrent_streams


def server(h: Any, settings: dict[int, int], validate_inbound: bool = True) -> H2Conn:
    return H2Conn(h, False, settings, validate_inbound)


def client(h: Any, settings: dict[int, int]) -> H2Conn:
    return H2Conn(h, True, settings)
