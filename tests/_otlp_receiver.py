"""A real OTLP/HTTP trace receiver for tests: decodes ``ExportTraceServiceRequest``
(the opentelemetry-proto package's generated protobuf) posted to ``/v1/traces``.

Runs in its own thread (the exporters post from theirs, blocking), so a test's
event loop never has to serve it. No OpenTelemetry Collector package exists on
PyPI or in Debian (checked: Debian has only the Go SDK, the collector comes as Go
modules to build or as release archives/images), so this stands in for it.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


def _value(v: Any) -> Any:
    which = v.WhichOneof("value")
    return getattr(v, which) if which else None


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


class OtlpReceiver:
    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.requests = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_error(404 if self.path != "/v1/traces" else 415)
                    return
                req = trace_service_pb2.ExportTraceServiceRequest()
                req.ParseFromString(body)
                receiver._add(req)
                out = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _add(self, req: Any) -> None:
        with self.lock:
            self.requests += 1
            for rs in req.resource_spans:
                resource = _attrs(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        self.spans.append({
                            "service": resource.get("service.name"), "name": s.name, "kind": KINDS.get(s.kind),
                            "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
                            "parent_span_id": s.parent_span_id.hex(), "attributes": _attrs(s.attributes),
                            "events": [(e.name, _attrs(e.attributes), e.time_unix_nano) for e in s.events],
                            "start": s.start_time_unix_nano, "end": s.end_time_unix_nano,
                            "status": s.status.code})

    def __enter__(self) -> "OtlpReceiver":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def find(self, pred: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        with self.lock:
            return [s for s in self.spans if pred(s)]

    def wait(self, pred: Callable[[dict[str, Any]], bool], n: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The spans matching ``pred`` once at least ``n`` have arrived (bounded wait)."""
        end = time.monotonic() + timeout
        while True:
            got = self.find(pred)
            if len(got) >= n or time.monotonic() > end:
                return got
            time.sleep(0.02)
