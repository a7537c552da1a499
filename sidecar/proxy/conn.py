"""Client side of the data path: an ``asyncio.Protocol`` per client connection.

httptools parses request heads (compiled: ``llreq``, llhttp driven from C); each
header is sorted once by ``_header_table`` (``reqfields.py``): the ones the proxy owns (framing,
hop-by-hop, ``Host``, ``X-Forwarded-For``, client-supplied
``X-Partition``/``X-Placement*``) are captured (``header``) or dropped,
everything else is kept for forwarding as a ready-made line. Requests on one
connection are served in order; a pipelined request waits (reading paused)
until the one before it has been answered.

Refused before anything is forwarded: request smuggling shapes
(``Content-Length`` with ``Transfer-Encoding``, differing duplicate
``Content-Length``, a transfer coding that does not end in chunked) → 400,
heads larger than ``--max-header-bytes`` → 431 (counted as bytes arrive, see
``_limits``), ``CONNECT`` → 405, a second ``Host`` → 400, an upgrade carrying a
body → 400, a bad target → 400/414 (``_target``). Trailers are dropped: they
arrive after the head was checked and dispatched and must change nothing.
Bytes after an upgrade request wait until the upstream answers 101.

Reading from the client is paused for several independent reasons
(``_exstate.Pause``, bit flags in ``pause``/``resume``): a pipelined request
queued, a write held, body bytes buffered before an upstream connection is
ready, the upstream's send buffer full.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

import httptools

from .._build import native_parser
from . import httpmsg as H
from .context import ProxyContext
# the module, not the name: in the compiled build response.pxd cimports ClientConn, so importing
# the exchange first imports this module while the exchange's types are not made yet
from . import exchange as _exchange
from .exstate import P_ALL, P_QUEUED, Pause
from .hookpath import is_hook_path
# the request header policy (which fields the proxy owns, the table both parsers sort by): compiled,
# the kinds are C ints and the tables typed here (conn.pxd), their values made there
from .reqfields import (_CONN_OPTIONS, _CLEN, _CONN, _DROP, _DROP_PREFIX, _EXPECT, _FORWARDED, _HOST, _KEY,
                        _METHODS, _PLAIN, _RID, _TE, _TRACE, _UPG, _XFF, _XFH, _XFP, _header_table)
from .orphan import orphan_write
from .limits import admit_connection
from .target import TargetError, normalize, plain_target

if TYPE_CHECKING:
    from .exchange import Request
    from .reqhead import ReqHead


class _HeadTooLarge(Exception):
    pass


class ClientConn:
    """One downstream connection (an asyncio.Protocol by duck typing: see _proxy.pxd)."""

    __slots__ = ("ctx", "transport", "parser", "peer", "peer_s", "current", "parsing", "queue", "flags",
                 "hsize", "last_active", "upgraded", "tunnel", "wpaused", "keyh_names", "xff_line", "in_feed",
                 "max_header", "kinds", "in_body", "head_seen", "head_since", "heads",
                 "trailer", "phead")

    def __init__(self, ctx: ProxyContext) -> None:
        self.ctx = ctx
        self.transport: asyncio.Transport | None = None
        self.current: Request | None = None
        self.parsing: Request | None = None
        self.phead: ReqHead | None = None  # parsing.head: a typed field, so the compiled callbacks reach it in C
        self.queue: deque[Request] = deque()
        self.flags = 0
        self.hsize = 0
        self.last_active = ctx.now
        self.upgraded = False
        self.tunnel: Any = None
        self.wpaused = False
        self.keyh_names = ctx.router.header_names
        self.max_header = ctx.max_header  # copies of ctx fields read once per header
        self.kinds = ctx.header_kinds
        self.parser = _new_parser(self)  # (after keyh_names: llreq reads it)
        self.peer = b"unknown"
        self.peer_s = "unknown"
        self.xff_line = b"X-Forwarded-For: unknown\r\n"
        self.in_feed = False  # inside parser.feed_data: upstream writes are batched
        self.in_body = False  # between a head's end and its message's end (on_header there = a trailer)
        self.head_seen = 0    # bytes of the current head that arrived (counted before parsing)
        self.head_since = 0.0  # when the current head's first byte arrived (0: none in progress)
        self.heads = 0        # heads completed on this connection
        self.trailer = False  # after a chunk-size line and before its data: maybe the trailer section

    # ---------------------------------------------------------------- transport
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_s = str(peer[0])
            self.peer = self.peer_s.encode()
            self.xff_line = b"X-Forwarded-For: " + self.peer + b"\r\n"
        if not admit_connection(self.ctx, self, transport):  # (the listener's DetectConn counted it already)
            return
        H.set_nodelay(transport)

    def data_received(self, data: bytes) -> None:
        self.last_active = self.ctx.now
        if self.upgraded:
            if self.tunnel is not None:
                self.tunnel.transport.write(data)
            elif self.parsing is not None:
                self.parsing.client_body(data)  # the upgrade request's: held until its 101 (or dropped)
            return
        in_body = self.in_body
        if in_body and not self.trailer:
            return self._feed(data)
        if not in_body and not self.head_since:
            self.head_since = self.ctx.now
        if len(data) <= self.max_header - self.head_seen:  # the usual case: the whole read fits what the
            self.head_seen += len(data)                     # head may still take (compiled: C ints, no
            return self._feed(data)                         # Python int for a ``room`` local)
        # Feed the parser only what the head (or a trailer section) may still take: one still
        # incomplete after that is too large, and is answered before more of it is read into memory.
        room = self.max_header - self.head_seen
        heads = self.heads
        self.head_seen += room
        self._feed(data[:room])
        if self.transport is None or self.transport.is_closing():
            return
        if in_body:
            still = self.in_body and self.trailer  # chunk data would have cleared it (on_body)
        else:
            still = not self.in_body and self.heads == heads and not self.upgraded
        if not still:
            return self.data_received(data[room:])  # it ended inside: the rest is body / next head
        self._reject_raw(431, "request-header-too-large", "request header fields too large",
                         f"the request head exceeds {self.ctx.max_header} bytes")

    def head_timed_out(self) -> None:
        """The request head did not arrive whole within ``--head-timeout`` (see ``_limits``)."""
        self._reject_raw(408, "request-timeout", "request timeout",
                         f"the request head did not arrive within {self.ctx.head_timeout:g}s")

    def _feed(self, data: bytes) -> None:
        self.in_feed = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.in_feed = False
            req = self.parsing
            if req is None or not req.head.upgrade:
                # only a head that asked for an upgrade (and was accepted as one) may switch the
                # connection; anything else must not turn the following bytes into a tunnel
                self.upgraded = True  # the parser cannot go on; later bytes are dropped
                self._reject_raw(400, "bad-request", "malformed request", "unexpected protocol upgrade")
                return
            cur = self.current
            if cur is not None and cur.uout:
                cur.flush_up()
            self.upgraded = True
            rest = data[exc.args[0]:]
            if rest:
                req.client_body(rest)  # the upgrade request's (it may be queued behind another)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _HeadTooLarge):
                self._reject_raw(431, "request-header-too-large", "request header fields too large",
                                 f"the request head exceeds {self.ctx.max_header} bytes")
            else:
                self.ctx.loop.call_exception_handler({"message": "proxy request handling failed",
                                                      "exception": cause or exc})
                self._reject_raw(500, "internal-error", "internal error", "the proxy failed on this request")
        except httptools.HttpParserError as exc:
            self._reject_raw(400, "bad-request", "malformed request", f"cannot parse the request: {exc}")
        finally:
            self.in_feed = False
            cur = self.current
            if cur is not None and cur.uout:
                cur.flush_up()

    def _reject_raw(self, status: int, slug: str, title: str, detail: str) -> None:
        """A request the parser refused: answer if nothing is in progress, then close."""
        if self.transport is None:
            return
        self.head_since = 0.0
        cur = self.current
        if cur is None or cur is self.parsing and not cur.head_sent:
            body = H.problem_body(status, slug, title, detail)
            self.transport.write(H.response(status, body, close=True))
            if cur is not None:
                cur.status = status
                cur.keep_alive = False
                cur.finish("bad_request")
        self.transport.close()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.ctx.clients.discard(self)
        cur = self.current
        for req in self.queue:  # never dispatched: give back the body bytes they buffered
            req.uncharge(req.charged)
        self.queue.clear()
        if cur is not None and not cur.done:
            if cur.tunnel:
                cur.tunnel_closed()
            else:
                cur.keep_alive = False
                orphan_write(cur)   # an admitted write sent whole stays counted until upstream ends
                cur.abort("error")

    def pause_writing(self) -> None:  # client is slow to read: stop reading the upstream
        self.wpaused = True
        up = self.tunnel or (self.current.up if self.current is not None else None)
        if up is not None and up.transport is not None:
            up.transport.pause_reading()

    def resume_writing(self) -> None:
        self.wpaused = False
        up = self.tunnel or (self.current.up if self.current is not None else None)
        if up is not None and up.transport is not None:
            up.transport.resume_reading()

    def __repr__(self) -> str:
        return f"<ClientConn {self.peer_s} paused={Pause(self.flags)!r} current={self.current!r}>"

    def pause(self, flag: int) -> None:
        """Stop reading for reason ``flag`` (a ``Pause`` value, as an int on the per-request paths)."""
        if not self.flags and self.transport is not None:
            self.transport.pause_reading()
        self.flags |= flag

    def resume(self, flag: int) -> None:
        if self.flags & flag:
            self.flags &= ~flag
            if not self.flags and self.transport is not None:
                self.transport.resume_reading()

    def close_idle(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def exchanges(self) -> tuple:
        """The request in progress, if any (``limits.ClientFace``)."""
        return () if self.current is None else (self.current,)

    def tunnel_to(self, up: Any, req: Request) -> None:
        self.tunnel = up
        self.resume(P_ALL)

    # ---------------------------------------------------------------- httptools callbacks
    def on_message_begin(self) -> None:
        self.hsize = 0
        m = _MAKER
        if m is None:  # the process's first request: the exchange module is complete by now (see the import)
            m = _maker()
        req = m.make(self.ctx, self)  # compiled, a C call (calling the type was a Python call: ~-1k instructions)
        self.parsing = req
        self.phead = req.head  # (typed: a C read compiled)

    def on_url(self, url: bytes) -> None:
        self.hsize += len(url)
        if self.hsize > self.ctx.max_header:
            raise _HeadTooLarge
        h = self.phead
        h.url = h.url + url if h.url else url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.in_body:
            return  # a trailer field: dropped (it arrives after the head was checked and acted on)
        n = self.hsize = self.hsize + len(name) + len(value) + 4
        if n > self.max_header:
            raise _HeadTooLarge
        # classify the name once per distinct spelling (names repeat: no lower() per header)
        hit = self.kinds.get(name)
        if hit is None:
            hit = self._classify(name)
        kind, lname = hit
        if kind == _PLAIN:
            self.phead.fwd += (name, b": ", value, b"\r\n")
            return
        if kind == _DROP:
            return
        if kind in _FORWARDED:
            self.phead.fwd += (name, b": ", value, b"\r\n")
        self.header(kind, lname, name, value)

    def header(self, kind: int, lname: bytes, name: bytes, value: bytes) -> None:
        """A header the proxy owns (``kind`` from ``_header_table``, neither ``_PLAIN`` nor
        ``_DROP``), in arrival order. The parser already put it in ``fwd`` if it is one of
        ``_FORWARDED``: ``on_header`` (httptools) or, compiled, ``llreq`` in C."""
        h = self.phead  # the request head being filled (_reqhead)
        if kind == _KEY:
            old = h.keyh.get(lname) if h.keyh else None  # (the usual one key header: no look-up)
            if old is not None and old != value:
                h.bad = (400, "conflicting partition keys", f"header {name.decode('latin-1')} given twice")
            h.keyh[lname] = value
        elif kind == _HOST:
            if h.host is not None:
                h.bad = (400, "duplicate Host", "more than one Host header")
            h.host = value
        elif kind == _CLEN:
            if h.clen is not None and h.clen != value.strip():
                h.bad = (400, "conflicting Content-Length", "differing Content-Length headers")
            h.clen = value.strip()
            if h.te is not None:
                h.bad = (400, "ambiguous framing", "Content-Length together with Transfer-Encoding")
        elif kind == _TE:
            h.te = value if h.te is None else h.te + b", " + value
            if h.clen is not None:
                h.bad = (400, "ambiguous framing", "Content-Length together with Transfer-Encoding")
        elif kind == _CONN:
            h.conn_given = True
            toks = H.connection_tokens(value) - _CONN_OPTIONS
            if toks:
                h.ctoks = toks if h.ctoks is None else h.ctoks | toks
        elif kind == _UPG:  # several lines are one list (RFC 9110 §5.3): all are checked and forwarded
            h.upgrade = value if not h.upgrade else h.upgrade + b", " + value
        elif kind == _RID:
            h.rid = value
            h.rid_given = True
        elif kind == _EXPECT:
            h.expect = value.strip().lower() == b"100-continue"
        elif kind == _XFF:
            h.xff = value if h.xff is None else h.xff + b", " + value
        elif kind == _XFP:
            h.xfp = value
        elif kind == _XFH:
            h.xfh = value
        elif kind == _TRACE:
            self.ctx.tracer.header(self.parsing, lname, value)

    def _classify(self, name: bytes) -> tuple[int, bytes]:
        lname = name.lower()
        kind = _header_table(self.keyh_names, self.ctx.tracer is not None).get(lname)
        if kind is None:
            kind = _DROP if lname.startswith(_DROP_PREFIX) else _PLAIN
        hit = (kind, lname)
        if len(self.ctx.header_kinds) < 4096:  # bounded: names are client-chosen
            self.ctx.header_kinds[name] = hit
        return hit

    def on_headers_complete(self) -> None:
        p = self.parser
        keep = p.should_keep_alive()
        # llhttp parses 0.9, 1.0, 1.1 and 2.0, and keeps a connection alive without a Connection
        # header only for 1.1: that case (nearly every request) skips get_http_version(), which
        # formats a new str each call (0.77 µs, ~3% of a proxied GET's CPU)
        version = "1.1" if keep and not self.phead.conn_given else p.get_http_version()
        mb = p.get_method()
        self.head_done(mb, _METHODS.get(mb) or mb.decode("ascii", "replace"), keep, version,
                       p.should_upgrade() if self.phead.upgrade else False)

    def head_done(self, method_b: bytes, method: str, keep: bool, version: str, upgrade: bool) -> None:
        """The head is complete: httptools' ``on_headers_complete`` above, or ``llreq`` in C
        (``method``: ``method_b`` as text, which llreq keeps per llhttp method number, one dict
        look-up less per request; ``upgrade``: llhttp's, an Upgrade header together with
        ``Connection: upgrade``)."""
        req = self.parsing
        h = self.phead  # req.head, filled here and in on_url/header (_reqhead)
        self.in_body = True
        self.heads += 1
        self.head_seen = 0
        self.head_since = 0.0
        h.method_b = method_b
        h.method = method
        h.keep = req.keep_alive = keep
        h.version = version
        if h.te is not None:
            codings = [c.strip().lower() for c in h.te.split(b",")]
            if codings[-1] != b"chunked" or codings.count(b"chunked") > 1:
                h.bad = (400, "unsupported transfer coding", "Transfer-Encoding must end in a single chunked")
            h.chunked = True
        if h.upgrade and not upgrade:
            h.upgrade = False  # Upgrade without Connection: upgrade is just a hop-by-hop header
        if h.ctoks:
            h.ctoks -= _CONN_OPTIONS
            # never let Connection remove what the proxy itself sets
            h.ctoks -= {b"host", b"x-partition", b"x-placement", b"x-placement-epoch", b"x-request-id"}
        if len(method) == 7 and method == "CONNECT":  # (compiled, str == str is a PyUnicode_Compare call)
            h.bad = (405, "method not allowed", "CONNECT is not proxied")
        elif plain_target(h.url, self.ctx.max_path):
            pass  # already normal and not a mover hook: the usual request skips both checks below
        elif is_hook_path(h.url):   # the mover hooks belong to the controller (DESIGN §6)
            h.bad = (404, "not found", "the /_epochgate/ mover hooks are not served through the sidecar")
        elif h.bad is None:  # one normalised target for every rule and the upstream
            try:
                h.url, h.rpath, authority = normalize(h.url, h.method, self.ctx.max_path)
            except TargetError as exc:
                h.bad = (exc.status, exc.title, exc.detail)
            else:
                if authority is not None:
                    h.host = authority  # absolute-form: the target's authority wins over Host (RFC 9112 §3.2.2)
        if h.upgrade and h.has_body():
            # An upgrade's body would reach the upstream unframed (the head goes without
            # Content-Length/chunked): an upstream that refuses the upgrade reads it as a request.
            h.bad = (400, "upgrade with a body", "a request asking for a protocol upgrade must not carry a body")
        if h.upgrade and H.upgrades_to_h2(h.upgrade):  # a tunnel would carry ungated streams
            h.bad = (400, "h2c upgrade not proxied", "send HTTP/2 with prior knowledge instead of Upgrade: h2c")
        if h.host is None and h.version == "1.1":
            h.bad = (400, "missing Host", "HTTP/1.1 requests need a Host header")
        if h.bad is not None:
            req.keep_alive = False
        if self.current is None:
            self.current = req
            req.dispatch()
        else:
            self.queue.append(req)
            self.pause(P_QUEUED)

    def on_body(self, body: bytes) -> None:
        self.trailer = False
        self.parsing.client_body(body)

    def on_chunk_header(self) -> None:
        # A chunk-size line: its data follows, or (size 0) the trailer section, which httptools
        # buffers like a head — count what arrives until on_body says it was data.
        self.trailer = True
        self.head_seen = 0

    def on_chunk_complete(self) -> None:
        self.trailer = False

    def on_message_complete(self) -> None:
        self.in_body = False
        self.trailer = False
        self.head_seen = 0
        self.parsing.client_body_end()

    # ---------------------------------------------------------------- request life cycle
    def request_done(self, req: Request, reusable: bool) -> None:
        """``req`` is answered (``ResponseMixin.finish``); ``reusable``: it leaves this connection
        able to carry the next request — kept alive, its body read whole, not an upgrade. The
        exchange says so from its own typed fields (the compiled build read four of them here as
        Python attributes: -0.9k instructions per request, docs/compiled-build.md)."""
        if self.current is req:
            self.current = None
        if self.transport is None:
            return
        if not reusable or self.ctx.closing:
            self.transport.close()
            return
        self.last_active = self.ctx.now
        if self.queue:
            nxt = self.current = self.queue.popleft()
            if not self.queue:
                self.resume(P_QUEUED)
            nxt.dispatch()
        elif self.flags:
            self.resume(P_ALL)


_MAKER: Any = None


def _maker() -> Any:
    """``exchange.MAKER``, the template every exchange is made through (``make``: this module cannot
    cimport ``exchange.new_request``, docs/compiled-build.md "Object makers"), looked up once: a
    module global is a C read per request where ``_exchange.MAKER`` was a module attribute look-up
    (callgrind: 240-670 instructions)."""
    global _MAKER
    _MAKER = _exchange.MAKER
    return _MAKER


# the request parser: llreq.pyx from C when this module runs compiled, httptools otherwise
_new_parser = native_parser(__file__, "llreq", "ReqParser",
                            (_header_table, _DROP_PREFIX, _FORWARDED, _PLAIN, _DROP, _HeadTooLarge),
                            httptools.HttpRequestParser)
