"""Which build of the data path runs: Cython-compiled or plain Python (one source).

``setup.py`` compiles the modules in ``COMPILED`` with Cython (pure-Python mode: the
``.py`` is the source, a ``.pxd`` beside it may type its state) when Cython and a C
compiler are there, and records the SHA-256 of each module's ``.py`` + ``.pxd`` in
``_compiled.json`` next to the extension modules. At import (``sidecar/__init__``),
``install()`` puts a finder in front of the extension modules that loads the ``.py``
instead when

* ``EPOCHGATE_PURE_PYTHON`` is set to anything but ``""``/``0`` (forced pure build; a
  comma-separated list of module names, e.g. ``proxy.conn,proxy.exchange``, forces just those:
  that is how a module's compiled cost is measured against its plain-Python cost; ``gate.*``
  names are gate's compiled modules, guarded by ``gate/_build.py``), or
* a module's source no longer matches the hash it was compiled from (an in-place
  ``.so`` left behind by ``pip install -e .`` would otherwise shadow an edited ``.py``), or
* an extension module is there without a manifest entry (unknown origin), or
* gate's modules behind its public cimport surface (``gate/capi.pxd``) run as Python
  (``gate.capi_ready()`` False): the write gate is compiled against their types (``GATE_BOUND``).

A stale module turns the whole set to Python, with a warning naming it: the compiled
modules share extension types (``cimport`` in the ``.pxd`` files), and one compiled
against a type that now comes from a ``.py`` refuses to import.

``describe()`` says which build runs; the sidecar logs it at start-up.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

#: the hot path: what setup.py compiles (module names relative to the ``sidecar`` package)
COMPILED = ("proxy.context", "proxy.exfields", "proxy.exbase", "proxy.stats", "proxy.router", "proxy.writegate", "proxy.httpmsg", "proxy.upstream",
            "_log", "proxy.limits", "proxy.target", "proxy.reqhead", "proxy.exstate", "proxy.response",
            "proxy.resolve", "proxy.forward", "proxy.exchange", "proxy.conn", "proxy.hold", "proxy.hookpath",
            # HTTP/2: the sidecar's own per-stream code, once libnghttp2 does the frames (issue 30)
            "proxy.h2.conn", "proxy.h2.server", "proxy.h2.head", "proxy.h2.stream", "proxy.h2.response", "proxy.h2.upstream",
            "proxy.h2.fields", "proxy.h2.engine_ng")
#: what else ``EPOCHGATE_PURE_PYTHON`` forces to pure Python: the HTTP/2 engine (libnghttp2
#: through ngh2 → h2; ``sidecar/proxy/h2/engine.py``), by this name or with everything (``1``)
ENGINES = ("proxy.h2",)
#: compiled-only modules (a ``.pyx``, no ``.py``) and the other files their build depends on:
#: llhttp driven from C for the upstream response parser (issue 30; ``proxy/llresp.pyx``, used by
#: a compiled ``proxy.upstream``) and the client request parser (``proxy/llreq.pyx``, used by a
#: compiled ``proxy.conn``), httptools otherwise. The guard refuses one that is forced pure,
#: stale or unlisted: its import fails and the caller falls back.
#: the HTTP/2 engine binding of the system libnghttp2 (its NATIVE entry below; setup.py builds it, and
#: ``proxy/h2/engine.py`` reads its guard's verdict, under this one name)
NGHTTP2 = "proxy.h2.engine_nghttp2"
NATIVE = {"proxy.llresp": ("proxy/upstream.pxd", "proxy/httpmsg.pxd", "proxy/_llhttp.pxi", "proxy/_vendor/llhttp/include/llhttp.h"),
          "proxy.llreq": ("proxy/conn.pxd", "proxy/reqhead.pxd", "proxy/exbase.pxd", "proxy/context.pxd", "proxy/_llhttp.pxi",
                          "proxy/_vendor/llhttp/include/llhttp.h"),
          # the system libnghttp2 driven from C (``proxy/h2/engine_nghttp2.pyx``), the HTTP/2 engine when
          # built (needs libnghttp2's headers: Debian libnghttp2-dev); engine.py falls back to ngh2, then h2
          NGHTTP2: ("proxy/h2/conn.pxd", "proxy/h2/_nghttp2.pxi", "proxy/h2/_nghttp2_cb.pxi")}
#: the HTTP/2 engine binding's header (``setup.py`` compiles ``proxy.h2.engine_nghttp2`` only when it is
#: there; ``scripts/test`` installs Debian's libnghttp2-dev first when it is missing and it runs as root)
NGHTTP2_HEADER = "nghttp2/nghttp2.h"


def nghttp2_header() -> Path | None:
    """libnghttp2's development header, if installed: the compiler's usual include directories
    and those ``CPATH``/``C_INCLUDE_PATH`` add (one answer for setup.py and scripts/_pyenv.py)."""
    dirs = ["/usr/include", "/usr/local/include", "/opt/homebrew/include"]
    for var in ("CPATH", "C_INCLUDE_PATH"):
        dirs += [d for d in os.environ.get(var, "").split(os.pathsep) if d]
    return next((p for d in dirs if (p := Path(d, NGHTTP2_HEADER)).is_file()), None)


#: the modules compiled against gate's public cimport surface (``gate/capi.pxd``: the tracker's
#: begin/end and the one fail_closed_admit as C calls): writegate cimports it, exchange and the
#: HTTP/2 stream's halves (h2.stream's admit, h2.response's done) cimport writegate's type, and
#: h2.server, h2.upstream (the leg's exchange, typed) and h2.head (the stream's fields) cimport their base. They load only while gate's modules behind it run compiled, so when
#: ``gate.capi_ready()`` is False (gate forced pure by ``EPOCHGATE_PURE_PYTHON=gate._inflight``,
#: stale or not built) the data path runs as Python, with a warning, as for a stale module: no
#: import error, no ABI guess. Their source hash covers ``gate/capi.pxd`` and the gate ``.pxd``
#: files it cimports from: gate rebuilt alone with a new layout leaves them stale, never loaded
#: against it (tests/test_build_modes.py checks this list against the .pxd files)
GATE_BOUND = ("proxy.writegate", "proxy.exchange", "proxy.h2.response", "proxy.h2.stream", "proxy.h2.server",
              "proxy.h2.upstream", "proxy.h2.head")
MANIFEST = "_compiled.json"
_HERE = Path(__file__).resolve().parent
_state: dict[str, Any] = {"build": "pure", "compiled": [], "pure": [], "reason": "not installed", "native": {}}


def source_hash(name: str, root: Path = _HERE) -> str:
    """SHA-256 over a module's ``.py`` and (if present) its augmenting ``.pxd``."""
    h = hashlib.sha256()
    for suffix in (".py", ".pxd", ".pyx"):
        p = root / f"{name.replace('.', '/')}{suffix}"
        if p.exists():
            h.update(suffix.encode() + b"\0" + p.read_bytes() + b"\0")
    for dep in NATIVE.get(name, ()):  # a native module is also stale when what it cimports moved
        p = root / dep
        h.update(dep.encode() + b"\0" + (p.read_bytes() if p.exists() else b"(missing)") + b"\0")
    if name in GATE_BOUND:  # ... and one compiled against gate's types when their layout moved
        for gp in gate_capi_files(root.parent / "gate"):
            h.update(f"gate/{gp.name}".encode() + b"\0" + (gp.read_bytes() if gp.exists() else b"(missing)") + b"\0")
    return h.hexdigest()


