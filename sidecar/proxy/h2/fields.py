"""What an HTTP/2 request head must be before the sidecar forwards it (RFC 9113
§8.1.1, §8.2, §8.3.1): checked here, whatever the ``h2`` release in use checks.

A request forwarded to an HTTP/1.1 node becomes a request line and header
lines: a CR or LF in a value, a space or ``\\x0b`` in ``:path``, a name that is
not a token, or a length the body does not match would let the client write
text the node parses as something else — another request it never had
admitted (issue 26). ``h2`` validates much of this too (since 4.3.0), but the
sidecar does not rest on one library version: these checks run on every
stream, for every kind of node (a stream whose header list equals its
connection's last good one reuses their answers: ``stream.py``).

* names: lower-case ``tchar`` only (RFC 9110 §5.6.2; upper case is malformed in
  HTTP/2); no connection-specific field (``connection``, ``keep-alive``,
  ``proxy-connection``, ``transfer-encoding``, ``upgrade``), ``te`` only as
  ``trailers`` (§8.2.2);
* values: no NUL, CR, LF or other control character but HTAB, no DEL, and no
  leading or trailing SP/HTAB (§8.2.1; the HTTP/1.1 parser refuses the same);
* pseudo-headers: only ``:method :scheme :path :authority`` (``:protocol``
  is refused by the exchange), each once, before every regular field; ``:method``
  a token; ``:path`` origin-form (``/...``) or ``*`` for OPTIONS, visible ASCII
  only (what the HTTP/1.1 parser accepts in a request target); ``:authority``
  and ``host`` without whitespace, controls or userinfo (they become
  ``X-Forwarded-Host`` and the HTTP/1.1 authority);
* ``content-length``: digits, every copy equal; the DATA the stream carries
  must add up to it (checked by the exchange as DATA arrives and when the stream
  ends — by HEADERS, DATA or trailers).

Each check returns the reason (for the 400 problem's detail) or ``None``.
"""

from __future__ import annotations

import re
from typing import Sequence

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+").fullmatch
# controls but HTAB, and DEL; the ends are checked apart (one alternation with \A/\Z anchors
# made the search ~5x slower: it retries the anchors at every byte)
_BAD_CHAR = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]").search
_WS = (9, 32)
_good_names: dict[bytes, None] = {}   # names found good (client-chosen: bounded)
_PATH = re.compile(rb"/[\x21-\x7e]*").fullmatch
_AUTHORITY = re.compile(rb"[\x21-\x7e]+").fullmatch
CONNECTION_SPECIFIC = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"})
PSEUDO = frozenset({b":method", b":scheme", b":path", b":authority", b":protocol"})


def _show(b: bytes) -> str:
    return repr(b[:40])[1:]


def field_error(name: bytes, value: bytes) -> str | None:
    """A regular (non-pseudo) header field."""
    if name not in _good_names:
        if _NAME(name) is None:
            return f"header name {_show(name)} is not a lower-case token"
        if name in CONNECTION_SPECIFIC:
            return f"connection-specific header {name.decode()} is not allowed in HTTP/2"
        if name != b"te" and len(_good_names) < 4096:
            _good_names[name] = None
    if value and (value[0] in _WS or value[-1] in _WS or _BAD_CHAR(value) is not None):
        return f"header {name.decode()} has a control character or surrounding whitespace in its value"
    if name == b"te" and value != b"trailers":
        return "te other than 'trailers' is not allowed in HTTP/2"
    return None


#: (name, value) pairs found good by ``field_error``: a client sends the same content-type, te,
#: user-agent and key on every stream, and a hit skips the checks (bounded: client-chosen; short
#: fields only, a request id or trace id is new every time)
GOOD_FIELDS: dict[tuple[bytes, bytes], None] = {}
GOOD_FIELDS_MAX = 4096
GOOD_FIELD_LEN = 128


def header_error(field: tuple[bytes, bytes]) -> str | None:
    """``field_error`` for a (name, value) pair not in ``GOOD_FIELDS`` (the caller looks there
    first: a dict look-up, where the checks are a call and a regular-expression search);
    remembers it when good."""
    name, value = field
    err = field_error(name, value)
    if err is None and len(name) + len(value) <= GOOD_FIELD_LEN and len(GOOD_FIELDS) < GOOD_FIELDS_MAX:
        GOOD_FIELDS[field] = None
    return err


