"""HTTP/2 through the sidecar: an h2c client (httpx, prior knowledge) against h2c and
HTTP/1.1 upstreams — stamping, bodies of 1 B to several MiB, trailers, many
concurrent streams, a reset mid-body, HTTP/1.1 still on the same port."""

from __future__ import annotations

import asyncio
import hashlib

import httpx
import pytest

from tests._h2_util import H2Upstream
from tests._sidecar_util import (  # noqa: F401 (nodes is a fixture)
    config,
    nodes,
    running_sidecar,
    until,
    write_placement,
)

KEY = {"x-partition-key": "t1"}


@pytest.fixture
async def h2nodes():
    a = await H2Upstream("a").start()
    b = await H2Upstream("b").start()
    yield a, b
    await a.stop()
    await b.stop()


@pytest.fixture
def h2placement(h2nodes, tmp_path):
    a, b = h2nodes
    return write_placement(tmp_path / "p.toml", {"a": a.url, "b": b.url}, {"t1": "a", "t2": "b"})


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(http1=False, http2=True, timeout=30)


async def test_h2c_write_is_stamped_and_reaches_its_node(h2placement, h2nodes):
    a, b = h2nodes
    async with running_sidecar(config(h2placement)) as sc, client() as c:
        r = await c.put(f"http://127.0.0.1:{sc.port}/echo", content=b"hello", headers={**KEY, "x-placement": "forged"})
        assert r.status_code == 200 and r.http_version == "HTTP/2"
        assert r.json()["len"] == 5 and r.headers["x-node"] == "a"
        seen = a.seen[-1]["headers"]
        e = int(sc.table.state("t1")[1])
        assert seen["x-partition"] == "t1" and seen["x-placement"] == "a" and seen["x-placement-epoch"] == str(e)
        assert seen[":method"] == "PUT" and "x-request-id" in seen
        assert not b.seen
        r = await c.get(f"http://127.0.0.1:{sc.port}/echo", headers={"x-partition-key": "t2"})
        assert r.status_code == 200 and r.headers["x-node"] == "b"
        assert sc.tracker.count() == 0


async def test_http11_still_served_on_the_same_port(h2placement, nodes, tmp_path):
    a, _ = nodes  # an HTTP/1.1 node
    p = write_placement(tmp_path / "q.toml", {"a": a.url}, {"t1": "a"})
    async with running_sidecar(config(p)) as sc:
        async with httpx.AsyncClient() as c1:
            r = await c1.put(f"http://127.0.0.1:{sc.port}/kv/x", content=b"v", headers=KEY)
            assert r.status_code == 200 and r.http_version == "HTTP/1.1"
        async with client() as c2:  # HTTP/2 client → HTTP/1.1 node
            r = await c2.put(f"http://127.0.0.1:{sc.port}/kv/y", content=b"w" * 100_000, headers=KEY)
            assert r.status_code == 200 and r.http_version == "HTTP/2"
            assert r.json()["len"] == 100_000 and {k.lower(): v for k, v in r.json()["headers"].items()}["x-partition"] == "t1"
            r = await c2.get(f"http://127.0.0.1:{sc.port}/big?size=3000000", headers=KEY)
            assert r.status_code == 200 and len(r.content) == 3_000_000


@pytest.mark.parametrize("size", [1, 65_535, 65_536, 1_000_003, 8 << 20])
async def test_h2c_bodies_both_ways(h2placement, h2nodes, size):
    a, _ = h2nodes
    body = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    async with running_sidecar(config(h2placement)) as sc, client() as c:
        r = await c.post(f"http://127.0.0.1:{sc.port}/echo", content=body, headers=KEY)
        assert r.status_code == 200
        assert r.json() == {"node": "a", "len": size, "sha": hashlib.sha256(body).hexdigest()}
        r = await c.get(f"http://127.0.0.1:{sc.port}/big?size={size}", headers=KEY)
        assert r.status_code == 200 and len(r.content) == size


