"""The example app's resharding hooks (DESIGN §12.4): export and delta with the key filter
``slot=I&of=M`` (echoed in ``X-Epochgate-Filter``), the fenced, idempotent clean-up hook and its
log, and bad filters refused naming the parameter."""

from __future__ import annotations

import json

from gate import FILTER_HEADER, Slot, key_hash
from tests.test_example_kv import HOOK, fenced, stamp, world  # noqa: F401 (world is a fixture)

HALF = Slot(5, 8)   # the upper half of slot-1 of 4


async def _fill(http, a, table, n=24):
    epoch = table.set("slot-1", "a")
    keys = [f"user-{i}" for i in range(2000) if key_hash(f"user-{i}") % 4 == 1][:n]
    for k in keys:
        async with http.put(f"{a.url}/kv/{k}", data=f"v-{k}", headers=stamp("slot-1", epoch)) as r:
            assert r.status == 200, await r.text()
    return keys


async def _rows(r):
    return [json.loads(line) for line in (await r.text()).splitlines()]


async def test_export_and_delta_filter_by_slot_and_echo_it(world):
    table, node, http = world
    a = await node("a")
    keys = await _fill(http, a, table)
    upper = {k for k in keys if HALF.holds(key_hash(k))}
    assert upper and upper != set(keys)
    async with http.get(f"{a.url}/_epochgate/export?partition=slot-1&slot=5&of=8", headers=HOOK) as r:
        assert r.status == 200 and r.headers[FILTER_HEADER] == "slot=5&of=8"
        assert {row["key"] for row in await _rows(r)} == upper
        cursor = r.headers["X-Epochgate-Cursor"]
    async with http.get(f"{a.url}/_epochgate/export?partition=slot-1", headers=HOOK) as r:
        assert FILTER_HEADER not in r.headers and {row["key"] for row in await _rows(r)} == set(keys)
    changed = sorted(keys)[:6]
    for k in changed:
        async with http.put(f"{a.url}/kv/{k}", data="v2", headers=stamp("slot-1", table.get("slot-1").epoch)) as r:
            assert r.status == 200
    async with http.get(f"{a.url}/_epochgate/delta?partition=slot-1&since={cursor}&slot=5&of=8", headers=HOOK) as r:
        assert r.headers[FILTER_HEADER] == "slot=5&of=8"
        assert {row["key"] for row in await _rows(r)} == upper & set(changed)


async def test_bad_filters_are_refused_naming_the_parameter(world):
    table, node, http = world
    a = await node("a")
    for query, field in [("slot=5", "of"), ("of=8", "slot"), ("slot=8&of=8", "slot"), ("slot=x&of=8", "slot"),
                         ("slot=0&of=0", "of")]:
        async with http.get(f"{a.url}/_epochgate/export?partition=slot-1&{query}", headers=HOOK) as r:
            assert r.status == 400 and (await r.json())["field"] == field, query
        async with http.post(f"{a.url}/_epochgate/cleanup?partition=slot-1&{query}", headers=fenced(9)) as r:
            assert r.status == 400 and (await r.json())["field"] == field, query


async def test_cleanup_is_fenced_idempotent_and_logged(world):
    table, node, http = world
    a = await node("a")
    keys = await _fill(http, a, table)
    upper = {k for k in keys if HALF.holds(key_hash(k))}
    url = f"{a.url}/_epochgate/cleanup?partition=slot-1&slot=5&of=8"
    async with http.post(url, headers=HOOK) as r:                     # no fencing token: refused
        assert r.status == 400
    async with http.post(url, headers=fenced(10)) as r:
        assert r.status == 200 and await r.json() == {"deleted": len(upper)}
    async with http.post(url, headers=fenced(10)) as r:               # the same call again: nothing left
        assert r.status == 200 and await r.json() == {"deleted": 0}
    async with http.post(f"{a.url}/_epochgate/cleanup?partition=slot-1", headers=fenced(9)) as r:
        assert r.status == 409 and (await r.json())["type"].endswith("stale-mover")   # a stale clean-up
    async with http.get(f"{a.url}/_epochgate/export?partition=slot-1", headers=HOOK) as r:
        assert {row["key"] for row in await _rows(r)} == set(keys) - upper   # the other half is untouched
    # an import at a lower token than the clean-up's is refused too: one fence per partition
    async with http.post(f"{a.url}/_epochgate/import?partition=slot-1", data=b'{"key":"x","value":"y"}\n',
                         headers=fenced(3)) as r:
        assert r.status == 409
    log = [json.loads(line) for line in (a.data / "cleanups.jsonl").read_text().splitlines()]
    assert [(c["partition"], c["deleted"], c["fence"], c["filter"]) for c in log] == [
        ("slot-1", len(upper), 10, "slot=5&of=8"), ("slot-1", 0, 10, "slot=5&of=8")]
    assert len(a.commits()) == len(keys)   # clean-ups are not commits
