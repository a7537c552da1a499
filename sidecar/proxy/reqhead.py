"""A parsed client request head, filled by the client connection's parser
callbacks (``_proxy.ClientConn``) and read by the exchange (``_exchange``) —
the request-side mirror of ``_upstream.RespHead``.

Headers the proxy owns are sorted out once, as they arrive (see ``conn``);
everything else is kept in ``fwd`` as ready-made lines. The connection
also normalises the target (``_target``) and records the first reason to
refuse the request in ``bad`` (``(status, title, detail)``): the exchange
answers it when it is dispatched, in order with the requests before it.
"""

from __future__ import annotations

#: this module runs compiled (an extension module's file is not the ``.py``): see ``new_head``
_COMPILED = not __file__.endswith(".py")


class ReqHead:
    __slots__ = ("url", "rpath", "fwd", "keyh", "method", "method_b", "version", "keep", "host", "clen", "te",
                 "chunked", "upgrade", "expect", "rid", "rid_given", "conn_given", "ctoks", "xff", "xfp", "xfh", "bad")

    def _zero(self) -> None:
        """The fields whose start value is None or False (what the compiled type starts with)."""
        self.rpath: str | None = None  # the path rules see, when it differs from the forwarded one (_target)
        self.host: bytes | None = None
        self.clen: bytes | None = None
        self.te: bytes | None = None
        self.chunked = False
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

    def kept(self, drop: set[bytes]) -> list[bytes]:
        """The lines of ``fwd`` whose field name (any case) is not in ``drop`` (lower-case: the
        names a ``Connection`` header listed). A block splits back into its lines: llhttp
        refuses CR and LF inside a value."""
        fwd = self.fwd
        if len(fwd) == 1:
            lines = fwd[0].split(b"\r\n")[:-1]
            return [ln + b"\r\n" for ln in lines if ln.partition(b":")[0].lower() not in drop]
        out: list[bytes] = []
        for i in range(0, len(fwd), 4):
            if fwd[i].lower() not in drop:
                out += fwd[i:i + 4]
        return out


def new_head() -> ReqHead:
    """A new head for the exchange (``exchange.new_request``): the one way a ``ReqHead`` is made
    (the maker pattern, docs/compiled-build.md "Object makers"). Compiled, the type's allocation
    already holds None / False in every field, so only the fields with another start value are
    set; the plain build sets the rest in ``_zero``."""
    h = ReqHead.__new__(ReqHead)
    h.url = b""
    # headers to forward: flat (name, b": ", value, b"\r\n", … from httptools) or one
    # ready-made block of those lines (the compiled parser, llreq); ``kept`` reads either
    h.fwd = []
    h.keyh = {}  # partition-key headers (lower-case name → value)
    h.method = "GET"
    h.method_b = b"GET"
    h.version = "1.1"
    h.keep = True               # the client's keep-alive wish (the exchange's keep_alive starts here)
    h.upgrade = False
    if not _COMPILED:
        h._zero()
    return h