async def test_trailers_pass_through(h2placement, h2nodes):
    import h2.connection
    import h2.events

    async with running_sidecar(config(h2placement)) as sc:
        reader, writer = await asyncio.open_connection("127.0.0.1", sc.port)
        conn = h2.connection.H2Connection()
        conn.initiate_connection()
        conn.send_headers(1, [(":method", "POST"), (":path", "/echo"), (":authority", "x"), (":scheme", "http"),
                              ("x-partition-key", "t1"), ("te", "trailers")])
        conn.send_data(1, b"abc")
        conn.send_headers(1, [("x-req-trailer", "1")], end_stream=True)
        writer.write(conn.data_to_send())
        trailers = None
        while trailers is None:
            data = await asyncio.wait_for(reader.read(65536), 10)
            assert data
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.TrailersReceived):
                    trailers = dict(ev.headers)
            writer.write(conn.data_to_send())
        assert trailers[b"x-trailer"] == b"t-a"
        assert h2nodes[0].seen[-1]["headers"]["te"] == "trailers"
        writer.close()


async def test_many_concurrent_streams_on_one_connection(h2placement, h2nodes):
    a, b = h2nodes
    async with running_sidecar(config(h2placement)) as sc, client() as c:
        async def one(i: int) -> None:
            key = {"x-partition-key": "t1" if i % 2 else "t2"}
            r = await c.post(f"http://127.0.0.1:{sc.port}/echo", content=b"x" * i, headers=key)
            assert r.status_code == 200 and r.json()["len"] == i

        await asyncio.gather(*(one(i) for i in range(300)))
        assert len(a.seen) + len(b.seen) == 300
        assert sc.tracker.count() == 0
        # multiplexed: ≤ 150 streams per node at once, the node allows 100 per connection
        assert 1 <= a.conns <= 2 and 1 <= b.conns <= 2


async def test_client_reset_mid_body_cancels_upstream_stream_and_ends_inflight(h2placement, h2nodes):
    import h2.connection
    import h2.events

    a, _ = h2nodes
    async with running_sidecar(config(h2placement)) as sc:
        reader, writer = await asyncio.open_connection("127.0.0.1", sc.port)
        conn = h2.connection.H2Connection()
        conn.initiate_connection()
        conn.send_headers(1, [(":method", "POST"), (":path", "/echo"), (":authority", "x"), (":scheme", "http"),
                              ("x-partition-key", "t1")])
        conn.send_data(1, b"q" * 16000)
        writer.write(conn.data_to_send())
        await until(lambda: sc.tracker.count() == 1)
        conn.reset_stream(1)
        writer.write(conn.data_to_send())
        await until(lambda: sc.tracker.count() == 0)
        await until(lambda: any(s.get("reset") for s in a.seen))
        # the connection still serves the next stream
        conn.send_headers(3, [(":method", "GET"), (":path", "/echo"), (":authority", "x"), (":scheme", "http"),
                              ("x-partition-key", "t1")], end_stream=True)
        writer.write(conn.data_to_send())
        ended = False
        while not ended:
            data = await asyncio.wait_for(reader.read(65536), 10)
            assert data
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.StreamEnded) and ev.stream_id == 3:
                    ended = True
            writer.write(conn.data_to_send())
        writer.close()


async def test_proxy_problems_over_h2(h2placement):
    async with running_sidecar(config(h2placement)) as sc, client() as c:
        r = await c.put(f"http://127.0.0.1:{sc.port}/echo", content=b"v")
        assert r.status_code == 400 and r.json()["type"].endswith("bad-partition-key")
        r = await c.put(f"http://127.0.0.1:{sc.port}/echo", content=b"v", headers={"x-partition-key": "nope"})
        assert r.status_code == 404


