"""W3C Trace Context (``traceparent``/``tracestate``) and the parent-based ratio sampler.

Plain code, no OpenTelemetry import: the data path calls these once per request
when tracing is on, and they must cost little there (``parse`` ≈ 1 µs, ``decide``
a few hundred ns). The sampling rule is the SDK's ``ParentBased(TraceIdRatioBased(r))``:
a request carrying a valid ``traceparent`` follows its ``sampled`` flag; any other
is sampled when the low 64 bits of its (fresh, random) trace id are below
``r × 2⁶⁴`` — the same bound the SDK computes, so a trace's decision is the same
in the sidecar and in an application using the SDK (tests/test_tracing_units.py).
"""

from __future__ import annotations

import random

_LOW64 = (1 << 64) - 1
_HEX = frozenset(b"0123456789abcdef")


class Parent:
    """A valid inbound ``traceparent`` (and the ``tracestate`` that came with it)."""

    __slots__ = ("trace_id", "span_id", "sampled", "state")

    def __init__(self, trace_id: int, span_id: int, sampled: bool, state: bytes | None) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.sampled = sampled
        self.state = state


def parse(traceparent: bytes | None, tracestate: bytes | None = None) -> Parent | None:
    """``00-<32 hex>-<16 hex>-<2 hex>`` → ``Parent``; None for anything else (an invalid
    header is ignored, as the W3C spec says: the request starts a new trace)."""
    if traceparent is None:
        return None
    v = traceparent.strip()
    if len(v) < 55 or v[2:3] != b"-" or v[35:36] != b"-" or v[52:53] != b"-":
        return None
    ver, tid, sid, flags = v[:2], v[3:35], v[36:52], v[53:55]
    if ver == b"ff" or (ver == b"00" and len(v) != 55) or (len(v) > 55 and v[55:56] != b"-"):
        return None
    if not _HEX.issuperset(ver + tid + sid + flags):
        return None
    t, s = int(tid, 16), int(sid, 16)
    if t == 0 or s == 0:
        return None
    return Parent(t, s, bool(int(flags, 16) & 1), tracestate.strip() if tracestate else None)


def traceparent(trace_id: int, span_id: int, sampled: bool = True) -> bytes:
    return b"00-%032x-%016x-%s" % (trace_id, span_id, b"01" if sampled else b"00")


class Sampler:
    """``ParentBased(TraceIdRatioBased(ratio))`` over ids made here."""

    __slots__ = ("ratio", "bound", "_bits")

    def __init__(self, ratio: float) -> None:
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio must be in [0, 1], got {ratio!r}")
        self.ratio = ratio
        self.bound = round(ratio * (_LOW64 + 1))  # TraceIdRatioBased.get_bound_for_rate
        self._bits = random.Random().getrandbits

    def draw(self) -> int:
        """The low 64 bits of a new trace id: enough to decide (``< bound``)."""
        return self._bits(64)

    def new_trace_id(self, low: int | None = None) -> int:
        """A random trace id (with ``low`` as its low 64 bits when given: the drawn ones)."""
        if low is None:
            return self._bits(128) or 1
        return (self._bits(64) << 64) | low or 1

    def new_span_id(self) -> int:
        return self._bits(64) or 1

    def sampled(self, parent: Parent | None, trace_id: int) -> bool:
        if parent is not None:
            return parent.sampled
        return (trace_id & _LOW64) < self.bound
