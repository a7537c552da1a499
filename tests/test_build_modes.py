"""The data path's two builds (sidecar/_build.py, gate/_build.py): compiled (Cython) and plain Python, one source.

* ``EPOCHGATE_PURE_PYTHON=1`` runs every hot-path module from its ``.py``;
* an extension module that does not match its source (edited ``.py`` after an in-place
  build, or no manifest entry) is never loaded: the ``.py`` runs and a warning names it;
* a representative subset of the data-path tests passes against the pure build
  (the rest of the suite runs against whatever build is installed: compiled in CI).

The stale-extension checks plant a file named like an extension module that is not one
(garbage bytes): loading it would fail the import, so a passing import shows the guard
picked the source (and ``test_planted_extension_loads_when_manifest_matches`` shows the
same file *is* what Python loads once the guard lets it through).
"""

from __future__ import annotations

import functools
import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar._build import source_hash

ROOT = Path(__file__).resolve().parent.parent
EXT = importlib.machinery.EXTENSION_SUFFIXES[0]


def _copy_tree(tmp: Path) -> Path:
    """A copy of the sidecar package (sources only) importable ahead of the checkout's."""
    dst = tmp / "sidecar"
    shutil.copytree(ROOT / "sidecar", dst, ignore=shutil.ignore_patterns("*.so", "*.c", "__pycache__",
                                                                           "_compiled.json"))
    return tmp


def _run(tmp: Path, code: str, **env: str) -> subprocess.CompletedProcess[str]:
    e = dict(os.environ, PYTHONPATH=f"{tmp}{os.pathsep}{ROOT}")
    e.pop("EPOCHGATE_PURE_PYTHON", None)
    e.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, cwd=tmp, timeout=60)


_PROBE = ("import sidecar, sidecar._build as b, sidecar.proxy.limits as m; "
          "print(b.describe()); print(m.__file__); print(sidecar.__file__)")


def _hash(pkg: Path, name: str) -> str:
    return source_hash(name, root=pkg)  # the copied tree's module, hashed as setup.py does


def test_forced_pure_build_runs_sources(tmp_path: Path) -> None:
    _copy_tree(tmp_path)
    (tmp_path / "sidecar" / "proxy" / f"limits{EXT}").write_bytes(b"not an extension module")
    r = _run(tmp_path, _PROBE, EPOCHGATE_PURE_PYTHON="1")
    assert r.returncode == 0, r.stderr
    describe, mod, pkg = r.stdout.splitlines()
    assert pkg.startswith(str(tmp_path))
    assert describe.startswith("pure (EPOCHGATE_PURE_PYTHON is set)")
    assert mod.endswith("limits.py")


def test_extension_without_manifest_entry_is_not_loaded(tmp_path: Path) -> None:
    _copy_tree(tmp_path)
    (tmp_path / "sidecar" / "proxy" / f"limits{EXT}").write_bytes(b"not an extension module")
    r = _run(tmp_path, _PROBE)
    assert r.returncode == 0, r.stderr
    describe, mod, _ = r.stdout.splitlines()
    assert mod.endswith("limits.py")
    assert "stale extension modules: proxy.limits" in describe
    assert "out of date with their source" in r.stderr and "proxy.limits" in r.stderr


def test_extension_older_than_its_source_is_not_loaded(tmp_path: Path) -> None:
    pkg = _copy_tree(tmp_path) / "sidecar"
    (pkg / "proxy" / f"limits{EXT}").write_bytes(b"not an extension module")
    old = _hash(pkg, "proxy.limits")
    (pkg / "_compiled.json").write_text(json.dumps({"modules": {"proxy.limits": old}}))
    with open(pkg / "proxy" / "limits.py", "a") as f:
        f.write("\n# edited after the build\n")
    r = _run(tmp_path, _PROBE)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1].endswith("limits.py")
    assert "proxy.limits" in r.stderr


def test_planted_extension_loads_when_manifest_matches(tmp_path: Path) -> None:
    """The control for the two tests above: with a matching hash the guard steps aside and
    Python loads the extension file (here garbage, so the import fails) — the guard is what
    kept it out."""
    pkg = _copy_tree(tmp_path) / "sidecar"
    (pkg / "proxy" / f"limits{EXT}").write_bytes(b"not an extension module")
    (pkg / "_compiled.json").write_text(json.dumps({"modules": {"proxy.limits": _hash(pkg, "proxy.limits")}}))
    r = _run(tmp_path, _PROBE)
    assert r.returncode != 0
    assert "ImportError" in r.stderr


def test_start_up_log_names_the_build() -> None:
    from sidecar import _build

    line = _build.describe()
    assert line.split(" ", 1)[0] in ("compiled", "pure", "mixed")


