"""The sidecar as a transparent reverse proxy, against a real upstream server."""

from __future__ import annotations

import hashlib
import json

import aiohttp
import pytest

from tests._sidecar_util import Upstream, config, free_port, raw_request, running_sidecar, write_placement

KEY = {"X-Partition-Key": "t1"}


@pytest.fixture
async def upstream():
    up = await Upstream("a").start()
    yield up
    await up.stop()


@pytest.fixture
async def sidecar(upstream, tmp_path):
    p = write_placement(tmp_path / "p.toml", {"a": upstream.url}, {"t1": "a", "t2": "a"})
    async with running_sidecar(config(p, read_timeout=1.0, partition_from=("header:X-Partition-Key",
                                                                          "query:tenant"))) as sc:
        yield sc


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


def url(sc, path="/kv/x"):
    return f"http://127.0.0.1:{sc.port}{path}"


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_methods_round_trip(sidecar, upstream, session, method):
    async with session.request(method, url(sidecar, "/kv/a?q=1"), headers=KEY, data=b"body" if method in (
            "POST", "PUT", "PATCH") else None) as r:
        assert r.status == 200
        doc = await r.json()
    assert doc["method"] == method and doc["path"] == "/kv/a?q=1"
    assert doc["len"] == (4 if method in ("POST", "PUT", "PATCH") else 0)
    assert doc["headers"]["X-Partition"] == "t1" and doc["headers"]["X-Placement"] == "a"


@pytest.mark.parametrize("status", [201, 404, 500, 204, 304])
async def test_status_codes_pass_through(sidecar, session, status):
    async with session.get(url(sidecar, f"/kv/s?status={status}"), headers=KEY) as r:
        assert r.status == status
        body = await r.read()
    assert (body == b"") == (status in (204, 304))


async def test_head_request(sidecar, session):
    for _ in range(2):  # twice: the connection after a HEAD must still work
        async with session.head(url(sidecar), headers=KEY) as r:
            assert r.status == 200
            assert int(r.headers["Content-Length"]) > 0
            assert await r.read() == b""


async def test_headers_hop_by_hop_and_tracing(sidecar, session):
    hdrs = {**KEY, "Connection": "keep-alive, X-Drop-Me", "X-Drop-Me": "1", "Keep-Alive": "timeout=5",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "X-App": "kept",
            "X-Forwarded-For": "10.0.0.9", "TE": "trailers"}
    async with session.get(url(sidecar), headers=hdrs) as r:
        doc = await r.json()
        assert r.headers["X-Custom"] == "v"
        assert "X-Hop" not in r.headers  # listed in the upstream's Connection header
    h = doc["headers"]
    assert "X-Drop-Me" not in h and "Keep-Alive" not in h and "TE" not in h
    assert h["traceparent"] == hdrs["traceparent"] and h["X-App"] == "kept"
    assert h["X-Forwarded-For"] == "10.0.0.9, 127.0.0.1"
    assert h["X-Forwarded-Proto"] == "http" and h["X-Forwarded-Host"] == f"127.0.0.1:{sidecar.port}"
    low = {k.lower(): v for k, v in h.items()}
    assert low["x-request-id"]
    async with session.get(url(sidecar), headers={**KEY, "X-Request-Id": "mine-1"}) as r:
        low = {k.lower(): v for k, v in (await r.json())["headers"].items()}
    assert low["x-request-id"] == "mine-1"


async def test_forged_placement_headers_ignored(sidecar, session):
    forged = {**KEY, "X-Placement-Epoch": "999", "X-Placement": "evil", "X-Partition": "t2", "X-Placement-X": "1"}
    async with session.post(url(sidecar), headers=forged, data=b"v") as r:
        assert r.status == 200
        h = (await r.json())["headers"]
    epoch = sidecar.table.state("t1")[1]
    assert h["X-Placement-Epoch"] == str(int(epoch)) and h["X-Placement"] == "a" and h["X-Partition"] == "t1"
    assert "X-Placement-X" not in h


async def test_chunked_both_ways(sidecar, session):
    async def gen():
        for i in range(50):
            yield bytes([i % 256]) * 10000

    expected = hashlib.sha256(b"".join(bytes([i % 256]) * 10000 for i in range(50))).hexdigest()
    async with session.post(url(sidecar), headers=KEY, data=gen()) as r:
        doc = await r.json()
    assert doc["len"] == 500000 and doc["sha"] == expected
    async with session.get(url(sidecar, "/big?size=3000000&chunked=1"), headers=KEY) as r:
        assert r.headers.get("Transfer-Encoding") == "chunked"
        assert len(await r.read()) == 3000000


async def test_large_bodies_streamed(sidecar, session):
    size = 20 * 1024 * 1024

    async def gen():
        block = b"y" * (1 << 20)
        for _ in range(20):
            yield block

    async with session.put(url(sidecar), headers={**KEY, "Content-Length": str(size)}, data=gen()) as r:
        doc = await r.json()
    assert doc["len"] == size
    async with session.get(url(sidecar, f"/big?size={size}"), headers=KEY) as r:
        n = 0
        async for chunk in r.content.iter_chunked(1 << 16):
            n += len(chunk)
    assert n == size


