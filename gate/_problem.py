"""The problem documents a refused write is answered with (DESIGN §7).

One builder for everyone who answers a refused write: the sidecar (its own
admission said no) and the application's gate middleware (the commit-point
admit said no). Both must produce the same body, because the sidecar treats an
upstream's stale-epoch problem as retryable — it recognises it with
``is_stale_epoch_problem``.

A stale-epoch problem is ``503 Service Unavailable`` with ``Retry-After`` and an
``application/problem+json`` body (RFC 9457) whose ``type`` ends in
``stale-epoch`` and whose extension members ``partition``, ``reason``,
``phase``, ``epoch`` and ``placement`` describe the partition *now*, so a
client (or the sidecar) can re-route without another lookup.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from ._types import Reject, RejectReason

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:epochgate:problem:"
STALE_EPOCH_TYPE = PROBLEM_TYPE_PREFIX + "stale-epoch"
UNSTAMPED_WRITE_TYPE = PROBLEM_TYPE_PREFIX + "unstamped-write"
MISDIRECTED_WRITE_TYPE = PROBLEM_TYPE_PREFIX + "misdirected-write"

_TITLES = {
    RejectReason.STALE_EPOCH: "The partition's placement moved since the request was routed",
    RejectReason.CUTOVER: "The partition is in cutover; writes are held fleet-wide",
    RejectReason.UNKNOWN_PARTITION: "The partition is not in the placement table",
    RejectReason.FAIL_CLOSED: "The write gate could not be consulted; the write was refused",
}


@dataclass(frozen=True, slots=True)
class ProblemDocument:
    """An HTTP problem response: ``status``, ``headers`` and the JSON ``body``.

    ``headers`` always holds ``Content-Type`` (and ``Retry-After`` for a
    retryable problem); ``encode()`` gives the body bytes.
    """

    status: int
    body: Mapping[str, object]
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.status, int) or not 400 <= self.status <= 599:
            raise ValueError(f"status: a problem's status must be 4xx or 5xx, got {self.status!r}")
        if not isinstance(self.body.get("type"), str):
            raise ValueError("body.type: a problem document needs a string type")
        object.__setattr__(self, "body", MappingProxyType(dict(self.body)))
        object.__setattr__(self, "headers", MappingProxyType({"Content-Type": PROBLEM_CONTENT_TYPE, **self.headers}))

    def encode(self) -> bytes:
        """The body as compact UTF-8 JSON."""
        return json.dumps(dict(self.body), separators=(",", ":"), ensure_ascii=False).encode()

    def header_list(self) -> list[tuple[bytes, bytes]]:
        """Headers in ASGI form (lower-case names, bytes), incl. ``content-length``."""
        out = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        out.append((b"content-length", str(len(self.encode())).encode()))
        return out


def problem_document(reject: Reject, partition: str, *, retry_after_s: int = 1, detail: str | None = None) -> ProblemDocument:
    """The standard stale-epoch problem for a refused write (DESIGN §7).

    ``reject`` is what the gate answered; ``partition`` the request's partition.
    ``phase``, ``epoch`` and ``placement`` are the current ones (``null`` when the
    gate could not tell, e.g. fail closed or an unknown partition).
    """
    if not isinstance(reject, Reject):
        raise TypeError(f"reject must be a Reject, got {reject!r}")
    if isinstance(retry_after_s, bool) or not isinstance(retry_after_s, int) or retry_after_s < 0:
        raise ValueError(f"retry_after_s: must be a non-negative int, got {retry_after_s!r}")
    current = reject.current
    body: dict[str, object] = {
        "type": STALE_EPOCH_TYPE,
        "title": _TITLES[reject.reason],
        "status": 503,
        "detail": detail or f"write to partition {partition!r} refused ({reject.reason.value}); retry",
        "partition": partition,
        "reason": reject.reason.value,
        "phase": None if reject.phase is None else reject.phase.value,
        "epoch": None if current is None else int(current.epoch),
        "placement": None if current is None else str(current.placement),
    }
    return ProblemDocument(503, body, {"Retry-After": str(retry_after_s)})


def unstamped_problem(field_name: str, message: str) -> ProblemDocument:
    """The 428 problem for a write that did not come through a sidecar.

    ``field_name`` names the missing or malformed header. Not retryable: the
    request has to be sent through the sidecar (or the app configured with
    ``allow_unstamped=True`` for local development).
    """
    body = {
        "type": UNSTAMPED_WRITE_TYPE,
        "title": "Write without the sidecar's placement stamp",
        "status": 428,
        "detail": f"{field_name}: {message}; send writes through the epochgate sidecar",
        "field": field_name,
    }
    return ProblemDocument(428, body)


def misdirected_problem(partition: str, placement: str, node: str) -> ProblemDocument:
    """The 421 problem for a write stamped for another node (``MisdirectedWrite``).

    Not retryable, and not the stale-epoch problem: the sidecar relays it. A
    placement entry or registration pointing at the wrong node's URL needs an
    operator, and retrying would only repeat the misroute.
    """
    body = {
        "type": MISDIRECTED_WRITE_TYPE,
        "title": "Write stamped for another node",
        "status": 421,
        "detail": (f"write to partition {partition!r} is stamped X-Placement {placement!r} but reached node {node!r};"
                   " check the placement's URL for these nodes"),
        "partition": partition,
        "placement": placement,
        "node": node,
    }
    return ProblemDocument(421, body)


def is_stale_epoch_problem(status: int, content_type: str | None, body: bytes | str | Mapping[str, object]) -> bool:
    """True when a response is the stale-epoch problem (what the sidecar retries).

    Checks the status (503), the media type and that ``type`` ends in
    ``stale-epoch``; a body that is not JSON is simply not one.
    """
    if status != 503 or not content_type or content_type.split(";", 1)[0].strip().lower() != PROBLEM_CONTENT_TYPE:
        return False
    if not isinstance(body, Mapping):
        try:
            body = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return False
    if not isinstance(body, Mapping):
        return False
    kind = body.get("type")
    return isinstance(kind, str) and kind.endswith("stale-epoch")
