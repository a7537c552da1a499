"""How the operator CLI prints: times, sizes, tables, a job, a partition's state."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Sequence, TextIO

from gate.pb.epochgate.v1 import epochgate_pb2 as pb

from ..api import convert as conv


def ts(t: float) -> str:
    if not t:
        return "-"
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def ts_ms(t: float) -> str:
    """Millisecond times: the phases of one job are often within the same second."""
    if not t:
        return "-"
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def table(out: TextIO, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [list(map(str, header))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for r in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() + "\n")


def job_summary(job: pb.Job) -> str:
    took = f" in {job.finished - job.started:.1f}s" if job.finished and job.started else ""
    what = (f"{job.partition} {job.from_node}→{job.to_node}" if job.kind in ("", "move")
            else f"{job.kind} of {job.partition} (onto {job.to_node})")   # a reshard's slots: `jobs show`
    line = f"job {job.id} {job.status}: {what}, {size(job.bytes_copied)} copied{took}"
    return line + (f": {job.error}" if job.error and job.status != "completed" else "")


def show_job(job: pb.Job, out: TextIO) -> None:
    for k, v in (("id", job.id), ("kind", job.kind or "move"), ("partition", job.partition), ("from", job.from_node), ("to", job.to_node),
                 ("status", job.status), ("error", job.error or "-"), ("bytes", job.bytes_copied),
                 ("started", ts_ms(job.started)), ("finished", ts_ms(job.finished))):
        out.write(f"{k + ':':<11}{v}\n")
    if job.phases:
        out.write("phases:\n")
        for r in job.phases:
            out.write(f"  {r.phase:<10} epoch {r.epoch:<8} at {ts_ms(r.at)}\n")


def state_dict(s: pb.PartitionState) -> dict[str, Any]:
    return {"partition": s.partition, "phase": conv.phase_name(s.phase), "from": s.from_node,
            "to": s.to_node or None, "epoch": s.epoch}
