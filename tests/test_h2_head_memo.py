"""A connection remembers its last good request head (``H2Exchange`` in stream.py: a client sends
the same fields on every call, so the same checks' answers are reused): the body's length is
still checked per stream, and a head that differs in any field is checked in full — on a real
sidecar in front of an HTTP/1.1 node, each engine in turn."""

from __future__ import annotations

import pytest

from sidecar.proxy.h2 import engine
from tests._h2_engines import h2_checks_off, use_engine
from tests._hostile import H11Upstream
from tests._sidecar_util import config, running_sidecar, write_placement
from tests.test_h2_desync import Client

HEAD = [(b":method", b"POST"), (b":path", b"/kv/k"), (b":authority", b"app"), (b":scheme", b"http"),
        (b"x-partition-key", b"t1"), (b"content-type", b"text/plain"), (b"content-length", b"4")]


@pytest.mark.parametrize("h2_checks", ["ngh2", "h2", "off"])
async def test_a_repeated_head_is_checked_per_stream(tmp_path, monkeypatch, h2_checks):
    if h2_checks == "off":   # (h2 without its own checks: the sidecar's alone refuse)
        h2_checks_off(monkeypatch)
    else:
        monkeypatch.setitem(engine._state, "engine", engine.get())  # (restored after the test)
        use_engine(h2_checks)
    a = await H11Upstream("a").start()
    try:
        p = write_placement(tmp_path / "p.toml", {"a": a.url}, {"t1": "a"})
        async with running_sidecar(config(p, read_timeout=2.0)) as sc:
            c = await Client().open(sc.port)
            try:
                got = []
                # 1: a good head and its body; 3: the same head ended at once (content-length 4,
                # no body: malformed); 5: the same good head; 7: the same head, one field with CR/LF
                # (h2 ends the connection for it: last)
                for sid in (1, 3, 5):
                    c.conn.send_headers(sid, HEAD, end_stream=sid == 3)
                    if sid != 3:
                        c.conn.send_data(sid, b"body", end_stream=True)
                    c.flush()
                    got.append(await c.until_done(sid))
                c.conn.send_headers(7, HEAD[:-2] + [(b"content-type", b"text/plain\r\nx-evil: 1"), HEAD[-1]])
                c.conn.send_data(7, b"body", end_stream=True)
                c.flush()
                try:
                    got.append(await c.until_done(7))
                except ConnectionError:
                    got.append("closed")
            finally:
                await c.close()
            await a.quiet()
        assert got[0] == got[2] == "status 200", got
        assert got[1] in ("status 400", "reset 1"), got   # (libnghttp2 resets a malformed stream itself)
        assert got[3] in ("status 400", "reset 1", "closed"), got
        assert [(s.method, s.target) for s in a.seen] == [("POST", "/kv/k")] * 2, a.seen
        assert a.errors == []
    finally:
        await a.stop()


@pytest.mark.parametrize("name", ["ngh2", "h2"])
async def test_a_repeated_head_is_routed_by_its_own_fields(tmp_path, monkeypatch, name):
    """The routing remembered with the head (partition, kind, target) is reused only for the very
    same fields: a head differing in its partition key goes to that key's node; a mover hook
    path is refused every time."""
    monkeypatch.setitem(engine._state, "engine", engine.get())
    use_engine(name)
    a, b = await H11Upstream("a").start(), await H11Upstream("b").start()
    try:
        p = write_placement(tmp_path / "p.toml", {"a": a.url, "b": b.url}, {"t1": "a", "t2": "b"})
        async with running_sidecar(config(p, read_timeout=2.0)) as sc:
            c = await Client().open(sc.port)
            got = []
            try:
                heads = [HEAD, HEAD, [(k, b"t2" if k == b"x-partition-key" else v) for k, v in HEAD], HEAD]
                hook = [(k, b"/_epochgate/export?partition=t1" if k == b":path" else v) for k, v in HEAD]
                for i, fields in enumerate(heads + [hook, hook]):
                    sid = 2 * i + 1
                    c.conn.send_headers(sid, fields)
                    c.conn.send_data(sid, b"body", end_stream=True)
                    c.flush()
                    got.append(await c.until_done(sid))
            finally:
                await c.close()
            await a.quiet()
            await b.quiet()
        assert got == ["status 200"] * 4 + ["status 404"] * 2, got
        assert len(a.seen) == 3 and len(b.seen) == 1, (a.seen, b.seen)
    finally:
        await a.stop()
        await b.stop()
