"""Issue 26 findings 3, 8, 9: what an HTTP/2 request head may carry to a node.

Each hostile head below goes on its own connection to a real sidecar in front
of h11 nodes (a strict HTTP/1.1 parser other than ours) and must be refused —
400 on its stream, a reset, or GOAWAY — with nothing reaching a node. The
sidecar runs three times: on each HTTP/2 engine with its own inbound checks (libnghttp2,
h2), and on ``h2`` with them switched off (an ``h2`` release without them: before 4.3.0
CR/LF/NUL passed; jh2 passes them still), which shows the sidecar's own checks
(``sidecar/proxy/h2/fields.py``) carry the refusal.
Finding 9: request trailers reach no node, ``h2c://`` ones included.
"""

from __future__ import annotations

import asyncio

import h2.config
import h2.connection
import h2.events
import pytest

from sidecar.proxy.h2 import engine
from tests._h2_engines import h2_checks_off, use_engine
from tests._h2_util import H2Upstream
from tests._hostile import SMUGGLED_T1, H11Upstream, send_raw, statuses
from tests._sidecar_util import config, running_sidecar, write_placement
from tests.test_h2_desync import Client

CRLF_VALUE = b"1\r\n\r\n" + SMUGGLED_T1
BASE = [(b":method", b"GET"), (b":path", b"/kv/k"), (b":authority", b"app"), (b":scheme", b"http"),
        (b"x-partition-key", b"t1")]


def _with(name: bytes, value: bytes) -> list[tuple[bytes, bytes]]:
    if name[:1] == b":":
        return [(k, value if k == name else v) for k, v in BASE]
    return BASE + [(name, value)]


HOSTILE = {
    "value CR/LF": _with(b"x-a", CRLF_VALUE),
    "value LF": _with(b"x-a", b"1\nPUT /kv/smuggled HTTP/1.1"),
    "value NUL": _with(b"x-a", b"a\x00b"),
    "value other control": _with(b"x-a", b"a\x0bb"),
    "value leading space": _with(b"x-a", b" a"),
    "value trailing tab": _with(b"x-a", b"a\t"),
    "name upper case": _with(b"X-A", b"1"),
    "name with space": _with(b"x a", b"1"),
    "name with colon": _with(b"x:a", b"1"),
    "name with CR/LF": _with(b"x-a\r\nput /kv/smuggled", b"1"),
    "name not a token": _with(b"x(a)", b"1"),
    "connection": _with(b"connection", b"keep-alive"),
    "transfer-encoding": _with(b"transfer-encoding", b"chunked"),
    "upgrade": _with(b"upgrade", b"h2c"),
    "te not trailers": _with(b"te", b"gzip"),
    "content-length not a number": _with(b"content-length", b"1, 2"),
    ":method with a space": _with(b":method", b"GET /kv/k HTTP/1.1\r\nX:"),
    ":method not a token": _with(b":method", b"G(T"),
    ":method missing": [x for x in BASE if x[0] != b":method"],
    ":path with a space": _with(b":path", b"/kv/k HTTP/1.1"),
    ":path with \\x0b": _with(b":path", b"/kv/k\x0bHTTP/1.1"),
    ":path hook after a space": _with(b":path", b"/kv/k /_epochgate/export"),
    ":path hook after \\x0b": _with(b":path", b"/x\x0b/_epochgate/export?partition=t1"),
    ":path with CR/LF": _with(b":path", b"/kv/k HTTP/1.1\r\n\r\n" + SMUGGLED_T1),
    ":path non-ASCII": _with(b":path", "/kv/é".encode()),
    ":path absolute-form": _with(b":path", b"http://app/kv/k"),
    ":path asterisk for GET": _with(b":path", b"*"),
    ":path missing": [x for x in BASE if x[0] != b":path"],
    ":authority with CR/LF": _with(b":authority", b"app\r\nx-placement-epoch: 9"),
    ":authority with userinfo": _with(b":authority", b"u@app"),
    "unknown pseudo-header": BASE + [(b":evil", b"1")],
    "pseudo-header after a field": [*BASE[:4], (b"x-a", b"1"), (b":path", b"/kv/k"), BASE[4]],
    "pseudo-header twice": [(b":method", b"PUT"), *BASE],
}


