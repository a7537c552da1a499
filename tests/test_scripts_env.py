"""The scripts' first ten minutes (issue 27): a busy port, a failed install and a missing
``python3-venv`` each stop in one line that says what to do; the install runs again only when
its build inputs change (scripts/_pyenv.py, scripts/_ports.py, scripts/_common.sh)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _pyenv():
    spec = importlib.util.spec_from_file_location("_epochgate_pyenv", ROOT / "scripts" / "_pyenv.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EPOCHGATE_", "DEMO_", "FLEET_"))}
    return env | {"PYTHON": sys.executable, "EPOCHGATE_SKIP_INSTALL": "1"} | extra


def _listening() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


@pytest.mark.parametrize("script, var", [("demo", "DEMO_PROXY_PORT"), ("fleet", "FLEET_PROXY_PORT")])
def test_a_busy_port_is_one_line_naming_the_variable_before_anything_starts(script, var, tmp_path):
    with _listening() as busy:
        port = busy.getsockname()[1]
        res = subprocess.run([str(ROOT / "scripts" / script), "--check"], env=_env(**{var: str(port)}),
                             capture_output=True, text=True, timeout=60)
    assert res.returncode == 3 and res.stdout == "", res.stdout + res.stderr
    assert res.stderr.splitlines() == [f"{script}: port {port} (the sidecar's proxy) is in use; move it with {var}=<port>"]


def _fake_project(tmp_path: Path, pyproject: str) -> Path:
    """A copy of the helper in a tree of its own, so pip's refusal concerns nothing real."""
    root = tmp_path / "proj"
    (root / "scripts").mkdir(parents=True)
    (root / "sidecar").mkdir()
    shutil.copy(ROOT / "scripts" / "_pyenv.py", root / "scripts")
    (root / "sidecar" / "_build.py").write_text('COMPILED = ("proxy.conn",)\n')
    (root / "sidecar" / "proxy").mkdir()
    (root / "sidecar" / "proxy" / "conn.py").write_text("x = 1\n")
    (root / "gate").mkdir()   # gate's compiled modules count too (the in-flight tracker)
    (root / "gate" / "_build.py").write_text('COMPILED = ("_inflight",)\n')
    (root / "gate" / "_inflight.py").write_text("y = 1\n")
    (root / "setup.py").write_text("from setuptools import setup\nsetup()\n")
    (root / "pyproject.toml").write_text(pyproject)
    return root


def test_a_failed_install_is_one_line_with_the_log(tmp_path):
    root = _fake_project(tmp_path, "[project\nname = broken\n")   # pip refuses it before building anything
    res = subprocess.run([sys.executable, str(root / "scripts" / "_pyenv.py"), "demo"], capture_output=True,
                         text=True, timeout=120, env=_env(XDG_CACHE_HOME=str(tmp_path / "cache"),
                                                          EPOCHGATE_SKIP_INSTALL=""))
    lines = res.stderr.splitlines()
    assert res.returncode == 3 and res.stdout == "", res.stderr
    assert len(lines) == 2 and lines[0].startswith("demo: installing the project into "), lines
    assert lines[1].startswith("demo: installing into ") and " failed: " in lines[1] and "(full log: " in lines[1]
    assert "Traceback" not in res.stderr
    assert not list((tmp_path / "cache").rglob("*.stamp"))   # a failed install leaves no stamp


@pytest.mark.skipif(not list(Path("/usr/lib").glob("python3*/EXTERNALLY-MANAGED")) or not Path("/usr/bin/python3").exists(),
                    reason="needs Debian's externally managed /usr/bin/python3")
def test_an_externally_managed_python_is_refused_in_one_line(tmp_path):
    """PYTHON=/usr/bin/python3 on Debian: pip refuses before it touches anything; we say why."""
    root = _fake_project(tmp_path, '[project]\nname = "fake"\nversion = "0"\n')
    res = subprocess.run(["/usr/bin/python3", str(root / "scripts" / "_pyenv.py"), "demo"], capture_output=True,
                         text=True, timeout=120, env=_env(PYTHON="/usr/bin/python3", EPOCHGATE_SKIP_INSTALL="",
                                                          XDG_CACHE_HOME=str(tmp_path / "cache")))
    assert res.returncode == 3, res.stderr
    assert res.stderr.splitlines()[-1] == ("demo: /usr/bin/python3 is externally managed (pip refuses to install "
                                           "into it): unset PYTHON to let the script make .venv/, or point PYTHON "
                                           "at a virtual environment")


