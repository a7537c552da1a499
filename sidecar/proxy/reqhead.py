"""A parsed client request head, filled by the client connection's parser
callbacks (``_proxy.ClientConn``) and read by the exchange (``_exchange``) —
the request-side mirror of ``_upstream.RespHead``.

Headers the proxy owns are sorted out once, as they arrive (see ``_proxy``);
everything else is kept in ``fwd`` as ready-made lines. The connection
also normalises the target (``_target``) and records the first reason to
refuse the request in ``bad`` (``(status, title, detail)``): the exchange
answers it when it is dispatched, in order with the requests before it.
"""

from __future__ import annotations


class ReqHead:
    __slots__ = ("url", "rpath", "fwd", "keyh", "method", "method_b", "version", "keep", "host", "clen", "te",
                 "chunked", "upgrade", "expect", "rid", "rid_given", "conn_given", "ctoks", "xff", "xfp", "xfh", "bad")

    def __init__(self) -> None:
        self.url = b""
        self.rpath: str | None = None  # the path rules see, when it differs from the forwarded one (_target)
        self.fwd: list[bytes] = []  # headers to forward, flat: name, b": ", value, b"\r\n", …
        self.keyh: dict[bytes, bytes] = {}  # partition-key headers (lower-case name → value)
        self.method = "GET"
        self.method_b = b"GET"
        self.version = "1.1"
        self.keep = True               # the client's keep-alive wish (the exchange's keep_alive starts here)
        self.host: bytes | None = None
        self.clen: bytes | None = None
        self.te: bytes | None = None
        self.chunked = False
        self.upgrade: bytes | bool = False
        self.expect = False            # Expect: 100-continue
        self.rid: bytes | None = None  # X-Request-Id (given, or made when the head goes upstream)
        self.rid_given = False
        self.conn_given = False         # a Connection header came (the HTTP version is then asked, see conn)
        self.ctoks: set[bytes] | None = None  # header names Connection lists (dropped when forwarding)
        self.xff: bytes | None = None
        self.xfp: bytes | None = None
        self.xfh: bytes | None = None
        self.bad: tuple[int, str, str] | None = None

    def has_body(self) -> bool:
        return self.chunked or (self.clen is not None and self.clen != b"0")
