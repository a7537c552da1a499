"""The data path's exchange driven through fake transports (tests/_fake_transport.py):
no socket, no port, no sleep. Each scenario walks one life-cycle path of
``_exchange.Request``: forward, hold → wake → retry, resolve-again on a stale
admit, the application's stale-epoch refusal replayed with its body, the
pooled-connection retry, a client gone while held, the tunnel, pipelining,
back-pressure, timeouts, broken upstreams, hold expiry and every refusal.

``test_every_exchange_step_is_exercised`` runs all scenarios again while
counting calls of every method of ``Request`` (and its response half) and
fails when one is never reached: a new step of the exchange needs a scenario.
"""

from __future__ import annotations

import inspect
import json
from typing import Awaitable, Callable

import pytest

from gate import PlacementTable, RejectReason
from sidecar.proxy.exchange import Request
from sidecar.proxy.response import ResponseMixin
from tests._fake_transport import Harness, header, request, response, settle, status_of

STALE = json.dumps({"type": "urn:epochgate:problem:stale-epoch", "title": "stale epoch", "status": 503,
                    "partition": "t1", "reason": "stale_epoch"}).encode()
OTHER_503 = json.dumps({"type": "urn:example:maintenance", "title": "down for maintenance", "status": 503}).encode()

Scenario = Callable[[Harness], Awaitable[None]]
SCENARIOS: dict[str, Scenario] = {}


def scenario(fn: Scenario) -> Scenario:
    SCENARIOS[fn.__name__] = fn
    return fn


def problem(raw: bytes) -> dict:
    return json.loads(raw.split(b"\r\n\r\n", 1)[1])


def epoch_of(h: Harness) -> str:
    return str(int(h.source.get("t1").epoch))


def cutover(table: PlacementTable) -> None:
    table.begin_migration("t1", "b")
    table.enter_cutover("t1")


@scenario
async def read_is_stamped_forwarded_and_pooled(h: Harness) -> None:
    c = h.client()
    c.send(request("GET", extra="X-Placement: evil\r\nX-Partition: evil\r\n"))
    await settle()
    [up] = h.upstreams("a")
    sent = up.take()
    assert sent.startswith(b"GET /kv/k HTTP/1.1\r\nHost: 10.0.0.1:8001\r\n")
    assert header(sent, "X-Partition") == "t1" and header(sent, "X-Placement") == "a"
    assert header(sent, "X-Placement-Epoch") == epoch_of(h) and b"evil" not in sent
    up.reply(response(200, b"hello"))
    out = c.take()
    assert status_of(out) == 200 and out.endswith(b"hello")
    assert h.pool.idle[up.node] == [up.conn]          # kept alive for the next request
    assert h.outcome("read", "ok") == 1


@scenario
async def http10_keep_alive_client_gets_http10_framing(h: Harness) -> None:
    # An HTTP/1.0 client asking to keep the connection: the head is answered as 1.0's (the
    # connection keeps only by saying so, a body of unknown length ends by closing). llhttp
    # keeps a 1.0 request alive here as it would a 1.1 one, so this is the case where the
    # client connection must still ask the parser for the version (issue 30, ClientConn).
    c = h.client()
    c.send(b"GET /kv/k HTTP/1.0\r\nHost: s\r\nX-Partition-Key: t1\r\nConnection: keep-alive\r\n\r\n")
    await settle()
    [up] = h.upstreams("a")
    up.take()
    up.reply(response(200, b"hello"))
    out = c.take()
    assert status_of(out) == 200 and b"\r\nConnection: keep-alive\r\n" in out.split(b"\r\n\r\n")[0] + b"\r\n"
    c.send(b"GET /kv/k HTTP/1.0\r\nHost: s\r\nX-Partition-Key: t1\r\nConnection: keep-alive\r\n\r\n")
    await settle()
    up.take()
    up.reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    out = c.take()
    assert status_of(out) == 200 and b"chunked" not in out and out.endswith(b"hello")
    assert c.transport.closing                       # delimited by closing: 1.0 has no chunked coding


@scenario
async def write_is_in_flight_until_its_response_ends(h: Harness) -> None:
    c = h.client()
    c.send(request("PUT", body=b"v1"))
    await settle()
    [up] = h.upstreams("a")
    assert up.take().endswith(b"\r\n\r\nv1")
    assert h.tracker.count("t1") == 1                 # the cutover ack would wait for it
    up.reply(response(204, b""))
    assert status_of(c.take()) == 204 and h.tracker.count() == 0


