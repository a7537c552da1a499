"""``migrate --dry-run``: what a move would do now, without acting (issue 17).

The plan answers what an operator asks before a move: where the data goes
(source and target URLs), how much there is (the source's size hook,
``GET /_epochgate/size?partition=P`` → ``{"keys": n, "bytes": m}``), who
would have to acknowledge the cutover and how fresh each is, how long
writes would be held (the cutover windows of recent completed jobs), and
every reason ``Migrate`` would refuse the move now — all of them, not the
first.

The participant list is the barrier's own list (``Barrier.list``: live
sidecar sessions) read now; the real barrier lists again right after its
cutover commits (DESIGN §5 rule 2), so the two match unless a sidecar joins
or leaves in between. "Behind" is the table epoch minus the epoch the
participant last published: 0 means it has applied everything. Participants
coalesce acks no barrier waits for (gate/_participant_ack.py), so a few epochs
behind for a moment is normal; freshness is also given in seconds (since the
first transition it has not acknowledged, from the kept change log) and only
more than ``FRESH_S`` of it is a warning.

Both ends are probed: a source or target no connection can be made to is a
refusal with the reason (not a "would go" whose real move then fails), and a
cordoned target is refused unless ``--force``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Iterable

from gate import PartitionState, connect_failure, node_name, partition_id

from gate.pb.epochgate.v1 import epochgate_pb2 as pb

SIZE_TIMEOUT_S = 3.0
# A participant publishes a transition no barrier waits for within its ack coalescing
# (0.5 s) plus a blocking-query round: "behind" for less than this is normal, not a warning
# (a fresh fleet showed "participant kv-a is 5 epochs behind", issue 27).
FRESH_S = 2.0
RECENT_JOBS = 20


async def source_size(source_url: str, partition: str, *, timeout_s: float = SIZE_TIMEOUT_S) -> tuple[int, int, str]:
    """(bytes, keys, error) as the source's size hook reports them; -1 and a reason when it cannot."""
    size, keys, error, _ = await _size_hook(source_url, partition, timeout_s)
    return size, keys, error


async def _size_hook(node_url: str, partition: str, timeout_s: float) -> tuple[int, int, str, str | None]:
    """(bytes, keys, error, unreachable): ``unreachable`` is why no connection could be
    made at all (the node is down, the URL is wrong) — any HTTP answer means it is there."""
    import aiohttp   # here: a sidecar that never plans a migration does not carry it (issue 20)

    url = f"{node_url.rstrip('/')}/_epochgate/size"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http:
            async with http.get(url, params={"partition": partition}) as resp:
                if resp.status != 200:
                    return -1, -1, f"GET {url}: HTTP {resp.status}", None
                data = await resp.json(content_type=None)
                return int(data["bytes"]), int(data.get("keys", -1)), "", None
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError, KeyError, TypeError) as exc:
        return -1, -1, f"GET {url}: {type(exc).__name__}: {exc}".rstrip(": "), connect_failure(exc)


async def _transition_times(store: Any, applied: list[int], table_epoch: int) -> list[tuple[int, float]]:
    """One read of the kept change log from the oldest applied epoch that is behind."""
    behind = [e for e in applied if e < table_epoch]
    if not behind or not hasattr(store, "transition_times"):   # the embedded table: one participant, never behind
        return []
    times: list[tuple[int, float]] = await store.transition_times(min(behind))
    return times


def behind_seconds(times: list[tuple[int, float]], applied: int, now: float) -> float:
    """Seconds since the first transition after ``applied`` (−1: the log no longer keeps it)."""
    after = [t for e, t in times if e > applied]
    return max(0.0, now - after[0]) if after else -1.0


def cutover_windows(jobs: Iterable[Any], limit: int = RECENT_JOBS) -> list[float]:
    """Seconds from the cutover commit to the flip, for the most recent completed jobs."""
    out = []
    for job in sorted((j for j in jobs if j.status == "completed"), key=lambda j: j.finished, reverse=True):
        cut, done = job.phase("cutover"), job.phase("completed")
        if cut is not None and done is not None and done.at >= cut.at:
            out.append(done.at - cut.at)
        if len(out) >= limit:
            break
    return out


