"""Helpers for the hostile-input tests: an h11 upstream (a parser other than
ours, strict, and one that honours the "maybe switch protocols" state the way a
real server does) and a raw-socket client.

``H11Upstream`` records every request it parses, per connection, and answers:

* ``Upgrade`` on a path starting ``/accept-upgrade``: ``101``, then echoes raw bytes;
* any other ``Upgrade``: a plain ``200`` (refusing the upgrade) — after which h11
  goes on parsing the connection's next bytes as a new request, which is how a
  smuggled request gets through;
* writes while ``stale_writes`` > 0: the application's stale-epoch 503 problem;
* everything else: ``200`` with a short body — with ``early_reads``, a GET or HEAD is answered
  as soon as its head is parsed, before its body (as many applications do: a handler that
  never reads the body), the body then read and discarded. That is what lets a request whose
  declared length its proxy never sends desynchronise the connection. ``early_gate``, when
  set, is an event that early answer waits for.

``quiet()`` is the event the tests wait for: every connection the upstream
accepted has reached end-of-file, so it has parsed everything it will ever
receive (the sidecar closes non-reusable connections, and the pool's sweep
closes idle ones after ``upstream_idle``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import h11
import pytest

from tests._sidecar_util import config, running_sidecar, write_placement

SMUGGLED_T1 = (b"PUT /kv/greet HTTP/1.1\r\nHost: app\r\nX-Partition: t1\r\nX-Placement: a\r\n"
               b"X-Placement-Epoch: 1\r\nContent-Length: 5\r\n\r\nhello")


@dataclass
class Seen:
    conn: int
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    answered: bool = False

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]


@dataclass
class H11Upstream:
    name: str
    seen: list[Seen] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    truncated: int = 0
    stale_writes: int = 0
    early_reads: bool = False
    early_gate: asyncio.Event | None = None
    open_conns: int = 0
    accepted: int = 0
    url: str = ""
    _server: Any = None
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _changed: Any = None

    async def start(self) -> "H11Upstream":
        self._changed = asyncio.Condition()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def stop(self) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def quiet(self, timeout: float = 10.0) -> None:
        """Wait until every accepted connection has been closed (see the module doc)."""
        async def wait() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: self.open_conns == 0)
        await asyncio.wait_for(wait(), timeout)

    async def wait_requests(self, n: int, timeout: float = 10.0) -> None:
        async def wait() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.seen) >= n)
        await asyncio.wait_for(wait(), timeout)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cid = next(self._ids)
        self.open_conns += 1
        self.accepted += 1
        conn = h11.Connection(h11.SERVER)
        cur: Seen | None = None
        try:
            while True:
                ev = conn.next_event()
                if ev is h11.NEED_DATA:
                    data = await reader.read(65536)
                    if not data:
                        conn.receive_data(b"")
                        if conn.their_state in (h11.IDLE, h11.DONE, h11.MIGHT_SWITCH_PROTOCOL, h11.CLOSED):
                            break
                        continue
                    conn.receive_data(data)
                    continue
                if ev is h11.PAUSED:
                    # the client asked to switch protocols and is done sending: answer
                    if cur is None:
                        break
                    if cur.target.startswith("/accept-upgrade"):
                        await self._accept_upgrade(conn, writer, reader, cur)
                        break
                    writer.write(conn.send(h11.Response(status_code=200, headers=[
                        ("content-length", "7"), ("x-upstream", self.name)])))
                    if cur.method != "HEAD":
                        writer.write(conn.send(h11.Data(data=b"refused")))
                    writer.write(conn.send(h11.EndOfMessage()))
                    await writer.drain()
                    conn.start_next_cycle()
                    cur = None
                    continue
                if isinstance(ev, h11.Request):
                    cur = Seen(cid, ev.method.decode(), ev.target.decode("latin-1"),
                               [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in ev.headers])
                    if self.early_reads and cur.method in ("GET", "HEAD") and not cur.header("upgrade"):
                        cur.answered = True
                        if self.early_gate is not None:
                            await self.early_gate.wait()
                        await self._answer(conn, writer, cur)
                    continue
                if isinstance(ev, h11.Data):
                    assert cur is not None
                    cur.body += ev.data
                    continue
                if isinstance(ev, h11.EndOfMessage):
                    assert cur is not None
                    self.seen.append(cur)
                    await self._notify()
                    if conn.their_state is h11.MIGHT_SWITCH_PROTOCOL:
                        continue  # next_event() says PAUSED: answered there
                    if not cur.answered:
                        await self._answer(conn, writer, cur)
                    if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                        break
                    conn.start_next_cycle()
                    cur = None
                    continue
                if isinstance(ev, h11.ConnectionClosed):
                    break
        except h11.RemoteProtocolError as exc:
            if "without sending complete message body" in str(exc):
                self.truncated += 1  # the sidecar gave up on a body its client never finished
            else:
                self.errors.append(f"conn {cid}: {exc}")
        except ConnectionError:
            pass  # the sidecar cut the connection (e.g. its client went away): not a parse error
        except h11.LocalProtocolError as exc:
            self.errors.append(f"conn {cid}: {type(exc).__name__}: {exc}")
        finally:
            writer.close()
            self.open_conns -= 1
            await self._notify()

    async def _answer(self, conn: h11.Connection, writer: asyncio.StreamWriter, req: Seen) -> None:
        if req.method not in ("GET", "HEAD", "OPTIONS") and self.stale_writes > 0:
            self.stale_writes -= 1
            body = json.dumps({"type": "urn:epochgate:problem:stale-epoch", "title": "stale", "status": 503,
                               "reason": "stale_epoch"}).encode()
            headers = [("content-type", "application/problem+json"), ("content-length", str(len(body)))]
            writer.write(conn.send(h11.Response(status_code=503, headers=headers)))
        else:
            body = b"ok " + self.name.encode()
            writer.write(conn.send(h11.Response(status_code=200, headers=[
                ("content-length", str(len(body))), ("x-upstream", self.name)])))
        if req.method != "HEAD":
            writer.write(conn.send(h11.Data(data=body)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()

    async def _accept_upgrade(self, conn: h11.Connection, writer: asyncio.StreamWriter,
                              reader: asyncio.StreamReader, req: Seen) -> None:
        proto = (req.header("upgrade") or ["x"])[0]
        writer.write(conn.send(h11.InformationalResponse(status_code=101, headers=[
            ("connection", "upgrade"), ("upgrade", proto)])))
        await writer.drain()
        data, _ = conn.trailing_data
        while True:
            if data:
                writer.write(b"echo:" + data)
                await writer.drain()
            data = await reader.read(65536)
            if not data:
                return


async def send_raw(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection; everything that comes back until the
    sidecar closes (or ``timeout`` passes without a byte)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        out = b""
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), timeout)
            except asyncio.TimeoutError:
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        writer.close()


def statuses(raw: bytes) -> list[int]:
    """Status codes of the responses in ``raw`` (heads only; bodies skipped by Content-Length)."""
    out = []
    rest = raw
    while rest.startswith(b"HTTP/1."):
        head, sep, rest = rest.partition(b"\r\n\r\n")
        out.append(int(head.split(b" ", 2)[1]))
        n = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                n = int(v.strip())
        rest = rest[n:]
    return out


# ---- fixtures (import into a test module) ------------------------------------------------------


@pytest.fixture
async def h11_nodes():
    """Two h11 upstreams: nodes ``a`` (t1) and ``b`` (t2)."""
    a = await H11Upstream("a").start()
    b = await H11Upstream("b").start()
    yield a, b
    await a.stop()
    await b.stop()


@contextlib.asynccontextmanager
async def hostile_sidecar(tmp_path: Any, nodes: tuple[H11Upstream, H11Upstream], **kw: Any):
    a, b = nodes
    p = write_placement(tmp_path / "p.toml", {"a": a.url, "b": b.url}, {"t1": "a", "t2": "b", "t3": "a"})
    kw.setdefault("upstream_idle", 0.3)  # pooled upstream connections close soon: quiet() comes quickly
    async with running_sidecar(config(p, **kw)) as sc:
        yield sc


async def send_endless_header(writer: asyncio.StreamWriter, answer: "asyncio.Future[bytes]", head: bytes) -> int:
    """Write ``head`` then one header value that never ends, until ``answer`` is done (or 8 MiB,
    what would be sent if nobody answered); the bytes of the value that were sent."""
    writer.write(head)
    sent = 0
    block = b"a" * 8192
    try:
        while not answer.done() and sent < 8 << 20:
            writer.write(block)
            await writer.drain()
            sent += len(block)
            await asyncio.sleep(0)
    except ConnectionError:
        pass
    return sent