@pytest.mark.slow
async def test_100_mib_both_ways_rss_bounded(h2placement, h2nodes):
    """(slow) 100 MiB up and 100 MiB down through one stream each; the process's RSS
    grows by far less than the bodies (everything streams under flow control)."""
    import resource

    size = 100 << 20
    block = b"b" * (1 << 20)

    async def body():
        for _ in range(size // len(block)):
            yield block

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    async with running_sidecar(config(h2placement)) as sc, client() as c:
        r = await c.post(f"http://127.0.0.1:{sc.port}/echo", content=body(), headers=KEY)
        assert r.json()["len"] == size
        n = 0
        async with c.stream("GET", f"http://127.0.0.1:{sc.port}/big?size={size}", headers=KEY) as r:
            async for chunk in r.aiter_raw():
                n += len(chunk)
        assert n == size
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    assert grown_mib < 48, grown_mib


@pytest.mark.parametrize("size", [0, 10, 3_000_000])
async def test_http11_client_to_h2c_node(h2placement, h2nodes, size):
    a, _ = h2nodes
    body = b"q" * size
    async with running_sidecar(config(h2placement)) as sc, httpx.AsyncClient(timeout=30) as c:
        for _ in range(3):  # keep-alive: the bridge is pooled and reused
            r = await c.put(f"http://127.0.0.1:{sc.port}/echo", content=body, headers=KEY)
            assert r.status_code == 200 and r.http_version == "HTTP/1.1"
            assert r.json() == {"node": "a", "len": size, "sha": hashlib.sha256(body).hexdigest()}
        seen = a.seen[-1]["headers"]
        assert seen["x-partition"] == "t1" and seen["x-placement"] == "a" and seen[":method"] == "PUT"
        r = await c.get(f"http://127.0.0.1:{sc.port}/big?size=2500000", headers=KEY)
        assert r.status_code == 200 and len(r.content) == 2_500_000
        assert sc.tracker.count() == 0


async def test_a_stalled_stream_does_not_stall_its_neighbours(h2placement, h2nodes):
    """Stream 1's reader never hands its window back; stream 3 on the same client connection (and
    the same upstream connection) still completes. Stream 1 stays bounded by its windows."""
    import h2.connection
    import h2.events

    a, _ = h2nodes
    async with running_sidecar(config(h2placement)) as sc:
        reader, writer = await asyncio.open_connection("127.0.0.1", sc.port)
        conn = h2.connection.H2Connection()
        conn.initiate_connection()
        conn.increment_flow_control_window(64 << 20)
        for sid, size in ((1, 64 << 20), (3, 4 << 20)):
            conn.send_headers(sid, [(":method", "GET"), (":path", f"/big?size={size}"), (":authority", "x"),
                                    (":scheme", "http"), ("x-partition-key", "t1")], end_stream=True)
        writer.write(conn.data_to_send())
        got = {1: 0, 3: 0}
        done3 = False
        while not done3:
            data = await asyncio.wait_for(reader.read(1 << 16), 10)
            assert data
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.DataReceived):
                    got[ev.stream_id] += len(ev.data)
                    # the connection window is always handed back; stream 1's own window never
                    conn.increment_flow_control_window(ev.flow_controlled_length)
                    if ev.stream_id == 3:
                        conn.acknowledge_received_data(ev.flow_controlled_length, 3)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == 3:
                    done3 = True
            writer.write(conn.data_to_send())
        assert got[3] == 4 << 20
        assert got[1] <= 65535  # the client's stream window
        sconn = next(c for c in sc.ctx.clients if getattr(c, "streams", None))
        assert sconn.queued(1) <= sc.cfg.h2_window  # what the sidecar holds for it: its window, not 64 MiB
        assert a.conns == 1  # both streams shared one upstream connection
        writer.close()


@pytest.mark.parametrize("path", ["/_epochgate/import?partition=t1", "/x/../_epochgate/export?partition=t1",
                                  "/%5Fepochgate/delta?partition=t1&since=0"])
async def test_h2_streams_never_reach_the_mover_hooks(h2placement, h2nodes, path):
    """HTTP/2 gets the HTTP/1.1 path's refusal of the hook prefix (DESIGN §6): any
    spelling is a 404 from the sidecar, and no node sees the stream."""
    a, b = h2nodes
    async with running_sidecar(config(h2placement)) as sc, client() as c:
        r = await c.post(f"http://127.0.0.1:{sc.port}{path}", content=b'{"key":"k","value":"v"}\n', headers=KEY)
        assert r.status_code == 404 and r.http_version == "HTTP/2"
        r = await c.put(f"http://127.0.0.1:{sc.port}/echo", content=b"ok", headers=KEY)   # the stream after it is served
        assert r.status_code == 200
        assert [s["headers"][":path"] for s in a.seen] == ["/echo"] and not b.seen


async def test_h2_rules_see_the_normalised_path(h2placement, h2nodes):
    """`/echo/../echo` and `/%65cho` reach the node as `/echo` (one target for rules and upstream)."""
    a, _ = h2nodes
    async with running_sidecar(config(h2placement)) as sc, client() as c:
        for p in ("/x/../echo", "/%65cho"):
            r = await c.put(f"http://127.0.0.1:{sc.port}{p}", content=b"v", headers=KEY)
            assert r.status_code == 200, p
        assert [s["headers"][":path"] for s in a.seen] == ["/echo", "/echo"]
