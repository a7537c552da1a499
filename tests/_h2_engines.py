"""Both HTTP/2 engines (``sidecar/proxy/h2/engine.py``) under the tests that guard the
HTTP/2 front door: libnghttp2 through ngh2 (what runs when it is installed, as in CI) and
pure-Python h2 (the fallback). A test that asks for ``h2_engine`` runs once per engine;
the suite's other HTTP/2 tests run on the installed one. ``h2_checks_off`` leaves only the
sidecar's own header checks (``fields.py``): h2 with its inbound validation off, since
libnghttp2's cannot be turned off."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

ENGINES = ["ngh2", "h2"]


def use_engine(name: str) -> str:
    """Switch engines from the next connection on; returns the one before."""
    from sidecar.proxy.h2 import engine

    if name == "ngh2" and importlib.util.find_spec("ngh2") is None:
        pytest.skip("ngh2 is not installed (pip install 'epochgate[ngh2]')")
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
