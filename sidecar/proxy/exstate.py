"""The life cycle of one proxied exchange (``_exchange.Request``), in one table.

    NEW → ROUTING → FORWARDING → RESPONDING → (TUNNEL) → DONE, the usual path, with
    ROUTING ⇄ CONNECTING    no idle upstream connection: open one, then route again
    ROUTING ⇄ HELD          a write refused before reaching the app waits, then routes again
    ROUTING → ROUTING       the table moved between resolve and admit
    FORWARDING → ROUTING    pooled connection closed unanswered / app refused, table moved on
    FORWARDING → HELD       app refused at the epoch our table still stands at (backoff)
    every state but DONE → DONE

* ``NEW``: the head is being parsed, or the request waits behind the one
  before it on the connection (pipelining).
* ``ROUTING``: resolve the partition, take an upstream connection, admit a
  write. Re-entered from ``ROUTING`` itself (the table moved between resolve
  and admit), ``CONNECTING`` (a connection is ready), ``HELD`` (woken) and
  ``FORWARDING`` (the pooled connection closed before answering, or the
  application refused at its commit point with a stale epoch).
* ``CONNECTING``: no idle connection; one is being opened.
* ``HELD``: a refused write waits in the hold (``_hold``) for a transition,
  for the gate to open again, or for its backoff timer.
* ``FORWARDING``: the head went upstream; nothing reached the client yet (a
  buffered ``503`` problem that may be the app's stale-epoch refusal included).
* ``RESPONDING``: the response head reached the client; a failure now can only
  cut the connection.
* ``TUNNEL``: ``101 Switching Protocols``: bytes flow both ways unparsed.
* ``DONE``: answered, counted and logged; every later callback is ignored.

``step`` is the only way a ``Request`` changes state; an edge not in
``TRANSITIONS`` raises ``IllegalStep`` (a bug in the proxy, never the client's
doing). The harness test ``test_every_exchange_transition_is_exercised`` fails
when an edge of the table is reached by no scenario.

Retry budgets are separate, each spent only by its own cause (one shared
counter used to let two app refusals disable the pooled-connection retry):

* ``REROUTE_MAX``: resolve again when the gate refuses a stale epoch that the
  table moved to between resolve and admit (no hold involved).
* ``POOLED_RETRY_MAX``: retry on a fresh connection when a pooled keep-alive
  connection closed before answering (the request never reached the app).
* ``APP_REPLAY_MAX``: route a write the application refused with a stale-epoch
  problem again at once because the table has already moved on; past it, the
  replay waits in the hold on a backoff timer.
"""

from __future__ import annotations

import enum
from typing import Any

REROUTE_MAX = 3
POOLED_RETRY_MAX = 2
APP_REPLAY_MAX = 5


class ExState(enum.Enum):
    NEW = "new"
    ROUTING = "routing"
    CONNECTING = "connecting"
    HELD = "held"
    FORWARDING = "forwarding"
    RESPONDING = "responding"
    TUNNEL = "tunnel"
    DONE = "done"


NEW, ROUTING, CONNECTING, HELD = ExState.NEW, ExState.ROUTING, ExState.CONNECTING, ExState.HELD
FORWARDING, RESPONDING, TUNNEL, DONE = ExState.FORWARDING, ExState.RESPONDING, ExState.TUNNEL, ExState.DONE

# (from, to) → why. The one list of legal moves.
TRANSITIONS: dict[tuple[ExState, ExState], str] = {
    (NEW, ROUTING): "dispatched: the head is parsed and the request is the connection's current one",
    (ROUTING, ROUTING): "the gate refused a stale epoch the table moved to after resolve: resolve again",
    (ROUTING, CONNECTING): "no idle upstream connection: open one",
    (ROUTING, HELD): "a write refused before reaching the app is parked in the hold",
    (ROUTING, FORWARDING): "admitted (or a read): the head goes upstream",
    (CONNECTING, ROUTING): "the connection is ready: resolve and admit again, next to the send",
    (HELD, ROUTING): "woken by a transition, the gate opening, or the backoff timer",
    (FORWARDING, ROUTING): "pooled connection closed before answering, or the app refused a stale epoch",
    (FORWARDING, HELD): "the app refused a stale epoch our table still stands at: retry on a backoff",
    (FORWARDING, RESPONDING): "the response head (or the relayed problem) reaches the client",
    (RESPONDING, TUNNEL): "101: the connections become a byte tunnel",
    (NEW, DONE): "refused while parsing (bad head, parse error) or the client left",
    (ROUTING, DONE): "answered by the proxy: bad request, unknown partition, no node, 503",
    (CONNECTING, DONE): "connect failed or timed out, or the client left",
    (HELD, DONE): "hold expired, or the client left while held",
    (FORWARDING, DONE): "502/504 from the proxy, or the client left",
    (RESPONDING, DONE): "the response ended, or failed mid-way (connections cut)",
    (TUNNEL, DONE): "one side of the tunnel closed",
}