#: pseudo-header values found good, likewise (a dict look-up instead of a regular expression per stream)
_good_methods: dict[bytes, None] = {}
_good_paths: dict[bytes, None] = {}
_good_authorities: dict[bytes, None] = {}


def _remember(cache: dict[bytes, None], value: bytes) -> None:
    if len(value) <= GOOD_FIELD_LEN and len(cache) < GOOD_FIELDS_MAX:
        cache[value] = None


def method_error(method: bytes | None) -> str | None:
    if method in _good_methods:
        return None
    if method is None:
        return "the :method pseudo-header is missing"
    if _TOKEN(method) is None:
        return f":method {_show(method)} is not a token"
    _remember(_good_methods, method)
    return None


def path_error(path: bytes | None, method: bytes) -> str | None:
    """``:path`` as it will become an HTTP/1.1 request target (and what the hook check reads)."""
    if path is None:
        return "the :path pseudo-header is missing"
    if path in _good_paths:   # (never "*": that depends on the method)
        return None
    if path == b"*":
        return None if method == b"OPTIONS" else ":path '*' is for OPTIONS only"
    if _PATH(path) is None:
        return f":path {_show(path)} is not an origin-form target of visible ASCII characters"
    _remember(_good_paths, path)
    return None


def authority_error(authority: bytes) -> str | None:
    if authority in _good_authorities:
        return None
    if _AUTHORITY(authority) is None or authority.find(b"@") >= 0:
        return f"authority {_show(authority)} is not a host[:port]"
    _remember(_good_authorities, authority)
    return None


def content_length(value: bytes, previous: int | None) -> int | str:
    """The declared length (an int) or the reason it is refused."""
    if not value.isdigit() or len(value) > 18:  # (bytes.isdigit: ASCII digits only)
        return f"content-length {_show(value)} is not a number below 10**18"
    n = int(value)
    if previous is not None and previous != n:
        return "differing content-length headers"
    return n


def same_fields(a: Sequence[tuple[bytes, bytes]], b: Sequence[tuple[bytes, bytes]]) -> bool:
    """``a == b`` for two header lists of (name, value) pairs, stopping at the first difference:
    compiled, one C loop of bytes compares, where the lists' own ``==`` compared each pair as a
    tuple through the generic rich compare (~380 instructions a field: bench_grpc_instr, callgrind)."""
    n = len(a)
    if n != len(b):
        return False
    for i in range(n):
        x = a[i]
        y = b[i]
        if x is not y and (x[0] != y[0] or x[1] != y[1]):
            return False
    return True


class HeadMemo:
    """A connection's last good request head and what ``H2Exchange`` read from it (stream.py): a
    stream whose header list equals ``headers`` (under the same ``router``) gets the same checks'
    answers and forwarded fields; once a stream got that far, the same routing (``dispatch``:
    normalised target, read or write, partition) and the fields added upstream at one placement
    and epoch (``attach``: before and after the request id). One per connection, at most
    ``--max-header-bytes`` of fields. A typed object, not a list of slots: in the Cython build its
    fields are C reads (fields.pxd)."""

    __slots__ = ("headers", "router", "fwd", "keyh", "method_b", "path", "authority", "rid", "rid_given", "xff",
                 "ctype", "clen", "method", "grpc", "routed", "r_path", "r_write", "r_partition", "added",
                 "a_epoch", "a_placement", "a_before", "a_stamp")

    def __init__(self, headers: list, router: object) -> None:
        self.headers = headers
        self.router = router
        self.routed = False   # r_*: dispatch's answers, once a stream got there
        self.added = False    # a_*: attach's fields, for the placement and epoch a_placement, a_epoch
        self.r_write = False
        self.rid_given = self.grpc = False


def length_error(clen: int | None, rcvd: int, ended: bool) -> str | None:
    """``rcvd`` body bytes so far (``ended``: all of them) against the declared ``clen``: over it
    at any point, or short of it at the end, the request is malformed (RFC 9113 §8.1.1) —
    forwarded, it would leave an HTTP/1.1 node reading the next request on its connection as
    this one's body (issue 26)."""
    if clen is None or (rcvd <= clen and not (ended and rcvd != clen)):
        return None
    return f"the stream carried {rcvd}{'' if ended else '+'} body bytes, content-length says {clen}"
