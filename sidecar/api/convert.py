"""Conversions between the ``epochgate.v1`` messages and gate's types.

Kept apart from the servicers so both the server and the CLI use one mapping
(phase enum values, the removed-partition convention, job records).
"""

from __future__ import annotations

from typing import Any, Mapping

from gate import PartitionState, Reject, WriteAdmission
from gate.pb.epochgate.v1 import epochgate_pb2 as pb
from gate.wire import PHASE_TO_PB as _PHASE_TO_PB
from gate.wire import phase_to_pb  # noqa: F401 - conv.phase_to_pb for the server

from ..control.jobstatus import FINAL

_PHASE_NAMES = {pb.PHASE_UNSPECIFIED: "removed", **{v: k.value for k, v in _PHASE_TO_PB.items()}}


def phase_name(value: int) -> str:
    """The lower-case label of a proto phase (``removed`` for PHASE_UNSPECIFIED)."""
    return _PHASE_NAMES.get(value, "unknown")


def state_to_pb(partition: str, state: PartitionState | None, epoch: int) -> pb.PartitionState:
    """A partition's state as a message. ``state=None`` (removed) is PHASE_UNSPECIFIED
    with empty placements."""
    if state is None:
        return pb.PartitionState(partition=partition, phase=pb.PHASE_UNSPECIFIED, epoch=int(epoch))
    return pb.PartitionState(
        partition=partition,
        phase=_PHASE_TO_PB[state.phase],
        from_node=state.source,
        to_node=state.target or "",
        epoch=int(epoch),
    )


def admission_to_pb(
    partition: str, decision: WriteAdmission, state: tuple[PartitionState, int] | None
) -> pb.AdmitWriteResponse:
    """An admission decision plus the partition's state now (absent when unknown)."""
    current = None if state is None else state_to_pb(partition, state[0], state[1])
    if decision:
        return pb.AdmitWriteResponse(admitted=True, reason="", current=current)
    assert isinstance(decision, Reject)
    return pb.AdmitWriteResponse(admitted=False, reason=decision.reason.value, current=current)


_JOB_SCALARS = ("id", "partition", "from_node", "to_node", "status", "error", "bytes_copied", "started", "finished",
                "kind")


def job_to_pb(job: Any) -> pb.Job:
    """A job record (anything with ``to_dict()`` keyed like ``Job``, or such a dict).

    Unknown keys are ignored and ``None`` means "not set", so the controller's
    record may carry more than the wire shows.
    """
    data: Mapping[str, Any] = job if isinstance(job, Mapping) else job.to_dict()
    fields = {k: data[k] for k in _JOB_SCALARS if data.get(k) is not None}
    phases = []
    for rec in data.get("phases") or ():
        if not isinstance(rec, Mapping):  # tolerate (phase, epoch, at) tuples
            rec = dict(zip(("phase", "epoch", "at"), rec))
        phases.append(
            pb.PhaseRecord(
                phase=str(rec.get("phase") or ""), epoch=int(rec.get("epoch") or 0), at=float(rec.get("at") or 0.0)
            )
        )
    return pb.Job(phases=phases, **fields)


def job_to_dict(msg: pb.Job) -> dict[str, Any]:
    """A ``Job`` message as plain data (the CLI's ``--json`` output)."""
    out: dict[str, Any] = {k: getattr(msg, k) for k in _JOB_SCALARS}
    out["phases"] = [{"phase": r.phase, "epoch": r.epoch, "at": r.at} for r in msg.phases]
    return out


TERMINAL_STATUSES = frozenset(s.value for s in FINAL)
