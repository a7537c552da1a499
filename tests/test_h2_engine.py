"""The HTTP/2 engine seam (sidecar/proxy/h2/engine.py): which engine runs, and what the
libnghttp2 adapter (engine_ng.py) adds so it behaves as the sidecar needs.

* ``EPOCHGATE_PURE_PYTHON`` (``1``, or a list naming ``proxy.h2``) forces pure h2, without
  forcing the data path for ``proxy.h2`` alone; ngh2 runs when importable; the choice is
  made without importing either library, and the start-up log names it; an ngh2 that
  fails to import leaves h2 running, with a warning;
* on libnghttp2: a stream the library resets itself (DATA short of content-length) ends
  the exchange, nothing waits for it, and the next stream on the connection is served;
  a write answered before its body ended still gets its answer before the RST_STREAM
  NO_ERROR (RFC 9113 §8.1).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import h2.events
import pytest

from sidecar.proxy.h2 import engine
from tests._h2_util import H2Upstream
from tests._sidecar_util import config, running_sidecar, until, write_placement
from tests.test_h2_desync import Client, head

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("value, h2, data_path_forced", [
    ("1", "h2", True), ("proxy.h2", "h2", False), ("proxy.conn,proxy.h2", "h2", True), ("0", None, False),
    ("", None, False), ("proxy.conn", None, True)])
def test_pure_python_env_forces_the_h2_engine(monkeypatch, value, h2, data_path_forced):
    from sidecar import _build

    monkeypatch.setenv("EPOCHGATE_PURE_PYTHON", value)
    # (the binding's own status was decided at import, from the environment then: see the
    # subprocess test below for EPOCHGATE_PURE_PYTHON refusing it)
    want = h2 or _default()
    assert engine.choice() == want
    assert bool(_build.forced_pure() & set(_build.COMPILED)) == data_path_forced


def _ngh2() -> bool:
    import importlib.util

    return importlib.util.find_spec("ngh2") is not None


def _default() -> str:
    """What runs by default here: the binding when built and compiled, else ngh2 when installed, else h2."""
    return "nghttp2" if engine._nghttp2_status() == "ok" else "ngh2" if _ngh2() else "h2"


def test_the_engine_order_is_the_binding_then_ngh2_then_h2(monkeypatch):
    """Built and loadable: the binding; not (no libnghttp2-dev at build time, or the connection base
    runs as Python): ngh2 when installed; else h2 — each decided without importing anything."""
    import importlib.util

    monkeypatch.delenv("EPOCHGATE_PURE_PYTHON", raising=False)
    monkeypatch.setattr(engine, "_nghttp2_status", lambda: "ok")
    assert engine.choice() == "nghttp2"
    monkeypatch.setattr(engine, "_nghttp2_status", lambda: "not built (needs libnghttp2-dev at build time)")
    assert engine.choice() == ("ngh2" if _ngh2() else "h2")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert engine.choice() == "h2"


def test_the_binding_refused_by_the_build_guard_is_not_chosen():
    """EPOCHGATE_PURE_PYTHON naming the binding (or ``proxy.h2``, or ``1``) refuses it: its import
    fails cleanly and the next engine runs; named alone it leaves the data path compiled."""
    code = ("import sidecar, sidecar._build as b, sidecar.proxy.h2.server, sidecar.proxy.h2.engine as e\n"
            "print(e.choice(), b.info()['native'].get('sidecar.proxy.h2.engine_nghttp2'))\n"
            "try:\n    import sidecar.proxy.h2.engine_nghttp2\nexcept ImportError as x:\n    print(type(x).__name__)\n"
            "else:\n    print('loaded')")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("EPOCHGATE_PURE_PYTHON", None)
    base = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert base.returncode == 0, base.stderr
    if not base.stdout.startswith("nghttp2 ok"):
        pytest.skip(f"the libnghttp2 binding is not built here: {base.stdout.split()}")
    assert base.stdout.split()[-1] == "loaded"
    for value in ("proxy.h2.engine_nghttp2", "proxy.h2", "1"):
        env["EPOCHGATE_PURE_PYTHON"] = value
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
        assert r.returncode == 0, r.stderr
        chosen, status, imported = r.stdout.split()
        assert chosen == ("h2" if value != "proxy.h2.engine_nghttp2" else "ngh2" if _ngh2() else "h2"), value
        assert status == "EPOCHGATE_PURE_PYTHON" and imported == "ModuleNotFoundError", value


def test_choice_imports_neither_library_and_the_start_log_names_it():
    code = ("import sys, sidecar.proxy.h2.engine as e; d = e.describe(); "
            "print(d); print('h2' in sys.modules, 'ngh2' in sys.modules, 'sidecar.proxy.h2.engine_nghttp2' in sys.modules);"
            "print(e.choice())")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("EPOCHGATE_PURE_PYTHON", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    line, loaded, chosen = out.stdout.splitlines()
    assert loaded == "False False False"
    if chosen == "nghttp2":   # (its environment's choice: this process may run with EPOCHGATE_PURE_PYTHON)
        assert line.startswith("nghttp2 (libnghttp2") and line.endswith(", the sidecar's binding, compiled)"), line
    elif chosen == "ngh2":
        assert line.startswith("ngh2 (libnghttp2, compiled"), line
    else:
        assert line.startswith("h2 (pure Python: ngh2 is not installed: pip install 'epochgate[ngh2]'"), line
    env["EPOCHGATE_PURE_PYTHON"] = "proxy.h2"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.stdout.splitlines()[0] == "h2 (pure Python: EPOCHGATE_PURE_PYTHON is set)"


@pytest.mark.parametrize("broken,error,expect_log,expect_describe", [
    # ngh2 installed but broken (a wheel for another ABI, say): h2 runs
    ("ngh2", "undefined symbol: nghttp2_session_mem_recv2", "ngh2 failed to import: undefined symbol",
     "h2 (pure Python: ngh2 failed to import: undefined symbol: nghttp2_session_mem_recv2)"),
    # the binding built against another libnghttp2 than the one installed: the next engine runs
    ("nghttp2", "libnghttp2.so.14: cannot open shared object file",
     "the libnghttp2 engine failed to import (libnghttp2.so.14: cannot open", "failed to import: libnghttp2.so.14"),
])
def test_an_engine_that_fails_to_import_falls_back_to_the_next_with_a_warning(
        monkeypatch, caplog, broken, error, expect_log, expect_describe):
    """An engine that is there but does not load: the next one runs, and the log and the start-up
    line say why."""
    real = engine._load

    def load(name):
        if name == broken:
            raise ImportError(error)
        return real(name)

    monkeypatch.delenv("EPOCHGATE_PURE_PYTHON", raising=False)
    monkeypatch.setattr(engine, "choice", lambda: broken)
    monkeypatch.setattr(engine, "_load", load)
    monkeypatch.setitem(engine._state, "engine", None)
    monkeypatch.setitem(engine._state, "reason", "")
    monkeypatch.setitem(engine._state, "native", "")
    assert engine.get().NAME == ("h2" if broken == "ngh2" or not _ngh2() else "ngh2")
    assert expect_log in caplog.text
    assert expect_describe in engine.describe()


@pytest.fixture
async def sidecar_h2c(tmp_path):
    up = await H2Upstream("c").start()
    p = write_placement(tmp_path / "p.toml", {"c": up.url}, {"t1": "c"})
    # (read_timeout long: an exchange must end by the stream's reset, not by its deadline)
    async with running_sidecar(config(p, upstream_idle=0.3, read_timeout=60.0)) as sc:
        yield sc, up
    await up.stop()


async def test_a_stream_the_engine_resets_ends_its_exchange(sidecar_h2c, h2_engine):
    """DATA short of the declared content-length: libnghttp2 resets the stream (h2 ends the
    connection, or the exchange answers 400). Either way the exchange ends, its write is no
    longer in flight, and the connection serves the next stream (if it is still open)."""
    sc, up = sidecar_h2c
    c = await Client().open(sc.port)
    c.conn.send_headers(1, head(1, b"PUT", b"/echo", (b"content-length", b"10")))
    c.conn.send_data(1, b"abc", end_stream=True)
    c.flush()
    try:
        outcome = await c.until_done(1)
    except ConnectionError:
        outcome = "closed"
    assert outcome in ("reset 1", "status 400", "closed"), outcome
    await until(lambda: sc.tracker.count() == 0 and not any(getattr(s, "streams", None) for s in sc.ctx.clients))
    if outcome != "closed":
        c.conn.send_headers(3, head(3, b"GET", b"/echo"), end_stream=True)
        c.flush()
        assert await c.until_done(3) == "status 200"
    await c.close()
    assert all(rec.get("len", 0) != 3 or rec.get("reset") for rec in up.seen)  # the short body never completed upstream


async def test_an_early_answer_comes_before_its_no_error_reset(sidecar_h2c, h2_engine):
    """A gRPC call refused before its body ended (here: a mover hook path, NOT_FOUND at once)
    gets its Trailers-Only answer, then RST_STREAM NO_ERROR to stop the upload — in that
    order on the wire (libnghttp2 would put the reset first, and the client would see none)."""
    sc, _ = sidecar_h2c
    c = await Client().open(sc.port)
    c.conn.send_headers(1, head(1, b"POST", b"/_epochgate/export?partition=t1", (b"content-type", b"application/grpc")))
    c.flush()
    assert await c.until_done(1) == "status 200"
    [resp] = [e for e in c.events if isinstance(e, h2.events.ResponseReceived)]
    assert dict(resp.headers)[b"grpc-status"] == b"5"
    kinds = [type(e) for e in c.events if getattr(e, "stream_id", None) == 1]
    assert h2.events.ResponseReceived in kinds
    if h2.events.StreamReset in kinds:
        assert kinds.index(h2.events.ResponseReceived) < kinds.index(h2.events.StreamReset)
    await c.close()


async def test_a_malformed_node_response_is_a_502_on_libnghttp2(tmp_path, monkeypatch):
    """A node answering with an upper-case field name (malformed in HTTP/2): libnghttp2 resets
    that stream, and the client gets a 502 saying the response was malformed (h2 took node
    responses unchecked; DESIGN.md §7, the HTTP/2 engine)."""
    from h2.config import H2Configuration
    from h2.connection import H2Connection
    from h2.events import StreamEnded

    from tests._h2_engines import use_engine

    monkeypatch.setitem(engine._state, "engine", engine.get())  # (restored after the test)
    use_engine("ngh2")

    handlers: list[asyncio.Task] = []

    async def node(reader, writer):
        handlers.append(asyncio.current_task())
        conn = H2Connection(H2Configuration(client_side=False, header_encoding=None,
                                            validate_outbound_headers=False, normalize_outbound_headers=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        try:
            while data := await reader.read(65536):
                for ev in conn.receive_data(data):
                    if isinstance(ev, StreamEnded):
                        conn.send_headers(ev.stream_id, [(b":status", b"200"), (b"Bad-Upper", b"x")], end_stream=True)
                writer.write(conn.data_to_send())
        finally:
            writer.close()

    server = await asyncio.start_server(node, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        p = write_placement(tmp_path / "p.toml", {"c": f"h2c://127.0.0.1:{port}"}, {"t1": "c"})
        async with running_sidecar(config(p, upstream_idle=0.3, read_timeout=5.0)) as sc:
            c = await Client().open(sc.port)
            c.conn.send_headers(1, head(1, b"GET", b"/x"), end_stream=True)
            c.flush()
            assert await c.until_done(1) == "status 502"
            body = b"".join(e.data for e in c.events if isinstance(e, h2.events.DataReceived))
            assert b"malformed" in body, body
            await c.close()
    finally:
        server.close()
        await server.wait_closed()
        # (3.11's wait_closed does not wait for the handlers: one left reading would be collected
        # after the loop closed, its unclosed transport then failing whichever test runs next)
        for t in handlers:
            t.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
