"""Planning ``drain`` and ``balance`` (issue 17): pure functions, no I/O.

Input: where each settled partition lives (``placement``: partition → node,
partitions in a migration left out by the caller), the nodes that may hold
partitions, and optionally each partition's size. A partition's weight is its
size when ``by_size`` (unknown sizes weigh the mean of the known ones), else 1.

* ``plan_drain``: every partition on the drained node goes to the lightest
  other node at that moment, heaviest partition first (greedy LPT), so the
  others end up even by count, or as even by size as greedy placement gets.
* ``plan_balance``: while the heaviest and the lightest node differ by more
  than the threshold, move the partition from the heaviest to the lightest
  that most reduces their difference — only moves that strictly reduce it
  (x < heavy − light), so the sum of squared loads strictly falls and the
  loop ends; each partition moves at most once. The threshold is a fraction
  of the mean load per node (default 10 %), and never below one partition
  when counting (30 partitions on 4 nodes cannot be closer than 7/8), so an
  even fleet plans nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from gate import ConfigError

DEFAULT_THRESHOLD = 0.1
MAX_MOVES = 100_000


@dataclass(frozen=True, slots=True)
class PlannedMove:
    partition: str
    source: str
    target: str
    weight: float


def weights(placement: Mapping[str, str], sizes: Mapping[str, int] | None, by_size: bool) -> dict[str, float]:
    if not by_size:
        return {p: 1.0 for p in placement}
    sizes = sizes or {}
    known = [float(sizes[p]) for p in placement if sizes.get(p, -1) >= 0]
    mean = sum(known) / len(known) if known else 1.0
    return {p: float(sizes[p]) if sizes.get(p, -1) >= 0 else mean for p in placement}


def loads(placement: Mapping[str, str], nodes: Sequence[str], w: Mapping[str, float]) -> dict[str, float]:
    out = {n: 0.0 for n in nodes}
    for p, n in placement.items():
        out[n] = out.get(n, 0.0) + w[p]
    return out


def _lightest(load: Mapping[str, float], candidates: Sequence[str]) -> str:
    return min(candidates, key=lambda n: (load[n], n))


def plan_drain(placement: Mapping[str, str], nodes: Sequence[str], node: str, *,
               sizes: Mapping[str, int] | None = None, by_size: bool = False) -> list[PlannedMove]:
    """Moves that empty ``node`` onto the other ``nodes``."""
    if node not in nodes:
        raise ConfigError("node", f"unknown node {node!r} (known: {', '.join(sorted(nodes))})")
    others = sorted(n for n in nodes if n != node)
    if not others:
        raise ConfigError("node", f"cannot drain {node!r}: it is the only node")
    w = weights(placement, sizes, by_size)
    load = loads({p: n for p, n in placement.items() if n != node}, others, w)
    moves = []
    for p in sorted((p for p, n in placement.items() if n == node), key=lambda p: (-w[p], p)):
        target = _lightest(load, others)
        load[target] += w[p]
        moves.append(PlannedMove(p, node, target, w[p]))
    return moves


def spread_threshold(load: Mapping[str, float], threshold: float, by_size: bool) -> float:
    """The largest heavy − light difference that counts as even."""
    if threshold < 0:
        raise ConfigError("threshold", f"must be ≥ 0 (a fraction of the mean load), got {threshold!r}")
    mean = sum(load.values()) / len(load) if load else 0.0
    return max(threshold * mean, 0.0 if by_size else 1.0)


def plan_balance(placement: Mapping[str, str], nodes: Sequence[str], *, sizes: Mapping[str, int] | None = None,
                 by_size: bool = False, threshold: float = DEFAULT_THRESHOLD) -> list[PlannedMove]:
    """Moves that even out the fleet to within the threshold (none when it already is)."""
    nodes = sorted(set(nodes))
    if len(nodes) < 2:
        return []
    unknown = sorted({n for n in placement.values() if n not in nodes})
    if unknown:
        raise ConfigError("nodes", f"partitions live on unregistered nodes: {', '.join(unknown)}")
    w = weights(placement, sizes, by_size)
    load = loads(placement, nodes, w)
    limit = spread_threshold(load, threshold, by_size)
    where = dict(placement)
    moved: set[str] = set()
    moves: list[PlannedMove] = []
    while len(moves) < MAX_MOVES:
        heavy = max(nodes, key=lambda n: (load[n], n))
        light = _lightest(load, nodes)
        gap = load[heavy] - load[light]
        if gap <= limit:
            break
        # the partition whose move leaves the pair closest to even, strictly reducing the gap
        best = None
        for p in sorted(where):
            if where[p] != heavy or p in moved or not 0 < w[p] < gap:
                continue
            score = abs(gap - 2 * w[p])
            if best is None or score < best[0]:
                best = (score, p)
        if best is None:
            break
        p = best[1]
        load[heavy] -= w[p]
        load[light] += w[p]
        where[p] = light
        moved.add(p)
        moves.append(PlannedMove(p, heavy, light, w[p]))
    return moves
