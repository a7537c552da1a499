"""``python bench/_tail_probe.py OUT.json SIDECAR-ARGS...``: the sidecar (``python -m sidecar``'s code
path) with probes that time what runs on its event loop besides the requests, for bench_tail.py.

* every garbage collection (``gc.callbacks``): generation, duration, objects collected;
* every callback the loop runs from ``call_soon`` / ``call_later`` / ``call_at`` — the context's
  tick (timeouts, idle sweeps, the pool sweep, the access log's timed flush), the metrics flush,
  hold timers, task wake-ups (named by the task's coroutine) — through a uvloop subclass whose
  scheduling methods wrap the callback (I/O callbacks, i.e. the requests themselves, are not timed);
* every ``AccessLog.flush``, named by who made it: a timer or the tick, or the data path
  (``AccessLog.write``: the oldest line due, or 256 queued). Compiled, through a Python subclass
  overriding the cpdef ``flush`` (the data path's cpdef ``write`` then checks for an override on
  each call: a few dozen ns, in every probed variant alike).

Events of at least ``EPOCHGATE_PROBE_MIN_US`` (default 50) µs are kept with their wall-clock start
(``time.time()``, as h2load's log), so bench_tail.py can tell which slow requests overlapped them;
all are counted. Written to OUT.json when the sidecar exits (SIGTERM).

After the sidecar's start-up ``settle_heap`` it applies a variant's collector settings, so one can be
measured before it is coded: ``PROBE_GC_FREEZE=0`` (``gc.unfreeze``), ``PROBE_GC_THRESHOLD=a,b,c``
(``gc.set_threshold``), ``PROBE_GC=0`` (``gc.disable``). ``PROBE_GC_SAVEALL=1`` keeps what the collector frees and
lists its most common types at exit (what forms cycles per request). ``PROBE_OFF=1``: those settings only, no probe.
"""

from __future__ import annotations

import gc
import json
import os
import runpy
import sys
import time

out_path = sys.argv[1]
sys.argv = ["sidecar", *sys.argv[2:]]
PROBE = os.environ.get("PROBE_OFF") != "1"  # off: only the PROBE_GC_* settings
born = time.monotonic()
MIN_S = float(os.environ.get("EPOCHGATE_PROBE_MIN_US", "50")) / 1e6
pc = time.perf_counter
off = time.time() - pc()  # perf_counter → wall clock
events: list[tuple[str, float, float]] = []   # (kind, wall start s, duration s), duration ≥ MIN_S
totals: dict[str, list[float]] = {}           # kind → [count, total s, max s]


def note(kind: str, t0: float, dt: float) -> None:
    t = totals.get(kind)
    if t is None:
        t = totals[kind] = [0, 0.0, 0.0]
    t[0] += 1
    t[1] += dt
    if dt > t[2]:
        t[2] = dt
    if dt >= MIN_S:
        events.append((kind, t0 + off, dt))


_gc_t0 = [0.0]


def on_gc(phase: str, info: dict) -> None:
    if phase == "start":
        _gc_t0[0] = pc()
    else:
        t0 = _gc_t0[0]
        note(f"gc{info['generation']}", t0, pc() - t0)


def name_of(cb) -> str:
    self = getattr(cb, "__self__", None)
    if self is not None and hasattr(self, "get_coro"):  # a task's wake-up / step
        coro = self.get_coro()
        return "task " + getattr(coro, "__qualname__", type(coro).__name__)
    return getattr(cb, "__qualname__", None) or type(cb).__name__


in_cb = [False]  # inside a callback timed below (tells the access log's timer/tick flushes from the data path's)


def timed(cb):
    name = name_of(cb)

    def run(*args):
        t0 = pc()
        outer, in_cb[0] = in_cb[0], True
        try:
            return cb(*args)
        finally:
            in_cb[0] = outer
            note(name, t0, pc() - t0)
    return run


def probed_loop():
    import uvloop

    class Loop(uvloop.Loop):
        def call_soon(self, cb, *args, context=None):
            return super().call_soon(timed(cb), *args, context=context)

        def call_later(self, delay, cb, *args, context=None):
            return super().call_later(delay, timed(cb), *args, context=context)

        def call_at(self, when, cb, *args, context=None):
            return super().call_at(when, timed(cb), *args, context=context)

    return Loop()


import sidecar._loop as _loop  # noqa: E402
import sidecar.__main__ as _main  # noqa: E402

_settle = _loop.settle_heap


def settle_heap() -> None:
    """The sidecar's own start-up GC settings, then a variant's (PROBE_GC_*), to measure one before coding it."""
    _settle()
    if os.environ.get("PROBE_GC_FREEZE") == "0":
        gc.unfreeze()
    if th := os.environ.get("PROBE_GC_THRESHOLD"):
        gc.set_threshold(*(int(x) for x in th.split(",")))
    if os.environ.get("PROBE_GC") == "0":
        gc.disable()
    if os.environ.get("PROBE_GC_SAVEALL") == "1":  # what the collector frees: kept in gc.garbage, counted at exit
        gc.set_debug(gc.DEBUG_SAVEALL)


_main.settle_heap = _loop.settle_heap = settle_heap
if PROBE:  # the tick's walk over the client connections, on its own
    import sidecar.proxy.context as _context

    _sweep = _context.sweep_clients

    def sweep_clients(ctx, now):
        t0 = pc()
        try:
            _sweep(ctx, now)
        finally:
            note(f"tick: sweep_clients ({len(ctx.clients)} clients)", t0, pc() - t0)
    _context.sweep_clients = sweep_clients
if PROBE:
    _loop.new_event_loop = _main.new_event_loop = probed_loop
    gc.callbacks.append(on_gc)

try:
    import sidecar._log as _log

    def timed_flush(flush):
        def run(self) -> None:
            n = len(self.rows)
            t0 = pc()
            try:
                flush(self)
            finally:
                if n:  # who flushed: a timer or tick callback the probe is timing, or the data path (AccessLog.write)
                    who = "timer/tick" if in_cb[0] else ("data path, 256 lines" if n >= 256 else "data path")
                    note(f"access flush ({who})", t0, pc() - t0)
        return run

    if PROBE and _log.__file__.endswith(".py"):  # pure: its methods can be wrapped
        _log.AccessLog.flush = timed_flush(_log.AccessLog.flush)
    elif PROBE:  # compiled: a Python subclass overrides the cpdef flush (write's calls reach it too)
        import sidecar._sidecar as _sc

        class TimedAccessLog(_log.AccessLog):
            flush = timed_flush(_log.AccessLog.flush)
        _sc.AccessLog = TimedAccessLog
except ImportError:
    pass


def dump() -> None:
    garbage: list = []
    if gc.get_debug() & gc.DEBUG_SAVEALL:
        gc.collect()
        from collections import Counter

        garbage = Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage).most_common(25)
    with open(out_path, "w") as f:
        json.dump({"events": events, "totals": totals, "gc_threshold": gc.get_threshold(),
                   "life_s": time.monotonic() - born, "garbage": garbage,
                   "frozen": gc.get_freeze_count()}, f)


try:
    sys.exit(_main.main(sys.argv))
finally:
    dump()
