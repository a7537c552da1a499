"""An exhaustive check of resharding (DESIGN §12): a hash slot split in two with the new
half on another node, then (optionally) merged back, per key.

The configuration: N = 1, so ``slot-0`` holds every key; two keys, ``K[0]`` in
``slot-0-of-2`` and ``K[1]`` in ``slot-1-of-2`` (real ``crc32``, real ``gate.resolve_slot``).
The split turns ``slot-0`` on a into ``slot-0-of-2`` on a and ``slot-1-of-2`` on b; the
merge turns those back into ``slot-0`` on a. Every interleaving of:

* a **sidecar** (barrier participant, DESIGN §5 rules 1, 4, 5 as in ``protocol_model``)
  that registers, reads the table, follows it late, acknowledges, runs out of lease, loses
  its session and starts over — and writes: it resolves either key against its view (the
  walk), admits unless that slot is in cutover, and commits on the view's node under the
  view's slot name (admit and commit are one step: the commit-point admit, rule 6);
* **controller A**, running the jobs, which may pause at any step and, on resuming, does
  the one action it had passed its lock check for; **controller B**, which then takes the
  current job over (abort and a fresh attempt, or the clean-up if the flip committed);
* the **network**: every import and clean-up is a message delivered at any later point
  (refused by the receiving node's real ``gate.check_fence`` for its slot when stale).

Store transitions go through the real ``gate.step`` (``begin_reshard``, ``enter_cutover``,
``complete_reshard``, ``abort_migration``) with the store's ``at_epoch`` rule.

A job: ``begin_reshard`` (E1) → clean up each destination at E1 (DESIGN §12.4 rule 3) →
bulk imports of the filtered source rows under the destinations' names at E1 →
``enter_cutover`` (E2), list, barrier → delta imports at E2 → ``complete_reshard`` (E3:
sources removed, destinations active) → clean-up of each source at E3.

Checked in every state, per key: no write commits while the key's slot is in a cutover
whose barrier a controller passed (INV-M1) or under a slot the table no longer has (INV-M2); the read placement of the key's
present slot holds its last acknowledged write; and once a controller finished and nothing
is in flight, no row is left under a slot its node does not hold. With every guard there
is no counter-example; without the barrier, the fence or the clean-up there is one.

    python -m sidecar.control.protocol_split [--writes 2] [--merge] [--drop barrier|fence|cleanup]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from typing import Iterator, NamedTuple

from gate import (
    MigrationError, Op, PartitionState, Phase, StaleMover, check_fence, key_hash, parse_slot, resolve_slot, step,
)

from .protocol_model import Result, Sidecar
from .protocol_search import explore, report

BASE = 1
GUARDS = ("barrier", "fence", "cleanup")
SRC, LO, HI = "slot-0", "slot-0-of-2", "slot-1-of-2"


def _key_in(slot: str, start: int = 0) -> str:
    s = parse_slot(slot, BASE)
    return next(f"k{i}" for i in range(start, start + 64) if s.holds(key_hash(f"k{i}")))


K = (_key_in(LO), _key_in(HI))
#: (sources, destinations): (slot, node) pairs
SPLIT = (((SRC, "a"),), ((LO, "a"), (HI, "b")))
MERGE = (((LO, "a"), (HI, "b")), ((SRC, "a"),))


@dataclass(frozen=True, slots=True)
class Bounds:
    writes: int = 2        # client writes in a run (each to either key)
    rejoins: int = 1       # session losses the sidecar recovers from
    merge: bool = False    # run the merge back after the split
    pauses: int = 1        # controller A may pause (and B take over) this many times
    drop: frozenset[str] = frozenset()
    lease: bool = True     # the sidecar's lease may run out and its session expire (rules 4, 5)


class Ctl(NamedTuple):
    pc: str = "idle"   # begin clear export cutover barrier delta flip cleanup done (await_* between)
    job: int = 0       # index into the run's jobs
    e1: int = 0        # this attempt's epochs: its fencing tokens
    e2: int = 0
    e3: int = 0
    listed: tuple = ()
    got: tuple = ()    # answers received in the current await_* phase
    paused: bool = False
    halted: bool = False


class State(NamedTuple):
    table: tuple       # (slot, PartitionState, epoch), sorted by slot
    epoch: int         # the table's newest epoch
    rows: tuple        # ((node, slot, key), value), sorted
    fence: tuple       # ((node, slot), highest token), sorted
    acked: tuple       # per key: the last acknowledged value (0: none)
    v: int             # the next value written
    sc: Sidecar        # its view: (table, epoch)
    A: Ctl
    B: Ctl
    net: tuple         # (kind, token, node, slot, source slot, payload, owner), sorted
    next_sid: int
    paused_once: bool
    bad: str | None = None


def _jobs(bounds: Bounds) -> tuple:
    return (SPLIT, MERGE) if bounds.merge else (SPLIT,)


def initial() -> State:
    return State(((SRC, PartitionState.active("a"), 1),), 1, (), (), (0, 0), 1, Sidecar(), Ctl(pc="begin"), Ctl(), (), 1, False)


# ---- small helpers over the tuples ----------------------------------------------------

def _get(pairs: tuple, key: object, default: object = None) -> object:
    return next((v for k, v in pairs if k == key), default)


def _put(pairs: tuple, key: object, value: object) -> tuple:
    return tuple(sorted([(k, v) for k, v in pairs if k != key] + [(key, value)]))


def _slot(table: tuple, name: str) -> tuple | None:
    return next((row for row in table if row[0] == name), None)


def _where(table: tuple, key: str) -> tuple | None:
    """The key's present slot in ``table`` by the real walk: ``(slot, state, epoch)``."""
    found = resolve_slot(key_hash(key), BASE, lambda name: _slot(table, name))
    return None if found is None else found[1]


