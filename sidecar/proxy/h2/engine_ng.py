"""The compiled HTTP/2 engine: libnghttp2 through ``ngh2`` (Cython) behind the engine
interface (``engine.py``). Frames, HPACK, flow control and the stream state machine run
in C; Python sees one event object per HEADERS/DATA/trailers/reset.

What libnghttp2 checks that ``h2`` checked (bench/bench_h2_libs.py, docs/figures-peers.md):
header names and values (CR, LF, NUL, upper case, connection-specific fields, ``te``),
pseudo-headers, content-length against the DATA, frame sizes, stream states, flow
control. It answers a malformed *stream* with RST_STREAM PROTOCOL_ERROR and carries on
(RFC 9113 §8.1.1), where ``h2`` ended the connection; a malformed *connection* with
GOAWAY. ``fields.py`` checks the request heads again whichever engine runs.

What this adapter adds, because libnghttp2 does not do it the sidecar's way:

* ``head_pending``: libnghttp2 decodes a header block as it arrives and says nothing
  until it ends; a small frame-header walker (9 bytes a frame, payloads skipped) tells
  the head deadline (``limits``) that a block is in progress and how big it is so far.
* a header list over ``H2_BLOCK_FACTOR`` × ``--max-header-bytes`` (or over its field
  count) makes ``ngh2`` raise with the connection unusable and nothing queued: the
  GOAWAY ENHANCE_YOUR_CALM is written here (``_goaway``).
* flow control stays the sidecar's (``auto_window_update`` off: a window is handed back
  only once the bytes left the proxy, ``conn.py``); padding libnghttp2 consumes itself.
* ``window``: libnghttp2 queues whatever ``send_data`` gets and spends the peer's window
  when it serialises; the queued bytes are subtracted so the sidecar's pacing (``pump``)
  hands it no more than the peer may take now.
* RST_STREAM NO_ERROR after an early response (``stream.py``) is held until the response
  is serialised: libnghttp2 would send it first (control frames jump the queue), and a
  client would then see no response at all.
* the request id's fields (``engine.NEVER_INDEXED``) go to ngh2 as ``NeverIndexedHeader``, so
  libnghttp2 sends them as never-indexed literals, as the binding does (``_marked``).
* a stream libnghttp2 reset itself (malformed DATA, or a node's malformed response) is
  reported like a peer's reset, marked as not the peer's (the rapid-reset guard counts
  only the peer's) — also when its StreamClosed comes out of ``data_to_send`` (the reset
  is only final once serialised) rather than ``receive``.
"""

from __future__ import annotations

from typing import Any

import ngh2
from ngh2 import (Configuration, Connection, DataReceived, GoAwayReceived, NeverIndexedHeader, NGH2Error,
                  RequestReceived, ResponseReceived, Role, SettingsReceived, StreamClosed, StreamReset,
                  TrailersReceived, WindowUpdated)

from ..limits import H2_BLOCK_FACTOR
from .conn import Engine
from .engine import NEVER_INDEXED, Code, ProtocolError, Setting

NAME = "ngh2"
Error = NGH2Error
_PREFACE = 24
#: h2 accepted a header block in up to 64 frames; libnghttp2's default is 8
MAX_CONTINUATIONS = 64
#: the sidecar's own rapid-reset guard (server.RESET_LIMIT per second) is the one that acts:
#: libnghttp2's token bucket is set well above it
RESET_BUCKET = (10_000, 2_000)
#: frames no bigger than this go to ``send_data`` at once (libnghttp2 cuts frames itself)
SEND_MAX = 1 << 20
_NEVER = NEVER_INDEXED  # (typed in engine_ng.pxd: the membership test is a C set look-up)


