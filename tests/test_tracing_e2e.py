"""Traces of proxied requests, exported over OTLP/HTTP to a real receiver (issue 28).

The nodes are real aiohttp servers instrumented with the OpenTelemetry SDK: they
parse the ``traceparent`` the sidecar sent (the SDK's W3C propagator) and export
their own SERVER span to the same receiver, so "the node's span is the child of
the sidecar's CLIENT span" is checked on real spans from both sides.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.trace import SpanKind  # noqa: E402
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator  # noqa: E402

from tests._otlp_receiver import OtlpReceiver  # noqa: E402
from tests._sidecar_util import (  # noqa: E402, F401 (session is a fixture)
    KEY,
    Upstream,
    config,
    running_sidecar,
    session,
    until,
    write_placement,
    writes,
)

CLIENT_TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class TracedNode(Upstream):
    """The test's node: a span per request, child of the ``traceparent`` it received;
    refuses the first PUT to each path in ``refuse_once`` with the app's stale-epoch problem."""

    def __init__(self, name: str, endpoint: str) -> None:
        super().__init__(name)
        self.refuse_once: set[str] = set()
        self.tp_counts: dict[str, int] = {}  # path → traceparent headers received (one, never the client's too)
        self.provider = TracerProvider(resource=Resource.create({"service.name": f"node-{name}"}))
        self.provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint + "/v1/traces")))
        self.tracer = self.provider.get_tracer("test-node")

    async def echo(self, r: web.Request) -> web.StreamResponse:
        self.tp_counts[r.path] = len(r.headers.getall("traceparent", []))
        parent = TraceContextTextMapPropagator().extract(dict(r.headers))
        with self.tracer.start_as_current_span(f"node {r.method}", context=parent, kind=SpanKind.SERVER,
                                               attributes={"url.path": r.path}):
            if r.method == "PUT" and r.path in self.refuse_once:
                self.refuse_once.discard(r.path)
                await r.read()
                self.seen.append({"node": self.name, "method": r.method, "path": r.path, "stale": True,
                                  "headers": dict(r.headers)})
                body = {"type": "urn:epochgate:problem:stale-epoch", "title": "stale", "status": 503,
                        "partition": r.headers.get("X-Partition"), "reason": "stale_epoch"}
                return web.Response(status=503, body=json.dumps(body), content_type="application/problem+json")
            return await super().echo(r)


@pytest.fixture
def receiver():
    with OtlpReceiver() as rcv:
        yield rcv


@pytest.fixture
async def traced_nodes(receiver):
    a = await TracedNode("a", receiver.url).start()
    b = await TracedNode("b", receiver.url).start()
    yield a, b
    await a.stop()
    await b.stop()
    a.provider.shutdown()
    b.provider.shutdown()


def _placement(tmp_path, a, b):
    return write_placement(tmp_path / "p.toml", {"a": a.url, "b": b.url}, {"t1": "a", "t2": "b"})


async def _put(session, sc, path, headers=None, data=b"v"):
    async with session.put(f"http://127.0.0.1:{sc.port}{path}", data=data, headers={**KEY, **(headers or {})}) as r:
        return r.status, await r.read()


