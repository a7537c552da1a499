"""Which HTTP/2 engine runs the frames, HPACK and stream states: the one seam between the
sidecar's HTTP/2 code (``conn.py``, ``server.py``, ``upstream.py``) and a library.

* ``ngh2`` (``engine_ng.py``): libnghttp2, compiled — when ``ngh2`` is importable (the
  ``[ngh2]`` extra; ~0.03x h2's CPU per exchange, docs/figures-peers.md);
* ``h2`` (``engine_h2.py``): pure Python — otherwise, or when ``EPOCHGATE_PURE_PYTHON``
  forces the pure build (``1``, or a list naming ``proxy.h2``; ``sidecar/_build.py``).

Decided at start-up without importing either library (``describe()`` names it in the
start-up log) and loaded on the first HTTP/2 connection (an HTTP/1.1-only sidecar imports
neither; ngh2 adds ~1.7 MiB when it loads). Both engines offer the same calls (``server()``/``client()`` return a
connection with ``receive``, ``data_to_send``, ``request``, ``respond``, ``trailers``,
``send_data``, ``end_stream``, ``window``, ``reset_stream``, ``ack`` (True when it queued a
frame, or when the engine cannot tell), ``close_connection``, ``shutdown``, ``peer_max_streams``, ``head_pending``; ``closed``:
the engine ended the connection after writing its GOAWAY, close the transport) and deliver
the same events to the connection's owner: ``on_head(sid, headers, ended)``,
``on_data(sid, data, flow_controlled_length)``, ``on_trailers``, ``on_end``,
``on_reset(sid, code, by_peer)``, ``on_goaway(last_sid)``, ``on_window(sid)``
(0: the whole connection). A connection error raises ``ProtocolError`` from ``receive``
with the GOAWAY queued. Whatever the engine checks, ``fields.py`` checks request heads.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from enum import IntEnum
from types import ModuleType


class ProtocolError(Exception):
    """The peer broke HTTP/2 at the connection level: GOAWAY is queued, close after writing it."""


class Code(IntEnum):
    """RST_STREAM / GOAWAY error codes (RFC 9113 §7) the sidecar sends or reads."""

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


class Setting(IntEnum):
    ENABLE_PUSH = 0x2
    MAX_CONCURRENT_STREAMS = 0x3
    INITIAL_WINDOW_SIZE = 0x4
    MAX_HEADER_LIST_SIZE = 0x6


def code_name(code: int) -> str:
    try:
        return Code(code).name
    except ValueError:
        return f"error code {code:#x}"


_state: dict[str, object] = {"engine": None, "reason": ""}


def forced_pure() -> bool:
    """``EPOCHGATE_PURE_PYTHON`` as ``sidecar/_build.py`` reads it, with ``proxy.h2`` a name it takes."""
    from ... import _build

    return "proxy.h2" in _build.forced_pure()


def choice() -> str:
    """The engine that will run (``"ngh2"`` or ``"h2"``), decided without importing either."""
    if forced_pure():
        _state["reason"] = "EPOCHGATE_PURE_PYTHON is set"
        return "h2"
    if importlib.util.find_spec("ngh2") is None:
        _state["reason"] = "ngh2 is not installed: pip install 'epochgate[ngh2]'"
        return "h2"
    return "ngh2"


def _load(name: str) -> ModuleType:
    return importlib.import_module(".engine_h2" if name == "h2" else ".engine_ng", __package__)


def get() -> ModuleType:
    """The engine module in use (loaded on the first HTTP/2 connection)."""
    eng = _state["engine"]
    if eng is None:
        name = choice()
        try:
            eng = _load(name)
        except ImportError as exc:  # installed but broken (a wheel for another ABI, say)
            _state["reason"] = f"ngh2 failed to import: {exc}"
            logging.getLogger("epochgate.sidecar").warning("HTTP/2 runs on pure-Python h2: %s", _state["reason"])
            eng = _load("h2")
        _state["engine"] = eng
    return eng  # type: ignore[return-value]


def use(name: str) -> str:
    """Run ``name`` (``"h2"`` or ``"ngh2"``) from the next connection on (the tests run the
    HTTP/2 tests under both engines this way); returns the name of the engine before."""
    before = get().NAME  # type: ignore[attr-defined]
    _state["engine"] = _load(name)
    return before


def describe() -> str:
    """One line for the start-up log, without loading the engine: ``ngh2 (libnghttp2,
    compiled)`` or ``h2 (pure Python: <reason>)``."""
    eng = _state["engine"]
    name = choice() if eng is None else eng.NAME  # type: ignore[attr-defined]
    if name == "ngh2":
        return "ngh2 (libnghttp2, compiled)"
    return f"h2 (pure Python: {_state['reason'] or 'chosen by a test'})"
