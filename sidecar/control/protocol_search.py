"""The breadth-first search under the exhaustive protocol checks: every reachable state, the
shortest counter-example if any; one search for every model (``protocol_model``, ``protocol_push``,
``protocol_split``)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Hashable, Iterable, TypeVar

S = TypeVar("S", bound=Hashable)


@dataclass
class Result:
    states: int
    counterexample: list[str] | None
    why: str | None = None


def explore(start: S, successors: Callable[[S], Iterable[tuple[str, S]]], violation: Callable[[S], str | None],
            max_states: int) -> Result:
    """Breadth-first over every state reachable from ``start``; the shortest trace to a state
    where ``violation`` says why, or none."""
    parent: dict[S, tuple[S | None, str]] = {start: (None, "start")}
    queue = deque([start])
    while queue:
        s = queue.popleft()
        why = violation(s)
        if why is not None:
            trace = []
            cur: S | None = s
            while cur is not None:
                prev, label = parent[cur]
                trace.append(label)
                cur = prev
            return Result(len(parent), trace[::-1], why)
        for label, nxt in successors(s):
            if nxt not in parent:
                parent[nxt] = (s, label)
                if len(parent) > max_states:
                    raise RuntimeError(f"more than {max_states} states: lower the bounds")
                queue.append(nxt)
    return Result(len(parent), None)


def report(name: str, res: Result) -> bool:
    """Print one check's verdict (and its counter-example, numbered); True if it found one."""
    if res.counterexample is None:
        print(f"{name}: no counter-example in {res.states} states")
        return False
    print(f"{name}: counter-example after {res.states} states: {res.why}")
    for i, label in enumerate(res.counterexample):
        print(f"  {i:2d}. {label}")
    return True