def _filtered(s: State, node: str, slot: str, dest: str) -> tuple:
    """The export of ``slot`` on ``node`` with the key filter of ``dest`` (DESIGN §12.4)."""
    d = parse_slot(dest, BASE)
    return tuple((k, val) for (n, sl, k), val in s.rows if n == node and sl == slot and d.holds(key_hash(k)))


# ---- the property --------------------------------------------------------------------

def violation(s: State, bounds: Bounds) -> str | None:
    if s.bad is not None:
        return s.bad
    for i, key in enumerate(K):
        row = _where(s.table, key)
        if row is None:
            return f"T1: no present slot holds {key}"
        slot, st, _ = row
        node = st.source
        have = _get(s.rows, (node, slot, key), 0)
        if have != s.acked[i]:
            return f"{key}: its slot {slot} on {node} holds {have}, the last acknowledged write is {s.acked[i]}"
    if "done" in (s.A.pc, s.B.pc) and not s.net:
        for (node, slot, key), _ in s.rows:
            row = _slot(s.table, slot)
            if row is None or row[1].source != node:
                return f"left behind: {key} under {slot} on {node}"
    return None


# ---- the store: DESIGN §12.2's transitions (the real gate.step), all sources in one transaction

def _transition(s: State, op: str, job: tuple, at: int | None) -> State | None:
    sources, into = job
    rows = [_slot(s.table, name) for name, _ in sources]
    if any(r is None for r in rows) or (at is not None and any(r[2] != at for r in rows)):
        return None   # unknown, or StaleAttempt (at_epoch): nothing written
    try:   # the real machine, every source (all or none, as the store's one transaction)
        new_states = [step(r[0], r[1], _OPS[op], into=into) for r in rows]
    except MigrationError:
        return None
    e = s.epoch + 1
    keep = [r for r in s.table if r[0] not in {name for name, _ in sources}]
    if op == "complete":
        new = keep + [(name, PartitionState.active(node), e) for name, node in into]
    else:
        new = keep + [(r[0], st, e) for r, st in zip(rows, new_states)]
    return s._replace(table=tuple(sorted(new, key=lambda r: r[0])), epoch=e)


