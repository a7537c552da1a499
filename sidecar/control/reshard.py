"""Resharding (DESIGN §12): the plan of a split or a merge, and the job that runs one on the
in-process table (``gate.PlacementTable``) with the hooks mover.

The plan is pure: which slots go (sources), which come (destinations, each with a node), and
the transfers — each source's rows exported with the destination's key filter and imported
under the destination's name. The job is DESIGN §12.2's sequence:

    begin_reshard (E1) → clean up each destination at E1 → bulk copies at E1
    → enter_cutover (E2) → barrier (the sources' writes admitted before E2 drained)
    → deltas at E2 → complete_reshard (E3, the flip) → clean up each source at E3

and, on a failure before the flip, abort (the sources active again) and clean up the
destinations at the abort's epoch. The store is the Consul one (``gate.ConsensusStore``, with
the fleet barrier) or one sidecar's embedded table (``TableStore``, with its drain). The
controller runs it as a job (``reshard_job.py``) through ``Steps``: its record, pause,
abort requests and lock checks between the steps.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping

from gate import ConfigError, Phase, Slot, parse_slot, tiling_problem

log = logging.getLogger("epochgate.controller")

@dataclass(frozen=True)
class Transfer:
    source: str
    source_node: str
    dest: str
    dest_node: str
    only: Slot | None      # the key filter (None: the whole source goes to this destination)


@dataclass(frozen=True)
class ReshardPlan:
    kind: str                                  # split | merge
    sources: tuple[tuple[str, str], ...]       # (slot, node)
    into: tuple[tuple[str, str], ...]          # (slot, node)
    transfers: tuple[Transfer, ...]


def plan_split(states: Mapping[str, Any], base: int, slot: str, to: str | None = None) -> ReshardPlan:
    """Split ``slot`` (active) into its two halves; the new half (``i+M of 2M``) on ``to``
    (default: the slot's node). ``states``: partition → (PartitionState, epoch)."""
    s, node = _active(states, base, slot, "slot")
    lo, hi = s.halves()
    names = (lo.name(base), hi.name(base))
    into = ((names[0], node), (names[1], to or node))
    _check_tiles(states, base, [slot], [n for n, _ in into])
    return plan_of("split", ((slot, node),), into, base)


def plan_merge(states: Mapping[str, Any], base: int, slot: str, to: str | None = None) -> ReshardPlan:
    """Merge ``slot`` and its sibling (both active, neither split further) into the slot they
    were split from, on ``to`` (default: the lower half's node)."""
    s, _ = _active(states, base, slot, "slot")
    parent = s.merged(base)
    halves = sorted([s, s.sibling(base)])
    sources = []
    for h in halves:
        name = h.name(base)
        _, n = _active(states, base, name, "slot")
        sources.append((name, n))
    into = ((parent.name(base), to or sources[0][1]),)
    _check_tiles(states, base, [n for n, _ in sources], [into[0][0]])
    return plan_of("merge", tuple(sources), into, base)


def plan_of(kind: str, sources: Any, into: Any, base: int) -> ReshardPlan:
    """The plan of a split (one source, each destination its half: the key filter) or a merge
    (each source whole into the one destination): also how a job record is read back."""
    sources, into = tuple((str(s), str(n)) for s, n in sources), tuple((str(d), str(n)) for d, n in into)
    if kind == "split" and len(sources) == 1:
        (s, n), = sources
        transfers = tuple(Transfer(s, n, d, dn, parse_slot(d, base, "into")) for d, dn in into)
    elif kind == "merge" and len(into) == 1:
        (d, dn), = into
        transfers = tuple(Transfer(s, n, d, dn, None) for s, n in sources)
    else:
        raise ConfigError("kind", f"not a split or a merge: {kind} of {sources} into {into}")
    return ReshardPlan(kind, sources, into, transfers)


def _active(states: Mapping[str, Any], base: int, name: str, field: str) -> tuple[Slot, str]:
    s = parse_slot(name, base, field)
    got = states.get(name)
    if got is None:
        raise ConfigError(field, f"{name!r} is not in the table")
    st = got[0]
    if st.phase is not Phase.ACTIVE:
        raise ConfigError(field, f"{name!r} is {st.phase.value}: a slot must be active to be resharded")
    return s, str(st.source)


def _check_tiles(states: Mapping[str, Any], base: int, gone: list[str], new: list[str]) -> None:
    slots = [p for p in states if p.startswith("slot-")]
    why = tiling_problem([p for p in slots if p not in gone] + new, base)
    if why is not None:
        raise ConfigError("slot", f"the table would not cover each key once: {why}")


@dataclass
class ReshardResult:
    plan: ReshardPlan
    status: str = "pending"          # completed | aborted
    epochs: dict[str, int] = field(default_factory=dict)
    deleted: int = 0
    error: str | None = None
    window_s: float = 0.0            # cutover committed → flip committed: the sources' write unavailability


class _Bytes:
    """Bytes over all of a reshard's copies and deltas: the mover reports each transfer's own
    running total (a merge's second copy would otherwise start the job's count again at 0)."""

    def __init__(self, st: "Steps") -> None:
        self.st, self.done, self.running = st, 0, 0

    def __call__(self, n: int) -> None:
        self.running = n
        self.st.progress(self.done + n)

    def next(self) -> None:
        self.done, self.running = self.done + self.running, 0


class Steps:
    """What a caller adds between the steps; this default adds nothing (the controller's job:
    ``reshard_job.JobSteps``)."""

    leave: tuple[type[BaseException], ...] = ()   # raised on without an abort: the next controller's
    reraise = False                               # after an abort, raise the cause (else: a result)

    def check(self) -> None:
        """Before each import batch and each transition; raises to stop."""

    def progress(self, n: int) -> None:
        """Bytes copied by the running transfer."""

    async def before(self, phase: str) -> None:
        """Before ``begin``, ``copy`` and ``cutover`` (a pause holds here; never inside a cutover)."""

    async def at(self, status: str, epoch: int) -> None:
        """After the transition that starts ``draining``, ``cutover`` or ``replaying``, and after
        the flip (``flipped``, before the sources' clean-up)."""


Barrier = Callable[[list[str], int], Awaitable[None]]
"""``barrier(sources, cutover_epoch)``: returns once no participant can still commit a write of the
sources admitted before the cutover; raises otherwise (the job aborts)."""


class TableStore:
    """The in-process table with the consensus store's async reshard calls. ``at_epoch`` is not
    checked: one process, one job at a time."""

    def __init__(self, table: Any) -> None:
        self.table = table

    async def begin_reshard(self, sources: list[str], into: Any, *, at_epoch: int | None = None) -> int:
        return int(self.table.begin_reshard(sources, into))

    async def enter_cutover_all(self, sources: list[str], *, at_epoch: int | None = None) -> int:
        return int(self.table.enter_cutover_all(sources))

    async def abort_all(self, sources: list[str], *, at_epoch: int | None = None) -> int:
        return int(self.table.abort_all(sources))

    async def complete_reshard(self, sources: list[str], *, at_epoch: int | None = None) -> int:
        return int(self.table.complete_reshard(sources))


def drain_barrier(tracker: Any, timeout_s: float = 10.0) -> Barrier:
    """One sidecar's barrier: the sources' writes admitted before the cutover have finished."""
    async def barrier(sources: list[str], epoch: int) -> None:
        for name in sources:
            if not await tracker.wait_drained(name, int(epoch), timeout_s):
                raise TimeoutError(f"writes of {name} admitted before the cutover did not finish in {timeout_s} s")
    return barrier


def fleet_barrier(barrier: Any, deadline_s: float = 10.0) -> Barrier:
    """The fleet's barrier (``control/barrier.py``, DESIGN §5 rule 2): list the participants after
    the cutover committed, then wait for each to ack ≥ E or lose its session."""
    async def wait(sources: list[str], epoch: int) -> None:
        committed = time.monotonic()
        listed, index = await barrier.list()
        await barrier.wait(epoch, listed, index, committed, deadline_s)
    return wait


async def run_reshard(plan: ReshardPlan, store: Any, mover: Any, urls: Mapping[str, str],
                      barrier: Barrier, prebarrier: Barrier | None = None, steps: Steps | None = None) -> ReshardResult:
    """Run ``plan`` (see the module docstring) on ``store``: a ``gate.ConsensusStore`` (fleet) or a
    ``TableStore`` (one sidecar's embedded table). ``prebarrier`` (DESIGN §5 "The pre-barrier"):
    waited for with the draining epoch after the bulk copy, while writes still flow."""
    res = ReshardResult(plan)
    sources = [n for n, _ in plan.sources]
    st = steps or Steps()

    await st.before("begin")
    st.check()
    e1 = await store.begin_reshard(sources, plan.into)
    res.epochs["begin"] = int(e1)
    try:
        await st.at("draining", int(e1))
        for dest, node in plan.into:                      # §12.4 rule 3
            st.check()
            await mover.cleanup(dest, urls[node], fence=int(e1))
        await st.before("copy")
        cursors = {}
        progress = _Bytes(st)   # the mover counts per transfer; the job shows the sum
        for t in plan.transfers:
            cursors[t] = await mover.copy(t.source, urls[t.source_node], urls[t.dest_node], progress, st.check,
                                          fence=int(e1), only=t.only, into=t.dest)
            progress.next()
        if prebarrier is not None:
            await prebarrier(sources, int(e1))
        await st.before("cutover")
        st.check()
        e2 = await store.enter_cutover_all(sources, at_epoch=e1)
        t_cut = time.monotonic()
        res.epochs["cutover"] = int(e2)
        await st.at("cutover", int(e2))
        await barrier(sources, int(e2))
        await st.at("replaying", int(e2))
        for t in plan.transfers:
            await mover.copy_delta(t.source, urls[t.source_node], urls[t.dest_node], cursors[t], progress,
                                   st.check, fence=int(e2), only=t.only, into=t.dest)
            progress.next()
        st.check()
        e3 = await store.complete_reshard(sources, at_epoch=e2)
        res.window_s = time.monotonic() - t_cut
        res.epochs["flip"] = int(e3)
    except BaseException as exc:
        if isinstance(exc, st.leave) or not isinstance(exc, Exception):
            raise
        st.check()   # a controller that lost its lock leaves the abort to the next one
        # fenced to this attempt's epoch: a resumed stale controller cannot abort a newer attempt
        ea = await store.abort_all(sources, at_epoch=res.epochs.get("cutover", e1))
        res.epochs["abort"] = int(ea)
        res.status, res.error = "aborted", f"{type(exc).__name__}: {exc}"
        log.warning("reshard %s of %s aborted: %s", plan.kind, sources, res.error)
        res.deleted += await cleanup(mover, plan.into, urls, int(ea))   # §12.4 rule 2
        if st.reraise:
            raise
        return res
    await st.at("flipped", int(e3))
    res.deleted += await cleanup(mover, plan.sources, urls, int(e3), best_effort=False)   # §12.4 rule 1
    res.status = "completed"
    return res


async def cleanup(mover: Any, slots: Any, urls: Mapping[str, str], fence: int, best_effort: bool = True) -> int:
    """Delete each ``(slot, node)``'s rows on its node at ``fence``. Best effort after an abort
    (§12.4 rule 3 clears what is left before the next attempt's import); after a flip an error
    is raised, so the job is not recorded completed and the next controller runs it again."""
    deleted = 0
    for name, node in slots:
        try:
            deleted += await mover.cleanup(name, urls[node], fence=fence)
        except Exception as exc:  # noqa: BLE001 - logged; see the docstring
            if not best_effort:
                raise
            log.warning("clean-up of %s on %s failed: %s", name, node, exc)
    return deleted
