"""The request target, normalised once (RFC 9112 §3.2, RFC 3986 §6.2.2).

Route and key rules must see the path the application will act on, or a
client picks a spelling the rules miss: ``/admin/rese%74``, ``/./admin/reset``,
``//admin/reset`` and ``http://h/admin/reset`` all name ``/admin/reset`` to
most applications. So before anything looks at the path:

* absolute-form (``http://host/p?q``) becomes origin-form (``/p?q``) and its
  authority replaces ``Host`` (RFC 9112 §3.2.2); other schemes and userinfo → 400;
* ``*`` (asterisk-form) is accepted for ``OPTIONS`` only and forwarded as is;
* percent-escapes of unreserved characters are decoded, the others upper-cased;
  a malformed escape → 400;
* dot segments are removed (RFC 3986 §5.2.4); a fragment is dropped.

The result is what goes upstream — the application and the rules see the same
bytes. Rules additionally see runs of ``/`` collapsed to one (many frameworks
route ``//a`` like ``/a``; a rule must not be skipped by doubling a slash).
A target longer than ``max_path_bytes`` is refused (414) before any rule runs,
which also bounds the input of every regex rule.
"""

from __future__ import annotations

import re

from .hookpath import HOOK_WORD

# the compiled build runs plain_target's byte loop in C; as plain Python that loop would cost
# more than the find() calls it replaces, so the plain build keeps those (sidecar/_build.py)
_COMPILED = not __file__.endswith(".py")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_SCHEME = re.compile(rb"^([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)(.*)$", re.S)
_SLASHES = re.compile(rb"//+")


class TargetError(Exception):
    """The request target cannot be served (→ ``status`` problem)."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail


def _unescape_unreserved(m: re.Match[bytes]) -> bytes:
    ch = int(m.group(1), 16)
    return bytes((ch,)) if ch in _UNRESERVED else b"%" + m.group(1).upper()


def remove_dot_segments(path: bytes) -> bytes:
    """RFC 3986 §5.2.4 for an absolute path (starts with ``/``)."""
    out: list[bytes] = []
    segs = path.split(b"/")[1:]
    for i, seg in enumerate(segs):
        last = i == len(segs) - 1
        if seg == b".":
            if last:
                out.append(b"")
        elif seg == b"..":
            if out:
                out.pop()
            if last:
                out.append(b"")
        else:
            out.append(seg)
    return b"/" + b"/".join(out)


def plain_target(url: bytes, max_len: int) -> bool:
    """True when ``normalize`` would return ``url`` unchanged and ``is_hook_path(url)`` is
    False: an origin-form path within ``max_len`` without ``%``, ``#``, ``/.``, ``//`` or
    ``epochgate`` (any case) — nearly every request, which then skips both.

    Compiled, one pass over the bytes in C: the five ``find()`` calls and the ``lower()`` copy
    cost ~7,000 instructions per request (callgrind, bench harness GET), this ~300."""
    n = len(url)
    if n == 0 or n > max_len or url[0] != 0x2F:  # "/"
        return False
    if not _COMPILED:
        return (url.find(b"%") < 0 and url.find(b"/.") < 0 and url.find(b"//") < 0 and url.find(b"#") < 0
                and url.lower().find(HOOK_WORD) < 0)
    word = HOOK_WORD
    prev = 0
    for i in range(n):
        c = url[i]
        if c == 0x25 or c == 0x23:  # "%" "#"
            return False
        if prev == 0x2F and (c == 0x2E or c == 0x2F):  # "/." "//"
            return False
        if (c | 0x20) == 0x65 and n - i >= 9:  # an "e" (any case): is it HOOK_WORD?
            k = 1
            while k < 9 and (url[i + k] | 0x20) == word[k]:  # word is lower-case letters only
                k += 1
            if k == 9:
                return False
        prev = c
    return True


def normalize(url: bytes, method: str, max_len: int) -> tuple[bytes, str | None, bytes | None]:
    """``(target to forward, rule path or None, authority or None)``.

    The rule path is None when it equals the forwarded path (the usual case:
    the caller then splits it off the target itself). ``TargetError`` for a
    target that must not be forwarded."""
    if len(url) > max_len:
        raise TargetError(414, "request target too long", f"the request target exceeds {max_len} bytes")
    # find() and not ``in``: CPython 3.11's bytes.__contains__ first tries the operand as an
    # int and raises (and formats) a TypeError it then clears — 204 ns against 83 ns here, four
    # times a request (perf: 2.5% of the sidecar's CPU was that exception's formatting).
    if url[:1] == b"/" and url.find(b"%") < 0 and url.find(b"/.") < 0 and url.find(b"//") < 0 \
            and url.find(b"#") < 0:
        return url, None, None  # already normal: one scan per check, no copies
    if url == b"*":
        if method != "OPTIONS":
            raise TargetError(400, "invalid request target", "'*' is only a target for OPTIONS")
        return url, "*", None
    authority = None
    if url[:1] != b"/":
        m = _SCHEME.match(url)
        if m is None:
            raise TargetError(400, "invalid request target", "the target must be a path, an absolute URL or '*'")
        scheme, authority, url = m.group(1).lower(), m.group(2), m.group(3)
        if scheme not in (b"http", b"https"):
            raise TargetError(400, "invalid request target", f"scheme {scheme.decode('latin-1')!r} is not proxied")
        if not authority or b"@" in authority:
            raise TargetError(400, "invalid request target", "absolute-form needs a host and no user info")
        if url[:1] != b"/":
            url = b"/" + url  # "http://h" or "http://h?q"
    url = url.split(b"#", 1)[0]
    path, q, query = url.partition(b"?")
    if _BAD_ESCAPE.search(path):
        raise TargetError(400, "invalid request target", "malformed percent-encoding in the path")
    if b"%" in path:
        path = _ESCAPE.sub(_unescape_unreserved, path)
    if b"/." in path:
        path = remove_dot_segments(path)
    rule = None
    if b"//" in path:
        rule = _SLASHES.sub(b"/", path).decode("latin-1")
    return path + q + query, rule, authority