@scenario
async def body_arriving_before_the_upstream_is_connected_is_sent_after_the_head(h: Harness) -> None:
    c = h.client()
    c.send(b"POST /kv/k HTTP/1.1\r\nHost: s\r\nX-Partition-Key: t1\r\nTransfer-Encoding: chunked\r\n\r\n")
    c.send(b"5\r\nhello\r\n")
    c.send(b"0\r\n\r\n")
    await settle()
    sent = h.upstreams("a")[0].take()
    assert header(sent, "Transfer-Encoding") == "chunked" and sent.endswith(b"5\r\nhello\r\n0\r\n\r\n")
    h.upstreams("a")[0].reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
    out = c.take()
    assert status_of(out) == 200 and out.endswith(b"2\r\nok\r\n0\r\n\r\n")


@scenario
async def cutover_holds_the_write_then_the_flip_wakes_it_to_the_new_owner(h: Harness) -> None:
    cutover(h.source)
    c = h.client()
    c.send(request("PUT", body=b"v1"))
    await settle()
    assert all(u.take() == b"" for u in h.pool.opened)   # connected, but nothing was forwarded
    assert h.ctx.hold.count == 1 and not c.transport.reading and c.take() == b""
    h.source.complete_migration("t1")
    await settle()
    [up] = h.upstreams("b")
    sent = up.take()
    assert header(sent, "X-Placement") == "b" and header(sent, "X-Placement-Epoch") == epoch_of(h)
    assert sent.endswith(b"v1") and h.ctx.hold.count == 0
    up.reply(response(200))
    assert status_of(c.take()) == 200 and h.outcome("write", "held_ok") == 1


@scenario
async def transition_between_resolve_and_admit_is_resolved_again(h: Harness) -> None:
    class MovesOnce(PlacementTable):
        moved = False

        def admit_write(self, partition, epoch):
            if not self.moved:           # a transition lands right after route() resolved
                self.moved = True
                self.set("t1", "b")
            return super().admit_write(partition, epoch)

    h2 = Harness(MovesOnce({"t1": "a"}))
    try:
        c = h2.client()
        c.send(request("PUT", body=b"v"))
        await settle()
        sent = h2.upstreams("b")[-1].take()
        assert header(sent, "X-Placement") == "b" and sent.endswith(b"v")
        assert all(u.take() == b"" for u in h2.upstreams("a"))
    finally:
        h2.close()


@scenario
async def applications_stale_epoch_refusal_is_replayed_with_its_body(h: Harness) -> None:
    c = h.client()
    c.send(request("PUT", body=b"payload"))
    await settle()
    [up] = h.upstreams("a")
    assert up.take().endswith(b"payload")
    h.source.begin_migration("t1", "b")                # the app saw the move first and refused
    up.reply(response(503, STALE, ctype="application/problem+json"))
    await settle()
    assert c.take() == b""                              # the client never sees the refusal
    again = b"".join(u.take() for u in h.upstreams("a"))
    assert again.endswith(b"payload") and header(again, "X-Placement-Epoch") == epoch_of(h)
    h.upstreams("a")[-1].reply(response(201))
    assert status_of(c.take()) == 201 and h.tracker.count() == 0


@scenario
async def another_503_problem_from_the_application_is_relayed(h: Harness) -> None:
    c = h.client()
    c.send(request("PUT", body=b"x"))
    await settle()
    h.upstreams("a")[0].reply(response(503, OTHER_503, ctype="application/problem+json"))
    out = c.take()
    assert status_of(out) == 503 and problem(out)["type"] == "urn:example:maintenance"


@scenario
async def pooled_connection_closed_before_answering_is_retried_on_a_fresh_one(h: Harness) -> None:
    c = h.client()
    c.send(request("GET"))
    await settle()
    [first] = h.upstreams("a")
    first.take()
    first.reply(response(200))
    c.take()
    c.send(request("GET"))                              # goes out on the pooled connection
    await settle()
    assert first.take().startswith(b"GET ")
    first.drop()                                        # the node had closed it meanwhile
    await settle()
    fresh = h.upstreams("a")[-1]
    assert fresh is not first and fresh.take().startswith(b"GET ")
    fresh.reply(response(200, b"second"))
    assert c.take().endswith(b"second")


@scenario
async def held_write_whose_client_has_gone_is_never_sent(h: Harness) -> None:
    cutover(h.source)
    c = h.client()
    c.send(request("PUT", body=b"v"))
    await settle()
    assert h.ctx.hold.count == 1
    c.vanish()
    h.source.complete_migration("t1")
    await settle()
    assert all(u.take() == b"" for u in h.pool.opened)
    assert c.transport.aborted and h.ctx.hold.count == 0 and h.tracker.count() == 0


