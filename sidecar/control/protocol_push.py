"""An exhaustive check of the barrier's push transport (issue 31; gate/_push_hub.py, _push_link.py).

``protocol_model.py`` checks DESIGN §5's rules with the sidecar reading the store. Here the
rules are taken as given and the *transport* is what varies: the controller pushes each
committed log entry to the participant over a stream, the participant acks on that stream,
and Consul is the fallback (the participant's own log reads, and ``sidecars/<id>`` while its
stream is down). The model explores every interleaving of:

* **controller C** (fence 2): begin (draining), enter_cutover at E, *then* list the
  participant (rule 2), wait for its ack ≥ E — by stream (the hub's record for the listed
  session) or by its Consul key — or its session gone, then copy the delta and complete.
  Each commit puts a push of that entry on the network;
* a **deposed controller D** (fence 1) that pushes entries it read before it was deposed
  (committed ones: a hub only forwards what it read from Consul), at any time;
* **other partitions' transitions** committing in between (entries the participant applies);
* the **network**: pushes and acks are lost, duplicated (bounded) and delivered in any order;
  the stream may go down (then the participant acks in Consul, first what it acked by stream);
* the **participant**: registers and reads a snapshot, applies pushes, reads the log itself
  (always possible: that is the fallback), acks its table epoch (the newest epoch applied),
  admits and commits writes on its view's placement, loses its session and starts over.

The property (INV-M1 as in ``protocol_log``): no write commits on the source once a barrier
has passed for the partition's cutover — the delta was copied then, so it would be lost.

Guards (``--drop``): ``epoch`` — the barrier counts a stream ack only when its epoch ≥ E (else
any ack heard from the listed session after the commit counts: the pre-barrier's stale ack
passes the barrier); ``inorder`` — a push is applied only when it continues the log (else a
push past a lost one is applied, the table epoch passes E without the cutover entry, and the
ack is a lie); ``push_fence`` — a push below the highest fence seen is refused; ``ack_fence``
— the hub counts only acks carrying its own fence. The last two are *not* load-bearing for
safety here: pushes carry only committed entries, so a deposed controller's push is at worst
stale (the run says so); they keep a participant following one controller generation.

    python -m sidecar.control.protocol_push [--writes 2] [--rejoins 1] [--dups 1] [--others 1] [--drop GUARD]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from typing import Iterator, NamedTuple

from gate import MigrationError, Op, PartitionState, Phase, step

from .protocol_model import P
from .protocol_search import Result, explore, report

PUSH_GUARDS = ("epoch", "inorder", "push_fence", "ack_fence")
C_FENCE, D_FENCE = 2, 1
_PAST = ("delta", "complete", "done")


@dataclass(frozen=True, slots=True)
class Bounds:
    writes: int = 2       # client writes
    rejoins: int = 1      # session losses the participant recovers from
    dups: int = 1         # extra copies of a push or an ack put on the network
    others: int = 1       # other partitions' transitions interleaved in the log
    deposed: int = 1      # pushes the deposed controller may send
    downs: int = 1        # times the stream may go down
    drop: frozenset[str] = frozenset()


class Sc(NamedTuple):
    reg: bool = False      # registered (session alive, sidecars/<id> held), snapshot read
    sid: int = 0
    seq: int = 0           # log entries applied (0-based count)
    view: tuple | None = None   # (PartitionState, epoch) of P
    top: int = 0           # table epoch: the newest epoch applied (what it acks)
    fence: int = 0         # highest push fence seen
    up: bool = True        # the stream
    downs: int = 0
    sent: int = 0          # highest epoch acked on the stream (at the current fence)
    consul: int = 0        # sidecars/<id> under sid
    rejoins: int = 0


class Ctl(NamedTuple):
    pc: str = "begin"      # begin cutover barrier delta complete done
    cutover: int = 0
    listed: int = 0        # sid listed after the cutover commit (0: none)
    heard: bool = False    # an ack of the listed session arrived after the listing (the no-epoch-check count)


class State(NamedTuple):
    log: tuple             # committed entries: (PartitionState | None, epoch); None = another partition
    ctl: Ctl
    sc: Sc
    hub: tuple             # ((sid, highest epoch counted), ...)
    pushes: tuple          # in flight: (fence, seq), sorted
    acks: tuple            # in flight: (sid, epoch, fence), sorted
    v: int = 1             # next write
    dups: int = 0
    deposed: int = 0
    lost: bool = False     # a write committed on the source after the barrier passed


def initial() -> State:
    return State(((PartitionState.active("a"), 1),), Ctl(), Sc(), (), (), ())


def _p(s: State) -> tuple:
    return next((st, e) for st, e in reversed(s.log) if st is not None)


def _epoch(s: State) -> int:
    return s.log[-1][1]


def _commit(s: State, op: Op, node: str | None = None) -> State | None:
    st, _ = _p(s)
    try:
        new = step(P, st, op, node)
    except MigrationError:
        return None
    e = _epoch(s) + 1
    return s._replace(log=s.log + ((new, e),), pushes=tuple(sorted(s.pushes + ((C_FENCE, len(s.log)),))))


def _hub(s: State, sid: int) -> int:
    return dict(s.hub).get(sid, 0)


# ---- controller ---------------------------------------------------------------------

def _controller(s: State, b: Bounds) -> Iterator[tuple[str, State]]:
    c = s.ctl
    if c.pc == "begin":
        nxt = _commit(s, Op.BEGIN, "b")
        if nxt is not None:
            yield f"C begin → draining {_epoch(nxt)}", nxt._replace(ctl=c._replace(pc="cutover"))
    elif c.pc == "cutover":
        nxt = _commit(s, Op.ENTER_CUTOVER)
        if nxt is not None:
            sc = nxt.sc
            yield (f"C enter_cutover → {_epoch(nxt)}, then lists", nxt._replace(ctl=c._replace(
                pc="barrier", cutover=_epoch(nxt), listed=sc.sid if sc.reg else 0, heard=False)))
    elif c.pc == "barrier":
        sc, e = s.sc, c.cutover
        gone = not sc.reg or sc.sid != c.listed
        by_key = not gone and sc.consul >= e
        by_stream = (c.heard if "epoch" in b.drop else _hub(s, c.listed) >= e) if c.listed else False
        if c.listed == 0 or gone or by_key or by_stream:
            why = "none listed" if not c.listed else "session gone" if gone else "Consul ack" if by_key else "stream ack"
            yield f"C barrier passes ({why})", s._replace(ctl=c._replace(pc="delta"))
    elif c.pc == "delta":
        yield "C copies the delta", s._replace(ctl=c._replace(pc="complete"))
    elif c.pc == "complete":
        nxt = _commit(s, Op.COMPLETE)
        if nxt is not None:
            yield f"C complete → active(b) {_epoch(nxt)}", nxt._replace(ctl=c._replace(pc="done"))


def _others(s: State, b: Bounds) -> Iterator[tuple[str, State]]:
    if sum(1 for st, _ in s.log if st is None) < b.others:
        e = _epoch(s) + 1
        yield (f"another partition commits at {e}",
               s._replace(log=s.log + ((None, e),), pushes=tuple(sorted(s.pushes + ((C_FENCE, len(s.log)),)))))


def _deposed(s: State, b: Bounds) -> Iterator[tuple[str, State]]:
    """D read the log up to the begin before it was deposed; it pushes any of that."""
    if s.deposed < b.deposed:
        for seq in range(min(len(s.log), 2)):
            yield f"D (deposed) pushes entry {seq}", s._replace(
                pushes=tuple(sorted(s.pushes + ((D_FENCE, seq),))), deposed=s.deposed + 1)


# ---- network --------------------------------------------------------------------------

def _network(s: State, b: Bounds) -> Iterator[tuple[str, State]]:
    for i, (fence, seq) in enumerate(s.pushes):
        if i and s.pushes[i - 1] == (fence, seq):
            continue
        rest = s.pushes[:i] + s.pushes[i + 1:]
        yield f"push {seq}@f{fence} lost", s._replace(pushes=rest)
        if s.dups < b.dups:
            yield f"push {seq}@f{fence} duplicated", s._replace(
                pushes=tuple(sorted(s.pushes + ((fence, seq),))), dups=s.dups + 1)
        yield from _deliver_push(s._replace(pushes=rest), fence, seq, b)
    for i, ack in enumerate(s.acks):
        if i and s.acks[i - 1] == ack:
            continue
        rest = s.acks[:i] + s.acks[i + 1:]
        yield f"ack {ack[1]}@s{ack[0]} lost", s._replace(acks=rest)
        if s.dups < b.dups:
            yield f"ack {ack[1]}@s{ack[0]} duplicated", s._replace(acks=tuple(sorted(s.acks + (ack,))),
                                                                     dups=s.dups + 1)
        yield from _deliver_ack(s._replace(acks=rest), ack, b)


def _deliver_ack(s: State, ack: tuple, b: Bounds) -> Iterator[tuple[str, State]]:
    sid, epoch, fence = ack
    if fence != C_FENCE and "ack_fence" not in b.drop:
        yield f"C's hub refuses ack {epoch}@s{sid} of fence {fence}", s
        return
    hub = dict(s.hub)
    hub[sid] = max(hub.get(sid, 0), epoch)
    c = s.ctl
    heard = c.heard or (c.pc == "barrier" and sid == c.listed)
    yield f"C's hub gets ack {epoch}@s{sid}", s._replace(hub=tuple(sorted(hub.items())), ctl=c._replace(heard=heard))


def _apply(sc: Sc, log: tuple, seq: int) -> Sc:
    st, e = log[seq]
    return sc._replace(seq=seq + 1, view=sc.view if st is None else (st, e), top=max(sc.top, e))


def _deliver_push(s: State, fence: int, seq: int, b: Bounds) -> Iterator[tuple[str, State]]:
    sc = s.sc
    if not sc.reg or not sc.up:
        yield f"push {seq}@f{fence} arrives at no stream", s
        return
    if fence < sc.fence and "push_fence" not in b.drop:
        yield f"sc refuses push {seq}@f{fence} (seen f{sc.fence})", s
        return
    sc2 = sc._replace(fence=max(sc.fence, fence))
    if sc2.fence > sc.fence:
        sc2 = sc2._replace(sent=0)   # a new generation: ack again what it has
    if seq < sc.seq:
        yield f"sc ignores stale push {seq}", s._replace(sc=sc2)
    elif seq == sc.seq or "inorder" in b.drop:
        yield f"sc applies push {seq} (epoch {s.log[seq][1]})", s._replace(sc=_apply(sc2, s.log, seq))
    else:
        yield f"sc sees a gap at push {seq}: reads Consul instead", s._replace(sc=sc2)


# ---- participant ------------------------------------------------------------------------

def _participant(s: State, b: Bounds) -> Iterator[tuple[str, State]]:
    sc = s.sc
    if not sc.reg:
        sid = sc.sid + 1
        snap = Sc(reg=True, sid=sid, seq=len(s.log), view=_p(s), top=_epoch(s), rejoins=sc.rejoins,
                  downs=sc.downs, up=sc.up)
        yield f"sc registers (s{sid}), reads a snapshot at {_epoch(s)}", s._replace(sc=snap)
        return
    if sc.seq < len(s.log):
        yield f"sc reads log entry {sc.seq} from Consul", s._replace(sc=_apply(sc, s.log, sc.seq))
    if sc.up and sc.fence and sc.top > sc.sent:
        yield f"sc acks {sc.top} on the stream", s._replace(
            sc=sc._replace(sent=sc.top), acks=tuple(sorted(s.acks + ((sc.sid, sc.top, sc.fence),))))
    if not sc.up and sc.consul < sc.top:
        yield f"sc acks {sc.top} in Consul", s._replace(sc=sc._replace(consul=sc.top))
    if sc.up and sc.downs < b.downs:
        yield "the stream goes down", s._replace(sc=sc._replace(up=False, downs=sc.downs + 1))
    if sc.view is not None and s.v <= b.writes and sc.view[0].phase is not Phase.CUTOVER:
        node = sc.view[0].source
        lost = s.lost or (node == "a" and s.ctl.pc in _PAST)
        yield f"sc admits + commits write {s.v} on {node}", s._replace(v=s.v + 1, lost=lost)
    if sc.rejoins < b.rejoins:
        yield "sc loses its session, starts over", s._replace(
            sc=Sc(sid=sc.sid, rejoins=sc.rejoins + 1, downs=sc.downs, up=True))


def successors(s: State, b: Bounds) -> Iterator[tuple[str, State]]:
    yield from _controller(s, b)
    yield from _others(s, b)
    yield from _deposed(s, b)
    yield from _network(s, b)
    yield from _participant(s, b)


def check(b: Bounds = Bounds(), max_states: int = 3_000_000) -> Result:
    """Every reachable state; the shortest counter-example, if any."""
    return explore(initial(), lambda s: successors(s, b),
                   lambda s: "INV-M1: a write committed on the source after the barrier passed" if s.lost else None,
                   max_states)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sidecar.control.protocol_push", description=__doc__.split("\n\n")[0])
    ap.add_argument("--writes", type=int, default=2)
    ap.add_argument("--rejoins", type=int, default=1)
    ap.add_argument("--dups", type=int, default=1)
    ap.add_argument("--others", type=int, default=1)
    ap.add_argument("--deposed", type=int, default=1, help="pushes the deposed controller may send")
    ap.add_argument("--downs", type=int, default=1, help="times the stream may go down")
    ap.add_argument("--drop", action="append", default=[], choices=PUSH_GUARDS,
                    help="turn a guard off (repeatable); default: all, then each one dropped")
    a = ap.parse_args(argv)
    base = Bounds(a.writes, a.rejoins, a.dups, a.others, a.deposed, a.downs)
    runs = [replace(base, drop=frozenset(a.drop))] if a.drop else (
        [base] + [replace(base, drop=frozenset({g})) for g in PUSH_GUARDS])
    ok = True
    for bounds in runs:
        res = check(bounds)
        name = "all guards" if not bounds.drop else "without " + ", ".join(sorted(bounds.drop))
        if not report(name, res):
            ok = ok and (not bounds.drop or bool(bounds.drop & {"push_fence", "ack_fence"}))
        else:
            ok = ok and bool(bounds.drop)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
