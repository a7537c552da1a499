"""The ``epochgate.v1`` wire contract mapped onto gate's types (a public module).

The contract itself is ``gate/proto/epochgate/v1/epochgate.proto``; its
generated stubs are ``gate.pb.epochgate.v1`` (``scripts/gen-protos``). The
library owns both because its commit-point admit (``AdmitClient``) is their
first client; the sidecar serves them. Importing this module loads protobuf,
which ``import gate`` does not.

The phase mapping is derived from the enums (``Phase.X`` ↔ ``PHASE_X``), so a
phase added on one side and not the other fails at import, not on the wire.
"""

from __future__ import annotations

from typing import Any, Mapping

from ._admission import FAIL_CLOSED
from ._types import ADMIT, Epoch, Phase, Placement, PlacementAt, Reject, RejectReason, WriteAdmission
from .pb.epochgate.v1 import epochgate_pb2 as pb

PHASE_TO_PB: Mapping[Phase, int] = {phase: pb.Phase.Value(f"PHASE_{phase.name}") for phase in Phase}
"""``Phase`` → proto enum value."""

PHASE_FROM_PB: Mapping[int, Phase] = {v: k for k, v in PHASE_TO_PB.items()}
"""Proto enum value → ``Phase`` (``PHASE_UNSPECIFIED`` is absent: it means "removed")."""


def phase_to_pb(phase: Phase | None) -> int:
    """``None`` (a removed partition) is ``PHASE_UNSPECIFIED``."""
    return int(pb.PHASE_UNSPECIFIED) if phase is None else PHASE_TO_PB[phase]


def phase_from_pb(value: int) -> Phase | None:
    """``None`` for ``PHASE_UNSPECIFIED`` or a value this version does not know."""
    return PHASE_FROM_PB.get(value)


def admission_from_response(resp: Any) -> WriteAdmission:
    """Map an ``AdmitWriteResponse`` onto ``ADMIT``/``Reject``.

    A refusal with a reason this version does not know is taken as fail closed
    (still a refusal: an unknown "no" is never read as a "yes").
    """
    if resp.admitted:
        return ADMIT
    try:
        reason = RejectReason(resp.reason)
    except ValueError:
        reason = RejectReason.FAIL_CLOSED
    current = None
    phase = None
    if resp.HasField("current") and resp.current.from_node:
        current = PlacementAt(Placement(resp.current.from_node), Epoch(resp.current.epoch))
        phase = phase_from_pb(resp.current.phase)
    if current is None and reason is RejectReason.FAIL_CLOSED:
        return FAIL_CLOSED
    return Reject(reason, current, phase)


__all__ = [
    "PHASE_FROM_PB",
    "PHASE_TO_PB",
    "admission_from_response",
    "pb",
    "phase_from_pb",
    "phase_to_pb",
]
