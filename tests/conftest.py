"""Shared fixtures. Real Consul fixtures live in ``tests/_consul.py``."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

pytest_plugins = ["tests._procs", "tests._consul", "tests._h2_engines"]  # _consul imports _procs: load it first
