"""The admin port: ``/metrics`` (Prometheus text), ``/healthz``, ``/readyz``.

Scrapes and probes are rare, so the server is small: an ``asyncio.Protocol``
with httptools' parser (already the data path's), GET and HEAD, keep-alive,
pipelined requests answered in order. It replaced aiohttp, which cost every
sidecar ~13 MiB resident for three routes (issue 20). Answers: 200 with
``text/plain; charset=utf-8`` (``/metrics``: Prometheus' content type), 503
from ``/readyz`` when not ready, 404 elsewhere, 405 for another method, 400 for
a malformed request, 431 for a request head over ``MAX_HEAD`` bytes; an idle
connection closes after ``IDLE_S``. ``refresh()`` brings the
gauges that are cheaper to read than to maintain (table epoch, partitions per
phase, store contact, fail-closed, writes in flight) up to date and flushes
the data path's accumulated counters before each scrape.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

import httptools
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gate import InflightTracker, PlacementSource

from ._metrics import Metrics
from .proxy.stats import Stats
from .proxy.writegate import WriteGate


class _ReplicaErrors:
    """Turns the current replica's ``errors`` count into increments of the watch-error counter
    (a participant starts a fresh replica on every rejoin)."""

    def __init__(self) -> None:
        self.replica: object = None
        self.seen = 0

    def update(self, metrics: Metrics, source: object) -> None:
        r = getattr(source, "replica", None)
        if r is None:
            return
        if r is not self.replica:
            self.replica, self.seen = r, 0
        errors = getattr(r, "errors", 0)
        if errors > self.seen:
            metrics.watch_errors.inc(errors - self.seen)
            self.seen = errors


_ERRORS: dict[int, _ReplicaErrors] = {}


def refresh_metrics(metrics: Metrics, stats: Stats | None, source: PlacementSource, gate: WriteGate,
                    tracker: InflightTracker) -> None:
    """Update the scrape-time gauges of one sidecar process."""
    if stats is not None:
        stats.flush()
    _ERRORS.setdefault(id(metrics), _ReplicaErrors()).update(metrics, source)
    metrics.table_epoch.set(int(source.current_epoch()))
    counts = {"active": 0, "draining": 0, "cutover": 0}
    for state, _ in source.partitions().values():
        counts[state.phase.value] += 1
    for phase, n in counts.items():
        metrics.partitions.labels(phase).set(n)
    last = getattr(source, "last_read", None)
    if last is not None:
        clock = getattr(gate, "clock", time.monotonic)
        metrics.store_last_contact.set(max(0.0, clock() - last))
    metrics.fail_closed.set(0 if gate.writable() else 1)
    metrics.inflight_writes.set(tracker.count())


MAX_HEAD = 16384      # bytes of request line + headers (a probe or scrape sends a few hundred)
HEAD_S = 10.0         # a request head must be complete within this of its first byte (→ 408, close)
IDLE_S = 75.0         # an idle keep-alive connection closes (aiohttp's default, which this replaced)
MAX_CONNS = 64        # open admin connections; more are answered 503 and closed (a scraper and probes use a few)
MAX_PIPELINE = 4      # requests read ahead of their answers per connection; then reading pauses
FEED = 512            # bytes handed to the parser at a time (how far past a bound a request may get)
LINGER_S = 2.0        # after a closing answer, what the client still sends is read and dropped this long
TEXT = "text/plain; charset=utf-8"
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
            431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}

log = logging.getLogger("epochgate.sidecar")


def _plain(status: int) -> bytes:
    body = f"{status}: {_REASONS[status]}\n".encode()
    return (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {TEXT}\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n").encode() + body


class _AdminConn(asyncio.Protocol):
    """One admin connection: parse, answer in order, close on error or ``Connection: close``.

    Memory per connection is bounded (issue 26): head bytes are counted *before* the
    parser sees them (httptools reports a header only once it is whole, so a check in
    ``on_header`` would run after a 40 MiB value was buffered) and at most ``MAX_HEAD``
    (+ ``FEED``) of a head are fed; a head must be whole within ``HEAD_S``; at most
    ``MAX_PIPELINE`` requests are read ahead of their answers, and an answer waits while
    the client does not read (``pause_writing``), so unread responses stop the reading
    instead of piling up; bodies are not kept (the parser has no ``on_body``)."""

    def __init__(self, server: "AdminServer") -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.head = 0            # head bytes fed since the last head ended (counted before parsing)
        self.in_body = False     # between a head's end and its message's end
        self.head_since = 0.0    # first byte of the head in progress (0: none)
        self.backlog = b""       # bytes read but not fed: reading is paused meanwhile
        self.discard = False     # answered and closing: what still arrives is dropped (_linger)
        self.queued = 0          # requests parsed and not yet answered
        self.writable = asyncio.Event()
        self.writable.set()
        self.om = False          # the scrape accepts OpenMetrics (exemplars: sidecar/trace/exemplars.py)
        self.last: asyncio.Future[None] | None = None   # the previous answer: pipelined ones go out in order
        self.idle: asyncio.TimerHandle | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if len(self.server.conns) >= MAX_CONNS:
            transport.write(_plain(503))  # type: ignore[attr-defined]
            transport.close()
            self.transport = None
            return
        self.server.conns.add(self)
        self._arm()

    def _arm(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        if self.head_since:
            delay = max(0.0, self.head_since + HEAD_S - self.loop.time())
            self.idle = self.loop.call_later(delay, self._head_late)
        else:
            self.idle = self.loop.call_later(IDLE_S, self.close)

    def _head_late(self) -> None:
        t = self.transport
        if t is not None and self.head_since and self.queued == 0:
            t.write(_plain(408))
            return self._linger(t)
        self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.conns.discard(self)
        if self.idle is not None:
            self.idle.cancel()
        self.transport = None
        self.writable.set()  # (an answer waiting for the client to read gives up: transport gone)

    def pause_writing(self) -> None:   # the client does not read its answers: stop answering
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.discard:
            return
        self.backlog = self.backlog + data if self.backlog else data
        self._feed()
        if self.transport is not None and not self.head_since:
            self._arm()  # idle timer restarts with traffic; a head's deadline does not

    def _feed(self) -> None:
        """Feed the backlog in ``FEED`` slices while the head bound and the pipeline allow."""
        buf, pos = self.backlog, 0
        self.backlog = b""
        t = self.transport
        while pos < len(buf) and t is not None and not t.is_closing():
            if self.queued >= MAX_PIPELINE:
                self.backlog = buf[pos:]
                t.pause_reading()  # resumed when answers went out (_answered)
                return
            if not self.in_body:
                if not self.head_since:
                    self.head_since = self.loop.time()
                    self._arm()
                if self.head >= MAX_HEAD:
                    return self._fail(431)
            chunk = buf[pos:pos + FEED]
            pos += len(chunk)
            if not self.in_body:
                self.head += len(chunk)
            try:
                self.parser.feed_data(chunk)
            except httptools.HttpParserUpgrade:   # the request was answered (no upgrade here); then close
                self._queue(b"", b"", False, status=-1)
                return self._stop()
            except httptools.HttpParserError:
                return self._fail(400)
            t = self.transport
        if t is not None and self.queued < MAX_PIPELINE:
            t.resume_reading()

    def _fail(self, status: int) -> None:
        self._queue(b"", b"", False, status=status)
        self._stop()

    def _stop(self) -> None:
        self.backlog = b""
        self.head_since = 0.0
        if self.transport is not None:
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        """A client that half-closes after its request still gets the answer, then the close."""
        if self.discard:
            return False
        if self.last is not None and not self.last.done():
            self._queue(b"", b"", False, status=-1)
            return True
        return False

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url, self.om = b"", False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:   # head bytes are already counted in _feed
        if b"application/openmetrics-text" in value and name.lower() == b"accept":
            self.om = True

    def on_headers_complete(self) -> None:
        self.in_body = True
        self.head = 0
        self.head_since = 0.0

    def on_message_complete(self) -> None:
        self.in_body = False
        self._queue(self.parser.get_method(), self.url, self.parser.should_keep_alive(), om=self.om)

    def _queue(self, method: bytes, url: bytes, keep: bool, status: int = 0, om: bool = False) -> None:
        prev = self.last
        self.queued += 1
        self.last = asyncio.ensure_future(self._answer(prev, method, url, keep, status, om))
        self.last.add_done_callback(self._answered)

    def _answered(self, _: "asyncio.Future[None]") -> None:
        self.queued -= 1
        if self.transport is not None and self.queued < MAX_PIPELINE:
            if self.backlog:
                self._feed()
            elif not self.transport.is_closing():
                self.transport.resume_reading()

    async def _answer(self, prev: "asyncio.Future[None] | None", method: bytes, url: bytes, keep: bool,
                      status: int, om: bool = False) -> None:
        if prev is not None:
            await prev
        if status == -1:
            self.close()
            return
        await self.writable.wait()   # the client reads what it was sent before more is made
        if status:
            status, ctype, body = status, TEXT, f"{status}: {_REASONS[status]}\n".encode()
        else:
            status, ctype, body = await self.server.route(method, url, om)
        t = self.transport
        if t is None or t.is_closing():
            return
        head = [f"HTTP/1.1 {status} {_REASONS[status]}", f"Content-Type: {ctype}", f"Content-Length: {len(body)}"]
        if status == 405:
            head.append("Allow: GET, HEAD")
        if not keep:
            head.append("Connection: close")
        t.write("\r\n".join(head).encode() + b"\r\n\r\n" + (b"" if method == b"HEAD" else body))
        if not keep:
            self._linger(t)

    def _linger(self, t: asyncio.Transport) -> None:
        """Close after an answer that ends the connection. Bytes the client is still sending
        (the rest of a refused head, say) are read and dropped for up to ``LINGER_S``: closing
        with them unread would reset the connection, and the client could lose the answer."""
        self.backlog = b""
        self.discard = True
        if not t.can_write_eof():
            t.close()
            return
        t.write_eof()
        t.resume_reading()
        if self.idle is not None:
            self.idle.cancel()
        self.idle = self.loop.call_later(LINGER_S, self.close)


class AdminServer:
    """Serves the admin endpoints; ``metrics_text`` and ``ready`` are supplied by the runtime."""

    def __init__(self, metrics_text: Callable[[], Awaitable[bytes]], ready: Callable[[], bool],
                 ready_detail: Callable[[], str] | None = None,
                 openmetrics_text: Callable[[], Awaitable[bytes]] | None = None) -> None:
        self._metrics_text = metrics_text
        self._openmetrics_text = openmetrics_text  # served to a scrape that accepts it (carries exemplars)
        self._ready = ready
        self._ready_detail = ready_detail or (lambda: "")
        self.server: asyncio.base_events.Server | None = None
        self.conns: set[_AdminConn] = set()
        self.port = 0

    async def route(self, method: bytes, url: bytes, om: bool = False) -> tuple[int, str, bytes]:
        """(status, content type, body) for one request."""
        path = url.split(b"?", 1)[0]
        if path not in (b"/metrics", b"/healthz", b"/readyz"):
            return 404, TEXT, b"404: Not Found\n"
        if method not in (b"GET", b"HEAD"):
            return 405, TEXT, b"405: Method Not Allowed\n"
        if path == b"/metrics":
            try:
                if om and self._openmetrics_text is not None:
                    return 200, OPENMETRICS_TYPE, await self._openmetrics_text()
                return 200, CONTENT_TYPE_LATEST, await self._metrics_text()
            except Exception:
                log.exception("admin: /metrics failed")
                return 500, TEXT, b"500: Internal Server Error\n"
        if path == b"/healthz":
            return 200, TEXT, b"ok\n"
        if self._ready():
            return 200, TEXT, b"ready\n"
        return 503, TEXT, f"not ready: {self._ready_detail()}\n".encode()

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _AdminConn(self), host.strip("[]"), port, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]   # the bound port when port 0 was asked for
        return self.port

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for c in list(self.conns):
                c.close()
            await self.server.wait_closed()
            self.server = None


def registry_text(metrics: Metrics) -> bytes:
    return generate_latest(metrics.registry)


OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def registry_openmetrics(metrics: Metrics) -> bytes:
    """The OpenMetrics exposition (with exemplars), for a scrape whose Accept asks for it."""
    from prometheus_client.openmetrics.exposition import generate_latest as generate_om

    return generate_om(metrics.registry)