# a representative subset of the data path: the exchange on fake transports, the proxy
# through real sockets, hostile heads and targets (HTTP/2 ones too: the h2 modules as Python,
# on both engines), the hold and the in-flight accounting
PURE_SUBSET = ["tests/test_exchange_harness.py", "tests/test_sidecar_proxy.py", "tests/test_hostile_head.py",
               "tests/test_hostile_target.py", "tests/test_inflight_holes.py", "tests/test_sidecar_units.py",
               "tests/test_h2_head_fields.py", "tests/test_resp_parser.py"]


@pytest.mark.slow
def test_data_path_subset_passes_on_the_pure_build() -> None:
    env = dict(os.environ, EPOCHGATE_PURE_PYTHON="1", PYTHONPATH=str(ROOT))
    probe = subprocess.run([sys.executable, "-c", "import sidecar._build as b, sidecar.proxy.conn as p; "
                            "import sidecar.proxy.h2.stream as s, sidecar.proxy.h2.engine as e; "
                            "import gate._inflight as t; print(b.describe()); print(p.__file__); "
                            "print(s.__file__); print(e.describe()); print(t.__file__)"],
                           capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert probe.stdout.startswith("pure"), probe.stdout + probe.stderr
    _, conn, stream, h2, tracker = probe.stdout.splitlines()
    assert conn.endswith("conn.py") and stream.endswith("stream.py") and tracker.endswith("_inflight.py")
    assert h2 == "h2 (pure Python: EPOCHGATE_PURE_PYTHON is set)"
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *PURE_SUBSET],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=110)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]


_NATIVE_PROBE = ("import sidecar, sidecar._build as b\n"
                 "try:\n    import sidecar.proxy.llresp\nexcept ImportError as e:\n    print(type(e).__name__, e)\n"
                 "print(b.info()['native'])")


def test_native_parser_not_loaded_when_stale_or_unlisted(tmp_path: Path) -> None:
    """The compiled-only response parser (``NATIVE``: a .pyx, no .py to fall back on) is refused
    by the guard — its import fails cleanly, and upstream.py then uses httptools — when the
    manifest does not vouch for it; with a matching hash, Python loads the file (the control)."""
    pkg = _copy_tree(tmp_path) / "sidecar"
    (pkg / "proxy" / f"llresp{EXT}").write_bytes(b"not an extension module")
    r = _run(tmp_path, _NATIVE_PROBE)
    assert r.returncode == 0, r.stderr
    assert "ModuleNotFoundError" in r.stdout and "refused by sidecar._build (stale)" in r.stdout
    assert "proxy.llresp" in r.stderr  # the warning names it
    (pkg / "_compiled.json").write_text(json.dumps({"modules": {"proxy.llresp": _hash(pkg, "proxy.llresp")}}))
    r = _run(tmp_path, _NATIVE_PROBE)
    assert "ModuleNotFoundError" not in r.stdout and "ImportError" in r.stdout  # the garbage file itself
    with open(pkg / "proxy" / "upstream.pxd", "a") as f:  # what it cimports moved: stale again
        f.write("\n# edited after the build\n")
    r = _run(tmp_path, _NATIVE_PROBE)
    assert "refused by sidecar._build (stale)" in r.stdout
    r = _run(tmp_path, _NATIVE_PROBE, EPOCHGATE_PURE_PYTHON="1")
    assert "refused by sidecar._build (EPOCHGATE_PURE_PYTHON)" in r.stdout


# ---- gate's compiled modules (gate/_build.py): the same guard, gate's own (an application
# imports gate without the sidecar), over gate/_compiled.json

_GATE_PROBE = ("import gate, gate._build as b, gate._inflight as m; "
               "print(b.describe()); print(m.__file__); print(gate.__file__)")


def _copy_gate(tmp: Path) -> Path:
    """A copy of the gate package (sources only) importable ahead of the checkout's, with a planted
    garbage "extension module" for the in-flight tracker."""
    pkg = tmp / "gate"
    shutil.copytree(ROOT / "gate", pkg, ignore=shutil.ignore_patterns("*.so", "*.c", "__pycache__", "_compiled.json"))
    (pkg / f"_inflight{EXT}").write_bytes(b"not an extension module")
    return pkg


def _gate_manifest(pkg: Path) -> None:
    from gate._build import source_hash as gate_hash

    (pkg / "_compiled.json").write_text(json.dumps({"modules": {"_inflight": gate_hash("_inflight", root=pkg)}}))


