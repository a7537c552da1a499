"""Which partition a request belongs to, and whether it is a write.

Key rules (``--partition-from``, ordered): ``header:NAME``, ``path:REGEX`` with
a ``(?P<partition>…)`` group, ``query:NAME``, ``host``. Every rule is applied;
the first one that finds a key names the partition, and a second rule finding
a *different* key is a conflict (400, both rules named) — a request must not be
routable two ways. No key at all, or a key that is not a valid partition id,
is also a 400 naming the rule(s).

``--hash-slots N`` maps the key onto ``slot-<crc32(key) mod N>``, returned as a ``gate.SlotKey``
that keeps the key's hash: where that slot was split, ``resolve`` walks to the slot of the
key's depth (DESIGN §12.1). The caches hold the hash, which never goes stale, never the depth.

Route rules (``--route "METHOD REGEX=read|write"``, first match wins) override
the default: the non-safe methods (POST, PUT, PATCH, DELETE, and any unknown
method) are writes, GET/HEAD/OPTIONS/TRACE reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence
from urllib.parse import parse_qsl, unquote

from gate import ConfigError, SlotKey, key_hash, partition_id

from .rules import compile_rule

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class KeyError400(Exception):
    """The request's partition key is missing, invalid or ambiguous (→ 400 problem)."""

    def __init__(self, title: str, detail: str, rule: str) -> None:
        super().__init__(detail)
        self.title = title
        self.detail = detail
        self.rule = rule


@dataclass(frozen=True, slots=True)
class KeyRule:
    """One ``--partition-from`` rule."""

    kind: str  # header | path | query | host
    arg: str   # header name (lower-case) | regex source | query parameter | ""
    text: str  # as written, for error messages

    def __post_init__(self) -> None:
        if self.kind not in ("header", "path", "query", "host"):
            raise ConfigError("partition_from", f"unknown rule kind {self.kind!r}")


def parse_key_rule(text: str, field: str = "partition_from") -> KeyRule:
    """Parse ``header:NAME`` / ``path:REGEX`` / ``query:NAME`` / ``host``."""
    if not isinstance(text, str):
        raise ConfigError(field, f"expected a rule string, got {text!r}")
    kind, sep, arg = text.partition(":")
    kind = kind.strip().lower()
    if kind == "host":
        if arg:
            raise ConfigError(field, f"'host' takes no argument: {text!r}")
        return KeyRule("host", "", text)
    if not sep or not arg:
        raise ConfigError(field, f"expected header:NAME, path:REGEX, query:NAME or host, got {text!r}")
    if kind == "header":
        if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", arg):
            raise ConfigError(field, f"invalid header name {arg!r}")
        return KeyRule("header", arg.lower(), text)
    if kind == "query":
        return KeyRule("query", arg, text)
    if kind == "path":
        rx = compile_rule(arg, field)  # refuses what could stall the loop (see _rules)
        if "partition" not in rx.groupindex:
            raise ConfigError(field, f"path regex {arg!r} needs a (?P<partition>…) group")
        return KeyRule("path", arg, text)
    raise ConfigError(field, f"unknown rule kind {kind!r} in {text!r} (header, path, query, host)")


def parse_route_rule(text: str, field: str = "route") -> tuple[str, Any, bool]:
    """``"METHOD REGEX=read|write"`` → ``(METHOD or "*", compiled regex, is_write)``."""
    if not isinstance(text, str):
        raise ConfigError(field, f"expected a route rule string, got {text!r}")
    head, sep, kind = text.rpartition("=")
    kind = kind.strip().lower()
    if not sep or kind not in ("read", "write"):
        raise ConfigError(field, f"expected 'METHOD REGEX=read|write', got {text!r}")
    method, _, rx = head.strip().partition(" ")
    method = method.strip().upper()
    if not method or not rx.strip() or not (method == "*" or method.isalpha()):
        raise ConfigError(field, f"expected 'METHOD REGEX=read|write', got {text!r}")
    return method, compile_rule(rx.strip(), field), kind == "write"


def slot_of(key: str, slots: int) -> str:
    """The base hash slot a key maps to (stable across processes and versions), remembering the
    key's hash for the walk to a split slot (``gate.SlotKey``)."""
    return SlotKey.of(key_hash(key), slots)


