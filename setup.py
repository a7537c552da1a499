"""Build: the data path's hot modules compiled with Cython when possible, plain Python otherwise.

Metadata lives in pyproject.toml; this file only adds the optional extension modules.
The modules compiled are ``sidecar._build.COMPILED`` and ``gate._build.COMPILED`` (those files
loaded on their own, not through the packages).
No compile at all when ``EPOCHGATE_PURE_PYTHON`` is set, Cython is missing, or the
compiler fails: the package then installs as pure Python and runs the same code.
Each build writes ``sidecar/_compiled.json`` and ``gate/_compiled.json`` (the source hash per
compiled module) beside the extension modules, so an out-of-date in-place ``.so`` is never
loaded (see each package's _build).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
PKG = ROOT / "sidecar"


def _load_build(pkg: str) -> Any:
    """``<pkg>/_build.py`` on its own (standard library only), not the package: its
    ``COMPILED`` list and ``source_hash`` are the one source of both, for the build and the
    import-time check alike."""
    spec = importlib.util.spec_from_file_location(f"_epochgate_build_{pkg}", ROOT / pkg / "_build.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_BUILD = _load_build("sidecar")
#: gate's hot modules (the write gate's in-flight tracker): their own guard and manifest,
#: since an application imports gate without the sidecar
_GATE_BUILD = _load_build("gate")
_BUILDS = {"sidecar": _BUILD, "gate": _GATE_BUILD}


def _say(msg: str) -> None:
    print(f"epochgate setup: {msg}", file=sys.stderr)


class OptionalBuildExt(build_ext):
    """Compile what compiles; a failure leaves that module as Python (never fails the install)."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if not self.parallel:
            self.parallel = os.cpu_count() or 1

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler, missing headers, …
            _say(f"extension build failed, installing pure Python: {exc}")
            self.extensions = []
        self._write_manifest()

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
            ext._built = True
        except Exception as exc:
            native = ext.name.split(".", 1)[1] in _BUILD.NATIVE
            fallback = ("ngh2 or h2 runs HTTP/2" if ext.name == f"sidecar.{NGHTTP2}" else
                        "its pure fallback (httptools) runs" if native else "it stays Python")
            _say(f"{ext.name}: compile failed, {fallback}: {exc}")
            stale = Path(self.get_ext_fullpath(ext.name))  # an older build's output must not ship
            stale.unlink(missing_ok=True)

    def _write_manifest(self) -> None:
        for pkg, build in _BUILDS.items():  # one manifest per package, hashed by its own _build
            mine = [e for e in self.extensions if e.name.split(".", 1)[0] == pkg]
            built = [e for e in mine if getattr(e, "_built", False)]
            if not built:
                if mine:  # an older build's manifest must not vouch for anything
                    self._manifest_dir(pkg).joinpath("_compiled.json").unlink(missing_ok=True)
                continue
            out = self._manifest_dir(pkg)
            doc = {"modules": {e.name.split(".", 1)[1]: build.source_hash(e.name.split(".", 1)[1], ROOT / pkg)
                               for e in built}}
            out.mkdir(parents=True, exist_ok=True)
            (out / "_compiled.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
            if not self.inplace and not getattr(self, "editable_mode", False):
                continue
            # in-place/editable: the manifest must sit beside the .so files in the source tree too
            (ROOT / pkg / "_compiled.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")

    def _manifest_dir(self, pkg: str = "sidecar") -> Path:
        """The package directory (``sidecar`` or ``gate``) the extension modules are written under."""
        return Path(self.get_ext_fullpath(f"{pkg}._compiled")).parent

    def get_outputs(self):
        outs = super().get_outputs()
        for pkg in _BUILDS:
            if any(getattr(e, "_built", False) and e.name.startswith(f"{pkg}.") for e in self.extensions):
                outs.append(str(self._manifest_dir(pkg) / "_compiled.json"))
        return outs


#: the HTTP/2 engine binding of the system libnghttp2 (``sidecar/proxy/h2/engine_nghttp2.pyx``)
NGHTTP2 = _BUILD.NGHTTP2


def _native(name: str) -> Any:
    """A compiled-only module (``_build.NATIVE``): its ``.pyx`` plus the vendored llhttp C sources
    (``sidecar/proxy/_vendor/llhttp``, MIT; gcc and the Python headers are all it needs), or, for the
    HTTP/2 engine, linked against the system libnghttp2."""
    from setuptools import Extension

    if name == NGHTTP2:
        return Extension(f"sidecar.{name}", [f"sidecar/{name.replace('.', '/')}.pyx"], libraries=["nghttp2"])
    ll = "sidecar/proxy/_vendor/llhttp"
    return Extension(f"sidecar.{name}", [f"sidecar/{name.replace('.', '/')}.pyx", f"{ll}/src/api.c",
                                         f"{ll}/src/http.c", f"{ll}/src/llhttp.c"],
                     include_dirs=[f"{ll}/include"])


def _extensions() -> list:
    if os.environ.get("EPOCHGATE_PURE_PYTHON", "") not in ("", "0"):
        _say("EPOCHGATE_PURE_PYTHON is set: pure-Python build")
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        _say("Cython not available: pure-Python build")
        return []
    names = _BUILD.COMPILED
    gate_names = _GATE_BUILD.COMPILED
    only = os.environ.get("EPOCHGATE_COMPILE", "")  # a subset, to measure one module's effect
    if only:
        names = tuple(n for n in names if n in only.split(","))
        gate_names = tuple(n for n in gate_names if f"gate.{n}" in only.split(","))
    modules: list = [f"sidecar/{n.replace('.', '/')}.py" for n in names]
    modules += [f"gate/{n.replace('.', '/')}.py" for n in gate_names]
    natives = [n for n in _BUILD.NATIVE if not only or n in only.split(",")]
    if NGHTTP2 in natives and _BUILD.nghttp2_header() is None:
        natives.remove(NGHTTP2)
        _say("libnghttp2's header (nghttp2/nghttp2.h) not found: HTTP/2 runs on ngh2 or h2 "
             "(apt-get install libnghttp2-dev for the compiled engine)")
    modules += [_native(n) for n in natives]
    try:
        return cythonize(modules, language_level=3, quiet=True, nthreads=os.cpu_count() or 1, force=True,
                         # Python semantics kept: negative indices and bounds
                         # checks stay on (the source is plain Python, data[-1] means the last item)
                         compiler_directives={"binding": False,
                                              # types come from the .pxd files only: an annotation stays a hint
                                              "annotation_typing": False})
    except Exception as exc:
        _say(f"cythonize failed, pure-Python build: {exc}")
        return []


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