def _marked(headers: Any) -> Any:
    """``headers`` with the fields of ``engine.NEVER_INDEXED`` as ngh2's ``NeverIndexedHeader``
    (libnghttp2 then sends them never-indexed, as the binding does); the same list when none is."""
    out = None
    i = 0
    for h in headers:
        if h[0] in _NEVER:
            if out is None:
                out = list(headers)
            out[i] = NeverIndexedHeader(h[0], h[1])
        i += 1
    return headers if out is None else out



class NgConn(Engine):
    """One connection's libnghttp2 session; ``h`` gets the events (``H2Base``'s ``on_*``)."""

    __slots__ = ("c", "h", "server", "dead", "tail", "last_in", "goaway", "skip", "fh", "block", "open", "in_head",
                 "peer_max", "peer_window", "closed", "late", "fresh", "_settings")

    def __init__(self, h: Any, client: bool, settings: dict[int, int]) -> None:
        # a client's header list over 4× --max-header-bytes ends the connection (as h2's decoder
        # cap did); a node's responses get h2's default cap, 64 KiB
        max_header = settings.get(Setting.MAX_HEADER_LIST_SIZE) or 65536
        limit = H2_BLOCK_FACTOR * max_header if not client else max(max_header, 65536)
        cfg = Configuration(auto_window_update=False, max_continuations=MAX_CONTINUATIONS,
                            stream_reset_rate_limit=RESET_BUCKET, max_inbound_header_list_size=limit,
                            max_inbound_header_count=limit // 32 + 1)   # (each field counts ≥ 32 bytes)
        self.c = Connection(Role.CLIENT if client else Role.SERVER, cfg)
        self.h = h
        self.server = not client
        self.dead = False
        self.tail = b""        # our GOAWAY when ngh2 can no longer write one
        self.last_in = 0       # highest stream id the peer opened
        self.goaway = False    # a GOAWAY was sent or received (libnghttp2 then stops reading by itself)
        self.skip = _PREFACE if self.server else 0   # head_pending's walker: payload bytes to skip
        self.fh = b""          # a frame header cut by the read
        self.block = 0         # encoded bytes of the header block in progress
        self.open = False      # a HEADERS/CONTINUATION without END_HEADERS was seen
        self.in_head = False   # the frame being skipped is HEADERS/CONTINUATION
        self.peer_max = 100    # the peer's MAX_CONCURRENT_STREAMS (libnghttp2 assumes 100 until it hears)
        self.peer_window = 65535   # the peer's INITIAL_WINDOW_SIZE
        self.closed = False    # libnghttp2 is done with the connection (its GOAWAY written): close it
        self.late: list[int] = []   # NO_ERROR resets to send after the frames queued before them
        self.fresh: set[int] = set()  # requests whose HEADERS are not serialised yet (``window``)
        self._settings = settings

    def initiate(self, conn_window: int) -> None:
        self.c.initiate_connection(self._settings)
        self.c.set_local_window_size(65535 + conn_window)

    def receive(self, data: bytes) -> None:
        if self.dead:
            return
        if self.server:
            self._walk(data)
        c = self.c
        try:
            c.receive_data(data)
            events = c.events()
            alive = c.want_read
        except NGH2Error as exc:
            # over the header list limits (DenialOfServiceError) or otherwise unusable: ngh2
            # queues nothing, so our GOAWAY goes out from here
            calm = isinstance(exc, ngh2.DenialOfServiceError)
            self._die(Code.ENHANCE_YOUR_CALM if calm else Code.PROTOCOL_ERROR, str(exc).encode()[:64])
            raise ProtocolError(str(exc)) from exc
        if not alive and not self.goaway and not _goaway_in(events):
            raise ProtocolError("HTTP/2 connection error (GOAWAY queued by libnghttp2)")
        self._dispatch(events)

    def _dispatch(self, events: list) -> None:
        h = self.h
        for ev in events:
            t = type(ev)
            if t is DataReceived:
                sid = ev.stream_id
                data = ev.data
                h.on_data(sid, data, len(data))
                if ev.end_stream:
                    h.on_end(sid)
            elif t is RequestReceived or t is ResponseReceived:
                sid = ev.stream_id
                if sid > self.last_in:
                    self.last_in = sid
                h.on_head(sid, ev.headers, ev.end_stream)
                if ev.end_stream:
                    h.on_end(sid)
            elif t is TrailersReceived:
                h.on_trailers(ev.stream_id, ev.headers)
                h.on_end(ev.stream_id)
            elif t is StreamReset:
                h.on_reset(ev.stream_id, ev.error_code, True)
            elif t is StreamClosed:
                if ev.error_code:  # libnghttp2 reset it (or the peer did: then already reported)
                    h.on_reset(ev.stream_id, ev.error_code, False)
            elif t is GoAwayReceived:
                self.goaway = True
                h.on_goaway(ev.last_stream_id)
            elif t is WindowUpdated:
                h.on_window(ev.stream_id)
            elif t is SettingsReceived:
                self.peer_max = ev.settings.get(Setting.MAX_CONCURRENT_STREAMS, self.peer_max)
                self.peer_window = ev.settings.get(Setting.INITIAL_WINDOW_SIZE, self.peer_window)
                h.on_window(0)

    def _walk(self, data: bytes) -> None:
        """Frame headers only (see module doc): is a header block arriving, and how big is it."""
        i, n, skip = 0, len(data), self.skip
        while True:
            if skip:
                if skip >= n - i:
                    self.skip = skip - (n - i)
                    return
                i += skip
                skip = 0
            if i >= n:
                break
            if self.fh or n - i < 9:
                need = 9 - len(self.fh)
                self.fh += data[i:i + need]
                i += need
                if len(self.fh) < 9:
                    break
                hdr, self.fh = self.fh, b""
            else:
                hdr = data[i:i + 9]
                i += 9
            skip = (hdr[0] << 16) | (hdr[1] << 8) | hdr[2]
            t = hdr[3]
            self.in_head = t == 1 or t == 9   # HEADERS / CONTINUATION
            if self.in_head:
                self.block = skip if t == 1 else self.block + skip
                self.open = not hdr[4] & 0x4  # END_HEADERS
        self.skip = skip

    def head_pending(self) -> int:
        """Encoded bytes of a header block in progress (≥ 1), 0 when none (module doc)."""
        if self.open or (self.in_head and self.skip):
            return max(1, self.block)
        return 0

    def data_to_send(self) -> bytes:
        if self.dead:
            self.closed = True
            tail, self.tail = self.tail, b""
            return tail
        c = self.c
        if not self.late and not c.want_write and c.want_read:
            # nothing queued, nothing to serialise: no stream can have closed by it (events come
            # out of receive and of serialising only) — the flush after every read and ack skips
            # two calls into ngh2 and an empty event list
            return b""
        out = c.data_to_send()
        if self.fresh:
            self.fresh.clear()   # (serialised, or held by MAX_CONCURRENT_STREAMS: window() finds out)
        if self.late:
            late, self.late = self.late, []
            for sid in late:
                try:
                    c.reset_stream(sid, 0)
                except NGH2Error:  # closed meanwhile (the client ended its upload)
                    pass
            out += c.data_to_send()
        if not c.want_read:
            # a connection error libnghttp2 found (its GOAWAY is in ``out``: it says so only
            # once that is serialised), or GOAWAY both ways with no stream left
            self.closed = True
            c.events()
            return out
        events = c.events()
        if events:  # streams closed by what was just serialised (a reset libnghttp2 sent itself)
            self._dispatch(events)
        return out

    def _die(self, code: int, debug: bytes) -> None:
        self.dead = True
        self.tail = _goaway(self.last_in, code, debug)

    # ------------------------------------------------------------ sending
    def request(self, headers: list[tuple[bytes, bytes]], end: bool) -> int:
        # (end_stream is keyword-only: passed only when set, a keyword call costs a dict per call)
        headers = _marked(headers)
        sid = self.c.send_request(headers, end_stream=True) if end else self.c.send_request(headers)
        self.fresh.add(sid)
        return sid

    def respond(self, sid: int, headers: Any, end: bool) -> None:
        headers = _marked(headers)
        if end:
            self.c.send_response(sid, headers, end_stream=True)
        else:
            self.c.send_response(sid, headers)

    def trailers(self, sid: int, headers: Any) -> None:
        self.c.send_trailers(sid, _marked(headers))

    def send_data(self, sid: int, data: Any, end: bool = False) -> None:
        if end:
            self.c.send_data(sid, data, end_stream=True)
        else:
            self.c.send_data(sid, data)

    def end_stream(self, sid: int) -> None:
        self.c.end_stream(sid)

    def window(self, sid: int) -> int:
        """Bytes ``send_data`` may take for ``sid`` now: the peer's windows less what is queued."""
        c = self.c
        if sid in self.fresh:
            # a request whose HEADERS are not serialised yet has no stream in libnghttp2 so far:
            # its window is the peer's initial one. Every upstream request's body is pumped so,
            # before its first write: known here, not asked (libnghttp2 refusing and the exception
            # caught was ~3% of a gRPC call's samples, bench/profile_grpc.py)
            stream = self.peer_window
        else:
            try:
                stream = c.stream_remote_window_size(sid)
            except ngh2.StreamUnavailableError:
                # HEADERS held by MAX_CONCURRENT_STREAMS (or the stream closed: its send_data raises)
                stream = self.peer_window
        queued = c.queued_body_size()
        if queued:  # (none queued on the connection: none on the stream, one call into ngh2 less per pump)
            stream -= c.queued_body_size(sid)
        return min(stream, c.remote_window_size - queued, SEND_MAX)

    def reset_stream(self, sid: int, code: int) -> None:
        if code == 0:
            # "stop sending, the response is complete" (RFC 9113 §8.1) must follow the response:
            # libnghttp2 sends RST_STREAM ahead of queued HEADERS/DATA, so it waits for the next write
            self.late.append(sid)
            return
        self.c.reset_stream(sid, code)

    def ack(self, n: int, sid: int) -> bool:
        """Hand ``n`` bytes of window back; True when that queued a frame (libnghttp2 sends
        WINDOW_UPDATE only once half a window is consumed: most acks queue nothing)."""
        c = self.c
        c.acknowledge_received_data(n, sid)
        return c.want_write

    def close_connection(self, code: int, debug: bytes) -> None:
        if self.dead:
            return
        self.goaway = True
        try:  # (the caller closes the transport once this is written)
            self.c.send_goaway(code, last_stream_id=self.last_in, debug_data=debug)
        except NGH2Error:
            self._die(code, debug)

    def shutdown(self) -> bytes:
        """GOAWAY NO_ERROR: no new streams; the open ones finish (queued, sent at the next flush)."""
        self.goaway = True
        try:
            if not self.dead:
                self.c.send_goaway(0, last_stream_id=self.last_in)
        except NGH2Error:  # already terminating
            pass
        return b""

    def peer_max_streams(self) -> int:
        return self.peer_max


def _goaway_in(events: list) -> bool:
    """A GOAWAY among the events (a function: no generator inside a cpdef method)."""
    for ev in events:
        if type(ev) is GoAwayReceived:
            return True
    return False


def _goaway(last: int, code: int, debug: bytes) -> bytes:
    n = 8 + len(debug)
    return (n.to_bytes(3, "big") + b"\x07\x00\x00\x00\x00\x00" + last.to_bytes(4, "big") + code.to_bytes(4, "big")
            + debug)


def server(h: Any, settings: dict[int, int], validate_inbound: bool = True) -> NgConn:
    return NgConn(h, False, settings)   # (libnghttp2's checks cannot be turned off)


def client(h: Any, settings: dict[int, int]) -> NgConn:
    return NgConn(h, True, settings)
