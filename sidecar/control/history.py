"""``history P``: a partition's audited transitions, each with the job that made it (issue 17).

The store keeps every transition under ``history/<p>/`` (epoch = the commit
index, op, the state it produced, time, actor). The job id is not in that
record — the store knows nothing of jobs — but every job records the epoch
each of its phases' transitions stamped (``Job.phases``), so the two are
joined on (partition, epoch); a split or merge job joins on each slot it touches (its
sources and destinations: ``begin_reshard``, ``enter_cutover`` and ``complete_reshard`` of
DESIGN §12). A transition made by an operator call
(``partitions set``, a raw ``Begin``) has no job; neither has one whose job
record was already compacted away (retention keeps jobs and history apart).
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from gate import MigrationError, UnknownPartition, partition_id

from gate.pb.epochgate.v1 import epochgate_pb2 as pb


def job_epochs(jobs: Iterable[Any], partition: str) -> dict[int, str]:
    """epoch → job id for every phase transition the jobs of ``partition`` recorded."""
    out: dict[int, str] = {}
    for job in jobs:
        if partition not in getattr(job, "slots", (job.partition,)):
            continue
        for rec in job.phases:
            if rec.epoch:
                out[int(rec.epoch)] = job.id
    return out


def transitions(entries: Sequence[Any], jobs: Iterable[Any], partition: str) -> list[pb.Transition]:
    """History entries (``gate._consensus_store.HistoryEntry``) as messages, oldest first."""
    by_epoch = job_epochs(jobs, partition)
    return [pb.Transition(epoch=int(e.epoch), op=e.op, phase=e.phase, from_node=e.source, to_node=e.target or "",
                          time=float(e.time), actor=e.actor, job_id=by_epoch.get(int(e.epoch), ""))
            for e in entries]


async def partition_history(store: Any, jobs: Iterable[Any], partition: str) -> pb.HistoryResponse:
    p = partition_id(partition)
    if not hasattr(store, "history"):
        raise MigrationError("this store keeps no transition history (the embedded table does not)", p)
    entries = await store.history(p)
    st = await store.state(p)
    if st is None and not entries:
        raise UnknownPartition(f"unknown partition {p!r}", p)
    return pb.HistoryResponse(partition=p, current_epoch=0 if st is None else int(st[1]),
                              transitions=transitions(entries, jobs, p))


def transition_to_dict(t: pb.Transition) -> dict[str, Any]:
    """The CLI's ``--json`` shape (``from``/``to`` as in the store's audit record)."""
    return {"epoch": t.epoch, "op": t.op, "phase": t.phase, "from": t.from_node, "to": t.to_node or None,
            "time": t.time, "actor": t.actor, "job_id": t.job_id or None}
