"""Cheap per-request metric recording, flushed into ``Metrics`` (DESIGN §8).

``prometheus_client`` takes a lock and walks the bucket list on every
``observe`` (≈1 µs each; a request records four durations and two counters).
The data path instead bumps plain ints here — a ``bisect`` and a list
increment — and ``flush()`` moves the totals into the Prometheus children
before every scrape and once a second. Single-threaded: the event loop owns it.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from .._metrics import Metrics

# compiled, ``record`` finds a bucket with ``_slot``'s C loop; as plain Python ``bisect_left``
# (C) is the cheaper call (sidecar/_build.py)
_COMPILED = not __file__.endswith(".py")


def _slot(bounds: tuple, v: float) -> int:
    """``bisect_left(bounds, v)`` as a typed loop: compiled, ~60 instructions against ~1,100 for
    the ``bisect_left`` call (its argument parsing and four float rich-compares; callgrind: 4,500
    per request, 6% of a GET in the bench harness)."""
    lo = 0
    hi = len(bounds)
    while lo < hi:
        mid = (lo + hi) >> 1
        x = bounds[mid]
        if x < v:
            lo = mid + 1
        else:
            hi = mid
    return lo


class _Hist:
    __slots__ = ("child", "bounds", "counts", "sum", "n")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.bounds = tuple(child._upper_bounds)
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0
        self.n = 0

    def observe(self, v: float) -> None:
        self.counts[bisect_left(self.bounds, v)] += 1
        self.sum += v
        self.n += 1

    def flush(self) -> None:
        if not self.n and not any(self.counts):  # (Stats.record bumps counts and sum, not n)
            return
        buckets = getattr(self.child, "_buckets", None)
        total = getattr(self.child, "_sum", None)
        if buckets is None or total is None:  # a prometheus_client without these internals: replay
            for i, c in enumerate(self.counts):
                for _ in range(c):
                    self.child.observe(self.bounds[i] if self.bounds[i] != float("inf") else self.sum)
        else:
            for i, c in enumerate(self.counts):
                if c:
                    buckets[i].inc(c)
            total.inc(self.sum)
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0
        self.n = 0


class Stats:
    """The data path's view of ``Metrics``."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        m = metrics
        self._hists: list[_Hist] = []

        def h(child: Any) -> _Hist:
            x = _Hist(child)
            self._hists.append(x)
            return x

        #: per kind: (resolve, admit, upstream, total) histograms
        self.hist_r = tuple(h(m.request_duration.labels("read", s)) for s in ("resolve", "admit", "upstream", "total"))
        self.hist_w = tuple(h(m.request_duration.labels("write", s)) for s in ("resolve", "admit", "upstream", "total"))
        self.hold = h(m.hold_duration)
        #: the request-duration buckets (one histogram family: the same for every kind and stage)
        self.bounds = self.hist_r[0].bounds
        #: finished requests, per kind: phase → outcome → count (two str-keyed look-ups per request
        #: instead of a 3-tuple key built, hashed and compared: bench_exchange_instr -1.1k per request)
        self._req_r: dict[str, dict[str, int]] = {}
        self._req_w: dict[str, dict[str, int]] = {}
        self.decisions: dict[tuple[str, str, str], int] = {}
        #: hash slot → requests resolved to it (``proxy/resolve.py``; bounded by the table)
        self.slots: dict[str, int] = {}

    def record(self, write: bool, phase: str, outcome: str, t0: float, t_res: float, t_adm: float, t_up: float,
               t: float) -> None:
        """One finished request: its counter and stage durations, in one call (perf_counter stamps;
        0.0 = stage not reached). Inlined ``_Hist.observe``: this runs once per request. The bucket
        index is a C integer when compiled (``_slot``; a list index then needs no int object)."""
        req = self._req_w if write else self._req_r
        byout = req.get(phase)
        if byout is None:
            byout = req[phase] = {}
        byout[outcome] = byout.get(outcome, 0) + 1
        h_res, h_adm, h_up, h_tot = self.hist_w if write else self.hist_r
        b = self.bounds
        if t_res:
            v = t_res - t0
            if _COMPILED:
                i = _slot(b, v)
            else:
                i = bisect_left(b, v)
            h_res.counts[i] += 1
            h_res.sum += v
            if t_adm:
                v = t_adm - t_res
                if _COMPILED:
                    i = _slot(b, v)
                else:
                    i = bisect_left(b, v)
                h_adm.counts[i] += 1
                h_adm.sum += v
        if t_up:
            v = t - t_up
            if _COMPILED:
                i = _slot(b, v)
            else:
                i = bisect_left(b, v)
            h_up.counts[i] += 1
            h_up.sum += v
        v = t - t0 if t0 else 0.0
        if _COMPILED:
            i = _slot(b, v)
        else:
            i = bisect_left(b, v)
        h_tot.counts[i] += 1
        h_tot.sum += v

    def decision(self, phase: str, decision: str, reason: str) -> None:
        key = (phase, decision, reason)
        self.decisions[key] = self.decisions.get(key, 0) + 1

    def flush(self) -> None:
        """Move accumulated values into the Prometheus metrics."""
        for kind, req in (("read", self._req_r), ("write", self._req_w)):
            for phase, byout in req.items():
                for outcome, n in byout.items():
                    self.metrics.requests.labels(kind, phase, outcome).inc(n)
        self._req_r, self._req_w = {}, {}
        dec, self.decisions = self.decisions, {}
        for key, n in dec.items():
            self.metrics.gate_decisions.labels(*key).inc(n)
        sl, self.slots = self.slots, {}
        for slot, n in sl.items():
            self.metrics.slot_requests.labels(str(slot)).inc(n)
        for x in self._hists:
            x.flush()