async def plan_migration(ctl: Any, partition: str, to: str, *, force: bool = False) -> pb.MigrationPlan:
    """The plan for moving ``partition`` to ``to`` on controller ``ctl`` (nothing is written)."""
    p = partition_id(partition)
    to = node_name(to, "to_node")
    plan = pb.MigrationPlan(partition=p, to_node=to, size_bytes=-1, size_keys=-1)
    refusals: list[str] = []
    warnings: list[str] = []
    st = await ctl.store.state(p)
    nodes = await ctl.nodes()
    if st is None:
        refusals.append(f"partition: unknown partition {p!r}")
    else:
        state, _ = st
        plan.from_node = state.source
        if state.migrating:
            refusals.append(f"partition: {p} is already {state}")
        elif state == PartitionState.active(to):
            refusals.append(f"to_node: {p} already lives on {to}")
        if state.source in nodes:
            plan.source_url = nodes[state.source]
        else:
            refusals.append(f"from_node: no URL known for node {state.source!r}")
    cordoned = ctl.cordoned(to)
    if cordoned and not force:
        refusals.append(f"to_node: {cordoned}")
    elif cordoned:
        warnings.append(f"--force: {cordoned}")
    if to in nodes:
        plan.target_url = nodes[to]
    else:
        refusals.append(f"to_node: unknown node {to!r} (known: {', '.join(sorted(nodes))})")
    jobs = await ctl.list()
    for job in jobs:
        if job.partition == p and not job.terminal:
            refusals.append(f"partition: job {job.id} is already moving {p} ({job.status})")
    # Both ends are asked now: a move whose source or target cannot be reached would only
    # fail (or copy nothing) later, so the dry run refuses it with the reason (issue 27).
    ends = [(plan.source_url, "from_node", plan.from_node), (plan.target_url, "to_node", to)]
    probes = await asyncio.gather(*(_size_hook(url, p, SIZE_TIMEOUT_S) for url, _, _ in ends if url))
    for (url, field, node), (size, keys, error, down) in zip([e for e in ends if e[0]], probes):
        if field == "from_node":
            plan.size_bytes, plan.size_keys, plan.size_error = size, keys, error
        if down is not None:
            refusals.append(f"{field}: node {node!r} at {url} is unreachable: {down}")
        elif field == "from_node" and error:
            warnings.append(f"size unknown: {error}")
    listed, _ = await ctl.barrier.list()
    parts = await ctl.store.partitions()
    table_epoch = max([int(e) for _, e in parts.values()] + [int(ctl.replica.current_epoch())])
    plan.table_epoch = table_epoch
    times = await _transition_times(ctl.store, [int(x.epoch) for x in listed.values()], table_epoch)
    now = time.time()
    for pid, item in sorted(listed.items()):
        behind = max(0, table_epoch - int(item.epoch))
        behind_s = behind_seconds(times, int(item.epoch), now) if behind else 0.0
        plan.participants.append(pb.Participant(id=pid, applied_epoch=int(item.epoch), behind=behind,
                                                behind_s=behind_s))
        if behind and not 0 <= behind_s <= FRESH_S:
            ago = "longer than the kept change log" if behind_s < 0 else f"{behind_s:.1f} s"
            warnings.append(f"participant {pid} has not acknowledged the table for {ago} ({behind} epochs "
                            f"behind, applied {item.epoch}): the cutover barrier would wait for it")
    if not listed:
        warnings.append("no barrier participants: no sidecar would have to acknowledge the cutover")
    windows = cutover_windows(jobs)
    if windows:
        import statistics   # (with fractions and decimal: only for a dry run with history)

        plan.expected_cutover_s = statistics.median(windows)
        plan.expected_cutover_max_s = max(windows)
        plan.cutover_samples = len(windows)
    controls = getattr(ctl, "controls", None)
    if controls is not None and controls.fleet.paused:
        warnings.append("the fleet is paused: the job would wait before it begins (`jobs resume`)")
    if not ctl.leading:
        warnings.append("this controller is a standby: the leader would run the job")
    plan.refusals.extend(refusals)
    plan.warnings.extend(warnings)
    plan.would_go = not refusals
    return plan


def plan_to_dict(plan: pb.MigrationPlan) -> dict[str, Any]:
    return {
        "partition": plan.partition, "from_node": plan.from_node, "to_node": plan.to_node,
        "source_url": plan.source_url, "target_url": plan.target_url,
        "size_bytes": None if plan.size_bytes < 0 else plan.size_bytes,
        "size_keys": None if plan.size_keys < 0 else plan.size_keys, "size_error": plan.size_error or None,
        "participants": [{"id": x.id, "applied_epoch": x.applied_epoch, "behind": x.behind,
                          "behind_s": None if x.behind_s < 0 else round(x.behind_s, 3)} for x in plan.participants],
        "table_epoch": plan.table_epoch,
        "expected_cutover_s": plan.expected_cutover_s if plan.cutover_samples else None,
        "expected_cutover_max_s": plan.expected_cutover_max_s if plan.cutover_samples else None,
        "cutover_samples": plan.cutover_samples, "refusals": list(plan.refusals), "warnings": list(plan.warnings),
        "would_go": plan.would_go,
    }

