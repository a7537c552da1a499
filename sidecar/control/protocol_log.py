"""The change log as a participant reads it, for the protocol model (DESIGN §4.3, §5).

``sidecar/control/protocol_model.py`` lets its sidecar read the store directly. In *log mode*
(``Bounds.unreadable`` or ``Bounds.others`` set) the sidecar instead applies the change log one
entry at a time, as ``gate._replica`` does: every committed transition appends an entry; entries of
the ops in ``Bounds.unreadable`` are ones this sidecar cannot parse (a newer writer during a rolling
upgrade), and so are the partition values they wrote; ``Bounds.others`` transitions of *other*
partitions (entries it can parse) interleave with the migration's. Its table epoch — what it acks —
is the newest epoch it applied, whichever partition that was.

Two rules for an entry it cannot parse:

* **skip** (before issue 26; ``--drop fail_closed``): count it and move on. The partition keeps its
  last good state (draining), the next entry it can parse moves the table epoch past the cutover, the
  ack satisfies the barrier, and the sidecar admits a write at the draining epoch that commits on the
  source after the barrier passed: INV-M1, then a lost write.
* **fail closed** (DESIGN §4.3): stop there — apply nothing past it, ack nothing past it, admit
  nothing; once drained (here: at once, an admitted write commits in the same step) give the session
  up so the barrier does not wait; a rejoin reads a snapshot, which stops again while the partition's
  value cannot be parsed. No counter-example.

INV-M1 as the model checks it: no write commits on the source while the partition is in a cutover
whose barrier a controller has passed (a lagging sidecar may commit during cutover *before* the
barrier: that is what the barrier waits for).
"""

from __future__ import annotations

from typing import Any, Iterator

from gate import Phase

LOG_GUARDS = ("fail_closed",)
_PAST_BARRIER = ("delta", "await_delta", "complete")


def _p_readable(s: Any) -> bool:
    """Whether the partition's current stored value parses: the last entry that wrote it did."""
    for state, _, readable in reversed(s.log):
        if state is not None:
            return bool(readable)
    return True   # the seed value, written by this version


def read_table(s: Any, sc: Any, bounds: Any) -> Any:
    """Rule 1's read by a fresh replica: a snapshot of the store (it covers every entry so far)."""
    if not bounds.log:
        return sc._replace(view=s.store, top=s.store[1], ready=True)
    others = max((e for st, e, _ in s.log if st is None), default=0)
    if _p_readable(s):
        return sc._replace(view=s.store, top=max(s.store[1], others), seq=len(s.log), ready=True, blocked=False)
    if "fail_closed" in bounds.drop:   # skip: a fresh table without the partition it could not parse
        return sc._replace(view=None, top=others, seq=len(s.log), ready=True)
    return sc._replace(ready=True, blocked=True)   # fail closed: nothing applied


def follow(s: Any, sc: Any, bounds: Any) -> Iterator[tuple[str, Any]]:
    """Apply the next log entry — or skip it, or stop at it."""
    if not sc.ready or sc.blocked or sc.seq >= len(s.log):
        return
    state, epoch, readable = s.log[sc.seq]
    if readable:
        what = "another partition's entry" if state is None else f"{state.phase.value} entry"
        view = sc.view if state is None else (state, epoch)
        yield f"sc applies {what} at {epoch}", s._replace(sc=sc._replace(seq=sc.seq + 1, view=view,
                                                                           top=max(sc.top, epoch)))
    elif "fail_closed" in bounds.drop:
        yield f"sc skips the entry at {epoch} it cannot parse", s._replace(sc=sc._replace(seq=sc.seq + 1))
    else:
        yield f"sc stops at the entry at {epoch} it cannot parse", s._replace(sc=sc._replace(blocked=True))


def leave_if_blocked(s: Any) -> Iterator[tuple[str, Any]]:
    """Stopped and drained: give the session up (the barrier stops waiting); rejoin via rule 1."""
    sc = s.sc
    if sc.blocked and sc.reg and sc.alive:
        yield "sc, stopped and drained, gives its session up", s._replace(sc=sc._replace(alive=False))


def other_partition(s: Any, bounds: Any) -> Iterator[tuple[str, Any]]:
    """A transition of another partition commits (an entry every version parses)."""
    if sum(1 for st, _, _ in s.log if st is None) < bounds.others:
        e = max(s.store[1], s.idx) + 1
        yield f"another partition's transition commits at {e}", s._replace(idx=e, log=s.log + ((None, e, True),))


def commits_in_cutover(s: Any) -> bool:
    """A write committing now on the source would break INV-M1 (see the module docstring)."""
    st, epoch = s.store
    return st.phase is Phase.CUTOVER and any(c.pc in _PAST_BARRIER and c.cutover == epoch for c in (s.A, s.B))
