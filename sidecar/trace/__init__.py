"""OpenTelemetry traces of proxied requests and of the controller's jobs (docs/tracing.md).

Off unless ``--trace-otlp-endpoint`` is set; this package imports nothing of
OpenTelemetry until ``open_request_tracing``/``JobTracer`` are called (the SDK is the
``[otel]`` extra). The data path sees only ``ctx.tracer`` (a ``RequestTracer`` or
``None``) and calls its marks at a few points (``recorder``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from .recorder import RequestTracer
from .w3c import Parent, Sampler, parse, traceparent

__all__ = ["Parent", "RequestTracer", "Sampler", "TraceSink", "attach_request_tracing", "open_request_tracing", "parse",
           "traceparent"]


class TraceSink:
    """What a process needs to stop tracing cleanly: flush the records, then the exporter."""

    def __init__(self, tracer: RequestTracer | None, processor: Any) -> None:
        self.tracer = tracer
        self.processor = processor

    def close(self) -> None:
        if self.tracer is not None:
            self.tracer.close()
        self.processor.shutdown()  # exports what is queued (bounded by the exporter's timeout)


def open_request_tracing(endpoint: str, ratio: float, loop: asyncio.AbstractEventLoop,
                         service: str = "epochgate-sidecar", instance: str = "") -> TraceSink:
    """A ``RequestTracer`` whose sampled requests are exported to ``endpoint`` (OTLP/HTTP)."""
    from .otlp import open_processor
    from .spans import SpanBuilder

    processor, resource, scope = open_processor(endpoint, service, instance)
    rt = RequestTracer(loop, ratio, lambda recs: None)
    builder = SpanBuilder(processor, resource, scope, rt.sampler.new_span_id)
    rt.build = builder.build_all
    rt.builder = builder  # type: ignore[attr-defined]
    return TraceSink(rt, processor)


def attach_request_tracing(ctx: Any, cfg: Any, instance: str = "") -> TraceSink | None:
    """Turn tracing on for a proxy context when ``cfg.trace_otlp_endpoint`` is set."""
    if cfg.trace_otlp_endpoint is None:
        return None
    from .exemplars import exemplar_setter

    sink = open_request_tracing(cfg.trace_otlp_endpoint, cfg.trace_sample_ratio, ctx.loop, instance=instance)
    sink.tracer.builder.exemplar = exemplar_setter(ctx.stats)  # type: ignore[union-attr]
    ctx.tracer = ctx.hold.tracer = sink.tracer
    return sink
