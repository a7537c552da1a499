"""A bench script compiled by Cython as it stands (no type annotations added), for a floor without
the interpreter's bytecode loop: ``bare-h2c`` in bench_grpc.py is ``_bare_h2_forwarder.py`` so
compiled, as the sidecar's data path is (docs/figures-peers.md, stop 37).

``compiled_argv(script, dest)`` cythonizes a copy of ``script`` in ``dest`` (once: a later call
reuses the built module) and returns the argv that runs it (``python -c "import NAME" ARGS...``
leaves the script's own ``sys.argv[1:]`` as given); None, after one line on stderr, when Cython or
a C compiler is missing. ``extra`` names files or folders linked into ``dest`` beside the copy (what a
``.pyx`` includes or builds by relative path, e.g. ``ch1_argv``'s llhttp).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def compiled_argv(script: Path, dest: Path, extra: dict[str, Path] | None = None) -> list[str] | None:
    dest.mkdir(parents=True, exist_ok=True)
    for link, target in (extra or {}).items():
        at = dest / link
        if at.is_symlink() and not at.exists():  # dangling: the tree that built ``dest`` is gone
            at.unlink()
        if not at.exists():
            at.symlink_to(target)
    name = script.stem
    if not any(dest.glob(f"{name}.*.so")):
        shutil.copy(script, dest / script.name)
        out = subprocess.run([sys.executable, "-m", "Cython.Build.Cythonize", "-i", "-3", "-q", script.name],
                             cwd=dest, capture_output=True, text=True, timeout=300)
        if out.returncode != 0 or not any(dest.glob(f"{name}.*.so")):
            print(f"cannot compile {script.name} with Cython: {(out.stderr or out.stdout)[-300:]}", file=sys.stderr)
            return None
        (dest / script.name).unlink()  # the .so, not the source, is what `import` finds
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(dest)!r}); import {name}"]


ROOT = Path(__file__).resolve().parent.parent
CH1 = ROOT / "bench" / "_ch1_forwarder.pyx"


def ch1_argv(dest: Path) -> list[str] | None:
    """``ch1`` (``_ch1_forwarder.pyx``, HTTP/1.1 with llhttp driven from C) built in ``dest``: it includes the
    sidecar's llhttp declarations (sidecar/proxy/_llhttp.pxi) and builds the vendored llhttp C sources."""
    return compiled_argv(CH1, dest, {"_llhttp.pxi": ROOT / "sidecar" / "proxy" / "_llhttp.pxi",
                                     "llhttp": ROOT / "sidecar" / "proxy" / "_vendor" / "llhttp"})
