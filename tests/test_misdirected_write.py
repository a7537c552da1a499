"""A write stamped for another node (``X-Placement`` names it) is refused 421 where the
application knows its node name, before anything commits (a swapped placement URL or a
node bound to another's port must not commit writes on the wrong node).

Loopback only (aiohttp's test server, a grpc.aio server); no sidecar, no Consul.
"""

from __future__ import annotations

import json

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import gate
from examples.kv import build_app
from examples.kv._app import STORE_KEY
from gate import ADMIT, MisdirectedWrite, MoverAuth, aiohttp_middleware, current_guard, misdirected_problem
from gate._guard import request_guard
from sidecar.proxy import httpmsg as H
from tests._appgate_apps import GRPC_PUT, KV, start_grpc_app


class CountingAdmitter:
    def __init__(self) -> None:
        self.admits = 0

    def admit(self, partition, epoch):
        self.admits += 1
        return ADMIT


def stamp(partition: str, epoch: int, placement: str | None) -> dict[str, str]:
    h = {"X-Partition": partition, "X-Placement-Epoch": str(epoch)}
    if placement is not None:
        h["X-Placement"] = placement
    return h


def test_misdirected_write_is_in_the_one_tree_and_not_the_retryable_problem():
    assert issubclass(MisdirectedWrite, gate.EpochgateError)
    doc = misdirected_problem("t1", "c", "a")
    assert doc.status == 421 and doc.body["placement"] == "c" and doc.body["node"] == "a"
    assert doc.body["type"].endswith("misdirected-write") and "'c'" in doc.body["detail"] and "'a'" in doc.body["detail"]
    # what the sidecar retries is only the stale-epoch problem: a 421 is relayed to the client
    ctype = doc.headers["Content-Type"]
    assert not gate.is_stale_epoch_problem(doc.status, ctype, doc.encode())
    assert not H.is_stale_epoch_problem(doc.status, ctype.encode(), doc.encode())


def test_request_guard_checks_the_placement_only_when_the_node_is_configured():
    adm = CountingAdmitter()
    with pytest.raises(MisdirectedWrite) as ei:
        request_guard(adm, True, "t1", "3", node="a", placement=b"c")
    assert (ei.value.partition, ei.value.placement, ei.value.node) == ("t1", "c", "a")
    assert request_guard(adm, True, "t1", "3", node="a", placement="a").partition == "t1"
    assert request_guard(adm, True, "t1", "3", placement="c").partition == "t1"       # no node configured
    assert request_guard(adm, True, "t1", "3", node="a").partition == "t1"            # no X-Placement
    assert request_guard(adm, False, "t1", "3", node="a", placement="c").stamp is not None  # reads are not gated
    assert adm.admits == 0


@pytest.fixture
async def kv(tmp_path):
    adm = CountingAdmitter()
    app = build_app("a", tmp_path / "a", adm, mover_auth=MoverAuth("tok"))
    async with TestClient(TestServer(app)) as client:
        yield client, app, adm, tmp_path / "a" / "commits.jsonl"


async def test_kv_refuses_a_write_stamped_for_another_node_and_commits_nothing(kv):
    client, app, adm, log = kv
    store = app[STORE_KEY]
    resp = await client.put("/kv/k1", data=b"v1", headers=stamp("t1", 3, "c"))
    assert resp.status == 421
    assert resp.content_type == "application/problem+json"
    body = json.loads(await resp.read())
    assert body["type"].endswith("misdirected-write") and body["placement"] == "c" and body["node"] == "a"
    assert body["partition"] == "t1" and body["status"] == 421
    assert store.get("t1", "k1") is None      # not committed
    assert log.read_text() == ""              # nothing in the commit log
    assert adm.admits == 0                    # refused before the commit point was even reached


async def test_kv_commits_a_write_stamped_for_this_node(kv):
    client, app, adm, log = kv
    store = app[STORE_KEY]
    resp = await client.put("/kv/k1", data=b"v1", headers=stamp("t1", 3, "a"))
    assert resp.status == 200, await resp.text()
    assert store.get("t1", "k1") == "v1" and adm.admits == 1
    assert [json.loads(x)["node"] for x in log.read_text().splitlines()] == ["a"]


async def test_kv_stamp_without_x_placement_commits_as_before(kv):
    client, app, adm, _ = kv
    store = app[STORE_KEY]
    resp = await client.put("/kv/k2", data=b"v2", headers=stamp("t1", 3, None))
    assert resp.status == 200 and store.get("t1", "k2") == "v2"


async def test_kv_reads_are_not_refused(kv):
    client, _, _, _ = kv
    await client.put("/kv/k3", data=b"v3", headers=stamp("t1", 3, "a"))
    resp = await client.get("/kv/k3", headers=stamp("t1", 3, "c"))
    assert resp.status == 200 and await resp.text() == "v3"


