"""``mypy --strict`` is clean on the library (``gate/``); CI runs this test.

Configuration (generated stubs and untyped third-party libraries) lives in
``pyproject.toml`` under ``[tool.mypy]``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gate_is_mypy_strict_clean():
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", "gate/"], cwd=ROOT, capture_output=True,
                          text=True, timeout=110)
    assert "No module named mypy" not in proc.stderr, "mypy is a [test] dependency: pip install -e '.[test]'"
    assert proc.returncode == 0, proc.stdout + proc.stderr
