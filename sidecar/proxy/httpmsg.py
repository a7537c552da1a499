"""HTTP/1.1 message pieces for the data path: header filtering, heads, problems.

Hop-by-hop handling follows RFC 9110 §7.6.1: ``Connection`` and every header
it lists, plus ``Keep-Alive``, ``Proxy-Connection``, ``TE``, ``Trailer``,
``Transfer-Encoding`` and ``Upgrade`` are never forwarded as received; the
proxy frames each hop itself (``Content-Length`` or chunked) and re-adds
``Upgrade``/``Connection: upgrade`` only on a tunnelled upgrade.
"""

from __future__ import annotations

import socket
from http import HTTPStatus
from typing import Any

from gate import PROBLEM_TYPE_PREFIX, ProblemDocument, Reject, problem_document, is_stale_epoch_problem as _is_stale

_REASONS = {s.value: s.phrase.encode("latin-1") for s in HTTPStatus}


def reason(status: int) -> bytes:
    return _REASONS.get(status, b"Unknown")


def connection_tokens(value: bytes) -> set[bytes]:
    """Lower-case header names listed in a ``Connection`` header value."""
    return {t.strip().lower() for t in value.split(b",") if t.strip()}


def upgrades_to_h2(value: bytes) -> bool:
    """Whether an ``Upgrade`` value offers HTTP/2 in any of its tokens (``h2c``, ``h2``, with or
    without a ``/version``): a node choosing it would tunnel streams no gate sees. Every token
    counts, not the first: the node picks among all of them (RFC 9110 §7.8)."""
    for tok in value.split(b","):
        name = tok.split(b"/", 1)[0].strip().lower()
        if name == b"h2c" or name == b"h2":
            return True
    return False


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"


def problem_body(status: int, slug: str, title: str, detail: str | None = None, **extra: object) -> bytes:
    """The proxy's own RFC 9457 problem document (not a refused write: see
    ``stale_epoch_problem``), built by the one builder ``gate.problem_document``."""
    doc: dict[str, object] = {"type": PROBLEM_TYPE_PREFIX + slug, "title": title, "status": status}
    if detail:
        doc["detail"] = detail
    doc.update(extra)
    return ProblemDocument(status, doc).encode()


def stale_epoch_problem(reject: Reject, partition: str, detail: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """A refused write's 503 problem (DESIGN §7): body and the headers besides Content-Type."""
    doc = problem_document(reject, partition, retry_after_s=1, detail=detail)
    extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in doc.headers.items() if k != "Content-Type"]
    return doc.encode(), extra


def response(status: int, body: bytes, *, content_type: bytes = b"application/problem+json",
             close: bool = False, extra: list[tuple[bytes, bytes]] | None = None,
             request_id: bytes | None = None) -> bytes:
    """A whole small response (the proxy's own answers)."""
    head = [b"HTTP/1.1 %d %b\r\nContent-Type: %b\r\nContent-Length: %d\r\n" % (status, reason(status), content_type,
                                                                               len(body))]
    if request_id is not None:
        head.append(b"X-Request-Id: %b\r\n" % request_id)
    for k, v in extra or ():
        head.append(b"%b: %b\r\n" % (k, v))
    if close:
        head.append(b"Connection: close\r\n")
    head.append(b"\r\n")
    head.append(body)
    return b"".join(head)


class RespHead:
    """A parsed upstream response head, sorted for re-framing (see ``response.ResponseMixin._write_head``)."""

    __slots__ = ("status", "reason", "lines", "ctoks", "clen", "te", "upg", "ctype", "keep")

    def __init__(self) -> None:
        self.reason = b""
        self.lines: list[bytes] = []  # forwarded headers, flat: name, b": ", value, b"\r\n", … (or one block: fields())
        self.ctoks = self.clen = self.te = self.upg = self.ctype = None
        self.status = 0
        self.keep = True

    def fields(self) -> list[tuple[bytes, bytes]]:
        """The forwarded headers as ``(name, value)``. ``lines`` is flat (name, b": ", value,
        CRLF per header: httptools, the HTTP/2 bridge) or one ready-made block (the compiled
        parser, ``llresp``); llhttp refuses CR and LF inside a value, so the block splits back."""
        lines = self.lines
        if len(lines) != 1:
            return [(lines[i], lines[i + 2]) for i in range(0, len(lines), 4)]
        return [tuple(ln.split(b": ", 1)) for ln in lines[0].split(b"\r\n")[:-1]]  # type: ignore[misc]


def is_stale_epoch_problem(status: int, content_type: bytes | None, body: bytes) -> bool:
    """Is this an application's stale-epoch problem response (DESIGN §7)?"""
    return _is_stale(status, None if content_type is None else content_type.decode("latin-1"), body)


#: transports whose event loop already turned TCP_NODELAY on for every TCP socket it accepts or
#: connects: uvloop's (``TCPTransport.new``) and asyncio's (``_SelectorSocketTransport.__init__``), and
#: TLS over either (its transport sits on one of those). For them ``set_nodelay`` does nothing: asking
#: uvloop for the socket is a ``getsockname`` and setting the option again a ``setsockopt``, two of the
#: ~21 syscalls a fresh client connection costs (bench_syscalls.py; docs/figures-peers.md, stop 40).
_LOOP_SETS_NODELAY = frozenset({"TCPTransport", "_SelectorSocketTransport", "_SSLProtocolTransport"})


def set_nodelay(transport: Any) -> None:
    """TCP_NODELAY on a proxy socket (client or upstream side): heads and small bodies go
    out at once instead of waiting on Nagle. Already on for the loops' own TCP transports
    (``_LOOP_SETS_NODELAY``; tests/test_nodelay.py checks it on both loops)."""
    if type(transport).__name__ in _LOOP_SETS_NODELAY:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
