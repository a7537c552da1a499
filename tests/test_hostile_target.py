"""Hostile input — the request target and the regex rules (issue 15, Medium/Low).

With ``GET ^/admin/reset$=write`` every spelling of that path a typical
application treats as ``/admin/reset`` must be classified a write (and so be
gated), absolute-form must go upstream in origin-form, and no rule may be run
on an unbounded path or with a pattern that backtracks exponentially.
"""

from __future__ import annotations

import pytest

from gate import ConfigError
from sidecar._config import SidecarConfig
from sidecar.proxy.rules import ENGINE, compile_rule
from tests._hostile import h11_nodes, hostile_sidecar, send_raw, statuses  # noqa: F401

HEAD = b"Host: app\r\nX-Partition-Key: t1\r\nConnection: close\r\n"
SPELLINGS = [b"/admin/reset", b"/admin/rese%74", b"/%61dmin/reset", b"//admin/reset", b"/./admin/reset",
             b"/x/../admin/reset", b"/admin/./reset", b"/%2e/admin/reset", b"http://app/admin/reset",
             b"HTTP://app/admin//reset", b"/admin/reset#frag"]


@pytest.mark.parametrize("target", SPELLINGS, ids=[s.decode() for s in SPELLINGS])
async def test_every_spelling_of_a_write_route_is_gated(tmp_path, h11_nodes, target):
    async with hostile_sidecar(tmp_path, h11_nodes, route=("GET ^/admin/reset$=write",), hold_max=0) as sc:
        await sc.store.begin("t1", "b")
        await sc.store.enter_cutover("t1")  # writes to t1 are refused
        out = await send_raw(sc.port, b"GET " + target + b" HTTP/1.1\r\n" + HEAD + b"\r\n")
        assert statuses(out) == [503], out
        assert b"stale-epoch" in out
        ok = await send_raw(sc.port, b"GET /admin/other HTTP/1.1\r\n" + HEAD + b"\r\n")  # a read still passes
        assert statuses(ok) == [200]
        a = h11_nodes[0]
        await a.wait_requests(1)
        assert [s.target for s in a.seen] == ["/admin/other"]


async def test_absolute_form_goes_upstream_in_origin_form(tmp_path, h11_nodes):
    async with hostile_sidecar(tmp_path, h11_nodes, partition_from=("host",)) as sc:
        out = await send_raw(sc.port, b"GET http://t2/p/./q?x=1 HTTP/1.1\r\nHost: t1\r\nConnection: close\r\n\r\n")
        assert statuses(out) == [200], out
        b = h11_nodes[1]
        await b.wait_requests(1)
        [seen] = b.seen
        assert seen.target == "/p/q?x=1"
        assert seen.header("x-forwarded-host") == ["t2"]  # the target's authority, not the Host header
        assert h11_nodes[0].seen == []


async def test_asterisk_form(tmp_path, h11_nodes):
    async with hostile_sidecar(tmp_path, h11_nodes) as sc:
        bad = await send_raw(sc.port, b"GET * HTTP/1.1\r\n" + HEAD + b"\r\n")
        assert statuses(bad) == [400], bad
        ok = await send_raw(sc.port, b"OPTIONS * HTTP/1.1\r\n" + HEAD + b"\r\n")
        assert statuses(ok) == [200], ok
        a = h11_nodes[0]
        await a.wait_requests(1)
        assert [(s.method, s.target) for s in a.seen] == [("OPTIONS", "*")]


@pytest.mark.parametrize("target", [b"/a%zz", b"/a%2", b"ftp://app/x", b"http://user@app/x", b"http:///x"])
async def test_malformed_targets_are_refused(tmp_path, h11_nodes, target):
    async with hostile_sidecar(tmp_path, h11_nodes) as sc:
        out = await send_raw(sc.port, b"GET " + target + b" HTTP/1.1\r\n" + HEAD + b"\r\n")
        assert statuses(out) == [400], out
    assert h11_nodes[0].seen == []


