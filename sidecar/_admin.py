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
IDLE_S = 75.0         # an idle keep-alive connection closes (aiohttp's default, which this replaced)
TEXT = "text/plain; charset=utf-8"
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}

log = logging.getLogger("epochgate.sidecar")


class _AdminConn(asyncio.Protocol):
    """One admin connection: parse, answer in order, close on error or ``Connection: close``."""

    def __init__(self, server: "AdminServer") -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.head = 0
        self.om = False   # the scrape accepts OpenMetrics (exemplars: sidecar/trace/exemplars.py)
        self.last: asyncio.Future[None] | None = None   # the previous answer: pipelined ones go out in order
        self.idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.conns.add(self)
        self._arm()

    def _arm(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        self.idle = asyncio.get_running_loop().call_later(IDLE_S, self.close)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.conns.discard(self)
        if self.idle is not None:
            self.idle.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self._arm()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:   # the request was answered (no upgrade here); then close
            self._queue(b"", b"", False, status=-1)
            self.transport.pause_reading()  # type: ignore[union-attr]
        except httptools.HttpParserError:
            self._queue(b"", b"", False, status=431 if self.head > MAX_HEAD else 400)
            self.transport.pause_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        """A client that half-closes after its request still gets the answer, then the close."""
        if self.last is not None and not self.last.done():
            self._queue(b"", b"", False, status=-1)
            return True
        return False

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url, self.head, self.om = b"", 0, False

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        if b"application/openmetrics-text" in value and name.lower() == b"accept":
            self.om = True

    def _count(self, n: int) -> None:
        self.head += n
        if self.head > MAX_HEAD:
            raise httptools.HttpParserCallbackError("request head too large")

    def on_message_complete(self) -> None:
        self._queue(self.parser.get_method(), self.url, self.parser.should_keep_alive(), om=self.om)

    def _queue(self, method: bytes, url: bytes, keep: bool, status: int = 0, om: bool = False) -> None:
        prev = self.last
        self.last = asyncio.ensure_future(self._answer(prev, method, url, keep, status, om))

    async def _answer(self, prev: "asyncio.Future[None] | None", method: bytes, url: bytes, keep: bool,
                      status: int, om: bool = False) -> None:
        if prev is not None:
            await prev
        if status == -1:
            self.close()
            return
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
            t.close()


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
