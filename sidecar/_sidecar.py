"""One sidecar process: store, gate, proxy listener, admin and control servers,
and its life cycle (DESIGN §10).

* embedded store: a ``PlacementTable`` loaded from the placement file, behind
  a ``FanoutStore`` so a transition counts once this process (or, with
  workers, every worker) has applied it and drained the writes it admitted
  at older epochs;
* Consul: a barrier participant (``gate.Participant``) owning a
  fresh replica per join; it is the placement source and a guard of the
  ``WriteGate`` (DESIGN §5). Its lease also fails writes closed when the table
  is stale.

SIGTERM/SIGINT: ``/readyz`` fails at once, the listener closes, idle
keep-alive connections close, requests in flight get ``--drain-seconds`` to
finish (keep-alive responses carry ``Connection: close``), then exit 0.
SIGHUP re-reads the placement file; a bad file is refused and logged, the old
table kept.

The same class runs as a ``--workers`` worker (``proxy`` only, table fed by
the parent) and as the parent (``admin_control`` only, no listener).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from typing import Any, Awaitable, Callable

from gate import EmbeddedStore, InflightTracker, Phase, PlacementFileError, PlacementTable, describe_build, load_placement_file

from ._admin import AdminServer, refresh_metrics, registry_openmetrics, registry_text
from ._config import SidecarConfig
from ._ports import bind_error, check_free
from .proxy.context import ProxyContext
from ._fanout import FanoutStore, LocalMember
from .proxy.detect import DetectConn
from .proxy.h2 import engine as h2_engine
from . import _build
from ._log import AccessLog, event
from .trace import attach_request_tracing
from ._metrics import Metrics
from .proxy.stats import Stats
from .proxy.trickle import watch_trickling
from .proxy.writegate import WriteGate

log = logging.getLogger("epochgate.sidecar")


class Sidecar:
    """A sidecar process (or one role of it). ``await start()``, then ``await run()`` or ``shutdown()``."""

    def __init__(self, cfg: SidecarConfig, *, proxy: bool = True, admin_control: bool = True,
                 table: PlacementTable | None = None, reuse_port: bool | None = None,
                 metrics_text: Callable[[], Awaitable[bytes]] | None = None) -> None:
        self.cfg = cfg
        self.proxy = proxy
        self.admin_control = admin_control
        self.reuse_port = cfg.workers > 1 if reuse_port is None else reuse_port
        self.metrics = Metrics()
        self.tracker = InflightTracker()
        self.table = table
        self.store: Any = None
        self.source: Any = None
        self.participant: Any = None
        self.consensus: Any = None
        self.gate: WriteGate | None = None
        self.stats: Stats | None = None
        self.ctx: ProxyContext | None = None
        self.traces: Any = None  # sidecar/trace TraceSink when --trace-otlp-endpoint is set
        self.server: asyncio.base_events.Server | None = None
        self.admin: AdminServer | None = None
        self.control: Any = None
        self.controller: Any = None   # the embedded migration controller (issue 17), from the first control call
        self._control_token: str | None = None
        self.port = self.admin_port = self.control_port = 0
        self.nodes: dict[str, str] = {}
        self._metrics_text = metrics_text
        self.ready_checks: list[Callable[[], bool]] = []  # e.g. the supervisor: every worker alive
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._stopped = False
        self._started = False   # start() finished: only then does a shutdown drain (and say so)

    # ------------------------------------------------------------ start
    async def start(self) -> None:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        self._check_ports()   # a taken port is the first and only line, not after a 20 s wait for Consul
        if cfg.consul is not None:
            await self._start_consul()
        else:
            self._start_embedded()
        lease = cfg.lease_seconds if cfg.consul is not None else None
        self.gate = gate = WriteGate(self.source, self.tracker, lease_s=lease)
        if self.participant is not None:
            gate.add_guard(self.participant.writable)
        self.stats = Stats(self.metrics)
        self.source.subscribe(lambda *_: self.metrics.watch_updates.inc())
        if self.proxy:
            access = AccessLog(cfg.log_format, enabled=cfg.access_log, shared=cfg.workers > 1)  # workers share stdout
            self.ctx = ctx = ProxyContext(cfg, self.source, gate, self.stats, access, self.nodes, loop)
            ctx.start()
            self.traces = attach_request_tracing(ctx, cfg, cfg.participant_id or f"{socket.gethostname()}-{os.getpid()}")
            watch_trickling(ctx, self.tracker)   # a trickled body cannot hold a cutover (sidecar/proxy/trickle.py)
            host, port = cfg.listen_addr
            try:
                # DetectConn: HTTP/1.1 (ClientConn) or HTTP/2 (preface / ALPN) per connection
                self.server = await loop.create_server(lambda: DetectConn(ctx), host, port, ssl=ctx.tls.server,
                                                       reuse_port=self.reuse_port or None, backlog=2048)
            except OSError as exc:
                raise bind_error("listen", cfg.listen, exc) from exc
            self.port = self.server.sockets[0].getsockname()[1]
        if self.admin_control:
            await self._start_admin_control()
        if cfg.consul is not None:
            self._tasks.append(loop.create_task(self._follow_nodes()))
        self._started = True
        event("sidecar started", listen=f"{cfg.listen_addr[0]}:{self.port}" if self.proxy else "-",
              admin=self.admin_port or "-", control=self.control_port or "-",
              store="consul" if cfg.consul else "embedded", partitions=len(self.source.partitions()), pid=os.getpid(),
              build=_build.describe(), gate_build=describe_build(), h2=h2_engine.describe())

    def _check_ports(self) -> None:
        cfg = self.cfg
        if self.proxy and not self.reuse_port:   # workers share a port the parent reserved
            check_free("listen", cfg.listen)
        if self.admin_control:
            check_free("admin", cfg.admin)
            check_free("control", cfg.control)

    def _start_embedded(self) -> None:
        cfg = self.cfg
        if self.table is None:
            pc = load_placement_file(cfg.placement)
            pc.check_nodes(cfg.nodes())
            self.table = PlacementTable(pc.partitions)
            self.nodes = {**pc.nodes, **cfg.nodes()}
        else:
            self.nodes = cfg.nodes()
        inner = EmbeddedStore(self.table, self.nodes)
        self.store = FanoutStore(inner, [LocalMember(inner, self.tracker, cfg.drain_seconds)] if self.proxy else [])
        self.source = self.table

    async def _start_consul(self) -> None:
        from gate import ConsensusStore, ConsulConsensus, make_participant

        cfg = self.cfg
        # one connection for every non-blocking request, shared with the participant's session
        # calls (DESIGN §5 "The push path": connections per participant)
        self.consensus = consensus = ConsulConsensus(cfg.consul, cfg.prefix, cfg.consul_token, connections=1)
        self.store = ConsensusStore(consensus)
        pid = cfg.participant_id or f"{socket.gethostname()}-{os.getpid()}"
        if cfg.participant_id and cfg.workers > 1:
            pid = f"{cfg.participant_id}-{os.getpid()}"  # one participant per worker process
        self.participant = participant = make_participant(
            consensus, cfg.consul, cfg.prefix, participant_id=pid, tracker=self.tracker,
            ttl_s=cfg.session_ttl, lease_s=cfg.lease_seconds, token=cfg.consul_token, push_target=cfg.push_from,
            push_token=cfg.control_token() if cfg.push_from else None)   # the fleet shares the control token
        # Read at scrape time (not in _admin's refresh): the participant swaps replicas on rejoin.
        self.metrics.replica_blocked.set_function(lambda: int(getattr(participant.replica, "blocked", None) is not None))
        self.metrics.push_stream_up.set_function(lambda: int(participant.push_up))
        await participant.start()
        if not await participant.wait_joined(min(30.0, cfg.session_ttl * 2)):
            event("not registered with Consul yet: writes fail closed until it is", logging.WARNING,
                  consul=cfg.consul, participant=pid)
        self.source = participant
        self.nodes = {**participant.nodes, **cfg.nodes()}

    async def _follow_nodes(self) -> None:
        """Consul mode: node URLs live in the store; pick up changes."""
        while True:
            await asyncio.sleep(1.0)
            nodes = {**self.participant.nodes, **self.cfg.nodes()}
            if nodes != self.nodes:
                self.nodes = nodes
                if self.ctx is not None:
                    self.ctx.set_nodes(nodes)

    async def _start_admin_control(self) -> None:
        cfg = self.cfg
        self.admin = AdminServer(self._metrics_text or self._own_metrics, self.ready, self.not_ready_reason,
                                 openmetrics_text=None if self._metrics_text else self._own_openmetrics)
        host, port = cfg.admin_addr
        try:
            self.admin_port = await self.admin.start(host, port)
        except OSError as exc:
            raise bind_error("admin", cfg.admin, exc) from exc
        # The control port is bound now; grpc, protobuf and what they serve load on its first
        # connection (~25 MiB most sidecars never need: sidecar/api/lazy.py).
        from ._tokens import check_control
        from .api.lazy import LazyControl

        self._control_token = token = cfg.control_token()
        host, port = check_control(cfg.control, token)
        imports = ("sidecar.api.start",) + (("sidecar.control.embedded",) if self._runs_own_jobs() else ())
        self.control = LazyControl(cfg.control, self._start_control, imports)
        self.control_port = await self.control.listen(host, port)

    async def _start_control(self, addr: str) -> Any:
        """The gRPC control API (and, embedded, the migration controller) on ``addr``: its first use."""
        from .api.start import start_control_server

        cfg = self.cfg
        if self._runs_own_jobs() and self.controller is None:
            from .control.embedded import EmbeddedController
            from .control.statefile import MEMORY, default_path

            state = cfg.state or default_path(cfg.placement)
            self.controller = EmbeddedController(self.store, self.table, self.tracker, extra_nodes=cfg.nodes(),
                                                 metrics=self.metrics, state_path=None if state == MEMORY else state)
            await self.controller.start()
        return await start_control_server(addr, store=self.store, source=self.source, gate=self.gate,
                                          jobs=self.controller, token=self._control_token, extra_nodes=cfg.nodes())

    def _runs_own_jobs(self) -> bool:
        """One process on the embedded store runs its own migration jobs (issue 17); with
        workers the parent cannot see their in-flight writes."""
        return self.cfg.consul is None and self.proxy and self.cfg.workers == 1

    async def _own_metrics(self) -> bytes:
        refresh_metrics(self.metrics, self.stats, self.source, self.gate, self.tracker)
        return registry_text(self.metrics)

    async def _own_openmetrics(self) -> bytes:
        refresh_metrics(self.metrics, self.stats, self.source, self.gate, self.tracker)
        return registry_openmetrics(self.metrics)

    def ready(self) -> bool:
        return (not self._stopped and self.gate is not None and self.gate.ready()
                and all(check() for check in self.ready_checks))

    def not_ready_reason(self) -> str:
        if self._stopped or (self.gate is not None and self.gate._closing):
            return "shutting down"
        if self.participant is not None and self.participant.check():
            return f"fail closed ({self.participant.check()})"
        if not all(check() for check in self.ready_checks):
            return "a worker is down"
        return "fail closed (table older than the lease)"

    # ------------------------------------------------------------ reload
    def reload(self) -> bool:
        """SIGHUP: re-read the placement file (embedded store). False if refused."""
        cfg = self.cfg
        if self.ctx is not None and (cfg.tls_cert or cfg.upstream_ca or cfg.upstream_cert):
            self.ctx.tls.reload()  # certificates are re-read on SIGHUP too
        if cfg.placement is None or self.table is None:
            event("reload ignored: no placement file (Consul mode)", logging.WARNING)
            return False
        try:
            pc = load_placement_file(cfg.placement)
            pc.check_nodes(cfg.nodes())
        except PlacementFileError as exc:
            event("placement reload refused; keeping the current table", logging.ERROR, error=str(exc))
            return False
        table = self.table
        changed = 0
        for p, node in pc.partitions.items():
            st = table.state(p)
            if st is None or st[0].source != node or (st[0].phase is not Phase.ACTIVE and st[0].target == node):
                table.set(p, node)  # operator registration / override
                changed += 1
        for p in list(table.partitions()):
            if p not in pc.partitions:
                table.remove(p)
                changed += 1
        self.nodes = {**pc.nodes, **cfg.nodes()}
        if isinstance(self.store, EmbeddedStore):
            self.store._nodes.clear()
            self.store._nodes.update(self.nodes)
        if self.ctx is not None:
            self.ctx.set_nodes(self.nodes)
        event("placement reloaded", file=cfg.placement, partitions=len(pc.partitions), changed=changed,
              epoch=int(table.current_epoch()))
        return True

    # ------------------------------------------------------------ run / stop
    def install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        await self._stop.wait()
        await self.shutdown()

    async def shutdown(self) -> None:
        """Fail readiness, stop accepting, drain within ``drain_seconds``, stop everything."""
        if self._stopped:
            return
        self._stopped = True
        loop = asyncio.get_running_loop()
        if self.gate is not None:
            self.gate.close()
        ctx = self.ctx
        inflight = len(ctx.clients) if ctx is not None else 0
        if self._started and (self.server is not None or self.admin is not None):  # not after a failed start
            event("draining", connections=inflight, grace_s=self.cfg.drain_seconds)
        if self.server is not None:
            self.server.close()
        if ctx is not None:
            ctx.closing = True
            for c in list(ctx.clients):
                if c.current is None:
                    c.close_idle()
            deadline = loop.time() + self.cfg.drain_seconds
            while ctx.clients and loop.time() < deadline:
                await asyncio.sleep(0.02)
            left = len(ctx.clients)
            for c in list(ctx.clients):
                if c.transport is not None:
                    c.transport.abort()
            ctx.stop()
            if self._started:
                event("drained", cut=left)
        if self.traces is not None:  # export what was traced (blocking HTTP: off the loop)
            await loop.run_in_executor(None, self.traces.close)
        for t in self._tasks:
            t.cancel()
        if self.control is not None:
            await self.control.stop(0.5)
        if self.controller is not None:
            await self.controller.stop()
        if self.admin is not None:
            await self.admin.stop()
        if self.participant is not None:
            await self.participant.stop()
        if self.consensus is not None:
            await self.consensus.close()

