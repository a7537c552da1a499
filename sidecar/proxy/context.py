"""Everything the data path shares: config, router, source, gate, pool, hold,
stats, logs, node map, and the coarse clock that drives timeouts.

Timeouts do not arm a timer per request: ``tick()`` runs every 250 ms,
refreshes ``now`` and walks the (short) set of requests waiting on an upstream
and of idle client connections, and writes the queued access lines (see
``TICK_S``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from typing import Any, Mapping
from urllib.parse import urlsplit

from gate import ConfigError, PlacementSource

from .._config import SidecarConfig
from .h2.bridge import open_bridge
from .hold import Hold
from .limits import BodyBudget, sweep_clients
from .._log import AccessLog, event
from .router import Router
from .stats import Stats
from .tls import Tls
from .upstream import UpstreamPool
from .writegate import WriteGate

#: The coarse clock's period. The tick also writes the queued access lines (the data path writes at
#: 256, _log). Stops 36-39 also flushed every 20 ms while lines came in, a period chosen while a
#: flush still formatted its lines (0.6-0.7 ms pauses); lines are now formatted one by one
#: (``AccessLog.write``), and what a flush costs is mostly fixed and paid cold, a wake-up and a
#: write: 51-60 µs on average for ~24 lines at 20 ms, 59 µs for ~300 with the tick, at 1,200 gRPC
#: calls/s on stop 40's VM (where an ``os.write`` of 5.5 KB to tmpfs costs 3.2 µs in a tight loop
#: and 41 µs 20 ms after the last). The 20 ms flushes overlapped 13-38% of the slowest 1% of calls
#: (3-19% by chance), the tick's 3-7%; the added p99 did not move beyond that VM's noise
#: (bench_tail.py --grpc --rate 1200 --rt 10: figures-peers.md, "Stop 40: the access log's flush").
TICK_S = 0.25
#: this module runs compiled (an extension module's file is not the ``.py``): ``request_id``
_COMPILED = not __file__.endswith(".py")


class Node:
    """An upstream node: pool key, the ``Host`` header value, and how to speak to it
    (``proto``: ``http`` HTTP/1.1, ``h2c`` HTTP/2 with prior knowledge, ``https`` TLS + ALPN)."""

    __slots__ = ("name", "url", "key", "netloc", "proto", "host")

    def __init__(self, name: str, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "h2c", "https"):
            raise ConfigError(f"node.{name}", f"expected an http://, h2c:// or https:// upstream, got {url!r}")
        self.name = name
        self.url = url
        self.proto = parts.scheme
        self.host = parts.hostname or "127.0.0.1"
        self.key = (self.host, parts.port or (443 if parts.scheme == "https" else 80))
        self.netloc = parts.netloc.encode("idna")


class ProxyContext:
    """Shared state of one sidecar process (or one worker)."""

    def __init__(self, cfg: SidecarConfig, source: PlacementSource, gate: WriteGate, stats: Stats,
                 access: AccessLog, nodes: Mapping[str, str], loop: asyncio.AbstractEventLoop) -> None:
        self.cfg = cfg
        self.loop = loop
        self.source = source
        self.gate = gate
        self.stats = stats
        self.access = access
        self.router = Router(cfg.partition_from, cfg.route, cfg.hash_slots)
        self.pool = UpstreamPool(loop, connect_timeout=cfg.connect_timeout, idle_s=cfg.upstream_idle)
        self.hold = Hold(loop, source, max_held=cfg.hold_max, seconds=cfg.hold_seconds,
                         on_count=stats.metrics.held_writes.set, on_released=stats.hold.observe,
                         writable=gate.writable)
        self.tls = Tls(cfg)
        self.pool.ssl_context = lambda: self.tls.upstream_h1
        self.pool.open_h2 = lambda key: open_bridge(self, key)  # HTTP/1.1 clients → h2c:// nodes
        self.nodes: dict[str, Node] = {}
        self.set_nodes(nodes, strict=True)
        self.h2pool: Any = None  # HTTP/2 upstream connections, made on first use (_h2_upstream)
        self.now = loop.time()
        self.read_timeout = cfg.read_timeout
        self.idle_timeout = cfg.idle_timeout
        self.max_header = cfg.max_header_bytes
        self.max_path = cfg.max_path_bytes
        self.head_timeout = cfg.head_timeout
        self.max_connections = cfg.max_connections
        self.budget = BodyBudget(cfg.body_budget)
        self.retry_body_max = cfg.retry_body_max
        self.header_kinds: dict[bytes, tuple[int, bytes]] = {}  # request header name → (kind, lower-case)
        self.waiting: set[Any] = set()    # requests with an upstream deadline
        self.clients: set[Any] = set()    # open client connections
        self.rid_prefix = f"{random.getrandbits(40):010x}{os.getpid() % 4096:03x}-".encode()
        self.stamps: dict[tuple[str, int, str], bytes] = {}
        self.rid_n = 0
        # stamp's last answer and its key (stamp compares them before the dict: a one-entry cache)
        self.st_part: Any = None
        self.st_epoch: Any = None
        self.st_place: Any = None
        self.st_line: Any = None
        # resolve's one-entry cache: the last PartitionState it read, with its phase label and source
        self.rs_state: Any = None
        self.rs_phase: Any = None
        self.rs_source: Any = None
        self._ticker: asyncio.TimerHandle | None = None
        self.closing = False
        self.tracer: Any = None  # sidecar/trace RequestTracer when tracing is on: each hook checks this once
        stats.metrics.client_connections.set_function(lambda: len(self.clients))
        stats.metrics.body_budget_used.set_function(lambda: self.budget.used)

    def set_nodes(self, nodes: Mapping[str, str], strict: bool = False) -> None:
        """Replace the node map. ``strict`` (start-up): a bad URL is a ``ConfigError``;
        otherwise (reload, Consul) it is logged and that node left out."""
        out = {}
        for name, url in nodes.items():
            try:
                out[name] = Node(name, url)
            except ConfigError as exc:
                if strict:
                    raise
                event("node ignored", logging.ERROR, error=str(exc))
        self.nodes = out
        self.pool.tls_hosts = {n.key: n.host for n in out.values() if n.proto == "https"}
        self.pool.h2_only = {n.key for n in out.values() if n.proto == "h2c"}

    def missing_node(self, name: str) -> Node | None:
        """A partition names a node this map lacks: take the source's own node map
        (a replica applies a node's log entry before any entry that places a
        partition on it, in the same pass, so whenever the table names a
        registered node its URL is already there) and use it now, rather than
        answering 502 until the sidecar's once-a-second node follow catches up."""
        fresh = getattr(self.source, "nodes", None)
        if not fresh or name not in fresh:
            return None
        self.set_nodes({**fresh, **self.cfg.nodes()})
        node: Node | None = self.nodes.get(name)
        return node

    def request_id(self) -> bytes:
        """Unique per process and request: a random per-process prefix and the counter in hex.
        Compiled, a C call (context.pxd) that writes the id in C (``_hex_id``: no str formatted,
        encoded and concatenated; bench_exchange_instr, docs/compiled-build.md "Stop 38")."""
        self.rid_n += 1
        if _COMPILED:
            return _hex_id(self.rid_prefix, self.rid_n)  # noqa: F821 (compiled only: context.pxd)
        return self.rid_prefix + f"{self.rid_n:x}".encode()

    def stamp(self, partition: str, placement: str, epoch: int) -> bytes:
        """The ``X-Partition``/``X-Placement``/``X-Placement-Epoch`` lines (cached: they change per transition).
        The last answer is compared field by field first, a one-entry cache in front of the dict: no key
        tuple built and hashed per request (bench_exchange_instr: -590 per request); compiled, a C call
        from ``Request.attach`` (context.pxd)."""
        if epoch == self.st_epoch and partition == self.st_part and placement == self.st_place:
            return self.st_line
        key = (partition, epoch, placement)
        v = self.stamps.get(key)
        if v is None:
            if len(self.stamps) > 10000:
                self.stamps.clear()
            v = self.stamps[key] = (b"X-Partition: %b\r\nX-Placement: %b\r\nX-Placement-Epoch: %d\r\n"
                                     % (partition.encode(), placement.encode(), epoch))
        self.st_part, self.st_epoch, self.st_place, self.st_line = partition, epoch, placement, v
        return v

    def start(self) -> None:
        self.access.tick()
        self._ticker = self.loop.call_later(TICK_S, self._tick)

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        self.hold.close()
        self.pool.close()
        if self.h2pool is not None:
            self.h2pool.close()
        self.stats.flush()
        self.access.flush()

    def _tick(self) -> None:
        self._ticker = self.loop.call_later(TICK_S, self._tick)
        now = self.now = self.loop.time()
        try:
            for req in [r for r in self.waiting if r.deadline < now]:
                req.timed_out()
        except Exception:  # never let the clock die
            logging.getLogger("epochgate.sidecar").exception("tick failed (upstream deadlines)")
        # each sweep on its own: one that fails must not stop the others (issue 26: a
        # connection kind missing an attribute once stopped head timeouts, idle closes
        # and the access log for every client)
        try:
            sweep_clients(self, now)
        except Exception:
            logging.getLogger("epochgate.sidecar").exception("tick failed (client connections)")
        try:
            self.pool.sweep(now)
            self.access.tick()  # lines written within TICK_S, on the wake-up the tick makes anyway
        except Exception:
            logging.getLogger("epochgate.sidecar").exception("tick failed (upstream pool, access log)")
