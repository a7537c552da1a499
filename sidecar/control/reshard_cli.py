"""``python -m sidecar reshard``: split a hash slot, merge two halves back, or plan splits
(issue 29, DESIGN §12; user text: docs/resharding.md).

    reshard split SLOT [--to NODE] --consul URL --hash-slots N [--prefix P] [--dry-run]
    reshard merge SLOT [--to NODE] --consul URL --hash-slots N [--prefix P] [--dry-run]
    reshard plan --rates FILE --target SHARE [--node NAME]… --consul URL --hash-slots N [--run]

Until the controller process runs reshard jobs (DESIGN §12.6) this command runs the job itself,
holding the controller lock (``controller/leader``) for its duration, so it never runs beside a
leading controller: with one leading it refuses (exit 5) and says so. Exit statuses as the other
operator commands: 0 done, 2 a bad command line (one line naming the field), 3 aborted (the slot
stayed as it was), 4 Consul unreachable, 5 refused.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any, Sequence

from gate import BackendError, ConfigError, MigrationError, PartitionState

from .cli_client import EXIT_ABORTED, EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE
from .reshard import ReshardPlan, fleet_barrier, plan_merge, plan_split, run_reshard
from .reshard_planner import plan_hot_splits


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:   # one line, exit 2 (as the other commands)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--consul", required=True, metavar="URL")
    common.add_argument("--prefix", default="epochgate/")
    common.add_argument("--hash-slots", type=int, required=True, metavar="N", help="the sidecars' --hash-slots")
    common.add_argument("--deadline", type=float, default=10.0, metavar="S", help="barrier deadline (s)")
    top = _Parser(prog="python -m sidecar reshard", description=__doc__.split("\n\n")[0])
    sub = top.add_subparsers(dest="action", required=True, parser_class=_Parser)
    for name, what in (("split", "split a slot in two"), ("merge", "merge a slot with its sibling")):
        p = sub.add_parser(name, parents=[common], help=what)
        p.add_argument("slot")
        p.add_argument("--to", metavar="NODE", help="the node of the new half (split) or of the merged slot")
        p.add_argument("--dry-run", action="store_true", help="print the plan; start nothing")
    p = sub.add_parser("plan", parents=[common], help="splits until no node exceeds --target of the rate")
    p.add_argument("--rates", required=True, metavar="FILE", help='JSON {"slot-3": requests/s, …}')
    p.add_argument("--target", type=float, required=True, metavar="SHARE", help="0 < SHARE ≤ 1")
    p.add_argument("--node", action="append", default=[], help="a node with no slot yet to spread onto")
    p.add_argument("--run", action="store_true", help="run the planned splits (default: print them)")
    return top


def describe(plan: ReshardPlan) -> str:
    src = ", ".join(f"{s}@{n}" for s, n in plan.sources)
    dst = ", ".join(f"{s}@{n}" for s, n in plan.into)
    moves = "; ".join(f"{t.source}@{t.source_node} → {t.dest}@{t.dest_node}"
                      + (f" (keys with crc32 mod {t.only.modulus} = {t.only.number})" if t.only else "")
                      for t in plan.transfers)
    return f"{plan.kind}: {src} → {dst}; copies: {moves}"


async def _run(args: Any) -> int:
    from gate import ConsulHTTP, open_consul, provision_mover_token

    from .barrier import Barrier
    from .controller import Leadership
    from .mover import HttpHooksMover

    consensus, store, _ = await open_consul(args.consul, args.prefix)
    consul = ConsulHTTP(args.consul)
    lead = Leadership(consul, f"{args.prefix}controller/leader", f"reshard-{os.getpid()}")
    mover = HttpHooksMover()
    try:
        states = await store.partitions()
        plans = _plans(args, states)
        if plans is None:
            return EXIT_OK
        if not await lead.acquire():
            print(f"error: a controller leads ({args.prefix}controller/leader is held): reshard jobs are not run "
                  "by the controller yet; stop it, or retry when it is not leading", file=sys.stderr)
            return EXIT_REFUSED
        renew = asyncio.ensure_future(_renew(lead))
        try:
            mover.token = await provision_mover_token(consul, args.prefix)
            urls = await store.nodes()
            barrier = fleet_barrier(Barrier(consul, args.prefix), args.deadline)
            for plan in plans:
                lead.check()
                print(describe(plan), flush=True)
                res = await run_reshard(plan, store, mover, urls, barrier, prebarrier=barrier)
                if res.status != "completed":
                    print(f"aborted: {res.error} (the slot stayed as it was)", file=sys.stderr)
                    return EXIT_ABORTED
                print(f"completed: flip at epoch {res.epochs['flip']}, writes refused for "
                      f"{res.window_s * 1000:.0f} ms, {res.deleted} rows cleaned up", flush=True)
                states = await store.partitions()
        finally:
            renew.cancel()
            await lead.release()
        return EXIT_OK
    finally:
        await mover.close()
        await consul.close()
        await consensus.close()


def _plans(args: Any, states: Any) -> list[ReshardPlan] | None:
    """The plans to run, or None after printing a dry run's."""
    if args.action == "plan":
        try:
            with open(args.rates) as f:
                rates = json.load(f)
        except (OSError, ValueError) as exc:
            raise ConfigError("rates", f"cannot read {args.rates!r}: {exc}") from exc
        if not isinstance(rates, dict) or not all(isinstance(v, (int, float)) for v in rates.values()):
            raise ConfigError("rates", 'expected a JSON object {"slot-3": requests per second, …}')
        hot = plan_hot_splits(states, args.hash_slots, rates, args.target, args.node)
        for slot, to in hot.splits:
            print(f"split {slot} --to {to}")
        shares = ", ".join(f"{n} {v:.0%}" for n, v in hot.shares.items())
        print(f"{len(hot.splits)} splits; shares after them: {shares}" + ("" if hot.reached else f"; {hot.why}"))
        if not args.run:
            print("dry run: nothing was started")
            return None
        out, cur = [], dict(states)
        for slot, to in hot.splits:   # each plan is made against the table as the earlier ones leave it
            plan = plan_split(cur, args.hash_slots, slot, to)
            out.append(plan)
            del cur[slot]
            cur.update({n: (PartitionState.active(node), 0) for n, node in plan.into})
        return out
    make = plan_split if args.action == "split" else plan_merge
    plan = make(states, args.hash_slots, args.slot, args.to)
    if args.dry_run:
        print(describe(plan))
        print(f"dry run: {plan.kind} of {args.slot} would run; nothing was started")
        return None
    return [plan]


async def _renew(lead: Any) -> None:
    while True:
        await asyncio.sleep(lead.lease_s / 3)
        await lead.renew()


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return asyncio.run(_run(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MigrationError as exc:   # refused by the machine (e.g. the slot is moving)
        print(f"error: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except BackendError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return 130
