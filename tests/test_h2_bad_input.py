"""Hostile HTTP/2 input: a broken preface, a header list over the limit, a flood
of streams (too many at once, and rapid resets), a peer that never reads. Each
gets a clear GOAWAY (or HTTP/1.1 400), memory stays bounded, and another
connection is served meanwhile. On both HTTP/2 engines (``h2_engine``: libnghttp2, h2)."""

from __future__ import annotations

import asyncio

import h2.connection
import h2.events
import httpx
import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes

from tests._h2_util import H2Upstream
from tests._sidecar_util import config, running_sidecar, until, write_placement

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@pytest.fixture
async def sidecar(tmp_path, h2_engine):
    up = await H2Upstream("a").start()
    p = write_placement(tmp_path / "p.toml", {"a": up.url}, {"t1": "a"})
    async with running_sidecar(config(p, h2_max_streams=20, max_header_bytes=8192)) as sc:
        yield sc
    await up.stop()


class Raw:
    """A hand-driven HTTP/2 client connection."""

    def __init__(self) -> None:
        self.conn = h2.connection.H2Connection()
        self.events: list = []

    async def open(self, port: int) -> "Raw":
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        self.conn.initiate_connection()
        self.flush()
        return self

    def flush(self) -> None:
        self.writer.write(self.conn.data_to_send())

    async def until(self, pred, timeout: float = 10) -> None:
        async def run():
            while not any(pred(e) for e in self.events):
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("closed")
                self.events += self.conn.receive_data(data)
                self.flush()
        await asyncio.wait_for(run(), timeout)

    def close(self) -> None:
        self.writer.close()


def req(sid: int, path: str = "/echo", extra=()) -> tuple[int, list]:
    return sid, [(":method", "GET"), (":path", path), (":authority", "x"), (":scheme", "http"),
                 ("x-partition-key", "t1"), *extra]


async def still_serves(sc) -> None:
    async with httpx.AsyncClient(http1=False, http2=True, timeout=10) as c:
        r = await c.get(f"http://127.0.0.1:{sc.port}/echo", headers={"x-partition-key": "t1"})
        assert r.status_code == 200


def goaway(code):
    return lambda e: isinstance(e, h2.events.ConnectionTerminated) and e.error_code == code


async def test_broken_preface(sidecar):
    sc = sidecar
    reader, writer = await asyncio.open_connection("127.0.0.1", sc.port)
    writer.write(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")  # not the preface: the HTTP/1.1 parser says 400
    head = await asyncio.wait_for(reader.read(65536), 5)
    assert head.startswith(b"HTTP/1.1 400")
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", sc.port)
    writer.write(PREFACE + b"\x00\x00\x04\x09\x00\x00\x00\x00\x07garbage!")  # CONTINUATION out of nowhere
    data = b""
    while True:
        chunk = await asyncio.wait_for(reader.read(65536), 5)
        if not chunk:
            break
        data += chunk
    frames = h2.connection.H2Connection()
    frames.initiate_connection()
    evs = frames.receive_data(data)
    assert any(isinstance(e, h2.events.ConnectionTerminated) and e.error_code == ErrorCodes.PROTOCOL_ERROR for e in evs)
    writer.close()
    await still_serves(sc)


async def test_header_list_over_the_limit_gets_431_then_goaway(sidecar):
    sc = sidecar
    raw = await Raw().open(sc.port)
    await raw.until(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
    raw.conn.ping(b"12345678")  # our SETTINGS ACK is processed first: the settled limits apply
    raw.flush()
    await raw.until(lambda e: isinstance(e, h2.events.PingAckReceived))
    raw.conn.send_headers(*req(1, extra=[("x-big", "v" * 10000)]), end_stream=True)  # limit 8192
    raw.flush()
    await raw.until(lambda e: isinstance(e, h2.events.ResponseReceived))
    status = dict(next(e for e in raw.events if isinstance(e, h2.events.ResponseReceived)).headers)[b":status"]
    assert status == b"431"
    raw.conn.send_headers(*req(3, extra=[("x-big", "v" * 40000)]), end_stream=True)  # > 4× the limit
    raw.flush()
    await raw.until(goaway(ErrorCodes.ENHANCE_YOUR_CALM))
    raw.close()
    await still_serves(sc)


async def test_too_many_streams_and_rapid_reset_get_goaway(sidecar):
    sc = sidecar
    raw = await Raw().open(sc.port)
    await raw.until(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
    raw.conn.ping(b"12345678")  # our SETTINGS ACK went first: the limit (20) now applies
    raw.flush()
    await raw.until(lambda e: isinstance(e, h2.events.PingAckReceived))
    # open 30 streams that never end, ignoring the advertised limit on purpose
    raw.conn.remote_settings[SettingCodes.MAX_CONCURRENT_STREAMS] = 1000
    raw.conn.remote_settings.acknowledge()
    for i in range(30):
        raw.conn.send_headers(*req(1 + 2 * i))
    raw.flush()
    await raw.until(goaway(ErrorCodes.PROTOCOL_ERROR))
    raw.close()
    await until(lambda: sc.tracker.count() == 0)

    raw = await Raw().open(sc.port)
    for i in range(400):  # open-and-reset, the "rapid reset" pattern
        raw.conn.send_headers(*req(1 + 2 * i))
        raw.conn.reset_stream(1 + 2 * i)
    raw.flush()
    await raw.until(goaway(ErrorCodes.ENHANCE_YOUR_CALM))
    raw.close()
    await still_serves(sc)


async def test_peer_that_never_reads_is_bounded_and_others_are_served(sidecar):
    sc = sidecar
    raw = await Raw().open(sc.port)
    # windows wide open: only the sidecar's own back-pressure (transport buffer) can hold it
    raw.conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: (1 << 31) - 1})
    raw.conn.increment_flow_control_window((1 << 31) - 1 - 65535)
    raw.conn.send_headers(*req(1, path=f"/big?size={200 << 20}"), end_stream=True)
    raw.flush()
    await until(lambda: any(getattr(c, "streams", None) for c in sc.ctx.clients))
    sconn = next(c for c in sc.ctx.clients if getattr(c, "streams", None))
    await until(lambda: sconn.wpaused)  # the peer's socket is full: the sidecar stops sending
    for _ in range(3):
        await still_serves(sc)
    assert sconn.transport is not None and 1 in sconn.streams  # stalled, not cut
    queued = sconn.queued(1) + sconn.transport.get_write_buffer_size()
    # bounded by the stream window (what the sidecar acknowledged upstream) plus the
    # transport's buffer high-water mark — not by the 200 MiB body
    assert queued <= sc.cfg.h2_window + (1 << 20), queued
    raw.close()
    await until(lambda: not sconn.streams)


async def test_http11_upgrade_to_h2c_is_refused(sidecar):
    """An ``Upgrade: h2c`` tunnel would carry HTTP/2 streams past the gate (h2c smuggling)."""
    sc = sidecar
    reader, writer = await asyncio.open_connection("127.0.0.1", sc.port)
    writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Partition-Key: t1\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                 b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
    head = await asyncio.wait_for(reader.read(65536), 5)
    assert head.startswith(b"HTTP/1.1 400") and b"h2c upgrade not proxied" in head
    writer.close()
    await still_serves(sc)
