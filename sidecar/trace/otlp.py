"""The OpenTelemetry SDK end: a batch span processor exporting OTLP/HTTP (protobuf).

Imported only when tracing is on (``--trace-otlp-endpoint``): the SDK, the
exporter and ``requests`` stay out of a sidecar that does not trace
(tests/test_lazy_imports.py). The spans are finished before they are made (the
data path recorded their times and chose their ids: a CLIENT span's id went
upstream in ``traceparent`` before the span existed), so ``spans.py`` builds the
SDK's ``ReadableSpan`` — what exporters consume — and hands it to the processor;
no ``TracerProvider`` (its live-span bookkeeping and attribute cleaning cost ~35 µs
a span, measured, and our values are already clean).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from gate import ConfigError

EXPORT_DELAY_MS = 1000   # the batch processor's schedule (the SDK's default is 5 s)
QUEUE_MAX = 8192         # spans queued for export; more are dropped by the SDK (it logs that)


def traces_url(endpoint: str) -> str:
    """``http://collector:4318`` → ``…/v1/traces`` (a URL with a path is taken as given,
    like ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``)."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError("trace_otlp_endpoint", f"expected an http:// or https:// OTLP/HTTP URL, got {endpoint!r}")
    return endpoint if parts.path not in ("", "/") else endpoint.rstrip("/") + "/v1/traces"


def open_processor(endpoint: str, service: str, instance: str) -> tuple[Any, Any, Any]:
    """(processor, resource, scope) exporting to ``endpoint``; raises ``ConfigError`` when
    the ``[otel]`` extra is not installed. ``processor.shutdown()`` exports what is queued."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    except ImportError as exc:
        raise ConfigError("trace_otlp_endpoint",
                          f"tracing needs the OpenTelemetry SDK: pip install 'epochgate[otel]' ({exc})") from None
    attrs = {"service.name": service}
    if instance:
        attrs["service.instance.id"] = instance
    processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url(endpoint), timeout=5),
                                   max_queue_size=QUEUE_MAX, schedule_delay_millis=EXPORT_DELAY_MS)
    return processor, Resource.create(attrs), InstrumentationScope("epochgate")
