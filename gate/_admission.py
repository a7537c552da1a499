"""The one fail-closed admission decision every admitting site uses.

Four places decide whether a write may commit: the sidecar's write gate (just
before forwarding, DESIGN §7), the participant's read side (``CurrentReplica``),
the in-process commit-point admitter (``LocalAdmitter``) and the sidecar's
``Gate/AdmitWrite`` gRPC call. They differ only in how they learn whether the
process may admit at all (guards, lease, session: DESIGN §5 rules 1, 3–5); the
decision itself is this function, so the refusal they give is the same object
shape everywhere: ``Reject(fail_closed, current placement, phase)`` — the
current placement when the source knows the partition, else ``None`` — and an
error while asking the table is a refusal, never an admit.
"""

from __future__ import annotations

import logging
from typing import Protocol

from ._types import Epoch, PartitionState, PlacementAt, Reject, RejectReason, WriteAdmission

log = logging.getLogger("epochgate.admit")

FAIL_CLOSED = Reject(RejectReason.FAIL_CLOSED, None, None)
"""The fail-closed refusal when no current placement is known."""


class _Source(Protocol):
    def admit_write(self, partition: str, epoch: int) -> WriteAdmission: ...

    def state(self, partition: str) -> tuple[PartitionState, Epoch] | None: ...


def fail_closed_reject(source: _Source | None, partition: str) -> Reject:
    """``Reject(fail_closed)`` carrying the partition's current placement and phase, if known."""
    if source is None:
        return FAIL_CLOSED
    try:
        st = source.state(partition)
    except Exception:  # the refusal must not fail: an unreadable state is "unknown"
        st = None
    if st is None:
        return FAIL_CLOSED
    state, epoch = st
    return Reject(RejectReason.FAIL_CLOSED, PlacementAt(state.read_placement, epoch), state.phase)


def fail_closed_admit(source: _Source | None, partition: str, epoch: int, writable: bool) -> WriteAdmission:
    """Admit a write of ``partition`` resolved at ``epoch``, failing closed.

    ``writable`` is the caller's answer to "may this process admit writes at
    all now" (participant, guards, lease). When False, when there is no table
    yet (``source`` None), or when the table cannot
    answer, the result is ``fail_closed_reject``; otherwise it is the table's
    own ``admit_write`` (``ADMIT`` or its ``Reject``).
    """
    if not writable or source is None:
        return fail_closed_reject(source, partition)
    try:
        return source.admit_write(partition, epoch)
    except Exception as exc:  # any failure is a refusal, never an admit
        log.warning("admit of %r failed closed: %s", partition, str(exc)[:200])
        return fail_closed_reject(source, partition)