async def test_held_and_replayed_write_is_one_trace(traced_nodes, receiver, session, tmp_path):
    """Migrate t1 a→b under writes; one write is held through the cutover, then refused once
    by b (its replica is behind) and replayed: its trace has the SERVER span (child of the
    client's traceparent), the hold with the epoch it waited on, two CLIENT spans (the
    second with http.request.resend_count=1) and b's span as the child of the second."""
    a, b = traced_nodes
    cfg = config(_placement(tmp_path, a, b), hold_seconds=10, trace_otlp_endpoint=receiver.url,
                 trace_sample_ratio=1.0)
    async with running_sidecar(cfg) as sc:
        stop = asyncio.Event()

        async def background() -> int:
            n = 0
            while not stop.is_set():
                status, _ = await _put(session, sc, f"/kv/bg{n}")
                assert status == 200
                n += 1
            return n

        bg = asyncio.create_task(background())
        await until(lambda: len(writes(a)) >= 3)
        await sc.store.begin("t1", "b")
        e_cut = int(await sc.store.enter_cutover("t1"))
        held = asyncio.create_task(_put(session, sc, "/kv/held", {"traceparent": CLIENT_TP}, b"held-value"))
        await until(lambda: sc.ctx.hold.count >= 1 and any(r.head.url == b"/kv/held" for r in sc.ctx.hold._waiters.get("t1", ())))
        b.refuse_once.add("/kv/held")
        e_flip = int(await sc.store.complete("t1"))
        status, body = await held
        assert status == 200, body
        stop.set()
        assert await bg > 0
    # the sidecar's shutdown exported everything it recorded; the nodes export per span

    server = receiver.find(lambda s: s["kind"] == "SERVER" and s["attributes"].get("url.path") == "/kv/held"
                           and s["service"] == "epochgate-sidecar")
    assert len(server) == 1
    srv = server[0]
    tid = srv["trace_id"]
    assert tid == CLIENT_TP.split("-")[1] and srv["parent_span_id"] == CLIENT_TP.split("-")[2]
    at = srv["attributes"]
    assert at["http.request.method"] == "PUT" and at["http.response.status_code"] == 200
    assert at["epochgate.partition"] == "t1" and at["epochgate.placement"] == "b"
    assert at["epochgate.epoch"] == e_flip and at["epochgate.phase"] == "active" and at["epochgate.decision"] == "admit"
    assert at["epochgate.outcome"] == "held_ok"
    names = [e[0] for e in srv["events"]]
    assert "resolve" in names and "admit" in names
    trace = receiver.find(lambda s: s["trace_id"] == tid)
    mine = [s for s in trace if s["service"] == "epochgate-sidecar"]
    assert all(s["parent_span_id"] == srv["span_id"] for s in mine if s is not srv)
    holds = [s for s in mine if s["name"] == "hold"]
    assert holds[0]["attributes"]["epochgate.hold.epoch"] == e_cut  # waited out the cutover epoch
    assert holds[0]["attributes"]["epochgate.hold.woke_epoch"] == e_flip
    clients = sorted((s for s in mine if s["kind"] == "CLIENT"), key=lambda s: s["start"])
    assert len(clients) == 2
    first, replay = clients
    assert first["attributes"]["http.response.status_code"] == 503 and first["attributes"]["error.type"] == "503"
    assert "http.request.resend_count" not in first["attributes"]
    assert replay["attributes"]["http.request.resend_count"] == 1
    assert replay["attributes"]["http.response.status_code"] == 200 and "error.type" not in replay["attributes"]
    assert replay["attributes"]["epochgate.epoch"] == e_flip and replay["attributes"]["epochgate.node"] == "b"
    # b's own span, from the traceparent it got: the child of the replayed CLIENT span
    node_spans = receiver.wait(lambda s: s["service"] == "node-b" and s["trace_id"] == tid, n=2)
    assert sorted(s["parent_span_id"] for s in node_spans) == sorted([first["span_id"], replay["span_id"]])
    assert all(s["start"] >= srv["start"] and s["end"] <= srv["end"] for s in mine + node_spans)
    assert b.tp_counts["/kv/held"] == 1  # the client's traceparent was replaced, not added to