def test_gate_extension_refused_when_forced_unlisted_or_stale(tmp_path: Path) -> None:
    pkg = _copy_gate(tmp_path)
    r = _run(tmp_path, _GATE_PROBE)  # no manifest entry: unknown origin
    assert r.returncode == 0, r.stderr
    describe, mod, init = r.stdout.splitlines()
    assert init.startswith(str(tmp_path)) and mod.endswith("_inflight.py")
    assert describe == "pure (stale extension modules: _inflight)"
    assert "out of date with their source" in r.stderr and "_inflight" in r.stderr
    _gate_manifest(pkg)
    with open(pkg / "_inflight.pxd", "a") as f:  # the .pxd is hashed too
        f.write("\n# edited after the build\n")
    r = _run(tmp_path, _GATE_PROBE)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1].endswith("_inflight.py") and "_inflight" in r.stderr
    _gate_manifest(pkg)  # up to date again, but forced pure: by 1, or by naming the module
    for forced in ("1", "gate._inflight", "proxy.conn,gate._inflight"):
        r = _run(tmp_path, _GATE_PROBE, EPOCHGATE_PURE_PYTHON=forced)
        assert r.returncode == 0, r.stderr
        describe, mod, _ = r.stdout.splitlines()
        assert describe == "pure (EPOCHGATE_PURE_PYTHON is set)" and mod.endswith("_inflight.py")


def test_gate_planted_extension_loads_when_manifest_matches(tmp_path: Path) -> None:
    """The control for the test above: with a matching hash (and a forced-pure list naming only
    the sidecar's modules) the guard steps aside and Python loads the planted file — the
    import fails — so the guard is what kept it out."""
    _gate_manifest(_copy_gate(tmp_path))
    for env in ({}, {"EPOCHGATE_PURE_PYTHON": "proxy.conn,_log"}):
        r = _run(tmp_path, _GATE_PROBE, **env)
        assert r.returncode != 0 and "ImportError" in r.stderr, r.stdout + r.stderr


# ---- gate's public cimport surface (gate/capi.pxd): the data path's write gate cimports gate's tracker
# and admit decision through it, so the compiled data path loads only while those run compiled

def _pxd_cimports(pxd: Path) -> set[str]:
    import re

    return set(re.findall(r"^\s*from\s+([\w.]+)\s+cimport\b", pxd.read_text(), re.M))


def test_gate_bound_modules_are_those_compiled_against_gate_capi() -> None:
    """``GATE_BOUND`` (sidecar/_build.py) is every compiled module whose .pxd cimports gate.capi,
    directly or through another such module's type; ``gate/_build.py CAPI`` is what capi.pxd
    cimports from; a bound module's source hash covers capi.pxd and those .pxd files."""
    from gate import _build as gate_build
    from sidecar import _build

    pkg = ROOT / "sidecar"
    pxds = {n: pkg / f"{n.replace('.', '/')}.pxd" for n in _build.COMPILED}
    deps = {n: _pxd_cimports(p) for n, p in pxds.items() if p.exists()}
    bound = {n for n, d in deps.items() if "gate.capi" in d}
    while True:
        more = {n for n, d in deps.items() if any(f"sidecar.{b}" in d for b in bound)} - bound
        if not more:
            break
        bound |= more
    assert bound == set(_build.GATE_BOUND)
    assert {m.rpartition(".")[2] for m in _pxd_cimports(ROOT / "gate" / "capi.pxd")} == set(gate_build.CAPI)
    assert [p.name for p in _build.gate_capi_files(ROOT / "gate")] == ["capi.pxd", "_inflight.pxd", "_admission.pxd"]


def test_gate_layout_change_makes_the_bound_modules_stale(tmp_path: Path) -> None:
    """Gate rebuilt alone with a new tracker layout must not leave the write gate loaded against
    the old one: its source hash moves with gate/capi.pxd and the .pxd files it names, and only with those."""
    _copy_tree(tmp_path)
    shutil.copytree(ROOT / "gate", tmp_path / "gate", ignore=shutil.ignore_patterns("*.so", "*.c", "__pycache__"))
    pkg = tmp_path / "sidecar"
    before = {n: _hash(pkg, n) for n in ("proxy.writegate", "proxy.exchange", "proxy.conn")}
    with open(tmp_path / "gate" / "_inflight.py", "a") as f:  # a source, not a layout: nothing moves
        f.write("\n# edited after the build\n")
    assert {n: _hash(pkg, n) for n in before} == before
    with open(tmp_path / "gate" / "_table.pxd", "a") as f:  # not behind capi.pxd: nothing moves
        f.write("\n# edited after the build\n")
    assert {n: _hash(pkg, n) for n in before} == before
    for pxd in ("_inflight.pxd", "_admission.pxd"):  # named by capi.pxd
        with open(tmp_path / "gate" / pxd, "a") as f:
            f.write("\n# edited after the build\n")
        after = {n: _hash(pkg, n) for n in before}
        assert after["proxy.writegate"] != before["proxy.writegate"] and after["proxy.exchange"] != before["proxy.exchange"]
        assert after["proxy.conn"] == before["proxy.conn"]
        before = after