async def test_websocket_echo(sidecar, session):
    async with session.ws_connect(url(sidecar, "/ws"), headers=KEY) as ws:
        await ws.send_str("hi")
        assert (await ws.receive()).data == "echo:hi"
        await ws.send_bytes(b"\x00\x01" * 1000)
        assert (await ws.receive()).data == b"\x00\x01" * 1000


async def test_read_timeout_is_504(sidecar, session):
    async with session.get(url(sidecar, "/slow?s=3"), headers=KEY) as r:
        assert r.status == 504
        doc = await r.json(content_type=None)
        assert r.headers["Content-Type"] == "application/problem+json"
    assert doc["type"].endswith("upstream-timeout")


async def test_unreachable_upstream_is_502(upstream, tmp_path, session):
    p = write_placement(tmp_path / "p.toml", {"a": f"http://127.0.0.1:{free_port()}"}, {"t1": "a"})
    async with running_sidecar(config(p)) as sc:
        async with session.post(url(sc), headers=KEY, data=b"x") as r:
            assert r.status == 502
            assert (await r.json(content_type=None))["type"].endswith("upstream-unavailable")
        assert sc.tracker.count() == 0  # the admitted write no longer counts as in flight


async def test_keepalive_reuse_and_http10(sidecar, upstream):
    req = b"GET /kv/1 HTTP/1.1\r\nHost: x\r\nX-Partition-Key: t1\r\n\r\n"
    last = req.replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n")
    out = await raw_request(sidecar.port, req * 2 + last)
    assert out.count(b"HTTP/1.1 200 OK") == 3  # pipelined, answered in order
    out = await raw_request(sidecar.port, b"GET /kv/2 HTTP/1.0\r\nX-Partition-Key: t1\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and b"/kv/2" in out


async def test_expect_100_continue(sidecar):
    body = b"z" * 1000
    req = (b"POST /kv/e HTTP/1.1\r\nHost: x\r\nX-Partition-Key: t1\r\nExpect: 100-continue\r\n"
           b"Content-Length: 1000\r\nConnection: close\r\n\r\n")
    import asyncio

    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
    writer.write(req)
    first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert first.startswith(b"HTTP/1.1 100 Continue")
    writer.write(body)
    rest = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert b"200 OK" in rest and b'"len": 1000' in rest


@pytest.mark.parametrize("head, status", [
    (b"POST /kv/x HTTP/1.1\r\nHost: x\r\nX-Partition-Key: t1\r\nContent-Length: 5\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST /kv/x HTTP/1.1\r\nHost: x\r\nX-Partition-Key: t1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
     b"hello!", 400),
    (b"POST /kv/x HTTP/1.1\r\nHost: x\r\nX-Partition-Key: t1\r\nTransfer-Encoding: gzip\r\n\r\nabc", 400),
    (b"GET /kv/x HTTP/1.1\r\nHost: x\r\nX-Partition-Key: t1\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n", 431),
])
async def test_smuggling_and_oversized_heads_refused(sidecar, upstream, head, status):
    out = await raw_request(sidecar.port, head)
    assert out.startswith(b"HTTP/1.1 %d" % status), out[:200]
    assert b"Connection: close" in out
    assert upstream.seen == []  # nothing reached the application


@pytest.mark.parametrize("hdrs, path, title", [
    ({}, "/kv/x", "missing partition key"),
    ({"X-Partition-Key": "a/b"}, "/kv/x", "invalid partition key"),
    ({"X-Partition-Key": "t1"}, "/kv/x?tenant=t2", "conflicting partition keys"),
])
async def test_malformed_keys_are_400(sidecar, upstream, session, hdrs, path, title):
    async with session.post(url(sidecar, path), headers=hdrs, data=b"v") as r:
        assert r.status == 400
        doc = await r.json(content_type=None)
    assert doc["title"] == title and doc["type"].endswith("bad-partition-key") and doc["rule"]
    assert upstream.seen == []


async def test_same_key_from_two_rules_is_fine(sidecar, session):
    async with session.get(url(sidecar, "/kv/x?tenant=t1"), headers=KEY) as r:
        assert r.status == 200


async def test_unknown_partition_problem(sidecar, session):
    async with session.get(url(sidecar), headers={"X-Partition-Key": "nope"}) as r:
        assert r.status == 404
        doc = await r.json(content_type=None)
    assert doc["partition"] == "nope" and doc["reason"] == "unknown_partition"


async def test_metrics_count_requests(sidecar, session):
    async with session.get(url(sidecar), headers=KEY) as r:
        await r.read()
    async with session.get(f"http://127.0.0.1:{sidecar.admin_port}/metrics") as r:
        text = await r.text()
    line = [l for l in text.splitlines()
            if l.startswith('epochgate_requests_total{kind="read",outcome="ok",phase="active"}')]
    assert line and float(line[0].split()[-1]) >= 1
    assert 'epochgate_gate_decisions_total{decision="reject",phase="cutover",reason="cutover"} 0.0' in text
    assert json.loads(json.dumps(text.count("epochgate_request_duration_seconds_bucket"))) > 0