async def test_sampled_out_forwards_the_trace_context_unchanged(traced_nodes, receiver, session, tmp_path):
    """Ratio 0: a request with an unsampled parent (or none) is not traced and its headers go
    upstream as they came; a sampled parent is followed (parent-based)."""
    a, b = traced_nodes
    unsampled = "00-11111111111111111111111111111111-2222222222222222-00"
    sampled = "00-33333333333333333333333333333333-4444444444444444-01"
    cfg = config(_placement(tmp_path, a, b), trace_otlp_endpoint=receiver.url, trace_sample_ratio=0.0)
    async with running_sidecar(cfg) as sc:
        assert (await _put(session, sc, "/kv/u", {"traceparent": unsampled, "tracestate": "k=v"}))[0] == 200
        assert (await _put(session, sc, "/kv/none"))[0] == 200
        assert (await _put(session, sc, "/kv/s", {"traceparent": sampled, "tracestate": "k=v"}))[0] == 200
        # the sampled write's trace id is an exemplar of its latency bucket, in the OpenMetrics exposition
        await until(lambda: sc.ctx.tracer.builder.spans >= 2)
        admin = f"http://127.0.0.1:{sc.admin_port}/metrics"
        async with session.get(admin, headers={"Accept": "application/openmetrics-text; version=1.0.0"}) as r:
            assert r.headers["Content-Type"].startswith("application/openmetrics-text")
            om = await r.text()
        async with session.get(admin) as r:
            assert r.headers["Content-Type"].startswith("text/plain")
            assert "# {" not in await r.text()   # the Prometheus text format has no exemplars
        lines = [x for x in om.splitlines() if x.startswith("epochgate_request_duration_seconds_bucket{")
                 and 'kind="write"' in x and 'stage="total"' in x and "# {" in x]
        assert len(lines) == 1 and f'trace_id="{"3" * 32}"' in lines[0]
    seen = {w["path"]: w["headers"] for w in writes(a)}
    assert seen["/kv/u"]["traceparent"] == unsampled and seen["/kv/u"]["tracestate"] == "k=v"
    assert "traceparent" not in seen["/kv/none"]
    tp = seen["/kv/s"]["traceparent"].split("-")
    assert tp[1] == "3" * 32 and tp[2] != "4" * 16 and tp[3] == "01" and seen["/kv/s"]["tracestate"] == "k=v"
    mine = receiver.find(lambda s: s["service"] == "epochgate-sidecar")
    assert {s["trace_id"] for s in mine} == {"3" * 32}  # shutdown exported all: nothing from the other two
    client = [s for s in mine if s["kind"] == "CLIENT"]
    assert len(client) == 1 and client[0]["span_id"] == tp[2]
    assert a.tp_counts == {"/kv/u": 1, "/kv/none": 0, "/kv/s": 1}


@pytest.mark.parametrize("ctype", ["application/octet-stream", "application/grpc"])
async def test_http2_and_grpc_streams_are_traced_alike(receiver, tmp_path, ctype):
    """An HTTP/2 stream (and a gRPC one) gets the same SERVER/CLIENT pair; the h2c node receives
    the CLIENT span's id in its traceparent in place of the client's."""
    import httpx

    from tests._h2_util import H2Upstream

    a = await H2Upstream("a").start()
    try:
        placement = write_placement(tmp_path / "p.toml", {"a": a.url}, {"t1": "a"})
        cfg = config(placement, trace_otlp_endpoint=receiver.url, trace_sample_ratio=1.0)
        async with running_sidecar(cfg) as sc, httpx.AsyncClient(http1=False, http2=True, timeout=30) as c:
            r = await c.put(f"http://127.0.0.1:{sc.port}/echo", content=b"hello",
                            headers={"x-partition-key": "t1", "traceparent": CLIENT_TP, "content-type": ctype})
            assert r.status_code == 200 and r.http_version == "HTTP/2"
    finally:
        await a.stop()
    sent = a.seen[-1]["headers"]["traceparent"].split("-")
    tid = CLIENT_TP.split("-")[1]
    assert sent[1] == tid
    spans = receiver.find(lambda s: s["trace_id"] == tid)
    srv = [s for s in spans if s["kind"] == "SERVER"]
    cli = [s for s in spans if s["kind"] == "CLIENT"]
    assert len(srv) == 1 and len(cli) == 1
    assert srv[0]["attributes"]["network.protocol.version"] == "2"
    assert srv[0]["attributes"]["epochgate.decision"] == "admit" and srv[0]["attributes"]["epochgate.placement"] == "a"
    assert ("rpc.system" in srv[0]["attributes"]) == (ctype == "application/grpc")
    assert cli[0]["span_id"] == sent[2] and cli[0]["parent_span_id"] == srv[0]["span_id"]
