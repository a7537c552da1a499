"""The layering rules, checked from the source (no imports run).

* The library does not depend on the application: nothing in ``gate/``
  imports ``sidecar`` or ``examples``.
* Everything outside ``gate`` uses only gate's public names: no
  ``gate._private`` module, no ``_private`` name (tests may reach inside;
  they are not checked). Compiled code too: a ``.pxd``/``.pyx``/``.pxi``
  outside ``gate`` cimports from gate only through its public cimport
  surface, ``gate/capi.pxd`` (which re-exports the private modules' types).
* No import cycles among the project's modules, counting imports inside
  functions too (``python -m sidecar`` once loaded its entry point twice
  because the supervisor imported ``sidecar.__main__`` back).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gate", "sidecar", "examples")
OUTSIDE_GATE = ("sidecar", "examples", "bench")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _files(*tops: str) -> list[Path]:
    return sorted(p for top in tops for p in (ROOT / top).rglob("*.py"))


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, absolute module, imported names) for every import, at any depth,
    except those under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(), str(path))
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[tuple[int, str, list[str]]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    out.append((child.lineno, alias.name, []))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                out.append((child.lineno, mod, [a.name for a in child.names]))
            visit(child)

    visit(tree)
    return out


def test_gate_does_not_import_the_application():
    bad = [f"{p.relative_to(ROOT)}:{line} imports {mod}"
           for p in _files("gate") for line, mod, _ in _imports(p)
           if mod.split(".")[0] in ("sidecar", "examples", "bench", "tests")]
    assert not bad, "\n".join(bad)


def test_outside_gate_only_public_names():
    bad = []
    for p in _files(*OUTSIDE_GATE):
        for line, mod, names in _imports(p):
            parts = mod.split(".")
            if parts[0] != "gate":
                continue
            private = [x for x in parts[1:] if x.startswith("_")] + [n for n in names if n.startswith("_")]
            if private:
                bad.append(f"{p.relative_to(ROOT)}:{line} from {mod} import {', '.join(names) or '*'}")
    assert not bad, "private gate names used outside gate (export them from gate/__init__.py):\n" + "\n".join(bad)


#: gate's one public cimport surface (gate/capi.pxd): the door compiled code outside gate uses
PUBLIC_CIMPORT = "gate.capi"
_CIMPORT = re.compile(r"^[ \t]*(?:from[ \t]+([\w.]+)[ \t]+cimport[ \t]+([^#\n]*)|cimport[ \t]+([^#\n]*))", re.M)


def _cython_files(*tops: str) -> list[Path]:
    return sorted(p for top in tops for ext in ("pxd", "pyx", "pxi") for p in (ROOT / top).rglob(f"*.{ext}"))


def _cimports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, cimported names) for every ``cimport`` in a Cython file (``cimport a.b as c``:
    module ``a.b``, no names)."""
    text = path.read_text()
    out = []
    for m in _CIMPORT.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        if m.group(1):
            names = [n.split()[0] for n in m.group(2).strip(" ()").split(",") if n.strip()]
            out.append((line, m.group(1), names))
        else:
            out += [(line, n.split()[0], []) for n in m.group(3).split(",") if n.strip()]
    return out


def _cimport_violations(files: list[Path]) -> list[str]:
    """Cimports of gate other than its public surface's public names."""
    bad = []
    for p in files:
        for line, mod, names in _cimports(p):
            if mod.split(".")[0] != "gate":
                continue
            if mod != PUBLIC_CIMPORT or any(n.startswith("_") for n in names):
                bad.append(f"{p.name}:{line} cimports {mod} {', '.join(names)}".rstrip())
    return bad


def test_outside_gate_cimports_only_gates_public_surface():
    bad = _cimport_violations(_cython_files(*OUTSIDE_GATE))
    assert not bad, (f"gate's private modules cimported outside gate (cimport from {PUBLIC_CIMPORT}, "
                     "gate/capi.pxd, and add the name there):\n" + "\n".join(bad))


def test_cimport_check_finds_a_private_cimport(tmp_path: Path):
    """The checker itself: the public door passes, a private module or name behind it does not,
    and the scan does see the data path's real door (the write gate)."""
    pxd = tmp_path / "user.pxd"
    pxd.write_text("from gate.capi cimport InflightTracker, fail_closed_admit  # the door\n"
                   "from gate._inflight cimport InflightTracker\n"
                   "cimport gate._admission as adm\n"
                   "from gate.capi cimport _private\n"
                   "from sidecar.proxy.context cimport ProxyContext\n")
    assert _cimport_violations([pxd]) == ["user.pxd:2 cimports gate._inflight InflightTracker",
                                          "user.pxd:3 cimports gate._admission",
                                          "user.pxd:4 cimports gate.capi _private"]
    door = [(p.name, mod) for p in _cython_files("sidecar") for _, mod, _ in _cimports(p) if mod == PUBLIC_CIMPORT]
    assert ("writegate.pxd", PUBLIC_CIMPORT) in door


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in _files(*PACKAGES)}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        for _, target, names in _imports(path):
            deps = set()
            for n in names:  # ``from . import _x`` names a submodule
                if f"{target}.{n}" in files:
                    deps.add(f"{target}.{n}")
            if not deps or len(deps) < len(names):
                t = target
                while t and t not in files:
                    t = t.rpartition(".")[0]
                if t:
                    deps.add(t)
            graph[mod] |= {d for d in deps if d != mod}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_cycle_check_finds_a_cycle():
    """The checker itself: the cycle this test was written for is found."""
    g = _graph()
    g["sidecar._supervisor"].add("sidecar.__main__")
    assert ["sidecar.__main__", "sidecar._supervisor"] in _cycles(g)


@pytest.mark.parametrize("top", OUTSIDE_GATE)
def test_scan_sees_files(top):
    assert _files(top), f"no Python files found under {top}/"


# The sidecar's layers, by folder: the data path knows nothing of the control plane or
# its API, and neither of those reaches into the data path (they meet only in the
# process layer, sidecar/_sidecar.py, which wires them together).
_FORBIDDEN = {
    "sidecar.proxy": ("sidecar.api", "sidecar.control"),
    "sidecar.api": ("sidecar.proxy",),
    "sidecar.control": ("sidecar.proxy",),
}


def _layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, deps in sorted(graph.items()):
        for layer, banned in _FORBIDDEN.items():
            if mod == layer or mod.startswith(layer + "."):
                bad += [f"{mod} -> {d}" for d in sorted(deps) if any(d == b or d.startswith(b + ".") for b in banned)]
    return bad


def test_sidecar_layers_by_folder():
    assert _layer_violations(_graph()) == []


def test_layer_check_finds_a_violation():
    g = _graph()
    g["sidecar.proxy.exchange"].add("sidecar.control.runner")
    assert _layer_violations(g) == ["sidecar.proxy.exchange -> sidecar.control.runner"]