def gate_capi_files(gate_dir: Path) -> list[Path]:
    """``gate/capi.pxd`` and the gate ``.pxd`` files it cimports from, and those they cimport
    from (what ``GATE_BOUND`` is compiled against)."""
    out = [gate_dir / "capi.pxd"]
    for p in out:  # (grows as it goes: breadth-first over the cimports)
        text = p.read_text() if p.exists() else ""
        out += [q for m in re.findall(r"^\s*from\s+gate\.(\w+)\s+cimport\b", text, re.M)
                if (q := gate_dir / f"{m}.pxd") not in out]
    return out


def forced_pure() -> frozenset[str]:
    """The modules (and ``ENGINES``) ``EPOCHGATE_PURE_PYTHON`` forces to run as Python (all for ``1``)."""
    v = os.environ.get("EPOCHGATE_PURE_PYTHON", "").strip()
    if v in ("", "0"):
        return frozenset()
    names = {n.strip() for n in v.split(",")}
    names = {n for n in names if not n.startswith("gate.")}  # gate's own modules: gate/_build.py
    if not names:
        return frozenset()
    known = set(COMPILED) | set(ENGINES) | set(NATIVE)
    return frozenset(names) if names <= known else frozenset(known)


def _extension_present(name: str) -> bool:
    base = _HERE / name.replace(".", "/")
    return any(base.with_name(base.name + suffix).exists() for suffix in importlib.machinery.EXTENSION_SUFFIXES)


