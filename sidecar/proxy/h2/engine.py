"""Which HTTP/2 engine runs the frames, HPACK and stream states: the one seam between the
sidecar's HTTP/2 code (``conn.py``, ``server.py``, ``upstream.py``) and a library.

* ``nghttp2`` (``engine_nghttp2.pyx``): the system libnghttp2 driven from C, the sidecar's own
  binding — when the compiled build has it (``setup.py`` compiles it where libnghttp2's header is
  installed: Debian ``libnghttp2-dev``) and the connection base runs compiled (its connection
  derives from ``conn.pxd``'s ``Engine``); ~0.45x ngh2's CPU per call (docs/figures-peers.md, stop 38);
* ``ngh2`` (``engine_ng.py``): libnghttp2 through the ``ngh2`` package — otherwise, when ``ngh2``
  is importable (the ``[ngh2]`` extra; ~0.03x h2's CPU per exchange, docs/figures-peers.md);
* ``h2`` (``engine_h2.py``): pure Python — otherwise, or when ``EPOCHGATE_PURE_PYTHON``
  forces the pure build (``1``, or a list naming ``proxy.h2``; ``sidecar/_build.py``).

Decided at start-up without importing any of them (``describe()`` names it in the
start-up log) and loaded on the first HTTP/2 connection (an HTTP/1.1-only sidecar imports
none; ngh2 adds ~1.7 MiB when it loads). The engines offer the same calls (``server()``/``client()`` return a
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
import re
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


#: fields every engine sends as never-indexed HPACK literals (RFC 7541 §6.2.3): the request id the
#: sidecar stamps on every request and a trace's ``traceparent``, new in every message. Indexed, each
#: went into the encoder's dynamic table and pushed out the fields that repeat (docs/figures-peers.md,
#: "Stop 39: gRPC per call, the upstream leg and the engine"). The binding tests the same two names
#: in C (``engine_nghttp2.pyx`` ``_nv_flags``); ngh2 gets them as ``NeverIndexedHeader``
#: (``engine_ng.py``), h2 through ``hpack.CachingEncoder``
NEVER_INDEXED = frozenset({b"x-request-id", b"traceparent"})

_state: dict[str, object] = {"engine": None, "reason": "", "native": ""}


def forced_pure() -> bool:
    """``EPOCHGATE_PURE_PYTHON`` as ``sidecar/_build.py`` reads it, with ``proxy.h2`` a name it takes."""
    from ... import _build

    return "proxy.h2" in _build.forced_pure()


#: the engines by name, and the module each is (``use``)
MODULES = {"nghttp2": ".engine_nghttp2", "ngh2": ".engine_ng", "h2": ".engine_h2"}


def _nghttp2_status() -> str:
    """``ok`` when the binding may load, else why not (from the build's guard, nothing imported)."""
    from ... import _build

    info = _build.info()
    status = info["native"].get(f"{_build.__package__}.{_build.NGHTTP2}", "not built")
    if status != "ok":
        return {"not built": "not built (needs libnghttp2-dev at build time)"}.get(status, status)
    if "proxy.h2.conn" not in info["compiled"]:   # (it derives from the compiled connection base)
        return "the HTTP/2 connection base runs as Python"
    return "ok"


def choice() -> str:
    """The engine that will run (``"nghttp2"``, ``"ngh2"`` or ``"h2"``), decided without importing any."""
    if forced_pure():
        _state["reason"] = "EPOCHGATE_PURE_PYTHON is set"
        return "h2"
    status = _nghttp2_status()
    if status == "ok":
        return "nghttp2"
    _state["native"] = status
    if importlib.util.find_spec("ngh2") is None:
        _state["reason"] = "ngh2 is not installed: pip install 'epochgate[ngh2]'"
        return "h2"
    return "ngh2"


def _load(name: str) -> ModuleType:
    return importlib.import_module(MODULES[name], __package__)


def get() -> ModuleType:
    """The engine module in use (loaded on the first HTTP/2 connection)."""
    eng = _state["engine"]
    if eng is None:
        name = choice()
        while eng is None:
            try:
                eng = _load(name)
            except ImportError as exc:  # built/installed but broken (a wheel for another ABI, say)
                if name == "h2":
                    raise
                name = _failed(name, exc)
        _state["engine"] = eng
    return eng  # type: ignore[return-value]


def _failed(name: str, exc: ImportError) -> str:
    """Say why engine ``name`` did not load (the log, ``describe()``); the engine to try next:
    the binding → ngh2 when installed → h2."""
    log = logging.getLogger("epochgate.sidecar")
    if name == "nghttp2":
        _state["native"] = f"failed to import: {exc}"
        log.warning("the libnghttp2 engine failed to import (%s): HTTP/2 runs on ngh2 or h2", exc)
        if importlib.util.find_spec("ngh2") is not None:
            return "ngh2"
        _state["reason"] = _state["reason"] or "ngh2 is not installed: pip install 'epochgate[ngh2]'"
    else:
        _state["reason"] = f"ngh2 failed to import: {exc}"
    log.warning("HTTP/2 runs on pure-Python h2: %s", _state["reason"])
    return "h2"


def use(name: str) -> str:
    """Run ``name`` (``"nghttp2"``, ``"ngh2"`` or ``"h2"``) from the next connection on (the tests
    run the HTTP/2 tests under each engine this way); returns the name of the engine before."""
    before = get().NAME  # type: ignore[attr-defined]
    _state["engine"] = _load(name)
    return before


def describe() -> str:
    """One line for the start-up log, without loading the engine: ``nghttp2 (libnghttp2 1.52,
    the sidecar's binding, compiled)``, ``ngh2 (libnghttp2, compiled)`` or ``h2 (pure Python: <reason>)``."""
    eng = _state["engine"]
    name = choice() if eng is None else eng.NAME  # type: ignore[attr-defined]
    if name == "nghttp2":
        return f"nghttp2 (libnghttp2{_libnghttp2_version()}, the sidecar's binding, compiled)"
    why = f"; the libnghttp2 binding: {_state['native']}" if _state.get("native") and not forced_pure() else ""
    if name == "ngh2":
        return f"ngh2 (libnghttp2, compiled{why})"
    return f"h2 (pure Python: {_state['reason'] or 'chosen by a test'})"


def _libnghttp2_version() -> str:
    """`` 1.52`` (with its space): libnghttp2's major.minor, from the loaded binding (what it was
    compiled against) or, before it loads, the installed header; "" when neither says."""
    eng = _state["engine"]
    if eng is not None and getattr(eng, "NAME", "") == "nghttp2":
        return " " + ".".join(eng.VERSION.split(".")[:2])  # type: ignore[attr-defined]
    from ... import _build

    header = _build.nghttp2_header()   # (where setup.py found it to build against)
    if header is None:
        return ""
    try:
        m = re.search(r'NGHTTP2_VERSION "(\d+\.\d+)', header.with_name("nghttp2ver.h").read_text())
    except OSError:
        return ""
    return f" {m.group(1)}" if m else ""