async def _outcome(port: int, fields: list[tuple[bytes, bytes]]) -> str:
    c = await Client().open(port)
    try:
        c.conn.send_headers(1, fields, end_stream=True)
        c.flush()
        return await c.until_done(1)
    except ConnectionError:
        return "goaway" if any(isinstance(e, h2.events.ConnectionTerminated) for e in c.events) else "closed"
    finally:
        await c.close()


@pytest.fixture
async def nodes():
    a, b = await H11Upstream("a").start(), await H11Upstream("b").start()
    yield a, b
    await a.stop()
    await b.stop()


@pytest.mark.parametrize("h2_checks", ["ngh2", "h2", "off"])
async def test_hostile_heads_are_refused_and_reach_no_node(tmp_path, nodes, monkeypatch, h2_checks):
    if h2_checks == "off":
        h2_checks_off(monkeypatch)
    else:
        monkeypatch.setitem(engine._state, "engine", engine.get())  # (restored after the test)
        use_engine(h2_checks)
    a, b = nodes
    p = write_placement(tmp_path / "p.toml", {"a": a.url, "b": b.url}, {"t1": "a", "t2": "b"})
    async with running_sidecar(config(p, upstream_idle=0.3, read_timeout=2.0)) as sc:
        got = {}
        for name, fields in HOSTILE.items():
            got[name] = await _outcome(sc.port, fields)
        wrong = {k: v for k, v in got.items() if v not in ("status 400", "reset 1", "goaway")}
        assert wrong == {}, wrong
        assert await _outcome(sc.port, BASE + [(b"x-ok", b"a\tb c")]) == "status 200"  # inner SP/HTAB are fine
        await a.quiet()
        await b.quiet()
    assert a.errors == [] and b.errors == []
    assert [(s.method, s.target) for s in a.seen] == [("GET", "/kv/k")], a.seen
    assert b.seen == []


async def test_request_trailers_reach_no_node(tmp_path, nodes):
    """Finding 9: trailers (stamp names among them) sent by an HTTP/2 client go neither to an
    ``h2c://`` node nor to an HTTP/1.1 one; the request itself arrives stamped once."""
    a, _ = nodes
    up = await H2Upstream("c").start()
    try:
        p = write_placement(tmp_path / "p.toml", {"a": a.url, "c": up.url}, {"t1": "a", "t3": "c"})
        async with running_sidecar(config(p, upstream_idle=0.3)) as sc:
            for part in ("t3", "t1"):
                c = await Client().open(sc.port)
                c.conn.send_headers(1, [(b":method", b"POST"), (b":path", b"/echo"), (b":authority", b"app"),
                                        (b":scheme", b"http"), (b"x-partition-key", part.encode()),
                                        (b"te", b"trailers")])
                c.conn.send_data(1, b"body")
                c.conn.send_headers(1, [(b"x-placement-epoch", b"99"), (b"x-partition", b"t2"),
                                        (b"x-trailer", b"evil")], end_stream=True)
                c.flush()
                assert await c.until_done(1) == "status 200"
                await c.close()
            # and an HTTP/1.1 client's chunked trailers to the h2c node (the bridge): dropped too
            out = await send_raw(sc.port, b"POST /echo HTTP/1.1\r\nHost: app\r\nX-Partition-Key: t3\r\n"
                                 b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n4\r\nbody\r\n0\r\n"
                                 b"X-Placement-Epoch: 99\r\nX-Partition: t2\r\n\r\n")
            assert statuses(out) == [200], out
            await a.quiet()
            epochs = {p: str(int(sc.source.state(p)[1])) for p in ("t1", "t3")}
        seen, from_h1 = up.seen
        assert from_h1["trailers"] is None and from_h1["len"] == 4
        assert [v for k, v in from_h1["fields"] if k == "x-placement-epoch"] == [epochs["t3"]]
        assert seen["trailers"] is None, seen["trailers"]
        assert seen["len"] == 4
        stamp = [(k, v) for k, v in seen["fields"] if k.startswith("x-placement") or k == "x-partition"]
        assert sorted(stamp) == [("x-partition", "t3"), ("x-placement", "c"), ("x-placement-epoch", epochs["t3"])], stamp
        [h1] = a.seen
        assert h1.body == b"body" and h1.header("x-trailer") == [] and h1.header("x-placement-epoch") == [epochs["t1"]]
    finally:
        await up.stop()
