"""The resharding planner (issue 29): split the hottest slots until no node carries more than a
target share of the request rate.

Pure: it takes each slot's request rate (requests/s) and the table, and returns the splits to
run in order, each ``(slot, to)``. A split is assumed to halve its slot's rate (crc32 spreads keys
evenly; a single hot key does not split, and the plan says so by stopping). The new half goes to
the node carrying the least load then. Where the rates come from is not built yet (DESIGN §12.6):
the sidecars' metrics carry no slot label (§8: label values are bounded, never a partition id).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from gate import ConfigError, Phase, parse_slot


@dataclass(frozen=True)
class HotSplitPlan:
    splits: tuple[tuple[str, str], ...]     # (slot, node the new half goes to), in order
    shares: dict[str, float]                # each node's share of the rate after them
    reached: bool                           # every node at or below the target
    why: str = ""                           # when not reached: what stopped the plan


def plan_hot_splits(states: Mapping[str, Any], base: int, rates: Mapping[str, float], target: float,
                    nodes: Iterable[str] = (), max_splits: int = 64, min_rate: float = 0.0) -> HotSplitPlan:
    """Splits (hottest slot of the most loaded node first) until no node's share exceeds ``target``
    (0 < target ≤ 1). ``nodes`` adds nodes that hold no slot yet (a new node to spread onto)."""
    if not 0 < target <= 1:
        raise ConfigError("target", f"the target share must be in (0, 1], got {target!r}")
    where: dict[str, str] = {}
    for p, (st, _) in states.items():
        if p.startswith("slot-"):
            parse_slot(p, base)
            if st.phase is Phase.ACTIVE:
                where[p] = str(st.source)
    rate = {p: float(rates.get(p, 0.0)) for p in where}
    load = {n: 0.0 for n in list(nodes) + sorted(set(where.values()))}
    for p, r in rate.items():
        load[where[p]] += r
    total = sum(load.values())
    splits: list[tuple[str, str]] = []

    def shares() -> dict[str, float]:
        return {n: (v / total if total else 0.0) for n, v in sorted(load.items())}

    while total:
        hot = max(load, key=lambda n: load[n])
        if load[hot] / total <= target:
            return HotSplitPlan(tuple(splits), shares(), True)
        if len(splits) >= max_splits:
            return HotSplitPlan(tuple(splits), shares(), False, f"stopped after {max_splits} splits")
        cold = min(load, key=lambda n: (load[n], n))
        slot = max((p for p in where if where[p] == hot), key=lambda p: (rate[p], p))
        half = rate[slot] / 2
        if cold == hot or half <= min_rate or load[cold] + half >= load[hot]:
            return HotSplitPlan(tuple(splits), shares(), False,
                                f"splitting {slot} would not lower {hot}'s share (its rate is one slot's, "
                                "or no other node has room)")
        lo, hi = parse_slot(slot, base).halves()
        del where[slot], rate[slot]
        where[lo.name(base)], rate[lo.name(base)] = hot, half
        where[hi.name(base)], rate[hi.name(base)] = cold, half
        load[hot] -= half
        load[cold] += half
        splits.append((slot, cold))
    return HotSplitPlan(tuple(splits), shares(), True)