class _PureFinder:
    """Finds the listed ``sidecar`` modules as their ``.py`` source, ahead of any extension module."""

    def __init__(self, names: set[str], refused: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.names = names
        self.refused = refused

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname in self.refused:  # a NATIVE module has no source to fall back on: its user does
            raise ModuleNotFoundError(f"{fullname} refused by sidecar._build ({_state['native'].get(fullname)})",
                                      name=fullname)
        if fullname not in self.names:
            return None
        src = _HERE / (fullname.split(".", 1)[1].replace(".", "/") + ".py")
        loader = importlib.machinery.SourceFileLoader(fullname, str(src))
        return importlib.util.spec_from_file_location(fullname, str(src), loader=loader)

    def invalidate_caches(self) -> None:
        pass


def install() -> None:
    """Decide per module whether its extension may load; called once from ``sidecar/__init__``."""
    present = [n for n in COMPILED if _extension_present(n)]
    try:
        manifest = json.loads((_HERE / MANIFEST).read_text())["modules"]
    except (OSError, ValueError, KeyError, TypeError):
        manifest = {}
    pure: list[str] = []
    stale: list[str] = []
    forced = forced_pure() & set(COMPILED)
    reason = ""
    for n in COMPILED:
        if n in forced or n not in present:
            pure.append(n)
        elif manifest.get(n) != source_hash(n):
            pure.append(n)
            stale.append(n)
    if forced == frozenset(COMPILED):  # (what "1" means)
        reason = "EPOCHGATE_PURE_PYTHON is set"
    elif not present:
        reason = "no compiled modules (built without Cython or a C compiler)"
    elif forced:
        reason = f"EPOCHGATE_PURE_PYTHON={','.join(sorted(forced))}"
    if stale:
        pure = list(COMPILED)
        logging.getLogger("epochgate.sidecar").warning(
            "compiled modules out of date with their source, running the data path as Python: %s "
            "(rebuild: pip install -e . or python setup.py build_ext --inplace)", ", ".join(stale))
        reason = f"stale extension modules: {', '.join(stale)}"
    bound = [n for n in GATE_BOUND if n not in pure]
    if bound and not _gate_capi_ready():  # compiled against gate's types, which run as Python
        # the whole set, as for a stale module: not just GATE_BOUND, since a pure exchange.py
        # under compiled modules is imported in an order that meets the limits <-> conn import
        # cycle (EPOCHGATE_PURE_PYTHON=proxy.exchange fails the same way on c3c3176)
        pure = list(COMPILED)
        reason = f"gate's cimported modules run as Python ({_gate_describe()})"
        logging.getLogger("epochgate.sidecar").warning(
            "%s: the data path (%s compiled against gate/capi.pxd) runs as Python too", reason, ", ".join(bound))
    native: dict[str, str] = {}
    every = forced_pure()
    for n in NATIVE:
        if not _extension_present(n):
            native[n] = "not built"
        elif n in every or any(n.startswith(f"{e}.") for e in ENGINES if e in every):  # (proxy.h2: the engine too)
            native[n] = "EPOCHGATE_PURE_PYTHON"
        elif manifest.get(n) != source_hash(n):
            native[n] = "stale"
            logging.getLogger("epochgate.sidecar").warning(
                "compiled module out of date with its source, not loaded: %s "
                "(rebuild: pip install -e . or python setup.py build_ext --inplace)", n)
        else:
            native[n] = "ok"
    refused = {f"{__package__}.{n}" for n, v in native.items() if v != "ok"}
    if (pure and present) or refused:
        sys.meta_path.insert(0, _PureFinder({f"{__package__}.{n}" for n in pure}, refused))
    compiled = [n for n in COMPILED if n not in pure]
    _state.update(build="compiled" if compiled and not pure else "mixed" if compiled else "pure",
                  compiled=compiled, pure=pure, reason=reason, native={f"{__package__}.{n}": v for n, v in native.items()})


def _gate_capi_ready() -> bool:
    """gate's answer (imported here, at run time: setup.py loads this file without the packages)."""
    import gate

    return gate.capi_ready()


def _gate_describe() -> str:
    import gate

    return gate.describe_build()


def native_parser(module_file: str, native: str, cls: str, config: tuple, fallback: Any) -> Any:
    """The parser a data-path module uses: ``sidecar.proxy.<native>``'s ``cls`` (llhttp driven from
    C), configured with ``config``, when the calling module runs compiled (its ``__file__`` is the
    extension) and that extension loads (``install`` may refuse it); ``fallback`` (httptools')
    otherwise — the same llhttp and settings either way (tests/test_req_parser.py, test_resp_parser.py)."""
    if module_file.endswith(".py"):
        return fallback
    try:
        ext = importlib.import_module(f"{__package__}.proxy.{native}")
    except ImportError:
        return fallback
    ext.configure(*config)
    return getattr(ext, cls)


def is_compiled(module: Any) -> bool:
    """True when ``module`` was loaded from an extension module (not from its ``.py``)."""
    return not str(getattr(module, "__file__", "")).endswith(".py")


def describe() -> str:
    """One line for the start-up log: ``compiled (12 modules, Cython 3.x)`` or ``pure (reason)``."""
    s = _state
    if s["build"] == "compiled":
        bad = {n.rsplit(".", 1)[1]: v for n, v in s["native"].items() if v != "ok"}
        native = (f"; not loaded: {', '.join(f'{n} ({v})' for n, v in bad.items())}" if bad
                  else " + llhttp request and response parsers + libnghttp2 engine" if s["native"] else "")
        return f"compiled ({len(s['compiled'])} modules{native})"
    if s["build"] == "mixed":
        return f"mixed (compiled: {', '.join(s['compiled'])}; pure: {s['reason'] or ', '.join(s['pure'])})"
    return f"pure ({s['reason']})"


def info() -> dict[str, Any]:
    return dict(_state)
