"""Pure-logic units of the sidecar: in-flight tracker, write gate (injected clock), key rules, config."""

from __future__ import annotations

import asyncio

import pytest

from gate import ConfigError, InflightTracker, PlacementTable, RejectReason
from sidecar._config import SidecarConfig
from sidecar.proxy.router import KeyError400, Router, slot_of
from sidecar.proxy.writegate import WriteGate
from tests._sidecar_util import ManualClock


class StaleableSource(PlacementTable):
    """A table with a ``last_read`` the test controls (what a replica exposes)."""

    last_read: float | None = None


async def test_tracker_waits_only_for_older_epochs():
    t = InflightTracker()
    t.begin("p", 3)
    t.begin("p", 3)
    t.begin("p", 5)
    t.begin("q", 1)
    assert t.count() == 4 and t.count("p") == 3
    assert t.drained("p", 3) and not t.drained("p", 4)
    waiter = asyncio.create_task(t.wait_drained("p", 4))
    await asyncio.sleep(0)
    t.end("p", 3)
    await asyncio.sleep(0)
    assert not waiter.done()
    t.end("p", 3)
    assert await asyncio.wait_for(waiter, 1) is True
    assert await t.wait_drained("p", 6, timeout=0.01) is False  # epoch 5 still in flight
    t.end("p", 5)
    t.end("p", 5)  # unmatched end is ignored
    assert t.count("p") == 0 and t.count() == 1
    # a partition whose writes all ended is drained at any epoch, and counts again from 0
    assert t.drained("p", 100) and await t.wait_drained("p", 100, timeout=0.01) is True
    t.begin("p", 7)
    assert t.count("p") == 1 and t.drained("p", 7) and not t.drained("p", 8)
    t.end("p", 7)
    assert t.count("p") == 0 and t.count() == 1 and t.drained("p", 8)


def test_writegate_fails_closed_after_lease_and_recovers():
    clock = ManualClock()
    src = StaleableSource({"p": "a"})
    src.last_read = clock.t
    tracker = InflightTracker()
    gate = WriteGate(src, tracker, lease_s=5.0, clock=clock)
    epoch = src.get("p").epoch
    assert gate.admit("p", epoch) and tracker.count("p") == 1
    gate.done("p", epoch)
    clock.t += 4.9
    assert gate.writable() and gate.ready()
    clock.t += 0.2  # last read now 5.1 s old
    r = gate.admit("p", epoch)
    assert not r and r.reason is RejectReason.FAIL_CLOSED and r.current.placement == "a"
    assert not gate.ready() and tracker.count() == 0
    assert src.get("p").placement == "a"  # reads still answer from the last table
    src.last_read = clock.t  # the store answered again
    assert gate.admit("p", epoch)


def test_writegate_refuses_no_tracker():
    """Compiled, the tracker is a typed field called through its vtable: None must be refused at
    construction (a clear TypeError), never reach admit (a NULL vtable), on either build."""
    with pytest.raises(TypeError, match="InflightTracker"):
        WriteGate(PlacementTable({"p": "a"}), None)  # type: ignore[arg-type]


def test_writegate_calls_a_tracker_subclass_override():
    """A Python subclass of the (compiled) tracker overriding begin/end is still what the
    compiled write gate calls (cpdef dispatch), so a subclass sees every write."""
    seen = []

    class Recording(InflightTracker):
        def begin(self, p, epoch):
            seen.append(("begin", p, epoch))
            super().begin(p, epoch)

        def end(self, p, epoch):
            seen.append(("end", p, epoch))
            super().end(p, epoch)

    src = PlacementTable({"p": "a"})
    tracker = Recording()
    gate = WriteGate(src, tracker)
    epoch = src.get("p").epoch
    assert gate.admit("p", epoch) and tracker.count("p") == 1
    gate.done("p", epoch)
    assert seen == [("begin", "p", epoch), ("end", "p", epoch)] and tracker.count() == 0


