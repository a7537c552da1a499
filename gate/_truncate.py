"""What every Consensus ``truncate`` refuses (seed 004; DESIGN §4.2).

``truncate(key, seqno)`` deletes the entries under prefix ``key`` written
before ``seqno``. Two calls would silently wipe far more than anyone meant:

* an empty ``key`` is the whole store (placement, jobs, sessions' keys, …);
* a ``seqno`` past the newest entry under ``key`` deletes *every* entry — the
  whole audit trail of a partition, the whole change log.

Both are refused with a ``ConfigError`` naming the argument; the newest entry
under a prefix always survives a truncate.
"""

from __future__ import annotations

from typing import Any, Sequence

from ._exceptions import ConfigError


def check_truncate(key: str, seqno: int, entries: Sequence[Any]) -> None:
    """Raise ``ConfigError`` for a truncate the module doc refuses; ``entries`` are the
    ``Versioned`` entries now under ``key``."""
    if not isinstance(key, str) or not key:
        raise ConfigError("key", "must not be empty: truncating '' would delete the whole store")
    if isinstance(seqno, bool) or not isinstance(seqno, int) or seqno < 0:
        raise ConfigError("seqno", f"must be a non-negative integer, got {seqno!r}")
    newest = max((v.seqno for v in entries), default=None)
    if newest is not None and seqno > newest:
        raise ConfigError("seqno", f"{seqno} is past the newest entry under {key!r} ({newest}): "
                                   "that would delete every entry; the newest one must survive")
