"""Hostile input — one memory budget for held and replayable bodies (issue 15, Low).

At the defaults 1,000 held writes could each keep a 1 MiB body for replay
(≈1 GiB). Bodies kept in memory now count against ``--body-budget``: a body
that does not fit is not kept for replay, and while other requests' bytes
fill the budget no write is held — it gets its 503 at once.
"""

from __future__ import annotations

import asyncio

from tests._hostile import h11_nodes, hostile_sidecar, send_raw, statuses  # noqa: F401
from tests._sidecar_util import until

KIB = 1024


def put(partition: bytes, body: bytes) -> bytes:
    return (b"PUT /kv/k HTTP/1.1\r\nHost: app\r\nX-Partition-Key: " + partition +
            b"\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


async def test_a_body_beyond_the_budget_is_not_kept_for_replay(tmp_path, h11_nodes):
    a, _ = h11_nodes
    a.stale_writes = 1  # the application refuses the first write at its commit point
    async with hostile_sidecar(tmp_path, h11_nodes, body_budget=64 * KIB) as sc:
        out = await send_raw(sc.port, put(b"t1", b"x" * (100 * KIB)))
        assert statuses(out) == [503], out  # the app's refusal, relayed: nothing kept to replay
        assert len([s for s in a.seen if s.method == "PUT"]) == 1
        assert sc.ctx.budget.used == 0
        small = await send_raw(sc.port, put(b"t1", b"y" * (10 * KIB)))  # fits: replayed after a refusal
        a.stale_writes = 0
        assert statuses(small) == [200], small


async def test_no_write_is_held_while_the_budget_is_spent(tmp_path, h11_nodes):
    a, _ = h11_nodes
    a.stale_writes = 10_000  # keeps refusing: write A stays in the hold with its body kept
    async with hostile_sidecar(tmp_path, h11_nodes, body_budget=100 * KIB) as sc:
        await sc.store.begin("t2", "a")
        await sc.store.enter_cutover("t2")  # writes to t2 are refused and would be held
        first = asyncio.ensure_future(send_raw(sc.port, put(b"t1", b"x" * (100 * KIB)), timeout=15))
        await until(lambda: len(a.seen) >= 1 and sc.ctx.budget.used == 100 * KIB and sc.ctx.hold.count == 1)
        out = await asyncio.wait_for(send_raw(sc.port, put(b"t2", b"small"), timeout=15), 2.0)
        assert statuses(out) == [503], out   # not held: answered at once
        assert b"stale-epoch" in out and b'"reason":"cutover"' in out
        # A is held again after each of its retries (0.005 s doubling to 0.32 s); while one retry is
        # out at the node A is not counted, so the bound, not equality: t2 was never held.
        assert sc.ctx.hold.count <= 1
        a.stale_writes = 0  # the application accepts again: A's next retry goes through
        assert statuses(await first) == [200]
        assert sc.ctx.budget.used == 0 and sc.ctx.hold.count == 0
