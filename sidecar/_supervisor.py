"""``--workers N``: N proxy processes on one port (SO_REUSEPORT) that never
disagree about a partition (DESIGN §10).

The parent reserves the port (binds it with SO_REUSEPORT without listening, so
the kernel spreads connections over the workers' listening sockets only),
serves the admin port and the control API, and spawns the workers
(``python -m sidecar._worker``), each connected to it by a socketpair that
carries JSON lines.

* Embedded store: the parent owns the ``PlacementTable``. Every change is
  pushed to every worker; a worker applies it to its local copy (``apply``:
  newer epochs only, in order) and acks — for a transition into cutover only
  after the writes it admitted at older epochs have finished. The parent's
  ``FanoutStore`` returns a transition to its caller only when every live
  worker has acked it, so a controller never proceeds on a transition some
  worker has not applied. A worker that dies drops out (it admits nothing)
  and is respawned with a fresh snapshot.
* Consul: every worker runs its own replica and barrier participant (its own
  session, key ``sidecars/<id>-<pid>``), so the controller's barrier waits
  for each worker individually — the same rule as for separate sidecars.

``/metrics`` on the parent sums the workers' series (gauges such as the table
epoch take the maximum).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import socket
import sys
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

from ._config import SidecarConfig
from ._fanout import NotDrained, state_to_wire
from ._log import event
from ._sidecar import Sidecar

_MAX_FAMILIES = {"epochgate_table_epoch", "epochgate_partitions", "epochgate_store_last_contact_seconds",
                 "epochgate_fail_closed", "epochgate_replica_blocked"}


class WorkerLink:
    """The parent's end of one worker: process, message channel, acked epoch."""

    def __init__(self, sup: "Supervisor", index: int) -> None:
        self.sup = sup
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.acked = 0
        self.undrained: set[int] = set()   # cutover epochs this worker could not drain
        self.alive = False
        self._ack = asyncio.Event()
        self._ready: asyncio.Future[None] | None = None
        self._metrics: asyncio.Future[list] | None = None
        self._task: asyncio.Task | None = None

    async def spawn(self) -> None:
        parent, child = socket.socketpair()
        env = dict(os.environ, EPOCHGATE_WORKER_CONFIG=self.sup.wcfg.to_json(), EPOCHGATE_WORKER_INDEX=str(self.index))
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sidecar._worker", str(child.fileno()), pass_fds=(child.fileno(),), env=env,
            stdin=asyncio.subprocess.DEVNULL)
        child.close()
        reader, self.writer = await asyncio.open_connection(sock=parent)
        self._ready = asyncio.get_running_loop().create_future()
        self.alive = True
        self.acked = 0
        table = self.sup.table
        if table is not None:
            # snapshot and subscription happen in one loop step: no change can fall in between
            snap = {p: [state_to_wire(s), int(e)] for p, (s, e) in table.partitions().items()}
            self.send({"op": "snapshot", "partitions": snap, "epoch": int(table.current_epoch()),
                       "nodes": self.sup.parent.nodes})
            self.acked = int(table.current_epoch())
        self._task = asyncio.create_task(self._read(reader))
        async with asyncio.timeout(60):  # not wait_for: it can lose a cancel on 3.11
            await self._ready

    def send(self, msg: dict) -> None:
        if self.writer is not None and self.alive:
            self.writer.write(json.dumps(msg).encode() + b"\n")

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                msg = json.loads(line)
                op = msg.get("op")
                if op == "ack":
                    if msg.get("drained") is False:
                        self.undrained.add(int(msg["epoch"]))
                    self.acked = max(self.acked, int(msg["epoch"]))
                    self._ack.set()
                    self._ack = asyncio.Event()
                elif op == "ready" and self._ready is not None and not self._ready.done():
                    self._ready.set_result(None)
                elif op == "metrics" and self._metrics is not None and not self._metrics.done():
                    self._metrics.set_result(msg["families"])
        except (ConnectionError, ValueError) as exc:
            event("worker channel failed", logging.ERROR, worker=self.index, error=str(exc))
        finally:
            self.alive = False
            self._ack.set()
            if self._ready is not None and not self._ready.done():
                self._ready.set_exception(RuntimeError(f"worker {self.index} exited during start"))
            if self._metrics is not None and not self._metrics.done():
                self._metrics.set_result([])
            self.sup.worker_gone(self)

    async def applied(self, partition: str, epoch: int) -> None:
        while self.alive and self.acked < epoch:
            await self._ack.wait()
        if epoch in self.undrained:
            self.undrained.discard(epoch)
            raise NotDrained(f"worker {self.index}: writes of {partition} admitted before epoch {epoch} "
                             "still in flight after --drain-seconds")

    async def metrics(self) -> list:
        if not self.alive:
            return []
        self._metrics = asyncio.get_running_loop().create_future()
        self.send({"op": "metrics"})
        try:
            async with asyncio.timeout(5):
                return await self._metrics
        except asyncio.TimeoutError:
            return []


