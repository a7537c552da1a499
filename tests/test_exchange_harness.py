"""The data path's exchange driven through fake transports (tests/_fake_transport.py):
no socket, no port, no sleep. Each test walks one life-cycle path of
``_exchange.Request``: forward, hold → wake → retry, the stale-epoch retry
between resolve and admit, the application's stale-epoch refusal replayed,
the pooled-connection retry, a client gone while held, the tunnel, and every
refusal the sidecar answers itself."""

from __future__ import annotations

import json

import pytest

from gate import PlacementTable, RejectReason
from tests._fake_transport import Harness, header, request, response, settle, status_of

STALE = json.dumps({"type": "urn:epochgate:problem:stale-epoch", "title": "stale epoch", "status": 503,
                    "partition": "t1", "reason": "stale_epoch"}).encode()


@pytest.fixture
async def h():
    harness = Harness(PlacementTable({"t1": "a"}))
    yield harness
    harness.close()


def problem(raw: bytes) -> dict:
    return json.loads(raw.split(b"\r\n\r\n", 1)[1])


async def test_a_read_is_stamped_forwarded_and_its_connection_pooled(h):
    c = h.client()
    c.send(request("GET", extra="X-Placement: evil\r\nX-Partition: evil\r\n"))
    await settle()
    [up] = h.upstreams("a")
    sent = up.take()
    assert sent.startswith(b"GET /kv/k HTTP/1.1\r\nHost: 10.0.0.1:8001\r\n")
    epoch = h.source.get("t1").epoch
    assert header(sent, "X-Partition") == "t1" and header(sent, "X-Placement") == "a"
    assert header(sent, "X-Placement-Epoch") == str(int(epoch)) and b"evil" not in sent
    up.reply(response(200, b"hello"))
    out = c.take()
    assert status_of(out) == 200 and out.endswith(b"hello")
    assert h.pool.idle[up.node] == [up.conn]          # kept alive for the next request
    assert h.outcome("read", "ok") == 1


async def test_a_write_is_in_flight_until_its_response_ends(h):
    c = h.client()
    c.send(request("PUT", body=b"v1"))
    await settle()
    [up] = h.upstreams("a")
    assert up.take().endswith(b"\r\n\r\nv1")
    assert h.tracker.count("t1") == 1                 # the cutover ack would wait for it
    up.reply(response(204, b""))
    assert status_of(c.take()) == 204 and h.tracker.count() == 0


async def test_cutover_holds_the_write_then_the_flip_wakes_it_to_the_new_owner(h):
    h.source.begin_migration("t1", "b")
    h.source.enter_cutover("t1")
    c = h.client()
    c.send(request("PUT", body=b"v1"))
    await settle()
    assert all(u.take() == b"" for u in h.pool.opened)   # connected, but nothing was forwarded
    assert h.ctx.hold.count == 1 and not c.transport.reading and c.take() == b""
    epoch = h.source.complete_migration("t1")
    await settle()
    [up] = h.upstreams("b")
    sent = up.take()
    assert header(sent, "X-Placement") == "b" and header(sent, "X-Placement-Epoch") == str(int(epoch))
    assert sent.endswith(b"v1") and h.ctx.hold.count == 0
    up.reply(response(200))
    assert status_of(c.take()) == 200 and h.outcome("write", "held_ok") == 1


async def test_a_transition_between_resolve_and_admit_is_resolved_again(h):
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


async def test_the_applications_stale_epoch_refusal_is_replayed_with_its_body(h):
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
    assert again.endswith(b"payload") and header(again, "X-Placement-Epoch") == str(int(h.source.get("t1").epoch))
    h.upstreams("a")[-1].reply(response(201))
    assert status_of(c.take()) == 201 and h.tracker.count() == 0


async def test_a_pooled_connection_closed_before_answering_is_retried_on_a_fresh_one(h):
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


async def test_a_held_write_whose_client_has_gone_is_never_sent(h):
    h.source.begin_migration("t1", "b")
    h.source.enter_cutover("t1")
    c = h.client()
    c.send(request("PUT", body=b"v"))
    await settle()
    assert h.ctx.hold.count == 1
    c.vanish()
    h.source.complete_migration("t1")
    await settle()
    assert all(u.take() == b"" for u in h.pool.opened)
    assert c.transport.aborted and h.ctx.hold.count == 0 and h.tracker.count() == 0


async def test_an_upgrade_becomes_a_byte_tunnel(h):
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


@pytest.mark.parametrize("reason", [RejectReason.CUTOVER, RejectReason.STALE_EPOCH, RejectReason.FAIL_CLOSED])
async def test_each_refusal_without_a_hold_is_a_503_problem(reason):
    class AlwaysStale(PlacementTable):
        def admit_write(self, partition, epoch):
            return super().admit_write(partition, epoch - 1)

    table = (AlwaysStale if reason is RejectReason.STALE_EPOCH else PlacementTable)({"t1": "a"})
    table.set("t1", "a")                                # epoch 2, so epoch - 1 is a real, older epoch
    if reason is RejectReason.CUTOVER:
        table.begin_migration("t1", "b")
        table.enter_cutover("t1")
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


async def test_unknown_partition_missing_key_and_unreachable_node(h):
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


async def test_hold_expiry_answers_the_current_state(h):
    h2 = Harness(h.source, hold_seconds=0.01)
    try:
        h.source.begin_migration("t1", "b")
        h.source.enter_cutover("t1")
        c = h2.client()
        c.send(request("PUT", body=b"v"))
        await settle()
        assert h2.ctx.hold.count == 1
        for req in list(h2.ctx.hold._waiters.get("t1", ())):   # the hold's own timer, fired now
            req.hold_timer.cancel()
            h2.ctx.hold.release(req)
            req.hold_expired()
        out = c.take()
        assert status_of(out) == 503 and problem(out)["reason"] == "cutover" and problem(out)["phase"] == "cutover"
    finally:
        h2.close()
