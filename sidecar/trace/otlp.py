"""The OpenTelemetry SDK end: a tracer provider exporting OTLP/HTTP (protobuf).

Imported only when tracing is on (``--trace-otlp-endpoint``): the SDK, the
exporter and ``requests`` stay out of a sidecar that does not trace
(tests/test_lazy_imports.py). The ids of the spans are chosen by the data path
(the CLIENT span's id went upstream in ``traceparent`` before the span existed),
so the provider's id generator hands out the ids it is given (``ScriptedIds``);
the sampling decision is the data path's too, so the provider samples every span
it is asked to make.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from gate import ConfigError

EXPORT_DELAY_MS = 1000   # the batch processor's schedule (the SDK's default is 5 s)
QUEUE_MAX = 8192         # spans queued for export; more are dropped by the SDK (counted there)


def traces_url(endpoint: str) -> str:
    """``http://collector:4318`` → ``…/v1/traces`` (a URL with a path is taken as given,
    like ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``)."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError("trace_otlp_endpoint", f"expected an http:// or https:// OTLP/HTTP URL, got {endpoint!r}")
    return endpoint if parts.path not in ("", "/") else endpoint.rstrip("/") + "/v1/traces"


def scripted_ids() -> Any:
    """An SDK id generator returning the ids set just before each ``start_span`` (one
    thread builds spans)."""
    from opentelemetry.sdk.trace.id_generator import IdGenerator

    class ScriptedIds(IdGenerator):
        def __init__(self) -> None:
            self.trace_id = 1
            self.span_id = 1

        def generate_span_id(self) -> int:
            return self.span_id

        def generate_trace_id(self) -> int:
            return self.trace_id

    return ScriptedIds()


def open_provider(endpoint: str, service: str, instance: str) -> tuple[Any, Any, Any]:
    """(provider, tracer, ids) exporting to ``endpoint``; raises ``ConfigError`` when the
    ``[otel]`` extra is not installed."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON
    except ImportError as exc:
        raise ConfigError("trace_otlp_endpoint",
                          f"tracing needs the OpenTelemetry SDK: pip install 'epochgate[otel]' ({exc})") from None
    ids = scripted_ids()
    provider = TracerProvider(resource=Resource.create({"service.name": service, "service.instance.id": instance}),
                              sampler=ALWAYS_ON, id_generator=ids)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url(endpoint), timeout=5),
                                                   max_queue_size=QUEUE_MAX, schedule_delay_millis=EXPORT_DELAY_MS))
    return provider, provider.get_tracer("epochgate"), ids