def test_the_stamp_changes_with_the_build_inputs_only(tmp_path, monkeypatch):
    mod = _pyenv()
    root = _fake_project(tmp_path, '[project]\nname = "fake"\nversion = "0"\n')
    monkeypatch.setattr(mod, "ROOT", root)
    first = mod.stamp_of(sys.executable)
    (root / "sidecar" / "other.py").write_text("y = 2\n")                 # not compiled: no reinstall
    assert mod.stamp_of(sys.executable) == first
    (root / "sidecar" / "proxy" / "conn.pxd").write_text("cdef class C: pass\n")   # a compiled module's types
    second = mod.stamp_of(sys.executable)
    assert second != first
    (root / "gate" / "_inflight.pxd").write_text("cdef class T: pass\n")   # gate's compiled tracker too
    third = mod.stamp_of(sys.executable)
    assert third != second
    second = third
    (root / "pyproject.toml").write_text('[project]\nname = "fake"\nversion = "1"\n')
    assert mod.stamp_of(sys.executable) != second


def test_a_matching_stamp_installs_nothing(tmp_path, monkeypatch):
    mod = _pyenv()
    root = _fake_project(tmp_path, '[project]\nname = "fake"\nversion = "0"\n')
    monkeypatch.setattr(mod, "ROOT", root)
    # CI runs the suite from the checkout's own .venv: without this the stamp would be the real one
    monkeypatch.setattr(mod, "VENV", root / ".venv")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    stamp = mod.stamp_path(sys.executable)
    assert tmp_path in stamp.parents
    stamp.parent.mkdir(parents=True)
    stamp.write_text(mod.stamp_of(sys.executable) + " test\n")
    calls = []

    def run(cmd, *a, **k):   # record pip's calls, run nothing
        calls.append(cmd)
        return SimpleNamespace(returncode=0, stdout="", stderr="")

    monkeypatch.setattr(mod.subprocess, "run", run)
    mod.install("demo", sys.executable, "")        # scripts/demo after scripts/test: [test] is a superset
    mod.install("test", sys.executable, "test")
    assert calls == []
    mod.install("demo", sys.executable, "re2")     # an extra not installed yet: installed with the others
    assert calls and calls[0][-1] == ".[re2,test]" and stamp.read_text().split()[1] == "re2,test"


DEBIAN_NO_ENSUREPIP = (
    "The virtual environment was not created successfully because ensurepip is not\n"
    "available.  On Debian/Ubuntu systems, you need to install the python3-venv\n"
    "package using the following command.\n\n    apt install python3.11-venv\n\n"
    "You may need to use sudo with that command.  After installing the python3-venv\n"
    "package, recreate your virtual environment.\n\n"
    "Failing command: /tmp/x/.venv/bin/python3\n")


def _fake_venv(mod, monkeypatch, tmp_path, *, root: bool, works_after: int):
    """Debian's venv without python3.X-venv: the first `-m venv` fails as Debian's does."""
    venv = tmp_path / ".venv"
    monkeypatch.setattr(mod, "VENV", venv)
    tries = []

    def run(cmd, *a, **k):
        tries.append(cmd)
        if len(tries) >= works_after:
            (venv / "bin").mkdir(parents=True, exist_ok=True)
            return SimpleNamespace(returncode=0, stdout="", stderr="")
        venv.mkdir(exist_ok=True)   # Debian leaves a half-made directory behind
        return SimpleNamespace(returncode=1, stdout=DEBIAN_NO_ENSUREPIP, stderr="")

    monkeypatch.setattr(mod.subprocess, "run", run)
    monkeypatch.setattr(mod, "_works", lambda python: python.parent.is_dir())
    monkeypatch.setattr(mod.os, "geteuid", lambda: 0 if root else 1000)
    monkeypatch.setattr(mod.shutil, "which", lambda name: f"/usr/bin/{name}")
    return venv, tries


def test_no_ensurepip_not_root_names_the_one_command(tmp_path, monkeypatch):
    mod = _pyenv()
    venv, _ = _fake_venv(mod, monkeypatch, tmp_path, root=False, works_after=99)
    with pytest.raises(mod.Stop) as exc:
        mod.make_venv("demo")
    assert f"run `sudo apt-get install python3.{sys.version_info.minor}-venv`" in str(exc.value)
    assert not venv.exists()   # no half-made .venv left to trip the next run


def test_no_ensurepip_as_root_installs_the_package_and_tries_again(tmp_path, monkeypatch):
    mod = _pyenv()
    venv, tries = _fake_venv(mod, monkeypatch, tmp_path, root=True, works_after=2)
    installed = []
    monkeypatch.setattr(mod, "_apt_install", lambda who, pkg: installed.append(pkg) or True)
    assert mod.make_venv("demo") == venv / "bin" / "python"
    assert installed == [f"python3.{sys.version_info.minor}-venv"] and len(tries) == 2


def test_the_virtual_environment_is_not_committed():
    res = subprocess.run(["git", "check-ignore", "-q", ".venv/bin/python"], cwd=ROOT)
    assert res.returncode == 0, ".venv/ must be in .gitignore"
