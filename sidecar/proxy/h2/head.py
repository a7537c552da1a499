"""Reading and checking an HTTP/2 stream's request head (``stream.new_stream`` calls ``read_head``):
the fields to forward, the partition key's, and every check (``fields.py``), or — when the
header list equals the connection's last good one field for field — that head's answers
(``fields.HeadMemo``: the same checks on the same fields give the same answers, DESIGN.md).
Also the body's length against ``content-length`` (``length_error``, per DATA and at the end).
The stream's fields live in the base type (``response.pxd``): C fields here too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import fields as F
from .fields import HeadMemo, same_fields
from .response import H2ResponseMixin

if TYPE_CHECKING:
    from ..context import ProxyContext
    from .server import H2ServerConn

_GOOD_FIELDS = F.GOOD_FIELDS
# fields.py's checks as module globals: a look-up on the module object cost ~240 instructions
# each, six a request (bench_grpc_instr, callgrind); F.length_error stays an attribute (tests
# replace it to show its guard is load-bearing)
_PSEUDO = F.PSEUDO
_header_error = F.header_error
_content_length = F.content_length
_method_error = F.method_error
_path_error = F.path_error
_authority_error = F.authority_error
_DROP = frozenset({b"x-partition", b"x-placement", b"x-placement-epoch", b"host", b"x-forwarded-for"})


def read_head(ex: H2ResponseMixin, ctx: "ProxyContext", sconn: "H2ServerConn", headers: Any, ended: bool) -> None:
    """The request head: as the connection's last good one's (``HeadMemo``) when the header list
    equals it, else read and checked (``_read``) and remembered when good."""
    memo = sconn.head_memo
    if memo is not None and memo.router is ctx.router and same_fields(memo.headers, headers):
        # the same header list as this connection's last good head (a client sends the same
        # fields on every call): the same checks give the same answers, and the same fields are
        # forwarded (shared: nothing changes them in place). Only the body's length is this
        # stream's own (bench_grpc_instr --lone: see the commit)
        ex.fwd = memo.fwd
        ex.keyh = memo.keyh
        ex.method_b = memo.method_b
        ex.path = memo.path
        ex.authority = memo.authority
        ex.rid = memo.rid
        ex.rid_given = memo.rid_given
        ex.xff = memo.xff
        ex.ctype = memo.ctype
        ex.clen = memo.clen
        ex.method = memo.method
        ex.grpc = memo.grpc
        ex.head_route = memo
        err = length_error(ex, 0) if ended else None
        if err is not None:
            ex.bad = (400, "malformed request", err)
        return
    _read(ex, ctx, headers, ended)
    ex.head_route = None
    if ex.bad is None:
        # (one header list per connection kept: at most --max-header-bytes); its routing
        # (``dispatch``) and added fields (``attach``) by the first stream that gets that far
        memo = sconn.head_memo = HeadMemo(headers, ctx.router)
        memo.fwd = ex.fwd
        memo.keyh = ex.keyh
        memo.method_b = ex.method_b
        memo.path = ex.path
        memo.authority = ex.authority
        memo.rid = ex.rid
        memo.rid_given = ex.rid_given
        memo.xff = ex.xff
        memo.ctype = ex.ctype
        memo.clen = ex.clen
        memo.method = ex.method
        memo.grpc = ex.grpc
        ex.head_route = memo


def _read(ex: H2ResponseMixin, ctx: "ProxyContext", headers: Any, ended: bool) -> None:
    """The request head: the fields to forward, the partition key's, and every check (fields.py)."""
    method_b: bytes | None = None
    path: bytes | None = None
    ex.authority = None
    ex.fwd = []
    ex.keyh = {}
    ex.bad = None
    ex.rid = None
    ex.rid_given = False
    ex.xff = None
    ex.ctype = None
    ex.clen = None   # the declared body length (fields.py: the DATA must add up to it)
    keyn = ctx.router.header_names
    host = None
    size = 0
    malformed = None   # the first reason this head must not be forwarded (fields.py)
    pseudo: set[bytes] = set()
    good = _GOOD_FIELDS
    for field in headers:
        name, value = field
        size += len(name) + len(value) + 32  # (RFC 9113 §6.5.2 accounting)
        if name[:1] == b":":
            if ex.fwd or name in pseudo or name not in _PSEUDO:
                malformed = malformed or f"pseudo-header {name.decode('latin-1')!r} unknown, repeated or late"
            pseudo.add(name)
            if name == b":method":
                method_b = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                ex.authority = value
            elif name == b":protocol":
                ex.bad = (405, "method not allowed", "extended CONNECT is not proxied")
            continue
        if field not in good:  # (most fields were checked on an earlier stream: fields.GOOD_FIELDS)
            err = _header_error(field)
            if err is not None:
                malformed = malformed or err
        if name == b"content-length":
            n = _content_length(value, ex.clen)
            if isinstance(n, str):
                malformed = malformed or n
            else:
                ex.clen = n
            continue  # framing is the leg's: written once, from the checked number
        if name in keyn:
            old = ex.keyh.get(name)
            if old is not None and old != value:
                ex.bad = (400, "conflicting partition keys", f"header {name.decode('latin-1')} given twice")
            ex.keyh[name] = value
        elif name in _DROP or name[:11] == b"x-placement":  # (a slice: a method call cost 3x it)
            if name == b"host":
                host = value
            elif name == b"x-forwarded-for":
                ex.xff = value
            continue
        elif name == b"x-request-id":
            ex.rid = value
            ex.rid_given = True
        elif name == b"content-type":
            ex.ctype = value
        ex.fwd.append((name, value))
    if ex.authority is None:
        ex.authority = host
    ex.method_b = method_b or b"GET"
    ex.path = path or b"/"
    malformed = (malformed or _method_error(method_b) or _path_error(path, ex.method_b)
                 or (_authority_error(ex.authority) if ex.authority is not None else None)
                 or (length_error(ex, 0) if ended else None))
    if malformed is not None:
        ex.bad = (400, "malformed request", malformed)
    if size > ctx.max_header:
        ex.bad = (431, "request header fields too large", f"the header list exceeds {ctx.max_header} bytes")
    ex.method = ex.method_b.decode("ascii", "replace")
    if ex.method == "CONNECT":
        ex.bad = (405, "method not allowed", "CONNECT is not proxied")
    ex.grpc = ex.ctype is not None and ex.ctype.startswith(b"application/grpc")


def length_error(ex: H2ResponseMixin, more: int, ended: bool = True) -> str | None:
    """``more`` DATA bytes arrived (``ended``: and the stream ended): see fields.length_error."""
    ex.rcvd += more
    if ex.clen is None:  # (no length declared: nothing to check; gRPC sends none — a call less per DATA and end)
        return None
    return F.length_error(ex.clen, ex.rcvd, ended)
