"""One accounting path for every protocol (issue 26, findings 2, 4, 5).

2. A client that resets an admitted HTTP/2 write's stream after its request ended
   does not end the write's in-flight count: the node is still committing it, so the
   participant's drain (the cutover ack) waits until the node answered — as on
   HTTP/1.1. A stream reset before its request ended is cut: the count ends.
4. Connections that have not chosen a protocol yet, and HTTP/2 connections, do not
   stop the periodic sweep: an HTTP/1.1 head still times out (408) beside them.
5. ``--max-connections`` counts HTTP/2 and undetected connections; HTTP/2 bodies kept
   for replay count against ``--body-budget``; a header block split over
   CONTINUATION frames is bounded by the head deadline and the head size limit.

Real sidecars in-process, real upstreams (aiohttp HTTP/1.1, an ``h2`` h2c node), raw
HTTP/2 clients written on ``h2``/``hyperframe``.
"""

from __future__ import annotations

import asyncio
import contextlib

import h2.connection
import h2.events
import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import ContinuationFrame, HeadersFrame

from tests._h2_util import H2Upstream
from tests.test_h2_bad_input import Raw as _Raw
from tests._sidecar_util import Upstream, config, running_sidecar, until, write_placement

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
KIB = 1024


class Raw(_Raw):
    """A hand-driven HTTP/2 client connection (test_h2_bad_input's), with a larger window."""

    def __init__(self) -> None:
        super().__init__()
        self.conn.local_settings.initial_window_size = 1 << 20

    async def ready(self) -> "Raw":
        """The sidecar's SETTINGS and window are in (a PING answered after them)."""
        await self.until(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
        self.conn.ping(b"12345678")
        self.flush()
        await self.until(lambda e: isinstance(e, h2.events.PingAckReceived))
        return self

    def put(self, sid: int, path: str, body: bytes, end: bool = True) -> None:
        self.conn.send_headers(sid, [(":method", "PUT"), (":path", path), (":authority", "x"), (":scheme", "http"),
                                     ("x-partition-key", "t1")])
        step = self.conn.max_outbound_frame_size
        for i in range(0, len(body), step):
            self.conn.send_data(sid, body[i:i + step], end_stream=end and i + step >= len(body))
        self.flush()


def h2_conns(sc) -> list:
    return [c for c in sc.ctx.clients if type(c).__name__ == "H2ServerConn"]


@contextlib.asynccontextmanager
async def one_node_sidecar(tmp_path, **kw):
    """A sidecar over one HTTP/1.1 node ``a`` owning partition ``t1``, with ``kw`` as its config."""
    up = await Upstream("a").start()
    try:
        p = write_placement(tmp_path / "p.toml", {"a": up.url}, {"t1": "a"})
        async with running_sidecar(config(p, **kw)) as sc:
            yield sc
    finally:
        await up.stop()


async def eof(reader: asyncio.StreamReader, timeout: float = 10) -> bytes:
    """Everything until the sidecar closes the connection."""
    out = b""
    while True:
        chunk = await asyncio.wait_for(reader.read(65536), timeout)
        if not chunk:
            return out
        out += chunk


@pytest.fixture(params=["http", "h2c"])
async def node(request):
    """A node that holds ``/wait`` until released: HTTP/1.1 (aiohttp) or h2c."""
    up = await (Upstream("a") if request.param == "http" else H2Upstream("a")).start()
    yield up
    up.release.set()
    await up.stop()


# ---- 2: a client reset does not end an admitted write's count ----------------------------------


async def test_reset_stream_keeps_the_write_counted_until_the_node_answers(node, tmp_path):
    p = write_placement(tmp_path / "p.toml", {"a": node.url, "b": "http://127.0.0.1:1"}, {"t1": "a"})
    async with running_sidecar(config(p, drain_seconds=10.0, read_timeout=30.0)) as sc:
        raw = await Raw().open(sc.port)
        raw.put(1, "/wait", b"value")
        await until(lambda: any(s.get("path") == "/wait" for s in node.seen))  # the node is committing
        assert sc.tracker.count() == 1
        raw.conn.reset_stream(1, ErrorCodes.CANCEL)
        raw.flush()
        await until(lambda: h2_conns(sc) and not h2_conns(sc)[0].streams)  # the sidecar saw the reset
        assert sc.tracker.count() == 1, "the reset ended the count while the node still holds the write"
        waiting = asyncio.Event()
        on_wait = sc.tracker.on_wait
        sc.tracker.on_wait = lambda p_, e: (waiting.set(), on_wait and on_wait(p_, e))
        await sc.store.begin("t1", "b")
        cutover = asyncio.create_task(sc.store.enter_cutover("t1"))
        await asyncio.wait_for(waiting.wait(), 10)   # the participant waits for the write
        assert not cutover.done()
        node.release.set()                           # the node answers (commits) now
        await asyncio.wait_for(cutover, 10)
        assert sc.tracker.count() == 0
        raw.close()


async def test_connection_lost_keeps_the_write_counted_until_the_node_answers(node, tmp_path):
    p = write_placement(tmp_path / "p.toml", {"a": node.url}, {"t1": "a"})
    async with running_sidecar(config(p, read_timeout=30.0)) as sc:
        raw = await Raw().open(sc.port)
        raw.put(1, "/wait", b"value")
        await until(lambda: any(s.get("path") == "/wait" for s in node.seen))
        raw.close()
        await until(lambda: not h2_conns(sc))
        assert sc.tracker.count() == 1
        node.release.set()
        await until(lambda: sc.tracker.count() == 0)


async def test_reset_before_the_request_ended_cuts_the_write(node, tmp_path):
    """The other half, as on HTTP/1.1: the node never gets the whole request, the count ends."""
    p = write_placement(tmp_path / "p.toml", {"a": node.url}, {"t1": "a"})
    async with running_sidecar(config(p)) as sc:
        raw = await Raw().open(sc.port)
        raw.put(1, "/wait", b"val", end=False)
        await until(lambda: sc.tracker.count() == 1)
        raw.conn.reset_stream(1, ErrorCodes.CANCEL)
        raw.flush()
        await until(lambda: sc.tracker.count() == 0)
        raw.close()


async def test_trickling_h2_write_is_cut_when_the_drain_starts(node, tmp_path):
    """The trickle cut (sidecar/proxy/trickle.py) reaches HTTP/2 streams too: a write whose
    body is still arriving when the partition's drain starts is answered 503 body-too-slow
    after the grace, its upstream leg cut, and the cutover goes on."""
    p = write_placement(tmp_path / "p.toml", {"a": node.url, "b": "http://127.0.0.1:1"}, {"t1": "a"})
    async with running_sidecar(config(p, drain_seconds=10.0)) as sc:
        raw = await (await Raw().open(sc.port)).ready()
        raw.put(1, "/wait", b"val", end=False)           # and the rest never comes
        await until(lambda: sc.tracker.count() == 1)
        await sc.store.begin("t1", "b")
        await asyncio.wait_for(sc.store.enter_cutover("t1"), 10)
        await raw.until(lambda e: isinstance(e, h2.events.ResponseReceived) and e.stream_id == 1)
        resp = next(e for e in raw.events if isinstance(e, h2.events.ResponseReceived))
        assert dict(resp.headers)[b":status"] == b"503"
        await raw.until(lambda e: isinstance(e, h2.events.DataReceived) and b"body-too-slow" in e.data)
        assert sc.tracker.count() == 0
        raw.close()


# ---- 4: the sweep works whatever connections are open -------------------------------------------


async def test_head_timeout_fires_beside_undetected_and_h2_connections(tmp_path, h2_engine):
    async with one_node_sidecar(tmp_path, head_timeout=0.5) as sc:
        und_r, und_w = await asyncio.open_connection("127.0.0.1", sc.port)
        und_w.write(PREFACE[:9])                    # has not chosen a protocol yet
        raw = await Raw().open(sc.port)             # an HTTP/2 connection
        await raw.until(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
        r, w = await asyncio.open_connection("127.0.0.1", sc.port)
        w.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # a head that never ends
        out = await eof(r)
        assert out.startswith(b"HTTP/1.1 408"), out
        assert await eof(und_r) == b""              # the unfinished preface: closed by the deadline
        assert sc.metrics.head_timeouts._value.get() == 2
        assert h2_conns(sc), "an idle HTTP/2 connection without a header block in progress stays"
        raw.close()
        w.close()
        und_w.close()


# ---- 5: connection cap, body budget, CONTINUATION -----------------------------------------------


async def test_max_connections_counts_h2_and_undetected_connections(tmp_path):
    async with one_node_sidecar(tmp_path, max_connections=2) as sc:
        raw = await Raw().open(sc.port)
        await raw.until(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
        und_r, und_w = await asyncio.open_connection("127.0.0.1", sc.port)  # silent: not chosen yet
        await until(lambda: len(sc.ctx.clients) == 2)
        r, w = await asyncio.open_connection("127.0.0.1", sc.port)
        w.write(PREFACE)                                                    # a third, HTTP/2
        out = await eof(r)
        assert b"503" in out and b"too-many-connections" in out, out
        assert sc.metrics.connections_refused._value.get() == 1
        w.close()
        raw.close()
        und_w.close()
        await until(lambda: len(sc.ctx.clients) == 0)


async def test_max_connections_refuses_tls_h2_in_its_own_language(tmp_path):
    """TLS is counted at accept too; one that chose h2 by ALPN is refused with SETTINGS and
    GOAWAY (NO_ERROR, last stream 0: retry elsewhere), not an HTTP/1.1 503."""
    import ssl

    from tests._h2_util import make_ca, make_cert

    ca = make_ca(tmp_path, "ca")
    cert, key = make_cert(tmp_path, ca, "server")
    async with one_node_sidecar(tmp_path, max_connections=1, tls_cert=str(cert), tls_key=str(key)) as sc:
        tls = ssl.create_default_context(cafile=str(ca[0]))
        tls.set_alpn_protocols(["h2"])
        r1, w1 = await asyncio.open_connection("127.0.0.1", sc.port, ssl=tls, server_hostname="localhost")
        await until(lambda: len(sc.ctx.clients) == 1)
        r2, w2 = await asyncio.open_connection("127.0.0.1", sc.port, ssl=tls, server_hostname="localhost")
        out = await eof(r2)
        client = h2.connection.H2Connection()
        client.initiate_connection()
        evs = client.receive_data(out)
        gone = [e for e in evs if isinstance(e, h2.events.ConnectionTerminated)]
        assert gone and gone[0].error_code == ErrorCodes.NO_ERROR and gone[0].last_stream_id == 0, evs
        assert gone[0].additional_data == b"too many connections"
        assert sc.metrics.connections_refused._value.get() == 1
        w1.close()
        w2.close()


async def test_h2_bodies_kept_for_replay_count_against_the_budget(node, tmp_path):
    p = write_placement(tmp_path / "p.toml", {"a": node.url}, {"t1": "a"})
    async with running_sidecar(config(p, body_budget=64 * KIB)) as sc:
        raw = await (await Raw().open(sc.port)).ready()
        raw.put(1, "/wait", b"x" * (40 * KIB))
        await until(lambda: sum(s.get("path") == "/wait" for s in node.seen) == 1)
        raw.put(3, "/wait", b"y" * (40 * KIB))        # does not fit beside the first: not kept
        await until(lambda: sum(s.get("path") == "/wait" for s in node.seen) == 2)
        assert sc.ctx.budget.used == 40 * KIB
        assert sc.tracker.count() == 2
        node.release.set()
        await raw.until(lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == 3)
        await until(lambda: sc.ctx.budget.used == 0)
        raw.close()


async def _header_block_start(port: int) -> Raw:
    raw = await Raw().open(port)
    await raw.until(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
    block = raw.conn.encoder.encode([(":method", "GET"), (":path", "/"), (":authority", "x"),
                                     (":scheme", "http"), ("x-partition-key", "t1")])
    f = HeadersFrame(1, block)
    f.flags.add("END_STREAM")                        # no END_HEADERS: CONTINUATION frames follow
    raw.writer.write(f.serialize())
    return raw


async def test_continuation_trickle_is_bounded_by_the_head_deadline(tmp_path, h2_engine):
    async with one_node_sidecar(tmp_path, head_timeout=0.5) as sc:
        raw = await _header_block_start(sc.port)
        raw.writer.write(ContinuationFrame(1, b"\x00").serialize())  # and then nothing more
        out = await eof(raw.reader)
        assert b"request head timeout" in out, out
        assert sc.metrics.head_timeouts._value.get() == 1
        raw.close()


async def test_continuation_block_is_bounded_by_the_head_size(tmp_path, h2_engine):
    async with one_node_sidecar(tmp_path, max_header_bytes=4096) as sc:
        raw = await _header_block_start(sc.port)
        closed = asyncio.ensure_future(eof(raw.reader))
        sent = 0
        try:
            for _ in range(60):                      # h2 alone would keep 60 × 16 KB
                if closed.done():
                    break
                raw.writer.write(ContinuationFrame(1, b"\x00" * 16000).serialize())
                await raw.writer.drain()
                sent += 16000
                await asyncio.sleep(0.02)            # (the client's pace; the close ends the loop)
        except ConnectionError:
            pass
        out = await closed
        assert b"header block too large" in out, out
        assert sent <= 4 * 4096 + 4 * 16000, f"{sent} bytes of one header block were sent before the GOAWAY"
        raw.close()
