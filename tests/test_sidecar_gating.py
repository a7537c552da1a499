"""Writes through the sidecar in every phase: stamping, hold, rejection, app stale-epoch retry, fail closed."""

from __future__ import annotations

import asyncio


from tests._sidecar_util import (  # noqa: F401 (nodes, placement, session are fixtures)
    KEY,
    config,
    nodes,
    placement,
    running_sidecar,
    session,
    until,
    writes,
)


async def put(session, sc, path="/kv/k", data=b"v", headers=KEY):
    async with session.put(f"http://127.0.0.1:{sc.port}{path}", data=data, headers=headers) as r:
        return r.status, dict(r.headers), await r.read()


async def test_active_and_draining_writes_go_to_source_with_epoch(placement, nodes, session):
    a, b = nodes
    async with running_sidecar(config(placement)) as sc:
        status, _, _ = await put(session, sc)
        assert status == 200
        e0 = int(sc.table.state("t1")[1])
        assert writes(a)[-1]["headers"]["X-Placement-Epoch"] == str(e0)
        e1 = await sc.store.begin("t1", "b")
        status, _, _ = await put(session, sc)
        assert status == 200
        assert writes(a)[-1]["headers"]["X-Placement-Epoch"] == str(int(e1)) and not writes(b)


async def test_cutover_write_is_held_then_lands_on_target(placement, nodes, session):
    a, b = nodes
    async with running_sidecar(config(placement, hold_seconds=10)) as sc:
        await sc.store.begin("t1", "b")
        await sc.store.enter_cutover("t1")
        task = asyncio.create_task(put(session, sc, data=b"held-value"))
        await until(lambda: sc.ctx.hold.count == 1)
        assert not writes(a) and not writes(b)  # INV-M1: nothing committed during cutover
        e = await sc.store.complete("t1")
        status, _, _ = await task
        assert status == 200
        assert not writes(a) and len(writes(b)) == 1
        assert writes(b)[0]["headers"]["X-Placement-Epoch"] == str(int(e))
        assert sc.ctx.hold.count == 0
        await asyncio.sleep(0)
        sc.stats.flush()
        m = sc.metrics.requests.labels("write", "active", "held_ok")._value.get()
        assert m == 1


async def test_hold_bound_exceeded_gives_full_problem(placement, nodes, session):
    a, b = nodes
    async with running_sidecar(config(placement, hold_seconds=0.2)) as sc:
        await sc.store.begin("t1", "b")
        e = await sc.store.enter_cutover("t1")
        status, headers, body = await put(session, sc)
    assert status == 503 and headers["Retry-After"] == "1"
    assert headers["Content-Type"] == "application/problem+json"
    import json

    doc = json.loads(body)
    assert doc["type"].endswith("stale-epoch")
    # the same builder as the gate middleware's: one type URI prefix, recognised by the shared check
    from gate import is_stale_epoch_problem
    from gate._problem import STALE_EPOCH_TYPE

    assert doc["type"] == STALE_EPOCH_TYPE and is_stale_epoch_problem(status, headers["Content-Type"], body)
    assert doc["partition"] == "t1" and doc["reason"] == "cutover" and doc["phase"] == "cutover"
    assert doc["epoch"] == int(e) and doc["placement"] == "a"
    assert not writes(a) and not writes(b)


async def test_hold_disabled_rejects_at_once(placement, nodes, session):
    async with running_sidecar(config(placement, hold_max=0)) as sc:
        await sc.store.begin("t1", "b")
        await sc.store.enter_cutover("t1")
        status, _, _ = await put(session, sc)
        assert status == 503
        status, _, _ = await put(session, sc, headers={"X-Partition-Key": "t2"})
        assert status == 200  # other partitions keep writing


async def test_reads_continue_during_cutover(placement, nodes, session):
    async with running_sidecar(config(placement, hold_max=0)) as sc:
        await sc.store.begin("t1", "b")
        await sc.store.enter_cutover("t1")
        async with session.get(f"http://127.0.0.1:{sc.port}/kv/k", headers=KEY) as r:
            assert r.status == 200
            assert (await r.json())["node"] == "a"  # INV-M4: one read placement until the flip


async def test_app_stale_epoch_is_retried_when_the_table_moves(placement, nodes, session):
    # The app is ahead of the sidecar: it keeps refusing until the sidecar's table moves.
    a, b = nodes
    a.stale_left = 10**6
    async with running_sidecar(config(placement)) as sc:
        task = asyncio.create_task(put(session, sc, data=b"replayed-body"))
        await until(lambda: len(writes(a)) >= 3)  # refused, held, retried on the backoff timer, refused again
        assert sc.ctx.hold.count == 1 and all(s.get("stale") for s in writes(a))
        e = await sc.store.begin("t1", "b")
        a.stale_left = 0  # no await since begin: every later attempt is stamped e
        status, _, body = await task
        assert status == 200
        ok = [s for s in writes(a) if not s.get("stale")]
        assert len(ok) == 1 and ok[0]["len"] == len(b"replayed-body")
        assert ok[0]["headers"]["X-Placement-Epoch"] == str(int(e))


