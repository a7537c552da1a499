"""A caching HPACK encoder for the proxy's HTTP/2 connections.

``hpack.Encoder`` searches its dynamic table linearly and Huffman-codes every
header of every block: a quarter of the sidecar's CPU per gRPC call. This
encoder never inserts into the dynamic table (it announces a table size of 0
once, RFC 7541 §6.3), so each header's encoding depends on the header alone
and is cached: a block is a join of cached byte strings. Static-table matches
are indexed, static names are referenced, everything else is a literal
without indexing (Huffman-coded once, when cached) — except the fields of
``engine.NEVER_INDEXED`` and any ``hpack.NeverIndexedHeaderTuple``, which are
never-indexed literals (as ``hpack.Encoder`` and libnghttp2 send them) and not
cached (a request id is new in every block). The cost is a few bytes
per header on the wire that a dynamic table would have saved; the decoders on
the other side (clients, nodes) need nothing special. Drop-in for ``h2``:
``conn.encoder = CachingEncoder()``.
"""

from __future__ import annotations

from typing import Iterable

from hpack.hpack import encode_integer
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.struct import NeverIndexedHeaderTuple
from hpack.table import HeaderTable

from .engine import NEVER_INDEXED

_FULL: dict[tuple[bytes, bytes], int] = {}
_NAME: dict[bytes, int] = {}
for _i, (_n, _v) in enumerate(HeaderTable.STATIC_TABLE, start=1):
    _FULL.setdefault((_n, _v), _i)
    _NAME.setdefault(_n, _i)
_HUFF = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)
CACHE_MAX = 8192
_CACHE: dict[tuple[bytes, bytes], bytes] = {}  # stateless encodings: shared by every connection


def _string(s: bytes) -> bytes:
    h = _HUFF.encode(s)
    if len(h) < len(s):
        return _prefixed(len(h), 0x80) + h
    return _prefixed(len(s), 0) + s


def _prefixed(n: int, flag: int) -> bytes:
    b = encode_integer(n, 7)
    b[0] |= flag
    return bytes(b)


def encode_header(name: bytes, value: bytes) -> bytes:
    idx = _FULL.get((name, value))
    if idx is not None:
        b = encode_integer(idx, 7)
        b[0] |= 0x80
        return bytes(b)
    idx = _NAME.get(name)
    if idx is not None:  # literal without indexing, indexed name (0000xxxx)
        return bytes(encode_integer(idx, 4)) + _string(value)
    return b"\x00" + _string(name) + _string(value)


def encode_never_indexed(name: bytes, value: bytes) -> bytes:
    """A literal never indexed (0001xxxx, RFC 7541 §6.2.3): the name by its static index when
    there is one."""
    idx = _NAME.get(name)
    if idx is not None:
        b = encode_integer(idx, 4)
        b[0] |= 0x10
        return bytes(b) + _string(value)
    return b"\x10" + _string(name) + _string(value)


class CachingEncoder:
    """Stands in for ``hpack.Encoder`` inside an ``h2.H2Connection``."""

    __slots__ = ("announced", "_size")

    def __init__(self) -> None:
        self.announced = False
        self._size = 4096

    @property
    def header_table_size(self) -> int:
        return self._size

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        self._size = value  # (our table stays at 0 ≤ any size the peer allows: nothing to signal)

    def encode(self, headers: Iterable[tuple[bytes, bytes]], huffman: bool = True) -> bytes:
        cache = _CACHE
        out = [] if self.announced else [b"\x20"]  # dynamic table size update: 0
        self.announced = True
        for h in headers:
            name, value = h[0], h[1]
            if isinstance(name, str):
                name = name.encode("utf-8")
            if isinstance(value, str):
                value = value.encode("utf-8")
            if type(h) is NeverIndexedHeaderTuple:  # (the caller's mark: even for a pair cached unmarked)
                out.append(encode_never_indexed(name, value))
                continue
            key = (name, value)
            e = cache.get(key)
            if e is None:
                if name in NEVER_INDEXED:  # (never cached: so never found above)
                    out.append(encode_never_indexed(name, value))
                    continue
                e = encode_header(name, value)
                if len(cache) >= CACHE_MAX:  # bounded (values are client-chosen): start over
                    cache.clear()
                cache[key] = e
            out.append(e)
        return b"".join(out)
