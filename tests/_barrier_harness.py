"""In-process barrier participants over real Consul, with their Consul traffic
through TCP fault proxies (for DESIGN §5 rule tests).

A ``FaultProxy`` forwards loopback TCP to the Consul agent; ``cut()`` closes
every open connection and leaves new ones hanging (a partition, not a refusal:
requests time out), ``heal()`` forwards again. Each ``Pod`` is one sidecar's
barrier half: a ``Participant`` (sessions through one proxy, its replica's
reads through another, so the two connections fail independently), a
``WriteGate`` with the participant as guard and source, and an admission log.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from urllib.parse import urlparse

from gate._consul_consensus import ConsulConsensus
from gate._participant import Participant
from gate._replica import Replica
from gate import InflightTracker
from sidecar.proxy.writegate import WriteGate


class FaultProxy:
    def __init__(self, target_url: str) -> None:
        u = urlparse(target_url)
        self.host, self.port = u.hostname, u.port
        self.cut_flag = False
        self._conns: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> "FaultProxy":
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def cut(self) -> None:
        self.cut_flag = True
        for w in list(self._conns):
            w.close()
        self._conns.clear()

    def heal(self) -> None:
        self.cut_flag = False

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        try:
            while self.cut_flag:
                if writer.is_closing():
                    return
                await asyncio.sleep(0.05)   # hang: the client times out
            try:
                ur, uw = await asyncio.open_connection(self.host, self.port)
            except OSError:
                return
            self._conns.add(uw)

            async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                try:
                    while not self.cut_flag:
                        data = await r.read(65536)
                        if not data:
                            break
                        w.write(data)
                        await w.drain()
                except (OSError, asyncio.CancelledError):
                    pass
                finally:
                    w.close()

            await asyncio.gather(pipe(reader, uw), pipe(ur, writer))
            self._conns.discard(uw)
        finally:
            self._conns.discard(writer)
            writer.close()


class OffsetClock:
    """``time.monotonic`` plus an offset the test can advance (one pod's clock)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


@dataclass
class Admission:
    pod: str
    partition: str
    epoch: int
    t: float
    admitted: bool
    reason: str = ""


@dataclass
class Pod:
    consul_url: str
    prefix: str
    id: str
    cls: type = Participant
    ttl_s: float = 10.0
    replica_hook: object = None
    push_target: str | None = None   # the push path (issue 31): a controller's Fleet/Follow address
    log: list[Admission] = field(default_factory=list)

    async def start(self, wait: bool = True) -> "Pod":
        self.clock = OffsetClock()
        self.session_proxy = await FaultProxy(self.consul_url).start()
        self.watch_proxy = await FaultProxy(self.consul_url).start()
        self.consensus = ConsulConsensus(self.watch_proxy.url, self.prefix, timeout_s=2.0)
        self.tracker = InflightTracker()
        self.participant = self.cls(self.session_proxy.url, self.prefix, participant_id=self.id,
                                    replica_factory=self._replica, tracker=self.tracker, ttl_s=self.ttl_s,
                                    clock=self.clock, **({"push_target": self.push_target} if self.push_target else {}))
        self.gate = WriteGate(self.participant, self.tracker, clock=self.clock)
        self.gate.add_guard(self.participant.writable)
        if wait:
            await self.participant.start(wait_joined_s=10)
        else:
            await self.participant.start()
        return self

    def _replica(self) -> Replica:
        r = Replica(self.consensus, wait_s=self.participant.wait_s, clock=self.clock)
        if self.replica_hook is not None:
            orig = r.start

            async def start(**kw):
                await orig(**kw)
                await self.replica_hook(self, r)   # type: ignore[operator]
            r.start = start  # type: ignore[method-assign]
        return r

    def write(self, partition: str, *, keep_inflight: bool = False) -> Admission:
        """Resolve + admit one write now (and finish it unless ``keep_inflight``)."""
        at = self.participant.lookup(partition)
        epoch = 0 if at is None else int(at.epoch)
        r = self.gate.admit(partition, epoch)
        a = Admission(self.id, partition, epoch, time.time(), bool(r), "" if r else str(r.reason))
        self.log.append(a)
        if r and not keep_inflight:
            self.gate.done(partition, epoch)
        return a

    async def stop(self) -> None:
        await self.participant.stop()
        await self.consensus.close()
        await self.session_proxy.stop()
        await self.watch_proxy.stop()


async def wait_until(pred, timeout_s: float, step: float = 0.02) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if pred():
            return True
        await asyncio.sleep(step)
    return bool(pred())


def lost_writes(pods: list[Pod], partition: str, cutover_epoch: int, passed_wall: float | None) -> list[Admission]:
    """Writes admitted at an epoch older than the cutover after the barrier passed:
    they would commit on ``from`` after the delta was copied."""
    if passed_wall is None:
        return []
    return [a for p in pods for a in p.log
            if a.partition == partition and a.admitted and a.epoch < cutover_epoch and a.t >= passed_wall]
