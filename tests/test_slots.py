"""Hash slots and their depth (DESIGN §12.1): naming, split/merge, the tiling check, the walk that
resolves a key where some slots are split and others are not, and the sidecar routing by it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gate import (
    ConfigError,
    PlacementTable,
    Slot,
    SlotKey,
    key_hash,
    parse_slot,
    resolve_slot,
    slot_name,
    tiling_problem,
)
from sidecar.proxy.router import Router
from tests._sidecar_util import (  # noqa: F401 (nodes, session are fixtures)
    config,
    nodes,
    running_sidecar,
    session,
    write_placement,
    writes,
)


@st.composite
def tables(draw):
    """A base N and a set of present slots reached by random splits and merges from the N base
    slots (so it tiles the key space by construction)."""
    base = draw(st.integers(1, 12))
    present = {Slot(i, base) for i in range(base)}
    for _ in range(draw(st.integers(0, 12))):
        slot = draw(st.sampled_from(sorted(present)))
        if draw(st.booleans()) and slot.modulus < base << 6:
            present.remove(slot)
            present.update(slot.halves())
        elif slot.modulus > base and slot.sibling(base) in present:
            present -= {slot, slot.sibling(base)}
            present.add(slot.merged(base))
    return base, present


@settings(max_examples=200, deadline=None)
@given(tables(), st.lists(st.integers(0, (1 << 32) - 1), min_size=1, max_size=20))
def test_every_key_resolves_to_exactly_one_present_slot(table, hashes):
    base, present = table
    names = {s.name(base): s for s in present}
    assert tiling_problem(names, base) is None
    for h in hashes:
        holding = [s for s in present if s.holds(h)]
        assert len(holding) == 1                                # T1: exactly one
        found = resolve_slot(h, base, lambda n: names.get(n))
        assert found is not None and found[1] == holding[0]    # and the walk finds it


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 64), st.integers(0, 5), st.integers(0, (1 << 32) - 1))
def test_a_split_slots_keys_land_in_s_or_s_plus_m(base, depth, h):
    m = base << depth
    s = Slot(h % m, m)
    lo, hi = s.halves()
    assert (lo.number, hi.number, lo.modulus) == (s.number, s.number + m, 2 * m)
    assert lo.holds(h) != hi.holds(h)                           # in exactly one half
    assert lo.sibling(base) == hi and hi.sibling(base) == lo and lo.merged(base) == s


def test_names_round_trip_and_bad_names_name_the_field():
    assert slot_name(3, 8, 8) == "slot-3" and slot_name(11, 16, 8) == "slot-11-of-16"
    assert parse_slot("slot-11-of-16", 8) == Slot(11, 16) and parse_slot("slot-3", 8) == Slot(3, 8)
    for bad, why in [("slot-9", "below 8"), ("slot-3-of-12", "modulus must be"), ("slot-3-of-8", "modulus must be"),
                     ("slot-03", "expected"), ("tenant", "expected"), ("slot-16-of-16", "below 16")]:
        with pytest.raises(ConfigError, match=why) as ei:
            parse_slot(bad, 8, "reshard.slot")
        assert ei.value.field == "reshard.slot"
    with pytest.raises(ConfigError, match="base slot"):
        Slot(3, 8).merged(8)


def test_tiling_problems_are_named():
    assert "share keys" in tiling_problem(["slot-0", "slot-1", "slot-1-of-4"], 2)
    assert "3/4" in tiling_problem(["slot-0", "slot-1-of-4"], 2)
    assert "expected" in tiling_problem(["slot-0", "t1"], 1)


def test_router_keeps_the_hash_and_caches_it():
    r = Router(["header:X-K"], hash_slots=8)
    p = r.partition("/", None, {b"x-k": b"user-42"}, None)
    assert isinstance(p, SlotKey) and p == f"slot-{key_hash('user-42') % 8}" and p.h == key_hash("user-42")
    assert r.partition("/", None, {b"x-k": b"user-42"}, None) is p      # the cached value


def _key_in(slot: Slot, start: int = 0) -> str:
    return next(f"user-{i}" for i in range(start, start + 10_000) if slot.holds(key_hash(f"user-{i}")))


async def test_sidecar_routes_each_key_by_its_own_slots_depth(nodes, session, tmp_path):
    """N = 4; slot-1 split into slot-1-of-8 (a) and slot-5-of-8 (b); the others unsplit on a. Then the
    two halves merge back (begin_reshard, enter_cutover, complete_reshard on the in-process table) and the
    same keys walk back to slot-1."""
    a, b = nodes
    parts = {"slot-0": "a", "slot-2": "a", "slot-3": "a", "slot-1-of-8": "a", "slot-5-of-8": "b"}
    assert tiling_problem(parts, 4) is None
    placement = write_placement(tmp_path / "p.toml", {"a": a.url, "b": b.url}, parts)
    k_lo, k_hi, k_other = _key_in(Slot(1, 8)), _key_in(Slot(5, 8)), _key_in(Slot(2, 4))
    async with running_sidecar(config(placement, hash_slots=4)) as sc:
        async def put(key):
            async with session.put(f"http://127.0.0.1:{sc.port}/kv/{key}", data=b"v",
                                   headers={"X-Partition-Key": key}) as r:
                assert r.status == 200, await r.text()
        for key in (k_lo, k_hi, k_other):
            await put(key)
        seen = {w["path"].rsplit("/", 1)[-1]: (w["node"], w["headers"]["X-Partition"]) for w in writes(a) + writes(b)}
        assert seen == {k_lo: ("a", "slot-1-of-8"), k_hi: ("b", "slot-5-of-8"), k_other: ("a", "slot-2")}
        table: PlacementTable = sc.table
        halves = ["slot-1-of-8", "slot-5-of-8"]                          # merge back, through the machine
        table.begin_reshard(halves, (("slot-1", "a"),))
        table.enter_cutover_all(halves)
        table.complete_reshard(halves)
        assert "slot-1" in table and not any(h in table for h in halves)
        a.seen.clear()
        b.seen.clear()
        for key in (k_lo, k_hi):
            await put(key)
        assert {w["headers"]["X-Partition"] for w in writes(a)} == {"slot-1"} and not writes(b)


def test_table_reshard_is_all_or_nothing_and_flips_at_one_epoch():
    from gate import AlreadyMigrating, NotCutover, NotMigrating, Phase

    t = PlacementTable({"slot-0-of-2": "a", "slot-1-of-2": "b"})
    seen = []
    t.subscribe(lambda p, st, e: seen.append((p, None if st is None else st.phase, int(e))))
    t.begin_migration("slot-1-of-2", "c")
    before = t.partitions()
    with pytest.raises(AlreadyMigrating):                  # one source is moving: nothing changes
        t.begin_reshard(["slot-0-of-2", "slot-1-of-2"], (("slot-0", "a"),))
    assert t.partitions() == before
    t.abort_migration("slot-1-of-2")
    halves = ["slot-0-of-2", "slot-1-of-2"]
    e1 = t.begin_reshard(halves, (("slot-0", "a"),))
    assert {t.state(h)[0].phase for h in halves} == {Phase.DRAINING} and {int(t.state(h)[1]) for h in halves} == {e1}
    with pytest.raises(NotCutover):
        t.complete_reshard(halves)
    t.enter_cutover_all(halves)
    with pytest.raises(NotMigrating):                      # a reshard is not completed as a move
        t.complete_migration("slot-0-of-2")
    seen.clear()
    e3 = t.complete_reshard(halves)
    assert t.partitions() == {"slot-0": (PlacementTable({"x": "a"}).state("x")[0], e3)}
    assert sorted(seen) == [("slot-0", Phase.ACTIVE, e3), ("slot-0-of-2", None, e3), ("slot-1-of-2", None, e3)]