async def test_app_behind_the_sidecar_is_retried_without_a_transition(placement, nodes, session):
    # The app's own replica lags: it refuses the epoch the sidecar already stands at.
    # No transition of the sidecar's will come, so the hold retries on a timer.
    a, b = nodes
    a.stale_left = 3
    async with running_sidecar(config(placement, hold_seconds=10)) as sc:
        epoch = str(int(sc.table.state("t1")[1]))
        status, _, body = await put(session, sc, data=b"late-app")
        assert status == 200, body
        assert [bool(s.get("stale")) for s in writes(a)] == [True, True, True, False]
        assert all(s["headers"]["X-Placement-Epoch"] == epoch for s in writes(a))
        assert writes(a)[-1]["len"] == len(b"late-app") and not writes(b)
        assert sc.ctx.hold.count == 0


async def test_inflight_write_holds_cutover_ack(placement, nodes, session):
    a, _ = nodes
    async with running_sidecar(config(placement)) as sc:
        await sc.store.begin("t1", "b")
        task = asyncio.create_task(put(session, sc, path="/wait"))
        await until(lambda: sc.tracker.count("t1") == 1)
        cut = asyncio.create_task(sc.store.enter_cutover("t1"))
        await asyncio.sleep(0.1)
        assert not cut.done()  # the transition does not count while a draining-epoch write is in flight
        a.release.set()
        assert (await task)[0] == 200
        await asyncio.wait_for(cut, 5)
        assert sc.tracker.count() == 0


async def test_fail_closed_guard_refuses_writes_not_reads(placement, nodes, session):
    # hold off: a held fail_closed write waits for the gate (tests/test_hold_fail_closed.py)
    async with running_sidecar(config(placement, hold_max=0)) as sc:
        open_ = [True]
        sc.gate.add_guard(lambda: open_[0])
        open_[0] = False
        status, _, body = await put(session, sc)
        assert status == 503 and b'"reason":"fail_closed"' in body
        async with session.get(f"http://127.0.0.1:{sc.port}/kv/k", headers=KEY) as r:
            assert r.status == 200
        async with session.get(f"http://127.0.0.1:{sc.admin_port}/readyz") as r:
            assert r.status == 503
        open_[0] = True
        assert (await put(session, sc))[0] == 200
        async with session.get(f"http://127.0.0.1:{sc.admin_port}/readyz") as r:
            assert r.status == 200


async def test_hold_count_bound(placement, nodes, session):
    async with running_sidecar(config(placement, hold_max=1, hold_seconds=10)) as sc:
        await sc.store.begin("t1", "b")
        await sc.store.enter_cutover("t1")
        first = asyncio.create_task(put(session, sc, data=b"first"))
        await until(lambda: sc.ctx.hold.count == 1)
        status, _, body = await put(session, sc, data=b"second")  # the hold is full: refused at once
        assert status == 503 and b'"reason":"cutover"' in body
        await sc.store.complete("t1")
        assert (await first)[0] == 200
        async with session.get(f"http://127.0.0.1:{sc.admin_port}/metrics") as r:
            text = await r.text()
        assert "epochgate_held_writes 0.0" in text
        assert 'epochgate_hold_duration_seconds_count 1.0' in text


async def test_route_rule_marks_post_as_read(placement, nodes, session):
    async with running_sidecar(config(placement, hold_max=0, route=("POST ^/search=read", "GET ^/admin/=write"))) as sc:
        await sc.store.begin("t1", "b")
        await sc.store.enter_cutover("t1")
        async with session.post(f"http://127.0.0.1:{sc.port}/search", headers=KEY, data=b"q") as r:
            assert r.status == 200  # a read: not gated during cutover
        async with session.get(f"http://127.0.0.1:{sc.port}/admin/x", headers=KEY) as r:
            assert r.status == 503  # a write by route rule: gated


async def test_held_write_whose_client_left_is_not_sent(placement, nodes, session):
    a, b = nodes
    async with running_sidecar(config(placement, hold_seconds=10)) as sc:
        await sc.store.begin("t1", "b")
        await sc.store.enter_cutover("t1")
        reader, writer = await asyncio.open_connection("127.0.0.1", sc.port)
        writer.write(b"PUT /kv/k HTTP/1.1\r\nHost: x\r\nX-Partition-Key: t1\r\nContent-Length: 4\r\n\r\ngone")
        await writer.drain()
        await until(lambda: sc.ctx.hold.count == 1)
        writer.close()                      # the client gives up while its write is held
        await writer.wait_closed()
        await asyncio.sleep(0.05)
        await sc.store.complete("t1")       # wakes the held write
        await until(lambda: sc.ctx.hold.count == 0)
        await asyncio.sleep(0.05)
        assert not writes(a) and not writes(b)  # never sent: the client may be retrying it elsewhere
        # a client still connected is served as before
        status, _, _ = await put(session, sc, data=b"here")
        assert status == 200 and len(writes(b)) == 1
