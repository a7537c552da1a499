"""One key segment: the only shape an id may have before it goes into a store key.

Partition ids, node names and job ids each become one segment of a Consul KV
key (``partitions/<p>``, ``history/<p>/…``, ``nodes/<n>``, ``jobs/<id>``). A
value that is not exactly one segment changes *which* keys an operation
touches: ``..`` turns ``history/../`` into a recursive read (and delete) of the
whole prefix, ``a/b`` reaches into another partition's history, a control
character or ``%`` / ``?`` / ``#`` re-shapes the URL the key travels in. So
every id is checked here, once, by ``key_segment`` — and the Consul clients
check every key they build with ``check_store_key`` (defence in depth: a
caller that forgot to validate still cannot address a key outside its own).
"""

from __future__ import annotations

from urllib.parse import quote

from ._exceptions import ConfigError

MAX_SEGMENT = 256
# Characters that mean something in a URL or a key path; an id never needs them.
_RESERVED = frozenset("/\\?#%")


def key_segment(value: object, field: str = "id", *, max_len: int = MAX_SEGMENT) -> str:
    """``value`` if it is one safe key segment, else ``ConfigError`` naming ``field``.

    Refused: non-strings, the empty string, ``.`` and ``..``, ``/`` ``\\`` ``?``
    ``#`` ``%``, control and other non-printable characters, outer whitespace,
    more than ``max_len`` characters."""
    if not isinstance(value, str) or not value:
        raise ConfigError(field, f"must be a non-empty string, got {value!r}")
    if value in (".", ".."):
        raise ConfigError(field, f"{value!r} is not allowed (a dot segment would name the parent key)")
    if len(value) > max_len:
        raise ConfigError(field, f"longer than {max_len} characters")
    if not value.isprintable() or value != value.strip():
        raise ConfigError(field, f"invalid {value!r}: control characters and outer whitespace are not allowed")
    bad = sorted(set(value) & _RESERVED)
    if bad:
        raise ConfigError(field, f"invalid {value!r}: {' '.join(repr(c) for c in bad)} not allowed in one key segment")
    return value


def check_store_key(key: str) -> str:
    """A KV key (or prefix, ending in ``/``) whose segments are all real segments:
    no empty segment inside, no ``.``/``..``. ``ConfigError`` otherwise."""
    segments = key.split("/")
    if segments and segments[-1] == "":
        segments = segments[:-1]  # a prefix: "partitions/"
    for seg in segments:
        if seg in ("", ".", ".."):
            raise ConfigError("key", f"refusing store key {key!r}: segment {seg!r} would be re-interpreted")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in seg):
            raise ConfigError("key", f"refusing store key {key!r}: control character in a segment")
    return key


def quote_key(key: str) -> str:
    """``check_store_key`` then percent-encode each segment on its own (``/`` stays
    the only separator), so no byte of a segment is read as URL syntax."""
    check_store_key(key)
    return "/".join(quote(seg, safe="") for seg in key.split("/"))
