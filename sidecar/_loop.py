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


def settle_heap() -> None:
    """Once start-up is done: collect, then freeze what is left (``gc.freeze``).

    Modules, configuration and the table built at start live as long as the process;
    frozen, the collector's full passes no longer walk them. A full pass over the idle
    sidecar's heap (26k tracked objects with the lazy imports; 63k before them) pauses the
    event loop 2.5–4.6 ms here (15–29 ms before), and under load a full pass comes about every
    20 s (bench_latency saw the p99.9 pauses); frozen, it walks only what was made since
    (``python bench/bench_gc.py``)."""
    import gc

    gc.collect()
    gc.freeze()