_OPS = {"begin": Op.BEGIN_RESHARD, "cutover": Op.ENTER_CUTOVER, "complete": Op.COMPLETE_RESHARD,
        "abort": Op.ABORT}


# ---- controllers ---------------------------------------------------------------------

def _ctl_action(s: State, name: str, c: Ctl, bounds: Bounds) -> Iterator[tuple[str, State]]:
    jobs = _jobs(bounds)
    job = jobs[c.job]
    sources, into = job

    def put(s2: State, c2: Ctl) -> State:
        return s2._replace(**{name: c2})

    def send(s2: State, msgs: list) -> State:
        return s2._replace(net=tuple(sorted(s2.net + tuple(msgs))))

    def moved(nxt: State | None, what: str, c2: Ctl) -> tuple[str, State]:   # a refused transition halts
        if nxt is None:
            return f"{name} {what} refused", put(s, c._replace(halted=True))
        return f"{name} {what} → {nxt.epoch}", put(nxt, c2)

    pc = c.pc
    if pc == "restart":   # B takes the current job over
        if all(_slot(s.table, d) is not None for d, _ in into) and all(
                _slot(s.table, src) is None for src, _ in sources):
            e3 = _slot(s.table, into[0][0])[2]
            yield f"{name} finds job {c.job} flipped at {e3}: clean-up", put(s, c._replace(pc="cleanup", e3=e3))
            return
        s2 = _transition(s, "abort", job, None) or s
        nxt = _transition(s2, "begin", job, None)
        if nxt is None:
            yield f"{name} restart refused", put(s2, c._replace(halted=True))
            return
        yield f"{name} restarts job {c.job}: abort, begin at {nxt.epoch}", put(nxt, c._replace(
            pc="clear", e1=nxt.epoch, e2=0, e3=0, listed=(), got=()))
    elif pc == "begin":
        nxt = _transition(s, "begin", job, None)
        yield moved(nxt, f"begin_reshard job {c.job}", c._replace(pc="clear", e1=nxt and nxt.epoch))
    elif pc == "clear":
        msgs = [("clear", c.e1, node, d, "", (), name) for d, node in into]
        yield f"{name} clears destinations @{c.e1}", put(send(s, msgs), c._replace(pc="await_clear", got=()))
    elif pc == "export":
        msgs = [("bulk", c.e1, dn, d, src, _filtered(s, sn, src, d), name) for src, sn in sources for d, dn in into]
        yield f"{name} exports, sends bulk@{c.e1}", put(send(s, msgs), c._replace(pc="await_bulk", got=()))
    elif pc == "cutover":
        nxt = _transition(s, "cutover", job, c.e1)
        listed = (s.sc.sid,) if s.sc.reg and s.sc.alive else ()   # listed after the commit (§5 rule 2)
        yield moved(nxt, "enter_cutover, then lists", c._replace(
            pc="delta" if "barrier" in bounds.drop else "barrier", e2=nxt and nxt.epoch, listed=listed))
    elif pc == "barrier":
        sc = s.sc
        if all(not (sc.reg and sc.alive and sc.sid == sid) or sc.pub >= c.e2 for sid in c.listed):
            yield f"{name} barrier passes", put(s, c._replace(pc="delta"))
    elif pc == "delta":
        msgs = [("delta", c.e2, dn, d, src, _filtered(s, sn, src, d), name) for src, sn in sources for d, dn in into]
        yield f"{name} exports delta, sends delta@{c.e2}", put(send(s, msgs), c._replace(pc="await_delta", got=()))
    elif pc == "flip":
        nxt = _transition(s, "complete", job, c.e2)
        yield moved(nxt, "complete_reshard (the flip)", c._replace(pc="cleanup", e3=nxt and nxt.epoch))
    elif pc == "cleanup":
        if "cleanup" in bounds.drop:
            yield f"{name} skips the clean-up", put(s, _next_job(c, jobs))
            return
        msgs = [("cleanup", c.e3, node, src, "", (), name) for src, node in sources]
        yield f"{name} cleans sources up @{c.e3}", put(send(s, msgs), c._replace(pc="await_cleanup", got=()))