class Supervisor:
    def __init__(self, cfg: SidecarConfig, wcfg: SidecarConfig) -> None:
        self.cfg = cfg
        self.wcfg = wcfg
        self.links: list[WorkerLink] = []
        # admin/control start after the workers are spawned: forking next to gRPC's threads is noisy
        self.parent: Sidecar = Sidecar(cfg, proxy=False, admin_control=False, metrics_text=self.metrics_text)
        self.table: Any = None
        self.stopping = False

    async def start(self) -> None:
        await self.parent.start()
        self.parent.ready_checks.append(lambda: all(link.alive for link in self.links))
        self.table = self.parent.table
        if self.table is not None:
            self.parent.store.members = self.links
            self.table.subscribe(self._changed)
        for i in range(self.cfg.workers):
            link = WorkerLink(self, i)
            self.links.append(link)
            await link.spawn()
        self.parent.admin_control = True
        await self.parent._start_admin_control()
        event("workers started", workers=self.cfg.workers, listen=self.wcfg.listen,
              admin=self.parent.admin_port, control=self.parent.control_port)

    def _changed(self, partition: str, state: Any, epoch: int) -> None:
        msg = {"op": "apply", "p": partition, "state": state_to_wire(state), "epoch": int(epoch)}
        for link in self.links:
            link.send(msg)

    def reload(self) -> None:
        if self.parent.reload():
            for link in self.links:
                link.send({"op": "nodes", "nodes": self.parent.nodes})

    def worker_gone(self, link: WorkerLink) -> None:
        if not self.stopping:
            asyncio.get_running_loop().create_task(self._respawn(link))

    async def _respawn(self, link: WorkerLink) -> None:
        if link.proc is not None:
            await link.proc.wait()
        await asyncio.sleep(0.5)  # a group-wide SIGTERM reaches the workers before the parent's handler
        if not self.stopping:
            event("worker exited; restarting it", logging.ERROR, worker=link.index,
                  code=link.proc.returncode if link.proc else None)
            try:
                await link.spawn()
            except Exception as exc:  # keep the others serving
                event("worker restart failed", logging.ERROR, worker=link.index, error=str(exc))

    async def metrics_text(self) -> bytes:
        results = await asyncio.gather(*(link.metrics() for link in self.links))
        families: dict[str, tuple[str, str, dict[tuple, float]]] = {}
        for fams in results:
            for name, typ, doc, samples in fams:
                _, _, acc = families.setdefault(name, (typ, doc, {}))
                use_max = name in _MAX_FAMILIES
                for sname, labels, value in samples:
                    key = (sname, tuple(sorted(labels.items())))
                    if key not in acc:
                        acc[key] = value
                    elif sname.endswith("_created"):
                        acc[key] = min(acc[key], value)
                    else:
                        acc[key] = max(acc[key], value) if use_max else acc[key] + value

        class _Merged:
            def collect(self):
                for name, (typ, doc, acc) in families.items():
                    m = Metric(name, doc, typ)
                    for (sname, labels), value in acc.items():
                        m.add_sample(sname, dict(labels), value)
                    yield m

        reg = CollectorRegistry(auto_describe=False)
        reg.register(_Merged())
        return generate_latest(reg)

    async def stop(self) -> None:
        self.stopping = True
        if self.parent.gate is not None:
            self.parent.gate.close()  # /readyz fails at once
        for link in self.links:
            if link.proc is not None and link.proc.returncode is None:
                link.proc.send_signal(signal.SIGTERM)
        for link in self.links:
            if link.proc is None:
                continue
            try:
                async with asyncio.timeout(self.cfg.drain_seconds + 5):
                    await link.proc.wait()
            except asyncio.TimeoutError:
                link.proc.kill()
                await link.proc.wait()
        await self.parent.shutdown()


def _reserve(host: str, port: int) -> socket.socket:
    """Bind (not listen) with SO_REUSEPORT: holds the port; only workers' sockets accept."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((host, port))
    return s


async def _supervise(cfg: SidecarConfig) -> int:
    from ._ports import bind_error, check_free

    host, port = cfg.listen_addr
    try:
        resv = _reserve(host, port)
    except OSError as exc:
        raise bind_error("listen", cfg.listen, exc) from exc
    check_free("admin", cfg.admin)       # the parent binds these after spawning the workers:
    check_free("control", cfg.control)   # a taken one is said first, not after the workers' start
    port = resv.getsockname()[1]
    wcfg = dataclasses.replace(cfg, listen=f"{host}:{port}" if ":" not in host else f"[{host}]:{port}")
    sup = Supervisor(cfg, wcfg)
    stop = asyncio.Event()
    try:
        await sup.start()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, sup.reload)
        await stop.wait()
    finally:
        await sup.stop()
        resv.close()
    return 0


def run_supervisor(cfg: SidecarConfig) -> int:
    from gate import ConfigError, EpochgateError

    from ._loop import new_event_loop

    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            return runner.run(_supervise(cfg))
    except ConfigError as exc:
        print(f"epochgate-sidecar: error: {exc}", file=sys.stderr)
        return 2
    except (EpochgateError, OSError, RuntimeError) as exc:
        print(f"epochgate-sidecar: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
