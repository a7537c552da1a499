"""The admin port: ``/metrics`` (Prometheus text), ``/healthz``, ``/readyz``.

aiohttp is fine here: scrapes and probes are rare. ``refresh()`` brings the
gauges that are cheaper to read than to maintain (table epoch, partitions per
phase, store contact, fail-closed, writes in flight) up to date and flushes
the data path's accumulated counters before each scrape.
"""

from __future__ import annotations

import time
from typing import Awaitable, Callable

from aiohttp import web
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


class AdminServer:
    """Serves the admin endpoints; ``metrics_text`` and ``ready`` are supplied by the runtime."""

    def __init__(self, metrics_text: Callable[[], Awaitable[bytes]], ready: Callable[[], bool],
                 ready_detail: Callable[[], str] | None = None) -> None:
        self._metrics_text = metrics_text
        self._ready = ready
        self._ready_detail = ready_detail or (lambda: "")
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await self._metrics_text()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self._ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"not ready: {self._ready_detail()}\n")

    async def start(self, host: str, port: int) -> int:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port, reuse_address=True)
        await site.start()
        server = site._server  # the bound port when port 0 was asked for
        self.port = server.sockets[0].getsockname()[1] if server is not None and server.sockets else port
        return self.port

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


def registry_text(metrics: Metrics) -> bytes:
    return generate_latest(metrics.registry)
