"""The scripts' Python: make (once) and reuse a virtual environment, install only when needed.

Run by scripts/demo, scripts/fleet and scripts/test with the interpreter that bootstraps them
(``$PYTHON``, else the first ``python3`` on PATH); prints the interpreter they should run on
stdout, and every message on stderr as one line per event.

* ``PYTHON`` unset: ``.venv`` in the repository (made with ``python3 -m venv``; on Debian
  that needs ``python3.X-venv``: installed with apt-get when run as root, else named).
* ``PYTHON`` set: that interpreter, managed by you (a virtual environment, a pyenv, …);
  the project is installed into it the same way, and an externally managed one (Debian's
  ``/usr/bin/python3``) is refused in one line. With ``EPOCHGATE_SKIP_INSTALL=1`` nothing is
  installed and the dependencies are only checked (the scripts run from the checkout either way).
* ``pip install -e .[EXTRAS]`` runs only when the stamp differs: a hash of pyproject.toml,
  setup.py and the compiled modules' sources (sidecar/_build.py's COMPILED), this
  checkout's path and the interpreter's version. A second run costs one hash (~10 ms) instead
  of a reinstall and recompile (~30 s). ``EPOCHGATE_SKIP_INSTALL=1`` skips the install.
* libnghttp2's header missing (the compiled HTTP/2 engine is built against it): installed with
  apt-get (``libnghttp2-dev``) when run as root, else named; its presence is part of the stamp.
* An install that fails stops with one line (the error pip gave) and the path of its full log.

Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
STAMP = "epochgate-install.stamp"


class Stop(Exception):
    """One line for the user; the script exits 3."""


def say(who: str, msg: str) -> None:
    print(f"{who}: {msg}", file=sys.stderr, flush=True)


def _build_module(pkg: str):
    spec = importlib.util.spec_from_file_location(f"_epochgate_build_{pkg}", ROOT / pkg / "_build.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _compiled_sources() -> list[Path]:
    out = []
    for pkg in ("sidecar", "gate"):  # each package's _build.COMPILED (gate's: the in-flight tracker)
        mod = _build_module(pkg)
        for name in mod.COMPILED:
            base = ROOT / pkg / name.replace(".", "/")
            out += [p for p in (base.with_suffix(".py"), base.with_suffix(".pxd")) if p.exists()]
        for name, deps in getattr(mod, "NATIVE", {}).items():  # compiled-only modules and what they cimport
            out += [p for p in (ROOT / pkg / f"{name.replace('.', '/')}.pyx", *(ROOT / pkg / d for d in deps))
                    if p.exists()]
    return out


def _nghttp2_header() -> bool | None:
    """libnghttp2's header is installed (sidecar/_build.py decides); None: no binding to build."""
    find = getattr(_build_module("sidecar"), "nghttp2_header", None)
    return None if find is None else find() is not None


def ensure_nghttp2_header(who: str) -> None:
    """The HTTP/2 engine binding compiles only against libnghttp2's header (setup.py): on a fresh
    Debian machine, as root, install libnghttp2-dev before the project (as scripts/test installs
    prometheus); otherwise say once that ngh2 or h2 will run HTTP/2."""
    if os.environ.get("EPOCHGATE_PURE_PYTHON", "") not in ("", "0") or _nghttp2_header() is not False:
        return
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        say(who, "installing Debian's libnghttp2-dev (the compiled HTTP/2 engine is built against it)")
        env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "libnghttp2-dev"]):
            if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0:
                say(who, "could not install libnghttp2-dev: HTTP/2 runs on ngh2 (or h2)")
                return
        return
    say(who, "libnghttp2's header is not installed: HTTP/2 runs on ngh2 (or h2); for the compiled engine: "
             "sudo apt-get install libnghttp2-dev")


_PROBE = ("import importlib.util, json, sys; print(json.dumps({'version': sys.version, 'prefix': sys.prefix, "
          "'pip': importlib.util.find_spec('pip') is not None}))")
_probed: dict[str, dict] = {}


def probe(python: str) -> dict:
    """The interpreter's version, prefix and whether it has pip: one start-up (~30 ms), cached."""
    if python not in _probed:
        try:
            res = subprocess.run([python, "-I", "-c", _PROBE], capture_output=True, text=True, timeout=30)
            _probed[python] = json.loads(res.stdout) if res.returncode == 0 else {}
        except (OSError, ValueError, subprocess.TimeoutExpired):
            _probed[python] = {}
    return _probed[python]


def stamp_of(python: str) -> str:
    """What an install depends on: when this is unchanged, the installed project still fits."""
    h = hashlib.sha256()
    for p in [ROOT / "pyproject.toml", ROOT / "setup.py", ROOT / "sidecar" / "_build.py", ROOT / "gate" / "_build.py",
              *_compiled_sources()]:
        h.update(str(p.relative_to(ROOT)).encode() + b"\0" + p.read_bytes() + b"\0")
    version = probe(python).get("version", "")
    h.update(f"{ROOT}\0{version}\0{os.environ.get('EPOCHGATE_PURE_PYTHON', '')}".encode())
    # (libnghttp2's header installed since the last install: rebuild, now with the HTTP/2 engine binding)
    h.update(b"nghttp2.h" if _nghttp2_header() else b"-")
    return h.hexdigest()


def _prefix(python: str) -> Path:
    return Path(probe(python)["prefix"])


