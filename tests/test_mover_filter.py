"""The mover's half of DESIGN §12.4 against the real example app: a split of slot-1 (of 4) copied
by hand — each half exported with its key filter and imported under its own name (the new half
on another node), the delta after more writes, the source cleaned up — and an application that
ignores the filter refused."""

from __future__ import annotations

import json

import pytest
from aiohttp import web

from gate import BackendError, Slot, StaleMover, key_hash
from sidecar.control.mover import HttpHooksMover
from tests.test_example_kv import HOOK, MOVER_TOKEN, stamp, world  # noqa: F401 (world is a fixture)

LO, HI = Slot(1, 8), Slot(5, 8)


async def _keys(http, url, partition):
    async with http.get(f"{url}/_epochgate/export?partition={partition}", headers=HOOK) as r:
        return {json.loads(line)["key"]: json.loads(line)["value"] for line in (await r.text()).splitlines()}


async def test_split_by_hand_through_the_mover(world):
    table, node, http = world
    a, b = await node("a"), await node("b")
    e = table.set("slot-1", "a")
    keys = [f"user-{i}" for i in range(3000) if key_hash(f"user-{i}") % 4 == 1][:30]
    for k in keys:
        async with http.put(f"{a.url}/kv/{k}", data="v1", headers=stamp("slot-1", e)) as r:
            assert r.status == 200
    mover = HttpHooksMover(token=MOVER_TOKEN)
    try:
        halves = (("slot-1-of-8", LO, a), ("slot-5-of-8", HI, b))
        cursors = {}
        for name, only, dest in halves:       # rule 3: clear, then the bulk copy at E1
            await mover.cleanup(name, dest.url, fence=10)
            cursors[name] = await mover.copy("slot-1", a.url, dest.url, lambda n: None, fence=10, only=only, into=name)
        changed = keys[:8]
        for k in changed:
            async with http.put(f"{a.url}/kv/{k}", data="v2", headers=stamp("slot-1", e)) as r:
                assert r.status == 200
        for name, only, dest in halves:       # the delta at E2
            await mover.copy_delta("slot-1", a.url, dest.url, cursors[name], lambda n: None, fence=11,
                                   only=only, into=name)
        assert await mover.cleanup("slot-1", a.url, fence=12) == len(keys)   # rule 1: the source, after the flip
        assert await mover.cleanup("slot-1", a.url, fence=12) == 0           # idempotent
        with pytest.raises(StaleMover):
            await mover.cleanup("slot-5-of-8", b.url, fence=10)                # a stale clean-up (delta was at 11)
        want = {k: ("v2" if k in changed else "v1") for k in keys}
        lo, hi = await _keys(http, a.url, "slot-1-of-8"), await _keys(http, b.url, "slot-5-of-8")
        assert {**lo, **hi} == want and not set(lo) & set(hi)
        assert all(LO.holds(key_hash(k)) for k in lo) and all(HI.holds(key_hash(k)) for k in hi)
        assert await _keys(http, a.url, "slot-1") == {}                        # nothing left behind
    finally:
        await mover.close()


async def test_an_application_that_ignores_the_filter_is_refused():
    async def export(request):   # an older app: no filter, no echo
        return web.Response(body=b'{"key":"k","value":"v"}\n', headers={"X-Epochgate-Cursor": "1"})

    app = web.Application()
    app.router.add_get("/_epochgate/export", export)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = "http://127.0.0.1:%d" % runner.addresses[0][1]
    mover = HttpHooksMover(token=MOVER_TOKEN)
    try:
        with pytest.raises(BackendError, match="did not apply the key filter"):
            await mover.copy("slot-1", url, url, lambda n: None, fence=1, only=HI, into="slot-5-of-8")
    finally:
        await mover.close()
        await runner.cleanup()


async def test_an_aborted_split_leaves_the_slot_and_no_copy_behind(world):
    """DESIGN §12.4 rule 2: the barrier fails → abort (the slot active again on its node, no destination
    in the table) and each destination's copy is deleted at the abort's epoch."""
    from sidecar.control.reshard import TableStore, plan_split, run_reshard

    table, node, http = world
    a, b = await node("a"), await node("b")
    for i in (0, 2, 3):
        table.set(f"slot-{i}", "a")
    e = table.set("slot-1", "a")
    keys = [f"user-{i}" for i in range(3000) if key_hash(f"user-{i}") % 4 == 1][:12]
    for k in keys:
        async with http.put(f"{a.url}/kv/{k}", data="v1", headers=stamp("slot-1", e)) as r:
            assert r.status == 200

    async def failing_barrier(sources, epoch):
        raise TimeoutError("a participant did not acknowledge")

    mover = HttpHooksMover(token=MOVER_TOKEN)
    try:
        res = await run_reshard(plan_split(table.partitions(), 4, "slot-1", to="b"), TableStore(table), mover,
                                {"a": a.url, "b": b.url}, failing_barrier)
    finally:
        await mover.close()
    assert res.status == "aborted" and "did not acknowledge" in res.error
    assert table.state("slot-1")[0].phase.value == "active" and "slot-1-of-8" not in table
    assert res.deleted == len(keys)                          # both halves' copies, deleted again
    assert await _keys(http, a.url, "slot-1-of-8") == {} and await _keys(http, b.url, "slot-5-of-8") == {}
    assert await _keys(http, a.url, "slot-1") == {k: "v1" for k in keys}   # the source untouched
