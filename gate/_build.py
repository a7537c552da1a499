"""Which build of gate's hot modules runs: Cython-compiled or plain Python (one source).

The sidecar's write gate counts every admitted write in flight (``InflightTracker.begin``
and ``end``) after the table's ``admit_write`` (``fail_closed_admit``); ``setup.py`` compiles the modules in ``COMPILED`` with Cython in pure-Python
mode, like the sidecar's data path (``sidecar/_build.py``): the ``.py`` is the source, a
``.pxd`` beside it types its state. Each build records the SHA-256 of each module's ``.py``
+ ``.pxd`` in ``gate/_compiled.json``. ``import gate`` calls ``install()`` before any gate
module can be imported; it puts a finder in front of the extension modules that loads the
``.py`` instead, with a warning naming the module, when

* ``EPOCHGATE_PURE_PYTHON`` forces the pure build (see ``forced_pure``), or
* a module's source no longer matches the hash it was compiled from (an in-place ``.so``
  left behind would otherwise shadow an edited ``.py``), or
* an extension module is there without a manifest entry (unknown origin).

No extension type of another gate module is compiled against these (no ``cimport`` among them), so
one module refused leaves the others as they are. Outside gate, a compiled module may cimport
the modules in ``CAPI`` through gate's public cimport surface (``gate/capi.pxd``; the sidecar's
write gate does): such a module loads only while they run compiled, which ``capi_ready()``
(``gate.capi_ready``) tells it. The guard is gate's own, not the sidecar's:
an application imports ``gate`` without ``sidecar``. Standard library only (``setup.py``
loads this file on its own).
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

#: what setup.py compiles (module names relative to the ``gate`` package): the in-flight tracker,
#: the one admit decision and the table it asks (``admit_write`` per write, ``state`` per request:
#: -0.8k / -0.6k instructions, bench_exchange_instr; docs/compiled-build.md)
COMPILED = ("_inflight", "_admission", "_table")
#: the modules behind gate's public cimport surface, ``gate/capi.pxd`` (what it cimports from)
CAPI = ("_inflight", "_admission")
MANIFEST = "_compiled.json"
_HERE = Path(__file__).resolve().parent
_PACKAGE = __name__.rpartition(".")[0] or "gate"
_state: dict[str, Any] = {"compiled": [], "pure": list(COMPILED), "reason": "not installed"}
_OTHER_MODULE = re.compile(r"_?[a-z][a-z0-9_]*(\.[a-z0-9_]+)+|_[a-z0-9_]+")


def source_hash(name: str, root: Path = _HERE) -> str:
    """SHA-256 over a module's ``.py`` and (if present) its augmenting ``.pxd`` (as sidecar's)."""
    h = hashlib.sha256()
    for suffix in (".py", ".pxd"):
        p = root / f"{name.replace('.', '/')}{suffix}"
        if p.exists():
            h.update(suffix.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def forced_pure() -> frozenset[str]:
    """The gate modules ``EPOCHGATE_PURE_PYTHON`` forces to run as Python.

    ``""``/``0``: none. A comma-separated list naming gate modules (``gate._inflight``): those.
    A list naming only other packages' modules (the sidecar's ``proxy.conn,_log``, used to
    measure one of them): none. Anything else (``1``): all."""
    v = os.environ.get("EPOCHGATE_PURE_PYTHON", "").strip()
    if v in ("", "0"):
        return frozenset()
    names = {n.strip() for n in v.split(",")}
    prefix = f"{_PACKAGE}."
    mine = {n[len(prefix):] for n in names if n.startswith(prefix)}
    if mine:
        return frozenset(mine) if mine <= set(COMPILED) else frozenset(COMPILED)
    if all(_OTHER_MODULE.fullmatch(n) for n in names):
        return frozenset()
    return frozenset(COMPILED)


def _extension_present(name: str) -> bool:
    base = _HERE / name.replace(".", "/")
    return any(base.with_name(base.name + suffix).exists() for suffix in importlib.machinery.EXTENSION_SUFFIXES)


class _PureFinder:
    """Finds the listed gate modules as their ``.py`` source, ahead of any extension module."""

    def __init__(self, names: set[str]) -> None:
        self.names = names

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in self.names:
            return None
        src = _HERE / (fullname.split(".", 1)[1].replace(".", "/") + ".py")
        loader = importlib.machinery.SourceFileLoader(fullname, str(src))
        return importlib.util.spec_from_file_location(fullname, str(src), loader=loader)

    def invalidate_caches(self) -> None:
        pass


def install() -> None:
    """Decide per module whether its extension may load; called once from ``gate/__init__``."""
    present = [n for n in COMPILED if _extension_present(n)]
    try:
        manifest = json.loads((_HERE / MANIFEST).read_text())["modules"]
    except (OSError, ValueError, KeyError, TypeError):
        manifest = {}
    forced = forced_pure()
    pure = [n for n in COMPILED if n in forced or n not in present]
    stale = [n for n in present if n not in forced and manifest.get(n) != source_hash(n)]
    pure += stale
    if stale:
        logging.getLogger("epochgate.gate").warning(
            "compiled gate modules out of date with their source, running them as Python: %s "
            "(rebuild: pip install -e . or python setup.py build_ext --inplace)", ", ".join(stale))
    reason = (f"stale extension modules: {', '.join(stale)}" if stale else
              "EPOCHGATE_PURE_PYTHON is set" if forced else
              "" if present else "no compiled modules (built without Cython or a C compiler)")
    if present and pure:
        sys.meta_path.insert(0, _PureFinder({f"{_PACKAGE}.{n}" for n in pure}))
    _state.update(compiled=[n for n in COMPILED if n not in pure], pure=[n for n in COMPILED if n in pure],
                  reason=reason)


def capi_ready() -> bool:
    """True when every module behind gate's public cimport surface (``gate/capi.pxd``) runs
    compiled, so an extension module compiled against it can be imported. False when any of
    them runs as Python (forced, stale or not built): such a module's import would fail
    (their types' C layout and C functions are not there), so its caller runs its ``.py``."""
    return all(n in _state["compiled"] for n in CAPI)


def describe() -> str:
    """``compiled (_inflight)`` or ``pure (reason)``."""
    s = _state
    if s["compiled"]:
        return f"compiled ({', '.join(s['compiled'])})" + (f"; pure: {s['reason']}" if s["pure"] else "")
    return f"pure ({s['reason']})"