@scenario
async def hold_expiry_answers_the_current_state(h: Harness) -> None:
    cutover(h.source)
    c = h.client()
    c.send(request("PUT", body=b"v"))
    await settle()
    [req] = h.ctx.hold._waiters["t1"]
    assert repr(req).startswith("<Request HELD PUT '/kv/k'")   # the life-cycle state (_exstate) shows
    req.hold_timer.cancel()                             # the hold's own timer, fired now
    h.ctx.hold.release(req)
    req.hold_expired()
    out = c.take()
    assert status_of(out) == 503 and problem(out)["reason"] == "cutover" and problem(out)["phase"] == "cutover"


@scenario
async def upgrade_becomes_a_byte_tunnel(h: Harness) -> None:
    c = h.client()
    c.send(request("GET", extra="Connection: upgrade\r\nUpgrade: websocket\r\n"))
    await settle()
    [up] = h.upstreams("a")
    assert header(up.take(), "Upgrade") == "websocket"
    up.reply(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nfrom-app")
    out = c.take()
    assert status_of(out) == 101 and out.endswith(b"from-app")
    c.send(b"from-client")
    assert up.take() == b"from-client"
    up.drop()
    await settle()
    assert c.transport.closing


@scenario
async def pipelined_requests_are_answered_in_order(h: Harness) -> None:
    c = h.client()
    c.send(request("GET", "/kv/1") + request("GET", "/kv/2"))
    await settle()
    assert not c.transport.reading                      # the second waits: reading paused
    [up] = h.upstreams("a")
    assert up.take().startswith(b"GET /kv/1 ")
    up.reply(response(200, b"one"))
    await settle()
    assert up.take().startswith(b"GET /kv/2 ")          # same connection, after the first answer
    up.reply(response(200, b"two"))
    out = c.take()
    assert out.index(b"one") < out.index(b"two") and c.transport.reading


@scenario
async def each_request_on_a_connection_starts_clean(h: Harness) -> None:
    """The connection's next exchange is made by the one before (``Request.fresh``) and the router
    remembers the last key it found in its cache (``fast_raw``): neither may carry anything over."""
    h.source.set("t2", "b")
    c = h.client()
    sent: list[tuple[str, str]] = []

    async def one(method: str, key: str, body: bytes = b"") -> object:
        c.send(request(method, key=key, body=body))
        await settle()
        node = "a" if key == "t1" else "b"
        up = h.upstreams(node)[0]
        raw = up.take()
        sent.append((header(raw, "X-Partition"), header(raw, "X-Placement")))
        up.reply(response(200, b"ok"))
        await settle()
        return c.conn.parsing

    await one("GET", "t1")                                # t1 cached by the router
    first = await one("PUT", "t1", b"x")                  # a cache hit: the memo holds t1
    second = await one("GET", "t2")                       # a key the memo does not hold
    await one("GET", "t2")                                # the memo moves to t2
    await one("GET", "t1")
    assert sent == [("t1", "a"), ("t1", "a"), ("t2", "b"), ("t2", "b"), ("t1", "a")]
    assert second is not first and second.head is not first.head and first.done and first.is_write
    assert not second.admitted and second.decision == "read" and second.replay is None and not second.is_write
    assert c.take().count(b"HTTP/1.1 200 ") == 5


@scenario
async def back_pressure_pauses_the_other_side(h: Harness) -> None:
    c = h.client()
    c.send(request("POST", body=b"x"))
    await settle()
    [up] = h.upstreams("a")
    up.conn.pause_writing()                             # the node reads slowly
    assert not c.transport.reading
    up.conn.resume_writing()
    assert c.transport.reading
    c.conn.pause_writing()                              # the client reads slowly
    assert not up.transport.reading
    c.conn.resume_writing()
    assert up.transport.reading
    up.reply(response(200))
    assert status_of(c.take()) == 200


@scenario
async def a_silent_upstream_times_out(h: Harness) -> None:
    h2 = Harness(h.source, read_timeout=0.0)
    try:
        c = h2.client()
        c.send(request("GET"))
        await settle()
        h2.ctx._tick()                                   # the coarse clock's tick, now
        out = c.take()
        assert status_of(out) == 504 and h2.outcome("read", "timeout") == 1
    finally:
        h2.close()


@scenario
async def broken_upstreams_give_502_or_cut_the_client(h: Harness) -> None:
    c = h.client()
    c.send(request("GET"))
    await settle()
    h.upstreams("a")[0].reply(b"NOT HTTP AT ALL\r\n\r\n")
    assert status_of(c.take()) == 502
    c = h.client()
    c.send(request("GET"))
    await settle()
    h.upstreams("a")[-1].reply(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    h.upstreams("a")[-1].drop()                         # mid-body: the client cannot be told
    await settle()
    assert c.transport.aborted


@scenario
async def unknown_partition_missing_key_and_unreachable_node(h: Harness) -> None:
    c = h.client()
    c.send(request("PUT", key="nope", body=b"x"))
    await settle()
    out = c.take()
    assert status_of(out) == 404 and problem(out)["reason"] == "unknown_partition"
    assert c.transport.closing                          # its body was never read: the connection ends
    c = h.client()
    c.send(b"GET /kv/k HTTP/1.1\r\nHost: s\r\n\r\n")   # no partition key at all
    await settle()
    assert status_of(c.take()) == 400
    h.pool.refuse = True
    c = h.client()
    c.send(request("GET"))
    await settle()
    assert status_of(c.take()) == 502


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_scenario(name):
    h = Harness(PlacementTable({"t1": "a"}))
    try:
        await SCENARIOS[name](h)
    finally:
        h.close()


@pytest.mark.parametrize("reason", [RejectReason.CUTOVER, RejectReason.STALE_EPOCH, RejectReason.FAIL_CLOSED])
async def test_each_refusal_without_a_hold_is_a_503_problem(reason):
    class AlwaysStale(PlacementTable):
        def admit_write(self, partition, epoch):
            return super().admit_write(partition, epoch - 1)

    table = (AlwaysStale if reason is RejectReason.STALE_EPOCH else PlacementTable)({"t1": "a"})
    table.set("t1", "a")                                # epoch 2, so epoch - 1 is a real, older epoch
    if reason is RejectReason.CUTOVER:
        cutover(table)
    h = Harness(table, hold_max=0)
    if reason is RejectReason.FAIL_CLOSED:
        h.gate.add_guard(lambda: False)
    try:
        c = h.client()
        c.send(request("POST", body=b"x"))
        await settle()
        out = c.take()
        assert status_of(out) == 503 and header(out, "Retry-After") is not None
        doc = problem(out)
        assert doc["type"].endswith("stale-epoch") and doc["reason"] == reason.value
        assert doc["partition"] == "t1" and doc["placement"] == "a" and doc["epoch"] == table.get("t1").epoch
        assert all(u.take() == b"" for u in h.pool.opened) and h.tracker.count() == 0
    finally:
        h.close()


async def test_request_ids_are_the_prefix_and_the_counter_in_hex():
    """An id the sidecar makes is the context's prefix and its counter in lower-case hex, in both
    builds (compiled, context.pxd writes it in C), and it is what goes upstream."""
    h = Harness(PlacementTable({"t1": "a"}))
    try:
        ctx = h.ctx
        for n in (0, 9, 0xfe, 0xffff, 2**40 - 1, 2**62):
            ctx.rid_n = n
            assert ctx.request_id() == ctx.rid_prefix + f"{n + 1:x}".encode()
        c = h.client()
        c.send(request("GET"))
        await settle()
        assert header(h.pool.opened[0].take(), "X-Request-Id") == ctx.rid_prefix.decode() + f"{2**62 + 2:x}"
    finally:
        h.close()


async def test_every_exchange_step_is_exercised(monkeypatch):
    """Every method of the exchange is reached by some scenario above."""
    calls: dict[str, int] = {}

    def counting(cls_name: str, name: str, fn):
        def wrapper(*args, **kwargs):
            calls[f"{cls_name}.{name}"] = calls.get(f"{cls_name}.{name}", 0) + 1
            return fn(*args, **kwargs)
        return wrapper

    steps = []
    for cls in (Request, ResponseMixin):
        for name, fn in list(vars(cls).items()):
            if inspect.isfunction(fn) and not inspect.iscoroutinefunction(fn):
                monkeypatch.setattr(cls, name, counting(cls.__name__, name, fn))
                steps.append(f"{cls.__name__}.{name}")
    for name, run in SCENARIOS.items():
        h = Harness(PlacementTable({"t1": "a"}))
        try:
            await run(h)
        finally:
            h.close()
    missing = sorted(s for s in steps if s not in calls)
    assert not missing, f"no scenario reaches: {missing}"