# one admitted write through the write gate, counted in flight until done, and the barrier's drain
_WRITE_PROBE = """
import asyncio, sidecar.proxy.exchange, sidecar._build as b, gate, sidecar.proxy.writegate as w
t = gate.InflightTracker()
g = w.WriteGate(gate.PlacementTable({"t1": "a"}), t)
assert g.admit("t1", 1).admitted and t.count("t1") == 1 and not t.drained("t1", 2)
async def drain():
    waiter = asyncio.ensure_future(t.wait_drained("t1", 2, timeout=5))
    await asyncio.sleep(0)
    g.done("t1", 1)
    return await waiter
assert asyncio.run(drain()) and t.count() == 0
r = g.admit("t9", 1)
assert not r.admitted and r.reason.value == "unknown_partition" and t.count() == 0
print(b.describe().split(" ", 1)[0], gate.describe_build().split(" ", 1)[0], gate.capi_ready())
print(w.__file__.rsplit("/", 1)[1].split(".")[0:2]); print(type(t).__module__)
"""


@functools.lru_cache(maxsize=1)
def _compiled_here() -> bool:
    """The checkout's data path and gate are built (what a run without EPOCHGATE_PURE_PYTHON loads)."""
    code = "import sidecar._build as b, gate; print(b.describe().split()[0], gate.capi_ready())"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
                       env={**{k: v for k, v in os.environ.items() if k != "EPOCHGATE_PURE_PYTHON"}, "PYTHONPATH": str(ROOT)})
    return r.stdout.split() == ["compiled", "True"]


@pytest.mark.parametrize("mode", ["compiled", "pure-sidecar", "pure-gate", "pure"])
def test_write_gate_counts_in_flight_in_every_build_mode(mode: str) -> None:
    """Compiled, the write gate calls gate's fail_closed_admit and the tracker's begin/end in C;
    every mix of builds admits, counts and drains the same. With gate's cimported modules forced
    pure under a compiled data path, the data path falls back to Python with a warning naming
    why (the compiled write gate could not load against a Python tracker: see the next test),
    even when exchange is the first module imported."""
    from sidecar import _build

    env = {"compiled": {}, "pure-sidecar": {"EPOCHGATE_PURE_PYTHON": ",".join(_build.COMPILED + _build.ENGINES)},
           "pure-gate": {"EPOCHGATE_PURE_PYTHON": "gate._inflight"}, "pure": {"EPOCHGATE_PURE_PYTHON": "1"}}[mode]
    r = subprocess.run([sys.executable, "-c", _WRITE_PROBE], capture_output=True, text=True, cwd=ROOT, timeout=60,
                       env={**{k: v for k, v in os.environ.items() if k != "EPOCHGATE_PURE_PYTHON"},
                            "PYTHONPATH": str(ROOT), **env})
    assert r.returncode == 0, r.stdout + r.stderr
    builds, wfile, tracker_mod = r.stdout.splitlines()
    if not _compiled_here():
        assert "writegate', 'py'" in wfile
        return
    sidecar_build, gate_build, ready = builds.split()
    expect = {"compiled": ("compiled", "compiled", "True"), "pure-sidecar": ("pure", "compiled", "True"),
              "pure-gate": ("pure", "compiled", "False"), "pure": ("pure", "pure", "False")}[mode]
    assert (sidecar_build, gate_build, ready) == expect, r.stderr
    assert ("writegate', 'py'" in wfile) == (mode != "compiled")
    if mode == "pure-gate":
        assert f"the data path ({', '.join(_build.GATE_BOUND)} compiled against gate/capi.pxd) runs as Python" in r.stderr


def test_compiled_write_gate_refuses_a_python_tracker() -> None:
    """The control for the pure-gate mode above: told that gate's cimported modules run compiled
    when they do not, the data path stays compiled and the compiled write gate's import fails
    (its cimported tracker type is a Python class: no C layout, no vtable) — the fallback is
    what keeps that mode running."""
    if not _compiled_here():
        pytest.skip("the data path is not built here (python3 setup.py build_ext --inplace)")
    code = "import gate; gate.capi_ready = lambda: True\nimport sidecar.proxy.writegate"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
                       env=dict(os.environ, PYTHONPATH=str(ROOT), EPOCHGATE_PURE_PYTHON="gate._inflight"))
    assert r.returncode != 0
    assert "gate._inflight.InflightTracker size changed" in r.stderr or "__pyx_vtable__" in r.stderr, r.stderr
