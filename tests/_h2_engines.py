"""The HTTP/2 engines (``sidecar/proxy/h2/engine.py``) under the tests that guard the
HTTP/2 front door: the sidecar's libnghttp2 binding (what the compiled build runs, as in CI),
libnghttp2 through ngh2 (the fallback when the binding is not built) and pure-Python h2 (the
last fallback). A test that asks for ``h2_engine`` runs once per engine; the suite's other
HTTP/2 tests run on the one chosen. ``h2_checks_off`` leaves only the
sidecar's own header checks (``fields.py``): h2 with its inbound validation off, since
libnghttp2's cannot be turned off."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

ENGINES = ["nghttp2", "ngh2", "h2"]


def use_engine(name: str) -> str:
    """Switch engines from the next connection on; returns the one before."""
    from sidecar.proxy.h2 import engine

    if name == "ngh2" and importlib.util.find_spec("ngh2") is None:
        pytest.skip("ngh2 is not installed (pip install 'epochgate[ngh2]')")
    if name == "nghttp2" and (why := engine._nghttp2_status()) != "ok":
        pytest.skip(f"the libnghttp2 binding does not run here: {why}")
    return engine.use(name)


@pytest.fixture(params=ENGINES)
def h2_engine(request: Any):
    before = use_engine(request.param)
    yield request.param
    use_engine(before)


@pytest.fixture
def pure_h2():
    before = use_engine("h2")
    yield "h2"
    use_engine(before)


def h2_checks_off(monkeypatch: Any, on: bool = False) -> None:
    """The listener as with an ``h2`` that checks nothing inbound (only ``fields.py`` stands);
    undone with ``monkeypatch``. ``on``: back to the engine's checks (the fuzz harness flips it)."""
    from sidecar.proxy.h2 import engine, server

    monkeypatch.setitem(engine._state, "engine", engine.get())  # (restored on undo)
    if not on:
        use_engine("h2")
    monkeypatch.setattr(server, "VALIDATE_INBOUND", on)