_AFTER = {"await_clear": "export", "await_bulk": "cutover", "await_delta": "flip", "await_cleanup": None}


def _next_job(c: Ctl, jobs: tuple) -> Ctl:
    if c.job + 1 < len(jobs):
        return c._replace(pc="begin", job=c.job + 1, e1=0, e2=0, e3=0, listed=(), got=())
    return c._replace(pc="done")


def _expected(c: Ctl, jobs: tuple) -> int:
    sources, into = jobs[c.job]   # (c.pc is await_<kind>)
    return {"await_clear": len(into), "await_cleanup": len(sources)}.get(c.pc, len(sources) * len(into))


def _controllers(s: State, bounds: Bounds) -> Iterator[tuple[str, State]]:
    A, B = s.A, s.B
    if not A.paused and not A.halted and A.pc != "done":
        yield from _ctl_action(s, "A", A, bounds)
        if not s.paused_once and bounds.pauses:
            yield f"A pauses before {A.pc}", s._replace(A=A._replace(paused=True), paused_once=True)
    if A.paused and not A.halted:
        if B.pc == "idle":   # A's lock lapsed: B leads and takes the current job over
            yield "B takes the job over", s._replace(B=B._replace(pc="restart", job=A.job))
        for label, s2 in _ctl_action(s, "A", A._replace(paused=False), bounds):
            yield "A resumes: " + label, s2._replace(A=s2.A._replace(paused=False, halted=True))
        yield "A resumes and stops", s._replace(A=A._replace(paused=False, halted=True))
    if B.pc not in ("idle", "done") and not B.halted:
        yield from _ctl_action(s, "B", B, bounds)


# ---- the network: fenced imports and clean-ups -------------------------------------------

def _deliveries(s: State, bounds: Bounds) -> Iterator[tuple[str, State]]:
    jobs = _jobs(bounds)
    for i, msg in enumerate(s.net):
        if i and s.net[i - 1] == msg:
            continue
        kind, token, node, slot, src, payload, owner = msg
        net = s.net[:i] + s.net[i + 1:]
        c = getattr(s, owner)
        waiting = c.pc == f"await_{kind}" and not c.paused and not c.halted
        try:
            if "fence" not in bounds.drop:
                check_fence(slot, token, _get(s.fence, (node, slot)))
        except StaleMover:
            yield f"{node} refuses {kind} {slot}@{token} (stale-mover)", s._replace(
                net=net, **{owner: c._replace(halted=True) if waiting else c})
            continue
        fence = _put(s.fence, (node, slot), max(token, _get(s.fence, (node, slot), 0)))
        if kind in ("clear", "cleanup"):
            rows = tuple(r for r in s.rows if not (r[0][0] == node and r[0][1] == slot))
        else:
            rows = s.rows
            for key, val in payload:
                rows = _put(rows, (node, slot, key), val)
        s2 = s._replace(net=net, rows=rows, fence=fence)
        if waiting and token == {"clear": c.e1, "bulk": c.e1, "delta": c.e2, "cleanup": c.e3}[kind]:
            got = tuple(sorted(set(c.got) | {(node, slot, src)}))
            if len(got) == _expected(c, jobs):
                nxt = _AFTER[c.pc]
                c = _next_job(c, jobs) if nxt is None else c._replace(pc=nxt, got=())
            else:
                c = c._replace(got=got)
            s2 = s2._replace(**{owner: c})
        yield f"{node} applies {kind} {slot}@{token}", s2


# ---- the sidecar (DESIGN §5 rules 1, 4, 5; its writes resolve by the walk) ---------------

