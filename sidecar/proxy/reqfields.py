"""The HTTP/1.1 request header policy (``conn.ClientConn`` and ``llreq`` apply it): which fields
the proxy owns and what it does with each (its *kind*), the one table both request parsers sort
the fields by (``_header_table``), the request methods httptools reports, and the ``Connection``
options that are not field names.
"""

from __future__ import annotations

_CONN_OPTIONS = frozenset({b"upgrade", b"close", b"keep-alive"})


# header (lower-case) → how on_header treats it
_DROP, _HOST, _CLEN, _TE, _CONN, _UPG, _RID, _EXPECT, _XFF, _XFP, _XFH, _PLAIN, _KEY, _TRACE = range(14)
_TRACE_HEADERS = (b"traceparent", b"tracestate")  # kept back while tracing (re-emitted per attempt)
_SPECIAL = {
    b"host": _HOST, b"content-length": _CLEN, b"transfer-encoding": _TE, b"connection": _CONN,
    b"upgrade": _UPG, b"x-request-id": _RID, b"expect": _EXPECT, b"x-forwarded-for": _XFF,
    b"x-forwarded-proto": _XFP, b"x-forwarded-host": _XFH, b"keep-alive": _DROP, b"proxy-connection": _DROP,
    b"te": _DROP, b"trailer": _DROP, b"x-partition": _DROP, b"x-placement": _DROP, b"x-placement-epoch": _DROP,
}
_DROP_PREFIX = b"x-placement"  # any other name starting so is dropped too (the sidecar's own headers)
# the kinds whose line goes upstream as the client sent it (the rest are dropped or rebuilt by the exchange)
_FORWARDED = frozenset({_PLAIN, _KEY, _RID, _XFP, _XFH})
_TABLES: dict[tuple[frozenset, bool], dict[bytes, int]] = {}


def _header_table(keyh_names: frozenset, tracing: bool) -> dict[bytes, int]:
    """Every request header name the proxy owns (lower-case) → its kind; any other name is
    ``_DROP`` if it starts with ``_DROP_PREFIX``, else ``_PLAIN``. The one source of the
    policy for both parsers: ``_classify`` (httptools) and ``llreq``'s C table. Partition-key
    headers (the router's) win over the fixed table; the trace headers are kept back only
    while tracing."""
    t = _TABLES.get((keyh_names, tracing))
    if t is None:
        t = dict.fromkeys(_TRACE_HEADERS, _TRACE) if tracing else {}
        t.update(_SPECIAL)
        t.update(dict.fromkeys(keyh_names, _KEY))
        if len(_TABLES) < 64:  # one per router (a sidecar has one; tests make a few)
            _TABLES[(keyh_names, tracing)] = t
    return t


_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")}
