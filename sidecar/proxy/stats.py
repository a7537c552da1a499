"""Cheap per-request metric recording, flushed into ``Metrics`` (DESIGN §8).

``prometheus_client`` takes a lock and walks the bucket list on every
``observe`` (≈1 µs each; a request records four durations and two counters).
The data path instead bumps plain counters here and ``flush()`` moves the
totals into the Prometheus children before every scrape and once a second.
Compiled, a request's counter and its four histogram buckets are C
increments (C arrays, a one-entry cache for the counter); as plain Python,
a ``bisect`` and a list increment. Single-threaded: the event loop owns it.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from .._metrics import Metrics

# compiled, a histogram's tallies and bucket edges are C arrays (stats.pxd) and ``record`` finds
# a bucket with ``_Hist.slot``'s C loop; as plain Python ``bisect_left`` (C) and a list are cheaper
_COMPILED = not __file__.endswith(".py")
#: the most buckets a histogram here may have (compiled: its C arrays; ours have 16 and 18)
MAX_BUCKETS = 64


class _Hist:
    """One histogram child's pending observations: per-bucket counts (``counts``) and their sum.

    Compiled, the counts are a C array (``tally``; ``counts`` builds the list when read, at a
    flush), and the bucket edges a C array that ``slot`` searches: a request's four observations
    cost C increments, not a Python int made and stored per bucket (``record``)."""

    # (``tally``, ``edge``: C arrays compiled, lists as plain Python — one name and one use for both)
    __slots__ = ("child", "bounds", "tally", "edge", "nb", "sum", "n")
    tally: list[int]
    edge: list[float]

    def __init__(self, child: Any) -> None:
        self.child = child
        self.bounds: tuple[float, ...] = tuple(child._upper_bounds)
        nb = len(self.bounds)
        if nb > MAX_BUCKETS or not nb or self.bounds[-1] != float("inf"):
            raise ValueError(f"a histogram here has at most {MAX_BUCKETS} buckets, the last +Inf")
        self.nb = nb
        self.sum = 0.0
        self.n = 0
        if _COMPILED:  # (the C arrays are there already: filled in place)
            for i in range(nb):
                self.edge[i] = self.bounds[i]
                self.tally[i] = 0
        else:
            tally: list[int] = [0] * nb  # (through names: Cython refuses `[0] * nb` into its C array even in
            edge: list[float] = list(self.bounds)  # a branch that never runs compiled)
            self.tally = tally
            self.edge = edge

    @property
    def counts(self) -> list[int]:
        """The pending count per bucket (``bisect_left(bounds, v)`` for each value observed)."""
        return [self.tally[i] for i in range(self.nb)]

    def slot(self, v: float) -> int:
        """``bisect_left(self.bounds, v)``; compiled, a C loop over the C array of edges (~40
        instructions against ~1,100 for the ``bisect_left`` call and ~135 for a loop over the
        tuple's floats; callgrind: the tuple's was 4,500 per request, 6% of a GET, in stop 36)."""
        if not _COMPILED:
            return bisect_left(self.bounds, v)
        lo = 0
        hi = self.nb
        while lo < hi:
            mid = (lo + hi) >> 1
            if self.edge[mid] < v:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def add(self, v: float) -> None:
        """Count ``v`` in its bucket (``n`` is the observe() count only; see flush)."""
        self.tally[self.slot(v)] += 1
        self.sum += v

    def observe(self, v: float) -> None:
        self.add(v)
        self.n += 1

    def _take(self) -> list[int]:
        """The pending counts, reset to zero."""
        counts = self.counts
        for i in range(self.nb):
            self.tally[i] = 0
        return counts

    def flush(self) -> None:
        counts = self._take()
        if not self.n and not any(counts):  # (Stats.record bumps counts and sum, not n)
            return
        buckets = getattr(self.child, "_buckets", None)
        total = getattr(self.child, "_sum", None)
        if buckets is None or total is None:  # a prometheus_client without these internals: replay
            for i, c in enumerate(counts):
                for _ in range(c):
                    self.child.observe(self.bounds[i] if self.bounds[i] != float("inf") else self.sum)
        else:
            for i, c in enumerate(counts):
                if c:
                    buckets[i].inc(c)
            total.inc(self.sum)
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
        #: in front of those dicts, the last request's (kind, phase, outcome) and how many finished
        #: with it since (compared by identity: the same label objects come request after request;
        #: a C increment instead of two dict look-ups and an int made and stored, ~450 instructions)
        self.last_w = False
        self.last_phase: Any = None
        self.last_out: Any = None
        self.last_n = 0
        self.decisions: dict[tuple[str, str, str], int] = {}
        #: hash slot → requests resolved to it (``proxy/resolve.py``; bounded by the table)
        self.slots: dict[str, int] = {}

    def record(self, write: bool, phase: str, outcome: str, t0: float, t_res: float, t_adm: float, t_up: float,
               t: float) -> None:
        """One finished request: its counter and stage durations, in one call (perf_counter stamps;
        0.0 = stage not reached). Inlined ``_Hist.add``: this runs once per request; compiled,
        each is a C search and C increments (``_Hist``)."""
        if phase is self.last_phase and outcome is self.last_out and write == self.last_w:
            self.last_n += 1
        else:
            self._count(write, phase, outcome)
        h_res, h_adm, h_up, h_tot = self.hist_w if write else self.hist_r
        if t_res:
            v = t_res - t0
            i = h_res.slot(v)
            h_res.tally[i] += 1
            h_res.sum += v
            if t_adm:
                v = t_adm - t_res
                i = h_adm.slot(v)
                h_adm.tally[i] += 1
                h_adm.sum += v
        if t_up:
            v = t - t_up
            i = h_up.slot(v)
            h_up.tally[i] += 1
            h_up.sum += v
        v = t - t0 if t0 else 0.0
        i = h_tot.slot(v)
        h_tot.tally[i] += 1
        h_tot.sum += v

    def _count(self, write: bool, phase: str, outcome: str) -> None:
        """``record``'s counter when its (kind, phase, outcome) is not the last one's: the last
        one's run goes into the dicts, this one starts a run."""
        self._fold()
        self.last_w = write
        self.last_phase = phase
        self.last_out = outcome
        self.last_n = 1

    def _fold(self) -> None:
        n = self.last_n
        if n:
            self.last_n = 0
            req = self._req_w if self.last_w else self._req_r
            byout = req.get(self.last_phase)
            if byout is None:
                byout = req[self.last_phase] = {}
            byout[self.last_out] = byout.get(self.last_out, 0) + n

    def requests(self) -> dict[tuple[str, str, str], int]:
        """The finished requests not yet flushed: (kind, phase, outcome) → count."""
        self._fold()
        return {(kind, phase, outcome): n for kind, req in (("read", self._req_r), ("write", self._req_w))
                for phase, byout in req.items() for outcome, n in byout.items()}

    def decision(self, phase: str, decision: str, reason: str) -> None:
        key = (phase, decision, reason)
        self.decisions[key] = self.decisions.get(key, 0) + 1

    def flush(self) -> None:
        """Move accumulated values into the Prometheus metrics."""
        for (kind, phase, outcome), n in self.requests().items():
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