def stamp_path(python: str) -> Path:
    """Inside .venv (deleting it deletes its stamp); for a $PYTHON, in the user's cache keyed by
    environment and checkout (never written into someone else's prefix, such as /usr)."""
    prefix = _prefix(python)
    if prefix.resolve() == VENV.resolve():
        return VENV / STAMP
    key = hashlib.sha256(f"{prefix}\0{ROOT}".encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "epochgate"
    return cache / f"install-{key}.stamp"


def _works(python: Path) -> bool:
    _probed.pop(str(python), None)
    return bool(probe(str(python)).get("pip"))


def venv_package() -> str:
    """Debian's package that gives this interpreter ``venv`` + ``ensurepip``."""
    return f"python3.{sys.version_info.minor}-venv"


def _apt_install(who: str, pkg: str) -> bool:
    say(who, f"installing Debian's {pkg} (python3 -m venv needs it)")
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", pkg]):
        if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0:
            return False
    return True


def make_venv(who: str) -> Path:
    python = VENV / "bin" / "python"
    if _works(python):
        return python
    if VENV.exists():   # half made (a failed earlier try) or its interpreter is gone: start over
        say(who, f"{VENV} is unusable; making it again")
        shutil.rmtree(VENV)
    for attempt in (1, 2):
        say(who, f"making a virtual environment in {VENV} with {sys.executable} (once)")
        res = subprocess.run([sys.executable, "-m", "venv", str(VENV)], capture_output=True, text=True)
        if res.returncode == 0 and _works(python):
            return python
        shutil.rmtree(VENV, ignore_errors=True)
        out = res.stdout + res.stderr
        missing = "ensurepip" in out or "No module named venv" in out or res.returncode == 0
        if not missing:
            raise Stop(f"{sys.executable} -m venv failed: {_last_line(out)}")
        pkg = venv_package()
        can_apt = os.geteuid() == 0 and shutil.which("apt-get") is not None
        if attempt == 1 and can_apt and _apt_install(who, pkg):
            continue
        how = f"sudo apt-get install {pkg}" if shutil.which("apt-get") else "install Python's venv module"
        raise Stop(f"{sys.executable} cannot make a virtual environment (no ensurepip): run `{how}`, "
                   f"or set PYTHON to an interpreter that has the project installed")
    raise AssertionError("unreachable")


def _last_line(text: str) -> str:
    """The line of pip's (or venv's) output that says what went wrong."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for pat in (r"^ERROR: (?!.*--no-build-isolation)", r"^error: ", r"Error: ", r"^\w*Error\b"):
        hits = [ln for ln in lines if re.search(pat, ln)]
        if hits:
            return hits[0][:300]
    return lines[-1][:300] if lines else "(no output)"


def _read_stamp(stamp: Path) -> tuple[str, set[str]]:
    """(build-input hash, extras installed) from a stamp file: "HASH extra,extra"."""
    try:
        digest, _, extras = stamp.read_text().strip().partition(" ")
    except OSError:
        return "", set()
    return digest, {e for e in extras.split(",") if e}


def install(who: str, python: str, extras: str) -> None:
    """The extras accumulate: scripts/test's [test] stays installed when scripts/demo (no extra)
    runs next, so the two never take turns reinstalling."""
    stamp = stamp_path(python)
    want = stamp_of(python)
    had, had_extras = _read_stamp(stamp)
    asked = {e for e in extras.split(",") if e}
    if had == want and asked <= had_extras:
        return
    all_extras = sorted(asked | had_extras)
    prefix = _prefix(python)
    target = f".[{','.join(all_extras)}]" if all_extras else "."
    say(who, f"installing the project into {prefix} (pip install -e '{target}'; first run or its build "
             f"inputs changed: a few minutes with the compile)")
    log = stamp.with_suffix(".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        res = subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-e", target],
                             cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    if res.returncode != 0:
        text = log.read_text(errors="replace")
        stamp.unlink(missing_ok=True)
        if "externally-managed-environment" in text:
            raise Stop(f"{python} is externally managed (pip refuses to install into it): unset PYTHON to let "
                       f"the script make {VENV.relative_to(ROOT)}/, or point PYTHON at a virtual environment")
        raise Stop(f"installing into {prefix} failed: {_last_line(text)} (full log: {log})")
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(f"{want} {','.join(all_extras)}\n")


def check_deps(python: str) -> None:
    """Without an install, at least say in one line when the dependencies are not there."""
    res = subprocess.run([python, "-c", "import aiohttp, grpc, prometheus_client, httptools"], capture_output=True,
                         text=True)
    if res.returncode != 0:
        raise Stop(f"EPOCHGATE_SKIP_INSTALL is set but {python} lacks the project's dependencies "
                   f"({_last_line(res.stderr)}): run `{python} -m pip install -e .` or unset it")


def main(argv: list[str]) -> int:
    who = argv[0] if argv else "epochgate"
    extras = argv[1] if len(argv) > 1 else ""
    try:
        if sys.version_info < (3, 11):
            raise Stop(f"{sys.executable} is Python {sys.version.split()[0]}; epochgate needs ≥ 3.11 "
                       f"(set PYTHON to one)")
        python = sys.executable if os.environ.get("PYTHON") else str(make_venv(who))
        if os.environ.get("EPOCHGATE_SKIP_INSTALL", "") in ("", "0"):
            ensure_nghttp2_header(who)
            install(who, python, extras)
        else:
            check_deps(python)
    except Stop as exc:
        say(who, str(exc))
        return 3
    print(python)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