def test_writegate_guards_and_close():
    src = PlacementTable({"p": "a"})
    gate = WriteGate(src, InflightTracker())
    flag = [True]
    remove = gate.add_guard(lambda: flag[0])
    assert gate.admit("p", src.get("p").epoch)
    flag[0] = False
    assert gate.admit("p", src.get("p").epoch).reason is RejectReason.FAIL_CLOSED
    remove()
    assert gate.writable()
    gate.close()
    assert not gate.ready() and gate.writable()
    src.begin_migration("p", "b")
    old = src.get("p").epoch
    src.enter_cutover("p")
    assert gate.admit("p", old).reason is RejectReason.CUTOVER


def test_router_rules():
    r = Router(["header:X-Tenant", r"path:^/t/(?P<partition>[^/]+)", "query:tenant", "host"])
    assert r.partition("/t/acme/x", None, {}, None) == "acme"
    assert r.partition("/x", "tenant=zed", {}, None) == "zed"
    assert r.partition("/x", None, {}, "Shop.Example:8080") == "shop.example"
    assert r.partition("/t/acme", None, {b"x-tenant": b"acme"}, None) == "acme"
    with pytest.raises(KeyError400) as ei:
        r.partition("/t/acme", None, {b"x-tenant": b"other"}, None)
    assert "header:X-Tenant" in ei.value.detail and "path:" in ei.value.detail
    with pytest.raises(KeyError400, match="different values"):
        Router(["query:t"]).partition("/", "t=a&t=b", {}, None)
    with pytest.raises(KeyError400) as ei:
        Router(["header:X-Tenant"]).partition("/", None, {}, None)
    assert ei.value.title == "missing partition key"


def test_hash_slots_and_route_rules():
    r = Router(["header:X-K"], ["POST ^/search=read", "* ^/admin/=write"], hash_slots=16)
    p = r.partition("/", None, {b"x-k": b"user-42"}, None)
    assert p == slot_of("user-42", 16) and p.startswith("slot-") and 0 <= int(p[5:]) < 16
    assert not r.is_write("POST", "/search/q")
    assert r.is_write("GET", "/admin/x")
    assert r.is_write("DELETE", "/x") and not r.is_write("GET", "/x")


@pytest.mark.parametrize("kw, field", [
    ({"partition_from": ("cookie:x",)}, "partition_from[0]"),
    ({"route": ("GET /x=maybe",)}, "route[0]"),
    ({"hold_max": -1}, "hold_max"),
    ({"log_format": "xml"}, "log_format"),
    ({"lease_seconds": 9.0}, "lease_seconds"),
    ({"consul": "http://127.0.0.1:8500"}, "consul"),
    ({"admin": "127.0.0.1"}, "admin"),
    ({"push_from": "127.0.0.1:50051"}, "push_from"),   # no Consul fleet to follow
])
def test_config_validation_names_field(kw, field):
    with pytest.raises(ConfigError) as ei:
        SidecarConfig(placement="p.toml", **kw)
    assert ei.value.field == field


@pytest.mark.parametrize("value", ["nothing", "controller", "127.0.0.1:0", "host:port"])
def test_a_push_address_that_cannot_be_dialled_is_refused_at_start(value):
    with pytest.raises(ConfigError) as ei:   # else only redials in the background would show it
        SidecarConfig(consul="http://127.0.0.1:8500", push_from=value)
    assert ei.value.field == "push_from"


def test_config_round_trips_for_workers():
    cfg = SidecarConfig(placement="p.toml", node=("a=http://127.0.0.1:1",), workers=2, route=("GET ^/x=write",))
    assert SidecarConfig.from_json(cfg.to_json()) == cfg
    assert cfg.nodes() == {"a": "http://127.0.0.1:1"}