def _guarded_app(**mw: str) -> tuple[web.Application, list[str]]:
    """A PUT handler committing under the commit-point guard, behind the gate middleware."""
    committed: list[str] = []

    async def put(request: web.Request) -> web.Response:
        async with current_guard():
            committed.append(await request.text())
        return web.Response(text="ok")

    app = web.Application(middlewares=[aiohttp_middleware(CountingAdmitter(), **mw)])
    app.router.add_put("/x", put)
    return app, committed


async def test_middleware_without_a_node_name_is_unchanged():
    app, committed = _guarded_app()
    async with TestClient(TestServer(app)) as client:
        resp = await client.put("/x", data=b"v", headers=stamp("t1", 1, "someone-else"))
        assert resp.status == 200 and committed == ["v"]


async def test_middleware_with_a_node_name_refuses_before_the_handler():
    app, committed = _guarded_app(node="b")
    async with TestClient(TestServer(app)) as client:
        resp = await client.put("/x", data=b"v", headers=stamp("t1", 1, "c"))
        assert resp.status == 421 and committed == []
        resp = await client.put("/x", data=b"w", headers=stamp("t1", 1, "b"))
        assert resp.status == 200 and committed == ["w"]


async def _asgi_put(mw, headers: dict[str, str]) -> tuple[int, dict]:
    """One PUT through the ASGI middleware, socket-free: (status, problem body or {})."""
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"v", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "PUT", "path": "/x",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    await mw(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body) if sent[0]["status"] != 200 else {}


async def test_asgi_middleware_with_a_node_name_refuses_before_the_app():
    committed: list[str] = []

    async def app(scope, receive, send):
        async with current_guard():
            committed.append((await receive())["body"].decode())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    refusing = gate.AsgiGateMiddleware(app, admitter=CountingAdmitter(), node="b")
    status, doc = await _asgi_put(refusing, stamp("t1", 1, "c"))
    assert status == 421 and doc["placement"] == "c" and doc["node"] == "b" and committed == []
    assert (await _asgi_put(refusing, stamp("t1", 1, "b")))[0] == 200 and committed == ["v"]
    unnamed = gate.AsgiGateMiddleware(app, admitter=CountingAdmitter())  # no node name: unchanged
    assert (await _asgi_put(unnamed, stamp("t1", 1, "c")))[0] == 200 and committed == ["v", "v"]


async def _grpc_put(target: str, placement: str | None) -> tuple[object, str, dict[str, str]]:
    """One unary call to the KV app's Put over loopback: (status code, details, trailing metadata)."""
    import grpc

    async with grpc.aio.insecure_channel(target) as channel:
        metadata = tuple((k.lower(), v) for k, v in stamp("t1", 1, placement).items())
        call = channel.unary_unary(GRPC_PUT)(json.dumps({"key": "k", "value": "v"}).encode(), metadata=metadata)
        try:
            await call
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or "", dict(exc.trailing_metadata() or ())
        return await call.code(), "", {}


async def test_grpc_interceptor_with_a_node_name_refuses_before_the_handler(tmp_path):
    import grpc

    kv = KV(tmp_path / "kv.db")
    server, target = await start_grpc_app(kv, CountingAdmitter(), node="b")
    try:
        code, details, trailing = await _grpc_put(target, "c")
        # not ABORTED (what the sidecar retries): relayed as it is, and nothing committed
        assert code is grpc.StatusCode.FAILED_PRECONDITION, (code, details)
        doc = json.loads(details)
        assert doc["type"].endswith("misdirected-write") and doc["placement"] == "c" and doc["node"] == "b"
        assert trailing["x-epochgate-type"] == doc["type"] and trailing["x-placement"] == "c"
        assert trailing["x-epochgate-node"] == "b" and trailing["x-partition"] == "t1"
        assert kv.rows() == []
        assert (await _grpc_put(target, "b"))[0] is grpc.StatusCode.OK
        assert (await _grpc_put(target, None))[0] is grpc.StatusCode.OK  # a stamp without x-placement
        assert kv.rows() == [("t1", "k", "v"), ("t1", "k", "v")]
    finally:
        await server.stop(None)
        kv.close()


async def test_grpc_interceptor_without_a_node_name_is_unchanged(tmp_path):
    import grpc

    kv = KV(tmp_path / "kv.db")
    server, target = await start_grpc_app(kv, CountingAdmitter())
    try:
        assert (await _grpc_put(target, "c"))[0] is grpc.StatusCode.OK and kv.rows() == [("t1", "k", "v")]
    finally:
        await server.stop(None)
        kv.close()
