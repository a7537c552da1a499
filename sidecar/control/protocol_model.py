"""An exhaustive check of the migration protocol (DESIGN §3, §5, §6), over its real
decision functions, with controllers that pause and messages that are delayed.

One partition moves a → b. The model explores *every* interleaving of:

* a **sidecar** (barrier participant) that may start during the migration, register,
  read the table, follow it late, acknowledge, admit and commit client writes, run out of
  lease, renew, lose its session (Consul expiring it), notice that and rejoin;
* **controller A**, which runs the job and may pause at any step (GC, SIGSTOP) — when it
  resumes it performs the one action it was about to do (it had passed its lock check)
  and stops;
* **controller B**, which takes the job over once A paused: it restarts the attempt
  (abort, begin) and runs it to the end;
* the **network**: every import is a message delivered at any later point; a bulk
  import may be sent again (its answer was lost) while the first copy is still in flight.

Store transitions go through the real ``gate._machine.step`` with the ``at_epoch`` rule
of ``ConsensusStore``; imports are accepted or refused by the real
``gate._fence.check_fence``. The property, checked in every reachable state: while the
partition is active, its owner holds the last acknowledged write (a single writer writes
increasing values to one key). Turning off any one guard — the fence, DESIGN §5 rule 1,
2, 4 or 5, the fresh tokens of a takeover, the ``at_epoch`` check — yields a
counter-example; with all of them there is none (``tests/test_protocol_model.py`` runs
a small bound, ``scripts/check-protocol`` larger ones).

In *log mode* (``protocol_log.py``) the sidecar applies the change log entry by entry, and
entries of some ops are ones it cannot parse (a newer writer): with DESIGN §4.3's fail-closed
rule there is no counter-example; with the old "skip" rule (``--drop fail_closed``) there is one
that breaks INV-M1 (an ack past a cutover it never applied, then a write on the source).

    python -m sidecar.control.protocol_model [--writes 3] [--rejoins 1] [--retries 1] [--drop RULE]
        [--unreadable enter_cutover] [--others 1] [--pauses 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from typing import Iterator, NamedTuple

from gate import MigrationError, Op, PartitionState, Phase, StaleMover, check_fence, step

from . import protocol_log as log
from .protocol_search import Result, explore  # noqa: F401 (Result: re-exported for the model's callers)

P = "p"
GUARDS = ("fence", "rule1", "rule2", "rule4", "rule5", "fresh_tokens", "at_epoch")


@dataclass(frozen=True, slots=True)
class Bounds:
    writes: int = 2      # client writes in a run
    rejoins: int = 1     # sidecar session losses it recovers from
    retries: int = 1     # extra copies of a bulk import put on the network
    drop: frozenset[str] = frozenset()   # guards turned off (see GUARDS, protocol_log.LOG_GUARDS)
    pauses: int = 1      # controller A may pause (and B take over) this many times
    # The change log, entry by entry (sidecar/control/protocol_log.py); off: the sidecar reads the store.
    unreadable: frozenset[str] = frozenset()   # ops whose entries (and state values) the sidecar cannot parse
    others: int = 0      # transitions of other partitions (readable) interleaved in the log

    @property
    def log(self) -> bool:
        return bool(self.unreadable or self.others)

    def _replace_drop(self, drop: frozenset[str]) -> "Bounds":
        return dataclasses.replace(self, drop=drop)


class Sidecar(NamedTuple):
    reg: bool = False          # sidecars/<id> published under session `sid`
    sid: int = 0
    alive: bool = False        # the session, as Consul sees it
    fresh: bool = False        # within its lease (rule 5)
    view: tuple | None = None  # (PartitionState, epoch) it last read
    ready: bool = False        # read the table after registering (rule 1)
    pub: int = 0               # published (acked) epoch
    rejoins: int = 0
    top: int = 0               # its table epoch: what it acks (the newest epoch applied)
    seq: int = 0               # log entries applied (log mode)
    blocked: bool = False      # stopped at an entry it cannot parse (log mode, DESIGN §4.3)


class Ctl(NamedTuple):
    pc: str = "idle"           # idle begin export await_bulk cutover list commit barrier delta await_delta complete done
    draining: int = 0          # this attempt's epochs = its fencing tokens
    cutover: int = 0
    listed: tuple = ()         # sids the barrier waits for
    paused: bool = False
    halted: bool = False


class State(NamedTuple):
    store: tuple               # (PartitionState, epoch)
    a: int
    b: int
    hb: int                    # highest fencing token b recorded
    v: int                     # next value to write; v - 1 is the last acknowledged
    sc: Sidecar
    A: Ctl
    B: Ctl
    net: tuple                 # in-flight imports: (token, value, ctl, kind), sorted
    next_sid: int
    retries: int
    paused_once: bool
    log: tuple = ()            # log mode: (PartitionState | None, epoch, readable) per committed transition
    idx: int = 0               # the store's index (log mode: other partitions' transitions move it too)
    m1: bool = False           # log mode: a write committed while the partition was in cutover


def initial() -> State:
    return State((PartitionState.active("a"), 1), 0, 0, 0, 1, Sidecar(), Ctl(pc="begin"), Ctl(), (), 1, 0, False)


def violation(s: State) -> str | None:
    """The property: an active partition's owner holds the last acknowledged write (and, in log
    mode, INV-M1: no write commits while its partition is in cutover)."""
    if s.m1:
        return "INV-M1: a write committed while its partition was in cutover"
    st, _ = s.store
    if st.phase is Phase.ACTIVE:
        have = s.a if st.source == "a" else s.b
        if have != s.v - 1:
            return f"owner {st.source} holds value {have}, the last acknowledged write is {s.v - 1}"
    return None


# ---- the store (real step function + ConsensusStore's at_epoch rule) ----------------

def _transition(s: State, op: Op, node: str | None, at_epoch: int | None, bounds: Bounds) -> State | None:
    """The state after the transition committed (store, and the log in log mode), or None if refused."""
    st, epoch = s.store
    if at_epoch is not None and "at_epoch" not in bounds.drop and epoch != at_epoch:
        return None   # StaleAttempt: nothing written
    try:
        new = step(P, st, op, node)
    except MigrationError:
        return None
    e = max(epoch, s.idx) + 1
    if not bounds.log:
        return s._replace(store=(new, e))
    return s._replace(store=(new, e), idx=e, log=s.log + ((new, e, op.value not in bounds.unreadable),))


# ---- controllers ---------------------------------------------------------------------

def _ctl_action(s: State, name: str, c: Ctl, bounds: Bounds) -> Iterator[tuple[str, State]]:
    """The next action of controller ``name`` in its program (one step)."""
    other = "B" if name == "A" else "A"

    def put(s2: State, c2: Ctl) -> State:
        return s2._replace(**{name: c2})

    pc = c.pc
    if pc == "restart":   # B takes over: abort the old attempt, begin a fresh one
        if "fresh_tokens" in bounds.drop:   # reuse the old attempt's tokens and phase
            old = getattr(s, other)
            yield f"{name} continues {other}'s attempt", put(s, c._replace(
                pc={"await_bulk": "export", "cutover": "cutover", "list": "cutover", "commit": "cutover",
                    "barrier": "barrier", "delta": "delta", "await_delta": "delta",
                    "complete": "complete"}.get(old.pc, "export") if old.draining else "begin",
                draining=old.draining, cutover=old.cutover, listed=old.listed))
            return
        st, _ = s.store
        s2 = (_transition(s, Op.ABORT, None, None, bounds) or s) if st.migrating else s
        nxt = _transition(s2, Op.BEGIN, "b", None, bounds)
        if nxt is None:
            yield f"{name} restart refused", put(s2, c._replace(halted=True))
            return
        yield f"{name} restarts: abort, begin at {nxt.store[1]}", put(nxt, c._replace(
            pc="export", draining=nxt.store[1], cutover=0, listed=()))
    elif pc == "begin":
        nxt = _transition(s, Op.BEGIN, "b", None, bounds)
        if nxt is None:
            yield f"{name} begin refused", put(s, c._replace(halted=True))
            return
        yield f"{name} begin → draining {nxt.store[1]}", put(nxt, c._replace(pc="export", draining=nxt.store[1]))
    elif pc == "export":
        msg = (c.draining, s.a, name, "bulk")
        yield f"{name} exports {s.a}, sends bulk@{c.draining}", put(
            s._replace(net=tuple(sorted(s.net + (msg,)))), c._replace(pc="await_bulk"))
    elif pc == "await_bulk":
        if s.retries < bounds.retries:   # the answer was lost: the same import again
            msg = next((m for m in s.net if m[2] == name and m[3] == "bulk" and m[0] == c.draining), None)
            if msg is not None:
                yield f"{name} resends bulk@{c.draining}", s._replace(
                    net=tuple(sorted(s.net + (msg,))), retries=s.retries + 1)
    elif pc == "cutover":
        if "rule2" in bounds.drop:   # list first, commit after
            yield f"{name} lists (before its commit)", put(s, c._replace(pc="commit", listed=_listed(s)))
            return
        nxt = _transition(s, Op.ENTER_CUTOVER, None, c.draining, bounds)
        if nxt is None:
            yield f"{name} enter_cutover refused", put(s, c._replace(halted=True))
            return
        yield f"{name} enter_cutover → {nxt.store[1]}, then lists", put(nxt, c._replace(
            pc="barrier", cutover=nxt.store[1], listed=_listed(nxt)))
    elif pc == "commit":
        nxt = _transition(s, Op.ENTER_CUTOVER, None, c.draining, bounds)
        if nxt is None:
            yield f"{name} enter_cutover refused", put(s, c._replace(halted=True))
            return
        yield f"{name} enter_cutover → {nxt.store[1]}", put(nxt, c._replace(pc="barrier", cutover=nxt.store[1]))
    elif pc == "barrier":
        sc = s.sc
        if all(not (sc.reg and sc.alive and sc.sid == sid) or sc.pub >= c.cutover for sid in c.listed):
            yield f"{name} barrier passes", put(s, c._replace(pc="delta"))
    elif pc == "delta":
        msg = (c.cutover, s.a, name, "delta")
        yield f"{name} exports delta {s.a}, sends delta@{c.cutover}", put(
            s._replace(net=tuple(sorted(s.net + (msg,)))), c._replace(pc="await_delta"))
    elif pc == "complete":
        nxt = _transition(s, Op.COMPLETE, None, c.cutover, bounds)
        if nxt is None:
            yield f"{name} complete refused", put(s, c._replace(halted=True))
            return
        yield f"{name} complete → active(b) {nxt.store[1]}", put(nxt, c._replace(pc="done"))


def _listed(s: State) -> tuple:
    sc = s.sc
    return (sc.sid,) if sc.reg and sc.alive else ()


def _controllers(s: State, bounds: Bounds) -> Iterator[tuple[str, State]]:
    A, B = s.A, s.B
    if not A.paused and not A.halted and A.pc != "done":
        yield from _ctl_action(s, "A", A, bounds)
        if not s.paused_once and bounds.pauses and A.pc not in ("idle",):
            yield f"A pauses before {A.pc}", s._replace(A=A._replace(paused=True), paused_once=True)
    if A.paused and not A.halted:
        if B.pc == "idle":   # A's lock lapsed: B leads
            yield "B takes the job over", s._replace(B=B._replace(pc="restart"))
        # A resumes: the one action it had passed its check for, then it stops
        for label, s2 in _ctl_action(s, "A", A._replace(paused=False), bounds):
            yield "A resumes: " + label, s2._replace(A=s2.A._replace(paused=False, halted=True))
        yield "A resumes and stops", s._replace(A=A._replace(paused=False, halted=True))
    if B.pc not in ("idle", "done") and not B.halted:
        yield from _ctl_action(s, "B", B, bounds)


# ---- the network -----------------------------------------------------------------

def _deliveries(s: State, bounds: Bounds) -> Iterator[tuple[str, State]]:
    for i, msg in enumerate(s.net):
        if i and s.net[i - 1] == msg:
            continue   # identical copies: one branch
        token, value, owner, kind = msg
        net = s.net[:i] + s.net[i + 1:]
        try:
            if "fence" not in bounds.drop:
                check_fence(P, token, s.hb or None)
        except StaleMover:
            c = getattr(s, owner)
            if c.pc == f"await_{kind}" and not c.paused:
                c = c._replace(halted=True)   # 409 stale-mover: this attempt stops
            yield f"b refuses {kind}@{token} (stale-mover)", s._replace(net=net, **{owner: c})
            continue
        s2 = s._replace(net=net, b=value, hb=max(s.hb, token))
        c = getattr(s2, owner)
        wanted = c.draining if kind == "bulk" else c.cutover
        if c.pc == f"await_{kind}" and not c.paused and not c.halted and token == wanted:
            c = c._replace(pc="cutover" if kind == "bulk" else "complete")
            s2 = s2._replace(**{owner: c})
        yield f"b applies {kind}@{token} = {value}", s2


# ---- the sidecar (DESIGN §5 rules 1–5) ---------------------------------------------------

def _sidecar(s: State, bounds: Bounds) -> Iterator[tuple[str, State]]:
    sc, drop = s.sc, bounds.drop
    if not sc.reg:   # rule 1: a session, then sidecars/<id> under it ...
        yield "sc registers", s._replace(sc=sc._replace(reg=True, sid=s.next_sid, alive=True, fresh=True, pub=0),
                                         next_sid=s.next_sid + 1)
    if not sc.ready and (sc.reg or "rule1" in drop):   # ... and only then the table
        yield "sc reads the table", s._replace(sc=log.read_table(s, sc, bounds))
    if bounds.log:   # the change log, one entry at a time (protocol_log)
        yield from log.follow(s, sc, bounds)
        yield from log.leave_if_blocked(s)
    elif sc.ready and sc.view is not None and sc.view[1] < s.store[1]:
        yield "sc follows the table", s._replace(sc=sc._replace(view=s.store, top=s.store[1]))
    if sc.reg and sc.alive and sc.ready and not sc.blocked and sc.pub < sc.top:
        yield f"sc acks {sc.top}", s._replace(sc=sc._replace(pub=sc.top))
    if sc.reg and sc.ready and sc.fresh and not sc.blocked and sc.view is not None and s.v <= bounds.writes:
        st, _ = sc.view
        if st.phase is not Phase.CUTOVER:   # admit at its view, commit on its read placement
            node = st.source
            m1 = s.m1 or (bounds.log and node == s.store[0].source and log.commits_in_cutover(s))
            yield f"sc admits + commits write {s.v} on {node}", s._replace(v=s.v + 1, m1=m1, **{node: s.v})
    if sc.fresh:
        yield "sc lease runs out", s._replace(sc=sc._replace(fresh=False))
    if sc.reg and sc.alive and not sc.fresh:
        yield "sc renews", s._replace(sc=sc._replace(fresh=True))
    if sc.reg and sc.alive and (not sc.fresh or "rule5" in drop):
        yield "Consul expires sc's session", s._replace(sc=sc._replace(alive=False))
    if sc.reg and not sc.alive and sc.rejoins < bounds.rejoins:
        if "rule4" in drop:   # re-register at once, keep the old view
            yield "sc notices, re-registers with its old view", s._replace(
                sc=sc._replace(sid=s.next_sid, alive=True, fresh=True, pub=0, rejoins=sc.rejoins + 1),
                next_sid=s.next_sid + 1)
        else:                 # stop writes, start over at rule 1
            yield "sc notices, starts over", s._replace(
                sc=sc._replace(reg=False, ready=False, fresh=False, rejoins=sc.rejoins + 1, seq=0, blocked=False))


def successors(s: State, bounds: Bounds) -> Iterator[tuple[str, State]]:
    yield from _controllers(s, bounds)
    yield from _deliveries(s, bounds)
    yield from _sidecar(s, bounds)
    if bounds.log:
        yield from log.other_partition(s, bounds)


def check(bounds: Bounds = Bounds(), max_states: int = 5_000_000) -> Result:
    """Breadth-first over every reachable state; the shortest counter-example, if any."""
    return explore(initial(), lambda s: successors(s, bounds), violation, max_states)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sidecar.control.protocol_model", description=__doc__.split("\n\n")[0])
    ap.add_argument("--writes", type=int, default=3)
    ap.add_argument("--rejoins", type=int, default=1)
    ap.add_argument("--retries", type=int, default=1)
    ap.add_argument("--pauses", type=int, default=1, help="times controller A may pause (0 or 1)")
    ap.add_argument("--unreadable", action="append", default=[], choices=[o.value for o in Op],
                    help="log mode: entries of this op cannot be parsed by the sidecar (protocol_log.py); "
                         "default: the store read directly, then a log run with enter_cutover unreadable")
    ap.add_argument("--others", type=int, default=1, help="log mode: other partitions' transitions in the log")
    ap.add_argument("--drop", action="append", default=[], choices=GUARDS + log.LOG_GUARDS,
                    help="turn a guard off (repeatable); default: check all, then each one dropped")
    args = ap.parse_args(argv)
    base = Bounds(args.writes, args.rejoins, args.retries, pauses=args.pauses)
    # the log run's default bound is smaller (about 0.5 M states): its state also carries the log
    logged = Bounds(args.writes if args.unreadable else 1, args.rejoins, args.retries if args.unreadable else 0,
                    pauses=args.pauses,
                    unreadable=frozenset(args.unreadable or ["enter_cutover"]), others=args.others)
    if args.drop:
        drop = frozenset(args.drop)
        runs = [(logged if args.unreadable or drop & set(log.LOG_GUARDS) else base)._replace_drop(drop)]
    else:
        runs = ([] if args.unreadable else [base] + [base._replace_drop(frozenset({g})) for g in GUARDS])
        runs += [logged] + [logged._replace_drop(frozenset({g})) for g in log.LOG_GUARDS]
    ok = True
    for bounds in runs:
        res = check(bounds)
        drop = bounds.drop
        name = ("all guards" if not drop else "without " + ", ".join(sorted(drop))) + (
            f" (log: {', '.join(sorted(bounds.unreadable))} unreadable, {bounds.others} other)" if bounds.log else "")
        if res.counterexample is None:
            print(f"{name}: no counter-example in {res.states} states")
            ok = ok and bool(not drop)
        else:
            print(f"{name}: counter-example after {res.states} states: {res.why}")
            for i, label in enumerate(res.counterexample):
                print(f"  {i:2d}. {label}")
            ok = ok and bool(drop)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