def test_access_log_lines_text_and_json():
    """Queued rows become one line each; the cached middle of a text line never leaks
    between requests that differ in path, status or decision."""
    import io
    import json

    from sidecar._log import AccessLog

    rows = [("10.0.0.1", "GET", b"/kv/a", "t1", "active", 3, "read", 200, 0.00035, 0.00168, b"r-1", "a"),
            ("10.0.0.1", "GET", b"/kv/b", "t1", "active", 3, "read", 200, 0.00135, 0.00268, b"r-2", "a"),
            ("10.0.0.1", "GET", b"/kv/a", "t1", "active", 3, "read", 404, 0.001, 0.002, b"r-3", "a"),
            ("10.0.0.1", "POST", b"/kv/a", "", "none", 0, "-", 499, 0.0, 0.001, None, "")]
    text = io.StringIO()
    log = AccessLog("text", text)
    log.tick()
    for r in rows:
        log.write(*r)
    log.flush()
    lines = text.getvalue().splitlines()
    assert len(lines) == 4
    assert lines[0].endswith('10.0.0.1 "GET /kv/a" 200 partition=t1 phase=active epoch=3 decision=read upstream=a '
                             'up_ms=0.35 total_ms=1.68 rid=r-1')
    assert '"GET /kv/b" 200' in lines[1] and "up_ms=1.35 total_ms=2.68 rid=r-2" in lines[1]
    assert '"GET /kv/a" 404' in lines[2] and "rid=r-3" in lines[2]
    assert lines[3].endswith('"POST /kv/a" 499 partition=- phase=none epoch=0 decision=- upstream=- '
                             'up_ms=0.00 total_ms=1.00 rid=-')
    js = io.StringIO()
    log = AccessLog("json", js)
    for r in rows:
        log.write(*r)
    log.flush()
    docs = [json.loads(x) for x in js.getvalue().splitlines()]
    assert [d["path"] for d in docs] == ["/kv/a", "/kv/b", "/kv/a", "/kv/a"]
    assert docs[1]["request_id"] == "r-2" and docs[3]["request_id"] == "-" and docs[0]["upstream_ms"] == 0.35


def test_access_log_times_are_percent_2f_on_both_builds():
    """The compiled access log writes ``up_ms``/``total_ms`` from integers (``_log._cents``, issue 30):
    the text must be exactly ``%.2f``'s, ties (0.125 → 0.12, 0.375 → 0.38), zero, huge and odd
    values included (this file runs on the plain build too)."""
    import io
    import random

    from sidecar._log import AccessLog

    rnd = random.Random(30)
    secs = [0.0, 1e-9, 0.000005, 0.000015, 0.000125, 0.000375, 0.000625, 0.000875, 0.001005, 0.0012345,
            0.5, 1.0, 12345.678, 1e6, 1e7, 1e12, -0.001, float("inf")]
    secs += [rnd.uniform(0, 0.01) for _ in range(2000)] + [rnd.uniform(0, 30) for _ in range(500)]
    secs += [k / 100000 for k in range(0, 2000)]  # every hundredth of a millisecond up to 20 ms
    secs += [(k + 0.5) / 100000 for k in range(0, 2000)]  # and every (near-)tie between them
    text = io.StringIO()
    log = AccessLog("text", text)
    for i, v in enumerate(secs):
        log.write("c", "GET", b"/p", "t1", "active", 1, "read", 200, v, secs[-1 - i], b"r", "a")
    log.flush()
    got = [(ln.split("up_ms=")[1].split(" ")[0], ln.split("total_ms=")[1].split(" ")[0])
           for ln in text.getvalue().splitlines()]
    assert got == [("%.2f" % (v * 1000), "%.2f" % (secs[-1 - i] * 1000)) for i, v in enumerate(secs)]
    from sidecar._log import _cents  # the helper itself, on whichever build runs
    decided = [(v, _cents(v * 1000)) for v in secs if _cents(v * 1000) >= 0]
    assert len(decided) > 4000
    assert all("%d.%02d" % divmod(k, 100) == "%.2f" % (v * 1000) for v, k in decided)


def test_stats_buckets_match_bisect_on_both_builds():
    """``Stats.record`` finds a bucket with a typed loop when compiled (issue 30): the counts must
    be exactly ``bisect_left``'s, bucket edges included (this file runs on the plain build too)."""
    import random
    from bisect import bisect_left

    from sidecar._metrics import Metrics
    from sidecar.proxy.stats import Stats

    s = Stats(Metrics())
    b = s.bounds
    rnd = random.Random(30)
    values = list(b[:-1]) + [0.0, 1e-9, 1e9] + [rnd.uniform(0, 2 * b[-2]) for _ in range(300)]
    want = [0] * len(b)
    for v in values:
        s.record(False, "none", "ok", 1.0, 0.0, 0.0, 0.0, 1.0 + v)  # only the total stage
        want[bisect_left(b, (1.0 + v) - 1.0)] += 1
    assert s.hist_r[3].counts == want