async def test_a_target_longer_than_the_bound_never_reaches_a_rule(tmp_path, h11_nodes):
    """An unanchored rule over a long path is what stalls a backtracking engine: the path a
    rule sees is bounded (414)."""
    async with hostile_sidecar(tmp_path, h11_nodes, route=("POST /x/.*y=read",), max_path_bytes=4096,
                               max_header_bytes=65536) as sc:
        out = await send_raw(sc.port, b"GET /" + b"x/" * 8192 + b" HTTP/1.1\r\n" + HEAD + b"\r\n")
        assert statuses(out) == [414], out
    assert h11_nodes[0].seen == []


@pytest.mark.parametrize("pattern", [r"(a+)+$", r"^/(\w*/)*x", r"(?:/[a-z]+)*z", r"((ab)*c)*"])
def test_nested_quantifiers_are_refused_by_the_backtracking_engine(pattern):
    with pytest.raises(ConfigError, match="route.0.*nested quantifier"):
        compile_rule(pattern, "route[0]", engine="re")


@pytest.mark.skipif(ENGINE != "re2", reason="google-re2 not importable")
def test_with_re2_rules_run_on_the_linear_time_engine():
    import re2

    rx = compile_rule(r"(a+)+$", "route[0]")
    assert type(rx).__module__.startswith("re2")
    assert rx.search("a" * 50000 + "!") is None  # linear: returns at once
    with pytest.raises(ConfigError, match="route.0.*linear-time engine"):
        compile_rule(r"(a)\1", "route[0]")
    assert re2 is not None


def test_rules_are_checked_at_start(tmp_path):
    p = tmp_path / "p.toml"
    p.write_text('[nodes]\na = "http://127.0.0.1:1"\n[partitions]\nt1 = "a"\n')
    base = dict(placement=str(p), listen="127.0.0.1:0", admin="127.0.0.1:0", control="127.0.0.1:0")
    with pytest.raises(ConfigError, match=r"route\[0\]"):
        SidecarConfig(**base, route=(r"GET (?<=x)a=write",) if ENGINE == "re2" else (r"GET (a+)+$=write",))
    with pytest.raises(ConfigError, match=r"partition_from\[0\]"):
        SidecarConfig(**base, partition_from=(r"path:^/(?P<partition>\w+)(?=/)",) if ENGINE == "re2"
                      else (r"path:^/(?P<partition>(\w+)+)",))


# plain_target lets the usual request skip is_hook_path and normalize (issue 30): every target it
# passes must be one those two would have passed unchanged, on the compiled build's C loop and on
# the plain build's find() calls alike (this file runs on both, see test_build_modes.PURE_SUBSET)
PLAIN_NOT = [b"/_epochgate/jobs", b"/kv/_EpochGate/x", b"/EPOCHGATE", b"/a/./b", b"/a/../b", b"/a//b", b"//a",
             b"/a%41", b"/a#f", b"*", b"http://h/a", b"", b"a/b", b"/" + b"a" * 64]


@pytest.mark.parametrize("target", PLAIN_NOT, ids=[s.decode() or "empty" for s in PLAIN_NOT])
def test_plain_target_refuses_what_needs_a_closer_look(target):
    from sidecar.proxy.target import plain_target

    assert not plain_target(target, 64)


def test_plain_target_passes_only_what_normalize_and_the_hook_check_pass():
    from hypothesis import given, settings, strategies as st

    from sidecar.proxy.hookpath import is_hook_path
    from sidecar.proxy.target import normalize, plain_target

    assert plain_target(b"/kv/bench?x=1&e=epochgat", 64)  # the fast path is taken at all

    @settings(max_examples=400, deadline=None, derandomize=True)
    @given(st.lists(st.sampled_from([b"/", b".", b"%", b"#", b"?", b"e", b"E", b"pochgate", b"POCHGATE", b"_", b"a",
                                     b"\\", b"%2e", b"%5f"]), max_size=12))
    def check(parts):
        url = b"".join(parts)
        if plain_target(url, 40):
            assert not is_hook_path(url) and normalize(url, "GET", 40) == (url, None, None), url

    check()
