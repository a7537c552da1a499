"""A socket-free harness for the sidecar's data path.

The data path is asyncio Protocols (``_proxy.ClientConn`` towards clients,
``_upstream.UpstreamConn`` towards nodes); their only contact with the OS is
the transport. ``FakeTransport`` records what a protocol writes and whether it
paused reading; ``FakePool`` hands out upstream connections over fake
transports (or refuses to connect). A test feeds client bytes with
``client.send(...)``, reads what reached each node with ``upstream.take()``,
answers with ``upstream.reply(...)`` and reads the client's bytes with
``client.take()`` — the exchange runs exactly as it does on sockets (same
parsers, same hold, gate and pool), without a socket, a port or a sleep
(``settle`` only lets already-scheduled callbacks run).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import Any

from gate import InflightTracker, PlacementSource
from sidecar._config import SidecarConfig
from sidecar.proxy.context import ProxyContext
from sidecar._log import AccessLog
from sidecar._metrics import Metrics
from sidecar.proxy.conn import ClientConn
from sidecar.proxy.stats import Stats
from sidecar.proxy.upstream import UpstreamConn, UpstreamPool
from sidecar.proxy.writegate import WriteGate


class FakeTransport(asyncio.Transport):
    """Records writes; ``close`` tells the protocol (on the next loop turn), like a socket."""

    def __init__(self, protocol: asyncio.Protocol, peer: tuple[str, int]) -> None:
        super().__init__()
        self.protocol = protocol
        self.peer = peer
        self.out = bytearray()
        self.closing = False
        self.reading = True
        self.aborted = False
        self.lost = False

    def write(self, data: bytes) -> None:
        if not self.closing:
            self.out += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().call_soon(self._lose)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def _lose(self) -> None:
        if not self.lost:
            self.lost = True
            self.protocol.connection_lost(None)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def take(self) -> bytes:
        data = bytes(self.out)
        self.out.clear()
        return data


class Upstream:
    """One upstream connection as a test sees it."""

    def __init__(self, conn: UpstreamConn, node: tuple[str, int]) -> None:
        self.conn = conn
        self.node = node
        self.transport: FakeTransport = conn.transport  # type: ignore[assignment]

    def take(self) -> bytes:
        return self.transport.take()

    def reply(self, data: bytes) -> None:
        self.conn.data_received(data)

    def drop(self) -> None:
        """The node closed the connection."""
        self.transport.close()


class FakePool(UpstreamPool):
    """Upstream connections over fake transports; ``refuse`` makes connects fail."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.opened: list[Upstream] = []
        self.refuse = False

    async def connect(self, key: tuple[str, int]) -> UpstreamConn:
        if self.refuse:
            raise ConnectionRefusedError(111, "Connection refused")
        conn = UpstreamConn(self, key)
        conn.connection_made(FakeTransport(conn, key))
        self._open.add(conn)
        self.opened.append(Upstream(conn, key))
        return conn


class Client:
    def __init__(self, conn: ClientConn, transport: FakeTransport) -> None:
        self.conn = conn
        self.transport = transport

    def send(self, data: bytes) -> None:
        self.conn.data_received(data)

    def take(self) -> bytes:
        return self.transport.take()

    def vanish(self) -> None:
        """The client closed its side while we were not reading (a FIN nobody has read yet)."""
        self.transport.closing = True


NODES = {"a": "http://10.0.0.1:8001", "b": "http://10.0.0.2:8002"}
NODE_KEYS = {"a": ("10.0.0.1", 8001), "b": ("10.0.0.2", 8002)}


class Harness:
    """A sidecar data path on ``source`` with fake sockets on both sides."""

    def __init__(self, source: PlacementSource, **cfg: Any) -> None:
        loop = asyncio.get_running_loop()
        self.cfg = dataclasses.replace(SidecarConfig(placement="unused.toml"), **cfg)
        self.source = source
        self.tracker = InflightTracker()
        self.gate = WriteGate(source, self.tracker)
        self.metrics = Metrics()
        self.stats = Stats(self.metrics)
        self.ctx = ProxyContext(self.cfg, source, self.gate, self.stats, AccessLog(enabled=False), NODES, loop)
        self.pool = self.ctx.pool = FakePool(loop)
        self.clients: list[Client] = []

    def client(self) -> Client:
        conn = ClientConn(self.ctx)
        t = FakeTransport(conn, ("192.0.2.7", 40000 + len(self.clients)))
        conn.connection_made(t)
        c = Client(conn, t)
        self.clients.append(c)
        return c

    def upstreams(self, node: str) -> list[Upstream]:
        return [u for u in self.pool.opened if u.node == NODE_KEYS[node]]

    def outcome(self, kind: str, outcome: str) -> int:
        """Requests of ``kind`` finished with ``outcome``, as ``epochgate_requests_total`` counts them."""
        self.stats.flush()
        total = 0.0
        for metric in self.metrics.requests.collect():
            for sample in metric.samples:
                if (sample.name.endswith("_total") and sample.labels.get("kind") == kind
                        and sample.labels.get("outcome") == outcome):
                    total += sample.value
        return int(total)

    def close(self) -> None:
        self.ctx.stop()


async def settle(turns: int = 10) -> None:
    """Let callbacks and tasks that are already scheduled run (no wall-clock wait)."""
    for _ in range(turns):
        await asyncio.sleep(0)


def request(method: str, path: str = "/kv/k", *, key: str = "t1", body: bytes = b"", extra: str = "") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: sidecar\r\nX-Partition-Key: {key}\r\n{extra}"
    if body or method in ("POST", "PUT", "PATCH"):
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def response(status: int = 200, body: bytes = b"ok", *, ctype: str = "text/plain", extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode()
            + body)


def status_of(raw: bytes) -> int:
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", raw)
    assert m, raw[:200]
    return int(m.group(1))


def header(raw: bytes, name: str) -> str | None:
    m = re.search(rb"\r\n" + name.encode() + rb": ([^\r]*)\r\n", raw, re.I)
    return None if m is None else m.group(1).decode()
