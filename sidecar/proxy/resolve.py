"""Resolving an exchange's partition to its placement and upstream node: the
one copy shared by the HTTP/1.1 exchange and the HTTP/2 stream (both call it
first in ``route()``, again after every hold wake-up and retry).

In hash-slot mode the router's partition is the key's base slot (a ``gate.SlotKey``, which
keeps the key's hash). When the table does not hold that name — the slot was split, or the
request was routed to a slot since merged — the walk of DESIGN §12.1 finds the key's present
slot, and the request is resolved, stamped and gated under that name. An unsplit table costs
nothing more: the first lookup is the one made anyway.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

from gate import SlotKey, resolve_slot

#: this module runs compiled (an extension module's file is not the ``.py``): ``_clock`` (resolve.pxd)
_COMPILED = not __file__.endswith(".py")


def resolve(x: Any, ctx: Any) -> Any:
    """Set ``x.phase``, ``x.epoch``, ``x.placement``, ``x.t_res`` and ``x.node`` from
    the table; ``None`` after answering the refusal (unknown partition: 404, a
    node without an upstream URL: 502) through ``x.fail``. ``ctx`` is ``x.ctx``, passed by the
    caller, which has it typed: compiled, ``x.ctx`` here was a Python attribute look-up (~150
    instructions; ``ExchangeFields`` cannot hold a typed context, see exfields.py)."""
    p = x.partition
    st = ctx.source.state(p)
    if st is None and isinstance(p, SlotKey):
        found = resolve_slot(p.h, p.base, ctx.source.state)
        if found is not None:
            name, st = found
            p = x.partition = SlotKey(name, p.h, p.base)
    if st is None:
        if x.is_write:
            ctx.stats.decision("none", "reject", "unknown_partition")
        x.fail(404, "unknown-partition", "unknown partition",
               f"partition {p!r} is not in the placement table", outcome="unknown_partition",
               partition=p, reason="unknown_partition")
        return None
    # (a plain str, the usual partition, skips the isinstance: ~240 instructions compiled)
    if not x.t_res and type(p) is not str and isinstance(p, SlotKey):   # once per request (t_res: resolved before; a re-route
        sl = ctx.stats.slots                       # after a connect, hold or retry is not counted again)
        sl[p] = sl.get(p, 0) + 1
    state, epoch = st
    if state is ctx.rs_state:  # the state the last request resolved: a PartitionState is frozen, so its
        x.phase = ctx.rs_phase  # phase label and source are too (bench_exchange_instr: -290 per GET, -375 per PUT)
        x.placement = ctx.rs_source
    else:
        x.phase = ctx.rs_phase = state.phase._value_
        x.placement = ctx.rs_source = state.source
        ctx.rs_state = state
    x.epoch = int(epoch)
    x.t_res = _clock() if _COMPILED else perf_counter()  # noqa: F821 (compiled: resolve.pxd)
    node = ctx.nodes.get(x.placement)
    if node is None:
        node = ctx.missing_node(x.placement)
    if node is None:
        x.fail(502, "no-upstream", "no upstream for node",
               f"node {x.placement!r} has no upstream URL", outcome="upstream_error")
        return None
    x.node = node
    if ctx.tracer is not None:
        ctx.tracer.resolved(x)
    return node