class Router:
    """Compiled key rules + route rules. ``partition(...)`` and ``is_write(...)``.

    Both are called once per request with already-split pieces so that the
    common configuration (one header rule, no route rules) costs a dict lookup.
    """

    def __init__(self, key_rules: Sequence[str], route_rules: Sequence[str] = (), hash_slots: int = 0) -> None:
        self.rules = [parse_key_rule(r, f"partition_from[{i}]") for i, r in enumerate(key_rules)]
        self.routes = [parse_route_rule(r, f"route[{i}]") for i, r in enumerate(route_rules)]
        self.hash_slots = hash_slots
        self._regex = {r.text: compile_rule(r.arg, "partition_from") for r in self.rules if r.kind == "path"}
        self._hnames = {r.text: r.arg.encode("latin-1") for r in self.rules if r.kind == "header"}
        #: lower-case header names (bytes) the proxy must capture for the rules
        #: (the same bytes objects as ``_hnames``: the connection's header table keys ``keyh`` with
        #: them, so the exchange's ``keyh.get(fast_header)`` matches by identity, no bytes compare)
        self.header_names = frozenset(self._hnames.values())
        self._names = ", ".join(r.text for r in self.rules)
        self._cache: dict[str, str] = {}
        self._bcache: dict[bytes, str] = {}
        only = self.rules[0] if len(self.rules) == 1 and self.rules[0].kind == "header" else None
        self._fast = None if only is None else self._hnames[only.text]
        #: for the data path's inlined lookup: with one header rule and no route rules, the
        #: (lower-case) header name, and raw header value → partition for keys seen before
        self.fast_header = self._fast if not self.routes else None
        self.fast_cache = self._bcache
        #: the last raw value the data path found in ``fast_cache``, and its partition: a request with
        #: the same key as the one before compares bytes instead of hashing a new bytes object for
        #: the look-up (~250 instructions). ``fast_cache`` only grows, so a pair never goes stale.
        self.fast_raw: bytes = b""  # (fast_hit None until a first hit: a match then takes the look-up)
        self.fast_hit: Any = None

    def is_write(self, method: str, path: str) -> bool:
        for m, rx, write in self.routes:
            if (m == "*" or m == method) and rx.search(path):
                return write
        return method not in SAFE_METHODS

    def partition(self, path: str, query: bytes | str | None, headers: Mapping[bytes, bytes],
                  host: bytes | str | None) -> str:
        """The request's partition id; ``KeyError400`` when missing/invalid/conflicting."""
        if self._fast is not None:  # one header rule: a dict lookup for a key seen before
            raw = headers.get(self._fast)
            if raw is not None:
                hit = self._bcache.get(raw)
                if hit is not None:
                    return hit
        if isinstance(query, bytes):
            query = query.decode("latin-1")
        if isinstance(host, bytes):
            host = host.decode("latin-1")
        found: str | None = None
        found_rule: KeyRule | None = None
        for rule in self.rules:
            key = self._extract(rule, path, query, headers, host)
            if key is None:
                continue
            if found is None:
                found, found_rule = key, rule
            elif key != found:
                raise KeyError400("conflicting partition keys",
                                  f"rule {found_rule.text!r} gives {found!r} but rule {rule.text!r} gives {key!r}",
                                  f"{found_rule.text}; {rule.text}")
        if found is None:
            raise KeyError400("missing partition key", f"no partition key found (rules: {self._names})", self._names)
        cached = self._cache.get(found)
        if cached is not None:
            return cached
        try:
            pid = partition_id(found, found_rule.text)
        except ConfigError as exc:
            raise KeyError400("invalid partition key", f"rule {found_rule.text!r}: {str(exc).split(': ', 1)[-1]}",
                              found_rule.text) from None
        result = slot_of(pid, self.hash_slots) if self.hash_slots else str(pid)
        if len(self._cache) < 65536:  # bounded: keys are client-chosen
            self._cache[found] = result
            if self._fast is not None:
                self._bcache[headers[self._fast]] = result
        return result

    def _extract(self, rule: KeyRule, path: str, query: str | None, headers: Mapping[bytes, bytes],
                 host: str | None) -> str | None:
        kind = rule.kind
        if kind == "header":
            raw = headers.get(self._hnames[rule.text])
            return None if raw is None else raw.decode("latin-1").strip()
        if kind == "path":
            m = self._regex[rule.text].search(unquote(path))
            return None if m is None or m.group("partition") is None else m.group("partition")
        if kind == "query":
            if not query:
                return None
            values = {v for k, v in parse_qsl(query, keep_blank_values=True) if k == rule.arg}
            if len(values) > 1:
                raise KeyError400("conflicting partition keys",
                                  f"query parameter {rule.arg!r} given with different values", rule.text)
            return values.pop() if values else None
        if host is None:
            return None
        h = host.strip().lower()
        if h.startswith("["):  # IPv6 literal: keep as is, minus port
            return h.split("]", 1)[0] + "]"
        return h.rsplit(":", 1)[0] if ":" in h else h

