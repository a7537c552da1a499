"""The mover hooks are not on the data path (DESIGN §6): a sidecar never forwards the
``/_epochgate/`` prefix from its data listener, whatever spelling reaches the app
(percent-encoding, dot segments, doubled slashes, absolute-form)."""

from __future__ import annotations

import posixpath
from urllib.parse import unquote_to_bytes

HOOK_PREFIX = b"/_epochgate/"
HOOK_WORD = b"epochgate"  # a target without it (any case) and without "%" never reaches the hooks


def is_hook_path(url: bytes) -> bool:
    """True when ``url`` (the request target) would reach ``/_epochgate/...`` on the app."""
    # the common case, two scans; find() because ``in`` on bytes raises and clears an
    # exception inside CPython 3.11 (see _target.normalize)
    if url.lower().find(HOOK_WORD) < 0 and url.find(b"%") < 0:
        return False
    path = url.split(b"?", 1)[0].split(b"#", 1)[0]
    if b"://" in path[:16]:                           # absolute-form: drop scheme and authority
        rest = path.split(b"://", 1)[1]
        path = b"/" + rest.split(b"/", 1)[1] if b"/" in rest else b"/"
    for _ in range(3):                                # %255F… decodes twice at most in practice
        decoded = unquote_to_bytes(path)
        if decoded == path:
            break
        path = decoded
    norm = posixpath.normpath(b"/" + path.replace(b"\\", b"/")).replace(b"//", b"/")
    return (norm + b"/").lower().startswith(HOOK_PREFIX) or norm.lower() == HOOK_PREFIX.rstrip(b"/")
