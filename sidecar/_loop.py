"""The event loop every sidecar process runs on.

A module of its own so that the entry point (``__main__``), the supervisor and
the workers share it without importing each other: ``python -m sidecar`` runs
``__main__`` as ``__main__``, so a ``from .__main__ import …`` elsewhere would
load the entry point a second time as ``sidecar.__main__``.
"""

from __future__ import annotations

import asyncio


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when available (the data path is measured on it), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