# The table packed for ``step``: bit ``8 × from + to`` of one 64-bit integer, a member's index
# found by identity in ``_ORDER``. ``step`` runs 4 times per request; an attribute read on an Enum
# member (the bit masks once kept there) or its Python-level ``__hash__`` (a dict or frozenset
# lookup) cost ~330 instructions each in the compiled step: 490 per step then, ~150 now
# (bench_exchange_instr, nginx head: see docs/compiled-build.md, "HTTP/1.1 cuts, stop 36").
_ORDER = tuple(ExState)
#: this module runs compiled (an extension module's file is not the ``.py``): ``_legal``
_COMPILED = not __file__.endswith(".py")
if len(_ORDER) > 8:  # the packing's bound: a ninth state needs a wider table
    raise RuntimeError("exstate: the transition table packs at most 8 states")


def _pack() -> int:
    t = 0
    for (a, b) in TRANSITIONS:
        bit = 1  # (64-bit where compiled: the shift goes up to bit 63)
        t |= bit << (8 * _ORDER.index(a) + _ORDER.index(b))
    return t


_TABLE = _pack()


def _index(s: ExState) -> int:
    """``s``'s position in ``_ORDER`` (-1: not a state), by identity."""
    i = 0
    for m in _ORDER:
        if m is s:
            return i
        i += 1
    return -1


def _legal(state: ExState, to: ExState) -> bool:
    """``state → to`` is in ``TRANSITIONS`` (through ``_TABLE``). Compiled, the index is found by
    ``_cindex`` (exstate.pxd: the same identity search over the tuple's pointers, without a
    reference taken per member: bench_exchange_instr, docs/compiled-build.md "Stop 38")."""
    if _COMPILED:
        i = _cindex(_ORDER, state)  # noqa: F821 (compiled only: exstate.pxd)
        j = _cindex(_ORDER, to)  # noqa: F821
    else:
        i = _index(state)
        j = _index(to)
    return i >= 0 and j >= 0 and bool((_TABLE >> (8 * i + j)) & 1)


class IllegalStep(RuntimeError):
    """A move outside ``TRANSITIONS``: a bug in the data path."""


_watch: Any = None  # watch(): called with every move step() checks


def watch(fn: Any) -> None:
    """Call ``fn(state, to)`` with every move ``step`` checks, legal or not (``None``: stop).
    For tests: the compiled exchange cimports ``step`` (a C call), so patching the module's
    name would not see its moves."""
    global _watch
    _watch = fn


def step(state: ExState, to: ExState) -> ExState:
    """``to`` if ``state → to`` is legal, else ``IllegalStep``."""
    if _watch is not None:
        _watch(state, to)
    if _legal(state, to):
        return to
    raise IllegalStep(f"exchange cannot go from {state.name} to {to.name}")


class Pause(enum.IntFlag):
    """Why reading from a client connection is paused (``ClientConn.pause``); reading
    resumes when no reason is left."""

    QUEUED = 1         # a pipelined request waits for the one before it
    HELD = 2           # its write is parked in the hold
    BUFFERED = 4       # body bytes buffered beyond PENDING_HIGH before an upstream is ready
    UPSTREAM_FULL = 8  # the upstream's send buffer is full
    ALL = QUEUED | HELD | BUFFERED | UPSTREAM_FULL


# plain ints for the per-request paths: an IntFlag operand dispatches ``&``/``|`` to
# IntFlag's Python-level methods (~1 µs); the names stay the same.
P_QUEUED = int(Pause.QUEUED)
P_HELD = int(Pause.HELD)
P_BUFFERED = int(Pause.BUFFERED)
P_UPSTREAM_FULL = int(Pause.UPSTREAM_FULL)
P_HELD_OR_BUFFERED = int(Pause.HELD | Pause.BUFFERED)
P_ALL = int(Pause.ALL)
