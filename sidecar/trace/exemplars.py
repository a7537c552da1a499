"""Trace ids as exemplars on the request-latency histogram (Grafana links them to traces).

The data path counts latencies into plain ints (``proxy/stats.py``) and moves them into
the Prometheus histograms in batches, so no ``observe(v, exemplar)`` call happens per
request. Instead, when a sampled request's spans are built (off the request path), its
trace id is set as the exemplar of the ``epochgate_request_duration_seconds{stage="total"}``
bucket its duration falls in — what ``Histogram.observe(v, exemplar=…)`` would have set
(prometheus_client keeps the latest exemplar per bucket). They are exposed only in the
OpenMetrics format (``/metrics`` with ``Accept: application/openmetrics-text``).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Any, Callable


def exemplar_setter(stats: Any) -> Callable[[bool, float, int], None] | None:
    """``set(write, seconds, trace_id)``; None when this prometheus_client keeps no exemplars."""
    from prometheus_client.samples import Exemplar

    totals = {False: stats.hist_r[3].child, True: stats.hist_w[3].child}
    bounds = stats.bounds
    if not all(hasattr(c, "_buckets") and hasattr(c._buckets[0], "set_exemplar") for c in totals.values()):
        return None

    def set_exemplar(write: bool, seconds: float, trace_id: int) -> None:
        totals[write]._buckets[bisect_left(bounds, seconds)].set_exemplar(
            Exemplar({"trace_id": "%032x" % trace_id}, seconds, time.time()))

    return set_exemplar