def _sidecar(s: State, bounds: Bounds) -> Iterator[tuple[str, State]]:
    sc = s.sc
    if not sc.reg:
        yield "sc registers", s._replace(sc=sc._replace(reg=True, sid=s.next_sid, alive=True, fresh=True, pub=0),
                                         next_sid=s.next_sid + 1)
    elif not sc.ready:
        yield "sc reads the table", s._replace(sc=sc._replace(ready=True, view=(s.table, s.epoch), top=s.epoch))
    elif sc.view[1] < s.epoch:
        yield "sc follows the table", s._replace(sc=sc._replace(view=(s.table, s.epoch), top=s.epoch))
    if sc.reg and sc.alive and sc.ready and sc.pub < sc.top:
        yield f"sc acks {sc.top}", s._replace(sc=sc._replace(pub=sc.top))
    if sc.reg and sc.ready and sc.fresh and s.v <= bounds.writes:
        for i, key in enumerate(K):
            slot, st, _ = _where(sc.view[0], key)
            node = st.source
            if st.phase is Phase.CUTOVER:
                continue   # refused (held): nothing commits
            now = _slot(s.table, slot)
            bad = s.bad or (f"INV-M2: write {s.v} of {key} committed under {slot}, which the table no longer has"
                            if now is None else
                            f"INV-M1: write {s.v} of {key} committed while {slot} was in cutover, past its barrier"
                            if now[1].phase is Phase.CUTOVER and _past_barrier(s, now[2]) else None)
            yield f"sc writes {key}={s.v} on {node} under {slot}", s._replace(
                v=s.v + 1, rows=_put(s.rows, (node, slot, key), s.v),
                acked=s.acked[:i] + (s.v,) + s.acked[i + 1:], bad=bad)
    if not bounds.lease:
        return
    if sc.fresh:
        yield "sc lease runs out", s._replace(sc=sc._replace(fresh=False))
    if sc.reg and sc.alive and not sc.fresh:
        yield "sc renews", s._replace(sc=sc._replace(fresh=True))
        yield "Consul expires sc's session", s._replace(sc=sc._replace(alive=False))
    if sc.reg and not sc.alive and sc.rejoins < bounds.rejoins:
        yield "sc notices, starts over", s._replace(
            sc=sc._replace(reg=False, ready=False, fresh=False, rejoins=sc.rejoins + 1))


_PAST_BARRIER = frozenset({"delta", "await_delta", "flip", "cleanup", "await_cleanup", "done"})


def _past_barrier(s: State, epoch: int) -> bool:
    """A controller passed (or, without the guard, skipped) the barrier of the cutover at ``epoch``
    (a lagging participant may commit during a cutover *before* it: that is what the barrier
    waits for, as in protocol_log's INV-M1)."""
    return any(c.e2 == epoch and c.pc in _PAST_BARRIER for c in (s.A, s.B))


def successors(s: State, bounds: Bounds) -> Iterator[tuple[str, State]]:
    yield from _controllers(s, bounds)
    yield from _deliveries(s, bounds)
    yield from _sidecar(s, bounds)


def check(bounds: Bounds = Bounds(), max_states: int = 3_000_000) -> Result:
    """Breadth-first over every reachable state; the shortest counter-example, if any."""
    return explore(initial(), lambda s: successors(s, bounds), lambda s: violation(s, bounds), max_states)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sidecar.control.protocol_split", description=__doc__.split("\n\n")[0])
    ap.add_argument("--writes", type=int, default=2)
    ap.add_argument("--rejoins", type=int, default=1)
    ap.add_argument("--pauses", type=int, default=1, help="times controller A may pause (0 or 1)")
    ap.add_argument("--merge", action="store_true", help="merge the two halves back after the split")
    ap.add_argument("--drop", action="append", default=[], choices=GUARDS,
                    help="turn a guard off (repeatable); default: check all, then each one dropped")
    args = ap.parse_args(argv)
    base = Bounds(args.writes, args.rejoins, args.merge, args.pauses)
    runs = ([replace(base, drop=frozenset(args.drop))] if args.drop else
            [base] + [replace(base, drop=frozenset({g})) for g in GUARDS])
    ok = True
    for bounds in runs:
        res = check(bounds)
        name = ("all guards" if not bounds.drop else "without " + ", ".join(sorted(bounds.drop))) + (
            " (split, then merge)" if bounds.merge else " (split)")
        found = report(name, res)
        ok = ok and (bool(bounds.drop) if found else not bounds.drop)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
